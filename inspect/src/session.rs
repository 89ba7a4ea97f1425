//! Per-flow inspection: drives the parsers over the first payload packets of
//! each flow, with buffers from a bounded pool.
//!
//! The caller (the sensor's flow table) owns one [`Inspector`] per flow
//! worker and one [`FlowMeta`] per inspected flow. On a flow's first
//! payload-carrying packet it takes a [`Work`] slot ([`Inspector::acquire`];
//! a flow that finds the pool empty is counted and goes uninspected), feeds
//! every payload packet to [`Inspector::packet`] until that returns `true`
//! (both directions decided, or their packet budget spent), and calls
//! [`Inspector::finish`] if the flow ends first. Slots go back to the pool
//! as soon as a flow is decided, so the pool bounds the flows *being*
//! inspected at once, not the flows in the table.
//!
//! Per direction, in this order: a TLS handshake record (`0x16`) is read as
//! a ClientHello (client → server) or ServerHello; a line starting `SSH-` as
//! an SSH banner; on port 53 (either end, TCP or UDP) a DNS message; a
//! request line as HTTP/1.x (`HTTP/` from the server). A UDP datagram with a
//! QUIC long header of version 1 or 2 from the client is decrypted as an
//! Initial. TCP bytes are reassembled in order from the first segment seen
//! (the first [`C2S_BYTES`] / [`S2C_BYTES`] bytes); UDP datagrams are read
//! one by one. Nothing here allocates after a slot's first use.

use crate::app::{pick_app, App, Dissected};
use crate::dns::{self, DnsError, DnsName};
use crate::http::{self, HttpError};
use crate::quic::{InitialCrypto, InitialCryptoState, QuicError, DEFAULT_SCRATCH_BYTES};
use crate::reassembly::{ReassemblyError, TcpReassembler, TcpReassemblyState};
use crate::sketch::PayloadSketch;
use crate::ssh::{self, SshError};
use crate::tls::{self, ClientHello, HandshakeCursor, Ja4, Md5Hex, ServerHello, TlsError, Transport};
use crate::util::BoundedStr;

/// Client → server bytes kept for reassembly (a post-quantum ClientHello is ~1.8 KB).
pub const C2S_BYTES: usize = 4096;
/// Server → client bytes kept (the ServerHello, a status line, a banner).
pub const S2C_BYTES: usize = 2048;
/// QUIC Initial CRYPTO bytes kept.
pub const QUIC_BYTES: usize = 4096;
/// Joined handshake message scratch (one per inspector).
pub const SCRATCH_BYTES: usize = 8192;
/// Default payload packets inspected per direction.
pub const DEFAULT_PACKETS: u8 = 8;
/// Default number of slots (flows inspected at once).
pub const DEFAULT_POOL: usize = 4096;
/// Longest HTTP host, user agent and method kept (longer ones are cut at a character boundary).
pub const HTTP_FIELD: usize = 128;
/// Longest SSH banner kept.
pub const SSH_FIELD: usize = 96;

/// What the client's hello said (TLS over TCP, or QUIC's Initial).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsClientMeta {
    /// server_name, if sent.
    pub sni: DnsName,
    /// The first ALPN protocol offered.
    pub alpn: BoundedStr<32>,
    /// Highest version offered (supported_versions, else legacy_version).
    pub max_version: u16,
    /// JA4 (`t…` over TCP, `q…` over QUIC).
    pub ja4: Ja4,
    /// JA3 MD5.
    pub ja3: Md5Hex,
}

/// What the server's hello said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsServerMeta {
    /// Selected version.
    pub version: u16,
    /// Selected cipher suite.
    pub cipher: u16,
    /// JA3S MD5.
    pub ja3s: Md5Hex,
}

/// The first DNS question and the first response's outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsMeta {
    /// The first question's name.
    pub qname: DnsName,
    /// Its QTYPE.
    pub qtype: u16,
    /// RCODE of the first response, if one was seen.
    pub rcode: Option<u8>,
    /// ANCOUNT of the first response.
    pub answers: Option<u16>,
}

