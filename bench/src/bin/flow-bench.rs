//! In-memory benchmarks of parse + flow tracking on one core.
//!
//! `flow-bench pipeline CAPTURE [RUNS]`: the capture is loaded into memory,
//! then decoded and tracked (fresh table per pass) next to a bare loop that
//! only reads each packet's first 64 bytes; medians of RUNS passes. Prints
//! `pipeline: X Mpps, bare: Y Mpps, ratio: Z`.
//!
//! `flow-bench flood CAPTURE [FLOOD_PACKETS] [RUNS]`: a generated SYN flood
//! (every packet a new flow from a random source and port) followed by the
//! capture's packets, tracked with `--max-flows` 1,000,000, next to the
//! capture alone. Reports the longest stall (time to handle one batch of 256
//! packets, from an hdrhistogram), peak RSS and table memory per flow.
use hdrhistogram::Histogram;
use std::hint::black_box;
use std::time::Instant;
use wirefold_sensor::capture::pcap::PcapFile;
use wirefold_sensor::capture::{LinkType, PacketSource};
use wirefold_sensor::flow::{EndReason, FlowConfig, FlowTable};
use wirefold_sensor::wire::{Decoder, PacketMeta};

struct Packets {
    bytes: Vec<u8>,
    /// (offset, captured length, wire length, time, link)
    index: Vec<(usize, u32, u32, u64, LinkType)>,
}

fn load(path: &str) -> anyhow::Result<Packets> {
    let mut src = PcapFile::open(path)?;
    let mut p = Packets { bytes: Vec::new(), index: Vec::new() };
    loop {
        let more = src.next_batch(&mut |r| {
            p.index.push((p.bytes.len(), r.data.len() as u32, r.wire_len, r.ts_ns, r.link));
            p.bytes.extend_from_slice(r.data);
        })?;
        if !more {
            break;
        }
    }
    Ok(p)
}

/// A SYN from a pseudo-random IPv4 source and port to one server, as an Ethernet frame.
fn syn_frame(out: &mut Vec<u8>, x: u64) {
    let src = [10, (x >> 8) as u8, (x >> 16) as u8, (x >> 24) as u8 | 1];
    let sport = (x >> 32) as u16 | 1024;
    let mut f = [0u8; 14 + 20 + 20];
    f[12] = 0x08; // IPv4
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&[192, 0, 2, 80]);
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    out.extend_from_slice(&f);
}

fn flood(n: usize, t0: u64) -> Packets {
    let mut p = Packets { bytes: Vec::with_capacity(n * 54), index: Vec::with_capacity(n) };
    let mut x = 0x243f6a8885a308d3u64;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.index.push((p.bytes.len(), 54, 54, t0 + i as u64 * 500, LinkType::Ethernet));
        syn_frame(&mut p.bytes, x);
    }
    p
}

fn bare(p: &Packets) -> u64 {
    let mut acc = 0u64;
    for &(off, len, ..) in &p.index {
        let b = &p.bytes[off..off + (len as usize).min(64)];
        for c in b.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            acc = acc.wrapping_add(u64::from_ne_bytes(w));
        }
    }
    acc
}

