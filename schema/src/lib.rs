//! Wirefold's wire format: `FlowBatch` FlatBuffers (see `flow.fbs`), built
//! and read through plain Rust records, always verified before use.
//!
//! The generated code in `flow_generated.rs` comes from `flatc` 25.12.19
//! (`flatc --rust -o src/ flow.fbs`); a test regenerates it and compares.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations,
    unused_imports,
    dead_code,
    non_camel_case_types,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    unsafe_code
)]
#[rustfmt::skip]
mod flow_generated;

pub mod rpc;

/// The generated FlatBuffers types.
pub mod fb {
    pub use super::flow_generated::wirefold::schema::*;
}

use flatbuffers::{FlatBufferBuilder, VerifierOptions};
use half::f16;

/// Version this crate writes: a FlowBatch inside a checksummed envelope
/// (see [`ENVELOPE_MAGIC`]). Version 1 (a bare FlowBatch, no checksum) is
/// still read.
pub const SCHEMA_VERSION: u16 = 3;
/// Versions this crate reads (3 adds the optional `info` vector to version 2).
pub const SCHEMA_VERSIONS_READ: [u16; 3] = [1, 2, 3];
/// First four bytes of a version-2 batch. The envelope is 16 bytes: this
/// magic, the FlowBatch's length (u32 LE), its CRC-32C (u32 LE), four zero
/// bytes; then the FlowBatch (8-byte aligned within the envelope).
pub const ENVELOPE_MAGIC: [u8; 4] = *b"WFC2";
/// Bytes of the version-2 envelope before the FlowBatch.
pub const ENVELOPE_LEN: usize = 16;
/// Embedding width.
pub const EMBEDDING_DIM: usize = 32;
/// Largest FlowBatch buffer accepted (bytes).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Tunnel kinds as carried in `flags` bits 3-5.
pub mod tunnel {
    /// Not tunnelled.
    pub const NONE: u8 = 0;
    /// GRE.
    pub const GRE: u8 = 1;
    /// VXLAN.
    pub const VXLAN: u8 = 2;
    /// IP in IP.
    pub const IPIP: u8 = 3;
    /// GTP-U.
    pub const GTPU: u8 = 4;
    /// Geneve.
    pub const GENEVE: u8 = 5;
}

/// One flow as the schema carries it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FlowRec {
    /// 4 or 6.
    pub ip_version: u8,
    /// Initiator address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// Responder address.
    pub dst: [u8; 16],
    /// Initiator port.
    pub src_port: u16,
    /// Responder port.
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Outermost VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// Further VLAN tags not carried (0..=3).
    pub more_vlans: u8,
    /// Tunnel kind (see [`tunnel`]).
    pub tunnel: u8,
    /// First packet time (Unix ns).
    pub first_ns: u64,
    /// Last packet time (Unix ns).
    pub last_ns: u64,
    /// Packets forward.
    pub fwd_packets: u32,
    /// Packets reverse.
    pub rev_packets: u32,
    /// IP bytes forward.
    pub fwd_bytes: u64,
    /// IP bytes reverse.
    pub rev_bytes: u64,
    /// TCP flags either way.
    pub tcp_flags: u8,
    /// End reason (0 idle, 1 active, 2 fin, 3 rst, 4 evicted, 5 eof, 6 shutdown).
    pub end_reason: u8,
    /// Score (stored as half precision).
    pub score: f32,
    /// int8 embedding.
    pub embedding: [i8; EMBEDDING_DIM],
}

/// What inspection learned of one flow, carried beside the fixed-size flows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowInfoRec {
    /// Position of the flow in the `flows` slice given to the builder (in
    /// [`read_batch`]'s order when read back).
    pub index: u32,
    /// App label (see [`APPS`]).
    pub app: u8,
    /// TLS/QUIC server name ("" when none).
    pub server_name: String,
    /// JA4 ("" when none).
    pub ja4: String,
    /// DNS query name ("" when none).
    pub dns_qname: String,
    /// HTTP Host ("" when none).
    pub http_host: String,
}

/// App labels by wire value.
pub const APPS: [&str; 6] = ["unknown", "tls", "quic", "dns", "http", "ssh"];

