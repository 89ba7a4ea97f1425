//! Wirefold's DPDK island: FFI to a small C shim over the system DPDK
//! (Debian's `libdpdk-dev`, 22.11), and a safe layer on top of it.
//!
//! The C file `csrc/shim.c` wraps DPDK's `static inline` functions
//! (`rte_eth_rx_burst`, mbuf data pointer and lengths, free) and port set-up.
//! This crate is one of Wirefold's two `unsafe` islands; every `unsafe`
//! block carries a `// SAFETY:` comment. It builds only when asked (the
//! sensor's `dpdk` feature): the default build needs no DPDK.
//!
//! * [`Eal`] — EAL initialisation from an argument list (once per process).
//! * [`Mempool`] — a packet-buffer pool.
//! * [`Port`] — an ethdev port with N rx queues (symmetric RSS where the
//!   device supports it), started on creation, stopped on drop.
//! * [`RxBurst`] — a burst of up to 32 received packets, read with one FFI
//!   call (data pointers and lengths filled and first cache lines prefetched
//!   in C); frees its mbufs (in bulk) on drop; not `Clone`.
//! * [`Replayer`] — for benchmarks: a zero-copy traffic source that sends
//!   the same mbufs again and again (reference counted) into a tx queue,
//!   e.g. of a `net_ring` device whose rx side the sensor reads.
#![allow(unsafe_code)]
#![warn(missing_docs)]

use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::ptr::NonNull;

mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void};

    #[repr(C)]
    pub struct RteMbuf {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct RteMempool {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn wf_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
        pub fn wf_eal_cleanup() -> c_int;
        pub fn wf_errno() -> c_int;
        pub fn wf_strerror(e: c_int) -> *const c_char;
        pub fn wf_port_count() -> u16;
        pub fn wf_pool_create(name: *const c_char, n: c_uint, cache: c_uint, data_room: u16) -> *mut RteMempool;
        pub fn wf_pool_free(mp: *mut RteMempool);
        pub fn wf_port_max_rx_queues(port: u16) -> c_int;
        pub fn wf_port_setup(port: u16, nq: u16, nb_rxd: u16, mp: *mut RteMempool, rss_out: *mut c_int) -> c_int;
        pub fn wf_port_stop(port: u16) -> c_int;
        pub fn wf_port_close(port: u16) -> c_int;
        pub fn wf_port_stats(port: u16, out: *mut u64, nq: u16) -> c_int;
        pub fn wf_mbuf_free(m: *mut RteMbuf);
        pub fn wf_rx_burst_info(
            port: u16,
            q: u16,
            pkts: *mut *mut RteMbuf,
            n: u16,
            data: *mut *const u8,
            data_len: *mut u16,
            pkt_len: *mut u32,
        ) -> u16;
        pub fn wf_mbuf_free_bulk(pkts: *mut *mut RteMbuf, n: c_uint);
        pub fn wf_mbuf_from(mp: *mut RteMempool, data: *const u8, len: u16) -> *mut RteMbuf;
        pub fn wf_tx_burst(port: u16, q: u16, pkts: *mut *mut RteMbuf, n: u16) -> u16;
        pub fn wf_mbuf_refcnt_add(m: *mut RteMbuf, v: i16);

        pub fn wf_next_worker(after: c_uint) -> c_uint;
        pub fn wf_max_lcore() -> c_uint;
        pub fn wf_remote_launch(f: extern "C" fn(*mut c_void) -> c_int, arg: *mut c_void, lcore: c_uint) -> c_int;
        pub fn wf_wait_lcore(lcore: c_uint) -> c_int;
    }
}

/// A DPDK failure, with DPDK's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct DpdkError {
    /// What was being done.
    pub what: String,
    /// DPDK's error string.
    pub message: String,
}

fn err(what: impl Into<String>, code: c_int) -> DpdkError {
    let code = code.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string that stays valid at least until the next call on
    // this thread; we copy it out immediately.
    let message = unsafe { std::ffi::CStr::from_ptr(ffi::wf_strerror(code)) }.to_string_lossy().into_owned();
    DpdkError { what: what.into(), message }
}

