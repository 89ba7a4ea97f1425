//! Linux AF_PACKET capture with a TPACKET_V3 memory-mapped block ring.
//!
//! This module is one of Wirefold's two `unsafe` islands (the other is the
//! DPDK shim). Everything unsafe is here: socket options, the shared ring,
//! and handing blocks back to the kernel. Each block carries a `// SAFETY:`.
//!
//! How the ring works: the kernel fills fixed-size *blocks* with packets
//! (each a `tpacket3_hdr` followed by the frame) and "retires" a block when it
//! is full or after the retire timeout, setting `TP_STATUS_USER` in the
//! block's status word. We walk a retired block's packets, then store
//! `TP_STATUS_KERNEL` to give it back. Blocks are consumed in order.
#![allow(unsafe_code)]

use super::{CaptureError, LinkType, PacketSource, RawPacket};
use memmap2::{MmapOptions, MmapRaw};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, Ordering};

const TPACKET_V3: libc::c_int = 2;
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
/// `tpacket_block_desc` offsets: status, packet count, first packet.
const BD_STATUS: usize = 8;
const BD_NUM_PKTS: usize = 12;
const BD_FIRST_PKT: usize = 16;
/// `tpacket3_hdr` offsets.
const H_NEXT: usize = 0;
const H_SEC: usize = 4;
const H_NSEC: usize = 8;
const H_SNAPLEN: usize = 12;
const H_LEN: usize = 16;
const H_STATUS: usize = 20;
const H_MAC: usize = 24;
const H_VLAN_TCI: usize = 32;
const H_VLAN_TPID: usize = 36;

/// Ring geometry and socket options for one AF_PACKET socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// Interface name.
    pub iface: String,
    /// Bytes per ring block: a power of two, a multiple of the page size.
    pub block_size: u32,
    /// Blocks per ring.
    pub block_count: u32,
    /// Frame size hint (TPACKET_V3 packs frames; this only sizes the request).
    pub frame_size: u32,
    /// Milliseconds after which the kernel retires a partly filled block.
    pub retire_timeout_ms: u32,
    /// Promiscuous mode.
    pub promisc: bool,
    /// A tcpdump-style filter expression, compiled to classic BPF.
    pub filter: Option<String>,
}

impl Default for AfPacketConfig {
    fn default() -> Self {
        Self {
            iface: String::new(),
            block_size: 1 << 21,
            block_count: 64,
            frame_size: 2048,
            retire_timeout_ms: 10,
            promisc: true,
            filter: None,
        }
    }
}

/// A ring geometry the kernel would refuse: the field, its value, and what
/// is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value}{unit} is invalid: {allowed}")]
pub struct GeometryError {
    /// The setting, as the operator knows it (`ring block size`, ...).
    pub field: &'static str,
    /// Its value.
    pub value: u64,
    /// The value's unit, with a leading space when there is one.
    pub unit: &'static str,
    /// What is allowed.
    pub allowed: String,
}

impl AfPacketConfig {
    /// Check the ring geometry; the error names the field, the value and
    /// what is allowed.
    pub fn validate(&self) -> Result<(), GeometryError> {
        let bad = |field, value: u64, unit, allowed: String| Err(GeometryError { field, value, unit, allowed });
        let page = page_size();
        if !self.block_size.is_power_of_two() || (self.block_size as usize) < page {
            let allowed = format!("it must be a power of two and at least the page size ({page})");
            return bad("ring block size", self.block_size.into(), "", allowed);
        }
        if self.block_count == 0 || self.block_count > 65536 {
            return bad("ring block count", self.block_count.into(), "", "allowed 1..=65536".into());
        }
        if self.frame_size < 128 || !self.frame_size.is_multiple_of(16) || self.frame_size > self.block_size {
            let allowed =
                format!("it must be a multiple of 16, at least 128 and at most the block size ({})", self.block_size);
            return bad("ring frame size", self.frame_size.into(), "", allowed);
        }
        let total = self.block_size as u64 * self.block_count as u64;
        if total > 1 << 34 {
            let allowed = "block size × block count must be at most 16 GiB".to_string();
            return bad("ring size", total, " bytes", allowed);
        }
        if self.retire_timeout_ms == 0 || self.retire_timeout_ms > 10_000 {
            return bad("block retire timeout", self.retire_timeout_ms.into(), " ms", "allowed 1..=10000".into());
        }
        Ok(())
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions and does not touch memory we own.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Kernel counters from `PACKET_STATISTICS`, accumulated (the kernel resets
/// them on every read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the kernel handed to the socket (on V3 this includes drops).
    pub packets: u64,
    /// Packets dropped because the ring was full.
    pub drops: u64,
    /// Times the queue was frozen because the ring was full.
    pub freezes: u64,
}

/// Look up an interface: its index, and whether it is up.
pub fn interface(name: &str) -> Result<(u32, bool), CaptureError> {
    let c =
        CString::new(name).map_err(|_| CaptureError::Setup(format!("interface name '{name}' contains a NUL byte")))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(CaptureError::Setup(format!(
            "no such interface '{name}' (see `ip link` for the interfaces of this network namespace)"
        )));
    }
    let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).unwrap_or_default();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(1);
    Ok((idx, flags & libc::IFF_UP as u32 != 0))
}

