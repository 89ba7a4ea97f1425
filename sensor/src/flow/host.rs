//! Host context: what each address has been doing lately, for the features
//! that no single flow shows (a scan's fan-out, a flood's fan-in).
//!
//! Two direct-mapped arrays of [`HOST_SLOTS`] entries, one for initiators
//! and one for responders, indexed by a hash of the address. Each entry keeps
//! [`BUCKETS`] buckets of [`BUCKET_NS`] packet time (a sliding window of
//! [`WINDOW_NS`], 60 s): per bucket the flows started (or received) and two
//! 64-bit linear-counting bitmaps (peers and ports), from which distinct
//! counts over the window are estimated. Addresses that hash to the same
//! entry share it. Updated once per new flow; no allocation after
//! construction; time is packet time.

/// Entries per array.
pub const HOST_SLOTS: usize = 1 << 16;
/// Bucket length (10 s of packet time).
pub const BUCKET_NS: u64 = 10_000_000_000;
/// Buckets per entry: a snapshot covers the current bucket and the five before it.
pub const BUCKETS: usize = 6;
/// The window a snapshot covers: the last 60 s of packet time, to the bucket
/// (between 50 and 60 s of history, depending on where in its bucket "now" falls).
pub const WINDOW_NS: u64 = BUCKET_NS * BUCKETS as u64;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The newest bucket written (packet time / BUCKET_NS); bucket `b` lives at index `b % BUCKETS`.
    bucket: u64,
    flows: [u32; BUCKETS],
    peers: [u64; BUCKETS],
    ports: [u64; BUCKETS],
}

impl Entry {
    /// Move the entry to bucket `b`, clearing the buckets it skips over.
    fn roll(&mut self, b: u64) {
        if b <= self.bucket {
            return;
        }
        let gap = (b - self.bucket).min(BUCKETS as u64);
        for k in 0..gap {
            let i = ((b - k) % BUCKETS as u64) as usize;
            self.flows[i] = 0;
            self.peers[i] = 0;
            self.ports[i] = 0;
        }
        self.bucket = b;
    }

    /// (flows, distinct peers, distinct ports) over the window ending in bucket `b`.
    fn view(&self, b: u64) -> (u32, u16, u16) {
        let (mut flows, mut peers, mut ports) = (0u32, 0u64, 0u64);
        // The entry holds buckets bucket-5 ..= bucket; the window is b-5 ..= b.
        let span = BUCKETS as u64 - 1;
        let oldest = b.saturating_sub(span).max(self.bucket.saturating_sub(span));
        for k in oldest..=self.bucket.min(b) {
            let i = (k % BUCKETS as u64) as usize;
            flows = flows.saturating_add(self.flows[i]);
            peers |= self.peers[i];
            ports |= self.ports[i];
        }
        (flows, distinct(peers), distinct(ports))
    }
}

/// Linear-counting estimate of distinct values from a 64-bit bitmap.
fn distinct(bits: u64) -> u16 {
    let set = bits.count_ones();
    if set == 0 {
        return 0;
    }
    let zeros = 64 - set;
    // With every bit set the estimate is unbounded: report the largest finite one (63 set).
    let z = zeros.max(1) as f64 / 64.0;
    (-64.0 * z.ln()).round().clamp(1.0, u16::MAX as f64) as u16
}

fn mix(x: u64) -> u64 {
    // splitmix64's finaliser.
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn addr_hash(a: &[u8; 16]) -> u64 {
    let lo = u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let hi = u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    mix(lo ^ mix(hi))
}

/// A host-context snapshot for one flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostSnap {
    /// Flows the initiator started (the last [`WINDOW_NS`] of packet time).
    pub src_flows: u32,
    /// Distinct responders of those flows (estimate).
    pub src_peers: u16,
    /// Distinct responder ports of those flows (estimate).
    pub src_ports: u16,
    /// Flows the responder received.
    pub dst_flows: u32,
    /// Distinct initiators of those (estimate).
    pub dst_peers: u16,
}

impl HostSnap {
    /// The larger of each field.
    pub fn max(self, o: HostSnap) -> HostSnap {
        HostSnap {
            src_flows: self.src_flows.max(o.src_flows),
            src_peers: self.src_peers.max(o.src_peers),
            src_ports: self.src_ports.max(o.src_ports),
            dst_flows: self.dst_flows.max(o.dst_flows),
            dst_peers: self.dst_peers.max(o.dst_peers),
        }
    }
}

/// The two arrays.
pub struct HostContext {
    src: Box<[Entry]>,
    dst: Box<[Entry]>,
}

impl std::fmt::Debug for HostContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostContext").finish_non_exhaustive()
    }
}

impl Default for HostContext {
    fn default() -> Self {
        Self::new()
    }
}

impl HostContext {
    /// Bytes of memory taken.
    pub const BYTES: usize = 2 * HOST_SLOTS * std::mem::size_of::<Entry>();

