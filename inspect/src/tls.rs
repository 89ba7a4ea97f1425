//! TLS handshake parsing over reassembled bytes: the record layer (a
//! handshake message may span several records), the ClientHello (server name,
//! ALPN, offered versions, **JA4**/JA4_r and **JA3**) and the ServerHello
//! (selected version and cipher, **JA3S**).
//!
//! Hand-written rather than built on `tls-parser`: that crate allocates a
//! `Vec` per message and per extension list, decodes known extensions into
//! enums (JA4 and JA3 need every extension's raw type code in wire order and
//! the raw value lists), and does not join a handshake message that is split
//! over records. This walker borrows from the input and copies a message into
//! a caller scratch buffer only to join record fragments.

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::util::{reasons, u16s, BoundedStr, Full, Reader};

pub use crate::reassembly::{
    AsmState, OffsetAssembler, ReassemblyError, TcpReassembler, TcpReassemblyState, MAX_HOLES,
};

/// Suggested reassembly size for a ClientHello (a post-quantum hello is ~1.8 KB).
pub const DEFAULT_STREAM_BYTES: usize = 8192;
/// Most cipher suites or extensions (GREASE excluded) sorted for JA4.
pub const MAX_LIST: usize = 512;
/// Capacity of a JA4_r string.
pub const JA4_R_CAP: usize = 4096;
/// Capacity of a JA3 / JA3S string.
pub const JA3_CAP: usize = 4096;

/// A JA4 fingerprint (always 36 ASCII characters).
pub type Ja4 = BoundedStr<36>;
/// A JA4_r (raw) fingerprint.
pub type Ja4Raw = BoundedStr<JA4_R_CAP>;
/// A JA3 or JA3S string.
pub type Ja3String = BoundedStr<JA3_CAP>;
/// An MD5 in lowercase hex (JA3, JA3S).
pub type Md5Hex = BoundedStr<32>;

reasons! {
    /// Why a TLS message could not be read.
    pub enum TlsError {
        /// More bytes are needed: wait for the next segment.
        Incomplete => "incomplete",
        /// The bytes are not TLS records (bad content type, version or length).
        NotTls => "not_tls",
        /// A non-handshake record interrupts a handshake message.
        Interleaved => "interleaved",
        /// The handshake message is not the one asked for.
        WrongMessage => "wrong_message",
        /// A length field is inconsistent with the bytes.
        Malformed => "malformed",
        /// The joined handshake message does not fit the scratch buffer.
        ScratchTooSmall => "scratch_too_small",
        /// More than [`MAX_LIST`] cipher suites or extensions.
        TooManyValues => "too_many_values",
        /// A fingerprint string does not fit its fixed capacity.
        TooLong => "too_long",
    }
}

impl From<Full> for TlsError {
    fn from(_: Full) -> Self {
        TlsError::TooLong
    }
}

/// Handshake message type of a ClientHello.
pub const CLIENT_HELLO: u8 = 1;
/// Handshake message type of a ServerHello (and a HelloRetryRequest).
pub const SERVER_HELLO: u8 = 2;
const CT_CCS: u8 = 20;
const CT_HANDSHAKE: u8 = 22;
const MAX_RECORD: usize = 16384 + 2048;

/// True for the GREASE values of RFC 8701 (`0x0a0a`, `0x1a1a`, … `0xfafa`).
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// A position in a record stream: a record's start and how many bytes of
/// its payload were already consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeCursor {
    /// Offset of the current record header in the stream.
    pub record: usize,
    /// Payload bytes of that record already consumed.
    pub skip: usize,
}

/// One handshake message joined from the record layer.
#[derive(Debug, Clone, Copy)]
pub struct Handshake<'s> {
    /// Handshake type (1 ClientHello, 2 ServerHello, …).
    pub msg_type: u8,
    /// The message body (after the 4-byte handshake header).
    pub body: &'s [u8],
    /// Where the next message starts.
    pub next: HandshakeCursor,
}

