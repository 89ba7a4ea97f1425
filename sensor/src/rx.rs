//! The one packet loop. Every front end runs it — pcap replay, AF_PACKET in
//! both modes, DPDK — in the shape of Retina's rx loop:
//!
//! ```text
//! source.next_batch ──► decode ──► sink.packet        (flow table, or ring to a flow worker)
//!        │
//!        └─► sink.batch_end                           (drain finished flows / hand the ring batch over)
//!        └─► every N batches, or on an idle poll:     publish counters, wall-clock tick, stop checks
//! end of input / stop ──► the caller drains the sink
//! ```
//!
//! The loop reads the wall clock only when the source is idle (or every N
//! busy batches), never per packet, and allocates nothing.
use crate::capture::{CaptureError, PacketSource};
use crate::flow::{FinishedFlow, FlowTable};
use crate::ring::Producer;
use crate::wire::{DecodeStats, Decoder, PacketMeta};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in nanoseconds since the Unix epoch (0 if the clock is
/// before it). The one wall-clock helper of the sensor.
pub fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Where decoded packets go.
pub trait MetaSink {
    /// One decoded packet.
    fn packet(&mut self, m: &PacketMeta, frame: &[u8]);
    /// The end of a source batch: hand on what is ready.
    fn batch_end(&mut self);
    /// A wall-clock tick while the source is idle (expire idle flows).
    fn tick(&mut self, now_ns: u64);
}

/// A flow table whose finished flows go to `out` after every batch; the
/// first output error is kept (the caller stops on it).
#[derive(Debug)]
pub struct TableSink<'t, F> {
    /// The table.
    pub table: &'t mut FlowTable,
    /// Where finished flows go.
    pub out: F,
    /// The first output error.
    pub error: Option<std::io::Error>,
}

impl<'t, F: FnMut(FinishedFlow) -> std::io::Result<()>> TableSink<'t, F> {
    /// A sink over `table`.
    pub fn new(table: &'t mut FlowTable, out: F) -> Self {
        Self { table, out, error: None }
    }

    /// Hand every finished flow to `out`.
    pub fn drain(&mut self) {
        for f in self.table.drain_finished() {
            if self.error.is_none() {
                if let Err(e) = (self.out)(f) {
                    self.error = Some(e);
                }
            }
        }
    }
}

impl<F: FnMut(FinishedFlow) -> std::io::Result<()>> MetaSink for TableSink<'_, F> {
    #[inline]
    fn packet(&mut self, m: &PacketMeta, frame: &[u8]) {
        self.table.add(m, Decoder::payload(frame, m));
    }
    fn batch_end(&mut self) {
        self.drain();
    }
    fn tick(&mut self, now_ns: u64) {
        self.table.advance(now_ns);
        self.drain();
    }
}

/// The capture side of a ring to a flow worker.
#[derive(Debug)]
pub struct RingSink<'a>(pub Producer<'a>);

impl MetaSink for RingSink<'_> {
    #[inline]
    fn packet(&mut self, m: &PacketMeta, _frame: &[u8]) {
        self.0.push(*m);
    }
    fn batch_end(&mut self) {
        self.0.flush();
    }
    fn tick(&mut self, _now_ns: u64) {}
}

/// How a loop runs and ends.
#[derive(Debug, Clone, Copy)]
pub struct LoopControl<'a> {
    /// Stop when set.
    pub stop: Option<&'a AtomicBool>,
    /// After the stop flag: pause this long, then take passes until one is
    /// empty (AF_PACKET retires its blocks within the retire timeout).
    pub drain_pass: Option<Duration>,
    /// End when no packet came for this long after the first.
    pub idle_exit: Option<Duration>,
    /// Wall-clock tick interval while idle (live sources); `None`: packet time only (files).
    pub tick: Option<Duration>,
    /// Run the periodic work (publish, stop checks) every this many busy batches.
    pub every: u64,
    /// Look at the clock on every this many idle polls (1 for blocking
    /// sources, more for busy-polling ones such as DPDK).
    pub idle_every: u32,
}

impl Default for LoopControl<'_> {
    fn default() -> Self {
        LoopControl { stop: None, drain_pass: None, idle_exit: None, tick: None, every: 1, idle_every: 1 }
    }
}

/// Why a loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    /// The source has no more packets.
    Eof,
    /// The stop flag was set.
    Stopped,
    /// No packet for the idle-exit time.
    Idle,
}

/// Run the packet loop: decode every packet of `src` into `sink` until the
/// source ends, the stop flag is set or it idles out. `periodic` runs every
/// `ctl.every` busy batches and on every idle clock look, with the decoder's
/// counters (publish them, read kernel or port counters). A source error
/// ends the loop with what was read still counted.
pub fn run<S: MetaSink + ?Sized>(
    src: &mut dyn PacketSource,
    dec: &mut Decoder,
    sink: &mut S,
    ctl: LoopControl<'_>,
    periodic: &mut dyn FnMut(&DecodeStats, &mut S),
) -> Result<LoopEnd, CaptureError> {
    let mut meta = PacketMeta::default();
    let (mut busy, mut idle_polls) = (0u64, 0u32);
    let mut last_tick = 0u64;
    let mut last_packet_wall = 0u64;
    let mut seen = 0u64;
    let mut stopping = false;
    let stop_set = || ctl.stop.is_some_and(|s| s.load(Relaxed));
    loop {
        let before = dec.stats.packets;
        let r = src.next_batch(&mut |p| {
            if dec.decode(p.link, p.data, p.wire_len, p.ts_ns, &mut meta) {
                sink.packet(&meta, p.data);
            }
        });
        let got = dec.stats.packets != before;
        sink.batch_end();
        match r {
            Ok(true) => {}
            Ok(false) => {
                periodic(&dec.stats, sink);
                return Ok(LoopEnd::Eof);
            }
            Err(e) => {
                periodic(&dec.stats, sink);
                return Err(e);
            }
        }
        if got {
            idle_polls = 0;
            busy += 1;
            if busy % ctl.every.max(1) != 0 {
                continue;
            }
            periodic(&dec.stats, sink);
        } else {
            idle_polls += 1;
            if idle_polls % ctl.idle_every.max(1) != 0 {
                continue;
            }
            let now = if ctl.tick.is_some() || ctl.idle_exit.is_some() { wall_ns() } else { 0 };
            if dec.stats.packets != seen {
                seen = dec.stats.packets;
                last_packet_wall = now;
            }
            match ctl.tick {
                Some(t) if now.saturating_sub(last_tick) >= t.as_nanos() as u64 => {
                    last_tick = now;
                    sink.tick(now);
                    periodic(&dec.stats, sink);
                }
                Some(_) => {}
                None => periodic(&dec.stats, sink),
            }
            if let Some(d) = ctl.idle_exit {
                if seen > 0 && now.saturating_sub(last_packet_wall) >= d.as_nanos() as u64 {
                    return Ok(LoopEnd::Idle);
                }
            }
        }
        if stopping && !got {
            return Ok(LoopEnd::Stopped);
        }
        if stop_set() {
            match ctl.drain_pass {
                None => return Ok(LoopEnd::Stopped),
                Some(d) if !stopping => {
                    stopping = true;
                    std::thread::sleep(d);
                }
                Some(_) => {}
            }
        }
    }
}
