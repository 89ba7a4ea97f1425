//! `wirefold core`: its command-line arguments and its runner. The binary
//! parses the command line and dispatches here; everything a core does at
//! start-up (configuration, tokens, TLS, admin and agent endpoints, metrics)
//! and at shutdown (the closing counts) lives in this module.
use crate::telemetry::{MetricsServer, TelemetryArgs};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// What `wirefold core` does instead of running, when a subcommand is given.
#[derive(Subcommand, Debug)]
pub enum CoreAction {
    /// Show or change a running core's promotion gates (through its admin endpoint).
    Gates {
        /// What to do.
        #[command(subcommand)]
        cmd: GatesCmd,
        /// The core's admin endpoint (`--admin` of `wirefold core`).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7445", global = true)]
        admin: std::net::SocketAddr,
        /// File holding the admin token.
        #[arg(long, value_name = "FILE", global = true)]
        admin_token: Option<PathBuf>,
    },
    /// Check or export an audit ledger.
    Ledger {
        /// What to do.
        #[command(subcommand)]
        cmd: LedgerCmd,
    },
}

/// `wirefold core gates ...`.
#[derive(Subcommand, Debug)]
pub enum GatesCmd {
    /// Print the gate configuration, its versions and each sensor's gate state.
    Show,
    /// Set one field of one gate (a new configuration version, recorded in the ledger).
    Set {
        /// score, novelty, burst, budget, drift or ledger.
        gate: String,
        /// The field, e.g. mode or threshold.
        key: String,
        /// The value: a number, true/false, or a mode (enforce, shadow, off).
        value: String,
    },
    /// Restore an earlier configuration version (as a new version).
    Rollback {
        /// The version to restore.
        version: u64,
    },
    /// Acknowledge a sensor's drift alert (its gates return from shadow).
    Ack {
        /// The sensor.
        sensor: String,
    },
}