/// Feeds exactly `want` handshake bytes from `at` to `f`; returns the cursor
/// after them. Non-handshake records before the first byte are skipped.
fn walk(
    stream: &[u8],
    at: HandshakeCursor,
    want: usize,
    mut f: impl FnMut(&[u8]) -> Result<(), TlsError>,
) -> Result<HandshakeCursor, TlsError> {
    let mut cur = at;
    let mut got = 0usize;
    loop {
        let hdr = stream.get(cur.record..).ok_or(TlsError::Incomplete)?;
        let mut r = Reader::new(hdr);
        let (Some(ct), Some(ver), Some(len)) = (r.u8(), r.u16(), r.u16()) else {
            return Err(TlsError::Incomplete);
        };
        let len = usize::from(len);
        if !(CT_CCS..=24).contains(&ct) || ver >> 8 != 3 || len > MAX_RECORD {
            return Err(TlsError::NotTls);
        }
        let next_record = cur.record.checked_add(5 + len).ok_or(TlsError::Malformed)?;
        if ct != CT_HANDSHAKE || cur.skip >= len {
            if ct != CT_HANDSHAKE && got > 0 {
                return Err(TlsError::Interleaved);
            }
            cur = HandshakeCursor { record: next_record, skip: 0 };
            continue;
        }
        let avail = r.rest();
        let payload_end = len.min(avail.len());
        let chunk = avail.get(cur.skip..payload_end).unwrap_or(&[]);
        let take = chunk.len().min(want - got);
        f(chunk.get(..take).unwrap_or(&[]))?;
        got += take;
        cur.skip += take;
        if got == want {
            if cur.skip >= len {
                cur = HandshakeCursor { record: next_record, skip: 0 };
            }
            return Ok(cur);
        }
        if payload_end < len {
            return Err(TlsError::Incomplete);
        }
        cur = HandshakeCursor { record: next_record, skip: 0 };
    }
}

/// Reads the 4-byte handshake header at `at`: (type, body length).
fn peek_header(stream: &[u8], at: HandshakeCursor) -> Result<(u8, usize), TlsError> {
    let mut hdr = [0u8; 4];
    let mut n = 0usize;
    walk(stream, at, 4, |c| {
        for &b in c {
            if let Some(slot) = hdr.get_mut(n) {
                *slot = b;
            }
            n += 1;
        }
        Ok(())
    })?;
    Ok((hdr[0], u32::from_be_bytes([0, hdr[1], hdr[2], hdr[3]]) as usize))
}

/// Reads the next handshake message of a TLS record stream (one direction,
/// from its first byte) at `at`, joining record fragments into `scratch`.
///
/// Records of other types before the message (ChangeCipherSpec, alerts) are
/// skipped. Returns [`TlsError::Incomplete`] when the stream ends first.
pub fn next_handshake<'s>(
    stream: &[u8],
    at: HandshakeCursor,
    scratch: &'s mut [u8],
) -> Result<Handshake<'s>, TlsError> {
    let (msg_type, len) = peek_header(stream, at)?;
    let total = len.checked_add(4).ok_or(TlsError::Malformed)?;
    if total > scratch.len() {
        // Still report Incomplete first if the bytes are not all there.
        walk(stream, at, total, |_| Ok(()))?;
        return Err(TlsError::ScratchTooSmall);
    }
    let mut n = 0usize;
    let next = walk(stream, at, total, |c| {
        let end = n + c.len();
        scratch.get_mut(n..end).ok_or(TlsError::ScratchTooSmall)?.copy_from_slice(c);
        n = end;
        Ok(())
    })?;
    let body = scratch.get(4..total).ok_or(TlsError::Malformed)?;
    Ok(Handshake { msg_type, body, next })
}

/// Finds the next handshake message of type `msg_type` at or after `at`,
/// skipping other messages, and joins it into `scratch`.
pub fn find_handshake<'s>(
    stream: &[u8],
    mut at: HandshakeCursor,
    msg_type: u8,
    scratch: &'s mut [u8],
) -> Result<Handshake<'s>, TlsError> {
    loop {
        let (t, len) = peek_header(stream, at)?;
        if t == msg_type {
            return next_handshake(stream, at, scratch);
        }
        let total = len.checked_add(4).ok_or(TlsError::Malformed)?;
        at = walk(stream, at, total, |_| Ok(()))?;
    }
}

