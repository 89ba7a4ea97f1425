//! Fuzz the packet decoder and the flow table behind it.
//!
//! Input: the first byte picks the link type, the rest is the packet.
//! Invariants checked beyond "no panic":
//! * a decoded packet has IP version 4 or 6 and at most MAX_VLANS tags;
//! * its payload length never exceeds its IP length;
//! * every packet is counted exactly once as flow, malformed or skipped;
//! * the flow table accounts for every packet it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wirefold_sensor::flow::{EndReason, FlowConfig, FlowTable};
use wirefold_sensor::wire::decode::LinkType;
use wirefold_sensor::wire::{Decoder, PacketMeta, MAX_VLANS};

const LINKS: [u32; 9] = [1, 0, 108, 101, 228, 229, 113, 276, 10];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, pkt)) = data.split_first() else { return };
    let link = LinkType::from_pcap(LINKS[sel as usize % LINKS.len()]);
    let mut d = Decoder::new();
    let mut t = FlowTable::new(FlowConfig::default());
    let mut m = PacketMeta::default();
    let mut flows = 0u64;
    // Decode the packet as captured, and cut short by a snap length.
    for (i, cut) in [pkt.len(), pkt.len() / 2].into_iter().enumerate() {
        let wire = pkt.len() as u32;
        if d.decode(link, &pkt[..cut], wire, i as u64 * 1_000_000_000, &mut m) {
            flows += 1;
            assert!(m.ip_version == 4 || m.ip_version == 6);
            assert!((m.vlan_count as usize) <= MAX_VLANS);
            assert!(m.payload_len <= m.ip_len, "payload {} > ip length {}", m.payload_len, m.ip_len);
            t.add(&m);
        }
    }
    let s = &d.stats;
    assert_eq!(s.packets, 2);
    assert_eq!(flows + s.malformed_total() + s.skipped.iter().sum::<u64>(), s.packets);
    t.flush(EndReason::Eof);
    let counted: u64 = t.drain_finished().map(|f| f.flow.packets()).sum();
    assert_eq!(counted, flows);
});
