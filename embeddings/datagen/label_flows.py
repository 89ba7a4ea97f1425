#!/usr/bin/env python3
"""Label Wirefold flow records with the datagen ground truth.

    label_flows.py FLOWS.jsonl LABELS.tsv [-o OUT.jsonl] [--keep-unknown]

FLOWS.jsonl: one JSON object per flow, as `wirefold replay --out` writes
(keys used: src_ip, dst_ip, proto, src_port, dst_port, first_ts, last_ts).
LABELS.tsv: written by generate.sh, columns
    scenario label kind src dst proto dst_port start_ns end_ns tool

Rules, in order (see README.md "How labels are derived"):
 1. A flow whose two endpoints are a row's (src, dst) -- either orientation,
    dst may be a CIDR or '*' -- and whose time span overlaps the row's window
    (or misses it by at most --slack seconds) takes that row's label. Among
    several such rows, attack rows win, then rows whose proto/port also
    match, then the row whose window overlaps the flow the most (or is the
    nearest), so back-to-back scenarios do not steal each other's flows.
 2. Otherwise, a flow to or from the attacker address that overlaps an attack
    window of the attacker is `attack` (kind/scenario of that window).
 3. Otherwise, a flow between two benign topology hosts that overlaps any
    scenario window is `benign`, kind `other`.
 4. Anything else is `unknown` and dropped (kept with --keep-unknown).
Adds the keys `label`, `kind`, `scenario`. Prints counts to stderr.
"""
import argparse
import collections
import csv
import ipaddress
import json
import sys

ATTACKER = "10.77.0.66"
TOPOLOGY = ipaddress.ip_network("10.77.0.0/24")
PROTO_NUM = {"tcp": 6, "udp": 17, "icmp": 1}


class Row:
    __slots__ = ("scenario", "label", "kind", "src", "dst", "protos", "ports",
                 "start", "end", "tool")

    def __init__(self, r):
        self.scenario = r["scenario"]
        self.label = r["label"]
        self.kind = r["kind"]
        self.src = _net(r["src"])
        self.dst = _net(r["dst"])
        self.protos = None if r["proto"] in ("*", "") else {
            PROTO_NUM.get(p, -1) for p in r["proto"].split(",")}
        self.ports = _ports(r["dst_port"])
        self.start = int(r["start_ns"]) / 1e9
        self.end = int(r["end_ns"]) / 1e9
        self.tool = r["tool"]


def _net(s):
    if s in ("*", ""):
        return None
    return ipaddress.ip_network(s, strict=False)


def _ports(s):
    """'80,443' / '1-1000' / '30000-30100' / '*' / 'top20' -> list of ranges or None."""
    out = []
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a.isdigit() and b.isdigit():
                out.append((int(a), int(b)))
        elif part.isdigit():
            out.append((int(part), int(part)))
    return out or None


def _in(net, ip):
    return net is None or ip in net


def _overlap(row, first, last, slack):
    """Overlap in seconds of the flow span with the row window (negative: the
    size of the gap between them), or None when the gap exceeds the slack."""
    ov = min(row.end, last) - max(row.start, first)
    return ov if ov >= -slack else None


def load_rows(path):
    with open(path, newline="") as f:
        return [Row(r) for r in csv.DictReader(f, delimiter="\t")]


def classify(flow, rows, benign_hosts, slack):
    try:
        src = ipaddress.ip_address(flow["src_ip"])
        dst = ipaddress.ip_address(flow["dst_ip"])
    except (KeyError, ValueError):
        return None
    first = float(flow.get("first_ts", 0.0))
    last = float(flow.get("last_ts", first))
    proto = flow.get("proto")
    ports = {flow.get("dst_port"), flow.get("src_port")}

    best = None
    for row in rows:
        ov = _overlap(row, first, last, slack)
        if ov is None:
            continue
        if not ((_in(row.src, src) and _in(row.dst, dst)) or
                (_in(row.src, dst) and _in(row.dst, src))):
            continue
        pmatch = (row.protos is None or proto in row.protos) and (
            row.ports is None or any(a <= p <= b for p in ports if p is not None
                                     for a, b in row.ports))
        key = (row.label == "attack", pmatch, ov)
        if best is None or key > best[0]:
            best = (key, row)
    if best is not None:
        r = best[1]
        return r.label, r.kind, r.scenario

    attacker = ipaddress.ip_address(ATTACKER)
    if attacker in (src, dst):
        for row in rows:
            if row.label == "attack" and row.src is not None and attacker in row.src \
                    and _overlap(row, first, last, slack) is not None:
                return "attack", row.kind, row.scenario
        return None

    if src in benign_hosts and dst in benign_hosts:
        for row in rows:
            if _overlap(row, first, last, slack) is not None:
                return "benign", "other", row.scenario
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("flows", help="JSON Lines flow records ('-' for stdin)")
    ap.add_argument("labels", help="labels.tsv from generate.sh")
    ap.add_argument("-o", "--out", default="-", help="output JSON Lines ('-' = stdout)")
    ap.add_argument("--slack", type=float, default=2.0,
                    help="seconds a flow may start before / end after a window (default 2)")
    ap.add_argument("--keep-unknown", action="store_true",
                    help="keep unmatched flows with label 'unknown' instead of dropping them")
    a = ap.parse_args(argv)

    rows = load_rows(a.labels)
    benign_hosts = {ipaddress.ip_address(h) for h in
                    ("10.77.0.10", "10.77.0.11", "10.77.0.12", "10.77.0.53",
                     "10.77.0.54", "10.77.0.99")}
    fin = sys.stdin if a.flows == "-" else open(a.flows)
    fout = sys.stdout if a.out == "-" else open(a.out, "w")
    counts = collections.Counter()
    for line in fin:
        line = line.strip()
        if not line:
            continue
        flow = json.loads(line)
        res = classify(flow, rows, benign_hosts, a.slack)
        if res is None:
            counts[("unknown", "-")] += 1
            if not a.keep_unknown:
                continue
            res = ("unknown", "unknown", "")
        else:
            counts[(res[0], res[1])] += 1
        flow["label"], flow["kind"], flow["scenario"] = res
        fout.write(json.dumps(flow, separators=(",", ":")) + "\n")
    if fout is not sys.stdout:
        fout.close()
    for (lab, kind), n in sorted(counts.items()):
        print(f"{lab}\t{kind}\t{n}", file=sys.stderr)
    dropped = counts[("unknown", "-")]
    if dropped and not a.keep_unknown:
        print(f"dropped {dropped} unknown flows", file=sys.stderr)


if __name__ == "__main__":
    main()
