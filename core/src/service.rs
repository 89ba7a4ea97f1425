//! The gRPC service: authenticate, checksum and verify, validate, rate law,
//! bounded queue, store.
//!
//! Failure rules (see `docs/operations.md`, "Limits and failure behaviour"):
//! - a refusal that is the batch's fault (corrupt, malformed, invalid, a
//!   sequence number out of discipline) is answered with a rejection that
//!   names the reason; the stream goes on;
//! - a store error is the core's fault: the store retries with backoff,
//!   logging and counting; if it keeps failing the batch is answered
//!   `UNAVAILABLE` and the stream ends, so the sensor keeps the batch and
//!   resends it after reconnecting;
//! - one live stream per sensor: a new stream fences (closes) the older one.
use crate::admin::{AdminListen, AdminRequest};
use crate::gates::{DriftReference, GatesConfig};
use crate::listen::{ListenCounters, ListenLimits};
use crate::promote::{GateMetrics, PromoteError, Promotion};
use crate::rate::{Rate, RateLaw};
use crate::store::{Refusal, Store, StoreError, Stored, SEQ_LIMIT};
use crate::telemetry::{Exposition, Latency};
use crate::tokens::{Tokens, MAX_SENSOR_ID};
use crate::validate::validate;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use wirefold_schema::rpc::ingest::ingest_server::{Ingest, IngestServer};
use wirefold_schema::rpc::{Ack, FlowBatchBytes};
use wirefold_schema::{read_batch, read_info, FlowInfoRec, FlowRec, SchemaError, MAX_BATCH_BYTES};

/// Longest refusal reason sent to a sensor, in bytes (longer ones are cut).
pub const MAX_REASON: usize = 256;
/// Answers queued per stream for a sensor that does not read them; beyond
/// it the stream stops reading batches (memory per stream stays bounded).
pub const ACKS_PER_STREAM: usize = 64;
/// Concurrent HTTP/2 streams per connection.
pub const STREAMS_PER_CONNECTION: u32 = 4;
/// Largest HTTP/2 header list accepted (bytes).
pub const MAX_HEADER_LIST: u32 = 16 << 10;

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
    /// Serve plain text (bearer tokens in the clear) on a non-loopback address.
    pub allow_plaintext: bool,
    /// Connection limits of the gRPC port.
    pub limits: ListenLimits,
    /// HTTP/2 keepalive ping interval (a peer that does not answer within
    /// 10 s more is closed).
    pub keepalive: Duration,
    /// How long the store retries a failing write before it answers
    /// `UNAVAILABLE` (the sensor keeps the batch and resends it).
    pub store_retry_for: Duration,
    /// The promotion gates (`[gates]`; see `docs/gates.md`).
    pub gates: GatesConfig,
    /// The audit ledger; `None` = `<db>.ledger.jsonl` beside the database.
    pub ledger: Option<PathBuf>,
    /// The admin endpoint (address and token); `None` = no admin endpoint.
    pub admin: Option<AdminListen>,
    /// The drift reference for sensors without one (else learned from their first windows).
    pub drift_reference: Option<DriftReference>,
    /// The agent API (MCP over Streamable HTTP at `/mcp`); `None` = off.
    pub agent: Option<crate::agent::AgentConfig>,
}

