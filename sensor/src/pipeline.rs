//! The offline pipeline: packet sources → decoder → flow table → a sink of
//! finished flows, with the counters the summary prints.
use crate::capture::{CaptureError, PacketSource, RawPacket};
use crate::flow::{EndReason, FinishedFlow, FlowConfig, FlowStats, FlowTable};
use crate::metrics::ThreadCounters;
use crate::rx::{LoopControl, TableSink};
use crate::wire::{DecodeStats, Decoder, Malformed, Skipped};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Decoder and flow table fed packet by packet (run to completion on one thread).
#[derive(Debug)]
pub struct Pipeline {
    /// The decoder and its counters.
    pub decoder: Decoder,
    /// The flow table and its counters.
    pub table: FlowTable,
    /// Counters published after every batch (for `/metrics`).
    pub counters: Option<Arc<ThreadCounters>>,
    /// Bytes of the current source consumed, published after every batch (for progress).
    pub position: Option<Arc<AtomicU64>>,
    /// Pace packets by their timestamps, this many times faster than recorded.
    pub speed: Option<f64>,
    /// Set to stop reading early (the caller flushes).
    pub stop: Option<Arc<AtomicBool>>,
    pace: Option<(u64, Instant)>,
}

impl Pipeline {
    /// A pipeline with the given flow settings.
    pub fn new(cfg: FlowConfig) -> Self {
        Self {
            decoder: Decoder::new(),
            table: FlowTable::new(cfg),
            counters: None,
            position: None,
            speed: None,
            stop: None,
            pace: None,
        }
    }

    /// Whether the stop flag is set.
    pub fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Relaxed))
    }

    /// Read `src` to its end through the packet loop ([`crate::rx`]),
    /// handing finished flows to `sink` after every batch. On a source
    /// error, what was read stays counted and in the table.
    pub fn run(
        &mut self,
        src: &mut dyn PacketSource,
        sink: &mut dyn FnMut(FinishedFlow) -> std::io::Result<()>,
    ) -> Result<(), RunError> {
        let Pipeline { decoder, table, counters, position, speed, stop, pace, .. } = self;
        let mut paced;
        let src: &mut dyn PacketSource = match *speed {
            Some(speed) => {
                paced = Paced { inner: src, speed, stop: stop.as_deref(), pace, next_check: 0 };
                &mut paced
            }
            None => src,
        };
        let ctl = LoopControl { stop: stop.as_deref(), ..LoopControl::default() };
        let mut ts = TableSink::new(table, sink);
        let counters = counters.as_deref();
        let position = position.as_deref();
        let mut publish = |d: &DecodeStats, s: &mut FlowSinkOf<'_, '_>| {
            if let Some(c) = counters {
                c.packets.store(d.packets, Relaxed);
                c.bytes.store(d.bytes, Relaxed);
                c.publish_decode(d);
                c.publish_table(s.table, s.table.len());
            }
        };
        // The position is the source's: published by the pacing-free wrapper below.
        let r = {
            let mut positioned = Positioned { inner: src, position };
            crate::rx::run(&mut positioned, decoder, &mut ts, ctl, &mut publish)
        };
        if let Some(e) = ts.error.take() {
            return Err(RunError::Output(e));
        }
        r.map(|_| ()).map_err(RunError::Capture)
    }

    /// End every flow with `reason` and hand them to `sink`.
    pub fn finish(
        &mut self,
        reason: EndReason,
        sink: &mut dyn FnMut(FinishedFlow) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.table.flush(reason);
        self.drain(sink)?;
        if let Some(c) = &self.counters {
            c.publish_table(&self.table, 0);
        }
        Ok(())
    }

    fn drain(&mut self, sink: &mut dyn FnMut(FinishedFlow) -> std::io::Result<()>) -> std::io::Result<()> {
        // (The packet loop drains after every batch; this is for `finish`.)
        for f in self.table.drain_finished() {
            sink(f)?;
        }
        Ok(())
    }
}