/// `wirefold core ledger ...`.
#[derive(Subcommand, Debug)]
pub enum LedgerCmd {
    /// Verify the hash chain; names the first bad entry (edited, deleted, reordered or truncated).
    Verify {
        /// The ledger file.
        path: PathBuf,
        /// The core's database: its recorded head also catches entries deleted at the end.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Verify, then write the entries as JSON Lines to stdout.
    Export {
        /// The ledger file.
        path: PathBuf,
        /// The core's database (for its recorded head).
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
}

// Field docs are the --help text; no struct doc (clap would take it as the description).
#[derive(Args, Debug)]
#[command(next_help_heading = "Core")]
#[allow(missing_docs)]
pub struct CoreArgs {
    #[command(subcommand)]
    pub action: Option<CoreAction>,
    /// Read settings from this TOML file (see `wirefold check-config`); flags override it.
    #[arg(long, value_name = "FILE", help_heading = None)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
    pub listen: std::net::SocketAddr,
    /// SQLite database file (created if missing).
    #[arg(long, value_name = "PATH", required = true)]
    pub db: Option<PathBuf>,
    /// Tokens file: one `SENSOR_ID TOKEN` pair per line.
    #[arg(long, value_name = "FILE", required = true)]
    pub tokens: Option<PathBuf>,
    /// Batches waiting for the store, at most (backpressure beyond).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub queue: u64,
    /// Per-sensor rate law in flows per second (token bucket); unlimited by default.
    #[arg(long, value_name = "FLOWS")]
    pub rate: Option<f64>,
    /// Token-bucket burst in flows.
    #[arg(long, value_name = "FLOWS", default_value_t = 100_000.0)]
    pub burst: f64,
    /// fsync every commit (survives power loss; slower). By default commits survive process crashes.
    #[arg(long)]
    pub full_sync: bool,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain text (bearer tokens in the clear) on a non-loopback --listen address.
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Connections open at once on the gRPC port; 0 = three quarters of the descriptor limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_connections: u64,
    /// Seconds a new connection has to send its first 64 bytes.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handshake_timeout: u64,
    /// Seconds without traffic (keepalive pings count) before a connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=86400))]
    pub conn_idle_timeout: u64,
    /// Audit ledger (JSON Lines, hash-chained); default: beside the database (DB.ledger.jsonl).
    #[arg(long, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// Drift monitor's reference: a model card with `reference_distribution.drift`
    /// (for example the bundled embeddings/model/wirefold-det-v2.card.json) or a
    /// `{"dims", "score"}` file; default: learned from each sensor's first windows.
    #[arg(long, value_name = "FILE")]
    pub drift_reference: Option<PathBuf>,
    /// Serve the admin endpoint (gate changes, `wirefold core gates ...`) on this address.
    #[arg(long, value_name = "ADDR", requires = "admin_token")]
    pub admin: Option<std::net::SocketAddr>,
    /// File holding the admin token (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub admin_token: Option<PathBuf>,
    /// Seconds the store retries a failing write before the sensor is told UNAVAILABLE (and resends).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub store_retry: u64,
    /// Testing aid: wait this many milliseconds before storing each batch.
    #[arg(long, value_name = "MS", hide = true)]
    pub store_delay_ms: Option<u64>,
    /// Serve the agent API (MCP over Streamable HTTP) at http://ADDR/mcp, or https:// with --tls-cert/--tls-key (plain HTTP only on loopback unless --allow-plaintext).
    #[arg(long, value_name = "ADDR", requires = "agent_tokens")]
    pub mcp: Option<std::net::SocketAddr>,
    /// Agent tokens file (mode 0600): one `AGENT_ID SCOPE TOKEN` per line, SCOPE observe or mutate.
    #[arg(long, value_name = "FILE")]
    pub agent_tokens: Option<PathBuf>,
    /// Agent API: calls per second per agent (token bucket; burst = 2 s worth).
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    pub agent_rate: f64,
    /// Agent API: rows per call at most.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub agent_max_rows: u32,
    /// Agent API: milliseconds a query may run before it is interrupted.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub agent_query_ms: u64,
    /// Agent API: seed of the Community ID computed for each stored flow (the sensors' --community-id-seed).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub community_id_seed: u16,
    /// Agent API: gate changes (apply, rollback) per agent per hour.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub agent_mutations_per_hour: u32,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Read a secret file (a token) that only its owner may read.
/// A secret from a private (mode 0600) file, at least 8 characters.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let t = crate::tokens::read_private(path).map_err(|e| e.to_string())?;
    let t = t.trim().to_string();
    if t.len() < 8 {
        return Err(format!("{}: the token is shorter than 8 characters", path.display()));
    }
    Ok(t)
}

/// `wirefold core gates ...` (against a running core's admin endpoint) and
/// `wirefold core ledger verify|export`.
pub fn action_run(action: CoreAction) -> ExitCode {
    use crate::admin::{admin_request, AdminCommand, AdminError};
    match action {
        CoreAction::Gates { cmd, admin, admin_token } => {
            let Some(tf) = admin_token else {
                eprintln!("wirefold core gates: --admin-token FILE is needed (the core's --admin-token)");
                return ExitCode::from(2);
            };
            let token = match read_secret(&tf) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("wirefold core gates: {e}");
                    return ExitCode::from(2);
                }
            };
            let c = match cmd {
                GatesCmd::Show => AdminCommand::Show,
                GatesCmd::Set { gate, key, value } => AdminCommand::Set { gate, key, value },
                GatesCmd::Rollback { version } => AdminCommand::Rollback { version },
                GatesCmd::Ack { sensor } => AdminCommand::Ack { sensor },
            };
            match admin_request(admin, &token, &c) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e @ AdminError::Refused { .. }) => {
                    eprintln!("wirefold core gates: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("wirefold core gates: {e}");
                    ExitCode::from(1)
                }
            }
        }
        CoreAction::Ledger { cmd } => {
            let (path, db, export) = match cmd {
                LedgerCmd::Verify { path, db } => (path, db, false),
                LedgerCmd::Export { path, db } => (path, db, true),
            };
            let head = match &db {
                None => None,
                Some(d) => match crate::Store::open(d, false).and_then(|s| s.ledger_head()) {
                    Ok(h) => h,
                    Err(e) => {
                        eprintln!("wirefold core ledger: database {}: {e}", d.display());
                        return ExitCode::from(2);
                    }
                },
            };
            let r = if export {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let r = crate::ledger::export(&path, head.as_ref(), &mut out);
                let _ = out.flush();
                r
            } else {
                crate::ledger::verify(&path, head.as_ref())
            };
            match r {
                Ok(rep) => {
                    eprintln!("wirefold core ledger: {}: {} entries verify", path.display(), rep.entries);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wirefold core ledger: {}: {e}", path.display());
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Run a core until `stop` is set (SIGINT or SIGTERM in the binary); an
/// administrative action (`wirefold core gates|ledger ...`) runs instead
/// when one is given.
pub fn run(a: CoreArgs, stop: &AtomicBool) -> ExitCode {
    if let Some(action) = a.action {
        return action_run(action);
    }
    let gates = match &a.config {
        None => crate::gates::GatesConfig::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            match crate::gates::GatesConfig::from_toml_document(&text) {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("wirefold core: config {}: {e}", p.display());
                    return ExitCode::from(2);
                }
            }
        }
    };
    let (Some(db), Some(tokens_file)) = (a.db.clone(), a.tokens.clone()) else {
        eprintln!("wirefold core: --db and --tokens are required");
        return ExitCode::from(2);
    };
    let tokens = match crate::Tokens::load(&tokens_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wirefold core: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            eprintln!("wirefold core: --rate {r} is invalid: it must be a positive number of flows per second");
            return ExitCode::from(2);
        }
    }
    let mut cfg = crate::CoreConfig::new(db.clone(), tokens);
    cfg.gates = gates;
    cfg.ledger = a.ledger.clone();
    if let Some(p) = &a.drift_reference {
        match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| crate::gates::DriftReference::from_json(&t))
        {
            Ok(r) => {
                let n: u64 = r.score.iter().map(|&c| c as u64).sum();
                eprintln!("wirefold core: drift reference from {} ({n} flows)", p.display());
                cfg.drift_reference = Some(r);
            }
            Err(e) => {
                eprintln!("wirefold core: --drift-reference {}: {e}", p.display());
                return ExitCode::from(2);
            }
        }
    }
    if let (Some(addr), Some(tf)) = (a.admin, &a.admin_token) {
        match read_secret(tf) {
            Ok(token) => cfg.admin = Some(crate::admin::AdminListen { addr, token }),
            Err(e) => {
                eprintln!("wirefold core: --admin-token: {e}");
                return ExitCode::from(2);
            }
        }
    }
    cfg.allow_plaintext = a.allow_plaintext;
    if a.max_connections > 0 {
        cfg.limits.max_connections = a.max_connections as usize;
    }
    cfg.limits.handshake_timeout = Duration::from_secs(a.handshake_timeout);
    cfg.limits.idle_timeout = Duration::from_secs(a.conn_idle_timeout);
    cfg.store_retry_for = Duration::from_secs(a.store_retry);
    cfg.queue = a.queue as usize;
    cfg.rate_flows_per_s = a.rate;
    cfg.burst_flows = a.burst;
    cfg.full_sync = a.full_sync;
    cfg.store_delay = a.store_delay_ms.map(Duration::from_millis);
    if let (Some(addr), Some(tf)) = (a.mcp, &a.agent_tokens) {
        match crate::agent::AgentTokens::load(tf) {
            Ok(t) => {
                let mut ac = crate::agent::AgentConfig::new(addr, t);
                ac.limits.calls_per_s = a.agent_rate.max(0.001);
                ac.limits.burst = (a.agent_rate * 2.0).max(1.0);
                ac.limits.max_rows = a.agent_max_rows;
                ac.limits.query_budget = Duration::from_millis(a.agent_query_ms);
                ac.limits.mutations_per_hour = a.agent_mutations_per_hour;
                ac.limits.community_id_seed = a.community_id_seed;
                cfg.agent = Some(ac);
            }
            Err(e) => {
                eprintln!("wirefold core: --agent-tokens: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let (Some(c), Some(k)) = (&a.tls_cert, &a.tls_key) {
        match (std::fs::read(c), std::fs::read(k)) {
            (Ok(c), Ok(k)) => cfg.tls = Some((c, k)),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("wirefold core: cannot read the TLS certificate or key: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let max_conns = cfg.limits.max_connections;
    let h = match crate::serve(a.listen, cfg) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("wirefold core: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("wirefold core: listening on {}, database {}, at most {} connections", h.addr, db.display(), max_conns);
    if let Some(admin) = h.admin_addr {
        eprintln!("wirefold core: admin endpoint on {admin}");
    }
    let metrics = match a.telemetry.metrics {
        None => None,
        Some(addr) => {
            let c = h.counters.clone();
            let own: Arc<std::sync::OnceLock<Arc<crate::listen::ListenCounters>>> = Arc::default();
            let own2 = own.clone();
            let started = MetricsServer::start(addr, move || {
                let mut e = c.exposition();
                if let Some(l) = own2.get() {
                    crate::service::listen_exposition(&mut e, "metrics", l);
                }
                e
            });
            if let Ok(m) = &started {
                let _ = own.set(m.counters.clone());
            }
            match started {
                Ok(m) => {
                    eprintln!("wirefold core: metrics on http://{}/metrics", m.addr);
                    Some(m)
                }
                Err(e) => {
                    eprintln!("wirefold core: {e} (--metrics)");
                    return ExitCode::from(2);
                }
            }
        }
    };
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = h.counters.clone();
    h.stop();
    drop(metrics);
    let t = c.totals();
    eprintln!(
        "wirefold core: stopped; {} batches committed ({} flows), {} duplicates, {} rejected, {} failed (resent later), {} store errors, {} fenced streams, {} unauthenticated streams",
        t.committed,
        t.flows,
        t.duplicate,
        t.rejected,
        t.failed,
        c.store_errors.load(Relaxed),
        c.fenced.load(Relaxed),
        c.unauthenticated.load(Relaxed)
    );
    ExitCode::SUCCESS
}
