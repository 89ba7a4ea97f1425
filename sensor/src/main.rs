//! The `wirefold` command.
use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wirefold_core::telemetry::MetricsServer;
use wirefold_embeddings::Embedder;
use wirefold_sensor::capture::afpacket::AfPacketConfig;
use wirefold_sensor::capture::pcap::PcapFile;
use wirefold_sensor::cli::{parse_timeout, Timeout};
use wirefold_sensor::config;
use wirefold_sensor::flow::{EndReason, FinishedFlow, FlowConfig};
use wirefold_sensor::live::{Capture, LiveConfig, LiveResult, Mode, ThreadCounters};
use wirefold_sensor::metrics::SensorMetrics;
use wirefold_sensor::output::{ExportOptions, ExportReport, Exporter};
use wirefold_sensor::pipeline::{Pipeline, Summary};
use wirefold_sensor::stream::{StreamConfig, Streamer};

/// Wirefold: a wire-speed network flow sensor.
///
/// Wirefold reads packets (from capture files, and live from AF_PACKET or
/// DPDK), folds them into bidirectional flows and exports one record per
/// finished flow. Every subcommand that runs takes its options from the
/// command line or a TOML file (--config FILE; see check-config), and serves
/// Prometheus metrics with --metrics ADDR.
#[derive(Parser, Debug)]
#[command(name = "wirefold", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[command(args_override_self = true)]
enum Command {
    /// Run capture files (pcap or pcapng) through the flow pipeline.
    ///
    /// Writes one JSON object per finished flow (JSON Lines) to stdout or
    /// --out, then a summary to stderr: packets, bytes, flows by end reason,
    /// malformed packets by reason, time and packets per second. Flow time is
    /// packet time, so the same files always give the same flows. Several
    /// files are read in order as one stream. A truncated or corrupt file is
    /// reported with its byte offset; what was read before stays counted, its
    /// flows are flushed, and the exit status is 1.
    Replay(ReplayArgs),
    /// Capture live from a network interface (Linux AF_PACKET, TPACKET_V3).
    ///
    /// Opens one AF_PACKET socket per capture thread, all in one fanout group
    /// (hash mode with IPv4 defragmentation, so both directions of a flow and
    /// all fragments of a datagram reach the same thread). Writes flows like
    /// `replay`, prints a status line to stderr every few seconds, and on
    /// SIGINT or SIGTERM stops, flushes every flow with end reason
    /// `shutdown`, and prints the summary with kernel and ring drops. Needs
    /// CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode). Set-up errors
    /// (unknown or down interface, permissions, ring geometry, filter) exit 2.
    Capture(CaptureArgs),
    /// Run a core: receive FlowBatches from sensors over gRPC and store them.
    ///
    /// Authenticates each stream by its bearer token (the tokens file holds
    /// one `SENSOR_ID TOKEN` pair per line; `#` starts a comment), verifies
    /// every batch (a bad one is refused with INVALID_ARGUMENT and its reason,
    /// and the stream goes on), applies a per-sensor rate law, queues batches
    /// in a bounded queue (when full, acks wait and sensors back off), and
    /// stores each batch with the sensor's sequence number in one SQLite
    /// transaction, so a resent batch changes nothing. Runs until SIGINT or
    /// SIGTERM. `wirefold core gates ...` changes a running core's gates;
    /// `wirefold core ledger verify|export` checks its audit ledger.
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Core(CoreArgs),
    /// Check a configuration file and print the settings it gives.
    ///
    /// Sections are the option groups of `--help` (capture, dpdk, flow,
    /// export, replay and telemetry for a sensor; core and telemetry for a
    /// core) and keys are the long option names with `_` for `-`. Every value
    /// is checked by the same parser as its flag. Prints the effective
    /// settings (file values and defaults) as TOML on stdout; an invalid file
    /// is reported with the field, the value and what is allowed, and exits 2.
    CheckConfig(CheckConfigArgs),
}

