//! Agent API benchmark (bench/agent.sh): a core holding N stored flows;
//! latency of an indexed flow query and of a nearest-neighbour query over
//! MCP, next to the same question asked of SQLite directly in the same run;
//! ingest throughput with and without an agent calling in a loop.
//!
//! `cargo run --release -p wirefold-core --example agent_bench -- FLOWS DIR`
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wirefold_core::agent::{AgentConfig, AgentLimits, AgentTokens};
use wirefold_core::{serve, CoreConfig, Store, Tokens};
use wirefold_schema::rpc::ingest::ingest_client::IngestClient;
use wirefold_schema::rpc::FlowBatchBytes;
use wirefold_schema::{BatchBuilder, BatchMeta, FlowRec};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;
const PER: usize = 1000;

fn flows(seq: u64, x: &mut u64) -> Vec<FlowRec> {
    let t = T0 + seq * S;
    (0..PER)
        .map(|i| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            let r = *x;
            let mut f = FlowRec {
                ip_version: 4,
                src_port: 30000 + (r % 20000) as u16,
                dst_port: [22u16, 53, 80, 443, 8080][(r >> 8) as usize % 5],
                proto: 6,
                fwd_packets: 1 + (r >> 12) as u32 % 50,
                first_ns: t - 1000,
                last_ns: t - (i as u64),
                score: ((r >> 20) % 1000) as f32 / 1000.0,
                ..Default::default()
            };
            f.fwd_bytes = f.fwd_packets as u64 * 100;
            f.src[..4].copy_from_slice(&[10, (r >> 30) as u8 % 8, (r >> 34) as u8, (r >> 42) as u8]);
            f.dst[..4].copy_from_slice(&[192, 168, (r >> 50) as u8 % 16, 1]);
            for (k, v) in f.embedding.iter_mut().enumerate() {
                *v = ((r >> (k % 56)) as i8) / 2;
            }
            f
        })
        .collect()
}

fn pct(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.99))
}

fn mcp_call(addr: SocketAddr, token: &str, id: u64, tool: &str, args: &serde_json::Value) -> String {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
        .to_string();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        addr.port(),
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{}", &out[..out.len().min(400)]);
    assert!(!out.contains("\"isError\":true"), "{}", &out[..out.len().min(600)]);
    out
}

