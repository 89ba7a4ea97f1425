//! Export to a core: sealed FlowBatches go through an on-disk spool and a
//! gRPC stream with a bounded in-flight window.
//!
//! Every sealed batch gets the sensor's next sequence number (persisted, so
//! it survives restarts) and is written to the spool directory before it is
//! sent; a batch leaves the spool only when the core acknowledges it as
//! durably stored. On (re)connect the core says the highest sequence number
//! it has; everything after it is resent from the spool. The core stores a
//! batch and its sequence number in one transaction, so resends are no-ops:
//! every exported flow reaches the core exactly once in effect. The spool is
//! bounded; only when it is full is the oldest batch dropped — counted and
//! logged loudly.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use wirefold_schema::rpc::ingest::ingest_client::IngestClient;
use wirefold_schema::rpc::{AckKind, FlowBatchBytes};

/// Where and how to stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Core URL, e.g. `http://127.0.0.1:7443`.
    pub url: String,
    /// This sensor's id (must match the token's).
    pub sensor_id: String,
    /// Bearer token.
    pub token: String,
    /// Spool directory (per sensor).
    pub spool_dir: PathBuf,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
    /// Batches sent but not yet acknowledged, at most.
    pub window: usize,
    /// After the input ends, how long to keep trying to deliver the spool.
    pub drain_timeout: Duration,
    /// PEM of the CA that signed the core's certificate (TLS); the URL must be https://.
    pub tls_ca: Option<Vec<u8>>,
}

/// Streaming counters.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Batches sent (including resends).
    pub sent: AtomicU64,
    /// Batches resent after a reconnect.
    pub resent: AtomicU64,
    /// Batches acknowledged as durable.
    pub acked: AtomicU64,
    /// Batches the core refused as their own fault (final: they leave the spool).
    pub rejected: AtomicU64,
    /// Batches the core could not store now (`UNAVAILABLE`): kept and resent.
    pub unavailable: AtomicU64,
    /// Batches dropped because the spool was full.
    pub spool_dropped: AtomicU64,
    /// Connection attempts that failed or streams that broke.
    pub reconnects: AtomicU64,
    /// Bytes in the spool now.
    pub spool_bytes: AtomicU64,
    /// Batches in the spool now.
    pub spool_batches: AtomicU64,
    /// Batches sent and not yet acknowledged.
    pub in_flight: AtomicU64,
    /// Sent-to-acknowledged time per batch.
    pub rtt: wirefold_core::telemetry::Latency,
}

/// The export thread's handle on the streamer.
#[derive(Debug)]
pub struct Streamer {
    tx: Option<mpsc::Sender<(u64, Vec<u8>)>>,
    next_seq: u64,
    seq_file: PathBuf,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    /// Counters.
    pub counters: Arc<StreamCounters>,
}

fn spool_name(seq: u64) -> String {
    format!("{seq:020}.fb")
}

fn scan_spool(dir: &Path) -> std::io::Result<BTreeMap<u64, u64>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(s) = name.to_str().and_then(|n| n.strip_suffix(".fb")) else { continue };
        if let Ok(seq) = s.parse::<u64>() {
            m.insert(seq, e.metadata()?.len());
        }
    }
    Ok(m)
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