/// Compile a tcpdump-style expression to classic BPF with libpcap's compiler.
pub fn compile_filter(expr: &str) -> Result<Vec<libc::sock_filter>, CaptureError> {
    let bad = |e: pcap::Error| CaptureError::Setup(format!("filter expression '{expr}' does not compile: {e}"));
    let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(bad)?;
    let prog = cap.compile(expr, true).map_err(bad)?;
    // The crate exposes an instruction's fields only through Display
    // ("code jt jf k"); parse that rather than reach into its internals.
    prog.get_instructions()
        .iter()
        .map(|i| {
            let t = i.to_string();
            let f: Vec<u32> = t.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            match f[..] {
                [code, jt, jf, k] => Ok(libc::sock_filter { code: code as u16, jt: jt as u8, jf: jf as u8, k }),
                _ => Err(CaptureError::Setup(format!("filter expression '{expr}': unexpected BPF instruction '{t}'"))),
            }
        })
        .collect()
}

fn os_err(what: &str) -> CaptureError {
    let e = std::io::Error::last_os_error();
    CaptureError::Setup(format!("{what}: {e}"))
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, val: &T, what: &str) -> Result<(), CaptureError> {
    // SAFETY: `val` points to a live, initialised `T` and we pass its exact
    // size; the kernel only reads it during the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            val as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(os_err(what));
    }
    Ok(())
}

/// One AF_PACKET socket with its mapped TPACKET_V3 ring.
pub struct AfPacketSocket {
    fd: OwnedFd,
    ring: MmapRaw,
    block_size: usize,
    block_count: usize,
    next_block: usize,
    queue: u16,
    fanout_id: u16,
    scratch: Vec<u8>,
    kstats: KernelStats,
}

impl std::fmt::Debug for AfPacketSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketSocket").field("queue", &self.queue).field("fanout_id", &self.fanout_id).finish()
    }
}

/// How a socket joins its interface's fanout group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// Let the kernel choose an id no other group on this host uses (the
    /// first socket of a sensor); read it back with [`AfPacketSocket::fanout_id`].
    Unique,
    /// Join (or create) the group with this id.
    Id(u16),
}