/// Longest string an info field may carry (bytes).
pub const MAX_INFO_STR: usize = 255;

impl FlowInfoRec {
    /// Whether it says anything (else it is not sent).
    pub fn is_empty(&self) -> bool {
        self.app == 0
            && self.server_name.is_empty()
            && self.ja4.is_empty()
            && self.dns_qname.is_empty()
            && self.http_host.is_empty()
    }
}

/// Batch-level fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchMeta {
    /// Sending sensor.
    pub sensor_id: String,
    /// Per-sensor sequence number.
    pub seq: u64,
    /// Schema version (written as [`SCHEMA_VERSION`]).
    pub schema_version: u16,
    /// Model identifier ("" without a model).
    pub model_id: String,
    /// int8 scale.
    pub scale: f32,
    /// Seal time (Unix ns).
    pub created_ns: u64,
}

/// Why a buffer was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// The FlatBuffers verifier rejected it.
    #[error("FlowBatch failed verification: {0}")]
    Invalid(String),
    /// It was written with another schema version.
    #[error("FlowBatch schema version {got} is not supported here (this build reads versions 1 to {want})")]
    Version {
        /// Version in the batch.
        got: u16,
        /// Version this build reads.
        want: u16,
    },
    /// Too large.
    #[error("FlowBatch of {0} bytes exceeds the limit of {MAX_BATCH_BYTES} bytes")]
    TooLarge(usize),
    /// The envelope or its checksum does not match: bytes changed on the way.
    #[error("corrupt FlowBatch: {0}")]
    Corrupt(String),
    /// Times do not fit the batch's base time.
    #[error("FlowBatch flow {0}: time overflows the batch base")]
    Time(usize),
}

fn split(v: u64) -> (u32, u32) {
    (v as u32, (v >> 32) as u32)
}

fn join(lo: u32, hi: u32) -> u64 {
    lo as u64 | (hi as u64) << 32
}

fn common(r: &FlowRec, base: u64) -> fb::FlowCommon {
    let (first_lo, first_hi) = split(r.first_ns - base);
    let (last_lo, last_hi) = split(r.last_ns.max(r.first_ns) - base);
    let (fb_lo, fb_hi) = split(r.fwd_bytes);
    let (rb_lo, rb_hi) = split(r.rev_bytes);
    let flags = r.vlan.is_some() as u8 | (r.more_vlans.min(3) << 1) | ((r.tunnel & 7) << 3);
    fb::FlowCommon::new(
        first_lo,
        first_hi,
        last_lo,
        last_hi,
        fb_lo,
        fb_hi,
        rb_lo,
        rb_hi,
        r.fwd_packets,
        r.rev_packets,
        r.src_port,
        r.dst_port,
        r.vlan.unwrap_or(0),
        f16::from_f32(r.score).to_bits(),
        r.proto,
        r.tcp_flags,
        r.end_reason,
        flags,
        &r.embedding,
    )
}