/// The replay's sink: a table and the caller's flow consumer.
type FlowSinkOf<'t, 'f> = TableSink<'t, &'f mut dyn FnMut(FinishedFlow) -> std::io::Result<()>>;

/// A source paced by its timestamps, `speed` times faster than recorded;
/// the clock is read once per millisecond of packet time at most.
struct Paced<'a, 'p> {
    inner: &'a mut dyn PacketSource,
    speed: f64,
    stop: Option<&'a AtomicBool>,
    pace: &'p mut Option<(u64, Instant)>,
    next_check: u64,
}

impl PacketSource for Paced<'_, '_> {
    fn next_batch(&mut self, sink: &mut dyn FnMut(&RawPacket<'_>)) -> Result<bool, CaptureError> {
        let (speed, stop, pace, next_check) = (self.speed, self.stop, &mut *self.pace, &mut self.next_check);
        self.inner.next_batch(&mut |p| {
            if p.ts_ns >= *next_check {
                let (t0, w0) = *pace.get_or_insert((p.ts_ns, Instant::now()));
                let target = Duration::from_secs_f64(p.ts_ns.saturating_sub(t0) as f64 / 1e9 / speed);
                while w0.elapsed() < target && !stop.is_some_and(|s| s.load(Relaxed)) {
                    std::thread::sleep((target - w0.elapsed()).min(Duration::from_millis(100)));
                }
                *next_check = p.ts_ns + (1e6 * speed) as u64;
            }
            sink(p)
        })
    }
    fn position(&self) -> Option<u64> {
        self.inner.position()
    }
}

/// A source that publishes how far it has read after every batch (for the progress bar).
struct Positioned<'a, 'b> {
    inner: &'a mut dyn PacketSource,
    position: Option<&'b AtomicU64>,
}

impl PacketSource for Positioned<'_, '_> {
    fn next_batch(&mut self, sink: &mut dyn FnMut(&RawPacket<'_>)) -> Result<bool, CaptureError> {
        let r = self.inner.next_batch(sink);
        if let (Some(p), Some(at)) = (self.position, self.inner.position()) {
            p.store(at, Relaxed);
        }
        r
    }
    fn position(&self) -> Option<u64> {
        self.inner.position()
    }
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The packet source failed (the message names the file and offset).
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Writing flows failed.
    #[error("writing flows: {0}")]
    Output(#[from] std::io::Error),
}

/// What a run did, for people (stderr) and programs (`--summary-json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Input files read (fully or in part).
    pub files: u64,
    /// Packets read.
    pub packets: u64,
    /// Captured bytes read.
    pub bytes: u64,
    /// Packets that made flows.
    pub flow_packets: u64,
    /// IP bytes in flows.
    pub flow_bytes: u64,
    /// Flow records exported, by end reason.
    pub flows: BTreeMap<&'static str, u64>,
    /// Total flow records exported.
    pub flows_total: u64,
    /// Malformed packets by reason (reasons with a zero count are left out).
    pub malformed: BTreeMap<&'static str, u64>,
    /// Total malformed packets.
    pub malformed_total: u64,
    /// Packets skipped (not IP, unsupported link type), by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Later IP fragments whose first fragment was never seen.
    pub fragments_unmatched: u64,
    /// Times the flow table was full and evicted flows.
    pub eviction_passes: u64,
    /// Most flows held at once.
    pub peak_flows: u64,
    /// Input errors (file and byte offset).
    pub errors: Vec<String>,
    /// Flows embedded by the model (0 with --no-embed).
    pub embedded: u64,
    /// FlowBatches written, and their bytes (without length prefixes).
    pub batches: u64,
    /// Bytes of FlowBatch buffers.
    pub batch_bytes: u64,
    /// Streaming to a core (with --core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::output::StreamReport>,
    /// Live-capture counters (capture runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<crate::live::LiveCounters>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Packets per second.
    pub packets_per_second: f64,
}

impl Summary {
    /// Build from counters.
    pub fn new(files: u64, d: &DecodeStats, f: &FlowStats, errors: Vec<String>, seconds: f64) -> Self {
        let flows: BTreeMap<_, _> = EndReason::ALL.iter().map(|r| (r.name(), f.ended[*r as usize])).collect();
        let malformed = Malformed::ALL
            .iter()
            .filter(|m| d.malformed[**m as usize] > 0)
            .map(|m| (m.name(), d.malformed[*m as usize]))
            .collect();
        let skipped = Skipped::ALL
            .iter()
            .filter(|s| d.skipped[**s as usize] > 0)
            .map(|s| (s.name(), d.skipped[*s as usize]))
            .collect();
        Summary {
            files,
            packets: d.packets,
            bytes: d.bytes,
            flow_packets: f.packets,
            flow_bytes: f.bytes,
            flows_total: f.ended.iter().sum(),
            flows,
            malformed_total: d.malformed_total(),
            malformed,
            skipped,
            fragments_unmatched: d.frag_unmatched,
            eviction_passes: f.eviction_passes,
            peak_flows: f.peak_flows,
            errors,
            embedded: 0,
            batches: 0,
            batch_bytes: 0,
            stream: None,
            live: None,
            seconds,
            packets_per_second: if seconds > 0.0 { d.packets as f64 / seconds } else { 0.0 },
        }
    }

