//! Packet sources. Every front end — pcap files now, AF_PACKET and DPDK
//! later — implements [`PacketSource`], so one pipeline serves them all and
//! tests can compare them.

pub mod afpacket;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod pcap;

pub use crate::wire::decode::LinkType;

/// One captured packet, borrowed from the source's buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawPacket<'a> {
    /// Captured bytes (may be shorter than `wire_len`).
    pub data: &'a [u8],
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire.
    pub wire_len: u32,
    /// Link-layer type of `data`.
    pub link: LinkType,
    /// Queue or capture-thread index the packet arrived on.
    pub queue: u16,
}

/// Errors from packet sources; each names what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a pcap or pcapng file.
    #[error("{path}: not a pcap or pcapng file ({detail})")]
    NotPcap {
        /// File path.
        path: String,
        /// What was found instead.
        detail: String,
    },
    /// The file ends in the middle of a record.
    #[error("{path}: truncated at byte offset {offset}: {detail}")]
    Truncated {
        /// File path.
        path: String,
        /// Byte offset of the incomplete record.
        offset: u64,
        /// What was cut.
        detail: String,
    },
    /// A live source could not be set up (interface, permissions, ring).
    #[error("{0}")]
    Setup(String),
    /// A record that cannot be parsed.
    #[error("{path}: corrupt at byte offset {offset}: {detail}")]
    Corrupt {
        /// File path.
        path: String,
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
}

/// A source of packets, delivered in batches.
pub trait PacketSource {
    /// Deliver the next batch of packets to `sink`. Returns `Ok(false)` at the
    /// end of the input; packets delivered before an error stay delivered.
    fn next_batch(&mut self, sink: &mut dyn FnMut(&RawPacket<'_>)) -> Result<bool, CaptureError>;

    /// Bytes of the source consumed so far, where that means something (files).
    fn position(&self) -> Option<u64> {
        None
    }
}
