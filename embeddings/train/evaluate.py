#!/usr/bin/env python3
"""Evaluate the supervised detector on the held-out sources, against two baselines.

    python embeddings/train/evaluate.py [--data .local/det] [--model embeddings/model/wirefold-det-v2.onnx]
                                        [--no-card] [--no-loto] [--md embeddings/train/EVALUATION.md]

Held out (detlib.roles; never used by train.py):
  - datagen-small (a separate, earlier datagen run): flow-level labels;
  - the corpus captures not used in training: the other half of the benign
    captures (by a hash of the file name) and every attack capture: labels are
    per capture, so only capture-level figures come from them.

Methods, all computed here in the same run on the same rows:
  det-v2   the exported ONNX model through ONNX Runtime, its features taken by
           the card's names and standardised as the sensor does
           ((x - mean) / std in f32, non-finite -> 0, clamped to ±10);
  ae-v1    the bundled autoencoder (embeddings/model/wirefold-ae-v1.onnx), its
           columns chosen by the names in its card; score = reconstruction MSE;
  bpp      bytes per packet of the flow, sign chosen on the training sources
           (small packets = suspicious if that ranks attacks higher there).

Figures: capture-level ROC AUC (a capture's score is its highest flow score;
captures without flows and the "mixed" capture are left out); per attack kind
on datagen-small, flow-level AUC and recall at 1% FPR (threshold: the score
that 1% of datagen-small's benign flows exceed); 5-NN purity of the app label
in embedding space (cosine distance on the float embedding, the flow itself
excluded) over held-out flows; optionally leave-one-tool-out recall (retrain
without one tool's datagen-full capture, test that tool on datagen-small).

Writes DATA/evaluation.json, the card's "evaluation" (unless --no-card), a
markdown table to stdout and the section of --md.
"""
import argparse
import collections
import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

import detlib  # noqa: E402

FPR = 0.01
# Leave-one-tool-out: (datagen capture left out, its kind). The mixed capture's
# flows of that kind are left out too (it replays nmap, hydra ssh and hping3).
LOTO = [("masscan.pcap", "scan"), ("nmap_syn.pcap", "scan"), ("hydra_http.pcap", "bruteforce"),
        ("hydra_ssh.pcap", "bruteforce"), ("slowloris.pcap", "slow_dos"), ("flood_syn.pcap", "flood")]


def run_onnx(path, card, x, feats):
    sess = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    z = detlib.standardise(detlib.columns(x, feats, card["features"]), card["mean"], card["std"])
    embs, scores = [], []
    for s in range(0, len(z), 8192):
        e, sc = sess.run(["embedding", "score"], {"features": z[s:s + 8192]})
        embs.append(e)
        scores.append(sc)
    return np.concatenate(embs), np.concatenate(scores).astype(np.float64)