/// The first offset where a handshake record holding the start of a
/// ClientHello begins (`16 03 0x LL LL 01`), for TLS inside a tunnel (SOCKS,
/// STARTTLS) whose stream does not start with TLS.
pub fn find_client_hello_record(stream: &[u8]) -> Option<usize> {
    stream.windows(6).position(|w| w[0] == CT_HANDSHAKE && w[1] == 3 && w[2] <= 4 && w[5] == CLIENT_HELLO)
}

/// Splits a bare handshake message (QUIC CRYPTO data has no record layer):
/// returns (type, body, bytes after it).
pub fn split_handshake(bytes: &[u8]) -> Result<(u8, &[u8], &[u8]), TlsError> {
    let mut r = Reader::new(bytes);
    let (Some(t), Some(len)) = (r.u8(), r.u24()) else {
        return Err(TlsError::Incomplete);
    };
    let body = r.take(len as usize).ok_or(TlsError::Incomplete)?;
    Ok((t, body, r.rest()))
}

/// Iterator over `(type, data)` of a raw extensions block.
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let t = self.r.u16()?;
        let d = self.r.vec16()?;
        Some((t, d))
    }
}

/// Iterator over the protocol names of an ALPN list.
#[derive(Debug, Clone)]
pub struct AlpnList<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for AlpnList<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<Self::Item> {
        self.r.vec8()
    }
}

/// Checks an extensions block: every extension's length fits exactly.
fn check_extensions(b: &[u8]) -> Result<(), TlsError> {
    let mut r = Reader::new(b);
    while r.remaining() > 0 {
        r.u16().ok_or(TlsError::Malformed)?;
        r.vec16().ok_or(TlsError::Malformed)?;
    }
    Ok(())
}

/// The transport a hello came over: JA4's first letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS over TCP: `t`.
    Tcp,
    /// QUIC: `q`.
    Quic,
    /// DTLS: `d`.
    Dtls,
}

impl Transport {
    fn letter(self) -> u8 {
        match self {
            Transport::Tcp => b't',
            Transport::Quic => b'q',
            Transport::Dtls => b'd',
        }
    }
}

/// Well-known extension type codes.
pub mod ext {
    /// server_name.
    pub const SERVER_NAME: u16 = 0;
    /// supported_groups (elliptic_curves).
    pub const SUPPORTED_GROUPS: u16 = 10;
    /// ec_point_formats.
    pub const EC_POINT_FORMATS: u16 = 11;
    /// signature_algorithms.
    pub const SIGNATURE_ALGORITHMS: u16 = 13;
    /// application_layer_protocol_negotiation.
    pub const ALPN: u16 = 16;
    /// supported_versions.
    pub const SUPPORTED_VERSIONS: u16 = 43;
}

/// A parsed ClientHello, borrowing from the message body.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientHello<'a> {
    /// `legacy_version` (0x0303 for TLS 1.2 and 1.3 hellos).
    pub legacy_version: u16,
    /// The 32-byte random.
    pub random: &'a [u8],
    /// The legacy session id.
    pub session_id: &'a [u8],
    cipher_suites: &'a [u8],
    /// The compression methods.
    pub compression_methods: &'a [u8],
    extensions: &'a [u8],
    server_name: Option<&'a [u8]>,
    has_sni: bool,
    has_alpn: bool,
    alpn: &'a [u8],
    versions: &'a [u8],
    sig_algs: &'a [u8],
    groups: &'a [u8],
    point_formats: &'a [u8],
}

/// The value list inside an extension with a `u8` or `u16` length prefix, or
/// empty when malformed (the extension still counts for fingerprints).
fn inner16(d: &[u8]) -> &[u8] {
    Reader::new(d).vec16().unwrap_or(&[])
}
fn inner8(d: &[u8]) -> &[u8] {
    Reader::new(d).vec8().unwrap_or(&[])
}

