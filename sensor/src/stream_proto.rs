//! The streamer's protocol, free of I/O and of the clock (quinn-proto's
//! habit): which batches are in the spool, which are in flight, when to
//! connect, what to send next, when to give up. Time is an argument; the
//! tokio/tonic/filesystem driver in [`crate::stream`] feeds it events and
//! carries out its [`Effect`]s, and unit tests drive it with a virtual clock.
//!
//! ```text
//!            on_connect_failed / on_broken / retryable rejection
//!   ┌──────┐ ───────────────────────────────────────────────► ┌────────────┐
//!   │ Open │                                                  │ Down until │
//!   └──────┘ ◄─────────────────────────────────────────────── │  retry_at  │
//!    poll_send, on_ack, on_rejected      on_resume             └────────────┘
//! ```
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Settings of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoConfig {
    /// Batches sent and not yet acknowledged, at most.
    pub window: usize,
    /// Spool bound in bytes; beyond it the oldest batch is dropped (counted).
    pub spool_max_bytes: u64,
    /// After the input ends, how long to keep trying to deliver the spool.
    pub drain_timeout: Duration,
}

/// First reconnect delay; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Delete this batch from the spool (acknowledged, or refused as its own fault).
    Remove(u64),
    /// Delete this batch from the spool: the spool is full and it is the oldest. Its flows are lost.
    Drop(u64),
    /// A batch's round trip (sent → acknowledged).
    Rtt(Duration),
}

/// Why a new batch was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Its number is at or below what the core already stored (two sensors
    /// sharing an id, or a clock that went back across a lost data directory).
    #[error("batch {seq} reuses a sequence number the core already stored (it has up to {resume})")]
    Reused {
        /// The batch's number.
        seq: u64,
        /// The core's resume point.
        resume: u64,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// The input ended and every batch was acknowledged.
    Delivered,
    /// The drain timeout passed with batches left in the spool (sent on the next start).
    DrainTimeout {
        /// Batches left.
        left: usize,
    },
}

/// What a rejection means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The batch's own fault: it leaves the spool.
    Final,
    /// The core's own failure: the batch stays; the stream is down until the backoff passes.
    Retry,
}

/// Counters of the protocol (the driver publishes them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtoCounters {
    /// Batches sent (with resends).
    pub sent: u64,
    /// Batches resent after a reconnect.
    pub resent: u64,
    /// Batches acknowledged as durable.
    pub acked: u64,
    /// Batches refused as their own fault.
    pub rejected: u64,
    /// Batches the core could not store now (kept, resent).
    pub unavailable: u64,
    /// Batches dropped because the spool was full.
    pub spool_dropped: u64,
    /// Failed connection attempts and broken streams.
    pub reconnects: u64,
}

/// Whether a refusal ends a batch's life: only refusals that are the
/// batch's own fault (`INVALID_ARGUMENT`, `PERMISSION_DENIED`,
/// `ALREADY_EXISTS`, `OUT_OF_RANGE`, `FAILED_PRECONDITION`). Anything else
/// (`UNAVAILABLE`, `INTERNAL`, `RESOURCE_EXHAUSTED`, ...) is the core's
/// problem: the batch stays in the spool and is resent.
pub fn refusal_is_final(code: u8) -> bool {
    // gRPC codes: 3 INVALID_ARGUMENT, 6 ALREADY_EXISTS, 7 PERMISSION_DENIED,
    // 9 FAILED_PRECONDITION, 11 OUT_OF_RANGE.
    matches!(code, 3 | 6 | 7 | 9 | 11)
}

#[derive(Debug)]
enum Conn {
    Down { retry_at: Instant },
    Open { resume: u64, last_sent: u64, sent_at: BTreeMap<u64, Instant> },
}

/// The protocol state.
#[derive(Debug)]
pub struct StreamProto {
    cfg: ProtoConfig,
    spooled: BTreeMap<u64, u64>,
    spool_bytes: u64,
    input_open: bool,
    drain_deadline: Option<Instant>,
    backoff: Duration,
    conn: Conn,
    effects: VecDeque<Effect>,
    /// Counters.
    pub counters: ProtoCounters,
}