/// The first HTTP/1.x request and response heads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpMeta {
    /// Request method.
    pub method: BoundedStr<16>,
    /// Host header.
    pub host: BoundedStr<HTTP_FIELD>,
    /// Length of the request target.
    pub uri_len: u32,
    /// User-Agent header.
    pub user_agent: BoundedStr<HTTP_FIELD>,
    /// Status code of the first response.
    pub status: Option<u16>,
}

/// Everything inspection learned about one flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowMeta {
    /// The application label (see [`crate::app`]).
    pub app: AppLabel,
    /// TLS or QUIC ClientHello facts.
    pub tls: Option<TlsClientMeta>,
    /// ServerHello facts.
    pub tls_server: Option<TlsServerMeta>,
    /// QUIC version of the client's Initial.
    pub quic_version: Option<u32>,
    /// DNS facts.
    pub dns: Option<DnsMeta>,
    /// HTTP facts.
    pub http: Option<HttpMeta>,
    /// The client's SSH banner.
    pub ssh_client: Option<BoundedStr<SSH_FIELD>>,
    /// The server's SSH banner.
    pub ssh_server: Option<BoundedStr<SSH_FIELD>>,
    /// Payload sketches (the first bytes kept; entropy and printable
    /// fraction are computed by whoever reads them, off the packet path):
    /// client → server, server → client.
    pub sketch: [PayloadSketch; 2],
    /// [`FlowMeta::sketch_stats`], computed once for every reader.
    pub stats: StatsOnce,
}

/// Entropy and printable fraction per direction, computed on first use
/// (the JSON record and the model's features both read them). Always equal
/// to another: it is a cache of `sketch`.
#[derive(Debug, Clone, Default)]
pub struct StatsOnce(std::cell::OnceCell<[[f32; 2]; 2]>);

impl PartialEq for StatsOnce {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl FlowMeta {
    /// `[entropy, printable fraction]` of each direction's sketch (client →
    /// server, server → client), computed once.
    pub fn sketch_stats(&self) -> [[f32; 2]; 2] {
        *self.stats.0.get_or_init(|| self.sketch.each_ref().map(|s| [s.entropy(), s.printable_fraction()]))
    }
}

/// [`App`] with a default (`unknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppLabel(pub App);

impl Default for AppLabel {
    fn default() -> Self {
        AppLabel(App::Unknown)
    }
}

/// Which parser a counted reason belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    /// TLS ClientHello / ServerHello.
    Tls,
    /// QUIC Initial.
    Quic,
    /// DNS.
    Dns,
    /// HTTP/1.x.
    Http,
    /// SSH banner.
    Ssh,
    /// TCP reassembly.
    Reassembly,
}

/// Inspection counters: parser outcomes by named reason, and the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InspectStats {
    /// Flows that got a slot.
    pub flows: u64,
    /// Flows that wanted a slot and found the pool empty (not inspected).
    pub pool_exhausted: u64,
    /// Payload packets handed to the parsers.
    pub packets: u64,
    /// Messages parsed, by parser ([`Parser`] order).
    pub parsed: [u64; 6],
    /// TLS failures by [`TlsError`] reason.
    pub tls: [u64; TlsError::COUNT],
    /// QUIC failures by [`QuicError`] reason.
    pub quic: [u64; QuicError::COUNT],
    /// DNS failures by [`DnsError`] reason.
    pub dns: [u64; DnsError::COUNT],
    /// HTTP failures by [`HttpError`] reason.
    pub http: [u64; HttpError::COUNT],
    /// SSH failures by [`SshError`] reason.
    pub ssh: [u64; SshError::COUNT],
    /// Reassembly notes by [`ReassemblyError`] reason.
    pub reassembly: [u64; ReassemblyError::COUNT],
}

