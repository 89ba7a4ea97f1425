//! The capture → flow-worker ring: batches of fixed-size packet records
//! passed through two bounded lock-free queues (crossbeam's `ArrayQueue`,
//! each used by one producer and one consumer).
//!
//! The capture thread fills a [`MetaBatch`] taken from the free queue and
//! pushes it onto the full queue; the flow worker drains full batches and
//! returns them. One queue operation per batch instead of per packet keeps
//! the cache lines the two cores share to a minimum, and the batches are
//! allocated once, at start-up. When no free batch is left the capture
//! thread drops the packet and counts it: it never blocks and never
//! allocates.
use crate::wire::PacketMeta;
use crossbeam::queue::ArrayQueue;

/// Packet records per batch.
pub const BATCH: usize = 256;

/// A batch of packet records.
#[derive(Debug)]
pub struct MetaBatch {
    len: usize,
    items: [PacketMeta; BATCH],
}

impl MetaBatch {
    fn new() -> Box<Self> {
        Box::new(Self { len: 0, items: [PacketMeta::default(); BATCH] })
    }

    /// The records in the batch.
    pub fn items(&self) -> &[PacketMeta] {
        &self.items[..self.len]
    }

    /// Whether the batch is full.
    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Append a record (the caller checks `is_full` first).
    #[inline]
    pub fn push(&mut self, m: PacketMeta) {
        self.items[self.len] = m;
        self.len += 1;
    }
}

/// A bounded ring of packet-record batches.
#[derive(Debug)]
pub struct Ring {
    full: ArrayQueue<Box<MetaBatch>>,
    free: ArrayQueue<Box<MetaBatch>>,
}

impl Ring {
    /// A ring holding about `slots` records (rounded up to whole batches,
    /// at least two).
    pub fn new(slots: usize) -> Self {
        let n = slots.div_ceil(BATCH).max(2);
        let free = ArrayQueue::new(n);
        for _ in 0..n {
            let _ = free.push(MetaBatch::new());
        }
        Self { full: ArrayQueue::new(n), free }
    }

    /// Capture side: an empty batch to fill, if any is free.
    #[inline]
    pub fn take_free(&self) -> Option<Box<MetaBatch>> {
        self.free.pop()
    }

    /// Capture side: hand a filled batch to the worker.
    #[inline]
    pub fn submit(&self, b: Box<MetaBatch>) {
        // Every batch came from `free`, and both queues hold all of them,
        // so `full` always has room.
        let _ = self.full.push(b);
    }

    /// Worker side: the next filled batch.
    #[inline]
    pub fn next_full(&self) -> Option<Box<MetaBatch>> {
        self.full.pop()
    }

    /// Worker side: give a drained batch back.
    #[inline]
    pub fn recycle(&self, mut b: Box<MetaBatch>) {
        b.len = 0;
        let _ = self.free.push(b);
    }

    /// Whether no filled batch is waiting.
    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
    }
}

/// The capture thread's end of a ring: fills batches, submits them, counts
/// drops when none is free.
#[derive(Debug)]
pub struct Producer<'a> {
    ring: &'a Ring,
    cur: Option<Box<MetaBatch>>,
    /// Records dropped because no batch was free.
    pub drops: u64,
}

impl<'a> Producer<'a> {
    /// A producer on `ring`.
    pub fn new(ring: &'a Ring) -> Self {
        Self { ring, cur: None, drops: 0 }
    }

    /// Add one record; drops and counts it when the ring is full.
    #[inline]
    pub fn push(&mut self, m: PacketMeta) {
        if self.cur.is_none() {
            self.cur = self.ring.take_free();
        }
        match self.cur.as_mut() {
            Some(b) => {
                b.push(m);
                if b.is_full() {
                    self.flush();
                }
            }
            None => self.drops += 1,
        }
    }

    /// Submit the partly filled batch (at the end of each capture block).
    #[inline]
    pub fn flush(&mut self) {
        if let Some(b) = self.cur.take() {
            if b.is_empty() {
                self.cur = Some(b);
            } else {
                self.ring.submit(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: u64) -> PacketMeta {
        PacketMeta { ts_ns: t, ..Default::default() }
    }

    #[test]
    fn batches_flow_in_order_and_a_full_ring_drops_and_counts() {
        let r = Ring::new(2 * BATCH);
        let mut p = Producer::new(&r);
        for t in 0..(2 * BATCH as u64 + 10) {
            p.push(m(t));
        }
        p.flush();
        assert_eq!(p.drops, 10, "two batches fit; the rest is dropped and counted");
        let mut seen = Vec::new();
        while let Some(b) = r.next_full() {
            seen.extend(b.items().iter().map(|x| x.ts_ns));
            r.recycle(b);
        }
        assert_eq!(seen, (0..2 * BATCH as u64).collect::<Vec<_>>());
        // Recycled batches are reused.
        p.push(m(7));
        p.flush();
        assert_eq!(r.next_full().unwrap().items()[0].ts_ns, 7);
    }
}
