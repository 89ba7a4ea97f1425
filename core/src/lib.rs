//! The Wirefold core: gRPC ingest of FlowBatches from sensors.
//!
//! ```text
//! stream ─► authenticate ─► checksum + verify ─► validate ─► rate law ─► bounded queue ─► store
//!  (one per sensor)  bearer token   CRC-32C, FlatBuffers  semantic rules  token bucket    backpressure   one SQLite transaction per batch:
//!                                                                       (per sensor)                   flows, digest, last seq
//! ```
//! A batch, its digest and its sequence number commit together, so a
//! resent batch changes nothing and a resend with other content is refused:
//! every flow is stored exactly once across crashes and reconnects. A full
//! queue withholds acks (the sensor's window fills and it backs off); a
//! failing store is retried and then answered `UNAVAILABLE` (the sensor
//! keeps the batch); memory stays bounded and nothing is dropped.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod agent;
pub mod gates;
pub mod ledger;
pub mod listen;
pub mod promote;
pub mod rate;
pub mod runner;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod validate;

pub use admin::{admin_request, AdminCommand, AdminError, AdminListen};
pub use gates::{GateEngine, GatesConfig};
pub use ledger::{export as export_ledger, verify as verify_ledger, LedgerHead, VerifyReport};
pub use service::{serve, CoreConfig, CoreCounters, CoreHandle, SensorCounts, ServeError};
pub use store::Store;
pub use tokens::{Tokens, TokensError};