fn first_host_name(d: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(inner16(d));
    while r.remaining() > 0 {
        let t = r.u8()?;
        let name = r.vec16()?;
        if t == 0 {
            return Some(name);
        }
    }
    None
}

/// Something a fingerprint is written to: a hasher, a string, or both.
trait Sink {
    fn put(&mut self, b: &[u8]) -> Result<(), Full>;
}

impl<const N: usize> Sink for BoundedStr<N> {
    fn put(&mut self, b: &[u8]) -> Result<(), Full> {
        self.push_bytes(b)
    }
}

struct Hashing<D: Digest>(D);

impl<D: Digest> Sink for Hashing<D> {
    fn put(&mut self, b: &[u8]) -> Result<(), Full> {
        self.0.update(b);
        Ok(())
    }
}

fn put_hex16(s: &mut impl Sink, v: u16) -> Result<(), Full> {
    let mut t = BoundedStr::<4>::new();
    t.push_hex_u16(v)?;
    s.put(t.as_bytes())
}

fn put_dec(s: &mut impl Sink, v: u32) -> Result<(), Full> {
    let mut t = BoundedStr::<10>::new();
    t.push_dec(v)?;
    s.put(t.as_bytes())
}

/// Writes `vals` as comma-separated 4-digit hex.
fn put_hex_list(s: &mut impl Sink, vals: &[u16]) -> Result<(), Full> {
    for (i, &v) in vals.iter().enumerate() {
        if i > 0 {
            s.put(b",")?;
        }
        put_hex16(s, v)?;
    }
    Ok(())
}

/// Writes non-GREASE values of `vals` as dash-separated decimal.
fn put_dec_list(s: &mut impl Sink, vals: impl Iterator<Item = u16>) -> Result<(), Full> {
    let mut first = true;
    for v in vals.filter(|&v| !is_grease(v)) {
        if !first {
            s.put(b"-")?;
        }
        first = false;
        put_dec(s, u32::from(v))?;
    }
    Ok(())
}

/// A fixed array of up to [`MAX_LIST`] values.
struct List {
    v: [u16; MAX_LIST],
    n: usize,
}

impl List {
    fn collect(it: impl Iterator<Item = u16>) -> Result<List, TlsError> {
        let mut l = List { v: [0; MAX_LIST], n: 0 };
        for x in it {
            *l.v.get_mut(l.n).ok_or(TlsError::TooManyValues)? = x;
            l.n += 1;
        }
        Ok(l)
    }
    fn sorted(mut self) -> List {
        if let Some(s) = self.v.get_mut(..self.n) {
            s.sort_unstable();
        }
        self
    }
    fn as_slice(&self) -> &[u16] {
        self.v.get(..self.n).unwrap_or(&[])
    }
}

/// The JA4 version code of a TLS/DTLS version number.
fn ja4_version(v: u16) -> &'static [u8; 2] {
    match v {
        0x0304 => b"13",
        0x0303 => b"12",
        0x0302 => b"11",
        0x0301 => b"10",
        0x0300 => b"s3",
        0x0002 => b"s2",
        0xfeff => b"d1",
        0xfefd => b"d2",
        0xfefc => b"d3",
        _ => b"00",
    }
}

fn two_digits(n: usize) -> [u8; 2] {
    let n = n.min(99) as u8;
    [b'0' + n / 10, b'0' + n % 10]
}

/// The sorted lists and part a that JA4 and JA4_r share.
struct Ja4Parts {
    a: BoundedStr<10>,
    ciphers: List,
    exts: List,
    sigs: List,
}

