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
    PRIMARY KEY (sensor_id, seq, idx)
) WITHOUT ROWID;
";

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
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.execute_batch(SCHEMA)?;
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

    /// Store one batch and the sensor's sequence number in one transaction.
    pub fn store(&mut self, sensor: &str, seq: u64, flows: &[FlowRec]) -> rusqlite::Result<Stored> {
        let tx = self.conn.transaction()?;
        let last: u64 = tx
            .query_row("SELECT last_seq FROM sensors WHERE sensor_id = ?1", [sensor], |r| r.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0) as u64;
        if seq <= last {
            // Touch the contact time only; the batch is already stored.
            tx.execute(
                "UPDATE sensors SET last_contact_ns = ?2, state = 'live' WHERE sensor_id = ?1",
                params![sensor, now_ns()],
            )?;
            tx.commit()?;
            return Ok(Stored::Duplicate(last));
        }
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO flows (sensor_id, seq, idx, ip_version, src_ip, dst_ip, src_port, dst_port, proto, vlan,
                 first_ns, last_ns, fwd_packets, fwd_bytes, rev_packets, rev_bytes, tcp_flags, end_reason, score, embedding)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            )?;
            for (i, f) in flows.iter().enumerate() {
                let alen = if f.ip_version == 4 { 4 } else { 16 };
                let emb: Vec<u8> = f.embedding.iter().map(|v| *v as u8).collect();
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
                    emb,
                ])?;
            }
        }
        tx.execute(
            "INSERT INTO sensors (sensor_id, last_seq, last_contact_ns, state, batches, flows) VALUES (?1, ?2, ?3, 'live', 1, ?4)
             ON CONFLICT(sensor_id) DO UPDATE SET last_seq = ?2, last_contact_ns = ?3, state = 'live',
             batches = batches + 1, flows = flows + ?4",
            params![sensor, seq as i64, now_ns(), flows.len() as i64],
        )?;
        tx.commit()?;
        Ok(Stored::Committed(seq))
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

    #[test]
    fn a_resent_batch_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("wirefold-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let _ = std::fs::remove_file(&db);
        let mut s = Store::open(&db, false).unwrap();
        assert_eq!(s.last_seq("a").unwrap(), 0);
        assert_eq!(s.store("a", 1, &[flow(1), flow(2)]).unwrap(), Stored::Committed(1));
        assert_eq!(s.store("a", 1, &[flow(1), flow(2)]).unwrap(), Stored::Duplicate(1));
        assert_eq!(s.store("a", 2, &[flow(3)]).unwrap(), Stored::Committed(2));
        assert_eq!(s.store("b", 1, &[flow(9)]).unwrap(), Stored::Committed(1));
        assert_eq!(s.flow_count("a").unwrap(), 3);
        drop(s);
        // Reopened (as after a crash), the state is what was committed.
        let s = Store::open(&db, false).unwrap();
        assert_eq!(s.last_seq("a").unwrap(), 2);
        assert_eq!(s.flow_count("b").unwrap(), 1);
        s.update_states(0, i64::MAX).unwrap();
        let st: String = s.conn.query_row("SELECT state FROM sensors WHERE sensor_id = 'a'", [], |r| r.get(0)).unwrap();
        assert_eq!(st, "stale");
    }
}
