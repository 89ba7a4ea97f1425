//! Fuzz the core's admission checks: arbitrary bytes through the checksum,
//! the FlatBuffers verifier and the semantic rules never panic; and valid
//! batches whose flows are mutated by the input are either refused naming a
//! real flow, or hold every invariant the store relies on.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wirefold_core::validate::{validate, MAX_END_REASON, MIN_IP_PACKET};
use wirefold_schema::{read_batch, BatchBuilder, BatchMeta, FlowRec};

const NOW: u64 = 1_800_000_000_000_000_000;

fn base() -> Vec<FlowRec> {
    (0..6u8)
        .map(|i| FlowRec {
            ip_version: if i % 2 == 0 { 4 } else { 6 },
            proto: 6,
            src_port: 1000 + i as u16,
            dst_port: 443,
            first_ns: NOW - 10_000,
            last_ns: NOW - 1_000,
            fwd_packets: 3,
            fwd_bytes: 300,
            rev_packets: 2,
            rev_bytes: 200,
            tcp_flags: 0x1b,
            end_reason: 2,
            score: 0.25,
            ..Default::default()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // 1. Arbitrary bytes.
    if let Ok((_, flows)) = read_batch(data) {
        let _ = validate(&flows, NOW);
    }
    // 2. A valid batch, mutated field by field by the input.
    let mut flows = base();
    for (k, c) in data.chunks(10).enumerate() {
        if c.len() < 10 {
            break;
        }
        let v = u64::from_le_bytes([c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]]);
        let n = flows.len();
        let f = &mut flows[(c[1] as usize + k) % n];
        match c[0] % 12 {
            0 => f.first_ns = v,
            1 => f.last_ns = v,
            2 => f.fwd_packets = v as u32,
            3 => f.rev_packets = v as u32,
            4 => f.fwd_bytes = v,
            5 => f.rev_bytes = v,
            6 => f.end_reason = v as u8,
            7 => f.proto = v as u8,
            8 => f.tcp_flags = v as u8,
            9 => f.score = f32::from_bits(v as u32),
            10 => f.vlan = Some(v as u16),
            _ => f.ip_version = v as u8,
        }
    }
    // The builder encodes times relative to the earliest first time; a
    // first time below it cannot be represented, so keep the base in range.
    let meta = BatchMeta { sensor_id: "edge-1".into(), seq: 7, scale: 1.0 / 127.0, ..Default::default() };
    let buf = BatchBuilder::new().build(&meta, &flows).to_vec();
    let Ok((_, got)) = read_batch(&buf) else { return };
    match validate(&got, NOW) {
        Ok(()) => {
            for f in &got {
                assert!(f.first_ns <= f.last_ns);
                assert!(f.last_ns < 1 << 63);
                assert!(f.fwd_packets as u64 + f.rev_packets as u64 > 0);
                assert!(f.fwd_bytes >= f.fwd_packets as u64 * MIN_IP_PACKET);
                assert!(f.rev_bytes >= f.rev_packets as u64 * MIN_IP_PACKET);
                assert!(f.end_reason <= MAX_END_REASON);
                assert!(f.score.is_finite() && f.score >= 0.0);
                assert!(f.ip_version == 4 || f.ip_version == 6);
            }
        }
        Err(e) => assert!(e.index < got.len()),
    }
});
