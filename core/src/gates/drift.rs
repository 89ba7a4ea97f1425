//! The drift monitor (advisory): per sensor, windows of batch time with a
//! histogram of every embedding dimension (32 levels of 8 int8 quanta), a
//! histogram of the score (log2 bins) and the promoted destinations (256
//! hashed buckets). A closed window is compared with the reference
//! distribution (population-stability index per dimension over up to 10
//! quantile bins of the reference) and with the previous window; the
//! destinations give the top share and the Herfindahl index.
use super::codec::{CodecError, Dec, Enc};
use super::config::DriftGate;
use serde::{Deserialize, Serialize};
use wirefold_schema::FlowRec;

/// Embedding dimensions.
pub const DIMS: usize = wirefold_schema::EMBEDDING_DIM;
/// Histogram levels per dimension (int8 value + 128, divided by 8).
pub const LEVELS: usize = 32;
/// Score histogram bins: bin 0 below 2^-7, then one per power of two up to 2^16.
pub const SCORE_BINS: usize = 24;
/// Hashed destination buckets per window.
pub const DEST_BUCKETS: usize = 256;
/// Quantile bins of the reference used for the PSI.
pub const PSI_BINS: usize = 10;

/// The reference distribution: per-dimension level counts and score bin
/// counts. Learned from the first windows, or loaded from JSON
/// ([`DriftReference::from_json`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    /// `DIMS` rows of `LEVELS` counts.
    pub dims: Vec<Vec<u32>>,
    /// `SCORE_BINS` counts.
    pub score: Vec<u32>,
}

impl DriftReference {
    /// Read `{"dims": [[u32; 32]; 32], "score": [u32; 24]}`, or a model card
    /// that carries one as `reference_distribution.drift` (train.py writes it
    /// into `wirefold-det-v2.card.json`).
    pub fn from_json(s: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("drift reference: {e}"))?;
        let v = match v.pointer("/reference_distribution/drift") {
            Some(d) => d.clone(),
            None if v.get("model_id").is_some() => {
                return Err("drift reference: this model card has no reference_distribution.drift".into())
            }
            None => v,
        };
        let r: DriftReference = serde_json::from_value(v).map_err(|e| format!("drift reference: {e}"))?;
        if r.dims.len() != DIMS || r.dims.iter().any(|d| d.len() != LEVELS) || r.score.len() != SCORE_BINS {
            return Err(format!("drift reference: want {DIMS} dims of {LEVELS} levels and {SCORE_BINS} score bins"));
        }
        if r.dims.iter().any(|d| d.iter().all(|&c| c == 0)) {
            return Err("drift reference: a dimension has no counts".into());
        }
        Ok(r)
    }
    /// Write it as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    fn from_flat(h: &[u32], s: &[u32]) -> Self {
        DriftReference { dims: h.chunks(LEVELS).map(|c| c.to_vec()).collect(), score: s.to_vec() }
    }
    /// Level → quantile bin, per dimension.
    fn bin_map(&self) -> Vec<[u8; LEVELS]> {
        self.dims
            .iter()
            .map(|d| {
                let total: u64 = d.iter().map(|&c| c as u64).sum();
                let mut m = [0u8; LEVELS];
                let (mut cum, mut bin) = (0u64, 0usize);
                for (l, &c) in d.iter().enumerate() {
                    m[l] = bin as u8;
                    cum += c as u64;
                    while bin + 1 < PSI_BINS && total > 0 && cum * PSI_BINS as u64 >= (bin as u64 + 1) * total {
                        bin += 1;
                    }
                }
                m
            })
            .collect()
    }
}