impl<'a> ClientHello<'a> {
    /// Parses a ClientHello message body (after the 4-byte handshake header).
    pub fn parse(body: &'a [u8]) -> Result<Self, TlsError> {
        let mut r = Reader::new(body);
        let legacy_version = r.u16().ok_or(TlsError::Malformed)?;
        let random = r.take(32).ok_or(TlsError::Malformed)?;
        let session_id = r.vec8().ok_or(TlsError::Malformed)?;
        let cipher_suites = r.vec16().ok_or(TlsError::Malformed)?;
        if cipher_suites.len() % 2 != 0 {
            return Err(TlsError::Malformed);
        }
        let compression_methods = r.vec8().ok_or(TlsError::Malformed)?;
        let extensions = if r.remaining() == 0 { &[][..] } else { r.vec16().ok_or(TlsError::Malformed)? };
        check_extensions(extensions)?;
        let mut ch = ClientHello {
            legacy_version,
            random,
            session_id,
            cipher_suites,
            compression_methods,
            extensions,
            ..Default::default()
        };
        for (t, d) in ch.extensions() {
            match t {
                ext::SERVER_NAME => {
                    ch.has_sni = true;
                    ch.server_name = first_host_name(d);
                }
                ext::ALPN => {
                    ch.has_alpn = true;
                    ch.alpn = inner16(d);
                }
                ext::SUPPORTED_VERSIONS => ch.versions = inner8(d),
                ext::SIGNATURE_ALGORITHMS => ch.sig_algs = inner16(d),
                ext::SUPPORTED_GROUPS => ch.groups = inner16(d),
                ext::EC_POINT_FORMATS => ch.point_formats = inner8(d),
                _ => {}
            }
        }
        Ok(ch)
    }

