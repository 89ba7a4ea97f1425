//! The flow table: one per flow worker (shard), driven by packet time.
use super::host::{HostContext, HostSnap};
use super::{DirStats, EndReason, FlowKey, TcpState, TcpTracker};
use crate::wire::{tcp::flags, PacketMeta, TunnelKind};
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;
use wirefold_inspect::session::{FlowMeta, InspectConfig, Inspector, Payload};

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
    /// Seed of the flows' Community IDs (0, the spec's default, unless configured).
    pub community_id_seed: u16,
    /// Payload inspection (`None`: off, `--no-inspect`).
    pub inspect: Option<InspectConfig>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            idle_timeout_ns: Some(120 * NS),
            active_timeout_ns: Some(1800 * NS),
            max_flows: 1_000_000,
            close_linger_ns: 2 * NS,
            sweep_interval_ns: NS,
            community_id_seed: 0,
            inspect: Some(InspectConfig::default()),
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
    /// The outermost tunnel's VNI or TEID on the first packet.
    pub tunnel_id: u32,
    /// ICMP type of the first packet.
    pub icmp_type: u8,
    /// ICMP code of the first packet.
    pub icmp_code: u8,
    /// Packets in `splt_bytes` (at most [`SPLT`]).
    pub splt_n: u8,
    /// The connection's first packets: IP bytes, negative from the responder.
    pub splt_bytes: [i16; SPLT],
    /// Gap before each of them, as `ln(1 + ms) × 2048` (index 0 is 0).
    pub splt_gap: [u16; SPLT],
    /// Host context when the flow began (the export takes the larger of this and the context then).
    pub host: HostSnap,
}

/// Packets kept in a flow's first-packets sequence.
pub const SPLT: usize = 8;

/// Scale of [`Flow::splt_gap`]'s log code.
pub const GAP_SCALE: f32 = 2048.0;

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
            tunnel_id: m.tunnel_id,
            icmp_type: m.icmp_type,
            icmp_code: m.icmp_code,
            splt_n: 0,
            splt_bytes: [0; SPLT],
            splt_gap: [0; SPLT],
            host: HostSnap::default(),
        }
    }

    /// Gap before first-packet `i`, milliseconds.
    pub fn splt_gap_ms(&self, i: usize) -> f32 {
        self.splt_gap.get(i).map_or(0.0, |&c| (c as f32 / GAP_SCALE).exp_m1())
    }

    #[inline]
    fn add(&mut self, m: &PacketMeta, sender_lo: bool) {
        let forward = sender_lo == self.initiator_is_lo;
        if self.packets() == 0 {
            self.first_ns = m.ts_ns;
        }
        let n = self.splt_n as usize;
        if n < SPLT {
            let size = m.ip_len.min(i16::MAX as u32) as i16;
            self.splt_bytes[n] = if forward { size } else { -size };
            if n > 0 {
                let ms = m.ts_ns.saturating_sub(self.last_ns) as f32 / 1e6;
                self.splt_gap[n] = (ms.ln_1p() * GAP_SCALE).min(u16::MAX as f32) as u16;
            }
            self.splt_n += 1;
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
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedFlow {
    /// Its key.
    pub key: FlowKey,
    /// Its state at the end.
    pub flow: Flow,
    /// Why it ended.
    pub reason: EndReason,
    /// The Community ID seed of the table's configuration.
    pub community_id_seed: u16,
    /// What inspection learned (`None`: no payload, inspection off, or no slot was free).
    pub meta: Option<Box<FlowMeta>>,
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
    /// Flows evicted because the table was full (one least recently seen
    /// flow per new flow; each is also counted in `ended`).
    pub eviction_passes: u64,
    /// Most flows held at once.
    pub peak_flows: u64,
    /// Packets so far out of time order that their flow was placed in its
    /// expiry list approximately (more than [`REORDER_WALK`] places back).
    pub reorder_overflow: u64,
}

/// Never inspected yet.
const INSP_NONE: u32 = u32::MAX;
/// Inspection is over for this flow (decided, off, or no slot).
const INSP_DONE: u32 = u32::MAX - 1;

/// A slot's inspection state, beside the slab (the slab stays `Copy`).
#[derive(Debug, Default)]
struct Ext {
    /// An inspector slot, or [`INSP_NONE`] / [`INSP_DONE`].
    insp: u32,
    meta: Option<Box<FlowMeta>>,
}

/// How far back from the tail an out-of-order packet's flow is walked to
/// keep a time list sorted; beyond it the flow is placed there (counted).
pub const REORDER_WALK: usize = 64;

const NIL: u32 = u32::MAX;

/// Which time list a slot is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    /// Open flows, ordered by last packet time (idle expiry, eviction).
    Open = 0,
    /// Flows closed by FIN/RST, ordered by last packet time (linger).
    Closed = 1,
    /// Open flows with packets, ordered by first packet time (active timeout).
    Active = 2,
}

#[derive(Debug, Clone, Copy, Default)]
struct Links {
    prev: u32,
    next: u32,
}

/// One slot of the preallocated storage.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: FlowKey,
    flow: Flow,
    /// Links in the Open or Closed list (by `flow.closed`).
    time: Links,
    /// Links in the Active list (`in_active`).
    active: Links,
    in_active: bool,
}

