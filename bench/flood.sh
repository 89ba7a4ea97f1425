#!/usr/bin/env bash
# A SYN flood (every packet a new flow from a random source and port)
# followed by the normal benchmark mix, tracked with --max-flows 1,000,000,
# next to the normal mix alone in the same run; in memory, one core.
#
#   bench/flood.sh [CAPTURE] [FLOOD_PACKETS] [RUNS]
#
# Ends with one line:
# flood: X Mpps, normal: Y Mpps, ratio: R, max stall: S ms, table bytes/flow: B, peak rss: M MiB
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/lib.sh"
CAP="$(replay_capture "${1:-}")"
FLOOD="${2:-3000000}"
RUNS="${3:-3}"
(cd "$ROOT" && cargo build --release --locked -q -p wirefold-bench --bin flow-bench)
taskset -c 1 "$ROOT/target/release/flow-bench" flood "$CAP" "$FLOOD" "$RUNS"