/// Statistics of one closed window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DriftValues {
    /// Window start (batch time, ns).
    pub window_start_ns: u64,
    /// Flows in the window.
    pub flows: u32,
    /// Promotions in the window.
    pub promoted: u32,
    /// Largest PSI of a dimension against the reference.
    pub psi_ref_max: f64,
    /// Mean PSI over dimensions against the reference.
    pub psi_ref_mean: f64,
    /// The dimension with the largest PSI.
    pub worst_dim: u32,
    /// Largest PSI of a dimension against the previous window (0 without one).
    pub psi_prev_max: f64,
    /// PSI of the score against the reference.
    pub score_psi: f64,
    /// Share of the window's promotions going to its most common destination bucket.
    pub top_share: f64,
    /// Herfindahl index of promoted destinations (sum of squared shares).
    pub hhi: f64,
}

/// A drift alert: returned by the engine for the caller to count and ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftAlert {
    /// The sensor.
    pub sensor: String,
    /// The window's statistics.
    pub values: DriftValues,
    /// What crossed its limit ("psi" and/or "concentration").
    pub cause: &'static str,
    /// The sensor's enforcing gates now act as shadow until acknowledged.
    pub gates_to_shadow: bool,
}

const NONE: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub(crate) struct DriftMonitor {
    window: u64,
    flows: u32,
    promoted: u32,
    cur: Vec<u32>,
    cur_score: Vec<u32>,
    dest: Vec<u32>,
    prev: Option<Vec<u32>>,
    reference: Option<DriftReference>,
    from_config: bool,
    learn: Vec<u32>,
    learn_score: Vec<u32>,
    learned: u32,
    pub alerted: bool,
    pub last: Option<DriftValues>,
}

fn psi(p: &[u64], q: &[u64]) -> f64 {
    let (np, nq) = (p.iter().sum::<u64>() as f64, q.iter().sum::<u64>() as f64);
    let b = p.len() as f64;
    p.iter()
        .zip(q)
        .map(|(&a, &c)| {
            let x = (a as f64 + 0.5) / (np + 0.5 * b);
            let y = (c as f64 + 0.5) / (nq + 0.5 * b);
            (x - y) * (x / y).ln()
        })
        .sum()
}

fn binned(levels: &[u32], map: &[u8; LEVELS]) -> [u64; PSI_BINS] {
    let mut out = [0u64; PSI_BINS];
    for (l, &c) in levels.iter().enumerate() {
        out[map[l] as usize] += c as u64;
    }
    out
}

fn score_bin(s: f32) -> usize {
    if s.is_nan() || s <= 0.0 {
        return 0;
    }
    let e = ((s.to_bits() >> 23) & 0xff) as i32 - 127; // floor(log2) for normal numbers
    (e + 8).clamp(0, SCORE_BINS as i32 - 1) as usize
}

fn dest_bucket(f: &FlowRec) -> usize {
    let mut h: u32 = 0x811c9dc5;
    for b in &f.dst[..if f.ip_version == 4 { 4 } else { 16 }] {
        h = (h ^ *b as u32).wrapping_mul(0x01000193);
    }
    h as usize % DEST_BUCKETS
}

impl DriftMonitor {
    pub fn new(reference: Option<DriftReference>) -> Self {
        DriftMonitor {
            window: NONE,
            flows: 0,
            promoted: 0,
            cur: vec![0; DIMS * LEVELS],
            cur_score: vec![0; SCORE_BINS],
            dest: vec![0; DEST_BUCKETS],
            prev: None,
            from_config: reference.is_some(),
            reference,
            learn: vec![0; DIMS * LEVELS],
            learn_score: vec![0; SCORE_BINS],
            learned: 0,
            alerted: false,
            last: None,
        }
    }

    #[inline]
    pub fn observe(&mut self, f: &FlowRec, promoted: bool) {
        self.flows += 1;
        for (d, &v) in f.embedding.iter().enumerate() {
            self.cur[d * LEVELS + ((v as i16 + 128) >> 3) as usize] += 1;
        }
        self.cur_score[score_bin(f.score)] += 1;
        if promoted {
            self.promoted += 1;
            self.dest[dest_bucket(f)] += 1;
        }
    }

