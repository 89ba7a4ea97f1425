//! The gates on hand-made flows.
use super::*;
use std::collections::HashMap;
use wirefold_schema::FlowRec;

const S: u64 = 1_000_000_000;

fn flow(score: f32, emb: [i8; 32], port: u16, t: u64) -> FlowRec {
    let mut f = FlowRec {
        ip_version: 4,
        proto: 6,
        dst_port: port,
        first_ns: t,
        last_ns: t,
        fwd_packets: 1,
        fwd_bytes: 60,
        score,
        embedding: emb,
        ..Default::default()
    };
    f.dst[..4].copy_from_slice(&[10, 0, (port >> 8) as u8, port as u8]);
    f
}

fn emb(v: i8) -> [i8; 32] {
    [v; 32]
}

/// Every deciding gate off and drift off, but `g` in `m`.
fn only(g: Gate, m: Mode) -> GatesConfig {
    let mut c = GatesConfig::default();
    c.score.mode = Mode::Off;
    c.novelty.mode = Mode::Off;
    c.burst.mode = Mode::Off;
    c.budget.mode = Mode::Off;
    c.drift.mode = Mode::Off;
    match g {
        Gate::Score => c.score.mode = m,
        Gate::Novelty => c.novelty.mode = m,
        Gate::Burst => c.burst.mode = m,
        Gate::Budget => c.budget.mode = m,
        Gate::Drift => c.drift.mode = m,
    }
    c
}

fn held_by(d: &BatchDecisions) -> Vec<Option<Gate>> {
    d.decisions.iter().map(|d| d.held.map(|(g, _)| g)).collect()
}

fn promoted(d: &BatchDecisions) -> usize {
    d.decisions.iter().filter(|d| d.held.is_none()).count()
}

#[test]
fn score_threshold_edges() {
    let mut c = only(Gate::Score, Mode::Enforce);
    c.score.threshold = 0.5;
    let mut e = GateEngine::new(c);
    let d = e.decide(
        "a",
        &[flow(0.5, emb(0), 1, S), flow(0.49999, emb(1), 1, S), flow(65504.0, emb(2), 1, S), flow(0.0, emb(3), 1, S)],
    );
    assert_eq!(held_by(&d), vec![None, Some(Gate::Score), None, Some(Gate::Score)]);
    let r = d.decisions[1].held.unwrap().1.to_string();
    assert!(r.contains("score 0.49999 < 0.5"), "{r}");
}

#[test]
fn novelty_of_a_repeated_and_a_new_vector() {
    let mut c = only(Gate::Novelty, Mode::Enforce);
    c.novelty.min_distance = 64;
    let mut e = GateEngine::new(c);
    let mut near = emb(10);
    near[0] = 10 + 63; // L1 63 from emb(10): not novel
    let mut far = emb(10);
    far[0] = 10 + 64; // L1 64: novel (but L1 1 from `near`, which is held, so it is not in the reservoir)
    let d = e.decide(
        "a",
        &[
            flow(1.0, emb(10), 1, S),
            flow(1.0, emb(10), 1, S),
            flow(1.0, near, 1, S),
            flow(1.0, far, 1, S),
            flow(1.0, emb(-50), 1, S),
        ],
    );
    assert_eq!(held_by(&d), vec![None, Some(Gate::Novelty), Some(Gate::Novelty), None, None]);
    assert!(d.decisions[2].held.unwrap().1.to_string().contains("L1 63 < 64"));
    // Another sensor has its own reservoir.
    assert_eq!(held_by(&e.decide("b", &[flow(1.0, emb(10), 1, S)])), vec![None]);
    // The reservoir is a ring: with 2 slots, the oldest promotion is forgotten.
    let mut c = only(Gate::Novelty, Mode::Enforce);
    c.novelty.reservoir = 2;
    let mut e = GateEngine::new(c);
    let d = e.decide(
        "a",
        &[flow(1.0, emb(0), 1, S), flow(1.0, emb(50), 1, S), flow(1.0, emb(100), 1, S), flow(1.0, emb(0), 1, S)],
    );
    assert_eq!(held_by(&d), vec![None, None, None, None]);
}

