//! Live capture: pinned capture threads on AF_PACKET sockets, lock-free
//! rings to flow workers (or run-to-completion), a wall-clock tick, and clean
//! shutdown that flushes every flow.
//!
//! ```text
//! pipeline:           capture thread ── decode ──► SPSC ring ──► flow worker ──► FlowSink
//! run-to-completion:  capture thread ── decode ──► flow table ─────────────────► FlowSink
//! ```
//! Hot loops keep plain counters and publish them to [`ThreadCounters`]
//! once per block, never per packet.

use crate::capture::afpacket::{AfPacketConfig, AfPacketSocket, Fanout, KernelStats};
use crate::capture::{CaptureError, PacketSource};
use crate::flow::{EndReason, FinishedFlow, FlowConfig, FlowStats, FlowTable};
use crate::output::FlowSink;
use crate::ring::{Producer, Ring};
use crate::rx::{wall_ns, LoopControl, RingSink, TableSink};
use crate::wire::{DecodeStats, Decoder};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How capture and flow tracking share the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Capture threads decode and push to a ring; flow workers track flows.
    Pipeline,
    /// Each capture thread also tracks flows (for small boxes).
    RunToCompletion,
}

/// Live capture settings.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Socket and ring settings (shared by all threads).
    pub socket: AfPacketConfig,
    /// Capture threads (one socket each, one fanout group).
    pub threads: usize,
    /// CPUs for capture threads, in order (cycled); empty = not pinned.
    pub cpus: Vec<usize>,
    /// CPUs for flow workers (pipeline mode), in order; empty = not pinned.
    pub worker_cpus: Vec<usize>,
    /// Work split.
    pub mode: Mode,
    /// Fanout group id; `None` lets the kernel pick an unused one.
    pub fanout_id: Option<u16>,
    /// Flow table settings (per worker).
    pub flow: FlowConfig,
    /// Packet records per ring (pipeline mode).
    pub ring_slots: usize,
}

pub use crate::metrics::ThreadCounters;

/// Live-capture counters for the summary.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LiveCounters {
    /// Interface captured on.
    pub interface: String,
    /// Capture threads.
    pub threads: usize,
    /// Fanout group id.
    pub fanout_id: u16,
    /// Packets the kernel handed to the sockets (including its drops).
    pub kernel_packets: u64,
    /// Packets the kernel dropped because a ring was full.
    pub kernel_drops: u64,
    /// Kernel queue freezes.
    pub kernel_freezes: u64,
    /// Packet records dropped because a capture→flow ring was full.
    pub ring_drops: u64,
    /// DPDK port counters (DPDK capture only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpdk: Option<DpdkCounters>,
}

/// DPDK port counters for the summary.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DpdkCounters {
    /// Port id.
    pub port: u16,
    /// Rx queues.
    pub queues: u16,
    /// Whether RSS with the symmetric key spread the queues.
    pub rss: bool,
    /// Packets received by the port.
    pub ipackets: u64,
    /// Packets missed because rx queues were full.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Receive failures for lack of mbufs.
    pub rx_nombuf: u64,
    /// Packets per queue.
    pub queue_ipackets: Vec<u64>,
}

/// What a finished capture run counted.
#[derive(Debug, Clone, Default)]
pub struct LiveResult {
    /// Decoder counters, all threads.
    pub decode: DecodeStats,
    /// Flow-table counters, all tables.
    pub flows: FlowStats,
    /// Capture counters.
    pub live: LiveCounters,
}

fn pin(cpu: Option<usize>) {
    if let Some(c) = cpu {
        let mut set = nix::sched::CpuSet::new();
        if set.set(c).is_ok() {
            if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
                eprintln!("wirefold: cannot pin thread to CPU {c}: {e}");
            }
        }
    }
}

fn merge_flow_stats(a: &mut FlowStats, b: &FlowStats) {
    a.packets += b.packets;
    a.bytes += b.bytes;
    a.created += b.created;
    for (x, y) in a.ended.iter_mut().zip(b.ended.iter()) {
        *x += y;
    }
    a.eviction_passes += b.eviction_passes;
    a.peak_flows += b.peak_flows;
}

