//! A small TCP state tracker: enough to know handshake, establishment and
//! close, not a reassembler.
use crate::wire::tcp::flags;

/// Connection state as seen from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpState {
    /// First packet seen was not a SYN (capture started mid-stream).
    #[default]
    Midstream,
    /// SYN seen.
    SynSent,
    /// SYN+ACK seen.
    SynReceived,
    /// Handshake completed, or data seen with ACK on a mid-stream flow.
    Established,
    /// A FIN in one direction.
    Closing,
    /// FIN in both directions.
    Closed,
    /// RST seen.
    Reset,
}

impl TcpState {
    /// Name used in flow records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Midstream => "midstream",
            Self::SynSent => "syn_sent",
            Self::SynReceived => "syn_received",
            Self::Established => "established",
            Self::Closing => "closing",
            Self::Closed => "closed",
            Self::Reset => "reset",
        }
    }
}

/// Flags and state of one TCP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpTracker {
    /// Current state.
    pub state: TcpState,
    /// Union of flags sent by the initiator.
    pub fwd_flags: u8,
    /// Union of flags sent by the responder.
    pub rev_flags: u8,
    /// Packets carrying each flag, indexed by bit (FIN=0 ... CWR=7).
    pub flag_counts: [u32; 8],
    fin_fwd: bool,
    fin_rev: bool,
}

impl TcpTracker {
    /// Update with one segment's flags. Returns `true` when this segment
    /// closed the connection (second FIN, or RST).
    #[inline]
    pub fn update(&mut self, fl: u8, forward: bool) -> bool {
        if forward {
            self.fwd_flags |= fl;
        } else {
            self.rev_flags |= fl;
        }
        let mut bits = fl;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            self.flag_counts[i] += 1;
            bits &= bits - 1;
        }
        let before = self.state;
        if before == TcpState::Closed || before == TcpState::Reset {
            return false;
        }
        if fl & flags::RST != 0 {
            self.state = TcpState::Reset;
            return true;
        }
        if fl & flags::FIN != 0 {
            if forward {
                self.fin_fwd = true;
            } else {
                self.fin_rev = true;
            }
            self.state = if self.fin_fwd && self.fin_rev { TcpState::Closed } else { TcpState::Closing };
            return self.state == TcpState::Closed;
        }
        let syn = fl & flags::SYN != 0;
        let ack = fl & flags::ACK != 0;
        self.state = match (before, syn, ack) {
            (TcpState::Midstream, true, false) => TcpState::SynSent,
            (TcpState::Midstream | TcpState::SynSent, true, true) => TcpState::SynReceived,
            (TcpState::SynReceived, false, true) => TcpState::Established,
            (TcpState::Midstream, false, true) => TcpState::Established,
            (s, _, _) => s,
        };
        false
    }

    /// A tracker for a new record of the same connection: keeps the state
    /// and FIN progress, clears flags and counts.
    pub fn restarted(&self) -> Self {
        Self { state: self.state, fin_fwd: self.fin_fwd, fin_rev: self.fin_rev, ..Self::default() }
    }

    /// Both directions' flags, as letters in the order `SAPFRUEC`.
    pub fn flags_string(&self) -> String {
        flag_letters(self.fwd_flags | self.rev_flags)
    }
}

/// TCP flags as letters in the order `SAPFRUEC` (SYN, ACK, PSH, FIN, RST,
/// URG, ECE, CWR).
pub fn flag_letters(f: u8) -> String {
    const ORDER: [(u8, char); 8] = [
        (flags::SYN, 'S'),
        (flags::ACK, 'A'),
        (flags::PSH, 'P'),
        (flags::FIN, 'F'),
        (flags::RST, 'R'),
        (flags::URG, 'U'),
        (flags::ECE, 'E'),
        (flags::CWR, 'C'),
    ];
    ORDER.iter().filter(|(b, _)| f & b != 0).map(|(_, c)| *c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flags::*;

    #[test]
    fn handshake_and_fin_close() {
        let mut t = TcpTracker::default();
        assert!(!t.update(SYN, true));
        assert_eq!(t.state, TcpState::SynSent);
        assert!(!t.update(SYN | ACK, false));
        assert_eq!(t.state, TcpState::SynReceived);
        assert!(!t.update(ACK, true));
        assert_eq!(t.state, TcpState::Established);
        assert!(!t.update(FIN | ACK, true));
        assert_eq!(t.state, TcpState::Closing);
        assert!(t.update(FIN | ACK, false));
        assert_eq!(t.state, TcpState::Closed);
        assert!(!t.update(ACK, true), "the last ACK does not close twice");
        assert_eq!(t.flags_string(), "SAF");
        assert_eq!(t.flag_counts[4], 5); // ACK bit
        assert_eq!(t.flag_counts[1], 2); // SYN bit
    }

    #[test]
    fn reset_and_midstream() {
        let mut t = TcpTracker::default();
        t.update(ACK | PSH, true);
        assert_eq!(t.state, TcpState::Established);
        assert!(t.update(RST, false));
        assert_eq!(t.state, TcpState::Reset);
        assert_eq!(flag_letters(0xff), "SAPFRUEC");
    }
}
