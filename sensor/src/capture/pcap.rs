//! Pcap and pcapng files, parsed with the `pcap-parser` crate from chunks
//! that a read-ahead thread fills (one copy out of the page cache, on another
//! core; bounded memory; no `unsafe`).
//!
//! Why a crate: file formats are not Wirefold's product, and `pcap-parser`
//! (Rusticata) is maintained, fuzzed and handles both byte orders, nanosecond
//! pcap and every pcapng block. We keep the record loop ourselves only to
//! know each record's byte offset for error messages.

use super::{CaptureError, LinkType, PacketSource, RawPacket};
use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Largest record accepted; anything claiming more is corrupt.
pub const MAX_RECORD: u32 = 16 << 20;
/// Packets delivered per [`PacketSource::next_batch`] call.
pub const BATCH: usize = 256;

#[derive(Clone, Copy)]
enum Format {
    Legacy { big_endian: bool, nanos: bool, link: LinkType },
    Ng { big_endian: bool },
}

#[derive(Clone, Copy)]
struct Iface {
    link: LinkType,
    /// Timestamp units per second.
    resol: u64,
    offset_s: i64,
}

/// File bytes per read-ahead chunk.
const CHUNK: usize = 4 << 20;
/// Room in front of each chunk for the unread tail of the previous one, so a
/// record that straddles two chunks becomes contiguous without a big copy.
const HEADROOM: usize = 256 << 10;
/// Chunks read ahead of the parser.
const READ_AHEAD: usize = 2;

type Chunk = std::io::Result<(Vec<u8>, usize)>;

/// A read buffer fed by a read-ahead thread: the kernel's copy out of the
/// page cache runs on another core while this one parses. Memory stays
/// bounded at `READ_AHEAD + 2` chunks. Knows the file offset of every byte.
struct Buf {
    rx: Option<crossbeam::channel::Receiver<Chunk>>,
    recycle: crossbeam::channel::Sender<Vec<u8>>,
    reader: Option<std::thread::JoinHandle<()>>,
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// File bytes received from the reader so far.
    received: u64,
    eof: bool,
}

impl Buf {
    fn new(mut file: File) -> Self {
        let (tx, rx) = crossbeam::channel::bounded::<Chunk>(READ_AHEAD);
        let (recycle, spare) = crossbeam::channel::bounded::<Vec<u8>>(READ_AHEAD + 2);
        let reader = std::thread::Builder::new()
            .name("wirefold-read".into())
            .spawn(move || loop {
                let mut v = spare.try_recv().unwrap_or_else(|_| vec![0u8; HEADROOM + CHUNK]);
                let mut n = 0;
                let r = loop {
                    if n == CHUNK {
                        break Ok(());
                    }
                    match file.read(&mut v[HEADROOM + n..]) {
                        Ok(0) => break Ok(()),
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => break Err(e),
                    }
                };
                let last = n < CHUNK || r.is_err();
                let msg = r.map(|_| (v, n));
                if tx.send(msg).is_err() || last {
                    return;
                }
            })
            .expect("spawn the read-ahead thread");
        Buf { rx: Some(rx), recycle, reader: Some(reader), data: Vec::new(), start: 0, end: 0, received: 0, eof: false }
    }

