//! The agent API: MCP (Model Context Protocol) over the Streamable HTTP
//! transport at `http://ADDR/mcp`, served with the official Rust SDK `rmcp`
//! (see `docs/agent-api.md`).
//!
//! ```text
//! POST /mcp ─► bearer token (agent, scope) ─► rate (token bucket) ─► scope ─► JSON Schema
//!   401 without a valid token              refused + retry hint   refused   error names the field
//!     ─► [mutation budget] ─► tool (reads: own read-only SQLite connection, row cap, time budget;
//!                                   engine state and changes: a job on the store thread)
//!     ─► ledger `action` entry (agent, tool, SHA-256 of the canonical arguments, outcome, rows, latency)
//! ```
//! Every call, refused ones included, is written to the audit ledger before
//! its answer is sent.
use crate::promote::Promotion;
use crate::store::Store;
use crate::tokens::{Tokens, TokensError};
use crate::CoreCounters;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub mod nn;
pub mod schema;
mod server;
pub mod tools;

pub use server::{serve_mcp, tls_acceptor};

/// Work for the store thread: it owns the store and the gates.
pub type AgentJob = Box<dyn FnOnce(&mut Store, &mut Promotion) + Send>;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read tools only (and proposals, which change nothing).
    Observe,
    /// Read tools, and apply and roll back gate changes.
    Mutate,
}

impl Scope {
    /// `observe` or `mutate`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Observe => "observe",
            Scope::Mutate => "mutate",
        }
    }
}

/// The agent tokens file: `AGENT_ID SCOPE TOKEN` per line (`#` comments),
/// `SCOPE` = `observe` | `mutate`, `TOKEN` the token or `sha256:HEX`. The
/// same rules as the sensor tokens file (`crate::tokens`): mode 0600,
/// digests compared in constant time.
#[derive(Debug, Clone, Default)]
pub struct AgentTokens {
    tokens: Tokens,
    scopes: HashMap<String, Scope>,
}

impl AgentTokens {
    /// Parse the file's text. Errors name the line.
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let mut pairs = String::new();
        let mut scopes = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |what: String| TokensError::Line { path: String::new(), line: i + 1, what };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                pairs.push('\n');
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [agent, scope, token] = parts[..] else {
                return Err(err(format!("expected 'AGENT_ID SCOPE TOKEN', found {} fields", parts.len())));
            };
            let scope = match scope {
                "observe" => Scope::Observe,
                "mutate" => Scope::Mutate,
                other => return Err(err(format!("scope '{other}' for agent '{agent}': allowed observe | mutate"))),
            };
            if scopes.insert(agent.to_string(), scope).is_some() {
                return Err(err(format!("agent '{agent}' is listed twice")));
            }
            // Same line number for the sensor-token parser's messages.
            pairs.push_str(&format!("{agent} {token}\n"));
        }
        let tokens = Tokens::parse(&pairs)?;
        Ok(AgentTokens { tokens, scopes })
    }

    /// Read and parse a file, refusing one that group or others may access.
    pub fn load(path: &std::path::Path) -> Result<Self, TokensError> {
        let text = crate::tokens::read_private(path)?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// The agent and scope a token belongs to (constant-time digest compare).
    pub fn agent(&self, token: &str) -> Option<(String, Scope)> {
        let a = self.tokens.sensor(token)?;
        Some((a.to_string(), *self.scopes.get(a)?))
    }
}