/// Builds FlowBatch buffers, reusing its memory from batch to batch.
pub struct BatchBuilder {
    fbb: FlatBufferBuilder<'static>,
    out: Vec<u8>,
    v4: Vec<fb::Flow4>,
    v6: Vec<fb::Flow6>,
    pos: Vec<u32>,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder").finish_non_exhaustive()
    }
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(1 << 16),
            out: Vec::new(),
            v4: Vec::new(),
            v6: Vec::new(),
            pos: Vec::new(),
        }
    }

    /// Build one batch (version 2: the checksummed envelope around the
    /// FlowBatch); the returned bytes live until the next call.
    pub fn build(&mut self, meta: &BatchMeta, flows: &[FlowRec]) -> &[u8] {
        self.build_with_info(meta, flows, &[])
    }

    /// Build one batch with inspection facts for some of its flows (each
    /// `info.index` a position in `flows`; empty records are left out).
    pub fn build_with_info(&mut self, meta: &BatchMeta, flows: &[FlowRec], info: &[FlowInfoRec]) -> &[u8] {
        self.build_flatbuffer(meta, flows, info, SCHEMA_VERSION);
        let fb = self.fbb.finished_data();
        self.out.clear();
        self.out.extend_from_slice(&ENVELOPE_MAGIC);
        self.out.extend_from_slice(&(fb.len() as u32).to_le_bytes());
        self.out.extend_from_slice(&crc32c::crc32c(fb).to_le_bytes());
        self.out.extend_from_slice(&[0u8; 4]);
        self.out.extend_from_slice(fb);
        &self.out
    }

    /// Build one batch as version 1 wrote it (a bare FlowBatch, no
    /// checksum): what older sensors send, for tests of the reader.
    pub fn build_v1(&mut self, meta: &BatchMeta, flows: &[FlowRec]) -> &[u8] {
        self.build_flatbuffer(meta, flows, &[], 1);
        self.fbb.finished_data()
    }

    fn build_flatbuffer(&mut self, meta: &BatchMeta, flows: &[FlowRec], info: &[FlowInfoRec], version: u16) {
        let base = flows.iter().map(|f| f.first_ns).min().unwrap_or(0);
        self.fbb.reset();
        self.v4.clear();
        self.v6.clear();
        // Where each input flow lands: flows4 first, then flows6.
        let n4 = flows.iter().filter(|r| r.ip_version == 4).count() as u32;
        self.pos.clear();
        let (mut i4, mut i6) = (0u32, 0u32);
        for r in flows {
            if r.ip_version == 4 {
                self.pos.push(i4);
                i4 += 1;
            } else {
                self.pos.push(n4 + i6);
                i6 += 1;
            }
        }
        let mut infos = Vec::new();
        let mut sorted: Vec<&FlowInfoRec> =
            info.iter().filter(|x| !x.is_empty() && (x.index as usize) < flows.len()).collect();
        sorted.sort_by_key(|x| self.pos[x.index as usize]);
        for x in sorted {
            let mut s = |v: &str| {
                (!v.is_empty()).then(|| {
                    let mut end = v.len().min(MAX_INFO_STR);
                    while !v.is_char_boundary(end) {
                        end -= 1;
                    }
                    self.fbb.create_string(&v[..end])
                })
            };
            let (server_name, ja4, dns_qname, http_host) =
                (s(&x.server_name), s(&x.ja4), s(&x.dns_qname), s(&x.http_host));
            infos.push(fb::FlowInfo::create(
                &mut self.fbb,
                &fb::FlowInfoArgs {
                    index: self.pos[x.index as usize],
                    app: x.app,
                    server_name,
                    ja4,
                    dns_qname,
                    http_host,
                },
            ));
        }
        let info = (!infos.is_empty()).then(|| self.fbb.create_vector(&infos));
        for r in flows {
            let c = common(r, base);
            if r.ip_version == 4 {
                let mut s = [0u8; 4];
                let mut d = [0u8; 4];
                s.copy_from_slice(&r.src[..4]);
                d.copy_from_slice(&r.dst[..4]);
                self.v4.push(fb::Flow4::new(&s, &d, &c));
            } else {
                self.v6.push(fb::Flow6::new(&r.src, &r.dst, &c));
            }
        }
        let sensor_id = self.fbb.create_string(&meta.sensor_id);
        let model_id = self.fbb.create_string(&meta.model_id);
        let flows4 = self.fbb.create_vector(&self.v4);
        let flows6 = self.fbb.create_vector(&self.v6);
        let b = fb::FlowBatch::create(
            &mut self.fbb,
            &fb::FlowBatchArgs {
                sensor_id: Some(sensor_id),
                seq: meta.seq,
                schema_version: version,
                model_id: Some(model_id),
                scale: meta.scale,
                created_ns: meta.created_ns,
                base_ns: base,
                flows4: Some(flows4),
                flows6: Some(flows6),
                info,
            },
        );
        fb::finish_flow_batch_buffer(&mut self.fbb, b);
    }
}

fn verifier_opts() -> VerifierOptions {
    VerifierOptions { max_tables: 1 << 20, max_apparent_size: MAX_BATCH_BYTES * 2, ..Default::default() }
}

