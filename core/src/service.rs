//! The gRPC service: authenticate, verify, rate law, bounded queue, store.
use crate::store::{Store, Stored};
use crate::telemetry::{Exposition, Latency};
use crate::tokens::Tokens;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use wirefold_schema::rpc::ingest::ingest_server::{Ingest, IngestServer};
use wirefold_schema::rpc::{Ack, FlowBatchBytes};
use wirefold_schema::{read_batch, FlowRec, MAX_BATCH_BYTES};

/// Core settings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Database file.
    pub db: PathBuf,
    /// Who may send.
    pub tokens: Tokens,
    /// Batches waiting for the store, across all streams; beyond it acks
    /// are withheld (backpressure).
    pub queue: usize,
    /// Per-sensor rate law: flows per second (token bucket); `None` = no limit.
    pub rate_flows_per_s: Option<f64>,
    /// Token-bucket burst, in flows.
    pub burst_flows: f64,
    /// fsync every commit (survives power loss), else survive process crashes.
    pub full_sync: bool,
    /// Largest message accepted (bytes).
    pub max_message: usize,
    /// Artificial delay per stored batch (for backpressure tests).
    pub store_delay: Option<Duration>,
    /// TLS certificate chain and private key (PEM); `None` serves plain HTTP/2.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl CoreConfig {
    /// Defaults for a database and tokens.
    pub fn new(db: PathBuf, tokens: Tokens) -> Self {
        CoreConfig {
            db,
            tokens,
            queue: 64,
            rate_flows_per_s: None,
            burst_flows: 1_000_000.0,
            full_sync: false,
            max_message: MAX_BATCH_BYTES,
            store_delay: None,
            tls: None,
        }
    }
}

/// Counters of the core.
#[derive(Debug, Default)]
pub struct CoreCounters {
    /// Streams refused for authentication (no sensor to count them under).
    pub unauthenticated: AtomicU64,
    /// Batches queued for the store right now.
    pub queue_depth: AtomicU64,
    /// Streams open right now.
    pub streams_open: AtomicU64,
    /// Queue capacity (batches).
    pub queue_capacity: AtomicU64,
    /// Per sensor: batches by result, flows committed, rate-law waits (see
    /// [`CoreCounters::totals`] for all sensors together).
    pub per_sensor: Mutex<BTreeMap<Arc<str>, SensorCounts>>,
    /// Store transaction time (one per batch).
    pub store_latency: Latency,
}