/// Limits per agent.
#[derive(Debug, Clone)]
pub struct AgentLimits {
    /// Calls per second (token bucket refill).
    pub calls_per_s: f64,
    /// Token bucket depth (calls).
    pub burst: f64,
    /// Rows a call returns at most (the `limit` arguments' maximum).
    pub max_rows: u32,
    /// Wall time a query may take before it is interrupted.
    pub query_budget: Duration,
    /// Applied changes and rollbacks per agent per rolling hour.
    pub mutations_per_hour: u32,
    /// Stored batches a proposal is evaluated over, at most.
    pub max_shadow_batches: u32,
    /// Seed of the Community ID the tools compute for each flow (the
    /// sensors' `--community-id-seed`; 0 by default, as theirs).
    pub community_id_seed: u16,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            calls_per_s: 20.0,
            burst: 40.0,
            max_rows: 1000,
            query_budget: Duration::from_secs(2),
            mutations_per_hour: 10,
            max_shadow_batches: 500,
            community_id_seed: 0,
        }
    }
}

/// The agent API's settings (`wirefold core --mcp ADDR --agent-tokens FILE`).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where to listen (loopback, TLS, or `--allow-plaintext`).
    pub addr: SocketAddr,
    /// Who may call.
    pub tokens: AgentTokens,
    /// Limits per agent.
    pub limits: AgentLimits,
    /// TLS certificate chain and private key (PEM) for the MCP port; `None`
    /// takes the core's (`CoreConfig::tls`), and plain HTTP when that is unset.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl AgentConfig {
    /// Defaults for an address and tokens.
    pub fn new(addr: SocketAddr, tokens: AgentTokens) -> Self {
        AgentConfig { addr, tokens, limits: AgentLimits::default(), tls: None }
    }
}

#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

/// A proposed gate change, waiting to be applied.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// Who proposed it.
    pub agent: String,
    /// `gates.<gate>.<key> = <value>`.
    pub gate: String,
    /// The field.
    pub key: String,
    /// The value as text.
    pub value: String,
    /// The configuration version it was evaluated against.
    pub base_version: u64,
    /// Evaluated live (a shadow run on the store thread) rather than by
    /// replaying stored batches.
    pub live: bool,
}

/// The agent API's shared state.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    db: PathBuf,
    ledger: PathBuf,
    counters: Arc<CoreCounters>,
    jobs: mpsc::Sender<AgentJob>,
    buckets: Mutex<HashMap<String, Bucket>>,
    mutations: Mutex<HashMap<String, VecDeque<Instant>>>,
    proposals: Mutex<HashMap<u64, Proposal>>,
    next_proposal: AtomicU64,
    readers: Mutex<Vec<rusqlite::Connection>>,
    nn: Mutex<nn::EmbIndex>,
    /// Calls answered 401 (no or unknown token).
    pub unauthenticated: AtomicU64,
    /// MCP connections whose TLS handshake failed or timed out.
    pub tls_failures: AtomicU64,
}

/// Why a call failed, as the caller sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolError {
    /// Arguments outside the schema or meaning nothing here.
    Invalid(String),
    /// Refused by a limit or the scope; `retry_after_ms` when waiting helps.
    Refused {
        /// Why.
        why: String,
        /// When a retry may pass.
        retry_after_ms: Option<u64>,
    },
    /// The query ran past its time budget and was interrupted.
    Budget(String),
    /// Nothing there.
    NotFound(String),
    /// The core failed.
    Internal(String),
}

impl ToolError {
    /// The outcome word written to the ledger.
    pub fn outcome(&self) -> &'static str {
        match self {
            ToolError::Invalid(_) => "invalid",
            ToolError::Refused { .. } => "refused",
            ToolError::Budget(_) => "time_budget",
            ToolError::NotFound(_) => "not_found",
            ToolError::Internal(_) => "error",
        }
    }

    /// The message the caller reads.
    pub fn message(&self) -> String {
        match self {
            ToolError::Invalid(m) => format!("invalid arguments: {m}"),
            ToolError::Refused { why, retry_after_ms: Some(ms) } => format!("refused: {why}; retry after {ms} ms"),
            ToolError::Refused { why, retry_after_ms: None } => format!("refused: {why}"),
            ToolError::Budget(m) => format!("time budget exceeded: {m}"),
            ToolError::NotFound(m) => format!("not found: {m}"),
            ToolError::Internal(m) => format!("internal error: {m}"),
        }
    }
}