#[test]
fn a_burst_of_one_class_is_sampled_down() {
    let mut c = only(Gate::Burst, Mode::Enforce);
    c.burst.min_count = 10;
    c.burst.keep_one_in = 5;
    c.burst.window_secs = 10;
    let mut e = GateEngine::new(c);
    // A quiet baseline: 5 flows per window of class 6/80 for 20 windows.
    for w in 0..20u64 {
        let flows: Vec<FlowRec> = (0..5).map(|i| flow(1.0, emb(i), 80, w * 10 * S)).collect();
        assert_eq!(promoted(&e.decide("a", &flows)), 5);
    }
    // A flood of 100 flows of that class in one window, 5 of another class.
    let mut flows: Vec<FlowRec> = (0..100).map(|i| flow(1.0, emb((i % 100) as i8), 80, 200 * S)).collect();
    flows.extend((0..5).map(|i| flow(1.0, emb(i), 443, 200 * S)));
    let d = e.decide("a", &flows);
    // Baseline 10 (the floor): 10 pass, then 1 in 5 of the other 90 (18).
    assert_eq!(d.decisions[..100].iter().filter(|d| d.held.is_none()).count(), 28);
    assert_eq!(
        held_by(&d)[10..16],
        [None, Some(Gate::Burst), Some(Gate::Burst), Some(Gate::Burst), Some(Gate::Burst), None]
    );
    assert!(d.decisions[100..].iter().all(|d| d.held.is_none()), "the other class is not affected");
    assert!(d.decisions[11].held.unwrap().1.to_string().contains("class 6/80"));
}

#[test]
fn budget_exhaustion_and_refill_in_batch_time() {
    let mut c = only(Gate::Budget, Mode::Enforce);
    c.budget.per_window = 10;
    c.budget.window_secs = 10;
    let mut e = GateEngine::new(c);
    let batch = |t: u64, n: usize| (0..n).map(|i| flow(1.0, emb(i as i8), 1, t)).collect::<Vec<_>>();
    assert_eq!(promoted(&e.decide("a", &batch(100 * S, 15))), 10);
    assert_eq!(promoted(&e.decide("a", &batch(100 * S, 5))), 0, "same time: nothing refilled");
    assert_eq!(promoted(&e.decide("a", &batch(105 * S, 10))), 5, "half a window refills half");
    assert_eq!(promoted(&e.decide("a", &batch(1000 * S, 20))), 10, "refilled to the depth, no more");
    // A batch whose flows are older does not move time back (no refill).
    assert_eq!(promoted(&e.decide("a", &batch(10 * S, 5))), 0);
    assert_eq!(promoted(&e.decide("b", &batch(10 * S, 5))), 5, "per sensor");
}

fn stream(seed: u64, batches: usize, per: usize, shift_after: Option<usize>) -> Vec<Vec<FlowRec>> {
    let mut x = seed | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..batches)
        .map(|b| {
            let t = 1_700_000_000 * S + b as u64 * S / 2;
            (0..per)
                .map(|_| {
                    let shifted = shift_after.is_some_and(|s| b >= s);
                    let e: [i8; 32] = std::array::from_fn(|d| {
                        let v = (rnd() % 41) as i8 - 20;
                        if shifted && d < 8 {
                            v.saturating_add(70)
                        } else {
                            v
                        }
                    });
                    flow((rnd() % 1000) as f32 / 1000.0, e, (rnd() % 6) as u16 + 20, t)
                })
                .collect()
        })
        .collect()
}

#[test]
fn shadow_records_exactly_what_enforce_acts_on_and_promotes_what_off_promotes() {
    let mut enforce = GatesConfig::default();
    enforce.novelty.min_distance = 300;
    enforce.burst.min_count = 2;
    enforce.burst.keep_one_in = 4;
    enforce.burst.window_secs = 1;
    enforce.budget.per_window = 40;
    enforce.budget.window_secs = 1;
    enforce.drift.mode = Mode::Off;
    let mut shadow = enforce.clone();
    let mut off = enforce.clone();
    for (c, m) in [(&mut shadow, Mode::Shadow), (&mut off, Mode::Off)] {
        c.score.mode = m;
        c.novelty.mode = m;
        c.burst.mode = m;
        c.budget.mode = m;
    }
    let (mut a, mut b, mut o) = (GateEngine::new(enforce), GateEngine::new(shadow), GateEngine::new(off));
    let mut held = [0usize; 4];
    for batch in stream(7, 60, 100, None) {
        let (da, db, dof) = (a.decide("s", &batch), b.decide("s", &batch), o.decide("s", &batch));
        for ((x, y), z) in da.decisions.iter().zip(&db.decisions).zip(&dof.decisions) {
            let acted = x.held.map(|(g, _)| g);
            let recorded = y.shadow.iter().next();
            assert_eq!(acted, recorded);
            assert_eq!(x.held.map(|h| h.1), y.shadow_reason);
            assert_eq!(y.held, None, "shadow acts as off");
            assert_eq!(z.held, None);
            if let Some(g) = acted {
                held[g as usize] += 1;
            }
        }
    }
    assert!(held.iter().all(|&n| n > 0), "every gate held some flows: {held:?}");
    // Mixed: score enforcing, the rest shadow.
    let mut mixed = GatesConfig::default();
    mixed.drift.mode = Mode::Off;
    mixed.novelty.mode = Mode::Shadow;
    let mut e = GateEngine::new(mixed);
    let d = e.decide("s", &[flow(0.9, emb(1), 1, S), flow(0.9, emb(1), 1, S), flow(0.1, emb(90), 1, S)]);
    assert_eq!(held_by(&d), vec![None, None, Some(Gate::Score)]);
    assert_eq!(d.decisions[1].shadow.names(), "novelty");
}