fn last_err(what: impl Into<String>) -> DpdkError {
    // SAFETY: reads DPDK's per-thread errno; no memory is touched.
    err(what, unsafe { ffi::wf_errno() })
}

static EAL_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The initialised Environment Abstraction Layer. Only one per process.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialise the EAL with `args` (as on a DPDK command line, without
    /// the program name), e.g. `--no-huge -m 512 --no-shconf --no-pci -l 0
    /// --vdev net_pcap0,rx_pcap=FILE`.
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        if EAL_STARTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(DpdkError {
                what: "EAL init".into(),
                message: "the EAL is already initialised in this process".into(),
            });
        }
        let mut owned: Vec<CString> = std::iter::once("wirefold".to_string())
            .chain(args.iter().cloned())
            .map(|a| {
                CString::new(a)
                    .map_err(|_| DpdkError { what: "EAL init".into(), message: "argument contains a NUL byte".into() })
            })
            .collect::<Result<_, _>>()?;
        let mut argv: Vec<*mut c_char> = owned.iter_mut().map(|s| s.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds argc valid NUL-terminated strings that live
        // (in `owned`) until after the call; DPDK may permute the pointer
        // array, which we own and do not reuse.
        let r = unsafe { ffi::wf_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if r < 0 {
            return Err(last_err(format!("EAL init with arguments '{}'", args.join(" "))));
        }
        Ok(Eal { _private: () })
    }

    /// Ethernet ports available.
    pub fn port_count(&self) -> u16 {
        // SAFETY: the EAL is initialised (we hold `self`).
        unsafe { ffi::wf_port_count() }
    }

    /// Worker lcores (all enabled lcores but the main one), in order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut v = Vec::new();
        // SAFETY: plain lcore-table queries on an initialised EAL.
        let max = unsafe { ffi::wf_max_lcore() };
        let mut l = u32::MAX;
        loop {
            // SAFETY: as above; `l` is a previous return value or the start marker.
            l = unsafe { ffi::wf_next_worker(l) };
            if l >= max {
                break;
            }
            v.push(l);
        }
        v
    }

    /// Run `f` on worker lcore `lcore` (pinned by the EAL).
    pub fn launch(&self, lcore: u32, f: impl FnOnce() + Send + 'static) -> Result<Launched, DpdkError> {
        type Job = Box<dyn FnOnce() + Send>;
        extern "C" fn trampoline(arg: *mut c_void) -> c_int {
            // SAFETY: `arg` is the Box<Job> leaked below, handed over exactly once.
            let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
            job();
            0
        }
        let job: Box<Job> = Box::new(Box::new(f));
        let arg = Box::into_raw(job) as *mut c_void;
        // SAFETY: the trampoline matches the C signature; on success DPDK
        // calls it once with `arg`, which then owns the job.
        let r = unsafe { ffi::wf_remote_launch(trampoline, arg, lcore) };
        if r != 0 {
            // SAFETY: the launch failed, so the job was never handed over.
            drop(unsafe { Box::from_raw(arg as *mut Job) });
            return Err(err(format!("launching on lcore {lcore}"), r));
        }
        Ok(Launched { lcore })
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called once, after every Port and Mempool (which borrow the
        // Eal) are gone.
        unsafe { ffi::wf_eal_cleanup() };
    }
}

/// Work running on a worker lcore.
#[derive(Debug)]
#[must_use = "wait for the lcore"]
pub struct Launched {
    lcore: u32,
}

impl Launched {
    /// Wait for the work to finish.
    pub fn wait(self) {
        // SAFETY: waits for the lcore we launched on.
        unsafe { ffi::wf_wait_lcore(self.lcore) };
    }
}

/// A packet-buffer pool.
#[derive(Debug)]
pub struct Mempool<'e> {
    ptr: NonNull<ffi::RteMempool>,
    _eal: &'e Eal,
}

// SAFETY: DPDK mempools are designed to be used from many lcores at once.
unsafe impl Send for Mempool<'_> {}
// SAFETY: as above.
unsafe impl Sync for Mempool<'_> {}

