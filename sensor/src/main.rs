//! The `wirefold` command.
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use wirefold_sensor::capture::pcap::PcapFile;
use wirefold_sensor::cli::{parse_timeout, Timeout};
use wirefold_sensor::flow::{EndReason, FinishedFlow, FlowConfig};
use wirefold_sensor::output::JsonLinesWriter;
use wirefold_sensor::pipeline::{Pipeline, Summary};

/// Wirefold: a wire-speed network flow sensor.
///
/// Wirefold reads packets (from capture files, and live from AF_PACKET or
/// DPDK), folds them into bidirectional flows and exports one record per
/// finished flow.
#[derive(Parser, Debug)]
#[command(name = "wirefold", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
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
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Capture files to read, in order.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Write flow records here instead of stdout ("-" is stdout).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// End a flow after this long without packets: e.g. 30s, 5m, or never.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_timeout)]
    idle_timeout: Timeout,
    /// Export long flows after this long and continue them in a new record: e.g. 30m, or never.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_timeout)]
    active_timeout: Timeout,
    /// Most flows held at once; beyond it the least recently seen are evicted (counted).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_flows: u64,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    summary_json: Option<PathBuf>,
    /// Print the N largest flows (by bytes) with the summary.
    #[arg(long, value_name = "N", default_value_t = 0)]
    top: usize,
    /// Do not write flow records at all (for measuring the pipeline alone).
    #[arg(long)]
    no_output: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Replay(a) => replay(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wirefold: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let cfg = FlowConfig {
        idle_timeout_ns: a.idle_timeout.0,
        active_timeout_ns: a.active_timeout.0,
        max_flows: a.max_flows as usize,
        ..FlowConfig::default()
    };
    let out: Option<Box<dyn Write + Send>> = match &a.out {
        _ if a.no_output => None,
        Some(p) if p.as_os_str() != "-" => Some(Box::new(BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ))),
        _ => Some(Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout()))),
    };
    let mut writer = JsonLinesWriter::spawn(out, a.top);
    let mut sink = |f: &FinishedFlow| writer.push(f);

    let started = Instant::now();
    let mut pipe = Pipeline::new(cfg);
    let mut errors = Vec::new();
    let mut files = 0;
    for path in &a.files {
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
            eprintln!("wirefold: {e}");
            errors.push(e.to_string());
        }
    }
    pipe.finish(EndReason::Eof, &mut sink).context("writing flows")?;
    let top = writer.finish().context("writing flows")?;
    let summary = Summary::new(files, &pipe.decoder.stats, &pipe.table.stats, errors, started.elapsed().as_secs_f64());
    if a.top > 0 {
        eprintln!("top {} flows by bytes", top.len());
        for r in &top {
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
    eprint!("{}", summary.render());
    if let Some(p) = &a.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(if summary.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
