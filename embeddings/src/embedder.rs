//! Runs the flow model with ONNX Runtime (through `ort`, loaded dynamically
//! from `ORT_DYLIB_PATH`) on batches of feature rows, and quantizes the
//! embedding to int8.
use crate::card::ModelCard;
use crate::features::{F, FEATURES};
use ort::session::Session;
use ort::value::TensorRef;
use std::sync::OnceLock;

/// Embedding width.
pub const EMBEDDING_DIM: usize = 32;
/// Standardised features are clamped to this magnitude before inference.
pub const CLAMP: f32 = 10.0;

/// Why the embedder could not start or run. Start-up errors say how to fix them.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The ONNX Runtime library is missing or unloadable.
    #[error("{0}")]
    Runtime(String),
    /// The model or its card does not fit this build.
    #[error("{0}")]
    Model(String),
    /// Inference failed.
    #[error("inference failed: {0}")]
    Run(String),
}

static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

const FIX: &str = "install it with ./deploy/run.sh (it puts onnxruntime 1.31.1 from PyPI into .local/venv and sets ORT_DYLIB_PATH), point ORT_DYLIB_PATH at libonnxruntime.so, or run with --no-embed";

fn runtime() -> Result<&'static ort::environment::Environment, EmbedError> {
    let r = ENV.get_or_init(|| {
        let path = std::env::var_os("ORT_DYLIB_PATH")
            .ok_or_else(|| format!("ONNX Runtime library not found: ORT_DYLIB_PATH is not set; {FIX}"))?;
        let p = std::path::PathBuf::from(&path);
        if !p.is_file() {
            return Err(format!("ONNX Runtime library not found at ORT_DYLIB_PATH={}; {FIX}", p.display()));
        }
        let b = ort::init_from(&p).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}; {FIX}", p.display()))?;
        b.with_name("wirefold").build().map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    });
    r.as_ref().map_err(|e| EmbedError::Runtime(e.clone()))
}

/// Symmetric int8 quantization: `x / scale` rounded half away from zero,
/// clamped to ±127 (NaN gives 0).
#[inline]
pub fn quantize(x: f32, scale: f32) -> i8 {
    quantize_inv(x, 1.0 / scale)
}

/// [`quantize`] with the reciprocal of the scale precomputed. Rounds with a
/// truncating conversion instead of a libm `roundf` call: this runs 32 times
/// per flow.
#[inline]
pub fn quantize_inv(x: f32, inv_scale: f32) -> i8 {
    let r = (x * inv_scale).clamp(-127.0, 127.0);
    // `as` saturates and maps NaN to 0.
    (if r >= 0.0 { r + 0.5 } else { r - 0.5 }) as i8
}

/// A loaded model with its card.
pub struct Embedder {
    session: Session,
    card: ModelCard,
    input: Vec<f32>,
    emb: Vec<f32>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("model_id", &self.card.model_id).finish()
    }
}

impl Embedder {
    /// Load `model` (ONNX bytes) described by `card`, checking that it fits
    /// the feature vector this build computes.
    pub fn load(model: &[u8], card: ModelCard) -> Result<Self, EmbedError> {
        let ours: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        if card.features != ours || card.mean.len() != F || card.std.len() != F {
            return Err(EmbedError::Model(format!(
                "model '{}' expects {} features ({}), but this build computes {F} ({}); retrain with embeddings/train/train.py or use the bundled model",
                card.model_id,
                card.features.len(),
                card.features.join(","),
                ours.join(",")
            )));
        }
        if card.embedding_dim != EMBEDDING_DIM || !(card.int8_scale > 0.0 && card.int8_scale.is_finite()) {
            return Err(EmbedError::Model(format!(
                "model '{}' card: embedding_dim {} (need {EMBEDDING_DIM}) and int8_scale {} (need > 0)",
                card.model_id, card.embedding_dim, card.int8_scale
            )));
        }
        let env = runtime()?;
        let session = Session::builder(env)
            .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
            .and_then(|mut b| b.commit_from_memory(model))
            .map_err(|e| EmbedError::Model(format!("cannot load model '{}': {e}", card.model_id)))?;
        let width = session.inputs().first().and_then(|i| i.dtype().tensor_shape().map(|s| s.to_vec()));
        match width.as_deref() {
            Some([_, w]) if *w == F as i64 => {}
            other => {
                return Err(EmbedError::Model(format!(
                    "model '{}' takes input of shape {other:?}, but the feature vector has {F} values; retrain with embeddings/train/train.py",
                    card.model_id
                )))
            }
        }
        for name in ["embedding", "score"] {
            if !session.outputs().iter().any(|o| o.name() == name) {
                return Err(EmbedError::Model(format!("model '{}' has no output named '{name}'", card.model_id)));
            }
        }
        Ok(Self { session, card, input: Vec::new(), emb: Vec::new() })
    }

