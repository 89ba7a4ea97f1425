//! The embedded store: SQLite (WAL) with one transaction per batch, holding
//! the batch's flows and the sensor's last sequence number together.
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use wirefold_schema::FlowRec;

/// What storing a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// New flows committed; the sensor's last sequence number is now this.
    Committed(u64),
    /// Already stored (a resend): nothing changed; the last sequence number.
    Duplicate(u64),
}

/// Why a batch was refused by the store's sequence discipline: the batch's
/// own fault, final for the sensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Farther ahead than any sensor could have numbered it.
    #[error("sequence number {seq} is too far ahead: the last stored is {last}, the most accepted now is {limit}")]
    TooFarAhead {
        /// The batch's number.
        seq: u64,
        /// The sensor's last stored number.
        last: u64,
        /// The largest number accepted now.
        limit: u64,
    },
    /// A resend whose content differs from what was stored under its number.
    #[error(
        "sequence number {seq} was stored with other content (digest {stored}, this batch {got}): conflicting resend"
    )]
    Conflict {
        /// The batch's number.
        seq: u64,
        /// Digest prefix of the stored batch.
        stored: String,
        /// Digest prefix of this batch.
        got: String,
    },
    /// Below the last stored number and never stored: sequence numbers must increase.
    #[error("sequence number {seq} is below the last stored ({last}) and was never stored: out of order")]
    OutOfOrder {
        /// The batch's number.
        seq: u64,
        /// The sensor's last stored number.
        last: u64,
    },
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The batch is refused (its own fault; final).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database failed (the core's fault; retried, never final).
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
}

/// A new sensor's first batch may be numbered up to this far past the
/// core's clock in microseconds (new spools number from the clock).
pub const SEQ_CLOCK_SKEW_US: u64 = 86_400 * 1_000_000;
/// How far past the last stored number a batch may jump (gaps come from
/// batches refused or dropped at the sensor).
pub const SEQ_MAX_JUMP: u64 = 1 << 32;
/// Sequence numbers are below this (63 bits: they are stored as SQLite integers).
pub const SEQ_LIMIT: u64 = 1 << 63;

/// The largest sequence number accepted now after `last`.
pub fn seq_limit(last: u64, now_ns: u64) -> u64 {
    last.saturating_add(SEQ_MAX_JUMP).max((now_ns / 1000).saturating_add(SEQ_CLOCK_SKEW_US)).min(SEQ_LIMIT - 1)
}

fn hex8(d: &[u8]) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Stored {
    /// The sensor's highest durable sequence number after this batch.
    pub fn last_seq(self) -> u64 {
        match self {
            Stored::Committed(s) | Stored::Duplicate(s) => s,
        }
    }
}

