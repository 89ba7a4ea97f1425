#!/usr/bin/env bash
# Embedding throughput (feature extraction + inference + int8 quantization)
# on one core at batch sizes 64..4096, and FlowBatch bytes per flow against
# the JSON that `wirefold replay` writes for the same flows.
#
#   bench/embed.sh [FILE...]     (default: the developers' corpus, else the bundled captures)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/lib.sh"
setup_python
cd "$ROOT"
cargo build --release --locked -q -p wirefold-bench --bin embed-bench
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    SRC=$(corpus_dir)
    mapfile -t files < <(find "$SRC" -maxdepth 1 -name '*.pcap' | sort)
fi
"$ROOT/target/release/embed-bench" --rounds "${ROUNDS:-5}" "${files[@]}"
