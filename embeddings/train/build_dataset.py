#!/usr/bin/env python3
"""Build the supervised detector's dataset: one row per flow, features and labels.

    python embeddings/train/build_dataset.py [--bin target/release/wirefold] [--out .local/det]

Replays, one capture per `wirefold replay --no-embed --out F.jsonl
--features-out F.csv` run, every capture of
  datagen-full   .local/datagen/full/*.pcap   (labels.tsv: flow-level labels)
  datagen-small  .local/datagen/*.pcap        (a separate, earlier run; flow-level labels)
  the corpus     ../shared/data/pcaps/*.pcap* (MANIFEST.tsv: capture-level labels;
                 skipped when absent)
and writes OUT/dataset.csv.gz (feature columns, by the binary's CSV header,
then the columns of detlib.META) and OUT/dataset.meta.json (feature names,
captures with sha256, row counts, failures, misalignments).

The flow records (JSON) and the feature rows (CSV) come out in the same order;
that is checked per capture (row counts, and fwd_packets/rev_packets/duration of
the JSON against the log1p columns of the CSV when those columns exist). A
capture whose two outputs do not align is left out and reported. A capture
whose replay fails (exit status != 0: truncated or corrupt file) keeps the
flows it produced before the error and is counted as a failure.

Datagen flows are labelled with embeddings/datagen/label_flows.py's rules
(benign/attack, kind, scenario); flows it calls unknown are dropped. Corpus
flows get their capture's manifest label (benign / attack:KIND / mixed), split
into label and kind, with label_level "capture". `app` is the flow record's
"app" field when present, else a service derived from proto and the lower port
(column app_from says which; a TCP/UDP flow without payload is "unknown").
Datagen-full captures are also replayed cut into short time windows, and those
with few flows with short active timeouts (column variant; training rows only,
see WINDOWS and AUGMENT_BELOW). The binary is
copied to OUT/bin first so that a rebuild during the run cannot mix two
feature layouts.
"""
import argparse
import collections
import csv
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import detlib
from detlib import ROOT

sys.path.insert(0, os.path.join(ROOT, "embeddings", "datagen"))
import label_flows  # noqa: E402

import ipaddress  # noqa: E402