    fn avail(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// File offset of the first unread byte.
    fn offset(&self) -> u64 {
        self.received - (self.end - self.start) as u64
    }

    /// Make at least `need` bytes available if the file has them.
    fn fill(&mut self, need: usize) -> std::io::Result<()> {
        while self.end - self.start < need && !self.eof {
            let Some(rx) = &self.rx else {
                self.eof = true;
                break;
            };
            let (mut v, n) = match rx.recv() {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    self.eof = true;
                    return Err(e);
                }
                Err(_) => {
                    self.eof = true;
                    break;
                }
            };
            if n < CHUNK {
                self.eof = true;
            }
            let left = self.end - self.start;
            if left <= HEADROOM {
                v[HEADROOM - left..HEADROOM].copy_from_slice(&self.data[self.start..self.end]);
                let old = std::mem::replace(&mut self.data, v);
                if old.len() == HEADROOM + CHUNK {
                    let _ = self.recycle.try_send(old);
                }
                self.start = HEADROOM - left;
                self.end = HEADROOM + n;
            } else {
                // A record larger than the headroom straddles chunks: join
                // the two in a private buffer (rare: only for huge records).
                let mut joined = Vec::with_capacity(left + n);
                joined.extend_from_slice(&self.data[self.start..self.end]);
                joined.extend_from_slice(&v[HEADROOM..HEADROOM + n]);
                let _ = self.recycle.try_send(v);
                self.data = joined;
                self.start = 0;
                self.end = self.data.len();
            }
            self.received += n as u64;
        }
        Ok(())
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // Closing the channel makes a blocked reader give up; then wait for it.
        self.rx = None;
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

/// A pcap or pcapng file as a [`PacketSource`].
pub struct PcapFile {
    path: String,
    buf: Buf,
    format: Format,
    ifaces: Vec<Iface>,
    done: bool,
    queue: u16,
}

impl std::fmt::Debug for PcapFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapFile").field("path", &self.path).field("offset", &self.buf.offset()).finish()
    }
}

