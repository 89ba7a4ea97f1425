#!/usr/bin/env python3
"""Train Wirefold's flow autoencoder and export it to ONNX with its model card.

    python train_ae.py --data data --out ../model [--seed 20261122]

(The recipe of the bundled wirefold-ae-v1, kept as it was when train.py became
the supervised detector's trainer; unchanged apart from this note.)

Reads DATA/features.csv.gz (from make_features.sh: one row per flow, the
unstandardised feature vector of `wirefold replay --features-out`) and
DATA/files.tsv (the captures it came from, with sha256). Drops exact duplicate
rows, splits 80/20 with the seed, standardises with the training split's mean
and std, and trains a small autoencoder (scikit-learn MLPRegressor,
26 -> 64 -> 32 -> 26, tanh) to reconstruct its input. The 32-wide tanh layer is
the embedding; its values lie in [-1, 1], so the int8 scale is 1/127.

Writes OUT/wirefold-ae-v1.onnx (inputs "features" [N, 26] standardised;
outputs "embedding" [N, 32] and "score" [N], the mean squared reconstruction
error), OUT/wirefold-ae-v1.card.json and OUT/reference.json (held-out rows
with ONNX Runtime's outputs, for the Rust tests). The same seed and the
pinned requirements give the same model.
"""
import argparse
import gzip
import hashlib
import json
import os
import sys

# One BLAS thread: summation order, and so the model, must not depend on the machine's cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime  # noqa: E402
import sklearn  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPRegressor  # noqa: E402

# A fixed epoch budget is part of the recipe; not converging to tol is expected.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

MODEL_ID = "wirefold-ae-v1"
EMBED = 32
CLAMP = 10.0


def load(data):
    with gzip.open(os.path.join(data, "features.csv.gz"), "rt") as f:
        header = f.readline().strip().split(",")
        rows = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    files = []
    with open(os.path.join(data, "files.tsv")) as f:
        for line in f:
            name, digest = line.rstrip("\n").split("\t")
            files.append({"file": name, "sha256": digest})
    return header, rows, files


def export(mlp, n_features, path):
    w = [c.astype(np.float32) for c in mlp.coefs_]
    b = [c.astype(np.float32) for c in mlp.intercepts_]
    inits = []
    for i, (wi, bi) in enumerate(zip(w, b)):
        inits.append(numpy_helper.from_array(wi, f"W{i}"))
        inits.append(numpy_helper.from_array(bi, f"b{i}"))
    nodes = [
        helper.make_node("MatMul", ["features", "W0"], ["m0"]),
        helper.make_node("Add", ["m0", "b0"], ["a0"]),
        helper.make_node("Tanh", ["a0"], ["h0"]),
        helper.make_node("MatMul", ["h0", "W1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Tanh", ["a1"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "W2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["recon"]),
        helper.make_node("Sub", ["recon", "features"], ["err"]),
        helper.make_node("Mul", ["err", "err"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["score"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL_ID,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n_features])],
        [
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", EMBED]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="wirefold-train")
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    with open(path, "wb") as f:
        f.write(data)
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--data", default=os.path.join(here, "data"))
    ap.add_argument("--out", default=os.path.join(here, "..", "model"))
    ap.add_argument("--seed", type=int, default=20261122)
    a = ap.parse_args()

    header, rows, files = load(a.data)
    unique = np.unique(rows, axis=0)
    rng = np.random.default_rng(a.seed)
    unique = unique[rng.permutation(len(unique))]
    n_test = max(1, len(unique) // 5)
    test, train = unique[:n_test], unique[n_test:]
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std < 1e-6] = 1.0
    mean, std = mean.astype(np.float32), std.astype(np.float32)

    def standardise(x):
        return np.clip((x.astype(np.float32) - mean) / std, -CLAMP, CLAMP).astype(np.float32)

    ztr, zte = standardise(train), standardise(test)
    mlp = MLPRegressor(
        hidden_layer_sizes=(64, EMBED),
        activation="tanh",
        solver="adam",
        alpha=1e-4,
        batch_size=128,
        learning_rate_init=1e-3,
        max_iter=400,
        tol=1e-6,
        n_iter_no_change=30,
        random_state=a.seed,
        shuffle=True,
    )
    mlp.fit(ztr.astype(np.float64), ztr.astype(np.float64))

    os.makedirs(a.out, exist_ok=True)
    model_path = os.path.join(a.out, f"{MODEL_ID}.onnx")
    data = export(mlp, len(header), model_path)
    sess = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    emb_te, score_te = sess.run(["embedding", "score"], {"features": zte})
    _, score_tr = sess.run(["embedding", "score"], {"features": ztr})

    card = {
        "model_id": MODEL_ID,
        "features": header,
        "mean": [float(x) for x in mean],
        "std": [float(x) for x in std],
        "embedding_dim": EMBED,
        "int8_scale": 1.0 / 127.0,
        "seed": a.seed,
        "training_files": files,
        "heldout_mse": float(np.mean(score_te)),
        "train_mse": float(np.mean(score_tr)),
        "rows": [int(len(train)), int(len(test))],
        "versions": {
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "features_sha256": hashlib.sha256(open(os.path.join(a.data, "features.csv.gz"), "rb").read()).hexdigest(),
            "model_sha256": hashlib.sha256(data).hexdigest(),
        },
    }
    with open(os.path.join(a.out, f"{MODEL_ID}.card.json"), "w") as f:
        json.dump(card, f, indent=1)
        f.write("\n")
    k = min(64, len(zte))
    ref = {
        "note": "held-out rows (standardised) and ONNX Runtime's outputs, written by train.py",
        "features": [[float(x) for x in r] for r in zte[:k]],
        "embedding": [[float(x) for x in r] for r in emb_te[:k]],
        "score": [float(x) for x in score_te[:k]],
    }
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(ref, f)
        f.write("\n")
    # A model whose input width does not match the feature vector, for the start-up check.
    bad = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["features"], ["embedding"]), helper.make_node("ReduceMean", ["features"], ["score"], axes=[1], keepdims=0)],
            "width-mismatch",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 10])],
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 10]), helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="wirefold-train",
    )
    bad.ir_version = 8
    with open(os.path.join(a.out, "width-mismatch.onnx"), "wb") as f:
        f.write(bad.SerializeToString())
    print(
        f"{MODEL_ID}: {len(rows)} rows, {len(unique)} unique; train {len(train)}, held-out {len(test)}; "
        f"MSE train {card['train_mse']:.4f}, held-out {card['heldout_mse']:.4f}; {mlp.n_iter_} epochs; "
        f"model sha256 {card['versions']['model_sha256'][:16]}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