impl Streamer {
    /// Open the spool, recover the sequence number, and start streaming.
    pub fn start(cfg: StreamConfig) -> Result<Self, String> {
        std::fs::create_dir_all(&cfg.spool_dir)
            .map_err(|e| format!("cannot create spool {}: {e}", cfg.spool_dir.display()))?;
        let spooled =
            scan_spool(&cfg.spool_dir).map_err(|e| format!("cannot read spool {}: {e}", cfg.spool_dir.display()))?;
        let seq_file = cfg.spool_dir.join("next_seq");
        // A new spool numbers its batches from the clock (microseconds), so a
        // sensor whose data directory was lost never reuses a sequence number
        // the core has already stored (it would be taken for a resend).
        let fresh =
            || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
        let persisted: u64 =
            std::fs::read_to_string(&seq_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(fresh);
        let next_seq = persisted.max(spooled.keys().next_back().map_or(1, |s| s + 1));
        let counters = Arc::new(StreamCounters::default());
        let (tx, rx) = mpsc::channel(16);
        let c2 = counters.clone();
        let thread = std::thread::Builder::new()
            .name("wirefold-stream".into())
            .spawn(move || {
                let rt =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
                rt.block_on(run(cfg, rx, spooled, c2))
            })
            .map_err(|e| e.to_string())?;
        Ok(Streamer { tx: Some(tx), next_seq, seq_file, thread: Some(thread), counters })
    }

    /// The sequence number the next sealed batch must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hand over a sealed batch with sequence number [`Streamer::next_seq`].
    pub fn submit(&mut self, seq: u64, bytes: Vec<u8>) -> std::io::Result<()> {
        debug_assert_eq!(seq, self.next_seq);
        self.next_seq = seq + 1;
        write_atomic(&self.seq_file, self.next_seq.to_string().as_bytes())?;
        let tx = self.tx.as_ref().ok_or_else(|| std::io::Error::other("streamer closed"))?;
        if tx.blocking_send((seq, bytes)).is_err() {
            // The streamer ended early: say why.
            let why = match self.thread.take().map(|t| t.join()) {
                Some(Ok(Err(e))) => e,
                Some(Ok(Ok(()))) => "it stopped without an error".to_string(),
                Some(Err(_)) => "it panicked".to_string(),
                None => "it was already stopped".to_string(),
            };
            return Err(std::io::Error::other(format!("streaming to the core stopped: {why}")));
        }
        Ok(())
    }

    /// No more batches: deliver the spool (up to the drain timeout) and stop.
    pub fn finish(mut self) -> Result<(), String> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "streamer panicked".to_string())?,
            None => Ok(()),
        }
    }
}

/// Whether a refusal ends a batch's life: only refusals that are the
/// batch's own fault. Anything else (`UNAVAILABLE`, `INTERNAL`,
/// `RESOURCE_EXHAUSTED`, ...) is the core's problem: the batch stays in the
/// spool and is resent.
pub fn refusal_is_final(code: u8) -> bool {
    use tonic::Code;
    [Code::InvalidArgument, Code::PermissionDenied, Code::AlreadyExists, Code::OutOfRange, Code::FailedPrecondition]
        .iter()
        .any(|c| *c as i32 == code as i32)
}

/// How long opening a stream (up to the core's resume point) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(cfg: &StreamConfig) -> Result<IngestClient<tonic::transport::Channel>, String> {
    let mut ep = tonic::transport::Endpoint::from_shared(cfg.url.clone())
        .map_err(|e| format!("bad core URL '{}': {e}", cfg.url))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if let Some(ca) = &cfg.tls_ca {
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
        ep = ep.tls_config(tls).map_err(|e| format!("TLS set-up for {}: {e}", cfg.url))?;
    }
    let ch = ep.connect().await.map_err(|e| format!("cannot connect to {}: {e}", cfg.url))?;
    Ok(IngestClient::new(ch).max_decoding_message_size(1 << 20))
}

