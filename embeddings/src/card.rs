//! The model card: what a model expects and how to read its output.
use serde::{Deserialize, Serialize};

/// A training file and its digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainingFile {
    /// File name.
    pub file: String,
    /// sha256 of the file.
    pub sha256: String,
}

/// Written by `embeddings/train/train.py` next to the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelCard {
    /// Model identifier, carried in every FlowBatch.
    pub model_id: String,
    /// Feature names, in input order.
    pub features: Vec<String>,
    /// Per-feature mean used for standardisation.
    pub mean: Vec<f32>,
    /// Per-feature standard deviation used for standardisation.
    pub std: Vec<f32>,
    /// Embedding width.
    pub embedding_dim: usize,
    /// int8 value × scale = model output.
    pub int8_scale: f32,
    /// Training seed.
    pub seed: u64,
    /// Files the training features came from.
    pub training_files: Vec<TrainingFile>,
    /// Mean squared reconstruction error on the held-out split (autoencoder models).
    #[serde(default)]
    pub heldout_mse: f64,
    /// Mean squared reconstruction error on the training split (autoencoder models).
    #[serde(default)]
    pub train_mse: f64,
    /// The score's default decision threshold (supervised models; the
    /// core's score gate and the summary use it).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Training rows by source and label.
    #[serde(default)]
    pub training_data: serde_json::Value,
    /// Held-out evaluation figures.
    #[serde(default)]
    pub evaluation: serde_json::Value,
    /// Reference distribution of the embedding and score, for drift monitors.
    #[serde(default)]
    pub reference_distribution: serde_json::Value,
    /// Rows in the training and held-out splits.
    pub rows: [usize; 2],
    /// Library versions used in training.
    pub versions: std::collections::BTreeMap<String, String>,
}
