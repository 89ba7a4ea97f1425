//! Live shadow runs of a proposed configuration: a copy of the live
//! engine's state under the proposed configuration decides every new batch
//! beside the live engine, for a stated number of batches, and the
//! differences are counted. No I/O and no clock: the store thread feeds it.
use super::engine::BatchDecisions;
use super::{GateEngine, GatesConfig, Verdict};
use wirefold_schema::FlowRec;

/// Examples of differing decisions a report keeps.
pub const MAX_EXAMPLES: usize = 20;

/// One flow decided differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Sensor.
    pub sensor: String,
    /// Batch sequence number.
    pub seq: u64,
    /// Flow index in the batch.
    pub idx: u32,
    /// The flow's score.
    pub score: f32,
    /// The live verdict.
    pub live: Verdict,
    /// The proposed verdict.
    pub proposed: Verdict,
    /// The gate and reason that would hold it under the proposal.
    pub proposed_held: Option<(&'static str, String)>,
}

/// What a shadow run has seen so far (or over one batch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowReport {
    /// Batches decided by both.
    pub batches: u64,
    /// Flows decided by both.
    pub flows: u64,
    /// Live verdicts.
    pub live_promoted: u64,
    /// Live verdicts.
    pub live_held: u64,
    /// Proposed verdicts.
    pub proposed_promoted: u64,
    /// Proposed verdicts.
    pub proposed_held: u64,
    /// Held live, promoted under the proposal.
    pub newly_promoted: u64,
    /// Promoted live, held under the proposal.
    pub newly_held: u64,
    /// The first differences (at most [`MAX_EXAMPLES`]).
    pub examples: Vec<Difference>,
    /// The batches decided (sensor, sequence number), in order.
    pub decided: Vec<(String, u64)>,
}

impl ShadowReport {
    /// Add a later report (one batch) to this one.
    pub fn merge(&mut self, o: ShadowReport) {
        self.batches += o.batches;
        self.flows += o.flows;
        self.live_promoted += o.live_promoted;
        self.live_held += o.live_held;
        self.proposed_promoted += o.proposed_promoted;
        self.proposed_held += o.proposed_held;
        self.newly_promoted += o.newly_promoted;
        self.newly_held += o.newly_held;
        let room = MAX_EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(o.examples.into_iter().take(room));
        self.decided.extend(o.decided);
    }
}

/// Where a shadow run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowState {
    /// Still deciding batches.
    Running,
    /// It has seen the batches it asked for.
    Done,
    /// The live configuration changed before it was done; its comparison no
    /// longer holds.
    Stale,
}

impl ShadowState {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ShadowState::Running => "evaluating",
            ShadowState::Done => "done",
            ShadowState::Stale => "stale",
        }
    }
}

/// A proposed configuration deciding live batches in shadow.
#[derive(Debug, Clone)]
pub struct ShadowRun {
    /// The proposal's id.
    pub id: u64,
    /// The live configuration version it is compared with.
    pub base_version: u64,
    /// Batches it decides before it is done.
    pub want: u64,
    /// Counts so far.
    pub report: ShadowReport,
    /// Where it stands.
    pub state: ShadowState,
    engine: GateEngine,
}

impl ShadowRun {
    /// Start from a copy of the live engine's state (every loaded sensor's
    /// reservoir, baselines, budget and drift windows) under `proposed`.
    pub fn new(id: u64, base_version: u64, want: u64, live: &GateEngine, proposed: GatesConfig) -> Self {
        let mut engine = live.clone();
        engine.set_config(proposed);
        ShadowRun {
            id,
            base_version,
            want: want.max(1),
            report: ShadowReport::default(),
            state: ShadowState::Running,
            engine,
        }
    }

    /// The proposed configuration.
    pub fn config(&self) -> &GatesConfig {
        self.engine.config()
    }

    /// The engine (to load a sensor's state it has not seen yet).
    pub fn engine_mut(&mut self) -> &mut GateEngine {
        &mut self.engine
    }

    /// Decide `flows` under the proposal and compare with the live engine's
    /// decisions of the same batch. The result is merged by [`ShadowRun::commit`]
    /// once the batch is stored (a batch whose transaction fails is not counted).
    pub fn decide(&mut self, sensor: &str, seq: u64, flows: &[FlowRec], live: &BatchDecisions) -> ShadowReport {
        let prop = self.engine.decide(sensor, flows);
        compare(sensor, seq, flows, live, &prop)
    }

    /// Count a stored batch's comparison; done after `want` batches.
    pub fn commit(&mut self, r: ShadowReport) {
        if self.state != ShadowState::Running {
            return;
        }
        self.report.merge(r);
        if self.report.batches >= self.want {
            self.state = ShadowState::Done;
        }
    }

    /// The sensor's batch was not stored: its state here is dropped and
    /// loaded again (from the live engine's committed state) on its next batch.
    pub fn forget(&mut self, sensor: &str) {
        self.engine.forget(sensor);
    }

    /// The live configuration moved to `version`.
    pub fn live_changed(&mut self, version: u64) {
        if self.state == ShadowState::Running && version != self.base_version {
            self.state = ShadowState::Stale;
        }
    }
}

/// Compare two engines' decisions of one batch (`live`, then `proposed`).
pub fn compare(
    sensor: &str,
    seq: u64,
    flows: &[FlowRec],
    live: &BatchDecisions,
    prop: &BatchDecisions,
) -> ShadowReport {
    let mut r = ShadowReport { batches: 1, decided: vec![(sensor.to_string(), seq)], ..Default::default() };
    for (i, (a, b)) in live.decisions.iter().zip(&prop.decisions).enumerate() {
        r.flows += 1;
        let (va, vb) = (a.verdict(), b.verdict());
        match va {
            Verdict::Promoted => r.live_promoted += 1,
            Verdict::Held => r.live_held += 1,
        }
        match vb {
            Verdict::Promoted => r.proposed_promoted += 1,
            Verdict::Held => r.proposed_held += 1,
        }
        if va != vb {
            if vb == Verdict::Promoted {
                r.newly_promoted += 1;
            } else {
                r.newly_held += 1;
            }
            if r.examples.len() < MAX_EXAMPLES {
                r.examples.push(Difference {
                    sensor: sensor.to_string(),
                    seq,
                    idx: i as u32,
                    score: flows[i].score,
                    live: va,
                    proposed: vb,
                    proposed_held: b.held.map(|(g, why)| (g.name(), why.to_string())),
                });
            }
        }
    }
    r
}