#[derive(Args, Debug)]
struct CheckConfigArgs {
    /// The configuration file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Check it as a sensor or a core configuration; by default a file with
    /// a core section is a core configuration.
    #[arg(long, value_enum)]
    kind: Option<ConfigKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ConfigKind {
    /// `wirefold capture` / `wirefold replay`.
    Sensor,
    /// `wirefold core`.
    Core,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Telemetry")]
struct TelemetryArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9462, or port 0 for any free port).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

#[derive(Subcommand, Debug)]
enum CoreAction {
    /// Show or change a running core's promotion gates (through its admin endpoint).
    Gates {
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
        #[command(subcommand)]
        cmd: LedgerCmd,
    },
}

#[derive(Subcommand, Debug)]
enum GatesCmd {
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

#[derive(Subcommand, Debug)]
enum LedgerCmd {
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

#[derive(Args, Debug)]
#[command(next_help_heading = "Core")]
struct CoreArgs {
    #[command(subcommand)]
    action: Option<CoreAction>,
    /// Read settings from this TOML file (see `wirefold check-config`); flags override it.
    #[arg(long, value_name = "FILE", help_heading = None)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
    listen: std::net::SocketAddr,
    /// SQLite database file (created if missing).
    #[arg(long, value_name = "PATH", required = true)]
    db: Option<PathBuf>,
    /// Tokens file: one `SENSOR_ID TOKEN` pair per line.
    #[arg(long, value_name = "FILE", required = true)]
    tokens: Option<PathBuf>,
    /// Batches waiting for the store, at most (backpressure beyond).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    queue: u64,
    /// Per-sensor rate law in flows per second (token bucket); unlimited by default.
    #[arg(long, value_name = "FLOWS")]
    rate: Option<f64>,
    /// Token-bucket burst in flows.
    #[arg(long, value_name = "FLOWS", default_value_t = 100_000.0)]
    burst: f64,
    /// fsync every commit (survives power loss; slower). By default commits survive process crashes.
    #[arg(long)]
    full_sync: bool,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain text (bearer tokens in the clear) on a non-loopback --listen address.
    #[arg(long)]
    allow_plaintext: bool,
    /// Connections open at once on the gRPC port; 0 = three quarters of the descriptor limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_connections: u64,
    /// Seconds a new connection has to send its first 64 bytes.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    handshake_timeout: u64,
    /// Seconds without traffic (keepalive pings count) before a connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=86400))]
    conn_idle_timeout: u64,
    /// Audit ledger (JSON Lines, hash-chained); default: beside the database (DB.ledger.jsonl).
    #[arg(long, value_name = "PATH")]
    ledger: Option<PathBuf>,
    /// Serve the admin endpoint (gate changes, `wirefold core gates ...`) on this address.
    #[arg(long, value_name = "ADDR", requires = "admin_token")]
    admin: Option<std::net::SocketAddr>,
    /// File holding the admin token (mode 0600).
    #[arg(long, value_name = "FILE")]
    admin_token: Option<PathBuf>,
    /// Seconds the store retries a failing write before the sensor is told UNAVAILABLE (and resends).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    store_retry: u64,
    /// Testing aid: wait this many milliseconds before storing each batch.
    #[arg(long, value_name = "MS", hide = true)]
    store_delay_ms: Option<u64>,
    /// Serve the agent API (MCP over Streamable HTTP) at http://ADDR/mcp, or https:// with --tls-cert/--tls-key (plain HTTP only on loopback unless --allow-plaintext).
    #[arg(long, value_name = "ADDR", requires = "agent_tokens")]
    mcp: Option<std::net::SocketAddr>,
    /// Agent tokens file (mode 0600): one `AGENT_ID SCOPE TOKEN` per line, SCOPE observe or mutate.
    #[arg(long, value_name = "FILE")]
    agent_tokens: Option<PathBuf>,
    /// Agent API: calls per second per agent (token bucket; burst = 2 s worth).
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    agent_rate: f64,
    /// Agent API: rows per call at most.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    agent_max_rows: u32,
    /// Agent API: milliseconds a query may run before it is interrupted.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    agent_query_ms: u64,
    /// Agent API: gate changes (apply, rollback) per agent per hour.
    #[arg(long, value_name = "N", default_value_t = 10)]
    agent_mutations_per_hour: u32,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Flow")]
struct FlowArgs {
    /// End a flow after this long without packets: e.g. 30s, 5m, or never.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_timeout)]
    idle_timeout: Timeout,
    /// Export long flows after this long and continue them in a new record: e.g. 30m, or never.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_timeout)]
    active_timeout: Timeout,
    /// Most flows held at once (per flow table); beyond it the least recently seen are evicted (counted).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_flows: u64,
    /// Seed of the Community ID on every flow record (as Zeek's and Suricata's `community_id` seed).
    #[arg(long, value_name = "N", default_value_t = 0)]
    community_id_seed: u16,
    /// Do not inspect payload (no TLS/QUIC/DNS/HTTP/SSH fields, app is "unknown"; the model's inspection features are 0).
    #[arg(long)]
    no_inspect: bool,
    /// Payload-carrying packets inspected per direction of each flow.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=255))]
    inspect_packets: u8,
    /// Flows inspected at once (each slot ~11 KiB); a flow that finds none free is counted and not inspected.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    inspect_pool: u64,
}

impl FlowArgs {
    fn config(&self) -> FlowConfig {
        FlowConfig {
            idle_timeout_ns: self.idle_timeout.0,
            active_timeout_ns: self.active_timeout.0,
            max_flows: self.max_flows as usize,
            community_id_seed: self.community_id_seed,
            inspect: (!self.no_inspect).then_some(wirefold_inspect::session::InspectConfig {
                packets: self.inspect_packets,
                pool: self.inspect_pool as usize,
            }),
            ..FlowConfig::default()
        }
    }
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Export")]
struct OutputArgs {
    /// Write flow records here instead of stdout ("-" is stdout).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    summary_json: Option<PathBuf>,
    /// Print the N largest flows (by bytes) with the summary.
    #[arg(long, value_name = "N", default_value_t = 0)]
    top: usize,
    /// Do not write flow records at all (for measuring the pipeline alone).
    #[arg(long)]
    no_output: bool,
    /// Do not compute flow embeddings (the ONNX model is not loaded).
    #[arg(long)]
    no_embed: bool,
    /// An ONNX model to use instead of the bundled one; its card is MODEL with
    /// the extension replaced by .card.json.
    #[arg(long, value_name = "MODEL")]
    model: Option<PathBuf>,
    /// Write each flow's feature vector (before standardisation) as CSV, for training.
    #[arg(long, value_name = "PATH")]
    features_out: Option<PathBuf>,
    /// Write FlowBatch buffers (FlatBuffers, each with a u32 little-endian length prefix).
    #[arg(long, value_name = "PATH")]
    batches_out: Option<PathBuf>,
    /// Sensor id written into FlowBatches (and, with --core, the id the token must belong to).
    #[arg(long, value_name = "ID", default_value = "wirefold")]
    sensor_id: String,
    /// Stream FlowBatches to a core: its URL (http://HOST:PORT), or "embedded"
    /// to start one in this process on loopback, with its database under --data-dir.
    #[arg(long, value_name = "URL")]
    core: Option<String>,
    /// Bearer token for the core (with --core embedded, any token of 8+ characters; default one is made up).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Where the spool (and an embedded core's database) live.
    #[arg(long, value_name = "DIR", default_value = "wirefold-data")]
    data_dir: PathBuf,
    /// Spool bound, in MiB; beyond it the oldest batch is dropped (counted).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    spool_max_mib: u64,
    /// Batches in flight to the core without an ack, at most.
    #[arg(long, value_name = "N", default_value_t = 32)]
    window: usize,
    /// After the input ends, seconds to keep trying to deliver the spool.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    drain_timeout: u64,
    /// Flows per FlowBatch.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch_flows: u64,
    /// Seal a partly filled FlowBatch after this long (e.g. 1s, 250ms).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_timeout)]
    batch_age: Timeout,
    /// PEM file of the CA that signed the core's certificate: use TLS (with an https:// --core URL).
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Send the bearer token in plain text (http://) to a core that is not on a loopback address.
    #[arg(long)]
    allow_plaintext: bool,
    /// Export flows as IPFIX (RFC 7011, RFC 5103 biflows) to a collector:
    /// udp://HOST:PORT or tcp://HOST:PORT; repeat (or separate with commas) for several (see docs/ipfix.md).
    #[arg(long, value_name = "URL")]
    ipfix: Vec<wirefold_sensor::ipfix::CollectorList>,
    /// IPFIX observation domain id.
    #[arg(long, value_name = "N", default_value_t = 1)]
    ipfix_domain: u32,
    /// Private enterprise number of the wirefold IPFIX elements (default: RFC 5612's documentation PEN).
    #[arg(long, value_name = "N", default_value_t = wirefold_sensor::ipfix::DEFAULT_PEN)]
    ipfix_pen: u32,
    /// Re-send the IPFIX templates over UDP this often (e.g. 60s, 5s).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    ipfix_template_refresh: Timeout,
    /// Path MTU towards UDP IPFIX collectors: no export packet is larger. `auto`: the
    /// kernel's path MTU of the route to each collector (IP_MTU), at most 9000.
    #[arg(long, value_name = "auto|BYTES", default_value = "auto", value_parser = wirefold_sensor::cli::parse_ipfix_mtu)]
    ipfix_mtu: wirefold_sensor::cli::IpfixMtu,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Capture")]
struct CaptureArgs {
    /// Read settings from this TOML file (see `wirefold check-config`); flags override it.
    #[arg(long, value_name = "FILE", help_heading = None)]
    config: Option<PathBuf>,
    /// Interface to capture on (AF_PACKET).
    #[arg(long, value_name = "NAME", required_unless_present = "dpdk")]
    iface: Option<String>,
    /// Capture with DPDK instead of AF_PACKET (needs a build with `--features dpdk`).
    #[arg(long)]
    dpdk: bool,
    /// DPDK EAL arguments, as one string.
    #[arg(
        long,
        help_heading = "DPDK",
        value_name = "ARGS",
        allow_hyphen_values = true,
        default_value = "--no-huge -m 512 --no-shconf --no-pci -l 0"
    )]
    eal: String,
    /// DPDK port id.
    #[arg(long, help_heading = "DPDK", value_name = "N", default_value_t = 0)]
    port: u16,
    /// DPDK rx queues, one lcore each (give the EAL that many lcores with -l).
    #[arg(long, help_heading = "DPDK", value_name = "Q", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    queues: u16,
    /// DPDK mbufs in the pool (for net_pcap with infinite_rx, at least the file's packets).
    #[arg(long, help_heading = "DPDK", value_name = "N", default_value_t = 65535)]
    mbufs: u32,
    /// DPDK: stop by itself when no packet arrived for this long (after the first), e.g. for file-backed vdevs.
    #[arg(long, help_heading = "DPDK", value_name = "DURATION", value_parser = parse_timeout)]
    idle_exit: Option<Timeout>,
    /// Capture threads (one AF_PACKET socket and ring each).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    /// CPUs to pin capture threads to, e.g. "2,3" or "2-5" (cycled over threads).
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    cpus: Option<CpuList>,
    /// CPUs to pin flow workers to (pipeline mode).
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    worker_cpus: Option<CpuList>,
    /// pipeline: capture threads decode and hand packets to flow workers over
    /// lock-free rings; run-to-completion: each capture thread tracks flows itself.
    #[arg(long, value_enum, default_value = "pipeline")]
    mode: Mode,
    /// Only capture packets matching this tcpdump-style filter expression.
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Fanout group id; by default the kernel picks one no other group on this host uses.
    #[arg(long, value_name = "ID")]
    fanout_id: Option<u16>,
    /// Do not put the interface in promiscuous mode.
    #[arg(long)]
    no_promisc: bool,
    /// Ring block size in bytes (power of two, multiple of the page size).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 21)]
    block_size: u32,
    /// Ring blocks per socket.
    #[arg(long, value_name = "N", default_value_t = 64)]
    block_count: u32,
    /// Milliseconds after which the kernel hands over a partly filled block.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    retire_timeout: u32,
    /// Packet records per capture→flow ring (pipeline mode); a full ring drops and counts.
    #[arg(long, value_name = "N", default_value_t = 1 << 16)]
    ring_slots: usize,
    /// Seconds between status lines on stderr (0: none).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    status_interval: u64,
    /// After stopping, keep serving --metrics this long (e.g. 30s, or "never" to wait for another signal).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout, help_heading = "Telemetry")]
    linger: Option<Timeout>,
    #[command(flatten)]
    flow: FlowArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// CPU numbers from the command line.
#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("'{part}' is not a CPU number or range; use e.g. 2,3 or 2-5");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().map_err(|_| bad())?),
        }
    }
    if v.is_empty() {
        return Err("empty CPU list; use e.g. 2,3 or 2-5".into());
    }
    Ok(CpuList(v))
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Replay")]
struct ReplayArgs {
    /// Capture files to read, in order.
    #[arg(required = true, value_name = "FILE", help_heading = None)]
    files: Vec<PathBuf>,
    /// Read settings from this TOML file (see `wirefold check-config`); flags override it.
    #[arg(long, value_name = "FILE", help_heading = None)]
    config: Option<PathBuf>,
    /// Pace packets by their timestamps, SPEED times faster than recorded (1 = real time); by default as fast as possible.
    #[arg(long, value_name = "SPEED", value_parser = parse_speed)]
    speed: Option<f64>,
    /// Do not show the progress bar (bytes, packets) that replay draws on stderr when stderr is a terminal.
    #[arg(long)]
    no_progress: bool,
    /// After the input ends, keep serving --metrics this long (e.g. 30s, or "never" to wait for SIGINT/SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout, help_heading = "Telemetry")]
    linger: Option<Timeout>,
    #[command(flatten)]
    flow: FlowArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a speed-up factor; use a positive number such as 1, 10 or 0.5")),
    }
}

fn main() -> ExitCode {
    let argv = match config::expand_argv(&Cli::command(), std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wirefold: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    let r = match cli.command {
        Command::Replay(a) => replay(a),
        Command::Capture(a) => capture(a),
        Command::Core(a) => run_core(a),
        Command::CheckConfig(a) => check_config(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wirefold: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn create(p: &Path) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(Box::new(BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
    )))
}

/// The export thread, and an embedded core if one was asked for.
struct Outputs {
    writer: Exporter,
    core: Option<wirefold_core::CoreHandle>,
    db: Option<PathBuf>,
}

/// Start the export thread. A model that cannot be loaded, or a core set-up
/// problem, is a start-up error (exit 2) with its reason.
fn open_output(o: &OutputArgs, live: bool) -> Result<Outputs, (anyhow::Error, u8)> {
    let json: Option<Box<dyn Write + Send>> = match &o.out {
        _ if o.no_output => None,
        Some(p) if p.as_os_str() != "-" => Some(create(p).map_err(|e| (e, 1))?),
        _ => Some(Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout()))),
    };
    let embedder = if o.no_embed {
        None
    } else {
        let e = match &o.model {
            None => Embedder::bundled(),
            Some(m) => {
                let card_path = m.with_extension("card.json");
                let bytes = std::fs::read(m)
                    .with_context(|| format!("cannot read model {}", m.display()))
                    .map_err(|e| (e, 2))?;
                let card = std::fs::read_to_string(&card_path)
                    .with_context(|| format!("cannot read model card {}", card_path.display()))
                    .and_then(|t| {
                        serde_json::from_str(&t).with_context(|| format!("model card {}", card_path.display()))
                    })
                    .map_err(|e| (e, 2))?;
                Embedder::load(&bytes, card)
            }
        };
        Some(e.map_err(|e| (anyhow::Error::new(e), 2))?)
    };
    let features = o.features_out.as_deref().map(create).transpose().map_err(|e| (e, 1))?;
    let batches = o.batches_out.as_deref().map(create).transpose().map_err(|e| (e, 1))?;
    let (mut core, mut db) = (None, None);
    let stream = match o.core.as_deref() {
        None => None,
        Some(url) => {
            let setup = |m: String| (anyhow::anyhow!(m), 2u8);
            let (url, token) = if url == "embedded" {
                let token = o.token.clone().unwrap_or_else(|| format!("embedded-{}", std::process::id()));
                std::fs::create_dir_all(&o.data_dir)
                    .map_err(|e| setup(format!("cannot create {}: {e}", o.data_dir.display())))?;
                let path = o.data_dir.join("core.db");
                let cfg =
                    wirefold_core::CoreConfig::new(path.clone(), wirefold_core::Tokens::single(&o.sensor_id, &token));
                let h = wirefold_core::serve("127.0.0.1:0".parse().expect("loopback"), cfg)
                    .map_err(|e| setup(e.to_string()))?;
                let url = format!("http://{}", h.addr);
                eprintln!("wirefold: embedded core on {url}, database {}", path.display());
                core = Some(h);
                db = Some(path);
                (url, token)
            } else {
                let token =
                    o.token.clone().ok_or_else(|| setup("--core needs --token (the sensor's bearer token)".into()))?;
                (url.to_string(), token)
            };
            if !o.allow_plaintext {
                if let Some(host) = plaintext_remote(&url) {
                    return Err(setup(format!(
                        "refusing to send the bearer token in plain text to {host}: use an https:// --core URL with --tls-ca, or pass --allow-plaintext on a network you trust"
                    )));
                }
            }
            let cfg = StreamConfig {
                url,
                sensor_id: o.sensor_id.clone(),
                token,
                spool_dir: o.data_dir.join("spool").join(&o.sensor_id),
                spool_max_bytes: o.spool_max_mib << 20,
                window: o.window.max(1),
                drain_timeout: Duration::from_secs(o.drain_timeout),
                tls_ca: match &o.tls_ca {
                    Some(p) => Some(
                        std::fs::read(p).map_err(|e| setup(format!("cannot read --tls-ca {}: {e}", p.display())))?,
                    ),
                    None => None,
                },
            };
            Some(Streamer::start(cfg).map_err(setup)?)
        }
    };
    let ipfix = if o.ipfix.is_empty() {
        None
    } else {
        let cfg = wirefold_sensor::ipfix::IpfixConfig {
            collectors: o.ipfix.iter().flat_map(|l| l.0.iter().cloned()).collect(),
            domain: o.ipfix_domain,
            pen: o.ipfix_pen,
            template_refresh: Duration::from_nanos(o.ipfix_template_refresh.0.unwrap_or(u64::MAX)),
            mtu: o.ipfix_mtu.0,
            embedding: embedder.is_some(),
        };
        Some(wirefold_sensor::ipfix::IpfixSink::start(cfg).map_err(|e| (anyhow::anyhow!(e), 2u8))?)
    };
    let writer = Exporter::spawn(ExportOptions {
        json,
        features,
        batches,
        embedder,
        sensor_id: o.sensor_id.clone(),
        top: o.top,
        stream,
        flows_per_batch: o.batch_flows as usize,
        max_batch_age: Duration::from_nanos(o.batch_age.0.unwrap_or(u64::MAX)),
        live,
        ipfix,
    });
    Ok(Outputs { writer, core, db })
}

fn report(o: &OutputArgs, export: &ExportReport, summary: &mut Summary) -> anyhow::Result<()> {
    summary.stream = export.stream.clone();
    summary.embedded = export.embedded;
    summary.batches = export.batches;
    summary.batch_bytes = export.batch_bytes;
    let top = &export.top;
    if o.top > 0 {
        eprintln!("top {} flows by bytes", top.len());
        for r in top {
            eprintln!(
                "  {:>12} B {:>8} pkts  proto {:>3}  {}:{} -> {}:{}  {}",
                r.fwd_bytes + r.rev_bytes,
                r.fwd_packets + r.rev_packets,
                r.proto,
                r.src_ip,
                r.src_port,
                r.dst_ip,
                r.dst_port,
                r.end_reason
            );
        }
    }
    if o.top > 0 && !export.top_scored.is_empty() {
        eprintln!("top {} flows by score (attack probability)", export.top_scored.len());
        for r in &export.top_scored {
            let name = r.sni.as_deref().or(r.dns_qname.as_deref()).or(r.http_host.as_deref()).unwrap_or("");
            eprintln!(
                "  {:.3}  {:<7} proto {:>3}  {}:{} -> {}:{}  {:>6} pkts  {}",
                r.score.unwrap_or(0.0),
                r.app,
                r.proto,
                r.src_ip,
                r.src_port,
                r.dst_ip,
                r.dst_port,
                r.fwd_packets + r.rev_packets,
                name
            );
        }
    }
    eprint!("{}", summary.render());
    if let Some(p) = &o.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&*summary)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

fn capture(a: CaptureArgs) -> anyhow::Result<ExitCode> {
    if a.dpdk {
        return capture_dpdk(a);
    }
    let iface = a.iface.clone().unwrap_or_default();
    let cfg = LiveConfig {
        socket: AfPacketConfig {
            iface: iface.clone(),
            block_size: a.block_size,
            block_count: a.block_count,
            retire_timeout_ms: a.retire_timeout,
            promisc: !a.no_promisc,
            filter: a.filter.clone(),
            ..AfPacketConfig::default()
        },
        threads: a.threads as usize,
        cpus: a.cpus.clone().map(|c| c.0).unwrap_or_default(),
        worker_cpus: a.worker_cpus.clone().map(|c| c.0).unwrap_or_default(),
        mode: a.mode,
        fanout_id: a.fanout_id,
        flow: a.flow.config(),
        ring_slots: a.ring_slots,
    };
    let cap = match Capture::open(cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wirefold: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let signals = Signals::install()?;
    let Outputs { writer, core, db } = match outputs_or_exit(&a.output, true) {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    let counters = cap.counters.clone();
    let metrics = match start_metrics(&a.telemetry, sensor_metrics(&iface, &counters, &writer, &core)) {
        Ok(m) => m,
        Err(code) => return Ok(code),
    };
    eprintln!(
        "wirefold: capturing on {} ({} threads, {} mode, fanout group {}); stop with Ctrl-C or SIGTERM",
        iface,
        a.threads,
        if a.mode == Mode::Pipeline { "pipeline" } else { "run-to-completion" },
        cap.fanout_id()
    );
    let started = Instant::now();
    let run_stop = signals.stop.clone();
    let runner = std::thread::Builder::new()
        .name("wf-capture".into())
        .spawn(move || {
            let r = cap.run(run_stop, || writer.sink());
            (r, writer)
        })
        .context("starting capture")?;
    status_until_done(&runner, &counters, a.status_interval);
    let (res, writer) = runner.join().map_err(|_| anyhow::anyhow!("capture thread panicked"))?;
    let top = writer.finish().context("writing flows")?;
    let mut summary = live_summary(res, started);
    finish_run(&a.output, &top, &mut summary, Running { core, db, metrics }, a.linger, &signals)?;
    Ok(ExitCode::SUCCESS)
}

/// What `/metrics` reads on a sensor.
fn sensor_metrics(
    interface: &str,
    threads: &[Arc<ThreadCounters>],
    writer: &Exporter,
    core: &Option<wirefold_core::CoreHandle>,
) -> SensorMetrics {
    SensorMetrics {
        interface: interface.to_string(),
        threads: threads.to_vec(),
        export: writer.counters.clone(),
        stream: writer.stream_counters.clone(),
        core: core.as_ref().map(|c| c.counters.clone()),
        dpdk: None,
    }
}

/// Start `/metrics` if asked; a bad address is a set-up error (exit 2).
fn start_metrics(t: &TelemetryArgs, m: SensorMetrics) -> Result<Option<MetricsServer>, ExitCode> {
    let Some(addr) = t.metrics else { return Ok(None) };
    match MetricsServer::start(addr, move || m.exposition()) {
        Ok(s) => {
            eprintln!("wirefold: metrics on http://{}/metrics", s.addr);
            Ok(Some(s))
        }
        Err(e) => {
            eprintln!("wirefold: {e} (--metrics)");
            Err(ExitCode::from(2))
        }
    }
}

/// After the work is done, keep `/metrics` up for `--linger` (or until the next SIGINT/SIGTERM).
fn linger(metrics: Option<MetricsServer>, how_long: Option<Timeout>, signals: &Signals) {
    let (Some(m), Some(t)) = (metrics, how_long) else { return };
    signals.again.store(false, Relaxed);
    let deadline = t.0.map(|ns| Instant::now() + Duration::from_nanos(ns));
    match deadline {
        Some(_) => eprintln!(
            "wirefold: serving metrics on http://{}/metrics for {}; Ctrl-C to stop",
            m.addr,
            humantime_secs(t.0.unwrap_or(0))
        ),
        None => eprintln!("wirefold: serving metrics on http://{}/metrics until Ctrl-C or SIGTERM", m.addr),
    }
    while !signals.again.load(Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    m.stop();
}

fn humantime_secs(ns: u64) -> String {
    format!("{} s", (ns as f64 / 1e9 * 10.0).round() / 10.0)
}

fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let signals = Signals::install()?;
    let Outputs { writer, core, db } = match outputs_or_exit(&a.output, false) {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    let counters = Arc::new(ThreadCounters::default());
    let metrics =
        match start_metrics(&a.telemetry, sensor_metrics("replay", std::slice::from_ref(&counters), &writer, &core)) {
            Ok(m) => m,
            Err(code) => return Ok(code),
        };
    let mut flows = writer.sink();
    let mut sink = |f: FinishedFlow| flows.push(f);
    let started = Instant::now();
    let mut pipe = Pipeline::new(a.flow.config());
    pipe.counters = Some(counters.clone());
    pipe.speed = a.speed;
    pipe.stop = Some(signals.stop.clone());
    let show = !a.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let position = Arc::new(AtomicU64::new(0));
    pipe.position = Some(position.clone());
    let bar = show.then(|| ProgressBar::start(&a.files, position.clone(), counters.clone()));
    let mut errors = Vec::new();
    let mut files = 0;
    for (i, path) in a.files.iter().enumerate() {
        if pipe.stopped() {
            break;
        }
        position.store(0, Relaxed);
        if let Some(b) = &bar {
            b.file(i);
        }
        let mut src = match PcapFile::open(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("wirefold: {e}");
                errors.push(e.to_string());
                continue;
            }
        };
        files += 1;
        if let Err(e) = pipe.run(&mut src, &mut sink) {
            if let Some(b) = &bar {
                b.suspend(|| eprintln!("wirefold: {e}"));
            } else {
                eprintln!("wirefold: {e}");
            }
            errors.push(e.to_string());
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    let end = if pipe.stopped() { EndReason::Shutdown } else { EndReason::Eof };
    if pipe.stopped() {
        eprintln!("wirefold: stopped by signal; flushing flows");
    }
    pipe.finish(end, &mut sink).context("writing flows")?;
    flows.flush().context("writing flows")?;
    drop(flows);
    let top = writer.finish().context("writing flows")?;
    let mut summary =
        Summary::new(files, &pipe.decoder.stats, &pipe.table.stats, errors, started.elapsed().as_secs_f64());
    finish_run(&a.output, &top, &mut summary, Running { core, db, metrics }, a.linger, &signals)?;
    Ok(if summary.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A progress bar on stderr for `replay`: bytes of the input files and packets.
struct ProgressBar {
    bar: indicatif::ProgressBar,
    sizes: Vec<u64>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressBar {
    fn start(files: &[PathBuf], position: Arc<AtomicU64>, counters: Arc<ThreadCounters>) -> Self {
        let sizes: Vec<u64> = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).collect();
        let total: u64 = sizes.iter().sum();
        let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let current = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b2, s2, c2, st2) = (bar.clone(), sizes.clone(), current.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("wirefold-progress".into())
            .spawn(move || {
                while !st2.load(Relaxed) {
                    let i = c2.load(Relaxed);
                    let before: u64 = s2[..i.min(s2.len())].iter().sum();
                    b2.set_position(before + position.load(Relaxed));
                    b2.set_message(format!("{} packets", counters.packets.load(Relaxed)));
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        ProgressBar { bar, sizes, current, stop, thread }
    }

    /// Reading the `i`-th file now.
    fn file(&self, i: usize) {
        self.current.store(i.min(self.sizes.len()), Relaxed);
    }

    fn suspend(&self, f: impl FnOnce()) {
        self.bar.suspend(f);
    }

    fn finish(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

/// Print a status line every `every` seconds until `runner` finishes.
fn status_until_done<T>(runner: &std::thread::JoinHandle<T>, counters: &[Arc<ThreadCounters>], every: u64) {
    let interval = Duration::from_secs(every);
    let mut last = (Instant::now(), 0u64);
    while !runner.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if every > 0 && last.0.elapsed() >= interval {
            let sum = |f: fn(&ThreadCounters) -> &AtomicU64| counters.iter().map(|c| f(c).load(Relaxed)).sum::<u64>();
            let packets = sum(|c| &c.packets);
            let secs = last.0.elapsed().as_secs_f64();
            eprintln!(
                "wirefold: {:.0} pkt/s, {} packets, kernel drops {}, ring drops {}, active flows {}",
                (packets - last.1) as f64 / secs,
                packets,
                sum(|c| &c.kernel_drops),
                sum(|c| &c.ring_drops),
                sum(|c| &c.active_flows)
            );
            last = (Instant::now(), packets);
        }
    }
}

#[cfg(not(feature = "dpdk"))]
fn capture_dpdk(_a: CaptureArgs) -> anyhow::Result<ExitCode> {
    eprintln!("wirefold: this wirefold was built without DPDK support; rebuild with `cargo build --release -p wirefold-sensor --features dpdk` (needs Debian's libdpdk-dev)");
    Ok(ExitCode::from(2))
}

#[cfg(feature = "dpdk")]
fn capture_dpdk(a: CaptureArgs) -> anyhow::Result<ExitCode> {
    use wirefold_sensor::live::{run_dpdk, DpdkConfig};
    let cfg = DpdkConfig {
        eal_args: a.eal.split_whitespace().map(str::to_string).collect(),
        port: a.port,
        queues: a.queues,
        mbufs: a.mbufs,
        flow: a.flow.config(),
        idle_exit: a.idle_exit.and_then(|t| t.0).map(Duration::from_nanos),
    };
    let signals = Signals::install()?;
    let stop = signals.stop.clone();
    let Outputs { writer, core, db } = match outputs_or_exit(&a.output, true) {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    let counters: Vec<Arc<ThreadCounters>> = (0..a.queues).map(|_| Arc::new(ThreadCounters::default())).collect();
    let label = format!("dpdk:{}", a.port);
    let port_counters = Arc::new(wirefold_sensor::metrics::DpdkPortCounters::default());
    let mut sm = sensor_metrics(&label, &counters, &writer, &core);
    sm.dpdk = Some(port_counters.clone());
    let metrics = match start_metrics(&a.telemetry, sm) {
        Ok(m) => m,
        Err(code) => return Ok(code),
    };
    eprintln!("wirefold: capturing with DPDK on port {} ({} queues); stop with Ctrl-C or SIGTERM", a.port, a.queues);
    let started = Instant::now();
    let c2 = counters.clone();
    let runner = std::thread::Builder::new()
        .name("wf-dpdk".into())
        .spawn(move || {
            let r = run_dpdk(cfg, stop, || writer.sink(), &c2, &port_counters);
            (r, writer)
        })
        .context("starting capture")?;
    status_until_done(&runner, &counters, a.status_interval);
    let (res, writer) = runner.join().map_err(|_| anyhow::anyhow!("capture thread panicked"))?;
    let top = writer.finish().context("writing flows")?;
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wirefold: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut summary = live_summary(res, started);
    finish_run(&a.output, &top, &mut summary, Running { core, db, metrics }, a.linger, &signals)?;
    Ok(ExitCode::SUCCESS)
}

/// The summary of a live capture run.
fn live_summary(res: LiveResult, started: Instant) -> Summary {
    let mut summary = Summary::new(1, &res.decode, &res.flows, Vec::new(), started.elapsed().as_secs_f64());
    summary.live = Some(res.live);
    summary
}

/// What a sensor run keeps running until its end: an embedded core (and
/// where its database is) and the metrics server.
struct Running {
    core: Option<wirefold_core::CoreHandle>,
    db: Option<PathBuf>,
    metrics: Option<MetricsServer>,
}

/// The end of every sensor run: print the summary, stop an embedded core
/// and say where its data is, keep `/metrics` up for `--linger`.
fn finish_run(
    o: &OutputArgs,
    top: &ExportReport,
    summary: &mut Summary,
    run: Running,
    how_long: Option<Timeout>,
    signals: &Signals,
) -> anyhow::Result<()> {
    let Running { mut core, db, metrics } = run;
    report(o, top, summary)?;
    finish_core(core.as_mut(), db, &o.sensor_id);
    linger(metrics, how_long, signals);
    drop(core);
    Ok(())
}

/// Stop an embedded core from serving (after the stream has drained; its
/// counters stay readable) and say where its data is.
fn finish_core(core: Option<&mut wirefold_core::CoreHandle>, db: Option<PathBuf>, sensor: &str) {
    if let Some(h) = core {
        h.shutdown();
    }
    if let Some(path) = db {
        let stored =
            wirefold_core::Store::open(&path, false).and_then(|s| Ok((s.flow_count(sensor)?, s.last_seq(sensor)?)));
        match stored {
            Ok((flows, seq)) => eprintln!(
                "wirefold: core database {} holds {flows} flows from sensor '{sensor}' (last batch {seq})",
                path.display()
            ),
            Err(e) => eprintln!("wirefold: core database {}: {e}", path.display()),
        }
    }
}

/// The host of an `http://` URL that is not a loopback address (a token
/// sent there crosses the network in the clear); `None` otherwise.
fn plaintext_remote(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or("").to_string(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_string(),
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then_some(host)
}

/// Read a secret file (a token) that only its owner may read.
fn read_secret(path: &Path) -> Result<String, String> {
    let t = wirefold_core::tokens::read_private(path).map_err(|e| e.to_string())?;
    let t = t.trim().to_string();
    if t.len() < 8 {
        return Err(format!("{}: the token is shorter than 8 characters", path.display()));
    }
    Ok(t)
}

fn core_action(action: CoreAction) -> anyhow::Result<ExitCode> {
    use wirefold_core::admin::{admin_request, AdminCommand, AdminError};
    match action {
        CoreAction::Gates { cmd, admin, admin_token } => {
            let Some(tf) = admin_token else {
                eprintln!("wirefold core gates: --admin-token FILE is needed (the core's --admin-token)");
                return Ok(ExitCode::from(2));
            };
            let token = match read_secret(&tf) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("wirefold core gates: {e}");
                    return Ok(ExitCode::from(2));
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
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ AdminError::Refused { .. }) => {
                    eprintln!("wirefold core gates: {e}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => {
                    eprintln!("wirefold core gates: {e}");
                    Ok(ExitCode::from(1))
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
                Some(d) => match wirefold_core::Store::open(d, false).and_then(|s| s.ledger_head()) {
                    Ok(h) => h,
                    Err(e) => {
                        eprintln!("wirefold core ledger: database {}: {e}", d.display());
                        return Ok(ExitCode::from(2));
                    }
                },
            };
            let r = if export {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let r = wirefold_core::ledger::export(&path, head.as_ref(), &mut out);
                let _ = out.flush();
                r
            } else {
                wirefold_core::ledger::verify(&path, head.as_ref())
            };
            match r {
                Ok(rep) => {
                    eprintln!("wirefold core ledger: {}: {} entries verify", path.display(), rep.entries);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("wirefold core ledger: {}: {e}", path.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn run_core(a: CoreArgs) -> anyhow::Result<ExitCode> {
    if let Some(action) = a.action {
        return core_action(action);
    }
    let gates = match &a.config {
        None => wirefold_core::gates::GatesConfig::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            match wirefold_core::gates::GatesConfig::from_toml_document(&text) {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("wirefold core: config {}: {e}", p.display());
                    return Ok(ExitCode::from(2));
                }
            }
        }
    };
    let (Some(db), Some(tokens_file)) = (a.db.clone(), a.tokens.clone()) else {
        eprintln!("wirefold core: --db and --tokens are required");
        return Ok(ExitCode::from(2));
    };
    let tokens = match wirefold_core::Tokens::load(&tokens_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wirefold core: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            eprintln!("wirefold core: --rate {r} is invalid: it must be a positive number of flows per second");
            return Ok(ExitCode::from(2));
        }
    }
    let mut cfg = wirefold_core::CoreConfig::new(db.clone(), tokens);
    cfg.gates = gates;
    cfg.ledger = a.ledger.clone();
    if let (Some(addr), Some(tf)) = (a.admin, &a.admin_token) {
        match read_secret(tf) {
            Ok(token) => cfg.admin = Some(wirefold_core::admin::AdminListen { addr, token }),
            Err(e) => {
                eprintln!("wirefold core: --admin-token: {e}");
                return Ok(ExitCode::from(2));
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
        match wirefold_core::agent::AgentTokens::load(tf) {
            Ok(t) => {
                let mut ac = wirefold_core::agent::AgentConfig::new(addr, t);
                ac.limits.calls_per_s = a.agent_rate.max(0.001);
                ac.limits.burst = (a.agent_rate * 2.0).max(1.0);
                ac.limits.max_rows = a.agent_max_rows;
                ac.limits.query_budget = Duration::from_millis(a.agent_query_ms);
                ac.limits.mutations_per_hour = a.agent_mutations_per_hour;
                cfg.agent = Some(ac);
            }
            Err(e) => {
                eprintln!("wirefold core: --agent-tokens: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    if let (Some(c), Some(k)) = (&a.tls_cert, &a.tls_key) {
        match (std::fs::read(c), std::fs::read(k)) {
            (Ok(c), Ok(k)) => cfg.tls = Some((c, k)),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("wirefold core: cannot read the TLS certificate or key: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let signals = Signals::install()?;
    let max_conns = cfg.limits.max_connections;
    let h = match wirefold_core::serve(a.listen, cfg) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("wirefold core: {e}");
            return Ok(ExitCode::from(2));
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
            let own: Arc<std::sync::OnceLock<Arc<wirefold_core::listen::ListenCounters>>> = Arc::default();
            let own2 = own.clone();
            let started = MetricsServer::start(addr, move || {
                let mut e = c.exposition();
                if let Some(l) = own2.get() {
                    wirefold_core::service::listen_exposition(&mut e, "metrics", l);
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
                    return Ok(ExitCode::from(2));
                }
            }
        }
    };
    while !signals.stop.load(Relaxed) {
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
    Ok(ExitCode::SUCCESS)
}

/// Flags that SIGINT or SIGTERM set: `stop` ends the work; `again` is
/// cleared when the work is done and ends `--linger`.
struct Signals {
    stop: Arc<AtomicBool>,
    again: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        let (stop, again) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            for flag in [&stop, &again] {
                signal_hook::flag::register(sig, flag.clone()).context("installing the signal handler")?;
            }
        }
        Ok(Signals { stop, again })
    }
}

fn check_config(a: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let root = Cli::command();
    let text = match std::fs::read_to_string(&a.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wirefold: cannot read config {}: {e}", a.file.display());
            return Ok(ExitCode::from(2));
        }
    };
    let kind = a.kind.unwrap_or_else(|| {
        let core = text.parse::<toml::Table>().is_ok_and(|t| t.contains_key("core"));
        if core {
            ConfigKind::Core
        } else {
            ConfigKind::Sensor
        }
    });
    let names: &[&str] = match kind {
        ConfigKind::Sensor => &["capture", "replay"],
        ConfigKind::Core => &["core"],
    };
    let cmds: Vec<&clap::Command> = names.iter().filter_map(|n| root.find_subcommand(n)).collect();
    let file = a.file.display().to_string();
    let mut args = Vec::new();
    for target in &cmds {
        match config::from_str(&cmds, target, &file, &text) {
            Ok(v) => args.extend(v),
            Err(e) => {
                eprintln!("wirefold: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    if kind == ConfigKind::Core {
        for arg in cmds[0].get_arguments().filter(|a| a.is_required_set()) {
            let long = arg.get_long().unwrap_or_default();
            if !args.iter().any(|x| x.to_string_lossy().starts_with(&format!("--{long}="))) {
                eprintln!(
                    "wirefold: config {file}: core.{} is required (or give --{long} when starting the core)",
                    arg.get_id()
                );
                return Ok(ExitCode::from(2));
            }
        }
    }
    print!("{}", config::effective(&cmds, &args));
    if kind == ConfigKind::Core {
        match wirefold_core::gates::GatesConfig::from_toml_document(&text) {
            Ok(g) => print!("\n{}", g.describe()),
            Err(e) => {
                eprintln!("wirefold: config {file}: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    eprintln!(
        "wirefold: config {file} is a valid {} configuration",
        if kind == ConfigKind::Core { "core" } else { "sensor" }
    );
    Ok(ExitCode::SUCCESS)
}

/// [`open_output`], printing its error and giving the exit status.
fn outputs_or_exit(o: &OutputArgs, live: bool) -> Result<Outputs, ExitCode> {
    open_output(o, live).map_err(|(e, code)| {
        eprintln!("wirefold: {e:#}");
        ExitCode::from(code)
    })
}
