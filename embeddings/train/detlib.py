"""Shared pieces of the supervised detector's dataset builder, trainer and evaluator.

Paths are resolved from this file (the repository root is two levels up), so
nothing here depends on the machine. Every split is a function of names and a
seed, never of the order files happen to be listed in.
"""
import csv
import gzip
import hashlib
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
DET = os.path.join(ROOT, ".local", "det")
DATAGEN_FULL = os.path.join(ROOT, ".local", "datagen", "full")
DATAGEN_SMALL = os.path.join(ROOT, ".local", "datagen")
CORPUS = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "pcaps"))
MODEL_DIR = os.path.join(ROOT, "embeddings", "model")

# The sensor clamps standardised features to this magnitude (embeddings/src/embedder.rs CLAMP).
CLAMP = 10.0
# Standard deviation floor: a (near) constant column standardises to 0, not to ±inf.
STD_FLOOR = 1e-3

# Columns of dataset.csv.gz that are not features (written by build_dataset.py).
META = [
    "source", "capture", "variant", "label", "label_level", "kind", "scenario", "app", "app_from",
    "proto", "src_port", "dst_port", "first_ts", "bytes_per_packet",
]

ATTACK_KINDS = ["scan", "flood", "bruteforce", "dns_tunnel", "slow_dos", "sqli", "amplification"]

# Service names from the lower port of a flow, used when the flow record has no "app".
# The vocabulary follows the sensor's "app" values where they overlap (tls, quic, dns, http, ssh).
_TCP = {80: "http", 8080: "http", 8000: "http", 443: "tls", 8443: "tls", 22: "ssh", 53: "dns",
        21: "ftp", 20: "ftp", 25: "smtp", 587: "smtp", 110: "pop3", 143: "imap", 993: "tls",
        995: "tls", 445: "smb", 139: "smb", 3389: "rdp", 5900: "vnc", 3306: "mysql",
        5432: "postgres", 6379: "redis", 389: "ldap", 88: "kerberos", 111: "rpc", 135: "rpc",
        6667: "irc", 1883: "mqtt", 502: "modbus", 5201: "iperf"}
_UDP = {53: "dns", 5353: "dns", 123: "ntp", 443: "quic", 67: "dhcp", 68: "dhcp", 546: "dhcp",
        547: "dhcp", 161: "snmp", 162: "snmp", 5060: "sip", 1812: "radius", 88: "kerberos",
        137: "netbios", 138: "netbios", 111: "rpc", 2049: "nfs", 4789: "vxlan", 6081: "geneve",
        2152: "gtp", 3544: "teredo", 5201: "iperf"}


def derived_service(proto, sport, dport, payload_bytes=None):
    """A service name from proto and the lower of the two ports ("icmp" for ICMP).
    A TCP/UDP flow that carried no payload either way has no service: "unknown"
    (as a payload-based "app" would say of a bare SYN probe)."""
    if proto in (1, 58):
        return "icmp"
    if proto in (6, 17) and payload_bytes == 0:
        return "unknown"
    ports = [p for p in (sport, dport) if p is not None]
    low = min(ports) if ports else 0
    if proto == 6:
        if 30000 <= low <= 30100:  # the datagen vsftpd passive data range
            return "ftp"
        return _TCP.get(low, "tcp-other")
    if proto == 17:
        return _UDP.get(low, "udp-other")
    return f"ip{proto}"


def corpus_half(name):
    """'train' or 'heldout' for a corpus capture, from the sha256 of its file name."""
    return "train" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "heldout"


def stable_hash(*parts):
    """A 64-bit number from strings, independent of PYTHONHASHSEED."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


def load_dataset(path=None):
    """Returns (meta dict of str arrays, feature names, float32 matrix, info dict)."""
    path = path or os.path.join(DET, "dataset.csv.gz")
    with open(os.path.join(os.path.dirname(path), "dataset.meta.json")) as f:
        info = json.load(f)
    feats = info["features"]
    with gzip.open(path, "rt", newline="") as f:
        r = csv.reader(f)
        header = next(r)
        rows = list(r)
    idx = {c: i for i, c in enumerate(header)}
    missing = [c for c in feats + META if c not in idx]
    if missing:
        raise SystemExit(f"{path}: missing columns {missing}")
    meta = {c: np.array([row[idx[c]] for row in rows], dtype=object) for c in META}
    cols = [idx[c] for c in feats]
    x = np.array([[float(row[j]) for j in cols] for row in rows], dtype=np.float32).reshape(len(rows), len(feats))
    return meta, feats, x, info


def standardise(x, mean, std):
    """As the sensor does: (x - mean) / std in f32, non-finite -> 0, clamped to ±CLAMP."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    z = np.where(np.isfinite(z), z, np.float32(0.0))
    return np.clip(z, -CLAMP, CLAMP).astype(np.float32)


