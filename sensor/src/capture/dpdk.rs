//! DPDK rx queues as a [`PacketSource`] (feature `dpdk`). All `unsafe` is in
//! the `dpdk-shim` crate; this module only uses its safe layer.
use super::{CaptureError, LinkType, PacketSource, RawPacket};
use dpdk_shim::{Mbuf, RxQueue, BURST};

/// One rx queue, polled in bursts of 32.
#[derive(Debug)]
pub struct DpdkSource {
    rxq: RxQueue,
    mbufs: Vec<Mbuf>,
}

impl DpdkSource {
    /// Wrap a queue handle.
    pub fn new(rxq: RxQueue) -> Self {
        Self { rxq, mbufs: Vec::with_capacity(BURST) }
    }
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl PacketSource for DpdkSource {
    /// One burst. Packets carry the wall-clock time read once per burst
    /// (mbuf timestamps depend on the device). Mbufs are freed when the
    /// burst has been handed over. Never ends by itself.
    fn next_batch(&mut self, sink: &mut dyn FnMut(&RawPacket<'_>)) -> Result<bool, CaptureError> {
        let n = self.rxq.rx_burst(&mut self.mbufs);
        if n > 0 {
            let ts_ns = wall_ns();
            let queue = self.rxq.queue();
            for m in &self.mbufs {
                sink(&RawPacket { data: m.data(), ts_ns, wire_len: m.pkt_len(), link: LinkType::Ethernet, queue });
            }
            self.mbufs.clear();
        }
        Ok(true)
    }
}