impl From<rusqlite::Error> for ToolError {
    fn from(e: rusqlite::Error) -> Self {
        ToolError::Internal(format!("database: {e}"))
    }
}

/// Unix time in ns.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// JSON with object keys sorted, no spaces: the form argument digests are taken of.
pub fn canonical_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical_json(&m[k.as_str()])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// SHA-256 (hex) of the canonical JSON of `v`.
pub fn args_digest(v: &serde_json::Value) -> String {
    Sha256::digest(canonical_json(v).as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Agent {
    /// The shared state of a running agent API.
    pub fn new(
        cfg: AgentConfig,
        db: PathBuf,
        ledger: PathBuf,
        counters: Arc<CoreCounters>,
        jobs: mpsc::Sender<AgentJob>,
    ) -> Arc<Self> {
        Arc::new(Agent {
            cfg,
            db,
            ledger,
            counters,
            jobs,
            buckets: Mutex::new(HashMap::new()),
            mutations: Mutex::new(HashMap::new()),
            proposals: Mutex::new(HashMap::new()),
            next_proposal: AtomicU64::new(1),
            readers: Mutex::new(Vec::new()),
            nn: Mutex::new(nn::EmbIndex::default()),
            unauthenticated: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &AgentLimits {
        &self.cfg.limits
    }

    /// Who a bearer token is.
    pub fn authenticate(&self, token: &str) -> Option<(String, Scope)> {
        self.cfg.tokens.agent(token)
    }

    /// Take one call from the agent's bucket, or say how long to wait.
    fn take_call(&self, agent: &str) -> Result<(), u64> {
        let l = &self.cfg.limits;
        let mut m = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let b = m.entry(agent.to_string()).or_insert(Bucket { level: l.burst, at: now });
        b.level = (b.level + now.duration_since(b.at).as_secs_f64() * l.calls_per_s).min(l.burst);
        b.at = now;
        if b.level >= 1.0 {
            b.level -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - b.level) / l.calls_per_s) * 1000.0).ceil() as u64)
        }
    }

    /// Spend one of the agent's mutations this hour, or say how long to wait.
    fn take_mutation(&self, agent: &str) -> Result<(), u64> {
        let hour = Duration::from_secs(3600);
        let mut m = self.mutations.lock().unwrap_or_else(|p| p.into_inner());
        let q = m.entry(agent.to_string()).or_default();
        let now = Instant::now();
        while q.front().is_some_and(|t| now.duration_since(*t) >= hour) {
            q.pop_front();
        }
        if q.len() >= self.cfg.limits.mutations_per_hour as usize {
            let oldest = q.front().copied().unwrap_or(now);
            return Err((hour.saturating_sub(now.duration_since(oldest))).as_millis() as u64 + 1);
        }
        q.push_back(now);
        Ok(())
    }

    /// Give back a mutation that did not happen (refused by the gates).
    fn return_mutation(&self, agent: &str) {
        let mut m = self.mutations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = m.get_mut(agent) {
            q.pop_back();
        }
    }

    /// Run `f` on the store thread and wait for its answer.
    pub async fn on_store<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store, &mut Promotion) -> R + Send + 'static,
    ) -> Result<R, ToolError> {
        let (tx, rx) = oneshot::channel();
        let job: AgentJob = Box::new(move |s, p| {
            let _ = tx.send(f(s, p));
        });
        self.jobs.send(job).await.map_err(|_| ToolError::Internal("the core is stopping".into()))?;
        rx.await.map_err(|_| ToolError::Internal("the core is stopping".into()))
    }

    /// Run a read on a read-only connection of its own, off the runtime,
    /// interrupted when it runs past the query time budget.
    pub async fn read<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&rusqlite::Connection, &Deadline) -> Result<R, ToolError> + Send + 'static,
    ) -> Result<R, ToolError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = me.reader()?;
            let deadline = Deadline::new(me.cfg.limits.query_budget);
            let d2 = deadline.clone();
            conn.progress_handler(4000, Some(move || d2.passed()));
            let r = f(&conn, &deadline);
            conn.progress_handler(0, None::<fn() -> bool>);
            me.readers.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            match r {
                Err(ToolError::Internal(m)) if deadline.passed() => Err(ToolError::Budget(format!(
                    "the query was interrupted after {} ms ({m}); narrow the time range, name a sensor or lower the limit",
                    me.cfg.limits.query_budget.as_millis()
                ))),
                other => other,
            }
        })
        .await
        .map_err(|e| ToolError::Internal(format!("query task: {e}")))?
    }

    fn reader(&self) -> Result<rusqlite::Connection, ToolError> {
        if let Some(c) = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        use rusqlite::OpenFlags;
        let c = rusqlite::Connection::open_with_flags(
            &self.db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        c.pragma_update(None, "busy_timeout", 2000)?;
        tools::register_functions(&c, self.cfg.limits.community_id_seed)?;
        Ok(c)
    }

    /// Record one call in the ledger (an `action` entry by `agent:ID`).
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        agent: &str,
        scope: Scope,
        tool: &str,
        digest: &str,
        outcome: &str,
        error: Option<String>,
        rows: u64,
        latency: Duration,
    ) {
        let detail = serde_json::json!({
            "agent": agent, "scope": scope.name(), "tool": tool, "args_sha256": digest, "outcome": outcome,
            "error": error, "rows": rows, "latency_us": latency.as_micros() as u64,
        });
        let actor = format!("agent:{agent}");
        let r = self
            .on_store(move |s, p| {
                p.record_action(s, &actor, "agent_call", detail, wall_ns()).map_err(|e| e.to_string())
            })
            .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("wirefold core: cannot record an agent call in the ledger: {e}"),
            Err(e) => eprintln!("wirefold core: cannot record an agent call in the ledger: {}", e.message()),
        }
    }
}