impl StreamProto {
    /// Start with what the spool already holds (`seq → bytes`), disconnected
    /// and ready to connect at `now`.
    pub fn new(cfg: ProtoConfig, spooled: BTreeMap<u64, u64>, now: Instant) -> Self {
        let spool_bytes = spooled.values().sum();
        StreamProto {
            cfg,
            spooled,
            spool_bytes,
            input_open: true,
            drain_deadline: None,
            backoff: MIN_BACKOFF,
            conn: Conn::Down { retry_at: now },
            effects: VecDeque::new(),
            counters: ProtoCounters::default(),
        }
    }

    /// Batches and bytes in the spool.
    pub fn spool(&self) -> (usize, u64) {
        (self.spooled.len(), self.spool_bytes)
    }

    /// Batches sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        match &self.conn {
            Conn::Open { sent_at, .. } => sent_at.len(),
            Conn::Down { .. } => 0,
        }
    }

    /// Whether the stream is open.
    pub fn is_open(&self) -> bool {
        matches!(self.conn, Conn::Open { .. })
    }

    /// The next thing for the driver to do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// A new sealed batch of `len` bytes, already written to the spool by
    /// the driver. When the spool is over its bound the oldest batches are
    /// dropped ([`Effect::Drop`]).
    pub fn on_batch(&mut self, seq: u64, len: u64) -> Result<(), BatchError> {
        if let Conn::Open { resume, .. } = self.conn {
            if seq <= resume {
                self.counters.rejected += 1;
                self.effects.push_back(Effect::Remove(seq));
                return Err(BatchError::Reused { seq, resume });
            }
        }
        self.spooled.insert(seq, len);
        self.spool_bytes += len;
        while self.spool_bytes > self.cfg.spool_max_bytes && self.spooled.len() > 1 {
            let Some((old, l)) = self.spooled.pop_first() else { break };
            self.spool_bytes -= l;
            self.counters.spool_dropped += 1;
            if let Conn::Open { sent_at, .. } = &mut self.conn {
                sent_at.remove(&old);
            }
            self.effects.push_back(Effect::Drop(old));
        }
        Ok(())
    }

    /// The input ended: deliver what is spooled within the drain timeout.
    pub fn on_input_closed(&mut self, now: Instant) {
        if self.input_open {
            self.input_open = false;
            self.drain_deadline = Some(now + self.cfg.drain_timeout);
        }
    }

    /// Whether the driver should try to connect now.
    pub fn should_connect(&self, now: Instant) -> bool {
        matches!(self.conn, Conn::Down { retry_at } if now >= retry_at)
    }

    fn down(&mut self, now: Instant) {
        if let Conn::Open { last_sent, .. } = self.conn {
            self.counters.resent += self.spooled.range(..=last_sent).count() as u64;
        }
        self.conn = Conn::Down { retry_at: now + self.backoff };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Connecting or opening the stream failed.
    pub fn on_connect_failed(&mut self, now: Instant) {
        self.counters.reconnects += 1;
        self.down(now);
    }

    /// The stream broke (or the core ended it).
    pub fn on_broken(&mut self, now: Instant) {
        self.counters.reconnects += 1;
        self.down(now);
    }

    /// The stream is open and the core stores up to `resume`: those leave
    /// the spool; everything after is sent (again).
    pub fn on_resume(&mut self, resume: u64) {
        self.backoff = MIN_BACKOFF;
        let done: Vec<u64> = self.spooled.range(..=resume).map(|(s, _)| *s).collect();
        for s in done {
            self.remove(s);
        }
        self.conn = Conn::Open { resume, last_sent: resume, sent_at: BTreeMap::new() };
    }

    fn remove(&mut self, seq: u64) {
        if let Some(l) = self.spooled.remove(&seq) {
            self.spool_bytes -= l;
            self.effects.push_back(Effect::Remove(seq));
        }
    }

    /// The next batch to send, if the stream is open and the window allows;
    /// it counts as sent at `now`.
    pub fn poll_send(&mut self, now: Instant) -> Option<u64> {
        let window = self.cfg.window.max(1);
        let Conn::Open { last_sent, sent_at, .. } = &mut self.conn else { return None };
        if sent_at.len() >= window {
            return None;
        }
        let next = self.spooled.range(*last_sent + 1..).next().map(|(s, _)| *s)?;
        *last_sent = next;
        sent_at.insert(next, now);
        self.counters.sent += 1;
        Some(next)
    }

    /// Whether [`StreamProto::poll_send`] would give a batch now.
    pub fn can_send(&self) -> bool {
        match &self.conn {
            Conn::Open { last_sent, sent_at, .. } => {
                sent_at.len() < self.cfg.window.max(1) && self.spooled.range(*last_sent + 1..).next().is_some()
            }
            Conn::Down { .. } => false,
        }
    }

    /// `seq` and everything before it are durably stored.
    pub fn on_ack(&mut self, seq: u64, now: Instant) {
        let done: Vec<u64> = self.spooled.range(..=seq).map(|(s, _)| *s).collect();
        for s in done {
            self.remove(s);
            self.counters.acked += 1;
        }
        if let Conn::Open { sent_at, .. } = &mut self.conn {
            while let Some(e) = sent_at.first_entry().filter(|e| *e.key() <= seq) {
                self.effects.push_back(Effect::Rtt(now.saturating_duration_since(e.remove())));
            }
        }
    }

    /// The core refused `seq` with gRPC `code`.
    pub fn on_rejected(&mut self, seq: u64, code: u8, now: Instant) -> Rejection {
        if refusal_is_final(code) {
            self.counters.rejected += 1;
            if let Conn::Open { sent_at, .. } = &mut self.conn {
                sent_at.remove(&seq);
            }
            self.remove(seq);
            Rejection::Final
        } else {
            self.counters.unavailable += 1;
            self.on_broken(now);
            Rejection::Retry
        }
    }

    /// When the driver must call back even if nothing happens: the next
    /// connection attempt or the drain deadline, whichever is first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = match self.conn {
            Conn::Down { retry_at } => Some(retry_at),
            Conn::Open { .. } => None,
        };
        match (retry, self.drain_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the run is over.
    pub fn done(&self, now: Instant) -> Option<Done> {
        if !self.input_open && self.spooled.is_empty() {
            return Some(Done::Delivered);
        }
        if self.drain_deadline.is_some_and(|d| now >= d) {
            return Some(Done::DrainTimeout { left: self.spooled.len() });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(window: usize, spool_max: u64) -> (StreamProto, Instant) {
        let t0 = Instant::now();
        let cfg = ProtoConfig { window, spool_max_bytes: spool_max, drain_timeout: Duration::from_secs(10) };
        (StreamProto::new(cfg, BTreeMap::new(), t0), t0)
    }

    fn effects(p: &mut StreamProto) -> Vec<Effect> {
        std::iter::from_fn(|| p.poll_effect()).filter(|e| !matches!(e, Effect::Rtt(_))).collect()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn window_acks_and_delivery_on_a_virtual_clock() {
        let (mut p, t0) = proto(2, 1 << 20);
        assert!(p.should_connect(t0));
        for s in 1..=3 {
            p.on_batch(s, 100).unwrap();
        }
        p.on_resume(0);
        assert_eq!((p.poll_send(t0), p.poll_send(t0), p.poll_send(t0)), (Some(1), Some(2), None), "window of 2");
        p.on_ack(1, t0 + 5 * MS);
        assert_eq!(effects(&mut p), vec![Effect::Remove(1)]);
        assert_eq!(p.poll_send(t0 + 5 * MS), Some(3));
        p.on_input_closed(t0 + 6 * MS);
        assert_eq!(p.done(t0 + 6 * MS), None);
        p.on_ack(3, t0 + 9 * MS);
        assert_eq!(p.done(t0 + 9 * MS), Some(Done::Delivered));
        assert_eq!((p.counters.sent, p.counters.acked), (3, 3));
    }

    #[test]
    fn a_broken_stream_backs_off_and_resends_from_the_resume_point() {
        let (mut p, t0) = proto(8, 1 << 20);
        for s in 1..=4 {
            p.on_batch(s, 10).unwrap();
        }
        p.on_resume(0);
        while p.poll_send(t0).is_some() {}
        p.on_ack(2, t0);
        p.on_broken(t0 + 10 * MS);
        assert_eq!(p.counters.resent, 2, "3 and 4 were in flight");
        assert!(!p.should_connect(t0 + 50 * MS), "backoff");
        assert_eq!(p.poll_timeout(), Some(t0 + 110 * MS));
        assert!(p.should_connect(t0 + 110 * MS));
        // The core had stored 3 after all: only 4 is sent again.
        p.on_resume(3);
        assert_eq!(p.poll_send(t0 + 120 * MS), Some(4));
        assert_eq!(p.poll_send(t0 + 120 * MS), None);
        // Failures double the backoff up to its bound.
        for _ in 0..6 {
            p.on_connect_failed(t0);
        }
        assert_eq!(p.poll_timeout(), Some(t0 + MAX_BACKOFF));
    }

    #[test]
    fn only_a_refusal_that_is_the_batchs_fault_ends_its_life() {
        let (mut p, t0) = proto(8, 1 << 20);
        for s in 1..=3 {
            p.on_batch(s, 10).unwrap();
        }
        p.on_resume(0);
        while p.poll_send(t0).is_some() {}
        // INVALID_ARGUMENT: final.
        assert_eq!(p.on_rejected(1, 3, t0), Rejection::Final);
        assert_eq!(effects(&mut p), vec![Effect::Remove(1)]);
        // UNAVAILABLE (a store error at the core): kept, the stream goes down.
        assert_eq!(p.on_rejected(2, 14, t0), Rejection::Retry);
        assert_eq!(effects(&mut p), vec![]);
        assert!(!p.is_open());
        assert_eq!(p.spool().0, 2, "2 and 3 stay in the spool");
        assert_eq!((p.counters.rejected, p.counters.unavailable), (1, 1));
        for code in [3u8, 6, 7, 9, 11] {
            assert!(refusal_is_final(code));
        }
        for code in [1u8, 4, 8, 10, 13, 14] {
            assert!(!refusal_is_final(code), "{code}");
        }
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts() {
        let (mut p, _) = proto(8, 250);
        for s in 1..=4 {
            p.on_batch(s, 100).unwrap();
        }
        assert_eq!(effects(&mut p), vec![Effect::Drop(1), Effect::Drop(2)]);
        assert_eq!((p.spool(), p.counters.spool_dropped), ((2, 200), 2));
    }

    #[test]
    fn the_drain_timeout_holds_when_the_core_never_answers() {
        let (mut p, t0) = proto(8, 1 << 20);
        p.on_batch(1, 10).unwrap();
        p.on_input_closed(t0);
        // Every attempt fails; the deadline is still one of the timeouts.
        for i in 0..100 {
            p.on_connect_failed(t0 + i * 100 * MS);
            assert!(p.poll_timeout().unwrap() <= t0 + Duration::from_secs(10));
        }
        assert_eq!(p.done(t0 + Duration::from_secs(10)), Some(Done::DrainTimeout { left: 1 }));
    }

    #[test]
    fn a_reused_sequence_number_is_refused_loudly() {
        let (mut p, t0) = proto(8, 1 << 20);
        p.on_resume(50);
        assert_eq!(p.on_batch(50, 10), Err(BatchError::Reused { seq: 50, resume: 50 }));
        assert_eq!(p.counters.rejected, 1);
        p.on_batch(51, 10).unwrap();
        assert_eq!(p.poll_send(t0), Some(51));
    }
}
