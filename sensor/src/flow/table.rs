//! The flow table: one per flow worker (shard), driven by packet time.
use super::{DirStats, EndReason, FlowKey, TcpState, TcpTracker};
use crate::wire::{tcp::flags, PacketMeta, TunnelKind};
use rustc_hash::FxBuildHasher;
use std::collections::HashMap;

const NS: u64 = 1_000_000_000;

/// Flow table settings. Times are nanoseconds; `None` means never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// End a flow after this long without a packet.
    pub idle_timeout_ns: Option<u64>,
    /// Export a long flow after this long, and continue it in a new record.
    pub active_timeout_ns: Option<u64>,
    /// Hard cap on flows in the table; beyond it the least recently seen
    /// flows are evicted (and counted).
    pub max_flows: usize,
    /// How long a TCP flow closed by FIN or RST stays to absorb stray
    /// packets (the last ACK, retransmitted FINs) before it is exported.
    pub close_linger_ns: u64,
    /// How often (in packet time) the table is swept for expired flows.
    pub sweep_interval_ns: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            idle_timeout_ns: Some(120 * NS),
            active_timeout_ns: Some(1800 * NS),
            max_flows: 1_000_000,
            close_linger_ns: 2 * NS,
            sweep_interval_ns: NS,
        }
    }
}

/// State of one flow. "Forward" is the initiator's direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flow {
    /// Whether the initiator is the key's lower endpoint.
    pub initiator_is_lo: bool,
    /// First packet time.
    pub first_ns: u64,
    /// Last packet time.
    pub last_ns: u64,
    /// Initiator → responder.
    pub fwd: DirStats,
    /// Responder → initiator.
    pub rev: DirStats,
    /// TCP state and flags (TCP flows only).
    pub tcp: TcpTracker,
    /// Set when TCP closed the flow (FIN or RST); it leaves after the linger.
    pub closed: Option<EndReason>,
    /// The outermost tunnel of the first packet.
    pub tunnel: TunnelKind,
    /// Outer IP version.
    pub outer_version: u8,
    /// Outer source address of the first packet.
    pub outer_src: [u8; 16],
    /// Outer destination address of the first packet.
    pub outer_dst: [u8; 16],
    /// ICMP type of the first packet.
    pub icmp_type: u8,
    /// ICMP code of the first packet.
    pub icmp_code: u8,
}

impl Flow {
    fn new(m: &PacketMeta, sender_lo: bool) -> Self {
        // A SYN+ACK as first packet means we missed the SYN: the receiver
        // of this packet is the initiator.
        let synack = m.proto == 6 && m.tcp_flags & (flags::SYN | flags::ACK) == (flags::SYN | flags::ACK);
        Flow {
            initiator_is_lo: if synack { !sender_lo } else { sender_lo },
            first_ns: m.ts_ns,
            last_ns: m.ts_ns,
            fwd: DirStats::default(),
            rev: DirStats::default(),
            tcp: TcpTracker::default(),
            closed: None,
            tunnel: m.tunnel,
            outer_version: m.outer_version,
            outer_src: m.outer_src,
            outer_dst: m.outer_dst,
            icmp_type: m.icmp_type,
            icmp_code: m.icmp_code,
        }
    }

    #[inline]
    fn add(&mut self, m: &PacketMeta, sender_lo: bool) {
        let forward = sender_lo == self.initiator_is_lo;
        if self.packets() == 0 {
            self.first_ns = m.ts_ns;
        }
        self.last_ns = self.last_ns.max(m.ts_ns);
        if forward {
            self.fwd.add(m.ts_ns, m.ip_len, m.payload_len);
        } else {
            self.rev.add(m.ts_ns, m.ip_len, m.payload_len);
        }
        if m.proto == 6 && self.tcp.update(m.tcp_flags, forward) {
            self.closed = Some(if self.tcp.state == TcpState::Reset { EndReason::Rst } else { EndReason::Fin });
        }
    }

    /// Packets both ways.
    pub fn packets(&self) -> u64 {
        self.fwd.packets + self.rev.packets
    }