#[derive(Debug, Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
}

/// A bidirectional flow table with timeouts and a hard cap.
///
/// Storage is a slab of slots preallocated to `max_flows` (plus an index of
/// 4-byte slot numbers, also preallocated), so the table never rehashes or
/// reallocates while running. Expiry needs no scan: open flows sit in a
/// list ordered by last packet time, closed flows in another, and open flows
/// with packets in a third ordered by first packet time; a sweep (every
/// `sweep_interval_ns` of packet time, as before) pops what is due from the
/// heads, O(1) per expired flow. Eviction takes the least recently seen flow
/// from the heads of the open and closed lists, O(1) per evicted flow.
pub struct FlowTable {
    slots: Vec<Slot>,
    ext: Vec<Ext>,
    inspector: Option<Inspector>,
    hosts: HostContext,
    free: Vec<u32>,
    index: HashTable<u32>,
    lists: [Ends; 3],
    cfg: FlowConfig,
    now_ns: u64,
    next_sweep_ns: u64,
    /// The reference time of a sweep that ran out of budget (it continues
    /// on the next call, as of that time).
    sweep_at: Option<u64>,
    finished: Vec<FinishedFlow>,
    /// Counters.
    pub stats: FlowStats,
}

/// Most flows one call expires; a sweep with more due continues on the next
/// packet (as of its own reference time), so no single packet pays for a
/// mass expiry (a flood's flows timing out together).
pub const SWEEP_BUDGET: usize = 64;

/// What a sweep at some time does to one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Remove it (closed after the linger, or idle).
    Remove,
    /// Export it and start a new record (active timeout).
    Restart,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable").field("flows", &self.len()).field("cfg", &self.cfg).finish()
    }
}

#[inline]
fn hash_key(k: &FlowKey) -> u64 {
    FxBuildHasher.hash_one(k)
}

/// Bytes of the index per slot: hashbrown keeps a load factor of at most
/// 7/8 and one control byte per bucket, and rounds buckets up to a power of two.
fn index_bytes(max_flows: usize) -> usize {
    let buckets = (max_flows.saturating_mul(8) / 7 + 1).next_power_of_two();
    buckets * (std::mem::size_of::<u32>() + 1)
}

impl FlowTable {
    /// Bytes a table for `max_flows` flows takes when full: slots, free list and index.
    pub fn memory_bytes(max_flows: usize) -> usize {
        max_flows * (std::mem::size_of::<Slot>() + std::mem::size_of::<Ext>() + std::mem::size_of::<u32>())
            + index_bytes(max_flows)
            + HostContext::BYTES
    }

    /// The inspector's counters (`None` when inspection is off).
    pub fn inspect_stats(&self) -> Option<&wirefold_inspect::session::InspectStats> {
        self.inspector.as_ref().map(|i| &i.stats)
    }

    /// Feed a payload packet of slot `i` to the inspector.
    #[inline]
    fn inspect(&mut self, i: u32, m: &PacketMeta, sender_lo: bool, payload: &[u8]) {
        let Some(ins) = self.inspector.as_mut() else { return };
        let e = &mut self.ext[i as usize];
        if e.insp == INSP_DONE || payload.is_empty() || !matches!(m.proto, 6 | 17) {
            return;
        }
        if e.insp == INSP_NONE {
            match ins.acquire() {
                Some(s) => {
                    e.insp = s;
                    e.meta = Some(Box::default());
                }
                None => {
                    e.insp = INSP_DONE;
                    return;
                }
            }
        }
        let f = &self.slots[i as usize].flow;
        let forward = sender_lo == f.initiator_is_lo;
        let (client_port, server_port) = if forward { (m.src_port, m.dst_port) } else { (m.dst_port, m.src_port) };
        let p = Payload { forward, proto: m.proto, client_port, server_port, tcp_seq: m.tcp_seq, data: payload };
        let meta = e.meta.as_deref_mut().expect("a slot comes with its record");
        if ins.packet(e.insp, meta, &p) {
            e.insp = INSP_DONE;
        }
    }

