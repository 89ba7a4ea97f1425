//! The audit ledger: append-only JSON Lines, hash-chained.
//!
//! Each line is one entry, keys in this order:
//! `{"seq":N,"time_ns":T,"kind":"K","body":{...},"prev":"HEX","hash":"HEX"}`
//! where `hash` is the SHA-256 of the line up to `prev`'s value and a
//! closing brace (the entry without its `hash` field), and `prev` is the
//! SHA-256 of the previous entry's whole line (64 zeros for the first).
//! `seq` counts from 1 without gaps. Bodies hold no floating-point numbers
//! (values that are not integers are strings), so a line re-encodes to
//! itself byte for byte.
//!
//! The database holds the head (last seq and the hash of the last line) and
//! the lines not yet known to be in the file, written in the same
//! transaction as the batch they belong to; the file is appended after the
//! commit. On start-up [`LedgerWriter::open`] cuts a torn last line and
//! re-appends what the database has and the file lacks, so after a crash
//! the ledger equals an uninterrupted run's. A deletion of whole entries
//! at the end is found by comparing with the database's head
//! ([`verify`]'s `expected`).
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The last entry: its sequence number and the SHA-256 (hex) of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerHead {
    /// Last seq (0 = empty).
    pub seq: u64,
    /// SHA-256 of the last line, hex ([`GENESIS`] when empty).
    pub hash: String,
}

impl Default for LedgerHead {
    fn default() -> Self {
        LedgerHead { seq: 0, hash: GENESIS.to_string() }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries verified.
    pub entries: u64,
    /// The head.
    pub head: LedgerHead,
}

/// A ledger failure.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Reading or writing the file failed.
    #[error("ledger {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// The first bad entry.
    #[error("ledger entry at line {line} (seq {}): {problem}", seq.map_or("unknown".to_string(), |s| s.to_string()))]
    Bad {
        /// Line number (from 1).
        line: u64,
        /// Its seq, when it could be read.
        seq: Option<u64>,
        /// What is wrong.
        problem: String,
    },
    /// The file ends before (or elsewhere than) the head the database records.
    #[error("ledger ends at seq {got_seq} (hash {got_hash}) but the database records head seq {want_seq} (hash {want_hash}): entries are missing or replaced at the end")]
    Head {
        /// The file's last seq.
        got_seq: u64,
        /// Its hash.
        got_hash: String,
        /// The database's head seq.
        want_seq: u64,
        /// The database's head hash.
        want_hash: String,
    },
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a line, hex.
pub fn line_hash(line: &str) -> String {
    hex(&Sha256::digest(line.as_bytes()))
}

fn unsigned(seq: u64, time_ns: u64, kind: &str, body: &serde_json::Value, prev: &str) -> String {
    format!(
        "{{\"seq\":{seq},\"time_ns\":{time_ns},\"kind\":{},\"body\":{},\"prev\":\"{prev}\"}}",
        serde_json::Value::String(kind.to_string()),
        body
    )
}

/// Encode one entry as its line (without the newline).
pub fn encode(seq: u64, time_ns: u64, kind: &str, body: &serde_json::Value, prev: &str) -> String {
    let mut u = unsigned(seq, time_ns, kind, body, prev);
    let h = line_hash(&u);
    u.pop();
    format!("{u},\"hash\":\"{h}\"}}")
}

/// Builds the next entries after a head.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// The head after the entries built so far.
    pub head: LedgerHead,
    /// Lines built (seq, line).
    pub lines: Vec<(u64, String)>,
}

impl Cursor {
    /// Start after `head`.
    pub fn new(head: LedgerHead) -> Self {
        Cursor { head, lines: Vec::new() }
    }
    /// Add an entry.
    pub fn push(&mut self, time_ns: u64, kind: &str, body: serde_json::Value) {
        let seq = self.head.seq + 1;
        let line = encode(seq, time_ns, kind, &body, &self.head.hash);
        self.head = LedgerHead { seq, hash: line_hash(&line) };
        self.lines.push((seq, line));
    }
}

/// A parsed entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Sequence number.
    pub seq: u64,
    /// Batch time (decision entries) or wall time (admin entries), ns.
    pub time_ns: u64,
    /// Kind.
    pub kind: String,
    /// Body.
    pub body: serde_json::Value,
    /// Previous line's hash.
    pub prev: String,
    /// This entry's hash.
    pub hash: String,
}