/// A running capture: open sockets first (so set-up errors come before any
/// thread starts), then [`Capture::run`].
#[derive(Debug)]
pub struct Capture {
    cfg: LiveConfig,
    sockets: Vec<AfPacketSocket>,
    fanout_id: u16,
    /// One per capture thread.
    pub counters: Vec<Arc<ThreadCounters>>,
}

const TICK: Duration = Duration::from_millis(100);

impl Capture {
    /// Open one socket per thread, all in one fanout group.
    pub fn open(cfg: LiveConfig) -> Result<Self, CaptureError> {
        if cfg.threads == 0 || cfg.threads > 256 {
            return Err(CaptureError::Setup(format!("--threads {} is invalid: allowed 1..=256", cfg.threads)));
        }
        let mut sockets = Vec::with_capacity(cfg.threads);
        let first = AfPacketSocket::open(&cfg.socket, cfg.fanout_id.map_or(Fanout::Unique, Fanout::Id), 0)?;
        let fanout_id = first.fanout_id();
        sockets.push(first);
        for q in 1..cfg.threads {
            sockets.push(AfPacketSocket::open(&cfg.socket, Fanout::Id(fanout_id), q as u16)?);
        }
        let counters = (0..cfg.threads).map(|_| Arc::new(ThreadCounters::default())).collect();
        Ok(Self { cfg, sockets, fanout_id, counters })
    }

    /// The fanout group the sockets joined.
    pub fn fanout_id(&self) -> u16 {
        self.fanout_id
    }

    /// Capture until `stop` is set, then drain, flush every flow with end
    /// reason `shutdown`, and return the counters. `sinks` gets one
    /// [`FlowSink`] per flow table.
    pub fn run(self, stop: Arc<AtomicBool>, mut sink_for: impl FnMut() -> FlowSink) -> LiveResult {
        let Capture { cfg, sockets, fanout_id, counters } = self;
        let mut handles = Vec::new();
        for (i, sock) in sockets.into_iter().enumerate() {
            let c = counters[i].clone();
            let cpu = (!cfg.cpus.is_empty()).then(|| cfg.cpus[i % cfg.cpus.len()]);
            let stop = stop.clone();
            let flow_cfg = cfg.flow;
            match cfg.mode {
                Mode::RunToCompletion => {
                    let sink = sink_for();
                    handles.push(
                        std::thread::Builder::new()
                            .name(format!("wf-cap{i}"))
                            .spawn(move || {
                                pin(cpu);
                                run_to_completion(sock, flow_cfg, sink, &c, &stop)
                            })
                            .expect("spawn capture thread"),
                    );
                }
                Mode::Pipeline => {
                    let ring = Arc::new(Ring::new(cfg.ring_slots));
                    let done = Arc::new(AtomicBool::new(false));
                    let sink = sink_for();
                    let wcpu = (!cfg.worker_cpus.is_empty()).then(|| cfg.worker_cpus[i % cfg.worker_cpus.len()]);
                    let (r2, d2, c2) = (ring.clone(), done.clone(), c.clone());
                    let worker = std::thread::Builder::new()
                        .name(format!("wf-flow{i}"))
                        .spawn(move || {
                            pin(wcpu);
                            flow_worker(&r2, &d2, flow_cfg, sink, &c2)
                        })
                        .expect("spawn flow worker");
                    handles.push(
                        std::thread::Builder::new()
                            .name(format!("wf-cap{i}"))
                            .spawn(move || {
                                pin(cpu);
                                let (dec, ks) = capture_to_ring(sock, &ring, &c, &stop);
                                done.store(true, std::sync::atomic::Ordering::Release);
                                let (_, fs, _) = worker.join().expect("flow worker panicked");
                                (dec, fs, ks)
                            })
                            .expect("spawn capture thread"),
                    );
                }
            }
        }
        let mut res = LiveResult::default();
        res.live.interface = cfg.socket.iface.clone();
        res.live.threads = cfg.threads;
        res.live.fanout_id = fanout_id;
        for (h, c) in handles.into_iter().zip(counters.iter()) {
            let (dec, fs, ks) = h.join().expect("capture thread panicked");
            res.decode.merge(&dec);
            merge_flow_stats(&mut res.flows, &fs);
            res.live.kernel_packets += ks.packets;
            res.live.kernel_drops += ks.drops;
            res.live.kernel_freezes += ks.freezes;
            res.live.ring_drops += c.ring_drops.load(Relaxed);
        }
        res
    }
}