    /// Offered cipher suites in wire order (GREASE included).
    pub fn cipher_suites(&self) -> impl Iterator<Item = u16> + 'a {
        u16s(self.cipher_suites)
    }

    /// Extensions `(type, data)` in wire order (GREASE included).
    pub fn extensions(&self) -> Extensions<'a> {
        Extensions { r: Reader::new(self.extensions) }
    }

    /// The first `host_name` of the server_name extension, as bytes.
    pub fn server_name_bytes(&self) -> Option<&'a [u8]> {
        self.server_name
    }

    /// The server name, when present and UTF-8.
    pub fn server_name(&self) -> Option<&'a str> {
        self.server_name.and_then(|b| core::str::from_utf8(b).ok())
    }

    /// The offered ALPN protocol names, in order.
    pub fn alpn(&self) -> AlpnList<'a> {
        AlpnList { r: Reader::new(self.alpn) }
    }

    /// The first offered ALPN protocol name.
    pub fn first_alpn(&self) -> Option<&'a [u8]> {
        self.alpn().next()
    }

    /// The supported_versions list in order (GREASE included); empty when absent.
    pub fn supported_versions(&self) -> impl Iterator<Item = u16> + 'a {
        u16s(self.versions)
    }

    /// signature_algorithms values in order.
    pub fn signature_algorithms(&self) -> impl Iterator<Item = u16> + 'a {
        u16s(self.sig_algs)
    }

    /// supported_groups values in order.
    pub fn supported_groups(&self) -> impl Iterator<Item = u16> + 'a {
        u16s(self.groups)
    }

    /// ec_point_formats values in order.
    pub fn ec_point_formats(&self) -> &'a [u8] {
        self.point_formats
    }

    /// The highest offered version: the largest non-GREASE supported_versions
    /// value, or `legacy_version` when that extension is absent or empty.
    pub fn max_version(&self) -> u16 {
        self.supported_versions().filter(|&v| !is_grease(v)).max().unwrap_or(self.legacy_version)
    }

    fn ja4_parts(&self, transport: Transport) -> Result<Ja4Parts, TlsError> {
        let ciphers = List::collect(self.cipher_suites().filter(|&v| !is_grease(v)))?;
        let all_exts = self.extensions().filter(|&(t, _)| !is_grease(t)).count();
        let exts = List::collect(
            self.extensions().map(|(t, _)| t).filter(|&t| !is_grease(t) && t != ext::SERVER_NAME && t != ext::ALPN),
        )?;
        let sigs = List::collect(self.signature_algorithms().filter(|&v| !is_grease(v)))?;
        let mut a = BoundedStr::<10>::new();
        a.push_ascii(transport.letter())?;
        a.push_bytes(ja4_version(self.max_version()))?;
        a.push_ascii(if self.has_sni { b'd' } else { b'i' })?;
        a.push_bytes(&two_digits(ciphers.n))?;
        a.push_bytes(&two_digits(all_exts))?;
        a.push_bytes(&ja4_alpn(self.first_alpn()))?;
        Ok(Ja4Parts { a, ciphers: ciphers.sorted(), exts: exts.sorted(), sigs })
    }

    /// The JA4 fingerprint (FoxIO, BSD-3-Clause): `a_b_c` where
    /// a = transport, version, `d`/`i` (SNI present or not), cipher and
    /// extension counts (GREASE excluded, at most 99), ALPN first+last
    /// character; b = first 12 hex of SHA-256 of the sorted cipher list;
    /// c = same over the sorted extensions (without SNI and ALPN), `_`, and the
    /// signature algorithms in wire order. Empty lists hash to `000000000000`.
    pub fn ja4(&self, transport: Transport) -> Result<Ja4, TlsError> {
        let p = self.ja4_parts(transport)?;
        let mut out = Ja4::new();
        out.push_bytes(p.a.as_bytes())?;
        out.push_str("_")?;
        if p.ciphers.n == 0 {
            out.push_str("000000000000")?;
        } else {
            let mut h = Hashing(Sha256::new());
            put_hex_list(&mut h, p.ciphers.as_slice())?;
            out.push_hex(h.0.finalize().get(..6).unwrap_or(&[]))?;
        }
        out.push_str("_")?;
        if p.exts.n == 0 && p.sigs.n == 0 {
            out.push_str("000000000000")?;
        } else {
            let mut h = Hashing(Sha256::new());
            put_ja4_c(&mut h, &p)?;
            out.push_hex(h.0.finalize().get(..6).unwrap_or(&[]))?;
        }
        Ok(out)
    }

    /// JA4_r: JA4 with the raw sorted lists instead of their hashes
    /// (`a_ciphers_extensions_sigalgs`; the last `_sigalgs` is omitted when
    /// there are none).
    pub fn ja4_r(&self, transport: Transport) -> Result<Ja4Raw, TlsError> {
        let p = self.ja4_parts(transport)?;
        let mut out = Ja4Raw::new();
        out.push_bytes(p.a.as_bytes())?;
        out.push_str("_")?;
        put_hex_list(&mut out, p.ciphers.as_slice())?;
        out.push_str("_")?;
        put_ja4_c(&mut out, &p)?;
        Ok(out)
    }

    fn put_ja3(&self, s: &mut impl Sink) -> Result<(), Full> {
        put_dec(s, u32::from(self.legacy_version))?;
        s.put(b",")?;
        put_dec_list(s, self.cipher_suites())?;
        s.put(b",")?;
        put_dec_list(s, self.extensions().map(|(t, _)| t))?;
        s.put(b",")?;
        put_dec_list(s, self.supported_groups())?;
        s.put(b",")?;
        put_dec_list(s, self.point_formats.iter().map(|&b| u16::from(b)))
    }

    /// The JA3 string: `version,ciphers,extensions,groups,point_formats`,
    /// decimal, `-`-separated, wire order, GREASE excluded.
    pub fn ja3(&self) -> Result<Ja3String, TlsError> {
        let mut s = Ja3String::new();
        self.put_ja3(&mut s)?;
        Ok(s)
    }

    /// MD5 of the JA3 string, lowercase hex (never too long).
    pub fn ja3_md5(&self) -> Md5Hex {
        let mut h = Hashing(Md5::new());
        let _ = self.put_ja3(&mut h);
        md5_hex(h.0)
    }
}

fn md5_hex(h: Md5) -> Md5Hex {
    let mut out = Md5Hex::new();
    let _ = out.push_hex(&h.finalize());
    out
}

fn put_ja4_c(s: &mut impl Sink, p: &Ja4Parts) -> Result<(), Full> {
    put_hex_list(s, p.exts.as_slice())?;
    if p.sigs.n > 0 {
        s.put(b"_")?;
        put_hex_list(s, p.sigs.as_slice())?;
    }
    Ok(())
}

