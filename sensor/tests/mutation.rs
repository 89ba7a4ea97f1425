//! A deterministic, always-on cousin of the fuzz target (`fuzz/`): take
//! every packet of the bundled captures, damage it in many ways (truncation,
//! byte flips, length-field corruption), and check that the decoder and flow
//! table never panic and account for every packet.
mod common;
use common::*;
use wirefold_sensor::capture::pcap::PcapFile;
use wirefold_sensor::capture::PacketSource;
use wirefold_sensor::flow::{EndReason, FlowConfig, FlowTable};
use wirefold_sensor::wire::{Decoder, PacketMeta, MAX_VLANS};

/// xorshift64*: a fixed-seed generator, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn damaged_packets_are_counted_never_panic() {
    let mut rng = Rng(0x5eed_f00d);
    let mut dec = Decoder::new();
    let mut table = FlowTable::new(FlowConfig { max_flows: 512, ..FlowConfig::default() });
    let mut meta = PacketMeta::default();
    let mut flow_packets = 0u64;
    let mut variants = 0u64;
    let mut buf = Vec::with_capacity(65536);
    for file in captures_in(&pcaps()) {
        let Ok(mut src) = PcapFile::open(&file) else { continue };
        loop {
            let more = src.next_batch(&mut |p| {
                for v in 0..12 {
                    buf.clear();
                    buf.extend_from_slice(p.data);
                    let n = buf.len();
                    match v {
                        0 => {}
                        1..=4 => {
                            let cut = (rng.next() as usize) % (n + 1);
                            buf.truncate(cut);
                        }
                        5..=8 if n > 0 => {
                            for _ in 0..1 + rng.next() % 4 {
                                let i = (rng.next() as usize) % n;
                                buf[i] ^= 1 << (rng.next() % 8);
                            }
                        }
                        // Set a byte in the first 64 (where the length fields live) to 0x00 or 0xff.
                        _ if n > 0 => {
                            let i = (rng.next() as usize) % n.min(64);
                            buf[i] = if rng.next().is_multiple_of(2) { 0 } else { 0xff };
                        }
                        _ => {}
                    }
                    variants += 1;
                    let wire = if v % 2 == 0 { p.wire_len } else { buf.len() as u32 };
                    if dec.decode(p.link, &buf, wire, p.ts_ns, &mut meta) {
                        assert!(meta.ip_version == 4 || meta.ip_version == 6);
                        assert!(meta.vlan_count as usize <= MAX_VLANS);
                        assert!(meta.payload_len <= meta.ip_len);
                        let payload = Decoder::payload(&buf, &meta);
                        assert!(usize::from(meta.payload_off) + payload.len() <= buf.len());
                        assert!(payload.len() <= meta.payload_len as usize);
                        flow_packets += 1;
                        table.add(&meta, payload);
                    }
                }
            });
            match more {
                Ok(true) => {}
                _ => break,
            }
        }
    }
    let s = &dec.stats;
    assert_eq!(s.packets, variants);
    assert_eq!(
        flow_packets + s.malformed_total() + s.skipped.iter().sum::<u64>(),
        variants,
        "every packet counted once"
    );
    assert!(s.malformed_total() > variants / 20, "damage must be detected: {} of {variants}", s.malformed_total());
    table.flush(EndReason::Eof);
    let in_flows: u64 = table.drain_finished().map(|f| f.flow.packets()).sum();
    assert_eq!(in_flows, flow_packets, "the table loses nothing, evictions included");
    assert_eq!(table.stats.packets, flow_packets);
}