/// The packet loop's settings for an AF_PACKET socket: a block per batch,
/// a wall-clock tick when idle, and after the stop flag one more pass for
/// what the kernel already retired.
fn afpacket_control(stop: &AtomicBool) -> LoopControl<'_> {
    LoopControl {
        stop: Some(stop),
        drain_pass: Some(Duration::from_millis(50)),
        tick: Some(TICK),
        ..LoopControl::default()
    }
}

/// An AF_PACKET socket as the loop's source, publishing the kernel's
/// counters at most once a second.
struct KernelCounted<'a> {
    sock: &'a mut AfPacketSocket,
    c: &'a ThreadCounters,
    last: u64,
}

impl KernelCounted<'_> {
    fn publish(&mut self) -> KernelStats {
        let k = self.sock.kernel_stats();
        self.c.kernel_packets.store(k.packets, Relaxed);
        self.c.kernel_drops.store(k.drops, Relaxed);
        self.c.kernel_freezes.store(k.freezes, Relaxed);
        k
    }
}

impl PacketSource for KernelCounted<'_> {
    fn next_batch(&mut self, sink: &mut dyn FnMut(&crate::capture::RawPacket<'_>)) -> Result<bool, CaptureError> {
        let r = self.sock.next_batch(sink);
        let now = wall_ns();
        if now.saturating_sub(self.last) > 1_000_000_000 {
            self.last = now;
            self.publish();
        }
        r
    }
}

fn publish_decode(c: &ThreadCounters, d: &DecodeStats) {
    c.packets.store(d.packets, Relaxed);
    c.bytes.store(d.bytes, Relaxed);
    c.publish_decode(d);
}

fn capture_to_ring(
    mut sock: AfPacketSocket,
    ring: &Ring,
    c: &ThreadCounters,
    stop: &AtomicBool,
) -> (DecodeStats, KernelStats) {
    let mut dec = Decoder::new();
    let mut sink = RingSink(Producer::new(ring));
    let mut src = KernelCounted { sock: &mut sock, c, last: wall_ns() };
    let _ = crate::rx::run(&mut src, &mut dec, &mut sink, afpacket_control(stop), &mut |d, s: &mut RingSink| {
        c.ring_drops.store(s.0.drops, Relaxed);
        publish_decode(c, d);
    });
    sink.0.flush();
    c.ring_drops.store(sink.0.drops, Relaxed);
    publish_decode(c, &dec.stats);
    (dec.stats, src.publish())
}

fn flow_worker(
    ring: &Ring,
    done: &AtomicBool,
    cfg: FlowConfig,
    mut sink: FlowSink,
    c: &ThreadCounters,
) -> (DecodeStats, FlowStats, KernelStats) {
    let mut table = FlowTable::new(cfg);
    let mut last_tick = wall_ns();
    let mut idle_spins = 0u32;
    loop {
        let mut n = 0;
        while let Some(b) = ring.next_full() {
            for m in b.items() {
                // The ring carries packet records, not payload: pipeline mode does not inspect payload.
                table.add(m, &[]);
            }
            n += b.len();
            ring.recycle(b);
            if n >= 4096 {
                break;
            }
        }
        if n == 0 {
            if done.load(std::sync::atomic::Ordering::Acquire) && ring.is_empty() {
                break;
            }
            // The ring holds tens of milliseconds of traffic; sleeping a
            // millisecond when it runs dry costs nothing and saves a core.
            idle_spins += 1;
            if idle_spins > 16 {
                std::thread::sleep(Duration::from_millis(1));
            } else {
                std::hint::spin_loop();
            }
            let now = wall_ns();
            if now.saturating_sub(last_tick) >= TICK.as_nanos() as u64 {
                last_tick = now;
                table.advance(now);
            }
        } else {
            idle_spins = 0;
        }
        for f in table.drain_finished() {
            let _ = sink.push(f);
        }
        c.publish_table(&table, table.len());
    }
    table.flush(EndReason::Shutdown);
    for f in table.drain_finished() {
        let _ = sink.push(f);
    }
    let _ = sink.flush();
    c.publish_table(&table, 0);
    (DecodeStats::default(), table.stats.clone(), KernelStats::default())
}

