#!/usr/bin/env python3
"""Print the highest-scoring flows of a replay next to their ground truth.

    top_scores.py FLOWS.jsonl LABELS.tsv [-n 10] [--threshold T]

FLOWS.jsonl: `wirefold replay --out` records (with scores, from a model).
LABELS.tsv: the generator's labels of the capture (label_flows.py's rules
give each flow its label and attack kind). Prints the top N flows by score
with score, label, kind, app and endpoints, then how the model's default
threshold splits the labelled flows (a confusion count per kind).
"""
import argparse
import collections
import ipaddress
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import label_flows  # noqa: E402

BENIGN_HOSTS = ("10.77.0.10", "10.77.0.11", "10.77.0.12", "10.77.0.53", "10.77.0.54", "10.77.0.99")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("flows")
    ap.add_argument("labels")
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--threshold", type=float, default=0.5)
    a = ap.parse_args(argv)
    rows = label_flows.load_rows(a.labels)
    hosts = {ipaddress.ip_address(h) for h in BENIGN_HOSTS}
    flows = []
    with open(a.flows) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                res = label_flows.classify(r, rows, hosts, 2.0) or ("unknown", "unknown", "")
                r["label"], r["kind"] = res[0], res[1]
                flows.append(r)
    if not flows or "score" not in flows[0]:
        print("no scored flows (was the replay run with a model?)", file=sys.stderr)
        return 1
    flows.sort(key=lambda r: -r["score"])
    print(f"top {min(a.n, len(flows))} of {len(flows)} flows by score, with their ground truth:")
    print(f"  {'score':>6}  {'label':<7} {'kind':<13} {'app':<7} flow")
    for r in flows[: a.n]:
        print(f"  {r['score']:6.3f}  {r['label']:<7} {r['kind']:<13} {r['app']:<7} "
              f"{r['src_ip']}:{r['src_port']} -> {r['dst_ip']}:{r['dst_port']} proto {r['proto']}")
    by = collections.defaultdict(lambda: [0, 0])
    for r in flows:
        by[(r["label"], r["kind"])][r["score"] >= a.threshold] += 1
    print(f"at the model's threshold {a.threshold:.3f} (flows below / at or above):")
    for (lab, kind), (lo, hi) in sorted(by.items()):
        print(f"  {lab:<7} {kind:<13} {lo:>6} below  {hi:>6} flagged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