/// Parse a line and check that it is canonical and its hash matches.
pub fn parse_line(line: &str) -> Result<Entry, (Option<u64>, String)> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| (None, format!("not JSON: {e}")))?;
    let o = v.as_object().ok_or((None, "not a JSON object".to_string()))?;
    let seq = o.get("seq").and_then(|x| x.as_u64());
    let get_s =
        |k: &str| o.get(k).and_then(|x| x.as_str()).map(str::to_string).ok_or((seq, format!("no string '{k}'")));
    let e = Entry {
        seq: seq.ok_or((None, "no 'seq'".to_string()))?,
        time_ns: o.get("time_ns").and_then(|x| x.as_u64()).ok_or((seq, "no 'time_ns'".to_string()))?,
        kind: get_s("kind")?,
        body: o.get("body").cloned().ok_or((seq, "no 'body'".to_string()))?,
        prev: get_s("prev")?,
        hash: get_s("hash")?,
    };
    if o.len() != 6 {
        return Err((seq, "unexpected fields".into()));
    }
    let canon = encode(e.seq, e.time_ns, &e.kind, &e.body, &e.prev);
    if canon != line {
        let want = line_hash(&unsigned(e.seq, e.time_ns, &e.kind, &e.body, &e.prev));
        return Err((
            seq,
            if want != e.hash {
                "hash does not match the content (edited)".into()
            } else {
                "not in canonical form (edited)".into()
            },
        ));
    }
    Ok(e)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LedgerError + '_ {
    move |error| LedgerError::Io { path: path.display().to_string(), error }
}

/// Check every entry of the ledger at `path`: canonical, its hash, its
/// `prev` equal to the previous line's hash, `seq` one more than the
/// previous; a last line without a newline is truncated. With `expected`
/// (the database's head: `Store::ledger_head`), the file must end exactly
/// there, which finds whole entries deleted at the end. Names the first
/// bad entry.
pub fn verify(path: &Path, expected: Option<&LedgerHead>) -> Result<VerifyReport, LedgerError> {
    let mut text = String::new();
    File::open(path).and_then(|mut f| f.read_to_string(&mut text)).map_err(io(path))?;
    let mut head = LedgerHead::default();
    let mut n = 0u64;
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let line_no = n + 1;
        let Some(end) = rest.find('\n') else {
            let seq = serde_json::from_str::<serde_json::Value>(rest).ok().and_then(|v| v.get("seq")?.as_u64());
            return Err(LedgerError::Bad {
                line: line_no,
                seq,
                problem: "truncated: the last line has no newline".into(),
            });
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let e = parse_line(line).map_err(|(seq, problem)| LedgerError::Bad { line: line_no, seq, problem })?;
        if e.seq != head.seq + 1 {
            return Err(LedgerError::Bad {
                line: line_no,
                seq: Some(e.seq),
                problem: format!("seq {} follows {}: entries deleted or reordered", e.seq, head.seq),
            });
        }
        if e.prev != head.hash {
            return Err(LedgerError::Bad {
                line: line_no,
                seq: Some(e.seq),
                problem: "prev does not match the previous line's hash: the chain is broken".into(),
            });
        }
        head = LedgerHead { seq: e.seq, hash: line_hash(line) };
        n += 1;
    }
    if let Some(x) = expected {
        if *x != head {
            return Err(LedgerError::Head {
                got_seq: head.seq,
                got_hash: head.hash,
                want_seq: x.seq,
                want_hash: x.hash.clone(),
            });
        }
    }
    Ok(VerifyReport { entries: n, head })
}

/// Verify, then write every entry as normalized JSON Lines (the canonical encoding).
pub fn export(path: &Path, expected: Option<&LedgerHead>, w: &mut dyn Write) -> Result<VerifyReport, LedgerError> {
    let r = verify(path, expected)?;
    let mut text = String::new();
    File::open(path).and_then(|mut f| f.read_to_string(&mut text)).map_err(io(path))?;
    for line in text.lines() {
        let e = parse_line(line).map_err(|(seq, problem)| LedgerError::Bad { line: 0, seq, problem })?;
        writeln!(w, "{}", encode(e.seq, e.time_ns, &e.kind, &e.body, &e.prev)).map_err(io(path))?;
    }
    Ok(r)
}

/// The default ledger path for a database: `<db>.ledger.jsonl`.
pub fn default_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".ledger.jsonl");
    PathBuf::from(s)
}

/// What opening the ledger repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Bytes of a torn last line cut off.
    pub torn_bytes: u64,
    /// Entries re-appended from the database.
    pub reappended: u64,
}

/// The appending side.
#[derive(Debug)]
pub struct LedgerWriter {
    path: PathBuf,
    file: File,
    head: LedgerHead,
}

