//! The `wirefold` command: parses the command line (and `--config` files)
//! and dispatches. The subcommands' arguments live in `cli` (and the core's
//! in `wirefold_core::runner`), their run wiring in `run`.
use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use wirefold_core::runner::{self, CoreArgs};
use wirefold_sensor::cli::{CaptureArgs, CheckConfigArgs, ReplayArgs};
use wirefold_sensor::{config, run};

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
        Command::Replay(a) => run::replay(a),
        Command::Capture(a) => run::capture(a),
        Command::Core(a) if a.action.is_some() => Ok(runner::run(a, &AtomicBool::new(false))),
        Command::Core(a) => run::Signals::install().map(|s| runner::run(a, &s.stop)),
        Command::CheckConfig(a) => Ok(config::check_file(&a, &Cli::command())),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wirefold: {e:#}");
            ExitCode::from(1)
        }
    }
}