fn drift_cfg() -> GatesConfig {
    let mut c = only(Gate::Drift, Mode::Enforce);
    c.drift.window_secs = 1;
    c.drift.min_flows = 100;
    c.drift.reference_windows = 3;
    c
}

#[test]
fn drift_alerts_within_two_windows_of_a_shift_and_not_on_a_stationary_stream() {
    // 2 batches per window (0.5 s apart), 200 flows each: 40 windows.
    let mut e = GateEngine::new(drift_cfg());
    let mut alerts = Vec::new();
    for (i, b) in stream(11, 80, 200, None).iter().enumerate() {
        alerts.extend(e.decide("s", b).alerts.into_iter().map(|a| (i, a)));
    }
    assert!(alerts.is_empty(), "stationary: {alerts:?}");
    let st = &e.status()[0];
    assert!(st.drift_reference && st.drift.unwrap().psi_ref_max < 0.1, "{st:?}");
    // The same length, shifted at batch 40 (window 20).
    let mut c = drift_cfg();
    c.drift.on_drift = OnDrift::Shadow;
    c.budget.mode = Mode::Enforce;
    c.budget.per_window = 1;
    let mut e = GateEngine::new(c);
    let mut first = None;
    let mut promoted_after = 0;
    for (i, b) in stream(11, 80, 200, Some(40)).iter().enumerate() {
        let d = e.decide("s", b);
        if first.is_some() {
            promoted_after += promoted(&d);
        }
        if let Some(a) = d.alerts.first() {
            assert!(first.is_none(), "one alert until acknowledged");
            assert!(a.gates_to_shadow && a.cause.contains("psi"), "{a:?}");
            first = Some(i);
        }
    }
    let at = first.expect("an alert");
    // The window of batches 40-41 closes when batch 42 arrives.
    assert!((40..=44).contains(&at), "alert at batch {at}: within 2 windows of the shift");
    assert_eq!(promoted_after, 200 * (80 - at - 1), "gates forced to shadow promote everything");
    assert!(e.status()[0].forced_shadow);
    assert!(e.acknowledge_drift("s"));
    assert!(!e.status()[0].forced_shadow);
    assert!(promoted(&e.decide("s", &stream(3, 1, 50, None)[0])) <= 1, "the budget enforces again");
}

#[test]
fn a_snapshot_restores_the_engine_exactly() {
    let mut c = GatesConfig::default();
    c.novelty.min_distance = 300;
    c.novelty.reservoir = 64;
    c.budget.per_window = 50;
    c.budget.window_secs = 1;
    c.burst.window_secs = 1;
    c.burst.min_count = 20;
    c.drift.window_secs = 2;
    c.drift.min_flows = 50;
    c.novelty.mode = Mode::Shadow;
    let batches = stream(5, 40, 100, Some(25));
    let mut a = GateEngine::new(c.clone());
    let mut slots: HashMap<(u8, u32), [i8; 32]> = HashMap::new();
    for b in &batches[..20] {
        let d = a.decide("s", b);
        for ch in &d.replace_chains {
            slots.retain(|(c, _), _| c != ch);
        }
        for w in &d.reservoir {
            slots.insert((w.chain, w.slot), w.embedding);
        }
    }
    let rows: Vec<(u8, u32, [i8; 32])> = slots.iter().map(|(k, v)| (k.0, k.1, *v)).collect();
    let mut b = GateEngine::new(c);
    b.load("s", &a.snapshot("s").unwrap(), &rows).unwrap();
    assert_eq!(b.snapshot("s"), a.snapshot("s"));
    for batch in &batches[20..] {
        let (x, y) = (a.decide("s", batch), b.decide("s", batch));
        assert_eq!(x.decisions, y.decisions);
        assert_eq!(x.alerts, y.alerts);
    }
    assert!(b.load("s", &[9, 9], &[]).is_err());
}