impl<'e> Mempool<'e> {
    /// A pool of `n` buffers with `data_room` bytes each.
    pub fn new(eal: &'e Eal, name: &str, n: u32, data_room: u16) -> Result<Self, DpdkError> {
        let c = CString::new(name)
            .map_err(|_| DpdkError { what: "mempool".into(), message: "name contains NUL".into() })?;
        // SAFETY: valid C string; EAL initialised.
        let p = unsafe { ffi::wf_pool_create(c.as_ptr(), n, 256, data_room) };
        NonNull::new(p)
            .map(|ptr| Mempool { ptr, _eal: eal })
            .ok_or_else(|| last_err(format!("creating a pool of {n} mbufs")))
    }
}

impl Drop for Mempool<'_> {
    fn drop(&mut self) {
        // SAFETY: the pool came from rte_pktmbuf_pool_create and every Port
        // using it (which borrows it) has been dropped.
        unsafe { ffi::wf_pool_free(self.ptr.as_ptr()) };
    }
}

/// Port counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets the hardware (or PMD) dropped because rx queues were full.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Receive failures for lack of mbufs.
    pub rx_nombuf: u64,
    /// Packets per rx queue.
    pub queue_ipackets: Vec<u64>,
}

/// A started ethdev port.
#[derive(Debug)]
pub struct Port<'p> {
    id: u16,
    queues: u16,
    rss: bool,
    _pool: &'p Mempool<'p>,
}

impl<'p> Port<'p> {
    /// Configure port `id` with `queues` rx queues of `nb_rxd` descriptors
    /// on `pool`, and start it.
    pub fn start(eal: &Eal, id: u16, queues: u16, nb_rxd: u16, pool: &'p Mempool<'p>) -> Result<Self, DpdkError> {
        let n = eal.port_count();
        if n == 0 {
            return Err(DpdkError {
                what: "port set-up".into(),
                message: "no Ethernet ports: add a --vdev or bind a NIC to a DPDK driver".into(),
            });
        }
        if id >= n {
            return Err(DpdkError {
                what: "port set-up".into(),
                message: format!("port {id} does not exist ({n} ports: 0..{})", n - 1),
            });
        }
        // SAFETY: `id` is a valid port on an initialised EAL.
        let max = unsafe { ffi::wf_port_max_rx_queues(id) };
        if max < queues as c_int {
            return Err(DpdkError {
                what: "port set-up".into(),
                message: format!("port {id} has {max} rx queues, {queues} were asked for"),
            });
        }
        let mut rss: c_int = 0;
        // SAFETY: valid port and pool; `rss` is a valid out-pointer.
        let r = unsafe { ffi::wf_port_setup(id, queues, nb_rxd, pool.ptr.as_ptr(), &mut rss) };
        if r < 0 {
            return Err(err(format!("setting up port {id} with {queues} queues"), r));
        }
        Ok(Port { id, queues, rss: rss != 0, _pool: pool })
    }

    /// Port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Whether RSS (with the symmetric key) spreads flows over the queues.
    pub fn rss(&self) -> bool {
        self.rss
    }

    /// A handle for receiving on `queue`; one per lcore.
    pub fn rx_queue(&self, queue: u16) -> RxQueue {
        assert!(queue < self.queues, "queue {queue} out of range");
        RxQueue { port: self.id, queue }
    }

    /// The handle of tx queue 0 (every port gets one).
    pub fn tx_queue(&self) -> TxQueue {
        TxQueue { port: self.id, queue: 0 }
    }

    /// Port counters.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut out = vec![0u64; 4 + self.queues as usize];
        // SAFETY: `out` has room for 4 + queues values.
        let r = unsafe { ffi::wf_port_stats(self.id, out.as_mut_ptr(), self.queues) };
        if r < 0 {
            return Err(err("reading port statistics", r));
        }
        Ok(PortStats {
            ipackets: out[0],
            imissed: out[1],
            ierrors: out[2],
            rx_nombuf: out[3],
            queue_ipackets: out[4..].to_vec(),
        })
    }
}

