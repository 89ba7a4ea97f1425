//! The gate engine: per-sensor state and the decision of every flow.
//!
//! Two chains per sensor: the *actual* chain runs the enforcing gates and
//! decides; when any gate is in shadow mode a *shadow* chain runs the
//! enforcing and shadow gates together (as if the shadow gates enforced),
//! with its own copy of the stateful gates' state (reservoir, burst
//! baselines, budget), and records which shadow gate would have held each
//! flow. So a gate in shadow records exactly the decisions it would act on
//! in enforce mode, and the flows promoted are those off mode promotes.
use super::codec::{CodecError, Dec, Enc};
use super::config::{BudgetGate, BurstGate, GatesConfig, OnDrift};
use super::drift::{DriftAlert, DriftMonitor, DriftReference, DriftValues};
use super::{Decision, Gate, GateSet, Mode, Reason};
use std::collections::{BTreeMap, BTreeSet};
use wirefold_schema::{FlowRec, EMBEDDING_DIM};

type Emb = [i8; EMBEDDING_DIM];

/// A reservoir slot to persist (in the batch's transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservoirWrite {
    /// 0 = actual chain, 1 = shadow chain.
    pub chain: u8,
    /// Slot in the ring.
    pub slot: u32,
    /// The embedding stored there.
    pub embedding: Emb,
}

/// What the engine decided for one batch.
#[derive(Debug, Clone, Default)]
pub struct BatchDecisions {
    /// The batch time used (ns).
    pub time_ns: u64,
    /// One per flow, in order.
    pub decisions: Vec<Decision>,
    /// Drift alerts raised by the window this batch closed.
    pub alerts: Vec<DriftAlert>,
    /// Reservoir slots written.
    pub reservoir: Vec<ReservoirWrite>,
    /// Chains whose stored reservoir must be replaced wholesale (deleted,
    /// then rewritten from `reservoir`): after a resize, a shadow chain
    /// created or dropped.
    pub replace_chains: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Reservoir {
    cap: u32,
    items: Vec<Emb>,
    groups: Vec<[i16; 4]>,
    index: BTreeSet<(i32, u32)>,
    next: u32,
}

fn groups(e: &Emb) -> [i16; 4] {
    let mut g = [0i16; 4];
    for (i, c) in e.chunks(8).enumerate() {
        g[i] = c.iter().map(|&v| v as i16).sum();
    }
    g
}

#[inline]
fn l1(a: &Emb, b: &Emb) -> u32 {
    a.iter().zip(b).map(|(&x, &y)| (x as i16 - y as i16).unsigned_abs() as u32).sum()
}

impl Reservoir {
    fn new(cap: u32) -> Self {
        Reservoir { cap, items: Vec::new(), groups: Vec::new(), index: BTreeSet::new(), next: 0 }
    }

    /// The first stored embedding closer than `min` (L1), with its distance.
    /// L1 is at least the sum over 4 groups of 8 dimensions of the
    /// difference of group sums, and at least the difference of the total
    /// sums: the index by total sum narrows the scan, the group bound
    /// rejects most candidates before the full distance.
    fn near(&self, e: &Emb, min: u32) -> Option<u32> {
        let g = groups(e);
        let s: i32 = g.iter().map(|&x| x as i32).sum();
        let r = min as i32 - 1;
        for &(_, slot) in self.index.range((s - r, 0)..=(s + r, u32::MAX)) {
            let h = &self.groups[slot as usize];
            let bound: u32 = (0..4).map(|i| (g[i] as i32 - h[i] as i32).unsigned_abs()).sum();
            if bound >= min {
                continue;
            }
            let d = l1(e, &self.items[slot as usize]);
            if d < min {
                return Some(d);
            }
        }
        None
    }

    fn insert(&mut self, e: &Emb) -> u32 {
        let g = groups(e);
        let s: i32 = g.iter().map(|&x| x as i32).sum();
        let slot = if (self.items.len() as u32) < self.cap {
            self.items.push(*e);
            self.groups.push(g);
            self.items.len() as u32 - 1
        } else {
            let slot = self.next;
            let old: i32 = self.groups[slot as usize].iter().map(|&x| x as i32).sum();
            self.index.remove(&(old, slot));
            self.items[slot as usize] = *e;
            self.groups[slot as usize] = g;
            slot
        };
        self.index.insert((s, slot));
        self.next = (slot + 1) % self.cap;
        slot
    }