async fn run(
    cfg: StreamConfig,
    mut input: mpsc::Receiver<(u64, Vec<u8>)>,
    mut spooled: BTreeMap<u64, u64>,
    c: Arc<StreamCounters>,
) -> Result<(), String> {
    let mut spool_bytes: u64 = spooled.values().sum();
    let mut input_open = true;
    let mut drain_deadline: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let publish = |spooled: &BTreeMap<u64, u64>, bytes: u64| {
        c.spool_bytes.store(bytes, Relaxed);
        c.spool_batches.store(spooled.len() as u64, Relaxed);
    };
    // Write a new batch to the spool, dropping the oldest when full.
    let spool = |seq: u64, bytes: &[u8], spooled: &mut BTreeMap<u64, u64>, total: &mut u64| -> Result<(), String> {
        std::fs::write(cfg.spool_dir.join(spool_name(seq)), bytes).map_err(|e| format!("spool write failed: {e}"))?;
        spooled.insert(seq, bytes.len() as u64);
        *total += bytes.len() as u64;
        while *total > cfg.spool_max_bytes && spooled.len() > 1 {
            let (&old, &len) = spooled.iter().next().expect("non-empty");
            let _ = std::fs::remove_file(cfg.spool_dir.join(spool_name(old)));
            spooled.remove(&old);
            *total -= len;
            c.spool_dropped.fetch_add(1, Relaxed);
            eprintln!(
                "wirefold: SPOOL FULL ({} bytes): dropped batch {old}, the oldest; its flows are lost",
                cfg.spool_max_bytes
            );
        }
        Ok(())
    };
    loop {
        if !input_open && spooled.is_empty() {
            return Ok(());
        }
        if let Some(d) = drain_deadline {
            if Instant::now() >= d {
                eprintln!(
                    "wirefold: the core did not take {} spooled batches in time; they stay in {} and are sent on the next start",
                    spooled.len(),
                    cfg.spool_dir.display()
                );
                return Ok(());
            }
        }
        // Connect (meanwhile keep spooling what arrives).
        let client = match connect(&cfg).await {
            Ok(cl) => Some(cl),
            Err(e) => {
                c.reconnects.fetch_add(1, Relaxed);
                if backoff >= Duration::from_secs(1) {
                    eprintln!("wirefold: {e}; retrying (spool: {} batches)", spooled.len());
                }
                None
            }
        };
        let Some(mut client) = client else {
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    m = input.recv(), if input_open => match m {
                        Some((seq, bytes)) => spool(seq, &bytes, &mut spooled, &mut spool_bytes)?,
                        None => { input_open = false; drain_deadline = Some(Instant::now() + cfg.drain_timeout); }
                    },
                }
            }
            publish(&spooled, spool_bytes);
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        let (out_tx, out_rx) = mpsc::channel::<FlowBatchBytes>(cfg.window.max(1));
        let mut req = tonic::Request::new(ReceiverStream::new(out_rx));
        let bearer: MetadataValue<_> =
            format!("Bearer {}", cfg.token).parse().map_err(|_| "token is not valid metadata".to_string())?;
        req.metadata_mut().insert("authorization", bearer);
        let opened = match tokio::time::timeout(OPEN_TIMEOUT, client.stream(req)).await {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "the core did not answer within {} s",
                OPEN_TIMEOUT.as_secs()
            ))),
        };
        let mut acks = match opened {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                return Err(format!("the core refused this sensor: {} (check --sensor-id and --token)", s.message()));
            }
            Err(s) => {
                c.reconnects.fetch_add(1, Relaxed);
                eprintln!("wirefold: stream to {} failed: {s}", cfg.url);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // The core says where to resume.
        let first = tokio::time::timeout(OPEN_TIMEOUT, acks.message()).await;
        let resume = match first {
            Ok(Ok(Some(a))) if a.kind == AckKind::Resume => a.seq,
            other => {
                c.reconnects.fetch_add(1, Relaxed);
                eprintln!("wirefold: the core did not send a resume point ({other:?}); reconnecting");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let done: Vec<u64> = spooled.range(..=resume).map(|(s, _)| *s).collect();
        for s in done {
            let len = spooled.remove(&s).unwrap_or(0);
            spool_bytes -= len;
            let _ = std::fs::remove_file(cfg.spool_dir.join(spool_name(s)));
        }
        publish(&spooled, spool_bytes);
        let mut last_sent = resume;
        let mut inflight = 0usize;
        let mut sent_at: BTreeMap<u64, Instant> = BTreeMap::new();
        loop {
            if !input_open && spooled.is_empty() {
                return Ok(());
            }
            if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let next = spooled.range(last_sent + 1..).next().map(|(s, _)| *s);
            let can_send = next.is_some() && inflight < cfg.window;
            let deadline = drain_deadline;
            tokio::select! {
                _ = async { tokio::time::sleep_until(deadline.expect("guarded").into()).await }, if deadline.is_some() => break,
                m = input.recv(), if input_open => match m {
                    Some((seq, bytes)) if seq <= resume => {
                        // Only when two sensors share an id, or the clock went
                        // back across a lost data directory: the core would
                        // take this batch for a resend. Say so; do not wait on it.
                        c.rejected.fetch_add(1, Relaxed);
                        eprintln!(
                            "wirefold: batch {seq} reuses a sequence number the core already stored for sensor '{}' (it has up to {resume}); its {} bytes are NOT delivered: is another sensor running with the same --sensor-id?",
                            cfg.sensor_id,
                            bytes.len()
                        );
                    }
                    Some((seq, bytes)) => {
                        spool(seq, &bytes, &mut spooled, &mut spool_bytes)?;
                        publish(&spooled, spool_bytes);
                    }
                    None => { input_open = false; drain_deadline = Some(Instant::now() + cfg.drain_timeout); }
                },
                permit = out_tx.reserve(), if can_send => {
                    let Ok(permit) = permit else { break };
                    let seq = next.expect("can_send");
                    match std::fs::read(cfg.spool_dir.join(spool_name(seq))) {
                        Ok(bytes) => {
                            permit.send(FlowBatchBytes(bytes.into()));
                            c.sent.fetch_add(1, Relaxed);
                            inflight += 1;
                            c.in_flight.store(inflight as u64, Relaxed);
                            sent_at.insert(seq, Instant::now());
                        }
                        Err(e) => eprintln!("wirefold: spool read of batch {seq} failed: {e}"),
                    }
                    last_sent = seq;
                },
                a = acks.message() => match a {
                    Ok(Some(ack)) => match ack.kind {
                        AckKind::Ack => {
                            let done: Vec<u64> = spooled.range(..=ack.seq).map(|(s, _)| *s).collect();
                            for s in done {
                                let len = spooled.remove(&s).unwrap_or(0);
                                spool_bytes -= len;
                                let _ = std::fs::remove_file(cfg.spool_dir.join(spool_name(s)));
                                c.acked.fetch_add(1, Relaxed);
                            }
                            inflight = inflight.saturating_sub(1);
                            c.in_flight.store(inflight as u64, Relaxed);
                            let now = Instant::now();
                            while let Some(e) = sent_at.first_entry().filter(|e| *e.key() <= ack.seq) {
                                c.rtt.record(now.duration_since(e.remove()));
                            }
                            publish(&spooled, spool_bytes);
                        }
                        AckKind::Rejected if !refusal_is_final(ack.code) => {
                            // The core's own failure: keep the batch, reconnect
                            // after a pause and resend from the resume point.
                            c.unavailable.fetch_add(1, Relaxed);
                            eprintln!(
                                "wirefold: the core could not store batch {} now (gRPC code {}): {}; it stays in the spool and is resent",
                                ack.seq, ack.code, ack.reason
                            );
                            c.reconnects.fetch_add(1, Relaxed);
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            break;
                        }
                        AckKind::Rejected => {
                            c.rejected.fetch_add(1, Relaxed);
                            inflight = inflight.saturating_sub(1);
                            c.in_flight.store(inflight as u64, Relaxed);
                            sent_at.remove(&ack.seq);
                            eprintln!("wirefold: the core REJECTED batch {} (gRPC code {}): {}", ack.seq, ack.code, ack.reason);
                            if let Some(len) = spooled.remove(&ack.seq) {
                                spool_bytes -= len;
                                let _ = std::fs::remove_file(cfg.spool_dir.join(spool_name(ack.seq)));
                            }
                        }
                        AckKind::Resume => {}
                    },
                    Ok(None) => {
                        c.reconnects.fetch_add(1, Relaxed);
                        break;
                    }
                    Err(s) => {
                        c.reconnects.fetch_add(1, Relaxed);
                        eprintln!("wirefold: stream to {} ended: {}; reconnecting", cfg.url, s.message());
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        break;
                    }
                },
            }
        }
        // The stream broke: what was sent and not acked is resent after reconnecting.
        let unacked = spooled.range(..=last_sent).count() as u64;
        c.resent.fetch_add(unacked, Relaxed);
        c.in_flight.store(0, Relaxed);
    }
}