    /// Start a new record for the same connection (after an active timeout).
    fn restart(&mut self) {
        self.fwd = DirStats::default();
        self.rev = DirStats::default();
        self.tcp = self.tcp.restarted();
    }
}

/// A flow that has ended, ready for export.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinishedFlow {
    /// Its key.
    pub key: FlowKey,
    /// Its state at the end.
    pub flow: Flow,
    /// Why it ended.
    pub reason: EndReason,
}

/// Flow-table counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packets added to flows.
    pub packets: u64,
    /// IP bytes added to flows.
    pub bytes: u64,
    /// Flows created.
    pub created: u64,
    /// Flow records exported, by [`EndReason`].
    pub ended: [u64; EndReason::COUNT],
    /// Eviction passes run because the table was full.
    pub eviction_passes: u64,
    /// Most flows held at once.
    pub peak_flows: u64,
}

/// A bidirectional flow table with timeouts and a hard cap.
pub struct FlowTable {
    map: HashMap<FlowKey, Flow, FxBuildHasher>,
    cfg: FlowConfig,
    now_ns: u64,
    next_sweep_ns: u64,
    finished: Vec<FinishedFlow>,
    scratch: Vec<u64>,
    /// Counters.
    pub stats: FlowStats,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable").field("flows", &self.map.len()).field("cfg", &self.cfg).finish()
    }
}

impl FlowTable {
    /// An empty table.
    pub fn new(cfg: FlowConfig) -> Self {
        // Start small: the sweep walks the whole allocation, and the map grows
        // (amortised, off the common path) as flows arrive.
        let cap = cfg.max_flows.min(1024);
        Self {
            map: HashMap::with_capacity_and_hasher(cap, FxBuildHasher),
            cfg,
            now_ns: 0,
            next_sweep_ns: 0,
            finished: Vec::with_capacity(1024),
            scratch: Vec::new(),
            stats: FlowStats::default(),
        }
    }

    /// Flows currently held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The table's clock: the latest time seen.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Add one decoded packet.
    #[inline]
    pub fn add(&mut self, m: &PacketMeta) {
        self.advance(m.ts_ns);
        self.stats.packets += 1;
        self.stats.bytes += m.ip_len as u64;
        let (key, sender_lo) = FlowKey::from_meta(m);
        if let Some(f) = self.map.get_mut(&key) {
            let reuse = f.closed.is_some() && m.proto == 6 && m.tcp_flags & (flags::SYN | flags::ACK) == flags::SYN;
            if !reuse {
                f.add(m, sender_lo);
                return;
            }
            // A new SYN on a closed connection: the port pair was reused.
            let old = *f;
            *f = Flow::new(m, sender_lo);
            f.add(m, sender_lo);
            self.stats.created += 1;
            let reason = old.closed.unwrap_or(EndReason::Fin);
            self.emit(key, old, reason);
            return;
        }
        if self.map.len() >= self.cfg.max_flows {
            self.evict();
        }
        let mut f = Flow::new(m, sender_lo);
        f.add(m, sender_lo);
        self.map.insert(key, f);
        self.stats.created += 1;
        self.stats.peak_flows = self.stats.peak_flows.max(self.map.len() as u64);
    }

    /// Move the clock to `now_ns` (if later) and expire what is due. Called
    /// per packet with packet time, and by a wall-clock tick when live
    /// traffic stops.
    #[inline]
    pub fn advance(&mut self, now_ns: u64) {
        if now_ns > self.now_ns {
            self.now_ns = now_ns;
        }
        if self.now_ns >= self.next_sweep_ns {
            self.sweep();
            self.next_sweep_ns = self.now_ns.saturating_add(self.cfg.sweep_interval_ns);
        }
    }

    fn emit(&mut self, key: FlowKey, flow: Flow, reason: EndReason) {
        self.stats.ended[reason as usize] += 1;
        self.finished.push(FinishedFlow { key, flow, reason });
    }