/// A wall-clock deadline shared with SQLite's progress handler.
#[derive(Debug, Clone)]
pub struct Deadline(Arc<(Instant, Duration)>);

impl Deadline {
    fn new(budget: Duration) -> Self {
        Deadline(Arc::new((Instant::now(), budget)))
    }
    /// Whether the budget is spent.
    pub fn passed(&self) -> bool {
        self.0 .0.elapsed() >= self.0 .1
    }
    /// Fail when the budget is spent (for loops outside SQLite).
    pub fn check(&self) -> Result<(), ToolError> {
        if self.passed() {
            Err(ToolError::Internal("interrupted".into()))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_tokens_parse_scopes_and_digests() {
        let hex: String = Sha256::digest(b"observer-token-1").iter().map(|b| format!("{b:02x}")).collect();
        let t =
            AgentTokens::parse(&format!("# agents\nbot-1 observe sha256:{hex}\nops mutate mutate-token-1\n")).unwrap();
        assert_eq!(t.agent("observer-token-1"), Some(("bot-1".into(), Scope::Observe)));
        assert_eq!(t.agent("mutate-token-1"), Some(("ops".into(), Scope::Mutate)));
        assert_eq!(t.agent("nope-nope-nope"), None);
        let e = AgentTokens::parse("a admin tok-tok-tok\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("observe | mutate"), "{e}");
        let e = AgentTokens::parse("\na observe short\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("shorter than 8"), "{e}");
        assert!(AgentTokens::parse("a observe tok-tok-1\na mutate tok-tok-2\n").is_err());
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":{"d":[1,2],"c":"x"}}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"c":"x","d":[1,2]},"b":1}"#);
        let b: serde_json::Value = serde_json::from_str(r#"{"a":{"c":"x","d":[1,2]},"b":1}"#).unwrap();
        assert_eq!(args_digest(&a), args_digest(&b));
    }
}
