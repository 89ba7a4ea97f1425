//! DPDK rx queues as a [`PacketSource`] (feature `dpdk`). All `unsafe` is in
//! the `dpdk-shim` crate; this module only uses its safe layer.
use super::{CaptureError, LinkType, PacketSource, RawPacket};
use dpdk_shim::{RxBurst, RxQueue};

/// One rx queue, polled in bursts of 32.
#[derive(Debug)]
pub struct DpdkSource {
    rxq: RxQueue,
    burst: RxBurst,
}

impl DpdkSource {
    /// Wrap a queue handle.
    pub fn new(rxq: RxQueue) -> Self {
        Self { rxq, burst: RxBurst::new() }
    }
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl PacketSource for DpdkSource {
    /// One burst. Packets carry the wall-clock time read once per burst
    /// (mbuf timestamps depend on the device). The burst's mbufs are freed
    /// in bulk once handed over. Never ends by itself.
    fn next_batch(&mut self, sink: &mut dyn FnMut(&RawPacket<'_>)) -> Result<bool, CaptureError> {
        let n = self.rxq.rx_into(&mut self.burst);
        if n > 0 {
            let ts_ns = wall_ns();
            let queue = self.rxq.queue();
            for i in 0..n {
                let (data, wire_len) = self.burst.get(i);
                sink(&RawPacket { data, ts_ns, wire_len, link: LinkType::Ethernet, queue });
            }
            self.burst.clear();
        }
        Ok(true)
    }
}
