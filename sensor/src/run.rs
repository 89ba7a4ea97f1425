//! Run wiring of the sensor's subcommands: outputs (JSON, IPFIX, batches, a
//! core, embedded or remote), the model, signals, progress and status lines,
//! metrics and `--linger`, and the end of a run (summary, flush, exit
//! status). The binary parses the command line and calls [`replay`] or
//! [`capture`]; the stages themselves live in their own modules.
use crate::capture::afpacket::AfPacketConfig;
use crate::capture::pcap::PcapFile;
use crate::cli::{CaptureArgs, OutputArgs, ReplayArgs, TelemetryArgs, Timeout};
use crate::flow::{EndReason, FinishedFlow};
use crate::live::{Capture, LiveConfig, LiveResult, Mode, ThreadCounters};
use crate::metrics::SensorMetrics;
use crate::output::{ExportOptions, ExportReport, Exporter};
use crate::pipeline::{Pipeline, Summary};
use crate::stream::{StreamConfig, Streamer};
use anyhow::Context;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wirefold_core::telemetry::MetricsServer;
use wirefold_embeddings::Embedder;

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
                let mut cfg =
                    wirefold_core::CoreConfig::new(path.clone(), wirefold_core::Tokens::single(&o.sensor_id, &token));
                if let Some(p) = &o.core_gates {
                    let text = std::fs::read_to_string(p)
                        .map_err(|e| setup(format!("cannot read --core-gates {}: {e}", p.display())))?;
                    cfg.gates = wirefold_core::GatesConfig::from_toml_document(&text)
                        .map_err(|e| setup(format!("--core-gates {}: {e}", p.display())))?;
                }
                cfg.drift_reference = match o.core_drift_reference.as_deref() {
                    Some("learn") => None,
                    Some(p) => {
                        let text = std::fs::read_to_string(p)
                            .map_err(|e| setup(format!("cannot read --core-drift-reference {p}: {e}")))?;
                        Some(
                            wirefold_core::gates::DriftReference::from_json(&text)
                                .map_err(|e| setup(format!("--core-drift-reference {p}: {e}")))?,
                        )
                    }
                    None => embedder
                        .as_ref()
                        .map(|e| &e.card().reference_distribution)
                        .and_then(|r| r.get("drift"))
                        .and_then(|d| wirefold_core::gates::DriftReference::from_json(&d.to_string()).ok()),
                };
                let h = wirefold_core::serve("127.0.0.1:0".parse().expect("loopback"), cfg)
                    .map_err(|e| setup(e.to_string()))?;
                let url = format!("http://{}", h.addr);
                eprintln!("wirefold: embedded core on {url}, database {}", path.display());
                core = Some(h);
                db = Some(path);
                (url, token)
            } else {
                if o.core_gates.is_some() || o.core_drift_reference.is_some() {
                    return Err(setup(
                        "--core-gates and --core-drift-reference configure an embedded core only (--core embedded)"
                            .into(),
                    ));
                }
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
            Some(Streamer::start(cfg).map_err(|e| setup(e.to_string()))?)
        }
    };
    let ipfix = if o.ipfix.is_empty() {
        None
    } else {
        let cfg = crate::ipfix::IpfixConfig {
            collectors: o.ipfix.iter().flat_map(|l| l.0.iter().cloned()).collect(),
            domain: o.ipfix_domain,
            pen: o.ipfix_pen,
            template_refresh: Duration::from_nanos(o.ipfix_template_refresh.0.unwrap_or(u64::MAX)),
            mtu: o.ipfix_mtu.0,
            embedding: embedder.is_some(),
        };
        Some(crate::ipfix::IpfixSink::start(cfg).map_err(|e| (anyhow::anyhow!(e), 2u8))?)
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

/// The flow tables' memory, printed at start-up; exit 2 when it does not fit.
fn flow_memory(flow: &crate::cli::FlowArgs, tables: usize) -> Result<(), ExitCode> {
    match crate::config::flow_memory(flow.max_flows as usize, tables, crate::config::mem_available()) {
        Ok(line) => {
            eprintln!("wirefold: {line}");
            Ok(())
        }
        Err(e) => {
            eprintln!("wirefold: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// `wirefold capture`: live capture until SIGINT/SIGTERM (or DPDK's idle exit), then the summary.
pub fn capture(a: CaptureArgs) -> anyhow::Result<ExitCode> {
    let tables = if a.dpdk { a.queues as usize } else { a.threads as usize };
    if let Err(code) = flow_memory(&a.flow, tables) {
        return Ok(code);
    }
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

/// `wirefold replay`: capture files through the pipeline, then the summary.
pub fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    if let Err(code) = flow_memory(&a.flow, 1) {
        return Ok(code);
    }
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
    use crate::live::{run_dpdk, DpdkConfig};
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
    let port_counters = Arc::new(crate::metrics::DpdkPortCounters::default());
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

/// Flags that SIGINT or SIGTERM set: `stop` ends the work; `again` is
/// cleared when the work is done and ends `--linger`.
#[derive(Debug)]
pub struct Signals {
    /// Set by the first signal: stop the work.
    pub stop: Arc<AtomicBool>,
    /// Set by every signal; cleared when the work is done (ends `--linger`).
    pub again: Arc<AtomicBool>,
}

impl Signals {
    /// Install the handlers.
    pub fn install() -> anyhow::Result<Signals> {
        let (stop, again) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            for flag in [&stop, &again] {
                signal_hook::flag::register(sig, flag.clone()).context("installing the signal handler")?;
            }
        }
        Ok(Signals { stop, again })
    }
}

/// [`open_output`], printing its error and giving the exit status.
fn outputs_or_exit(o: &OutputArgs, live: bool) -> Result<Outputs, ExitCode> {
    open_output(o, live).map_err(|(e, code)| {
        eprintln!("wirefold: {e:#}");
        ExitCode::from(code)
    })
}
