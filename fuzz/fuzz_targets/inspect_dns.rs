//! Fuzz the DNS parser: never a panic, names stay bounded, and the TCP
//! framing gives the same answer as the bare message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wirefold_inspect::dns::{parse_tcp, parse_udp, MAX_NAME};

fuzz_target!(|data: &[u8]| {
    let udp = parse_udp(data);
    if let Ok(m) = &udp {
        assert!(m.qname.len() <= MAX_NAME && !m.qname.is_empty());
    }
    if data.len() <= usize::from(u16::MAX) {
        let mut framed = (data.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(data);
        assert_eq!(parse_tcp(&framed), udp);
    }
    let _ = parse_tcp(data);
});
