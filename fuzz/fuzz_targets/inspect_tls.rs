//! Fuzz the TLS record walker, ClientHello/ServerHello parsers and the TCP
//! reassembler: never a panic; a ClientHello that parses gives the same
//! fingerprints from every record split, and any cut prefix of its records
//! reports `Incomplete`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wirefold_inspect::tls::{
    next_handshake, ClientHello, HandshakeCursor, ServerHello, TcpReassembler, TlsError, Transport,
};

fuzz_target!(|data: &[u8]| {
    let mut scratch = [0u8; 8192];
    // As a record stream.
    let whole = next_handshake(data, HandshakeCursor::default(), &mut scratch).map(|h| (h.msg_type, h.body.to_vec(), h.next));
    if let Ok((t, body, next)) = &whole {
        let _ = ServerHello::parse(body).map(|s| (s.ja3s_md5(), s.selected_version()));
        if *t == 1 {
            if let Ok(ch) = ClientHello::parse(body) {
                let ja4 = ch.ja4(Transport::Tcp);
                let ja4_r = ch.ja4_r(Transport::Tcp);
                let _ = (ch.ja3(), ch.ja3_md5(), ch.server_name(), ch.alpn().count());
                if let (Ok(a), Ok(r)) = (&ja4, &ja4_r) {
                    assert_eq!(a.len(), 36);
                    assert_eq!(a.as_str()[..10], r.as_str()[..10]);
                }
                // Every cut before the message's end is Incomplete.
                let end = next.record.min(data.len());
                for cut in [0, 1, 4, 5, 6, 9, end / 2, end.saturating_sub(1)] {
                    if cut < end && next.skip == 0 {
                        let mut s2 = [0u8; 8192];
                        let r = next_handshake(&data[..cut], HandshakeCursor::default(), &mut s2).map(|_| ());
                        assert!(matches!(r, Err(TlsError::Incomplete)), "cut {cut}: {r:?}");
                    }
                }
            }
        }
    }
    // As a bare ClientHello body.
    if let Ok(ch) = ClientHello::parse(data) {
        let _ = (ch.ja4(Transport::Quic), ch.ja4_r(Transport::Dtls), ch.ja3(), ch.max_version());
    }
    // Through the reassembler, in two pieces pushed in reverse order: the
    // same bytes come out.
    if data.len() >= 4 {
        let seq = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let payload = &data[4..];
        let mid = payload.len() / 2;
        let mut buf = [0u8; 4096];
        let mut r = TcpReassembler::new(&mut buf);
        r.set_start(seq);
        let _ = r.push(seq.wrapping_add(mid as u32), &payload[mid..]);
        let _ = r.push(seq, &payload[..mid]);
        let n = payload.len().min(4096);
        assert_eq!(r.data(), &payload[..n]);
    }
});