    /// The human-readable form printed to stderr.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "wirefold summary");
        let _ = writeln!(s, "  files        {}", self.files);
        let _ = writeln!(s, "  packets      {} ({} bytes captured)", self.packets, self.bytes);
        let _ = writeln!(s, "  in flows     {} packets, {} IP bytes", self.flow_packets, self.flow_bytes);
        let by: Vec<String> = self.flows.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "  flows        {} ({})",
            self.flows_total,
            if by.is_empty() { "none".into() } else { by.join(", ") }
        );
        let mal: Vec<String> = self.malformed.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "  malformed    {}{}",
            self.malformed_total,
            if mal.is_empty() { String::new() } else { format!(" ({})", mal.join(", ")) }
        );
        let sk: Vec<String> = self.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "  skipped      {}", if sk.is_empty() { "0".into() } else { sk.join(", ") });
        let _ = writeln!(s, "  fragments    {} later fragments without a first", self.fragments_unmatched);
        let _ = writeln!(s, "  flow table   peak {} flows, {} eviction passes", self.peak_flows, self.eviction_passes);
        if self.embedded > 0 || self.batches > 0 {
            let _ = writeln!(
                s,
                "  export       {} flows embedded, {} FlowBatches ({} bytes)",
                self.embedded, self.batches, self.batch_bytes
            );
        }
        if let Some(st) = &self.stream {
            let _ = writeln!(
                s,
                "  core         sent {} batches, {} acked, {} resent, {} rejected, {} reconnects, spool dropped {}, left in spool {}",
                st.sent, st.acked, st.resent, st.rejected, st.reconnects, st.spool_dropped, st.spool_batches
            );
            if let Some(e) = &st.error {
                let _ = writeln!(s, "  core error   {e}");
            }
        }
        if let Some(d) = self.live.as_ref().and_then(|l| l.dpdk.as_ref()) {
            let _ = writeln!(
                s,
                "  dpdk         port {} ({} queues, rss {}): ipackets {}, imissed {}, ierrors {}, rx_nombuf {}",
                d.port,
                d.queues,
                if d.rss { "on" } else { "off" },
                d.ipackets,
                d.imissed,
                d.ierrors,
                d.rx_nombuf
            );
        }
        if let Some(l) = self.live.as_ref().filter(|l| l.dpdk.is_none()) {
            let _ = writeln!(
                s,
                "  capture      {} ({} threads, fanout group {}): kernel saw {}, kernel drops {}, freezes {}, ring drops {}",
                l.interface, l.threads, l.fanout_id, l.kernel_packets, l.kernel_drops, l.kernel_freezes, l.ring_drops
            );
        }
        for e in &self.errors {
            let _ = writeln!(s, "  error        {e}");
        }
        let _ = writeln!(s, "  time         {:.3} s, {:.0} packets/s", self.seconds, self.packets_per_second);
        s
    }
}
