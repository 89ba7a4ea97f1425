//! The Wirefold core: gRPC ingest of FlowBatches from sensors.
//!
//! ```text
//! stream ─► authenticate ─► verify ─► rate law ─► bounded queue ─► store (one SQLite transaction per batch)
//!  (per sensor)  bearer token   FlatBuffers   token bucket   backpressure      flows + the sensor's last seq
//! ```
//! A batch and its sequence number commit together, so a resent batch
//! changes nothing: every flow is stored exactly once across crashes and
//! reconnects. A full queue withholds acks (the sensor's window fills and it
//! backs off); memory stays bounded and nothing is dropped.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod service;
pub mod store;
pub mod telemetry;
pub mod tokens;

pub use service::{serve, CoreConfig, CoreCounters, CoreHandle, SensorCounts};
pub use store::Store;
pub use tokens::Tokens;