BENIGN_HOSTS = {ipaddress.ip_address(h) for h in
                ("10.77.0.10", "10.77.0.11", "10.77.0.12", "10.77.0.53", "10.77.0.54", "10.77.0.99")}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def replay(binary, capture, tmp, extra=()):
    """(rc, header, csv rows, json records, stderr tail) for one capture."""
    jl, fc = os.path.join(tmp, "f.jsonl"), os.path.join(tmp, "f.csv")
    for p in (jl, fc):
        if os.path.exists(p):
            os.remove(p)
    p = subprocess.run([binary, "replay", "--no-embed", "--no-progress", "--out", jl, "--features-out", fc, *extra, capture],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    header, rows, recs = None, [], []
    if os.path.exists(fc):
        with open(fc, newline="") as f:
            r = csv.reader(f)
            header = next(r, None)
            rows = [row for row in r if row]
    if os.path.exists(jl):
        with open(jl) as f:
            recs = [json.loads(line) for line in f if line.strip()]
    tail = p.stderr.strip().splitlines()[-3:] if p.returncode else []
    return p.returncode, header, rows, recs, tail


def aligned(header, rows, recs):
    """None when the CSV rows and the JSON records line up, else a reason."""
    if len(rows) != len(recs):
        return f"{len(rows)} CSV rows but {len(recs)} JSON records"
    pos = {c: i for i, c in enumerate(header or [])}
    checks = []
    for col, key, scale in (("fwd_packets", "fwd_packets", 1.0), ("rev_packets", "rev_packets", 1.0),
                            ("duration", "duration", 1.0)):
        if col in pos:
            checks.append((pos[col], key, scale))
    for i, (row, rec) in enumerate(zip(rows, recs)):
        for j, key, scale in checks:
            if key not in rec:
                continue
            want = math.log1p(max(float(rec[key]) * scale, 0.0))
            got = float(row[j])
            if abs(want - got) > 1e-4 * max(1.0, abs(want)):
                return f"row {i}: CSV {header[j]}={got} but JSON {key}={rec[key]} (log1p {want:.6f})"
    return None


def app_of(rec):
    app = rec.get("app")
    if isinstance(app, str) and app:
        return app, "record"
    payload = None
    if "fwd_payload_bytes" in rec or "rev_payload_bytes" in rec:
        payload = (rec.get("fwd_payload_bytes") or 0) + (rec.get("rev_payload_bytes") or 0)
    return detlib.derived_service(rec.get("proto"), rec.get("src_port"), rec.get("dst_port"), payload), "port"


def bpp(rec):
    pk = (rec.get("fwd_packets") or 0) + (rec.get("rev_packets") or 0)
    by = (rec.get("fwd_bytes") or 0) + (rec.get("rev_bytes") or 0)
    return by / pk if pk else 0.0


# Datagen-full captures with fewer flows than this (e.g. one iodine tunnel, one
# hping3 UDP flood) are replayed again with short active timeouts, so the long
# flows also appear as the consecutive records a sensor exports for a long-lived
# flow: more training examples of rare scenarios. Training rows only; every
# held-out figure uses the default settings.
AUGMENT_BELOW = 25
AUGMENT_TIMEOUTS = ("1s", "3s")
# Every datagen-full capture is also cut into WINDOWS time windows (0.5-10 s,
# at seeded offsets) replayed on their own: flows then start mid-connection or
# end without a FIN, as a sensor sees them when it starts, or as short public
# captures hold them. Without this the lab's benign flows are all complete and
# "incomplete TCP" alone would mean attack. Training rows only.
WINDOWS = 6


def pcap_window(path, k, out):
    """Write packets of one seeded time window of the classic pcap `path` to `out`.
    Returns False when `path` is not classic pcap or the window is empty."""
    import random
    import struct
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return False
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end, div = "<", (1e6 if magic == b"\xd4\xc3\xb2\xa1" else 1e9)
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end, div = ">", (1e6 if magic == b"\xa1\xb2\xc3\xd4" else 1e9)
    else:
        return False
    recs, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(end + "IIII", data, off)
        if off + 16 + incl > len(data):
            break
        recs.append((sec + frac / div, off, 16 + incl))
        off += 16 + incl
    if not recs:
        return False
    t0, t1 = recs[0][0], recs[-1][0]
    rng = random.Random(detlib.stable_hash("window", os.path.basename(path), k))
    length = math.exp(rng.uniform(math.log(0.5), math.log(10.0)))
    start = t0 + rng.uniform(0.0, max(0.0, t1 - t0 - length))
    chunks = [data[o:o + n] for t, o, n in recs if start <= t < start + length]
    if not chunks:
        return False
    with open(out, "wb") as f:
        f.write(data[:24])
        f.writelines(chunks)
    return True


def one(binary, path, tmp, extra, source, name, variant, level, lab, entry, header_box,
        out_rows, failures, misaligned, empty, unknown):
    """Replay one capture (with `extra` flags), label its flows, append them. Returns rows kept."""
    rc, h, rows, recs, tail = replay(binary, path, tmp, extra)
    entry.update(rc=rc, flows=len(recs), rows=0)
    tag = "" if variant == "default" else f" [{variant}]"
    if rc != 0:
        failures.append({"source": source, "file": name + tag, "rc": rc, "stderr": tail, "flows_kept": len(recs)})
    if h is None or not rows:
        if not recs:
            empty.append(name + tag)
            return 0
    if header_box[0] is None:
        header_box[0] = h
    elif h is not None and h != header_box[0]:
        raise SystemExit(f"{name}: feature header changed during the run ({len(h)} vs {len(header_box[0])} columns)")
    why = aligned(h, rows, recs)
    if why:
        misaligned.append({"source": source, "file": name + tag, "why": why})
        print(f"MISALIGNED {source} {name}{tag}: {why}", file=sys.stderr)
        return 0
    for row, rec in zip(rows, recs):
        if level == "flow":
            res = label_flows.classify(rec, lab, BENIGN_HOSTS, 2.0)
            if res is None:
                unknown[(source, name + tag)] += 1
                continue
            label, kind, scenario = res
        else:
            label, _, kind = lab.partition(":")
            kind = kind or label
            scenario = os.path.splitext(name)[0]
        app, app_from = app_of(rec)
        out_rows.append(row + [source, name, variant, label, level, kind, scenario, app, app_from,
                               rec.get("proto", ""), rec.get("src_port", ""), rec.get("dst_port", ""),
                               repr(float(rec.get("first_ts", 0.0))), f"{bpp(rec):.6g}"])
        entry["rows"] += 1
    print(f"{source:26s} {name:58s} {variant:18s} rc={rc} flows={len(recs):6d} kept={entry['rows']:6d}", file=sys.stderr)
    return entry["rows"]


def manifest(corpus):
    out = {}
    path = os.path.join(corpus, "MANIFEST.tsv")
    with open(path, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            out[r["file"]] = r
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "wirefold"))
    ap.add_argument("--out", default=detlib.DET)
    ap.add_argument("--no-corpus", action="store_true", help="leave out ../shared/data/pcaps even when present")
    a = ap.parse_args()

    os.makedirs(os.path.join(a.out, "bin"), exist_ok=True)
    binary = os.path.join(a.out, "bin", "wirefold")
    shutil.copy2(a.bin, binary)

    jobs = []  # (source, capture path, labeller)
    for source, d in (("datagen-full", detlib.DATAGEN_FULL), ("datagen-small", detlib.DATAGEN_SMALL)):
        if not os.path.isfile(os.path.join(d, "labels.tsv")):
            print(f"{source}: no labels.tsv in {os.path.relpath(d, ROOT)}, skipped", file=sys.stderr)
            continue
        rows = label_flows.load_rows(os.path.join(d, "labels.tsv"))
        for name in sorted(os.listdir(d)):
            if name.endswith(".pcap") or name.endswith(".pcapng"):
                jobs.append((source, os.path.join(d, name), ("flow", rows)))
    if a.no_corpus or not os.path.isdir(detlib.CORPUS):
        print("corpus: ../shared/data/pcaps absent (or --no-corpus), skipped", file=sys.stderr)
    else:
        man = manifest(detlib.CORPUS)
        for name in sorted(os.listdir(detlib.CORPUS)):
            if ".pcap" not in name:
                continue
            m = man.get(name)
            if m is None:
                print(f"corpus: {name} is not in MANIFEST.tsv, skipped", file=sys.stderr)
                continue
            jobs.append((m["source repo"], os.path.join(detlib.CORPUS, name), ("capture", m["label"])))

    header_box = [None]
    out_rows = []
    captures, augmented = [], []
    failures, misaligned, empty = [], [], []
    unknown = collections.Counter()
    with tempfile.TemporaryDirectory(dir=a.out) as tmp:
        for source, path, (level, lab) in jobs:
            name = os.path.basename(path)
            digest = sha256(path)
            variants = [("default", ())]
            if source == "datagen-full":
                variants += [(f"active-timeout={t}", ("--active-timeout", t)) for t in AUGMENT_TIMEOUTS]
            for variant, extra in variants:
                if variant != "default" and base_kept >= AUGMENT_BELOW:
                    continue
                entry = {"source": source, "file": name, "variant": variant, "sha256": digest,
                         "label": lab if level == "capture" else "flow labels"}
                before = len(out_rows)
                kept = one(binary, path, tmp, extra, source, name, variant, level, lab, entry, header_box,
                           out_rows, failures, misaligned, empty, unknown)
                if variant == "default":
                    captures.append(entry)
                    base, base_kept = entry["flows"], kept
                elif entry["flows"] == base:
                    del out_rows[before:]  # no flow was long enough to split: the same records again
                else:
                    augmented.append(entry)
            if source == "datagen-full":
                for k in range(WINDOWS):
                    cut = os.path.join(tmp, "window.pcap")
                    if not pcap_window(path, k, cut):
                        continue
                    entry = {"source": source, "file": name, "variant": f"window-{k}", "sha256": digest}
                    one(binary, cut, tmp, (), source, name, f"window-{k}", level, lab, entry, header_box,
                        out_rows, failures, misaligned, empty, unknown)
                    augmented.append(entry)

    header = header_box[0]
    if header is None:
        raise SystemExit("no capture gave any flows")
    # A binary that writes "app" on some records: a record without it has no recognised app.
    nf, ai, fi = len(header), detlib.META.index("app"), detlib.META.index("app_from")
    if any(r[nf + fi] == "record" for r in out_rows):
        for r in out_rows:
            if r[nf + fi] == "port":
                r[nf + ai], r[nf + fi] = "unknown", "record-missing"
    path = os.path.join(a.out, "dataset.csv.gz")
    with gzip.GzipFile(path, "wb", mtime=0) as gz:
        with io.TextIOWrapper(gz, newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header + detlib.META)
            w.writerows(out_rows)
    counts = collections.Counter()
    mi = {c: i for i, c in enumerate(detlib.META)}
    nf = len(header)
    for r in out_rows:
        src = r[nf + mi["source"]] + ("" if r[nf + mi["variant"]] == "default" else " (augmented)")
        counts[(src, r[nf + mi["label"]], r[nf + mi["kind"]])] += 1
    info = {
        "features": header,
        "binary_sha256": sha256(binary),
        "captures": captures,
        "augmented": augmented,
        "failures": failures,
        "misaligned": misaligned,
        "empty": empty,
        "unknown_dropped": {f"{s}/{n}": c for (s, n), c in sorted(unknown.items())},
        "counts": [{"source": s, "label": l, "kind": k, "flows": n} for (s, l, k), n in sorted(counts.items())],
        "app_from": "record" if any(r[nf + mi["app_from"]] == "record" for r in out_rows) else "port",
    }
    with open(os.path.join(a.out, "dataset.meta.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")

    print(f"\n{len(out_rows)} flows, {nf} feature columns, {len(captures)} captures; "
          f"{len(failures)} replay failures (flows before the error kept), {len(misaligned)} misaligned (left out), "
          f"{len(empty)} with no flows; {sum(unknown.values())} datagen flows unknown (dropped)")
    if info["app_from"] == "port":
        print("app: the flow records have no 'app' field; app is derived from proto + the lower port")
    else:
        print("app: taken from the flow records' 'app' field")
    print(f"\n| source | label | kind | flows |\n|---|---|---|---:|")
    for (s, l, k), n in sorted(counts.items()):
        print(f"| {s} | {l} | {k} | {n} |")
    for fl in failures:
        print(f"failure: {fl['source']} {fl['file']} rc={fl['rc']} kept {fl['flows_kept']} flows: {' / '.join(fl['stderr'])}")


if __name__ == "__main__":
    main()
