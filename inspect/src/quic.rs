//! QUIC client Initial packets (v1: RFC 9000/9001, v2: RFC 9369): derive the
//! client's Initial keys from the Destination Connection ID, remove header
//! protection, decrypt (AES-128-GCM), walk the frames and reassemble CRYPTO
//! data by offset, then parse the ClientHello it carries with
//! [`crate::tls::ClientHello`] (SNI, ALPN, JA4 with the `q` prefix).
//!
//! Only client → server Initial packets are handled (the server's use other
//! keys). Several packets may be coalesced in one datagram: they are read
//! until the first one that is not a long-header Initial of a known version.

use ring::aead::{self, quic as hp, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{self, KeyType, Prk, Salt, HKDF_SHA256};

use crate::reassembly::{AsmState, OffsetAssembler, ReassemblyError};
use crate::tls::{split_handshake, ClientHello, TlsError, CLIENT_HELLO};
use crate::util::{reasons, Reader};

/// Suggested size of the CRYPTO reassembly buffer (a post-quantum ClientHello is ~1.8 KB).
pub const DEFAULT_CRYPTO_BYTES: usize = 4096;
/// Suggested size of the per-packet decryption scratch (a whole datagram fits).
pub const DEFAULT_SCRATCH_BYTES: usize = 2048;

reasons! {
    /// Why a QUIC Initial packet could not be read.
    pub enum QuicError {
        /// A short-header (1-RTT) packet, or not QUIC at all.
        NotLongHeader => "not_long_header",
        /// Version negotiation (version 0) or a version other than 1 and 2.
        UnknownVersion => "unknown_version",
        /// A long-header packet that is not an Initial.
        NotInitial => "not_initial",
        /// A header field or length does not fit the datagram.
        Malformed => "malformed",
        /// The packet is too short to hold the header-protection sample.
        TooShort => "too_short",
        /// The packet does not fit the scratch buffer.
        ScratchTooSmall => "scratch_too_small",
        /// AEAD authentication failed (wrong keys, corrupt or not a client Initial).
        DecryptFailed => "decrypt_failed",
        /// A frame type not allowed in an Initial packet, or a truncated frame.
        BadFrame => "bad_frame",
        /// CRYPTO data needs more than the reassembler's hole budget.
        TooManyHoles => "too_many_holes",
        /// The ClientHello is not complete yet: wait for more Initial packets.
        Incomplete => "incomplete",
        /// The CRYPTO stream does not start with a ClientHello.
        NotClientHello => "not_client_hello",
        /// The ClientHello is malformed.
        BadClientHello => "bad_client_hello",
    }
}

/// The QUIC versions whose Initial packets can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// QUIC version 1 (0x00000001).
    V1,
    /// QUIC version 2 (0x6b3343cf).
    V2,
}

impl Version {
    /// Maps a wire version number.
    pub fn from_wire(v: u32) -> Option<Version> {
        match v {
            1 => Some(Version::V1),
            0x6b33_43cf => Some(Version::V2),
            _ => None,
        }
    }

    /// The wire version number.
    pub fn wire(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 0x6b33_43cf,
        }
    }

    fn salt(self) -> &'static [u8; 20] {
        match self {
            Version::V1 => &[
                0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc,
                0xbb, 0x7f, 0x0a,
            ],
            Version::V2 => &[
                0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9,
                0xbd, 0x2e, 0xd9,
            ],
        }
    }

    fn labels(self) -> (&'static [u8], &'static [u8], &'static [u8]) {
        match self {
            Version::V1 => (b"quic key", b"quic iv", b"quic hp"),
            Version::V2 => (b"quicv2 key", b"quicv2 iv", b"quicv2 hp"),
        }
    }

    /// The long-header packet type bits of an Initial packet.
    fn initial_type(self) -> u8 {
        match self {
            Version::V1 => 0,
            Version::V2 => 1,
        }
    }
}

