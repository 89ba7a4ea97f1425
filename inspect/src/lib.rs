//! First-packet inspection for Wirefold: pure, allocation-light, panic-free
//! parsers for the first bytes of a flow.
//!
//! Nothing here does I/O or reads a clock. Every parser takes byte slices and
//! returns a `Result`; every failure is a small `Copy` enum of named reasons
//! with `name()` (a `snake_case` metric label) and an `ALL` list. Parsers
//! borrow from their input; where bytes must be joined (TCP segments, TLS
//! records, QUIC CRYPTO frames) they are copied into buffers the caller
//! provides, so the parse path never allocates. All reads are bounds-checked
//! (`get`, checked arithmetic): no input can make them panic (see the
//! `inspect_*` targets in `fuzz/`).
//!
//! # Modules
//!
//! - [`community_id`]: Community ID v1 (corelight/community-id-spec) of a flow
//!   tuple: `"1:"` + base64(SHA-1(seed, ordered addresses, protocol, ports)),
//!   with ICMP/ICMPv6 type/code mapped to ports and the spec's one-way rule.
//!   Returned as a 30-byte inline string.
//! - [`tls`]: the TCP reassembler ([`tls::TcpReassembler`]: the first N bytes
//!   of one direction into a caller buffer, out-of-order segments placed by
//!   sequence number, at most [`tls::MAX_HOLES`] holes, gaps and overflow
//!   reported by name), the record-layer walker ([`tls::next_handshake`]:
//!   joins a handshake message split over records into a caller scratch
//!   buffer), the ClientHello (server name, ALPN list, supported_versions,
//!   **JA4** and **JA4_r** per FoxIO's BSD-3-Clause spec, **JA3** string and
//!   MD5; GREASE excluded) and the ServerHello (selected version, cipher,
//!   **JA3S** string and MD5). Only JA4 (the TLS client fingerprint) of the
//!   JA4+ family is implemented. Hand-written: see the module docs for why
//!   not `tls-parser`.
//! - [`quic`]: QUIC v1 and v2 client Initial packets: keys from the DCID
//!   (HKDF-SHA256 via `ring`), header protection (`ring::aead::quic`),
//!   AES-128-GCM, the frame walk (PADDING, PING, ACK, CRYPTO,
//!   CONNECTION_CLOSE), CRYPTO reassembly by offset over several packets and
//!   datagrams (coalesced packets up to the first non-Initial), then the
//!   same ClientHello parser (JA4 with the `q` prefix).
//! - [`dns`]: the DNS header and first question (UDP, or TCP with its length
//!   prefix); names decoded with loop-safe compression into a bounded string.
//! - [`http`]: HTTP/1.x request heads (method, URI, Host, User-Agent) and
//!   status lines, case-insensitive header names, `Incomplete` when cut.
//! - [`ssh`]: the SSH identification line.
//! - [`sketch`]: an incremental payload sketch of the first 256 bytes:
//!   entropy, printable fraction, 16-bucket FNV-1a bigram histogram.
//! - [`app`]: one `app` label (`quic`, `tls`, `dns`, `http`, `ssh`, `unknown`)
//!   from what the dissectors recognized.
//! - [`util`]: [`util::BoundedStr`], the inline string type of the results.
//!
//! # Where values come from
//!
//! | value | source bytes |
//! |---|---|
//! | Community ID | the flow tuple the caller passes (first packet's direction) |
//! | SNI, ALPN, versions, JA4, JA3 | the first ClientHello of the client→server bytes (TCP: reassembled stream; QUIC: decrypted Initial CRYPTO data) |
//! | selected version, cipher, JA3S | the first ServerHello of the server→client bytes |
//! | DNS fields | one DNS message (the first of a TCP stream) |
//! | HTTP fields | the first head of each direction |
//! | SSH banner | the first `SSH-` line of a direction |
//! | sketch | the first 256 payload bytes of a direction |
//!
//! # Limits
//!
//! | what | bound |
//! |---|---|
//! | TCP reassembly | the caller's buffer (suggested [`tls::DEFAULT_STREAM_BYTES`] = 8192); at most [`tls::MAX_HOLES`] holes |
//! | joined handshake message | the caller's scratch buffer (8192 suggested) |
//! | cipher suites / extensions sorted for JA4 | [`tls::MAX_LIST`] (512) each, else `TooManyValues` |
//! | JA4_r, JA3, JA3S strings | [`tls::JA4_R_CAP`], [`tls::JA3_CAP`] (4096 bytes), else `TooLong` |
//! | QUIC packet | the caller's scratch ([`quic::DEFAULT_SCRATCH_BYTES`] = 2048) |
//! | QUIC CRYPTO data | the caller's buffer ([`quic::DEFAULT_CRYPTO_BYTES`] = 4096) |
//! | DNS name | [`dns::MAX_NAME`] = 255 bytes, [`dns::MAX_POINTERS`] = 16 pointers |
//! | HTTP head | [`http::MAX_HEAD`] = 8192 bytes, [`http::MAX_HEADERS`] = 100 lines |
//! | SSH line | [`ssh::MAX_BANNER`] = 255 bytes after at most [`ssh::MAX_PRELUDE`] = 1024 bytes of other lines |
//! | sketch | [`sketch::SKETCH_BYTES`] = 256 bytes |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod community_id;
pub mod dns;
pub mod http;
pub mod quic;
mod reassembly;
pub mod session;
pub mod sketch;
pub mod ssh;
pub mod tls;
pub mod util;
