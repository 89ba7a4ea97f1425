//! The command line: argument structs of the subcommands and their value
//! parsers. The binary's `main` parses and dispatches; [`crate::run`] runs.
use crate::flow::FlowConfig;
use crate::live::Mode;
use clap::Args;
use std::path::PathBuf;
pub use wirefold_core::telemetry::TelemetryArgs;

/// Parse a duration such as `30s`, `5m`, `1h`, `250ms`, `90` (seconds) or
/// `never`. Returns nanoseconds, `None` for never.
pub fn parse_duration(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("'{s}' is not a duration; use a number with a unit (ms, s, m, h), e.g. 30s or 5m, or 'never'")
    })?;
    let mult = match unit {
        "" | "s" => 1e9,
        "ms" => 1e6,
        "us" => 1e3,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(format!("'{s}' has unknown unit '{unit}'; allowed units are ms, s, m, h (or 'never')")),
    };
    let ns = n * mult;
    if !ns.is_finite() || ns < 1e6 {
        return Err(format!("'{s}' is too short; the smallest allowed duration is 1ms (or 'never')"));
    }
    Ok(Some(ns as u64))
}

// ---- Argument structs of the subcommands (the binary's `main` only parses and dispatches).
// Their field docs are the `--help` text; struct docs are left out on purpose
// (clap would take them as the subcommand's description).