impl PcapFile {
    /// Open `path` and read the file header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let p = path.as_ref();
        let name = p.display().to_string();
        let file = File::open(p).map_err(|source| CaptureError::Io { path: name.clone(), source })?;
        let mut s = Self {
            path: name,
            buf: Buf::new(file),
            format: Format::Legacy { big_endian: false, nanos: false, link: LinkType::Ethernet },
            ifaces: Vec::new(),
            done: false,
            queue: 0,
        };
        s.read_header()?;
        Ok(s)
    }

    /// The file's path as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.buf.offset()
    }

    fn io(&self, source: std::io::Error) -> CaptureError {
        CaptureError::Io { path: self.path.clone(), source }
    }

    fn read_header(&mut self) -> Result<(), CaptureError> {
        self.buf.fill(24).map_err(|e| self.io(e))?;
        let d = self.buf.avail();
        if d.len() < 4 {
            return Err(CaptureError::NotPcap {
                path: self.path.clone(),
                detail: format!("file is {} bytes long", d.len()),
            });
        }
        let magic = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        match magic {
            0xa1b2c3d4 | 0xd4c3b2a1 | 0xa1b23c4d | 0x4d3cb2a1 => {
                let (_, h) = pcap_parser::pcap::parse_pcap_header(d).map_err(|_| CaptureError::Truncated {
                    path: self.path.clone(),
                    offset: 0,
                    detail: "pcap file header shorter than 24 bytes".into(),
                })?;
                self.format = Format::Legacy {
                    big_endian: h.is_bigendian(),
                    nanos: h.is_nanosecond_precision(),
                    link: LinkType::from_pcap(h.network.0 as u32),
                };
                self.buf.start += 24;
            }
            0x0a0d0d0a => self.format = Format::Ng { big_endian: false },
            other => {
                return Err(CaptureError::NotPcap {
                    path: self.path.clone(),
                    detail: format!("magic number 0x{other:08x}"),
                })
            }
        }
        Ok(())
    }

    fn truncated(&self, detail: String) -> CaptureError {
        CaptureError::Truncated { path: self.path.clone(), offset: self.buf.offset(), detail }
    }

    fn corrupt(&self, detail: String) -> CaptureError {
        CaptureError::Corrupt { path: self.path.clone(), offset: self.buf.offset(), detail }
    }

    fn legacy_batch(
        &mut self,
        big_endian: bool,
        nanos: bool,
        link: LinkType,
        sink: &mut dyn FnMut(&RawPacket<'_>),
    ) -> Result<bool, CaptureError> {
        for _ in 0..BATCH {
            if self.buf.avail().len() < 16 {
                self.buf.fill(16).map_err(|e| self.io(e))?;
                let left = self.buf.avail().len();
                if left == 0 {
                    return Ok(false);
                }
                if left < 16 {
                    return Err(self.truncated(format!("record header needs 16 bytes, {left} left")));
                }
            }
            let h = &self.buf.avail()[8..12];
            let caplen_raw = [h[0], h[1], h[2], h[3]];
            let caplen = if big_endian { u32::from_be_bytes(caplen_raw) } else { u32::from_le_bytes(caplen_raw) };
            if caplen > MAX_RECORD {
                return Err(self.corrupt(format!("record claims {caplen} captured bytes (limit {MAX_RECORD})")));
            }
            let need = 16 + caplen as usize;
            if self.buf.avail().len() < need {
                self.buf.fill(need).map_err(|e| self.io(e))?;
                let left = self.buf.avail().len();
                if left < need {
                    return Err(
                        self.truncated(format!("record of {caplen} captured bytes, {} left in file", left - 16))
                    );
                }
            }
            let rest = self.buf.avail();
            let parsed = if big_endian {
                pcap_parser::pcap::parse_pcap_frame_be(rest)
            } else {
                pcap_parser::pcap::parse_pcap_frame(rest)
            };
            let Ok((_, rec)) = parsed else {
                return Err(self.corrupt("unreadable record".into()));
            };
            let frac = if nanos { rec.ts_usec as u64 } else { rec.ts_usec as u64 * 1000 };
            let ts_ns = (rec.ts_sec as u64) * 1_000_000_000 + frac;
            sink(&RawPacket { data: rec.data, ts_ns, wire_len: rec.origlen.max(rec.caplen), link, queue: self.queue });
            self.buf.start += need;
        }
        Ok(true)
    }

    fn ng_batch(&mut self, sink: &mut dyn FnMut(&RawPacket<'_>)) -> Result<bool, CaptureError> {
        let mut delivered = 0;
        while delivered < BATCH {
            if self.buf.avail().len() < 12 {
                self.buf.fill(12).map_err(|e| self.io(e))?;
                let left = self.buf.avail().len();
                if left == 0 {
                    return Ok(false);
                }
                if left < 12 {
                    return Err(self.truncated(format!("block header needs 12 bytes, {left} left")));
                }
            }
            let Format::Ng { mut big_endian } = self.format else {
                return Err(self.corrupt("pcapng block in a pcap file".into()));
            };
            let h = self.buf.avail();
            let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            if magic == 0x0a0d0d0a {
                big_endian = h[8..12] == [0x1a, 0x2b, 0x3c, 0x4d];
                self.format = Format::Ng { big_endian };
                self.ifaces.clear();
            }
            let blen_raw = [h[4], h[5], h[6], h[7]];
            let blen = if big_endian { u32::from_be_bytes(blen_raw) } else { u32::from_le_bytes(blen_raw) };
            if !(12..=MAX_RECORD).contains(&blen) {
                return Err(self.corrupt(format!("block claims {blen} bytes")));
            }
            let need = blen as usize;
            if self.buf.avail().len() < need {
                self.buf.fill(need).map_err(|e| self.io(e))?;
                let left = self.buf.avail().len();
                if left < need {
                    return Err(self.truncated(format!("block of {blen} bytes, {left} left in file")));
                }
            }
            let rest = self.buf.avail();
            let parsed = if big_endian {
                pcap_parser::pcapng::parse_block_be(rest)
            } else {
                pcap_parser::pcapng::parse_block_le(rest)
            };
            let block = match parsed {
                Ok((_, b)) => b,
                Err(e) => {
                    let detail = format!("bad pcapng block: {e:?}");
                    return Err(self.corrupt(detail));
                }
            };
            match block {
                Block::InterfaceDescription(idb) => self.ifaces.push(Iface {
                    link: LinkType::from_pcap(idb.linktype.0 as u32),
                    resol: idb.ts_resolution().unwrap_or(1_000_000),
                    offset_s: idb.ts_offset(),
                }),
                Block::EnhancedPacket(epb) => {
                    let Some(iface) = self.ifaces.get(epb.if_id as usize).copied() else {
                        let detail = format!("packet names interface {} which was never described", epb.if_id);
                        return Err(self.corrupt(detail));
                    };
                    let units = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                    let ts_ns = units_to_ns(units, iface.resol)
                        .saturating_add_signed(iface.offset_s.saturating_mul(1_000_000_000));
                    let data = epb.packet_data();
                    sink(&RawPacket {
                        data,
                        ts_ns,
                        wire_len: epb.orig_len().max(data.len() as u32),
                        link: iface.link,
                        queue: self.queue,
                    });
                    delivered += 1;
                }
                Block::SimplePacket(spb) => {
                    let Some(iface) = self.ifaces.first().copied() else {
                        return Err(self.corrupt("simple packet block before any interface description".into()));
                    };
                    let data = spb.packet_data();
                    sink(&RawPacket {
                        data,
                        ts_ns: 0,
                        wire_len: spb.orig_len().max(data.len() as u32),
                        link: iface.link,
                        queue: self.queue,
                    });
                    delivered += 1;
                }
                _ => {}
            }
            self.buf.start += need;
        }
        Ok(true)
    }
}

fn units_to_ns(units: u64, resol: u64) -> u64 {
    match resol {
        1_000_000_000 => units,
        1_000_000 => units.saturating_mul(1000),
        0 => units,
        r => ((units as u128 * 1_000_000_000u128) / r as u128) as u64,
    }
}

impl PacketSource for PcapFile {
    fn position(&self) -> Option<u64> {
        Some(self.offset())
    }

    fn next_batch(&mut self, sink: &mut dyn FnMut(&RawPacket<'_>)) -> Result<bool, CaptureError> {
        if self.done {
            return Ok(false);
        }
        let r = match self.format {
            Format::Legacy { big_endian, nanos, link } => self.legacy_batch(big_endian, nanos, link, sink),
            Format::Ng { .. } => self.ng_batch(sink),
        };
        if !matches!(r, Ok(true)) {
            self.done = true;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wirefold-pcap-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    fn legacy(records: &[(&[u8], u32)]) -> Vec<u8> {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0];
        for (i, (data, wire)) in records.iter().enumerate() {
            f.extend_from_slice(&(100 + i as u32).to_le_bytes());
            f.extend_from_slice(&500u32.to_le_bytes());
            f.extend_from_slice(&(data.len() as u32).to_le_bytes());
            f.extend_from_slice(&wire.to_le_bytes());
            f.extend_from_slice(data);
        }
        f
    }

    type Packets = Vec<(u64, Vec<u8>, u32)>;

    fn collect(src: &mut PcapFile) -> (Packets, Result<(), CaptureError>) {
        let mut out = Vec::new();
        loop {
            match src.next_batch(&mut |p| out.push((p.ts_ns, p.data.to_vec(), p.wire_len))) {
                Ok(true) => continue,
                Ok(false) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn reads_legacy_records() {
        let p = write_tmp("ok.pcap", &legacy(&[(&[1, 2, 3], 3), (&[4, 5], 60)]));
        let mut f = PcapFile::open(&p).unwrap();
        let (pkts, r) = collect(&mut f);
        r.unwrap();
        assert_eq!(pkts, vec![(100_000_500_000, vec![1, 2, 3], 3), (101_000_500_000, vec![4, 5], 60)]);
    }

    #[test]
    fn truncation_names_file_and_offset() {
        let mut bytes = legacy(&[(&[1, 2, 3], 3), (&[4, 5, 6, 7], 4)]);
        bytes.truncate(bytes.len() - 2);
        let p = write_tmp("cut.pcap", &bytes);
        let mut f = PcapFile::open(&p).unwrap();
        let (pkts, r) = collect(&mut f);
        assert_eq!(pkts.len(), 1, "the record before the cut is still delivered");
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("cut.pcap"), "{msg}");
        assert!(msg.contains("byte offset 43"), "{msg}");
    }

    #[test]
    fn rejects_non_pcap_and_huge_records() {
        let p = write_tmp("junk.pcap", b"hello world, not a capture");
        let e = PcapFile::open(&p).unwrap_err().to_string();
        assert!(e.contains("not a pcap") && e.contains("0x6c6c6568"), "{e}");
        let p = write_tmp("empty.pcap", b"");
        assert!(PcapFile::open(&p).unwrap_err().to_string().contains("0 bytes"));
        let mut bytes = legacy(&[(&[1], 1)]);
        bytes[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let p = write_tmp("huge.pcap", &bytes);
        let mut f = PcapFile::open(&p).unwrap();
        let e = collect(&mut f).1.unwrap_err().to_string();
        assert!(e.contains("corrupt at byte offset 24"), "{e}");
    }
}
