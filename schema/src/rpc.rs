//! The sensor → core gRPC service (see `wirefold.proto`): FlowBatch bytes in,
//! acks out, through a raw codec so batches are never re-encoded.
use bytes::{Buf, BufMut, Bytes};
use std::marker::PhantomData;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Generated client and server (tonic-build, manual service).
#[allow(missing_docs, clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod ingest {
    include!(concat!(env!("OUT_DIR"), "/wirefold.v1.Ingest.rs"));
}

/// A FlowBatch buffer, carried as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowBatchBytes(pub Bytes);

/// What an [`Ack`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AckKind {
    /// First message of a stream: where the sensor should resume.
    Resume = 0,
    /// Highest durably stored sequence number.
    Ack = 1,
    /// A batch was refused; the stream goes on.
    Rejected = 2,
}

/// A message from the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Kind.
    pub kind: AckKind,
    /// gRPC status code of a rejection (`tonic::Code` as i32), else 0.
    pub code: u8,
    /// Sequence number (see [`AckKind`]).
    pub seq: u64,
    /// Why a batch was rejected.
    pub reason: String,
}

impl Ack {
    /// A resume point.
    pub fn resume(seq: u64) -> Self {
        Ack { kind: AckKind::Resume, code: 0, seq, reason: String::new() }
    }
    /// An ack: `seq` and everything before it are durably stored.
    pub fn durable(seq: u64) -> Self {
        Ack { kind: AckKind::Ack, code: 0, seq, reason: String::new() }
    }
    /// A rejection.
    pub fn rejected(seq: u64, code: tonic::Code, reason: impl Into<String>) -> Self {
        Ack { kind: AckKind::Rejected, code: code as i32 as u8, seq, reason: reason.into() }
    }
}

/// Messages the raw codec can carry.
pub trait WireMessage: Sized + Send + 'static {
    /// Append the wire form.
    fn put(self, dst: &mut EncodeBuf<'_>);
    /// Parse one whole message.
    fn take(src: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

impl WireMessage for FlowBatchBytes {
    fn put(self, dst: &mut EncodeBuf<'_>) {
        dst.put_slice(&self.0);
    }
    fn take(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        let n = src.remaining();
        Ok(FlowBatchBytes(src.copy_to_bytes(n)))
    }
}

impl WireMessage for Ack {
    fn put(self, dst: &mut EncodeBuf<'_>) {
        dst.put_u8(self.kind as u8);
        dst.put_u8(self.code);
        dst.put_slice(&[0u8; 6]);
        dst.put_u64_le(self.seq);
        dst.put_slice(self.reason.as_bytes());
    }
    fn take(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        if src.remaining() < 16 {
            return Err(Status::internal(format!("ack of {} bytes is shorter than 16", src.remaining())));
        }
        let kind = match src.get_u8() {
            0 => AckKind::Resume,
            1 => AckKind::Ack,
            2 => AckKind::Rejected,
            k => return Err(Status::internal(format!("unknown ack kind {k}"))),
        };
        let code = src.get_u8();
        src.advance(6);
        let seq = src.get_u64_le();
        let rest = src.copy_to_bytes(src.remaining());
        Ok(Ack { kind, code, seq, reason: String::from_utf8_lossy(&rest).into_owned() })
    }
}

/// The raw codec: encodes `E`, decodes `D`.
#[derive(Debug)]
pub struct WireCodec<E, D>(PhantomData<(E, D)>);

impl<E, D> Default for WireCodec<E, D> {
    fn default() -> Self {
        WireCodec(PhantomData)
    }
}

/// Encoder half.
#[derive(Debug)]
pub struct WireEncoder<E>(PhantomData<E>);
/// Decoder half.
#[derive(Debug)]
pub struct WireDecoder<D>(PhantomData<D>);

impl<E: WireMessage> Encoder for WireEncoder<E> {
    type Item = E;
    type Error = Status;
    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.put(dst);
        Ok(())
    }
}

impl<D: WireMessage> Decoder for WireDecoder<D> {
    type Item = D;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::take(src).map(Some)
    }
}

impl<E: WireMessage, D: WireMessage> Codec for WireCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = WireEncoder<E>;
    type Decoder = WireDecoder<D>;
    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}