/// Default connection cap: three quarters of the descriptor limit (the rest
/// is for the database, the metrics port and the runtime), at most 4,096.
pub fn default_max_connections() -> usize {
    let fds = crate::listen::descriptor_limit().unwrap_or(1024);
    ((fds as usize).saturating_mul(3) / 4).saturating_sub(32).clamp(8, 4096)
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
            allow_plaintext: false,
            limits: ListenLimits {
                max_connections: default_max_connections(),
                handshake_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
            },
            keepalive: Duration::from_secs(20),
            store_retry_for: Duration::from_secs(30),
            gates: GatesConfig::default(),
            ledger: None,
            admin: None,
            drift_reference: None,
            agent: None,
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
    /// Store writes that failed (each attempt; they are retried).
    pub store_errors: AtomicU64,
    /// Streams closed because a newer stream of the same sensor opened.
    pub fenced: AtomicU64,
    /// 1 when serving plain text on a non-loopback address (`--allow-plaintext`).
    pub plaintext: AtomicU64,
    /// Per sensor: batches by result, flows committed, rate-law waits (see
    /// [`CoreCounters::totals`] for all sensors together).
    pub per_sensor: Mutex<BTreeMap<Arc<str>, SensorCounts>>,
    /// Refused batches by sensor and reason.
    pub refusals: Mutex<BTreeMap<(Arc<str>, &'static str), u64>>,
    /// Store transaction time (one per batch).
    pub store_latency: Latency,
    /// The gRPC listener's counters.
    pub listen: Arc<ListenCounters>,
    /// The admin listener's counters.
    pub admin_listen: Arc<ListenCounters>,
    /// The promotion gates' counts and state.
    pub gates: Mutex<GateMetrics>,
}

/// One sensor's counts at the core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SensorCounts {
    /// Batches committed.
    pub committed: u64,
    /// Resent batches that were already stored.
    pub duplicate: u64,
    /// Batches refused (their own fault; see [`CoreCounters::refusals`]).
    pub rejected: u64,
    /// Batches the store could not write in time (answered `UNAVAILABLE`; the sensor resends them).
    pub failed: u64,
    /// Flows committed.
    pub flows: u64,
    /// Times the rate law made this sensor's stream wait.
    pub rate_waits: u64,
    /// When the sensor last connected or had a batch acknowledged (Unix seconds).
    pub last_seen_unix: u64,
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Refusal reasons, as metric labels.
pub const REFUSAL_REASONS: [&str; 10] = [
    "corrupt",
    "malformed",
    "version",
    "sensor_mismatch",
    "seq_range",
    "seq_too_far",
    "seq_conflict",
    "seq_order",
    "invalid_flow",
    "too_large",
];

impl CoreCounters {
    fn sensor(&self, sensor: &Arc<str>, f: impl FnOnce(&mut SensorCounts)) {
        let mut m = self.per_sensor.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(sensor.clone()).or_default();
        e.last_seen_unix = unix_now_ns() / 1_000_000_000;
        f(e);
    }

    fn refused(&self, sensor: &Arc<str>, reason: &'static str) {
        self.sensor(sensor, |c| c.rejected += 1);
        *self.refusals.lock().unwrap_or_else(|p| p.into_inner()).entry((sensor.clone(), reason)).or_default() += 1;
    }

    /// Refused batches of one reason, over all sensors.
    pub fn refusals_of(&self, reason: &str) -> u64 {
        let m = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().filter(|((_, r), _)| *r == reason).map(|(_, v)| v).sum()
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
        const BATCHES: &str = "Batches received, by sensor and result (committed, duplicate = a resend already stored, rejected = refused with a reason, failed = store error, answered UNAVAILABLE and resent later).";
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
        const REFUSED: &str = "Batches refused as their own fault, by sensor and reason (corrupt = checksum, malformed = verifier, seq_* = sequence discipline, invalid_flow = a semantic rule).";
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for reason in REFUSAL_REASONS {
            if !refusals.keys().any(|(_, r)| *r == reason) {
                e.counter("wirefold_core_refused_batches_total", REFUSED, &[("sensor", ""), ("reason", reason)], 0.0);
            }
        }
        for ((sensor, reason), v) in &refusals {
            e.counter(
                "wirefold_core_refused_batches_total",
                REFUSED,
                &[("sensor", sensor), ("reason", reason)],
                *v as f64,
            );
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
        e.counter_of(
            "wirefold_core_store_errors_total",
            "Store writes that failed (each attempt; the store retries, then answers UNAVAILABLE so the sensor resends).",
            &self.store_errors,
        );
        e.counter_of(
            "wirefold_core_fenced_streams_total",
            "Streams closed because a newer stream of the same sensor opened (two sensors sharing a token show here).",
            &self.fenced,
        );
        e.gauge_of(
            "wirefold_core_plaintext",
            "1 when serving plain text on a non-loopback address (--allow-plaintext): bearer tokens travel in the clear.",
            &self.plaintext,
        );
        e.gauge_of("wirefold_core_queue_depth", "Batches waiting for the store right now.", &self.queue_depth);
        e.gauge_of(
            "wirefold_core_queue_capacity",
            "Batches the store queue holds before acks are withheld (backpressure).",
            &self.queue_capacity,
        );
        e.gauge_of("wirefold_core_streams", "Sensor streams open right now.", &self.streams_open);
        listen_exposition(&mut e, "grpc", &self.listen);
        listen_exposition(&mut e, "admin", &self.admin_listen);
        gate_exposition(&mut e, &self.gates.lock().unwrap_or_else(|p| p.into_inner()));
        e.summary(
            "wirefold_core_store_seconds",
            "Store transaction time per batch (quantiles over the last 1-2 minutes).",
            &[],
            &self.store_latency,
        );
        e
    }
}

/// The gates' metric families.
pub fn gate_exposition(e: &mut Exposition, g: &GateMetrics) {
    const DEC: &str = "Gate decisions by gate, mode and verdict (enforce: pass, hold, not_reached = an earlier gate held the flow; shadow: pass, would_hold).";
    if g.decisions.is_empty() {
        e.counter(
            "wirefold_core_gate_decisions_total",
            DEC,
            &[("gate", "score"), ("mode", "enforce"), ("verdict", "pass")],
            0.0,
        );
    }
    for ((gate, mode, verdict), v) in &g.decisions {
        e.counter(
            "wirefold_core_gate_decisions_total",
            DEC,
            &[("gate", gate), ("mode", mode), ("verdict", verdict)],
            *v as f64,
        );
    }
    const VER: &str = "Flows decided by the gates, by sensor and verdict (promoted, held).";
    if g.verdicts.is_empty() {
        e.counter("wirefold_core_promotions_total", VER, &[("sensor", ""), ("verdict", "promoted")], 0.0);
    }
    for ((sensor, verdict), v) in &g.verdicts {
        e.counter("wirefold_core_promotions_total", VER, &[("sensor", sensor), ("verdict", verdict)], *v as f64);
    }
    if g.alerts.is_empty() {
        e.counter("wirefold_core_drift_alerts_total", "Drift alerts raised, by sensor.", &[("sensor", "")], 0.0);
    }
    for (sensor, v) in &g.alerts {
        e.counter(
            "wirefold_core_drift_alerts_total",
            "Drift alerts raised, by sensor.",
            &[("sensor", sensor)],
            *v as f64,
        );
    }
    e.gauge("wirefold_core_gates_config_version", "Gate configuration version in force.", &[], g.config_version as f64);
    e.gauge(
        "wirefold_core_ledger_entries",
        "Entries in the audit ledger (its head seq).",
        &[],
        g.ledger_entries as f64,
    );
    e.counter(
        "wirefold_core_ledger_errors_total",
        "Ledger appends that failed (entries stay in the database and are appended later).",
        &[],
        g.ledger_errors as f64,
    );
    for s in &g.status {
        let l = [("sensor", s.sensor.as_str())];
        e.gauge(
            "wirefold_core_reservoir_embeddings",
            "Embeddings in the novelty reservoir, by sensor.",
            &l,
            s.reservoir_len as f64,
        );
        e.gauge(
            "wirefold_core_reservoir_capacity",
            "Novelty reservoir capacity, by sensor.",
            &l,
            s.reservoir_cap as f64,
        );
        e.gauge(
            "wirefold_core_budget_remaining",
            "Promotions left in the sensor's budget bucket at its latest batch time.",
            &l,
            s.budget_remaining.floor(),
        );
        e.gauge(
            "wirefold_core_burst_classes",
            "Flow classes the burst gate tracks, by sensor.",
            &l,
            s.burst_classes as f64,
        );
        e.gauge(
            "wirefold_core_drift_alerted",
            "1 while a drift alert of the sensor is unacknowledged.",
            &l,
            s.drift_alerted as u8 as f64,
        );
        e.gauge(
            "wirefold_core_gates_forced_shadow",
            "1 while drift has switched the sensor's enforcing gates to shadow.",
            &l,
            s.forced_shadow as u8 as f64,
        );
        if let Some(d) = &s.drift {
            e.gauge(
                "wirefold_core_drift_psi",
                "Largest per-dimension PSI of the latest window against the reference, by sensor.",
                &l,
                d.psi_ref_max,
            );
            e.gauge(
                "wirefold_core_drift_psi_mean",
                "Mean per-dimension PSI of the latest window against the reference.",
                &l,
                d.psi_ref_mean,
            );
            e.gauge(
                "wirefold_core_drift_psi_previous",
                "Largest per-dimension PSI of the latest window against the window before.",
                &l,
                d.psi_prev_max,
            );
            e.gauge(
                "wirefold_core_drift_score_psi",
                "PSI of the score distribution against the reference.",
                &l,
                d.score_psi,
            );
            e.gauge(
                "wirefold_core_drift_top_share",
                "Share of the latest window's promotions going to its top destination.",
                &l,
                d.top_share,
            );
            e.gauge(
                "wirefold_core_drift_hhi",
                "Herfindahl index of the latest window's promoted destinations.",
                &l,
                d.hhi,
            );
        }
    }
    // Every family is present from the first scrape, at zero, before any
    // sensor has sent (dashboards and alerts can be checked against it).
    const PER_SENSOR: [(&str, &str); 12] = [
        ("wirefold_core_reservoir_embeddings", "Embeddings in the novelty reservoir, by sensor."),
        ("wirefold_core_reservoir_capacity", "Novelty reservoir capacity, by sensor."),
        ("wirefold_core_budget_remaining", "Promotions left in the sensor's budget bucket at its latest batch time."),
        ("wirefold_core_burst_classes", "Flow classes the burst gate tracks, by sensor."),
        ("wirefold_core_drift_alerted", "1 while a drift alert of the sensor is unacknowledged."),
        ("wirefold_core_gates_forced_shadow", "1 while drift has switched the sensor's enforcing gates to shadow."),
        ("wirefold_core_drift_psi", "Largest per-dimension PSI of the latest window against the reference, by sensor."),
        ("wirefold_core_drift_psi_mean", "Mean per-dimension PSI of the latest window against the reference."),
        (
            "wirefold_core_drift_psi_previous",
            "Largest per-dimension PSI of the latest window against the window before.",
        ),
        ("wirefold_core_drift_score_psi", "PSI of the score distribution against the reference."),
        ("wirefold_core_drift_top_share", "Share of the latest window's promotions going to its top destination."),
        ("wirefold_core_drift_hhi", "Herfindahl index of the latest window's promoted destinations."),
    ];
    let have = e.names();
    for (name, help) in PER_SENSOR {
        if !have.iter().any(|n| n == name) {
            e.gauge(name, help, &[("sensor", "")], 0.0);
        }
    }
}

/// A listener's counters as metric families, labelled `port`.
pub fn listen_exposition(e: &mut Exposition, port: &str, c: &ListenCounters) {
    let l = [("port", port)];
    e.counter("wirefold_listen_accepted_total", "Connections accepted, by port.", &l, c.accepted.load(Relaxed) as f64);
    e.counter(
        "wirefold_listen_refused_total",
        "Connections closed at once because the port's connection cap was reached.",
        &l,
        c.refused.load(Relaxed) as f64,
    );
    e.counter(
        "wirefold_listen_accept_errors_total",
        "Accept calls that failed (EMFILE: out of descriptors); the accept loop backs off.",
        &l,
        c.accept_errors.load(Relaxed) as f64,
    );
    e.counter(
        "wirefold_listen_timed_out_total",
        "Connections closed by the handshake or idle timeout.",
        &l,
        c.timed_out.load(Relaxed) as f64,
    );
    e.gauge("wirefold_listen_connections", "Connections open now, by port.", &l, c.open.load(Relaxed) as f64);
}

/// Cut a reason to [`MAX_REASON`] bytes (on a character boundary).
pub fn truncate_reason(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut cut = MAX_REASON - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// A stream's cancellation: fenced by a newer stream, or ended by a store
/// that keeps failing. The store thread skips batches of a cancelled stream.
#[derive(Debug)]
struct Cancel {
    flag: AtomicBool,
    tx: watch::Sender<Option<Status>>,
}

impl Cancel {
    fn new() -> Arc<Self> {
        Arc::new(Cancel { flag: AtomicBool::new(false), tx: watch::channel(None).0 })
    }
    fn cancel(&self, why: Status) {
        if !self.flag.swap(true, Relaxed) {
            self.tx.send_replace(Some(why));
        }
    }
    fn is_cancelled(&self) -> bool {
        self.flag.load(Relaxed)
    }
    /// Resolves with the reason once cancelled.
    async fn cancelled(&self) -> Status {
        let mut rx = self.tx.subscribe();
        let why = match rx.wait_for(|v| v.is_some()).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        why.unwrap_or_else(|| Status::aborted("stream cancelled"))
    }
}

/// The store's answer about one batch.
enum Outcome {
    Stored(Stored),
    Refused(Refusal),
    /// The store kept failing: the sensor must resend.
    Unavailable(String),
    /// The stream was cancelled before the batch was stored.
    Skipped,
}

enum StoreMsg {
    Store {
        sensor: Arc<str>,
        seq: u64,
        digest: [u8; 32],
        flows: Vec<FlowRec>,
        info: Vec<FlowInfoRec>,
        cancel: Arc<Cancel>,
        done: oneshot::Sender<Outcome>,
    },
    LastSeq {
        sensor: Arc<str>,
        done: oneshot::Sender<Result<u64, String>>,
    },
    Admin(AdminRequest),
    /// A job of the agent API (MCP): reads that need the engine, gate
    /// changes, ledger entries for its calls.
    Agent(crate::agent::AgentJob),
}

struct Slot {
    id: u64,
    cancel: Arc<Cancel>,
    peer: String,
}

struct Svc {
    tokens: Tokens,
    store: mpsc::Sender<StoreMsg>,
    counters: Arc<CoreCounters>,
    rate: Option<Arc<Mutex<RateLaw>>>,
    streams: Arc<Mutex<HashMap<Arc<str>, Slot>>>,
    next_stream: AtomicU64,
    epoch: Instant,
}

enum Pending {
    Commit(u64, oneshot::Receiver<Outcome>),
    Now(Ack),
}

fn bearer(req: &Request<Streaming<FlowBatchBytes>>) -> Option<&str> {
    req.metadata().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

/// An admitted batch: sequence number, digest, flows and their inspection facts.
type Admitted = (u64, [u8; 32], Vec<FlowRec>, Vec<FlowInfoRec>);

/// Check one message: returns the batch to store, or the rejection.
fn admit(sensor: &Arc<str>, bytes: &[u8], now_ns: u64, counters: &CoreCounters) -> Result<Admitted, Ack> {
    let refuse = |seq: u64, reason: &'static str, code: Code, msg: String| {
        counters.refused(sensor, reason);
        Ack::rejected(seq, code, truncate_reason(msg))
    };
    let (meta, flows) = read_batch(bytes).map_err(|e| {
        let reason = match e {
            SchemaError::Corrupt(_) => "corrupt",
            SchemaError::Version { .. } => "version",
            SchemaError::TooLarge(_) => "too_large",
            SchemaError::Invalid(_) | SchemaError::Time(_) => "malformed",
        };
        refuse(0, reason, Code::InvalidArgument, e.to_string())
    })?;
    if *meta.sensor_id != **sensor {
        let named = if meta.sensor_id.len() <= MAX_SENSOR_ID {
            format!("'{}'", meta.sensor_id)
        } else {
            format!("an id of {} bytes (the limit is {MAX_SENSOR_ID})", meta.sensor_id.len())
        };
        return Err(refuse(
            meta.seq,
            "sensor_mismatch",
            Code::PermissionDenied,
            format!("batch names sensor {named}, but the token is for '{sensor}'"),
        ));
    }
    if meta.seq == 0 || meta.seq >= SEQ_LIMIT {
        return Err(refuse(
            meta.seq,
            "seq_range",
            Code::OutOfRange,
            format!("sequence number {} is outside 1..2^63", meta.seq),
        ));
    }
    if let Err(e) = validate(&flows, now_ns) {
        return Err(refuse(meta.seq, "invalid_flow", Code::InvalidArgument, format!("batch {}: {e}", meta.seq)));
    }
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    let info = read_info(bytes)
        .map_err(|e| refuse(meta.seq, "invalid_flow", Code::InvalidArgument, format!("batch {}: {e}", meta.seq)))?;
    Ok((meta.seq, digest, flows, info))
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
        let peer = req.remote_addr().map_or_else(|| "?".to_string(), |a| a.to_string());
        // One live stream per sensor: this one fences the older.
        let id = self.next_stream.fetch_add(1, Relaxed);
        let cancel = Cancel::new();
        {
            let mut m = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = m.insert(sensor.clone(), Slot { id, cancel: cancel.clone(), peer: peer.clone() }) {
                self.counters.fenced.fetch_add(1, Relaxed);
                eprintln!(
                    "wirefold core: sensor '{sensor}' opened a stream from {peer} while one from {} was open: closing the older (two sensors sharing one token?)",
                    old.peer
                );
                old.cancel
                    .cancel(Status::aborted(format!("superseded by a newer stream for sensor '{sensor}' from {peer}")));
            }
        }
        // Queued behind every batch of the fenced stream: the resume point
        // counts what it stored, and its later batches are skipped.
        let (done, rx) = oneshot::channel();
        self.store
            .send(StoreMsg::LastSeq { sensor: sensor.clone(), done })
            .await
            .map_err(|_| Status::unavailable("store stopped"))?;
        let resume = rx
            .await
            .map_err(|_| Status::unavailable("store stopped"))?
            .map_err(|e| Status::unavailable(truncate_reason(format!("store failed: {e}; retry"))))?;
        self.counters.sensor(&sensor, |_| {});
        let mut inbound = req.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<Result<Ack, Status>>(ACKS_PER_STREAM);
        let _ = out_tx.send(Ok(Ack::resume(resume))).await;
        let (pend_tx, mut pend_rx) = mpsc::channel::<Pending>(ACKS_PER_STREAM);
        let store = self.store.clone();
        let counters = self.counters.clone();
        let rate = self.rate.clone();
        let epoch = self.epoch;
        let reader_sensor = sensor.clone();
        let reader_cancel = cancel.clone();
        // Reader: check, rate law, queue for the store (waiting when it is full).
        let reader_out = out_tx.clone();
        tokio::spawn(async move {
            let sensor = reader_sensor;
            let cancel = reader_cancel;
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(status) => {
                            // Oversize or broken framing: the stream cannot go on.
                            let _ = reader_out.send(Err(status)).await;
                            break;
                        }
                    },
                    _ = cancel.cancelled() => break,
                };
                let p = match admit(&sensor, &msg.0, unix_now_ns(), &counters) {
                    Err(ack) => Pending::Now(ack),
                    Ok((seq, digest, flows, info)) => {
                        if let Some(law) = &rate {
                            let now = epoch.elapsed().as_nanos() as u64;
                            let wait = law.lock().unwrap_or_else(|p| p.into_inner()).charge(&sensor, flows.len(), now);
                            if !wait.is_zero() {
                                counters.sensor(&sensor, |c| c.rate_waits += 1);
                                tokio::select! {
                                    _ = tokio::time::sleep(wait) => {}
                                    _ = cancel.cancelled() => break,
                                }
                            }
                        }
                        let (done, rx) = oneshot::channel();
                        counters.queue_depth.fetch_add(1, Relaxed);
                        let m = StoreMsg::Store {
                            sensor: sensor.clone(),
                            seq,
                            digest,
                            flows,
                            info,
                            cancel: cancel.clone(),
                            done,
                        };
                        if store.send(m).await.is_err() {
                            break;
                        }
                        Pending::Commit(seq, rx)
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
        let streams = self.streams.clone();
        tokio::spawn(async move {
            let _open = OpenStream { counters: counters.clone(), streams, sensor: sensor.clone(), id };
            loop {
                let p = tokio::select! {
                    p = pend_rx.recv() => match p {
                        Some(p) => p,
                        None => {
                            if cancel.is_cancelled() {
                                let _ = out_tx.send(Err(cancel.cancelled().await)).await;
                            }
                            break;
                        }
                    },
                    why = cancel.cancelled() => {
                        let _ = out_tx.send(Err(why)).await;
                        break;
                    }
                };
                let ack = match p {
                    Pending::Now(a) => a,
                    Pending::Commit(seq, rx) => match rx.await {
                        Ok(Outcome::Stored(Stored::Committed(s))) => {
                            counters.sensor(&sensor, |c| c.committed += 1);
                            Ack::durable(s)
                        }
                        Ok(Outcome::Stored(Stored::Duplicate(s))) => {
                            counters.sensor(&sensor, |c| c.duplicate += 1);
                            Ack::durable(s)
                        }
                        Ok(Outcome::Refused(r)) => {
                            let (reason, code) = match r {
                                Refusal::TooFarAhead { .. } => ("seq_too_far", Code::OutOfRange),
                                Refusal::Conflict { .. } => ("seq_conflict", Code::AlreadyExists),
                                Refusal::OutOfOrder { .. } => ("seq_order", Code::FailedPrecondition),
                            };
                            counters.refused(&sensor, reason);
                            eprintln!("wirefold core: ALARM: sensor '{sensor}' batch {seq} refused: {r}");
                            Ack::rejected(seq, code, truncate_reason(r.to_string()))
                        }
                        Ok(Outcome::Unavailable(why)) => {
                            counters.sensor(&sensor, |c| c.failed += 1);
                            let _ = out_tx.send(Ok(Ack::rejected(seq, Code::Unavailable, why.clone()))).await;
                            let _ = out_tx.send(Err(Status::unavailable(why))).await;
                            break;
                        }
                        Ok(Outcome::Skipped) | Err(_) => {
                            // Cancelled: the reason goes out on the next turn.
                            let why = cancel.cancelled().await;
                            let _ = out_tx.send(Err(why)).await;
                            break;
                        }
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

/// Counts an open stream until dropped, and frees its sensor's slot.
struct OpenStream {
    counters: Arc<CoreCounters>,
    streams: Arc<Mutex<HashMap<Arc<str>, Slot>>>,
    sensor: Arc<str>,
    id: u64,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.counters.streams_open.fetch_sub(1, Relaxed);
        let mut m = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(&self.sensor).is_some_and(|s| s.id == self.id) {
            m.remove(&self.sensor);
        }
    }
}

struct StoreThread {
    store: Store,
    promotion: Promotion,
    counters: Arc<CoreCounters>,
    delay: Option<Duration>,
    retry_for: Duration,
    stopping: Arc<AtomicBool>,
    last_error_log: Option<Instant>,
}

impl StoreThread {
    /// Store one batch, retrying database errors with backoff (the core's
    /// fault, never the batch's) for up to `retry_for`.
    fn store(
        &mut self,
        sensor: &Arc<str>,
        seq: u64,
        digest: &[u8; 32],
        flows: &[FlowRec],
        info: &[FlowInfoRec],
        cancel: &Cancel,
    ) -> Outcome {
        let t_start = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0u32;
        loop {
            if cancel.is_cancelled() {
                return Outcome::Skipped;
            }
            attempt += 1;
            let t0 = Instant::now();
            let promotion = &mut self.promotion;
            let r = self.store.store_with(sensor, seq, digest, flows, unix_now_ns(), |tx| {
                crate::store::insert_info(tx, sensor, seq, info)?;
                promotion.decide_in(tx, sensor, seq, flows)
            });
            self.counters.store_latency.record(t0.elapsed());
            match r {
                Ok((s, prepared)) => {
                    if let Some(p) = prepared {
                        self.promotion.committed(&self.store, p);
                        *self.counters.gates.lock().unwrap_or_else(|p| p.into_inner()) =
                            self.promotion.metrics().clone();
                    }
                    if attempt > 1 {
                        eprintln!(
                            "wirefold core: store recovered: sensor '{sensor}' batch {seq} stored after {attempt} attempts ({:.1} s)",
                            t_start.elapsed().as_secs_f64()
                        );
                    }
                    return Outcome::Stored(s);
                }
                Err(StoreError::Refused(r)) => return Outcome::Refused(r),
                Err(StoreError::Db(e)) => {
                    self.promotion.failed(sensor);
                    self.counters.store_errors.fetch_add(1, Relaxed);
                    let give_up = t_start.elapsed() >= self.retry_for || self.stopping.load(Relaxed);
                    if attempt == 1
                        || give_up
                        || self.last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                    {
                        self.last_error_log = Some(Instant::now());
                        eprintln!(
                            "wirefold core: STORE ERROR: sensor '{sensor}' batch {seq}, attempt {attempt}: {e}; {}",
                            if give_up {
                                "giving up for now: the sensor is told UNAVAILABLE and resends it"
                            } else {
                                "retrying"
                            }
                        );
                    }
                    if give_up {
                        return Outcome::Unavailable(truncate_reason(format!(
                            "store failed: {e}; the batch is not stored: keep it and resend"
                        )));
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<StoreMsg>) {
        let mut last_states = Instant::now();
        while let Some(m) = rx.blocking_recv() {
            match m {
                StoreMsg::LastSeq { sensor, done } => {
                    // Recording the contact is best effort; the resume point is not.
                    let _ = self.store.touch(&sensor);
                    let _ = done.send(self.store.last_seq(&sensor).map_err(|e| e.to_string()));
                }
                StoreMsg::Admin(AdminRequest { cmd, done }) => {
                    let r = self.promotion.admin(&mut self.store, cmd, unix_now_ns());
                    *self.counters.gates.lock().unwrap_or_else(|p| p.into_inner()) = self.promotion.metrics().clone();
                    let _ = done.send(r);
                }
                StoreMsg::Agent(job) => {
                    job(&mut self.store, &mut self.promotion);
                    *self.counters.gates.lock().unwrap_or_else(|p| p.into_inner()) = self.promotion.metrics().clone();
                }
                StoreMsg::Store { sensor, seq, digest, flows, info, cancel, done } => {
                    if let Some(d) = self.delay {
                        std::thread::sleep(d);
                    }
                    let out = self.store(&sensor, seq, &digest, &flows, &info, &cancel);
                    match &out {
                        Outcome::Stored(Stored::Committed(_)) => {
                            self.counters.sensor(&sensor, |c| c.flows += flows.len() as u64);
                        }
                        Outcome::Unavailable(why) => {
                            // Later batches of this stream must not be stored
                            // before this one: end the stream.
                            cancel.cancel(Status::unavailable(why.clone()));
                        }
                        _ => {}
                    }
                    self.counters.queue_depth.fetch_sub(1, Relaxed);
                    let _ = done.send(out);
                }
            }
            if last_states.elapsed() > Duration::from_secs(5) {
                last_states = Instant::now();
                let _ = self.store.update_states(30_000_000_000, 300_000_000_000);
            }
        }
    }
}

/// Why the core could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened.
    #[error("cannot open database {path}: {error}")]
    Database {
        /// The file.
        path: String,
        /// The error.
        error: rusqlite::Error,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: std::io::Error,
    },
    /// Plain text on a non-loopback address without `allow_plaintext`.
    #[error("refusing to take bearer tokens in plain text on {0}: configure TLS (--tls-cert and --tls-key), listen on a loopback address, or pass --allow-plaintext on a network you trust")]
    Plaintext(SocketAddr),
    /// A thread could not be started.
    #[error("cannot start the core: {0}")]
    Start(std::io::Error),
    /// The MCP port's certificate or key does not load.
    #[error("the MCP port's TLS certificate or key: {0}")]
    McpTls(String),
    /// The gates or the ledger could not start.
    #[error(transparent)]
    Gates(#[from] PromoteError),
}

/// A core running on its own thread and runtime (used by `wirefold core`
/// and by `--core embedded`).
#[derive(Debug)]
pub struct CoreHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where the admin endpoint listens, if configured.
    pub admin_addr: Option<SocketAddr>,
    /// Where the agent API (MCP) listens, if configured.
    pub mcp_addr: Option<SocketAddr>,
    /// Its counters.
    pub counters: Arc<CoreCounters>,
    stopping: Arc<AtomicBool>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CoreHandle {
    /// Stop serving and wait for the store to finish what it has.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stop serving and wait for the store to finish what it has; the
    /// counters stay readable. A store that is retrying gives up at once
    /// (its batches stay with their sensors).
    pub fn shutdown(&mut self) {
        self.stopping.store(true, Relaxed);
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
pub fn serve(listen: SocketAddr, cfg: CoreConfig) -> Result<CoreHandle, ServeError> {
    let plaintext_off_loopback = cfg.tls.is_none() && !listen.ip().is_loopback();
    if plaintext_off_loopback && !cfg.allow_plaintext {
        return Err(ServeError::Plaintext(listen));
    }
    let mut store = Store::open(&cfg.db, cfg.full_sync)
        .map_err(|error| ServeError::Database { path: cfg.db.display().to_string(), error })?;
    let ledger_path = cfg.ledger.clone().unwrap_or_else(|| crate::ledger::default_path(&cfg.db));
    let promotion = Promotion::open(&mut store, cfg.gates.clone(), &ledger_path, cfg.drift_reference.clone())?;
    let admin_listener = match &cfg.admin {
        Some(a) => {
            if !a.addr.ip().is_loopback() && !cfg.allow_plaintext {
                return Err(ServeError::Plaintext(a.addr));
            }
            let l = std::net::TcpListener::bind(a.addr).map_err(|error| ServeError::Listen { addr: a.addr, error })?;
            l.set_nonblocking(true).map_err(ServeError::Start)?;
            Some((l, a.token.clone()))
        }
        None => None,
    };
    let admin_addr = match &admin_listener {
        Some((l, _)) => Some(l.local_addr().map_err(ServeError::Start)?),
        None => None,
    };
    let agent_listener = match &cfg.agent {
        Some(a) => {
            let mut a = a.clone();
            if a.tls.is_none() {
                a.tls = cfg.tls.clone();
            }
            let tls = match &a.tls {
                Some((cert, key)) => Some(crate::agent::tls_acceptor(cert, key).map_err(ServeError::McpTls)?),
                None => None,
            };
            if tls.is_none() && !a.addr.ip().is_loopback() && !cfg.allow_plaintext {
                return Err(ServeError::Plaintext(a.addr));
            }
            let l = std::net::TcpListener::bind(a.addr).map_err(|error| ServeError::Listen { addr: a.addr, error })?;
            l.set_nonblocking(true).map_err(ServeError::Start)?;
            Some((l, a, tls))
        }
        None => None,
    };
    let mcp_addr = match &agent_listener {
        Some((l, _, _)) => Some(l.local_addr().map_err(ServeError::Start)?),
        None => None,
    };
    let agent_db = cfg.db.clone();
    let agent_ledger = ledger_path.clone();
    let std_listener =
        std::net::TcpListener::bind(listen).map_err(|error| ServeError::Listen { addr: listen, error })?;
    std_listener.set_nonblocking(true).map_err(ServeError::Start)?;
    let addr = std_listener.local_addr().map_err(ServeError::Start)?;
    let counters = Arc::new(CoreCounters::default());
    *counters.gates.lock().unwrap_or_else(|p| p.into_inner()) = promotion.metrics().clone();
    counters.queue_capacity.store(cfg.queue.max(1) as u64, Relaxed);
    if plaintext_off_loopback {
        counters.plaintext.store(1, Relaxed);
        eprintln!(
            "wirefold core: WARNING: serving PLAIN TEXT on {addr} (--allow-plaintext): bearer tokens cross the network in the clear"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Start)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let (store_tx, store_rx) = mpsc::channel(cfg.queue.max(1));
    let (admin_tx, mut admin_rx) = mpsc::channel::<AdminRequest>(4);
    let store_tx_admin = store_tx.clone();
    let store_tx_agent = store_tx.clone();
    let worker = StoreThread {
        store,
        promotion,
        counters: counters.clone(),
        delay: cfg.store_delay,
        retry_for: cfg.store_retry_for,
        stopping: stopping.clone(),
        last_error_log: None,
    };
    let st = std::thread::Builder::new()
        .name("wirefold-store".into())
        .spawn(move || worker.run(store_rx))
        .map_err(ServeError::Start)?;
    let c2 = counters.clone();
    let thread = std::thread::Builder::new()
        .name("wirefold-core".into())
        .spawn(move || {
            rt.block_on(async move {
                if let Some((l, token)) = admin_listener {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            let c = c2.admin_listen.clone();
                            tokio::spawn(async move { crate::admin::serve_admin(l, &token, admin_tx, c).await });
                            // Forward admin commands into the store queue, in order with batches.
                            tokio::spawn(async move {
                                while let Some(r) = admin_rx.recv().await {
                                    if store_tx_admin.send(StoreMsg::Admin(r)).await.is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                        Err(e) => eprintln!("wirefold core: cannot serve the admin endpoint: {e}"),
                    }
                } else {
                    drop((admin_tx, admin_rx, store_tx_admin));
                }
                if let Some((l, acfg, tls)) = agent_listener {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            let (jobs_tx, mut jobs_rx) = mpsc::channel::<crate::agent::AgentJob>(16);
                            let agent = crate::agent::Agent::new(acfg, agent_db, agent_ledger, c2.clone(), jobs_tx);
                            tokio::spawn(async move { crate::agent::serve_mcp(l, agent, tls).await });
                            // Agent jobs run on the store thread, in order with batches.
                            tokio::spawn(async move {
                                while let Some(j) = jobs_rx.recv().await {
                                    if store_tx_agent.send(StoreMsg::Agent(j)).await.is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                        Err(e) => eprintln!("wirefold core: cannot serve the agent API: {e}"),
                    }
                } else {
                    drop(store_tx_agent);
                }
                let svc = Svc {
                    tokens: cfg.tokens.clone(),
                    store: store_tx,
                    counters: c2.clone(),
                    rate: cfg
                        .rate_flows_per_s
                        .map(|r| Arc::new(Mutex::new(RateLaw::new(Rate { flows_per_s: r, burst: cfg.burst_flows })))),
                    streams: Arc::new(Mutex::new(HashMap::new())),
                    next_stream: AtomicU64::new(1),
                    epoch: Instant::now(),
                };
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("wirefold core: cannot listen: {e}");
                        return;
                    }
                };
                let conns = crate::listen::accept_loop(listener, cfg.limits, c2.listen.clone(), "wirefold core");
                let incoming = ReceiverStream::new(conns);
                let server = IngestServer::new(svc).max_decoding_message_size(cfg.max_message);
                let mut builder = tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(cfg.keepalive))
                    .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                    .max_concurrent_streams(Some(STREAMS_PER_CONNECTION))
                    .http2_max_header_list_size(Some(MAX_HEADER_LIST));
                if let Some((cert, key)) = &cfg.tls {
                    let id = tonic::transport::Identity::from_pem(cert, key);
                    builder = match builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(id)) {
                        Ok(b) => b,
                        Err(e) => {
                            eprintln!("wirefold core: TLS set-up failed: {e}");
                            return;
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
            });
            // Dropping the runtime cancels the stream tasks and with them the
            // last senders to the store, which then drains what it has and stops.
            drop(rt);
            let _ = st.join();
        })
        .map_err(ServeError::Start)?;
    Ok(CoreHandle { addr, admin_addr, mcp_addr, counters, stopping, shutdown: Some(shutdown), thread: Some(thread) })
}