impl InspectStats {
    /// Every failure counter as `(parser, reason, count)`, zeros included.
    pub fn errors(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        let tls = TlsError::ALL.iter().map(|e| ("tls", e.name(), self.tls[e.index()]));
        let quic = QuicError::ALL.iter().map(|e| ("quic", e.name(), self.quic[e.index()]));
        let dns = DnsError::ALL.iter().map(|e| ("dns", e.name(), self.dns[e.index()]));
        let http = HttpError::ALL.iter().map(|e| ("http", e.name(), self.http[e.index()]));
        let ssh = SshError::ALL.iter().map(|e| ("ssh", e.name(), self.ssh[e.index()]));
        let re = ReassemblyError::ALL.iter().map(|e| ("reassembly", e.name(), self.reassembly[e.index()]));
        tls.chain(quic).chain(dns).chain(http).chain(ssh).chain(re)
    }

    /// Parsed messages as `(parser, count)`.
    pub fn parsed(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ["tls", "quic", "dns", "http", "ssh", "reassembly"].into_iter().zip(self.parsed.iter().copied()).take(5)
    }

    /// Add another worker's counters.
    pub fn merge(&mut self, o: &InspectStats) {
        self.flows += o.flows;
        self.pool_exhausted += o.pool_exhausted;
        self.packets += o.packets;
        let add = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.parsed, &o.parsed);
        add(&mut self.tls, &o.tls);
        add(&mut self.quic, &o.quic);
        add(&mut self.dns, &o.dns);
        add(&mut self.http, &o.http);
        add(&mut self.ssh, &o.ssh);
        add(&mut self.reassembly, &o.reassembly);
    }

    fn fail(&mut self, e: Fail) {
        match e {
            Fail::Tls(e) => self.tls[e.index()] += 1,
            Fail::Quic(e) => self.quic[e.index()] += 1,
            Fail::Dns(e) => self.dns[e.index()] += 1,
            Fail::Http(e) => self.http[e.index()] += 1,
            Fail::Ssh(e) => self.ssh[e.index()] += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Tls(TlsError),
    Quic(QuicError),
    Dns(DnsError),
    Http(HttpError),
    Ssh(SshError),
}

/// Where one direction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Not decided; the last attempt wanted more bytes (`Some`: counted as incomplete if the flow ends).
    Open(Option<Fail>),
    /// Decided (parsed, failed, or nothing to parse).
    Done,
}

/// Inspector settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectConfig {
    /// Payload packets inspected per direction (1–255, default 8).
    pub packets: u8,
    /// Slots: flows inspected at once (default 4,096; each slot is about 11 KiB).
    pub pool: usize,
}

impl Default for InspectConfig {
    fn default() -> Self {
        InspectConfig { packets: DEFAULT_PACKETS, pool: DEFAULT_POOL }
    }
}

/// One flow's working state: reassembly buffers, sketches, progress.
#[derive(Debug, Clone)]
pub struct Work {
    c2s: [u8; C2S_BYTES],
    s2c: [u8; S2C_BYTES],
    quic: [u8; QUIC_BYTES],
    c2s_st: TcpReassemblyState,
    s2c_st: TcpReassemblyState,
    quic_st: InitialCryptoState,
    sketch: [PayloadSketch; 2],
    seen: [u8; 2],
    dir: [Dir; 2],
    /// The client's bytes did not start with a known protocol (or were an
    /// HTTP CONNECT): look for a ClientHello record further on (SOCKS, proxies).
    scan: bool,
    /// Bytes of each direction already searched for a hello record.
    scanned: [usize; 2],
    dissected: Dissected,
}

impl Work {
    fn new() -> Self {
        Work {
            c2s: [0; C2S_BYTES],
            s2c: [0; S2C_BYTES],
            quic: [0; QUIC_BYTES],
            c2s_st: TcpReassemblyState::default(),
            s2c_st: TcpReassemblyState::default(),
            quic_st: InitialCryptoState::default(),
            sketch: [PayloadSketch::new(), PayloadSketch::new()],
            seen: [0; 2],
            dir: [Dir::Open(None); 2],
            scan: false,
            scanned: [0; 2],
            dissected: Dissected::default(),
        }
    }

    fn reset(&mut self) {
        self.c2s_st = TcpReassemblyState::default();
        self.s2c_st = TcpReassemblyState::default();
        self.quic_st = InitialCryptoState::default();
        self.sketch.iter_mut().for_each(PayloadSketch::clear);
        self.seen = [0; 2];
        self.dir = [Dir::Open(None); 2];
        self.scan = false;
        self.scanned = [0; 2];
        self.dissected = Dissected::default();
    }
}