/// Check a version-2 envelope (magic, length, CRC-32C) and return the
/// FlowBatch inside; a buffer without the envelope is returned as it is
/// (a version-1 batch, checked by [`verify`]). This runs before anything
/// else looks at the bytes.
pub fn open_envelope(buf: &[u8]) -> Result<(&[u8], bool), SchemaError> {
    if buf.len() > MAX_BATCH_BYTES {
        return Err(SchemaError::TooLarge(buf.len()));
    }
    if buf.len() >= 8 && buf[4..8] == *fb::FLOW_BATCH_IDENTIFIER.as_bytes() && buf[..4] != ENVELOPE_MAGIC {
        return Ok((buf, false));
    }
    if buf.len() < ENVELOPE_LEN || buf[..4] != ENVELOPE_MAGIC {
        return Err(SchemaError::Corrupt(format!(
            "{} bytes that start with neither the version-2 envelope (WFC2) nor a version-1 FlowBatch (WFB1 at offset 4)",
            buf.len()
        )));
    }
    let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let (len, crc, reserved) = (word(4) as usize, word(8), word(12));
    let body = &buf[ENVELOPE_LEN..];
    if len != body.len() {
        return Err(SchemaError::Corrupt(format!("envelope says {len} bytes follow, {} do", body.len())));
    }
    if reserved != 0 {
        return Err(SchemaError::Corrupt(format!("reserved envelope bytes are {reserved:#x}, not zero")));
    }
    let got = crc32c::crc32c(body);
    if got != crc {
        return Err(SchemaError::Corrupt(format!("CRC-32C is {got:#010x}, the envelope says {crc:#010x}")));
    }
    Ok((body, true))
}

/// Verify a buffer (the checksum first, then the FlatBuffers verifier) and
/// return its root, checking size, identifier and schema version. Nothing
/// is trusted before this succeeds.
pub fn verify(buf: &[u8]) -> Result<fb::FlowBatch<'_>, SchemaError> {
    let (buf, enveloped) = open_envelope(buf)?;
    // The generated identifier check asserts on short input: test the length first.
    if buf.len() < 8 {
        return Err(SchemaError::Invalid(format!(
            "buffer of {} bytes is shorter than a FlowBatch header (8 bytes)",
            buf.len()
        )));
    }
    if !fb::flow_batch_buffer_has_identifier(buf) {
        return Err(SchemaError::Invalid("missing the WFB1 file identifier".into()));
    }
    let b = flatbuffers::root_with_opts::<fb::FlowBatch>(&verifier_opts(), buf)
        .map_err(|e| SchemaError::Invalid(e.to_string()))?;
    // Versions 2 and 3 share the envelope (3 adds the optional info vector).
    let fits = if enveloped { matches!(b.schema_version(), 2 | 3) } else { b.schema_version() == 1 };
    if !fits {
        if !SCHEMA_VERSIONS_READ.contains(&b.schema_version()) {
            return Err(SchemaError::Version { got: b.schema_version(), want: SCHEMA_VERSION });
        }
        return Err(SchemaError::Corrupt(format!(
            "schema version {} inside {}",
            b.schema_version(),
            if enveloped { "a checksummed (version 2/3) envelope" } else { "a bare (version-1) FlowBatch" }
        )));
    }
    let scale = b.scale();
    if !(scale.is_finite() && scale >= 0.0) {
        return Err(SchemaError::Invalid(format!("scale {scale} is not a finite, non-negative number")));
    }
    Ok(b)
}

/// An address from a fixed-size FlatBuffers array, in 16 bytes (IPv4 in the first four).
fn addr<const N: usize>(a: flatbuffers::Array<'_, u8, N>) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (d, v) in out.iter_mut().zip(a.iter()) {
        *d = v;
    }
    out
}