    /// Oldest to newest.
    fn ordered(&self) -> Vec<Emb> {
        if (self.items.len() as u32) < self.cap {
            self.items.clone()
        } else {
            let n = self.next as usize;
            self.items[n..].iter().chain(&self.items[..n]).copied().collect()
        }
    }

    fn from_items(cap: u32, ordered: &[Emb]) -> Self {
        let mut r = Reservoir::new(cap);
        let skip = ordered.len().saturating_sub(cap as usize);
        for e in &ordered[skip..] {
            r.insert(e);
        }
        r
    }
}

#[derive(Debug, Clone, Copy)]
struct Class {
    window: u64,
    count: u32,
    mean: f64,
    var: f64,
}

/// Classes beyond the cap share this key.
const OVERFLOW: u32 = u32::MAX;
/// A class idle for this many windows is forgotten.
const IDLE_WINDOWS: u64 = 64;

#[derive(Debug, Clone, Default)]
struct Burst {
    classes: BTreeMap<u32, Class>,
    swept: u64,
}

impl Burst {
    fn check(&mut self, f: &FlowRec, t: u64, cfg: &BurstGate) -> Result<(), Reason> {
        let w = t / (cfg.window_secs * 1_000_000_000);
        if w > self.swept {
            self.swept = w;
            self.classes.retain(|_, c| c.window + IDLE_WINDOWS >= w);
        }
        let mut key = (f.proto as u32) << 16 | f.dst_port as u32;
        if !self.classes.contains_key(&key) && self.classes.len() >= cfg.classes as usize {
            key = OVERFLOW;
        }
        let c = self.classes.entry(key).or_insert(Class { window: w, count: 0, mean: 0.0, var: 0.0 });
        if c.window < w {
            let gap = w - c.window;
            let a = cfg.alpha;
            let mut fold = |x: f64| {
                let d = x - c.mean;
                c.mean += a * d;
                c.var = (1.0 - a) * (c.var + a * d * d);
            };
            fold(c.count as f64);
            for _ in 1..gap.min(IDLE_WINDOWS) {
                fold(0.0);
            }
            c.window = w;
            c.count = 0;
        }
        c.count = c.count.saturating_add(1);
        let baseline = (c.mean + cfg.k * c.var.sqrt()).floor().max(cfg.min_count as f64).min(u32::MAX as f64) as u32;
        if c.count <= baseline || (c.count - baseline - 1).is_multiple_of(cfg.keep_one_in) {
            Ok(())
        } else {
            Err(Reason::Burst { count: c.count, baseline, proto: f.proto, dst_port: f.dst_port })
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    tokens: f64,
    at_ns: u64,
    init: bool,
}

impl Budget {
    fn refill(&mut self, t: u64, cfg: &BudgetGate) {
        let cap = cfg.per_window as f64;
        if !self.init {
            *self = Budget { tokens: cap, at_ns: t, init: true };
        }
        if t > self.at_ns {
            let rate = cap / (cfg.window_secs as f64 * 1e9);
            self.tokens = (self.tokens + (t - self.at_ns) as f64 * rate).min(cap);
            self.at_ns = t;
        }
    }
    fn check(&mut self, t: u64, cfg: &BudgetGate) -> Result<(), Reason> {
        self.refill(t, cfg);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Reason::Budget { per_window: cfg.per_window })
        }
    }
}

#[derive(Debug, Clone)]
struct Chain {
    reservoir: Reservoir,
    burst: Burst,
    budget: Budget,
}

impl Chain {
    fn new(cfg: &GatesConfig) -> Self {
        Chain { reservoir: Reservoir::new(cfg.novelty.reservoir), burst: Burst::default(), budget: Budget::default() }
    }