/// One payload-carrying packet of a flow.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    /// From the initiator (client) to the responder.
    pub forward: bool,
    /// IP protocol (6 TCP, 17 UDP; others are only sketched).
    pub proto: u8,
    /// The initiator's port.
    pub client_port: u16,
    /// The responder's port.
    pub server_port: u16,
    /// TCP sequence number of the first payload byte.
    pub tcp_seq: u32,
    /// The captured payload bytes.
    pub data: &'a [u8],
}

/// The per-worker inspection engine: a bounded pool of [`Work`] slots.
#[derive(Debug)]
pub struct Inspector {
    cfg: InspectConfig,
    pool: Vec<Box<Work>>,
    free: Vec<u32>,
    scratch: Box<[u8; SCRATCH_BYTES]>,
    qscratch: Box<[u8; DEFAULT_SCRATCH_BYTES]>,
    /// Counters.
    pub stats: InspectStats,
}

/// Whether bytes that are no protocol we read may still lead to TLS: a SOCKS
/// greeting (version 4 or 5) or a text protocol line (STARTTLS in SMTP,
/// IMAP, POP3, FTP, XMPP). Other binary protocols are decided at once.
fn may_tunnel(data: &[u8]) -> bool {
    match data.first() {
        Some(4 | 5) => true,
        Some(_) => data.iter().take(4).all(|&b| b.is_ascii_graphic() || b == b' '),
        None => false,
    }
}

fn is_dns_port(p: u16) -> bool {
    matches!(p, 53 | 5353 | 5355)
}

fn put_cut<const N: usize>(dst: &mut BoundedStr<N>, bytes: &[u8]) {
    // Header values are bytes: keep printable ASCII, write others as '?', cut at N.
    for &b in bytes.iter().take(N) {
        let c = if (0x20..0x7f).contains(&b) { b } else { b'?' };
        if dst.push_ascii(c).is_err() {
            break;
        }
    }
}