    fn sweep(&mut self) {
        let now = self.now_ns;
        let cfg = self.cfg;
        let start = self.finished.len();
        let finished = &mut self.finished;
        let ended = &mut self.stats.ended;
        let mut push = |key: FlowKey, flow: Flow, reason: EndReason| {
            ended[reason as usize] += 1;
            finished.push(FinishedFlow { key, flow, reason });
        };
        self.map.retain(|key, f| {
            let idle = now.saturating_sub(f.last_ns);
            if let Some(reason) = f.closed {
                if idle >= cfg.close_linger_ns || cfg.idle_timeout_ns.is_some_and(|t| idle >= t) {
                    push(*key, *f, reason);
                    return false;
                }
                return true;
            }
            if let Some(t) = cfg.idle_timeout_ns {
                if idle >= t {
                    if f.packets() > 0 {
                        push(*key, *f, EndReason::Idle);
                    }
                    return false;
                }
            }
            if let Some(t) = cfg.active_timeout_ns {
                if f.packets() > 0 && now.saturating_sub(f.first_ns) >= t {
                    push(*key, *f, EndReason::Active);
                    f.restart();
                }
            }
            true
        });
        sort_tail(&mut self.finished[start..]);
    }

    fn evict(&mut self) {
        self.stats.eviction_passes += 1;
        // Evict the least recently seen sixteenth (at least one flow).
        self.scratch.clear();
        self.scratch.extend(self.map.values().map(|f| f.last_ns));
        let k = (self.scratch.len() / 16).max(1) - 1;
        let (_, threshold, _) = self.scratch.select_nth_unstable(k);
        let threshold = *threshold;
        let start = self.finished.len();
        let finished = &mut self.finished;
        let ended = &mut self.stats.ended;
        let mut budget = k + 1;
        self.map.retain(|key, f| {
            if budget > 0 && f.last_ns <= threshold {
                budget -= 1;
                let reason = f.closed.unwrap_or(EndReason::Evicted);
                ended[reason as usize] += 1;
                finished.push(FinishedFlow { key: *key, flow: *f, reason });
                return false;
            }
            true
        });
        sort_tail(&mut self.finished[start..]);
    }

    /// End every flow with `reason` (TCP flows already closed keep theirs).
    pub fn flush(&mut self, reason: EndReason) {
        let start = self.finished.len();
        let finished = &mut self.finished;
        let ended = &mut self.stats.ended;
        for (key, f) in self.map.drain() {
            if f.packets() == 0 {
                continue;
            }
            let r = f.closed.unwrap_or(reason);
            ended[r as usize] += 1;
            finished.push(FinishedFlow { key, flow: f, reason: r });
        }
        sort_tail(&mut self.finished[start..]);
    }

    /// Take the flows that have ended since the last call.
    pub fn drain_finished(&mut self) -> std::vec::Drain<'_, FinishedFlow> {
        self.finished.drain(..)
    }
}