    #[inline]
    fn run(&mut self, f: &FlowRec, t: u64, cfg: &GatesConfig, active: [bool; 4]) -> Option<(Gate, Reason)> {
        let threshold = cfg.score.threshold as f32;
        if active[0] && f.score < threshold {
            return Some((Gate::Score, Reason::Score { score: f.score, threshold }));
        }
        if active[1] {
            if let Some(distance) = self.reservoir.near(&f.embedding, cfg.novelty.min_distance) {
                return Some((Gate::Novelty, Reason::Novelty { distance, min: cfg.novelty.min_distance }));
            }
        }
        if active[2] {
            if let Err(r) = self.burst.check(f, t, &cfg.burst) {
                return Some((Gate::Burst, r));
            }
        }
        if active[3] {
            if let Err(r) = self.budget.check(t, &cfg.budget) {
                return Some((Gate::Budget, r));
            }
        }
        None
    }

    fn encode(&self, e: &mut Enc) {
        e.u32(self.reservoir.cap);
        e.u32(self.reservoir.items.len() as u32);
        e.u32(self.reservoir.next);
        e.u64(self.burst.swept);
        e.u64(self.burst.classes.len() as u64);
        for (k, c) in &self.burst.classes {
            e.u32(*k);
            e.u64(c.window);
            e.u32(c.count);
            e.f64(c.mean);
            e.f64(c.var);
        }
        e.bool(self.budget.init);
        e.f64(self.budget.tokens);
        e.u64(self.budget.at_ns);
    }

    fn decode(d: &mut Dec<'_>, items: Vec<Emb>) -> Result<Self, CodecError> {
        let cap = d.u32()?;
        let len = d.u32()?;
        let next = d.u32()?;
        if len as usize != items.len() || len > cap || cap == 0 || next >= cap {
            return Err(CodecError("reservoir rows do not match the snapshot"));
        }
        let mut r = Reservoir::new(cap);
        for e in &items {
            r.insert(e);
        }
        r.next = next;
        let swept = d.u64()?;
        let n = d.u64()?;
        let mut classes = BTreeMap::new();
        for _ in 0..n.min(1 << 20) {
            let k = d.u32()?;
            classes.insert(k, Class { window: d.u64()?, count: d.u32()?, mean: d.f64()?, var: d.f64()? });
        }
        let budget = Budget { init: d.bool()?, tokens: d.f64()?, at_ns: d.u64()? };
        Ok(Chain { reservoir: r, burst: Burst { classes, swept }, budget })
    }
}

#[derive(Debug, Clone)]
struct SensorGates {
    time_ns: u64,
    actual: Chain,
    shadow: Option<Chain>,
    drift: DriftMonitor,
    forced_shadow: bool,
}

/// One sensor's engine state, for metrics and `gates show`.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorStatus {
    /// The sensor.
    pub sensor: String,
    /// Its latest batch time (ns).
    pub time_ns: u64,
    /// Embeddings in its (actual) reservoir.
    pub reservoir_len: u32,
    /// The reservoir's capacity.
    pub reservoir_cap: u32,
    /// Promotions left in its budget bucket (at its latest batch time).
    pub budget_remaining: f64,
    /// Flow classes tracked by the burst gate.
    pub burst_classes: u32,
    /// The latest closed drift window.
    pub drift: Option<DriftValues>,
    /// Whether a drift reference exists yet (learned or loaded).
    pub drift_reference: bool,
    /// An unacknowledged drift alert.
    pub drift_alerted: bool,
    /// Its enforcing gates act as shadow (on_drift = shadow) until acknowledged.
    pub forced_shadow: bool,
}

/// The engine: configuration and per-sensor state. No I/O, no clock.
#[derive(Debug, Clone)]
pub struct GateEngine {
    cfg: GatesConfig,
    reference: Option<DriftReference>,
    sensors: BTreeMap<String, SensorGates>,
}

impl GateEngine {
    /// An engine with no sensor state.
    pub fn new(cfg: GatesConfig) -> Self {
        GateEngine { cfg, reference: None, sensors: BTreeMap::new() }
    }

    /// The configuration in force.
    pub fn config(&self) -> &GatesConfig {
        &self.cfg
    }

