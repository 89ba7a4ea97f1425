#!/usr/bin/env bash
# Build Wirefold and run its main job on the embedded default: replay a
# bundled real capture through the pipeline and print the top flows and the
# summary. Pass capture files to replay those instead.
#
#   ./deploy/run.sh [FILE...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_rust
apt_install ca-certificates pkg-config libpcap-dev python3-venv
setup_python
cd "$ROOT"
log "building wirefold (release)"
cargo build --release --locked -p wirefold-sensor --bin wirefold

files=("$@")
[ ${#files[@]} -eq 0 ] && files=("$ROOT/sensor/tests/pcaps/zeek__workshop_2011_browse.pcap")
DATA="${WIREFOLD_DATA:-$ROOT/.local/data}"
mkdir -p "$DATA"
log "replaying ${files[*]}"
"$ROOT/target/release/wirefold" replay --top 10 --out "$DATA/flows.jsonl" --batches-out "$DATA/flows.fb" \
    --summary-json "$DATA/summary.json" "${files[@]}"
log "flow records: $DATA/flows.jsonl ($(wc -l <"$DATA/flows.jsonl") flows, with embeddings); FlowBatches: $DATA/flows.fb; summary: $DATA/summary.json"