/// Flush a table at shutdown into `sink` and publish the final counters.
fn shut_down(table: &mut FlowTable, sink: &mut FlowSink, c: &ThreadCounters, d: &DecodeStats) {
    table.flush(EndReason::Shutdown);
    for f in table.drain_finished() {
        let _ = sink.push(f);
    }
    let _ = sink.flush();
    publish_decode(c, d);
    c.publish_table(table, 0);
}

fn run_to_completion(
    mut sock: AfPacketSocket,
    cfg: FlowConfig,
    mut sink: FlowSink,
    c: &ThreadCounters,
    stop: &AtomicBool,
) -> (DecodeStats, FlowStats, KernelStats) {
    let mut dec = Decoder::new();
    let mut table = FlowTable::new(cfg);
    let mut src = KernelCounted { sock: &mut sock, c, last: wall_ns() };
    {
        let mut ts = TableSink::new(&mut table, |f: FinishedFlow| sink.push(f));
        let _ = crate::rx::run(&mut src, &mut dec, &mut ts, afpacket_control(stop), &mut |d, s| {
            c.publish_table(s.table, s.table.len());
            publish_decode(c, d);
        });
    }
    let ks = src.publish();
    shut_down(&mut table, &mut sink, c, &dec.stats);
    (dec.stats, table.stats.clone(), ks)
}

/// Run to completion on any packet source: decode, track flows, hand
/// finished flows to `sink`, until `stop` is set (or, with `idle_exit`, no
/// packet came for that long after the first). Returns the counters.
pub fn run_source_to_completion(
    src: &mut dyn PacketSource,
    cfg: FlowConfig,
    mut sink: FlowSink,
    c: &ThreadCounters,
    stop: &AtomicBool,
    idle_exit: Option<Duration>,
    on_tick: &mut dyn FnMut(),
) -> (DecodeStats, FlowStats) {
    let mut dec = Decoder::new();
    let mut table = FlowTable::new(cfg);
    // A busy-polling source: the periodic work runs every 1024 bursts, and
    // the clock is read every 1024 empty polls.
    let ctl = LoopControl {
        stop: Some(stop),
        idle_exit,
        tick: Some(TICK),
        every: 1024,
        idle_every: 1024,
        ..LoopControl::default()
    };
    {
        let mut ts = TableSink::new(&mut table, |f: FinishedFlow| sink.push(f));
        let _ = crate::rx::run(src, &mut dec, &mut ts, ctl, &mut |d, s| {
            c.publish_table(s.table, s.table.len());
            publish_decode(c, d);
            on_tick();
        });
    }
    shut_down(&mut table, &mut sink, c, &dec.stats);
    (dec.stats, table.stats.clone())
}

/// DPDK capture settings (feature `dpdk`).
#[derive(Debug, Clone)]
pub struct DpdkConfig {
    /// EAL arguments, e.g. `--no-huge -m 512 --no-shconf --no-pci -l 0 --vdev net_pcap0,rx_pcap=F`.
    pub eal_args: Vec<String>,
    /// Port id.
    pub port: u16,
    /// Rx queues, one lcore each.
    pub queues: u16,
    /// Mbufs in the pool.
    pub mbufs: u32,
    /// Flow table settings (per queue).
    pub flow: FlowConfig,
    /// Stop when no packet arrived for this long (after the first).
    pub idle_exit: Option<Duration>,
}

