#!/usr/bin/env bash
# Export training features from a folder of captures:
#   embeddings/train/make_features.sh CAPTURE_DIR OUT_DIR
# writes OUT_DIR/features.csv.gz (one row per flow, `wirefold replay
# --features-out`) and OUT_DIR/files.tsv (each capture's name and sha256).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$1"
OUT="$2"
mkdir -p "$OUT"
(cd "$ROOT" && cargo build --release --locked -q -p wirefold-sensor --bin wirefold)
mapfile -t files < <(find "$SRC" -maxdepth 1 -type f \( -name '*.pcap' -o -name '*.pcapng' \) | sort)
# Each file separately (a damaged file must not stop the rest), appended.
tmp="$OUT/.features.csv"
: >"$tmp"
header=""
for f in "${files[@]}"; do
    "$ROOT/target/release/wirefold" replay --no-embed --no-output --features-out "$OUT/.one.csv" "$f" 2>/dev/null || true
    [ -s "$OUT/.one.csv" ] || continue
    [ -z "$header" ] && header=$(head -1 "$OUT/.one.csv") && echo "$header" >"$tmp"
    tail -n +2 "$OUT/.one.csv" >>"$tmp"
done
rm -f "$OUT/.one.csv"
gzip -9n <"$tmp" >"$OUT/features.csv.gz"
rm -f "$tmp"
(for f in "${files[@]}"; do printf '%s\t%s\n' "$(basename "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"; done) >"$OUT/files.tsv"
echo "$OUT/features.csv.gz: $(zcat "$OUT/features.csv.gz" | tail -n +2 | wc -l) flows from ${#files[@]} captures" >&2