    /// Empty arrays.
    pub fn new() -> Self {
        HostContext {
            src: vec![Entry::default(); HOST_SLOTS].into_boxed_slice(),
            dst: vec![Entry::default(); HOST_SLOTS].into_boxed_slice(),
        }
    }

    /// Count a new flow from `src` to `dst:dport` at `now_ns`; the snapshot after it.
    pub fn new_flow(&mut self, src: &[u8; 16], dst: &[u8; 16], dport: u16, now_ns: u64) -> HostSnap {
        let b = now_ns / BUCKET_NS;
        let i = (b % BUCKETS as u64) as usize;
        let (hs, hd) = (addr_hash(src), addr_hash(dst));
        let bit = |h: u64| 1u64 << (h >> 58);
        let s = &mut self.src[(hs as usize) & (HOST_SLOTS - 1)];
        s.roll(b);
        if b + BUCKETS as u64 > s.bucket {
            // (A flow older than the whole window, out of order, is not counted.)
            s.flows[i] = s.flows[i].saturating_add(1);
            s.peers[i] |= bit(hd);
            s.ports[i] |= bit(mix(u64::from(dport)));
        }
        let d = &mut self.dst[(hd as usize) & (HOST_SLOTS - 1)];
        d.roll(b);
        if b + BUCKETS as u64 > d.bucket {
            d.flows[i] = d.flows[i].saturating_add(1);
            d.peers[i] |= bit(hs);
        }
        self.snap(src, dst, now_ns)
    }

    /// The context of a flow between `src` and `dst` as of `now_ns`.
    pub fn snap(&self, src: &[u8; 16], dst: &[u8; 16], now_ns: u64) -> HostSnap {
        let b = now_ns / BUCKET_NS;
        let (sf, sp, so) = self.src[(addr_hash(src) as usize) & (HOST_SLOTS - 1)].view(b);
        let (df, dp, _) = self.dst[(addr_hash(dst) as usize) & (HOST_SLOTS - 1)].view(b);
        HostSnap { src_flows: sf, src_peers: sp, src_ports: so, dst_flows: df, dst_peers: dp }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(x: u8) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[10, 0, 0, x]);
        b
    }

    #[test]
    fn a_scan_shows_fan_out_and_a_window_later_it_fades() {
        let mut h = HostContext::new();
        let t0 = 100 * BUCKET_NS;
        let mut last = HostSnap::default();
        for port in 1..=40u16 {
            last = h.new_flow(&a(66), &a(10), port, t0 + port as u64 * 1000);
        }
        assert_eq!(last.src_flows, 40);
        assert!((25..=60).contains(&last.src_ports), "distinct ports ~40: {}", last.src_ports);
        assert_eq!(last.src_peers, 1);
        assert_eq!(last.dst_flows, 40);
        assert_eq!(last.dst_peers, 1);
        // Five buckets on (50 s) the window still holds them; six on, nothing.
        assert_eq!(h.snap(&a(66), &a(10), t0 + 5 * BUCKET_NS).src_flows, 40);
        assert_eq!(h.snap(&a(66), &a(10), t0 + 6 * BUCKET_NS).src_flows, 0);
        // An unrelated host sees nothing (barring a shared entry).
        assert_eq!(h.snap(&a(7), &a(8), t0).src_flows, 0);
        assert_eq!(distinct(u64::MAX), 266);
        assert_eq!(distinct(0), 0);
    }

    #[test]
    fn a_slow_guesser_adds_up_over_the_minute_and_old_buckets_drop_out() {
        // One connection every 4 s to the same port: 15 in a minute.
        let mut h = HostContext::new();
        let t0 = 1_000 * BUCKET_NS + 3 * BUCKET_NS / 10;
        let mut seen = Vec::new();
        for k in 0..40u64 {
            seen.push(h.new_flow(&a(66), &a(10), 21, t0 + k * 4_000_000_000).src_flows);
        }
        // Growing for the first minute (to the bucket), then steady: 50-60 s of history is 13-16 flows.
        assert_eq!(&seen[..5], &[1, 2, 3, 4, 5]);
        for (k, &n) in seen.iter().enumerate().skip(16) {
            assert!((13..=16).contains(&n), "flow {k}: {n} in the window");
        }
        assert_eq!(h.snap(&a(66), &a(10), t0 + 39 * 4_000_000_000).src_ports, 1);
        // A late (out-of-order) flow within the window counts; one older than the window does not.
        let now = t0 + 39 * 4_000_000_000;
        let before = h.snap(&a(66), &a(10), now).src_flows;
        h.new_flow(&a(66), &a(10), 21, now - 2 * BUCKET_NS);
        h.new_flow(&a(66), &a(10), 21, now - 7 * BUCKET_NS);
        assert_eq!(h.snap(&a(66), &a(10), now).src_flows, before + 1);
        // A bucket skipped entirely is cleared, not carried over.
        let later = now + 3 * BUCKET_NS;
        let n = h.new_flow(&a(66), &a(10), 21, later).src_flows;
        assert!(n < before, "{n} after a 30 s gap vs {before}");
    }
}