#[derive(Args, Debug)]
#[allow(missing_docs)]
pub struct CheckConfigArgs {
    /// The configuration file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Check it as a sensor or a core configuration; by default a file with
    /// a core section is a core configuration.
    #[arg(long, value_enum)]
    pub kind: Option<ConfigKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
/// What a configuration file configures.
pub enum ConfigKind {
    /// `wirefold capture` / `wirefold replay`.
    Sensor,
    /// `wirefold core`.
    Core,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Flow")]
#[allow(missing_docs)]
pub struct FlowArgs {
    /// End a flow after this long without packets: e.g. 30s, 5m, or never.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_timeout)]
    pub idle_timeout: Timeout,
    /// Export long flows after this long and continue them in a new record: e.g. 30m, or never.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_timeout)]
    pub active_timeout: Timeout,
    /// Most flows held at once per flow table (storage for them, ~430 bytes each, is reserved at start and its size printed); beyond it the least recently seen are evicted (counted).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_flows: u64,
    /// Seed of the Community ID on every flow record (as Zeek's and Suricata's `community_id` seed).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub community_id_seed: u16,
    /// Do not inspect payload (no TLS/QUIC/DNS/HTTP/SSH fields, app is "unknown"; the model's inspection features are 0).
    #[arg(long)]
    pub no_inspect: bool,
    /// Payload-carrying packets inspected per direction of each flow.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=255))]
    pub inspect_packets: u8,
    /// Flows inspected at once (each slot ~11 KiB); a flow that finds none free is counted and not inspected.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub inspect_pool: u64,
}

impl FlowArgs {
    /// The flow table's configuration.
    pub fn config(&self) -> FlowConfig {
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
#[allow(missing_docs)]
pub struct OutputArgs {
    /// Write flow records here instead of stdout ("-" is stdout).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
    /// Print the N largest flows (by bytes) with the summary.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub top: usize,
    /// Do not write flow records at all (for measuring the pipeline alone).
    #[arg(long)]
    pub no_output: bool,
    /// Do not compute flow embeddings (the ONNX model is not loaded).
    #[arg(long)]
    pub no_embed: bool,
    /// An ONNX model to use instead of the bundled one; its card is MODEL with
    /// the extension replaced by .card.json.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// Write each flow's feature vector (before standardisation) as CSV, for training.
    #[arg(long, value_name = "PATH")]
    pub features_out: Option<PathBuf>,
    /// Write FlowBatch buffers (FlatBuffers, each with a u32 little-endian length prefix).
    #[arg(long, value_name = "PATH")]
    pub batches_out: Option<PathBuf>,
    /// Sensor id written into FlowBatches (and, with --core, the id the token must belong to).
    #[arg(long, value_name = "ID", default_value = "wirefold")]
    pub sensor_id: String,
    /// Stream FlowBatches to a core: its URL (http://HOST:PORT), or "embedded"
    /// to start one in this process on loopback, with its database under --data-dir.
    #[arg(long, value_name = "URL")]
    pub core: Option<String>,
    /// With --core embedded: a TOML file whose `gates` tables set the embedded
    /// core's promotion gates, as in `wirefold core --config` (see docs/gates.md).
    #[arg(long, value_name = "FILE")]
    pub core_gates: Option<PathBuf>,
    /// With --core embedded: the drift monitor's reference, a model card or a
    /// `{"dims", "score"}` file (see docs/gates.md), or `learn` to learn it from
    /// the first windows. Default: the loaded model card's reference
    /// (`reference_distribution.drift`), else `learn`.
    #[arg(long, value_name = "FILE|learn")]
    pub core_drift_reference: Option<String>,
    /// Bearer token for the core (with --core embedded, any token of 8+ characters; default one is made up).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Where the spool (and an embedded core's database) live.
    #[arg(long, value_name = "DIR", default_value = "wirefold-data")]
    pub data_dir: PathBuf,
    /// Spool bound, in MiB; beyond it the oldest batch is dropped (counted).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub spool_max_mib: u64,
    /// Batches in flight to the core without an ack, at most.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub window: usize,
    /// After the input ends, seconds to keep trying to deliver the spool.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Flows per FlowBatch.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch_flows: u64,
    /// Seal a partly filled FlowBatch after this long (e.g. 1s, 250ms).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_timeout)]
    pub batch_age: Timeout,
    /// PEM file of the CA that signed the core's certificate: use TLS (with an https:// --core URL).
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Send the bearer token in plain text (http://) to a core that is not on a loopback address.
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Export flows as IPFIX (RFC 7011, RFC 5103 biflows) to a collector:
    /// udp://HOST:PORT or tcp://HOST:PORT; repeat (or separate with commas) for several (see docs/ipfix.md).
    #[arg(long, value_name = "URL")]
    pub ipfix: Vec<crate::ipfix::CollectorList>,
    /// IPFIX observation domain id.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub ipfix_domain: u32,
    /// Private enterprise number of the wirefold IPFIX elements (default: RFC 5612's documentation PEN).
    #[arg(long, value_name = "N", default_value_t = crate::ipfix::DEFAULT_PEN)]
    pub ipfix_pen: u32,
    /// Re-send the IPFIX templates over UDP this often (e.g. 60s, 5s).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub ipfix_template_refresh: Timeout,
    /// Path MTU towards UDP IPFIX collectors: no export packet is larger. `auto`: the
    /// kernel's path MTU of the route to each collector (IP_MTU), at most 9000.
    #[arg(long, value_name = "auto|BYTES", default_value = "auto", value_parser = crate::cli::parse_ipfix_mtu)]
    pub ipfix_mtu: crate::cli::IpfixMtu,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Capture")]
#[allow(missing_docs)]
pub struct CaptureArgs {
    /// Read settings from this TOML file (see `wirefold check-config`); flags override it.
    #[arg(long, value_name = "FILE", help_heading = None)]
    pub config: Option<PathBuf>,
    /// Interface to capture on (AF_PACKET).
    #[arg(long, value_name = "NAME", required_unless_present = "dpdk")]
    pub iface: Option<String>,
    /// Capture with DPDK instead of AF_PACKET (needs a build with `--features dpdk`).
    #[arg(long)]
    pub dpdk: bool,
    /// DPDK EAL arguments, as one string.
    #[arg(
        long,
        help_heading = "DPDK",
        value_name = "ARGS",
        allow_hyphen_values = true,
        default_value = "--no-huge -m 512 --no-shconf --no-pci -l 0"
    )]
    pub eal: String,
    /// DPDK port id.
    #[arg(long, help_heading = "DPDK", value_name = "N", default_value_t = 0)]
    pub port: u16,
    /// DPDK rx queues, one lcore each (give the EAL that many lcores with -l).
    #[arg(long, help_heading = "DPDK", value_name = "Q", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub queues: u16,
    /// DPDK mbufs in the pool (for net_pcap with infinite_rx, at least the file's packets).
    #[arg(long, help_heading = "DPDK", value_name = "N", default_value_t = 65535)]
    pub mbufs: u32,
    /// DPDK: stop by itself when no packet arrived for this long (after the first), e.g. for file-backed vdevs.
    #[arg(long, help_heading = "DPDK", value_name = "DURATION", value_parser = parse_timeout)]
    pub idle_exit: Option<Timeout>,
    /// Capture threads (one AF_PACKET socket and ring each).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: u64,
    /// CPUs to pin capture threads to, e.g. "2,3" or "2-5" (cycled over threads).
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
    /// CPUs to pin flow workers to (pipeline mode).
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub worker_cpus: Option<CpuList>,
    /// pipeline: capture threads decode and hand packets to flow workers over
    /// lock-free rings; run-to-completion: each capture thread tracks flows itself.
    #[arg(long, value_enum, default_value = "pipeline")]
    pub mode: Mode,
    /// Only capture packets matching this tcpdump-style filter expression.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Fanout group id; by default the kernel picks one no other group on this host uses.
    #[arg(long, value_name = "ID")]
    pub fanout_id: Option<u16>,
    /// Do not put the interface in promiscuous mode.
    #[arg(long)]
    pub no_promisc: bool,
    /// Ring block size in bytes (power of two, multiple of the page size).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 21)]
    pub block_size: u32,
    /// Ring blocks per socket.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub block_count: u32,
    /// Milliseconds after which the kernel hands over a partly filled block.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub retire_timeout: u32,
    /// Packet records per capture→flow ring (pipeline mode); a full ring drops and counts.
    #[arg(long, value_name = "N", default_value_t = 1 << 16)]
    pub ring_slots: usize,
    /// Seconds between status lines on stderr (0: none).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub status_interval: u64,
    /// After stopping, keep serving --metrics this long (e.g. 30s, or "never" to wait for another signal).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout, help_heading = "Telemetry")]
    pub linger: Option<Timeout>,
    #[command(flatten)]
    pub flow: FlowArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// CPU numbers from the command line.
#[derive(Debug, Clone)]
pub struct CpuList(pub Vec<usize>);

/// Parse a CPU list such as `2,3` or `2-5`.
pub fn parse_cpus(s: &str) -> Result<CpuList, String> {
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
#[allow(missing_docs)]
pub struct ReplayArgs {
    /// Capture files to read, in order.
    #[arg(required = true, value_name = "FILE", help_heading = None)]
    pub files: Vec<PathBuf>,
    /// Read settings from this TOML file (see `wirefold check-config`); flags override it.
    #[arg(long, value_name = "FILE", help_heading = None)]
    pub config: Option<PathBuf>,
    /// Pace packets by their timestamps, SPEED times faster than recorded (1 = real time); by default as fast as possible.
    #[arg(long, value_name = "SPEED", value_parser = parse_speed)]
    pub speed: Option<f64>,
    /// Do not show the progress bar (bytes, packets) that replay draws on stderr when stderr is a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// After the input ends, keep serving --metrics this long (e.g. 30s, or "never" to wait for SIGINT/SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout, help_heading = "Telemetry")]
    pub linger: Option<Timeout>,
    #[command(flatten)]
    pub flow: FlowArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Parse a replay speed-up factor (a positive number).
pub fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a speed-up factor; use a positive number such as 1, 10 or 0.5")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Some(30_000_000_000)));
        assert_eq!(parse_duration("5m"), Ok(Some(300_000_000_000)));
        assert_eq!(parse_duration("250ms"), Ok(Some(250_000_000)));
        assert_eq!(parse_duration("2"), Ok(Some(2_000_000_000)));
        assert_eq!(parse_duration("1.5h"), Ok(Some(5_400_000_000_000)));
        assert_eq!(parse_duration("never"), Ok(None));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration("0s").unwrap_err().contains("too short"));
    }

    #[test]
    fn ipfix_mtu_is_auto_or_a_byte_count_in_range() {
        assert_eq!(parse_ipfix_mtu("auto"), Ok(IpfixMtu(None)));
        assert_eq!(parse_ipfix_mtu("1500"), Ok(IpfixMtu(Some(1500))));
        for bad in ["575", "65536", "big", ""] {
            let e = parse_ipfix_mtu(bad).unwrap_err();
            assert!(e.contains("neither `auto` nor a byte count from 576 to 65535"), "{bad}: {e}");
        }
    }
}

/// A timeout from the command line: nanoseconds, or `None` for never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<u64>);

/// [`parse_duration`] for clap.
pub fn parse_timeout(s: &str) -> Result<Timeout, String> {
    parse_duration(s).map(Timeout)
}

/// `--ipfix-mtu`: a byte count, or `None` for `auto` (the kernel's path MTU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpfixMtu(pub Option<usize>);

/// Parse `--ipfix-mtu`: `auto` or 576..=65535.
pub fn parse_ipfix_mtu(s: &str) -> Result<IpfixMtu, String> {
    if s == "auto" {
        return Ok(IpfixMtu(None));
    }
    match s.parse::<usize>() {
        Ok(n) if (576..=65535).contains(&n) => Ok(IpfixMtu(Some(n))),
        _ => Err(format!("'{s}' is neither `auto` nor a byte count from 576 to 65535")),
    }
}