    /// Move to the window of `t`; a window that closes may raise an alert.
    pub fn roll(&mut self, sensor: &str, t: u64, cfg: &DriftGate) -> Option<DriftAlert> {
        let w = t / (cfg.window_secs * 1_000_000_000);
        if self.window == NONE {
            self.window = w;
            return None;
        }
        if w <= self.window {
            return None;
        }
        let start = self.window * cfg.window_secs * 1_000_000_000;
        let alert = self.close(sensor, start, cfg);
        self.window = w;
        self.flows = 0;
        self.promoted = 0;
        self.cur_score.iter_mut().for_each(|c| *c = 0);
        self.dest.iter_mut().for_each(|c| *c = 0);
        self.cur.iter_mut().for_each(|c| *c = 0);
        alert
    }

    fn close(&mut self, sensor: &str, start: u64, cfg: &DriftGate) -> Option<DriftAlert> {
        if self.flows < cfg.min_flows {
            return None;
        }
        let Some(reference) = &self.reference else {
            for (a, b) in self.learn.iter_mut().zip(&self.cur) {
                *a += b;
            }
            for (a, b) in self.learn_score.iter_mut().zip(&self.cur_score) {
                *a += b;
            }
            self.learned += 1;
            if self.learned >= cfg.reference_windows {
                self.reference = Some(DriftReference::from_flat(&self.learn, &self.learn_score));
            }
            self.prev = Some(self.cur.clone());
            return None;
        };
        let map = reference.bin_map();
        let (mut max, mut sum, mut worst, mut prev_max) = (0f64, 0f64, 0u32, 0f64);
        for d in 0..DIMS {
            let cur = binned(&self.cur[d * LEVELS..(d + 1) * LEVELS], &map[d]);
            let p = psi(&cur, &binned(&reference.dims[d], &map[d]));
            sum += p;
            if p > max {
                max = p;
                worst = d as u32;
            }
            if let Some(prev) = &self.prev {
                prev_max = prev_max.max(psi(&cur, &binned(&prev[d * LEVELS..(d + 1) * LEVELS], &map[d])));
            }
        }
        let s: Vec<u64> = self.cur_score.iter().map(|&c| c as u64).collect();
        let r: Vec<u64> = reference.score.iter().map(|&c| c as u64).collect();
        let (mut top, mut hhi) = (0f64, 0f64);
        if self.promoted > 0 {
            for &c in &self.dest {
                let share = c as f64 / self.promoted as f64;
                top = top.max(share);
                hhi += share * share;
            }
        }
        let v = DriftValues {
            window_start_ns: start,
            flows: self.flows,
            promoted: self.promoted,
            psi_ref_max: max,
            psi_ref_mean: sum / DIMS as f64,
            worst_dim: worst,
            psi_prev_max: prev_max,
            score_psi: psi(&s, &r),
            top_share: top,
            hhi,
        };
        self.last = Some(v);
        self.prev = Some(self.cur.clone());
        let psi_bad = v.psi_ref_max > cfg.psi_alert;
        let conc_bad = v.promoted >= cfg.min_promoted && v.top_share > cfg.top_share_alert;
        if (psi_bad || conc_bad) && !self.alerted {
            self.alerted = true;
            let cause = match (psi_bad, conc_bad) {
                (true, true) => "psi,concentration",
                (true, false) => "psi",
                _ => "concentration",
            };
            return Some(DriftAlert { sensor: sensor.to_string(), values: v, cause, gates_to_shadow: false });
        }
        None
    }

    /// Acknowledge: clear the alert; a learned reference is relearned from
    /// the next windows (the operator accepts the new distribution).
    pub fn acknowledge(&mut self) {
        self.alerted = false;
        if !self.from_config {
            self.reference = None;
            self.learned = 0;
            self.learn.iter_mut().for_each(|c| *c = 0);
            self.learn_score.iter_mut().for_each(|c| *c = 0);
        }
    }