/// Decode and track `parts` in order through one table; returns the finished
/// flow count and records the time per 256-packet batch in `stalls`.
fn track(parts: &[&Packets], cfg: FlowConfig, stalls: &mut Option<Histogram<u64>>) -> (u64, FlowTable) {
    let mut dec = Decoder::new();
    let mut table = FlowTable::new(cfg);
    let mut meta = PacketMeta::default();
    let mut finished = 0u64;
    for p in parts {
        for chunk in p.index.chunks(256) {
            let t = stalls.as_ref().map(|_| Instant::now());
            for &(off, len, wire, ts, link) in chunk {
                let frame = &p.bytes[off..off + len as usize];
                if dec.decode(link, frame, wire, ts, &mut meta) {
                    table.add(&meta, Decoder::payload(frame, &meta));
                }
            }
            finished += table.drain_finished().count() as u64;
            if let (Some(h), Some(t)) = (stalls.as_mut(), t) {
                let _ = h.record(t.elapsed().as_nanos() as u64);
            }
        }
    }
    table.flush(EndReason::Eof);
    finished += table.drain_finished().count() as u64;
    (finished, table)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: flow-bench pipeline CAPTURE [RUNS] | flow-bench flood CAPTURE [FLOOD_PACKETS] [RUNS]";
    let mode = args.get(1).ok_or_else(|| anyhow::anyhow!(usage))?;
    let cap = args.get(2).ok_or_else(|| anyhow::anyhow!(usage))?;
    let normal = load(cap)?;
    let n = normal.index.len();
    anyhow::ensure!(n > 0, "{cap}: no packets");
    match mode.as_str() {
        "pipeline" => {
            let runs: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
            let (mut tp, mut tb) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let t = Instant::now();
                black_box(bare(&normal));
                tb.push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
                let t = Instant::now();
                black_box(track(&[&normal], FlowConfig::default(), &mut None).0);
                tp.push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
            }
            let (p, b) = (median(tp), median(tb));
            eprintln!("{n} packets in memory, {runs} passes each (medians)");
            println!("pipeline: {p:.2} Mpps, bare: {b:.2} Mpps, ratio: {:.3}", p / b);
        }
        "flood" => {
            let fl: usize = args.get(3).map_or(Ok(3_000_000), |s| s.parse())?;
            let runs: usize = args.get(4).map_or(Ok(3), |s| s.parse())?;
            let t0 = normal.index.first().map_or(0, |p| p.3).saturating_sub(fl as u64 * 500 + 1_000_000_000);
            let syn = flood(fl, t0);
            let cfg = FlowConfig { max_flows: 1_000_000, ..FlowConfig::default() };
            let (mut tf, mut tn) = (Vec::new(), Vec::new());
            let mut max_stall = 0u64;
            let mut evicted = 0u64;
            let mut peak = 0u64;
            for _ in 0..runs {
                let t = Instant::now();
                black_box(track(&[&normal], cfg, &mut None).0);
                tn.push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
                let mut h = Some(Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2)?);
                let t = Instant::now();
                let (fin, table) = track(&[&syn, &normal], cfg, &mut h);
                tf.push((fl + n) as f64 / t.elapsed().as_secs_f64() / 1e6);
                max_stall = max_stall.max(h.as_ref().map_or(0, |h| h.max()));
                evicted = table.stats.eviction_passes;
                peak = table.stats.peak_flows;
                black_box(fin);
            }
            let (f, m) = (median(tf), median(tn));
            let per = FlowTable::bytes_per_flow(cfg.max_flows);
            let table_mib = FlowTable::memory_bytes(cfg.max_flows) as f64 / (1 << 20) as f64;
            let in_memory = (syn.bytes.len() + normal.bytes.len()) as f64 / (1 << 20) as f64
                + ((syn.index.len() + n) * std::mem::size_of::<(usize, u32, u32, u64, LinkType)>()) as f64
                    / (1 << 20) as f64;
            eprintln!(
                "{fl} SYN-flood packets then {n} normal packets; peak {peak} flows, {evicted} evictions (each counted); table {table_mib:.0} MiB for {} flows; the packets held in memory for the benchmark take {in_memory:.0} MiB of the peak RSS",
                cfg.max_flows
            );
            println!(
                "flood: {f:.2} Mpps, normal: {m:.2} Mpps, ratio: {:.3}, max stall: {:.2} ms, table bytes/flow: {per:.0}, peak rss: {:.0} MiB",
                f / m,
                max_stall as f64 / 1e6,
                peak_rss_mib()
            );
        }
        _ => anyhow::bail!(usage),
    }
    Ok(())
}