impl Inspector {
    /// An empty pool; slots are allocated as they are first needed, up to `cfg.pool`.
    pub fn new(cfg: InspectConfig) -> Self {
        Inspector {
            cfg,
            pool: Vec::new(),
            free: Vec::new(),
            scratch: Box::new([0; SCRATCH_BYTES]),
            qscratch: Box::new([0; DEFAULT_SCRATCH_BYTES]),
            stats: InspectStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> InspectConfig {
        self.cfg
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.pool.len() - self.free.len()
    }

    /// Bytes of one slot.
    pub const SLOT_BYTES: usize = std::mem::size_of::<Work>();

    /// Take a slot for a new flow, or count the pool as exhausted.
    pub fn acquire(&mut self) -> Option<u32> {
        let i = match self.free.pop() {
            Some(i) => i,
            None if self.pool.len() < self.cfg.pool => {
                self.pool.push(Box::new(Work::new()));
                (self.pool.len() - 1) as u32
            }
            None => {
                self.stats.pool_exhausted += 1;
                return None;
            }
        };
        self.pool[i as usize].reset();
        self.stats.flows += 1;
        Some(i)
    }

    /// Inspect one payload packet of the flow holding `slot`. Returns `true`
    /// when the flow is decided: the slot is back in the pool and `meta` is final.
    pub fn packet(&mut self, slot: u32, meta: &mut FlowMeta, p: &Payload<'_>) -> bool {
        let Some(w) = self.pool.get_mut(slot as usize) else { return true };
        let d = usize::from(!p.forward);
        if w.seen[d] >= self.cfg.packets {
            return false;
        }
        w.seen[d] += 1;
        self.stats.packets += 1;
        w.sketch[d].update(p.data);
        if w.dir[d] != Dir::Done {
            let st = &mut self.stats;
            let scratch = &mut self.scratch[..];
            let qscratch = &mut self.qscratch[..];
            w.dir[d] = match p.proto {
                6 => tcp(w, d, p, meta, scratch, st),
                17 => udp(w, d, p, meta, qscratch, st),
                _ => Dir::Done,
            };
        }
        // Decided once each direction's parser is done (the sketch keeps what it saw) or its budget is spent.
        let decided = (0..2).all(|i| w.seen[i] >= self.cfg.packets || w.dir[i] == Dir::Done);
        if decided {
            self.finish(slot, meta);
        }
        decided
    }

    /// The flow ended (or was decided): count what was left incomplete,
    /// settle `meta` and return the slot.
    pub fn finish(&mut self, slot: u32, meta: &mut FlowMeta) {
        let Some(w) = self.pool.get_mut(slot as usize) else { return };
        for d in 0..2 {
            if let Dir::Open(Some(f)) = w.dir[d] {
                self.stats.fail(f);
            }
            w.dir[d] = Dir::Done;
            meta.sketch[d].clone_from(&w.sketch[d]);
        }
        meta.app = AppLabel(pick_app(&w.dissected));
        self.free.push(slot);
    }
}

/// Map a parser's "need more bytes" to Open, anything else to counted Done.
fn settle(st: &mut InspectStats, full: bool, incomplete: bool, f: Fail) -> Dir {
    if incomplete && !full {
        Dir::Open(Some(f))
    } else {
        st.fail(f);
        Dir::Done
    }
}

fn tcp(w: &mut Work, d: usize, p: &Payload<'_>, meta: &mut FlowMeta, scratch: &mut [u8], st: &mut InspectStats) -> Dir {
    let (buf, state) = if d == 0 { (&mut w.c2s[..], &mut w.c2s_st) } else { (&mut w.s2c[..], &mut w.s2c_st) };
    let mut r = TcpReassembler::resume(buf, *state);
    if let Err(e) = r.push(p.tcp_seq, p.data) {
        st.reassembly[e.index()] += 1;
    }
    *state = r.state();
    let full = r.is_full();
    let data = r.data();
    if data.is_empty() {
        return Dir::Open(None);
    }
    // Either port: a flow first seen mid-stream may take the server for the initiator.
    let dns = is_dns_port(p.server_port) || is_dns_port(p.client_port);
    let proxy_reply_due = meta.http.is_some_and(|h| h.method == "CONNECT" && h.status.is_none());
    if d == 1 && w.scan && meta.tls_server.is_none() && !(proxy_reply_due && data.starts_with(b"HTTP/")) {
        // The client tunnels (SOCKS, CONNECT, STARTTLS): look for the ServerHello record.
        // Search only what is new since the last packet (a record header is 6 bytes: back up 5).
        let from = w.scanned[1].saturating_sub(5).min(data.len());
        w.scanned[1] = data.len();
        let at = data[from..]
            .windows(6)
            .position(|x| x[0] == 0x16 && x[1] == 3 && x[2] <= 4 && x[5] == tls::SERVER_HELLO)
            .map(|k| k + from);
        return match at {
            Some(k) => server_hello(&data[k..], full, meta, st, &mut w.dissected, scratch),
            None if full => Dir::Done,
            None => Dir::Open(None),
        };
    }
    if d == 0 && w.scan {
        let from = w.scanned[0].saturating_sub(5).min(data.len());
        w.scanned[0] = data.len();
        return match tls::find_client_hello_record(&data[from..]).map(|k| k + from) {
            Some(k) => match tls::find_handshake(&data[k..], HandshakeCursor::default(), tls::CLIENT_HELLO, scratch) {
                Ok(h) => client_hello(ClientHello::parse(h.body), Transport::Tcp, meta, st, &mut w.dissected),
                Err(e) => settle(st, full, e == TlsError::Incomplete, Fail::Tls(e)),
            },
            None if full => Dir::Done,
            None => Dir::Open(None),
        };
    }
    if data[0] == 0x16 {
        if d == 1 {
            return server_hello(data, full, meta, st, &mut w.dissected, scratch);
        }
        return match tls::find_handshake(data, HandshakeCursor::default(), tls::CLIENT_HELLO, scratch) {
            Ok(h) => client_hello(ClientHello::parse(h.body), Transport::Tcp, meta, st, &mut w.dissected),
            Err(e) => settle(st, full, e == TlsError::Incomplete, Fail::Tls(e)),
        };
    }
    if b"SSH-".starts_with(&data[..data.len().min(4)]) {
        return match ssh::parse_banner(data) {
            Ok(b) => {
                let mut s = BoundedStr::<SSH_FIELD>::new();
                put_cut(&mut s, b.line.as_bytes());
                if d == 0 {
                    meta.ssh_client = Some(s);
                } else {
                    meta.ssh_server = Some(s);
                }
                w.dissected.ssh = true;
                st.parsed[4] += 1;
                Dir::Done
            }
            Err(e) => settle(st, full, e == SshError::Incomplete, Fail::Ssh(e)),
        };
    }
    if dns {
        return match dns::parse_tcp(data) {
            Ok(m) => dns_message(&m, meta, st, &mut w.dissected),
            Err(e) => settle(st, full, e == DnsError::Incomplete, Fail::Dns(e)),
        };
    }
    if d == 0 {
        match http::parse_request(data) {
            Ok(q) => {
                let h = meta.http.get_or_insert_with(HttpMeta::default);
                put_cut(&mut h.method, q.method.as_bytes());
                put_cut(&mut h.host, q.host.unwrap_or(&[]));
                put_cut(&mut h.user_agent, q.user_agent.unwrap_or(&[]));
                h.uri_len = q.uri_len() as u32;
                w.dissected.http = true;
                st.parsed[3] += 1;
                if q.method == "CONNECT" {
                    // A proxy tunnel: TLS may follow the head.
                    w.scan = true;
                    return Dir::Open(None);
                }
                Dir::Done
            }
            Err(HttpError::NotHttp) if full || !may_tunnel(data) => Dir::Done,
            Err(HttpError::NotHttp) => {
                // SOCKS or a text protocol (STARTTLS): a ClientHello may follow.
                w.scan = true;
                Dir::Open(None)
            }
            Err(e) => settle(st, full, e == HttpError::Incomplete, Fail::Http(e)),
        }
    } else {
        match http::parse_response(data) {
            Ok(r) => {
                meta.http.get_or_insert_with(HttpMeta::default).status = Some(r.status);
                w.dissected.http = true;
                st.parsed[3] += 1;
                if w.scan {
                    // The proxy's reply to CONNECT: the ServerHello follows.
                    return Dir::Open(None);
                }
                Dir::Done
            }
            Err(HttpError::NotHttp) if full || !may_tunnel(data) => Dir::Done,
            // A server that speaks first (IMAP, SMTP) may switch to TLS later.
            Err(HttpError::NotHttp) => Dir::Open(None),
            Err(e) => settle(st, full, e == HttpError::Incomplete, Fail::Http(e)),
        }
    }
}

fn server_hello(
    data: &[u8],
    full: bool,
    meta: &mut FlowMeta,
    st: &mut InspectStats,
    dis: &mut Dissected,
    scratch: &mut [u8],
) -> Dir {
    match tls::find_handshake(data, HandshakeCursor::default(), tls::SERVER_HELLO, scratch) {
        Ok(h) => match ServerHello::parse(h.body) {
            Ok(s) => {
                meta.tls_server =
                    Some(TlsServerMeta { version: s.selected_version(), cipher: s.cipher_suite, ja3s: s.ja3s_md5() });
                dis.tls = true;
                st.parsed[0] += 1;
                Dir::Done
            }
            Err(e) => settle(st, true, false, Fail::Tls(e)),
        },
        Err(e) => settle(st, full, e == TlsError::Incomplete, Fail::Tls(e)),
    }
}

fn client_hello(
    ch: Result<ClientHello<'_>, TlsError>,
    t: Transport,
    meta: &mut FlowMeta,
    st: &mut InspectStats,
    dis: &mut Dissected,
) -> Dir {
    let ch = match ch {
        Ok(c) => c,
        Err(e) => return settle(st, true, false, Fail::Tls(e)),
    };
    let mut m = TlsClientMeta { max_version: ch.max_version(), ..Default::default() };
    if let Some(s) = ch.server_name() {
        let _ = m.sni.push_str(s);
    }
    if let Some(a) = ch.first_alpn() {
        put_cut(&mut m.alpn, a);
    }
    match ch.ja4(t) {
        Ok(j) => m.ja4 = j,
        Err(e) => st.fail(Fail::Tls(e)),
    }
    m.ja3 = ch.ja3_md5();
    meta.tls = Some(m);
    if t == Transport::Quic {
        dis.quic = true;
        st.parsed[1] += 1;
    } else {
        dis.tls = true;
        st.parsed[0] += 1;
    }
    Dir::Done
}

fn dns_message(m: &dns::DnsMessage, meta: &mut FlowMeta, st: &mut InspectStats, dis: &mut Dissected) -> Dir {
    let e = meta.dns.get_or_insert_with(|| DnsMeta { qname: m.qname, qtype: m.qtype, ..Default::default() });
    if m.is_response {
        e.rcode = Some(m.rcode);
        e.answers = Some(m.answers);
    }
    dis.dns = true;
    st.parsed[2] += 1;
    Dir::Done
}

fn udp(
    w: &mut Work,
    d: usize,
    p: &Payload<'_>,
    meta: &mut FlowMeta,
    qscratch: &mut [u8],
    st: &mut InspectStats,
) -> Dir {
    let data = p.data;
    let long_v1_v2 = data.len() > 5
        && data[0] & 0xc0 == 0xc0
        && matches!(u32::from_be_bytes([data[1], data[2], data[3], data[4]]), 1 | 0x6b33_43cf);
    if d == 0 && long_v1_v2 && !is_dns_port(p.server_port) {
        let mut c = InitialCrypto::resume(&mut w.quic[..], w.quic_st);
        let pushed = c.push_datagram(data, qscratch);
        let full = c.is_full();
        let out = match pushed {
            Err(e) => settle(st, true, false, Fail::Quic(e)),
            Ok(_) => {
                meta.quic_version = c.version().map(|v| v.wire());
                match c.client_hello() {
                    Ok(ch) => {
                        let r = client_hello(Ok(ch), Transport::Quic, meta, st, &mut w.dissected);
                        w.quic_st = c.state();
                        return r;
                    }
                    Err(e) => settle(st, full, e == QuicError::Incomplete, Fail::Quic(e)),
                }
            }
        };
        w.quic_st = c.state();
        return out;
    }
    if is_dns_port(p.server_port) || is_dns_port(p.client_port) {
        return match dns::parse_udp(data) {
            Ok(m) => dns_message(&m, meta, st, &mut w.dissected),
            Err(e) => settle(st, true, false, Fail::Dns(e)),
        };
    }
    Dir::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pl(forward: bool, proto: u8, seq: u32, data: &[u8]) -> Payload<'_> {
        Payload { forward, proto, client_port: 40000, server_port: 80, tcp_seq: seq, data }
    }

    #[test]
    fn http_split_over_segments_then_response() {
        let mut ins = Inspector::new(InspectConfig::default());
        let slot = ins.acquire().unwrap();
        let mut meta = FlowMeta::default();
        let req = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\nUser-Agent: curl/8\r\n\r\n";
        assert!(!ins.packet(slot, &mut meta, &pl(true, 6, 1000, &req[..20])));
        assert!(meta.http.is_none(), "incomplete head waits");
        assert!(!ins.packet(slot, &mut meta, &pl(true, 6, 1020, &req[20..])));
        let h = meta.http.unwrap();
        assert_eq!(
            (h.method.as_str(), h.host.as_str(), h.user_agent.as_str(), h.uri_len),
            ("GET", "example.test", "curl/8", 11)
        );
        // Both heads read: the flow is decided and its slot goes back.
        assert!(ins.packet(slot, &mut meta, &pl(false, 6, 5000, b"HTTP/1.1 404 Not Found\r\n\r\n")));
        assert_eq!(meta.http.unwrap().status, Some(404));
        assert_eq!(meta.app.0, App::Http);
        assert_eq!(ins.in_use(), 0);
        assert_eq!(ins.stats.parsed[3], 2);
    }

    #[test]
    fn dns_over_udp_both_ways_and_budget() {
        let mut ins = Inspector::new(InspectConfig { packets: 2, pool: 1 });
        let slot = ins.acquire().unwrap();
        assert_eq!(ins.acquire(), None, "pool of one");
        assert_eq!(ins.stats.pool_exhausted, 1);
        let mut meta = FlowMeta::default();
        let q = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w', 0, 0, 16, 0, 1];
        let mut a = q;
        a[2] = 0x81;
        a[3] = 0x83; // NXDOMAIN
        let p = |fwd, d: &'static [u8]| Payload {
            forward: fwd,
            proto: 17,
            client_port: 5000,
            server_port: 53,
            tcp_seq: 0,
            data: d,
        };
        let q: &'static [u8] = Box::leak(Box::new(q));
        let a: &'static [u8] = Box::leak(Box::new(a));
        assert!(!ins.packet(slot, &mut meta, &p(true, q)));
        // Query and response read: decided.
        assert!(ins.packet(slot, &mut meta, &p(false, a)));
        let d = meta.dns.unwrap();
        assert_eq!((d.qname.as_str(), d.qtype, d.rcode, d.answers), ("www", 16, Some(3), Some(0)));
        assert_eq!(meta.app.0, App::Dns);
        assert_eq!(ins.in_use(), 0);
        assert!(!meta.sketch[0].is_empty() && meta.sketch[0].entropy() > 0.0);
        // A text protocol stays open (STARTTLS may follow) until its budget of two per direction is spent.
        let slot = ins.acquire().unwrap();
        let mut meta = FlowMeta::default();
        let u = |fwd, seq, data: &'static [u8]| Payload {
            forward: fwd,
            proto: 6,
            client_port: 5000,
            server_port: 7000,
            tcp_seq: seq,
            data,
        };
        assert!(!ins.packet(slot, &mut meta, &u(true, 1, b"a001 CAPABILITY\r\n")));
        assert!(!ins.packet(slot, &mut meta, &u(false, 100, b"* OK ready\r\n")));
        assert!(!ins.packet(slot, &mut meta, &u(true, 18, b"a002 NOOP\r\n")));
        assert!(ins.packet(slot, &mut meta, &u(false, 112, b"* OK\r\n")));
        assert_eq!(meta.app.0, App::Unknown);
        // A binary protocol is decided after one packet each way.
        let slot = ins.acquire().unwrap();
        let mut meta = FlowMeta::default();
        assert!(!ins.packet(slot, &mut meta, &u(true, 1, b"\x01\x02\x00\x00")));
        assert!(ins.packet(slot, &mut meta, &u(false, 100, b"\x00\x07\x00\x00")));
        assert_eq!(meta.app.0, App::Unknown);
        assert_eq!(ins.in_use(), 0);
    }

    #[test]
    fn garbage_is_counted_never_a_panic() {
        let mut ins = Inspector::new(InspectConfig::default());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..300u32 {
            let slot = ins.acquire().unwrap();
            let mut meta = FlowMeta::default();
            for k in 0..20u32 {
                let mut buf = [0u8; 300];
                for b in buf.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                // Make some look like TLS, SSH, HTTP, QUIC.
                match round % 5 {
                    0 => buf[..3].copy_from_slice(&[0x16, 3, 1]),
                    1 => buf[..4].copy_from_slice(b"SSH-"),
                    2 => buf[..4].copy_from_slice(b"GET "),
                    3 => buf[..5].copy_from_slice(&[0xc3, 0, 0, 0, 1]),
                    _ => {}
                }
                let n = (x as usize) % 300;
                let p = Payload {
                    forward: k % 2 == 0,
                    proto: if round % 2 == 0 { 6 } else { 17 },
                    client_port: 1234,
                    server_port: if round % 7 == 0 { 53 } else { 443 },
                    tcp_seq: (x >> 20) as u32,
                    data: &buf[..n],
                };
                if ins.packet(slot, &mut meta, &p) {
                    break;
                }
            }
            if ins.in_use() > 0 {
                ins.finish(slot, &mut meta);
            }
        }
        assert_eq!(ins.in_use(), 0);
        assert!(ins.stats.errors().map(|e| e.2).sum::<u64>() > 0);
    }
}