    /// Change the configuration (takes effect from the next batch; a
    /// changed reservoir size keeps the newest embeddings that fit).
    pub fn set_config(&mut self, cfg: GatesConfig) {
        self.cfg = cfg;
    }

    /// Use `r` as the drift reference of sensors whose state is created from now on.
    pub fn set_reference(&mut self, r: Option<DriftReference>) {
        self.reference = r;
    }

    /// Whether a sensor's state is in memory.
    pub fn is_loaded(&self, sensor: &str) -> bool {
        self.sensors.contains_key(sensor)
    }

    /// Drop a sensor's state from memory (after a failed transaction: it is
    /// loaded again from what was committed).
    pub fn forget(&mut self, sensor: &str) {
        self.sensors.remove(sensor);
    }

    /// Sensors with state in memory.
    pub fn sensors(&self) -> impl Iterator<Item = &str> {
        self.sensors.keys().map(|s| s.as_str())
    }

    /// Acknowledge a sensor's drift alert: gates forced to shadow enforce
    /// again and a learned reference is relearned. False if the sensor is unknown.
    pub fn acknowledge_drift(&mut self, sensor: &str) -> bool {
        match self.sensors.get_mut(sensor) {
            Some(s) => {
                s.drift.acknowledge();
                s.forced_shadow = false;
                true
            }
            None => false,
        }
    }

    /// Decide every flow of one batch of `sensor`, in order. The batch
    /// time is the largest `last_ns` of its flows, never earlier than the
    /// sensor's previous batch time.
    pub fn decide(&mut self, sensor: &str, flows: &[FlowRec]) -> BatchDecisions {
        let cfg = &self.cfg;
        if !self.sensors.contains_key(sensor) {
            self.sensors.insert(
                sensor.to_string(),
                SensorGates {
                    time_ns: 0,
                    actual: Chain::new(cfg),
                    shadow: None,
                    drift: DriftMonitor::new(self.reference.clone()),
                    forced_shadow: false,
                },
            );
        }
        let Some(st) = self.sensors.get_mut(sensor) else { return BatchDecisions::default() };
        let mut out = BatchDecisions::default();
        let t = flows.iter().map(|f| f.last_ns).max().unwrap_or(0).max(st.time_ns);
        st.time_ns = t;
        out.time_ns = t;
        if cfg.drift.mode != Mode::Off {
            if let Some(mut a) = st.drift.roll(sensor, t, &cfg.drift) {
                if cfg.drift.mode == Mode::Enforce && cfg.drift.on_drift == OnDrift::Shadow {
                    st.forced_shadow = true;
                    a.gates_to_shadow = true;
                }
                out.alerts.push(a);
            }
        }
        let modes: [Mode; 4] = Gate::DECIDING.map(|g| match cfg.mode(g) {
            Mode::Enforce if st.forced_shadow => Mode::Shadow,
            m => m,
        });
        let enforce = modes.map(|m| m == Mode::Enforce);
        let consult = modes.map(|m| m != Mode::Off);
        let any_shadow = modes.contains(&Mode::Shadow);
        // Resize reservoirs to the configured capacity.
        let cap = cfg.novelty.reservoir;
        for (i, ch) in [Some(&mut st.actual), st.shadow.as_mut()].into_iter().enumerate() {
            if let Some(ch) = ch {
                if ch.reservoir.cap != cap {
                    ch.reservoir = Reservoir::from_items(cap, &ch.reservoir.ordered());
                    out.replace_chains.push(i as u8);
                    for (slot, e) in ch.reservoir.items.iter().enumerate() {
                        out.reservoir.push(ReservoirWrite { chain: i as u8, slot: slot as u32, embedding: *e });
                    }
                }
            }
        }
        if any_shadow && st.shadow.is_none() {
            let ch = st.actual.clone();
            out.replace_chains.push(1);
            for (slot, e) in ch.reservoir.items.iter().enumerate() {
                out.reservoir.push(ReservoirWrite { chain: 1, slot: slot as u32, embedding: *e });
            }
            st.shadow = Some(ch);
        } else if !any_shadow && st.shadow.is_some() {
            st.shadow = None;
            out.replace_chains.push(1);
        }
        let drift_on = cfg.drift.mode != Mode::Off;
        out.decisions.reserve(flows.len());
        for f in flows {
            let held = st.actual.run(f, t, cfg, enforce);
            if held.is_none() {
                let slot = st.actual.reservoir.insert(&f.embedding);
                out.reservoir.push(ReservoirWrite { chain: 0, slot, embedding: f.embedding });
            }
            let mut d = Decision { held, shadow: GateSet::default(), shadow_reason: None };
            if let Some(sh) = st.shadow.as_mut() {
                match sh.run(f, t, cfg, consult) {
                    Some((g, r)) => {
                        if modes[g as usize] == Mode::Shadow {
                            d.shadow.insert(g);
                            d.shadow_reason = Some(r);
                        }
                    }
                    None => {
                        let slot = sh.reservoir.insert(&f.embedding);
                        out.reservoir.push(ReservoirWrite { chain: 1, slot, embedding: f.embedding });
                    }
                }
            }
            if drift_on {
                st.drift.observe(f, held.is_none());
            }
            out.decisions.push(d);
        }
        out
    }