    /// Take slot `i`'s inspection record, returning its inspector slot to the pool.
    fn take_meta(&mut self, i: u32) -> Option<Box<FlowMeta>> {
        let e = &mut self.ext[i as usize];
        if e.insp != INSP_NONE && e.insp != INSP_DONE {
            if let (Some(ins), Some(meta)) = (self.inspector.as_mut(), e.meta.as_deref_mut()) {
                ins.finish(e.insp, meta);
            }
        }
        e.insp = INSP_NONE;
        e.meta.take()
    }

    /// Bytes per tracked flow when full.
    pub fn bytes_per_flow(max_flows: usize) -> f64 {
        Self::memory_bytes(max_flows.max(1)) as f64 / max_flows.max(1) as f64
    }

    /// An empty table with storage for `cfg.max_flows` flows, allocated now.
    pub fn new(cfg: FlowConfig) -> Self {
        let cap = cfg.max_flows.clamp(1, NIL as usize - 1);
        let cfg = FlowConfig { max_flows: cap, ..cfg };
        Self {
            slots: Vec::with_capacity(cap),
            ext: Vec::with_capacity(cap),
            inspector: cfg.inspect.map(Inspector::new),
            hosts: HostContext::new(),
            free: Vec::with_capacity(cap),
            index: HashTable::with_capacity(cap),
            lists: [Ends { head: NIL, tail: NIL }; 3],
            cfg,
            now_ns: 0,
            next_sweep_ns: 0,
            sweep_at: None,
            finished: Vec::with_capacity(1024),
            stats: FlowStats::default(),
        }
    }