impl Drop for Port<'_> {
    fn drop(&mut self) {
        // SAFETY: the port was started by us; every RxQueue user has finished
        // (they run in lcores the caller waited for).
        unsafe {
            ffi::wf_port_stop(self.id);
            ffi::wf_port_close(self.id);
        }
    }
}

/// One rx queue of a started port. `Send`, so it can move to its lcore.
#[derive(Debug)]
pub struct RxQueue {
    port: u16,
    queue: u16,
}

/// Packets per burst.
pub const BURST: usize = 32;

impl RxQueue {
    /// Queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Free what `burst` holds, then receive up to [`BURST`] packets into it.
    #[inline]
    pub fn rx_into(&mut self, burst: &mut RxBurst) -> usize {
        burst.clear();
        // SAFETY: every array has room for BURST entries; only this handle
        // polls this (port, queue). The C side writes exactly the returned count.
        let n = unsafe {
            ffi::wf_rx_burst_info(
                self.port,
                self.queue,
                burst.mbufs.as_mut_ptr(),
                BURST as u16,
                burst.data.as_mut_ptr(),
                burst.data_len.as_mut_ptr(),
                burst.pkt_len.as_mut_ptr(),
            )
        } as usize;
        burst.n = n;
        n
    }
}

/// One burst of received packets, read with one FFI call (data pointers and
/// lengths filled in C, first cache lines prefetched) and freed in bulk when
/// the next burst is received or the burst is dropped. Not `Clone`: the
/// mbufs have one owner.
#[derive(Debug)]
pub struct RxBurst {
    n: usize,
    mbufs: [*mut ffi::RteMbuf; BURST],
    data: [*const u8; BURST],
    data_len: [u16; BURST],
    pkt_len: [u32; BURST],
}

// SAFETY: mbufs may be freed from any lcore; the burst holds the only pointers.
unsafe impl Send for RxBurst {}

impl Default for RxBurst {
    fn default() -> Self {
        Self::new()
    }
}

impl RxBurst {
    /// An empty burst.
    pub fn new() -> Self {
        RxBurst {
            n: 0,
            mbufs: [std::ptr::null_mut(); BURST],
            data: [std::ptr::null(); BURST],
            data_len: [0; BURST],
            pkt_len: [0; BURST],
        }
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether it holds no packets.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Packet `i`: its first segment's bytes and the whole packet's length.
    #[inline]
    pub fn get(&self, i: usize) -> (&[u8], u32) {
        assert!(i < self.n, "packet {i} of a burst of {}", self.n);
        // SAFETY: for i < n, data[i] points at data_len[i] bytes of an mbuf
        // this burst owns until `clear` or drop, which need `&mut self`.
        let d = unsafe { std::slice::from_raw_parts(self.data[i], self.data_len[i] as usize) };
        (d, self.pkt_len[i])
    }

    /// Free the packets (in bulk).
    pub fn clear(&mut self) {
        if self.n > 0 {
            // SAFETY: mbufs[..n] came from rx_into, are owned by this burst,
            // and are freed exactly once (n is reset).
            unsafe { ffi::wf_mbuf_free_bulk(self.mbufs.as_mut_ptr(), self.n as c_uint) };
            self.n = 0;
        }
    }
}

impl Drop for RxBurst {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A tx queue handle (for [`Replayer`]).
#[derive(Debug)]
pub struct TxQueue {
    port: u16,
    queue: u16,
}

/// A zero-copy traffic source for benchmarks: frames are copied into mbufs
/// once, then the same mbufs are sent again and again, like a NIC's DMA into
/// buffers the receiver only reads. Each send hands the receiver one
/// reference (its free gives it back). References are raised in advance,
/// [`CREDIT`] at a time, so the sender touches an mbuf's header once per
/// [`CREDIT`] sends and never shares its cache line with the receiver.
/// Not `Clone`; frees its mbufs on drop.
#[derive(Debug)]
pub struct Replayer<'p> {
    mbufs: Vec<*mut ffi::RteMbuf>,
    credit: Vec<u16>,
    tx: TxQueue,
    /// The mbufs go back to this pool on drop: it must outlive the replayer.
    _pool: std::marker::PhantomData<&'p Mempool<'p>>,
}

/// References a [`Replayer`] raises at once (the count is 16 bits: one owner
/// reference + this + what is in flight must stay below 65536).
pub const CREDIT: u16 = 16384;

// SAFETY: the mbufs are only sent (read by receivers) and freed by this owner;
// DPDK allows any lcore to send and free mbufs.
unsafe impl Send for Replayer<'_> {}

impl<'p> Replayer<'p> {
    /// Copy `frames` (each at most the pool's data room) into mbufs of `pool`.
    pub fn new(pool: &'p Mempool<'p>, tx: TxQueue, frames: &[&[u8]]) -> Result<Replayer<'p>, DpdkError> {
        let mut r = Replayer {
            mbufs: Vec::with_capacity(frames.len()),
            credit: Vec::new(),
            tx,
            _pool: std::marker::PhantomData,
        };
        for f in frames {
            let len = u16::try_from(f.len()).map_err(|_| DpdkError {
                what: "copying a frame into an mbuf".into(),
                message: format!("a frame of {} bytes is too long", f.len()),
            })?;
            // SAFETY: the pool is valid (borrowed); `f` is `len` readable bytes.
            let m = unsafe { ffi::wf_mbuf_from(pool.ptr.as_ptr(), f.as_ptr(), len) };
            if m.is_null() {
                return Err(DpdkError {
                    what: "copying frames into mbufs".into(),
                    message: format!(
                        "the pool ran out of mbufs (or room) after {} of {} frames",
                        r.mbufs.len(),
                        frames.len()
                    ),
                });
            }
            r.mbufs.push(m);
        }
        if r.mbufs.is_empty() {
            return Err(DpdkError { what: "building a replayer".into(), message: "no frames to replay".into() });
        }
        r.credit = vec![0; r.mbufs.len()];
        Ok(r)
    }