    /// A sensor's state, without the reservoir's embeddings (they are
    /// persisted slot by slot from [`BatchDecisions::reservoir`]).
    pub fn snapshot(&self, sensor: &str) -> Option<Vec<u8>> {
        let s = self.sensors.get(sensor)?;
        let mut e = Enc::default();
        e.u64(1); // format version
        e.u64(s.time_ns);
        e.bool(s.forced_shadow);
        s.actual.encode(&mut e);
        e.bool(s.shadow.is_some());
        if let Some(c) = &s.shadow {
            c.encode(&mut e);
        }
        s.drift.encode(&mut e);
        Some(e.0)
    }

    /// Load a sensor's state from a snapshot and its reservoirs' slots
    /// (`(chain, slot, embedding)`, any order).
    pub fn load(&mut self, sensor: &str, snapshot: &[u8], slots: &[(u8, u32, Emb)]) -> Result<(), CodecError> {
        let mut d = Dec::new(snapshot);
        if d.u64()? != 1 {
            return Err(CodecError("unknown snapshot version"));
        }
        let items = |chain: u8| {
            let mut v: Vec<(u32, Emb)> =
                slots.iter().filter(|(c, _, _)| *c == chain).map(|(_, s, e)| (*s, *e)).collect();
            v.sort_by_key(|(s, _)| *s);
            if v.iter().enumerate().any(|(i, (s, _))| *s as usize != i) {
                return Err(CodecError("reservoir slots are not contiguous"));
            }
            Ok(v.into_iter().map(|(_, e)| e).collect::<Vec<_>>())
        };
        let time_ns = d.u64()?;
        let forced_shadow = d.bool()?;
        let actual = Chain::decode(&mut d, items(0)?)?;
        let shadow = if d.bool()? { Some(Chain::decode(&mut d, items(1)?)?) } else { None };
        let drift = DriftMonitor::decode(&mut d)?;
        d.done()?;
        self.sensors.insert(sensor.to_string(), SensorGates { time_ns, actual, shadow, drift, forced_shadow });
        Ok(())
    }

    /// Every sensor's state summary.
    pub fn status(&self) -> Vec<SensorStatus> {
        self.sensors
            .iter()
            .map(|(k, s)| {
                let mut b = s.actual.budget;
                b.refill(s.time_ns, &self.cfg.budget);
                SensorStatus {
                    sensor: k.clone(),
                    time_ns: s.time_ns,
                    reservoir_len: s.actual.reservoir.items.len() as u32,
                    reservoir_cap: s.actual.reservoir.cap,
                    budget_remaining: b.tokens,
                    burst_classes: s.actual.burst.classes.len() as u32,
                    drift: s.drift.last,
                    drift_reference: s.drift.has_reference(),
                    drift_alerted: s.drift.alerted,
                    forced_shadow: s.forced_shadow,
                }
            })
            .collect()
    }
}
