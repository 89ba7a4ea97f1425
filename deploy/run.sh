#!/usr/bin/env bash
# Build Wirefold and run its main job on the embedded default: replay a
# bundled real capture through the whole pipeline (decode, flows, embeddings,
# FlowBatches) into a core started in-process on loopback (gRPC, SQLite),
# print the top flows, the summary and where the data is, and serve the
# sensor's and the core's Prometheus metrics for a minute afterwards
# (WIREFOLD_METRICS=ADDR, WIREFOLD_LINGER=30s|never to change; Ctrl-C ends
# it early). Pass capture files to replay those instead.
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
demo=0
# The default: a capture from the bundled traffic generator that mixes benign
# traffic with attacks (embeddings/datagen/samples/PROVENANCE.md), with its labels.
[ ${#files[@]} -eq 0 ] && files=("$ROOT/embeddings/datagen/samples/mixed.pcap") && demo=1
DATA="${WIREFOLD_DATA:-$ROOT/.local/data}"
METRICS="${WIREFOLD_METRICS:-127.0.0.1:9462}"
# Something already answers on the default port: let the kernel pick one (wirefold prints it).
if [ -z "${WIREFOLD_METRICS:-}" ] && (exec 3<>/dev/tcp/127.0.0.1/9462) 2>/dev/null; then
    METRICS="127.0.0.1:0"
fi
mkdir -p "$DATA"
log "replaying ${files[*]}"
"$ROOT/target/release/wirefold" replay --top 10 --core embedded --data-dir "$DATA" --sensor-id demo \
    --out "$DATA/flows.jsonl" --summary-json "$DATA/summary.json" \
    --metrics "$METRICS" --linger "${WIREFOLD_LINGER:-60s}" "${files[@]}"
log "flow records: $DATA/flows.jsonl ($(wc -l <"$DATA/flows.jsonl") flows, with embeddings)"
log "core database: $DATA/core.db (tables flows and sensors); summary: $DATA/summary.json"
if [ "$demo" = 1 ]; then
    threshold=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["threshold"])' "$ROOT/embeddings/model/wirefold-det-v2.card.json")
    "$PYTHON" "$ROOT/embeddings/datagen/top_scores.py" "$DATA/flows.jsonl" "$ROOT/embeddings/datagen/samples/labels.tsv" \
        -n 10 --threshold "$threshold" >&2
fi
