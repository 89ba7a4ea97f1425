//! Bidirectional flow tracking. No I/O, no wall clock: time is whatever the
//! caller passes in (packet time), so the same input always gives the same
//! flows.
#![forbid(unsafe_code)]

pub mod host;
pub mod key;
pub mod stats;
pub mod table;
pub mod tcp;

pub use key::FlowKey;
pub use stats::{DirStats, Summary};
pub use table::{FinishedFlow, Flow, FlowConfig, FlowStats, FlowTable};
pub use tcp::{TcpState, TcpTracker};

/// Why a flow record was exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EndReason {
    /// No packet for the idle timeout.
    Idle,
    /// The flow lasted the active timeout; it continues in a new record.
    Active,
    /// TCP closed with FIN in both directions.
    Fin,
    /// TCP reset.
    Rst,
    /// Removed to make room when the table was full.
    Evicted,
    /// The input ended.
    Eof,
    /// The sensor was stopped.
    Shutdown,
}

impl EndReason {
    /// Number of reasons.
    pub const COUNT: usize = 7;
    /// All reasons, in counter order.
    pub const ALL: [EndReason; Self::COUNT] =
        [Self::Idle, Self::Active, Self::Fin, Self::Rst, Self::Evicted, Self::Eof, Self::Shutdown];

    /// Name used in flow records and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Active => "active",
            Self::Fin => "fin",
            Self::Rst => "rst",
            Self::Evicted => "evicted",
            Self::Eof => "eof",
            Self::Shutdown => "shutdown",
        }
    }
}