#[test]
fn a_shadow_run_counts_the_differences_of_the_batches_it_is_given() {
    let mut live_cfg = only(Gate::Score, Mode::Enforce);
    live_cfg.score.threshold = 0.5;
    let mut live = GateEngine::new(live_cfg.clone());
    let batch =
        |k: u64| -> Vec<FlowRec> { (0..10).map(|i| flow(i as f32 / 10.0, emb(i as i8), 80, (k + 1) * S)).collect() };
    live.decide("s", &batch(0));
    let mut same = ShadowRun::new(1, 1, 2, &live, live_cfg.clone());
    let mut strict_cfg = live_cfg.clone();
    strict_cfg.score.threshold = 0.8;
    let mut strict = ShadowRun::new(2, 1, 2, &live, strict_cfg);
    for k in 1..=3 {
        let flows = batch(k);
        let bd = live.decide("s", &flows);
        let a = same.decide("s", k, &flows, &bd);
        let b = strict.decide("s", k, &flows, &bd);
        assert_eq!((a.newly_held, a.newly_promoted), (0, 0));
        // Scores 0.5, 0.6 and 0.7 pass live and are held under 0.8.
        assert_eq!((b.live_promoted, b.proposed_promoted, b.newly_held), (5, 2, 3));
        assert_eq!(b.examples.len(), 3);
        assert!(b.examples.iter().all(|x| x.proposed_held.as_ref().unwrap().0 == "score"));
        if k == 2 {
            // The batch's transaction failed: not counted, state reloaded later.
            strict.forget("s");
            continue;
        }
        same.commit(a);
        strict.commit(b);
    }
    assert_eq!(same.state, ShadowState::Done);
    assert_eq!(strict.state, ShadowState::Done);
    assert_eq!(strict.report.batches, 2);
    assert_eq!(strict.report.newly_held, 6);
    assert_eq!(strict.report.decided, [("s".to_string(), 1), ("s".to_string(), 3)]);
    // A configuration change makes a running run stale.
    let mut r = ShadowRun::new(3, 1, 5, &live, live_cfg);
    r.live_changed(2);
    assert_eq!(r.state, ShadowState::Stale);
}

/// Flows whose embedding levels and score bins are drawn from a reference's
/// own counts (a level's 8 quanta and a bin's range uniformly); `shift`
/// moves the first 8 dimensions that many quanta.
fn drawn_from(r: &DriftReference, seed: u64, batches: usize, per: usize, shift: i8) -> Vec<Vec<FlowRec>> {
    let mut x = seed | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pick = |counts: &[u32], u: u64| {
        let total: u64 = counts.iter().map(|&c| c as u64).sum();
        let mut k = u % total;
        for (i, &c) in counts.iter().enumerate() {
            if k < c as u64 {
                return i;
            }
            k -= c as u64;
        }
        counts.len() - 1
    };
    (0..batches)
        .map(|b| {
            let t = 1_700_000_000 * S + b as u64 * S / 2;
            (0..per)
                .map(|_| {
                    let e: [i8; 32] = std::array::from_fn(|d| {
                        let level = pick(&r.dims[d], rnd()) as i16;
                        let v = (level * 8 - 128 + (rnd() % 8) as i16).clamp(-127, 127) as i8;
                        if d < 8 {
                            v.saturating_add(shift)
                        } else {
                            v
                        }
                    });
                    let bin = pick(&r.score, rnd()) as i32;
                    let score = if bin == 0 { 0.001 } else { 2f32.powi(bin - 8) * 1.5 };
                    flow(score.min(1.0), e, (rnd() % 6) as u16 + 20, t)
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_bundled_model_cards_reference_loads_and_drift_is_measured_against_it() {
    let card = include_str!("../../../embeddings/model/wirefold-det-v2.card.json");
    let r = DriftReference::from_json(card).expect("the card carries reference_distribution.drift");
    let n: u64 = r.score.iter().map(|&c| c as u64).sum();
    assert!(n >= 500, "a reference of {n} flows");
    for d in &r.dims {
        assert_eq!(d.iter().map(|&c| c as u64).sum::<u64>(), n, "every dimension counts every flow");
    }
    // A card without one is a clear error, not a silently learned reference.
    assert!(DriftReference::from_json(r#"{"model_id": "x"}"#).unwrap_err().contains("reference_distribution.drift"));
    // Traffic distributed like the reference raises nothing; 40 windows of it.
    let mut e = GateEngine::new(drift_cfg());
    e.set_reference(Some(r.clone()));
    for b in drawn_from(&r, 5, 80, 200, 0) {
        assert!(e.decide("s", &b).alerts.is_empty());
    }
    let st = &e.status()[0];
    let v = st.drift.expect("windows closed");
    assert!(st.drift_reference && v.psi_ref_max < 0.25, "{v:?}");
    // Shifted by a quarter of the int8 range in 8 dimensions, the first window alerts.
    let mut e = GateEngine::new(drift_cfg());
    e.set_reference(Some(r.clone()));
    let mut first = None;
    for (i, b) in drawn_from(&r, 5, 20, 200, 64).iter().enumerate() {
        if !e.decide("s", b).alerts.is_empty() && first.is_none() {
            first = Some(i);
        }
    }
    assert_eq!(first, Some(2), "the first window (batches 0-1) closes at batch 2 and alerts");
}
