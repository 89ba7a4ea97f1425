#!/usr/bin/env bash
# What /metrics costs the packet path: the same replay with no metrics
# server, and with /metrics scraped ten times a second all along, side by
# side in one run, file in page cache. Prints medians and the ratio.
#
#   bench/metrics.sh [CAPTURE] [RUNS]
#
# Without CAPTURE, uses the 3.16 M-packet benchmark capture of replay.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/lib.sh"
apt_install python3
setup_python
CAP="$(replay_capture "${1:-}")"
RUNS="${2:-7}"
(cd "$ROOT" && cargo build --release --locked -q -p wirefold-sensor --bin wirefold)
WF="$ROOT/target/release/wirefold"
cat "$CAP" >/dev/null

python3 - "$WF" "$CAP" "$RUNS" <<'PY'
import json, re, statistics, subprocess, sys, threading, time, urllib.request
wf, cap, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])

def run(scrape, serve=True):
    args = [wf, "replay", "--out", "/dev/null", "--summary-json", "/dev/stdout", cap]
    if scrape or serve:
        args += ["--metrics", "127.0.0.1:0"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scrapes, stop = [0], threading.Event()
    if scrape:
        line = p.stderr.readline()
        while "metrics on http://" not in line:
            line = p.stderr.readline()
        url = re.search(r"http://\S+/metrics", line).group(0)
        def loop():
            while not stop.is_set():
                try:
                    urllib.request.urlopen(url, timeout=1).read()
                    scrapes[0] += 1
                except OSError:
                    pass
                time.sleep(0.1)
        threading.Thread(target=loop, daemon=True).start()
    out, _ = p.communicate()
    stop.set()
    s = json.loads(out[out.index("{"):])
    return s["packets"] / s["seconds"], scrapes[0]

plain, served, scraped, n_scrapes = [], [], [], []
for _ in range(runs):
    plain.append(run(False, serve=False)[0])
    served.append(run(False, serve=True)[0])
    r, n = run(True)
    scraped.append(r)
    n_scrapes.append(n)
a, m, b = statistics.median(plain), statistics.median(served), statistics.median(scraped)
print(f"{runs} runs each, medians (packets/s over the pipeline's own time; the scraper is a Python process on the same 2 cores)")
print(f"  no metrics server          {a/1e6:6.2f} Mpps")
print(f"  /metrics served, idle      {m/1e6:6.2f} Mpps")
print(f"  /metrics scraped at 10 Hz  {b/1e6:6.2f} Mpps  ({statistics.median(n_scrapes):.0f} scrapes per run)")
print(f"metrics: scraped {b/1e6:.2f} Mpps, served {m/1e6:.2f} Mpps, none {a/1e6:.2f} Mpps, ratios {b/a:.3f} and {m/a:.3f}")
PY
