#!/usr/bin/env bash
# Build Wirefold and run its main job on the embedded default: replay a
# bundled real capture through the whole pipeline (decode, flows, embeddings,
# FlowBatches) into a core started in-process on loopback (gRPC, SQLite), and
# print the top flows, the summary and where the data is. Pass capture files
# to replay those instead.
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
[ ${#files[@]} -eq 0 ] && files=("$ROOT/sensor/tests/pcaps/zeek__dns-edns-ecs.pcap")
DATA="${WIREFOLD_DATA:-$ROOT/.local/data}"
mkdir -p "$DATA"
log "replaying ${files[*]}"
"$ROOT/target/release/wirefold" replay --top 10 --core embedded --data-dir "$DATA" --sensor-id demo \
    --out "$DATA/flows.jsonl" --summary-json "$DATA/summary.json" "${files[@]}"
log "flow records: $DATA/flows.jsonl ($(wc -l <"$DATA/flows.jsonl") flows, with embeddings)"
log "core database: $DATA/core.db (tables flows and sensors); summary: $DATA/summary.json"
