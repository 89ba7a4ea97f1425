//! Promotion gates: which admitted flows are promoted.
//!
//! ```text
//! admitted flows ─► score ─► novelty ─► burst ─► budget ─► promoted | held (gate, reason)
//!  (after auth,      ≥ thr    L1 to the   class    token      drift (advisory): PSI per dimension,
//!   verify, rules,           reservoir   EWMA+kσ  bucket      destination concentration → alerts
//!   rate law)
//! ```
//! The engine does no I/O and reads no clock: the time is the batch's time
//! (the largest `last_ns` of its flows, never earlier than the sensor's
//! previous batch time), passed in with the flows, so the same batches in
//! the same order under the same configuration give byte-identical
//! decisions. See `docs/gates.md`.
mod codec;
pub mod config;
pub mod drift;
pub mod engine;
pub mod shadow;

pub use codec::CodecError;
pub use config::{ConfigError, GatesConfig, OnDrift};
pub use drift::{DriftAlert, DriftReference, DriftValues};
pub use engine::{BatchDecisions, GateEngine, ReservoirWrite};
use serde::{Deserialize, Serialize};
pub use shadow::{ShadowReport, ShadowRun, ShadowState};
use std::fmt;

/// How a gate acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decide and act: a flow it holds is not promoted.
    Enforce,
    /// Decide and record what it would have done; the flow is promoted as if the gate were off.
    Shadow,
    /// Not consulted.
    Off,
}

impl Mode {
    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
            Mode::Off => "off",
        }
    }
}

/// A gate, in the documented order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gate {
    /// Score at least the threshold.
    Score,
    /// Far from recently promoted embeddings.
    Novelty,
    /// Not beyond its class's adaptive baseline (else sampled down).
    Burst,
    /// Within the sensor's promotion budget.
    Budget,
    /// Advisory drift monitor (never holds a flow).
    Drift,
}

impl Gate {
    /// The gates in order.
    pub const ALL: [Gate; 5] = [Gate::Score, Gate::Novelty, Gate::Burst, Gate::Budget, Gate::Drift];
    /// The gates that decide flows, in order.
    pub const DECIDING: [Gate; 4] = [Gate::Score, Gate::Novelty, Gate::Burst, Gate::Budget];

    /// The gate's name (config table, metric label, ledger).
    pub fn name(self) -> &'static str {
        match self {
            Gate::Score => "score",
            Gate::Novelty => "novelty",
            Gate::Burst => "burst",
            Gate::Budget => "budget",
            Gate::Drift => "drift",
        }
    }

    /// The gate named `s`.
    pub fn parse(s: &str) -> Option<Gate> {
        Gate::ALL.into_iter().find(|g| g.name() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of gates (the shadow gates that would have held a flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GateSet(pub u8);

impl GateSet {
    /// Add a gate.
    pub fn insert(&mut self, g: Gate) {
        self.0 |= g.bit();
    }
    /// Whether `g` is in the set.
    pub fn contains(self, g: Gate) -> bool {
        self.0 & g.bit() != 0
    }
    /// Empty?
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The gates, in order.
    pub fn iter(self) -> impl Iterator<Item = Gate> {
        Gate::ALL.into_iter().filter(move |g| self.contains(*g))
    }
    /// Names joined by commas ("" when empty).
    pub fn names(self) -> String {
        self.iter().map(Gate::name).collect::<Vec<_>>().join(",")
    }
}

/// Why a gate held a flow (the values it compared).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// Score below the threshold.
    Score {
        /// The flow's score.
        score: f32,
        /// The threshold.
        threshold: f32,
    },
    /// A recent promotion is this close (L1).
    Novelty {
        /// Distance to the first neighbour found closer than the minimum.
        distance: u32,
        /// The minimum.
        min: u32,
    },
    /// The class is beyond its baseline and this flow was not sampled.
    Burst {
        /// The class's flows in this window so far.
        count: u32,
        /// Its baseline.
        baseline: u32,
        /// Protocol.
        proto: u8,
        /// Destination port.
        dst_port: u16,
    },
    /// The budget bucket is empty.
    Budget {
        /// Promotions allowed per window.
        per_window: u32,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::Score { score, threshold } => write!(f, "score {score} < {threshold}"),
            Reason::Novelty { distance, min } => write!(f, "L1 {distance} < {min} to a recent promotion"),
            Reason::Burst { count, baseline, proto, dst_port } => {
                write!(f, "class {proto}/{dst_port}: {count} flows in window > baseline {baseline}, not sampled")
            }
            Reason::Budget { per_window } => write!(f, "budget of {per_window} per window spent"),
        }
    }
}

/// Promoted or held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every enforcing gate passed it.
    Promoted,
    /// An enforcing gate held it.
    Held,
}

impl Verdict {
    /// The verdict's name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Promoted => "promoted",
            Verdict::Held => "held",
        }
    }
}

/// One flow's decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The first enforcing gate that held it, with the reason; `None` = promoted.
    pub held: Option<(Gate, Reason)>,
    /// Shadow gates that would have held it (see `docs/gates.md`: the
    /// counterfactual chain in which shadow gates enforce).
    pub shadow: GateSet,
    /// The shadow chain's reason, when a shadow gate would have held it.
    pub shadow_reason: Option<Reason>,
}

impl Decision {
    /// Promoted or held.
    pub fn verdict(&self) -> Verdict {
        if self.held.is_some() {
            Verdict::Held
        } else {
            Verdict::Promoted
        }
    }
}

#[cfg(test)]
mod tests;