async fn ingest(addr: SocketAddr, sensor: &str, token: &str, from: u64, n: u64) -> f64 {
    let mut x = 0x9e3779b97f4a7c15u64 ^ from;
    let bs: Vec<Vec<u8>> = (from..from + n)
        .map(|seq| {
            let meta = BatchMeta {
                sensor_id: sensor.into(),
                seq,
                model_id: "m".into(),
                scale: 1.0 / 127.0,
                ..Default::default()
            };
            BatchBuilder::new().build(&meta, &flows(seq, &mut x)).to_vec()
        })
        .collect();
    let mut client = IngestClient::connect(format!("http://{addr}")).await.unwrap();
    let (tx, rx) = mpsc::channel(32);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut acks = client.stream(req).await.unwrap().into_inner();
    acks.message().await.unwrap().unwrap();
    let t0 = Instant::now();
    let sender = tokio::spawn(async move {
        for b in bs {
            tx.send(FlowBatchBytes(b.into())).await.unwrap();
        }
    });
    for _ in 0..n {
        acks.message().await.unwrap().unwrap();
    }
    sender.await.unwrap();
    (n as usize * PER) as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let dir = std::path::PathBuf::from(args.get(2).cloned().unwrap_or_else(|| "/tmp/wirefold-agent-bench".into()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("core.db");
    // Load: batches straight into the store (gates not run), as a core that ran a while holds them.
    let t0 = Instant::now();
    let batches = total / PER as u64;
    {
        let mut st = Store::open(&db, false).unwrap();
        let mut x = 1u64;
        for seq in 1..=batches {
            st.store("edge-1", seq, &[seq as u8; 32], &flows(seq, &mut x), T0 + seq * S).unwrap();
        }
    }
    println!("loaded {} flows in {:.1} s", batches * PER as u64, t0.elapsed().as_secs_f64());
    let mut cfg = CoreConfig::new(db.clone(), Tokens::parse("edge-2 edge-2-token\nedge-3 edge-3-token\n").unwrap());
    let mut a =
        AgentConfig::new("127.0.0.1:0".parse().unwrap(), AgentTokens::parse("bench observe bench-token-1\n").unwrap());
    a.limits = AgentLimits { calls_per_s: 1e6, burst: 1e6, ..Default::default() };
    cfg.agent = Some(a);
    let core = serve("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let mcp = core.mcp_addr.unwrap();
    let tok = "bench-token-1";
    let c = rusqlite::Connection::open(&db).unwrap();
    wirefold_core::agent::tools::register_functions(&c, 0).unwrap();
    // 1. Indexed flow query: one sensor, a 60 s window somewhere in the data, 100 rows.
    let n = 200u64;
    let window = move |i: u64| {
        let s = T0 + (1 + (i * 7919) % (batches.max(61) - 60)) * S;
        serde_json::json!({"sensor": "edge-1", "since_ns": s, "until_ns": s + 60 * S, "port": 443, "limit": 100})
    };
    let (mut direct, mut over) = (Vec::new(), Vec::new());
    for i in 0..n {
        let a = window(i);
        let l = AgentLimits::default();
        let (sql, p) = wirefold_core::agent::tools::query_flows_sql(&a, &l).unwrap();
        let t = Instant::now();
        let mut q = c.prepare_cached(&sql).unwrap();
        let rows = q.query_map(rusqlite::params_from_iter(p), |r| r.get::<_, i64>(1)).unwrap().count();
        direct.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(rows > 0);
        let t = Instant::now();
        let a2 = a.clone();
        tokio::task::spawn_blocking(move || mcp_call(mcp, tok, i, "query_flows", &a2)).await.unwrap();
        over.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (d50, d99) = pct(direct);
    let (m50, m99) = pct(over);
    println!("query_flows (indexed, sensor + 60 s window + port, 100 rows): direct SQLite p50 {d50:.2} ms p99 {d99:.2} ms; over MCP p50 {m50:.2} ms p99 {m99:.2} ms");
    // 2. Nearest neighbours over every stored embedding.
    let t = Instant::now();
    tokio::task::spawn_blocking(move || {
        mcp_call(mcp, tok, 0, "similar_flows", &serde_json::json!({"vector": vec![3; 32], "k": 10}))
    })
    .await
    .unwrap();
    println!(
        "similar_flows first call (loads the packed copy of {total} embeddings): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let (mut direct, mut over) = (Vec::new(), Vec::new());
    for i in 0..50u64 {
        let v: Vec<i64> = (0..32).map(|k| ((i * 31 + k * 7) % 200) as i64 - 100).collect();
        let t = Instant::now();
        let mut q = c.prepare_cached("SELECT embedding FROM flows").unwrap();
        let mut best = [u32::MAX; 10];
        let mut rows = q.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let b = r.get_ref(0).unwrap().as_blob().unwrap();
            let d: u32 = b.iter().zip(&v).map(|(x, y)| ((*x as i8) as i64 - y).unsigned_abs() as u32).sum();
            if d < best[9] {
                best[9] = d;
                best.sort_unstable();
            }
        }
        direct.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            mcp_call(mcp, tok, i, "similar_flows", &serde_json::json!({"vector": v, "k": 10}))
        })
        .await
        .unwrap();
        over.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(out.contains(&format!("\"distance\":{}", best[0])), "same nearest distance {}", best[0]);
    }
    let (d50, d99) = pct(direct);
    let (m50, m99) = pct(over);
    println!("similar_flows (k=10, L1, all {total} embeddings): direct SQLite scan + L1 p50 {d50:.1} ms p99 {d99:.1} ms; over MCP (packed in-memory copy) p50 {m50:.1} ms p99 {m99:.1} ms");
    // 3. Ingest with and without an agent calling in a loop: alone and with
    // alternate (A B A B A B A), each "with" run compared with the mean of
    // the "alone" runs either side of it (the store slows as it grows, and
    // this box drifts).
    let mut seq2 = 1u64;
    let mut seq3 = 1u64;
    let mut alone = vec![ingest(core.addr, "edge-2", "edge-2-token", seq2, 100).await];
    seq2 += 100;
    let (mut with, mut calls) = (Vec::new(), 0u64);
    for _ in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let looper = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s2.load(Ordering::Relaxed) {
                let args =
                    if n.is_multiple_of(2) { window(n) } else { serde_json::json!({"vector": vec![1; 32], "k": 10}) };
                mcp_call(mcp, tok, n, if n.is_multiple_of(2) { "query_flows" } else { "similar_flows" }, &args);
                n += 1;
            }
            n
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        with.push(ingest(core.addr, "edge-3", "edge-3-token", seq3, 100).await);
        seq3 += 100;
        stop.store(true, Ordering::Relaxed);
        calls += looper.join().unwrap();
        alone.push(ingest(core.addr, "edge-2", "edge-2-token", seq2, 100).await);
        seq2 += 100;
    }
    let ratios: Vec<f64> = with.iter().enumerate().map(|(i, w)| w / ((alone[i] + alone[i + 1]) / 2.0)).collect();
    let ratio = ratios.iter().sum::<f64>() / ratios.len() as f64;
    println!(
        "ingest (100 batches of 1000 flows per run): alone {:?} flows/s, with an agent calling in a loop {:?} flows/s ({calls} calls); ratios {:?}, mean {ratio:.2}",
        alone.iter().map(|x| *x as u64).collect::<Vec<_>>(),
        with.iter().map(|x| *x as u64).collect::<Vec<_>>(),
        ratios.iter().map(|r| (r * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
    core.stop();
}