/// The client's Initial packet-protection keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialKeys {
    /// `client_initial_secret`.
    pub secret: [u8; 32],
    /// AEAD key (AES-128-GCM).
    pub key: [u8; 16],
    /// AEAD IV.
    pub iv: [u8; 12],
    /// Header-protection key (AES-128).
    pub hp: [u8; 16],
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(prk: &Prk, label: &[u8], out: &mut [u8]) -> Result<(), ring::error::Unspecified> {
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len()))?.fill(out)
}

/// Derives the client Initial keys for `version` from the client's first
/// Destination Connection ID (RFC 9001 §5.2, RFC 9369 §3.3).
pub fn client_initial_keys(version: Version, dcid: &[u8]) -> InitialKeys {
    let initial = Salt::new(HKDF_SHA256, version.salt()).extract(dcid);
    let mut k = InitialKeys { secret: [0; 32], key: [0; 16], iv: [0; 12], hp: [0; 16] };
    // Lengths are fixed and far below HKDF's limit, so expansion cannot fail.
    let _ = expand_label(&initial, b"client in", &mut k.secret);
    let prk = Prk::new_less_safe(hkdf::HKDF_SHA256, &k.secret);
    let (lk, li, lh) = version.labels();
    let _ = expand_label(&prk, lk, &mut k.key);
    let _ = expand_label(&prk, li, &mut k.iv);
    let _ = expand_label(&prk, lh, &mut k.hp);
    k
}

/// One decrypted client Initial packet.
#[derive(Debug, Clone, Copy)]
pub struct InitialPacket<'s> {
    /// The version.
    pub version: Version,
    /// The Destination Connection ID (keys are derived from it).
    pub dcid: [u8; 20],
    /// Length of `dcid` in use.
    pub dcid_len: usize,
    /// The packet number (truncated form as sent).
    pub packet_number: u32,
    /// The decrypted frames.
    pub payload: &'s [u8],
    /// Bytes of the datagram this packet used (the next coalesced packet starts there).
    pub consumed: usize,
}

/// Decrypts the client Initial packet at the start of `datagram`, using
/// `scratch` (which must hold the whole packet) for the plaintext.
pub fn decrypt_initial<'s>(datagram: &[u8], scratch: &'s mut [u8]) -> Result<InitialPacket<'s>, QuicError> {
    let mut r = Reader::new(datagram);
    let first = r.u8().ok_or(QuicError::Malformed)?;
    if first & 0x80 == 0 {
        return Err(QuicError::NotLongHeader);
    }
    let version = Version::from_wire(r.u32().ok_or(QuicError::Malformed)?).ok_or(QuicError::UnknownVersion)?;
    if (first >> 4) & 3 != version.initial_type() {
        return Err(QuicError::NotInitial);
    }
    let dcid = r.vec8().ok_or(QuicError::Malformed)?;
    if dcid.len() > 20 {
        return Err(QuicError::Malformed);
    }
    let scid = r.vec8().ok_or(QuicError::Malformed)?;
    if scid.len() > 20 {
        return Err(QuicError::Malformed);
    }
    let token_len = usize::try_from(r.varint().ok_or(QuicError::Malformed)?).map_err(|_| QuicError::Malformed)?;
    r.take(token_len).ok_or(QuicError::Malformed)?;
    let length = usize::try_from(r.varint().ok_or(QuicError::Malformed)?).map_err(|_| QuicError::Malformed)?;
    let pn_off = r.pos();
    let end = pn_off.checked_add(length).ok_or(QuicError::Malformed)?;
    let packet = datagram.get(..end).ok_or(QuicError::Malformed)?;
    let sample = packet.get(pn_off + 4..pn_off + 20).ok_or(QuicError::TooShort)?;
    let keys = client_initial_keys(version, dcid);
    let hpk = hp::HeaderProtectionKey::new(&hp::AES_128, &keys.hp).map_err(|_| QuicError::DecryptFailed)?;
    let mask = hpk.new_mask(sample).map_err(|_| QuicError::DecryptFailed)?;
    let first_plain = first ^ (mask[0] & 0x0f);
    let pn_len = usize::from(first_plain & 3) + 1;
    let hdr_len = pn_off + pn_len;
    if length < pn_len + 16 {
        return Err(QuicError::TooShort);
    }
    let buf = scratch.get_mut(..end).ok_or(QuicError::ScratchTooSmall)?;
    buf.copy_from_slice(packet);
    buf[0] = first_plain;
    let mut pn = 0u32;
    for i in 0..pn_len {
        let b = buf.get_mut(pn_off + i).ok_or(QuicError::Malformed)?;
        *b ^= mask[1 + i];
        pn = (pn << 8) | u32::from(*b);
    }
    let mut nonce = keys.iv;
    for (i, b) in pn.to_be_bytes().iter().enumerate() {
        nonce[8 + i] ^= b;
    }
    let (aad, body) = buf.split_at_mut(hdr_len);
    let key = LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &keys.key).map_err(|_| QuicError::DecryptFailed)?);
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&*aad), body)
        .map_err(|_| QuicError::DecryptFailed)?;
    let plain_len = plain.len();
    let payload = scratch.get(hdr_len..hdr_len + plain_len).ok_or(QuicError::Malformed)?;
    let mut d = [0u8; 20];
    d.get_mut(..dcid.len()).ok_or(QuicError::Malformed)?.copy_from_slice(dcid);
    Ok(InitialPacket { version, dcid: d, dcid_len: dcid.len(), packet_number: pn, payload, consumed: end })
}

