//! The gate engine alone on generated flows, every gate on (score and
//! novelty enforcing, burst and budget enforcing, drift on), against a bare
//! loop over the same flows; prints flows/s and the ratio.
//!
//! `cargo run --release -p wirefold-core --example gates_bench [flows]`
use std::time::Instant;
use wirefold_core::gates::{GateEngine, GatesConfig};
use wirefold_schema::FlowRec;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let batch = 1000;
    // Flows from 64 clusters of embeddings with noise, 200 classes, scores in [0, 1).
    let mut x = 0x2545f4914f6cdd1du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let centres: Vec<[i8; 32]> = (0..64).map(|_| std::array::from_fn(|_| ((rnd() % 200) as i16 - 100) as i8)).collect();
    let flows: Vec<FlowRec> = (0..n)
        .map(|i| {
            let c = &centres[(rnd() % 64) as usize];
            let mut f = FlowRec {
                ip_version: 4,
                proto: 6,
                dst_port: (rnd() % 200) as u16,
                first_ns: 1_000_000_000 * (i / 5000) as u64,
                last_ns: 1_000_000_000 * (i / 5000) as u64 + 1,
                fwd_packets: 1,
                fwd_bytes: 60,
                score: (rnd() % 1000) as f32 / 1000.0,
                ..Default::default()
            };
            f.dst[..4].copy_from_slice(&(rnd() as u32).to_be_bytes());
            for (d, v) in f.embedding.iter_mut().zip(c) {
                *d = v.saturating_add(((rnd() % 9) as i16 - 4) as i8);
            }
            f
        })
        .collect();
    // Bare loop: touch every field the engine reads.
    let t = Instant::now();
    let mut acc = 0u64;
    for b in flows.chunks(batch) {
        for f in b {
            let e = f.embedding.iter().fold(0i64, |a, &v| a + v as i64);
            acc = acc.wrapping_add(f.score.to_bits() as u64 ^ f.dst_port as u64 ^ e as u64);
        }
    }
    let bare = t.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    let mut e = GateEngine::new(GatesConfig::default());
    let t = Instant::now();
    let mut promoted = 0usize;
    for b in flows.chunks(batch) {
        let d = e.decide("bench", b);
        promoted += d.decisions.iter().filter(|d| d.held.is_none()).count();
    }
    let gated = t.elapsed().as_secs_f64();
    let s = &e.status()[0];
    println!(
        "gates_bench: {n} flows in batches of {batch}: engine {:.0} flows/s, bare loop {:.0} flows/s, ratio {:.1}x; promoted {promoted}, reservoir {}/{}, snapshot {} bytes",
        n as f64 / gated,
        n as f64 / bare,
        gated / bare,
        s.reservoir_len,
        s.reservoir_cap,
        e.snapshot("bench").map_or(0, |v| v.len())
    );
}
