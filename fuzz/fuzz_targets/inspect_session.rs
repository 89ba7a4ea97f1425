//! Fuzz the per-flow inspection engine: the input is a sequence of packets
//! (a header byte: direction, protocol and port choice; a length byte; the
//! payload), fed to one flow as the flow table would. Never a panic, the
//! slot always comes back, and the facts stay bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wirefold_inspect::session::{FlowMeta, InspectConfig, Inspector, Payload};

fuzz_target!(|data: &[u8]| {
    let mut ins = Inspector::new(InspectConfig { packets: 8, pool: 1 });
    let Some(slot) = ins.acquire() else { return };
    let mut meta = FlowMeta::default();
    let mut rest = data;
    let mut seq = [1000u32, 90_000u32];
    let mut done = false;
    while rest.len() >= 2 && !done {
        let (h, n) = (rest[0], rest[1] as usize);
        rest = &rest[2..];
        let take = n.min(rest.len());
        let (payload, tail) = rest.split_at(take);
        rest = tail;
        let forward = h & 1 == 0;
        let d = usize::from(!forward);
        let p = Payload {
            forward,
            proto: if h & 2 == 0 { 6 } else { 17 },
            client_port: 40000,
            server_port: [443, 53, 80, 22][usize::from(h >> 2 & 3)],
            // Mostly in order, sometimes jumping (out of order, retransmissions).
            tcp_seq: if h & 0x40 != 0 { seq[d].wrapping_sub(u32::from(h >> 4)) } else { seq[d] },
            data: payload,
        };
        seq[d] = seq[d].wrapping_add(payload.len() as u32);
        done = ins.packet(slot, &mut meta, &p);
    }
    if !done {
        ins.finish(slot, &mut meta);
    }
    assert_eq!(ins.in_use(), 0);
    if let Some(t) = &meta.tls {
        assert!(t.ja4.is_empty() || t.ja4.len() == 36);
    }
    assert!(meta.sketch.iter().all(|s| s.len() <= 256 && (0.0..=8.0).contains(&s.entropy())));
});