/// One sensor's counts at the core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SensorCounts {
    /// Batches committed.
    pub committed: u64,
    /// Resent batches that were already stored.
    pub duplicate: u64,
    /// Batches refused (verification, sensor mismatch).
    pub rejected: u64,
    /// Batches the store failed to write (the sensor resends them).
    pub failed: u64,
    /// Flows committed.
    pub flows: u64,
    /// Times the rate law made this sensor's stream wait.
    pub rate_waits: u64,
    /// When the sensor last connected or had a batch acknowledged (Unix seconds).
    pub last_seen_unix: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl CoreCounters {
    fn sensor(&self, sensor: &Arc<str>, f: impl FnOnce(&mut SensorCounts)) {
        let mut m = self.per_sensor.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(sensor.clone()).or_default();
        e.last_seen_unix = unix_now();
        f(e);
    }

    /// The per-sensor counts summed over all sensors (`last_seen_unix` is the latest).
    pub fn totals(&self) -> SensorCounts {
        let m = self.per_sensor.lock().unwrap_or_else(|p| p.into_inner());
        m.values().fold(SensorCounts::default(), |a, c| SensorCounts {
            committed: a.committed + c.committed,
            duplicate: a.duplicate + c.duplicate,
            rejected: a.rejected + c.rejected,
            failed: a.failed + c.failed,
            flows: a.flows + c.flows,
            rate_waits: a.rate_waits + c.rate_waits,
            last_seen_unix: a.last_seen_unix.max(c.last_seen_unix),
        })
    }

    /// The core's metric families (names start with `wirefold_core_`).
    pub fn exposition(&self) -> Exposition {
        let mut e = Exposition::new();
        let per = self.per_sensor.lock().unwrap_or_else(|p| p.into_inner()).clone();
        const BATCHES: &str = "Batches received, by sensor and result (committed, duplicate = a resend already stored, rejected = refused with a reason, failed = store error, resent later).";
        for (sensor, c) in &per {
            for (result, v) in
                [("committed", c.committed), ("duplicate", c.duplicate), ("rejected", c.rejected), ("failed", c.failed)]
            {
                e.counter("wirefold_core_batches_total", BATCHES, &[("sensor", sensor), ("result", result)], v as f64);
            }
        }
        if per.is_empty() {
            e.counter("wirefold_core_batches_total", BATCHES, &[("sensor", ""), ("result", "committed")], 0.0);
        }
        for (sensor, c) in &per {
            e.counter(
                "wirefold_core_flows_total",
                "Flows committed to the store, by sensor.",
                &[("sensor", sensor)],
                c.flows as f64,
            );
            e.gauge(
                "wirefold_core_sensor_last_seen_timestamp_seconds",
                "When the sensor last connected or sent a batch (Unix time); alert on time() minus this.",
                &[("sensor", sensor)],
                c.last_seen_unix as f64,
            );
            e.counter(
                "wirefold_core_rate_waits_total",
                "Times the per-sensor rate law made a stream wait.",
                &[("sensor", sensor)],
                c.rate_waits as f64,
            );
        }
        e.counter_of(
            "wirefold_core_unauthenticated_total",
            "Streams refused for a missing or unknown bearer token.",
            &self.unauthenticated,
        );
        e.gauge_of("wirefold_core_queue_depth", "Batches waiting for the store right now.", &self.queue_depth);
        e.gauge_of(
            "wirefold_core_queue_capacity",
            "Batches the store queue holds before acks are withheld (backpressure).",
            &self.queue_capacity,
        );
        e.gauge_of("wirefold_core_streams", "Sensor streams open right now.", &self.streams_open);
        e.summary(
            "wirefold_core_store_seconds",
            "Store transaction time per batch (quantiles over the last 1-2 minutes).",
            &[],
            &self.store_latency,
        );
        e
    }
}

enum StoreMsg {
    Store { sensor: Arc<str>, seq: u64, flows: Vec<FlowRec>, done: oneshot::Sender<Result<Stored, String>> },
    LastSeq { sensor: Arc<str>, done: oneshot::Sender<Result<u64, String>> },
}

struct Svc {
    tokens: Tokens,
    store: mpsc::Sender<StoreMsg>,
    counters: Arc<CoreCounters>,
    rate: Option<(f64, f64)>,
}

enum Pending {
    Commit(u64, oneshot::Receiver<Result<Stored, String>>),
    Now(Ack),
}

struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Take `n` tokens, waiting as long as the rate law says. Returns whether it waited.
    async fn take(&mut self, n: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        self.tokens -= n;
        if self.tokens >= 0.0 {
            return false;
        }
        tokio::time::sleep(Duration::from_secs_f64(-self.tokens / self.rate)).await;
        true
    }
}

