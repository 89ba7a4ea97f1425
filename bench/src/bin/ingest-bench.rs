//! The core's ingest capacity: FlowBatches (from `wirefold replay
//! --batches-out`) re-sequenced and sent over gRPC on loopback to an
//! in-process core that stores every flow in SQLite; flows per second from
//! the first send to the last durable ack.
//!
//!     ingest-bench BATCHES_FILE DB_DIR [MIN_FLOWS] [gates-off]
//!
//! With `gates-off` every promotion gate is off (the baseline); by default
//! the core runs its default gates, as `wirefold core` does.
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wirefold_core::{serve, CoreConfig, Store, Tokens};
use wirefold_schema::rpc::ingest::ingest_client::IngestClient;
use wirefold_schema::rpc::{AckKind, FlowBatchBytes};
use wirefold_schema::{read_batch, read_framed, BatchBuilder};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() >= 2, "usage: ingest-bench BATCHES_FILE DB_DIR [MIN_FLOWS]");
    let min_flows: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let mut r = std::io::BufReader::new(std::fs::File::open(&args[0])?);
    let mut base = Vec::new();
    while let Some(b) = read_framed(&mut r)? {
        base.push(read_batch(&b)?);
    }
    anyhow::ensure!(!base.is_empty(), "no batches in {}", args[0]);
    // Re-sequence copies of the batches until there are enough flows.
    let mut bufs = Vec::new();
    let (mut flows, mut seq) = (0usize, 0u64);
    let mut builder = BatchBuilder::new();
    while flows < min_flows {
        for (meta, recs) in &base {
            seq += 1;
            let mut m = meta.clone();
            m.sensor_id = "bench".into();
            m.seq = seq;
            bufs.push(builder.build(&m, recs).to_vec());
            flows += recs.len();
        }
    }
    std::fs::create_dir_all(&args[1])?;
    let db = std::path::Path::new(&args[1]).join("ingest-bench.db");
    for ext in ["", "-wal", "-shm", ".ledger.jsonl"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let gates_off = args.get(3).is_some_and(|a| a == "gates-off");
    let mut cfg = CoreConfig::new(db.clone(), Tokens::single("bench", "bench-token"));
    if gates_off {
        cfg.gates = wirefold_core::GatesConfig::all_off();
    }
    let core = serve("127.0.0.1:0".parse()?, cfg)?;
    let url = format!("http://{}", core.addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let n = bufs.len() as u64;
    let secs = rt.block_on(async move {
        let mut client = IngestClient::connect(url).await?;
        let (tx, rx) = mpsc::channel(64);
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        req.metadata_mut().insert("authorization", "Bearer bench-token".parse()?);
        let mut acks = client.stream(req).await?.into_inner();
        let first = acks.message().await?.ok_or_else(|| anyhow::anyhow!("no resume"))?;
        anyhow::ensure!(first.kind == AckKind::Resume);
        let t = Instant::now();
        tokio::spawn(async move {
            for b in bufs {
                if tx.send(FlowBatchBytes(b.into())).await.is_err() {
                    break;
                }
            }
        });
        loop {
            let a = acks.message().await?.ok_or_else(|| anyhow::anyhow!("stream ended"))?;
            if std::env::var_os("INGEST_DEBUG").is_some() {
                eprintln!("ack {:?} {} {}", a.kind, a.seq, a.reason);
            }
            anyhow::ensure!(a.kind == AckKind::Ack, "rejected: {}", a.reason);
            if a.seq == n {
                break;
            }
        }
        Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64())
    })?;
    drop(rt);
    core.stop();
    let stored = Store::open(&db, false)?.flow_count("bench")?;
    anyhow::ensure!(stored as usize == flows, "stored {stored} of {flows} flows");
    println!(
        "core ingest (gates {}): {flows} flows in {n} batches stored in {secs:.2} s: {:.0} flows/s (every flow verified in the database)",
        if gates_off { "off" } else { "on" },
        flows as f64 / secs
    );
    Ok(())
}