/// Walks the frames of a decrypted Initial payload, calling `crypto(offset,
/// data)` for each CRYPTO frame. PADDING, PING, ACK and CONNECTION_CLOSE are
/// skipped; any other frame type is [`QuicError::BadFrame`] (not allowed in
/// Initial packets). Returns the number of CRYPTO frames.
pub fn walk_frames(
    payload: &[u8],
    mut crypto: impl FnMut(u64, &[u8]) -> Result<(), QuicError>,
) -> Result<usize, QuicError> {
    let mut r = Reader::new(payload);
    let mut n = 0;
    let bad = QuicError::BadFrame;
    while r.remaining() > 0 {
        match r.varint().ok_or(bad)? {
            0x00 | 0x01 => {}
            t @ (0x02 | 0x03) => {
                r.varint().ok_or(bad)?; // largest acknowledged
                r.varint().ok_or(bad)?; // delay
                let ranges = r.varint().ok_or(bad)?;
                r.varint().ok_or(bad)?; // first range
                for _ in 0..ranges {
                    r.varint().ok_or(bad)?;
                    r.varint().ok_or(bad)?;
                }
                if t == 0x03 {
                    for _ in 0..3 {
                        r.varint().ok_or(bad)?;
                    }
                }
            }
            0x06 => {
                let off = r.varint().ok_or(bad)?;
                let len = usize::try_from(r.varint().ok_or(bad)?).map_err(|_| bad)?;
                let data = r.take(len).ok_or(bad)?;
                crypto(off, data)?;
                n += 1;
            }
            t @ (0x1c | 0x1d) => {
                r.varint().ok_or(bad)?;
                if t == 0x1c {
                    r.varint().ok_or(bad)?;
                }
                let len = usize::try_from(r.varint().ok_or(bad)?).map_err(|_| bad)?;
                r.take(len).ok_or(bad)?;
            }
            _ => return Err(bad),
        }
    }
    Ok(n)
}

/// The state of an [`InitialCrypto`] apart from its buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitialCryptoState {
    asm: AsmState,
    packets: u32,
    version: Option<Version>,
}

/// Collects the client's Initial CRYPTO stream of one connection into a
/// caller buffer (its first `buf.len()` bytes), over any number of datagrams.
#[derive(Debug)]
pub struct InitialCrypto<'a> {
    asm: OffsetAssembler<'a>,
    packets: u32,
    version: Option<Version>,
}