    /// Send the frames round and round in bursts of [`BURST`] until `stop`
    /// is set; returns the packets the queue took.
    pub fn run(&mut self, stop: &std::sync::atomic::AtomicBool) -> u64 {
        let (mut at, mut sent) = (0usize, 0u64);
        let n = self.mbufs.len();
        let mut burst: [*mut ffi::RteMbuf; BURST] = [std::ptr::null_mut(); BURST];
        let mut idx = [0usize; BURST];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..64 {
                for k in 0..BURST {
                    if self.credit[at] == 0 {
                        // SAFETY: an mbuf this replayer owns; its count stays
                        // below 65536 (1 + CREDIT + what is in flight).
                        unsafe { ffi::wf_mbuf_refcnt_add(self.mbufs[at], CREDIT as i16) };
                        self.credit[at] = CREDIT;
                    }
                    self.credit[at] -= 1;
                    burst[k] = self.mbufs[at];
                    idx[k] = at;
                    at = if at + 1 == n { 0 } else { at + 1 };
                }
                // SAFETY: every pointer is an mbuf this replayer owns, with a
                // reference set aside for the receiver (credit taken above).
                let took = unsafe { ffi::wf_tx_burst(self.tx.port, self.tx.queue, burst.as_mut_ptr(), BURST as u16) };
                sent += took as u64;
                // What the queue did not take keeps its reference, and goes first next time.
                for &i in &idx[took as usize..] {
                    self.credit[i] += 1;
                }
                if (took as usize) < BURST {
                    at = idx[took as usize];
                }
            }
        }
        sent
    }
}

impl Drop for Replayer<'_> {
    fn drop(&mut self) {
        for (m, c) in self.mbufs.iter().zip(&self.credit) {
            // SAFETY: give back the references raised but never sent, then our
            // own; references still held by receivers stay theirs.
            unsafe {
                if *c > 0 {
                    ffi::wf_mbuf_refcnt_add(*m, -(*c as i32) as i16);
                }
                ffi::wf_mbuf_free(*m);
            }
        }
        self.mbufs.clear();
    }
}