def fmt(v, nd=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def capture_level(meta, role, scores):
    """AUC over held-out corpus captures of max flow score; plus the attack captures' ranks."""
    held = role == "heldout-capture"
    caps = collections.OrderedDict()
    for i in np.flatnonzero(held):
        caps.setdefault(meta["capture"][i], []).append(i)
    out = {}
    for name, s in scores.items():
        lab, val, names = [], [], []
        for cap, rows in caps.items():
            l = meta["label"][rows[0]]
            if l not in ("benign", "attack"):
                continue
            lab.append(l == "attack")
            val.append(float(np.max(s[rows])))
            names.append(cap)
        lab, val = np.array(lab), np.array(val)
        ben = val[~lab]
        per = {n: {"score": v, "benign_captures_at_or_above": int((ben >= v).sum())}
               for n, v, l in zip(names, val, lab) if l}
        out[name] = {"auc": detlib.auc(lab, val), "attack_captures": int(lab.sum()), "benign_captures": int((~lab).sum()),
                     "per_attack_capture": per}
    return out


def flowless_heldout(info):
    """Held-out corpus captures that gave no flows (left out of the capture-level AUC), by manifest label."""
    out = collections.Counter()
    for c in info["captures"]:
        if c["source"].startswith("datagen") or c.get("rows", 0) > 0:
            continue
        lab = c.get("label", "?")
        if lab != "benign" or detlib.corpus_half(c["file"]) == "heldout":
            out[lab] += 1
    return dict(out)


def flow_level(meta, role, scores):
    held = role == "heldout-flow"
    benign = held & (meta["label"] == "benign")
    out = {}
    for name, s in scores.items():
        t = detlib.threshold_at_fpr(s[benign], FPR)
        res = {"threshold_at_1pct_fpr": t, "benign_flows": int(benign.sum())}
        allatt = held & (meta["label"] == "attack")
        res["all"] = {"flows": int(allatt.sum()), "auc": detlib.auc(np.r_[np.ones(allatt.sum()), np.zeros(benign.sum())],
                                                                    np.r_[s[allatt], s[benign]]),
                      "recall_at_1pct_fpr": detlib.recall_at(s[allatt], t)}
        for k in detlib.ATTACK_KINDS:
            att = allatt & (meta["kind"] == k)
            if not att.any():
                res[k] = {"flows": 0, "auc": None, "recall_at_1pct_fpr": None}
                continue
            y = np.r_[np.ones(att.sum()), np.zeros(benign.sum())]
            res[k] = {"flows": int(att.sum()), "auc": detlib.auc(y, np.r_[s[att], s[benign]]),
                      "recall_at_1pct_fpr": detlib.recall_at(s[att], t)}
        out[name] = res
    return out


def at_card_threshold(meta, role, score, threshold):
    """Flow and capture figures of det-v2 at the card's threshold."""
    held = role == "heldout-flow"
    benign = held & (meta["label"] == "benign")
    res = {"threshold": threshold, "benign_fpr": float((score[benign] > threshold).mean())}
    for k in detlib.ATTACK_KINDS:
        att = held & (meta["label"] == "attack") & (meta["kind"] == k)
        res[k] = detlib.recall_at(score[att], threshold) if att.any() else None
    hc = role == "heldout-capture"
    hb = hc & (meta["label"] == "benign")
    res["corpus_heldout_benign_flow_fpr"] = float((score[hb] > threshold).mean()) if hb.any() else None
    caps = collections.defaultdict(list)
    for i in np.flatnonzero(hc):
        caps[meta["capture"][i]].append(i)
    lab = {c: meta["label"][r[0]] for c, r in caps.items()}
    hit = {c: bool((score[r] > threshold).any()) for c, r in caps.items()}
    ben = [c for c in caps if lab[c] == "benign"]
    att = [c for c in caps if lab[c] == "attack"]
    res["corpus_benign_captures_alerting"] = f"{sum(hit[c] for c in ben)} of {len(ben)}"
    res["corpus_attack_captures_alerting"] = f"{sum(hit[c] for c in att)} of {len(att)}"
    # Per benign capture, the fraction of its flows above the threshold (the median capture).
    res["corpus_benign_flow_fpr_median_capture"] = float(np.median([(score[caps[c]] > threshold).mean() for c in ben])) if ben else None
    return res


def purity(meta, role, embs):
    held = (role == "heldout-flow") | (role == "heldout-capture")
    out = {}
    subsets = {"all held-out": held, "datagen-small": role == "heldout-flow", "corpus held-out": role == "heldout-capture"}
    for name, e in embs.items():
        out[name] = {}
        for sname, mask in subsets.items():
            idx = np.flatnonzero(mask)
            p, n = detlib.knn_purity(e[idx], meta["app"][idx], k=5, metric="cosine", max_n=6000, seed=7)
            out[name][sname] = {"purity": p, "flows": int(n), "of": int(len(idx))}
    return out


def loto(meta, x, feats, role, card, log):
    """Retrain (train.py's recipe, the card's chosen config and epochs) without one
    tool's datagen-full capture; recall at 1% FPR of datagen-small benign on that tool."""
    import train as T
    cfg = {k: card["hyperparameters"][k] for k in ("hidden", "alpha", "corpus_share")}
    epochs = card["hyperparameters"]["epochs_used"]
    cols = [feats.index(f) for f in card["features"]]
    xx = x[:, cols]
    held = role == "heldout-flow"
    benign = held & (meta["label"] == "benign")
    out = {}
    for cap, kind in LOTO:
        drop = (meta["source"] == "datagen-full") & ((meta["capture"] == cap) |
                                                     ((meta["capture"] == "mixed.pcap") & (meta["kind"] == kind)))
        test = held & (meta["capture"] == cap) & (meta["label"] == "attack")
        if not drop.any() or not test.any():
            continue
        t0 = time.time()
        fit = T.fit_detector(meta, xx, card["features"], role, card["seed"], [cfg], lambda s: None, drop=drop, fixed_epochs=epochs)
        z = detlib.standardise(xx, fit["mean"], fit["std"]).astype(np.float64)
        s = T._sigmoid(fit["a"] * fit["model"].logit(z) + fit["b"])
        t = detlib.threshold_at_fpr(s[benign], FPR)
        r = detlib.recall_at(s[test], t)
        a = detlib.auc(np.r_[np.ones(test.sum()), np.zeros(benign.sum())], np.r_[s[test], s[benign]])
        out[cap] = {"kind": kind, "flows": int(test.sum()), "recall_at_1pct_fpr": r, "auc": a,
                    "left_out_rows": int(drop.sum())}
        log(f"  loto {cap}: recall {r:.3f} auc {a:.3f} ({time.time() - t0:.0f} s)")
    return out


def counts_table(meta, role):
    c = collections.Counter()
    caps = collections.defaultdict(set)
    for i in range(len(role)):
        r = role[i]
        if not r:
            continue
        src = meta["source"][i] + ("" if meta["variant"][i] == "default" else " (augmented)")
        key = ("train+val" if r in ("train", "val") else r, src, meta["label"][i])
        c[key] += 1
        caps[key].add(meta["capture"][i])
    return [{"role": k[0], "source": k[1], "label": k[2], "flows": n, "captures": len(caps[k])} for k, n in sorted(c.items())]


def markdown(ev, methods):
    L = []
    L.append("| figure | " + " | ".join(methods) + " |")
    L.append("|---|" + "---:|" * len(methods))
    cl = ev["capture_level"]
    n = cl[methods[0]]
    L.append(f"| capture-level AUC, held-out corpus ({n['attack_captures']} attack vs {n['benign_captures']} benign captures) | "
             + " | ".join(fmt(cl[m]["auc"]) for m in methods) + " |")
    fl = ev["flow_level"]
    L.append(f"| flow AUC, datagen-small, all attacks ({fl[methods[0]]['all']['flows']} vs {fl[methods[0]]['benign_flows']} benign) | "
             + " | ".join(fmt(fl[m]["all"]["auc"]) for m in methods) + " |")
    L.append("| recall at 1% FPR, all attacks | " + " | ".join(fmt(fl[m]["all"]["recall_at_1pct_fpr"]) for m in methods) + " |")
    for k in detlib.ATTACK_KINDS:
        nk = fl[methods[0]][k]["flows"]
        L.append(f"| {k} ({nk} flows): AUC / recall at 1% FPR | "
                 + " | ".join(f"{fmt(fl[m][k]['auc'])} / {fmt(fl[m][k]['recall_at_1pct_fpr'])}" for m in methods) + " |")
    pu = ev["purity"]
    for sub in ("all held-out", "datagen-small", "corpus held-out"):
        n = pu[methods[0]][sub]
        L.append(f"| 5-NN app purity, {sub} ({n['flows']} flows) | "
                 + " | ".join(fmt(pu[m][sub]["purity"]) if m in pu else "–" for m in methods) + " |")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=detlib.DET)
    ap.add_argument("--model", default=os.path.join(detlib.MODEL_DIR, "wirefold-det-v2.onnx"))
    ap.add_argument("--baseline", default=os.path.join(detlib.MODEL_DIR, "wirefold-ae-v1.onnx"))
    ap.add_argument("--no-card", action="store_true", help="do not write the figures into the model's card")
    ap.add_argument("--no-loto", action="store_true", help="skip the leave-one-tool-out retrainings")
    ap.add_argument("--md", default=os.path.join(detlib.HERE, "EVALUATION.md"), help="markdown file to write ('' = none)")
    a = ap.parse_args()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()

    meta, feats, x, info = detlib.load_dataset(os.path.join(a.data, "dataset.csv.gz"))
    role = detlib.roles(meta)
    card_path = os.path.splitext(a.model)[0] + ".card.json"
    card = json.load(open(card_path))
    base_card = json.load(open(os.path.splitext(a.baseline)[0] + ".card.json"))

    emb_new, s_new = run_onnx(a.model, card, x, feats)
    emb_ae, s_ae = run_onnx(a.baseline, base_card, x, feats)
    bpp = meta["bytes_per_packet"].astype(np.float64)
    trainsrc = (role == "train") | (role == "val")
    auc_tr = detlib.auc(meta["label"][trainsrc] == "attack", -bpp[trainsrc])
    bpp_sign = -1.0 if auc_tr is None or auc_tr >= 0.5 else 1.0
    s_bpp = bpp_sign * bpp
    names = {"det-v2": card["model_id"], "ae-v1": base_card["model_id"], "bpp": "bytes per packet"}
    scores = {"det-v2": s_new, "ae-v1": s_ae, "bpp": s_bpp}
    methods = list(scores)

    ev = {
        "split": {
            "flow_level": "datagen-small run (all its flows, default replay settings), flow labels",
            "capture_level": "corpus captures not used in training: benign captures whose file-name hash puts them in the "
                             "held-out half, and every attack capture (capture labels; 'mixed' and flowless captures left out)",
            "training": "datagen-full flows + benign flows of the training half of the corpus's benign captures",
        },
        "counts": counts_table(meta, role),
        "app_labels": info.get("app_from", "port") == "record" and "flow record 'app'" or
        "derived from proto + the lower port (the flow records have no 'app' yet); TCP/UDP flows without payload are 'unknown'",
        "bpp_direction": "smaller = more suspicious" if bpp_sign < 0 else "larger = more suspicious",
        "methods": names,
        "capture_level": capture_level(meta, role, scores),
        "heldout_captures_without_flows": flowless_heldout(info),
        "flow_level": flow_level(meta, role, scores),
        "det_v2_at_card_threshold": at_card_threshold(meta, role, s_new, card.get("threshold", 0.5)),
        "purity": purity(meta, role, {"det-v2": emb_new, "ae-v1": emb_ae}),
        "purity_metric": "5-NN, cosine distance on the float embedding, the flow itself excluded; "
                         "uniform subsample of at most 6000 flows per subset (seeded)",
        "feature_columns": len(card["features"]),
        "model_sha256": card["versions"].get("model_sha256"),
    }
    # Raw standardised features as a reference point for purity.
    zraw = detlib.standardise(detlib.columns(x, feats, card["features"]), card["mean"], card["std"])
    ev["purity"]["standardised features"] = purity(meta, role, {"f": zraw})["f"]
    if not a.no_loto and "hyperparameters" in card:
        log("leave-one-tool-out retrainings ...")
        ev["leave_one_tool_out"] = loto(meta, x, feats, role, card, log)
    ev["seconds"] = round(time.time() - t0, 1)

    with open(os.path.join(a.data, "evaluation.json"), "w") as f:
        json.dump(ev, f, indent=1)
        f.write("\n")
    if not a.no_card:
        card["evaluation"] = {k: ev[k] for k in ("split", "app_labels", "bpp_direction", "methods", "capture_level",
                                                 "flow_level", "det_v2_at_card_threshold", "purity", "purity_metric")}
        if "leave_one_tool_out" in ev:
            card["evaluation"]["leave_one_tool_out"] = ev["leave_one_tool_out"]
        with open(card_path, "w") as f:
            json.dump(card, f, indent=1)
            f.write("\n")

    table = markdown(ev, methods)
    out = [f"methods: det-v2 = {names['det-v2']} (ONNX Runtime), ae-v1 = {names['ae-v1']} reconstruction MSE, "
           f"bpp = bytes per packet ({ev['bpp_direction']})", "", table, ""]
    ct = ev["det_v2_at_card_threshold"]
    out.append(f"det-v2 at the card threshold {ct['threshold']:.4f}: datagen-small benign flow FPR {ct['benign_fpr']:.3f}; "
               f"recall " + ", ".join(f"{k} {fmt(ct[k])}" for k in detlib.ATTACK_KINDS) + "; "
               f"held-out corpus: benign flow FPR {fmt(ct['corpus_heldout_benign_flow_fpr'])} (median capture "
               f"{fmt(ct['corpus_benign_flow_fpr_median_capture'])}), benign captures with an alert "
               f"{ct['corpus_benign_captures_alerting']}, attack captures with an alert {ct['corpus_attack_captures_alerting']}. "
               f"Held-out corpus captures without flows (not scored): {ev['heldout_captures_without_flows']}.")
    out.append("5-NN purity of the standardised features themselves: "
               + ", ".join(f"{k} {fmt(v['purity'])}" for k, v in ev["purity"]["standardised features"].items()))
    if ev.get("leave_one_tool_out"):
        out += ["", "| left out (datagen-full) | kind | datagen-small flows | recall at 1% FPR | AUC |", "|---|---|---:|---:|---:|"]
        for cap, r in ev["leave_one_tool_out"].items():
            out.append(f"| {cap} | {r['kind']} | {r['flows']} | {fmt(r['recall_at_1pct_fpr'])} | {fmt(r['auc'])} |")
    out += ["", "attack captures (held-out corpus): max flow score, and how many held-out benign captures score at least as high:", "",
            "| capture | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    cl = ev["capture_level"]
    for cap in cl[methods[0]]["per_attack_capture"]:
        out.append(f"| {cap} | " + " | ".join(
            f"{cl[m]['per_attack_capture'][cap]['score']:.4g} ({cl[m]['per_attack_capture'][cap]['benign_captures_at_or_above']})"
            for m in methods) + " |")
    text = "\n".join(out)
    print(text)

    if a.md:
        cmd = ("python embeddings/train/build_dataset.py && python embeddings/train/train.py --data .local/det "
               "--out embeddings/model && python embeddings/train/evaluate.py")
        md = ["## Supervised detector (wirefold-det-v2): held-out evaluation", "",
              "Reproduce (from the repository root, after `source deploy/lib.sh && setup_python`, with `$PYTHON` for `python`):", "",
              "```sh", cmd, "```", "",
              f"Model sha256 `{ev['model_sha256']}`, {ev['feature_columns']} feature columns, evaluated in {ev['seconds']} s.", "",
              "**Split.** Training: " + ev["split"]["training"] + " (one in five datagen-full connections and one in three of "
              "those corpus captures form the validation split that picks the configuration and epoch, fits the Platt "
              "calibration and sets the threshold). Flow-level figures: " + ev["split"]["flow_level"] +
              ". Capture-level figures: " + ev["split"]["capture_level"] + ".", "",
              "**App labels** for purity: " + ev["app_labels"] + ".", "",
              "| role | source | label | captures | flows |", "|---|---|---|---:|---:|"]
        for r in ev["counts"]:
            md.append(f"| {r['role']} | {r['source']} | {r['label']} | {r['captures']} | {r['flows']} |")
        held_kinds = sorted({meta["kind"][i] for i in np.flatnonzero((role == "heldout-capture") & (meta["label"] == "attack"))})
        md += ["", text, "",
               "**Reading these figures.** The flow-level figures are on a second run of the same lab (same hosts, tools "
               "and versions as the training run), so they measure little beyond the lab; leave-one-tool-out is the "
               "stricter flow-level test. The capture-level AUC rests on " + str(ev["capture_level"]["det-v2"]["attack_captures"]) +
               " attack captures: one of them moving from the bottom of the ranking to the top shifts it by 1/" + str(ev["capture_level"]["det-v2"]["attack_captures"]) + "; their kinds (" + ", ".join(held_kinds) +
               ") are mostly not among the training kinds (" + ", ".join(detlib.ATTACK_KINDS) + "), and a capture label "
               "does not say which of its flows is the attack. Leave-one-tool-out models are retrained in numpy (the "
               "card's configuration and epoch count), not exported.", ""]
        with open(a.md, "w") as f:
            f.write("\n".join(md))
    log(f"evaluate: {ev['seconds']} s")


if __name__ == "__main__":
    main()