/// Order a batch of finished flows by start time then key, so the output
/// does not depend on hash-table layout.
fn sort_tail(v: &mut [FinishedFlow]) {
    v.sort_unstable_by_key(|f| (f.flow.first_ns, f.key));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ts_s: f64, a: u8, ap: u16, b: u8, bp: u16, fl: u8, len: u32) -> PacketMeta {
        let mut m = PacketMeta {
            ts_ns: (ts_s * 1e9) as u64,
            proto: 6,
            ip_version: 4,
            src_port: ap,
            dst_port: bp,
            tcp_flags: fl,
            ip_len: len,
            ..Default::default()
        };
        m.src[..4].copy_from_slice(&[10, 0, 0, a]);
        m.dst[..4].copy_from_slice(&[10, 0, 0, b]);
        m
    }

    fn drain(t: &mut FlowTable) -> Vec<FinishedFlow> {
        t.drain_finished().collect()
    }

    const S: u8 = flags::SYN;
    const A: u8 = flags::ACK;
    const F: u8 = flags::FIN;
    const R: u8 = flags::RST;

    #[test]
    fn handshake_fin_close_and_linger() {
        let mut t = FlowTable::new(FlowConfig::default());
        t.add(&pkt(0.0, 9, 4000, 1, 80, S, 60));
        t.add(&pkt(0.1, 1, 80, 9, 4000, S | A, 60));
        t.add(&pkt(0.2, 9, 4000, 1, 80, A, 52));
        t.add(&pkt(0.3, 9, 4000, 1, 80, F | A, 52));
        t.add(&pkt(0.4, 1, 80, 9, 4000, F | A, 52));
        t.add(&pkt(0.5, 9, 4000, 1, 80, A, 52)); // last ACK, absorbed by the linger
        assert!(drain(&mut t).is_empty());
        t.advance(3_000_000_000);
        let out = drain(&mut t);
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(f.reason, EndReason::Fin);
        assert!(!f.flow.initiator_is_lo, "10.0.0.9 initiated");
        assert_eq!((f.flow.fwd.packets, f.flow.rev.packets), (4, 2));
        assert_eq!((f.flow.fwd.bytes, f.flow.rev.bytes), (216, 112));
        assert_eq!(f.flow.tcp.state, TcpState::Closed);
        assert_eq!(t.stats.ended[EndReason::Fin as usize], 1);
    }

    #[test]
    fn port_reuse_after_rst_starts_a_new_flow() {
        let mut t = FlowTable::new(FlowConfig::default());
        t.add(&pkt(0.0, 1, 1000, 2, 22, S, 60));
        t.add(&pkt(0.1, 2, 22, 1, 1000, R | A, 40));
        t.add(&pkt(0.5, 1, 1000, 2, 22, S, 60));
        let out = drain(&mut t);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].reason, EndReason::Rst);
        assert_eq!(out[0].flow.packets(), 2);
        t.flush(EndReason::Eof);
        let out = drain(&mut t);
        assert_eq!((out.len(), out[0].reason, out[0].flow.packets()), (1, EndReason::Eof, 1));
    }

    #[test]
    fn idle_and_active_timeouts() {
        let cfg = FlowConfig { idle_timeout_ns: Some(10 * NS), active_timeout_ns: Some(30 * NS), ..Default::default() };
        let mut t = FlowTable::new(cfg);
        // A UDP-like flow (no flags) with a packet every 5 s for 40 s.
        for i in 0..=8 {
            let mut p = pkt(i as f64 * 5.0, 1, 53, 2, 5353, 0, 100);
            p.proto = 17;
            t.add(&p);
        }
        let out = drain(&mut t);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].reason, EndReason::Active);
        assert_eq!(out[0].flow.packets(), 6, "packets at 0..25 s; the sweep at 30 s runs before that packet");
        // Silence: the rest expires as idle.
        t.advance(60 * NS);
        let out = drain(&mut t);
        assert_eq!((out.len(), out[0].reason, out[0].flow.packets()), (1, EndReason::Idle, 3));
        assert!(t.is_empty());
    }

    #[test]
    fn the_cap_evicts_least_recent_and_counts() {
        let cfg = FlowConfig { max_flows: 32, idle_timeout_ns: None, active_timeout_ns: None, ..Default::default() };
        let mut t = FlowTable::new(cfg);
        for i in 0..40u16 {
            t.add(&pkt(i as f64 * 0.001, 1, 1000 + i, 2, 80, S, 60));
        }
        assert!(t.len() <= 32);
        let out = drain(&mut t);
        assert_eq!(out.len(), 40 - t.len());
        assert!(out.iter().all(|f| f.reason == EndReason::Evicted));
        // The oldest go first.
        assert_eq!(out[0].key.lo_port.min(out[0].key.hi_port), 80);
        assert!(out.iter().all(|f| f.flow.first_ns < 20_000_000));
        assert_eq!(t.stats.ended[EndReason::Evicted as usize], out.len() as u64);
        assert!(t.stats.eviction_passes >= 1);
    }

    #[test]
    fn synack_first_flips_the_initiator() {
        let mut t = FlowTable::new(FlowConfig::default());
        t.add(&pkt(0.0, 1, 80, 9, 4000, S | A, 60));
        t.flush(EndReason::Eof);
        let out = drain(&mut t);
        assert!(!out[0].flow.initiator_is_lo, "the SYN+ACK's receiver (10.0.0.9) initiated");
        assert_eq!((out[0].flow.fwd.packets, out[0].flow.rev.packets), (0, 1));
    }
}
