//! Nearest neighbours over the stored int8 embeddings: brute force over a
//! packed in-memory copy (32 bytes per flow, contiguous, plus its key and
//! time), refreshed incrementally from SQLite (each sensor's rows with a
//! sequence number above the last one loaded, through the primary key)
//! before every search. The distance loops are plain i16/i32 arithmetic over
//! fixed 32-byte arrays, which the compiler vectorises (SSE2/AVX2).
use super::{Deadline, ToolError};
use rusqlite::Connection;
use std::collections::{BinaryHeap, HashMap};

/// Distance between embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Sum of absolute differences (the novelty gate's metric).
    L1,
    /// Squared Euclidean distance.
    L2,
}

/// A stored flow's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Index into [`EmbIndex::sensor_name`].
    pub sensor: u32,
    /// Batch sequence number.
    pub seq: i64,
    /// Index in the batch.
    pub idx: u32,
}

/// The packed copy.
#[derive(Debug, Default)]
pub struct EmbIndex {
    sensors: Vec<String>,
    sensor_ix: HashMap<String, u32>,
    loaded: Vec<i64>,
    emb: Vec<[i8; 32]>,
    keys: Vec<Key>,
    last_ns: Vec<i64>,
    score: Vec<f32>,
}

/// One neighbour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The distance.
    pub distance: u32,
    /// Where it is in the index.
    pub pos: usize,
}

#[inline]
fn l1(a: &[i8; 32], b: &[i8; 32]) -> u32 {
    let mut s = 0u32;
    for i in 0..32 {
        s += (a[i] as i16 - b[i] as i16).unsigned_abs() as u32;
    }
    s
}

#[inline]
fn l2(a: &[i8; 32], b: &[i8; 32]) -> u32 {
    let mut s = 0i32;
    for i in 0..32 {
        let d = a[i] as i32 - b[i] as i32;
        s += d * d;
    }
    s as u32
}

/// Bytes to an embedding (missing bytes are 0).
pub fn emb_of(b: &[u8]) -> [i8; 32] {
    let mut e = [0i8; 32];
    for (d, s) in e.iter_mut().zip(b) {
        *d = *s as i8;
    }
    e
}

impl EmbIndex {
    /// Embeddings held.
    pub fn len(&self) -> usize {
        self.emb.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.emb.is_empty()
    }

    /// A sensor's name.
    pub fn sensor_name(&self, i: u32) -> &str {
        &self.sensors[i as usize]
    }

    /// The sensor's index, if it has flows here.
    pub fn sensor_index(&self, s: &str) -> Option<u32> {
        self.sensor_ix.get(s).copied()
    }

    /// Key, time and score at `pos`.
    pub fn at(&self, pos: usize) -> (Key, i64, f32) {
        (self.keys[pos], self.last_ns[pos], self.score[pos])
    }

    /// Load what was stored since the last refresh. Returns rows added.
    pub fn refresh(&mut self, conn: &Connection, deadline: &Deadline) -> Result<u64, ToolError> {
        let sensors: Vec<(String, i64)> = {
            let mut q = conn.prepare_cached("SELECT sensor_id, last_seq FROM sensors ORDER BY sensor_id")?;
            let r = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            r.collect::<rusqlite::Result<_>>()?
        };
        let mut added = 0u64;
        for (s, last) in sensors {
            let ix = match self.sensor_ix.get(&s) {
                Some(i) => *i,
                None => {
                    let i = self.sensors.len() as u32;
                    self.sensors.push(s.clone());
                    self.sensor_ix.insert(s.clone(), i);
                    self.loaded.push(0);
                    i
                }
            };
            if last <= self.loaded[ix as usize] {
                continue;
            }
            let mut q = conn.prepare_cached(
                "SELECT seq, idx, last_ns, score, embedding FROM flows WHERE sensor_id = ?1 AND seq > ?2 ORDER BY seq, idx",
            )?;
            let mut rows = q.query(rusqlite::params![s, self.loaded[ix as usize]])?;
            let mut max = self.loaded[ix as usize];
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                self.keys.push(Key { sensor: ix, seq, idx: r.get::<_, i64>(1)? as u32 });
                self.last_ns.push(r.get(2)?);
                self.score.push(r.get::<_, f64>(3)? as f32);
                let b = r.get_ref(4)?.as_blob().unwrap_or(&[]);
                self.emb.push(emb_of(b));
                max = max.max(seq);
                added += 1;
            }
            self.loaded[ix as usize] = max;
            deadline.check()?;
        }
        Ok(added)
    }

    /// The stored embedding of a flow.
    pub fn find(&self, sensor: &str, seq: i64, idx: u32) -> Option<usize> {
        let s = self.sensor_index(sensor)?;
        // Rows of a sensor are appended in (seq, idx) order; search linearly from the end is
        // simplest and this is rare: a binary search over the sensor's run would need a run index.
        self.keys.iter().position(|k| k.sensor == s && k.seq == seq && k.idx == idx)
    }

    /// The embedding at `pos`.
    pub fn embedding(&self, pos: usize) -> [i8; 32] {
        self.emb[pos]
    }

    /// The `k` nearest within `[since, until)` (last packet time), of one
    /// sensor or all, without `exclude`. Returns them nearest first (ties by
    /// position) and how many embeddings were compared.
    #[allow(clippy::too_many_arguments)]
    pub fn search(
        &self,
        q: &[i8; 32],
        k: usize,
        metric: Metric,
        since: i64,
        until: i64,
        sensor: Option<u32>,
        exclude: Option<usize>,
    ) -> (Vec<Hit>, u64) {
        let mut heap: BinaryHeap<(u32, usize)> = BinaryHeap::with_capacity(k + 1);
        let mut scanned = 0u64;
        let mut worst = u32::MAX;
        for (pos, e) in self.emb.iter().enumerate() {
            let t = self.last_ns[pos];
            if t < since || t >= until {
                continue;
            }
            if sensor.is_some_and(|s| self.keys[pos].sensor != s) || exclude == Some(pos) {
                continue;
            }
            scanned += 1;
            let d = match metric {
                Metric::L1 => l1(q, e),
                Metric::L2 => l2(q, e),
            };
            if heap.len() < k {
                heap.push((d, pos));
                if heap.len() == k {
                    worst = heap.peek().map_or(u32::MAX, |x| x.0);
                }
            } else if d < worst {
                heap.pop();
                heap.push((d, pos));
                worst = heap.peek().map_or(u32::MAX, |x| x.0);
            }
        }
        let mut v: Vec<(u32, usize)> = heap.into_vec();
        v.sort_unstable();
        (v.into_iter().map(|(distance, pos)| Hit { distance, pos }).collect(), scanned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        let a = [1i8; 32];
        let mut b = [1i8; 32];
        b[0] = -127;
        b[31] = 127;
        assert_eq!(l1(&a, &b), 128 + 126);
        assert_eq!(l2(&a, &b), 128 * 128 + 126 * 126);
        assert_eq!(l1(&[-128; 32], &[127; 32]), 255 * 32);
    }
}
