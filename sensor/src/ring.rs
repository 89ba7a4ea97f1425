//! The capture → flow-worker ring: a bounded lock-free queue of fixed-size
//! packet records (crossbeam's `ArrayQueue`, used single-producer,
//! single-consumer). A full ring refuses the record; the capture thread
//! counts the drop and never blocks.
use crate::wire::PacketMeta;
use crossbeam::queue::ArrayQueue;

/// A bounded ring of [`PacketMeta`] records.
#[derive(Debug)]
pub struct Ring {
    q: ArrayQueue<PacketMeta>,
}

impl Ring {
    /// A ring of `slots` records (at least 1).
    pub fn new(slots: usize) -> Self {
        Self { q: ArrayQueue::new(slots.max(1)) }
    }

    /// Push a record; `false` when the ring is full (the caller counts a drop).
    #[inline]
    pub fn push(&self, m: PacketMeta) -> bool {
        self.q.push(m).is_ok()
    }

    /// Pop the oldest record.
    #[inline]
    pub fn pop(&self) -> Option<PacketMeta> {
        self.q.pop()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ring_refuses_and_keeps_order() {
        let r = Ring::new(2);
        let m = |t| PacketMeta { ts_ns: t, ..Default::default() };
        assert!(r.push(m(1)) && r.push(m(2)));
        assert!(!r.push(m(3)), "a full ring refuses");
        assert_eq!(r.pop().map(|x| x.ts_ns), Some(1));
        assert_eq!(r.pop().map(|x| x.ts_ns), Some(2));
        assert!(r.pop().is_none() && r.is_empty());
    }
}