impl<'a> InitialCrypto<'a> {
    /// An empty collector over `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        InitialCrypto { asm: OffsetAssembler::new(buf), packets: 0, version: None }
    }

    /// A collector over `buf` (the same buffer as before) in a saved state.
    pub fn resume(buf: &'a mut [u8], st: InitialCryptoState) -> Self {
        InitialCrypto { asm: OffsetAssembler::resume(buf, st.asm), packets: st.packets, version: st.version }
    }

    /// The state to [`resume`](Self::resume) from later.
    pub fn state(&self) -> InitialCryptoState {
        InitialCryptoState { asm: self.asm.state(), packets: self.packets, version: self.version }
    }

    /// True when the buffer holds its first N bytes.
    pub fn is_full(&self) -> bool {
        self.asm.is_full()
    }

    /// Decrypts every client Initial packet at the start of `datagram`
    /// (coalesced packets; stops at the first non-Initial) and stores their
    /// CRYPTO data. `scratch` must hold one packet. Returns how many Initial
    /// packets were read; an error from the first packet is returned, later
    /// ones end the walk.
    pub fn push_datagram(&mut self, datagram: &[u8], scratch: &mut [u8]) -> Result<usize, QuicError> {
        let mut rest = datagram;
        let mut n = 0usize;
        while !rest.is_empty() {
            let p = match decrypt_initial(rest, scratch) {
                Ok(p) => p,
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            };
            self.version.get_or_insert(p.version);
            let asm = &mut self.asm;
            walk_frames(p.payload, |off, data| match asm.insert(off, data) {
                Ok(_) | Err(ReassemblyError::Gap | ReassemblyError::Overflow | ReassemblyError::BeforeStart) => Ok(()),
                Err(ReassemblyError::TooManyHoles) => Err(QuicError::TooManyHoles),
            })?;
            n += 1;
            self.packets = self.packets.saturating_add(1);
            rest = rest.get(p.consumed..).unwrap_or(&[]);
        }
        Ok(n)
    }

    /// Initial packets decrypted so far.
    pub fn packets(&self) -> u32 {
        self.packets
    }

    /// The version of the first Initial packet read.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The contiguous CRYPTO bytes from offset 0.
    pub fn data(&self) -> &[u8] {
        self.asm.data()
    }

    /// The ClientHello, once its bytes are all present.
    pub fn client_hello(&self) -> Result<ClientHello<'_>, QuicError> {
        let (t, body, _) = match split_handshake(self.asm.data()) {
            Ok(x) => x,
            Err(_) if self.asm.is_full() => return Err(QuicError::BadClientHello),
            Err(_) => return Err(QuicError::Incomplete),
        };
        if t != CLIENT_HELLO {
            return Err(QuicError::NotClientHello);
        }
        ClientHello::parse(body).map_err(|e| match e {
            TlsError::Incomplete => QuicError::Incomplete,
            _ => QuicError::BadClientHello,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        let mut s = [0u8; 64];
        assert_eq!(decrypt_initial(&[0x40, 1, 2], &mut s).map(|_| ()), Err(QuicError::NotLongHeader));
        assert_eq!(decrypt_initial(&[0xc0, 0, 0, 0, 0], &mut s).map(|_| ()), Err(QuicError::UnknownVersion));
        assert_eq!(decrypt_initial(&[0xe0, 0, 0, 0, 1, 0, 0], &mut s).map(|_| ()), Err(QuicError::NotInitial));
        assert_eq!(decrypt_initial(&[0xc0, 0, 0, 0, 1, 8, 1], &mut s).map(|_| ()), Err(QuicError::Malformed));
        assert_eq!(walk_frames(&[0x08], |_, _| Ok(())), Err(QuicError::BadFrame));
        assert_eq!(
            walk_frames(&[0, 1, 2, 0, 0, 0, 0, 6, 0, 1, 9], |_, d| {
                assert_eq!(d, &[9]);
                Ok(())
            }),
            Ok(1)
        );
    }
}
