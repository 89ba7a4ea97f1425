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
use crate::stream_proto::{Done, Effect, ProtoConfig, Rejection, StreamProto};
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

/// Why streaming to the core stopped, or could not start. Failures that are
/// the network's or the core's (unreachable, busy, a broken stream) are not
/// errors: the streamer retries them and keeps the spool.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The spool directory cannot be created.
    #[error("cannot create spool {}: {source}", path.display())]
    CreateSpool {
        /// The spool directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The spool directory cannot be read.
    #[error("cannot read spool {}: {source}", path.display())]
    ReadSpool {
        /// The spool directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A batch could not be written to the spool (it would be lost).
    #[error("spool write failed: {0}")]
    SpoolWrite(std::io::Error),
    /// The streaming thread or its runtime could not start.
    #[error("cannot start the streaming thread: {0}")]
    Start(std::io::Error),
    /// The token cannot be sent as gRPC metadata.
    #[error("the token is not valid gRPC metadata (printable ASCII only)")]
    BadToken,
    /// The core refused this sensor's credentials: retrying would not help.
    #[error("the core refused this sensor: {0} (check --sensor-id and --token)")]
    Refused(String),
    /// The streaming thread panicked.
    #[error("the streaming thread panicked")]
    Panicked,
}

/// The export thread's handle on the streamer.
#[derive(Debug)]
pub struct Streamer {
    tx: Option<mpsc::Sender<(u64, Vec<u8>)>>,
    next_seq: u64,
    seq_file: PathBuf,
    thread: Option<std::thread::JoinHandle<Result<(), StreamError>>>,
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
    pub fn start(cfg: StreamConfig) -> Result<Self, StreamError> {
        std::fs::create_dir_all(&cfg.spool_dir)
            .map_err(|source| StreamError::CreateSpool { path: cfg.spool_dir.clone(), source })?;
        let spooled = scan_spool(&cfg.spool_dir)
            .map_err(|source| StreamError::ReadSpool { path: cfg.spool_dir.clone(), source })?;
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
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StreamError::Start)?;
                rt.block_on(run(cfg, rx, spooled, c2))
            })
            .map_err(StreamError::Start)?;
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
                Some(Ok(Err(e))) => e.to_string(),
                Some(Ok(Ok(()))) => "it stopped without an error".to_string(),
                Some(Err(_)) => "it panicked".to_string(),
                None => "it was already stopped".to_string(),
            };
            return Err(std::io::Error::other(format!("streaming to the core stopped: {why}")));
        }
        Ok(())
    }

    /// No more batches: deliver the spool (up to the drain timeout) and stop.
    pub fn finish(mut self) -> Result<(), StreamError> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| StreamError::Panicked)?,
            None => Ok(()),
        }
    }
}

pub use crate::stream_proto::refusal_is_final;

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

/// The driver: spool files, tonic and tokio around [`StreamProto`].
async fn run(
    cfg: StreamConfig,
    mut input: mpsc::Receiver<(u64, Vec<u8>)>,
    spooled: BTreeMap<u64, u64>,
    c: Arc<StreamCounters>,
) -> Result<(), StreamError> {
    let pcfg =
        ProtoConfig { window: cfg.window, spool_max_bytes: cfg.spool_max_bytes, drain_timeout: cfg.drain_timeout };
    let mut p = StreamProto::new(pcfg, spooled, Instant::now());
    let bearer: MetadataValue<_> = format!("Bearer {}", cfg.token).parse().map_err(|_| StreamError::BadToken)?;
    let mut input_open = true;
    let mut last_error: Option<String> = None;
    let mut conn: Option<(mpsc::Sender<FlowBatchBytes>, tonic::Streaming<wirefold_schema::rpc::Ack>)> = None;
    loop {
        apply(&mut p, &cfg, &c);
        match p.done(Instant::now()) {
            Some(Done::Delivered) => return Ok(()),
            Some(Done::DrainTimeout { left }) => {
                eprintln!(
                    "wirefold: the core did not take {left} spooled batches in time; they stay in {} and are sent on the next start",
                    cfg.spool_dir.display()
                );
                return Ok(());
            }
            None => {}
        }
        if conn.is_none() && p.should_connect(Instant::now()) {
            match open(&cfg, &bearer).await {
                Ok((tx, acks, resume)) => {
                    p.on_resume(resume);
                    conn = Some((tx, acks));
                    last_error = None;
                }
                Err(OpenError::Refused(e)) => return Err(StreamError::Refused(e)),
                Err(OpenError::Failed(e)) => {
                    p.on_connect_failed(Instant::now());
                    if last_error.as_deref() != Some(e.as_str()) {
                        eprintln!("wirefold: {e}; retrying (spool: {} batches)", p.spool().0);
                        last_error = Some(e);
                    }
                }
            }
            continue;
        }
        let deadline = p.poll_timeout().map(tokio::time::Instant::from_std);
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        match conn.as_mut() {
            None => {
                tokio::select! {
                    _ = timer => {}
                    m = input.recv(), if input_open => take(m, &mut p, &mut input_open, &cfg)?,
                }
            }
            Some((tx, acks)) => {
                let can_send = p.can_send();
                let mut broken = false;
                tokio::select! {
                    _ = timer => {}
                    m = input.recv(), if input_open => take(m, &mut p, &mut input_open, &cfg)?,
                    permit = tx.reserve(), if can_send => match permit {
                        Ok(permit) => {
                            if let Some(seq) = p.poll_send(Instant::now()) {
                                match std::fs::read(cfg.spool_dir.join(spool_name(seq))) {
                                    Ok(bytes) => permit.send(FlowBatchBytes(bytes.into())),
                                    Err(e) => eprintln!("wirefold: spool read of batch {seq} failed: {e}"),
                                }
                            }
                        }
                        Err(_) => { p.on_broken(Instant::now()); broken = true; }
                    },
                    a = acks.message() => match a {
                        Ok(Some(ack)) => match ack.kind {
                            AckKind::Ack => p.on_ack(ack.seq, Instant::now()),
                            AckKind::Rejected => match p.on_rejected(ack.seq, ack.code, Instant::now()) {
                                Rejection::Final => eprintln!(
                                    "wirefold: the core REJECTED batch {} (gRPC code {}): {}",
                                    ack.seq, ack.code, ack.reason
                                ),
                                Rejection::Retry => {
                                    eprintln!(
                                        "wirefold: the core could not store batch {} now (gRPC code {}): {}; it stays in the spool and is resent",
                                        ack.seq, ack.code, ack.reason
                                    );
                                    broken = true;
                                }
                            },
                            AckKind::Resume => {}
                        },
                        Ok(None) => { p.on_broken(Instant::now()); broken = true; }
                        Err(s) => {
                            eprintln!("wirefold: stream to {} ended: {}; reconnecting", cfg.url, s.message());
                            p.on_broken(Instant::now());
                            broken = true;
                        }
                    },
                }
                if broken {
                    conn = None;
                }
            }
        }
    }
}