    /// The bundled model.
    pub fn bundled() -> Result<Self, EmbedError> {
        let card: ModelCard = serde_json::from_str(crate::BUNDLED_CARD)
            .map_err(|e| EmbedError::Model(format!("bundled model card: {e}")))?;
        Self::load(crate::BUNDLED_MODEL, card)
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Standardise `rows` as the model expects (clamped to ±CLAMP).
    pub fn standardise(&self, rows: &[[f32; F]], out: &mut Vec<f32>) {
        // One pass per row over fixed-size arrays, written in place, so the
        // loop vectorises. (`(x - m) * (1/s)` can differ from `(x - m) / s`
        // in the last bit, so the divisions stay.)
        let (mean, std) = (&self.card.mean, &self.card.std);
        let (mut m, mut sd) = ([0f32; F], [1f32; F]);
        m.copy_from_slice(&mean[..F]);
        sd.copy_from_slice(&std[..F]);
        out.clear();
        out.resize(rows.len() * F, 0.0);
        for (r, o) in rows.iter().zip(out.chunks_exact_mut(F)) {
            for j in 0..F {
                let z = (r[j] - m[j]) / sd[j];
                o[j] = if z.is_finite() { z.clamp(-CLAMP, CLAMP) } else { 0.0 };
            }
        }
    }

    /// Run the model on already standardised rows (`n × F`), giving float
    /// embeddings (`n × 32`) and scores (`n`).
    pub fn infer(&mut self, standardised: &[f32], emb: &mut Vec<f32>, scores: &mut Vec<f32>) -> Result<(), EmbedError> {
        let n = standardised.len() / F;
        emb.clear();
        scores.clear();
        if n == 0 {
            return Ok(());
        }
        let input = TensorRef::from_array_view(([n, F], standardised)).map_err(|e| EmbedError::Run(e.to_string()))?;
        let out = self.session.run(ort::inputs!["features" => input]).map_err(|e| EmbedError::Run(e.to_string()))?;
        let (_, e) = out["embedding"].try_extract_tensor::<f32>().map_err(|e| EmbedError::Run(e.to_string()))?;
        let (_, s) = out["score"].try_extract_tensor::<f32>().map_err(|e| EmbedError::Run(e.to_string()))?;
        if e.len() != n * EMBEDDING_DIM || s.len() != n {
            return Err(EmbedError::Run(format!(
                "model returned {} embedding values and {} scores for {n} rows",
                e.len(),
                s.len()
            )));
        }
        emb.extend_from_slice(e);
        scores.extend_from_slice(s);
        Ok(())
    }

    /// Embed a batch of feature rows: int8 embeddings and scores.
    pub fn embed(
        &mut self,
        rows: &[[f32; F]],
        out: &mut Vec<[i8; EMBEDDING_DIM]>,
        scores: &mut Vec<f32>,
    ) -> Result<(), EmbedError> {
        let mut input = std::mem::take(&mut self.input);
        self.standardise(rows, &mut input);
        let mut emb = std::mem::take(&mut self.emb);
        let r = self.infer(&input, &mut emb, scores);
        self.input = input;
        if let Err(e) = r {
            self.emb = emb;
            return Err(e);
        }
        let inv = 1.0 / self.card.int8_scale;
        out.clear();
        out.extend(emb.chunks_exact(EMBEDDING_DIM).map(|c| {
            let mut q = [0i8; EMBEDDING_DIM];
            for (d, x) in q.iter_mut().zip(c) {
                *d = quantize_inv(*x, inv);
            }
            q
        }));
        self.emb = emb;
        for s in scores.iter_mut() {
            if !s.is_finite() {
                *s = f32::MAX;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_error_is_bounded() {
        let scale = 1.0 / 127.0;
        let mut worst = 0.0f32;
        for i in -1000..=1000 {
            let x = i as f32 / 1000.0;
            let q = quantize(x, scale);
            worst = worst.max((q as f32 * scale - x).abs());
        }
        assert!(worst <= scale / 2.0 + 1e-6, "error {worst} beyond half a step");
        assert_eq!(quantize(5.0, scale), 127, "saturates");
        assert_eq!(quantize(-5.0, scale), -127);
        assert_eq!(quantize(f32::NAN, scale), 0);
    }
}
