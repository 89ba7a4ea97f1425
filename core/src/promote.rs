//! The gates at work in the store thread: decide each new batch inside its
//! transaction (decisions, promoted flows, the engine's state and the
//! ledger lines commit with the flows), append the ledger after the
//! commit, keep the configuration's versions, and answer admin commands.
use crate::admin::AdminCommand;
use crate::gates::engine::SensorStatus;
use crate::gates::{
    BatchDecisions, DriftReference, GateEngine, GatesConfig, Mode, ShadowReport, ShadowRun, ShadowState, Verdict,
};
use crate::ledger::{Cursor, LedgerError, LedgerHead, LedgerWriter};
use crate::store::{DecisionCols, Store};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use wirefold_schema::FlowRec;

/// Gate metrics, published to `/metrics` (see `CoreCounters::exposition`).
#[derive(Debug, Default, Clone)]
pub struct GateMetrics {
    /// Decisions by (gate, mode, verdict): enforce gates `pass`/`hold`/
    /// `not_reached` (an earlier gate held the flow); shadow gates `pass`/`would_hold`.
    pub decisions: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// Flows by (sensor, verdict).
    pub verdicts: BTreeMap<(String, &'static str), u64>,
    /// Drift alerts by sensor.
    pub alerts: BTreeMap<String, u64>,
    /// Per-sensor engine state after the latest batch.
    pub status: Vec<SensorStatus>,
    /// Configuration version in force.
    pub config_version: u64,
    /// Ledger entries (the head's seq).
    pub ledger_entries: u64,
    /// Ledger appends that failed (the lines stay in the database and are retried).
    pub ledger_errors: u64,
}

/// Why the gates could not start.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The database failed.
    #[error("gates: database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The ledger disagrees with the database, or cannot be written.
    #[error("gates: {0}")]
    Ledger(#[from] LedgerError),
    /// A stored configuration does not read back.
    #[error("gates: stored configuration version {0} does not read back: {1}")]
    Config(u64, String),
}

/// A batch decided in its transaction, waiting for the commit.
#[derive(Debug)]
pub struct Prepared {
    sensor: String,
    lines: Vec<(u64, String)>,
    head: LedgerHead,
    counts: Vec<((&'static str, &'static str, &'static str), u64)>,
    promoted: u64,
    held: u64,
    alerts: u64,
    shadows: Vec<(u64, ShadowReport)>,
}

/// Live shadow runs kept at once (running or finished, not yet taken).
pub const MAX_SHADOW_RUNS: usize = 8;

/// The engine, its configuration history and the ledger.
#[derive(Debug)]
pub struct Promotion {
    engine: GateEngine,
    versions: Vec<(u64, GatesConfig, String)>,
    head: LedgerHead,
    writer: LedgerWriter,
    metrics: GateMetrics,
    shadows: Vec<ShadowRun>,
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

fn ip(f: &FlowRec, a: &[u8; 16]) -> String {
    if f.ip_version == 4 {
        std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
    } else {
        std::net::Ipv6Addr::from(*a).to_string()
    }
}

fn load_sensor(engine: &mut GateEngine, conn: &Connection, sensor: &str) -> rusqlite::Result<()> {
    let snap: Option<Vec<u8>> =
        conn.query_row("SELECT snapshot FROM gate_state WHERE sensor_id = ?1", [sensor], |r| r.get(0)).optional()?;
    let Some(snap) = snap else { return Ok(()) };
    let mut q = conn.prepare_cached("SELECT chain, slot, embedding FROM gate_reservoir WHERE sensor_id = ?1")?;
    let rows = q.query_map([sensor], |r| {
        let b: Vec<u8> = r.get(2)?;
        let mut e = [0i8; 32];
        for (d, s) in e.iter_mut().zip(&b) {
            *d = *s as i8;
        }
        Ok((r.get::<_, i64>(0)? as u8, r.get::<_, i64>(1)? as u32, e))
    })?;
    let slots: Vec<_> = rows.collect::<rusqlite::Result<_>>()?;
    if let Err(e) = engine.load(sensor, &snap, &slots) {
        eprintln!("wirefold core: ALARM: sensor '{sensor}': {e}; its gates start from empty state");
    }
    Ok(())
}

fn write_ledger(conn: &Connection, c: &Cursor) -> rusqlite::Result<()> {
    let mut ins = conn.prepare_cached("INSERT OR REPLACE INTO ledger_pending (seq, line) VALUES (?1, ?2)")?;
    for (s, l) in &c.lines {
        ins.execute(params![*s as i64, l])?;
    }
    conn.execute(
        "INSERT INTO ledger_head (id, seq, hash) VALUES (1, ?1, ?2) ON CONFLICT(id) DO UPDATE SET seq = ?1, hash = ?2",
        params![c.head.seq as i64, c.head.hash],
    )?;
    Ok(())
}

fn write_state(conn: &Connection, engine: &GateEngine, sensor: &str, bd: &BatchDecisions) -> rusqlite::Result<()> {
    if let Some(snap) = engine.snapshot(sensor) {
        conn.execute(
            "INSERT INTO gate_state (sensor_id, snapshot) VALUES (?1, ?2) ON CONFLICT(sensor_id) DO UPDATE SET snapshot = ?2",
            params![sensor, snap],
        )?;
    }
    for c in &bd.replace_chains {
        conn.execute("DELETE FROM gate_reservoir WHERE sensor_id = ?1 AND chain = ?2", params![sensor, *c as i64])?;
    }
    let mut ins = conn.prepare_cached(
        "INSERT OR REPLACE INTO gate_reservoir (sensor_id, chain, slot, embedding) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for w in &bd.reservoir {
        let e: Vec<u8> = w.embedding.iter().map(|v| *v as u8).collect();
        ins.execute(params![sensor, w.chain as i64, w.slot as i64, e])?;
    }
    Ok(())
}

impl Promotion {
    /// Open the gates over `store`: load the stored configuration versions
    /// and every sensor's engine state, open (and repair) the ledger at
    /// `ledger`, and record `cfg` as a new version when it differs from the
    /// latest stored one.
    pub fn open(
        store: &mut Store,
        cfg: GatesConfig,
        ledger: &Path,
        reference: Option<DriftReference>,
    ) -> Result<Self, PromoteError> {
        let mut versions = Vec::new();
        for (v, json, cause) in store.gate_configs()? {
            let c = GatesConfig::from_json(&json).map_err(|e| PromoteError::Config(v, e.to_string()))?;
            versions.push((v, c, cause));
        }
        let mut engine = GateEngine::new(cfg.clone());
        engine.set_reference(reference);
        for s in store.gate_sensors()? {
            load_sensor(&mut engine, store.conn(), &s)?;
        }
        let head = store.ledger_head()?.unwrap_or_default();
        let pending = store.ledger_pending()?;
        let (writer, rep) = LedgerWriter::open(ledger, &head, &pending)?;
        if rep != Default::default() {
            eprintln!(
                "wirefold core: ledger {} repaired: cut a torn last line of {} bytes, re-appended {} entries from the database",
                ledger.display(),
                rep.torn_bytes,
                rep.reappended
            );
        }
        store.ledger_appended(head.seq)?;
        let mut p = Promotion { engine, versions, head, writer, metrics: GateMetrics::default(), shadows: Vec::new() };
        if p.versions.last().map(|(_, c, _)| c) != Some(&cfg) {
            // Start-up entries carry the latest batch time (deterministic), not the wall clock.
            let t = p.engine.status().iter().map(|s| s.time_ns).max().unwrap_or(0);
            let cause = if p.versions.is_empty() { "start" } else { "start: configuration changed" };
            p.new_version(store, cfg, cause.to_string(), t)?;
        }
        p.metrics.config_version = p.version();
        p.metrics.ledger_entries = p.head.seq;
        p.metrics.status = p.engine.status();
        Ok(p)
    }

    /// The configuration version in force.
    pub fn version(&self) -> u64 {
        self.versions.last().map_or(0, |v| v.0)
    }

    /// The engine.
    pub fn engine(&self) -> &GateEngine {
        &self.engine
    }

    /// The metrics so far.
    pub fn metrics(&self) -> &GateMetrics {
        &self.metrics
    }

    fn new_version(
        &mut self,
        store: &mut Store,
        cfg: GatesConfig,
        cause: String,
        time_ns: u64,
    ) -> rusqlite::Result<u64> {
        let v = self.version() + 1;
        let mut c = Cursor::new(self.head.clone());
        c.push(time_ns, "config", json!({"version": v, "cause": cause, "config": cfg.to_json()}));
        store.with_tx(|tx| {
            tx.execute(
                "INSERT INTO gate_config (version, config, cause) VALUES (?1, ?2, ?3)",
                params![v as i64, cfg.to_json(), cause],
            )?;
            write_ledger(tx, &c)
        })?;
        self.engine.set_config(cfg.clone());
        self.versions.push((v, cfg, cause));
        for run in &mut self.shadows {
            run.live_changed(v);
        }
        self.metrics.config_version = v;
        self.after(store, c);
        Ok(v)
    }

    fn after(&mut self, store: &Store, c: Cursor) {
        self.head = c.head.clone();
        self.metrics.ledger_entries = self.head.seq;
        let lines: Vec<String> = c.lines.into_iter().map(|(_, l)| l).collect();
        if let Err(e) = self.append_pending(store, lines) {
            self.metrics.ledger_errors += 1;
            eprintln!("wirefold core: LEDGER ERROR: {e}; the entries stay in the database and are appended later");
        }
    }

    fn append_pending(&mut self, store: &Store, lines: Vec<String>) -> Result<(), String> {
        if self.writer.head().seq + lines.len() as u64 != self.head.seq {
            // An earlier append failed: append everything still pending.
            let pending = store.ledger_pending().map_err(|e| e.to_string())?;
            let from = self.writer.head().seq;
            let missing: Vec<String> = pending.into_iter().filter(|(s, _)| *s > from).map(|(_, l)| l).collect();
            self.writer.append(&missing).map_err(|e| e.to_string())?;
        } else {
            self.writer.append(&lines).map_err(|e| e.to_string())?;
        }
        store.ledger_appended(self.writer.head().seq).map_err(|e| e.to_string())
    }

    /// Decide a new batch inside its transaction and write its promoted
    /// flows, the sensor's engine state and its ledger lines; the decisions
    /// are returned for the flows' rows (`Store::store_with` writes them).
    pub fn decide_in(
        &mut self,
        tx: &Connection,
        sensor: &str,
        seq: u64,
        flows: &[FlowRec],
    ) -> rusqlite::Result<(Prepared, Vec<DecisionCols>)> {
        if !self.engine.is_loaded(sensor) {
            load_sensor(&mut self.engine, tx, sensor)?;
        }
        let bd = self.engine.decide(sensor, flows);
        let mut shadows = Vec::new();
        for run in self.shadows.iter_mut().filter(|r| r.state == ShadowState::Running) {
            if !run.engine_mut().is_loaded(sensor) {
                load_sensor(run.engine_mut(), tx, sensor)?;
            }
            shadows.push((run.id, run.decide(sensor, seq, flows, &bd)));
        }
        let cfg = self.engine.config();
        let version = self.version();
        let t = bd.time_ns;
        let mut c = Cursor::new(self.head.clone());
        let mut counts: BTreeMap<(&'static str, &'static str, &'static str), u64> = BTreeMap::new();
        let (mut promoted, mut held) = (0u64, 0u64);
        let mut held_by: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut would: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut sampled = 0u64;
        let sensor_hash = sensor.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
        let modes = crate::gates::Gate::DECIDING.map(|g| (g, cfg.mode(g)));
        let mut cols = Vec::with_capacity(flows.len());
        {
            let mut prom =
                tx.prepare_cached("INSERT INTO promoted (sensor_id, seq, idx, time_ns) VALUES (?1, ?2, ?3, ?4)")?;
            for (i, (f, d)) in flows.iter().zip(&bd.decisions).enumerate() {
                let (gate, reason) = match d.held {
                    Some((g, r)) => (Some(g.name()), Some(r.to_string())),
                    None => (None, None),
                };
                let mut reached = true;
                for (g, m) in modes {
                    let key = match m {
                        Mode::Off => continue,
                        Mode::Enforce if !reached => (g.name(), "enforce", "not_reached"),
                        Mode::Enforce => match d.held {
                            Some((h, _)) if h == g => {
                                reached = false;
                                (g.name(), "enforce", "hold")
                            }
                            _ => (g.name(), "enforce", "pass"),
                        },
                        Mode::Shadow if d.shadow.contains(g) => (g.name(), "shadow", "would_hold"),
                        Mode::Shadow => (g.name(), "shadow", "pass"),
                    };
                    *counts.entry(key).or_default() += 1;
                }
                for g in d.shadow.iter() {
                    *would.entry(g.name()).or_default() += 1;
                }
                match d.verdict() {
                    Verdict::Promoted => {
                        promoted += 1;
                        prom.execute(params![sensor, seq as i64, i as i64, t as i64])?;
                        c.push(
                            t,
                            "promotion",
                            json!({
                                "sensor": sensor, "batch": seq, "idx": i, "score": f.score.to_string(),
                                "proto": f.proto, "src": ip(f, &f.src), "src_port": f.src_port,
                                "dst": ip(f, &f.dst), "dst_port": f.dst_port, "shadow": d.shadow.names(),
                            }),
                        );
                    }
                    Verdict::Held => {
                        held += 1;
                        let g = gate.unwrap_or("");
                        *held_by.entry(g).or_default() += 1;
                        if mix(seq ^ ((i as u64) << 40) ^ sensor_hash).is_multiple_of(cfg.ledger.hold_one_in as u64) {
                            sampled += 1;
                            c.push(
                                t,
                                "hold",
                                json!({"sensor": sensor, "batch": seq, "idx": i, "gate": g, "reason": reason.as_deref().unwrap_or("")}),
                            );
                        }
                    }
                }
                cols.push(DecisionCols {
                    verdict: d.verdict().name(),
                    gate,
                    reason,
                    shadow: d.shadow.names(),
                    shadow_reason: d.shadow_reason.map(|r| r.to_string()),
                    config_version: version,
                });
            }
        }
        for a in &bd.alerts {
            let v = &a.values;
            c.push(
                t,
                "drift_alert",
                json!({
                    "sensor": a.sensor, "cause": a.cause, "window_start_ns": v.window_start_ns, "flows": v.flows,
                    "promoted": v.promoted, "psi_ref_max": format!("{:.6}", v.psi_ref_max),
                    "psi_ref_mean": format!("{:.6}", v.psi_ref_mean), "worst_dim": v.worst_dim,
                    "psi_prev_max": format!("{:.6}", v.psi_prev_max), "score_psi": format!("{:.6}", v.score_psi),
                    "top_share": format!("{:.6}", v.top_share), "hhi": format!("{:.6}", v.hhi),
                    "gates_to_shadow": a.gates_to_shadow,
                }),
            );
        }
        c.push(
            t,
            "batch",
            json!({
                "sensor": sensor, "batch": seq, "flows": flows.len(), "promoted": promoted, "held": held_by,
                "holds_sampled": sampled, "holds_counted_only": held - sampled, "shadow_would_hold": would,
                "config_version": version,
            }),
        );
        write_state(tx, &self.engine, sensor, &bd)?;
        write_ledger(tx, &c)?;
        Ok((
            Prepared {
                sensor: sensor.to_string(),
                head: c.head.clone(),
                lines: c.lines,
                counts: counts.into_iter().collect(),
                promoted,
                held,
                alerts: bd.alerts.len() as u64,
                shadows,
            },
            cols,
        ))
    }

    /// The batch committed: append its ledger lines and count.
    pub fn committed(&mut self, store: &Store, p: Prepared) {
        let c = Cursor { head: p.head, lines: p.lines };
        self.after(store, c);
        for (k, v) in p.counts {
            *self.metrics.decisions.entry(k).or_default() += v;
        }
        *self.metrics.verdicts.entry((p.sensor.clone(), "promoted")).or_default() += p.promoted;
        *self.metrics.verdicts.entry((p.sensor.clone(), "held")).or_default() += p.held;
        if p.alerts > 0 {
            *self.metrics.alerts.entry(p.sensor.clone()).or_default() += p.alerts;
        }
        self.metrics.status = self.engine.status();
        for (id, r) in p.shadows {
            if let Some(run) = self.shadows.iter_mut().find(|s| s.id == id) {
                run.commit(r);
            }
        }
    }

    /// Start a live shadow run of `proposed` over the next `batches` stored
    /// batches. Refused when [`MAX_SHADOW_RUNS`] are running; the oldest
    /// finished run makes room otherwise.
    pub fn start_shadow(&mut self, id: u64, batches: u64, proposed: GatesConfig) -> Result<(), String> {
        if self.shadows.len() >= MAX_SHADOW_RUNS {
            match self.shadows.iter().position(|r| r.state != ShadowState::Running) {
                Some(i) => {
                    self.shadows.remove(i);
                }
                None => return Err(format!("{MAX_SHADOW_RUNS} proposals are being evaluated already")),
            }
        }
        self.shadows.push(ShadowRun::new(id, self.version(), batches, &self.engine, proposed));
        Ok(())
    }

    /// A shadow run by proposal id.
    pub fn shadow(&self, id: u64) -> Option<&ShadowRun> {
        self.shadows.iter().find(|r| r.id == id)
    }

    /// Drop a shadow run (its proposal was applied).
    pub fn end_shadow(&mut self, id: u64) {
        self.shadows.retain(|r| r.id != id);
    }

    /// The batch's transaction failed: forget the sensor's state in memory
    /// (it is loaded again from what was committed).
    pub fn failed(&mut self, sensor: &str) {
        self.engine.forget(sensor);
        for run in &mut self.shadows {
            run.forget(sensor);
        }
    }

    /// Record a generic action (admin or agent) in the ledger.
    pub fn record_action(
        &mut self,
        store: &mut Store,
        actor: &str,
        action: &str,
        detail: serde_json::Value,
        wall_ns: u64,
    ) -> rusqlite::Result<()> {
        let mut c = Cursor::new(self.head.clone());
        c.push(wall_ns, "action", json!({"actor": actor, "action": action, "detail": detail}));
        store.with_tx(|tx| write_ledger(tx, &c))?;
        self.after(store, c);
        Ok(())
    }

    fn refused(
        &mut self,
        store: &mut Store,
        cmd: &AdminCommand,
        error: String,
        wall_ns: u64,
    ) -> Result<String, String> {
        let mut c = Cursor::new(self.head.clone());
        c.push(
            wall_ns,
            "admin_refused",
            json!({"command": serde_json::to_string(cmd).unwrap_or_default(), "error": error}),
        );
        match store.with_tx(|tx| write_ledger(tx, &c)) {
            Ok(()) => self.after(store, c),
            Err(e) => eprintln!("wirefold core: cannot record a refused admin command: {e}"),
        }
        Err(error)
    }

    /// Answer an admin command (admin entries carry the wall clock `wall_ns`).
    pub fn admin(&mut self, store: &mut Store, cmd: AdminCommand, wall_ns: u64) -> Result<String, String> {
        match &cmd {
            AdminCommand::Show => Ok(self.show()),
            AdminCommand::Set { gate, key, value } => match self.engine.config().with_field(gate, key, value) {
                Err(e) => self.refused(store, &cmd, e.to_string(), wall_ns),
                Ok(c) if c == *self.engine.config() => {
                    Ok(json!({"version": self.version(), "changed": false}).to_string())
                }
                Ok(c) => {
                    let v = self
                        .new_version(store, c, format!("set gates.{gate}.{key} = {value}"), wall_ns)
                        .map_err(|e| format!("database error: {e}"))?;
                    Ok(json!({"version": v, "changed": true}).to_string())
                }
            },
            AdminCommand::Rollback { version } => {
                let Some((_, c, _)) = self.versions.iter().find(|(v, _, _)| v == version).cloned() else {
                    let have: Vec<u64> = self.versions.iter().map(|v| v.0).collect();
                    return self.refused(
                        store,
                        &cmd,
                        format!("no configuration version {version}; versions: {have:?}"),
                        wall_ns,
                    );
                };
                let v = self
                    .new_version(store, c, format!("rollback to version {version}"), wall_ns)
                    .map_err(|e| format!("database error: {e}"))?;
                Ok(json!({"version": v, "restored": version}).to_string())
            }
            AdminCommand::Ack { sensor } => {
                if !self.engine.is_loaded(sensor) {
                    let _ = load_sensor(&mut self.engine, store.conn(), sensor);
                }
                if !self.engine.acknowledge_drift(sensor) {
                    return self.refused(store, &cmd, format!("no gate state for sensor '{sensor}'"), wall_ns);
                }
                let mut c = Cursor::new(self.head.clone());
                c.push(wall_ns, "drift_ack", json!({"sensor": sensor}));
                let snap = self.engine.snapshot(sensor);
                let r = store.with_tx(|tx| {
                    if let Some(s) = &snap {
                        tx.execute("UPDATE gate_state SET snapshot = ?2 WHERE sensor_id = ?1", params![sensor, s])?;
                    }
                    write_ledger(tx, &c)
                });
                if let Err(e) = r {
                    self.engine.forget(sensor);
                    return Err(format!("database error: {e}"));
                }
                self.after(store, c);
                self.metrics.status = self.engine.status();
                Ok(json!({"acknowledged": sensor}).to_string())
            }
        }
    }

    fn show(&self) -> String {
        let sensors: Vec<serde_json::Value> = self
            .engine
            .status()
            .iter()
            .map(|s| {
                json!({
                    "sensor": s.sensor, "time_ns": s.time_ns, "reservoir": s.reservoir_len,
                    "reservoir_cap": s.reservoir_cap, "budget_remaining": s.budget_remaining.floor() as u64,
                    "burst_classes": s.burst_classes, "drift_reference": s.drift_reference,
                    "drift_alerted": s.drift_alerted, "forced_shadow": s.forced_shadow,
                    "drift_psi_ref_max": s.drift.map(|d| d.psi_ref_max), "drift_top_share": s.drift.map(|d| d.top_share),
                })
            })
            .collect();
        let history: Vec<serde_json::Value> =
            self.versions.iter().map(|(v, _, cause)| json!({"version": v, "cause": cause})).collect();
        json!({
            "version": self.version(),
            "describe": self.engine.config().describe(),
            "config": serde_json::to_value(self.engine.config()).unwrap_or_default(),
            "history": history,
            "sensors": sensors,
            "ledger": {"path": self.writer.path().display().to_string(), "seq": self.head.seq, "head": self.head.hash},
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows(seq: u64) -> Vec<FlowRec> {
        (0..20u8)
            .map(|i| {
                let mut f = FlowRec {
                    ip_version: 4,
                    proto: 6,
                    dst_port: 80,
                    fwd_packets: 1,
                    fwd_bytes: 60,
                    last_ns: seq * 1_000_000_000,
                    score: (i as f32) / 20.0,
                    ..Default::default()
                };
                f.embedding = [(i as i8).wrapping_mul(13).wrapping_add(seq as i8); 32];
                f
            })
            .collect()
    }

    /// Run batches 1..=6; with `crash`, the process "dies" after batch 3's
    /// commit and before its ledger append (the lines are only in the
    /// database), and a new `Promotion` is opened over the same files.
    fn run(name: &str, crash: bool) -> (String, Vec<u8>) {
        let d = std::env::temp_dir().join(format!("wirefold-promote-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let (db, ledger) = (d.join("c.db"), d.join("c.db.ledger.jsonl"));
        let mut store = Store::open(&db, false).unwrap();
        let mut p = Promotion::open(&mut store, GatesConfig::default(), &ledger, None).unwrap();
        for seq in 1..=6u64 {
            let f = flows(seq);
            let (_, prep) =
                store.store_with("s", seq, &[seq as u8; 32], &f, 0, |tx| p.decide_in(tx, "s", seq, &f)).unwrap();
            if crash && seq == 3 {
                drop(prep);
                drop(p);
                // A torn write of a later line, too.
                std::fs::OpenOptions::new().append(true).open(&ledger).unwrap().write_all(b"{\"seq\":99,\"ti").unwrap();
                p = Promotion::open(&mut store, GatesConfig::default(), &ledger, None).unwrap();
            } else {
                p.committed(&store, prep.unwrap());
            }
        }
        let mut q =
            store.conn().prepare("SELECT seq, idx, verdict, gate, reason FROM decisions ORDER BY seq, idx").unwrap();
        let rows: Vec<String> = q
            .query_map([], |r| {
                Ok(format!(
                    "{}:{}:{}:{:?}:{:?}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?
                ))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        crate::ledger::verify(&ledger, store.ledger_head().unwrap().as_ref()).unwrap();
        (rows.join("\n"), std::fs::read(&ledger).unwrap())
    }

    use std::io::Write;

    #[test]
    fn a_crash_between_commit_and_ledger_append_is_repaired_on_start() {
        let (d1, l1) = run("clean", false);
        let (d2, l2) = run("crash", true);
        assert_eq!(d1, d2);
        assert_eq!(l1, l2, "the repaired ledger equals the uninterrupted one");
    }

    #[test]
    fn shadow_runs_are_bounded_finished_ones_make_room_and_a_config_change_makes_them_stale() {
        let d = std::env::temp_dir().join(format!("wirefold-promote-{}-shadows", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let mut store = Store::open(&d.join("c.db"), false).unwrap();
        let mut p = Promotion::open(&mut store, GatesConfig::default(), &d.join("c.db.ledger.jsonl"), None).unwrap();
        for id in 1..=MAX_SHADOW_RUNS as u64 {
            p.start_shadow(id, if id == 1 { 1 } else { 100 }, GatesConfig::default()).unwrap();
        }
        let e = p.start_shadow(99, 1, GatesConfig::default()).unwrap_err();
        assert!(e.contains("being evaluated already"), "{e}");
        // One batch finishes run 1 (it wanted one); then there is room.
        let f = flows(1);
        let (_, prep) = store.store_with("s", 1, &[1; 32], &f, 0, |tx| p.decide_in(tx, "s", 1, &f)).unwrap();
        p.committed(&store, prep.unwrap());
        assert_eq!(p.shadow(1).unwrap().state, ShadowState::Done);
        assert_eq!(p.shadow(2).unwrap().report.batches, 1);
        p.start_shadow(99, 1, GatesConfig::default()).unwrap();
        assert!(p.shadow(1).is_none(), "the finished run made room");
        // A new configuration version makes the running ones stale.
        p.admin(
            &mut store,
            AdminCommand::Set { gate: "score".into(), key: "threshold".into(), value: "0.7".into() },
            0,
        )
        .unwrap();
        assert_eq!(p.shadow(2).unwrap().state, ShadowState::Stale);
    }
}