impl LedgerWriter {
    /// Open (or create) the ledger at `path`, consistent with the
    /// database's head `db_head` and its `pending` lines (seq, line): a torn
    /// last line is cut, lines the database has and the file lacks are
    /// appended. A file that disagrees with the database otherwise is refused.
    pub fn open(
        path: &Path,
        db_head: &LedgerHead,
        pending: &[(u64, String)],
    ) -> Result<(Self, RepairReport), LedgerError> {
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        let mut rep = RepairReport::default();
        // Read back far enough to hold the last complete line.
        let mut from = len.saturating_sub(1 << 20);
        let mut tail = Vec::new();
        loop {
            tail.clear();
            file.seek(SeekFrom::Start(from)).map_err(io(path))?;
            (&file).take(len - from).read_to_end(&mut tail).map_err(io(path))?;
            let complete = tail.iter().rposition(|&b| b == b'\n');
            let enough = match complete {
                Some(end) => from == 0 || tail[..end].contains(&b'\n'),
                None => from == 0,
            };
            if enough {
                break;
            }
            from = 0;
        }
        let keep_to = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if keep_to < tail.len() {
            rep.torn_bytes = (tail.len() - keep_to) as u64;
            file.set_len(from + keep_to as u64).map_err(io(path))?;
            tail.truncate(keep_to);
        }
        let mut head = LedgerHead::default();
        if keep_to > 0 {
            let body = &tail[..keep_to - 1];
            let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let line = String::from_utf8_lossy(&body[start..]).into_owned();
            let e = parse_line(&line).map_err(|(seq, problem)| LedgerError::Bad { line: 0, seq, problem })?;
            head = LedgerHead { seq: e.seq, hash: line_hash(&line) };
        }
        if head.seq > db_head.seq {
            return Err(LedgerError::Head {
                got_seq: head.seq,
                got_hash: head.hash,
                want_seq: db_head.seq,
                want_hash: db_head.hash.clone(),
            });
        }
        let mut w = LedgerWriter { path: path.to_path_buf(), file, head };
        if w.head.seq < db_head.seq {
            let missing: Vec<String> =
                pending.iter().filter(|(s, _)| *s > w.head.seq && *s <= db_head.seq).map(|(_, l)| l.clone()).collect();
            let first_ok = missing
                .first()
                .and_then(|l| parse_line(l).ok())
                .is_some_and(|e| e.seq == w.head.seq + 1 && e.prev == w.head.hash);
            if !first_ok || missing.len() as u64 != db_head.seq - w.head.seq {
                return Err(LedgerError::Head {
                    got_seq: w.head.seq,
                    got_hash: w.head.hash.clone(),
                    want_seq: db_head.seq,
                    want_hash: db_head.hash.clone(),
                });
            }
            rep.reappended = missing.len() as u64;
            w.append(&missing)?;
        }
        if w.head != *db_head {
            return Err(LedgerError::Head {
                got_seq: w.head.seq,
                got_hash: w.head.hash,
                want_seq: db_head.seq,
                want_hash: db_head.hash.clone(),
            });
        }
        Ok((w, rep))
    }

    /// The head of what is in the file.
    pub fn head(&self) -> &LedgerHead {
        &self.head
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append lines (one write; each gets a newline).
    pub fn append(&mut self, lines: &[String]) -> Result<(), LedgerError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut buf = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        self.file.write_all(buf.as_bytes()).map_err(io(&self.path))?;
        if let Some(last) = lines.last() {
            let seq = parse_line(last).map(|e| e.seq).unwrap_or(self.head.seq + lines.len() as u64);
            self.head = LedgerHead { seq, hash: line_hash(last) };
        }
        Ok(())
    }