/// The store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sensors (
    sensor_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    last_contact_ns INTEGER NOT NULL,
    state TEXT NOT NULL,
    batches INTEGER NOT NULL DEFAULT 0,
    flows INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS flows (
    sensor_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    ip_version INTEGER NOT NULL,
    src_ip BLOB NOT NULL,
    dst_ip BLOB NOT NULL,
    src_port INTEGER NOT NULL,
    dst_port INTEGER NOT NULL,
    proto INTEGER NOT NULL,
    vlan INTEGER,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    fwd_packets INTEGER NOT NULL,
    fwd_bytes INTEGER NOT NULL,
    rev_packets INTEGER NOT NULL,
    rev_bytes INTEGER NOT NULL,
    tcp_flags INTEGER NOT NULL,
    end_reason INTEGER NOT NULL,
    score REAL NOT NULL,
    embedding BLOB NOT NULL,
    verdict TEXT,
    gate TEXT,
    reason TEXT,
    shadow TEXT,
    shadow_reason TEXT,
    config_version INTEGER,
    PRIMARY KEY (sensor_id, seq, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flow_info (
    sensor_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    app TEXT NOT NULL,
    server_name TEXT,
    ja4 TEXT,
    dns_qname TEXT,
    http_host TEXT,
    PRIMARY KEY (sensor_id, seq, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    sensor_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    digest BLOB NOT NULL,
    flows INTEGER NOT NULL,
    stored_ns INTEGER NOT NULL,
    PRIMARY KEY (sensor_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS promoted (
    sensor_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    PRIMARY KEY (sensor_id, seq, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gate_state (
    sensor_id TEXT PRIMARY KEY,
    snapshot BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS gate_reservoir (
    sensor_id TEXT NOT NULL,
    chain INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    embedding BLOB NOT NULL,
    PRIMARY KEY (sensor_id, chain, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gate_config (
    version INTEGER PRIMARY KEY,
    config TEXT NOT NULL,
    cause TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_pending (
    seq INTEGER PRIMARY KEY,
    line TEXT NOT NULL
);
-- For the agent API's queries (docs/agent-api.md): flows by time, by sensor and time; decisions by verdict.
CREATE INDEX IF NOT EXISTS flows_by_time ON flows (last_ns);
DROP INDEX IF EXISTS flows_by_sensor_time;
DROP INDEX IF EXISTS decisions_by_verdict;
";

/// The gates' decision of each flow lives in its `flows` row (one row per
/// flow, not two); `decisions` is a view of those columns for readers.
/// A database from before that has a `decisions` table: its rows move into
/// `flows` once, on open.
const DECISION_COLUMNS: [(&str, &str); 6] = [
    ("verdict", "TEXT"),
    ("gate", "TEXT"),
    ("reason", "TEXT"),
    ("shadow", "TEXT"),
    ("shadow_reason", "TEXT"),
    ("config_version", "INTEGER"),
];

fn migrate_decisions(conn: &Connection) -> rusqlite::Result<()> {
    let have: Vec<String> = {
        let mut q = conn.prepare("SELECT name FROM pragma_table_info('flows')")?;
        let v = q.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        v
    };
    for (c, t) in DECISION_COLUMNS {
        if !have.iter().any(|h| h == c) {
            conn.execute_batch(&format!("ALTER TABLE flows ADD COLUMN {c} {t}"))?;
        }
    }
    let table: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'decisions')",
        [],
        |r| r.get(0),
    )?;
    if table {
        conn.execute_batch(
            "BEGIN;
             UPDATE flows SET (verdict, gate, reason, shadow, shadow_reason, config_version) =
               (SELECT d.verdict, d.gate, d.reason, d.shadow, d.shadow_reason, d.config_version FROM decisions d
                WHERE d.sensor_id = flows.sensor_id AND d.seq = flows.seq AND d.idx = flows.idx)
             WHERE EXISTS (SELECT 1 FROM decisions d WHERE d.sensor_id = flows.sensor_id AND d.seq = flows.seq AND d.idx = flows.idx);
             DROP TABLE decisions;
             COMMIT;",
        )?;
    }
    conn.execute_batch(
        "CREATE VIEW IF NOT EXISTS decisions AS
         SELECT sensor_id, seq, idx, verdict, gate, reason, shadow, shadow_reason, config_version
         FROM flows WHERE verdict IS NOT NULL",
    )
}

/// A flow's decision, written into its `flows` row.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionCols {
    /// `promoted` or `held`.
    pub verdict: &'static str,
    /// The gate that held it.
    pub gate: Option<&'static str>,
    /// Why.
    pub reason: Option<String>,
    /// Shadow gates that would have held it (comma-separated; empty: none).
    pub shadow: String,
    /// The first shadow gate's reason.
    pub shadow_reason: Option<String>,
    /// The configuration version that decided it.
    pub config_version: u64,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl Store {
    /// Open (or create) the database at `path`. `full_sync` makes every
    /// commit survive power loss (fsync); otherwise commits survive a
    /// process crash (WAL, synchronous=NORMAL).
    pub fn open(path: &Path, full_sync: bool) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if full_sync { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "busy_timeout", 2000)?;
        conn.execute_batch(SCHEMA)?;
        migrate_decisions(&conn)?;
        Ok(Store { conn })
    }

    /// The highest stored sequence number of a sensor (0 if none).
    pub fn last_seq(&self, sensor: &str) -> rusqlite::Result<u64> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT last_seq FROM sensors WHERE sensor_id = ?1", [sensor], |r| r.get(0))
            .optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Store one batch, its digest and the sensor's sequence number in one
    /// transaction, under the sequence discipline: a number above the last
    /// stored (and within [`seq_limit`]) is committed; one at or below it is
    /// a resend, acknowledged when its digest equals the stored one and
    /// refused otherwise. `now_ns` is the core's clock (Unix ns).
    pub fn store(
        &mut self,
        sensor: &str,
        seq: u64,
        digest: &[u8; 32],
        flows: &[FlowRec],
        now_ns: u64,
    ) -> Result<Stored, StoreError> {
        self.store_with(sensor, seq, digest, flows, now_ns, |_| Ok(((), Vec::new()))).map(|(s, _)| s)
    }

    /// [`Store::store`] with more work in the same transaction: `extra`
    /// runs only for a batch that is new (after the duplicate check, before
    /// its flows are inserted) and its result is returned with the outcome;
    /// the decisions it returns (one per flow, in order, or none) are
    /// written into the flows' rows. It is how the gate engine decides a
    /// batch exactly once: a resend is answered before `extra` would run.
    pub fn store_with<R>(
        &mut self,
        sensor: &str,
        seq: u64,
        digest: &[u8; 32],
        flows: &[FlowRec],
        now_ns: u64,
        extra: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<(R, Vec<DecisionCols>)>,
    ) -> Result<(Stored, Option<R>), StoreError> {
        let tx = self.conn.transaction()?;
        let last: u64 = tx
            .query_row("SELECT last_seq FROM sensors WHERE sensor_id = ?1", [sensor], |r| r.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0) as u64;
        if seq <= last {
            let stored: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT digest FROM batches WHERE sensor_id = ?1 AND seq = ?2",
                    params![sensor, seq as i64],
                    |r| r.get(0),
                )
                .optional()?;
            match stored {
                Some(d) if d[..] == digest[..] => {}
                Some(d) => return Err(Refusal::Conflict { seq, stored: hex8(&d), got: hex8(digest) }.into()),
                None => {
                    // A database written before digests were kept: take it for a resend.
                    let any: bool =
                        tx.query_row("SELECT EXISTS(SELECT 1 FROM batches WHERE sensor_id = ?1)", [sensor], |r| {
                            r.get(0)
                        })?;
                    if any {
                        return Err(Refusal::OutOfOrder { seq, last }.into());
                    }
                }
            }
            // Touch the contact time only; the batch is already stored.
            tx.execute(
                "UPDATE sensors SET last_contact_ns = ?2, state = 'live' WHERE sensor_id = ?1",
                params![sensor, now_ns as i64],
            )?;
            tx.commit()?;
            return Ok((Stored::Duplicate(last), None));
        }
        let limit = seq_limit(last, now_ns);
        if seq > limit {
            return Err(Refusal::TooFarAhead { seq, last, limit }.into());
        }
        tx.execute(
            "INSERT INTO batches (sensor_id, seq, digest, flows, stored_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sensor, seq as i64, &digest[..], flows.len() as i64, now_ns as i64],
        )?;
        let (r, decided) = extra(&tx)?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO flows (sensor_id, seq, idx, ip_version, src_ip, dst_ip, src_port, dst_port, proto, vlan,
                 first_ns, last_ns, fwd_packets, fwd_bytes, rev_packets, rev_bytes, tcp_flags, end_reason, score, embedding,
                 verdict, gate, reason, shadow, shadow_reason, config_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
                 ?21, ?22, ?23, ?24, ?25, ?26)",
            )?;
            for (i, f) in flows.iter().enumerate() {
                let alen = if f.ip_version == 4 { 4 } else { 16 };
                let emb: [u8; 32] = f.embedding.map(|v| v as u8);
                let d = decided.get(i);
                ins.execute(params![
                    sensor,
                    seq as i64,
                    i as i64,
                    f.ip_version,
                    &f.src[..alen],
                    &f.dst[..alen],
                    f.src_port,
                    f.dst_port,
                    f.proto,
                    f.vlan,
                    f.first_ns as i64,
                    f.last_ns as i64,
                    f.fwd_packets,
                    f.fwd_bytes as i64,
                    f.rev_packets,
                    f.rev_bytes as i64,
                    f.tcp_flags,
                    f.end_reason,
                    f.score as f64,
                    &emb[..],
                    d.map(|d| d.verdict),
                    d.and_then(|d| d.gate),
                    d.and_then(|d| d.reason.as_deref()),
                    d.map(|d| d.shadow.as_str()),
                    d.and_then(|d| d.shadow_reason.as_deref()),
                    d.map(|d| d.config_version as i64),
                ])?;
            }
        }
        tx.execute(
            "INSERT INTO sensors (sensor_id, last_seq, last_contact_ns, state, batches, flows) VALUES (?1, ?2, ?3, 'live', 1, ?4)
             ON CONFLICT(sensor_id) DO UPDATE SET last_seq = ?2, last_contact_ns = ?3, state = 'live',
             batches = batches + 1, flows = flows + ?4",
            params![sensor, seq as i64, now_ns as i64, flows.len() as i64],
        )?;
        tx.commit()?;
        Ok((Stored::Committed(seq), Some(r)))
    }

    /// Run `f` in one transaction (configuration versions, admin actions).
    pub fn with_tx<R>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        let tx = self.conn.transaction()?;
        let r = f(&tx)?;
        tx.commit()?;
        Ok(r)
    }

    /// The connection (read-only use: status and tests).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The ledger head the database records (`None`: no entry yet).
    pub fn ledger_head(&self) -> rusqlite::Result<Option<crate::ledger::LedgerHead>> {
        self.conn
            .query_row("SELECT seq, hash FROM ledger_head WHERE id = 1", [], |r| {
                Ok(crate::ledger::LedgerHead { seq: r.get::<_, i64>(0)? as u64, hash: r.get(1)? })
            })
            .optional()
    }

    /// Ledger lines committed but not yet known to be in the file.
    pub fn ledger_pending(&self) -> rusqlite::Result<Vec<(u64, String)>> {
        let mut q = self.conn.prepare("SELECT seq, line FROM ledger_pending ORDER BY seq")?;
        let rows = q.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        rows.collect()
    }

    /// The file holds every line up to `seq`: forget them here.
    pub fn ledger_appended(&self, seq: u64) -> rusqlite::Result<()> {
        self.conn.execute("DELETE FROM ledger_pending WHERE seq <= ?1", [seq as i64])?;
        Ok(())
    }

    /// Configuration versions (version, JSON, cause), oldest first.
    pub fn gate_configs(&self) -> rusqlite::Result<Vec<(u64, String, String)>> {
        let mut q = self.conn.prepare("SELECT version, config, cause FROM gate_config ORDER BY version")?;
        let rows = q.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    }

    /// Every sensor's gate snapshot.
    pub fn gate_sensors(&self) -> rusqlite::Result<Vec<String>> {
        let mut q = self.conn.prepare("SELECT sensor_id FROM gate_state ORDER BY sensor_id")?;
        let rows = q.query_map([], |r| r.get(0))?;
        rows.collect()
    }

    /// Mark sensors stale (no contact for `stale_ns`) or offline (`offline_ns`).
    pub fn update_states(&self, stale_ns: i64, offline_ns: i64) -> rusqlite::Result<()> {
        let now = now_ns();
        self.conn.execute(
            "UPDATE sensors SET state = CASE WHEN ?1 - last_contact_ns >= ?3 THEN 'offline'
                                             WHEN ?1 - last_contact_ns >= ?2 THEN 'stale' ELSE 'live' END",
            params![now, stale_ns, offline_ns],
        )?;
        Ok(())
    }

    /// Record a sensor's contact (a stream opened).
    pub fn touch(&self, sensor: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO sensors (sensor_id, last_seq, last_contact_ns, state) VALUES (?1, 0, ?2, 'live')
             ON CONFLICT(sensor_id) DO UPDATE SET last_contact_ns = ?2, state = 'live'",
            params![sensor, now_ns()],
        )?;
        Ok(())
    }

    /// Flows stored for a sensor.
    pub fn flow_count(&self, sensor: &str) -> rusqlite::Result<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM flows WHERE sensor_id = ?1", [sensor], |r| r.get::<_, i64>(0))
            .map(|v| v as u64)
    }
}

/// Store the inspection facts of a batch's flows (schema version 3), in
/// the batch's transaction; a flow without facts has no row.
pub fn insert_info(
    tx: &rusqlite::Transaction<'_>,
    sensor: &str,
    seq: u64,
    info: &[wirefold_schema::FlowInfoRec],
) -> rusqlite::Result<()> {
    if info.is_empty() {
        return Ok(());
    }
    let mut ins = tx.prepare_cached(
        "INSERT OR REPLACE INTO flow_info (sensor_id, seq, idx, app, server_name, ja4, dns_qname, http_host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    for x in info {
        ins.execute(params![
            sensor,
            seq as i64,
            x.index as i64,
            wirefold_schema::APPS.get(x.app as usize).copied().unwrap_or("unknown"),
            opt(&x.server_name),
            opt(&x.ja4),
            opt(&x.dns_qname),
            opt(&x.http_host),
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(i: u8) -> FlowRec {
        let mut f = FlowRec {
            ip_version: 4,
            src_port: 1000 + i as u16,
            dst_port: 80,
            proto: 6,
            fwd_packets: 1,
            ..Default::default()
        };
        f.src[..4].copy_from_slice(&[10, 0, 0, i]);
        f
    }

    const NOW: u64 = 1_700_000_000_000_000_000;

    #[test]
    fn seq_limit_allows_a_clock_numbered_spool_and_nothing_wild() {
        let now_us = NOW / 1000;
        assert!(seq_limit(0, NOW) >= now_us + SEQ_CLOCK_SKEW_US);
        assert!(seq_limit(0, NOW) < 1_000_000_000_000_000_000);
        assert_eq!(seq_limit(u64::MAX - 1, NOW), SEQ_LIMIT - 1);
        assert_eq!(seq_limit(5 * now_us, NOW), 5 * now_us + SEQ_MAX_JUMP);
    }

    #[test]
    fn a_resent_batch_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("wirefold-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let _ = std::fs::remove_file(&db);
        let mut s = Store::open(&db, false).unwrap();
        assert_eq!(s.last_seq("a").unwrap(), 0);
        let (d1, d2) = ([1u8; 32], [2u8; 32]);
        assert_eq!(s.store("a", 1, &d1, &[flow(1), flow(2)], NOW).unwrap(), Stored::Committed(1));
        assert_eq!(s.store("a", 1, &d1, &[flow(1), flow(2)], NOW).unwrap(), Stored::Duplicate(1));
        assert_eq!(s.store("a", 2, &d2, &[flow(3)], NOW).unwrap(), Stored::Committed(2));
        assert_eq!(s.store("b", 1, &d1, &[flow(9)], NOW).unwrap(), Stored::Committed(1));
        assert_eq!(s.flow_count("a").unwrap(), 3);
        drop(s);
        // Reopened (as after a crash), the state is what was committed.
        let s = Store::open(&db, false).unwrap();
        assert_eq!(s.last_seq("a").unwrap(), 2);
        assert_eq!(s.flow_count("b").unwrap(), 1);
        s.update_states(0, i64::MAX).unwrap();
        let st: String = s.conn.query_row("SELECT state FROM sensors WHERE sensor_id = 'a'", [], |r| r.get(0)).unwrap();
        assert_eq!(st, "stale");
        drop(s);
        let mut s = Store::open(&db, false).unwrap();
        // A resend with other content, a gap filled late, a number from nowhere.
        let e = s.store("a", 2, &d1, &[flow(3)], NOW).unwrap_err();
        assert!(matches!(e, StoreError::Refused(Refusal::Conflict { seq: 2, .. })), "{e}");
        assert!(s.store("a", 10, &d1, &[flow(4)], NOW).is_ok());
        let e = s.store("a", 5, &d1, &[flow(5)], NOW).unwrap_err();
        assert!(matches!(e, StoreError::Refused(Refusal::OutOfOrder { seq: 5, last: 10 })), "{e}");
        let e = s.store("a", 1_000_000_000_000_000_000, &d1, &[flow(5)], NOW).unwrap_err();
        assert!(matches!(e, StoreError::Refused(Refusal::TooFarAhead { .. })), "{e}");
        assert_eq!(s.last_seq("a").unwrap(), 10, "refusals change nothing");
        assert_eq!(s.flow_count("a").unwrap(), 4);
    }

    #[test]
    fn a_database_with_a_decisions_table_moves_its_rows_into_flows_on_open() {
        let dir = std::env::temp_dir().join(format!("wirefold-store-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        {
            // The layout before decisions moved into flows.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE flows (sensor_id TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL,
                   ip_version INTEGER NOT NULL, src_ip BLOB NOT NULL, dst_ip BLOB NOT NULL, src_port INTEGER NOT NULL,
                   dst_port INTEGER NOT NULL, proto INTEGER NOT NULL, vlan INTEGER, first_ns INTEGER NOT NULL,
                   last_ns INTEGER NOT NULL, fwd_packets INTEGER NOT NULL, fwd_bytes INTEGER NOT NULL,
                   rev_packets INTEGER NOT NULL, rev_bytes INTEGER NOT NULL, tcp_flags INTEGER NOT NULL,
                   end_reason INTEGER NOT NULL, score REAL NOT NULL, embedding BLOB NOT NULL,
                   PRIMARY KEY (sensor_id, seq, idx)) WITHOUT ROWID;
                 CREATE TABLE decisions (sensor_id TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL,
                   verdict TEXT NOT NULL, gate TEXT, reason TEXT, shadow TEXT NOT NULL, shadow_reason TEXT,
                   config_version INTEGER NOT NULL, PRIMARY KEY (sensor_id, seq, idx)) WITHOUT ROWID;
                 INSERT INTO flows VALUES ('s', 1, 0, 4, x'0a000001', x'0a000002', 1, 80, 6, NULL, 1, 2, 1, 60, 0, 0, 2, 1, 0.25, zeroblob(32));
                 INSERT INTO flows VALUES ('s', 1, 1, 4, x'0a000001', x'0a000002', 2, 80, 6, NULL, 1, 2, 1, 60, 0, 0, 2, 1, 0.75, zeroblob(32));
                 INSERT INTO decisions VALUES ('s', 1, 0, 'held', 'score', 'score 0.25 < 0.5', '', NULL, 1);
                 INSERT INTO decisions VALUES ('s', 1, 1, 'promoted', NULL, NULL, 'novelty', 'near', 1);",
            )
            .unwrap();
        }
        let mut st = Store::open(&path, false).unwrap();
        type Row = (i64, String, Option<String>, String, Option<String>);
        let rows: Vec<Row> = {
            let mut q = st
                .conn()
                .prepare("SELECT idx, verdict, gate, shadow, shadow_reason FROM decisions ORDER BY idx")
                .unwrap();
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert_eq!(
            rows,
            [
                (0, "held".into(), Some("score".into()), String::new(), None),
                (1, "promoted".into(), None, "novelty".into(), Some("near".into()))
            ]
        );
        let kind: String =
            st.conn().query_row("SELECT type FROM sqlite_master WHERE name = 'decisions'", [], |r| r.get(0)).unwrap();
        assert_eq!(kind, "view");
        // New batches write their decisions into their rows; opening again changes nothing.
        let d = DecisionCols {
            verdict: "held",
            gate: Some("budget"),
            reason: Some("spent".into()),
            shadow: String::new(),
            shadow_reason: None,
            config_version: 2,
        };
        st.store_with("t", 1, &[1; 32], &[flow(1)], 10, |_| Ok(((), vec![d]))).unwrap();
        drop(st);
        let st = Store::open(&path, false).unwrap();
        let n: i64 = st.conn().query_row("SELECT COUNT(*) FROM decisions", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3);
        let g: String =
            st.conn().query_row("SELECT gate FROM decisions WHERE sensor_id = 't'", [], |r| r.get(0)).unwrap();
        assert_eq!(g, "budget");
    }
}