/// JA4's two ALPN characters: first and last character of the first value
/// when both are ASCII alphanumeric, else the first and last hex digit of
/// the value (current FoxIO spec), `00` when there is none.
fn ja4_alpn(first: Option<&[u8]>) -> [u8; 2] {
    let Some(v) = first else { return *b"00" };
    let (Some(&f), Some(&l)) = (v.first(), v.last()) else {
        return *b"00";
    };
    if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() {
        [f, l]
    } else {
        [crate::util::HEX[usize::from(f >> 4)], crate::util::HEX[usize::from(l & 15)]]
    }
}

/// A parsed ServerHello (or HelloRetryRequest), borrowing from the body.
#[derive(Debug, Clone, Copy)]
pub struct ServerHello<'a> {
    /// `legacy_version`.
    pub legacy_version: u16,
    /// The 32-byte random.
    pub random: &'a [u8],
    /// The echoed session id.
    pub session_id: &'a [u8],
    /// The selected cipher suite.
    pub cipher_suite: u16,
    /// The selected compression method.
    pub compression_method: u8,
    extensions: &'a [u8],
}

/// The fixed random that marks a HelloRetryRequest (RFC 8446 §4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2, 0x11,
    0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

impl<'a> ServerHello<'a> {
    /// Parses a ServerHello message body (after the 4-byte handshake header).
    pub fn parse(body: &'a [u8]) -> Result<Self, TlsError> {
        let mut r = Reader::new(body);
        let legacy_version = r.u16().ok_or(TlsError::Malformed)?;
        let random = r.take(32).ok_or(TlsError::Malformed)?;
        let session_id = r.vec8().ok_or(TlsError::Malformed)?;
        let cipher_suite = r.u16().ok_or(TlsError::Malformed)?;
        let compression_method = r.u8().ok_or(TlsError::Malformed)?;
        let extensions = if r.remaining() == 0 { &[][..] } else { r.vec16().ok_or(TlsError::Malformed)? };
        check_extensions(extensions)?;
        Ok(ServerHello { legacy_version, random, session_id, cipher_suite, compression_method, extensions })
    }

    /// Extensions `(type, data)` in wire order.
    pub fn extensions(&self) -> Extensions<'a> {
        Extensions { r: Reader::new(self.extensions) }
    }

    /// True for a HelloRetryRequest.
    pub fn is_hello_retry_request(&self) -> bool {
        self.random == HRR_RANDOM
    }

    /// The negotiated version: supported_versions' value when present, else `legacy_version`.
    pub fn selected_version(&self) -> u16 {
        self.extensions()
            .find(|&(t, _)| t == ext::SUPPORTED_VERSIONS)
            .and_then(|(_, d)| Reader::new(d).u16())
            .unwrap_or(self.legacy_version)
    }

    fn put_ja3s(&self, s: &mut impl Sink) -> Result<(), Full> {
        put_dec(s, u32::from(self.legacy_version))?;
        s.put(b",")?;
        put_dec(s, u32::from(self.cipher_suite))?;
        s.put(b",")?;
        put_dec_list(s, self.extensions().map(|(t, _)| t))
    }

    /// The JA3S string: `version,cipher,extensions` (decimal, wire order).
    pub fn ja3s(&self) -> Result<Ja3String, TlsError> {
        let mut s = Ja3String::new();
        self.put_ja3s(&mut s)?;
        Ok(s)
    }

    /// MD5 of the JA3S string, lowercase hex.
    pub fn ja3s_md5(&self) -> Md5Hex {
        let mut h = Hashing(Md5::new());
        let _ = self.put_ja3s(&mut h);
        md5_hex(h.0)
    }
}