fn bearer(req: &Request<Streaming<FlowBatchBytes>>) -> Option<&str> {
    req.metadata().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

#[tonic::async_trait]
impl Ingest for Svc {
    type StreamStream = ReceiverStream<Result<Ack, Status>>;

    async fn stream(&self, req: Request<Streaming<FlowBatchBytes>>) -> Result<Response<Self::StreamStream>, Status> {
        let token = match bearer(&req) {
            Some(t) => t,
            None => {
                self.counters.unauthenticated.fetch_add(1, Relaxed);
                return Err(Status::unauthenticated("missing bearer token (metadata 'authorization: Bearer TOKEN')"));
            }
        };
        let sensor: Arc<str> = match self.tokens.sensor(token) {
            Some(s) => s.into(),
            None => {
                self.counters.unauthenticated.fetch_add(1, Relaxed);
                return Err(Status::unauthenticated("unknown token"));
            }
        };
        let (done, rx) = oneshot::channel();
        self.store
            .send(StoreMsg::LastSeq { sensor: sensor.clone(), done })
            .await
            .map_err(|_| Status::unavailable("store stopped"))?;
        let resume = rx.await.map_err(|_| Status::unavailable("store stopped"))?.map_err(Status::internal)?;
        self.counters.sensor(&sensor, |_| {});
        let mut inbound = req.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<Result<Ack, Status>>(256);
        let _ = out_tx.send(Ok(Ack::resume(resume))).await;
        let (pend_tx, mut pend_rx) = mpsc::channel::<Pending>(256);
        let store = self.store.clone();
        let counters = self.counters.clone();
        let mut bucket = self.rate.map(|(rate, burst)| Bucket { rate, burst, tokens: burst, at: Instant::now() });
        let ack_sensor = sensor.clone();
        // Reader: verify, rate law, queue for the store (waiting when it is full).
        let reader_out = out_tx.clone();
        tokio::spawn(async move {
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        // Oversize or broken framing: the stream cannot go on.
                        let _ = reader_out.send(Err(status)).await;
                        break;
                    }
                };
                let p = match read_batch(&msg.0) {
                    Err(e) => {
                        counters.sensor(&sensor, |c| c.rejected += 1);
                        Pending::Now(Ack::rejected(0, Code::InvalidArgument, e.to_string()))
                    }
                    Ok((meta, _)) if *meta.sensor_id != *sensor => {
                        counters.sensor(&sensor, |c| c.rejected += 1);
                        Pending::Now(Ack::rejected(
                            meta.seq,
                            Code::PermissionDenied,
                            format!("batch names sensor '{}', but the token is for '{sensor}'", meta.sensor_id),
                        ))
                    }
                    Ok((meta, flows)) => {
                        if let Some(b) = bucket.as_mut() {
                            if b.take(flows.len() as f64).await {
                                counters.sensor(&sensor, |c| c.rate_waits += 1);
                            }
                        }
                        let (done, rx) = oneshot::channel();
                        counters.queue_depth.fetch_add(1, Relaxed);
                        if store
                            .send(StoreMsg::Store { sensor: sensor.clone(), seq: meta.seq, flows, done })
                            .await
                            .is_err()
                        {
                            break;
                        }
                        Pending::Commit(meta.seq, rx)
                    }
                };
                if pend_tx.send(p).await.is_err() {
                    break;
                }
            }
        });
        // Acker: answer in order, each once its batch is durable.
        let counters = self.counters.clone();
        counters.streams_open.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            let _open = OpenStream(counters.clone());
            while let Some(p) = pend_rx.recv().await {
                let ack = match p {
                    Pending::Now(a) => a,
                    Pending::Commit(seq, rx) => match rx.await {
                        Ok(Ok(Stored::Committed(s))) => {
                            counters.sensor(&ack_sensor, |c| c.committed += 1);
                            Ack::durable(s)
                        }
                        Ok(Ok(Stored::Duplicate(s))) => {
                            counters.sensor(&ack_sensor, |c| c.duplicate += 1);
                            Ack::durable(s)
                        }
                        Ok(Err(e)) => {
                            counters.sensor(&ack_sensor, |c| c.failed += 1);
                            Ack::rejected(seq, Code::Internal, e)
                        }
                        Err(_) => break,
                    },
                };
                if out_tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

/// Counts an open stream until dropped.
struct OpenStream(Arc<CoreCounters>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Relaxed);
    }
}