impl AfPacketSocket {
    /// Open, configure, map and bind a socket on `cfg.iface`, and join the
    /// fanout group (hash mode with the defrag flag). `queue` labels packets.
    pub fn open(cfg: &AfPacketConfig, fanout: Fanout, queue: u16) -> Result<Self, CaptureError> {
        cfg.validate().map_err(|e| CaptureError::Setup(e.to_string()))?;
        let (ifindex, up) = interface(&cfg.iface)?;
        if !up {
            return Err(CaptureError::Setup(format!(
                "interface '{}' is down (bring it up with `ip link set {} up`)",
                cfg.iface, cfg.iface
            )));
        }
        let filter = cfg.filter.as_deref().map(compile_filter).transpose()?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain syscall with constant arguments; the returned fd is
        // checked and then owned by `OwnedFd`.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto as libc::c_int) };
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                return Err(CaptureError::Setup(
                    "cannot open an AF_PACKET socket: permission denied. Capturing needs CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode): run as root or `setcap cap_net_raw,cap_net_admin+ep wirefold`".into(),
                ));
            }
            return Err(CaptureError::Setup(format!("cannot open an AF_PACKET socket: {e}")));
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if let Some(f) = &filter {
            let prog = libc::sock_fprog { len: f.len() as u16, filter: f.as_ptr() as *mut libc::sock_filter };
            setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog, "attaching the BPF filter")?;
        }
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V3, "selecting TPACKET_V3")?;
        let req = libc::tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            tp_frame_size: cfg.frame_size,
            tp_frame_nr: (cfg.block_size / cfg.frame_size) * cfg.block_count,
            tp_retire_blk_tov: cfg.retire_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req, "setting up the rx ring (PACKET_RX_RING)")?;
        let len = cfg.block_size as usize * cfg.block_count as usize;
        let ring = MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| CaptureError::Setup(format!("mapping the {len}-byte rx ring: {e}")))?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and we pass its exact size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(os_err(&format!("binding to interface '{}'", cfg.iface)));
        }
        if cfg.promisc {
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex as i32,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq, "enabling promiscuous mode")?;
        }
        let mode = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;
        let fanout_id = match fanout {
            Fanout::Unique => {
                let arg: u32 = (mode | PACKET_FANOUT_FLAG_UNIQUEID) << 16;
                setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg, "creating the fanout group")?;
                let mut got: u32 = 0;
                let mut l = std::mem::size_of::<u32>() as libc::socklen_t;
                // SAFETY: `got` and `l` are valid for writes of their sizes.
                let r = unsafe {
                    libc::getsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_PACKET,
                        libc::PACKET_FANOUT,
                        &mut got as *mut u32 as *mut libc::c_void,
                        &mut l,
                    )
                };
                if r != 0 {
                    return Err(os_err("reading the fanout group id"));
                }
                (got & 0xffff) as u16
            }
            Fanout::Id(id) => {
                let arg: u32 = (mode << 16) | id as u32;
                setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg, &format!("joining fanout group {id}"))?;
                id
            }
        };
        Ok(Self {
            fd,
            ring,
            block_size: cfg.block_size as usize,
            block_count: cfg.block_count as usize,
            next_block: 0,
            queue,
            fanout_id,
            scratch: vec![0u8; 1 << 18],
            kstats: KernelStats::default(),
        })
    }

    /// The fanout group this socket joined.
    pub fn fanout_id(&self) -> u16 {
        self.fanout_id
    }

    /// Read `PACKET_STATISTICS` and add it to the running totals.
    pub fn kernel_stats(&mut self) -> KernelStats {
        let mut s = libc::tpacket_stats_v3 { tp_packets: 0, tp_drops: 0, tp_freeze_q_cnt: 0 };
        let mut l = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `s` and `l` are valid for writes of their sizes.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                &mut s as *mut libc::tpacket_stats_v3 as *mut libc::c_void,
                &mut l,
            )
        };
        if r == 0 {
            self.kstats.packets += s.tp_packets as u64;
            self.kstats.drops += s.tp_drops as u64;
            self.kstats.freezes += s.tp_freeze_q_cnt as u64;
        }
        self.kstats
    }

    fn block_ptr(&self, i: usize) -> *mut u8 {
        // SAFETY: i < block_count, so the offset stays inside the mapping.
        unsafe { self.ring.as_mut_ptr().add(i * self.block_size) }
    }

    fn status(&self, block: *mut u8) -> &AtomicU32 {
        // SAFETY: the status word is a 4-byte-aligned u32 inside the block
        // descriptor, shared with the kernel, which updates it concurrently:
        // accessing it as an atomic is the right model for that sharing.
        unsafe { &*(block.add(BD_STATUS) as *const AtomicU32) }
    }

    /// Wait up to `timeout_ms` for the next block to be retired to us.
    fn wait(&self, timeout_ms: i32) -> bool {
        let block = self.block_ptr(self.next_block);
        if self.status(block).load(Ordering::Acquire) & TP_STATUS_USER != 0 {
            return true;
        }
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN | libc::POLLERR, revents: 0 };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        self.status(block).load(Ordering::Acquire) & TP_STATUS_USER != 0
    }
}

/// Read a u32 at `off` in the ring.
///
/// # Safety
/// `p + off .. p + off + 4` must lie inside a block we own (status USER).
unsafe fn rd32(p: *const u8, off: usize) -> u32 {
    // SAFETY: the caller guarantees the range is inside a block we own.
    unsafe { (p.add(off) as *const u32).read_unaligned() }
}

/// Read a u16 at `off` in the ring; same contract as [`rd32`].
unsafe fn rd16(p: *const u8, off: usize) -> u16 {
    // SAFETY: the caller guarantees the range is inside a block we own.
    unsafe { (p.add(off) as *const u16).read_unaligned() }
}