    /// fsync the file.
    pub fn sync(&self) -> Result<(), LedgerError> {
        self.file.sync_data().map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wirefold-ledger-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample(n: u64) -> Cursor {
        let mut c = Cursor::new(LedgerHead::default());
        for i in 0..n {
            c.push(1000 + i, "promotion", json!({"sensor": "edge-1", "idx": i, "score": "0.75"}));
        }
        c
    }

    fn write(path: &Path, lines: &[String]) {
        let mut s = lines.join("\n");
        s.push('\n');
        std::fs::write(path, s).unwrap();
    }

    #[test]
    fn a_chain_verifies_and_exports_to_itself() {
        let d = dir("ok");
        let p = d.join("l.jsonl");
        let c = sample(5);
        let lines: Vec<String> = c.lines.iter().map(|(_, l)| l.clone()).collect();
        write(&p, &lines);
        let r = verify(&p, Some(&c.head)).unwrap();
        assert_eq!((r.entries, r.head.seq), (5, 5));
        let mut out = Vec::new();
        export(&p, None, &mut out).unwrap();
        assert_eq!(out, std::fs::read(&p).unwrap());
        assert!(lines[0].starts_with("{\"seq\":1,\"time_ns\":1000,\"kind\":\"promotion\",\"body\":{"), "{}", lines[0]);
    }

    #[test]
    fn tampering_names_the_first_bad_entry() {
        let d = dir("tamper");
        let p = d.join("l.jsonl");
        let c = sample(6);
        let lines: Vec<String> = c.lines.iter().map(|(_, l)| l.clone()).collect();
        let bad = |lines: &[String], raw: Option<String>| {
            match raw {
                Some(r) => std::fs::write(&p, r).unwrap(),
                None => write(&p, lines),
            }
            verify(&p, Some(&c.head)).unwrap_err()
        };
        // Edited.
        let mut l = lines.clone();
        l[2] = l[2].replace("0.75", "0.95");
        let e = bad(&l, None);
        assert!(matches!(e, LedgerError::Bad { line: 3, seq: Some(3), .. }), "{e}");
        assert!(e.to_string().contains("edited"), "{e}");
        // Deleted in the middle.
        let mut l = lines.clone();
        l.remove(3);
        let e = bad(&l, None);
        assert!(matches!(e, LedgerError::Bad { line: 4, seq: Some(5), .. }), "{e}");
        // Reordered.
        let mut l = lines.clone();
        l.swap(1, 2);
        let e = bad(&l, None);
        assert!(matches!(e, LedgerError::Bad { line: 2, seq: Some(3), .. }), "{e}");
        // Truncated mid-line.
        let mut raw = lines.join("\n");
        raw.truncate(raw.len() - 10);
        let e = bad(&lines, Some(raw));
        assert!(matches!(e, LedgerError::Bad { line: 6, .. }), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");
        // Deleted at the end: only the database's head shows it.
        let l = lines[..5].to_vec();
        write(&p, &l);
        assert!(verify(&p, None).is_ok());
        let e = verify(&p, Some(&c.head)).unwrap_err();
        assert!(matches!(e, LedgerError::Head { got_seq: 5, want_seq: 6, .. }), "{e}");
        // A rewritten chain (edited and re-hashed from entry 4 on) breaks at the head too.
        let mut c2 = Cursor::new(LedgerHead { seq: 3, hash: line_hash(&lines[2]) });
        for i in 0..3 {
            c2.push(1, "promotion", json!({"forged": i}));
        }
        let mut l = lines[..3].to_vec();
        l.extend(c2.lines.iter().map(|(_, x)| x.clone()));
        write(&p, &l);
        assert!(verify(&p, None).is_ok());
        assert!(matches!(verify(&p, Some(&c.head)).unwrap_err(), LedgerError::Head { .. }));
    }

    #[test]
    fn open_cuts_a_torn_tail_and_reappends_from_the_database() {
        let d = dir("repair");
        let p = d.join("l.jsonl");
        let c = sample(8);
        let lines: Vec<String> = c.lines.iter().map(|(_, l)| l.clone()).collect();
        // The file has 5 entries and half of the 6th; the database committed 8
        // and still holds entries 6..8 as pending.
        let mut raw = lines[..5].join("\n");
        raw.push('\n');
        raw.push_str(&lines[5][..40]);
        std::fs::write(&p, raw).unwrap();
        let pending: Vec<(u64, String)> = c.lines[5..].to_vec();
        let (w, rep) = LedgerWriter::open(&p, &c.head, &pending).unwrap();
        assert_eq!(rep, RepairReport { torn_bytes: 40, reappended: 3 });
        assert_eq!(w.head(), &c.head);
        drop(w);
        let mut want = lines.join("\n");
        want.push('\n');
        assert_eq!(std::fs::read_to_string(&p).unwrap(), want, "equals the uninterrupted ledger");
        verify(&p, Some(&c.head)).unwrap();
        // Reopened as is: nothing to do.
        let (_, rep) = LedgerWriter::open(&p, &c.head, &[]).unwrap();
        assert_eq!(rep, RepairReport::default());
        // Missing entries the database no longer holds: refused, loudly.
        write(&p, &lines[..4]);
        assert!(LedgerWriter::open(&p, &c.head, &pending).is_err());
    }
}