fn store_thread(
    mut store: Store,
    mut rx: mpsc::Receiver<StoreMsg>,
    counters: Arc<CoreCounters>,
    delay: Option<Duration>,
) {
    let mut last_states = Instant::now();
    while let Some(m) = rx.blocking_recv() {
        match m {
            StoreMsg::LastSeq { sensor, done } => {
                let r = store.touch(&sensor).and_then(|_| store.last_seq(&sensor)).map_err(|e| e.to_string());
                let _ = done.send(r);
            }
            StoreMsg::Store { sensor, seq, flows, done } => {
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                let n = flows.len() as u64;
                let t0 = Instant::now();
                let r = store.store(&sensor, seq, &flows).map_err(|e| format!("store failed: {e}"));
                counters.store_latency.record(t0.elapsed());
                if matches!(r, Ok(Stored::Committed(_))) {
                    counters.sensor(&sensor, |c| c.flows += n);
                }
                counters.queue_depth.fetch_sub(1, Relaxed);
                let _ = done.send(r);
            }
        }
        if last_states.elapsed() > Duration::from_secs(5) {
            last_states = Instant::now();
            let _ = store.update_states(30_000_000_000, 300_000_000_000);
        }
    }
}

/// A core running on its own thread and runtime (used by `wirefold core`
/// and by `--core embedded`).
#[derive(Debug)]
pub struct CoreHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub counters: Arc<CoreCounters>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CoreHandle {
    /// Stop serving and wait for the store to finish what it has.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stop serving and wait for the store to finish what it has; the
    /// counters stay readable.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Wait until the core stops (it runs until stopped).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CoreHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Bind `listen`, open the store and serve on a thread of its own.
pub fn serve(listen: SocketAddr, cfg: CoreConfig) -> Result<CoreHandle, String> {
    let store =
        Store::open(&cfg.db, cfg.full_sync).map_err(|e| format!("cannot open database {}: {e}", cfg.db.display()))?;
    let std_listener = std::net::TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    std_listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = std_listener.local_addr().map_err(|e| e.to_string())?;
    let counters = Arc::new(CoreCounters::default());
    counters.queue_capacity.store(cfg.queue.max(1) as u64, Relaxed);
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let c2 = counters.clone();
    let thread = std::thread::Builder::new()
        .name("wirefold-core".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let st = rt.block_on(async move {
                let (store_tx, store_rx) = mpsc::channel(cfg.queue.max(1));
                let sc = c2.clone();
                let delay = cfg.store_delay;
                let st = std::thread::Builder::new()
                    .name("wirefold-store".into())
                    .spawn(move || store_thread(store, store_rx, sc, delay))
                    .expect("store thread");
                let svc = Svc {
                    tokens: cfg.tokens.clone(),
                    store: store_tx,
                    counters: c2,
                    rate: cfg.rate_flows_per_s.map(|r| (r, cfg.burst_flows.max(1.0))),
                };
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let server = IngestServer::new(svc).max_decoding_message_size(cfg.max_message);
                let mut builder = tonic::transport::Server::builder();
                if let Some((cert, key)) = &cfg.tls {
                    let id = tonic::transport::Identity::from_pem(cert, key);
                    builder = match builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(id)) {
                        Ok(b) => b,
                        Err(e) => {
                            eprintln!("wirefold core: TLS set-up failed: {e}");
                            return st;
                        }
                    };
                }
                let (stop_tx, stop_rx) = oneshot::channel::<()>();
                let server = builder.add_service(server).serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                });
                tokio::pin!(server);
                tokio::select! {
                    r = &mut server => {
                        if let Err(e) = r {
                            eprintln!("wirefold core: server error: {e}");
                        }
                    }
                    _ = shutdown_rx => {
                        // Stop accepting; give open streams two seconds to finish, then close them.
                        let _ = stop_tx.send(());
                        if tokio::time::timeout(Duration::from_secs(2), &mut server).await.is_err() {
                            eprintln!("wirefold core: closing streams that are still open");
                        }
                    }
                }
                st
            });
            // Dropping the runtime cancels the stream tasks and with them the
            // last senders to the store, which then drains what it has and stops.
            drop(rt);
            let _ = st.join();
        })
        .map_err(|e| e.to_string())?;
    Ok(CoreHandle { addr, counters, shutdown: Some(shutdown), thread: Some(thread) })
}