/// A new batch from the export thread: into the spool, then to the protocol.
fn take(
    m: Option<(u64, Vec<u8>)>,
    p: &mut StreamProto,
    input_open: &mut bool,
    cfg: &StreamConfig,
) -> Result<(), StreamError> {
    match m {
        Some((seq, bytes)) => {
            std::fs::write(cfg.spool_dir.join(spool_name(seq)), &bytes).map_err(StreamError::SpoolWrite)?;
            if let Err(e) = p.on_batch(seq, bytes.len() as u64) {
                eprintln!(
                    "wirefold: {e}: its {} bytes are NOT delivered: is another sensor running with the same --sensor-id '{}'?",
                    bytes.len(),
                    cfg.sensor_id
                );
            }
        }
        None => {
            *input_open = false;
            p.on_input_closed(Instant::now());
        }
    }
    Ok(())
}

/// Carry out the protocol's effects and publish its counters.
fn apply(p: &mut StreamProto, cfg: &StreamConfig, c: &StreamCounters) {
    while let Some(e) = p.poll_effect() {
        match e {
            Effect::Remove(seq) => {
                let _ = std::fs::remove_file(cfg.spool_dir.join(spool_name(seq)));
            }
            Effect::Drop(seq) => {
                let _ = std::fs::remove_file(cfg.spool_dir.join(spool_name(seq)));
                eprintln!(
                    "wirefold: SPOOL FULL ({} bytes): dropped batch {seq}, the oldest; its flows are lost",
                    cfg.spool_max_bytes
                );
            }
            Effect::Rtt(d) => c.rtt.record(d),
        }
    }
    let k = p.counters;
    c.sent.store(k.sent, Relaxed);
    c.resent.store(k.resent, Relaxed);
    c.acked.store(k.acked, Relaxed);
    c.rejected.store(k.rejected, Relaxed);
    c.unavailable.store(k.unavailable, Relaxed);
    c.spool_dropped.store(k.spool_dropped, Relaxed);
    c.reconnects.store(k.reconnects, Relaxed);
    let (batches, bytes) = p.spool();
    c.spool_batches.store(batches as u64, Relaxed);
    c.spool_bytes.store(bytes, Relaxed);
    c.in_flight.store(p.in_flight() as u64, Relaxed);
}

enum OpenError {
    /// The core refused this sensor (a token problem): streaming stops.
    Refused(String),
    /// Anything else: try again after the backoff.
    Failed(String),
}

type Opened = (mpsc::Sender<FlowBatchBytes>, tonic::Streaming<wirefold_schema::rpc::Ack>, u64);

/// Connect, open the stream and read the resume point, each bounded in time.
async fn open(cfg: &StreamConfig, bearer: &MetadataValue<tonic::metadata::Ascii>) -> Result<Opened, OpenError> {
    let mut client = connect(cfg).await.map_err(OpenError::Failed)?;
    let (out_tx, out_rx) = mpsc::channel::<FlowBatchBytes>(cfg.window.max(1));
    let mut req = tonic::Request::new(ReceiverStream::new(out_rx));
    req.metadata_mut().insert("authorization", bearer.clone());
    let mut acks = match tokio::time::timeout(OPEN_TIMEOUT, client.stream(req)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) if s.code() == tonic::Code::Unauthenticated => {
            return Err(OpenError::Refused(s.message().to_string()))
        }
        Ok(Err(s)) => return Err(OpenError::Failed(format!("stream to {} failed: {s}", cfg.url))),
        Err(_) => {
            return Err(OpenError::Failed(format!(
                "the core at {} did not answer within {} s",
                cfg.url,
                OPEN_TIMEOUT.as_secs()
            )))
        }
    };
    match tokio::time::timeout(OPEN_TIMEOUT, acks.message()).await {
        Ok(Ok(Some(a))) if a.kind == AckKind::Resume => Ok((out_tx, acks, a.seq)),
        other => Err(OpenError::Failed(format!("the core did not send a resume point ({other:?})"))),
    }
}
