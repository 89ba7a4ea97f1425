//! Embedding throughput on one core, and FlowBatch size against JSON.
//!
//!     embed-bench [--rounds N] FILE...
//!
//! Replays FILEs to get real flows, then for batch sizes 64..4096 times
//! feature extraction + inference (ONNX Runtime, one intra-op thread) +
//! int8 quantization over all flows, pinned to CPU 0, and reports the median
//! of N rounds. Then encodes the same flows as FlowBatches (1024 per batch)
//! and as the JSON Lines `wirefold replay` writes, and compares bytes per flow.
use std::time::Instant;
use wirefold_bench::{flows_of, median, pin_to};
use wirefold_embeddings::{Embedder, F};
use wirefold_schema::{BatchBuilder, BatchMeta};
use wirefold_sensor::embed;
use wirefold_sensor::record::FlowRecord;

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut rounds = 5;
    if let Some(i) = args.iter().position(|a| a == "--rounds") {
        rounds = args[i + 1].parse()?;
        args.drain(i..i + 2);
    }
    anyhow::ensure!(!args.is_empty(), "usage: embed-bench [--rounds N] FILE...");
    let mut flows = flows_of(&args)?;
    anyhow::ensure!(!flows.is_empty(), "no flows in the input");
    // Enough flows that every batch size runs many batches.
    let distinct = flows.len();
    while flows.len() < 200_000 {
        flows.extend_from_within(..distinct.min(200_000 - flows.len()));
    }
    pin_to(0);
    let mut e = Embedder::bundled()?;
    println!("{} flows ({distinct} distinct, repeated), {rounds} rounds per batch size, one core (CPU 0), one ONNX Runtime thread", flows.len());
    println!("{:>6} {:>14} {:>12}", "batch", "flows/s", "ns/flow");
    let (mut q, mut s, mut rows) = (Vec::new(), Vec::new(), Vec::<[f32; F]>::new());
    let mut best = (0usize, 0f64);
    for batch in [64, 128, 256, 512, 1024, 2048, 4096] {
        let mut rates = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            for chunk in flows.chunks(batch) {
                rows.clear();
                rows.extend(chunk.iter().map(embed::features));
                e.embed(&rows, &mut q, &mut s)?;
            }
            rates.push(flows.len() as f64 / t.elapsed().as_secs_f64());
        }
        let m = median(rates);
        if m > best.1 {
            best = (batch, m);
        }
        println!("{batch:>6} {m:>14.0} {:>12.1}", 1e9 / m);
    }
    // Sizes: embed everything once, then encode both ways.
    let mut recs = Vec::with_capacity(flows.len());
    let mut infos = Vec::new();
    let mut json_bytes = 0usize;
    let mut line = Vec::new();
    for chunk in flows.chunks(1024) {
        rows.clear();
        rows.extend(chunk.iter().map(embed::features));
        e.embed(&rows, &mut q, &mut s)?;
        for (i, f) in chunk.iter().enumerate() {
            if let Some(x) = embed::flow_info(f, recs.len() as u32) {
                infos.push(x);
            }
            recs.push(embed::flow_rec(f, q[i], s[i]));
            let mut r = FlowRecord::from(f);
            r.score = Some(s[i]);
            r.embedding = Some(q[i].to_vec());
            line.clear();
            serde_json::to_writer(&mut line, &r)?;
            json_bytes += line.len() + 1;
        }
    }
    let mut b = BatchBuilder::new();
    let (mut fb_bytes, mut fb_plain) = (0usize, 0usize);
    for (i, chunk) in recs.chunks(1024).enumerate() {
        let meta = BatchMeta {
            sensor_id: "bench".into(),
            seq: i as u64 + 1,
            model_id: e.card().model_id.clone(),
            scale: e.card().int8_scale,
            ..Default::default()
        };
        let lo = (i * 1024) as u32;
        let info: Vec<_> = infos
            .iter()
            .filter(|x| x.index >= lo && x.index < lo + chunk.len() as u32)
            .map(|x| wirefold_schema::FlowInfoRec { index: x.index - lo, ..x.clone() })
            .collect();
        fb_bytes += b.build_with_info(&meta, chunk, &info).len();
        fb_plain += b.build(&meta, chunk).len();
    }
    let v6 = recs.iter().filter(|r| r.ip_version == 6).count();
    let n = flows.len() as f64;
    let (bpf, jpf) = (fb_bytes as f64 / n, json_bytes as f64 / n);
    println!(
        "best batch size {} ; {:.1}% of flows are IPv6 (116 B) and the rest IPv4 (92 B)",
        best.0,
        100.0 * v6 as f64 / n
    );
    println!(
        "inspection facts on {} of {} flows: {:.1} bytes/flow with them, {:.1} without (+{:.1})",
        infos.len(),
        flows.len(),
        bpf,
        fb_plain as f64 / n,
        bpf - fb_plain as f64 / n
    );
    println!(
        "embed: {:.0} flows/s, flatbuffers: {bpf:.1} bytes/flow, json: {jpf:.1} bytes/flow, ratio: {:.2}",
        best.1,
        jpf / bpf
    );
    Ok(())
}