/// Version names for logs: `TLSv1.3`, `TLSv1.2`, … or `unknown`.
pub fn version_name(v: u16) -> &'static str {
    match v {
        0x0304 => "TLSv1.3",
        0x0303 => "TLSv1.2",
        0x0302 => "TLSv1.1",
        0x0301 => "TLSv1.0",
        0x0300 => "SSLv3",
        0xfeff => "DTLSv1.0",
        0xfefd => "DTLSv1.2",
        0xfefc => "DTLSv1.3",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small ClientHello: TLS 1.3 offered, GREASE in ciphers and
    /// extensions, SNI "example.com", ALPN h2+http/1.1.
    fn hello() -> Vec<u8> {
        let mut ext = Vec::new();
        let mut add = |t: u16, d: &[u8]| {
            ext.extend_from_slice(&t.to_be_bytes());
            ext.extend_from_slice(&(d.len() as u16).to_be_bytes());
            ext.extend_from_slice(d);
        };
        add(0x1a1a, &[]);
        add(0, b"\x00\x0e\x00\x00\x0bexample.com");
        add(16, b"\x00\x0c\x02h2\x08http/1.1");
        add(43, b"\x04\x2a\x2a\x03\x04");
        add(13, b"\x00\x04\x04\x03\x08\x04");
        add(10, b"\x00\x04\x3a\x3a\x00\x1d");
        add(11, b"\x01\x00");
        let mut b = vec![0x03, 0x03];
        b.extend_from_slice(&[7; 32]);
        b.push(0);
        b.extend_from_slice(&[0, 6, 0x0a, 0x0a, 0x13, 0x01, 0xc0, 0x2b]);
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        b.extend_from_slice(&ext);
        b
    }

    fn records(body: &[u8], split: usize) -> Vec<u8> {
        let mut msg = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg.extend_from_slice(body);
        let mut out = Vec::new();
        for part in [&msg[..split], &msg[split..]] {
            out.extend_from_slice(&[22, 3, 1, (part.len() >> 8) as u8, part.len() as u8]);
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn parses_and_fingerprints() {
        let body = hello();
        let ch = ClientHello::parse(&body).unwrap();
        assert_eq!(ch.server_name(), Some("example.com"));
        assert_eq!(ch.first_alpn(), Some(&b"h2"[..]));
        assert_eq!(ch.alpn().count(), 2);
        assert_eq!(ch.max_version(), 0x0304);
        let r = ch.ja4_r(Transport::Tcp).unwrap();
        assert_eq!(r.as_str(), "t13d0206h2_1301,c02b_000a,000b,000d,002b_0403,0804");
        let j = ch.ja4(Transport::Quic).unwrap();
        assert!(j.as_str().starts_with("q13d0206h2_"), "{j}");
        assert_eq!(j.len(), 36);
        assert_eq!(ch.ja3().unwrap().as_str(), "771,4865-49195,0-16-43-13-10-11,29,0");
        assert_eq!(ch.ja3_md5().len(), 32);
    }

    #[test]
    fn joins_records_and_reports_incomplete() {
        let body = hello();
        let stream = records(&body, 10);
        let mut scratch = [0u8; 1024];
        let h = next_handshake(&stream, HandshakeCursor::default(), &mut scratch).unwrap();
        assert_eq!(h.msg_type, CLIENT_HELLO);
        assert_eq!(h.body, &body[..]);
        assert_eq!(h.next.record, stream.len());
        for cut in 0..stream.len() {
            let mut s = [0u8; 1024];
            assert_eq!(
                next_handshake(&stream[..cut], HandshakeCursor::default(), &mut s).map(|_| ()),
                Err(TlsError::Incomplete),
                "cut {cut}"
            );
        }
        let mut small = [0u8; 16];
        assert_eq!(
            next_handshake(&stream, HandshakeCursor::default(), &mut small).map(|_| ()),
            Err(TlsError::ScratchTooSmall)
        );
        assert_eq!(
            next_handshake(b"GET / HTTP/1.1\r\n", HandshakeCursor::default(), &mut small).map(|_| ()),
            Err(TlsError::NotTls)
        );
    }

    #[test]
    fn alpn_chars() {
        assert_eq!(&ja4_alpn(Some(b"h2")), b"h2");
        assert_eq!(&ja4_alpn(Some(b"http/1.1")), b"h1");
        assert_eq!(&ja4_alpn(Some(&[0xba, 0xad])), b"bd");
        assert_eq!(&ja4_alpn(Some(b"")), b"00");
        assert_eq!(&ja4_alpn(None), b"00");
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a1a));
    }
}