/// Capture from DPDK rx queues, one lcore per queue, each running to
/// completion (decode and flow tracking on the lcore). Set-up errors carry
/// DPDK's own message.
#[cfg(feature = "dpdk")]
pub fn run_dpdk(
    cfg: DpdkConfig,
    stop: Arc<AtomicBool>,
    mut sink_for: impl FnMut() -> FlowSink,
    counters: &[Arc<ThreadCounters>],
    port_counters: &Arc<crate::metrics::DpdkPortCounters>,
) -> Result<LiveResult, CaptureError> {
    use crate::capture::dpdk::DpdkSource;
    let setup = |e: dpdk_shim::DpdkError| CaptureError::Setup(format!("DPDK: {e}"));
    let eal = dpdk_shim::Eal::init(&cfg.eal_args).map_err(setup)?;
    let workers = eal.worker_lcores();
    if (workers.len() + 1) < cfg.queues as usize {
        return Err(CaptureError::Setup(format!(
            "DPDK: {} rx queues need {} lcores, the EAL has {} (give more with -l, e.g. -l 0-{})",
            cfg.queues,
            cfg.queues,
            workers.len() + 1,
            cfg.queues - 1
        )));
    }
    let pool = dpdk_shim::Mempool::new(&eal, "wirefold_rx", cfg.mbufs, 2048 + 128).map_err(setup)?;
    let port = dpdk_shim::Port::start(&eal, cfg.port, cfg.queues, 1024, &pool).map_err(setup)?;
    let (tx, rx) = crossbeam::channel::unbounded();
    let mut launched = Vec::new();
    // Queues 1.. on worker lcores; queue 0 on this (the main) lcore.
    for q in 1..cfg.queues {
        let mut src = DpdkSource::new(port.rx_queue(q));
        let (sink, c, stop, tx, flow, idle) =
            (sink_for(), counters[q as usize].clone(), stop.clone(), tx.clone(), cfg.flow, cfg.idle_exit);
        launched.push(
            eal.launch(workers[q as usize - 1], move || {
                let r = run_source_to_completion(&mut src, flow, sink, &c, &stop, idle, &mut || {});
                let _ = tx.send(r);
            })
            .map_err(setup)?,
        );
    }
    let mut src0 = DpdkSource::new(port.rx_queue(0));
    port_counters.port.store(cfg.port as u64, Relaxed);
    let publish_port = || {
        if let Ok(st) = port.stats() {
            port_counters.publish(st.ipackets, st.imissed, st.ierrors, st.rx_nombuf);
        }
    };
    // The main lcore also reads the port's counters for /metrics (every 1024 bursts or idle tick).
    let mut tick = publish_port;
    let r0 = run_source_to_completion(&mut src0, cfg.flow, sink_for(), &counters[0], &stop, cfg.idle_exit, &mut tick);
    // Queue 0 finished (stop or idle): make sure the others stop too.
    stop.store(true, Relaxed);
    for l in launched {
        l.wait();
    }
    drop(tx);
    let mut res = LiveResult::default();
    for (d, f) in std::iter::once(r0).chain(rx.iter()) {
        res.decode.merge(&d);
        merge_flow_stats(&mut res.flows, &f);
    }
    let st = port.stats().map_err(setup)?;
    port_counters.publish(st.ipackets, st.imissed, st.ierrors, st.rx_nombuf);
    res.live.interface = format!("dpdk port {}", cfg.port);
    res.live.threads = cfg.queues as usize;
    res.live.dpdk = Some(DpdkCounters {
        port: cfg.port,
        queues: cfg.queues,
        rss: port.rss(),
        ipackets: st.ipackets,
        imissed: st.imissed,
        ierrors: st.ierrors,
        rx_nombuf: st.rx_nombuf,
        queue_ipackets: st.queue_ipackets,
    });
    drop(port);
    drop(pool);
    drop(eal);
    Ok(res)
}
