//! The bundled model, run through the real ONNX Runtime, against the
//! training script's own outputs; quantization bounds; start-up checks.
use std::path::{Path, PathBuf};
use wirefold_embeddings::{
    extract, quantize, EmbedError, Embedder, FlowSummary, ModelCard, BUNDLED_CARD, BUNDLED_MODEL, F,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Point ORT_DYLIB_PATH at the project-local runtime if the caller did not.
fn ensure_runtime() {
    if std::env::var_os("ORT_DYLIB_PATH").is_some() {
        return;
    }
    let lib = root().join(".local/venv/lib");
    let py = std::fs::read_dir(&lib).ok().and_then(|d| {
        d.filter_map(|e| e.ok()).find(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("python")))
    });
    let found = py.and_then(|py| {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        std::fs::read_dir(capi)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so.1")))
    });
    let p = found.expect(
        "ONNX Runtime not found: run ./deploy/test.sh (it installs onnxruntime into .local/venv) or set ORT_DYLIB_PATH",
    );
    // SAFETY-free: tests set the variable before any thread reads it.
    unsafe_set_env(&p);
}

#[allow(unsafe_code)]
fn unsafe_set_env(p: &Path) {
    // SAFETY: called before the runtime is initialised, from test setup;
    // concurrent tests set the same value.
    unsafe { std::env::set_var("ORT_DYLIB_PATH", p) };
}

#[derive(serde::Deserialize)]
struct Reference {
    features: Vec<Vec<f32>>,
    embedding: Vec<Vec<f32>>,
    score: Vec<f32>,
}

#[test]
fn outputs_match_the_training_script() {
    ensure_runtime();
    let mut e = Embedder::bundled().unwrap();
    let r: Reference =
        serde_json::from_str(&std::fs::read_to_string(root().join("embeddings/model/reference-v2.json")).unwrap())
            .unwrap();
    let flat: Vec<f32> = r.features.iter().flatten().copied().collect();
    let (mut emb, mut scores) = (Vec::new(), Vec::new());
    e.infer(&flat, &mut emb, &mut scores).unwrap();
    assert_eq!(scores.len(), r.score.len());
    let mut worst = 0f32;
    for (i, row) in r.embedding.iter().enumerate() {
        for (j, want) in row.iter().enumerate() {
            worst = worst.max((emb[i * 32 + j] - want).abs());
        }
        let s = (scores[i] - r.score[i]).abs();
        assert!(s <= 1e-5 + 1e-4 * r.score[i].abs(), "row {i}: score {} vs {}", scores[i], r.score[i]);
    }
    // Stated tolerance: 1e-5 absolute on tanh outputs in [-1, 1].
    assert!(worst <= 1e-5, "largest embedding difference {worst}");
    // Quantized, each value is within half a step of the float.
    let scale = e.card().int8_scale;
    for (x, _) in emb.iter().zip(0..) {
        let q = quantize(*x, scale);
        assert!((q as f32 * scale - x).abs() <= scale / 2.0 + 1e-6);
    }
}

#[test]
fn degenerate_flows_embed_to_finite_values() {
    ensure_runtime();
    let mut e = Embedder::bundled().unwrap();
    let mut rows = vec![[0f32; F]; 3];
    extract(
        &FlowSummary {
            fwd_packets: 1,
            fwd_bytes: 40,
            fwd_size: [40.0, 0.0, 40.0],
            proto: 6,
            dst_port: 80,
            ..Default::default()
        },
        &mut rows[0],
    );
    extract(&FlowSummary::default(), &mut rows[1]);
    extract(
        &FlowSummary {
            duration_s: f64::NAN,
            fwd_packets: u64::MAX,
            fwd_bytes: u64::MAX,
            proto: 17,
            ..Default::default()
        },
        &mut rows[2],
    );
    let (mut q, mut s) = (Vec::new(), Vec::new());
    e.embed(&rows, &mut q, &mut s).unwrap();
    assert_eq!(q.len(), 3);
    assert!(s.iter().all(|x| x.is_finite() && *x >= 0.0), "{s:?}");
    assert_ne!(q[0], q[1], "different flows, different embeddings");
}

#[test]
fn a_model_of_the_wrong_width_is_refused_at_start() {
    ensure_runtime();
    let card: ModelCard = serde_json::from_str(BUNDLED_CARD).unwrap();
    let bad = std::fs::read(root().join("embeddings/model/width-mismatch.onnx")).unwrap();
    let e = Embedder::load(&bad, card.clone()).unwrap_err();
    assert!(matches!(e, EmbedError::Model(_)));
    let m = e.to_string();
    assert!(m.contains("64 values") && m.contains("retrain"), "{m}");
    // A card that lists other features.
    let mut other = card;
    other.features.pop();
    let m = Embedder::load(BUNDLED_MODEL, other).unwrap_err().to_string();
    assert!(m.contains("expects 63 features") && m.contains("computes 64"), "{m}");
}

#[test]
fn the_same_seed_reproduces_the_same_model() {
    // Retrains from the committed feature table (embeddings/train/data/det, made by
    // build_dataset.py) with the committed seed: about three minutes on two cores.
    let python = std::env::var("PYTHON").map(PathBuf::from).unwrap_or_else(|_| root().join(".local/venv/bin/python"));
    let out = std::env::temp_dir().join(format!("wirefold-train-{}", std::process::id()));
    let st = std::process::Command::new(&python)
        .arg(root().join("embeddings/train/train.py"))
        .arg("--data")
        .arg(root().join("embeddings/train/data/det"))
        .arg("--out")
        .arg(&out)
        .arg("--allow-stale")
        .status()
        .unwrap_or_else(|e| panic!("{}: {e} (./deploy/test.sh sets up the venv)", python.display()));
    assert!(st.success());
    for f in ["wirefold-det-v2.onnx", "reference-v2.json"] {
        let a = std::fs::read(out.join(f)).unwrap();
        let b = std::fs::read(root().join("embeddings/model").join(f)).unwrap();
        assert!(a == b, "{f} differs from the committed one: retraining with the same seed must reproduce it");
    }
    let card: ModelCard = serde_json::from_str(BUNDLED_CARD).unwrap();
    let t = card.threshold.expect("a supervised card states its threshold");
    assert!(t > 0.0 && t < 1.0, "threshold {t}");
    assert!(card.reference_distribution["embedding"].is_object(), "the drift reference is in the card");
    // The core's drift monitor reads reference_distribution.drift; retraining reproduces it too.
    let fresh: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("wirefold-det-v2.card.json")).unwrap()).unwrap();
    assert_eq!(fresh["reference_distribution"], card.reference_distribution);
    assert_eq!(card.reference_distribution["drift"]["dims"].as_array().map(|d| d.len()), Some(32));
}
