//! Wirefold flow embeddings.
//!
//! * [`features`] — the documented flow feature vector.
//! * [`card`] — the model card (feature names, standardisation, int8 scale).
//! * [`embedder`] — runs the ONNX model with `ort` on batches of flows and
//!   quantizes the 32-wide output to int8.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod card;
pub mod embedder;
pub mod features;

pub use card::ModelCard;
pub use embedder::{quantize, quantize_inv, EmbedError, Embedder, EMBEDDING_DIM};
pub use features::{extract, extract_with, FlowContext, FlowSummary, F, FEATURES};

/// The bundled model, compiled into the binary.
pub const BUNDLED_MODEL: &[u8] = include_bytes!("../model/wirefold-det-v2.onnx");
/// The bundled model's card.
pub const BUNDLED_CARD: &str = include_str!("../model/wirefold-det-v2.card.json");