impl PacketSource for AfPacketSocket {
    /// Deliver the packets of the next retired block (waiting up to 100 ms
    /// for one), then hand the block back to the kernel. Never ends by
    /// itself: the caller stops calling.
    fn next_batch(&mut self, sink: &mut dyn FnMut(&RawPacket<'_>)) -> Result<bool, CaptureError> {
        if !self.wait(100) {
            return Ok(true);
        }
        let block = self.block_ptr(self.next_block);
        let bs = self.block_size;
        // SAFETY: the block's status is TP_STATUS_USER (Acquire-loaded in
        // `wait`), so the kernel has finished writing it and will not touch
        // it until we store TP_STATUS_KERNEL below; the header words are
        // inside the block.
        let (num, first) = unsafe { (rd32(block, BD_NUM_PKTS) as usize, rd32(block, BD_FIRST_PKT) as usize) };
        let mut off = first;
        for _ in 0..num {
            if off + 48 > bs {
                break; // a corrupt offset would leave the block: stop walking it
            }
            // SAFETY: `off + 48 <= bs`, so the tpacket3_hdr is inside the block we own.
            let hdr = unsafe { block.add(off) };
            // SAFETY: as above: every field read is inside the 48-byte header.
            let (next, sec, nsec, snap, len, status, mac, tci, tpid) = unsafe {
                (
                    rd32(hdr, H_NEXT) as usize,
                    rd32(hdr, H_SEC) as u64,
                    rd32(hdr, H_NSEC) as u64,
                    rd32(hdr, H_SNAPLEN) as usize,
                    rd32(hdr, H_LEN),
                    rd32(hdr, H_STATUS),
                    rd16(hdr, H_MAC) as usize,
                    rd32(hdr, H_VLAN_TCI),
                    rd16(hdr, H_VLAN_TPID),
                )
            };
            if off + mac + snap > bs {
                break;
            }
            // SAFETY: `off + mac + snap <= bs`: the frame lies inside the block,
            // which stays ours (and unchanged) until it is released below.
            let frame = unsafe { std::slice::from_raw_parts(hdr.add(mac), snap) };
            let ts_ns = sec * 1_000_000_000 + nsec;
            if status & TP_STATUS_VLAN_VALID != 0 && frame.len() >= 12 && frame.len() + 4 <= self.scratch.len() {
                // The NIC or veth took the 802.1Q tag out into metadata; put
                // it back so the frame is what was on the wire.
                let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 && tpid != 0 { tpid } else { 0x8100 };
                let s = &mut self.scratch;
                s[..12].copy_from_slice(&frame[..12]);
                s[12..14].copy_from_slice(&tpid.to_be_bytes());
                s[14..16].copy_from_slice(&(tci as u16).to_be_bytes());
                s[16..16 + frame.len() - 12].copy_from_slice(&frame[12..]);
                let data = &s[..frame.len() + 4];
                sink(&RawPacket { data, ts_ns, wire_len: len + 4, link: LinkType::Ethernet, queue: self.queue });
            } else {
                sink(&RawPacket { data: frame, ts_ns, wire_len: len, link: LinkType::Ethernet, queue: self.queue });
            }
            if next == 0 {
                break;
            }
            off += next;
        }
        fence(Ordering::Release);
        self.status(block).store(TP_STATUS_KERNEL, Ordering::Release);
        self.next_block = (self.next_block + 1) % self.block_count;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_validated_with_clear_messages() {
        let ok = AfPacketConfig { iface: "lo".into(), ..Default::default() };
        assert!(ok.validate().is_ok());
        let e = AfPacketConfig { block_size: 3000, ..ok.clone() }.validate().unwrap_err();
        assert_eq!((e.field, e.value), ("ring block size", 3000));
        let e = e.to_string();
        assert!(e.contains("block size 3000") && e.contains("power of two"), "{e}");
        let e = AfPacketConfig { block_count: 0, ..ok.clone() }.validate().unwrap_err().to_string();
        assert!(e.contains("block count 0"), "{e}");
        let e = AfPacketConfig { frame_size: 100, ..ok.clone() }.validate().unwrap_err().to_string();
        assert!(e.contains("frame size 100"), "{e}");
        let e = AfPacketConfig { retire_timeout_ms: 0, ..ok.clone() }.validate().unwrap_err().to_string();
        assert!(e.contains("retire timeout 0 ms"), "{e}");
        let e = AfPacketConfig { block_size: 1 << 24, block_count: 2048, ..ok }.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "ring size 34359738368 bytes is invalid: block size × block count must be at most 16 GiB"
        );
    }

    #[test]
    fn unknown_interface_and_bad_filter_are_named() {
        let e = interface("wf-does-not-exist").unwrap_err().to_string();
        assert!(e.contains("no such interface 'wf-does-not-exist'"), "{e}");
        let (idx, up) = interface("lo").unwrap();
        assert!(idx > 0 && up);
        let e = compile_filter("tcp port eighty").unwrap_err().to_string();
        assert!(e.contains("'tcp port eighty'"), "{e}");
        let prog = compile_filter("udp and port 53").unwrap();
        assert!(prog.len() > 4);
    }
}