    pub fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    pub fn encode(&self, e: &mut Enc) {
        e.u64(self.window);
        e.u32(self.flows);
        e.u32(self.promoted);
        e.u32s(&self.cur);
        e.u32s(&self.cur_score);
        e.u32s(&self.dest);
        e.bool(self.prev.is_some());
        if let Some(p) = &self.prev {
            e.u32s(p);
        }
        e.bool(self.from_config);
        e.bool(self.reference.is_some());
        if let Some(r) = &self.reference {
            e.u32s(&r.dims.concat());
            e.u32s(&r.score);
        }
        e.u32s(&self.learn);
        e.u32s(&self.learn_score);
        e.u32(self.learned);
        e.bool(self.alerted);
        e.bool(self.last.is_some());
        if let Some(v) = &self.last {
            e.u64(v.window_start_ns);
            e.u32(v.flows);
            e.u32(v.promoted);
            for x in [v.psi_ref_max, v.psi_ref_mean, v.psi_prev_max, v.score_psi, v.top_share, v.hhi] {
                e.f64(x);
            }
            e.u32(v.worst_dim);
        }
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<Self, CodecError> {
        let n = DIMS * LEVELS;
        let exact = |v: Vec<u32>, len: usize| if v.len() == len { Ok(v) } else { Err(CodecError("histogram length")) };
        let window = d.u64()?;
        let flows = d.u32()?;
        let promoted = d.u32()?;
        let cur = exact(d.u32s(n)?, n)?;
        let cur_score = exact(d.u32s(SCORE_BINS)?, SCORE_BINS)?;
        let dest = exact(d.u32s(DEST_BUCKETS)?, DEST_BUCKETS)?;
        let prev = if d.bool()? { Some(exact(d.u32s(n)?, n)?) } else { None };
        let from_config = d.bool()?;
        let reference = if d.bool()? {
            let h = exact(d.u32s(n)?, n)?;
            let s = exact(d.u32s(SCORE_BINS)?, SCORE_BINS)?;
            Some(DriftReference::from_flat(&h, &s))
        } else {
            None
        };
        let learn = exact(d.u32s(n)?, n)?;
        let learn_score = exact(d.u32s(SCORE_BINS)?, SCORE_BINS)?;
        let learned = d.u32()?;
        let alerted = d.bool()?;
        let last = if d.bool()? {
            let window_start_ns = d.u64()?;
            let flows = d.u32()?;
            let promoted = d.u32()?;
            let mut x = [0f64; 6];
            for v in &mut x {
                *v = d.f64()?;
            }
            Some(DriftValues {
                window_start_ns,
                flows,
                promoted,
                psi_ref_max: x[0],
                psi_ref_mean: x[1],
                psi_prev_max: x[2],
                score_psi: x[3],
                top_share: x[4],
                hhi: x[5],
                worst_dim: d.u32()?,
            })
        } else {
            None
        };
        Ok(DriftMonitor {
            window,
            flows,
            promoted,
            cur,
            cur_score,
            dest,
            prev,
            reference,
            from_config,
            learn,
            learn_score,
            learned,
            alerted,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_bins_and_reference_json() {
        assert_eq!(score_bin(0.0), 0);
        assert_eq!(score_bin(1.0), 8);
        assert_eq!(score_bin(0.5), 7);
        assert_eq!(score_bin(65504.0), 23);
        let r = DriftReference { dims: vec![vec![1; LEVELS]; DIMS], score: vec![2; SCORE_BINS] };
        assert_eq!(DriftReference::from_json(&r.to_json()).unwrap(), r);
        assert!(DriftReference::from_json("{\"dims\":[],\"score\":[]}").is_err());
        let m = r.bin_map();
        assert_eq!(m[0][0], 0);
        assert_eq!(m[0][LEVELS - 1], (PSI_BINS - 1) as u8);
    }
}