def columns(x, feats, names):
    """The columns of x named `names` (by name, in that order)."""
    pos = {n: i for i, n in enumerate(feats)}
    missing = [n for n in names if n not in pos]
    if missing:
        raise SystemExit(f"feature columns {missing} are not in the dataset")
    return x[:, [pos[n] for n in names]]


VAL_FRACTION = 5  # one in five datagen-full connections is validation
CORPUS_VAL_FRACTION = 3  # one in three training-half corpus benign captures is validation
RARE_CONNECTIONS = 10  # a datagen group with fewer connections stays whole in the training split


def is_corpus(source):
    return not source.startswith("datagen")


def roles(meta):
    """Each row's role: 'train' and 'val' (the training sources), 'heldout-flow'
    (datagen-small, flow labels), 'heldout-capture' (corpus captures not used in
    training: the held-out half of the benign ones, every attack and mixed one).

    Training sources are datagen-full and the benign corpus captures whose name
    hashes to the training half. Validation: one in VAL_FRACTION datagen-full
    connections (capture, proto, ports: the records of one connection stay
    together) and one in CORPUS_VAL_FRACTION of those corpus captures (whole captures).
    """
    n = len(meta["source"])
    out = np.empty(n, dtype=object)
    conns = {}
    for i in range(n):
        if meta["source"][i] == "datagen-full":
            g = (meta["capture"][i], meta["kind"][i])
            conns.setdefault(g, set()).add(connection(meta, i))
    for i in range(n):
        src, cap = meta["source"][i], meta["capture"][i]
        if src == "datagen-full":
            g = (cap, meta["kind"][i])
            rare = len(conns[g]) < RARE_CONNECTIONS
            out[i] = "train" if rare or stable_hash(*connection(meta, i)) % VAL_FRACTION else "val"
        elif src == "datagen-small":
            out[i] = "heldout-flow" if meta["variant"][i] == "default" else ""
        elif meta["label"][i] == "benign" and corpus_half(cap) == "train":
            out[i] = "val" if stable_hash("corpus-val", cap) % CORPUS_VAL_FRACTION == 0 else "train"
        else:
            out[i] = "heldout-capture"
    return out


def connection(meta, i):
    return (meta["capture"][i], meta["proto"][i], meta["src_port"][i], meta["dst_port"][i])


# ---------------------------------------------------------------- metrics

def auc(y, s):
    """ROC AUC with ties counted half (Mann-Whitney); None when a class is absent."""
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=np.float64)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ss = s[order]
    i = 0
    while i < len(ss):
        j = i
        while j + 1 < len(ss) and ss[j + 1] == ss[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def threshold_at_fpr(neg_scores, fpr):
    """The smallest threshold t with at most `fpr` of negatives scoring > t."""
    neg = np.sort(np.asarray(neg_scores, dtype=np.float64))
    if len(neg) == 0:
        return float("inf")
    k = int(np.floor(fpr * len(neg)))  # negatives allowed above the threshold
    return float(neg[len(neg) - 1 - k]) if k < len(neg) else float(neg[0]) - 1.0


def threshold_at_weighted_fpr(neg_scores, weights, fpr):
    """The smallest score t such that negatives scoring > t carry at most `fpr` of the negatives' weight."""
    s = np.asarray(neg_scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if len(s) == 0:
        return float("inf")
    order = np.argsort(-s, kind="stable")
    s, w = s[order], w[order] / w.sum()
    above, i = 0.0, 0
    while i < len(s):
        # Candidate t = s[i]: everything strictly above s[i] is a false positive.
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        tie = w[i:j + 1].sum()
        if above + tie > fpr + 1e-12:
            return float(s[i])
        above += tie
        i = j + 1
    return float(s[-1]) - 1.0


def recall_at(pos_scores, t):
    pos = np.asarray(pos_scores, dtype=np.float64)
    return float((pos > t).mean()) if len(pos) else None


def knn_purity(emb, labels, k=5, metric="cosine", max_n=6000, seed=0):
    """Mean fraction of each point's k nearest neighbours (excluding itself) sharing its label.
    Subsamples deterministically to max_n points (stratified by nothing; uniform)."""
    emb = np.asarray(emb, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(emb)
    if n <= k:
        return None, n
    if n > max_n:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))
        emb, labels, n = emb[idx], labels[idx], max_n
    if metric == "cosine":
        e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        d = -(e @ e.T)
    else:
        sq = (emb * emb).sum(1)
        d = sq[:, None] + sq[None, :] - 2.0 * emb @ emb.T
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1, kind="stable")[:, :k]
    return float((labels[nn] == labels[:, None]).mean()), n
