//! Test helpers: read pcap/pcapng files and decode Ethernet / SLL / SLL2 /
//! raw IP / BSD null frames down to TCP and UDP payloads. Test code only.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;

/// `sensor/tests/pcaps/NAME`.
pub fn pcap_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sensor/tests/pcaps").join(name)
}

/// Every frame of a capture with its link type.
pub fn frames(name: &str) -> Vec<(u32, Vec<u8>)> {
    let data = std::fs::read(pcap_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = Vec::new();
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    if magic == 0x0a0d0d0a {
        let mut rest = &data[..];
        let mut links: Vec<u32> = Vec::new();
        while !rest.is_empty() {
            let Ok((r, block)) = pcap_parser::pcapng::parse_block_le(rest) else { break };
            match block {
                Block::SectionHeader(_) => links.clear(),
                Block::InterfaceDescription(idb) => links.push(idb.linktype.0 as u32),
                Block::EnhancedPacket(epb) => {
                    let link = links.get(epb.if_id as usize).copied().unwrap_or(1);
                    out.push((link, epb.packet_data().to_vec()));
                }
                Block::SimplePacket(spb) => out.push((links.first().copied().unwrap_or(1), spb.packet_data().to_vec())),
                _ => {}
            }
            rest = r;
        }
    } else {
        let (mut rest, h) = pcap_parser::pcap::parse_pcap_header(&data).expect("pcap header");
        let be = h.is_bigendian();
        let link = h.network.0 as u32;
        while !rest.is_empty() {
            let parsed = if be {
                pcap_parser::pcap::parse_pcap_frame_be(rest)
            } else {
                pcap_parser::pcap::parse_pcap_frame(rest)
            };
            let Ok((r, f)) = parsed else { break };
            out.push((link, f.data.to_vec()));
            rest = r;
        }
    }
    out
}

/// A decoded TCP or UDP packet.
#[derive(Debug, Clone)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Decodes one frame; `None` for anything but unfragmented TCP/UDP over IP.
pub fn decode(link: u32, f: &[u8]) -> Option<Pkt> {
    let (ethertype, mut l3) = match link {
        1 => {
            let mut et = be16(f, 12)?;
            let mut off = 14;
            while et == 0x8100 || et == 0x88a8 {
                et = be16(f, off + 2)?;
                off += 4;
            }
            (et, f.get(off..)?)
        }
        0 => {
            let fam = u32::from_le_bytes(f.get(..4)?.try_into().ok()?);
            let fam = if fam > 0xffff { fam.swap_bytes() } else { fam };
            (if fam == 2 { 0x0800 } else { 0x86dd }, f.get(4..)?)
        }
        113 => (be16(f, 14)?, f.get(16..)?),
        276 => (be16(f, 0)?, f.get(20..)?),
        12 | 14 | 101 | 228 | 229 => {
            let v = f.first()? >> 4;
            (if v == 4 { 0x0800 } else { 0x86dd }, f)
        }
        _ => return None,
    };
    let (src, dst, mut proto) = match ethertype {
        0x0800 => {
            let ihl = usize::from(l3.first()? & 15) * 4;
            let total = usize::from(be16(l3, 2)?);
            let frag = be16(l3, 6)?;
            if frag & 0x3fff != 0 {
                return None;
            }
            let s: [u8; 4] = l3.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = l3.get(16..20)?.try_into().ok()?;
            let p = *l3.get(9)?;
            l3 = l3.get(ihl..total.min(l3.len()))?;
            (IpAddr::from(s), IpAddr::from(d), p)
        }
        0x86dd => {
            let plen = usize::from(be16(l3, 4)?);
            let s: [u8; 16] = l3.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = l3.get(24..40)?.try_into().ok()?;
            let p = *l3.get(6)?;
            l3 = l3.get(40..(40 + plen).min(l3.len()))?;
            (IpAddr::from(s), IpAddr::from(d), p)
        }
        _ => return None,
    };
    // IPv6 extension headers.
    while matches!(proto, 0 | 43 | 60 | 44) {
        if proto == 44 {
            let off_m = be16(l3, 2)?;
            if off_m & 0xfff9 != 0 {
                return None;
            }
            proto = *l3.first()?;
            l3 = l3.get(8..)?;
        } else {
            let len = (usize::from(*l3.get(1)?) + 1) * 8;
            proto = *l3.first()?;
            l3 = l3.get(len..)?;
        }
    }
    match proto {
        6 => {
            let doff = usize::from(l3.get(12)? >> 4) * 4;
            Some(Pkt {
                src,
                dst,
                proto,
                sport: be16(l3, 0)?,
                dport: be16(l3, 2)?,
                seq: u32::from_be_bytes(l3.get(4..8)?.try_into().ok()?),
                flags: *l3.get(13)?,
                payload: l3.get(doff..)?.to_vec(),
            })
        }
        17 => Some(Pkt {
            src,
            dst,
            proto,
            sport: be16(l3, 0)?,
            dport: be16(l3, 2)?,
            seq: 0,
            flags: 0,
            payload: l3.get(8..)?.to_vec(),
        }),
        _ => None,
    }
}

/// Directional key: (src, sport, dst, dport).
pub type DirKey = (IpAddr, u16, IpAddr, u16);

/// One TCP direction: SYN sequence number (if seen) and payload segments in capture order.
#[derive(Debug, Default)]
pub struct Dir {
    pub syn: Option<u32>,
    pub segs: Vec<(u32, Vec<u8>)>,
    pub order: usize,
}

/// Every TCP direction of a capture, with the order its first packet was seen.
pub fn tcp_directions(name: &str) -> BTreeMap<DirKey, Dir> {
    let mut m: BTreeMap<DirKey, Dir> = BTreeMap::new();
    let mut n = 0;
    for (link, f) in frames(name) {
        let Some(p) = decode(link, &f) else { continue };
        if p.proto != 6 {
            continue;
        }
        let d = m.entry((p.src, p.sport, p.dst, p.dport)).or_insert_with(|| {
            n += 1;
            Dir { order: n, ..Default::default() }
        });
        if p.flags & 0x02 != 0 {
            d.syn = Some(p.seq);
        }
        if !p.payload.is_empty() {
            d.segs.push((p.seq, p.payload));
        }
    }
    m
}

/// Reassembles the first `N` bytes of one direction with the crate's reassembler.
pub fn reassemble(d: &Dir, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let len = {
        let mut r = wirefold_inspect::tls::TcpReassembler::new(&mut buf);
        if let Some(s) = d.syn {
            r.set_start(s.wrapping_add(1));
        }
        for (seq, p) in &d.segs {
            let _ = r.push(*seq, p);
        }
        r.contiguous()
    };
    buf.truncate(len);
    buf
}

/// Runs tshark with `args` on a capture; `None` (with a note) when tshark is missing.
pub fn tshark(name: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("tshark").arg("-n").arg("-r").arg(pcap_path(name)).args(args).output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => {
            eprintln!("note: tshark failed on {name}: {}", String::from_utf8_lossy(&o.stderr));
            None
        }
        Err(_) => {
            eprintln!("note: tshark is not installed; skipping the tshark comparison for {name}");
            None
        }
    }
}