    /// Flows currently held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The table's clock: the latest time seen.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    fn links(&mut self, i: u32, l: List) -> &mut Links {
        let s = &mut self.slots[i as usize];
        if l == List::Active {
            &mut s.active
        } else {
            &mut s.time
        }
    }

    fn unlink(&mut self, i: u32, l: List) {
        let Links { prev, next } = *self.links(i, l);
        if prev == NIL {
            self.lists[l as usize].head = next;
        } else {
            self.links(prev, l).next = next;
        }
        if next == NIL {
            self.lists[l as usize].tail = prev;
        } else {
            self.links(next, l).prev = prev;
        }
        *self.links(i, l) = Links { prev: NIL, next: NIL };
    }

    /// The time a list orders its slots by.
    fn order(&self, i: u32, l: List) -> u64 {
        let f = &self.slots[i as usize].flow;
        if l == List::Active {
            f.first_ns
        } else {
            f.last_ns
        }
    }

    /// Insert `i` keeping list `l` sorted: from the tail back past later
    /// slots (usually none: packet time moves forward).
    fn link_sorted(&mut self, i: u32, l: List) {
        let t = self.order(i, l);
        let mut after = self.lists[l as usize].tail;
        let mut steps = 0;
        while after != NIL && self.order(after, l) > t {
            if steps == REORDER_WALK {
                self.stats.reorder_overflow += 1;
                break;
            }
            after = self.links(after, l).prev;
            steps += 1;
        }
        let next = if after == NIL { self.lists[l as usize].head } else { self.links(after, l).next };
        *self.links(i, l) = Links { prev: after, next };
        if after == NIL {
            self.lists[l as usize].head = i;
        } else {
            self.links(after, l).next = i;
        }
        if next == NIL {
            self.lists[l as usize].tail = i;
        } else {
            self.links(next, l).prev = i;
        }
    }

    fn time_list(&self, i: u32) -> List {
        if self.slots[i as usize].flow.closed.is_some() {
            List::Closed
        } else {
            List::Open
        }
    }

    /// Re-place a slot after its times changed.
    #[inline]
    fn touch(&mut self, i: u32, was: List, was_active: bool) {
        let now_list = self.time_list(i);
        let at_tail = self.lists[was as usize].tail == i;
        if was != now_list || !at_tail {
            self.unlink(i, was);
            self.link_sorted(i, now_list);
        }
        let want_active = now_list == List::Open && self.slots[i as usize].flow.packets() > 0;
        match (was_active, want_active) {
            (false, true) => {
                self.slots[i as usize].in_active = true;
                self.link_sorted(i, List::Active);
            }
            (true, false) => {
                self.unlink(i, List::Active);
                self.slots[i as usize].in_active = false;
            }
            _ => {}
        }
    }

    fn find(&self, key: &FlowKey, h: u64) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(h, |&i| slots[i as usize].key == *key).copied()
    }

    /// Add one decoded packet; `payload` is its captured transport payload
    /// (empty when the front end does not carry it), read by inspection.
    #[inline]
    pub fn add(&mut self, m: &PacketMeta, payload: &[u8]) {
        self.advance(m.ts_ns);
        self.stats.packets += 1;
        self.stats.bytes += m.ip_len as u64;
        let (key, sender_lo) = FlowKey::from_meta(m);
        let h = hash_key(&key);
        let mut found = self.find(&key, h);
        if let (Some(i), Some(at)) = (found, self.sweep_at) {
            // An unfinished sweep would have handled this flow before this packet.
            match self.due(i, at) {
                Some(Due::Remove) => {
                    self.expire(i);
                    found = None;
                }
                Some(Due::Restart) => self.restart(i),
                None => {}
            }
        }
        if let Some(i) = found {
            let was = self.time_list(i);
            let was_active = self.slots[i as usize].in_active;
            let f = &mut self.slots[i as usize].flow;
            let reuse = f.closed.is_some() && m.proto == 6 && m.tcp_flags & (flags::SYN | flags::ACK) == flags::SYN;
            if reuse {
                // A new SYN on a closed connection: the port pair was reused.
                let old = *f;
                *f = Flow::new(m, sender_lo);
                f.add(m, sender_lo);
                self.stats.created += 1;
                let reason = old.closed.unwrap_or(EndReason::Fin);
                let meta = self.take_meta(i);
                self.emit(key, old, reason, meta);
                let (a, b, p) = self.endpoints(i);
                let now = self.now_ns;
                self.slots[i as usize].flow.host = self.hosts.new_flow(&a, &b, p, now);
            } else {
                f.add(m, sender_lo);
            }
            self.inspect(i, m, sender_lo, payload);
            self.touch(i, was, was_active);
            return;
        }
        if self.len() >= self.cfg.max_flows {
            self.evict();
        }
        let mut f = Flow::new(m, sender_lo);
        f.add(m, sender_lo);
        let slot = Slot {
            key,
            flow: f,
            time: Links { prev: NIL, next: NIL },
            active: Links { prev: NIL, next: NIL },
            in_active: false,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.ext.push(Ext { insp: INSP_NONE, meta: None });
                (self.slots.len() - 1) as u32
            }
        };
        let (a, b, p) = self.endpoints(i);
        let now = self.now_ns;
        self.slots[i as usize].flow.host = self.hosts.new_flow(&a, &b, p, now);
        self.inspect(i, m, sender_lo, payload);
        let slots = &self.slots;
        self.index.insert_unique(h, i, |&j| hash_key(&slots[j as usize].key));
        self.link_sorted(i, self.time_list(i));
        self.touch(i, self.time_list(i), false);
        self.stats.created += 1;
        self.stats.peak_flows = self.stats.peak_flows.max(self.len() as u64);
    }

    /// Move the clock to `now_ns` (if later) and expire what is due. Called
    /// per packet with packet time, and by a wall-clock tick when live
    /// traffic stops.
    #[inline]
    pub fn advance(&mut self, now_ns: u64) {
        if now_ns > self.now_ns {
            self.now_ns = now_ns;
        }
        if self.sweep_at.is_some() || self.now_ns >= self.next_sweep_ns {
            let at = self.sweep_at.unwrap_or(self.now_ns);
            self.sweep();
            if self.sweep_at.is_none() {
                self.next_sweep_ns = at.saturating_add(self.cfg.sweep_interval_ns);
            }
        }
    }

    /// Initiator address, responder address and responder port of slot `i`.
    fn endpoints(&self, i: u32) -> ([u8; 16], [u8; 16], u16) {
        let s = &self.slots[i as usize];
        let o = s.key.oriented(s.flow.initiator_is_lo);
        (o.src, o.dst, o.dport)
    }

    fn emit(&mut self, key: FlowKey, mut flow: Flow, reason: EndReason, meta: Option<Box<FlowMeta>>) {
        self.stats.ended[reason as usize] += 1;
        let o = key.oriented(flow.initiator_is_lo);
        flow.host = flow.host.max(self.hosts.snap(&o.src, &o.dst, self.now_ns));
        self.finished.push(FinishedFlow { key, flow, reason, community_id_seed: self.cfg.community_id_seed, meta });
    }

    /// Take slot `i` out of the table (every list, the index) and free it.
    fn remove(&mut self, i: u32) -> (FlowKey, Flow, Option<Box<FlowMeta>>) {
        let l = self.time_list(i);
        self.unlink(i, l);
        if self.slots[i as usize].in_active {
            self.unlink(i, List::Active);
            self.slots[i as usize].in_active = false;
        }
        let key = self.slots[i as usize].key;
        let h = hash_key(&key);
        if let Ok(e) = self.index.find_entry(h, |&j| j == i) {
            e.remove();
        }
        self.free.push(i);
        let meta = self.take_meta(i);
        (key, self.slots[i as usize].flow, meta)
    }

    /// What a sweep at time `at` does to slot `i`, if anything.
    fn due(&self, i: u32, at: u64) -> Option<Due> {
        let cfg = &self.cfg;
        let f = &self.slots[i as usize].flow;
        let idle = at.saturating_sub(f.last_ns);
        if f.closed.is_some() {
            let linger = cfg.idle_timeout_ns.map_or(cfg.close_linger_ns, |t| t.min(cfg.close_linger_ns));
            return (idle >= linger).then_some(Due::Remove);
        }
        if cfg.idle_timeout_ns.is_some_and(|t| idle >= t) {
            return Some(Due::Remove);
        }
        if f.packets() > 0 && cfg.active_timeout_ns.is_some_and(|t| at.saturating_sub(f.first_ns) >= t) {
            return Some(Due::Restart);
        }
        None
    }

    /// Remove slot `i` as expired, exporting it (closed: its reason; open: idle).
    fn expire(&mut self, i: u32) {
        let (key, f, meta) = self.remove(i);
        match f.closed {
            Some(reason) => self.emit(key, f, reason, meta),
            None if f.packets() > 0 => self.emit(key, f, EndReason::Idle, meta),
            None => {}
        }
    }

    /// Export slot `i` at its active timeout and continue it in a new record.
    fn restart(&mut self, i: u32) {
        let (key, f) = (self.slots[i as usize].key, self.slots[i as usize].flow);
        // The record continues: it keeps the inspection state; the export gets a copy.
        let meta = self.ext[i as usize].meta.clone();
        self.emit(key, f, EndReason::Active, meta);
        self.slots[i as usize].flow.restart();
        if self.slots[i as usize].in_active {
            self.unlink(i, List::Active);
            self.slots[i as usize].in_active = false;
        }
    }

    /// Expire what is due as of the sweep's reference time, at most
    /// [`SWEEP_BUDGET`] flows per call.
    fn sweep(&mut self) {
        let at = self.sweep_at.unwrap_or(self.now_ns);
        let start = self.finished.len();
        let mut budget = SWEEP_BUDGET;
        for l in [List::Closed, List::Open, List::Active] {
            while budget > 0 {
                let i = self.lists[l as usize].head;
                if i == NIL {
                    break;
                }
                match self.due(i, at) {
                    Some(Due::Remove) => self.expire(i),
                    Some(Due::Restart) if l == List::Active => self.restart(i),
                    _ => break,
                }
                budget -= 1;
            }
        }
        self.sweep_at = (budget == 0).then_some(at);
        sort_tail(&mut self.finished[start..]);
    }

    /// Evict the least recently seen flow (open or closed).
    fn evict(&mut self) {
        let (o, c) = (self.lists[List::Open as usize].head, self.lists[List::Closed as usize].head);
        let i = match (o, c) {
            (NIL, NIL) => return,
            (o, NIL) => o,
            (NIL, c) => c,
            (o, c) => {
                if self.slots[c as usize].flow.last_ns < self.slots[o as usize].flow.last_ns {
                    c
                } else {
                    o
                }
            }
        };
        if let Some(at) = self.sweep_at {
            // An unfinished sweep would have expired it: it is not an eviction.
            if self.due(i, at) == Some(Due::Remove) {
                self.expire(i);
                return;
            }
        }
        self.stats.eviction_passes += 1;
        let (key, f, meta) = self.remove(i);
        let reason = f.closed.unwrap_or(EndReason::Evicted);
        self.emit(key, f, reason, meta);
    }

    /// End every flow with `reason` (TCP flows already closed keep theirs).
    pub fn flush(&mut self, reason: EndReason) {
        self.sweep_at = None;
        let start = self.finished.len();
        for l in [List::Closed, List::Open] {
            while let Some(i) = Some(self.lists[l as usize].head).filter(|&i| i != NIL) {
                let (key, f, meta) = self.remove(i);
                if f.packets() == 0 {
                    continue;
                }
                let r = f.closed.unwrap_or(reason);
                self.emit(key, f, r, meta);
            }
        }
        self.slots.clear();
        self.ext.clear();
        self.free.clear();
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
        t.add(&pkt(0.0, 9, 4000, 1, 80, S, 60), &[]);
        t.add(&pkt(0.1, 1, 80, 9, 4000, S | A, 60), &[]);
        t.add(&pkt(0.2, 9, 4000, 1, 80, A, 52), &[]);
        t.add(&pkt(0.3, 9, 4000, 1, 80, F | A, 52), &[]);
        t.add(&pkt(0.4, 1, 80, 9, 4000, F | A, 52), &[]);
        t.add(&pkt(0.5, 9, 4000, 1, 80, A, 52), &[]); // last ACK, absorbed by the linger
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
        t.add(&pkt(0.0, 1, 1000, 2, 22, S, 60), &[]);
        t.add(&pkt(0.1, 2, 22, 1, 1000, R | A, 40), &[]);
        t.add(&pkt(0.5, 1, 1000, 2, 22, S, 60), &[]);
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
            t.add(&p, &[]);
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
            t.add(&pkt(i as f64 * 0.001, 1, 1000 + i, 2, 80, S, 60), &[]);
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
        t.add(&pkt(0.0, 1, 80, 9, 4000, S | A, 60), &[]);
        t.flush(EndReason::Eof);
        let out = drain(&mut t);
        assert!(!out[0].flow.initiator_is_lo, "the SYN+ACK's receiver (10.0.0.9) initiated");
        assert_eq!((out[0].flow.fwd.packets, out[0].flow.rev.packets), (0, 1));
    }

    #[test]
    fn expiry_pops_due_flows_in_time_order_without_touching_the_rest() {
        let cfg = FlowConfig { idle_timeout_ns: Some(10 * NS), active_timeout_ns: None, ..Default::default() };
        let mut t = FlowTable::new(cfg);
        // Flows started at 0..5 s, one packet each; one of them (port 1002) is refreshed at 8 s.
        for i in 0..6u16 {
            let mut p = pkt(i as f64, 1, 1000 + i, 2, 53, 0, 80);
            p.proto = 17;
            t.add(&p, &[]);
        }
        let mut p = pkt(8.0, 1, 1002, 2, 53, 0, 80);
        p.proto = 17;
        t.add(&p, &[]);
        // At 13.5 s the flows last seen at 0..3 s are due (not 1002, seen at 8 s).
        t.advance(13 * NS + NS / 2);
        let out: Vec<u16> = drain(&mut t).iter().map(|f| f.key.lo_port.min(f.key.hi_port)).collect();
        assert_eq!(out, vec![53, 53, 53], "three flows expired");
        let ports: Vec<u16> = {
            t.flush(EndReason::Eof);
            drain(&mut t).iter().map(|f| f.key.lo_port.max(f.key.hi_port)).collect()
        };
        assert_eq!(ports.len(), 3);
        assert!(ports.contains(&1002) && ports.contains(&1004) && ports.contains(&1005), "{ports:?}");
    }

    #[test]
    fn eviction_takes_the_least_recently_seen_one_flow_at_a_time() {
        let cfg = FlowConfig { max_flows: 4, idle_timeout_ns: None, active_timeout_ns: None, ..Default::default() };
        let mut t = FlowTable::new(cfg);
        for i in 0..4u16 {
            t.add(&pkt(i as f64, 1, 1000 + i, 2, 80, S, 60), &[]);
        }
        // Touch the oldest: now 1001 is the least recently seen.
        t.add(&pkt(4.0, 1, 1000, 2, 80, A, 52), &[]);
        t.add(&pkt(5.0, 1, 2000, 2, 80, S, 60), &[]);
        let out = drain(&mut t);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key.lo_port.max(out[0].key.hi_port), 1001);
        assert_eq!(out[0].reason, EndReason::Evicted);
        t.add(&pkt(6.0, 1, 2001, 2, 80, S, 60), &[]);
        let out = drain(&mut t);
        assert_eq!(out[0].key.lo_port.max(out[0].key.hi_port), 1002);
        assert_eq!((t.len(), t.stats.eviction_passes), (4, 2));
    }

    #[test]
    fn out_of_order_packet_times_keep_the_lists_sorted() {
        let cfg = FlowConfig { idle_timeout_ns: Some(10 * NS), active_timeout_ns: None, ..Default::default() };
        let mut t = FlowTable::new(cfg);
        let mut p = pkt(5.0, 1, 1000, 2, 80, S, 60);
        t.add(&p, &[]);
        // A packet of another flow stamped earlier than the table's clock.
        p = pkt(1.0, 1, 1001, 2, 80, S, 60);
        t.add(&p, &[]);
        // At 11.5 s the flow last seen at 1 s is due, the one at 5 s is not.
        t.advance(11 * NS + NS / 2);
        let out = drain(&mut t);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key.lo_port.max(out[0].key.hi_port), 1001);
        assert_eq!(t.stats.reorder_overflow, 0);
    }

    #[test]
    fn storage_is_preallocated_and_its_size_is_known() {
        let cfg =
            FlowConfig { max_flows: 10_000, idle_timeout_ns: None, active_timeout_ns: None, ..Default::default() };
        let mut t = FlowTable::new(cfg);
        let (slots, index) = (t.slots.capacity(), t.index.capacity());
        for i in 0..30_000u32 {
            let mut p = pkt(i as f64 * 1e-6, 1, (i % 60_000) as u16, 2, 80, S, 60);
            p.src[2] = (i >> 16) as u8;
            t.add(&p, &[]);
        }
        assert_eq!((t.slots.capacity(), t.index.capacity()), (slots, index), "no reallocation while full");
        assert_eq!(t.len(), 10_000);
        assert_eq!(t.stats.eviction_passes, 20_000);
        let per = FlowTable::bytes_per_flow(1_000_000);
        eprintln!(
            "slot {} bytes (key {}, flow {}); {per:.1} bytes per flow at 1M",
            std::mem::size_of::<Slot>(),
            std::mem::size_of::<FlowKey>(),
            std::mem::size_of::<Flow>()
        );
        assert!(per > std::mem::size_of::<Slot>() as f64 && per < 1024.0, "{per}");
    }

    #[test]
    fn a_mass_expiry_is_spread_over_calls_and_stays_exact() {
        let cfg = FlowConfig { idle_timeout_ns: Some(10 * NS), active_timeout_ns: None, ..Default::default() };
        let mut t = FlowTable::new(cfg);
        let n = SWEEP_BUDGET * 3 + 5;
        for i in 0..n as u32 {
            let mut p = pkt(0.5, 1, (i % 60_000) as u16, 2, 53, 0, 80);
            p.proto = 17;
            p.src[2] = (i >> 16) as u8;
            t.add(&p, &[]);
        }
        drain(&mut t);
        // One call at 20 s expires at most a budget's worth.
        t.advance(20 * NS);
        assert_eq!(drain(&mut t).len(), SWEEP_BUDGET);
        // A packet of a flow the unfinished sweep has not reached yet: the
        // flow is expired first (as the sweep at 20 s would have), and the
        // packet starts a new one.
        let mut p = pkt(20.0, 1, (n - 1) as u16, 2, 53, 0, 80);
        p.proto = 17;
        p.src[2] = ((n - 1) >> 16) as u8;
        t.add(&p, &[]);
        let mut total = SWEEP_BUDGET + drain(&mut t).len();
        for _ in 0..4 {
            t.advance(20 * NS);
            total += drain(&mut t).len();
        }
        assert_eq!(total, n, "every old flow expired exactly once");
        assert_eq!(t.len(), 1, "the new flow remains");
        assert_eq!(t.stats.ended[EndReason::Idle as usize], n as u64);
    }
}
