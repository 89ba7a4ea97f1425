#!/usr/bin/env bash
# Parse + flow tracking on one core, in memory, next to a bare loop that only
# reads each packet's first 64 bytes (the same packets, the same run).
#
#   bench/pipeline.sh [CAPTURE] [RUNS]
#
# Ends with exactly one line: pipeline: X Mpps, bare: Y Mpps, ratio: Z
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/lib.sh"
CAP="$(replay_capture "${1:-}")"
RUNS="${2:-7}"
(cd "$ROOT" && cargo build --release --locked -q -p wirefold-bench --bin flow-bench)
taskset -c 1 "$ROOT/target/release/flow-bench" pipeline "$CAP" "$RUNS"