fn rec(
    s: [u8; 16],
    d: [u8; 16],
    ip_version: u8,
    c: &fb::FlowCommon,
    base: u64,
    i: usize,
) -> Result<FlowRec, SchemaError> {
    let first = base.checked_add(join(c.first_lo(), c.first_hi())).ok_or(SchemaError::Time(i))?;
    let last = base.checked_add(join(c.last_lo(), c.last_hi())).ok_or(SchemaError::Time(i))?;
    let mut embedding = [0i8; EMBEDDING_DIM];
    for (k, v) in c.embedding().iter().enumerate() {
        embedding[k] = v;
    }
    let flags = c.flags();
    Ok(FlowRec {
        ip_version,
        src: s,
        dst: d,
        src_port: c.src_port(),
        dst_port: c.dst_port(),
        proto: c.proto(),
        vlan: (flags & 1 != 0).then_some(c.vlan()),
        more_vlans: (flags >> 1) & 3,
        tunnel: (flags >> 3) & 7,
        first_ns: first,
        last_ns: last,
        fwd_packets: c.fwd_packets(),
        rev_packets: c.rev_packets(),
        fwd_bytes: join(c.fwd_bytes_lo(), c.fwd_bytes_hi()),
        rev_bytes: join(c.rev_bytes_lo(), c.rev_bytes_hi()),
        tcp_flags: c.tcp_flags(),
        end_reason: c.end_reason(),
        score: f16::from_bits(c.score_f16()).to_f32(),
        embedding,
    })
}

/// Verify and decode a whole batch (IPv4 flows first, then IPv6).
pub fn read_batch(buf: &[u8]) -> Result<(BatchMeta, Vec<FlowRec>), SchemaError> {
    let b = verify(buf)?;
    let base = b.base_ns();
    let mut flows = Vec::with_capacity(b.flows4().map_or(0, |v| v.len()) + b.flows6().map_or(0, |v| v.len()));
    for (i, f) in b.flows4().iter().flatten().enumerate() {
        flows.push(rec(addr(f.src()), addr(f.dst()), 4, f.common(), base, i)?);
    }
    for (i, f) in b.flows6().iter().flatten().enumerate() {
        flows.push(rec(addr(f.src()), addr(f.dst()), 6, f.common(), base, i)?);
    }
    let meta = BatchMeta {
        sensor_id: b.sensor_id().to_string(),
        seq: b.seq(),
        schema_version: b.schema_version(),
        model_id: b.model_id().unwrap_or("").to_string(),
        scale: b.scale(),
        created_ns: b.created_ns(),
    };
    Ok((meta, flows))
}

/// The inspection facts of a batch ([`FlowInfoRec::index`] in
/// [`read_batch`]'s order); empty for versions 1 and 2. An index past the
/// flows or an app label past [`APPS`] is an error.
pub fn read_info(buf: &[u8]) -> Result<Vec<FlowInfoRec>, SchemaError> {
    let b = verify(buf)?;
    let n = b.flows4().map_or(0, |v| v.len()) + b.flows6().map_or(0, |v| v.len());
    let mut out = Vec::new();
    for x in b.info().iter().flatten() {
        if x.index() as usize >= n {
            return Err(SchemaError::Invalid(format!("info names flow {} of a batch of {n}", x.index())));
        }
        if x.app() as usize >= APPS.len() {
            return Err(SchemaError::Invalid(format!("flow {}: app label {} is not one of 0..=5", x.index(), x.app())));
        }
        let s = |v: Option<&str>| -> Result<String, SchemaError> {
            let v = v.unwrap_or("");
            if v.len() > MAX_INFO_STR {
                return Err(SchemaError::Invalid(format!(
                    "flow {}: a {}-byte info string (at most {MAX_INFO_STR})",
                    x.index(),
                    v.len()
                )));
            }
            Ok(v.to_string())
        };
        out.push(FlowInfoRec {
            index: x.index(),
            app: x.app(),
            server_name: s(x.server_name())?,
            ja4: s(x.ja4())?,
            dns_qname: s(x.dns_qname())?,
            http_host: s(x.http_host())?,
        });
    }
    Ok(out)
}

/// Write one buffer with its u32 little-endian length prefix.
pub fn write_framed(w: &mut impl std::io::Write, buf: &[u8]) -> std::io::Result<()> {
    w.write_all(&(buf.len() as u32).to_le_bytes())?;
    w.write_all(buf)
}

/// Read the next length-prefixed buffer; `None` at a clean end of input.
pub fn read_framed(r: &mut impl std::io::Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_BATCH_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {n} bytes exceeds {MAX_BATCH_BYTES}"),
        ));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests;
