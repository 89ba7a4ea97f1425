//! Wirefold sensor: capture → ring → flow → embed → export.
//!
//! * [`wire`] — zero-copy header views and the packet decoder.
//! * [`cli`] — command-line helpers.
//! * [`capture`] — the packet-source trait and its front ends.
//! * [`live`] — live capture threads (AF_PACKET), rings and shutdown.
//! * [`ring`] — the capture → flow-worker ring.
//! * [`embed`] — flows as model input and as wire records.
//! * [`flow`] — the bidirectional flow table.
//! * [`record`] — flow records as exported (JSON Lines).
//! * [`output`] — the JSON Lines writer thread.
//! * [`ipfix`] — IPFIX (RFC 7011) export of flows as RFC 5103 biflows.
//! * [`pipeline`] — sources → decoder → flow table → sink, and its summary.
//! * [`run`] — run wiring of `replay` and `capture` (outputs, model, signals, progress, end of run).
//! * [`config`] — TOML configuration files and `check-config`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod capture;
pub mod cli;
pub mod config;
pub mod embed;
pub mod flow;
pub mod ipfix;
pub mod live;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod record;
pub mod ring;
pub mod run;
pub mod rx;
pub mod stream;
pub mod stream_proto;
pub mod wire;
