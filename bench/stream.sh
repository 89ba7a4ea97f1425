#!/usr/bin/env bash
# End to end: replay -> embed -> FlowBatches -> gRPC -> core -> SQLite on
# loopback (`--core embedded`), next to replay alone in the same run; then
# the core's ingest capacity on its own (ingest-bench). Medians of RUNS.
#
#   bench/stream.sh [CAPTURE] [RUNS]
#
# Without CAPTURE, builds a flow-dense capture (about two packets per flow:
# the corpus's DHCP flood, EDNS DNS and NTP traces, 1.2 M packets) so that the
# stream, not the replay, is what is measured.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/lib.sh"
apt_install time bc python3
setup_python
CAP="${1:-}"
RUNS="${2:-3}"
WORK="$ROOT/.local/bench"
mkdir -p "$WORK"
if [ -z "$CAP" ]; then
    CAP="$WORK/dense-1m.pcap"
    if [ ! -s "$CAP" ]; then
        SRC=$(corpus_dir)
        mkdir -p "$WORK/dense-src"
        for f in zeek__dhcp__dhcp_flood.pcap zeek__dhcp__dhcp.pcap zeek__dns-edns-ecs.pcap zeek__ntp__NTP_sync.pcap; do
            [ -f "$SRC/$f" ] && ln -sf "$(realpath "$SRC/$f")" "$WORK/dense-src/$f"
        done
    fi
    bench_capture "$CAP" "$WORK/dense-src" 1200000
fi
(cd "$ROOT" && cargo build --release --locked -q -p wirefold-sensor --bin wirefold && cargo build --release --locked -q -p wirefold-bench --bin ingest-bench)
WF="$ROOT/target/release/wirefold"
cat "$CAP" >/dev/null
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
printf '[gates.score]\nmode = "off"\n[gates.novelty]\nmode = "off"\n[gates.burst]\nmode = "off"\n[gates.budget]\nmode = "off"\n[gates.drift]\nmode = "off"\n' >"$WORK/gates-off.toml"
R=() S=() RN=() SN=() SO=()
for ((i = 0; i < RUNS; i++)); do
    /usr/bin/time -f '%e' -o "$WORK/t" "$WF" replay --out /dev/null --summary-json "$WORK/r.sum" "$CAP" 2>/dev/null
    FLOWS=$(python3 -c "import json;print(json.load(open('$WORK/r.sum'))['flows_total'])")
    R+=("$(echo "$FLOWS / $(cat "$WORK/t")" | bc -l)")
    rm -rf "$WORK/stream-data"
    /usr/bin/time -f '%e' -o "$WORK/t" "$WF" replay --core embedded --data-dir "$WORK/stream-data" --out /dev/null \
        --summary-json "$WORK/s.sum" "$CAP" 2>"$WORK/s.err"
    STORED=$(python3 -c "import sqlite3;print(sqlite3.connect('$WORK/stream-data/core.db').execute('select count(*) from flows').fetchone()[0])")
    [ "$STORED" = "$FLOWS" ] || { echo "stored $STORED of $FLOWS flows" >&2; exit 1; }
    S+=("$(echo "$FLOWS / $(cat "$WORK/t")" | bc -l)")
    # The same without the JSON records (a sensor that only streams).
    /usr/bin/time -f '%e' -o "$WORK/t" "$WF" replay --no-output "$CAP" 2>/dev/null
    RN+=("$(echo "$FLOWS / $(cat "$WORK/t")" | bc -l)")
    rm -rf "$WORK/stream-data"
    /usr/bin/time -f '%e' -o "$WORK/t" "$WF" replay --core embedded --data-dir "$WORK/stream-data" --no-output \
        --summary-json "$WORK/s.sum" "$CAP" 2>"$WORK/s.err"
    STORED=$(python3 -c "import sqlite3;print(sqlite3.connect('$WORK/stream-data/core.db').execute('select count(*) from flows').fetchone()[0])")
    [ "$STORED" = "$FLOWS" ] || { echo "stored $STORED of $FLOWS flows" >&2; exit 1; }
    SN+=("$(echo "$FLOWS / $(cat "$WORK/t")" | bc -l)")
    rm -rf "$WORK/stream-data"
    /usr/bin/time -f '%e' -o "$WORK/t" "$WF" replay --core embedded --core-gates "$WORK/gates-off.toml" \
        --data-dir "$WORK/stream-data" --out /dev/null --summary-json "$WORK/s.sum" "$CAP" 2>"$WORK/s.err"
    STORED=$(python3 -c "import sqlite3;print(sqlite3.connect('$WORK/stream-data/core.db').execute('select count(*) from flows').fetchone()[0])")
    [ "$STORED" = "$FLOWS" ] || { echo "stored $STORED of $FLOWS flows (gates off)" >&2; exit 1; }
    SO+=("$(echo "$FLOWS / $(cat "$WORK/t")" | bc -l)")
done
RM=$(printf '%s\n' "${R[@]}" | median)
SM=$(printf '%s\n' "${S[@]}" | median)
RNM=$(printf '%s\n' "${RN[@]}" | median)
SNM=$(printf '%s\n' "${SN[@]}" | median)
SOM=$(printf '%s\n' "${SO[@]}" | median)
echo "$FLOWS flows per run, every one verified in the core's database; whole-process wall time, median of $RUNS"
"$WF" replay --no-output --batches-out "$WORK/batches.fb" "$CAP" 2>/dev/null
GON=() GOFF=()
for ((i = 0; i < RUNS; i++)); do
    GON+=("$(timeout 300 "$ROOT/target/release/ingest-bench" "$WORK/batches.fb" "$WORK/ingest" 1000000 | tee /dev/stderr | sed -E 's/.*: ([0-9]+) flows\/s.*/\1/')")
    GOFF+=("$(timeout 300 "$ROOT/target/release/ingest-bench" "$WORK/batches.fb" "$WORK/ingest" 1000000 gates-off | tee /dev/stderr | sed -E 's/.*: ([0-9]+) flows\/s.*/\1/')")
done
GONM=$(printf '%s\n' "${GON[@]}" | median)
GOFFM=$(printf '%s\n' "${GOFF[@]}" | median)
printf 'core ingest: gates on %.0f flows/s, gates off %.0f flows/s, ratio: %.2f (median of %d)\n' "$GONM" "$GOFFM" "$(echo "$GONM / $GOFFM" | bc -l)" "$RUNS"
printf 'stream: %.0f flows/s, replay-only: %.0f flows/s, ratio: %.2f\n' "$SM" "$RM" "$(echo "$SM / $RM" | bc -l)"
printf 'stream, gates on %.0f flows/s, gates off %.0f flows/s, ratio: %.2f\n' "$SM" "$SOM" "$(echo "$SM / $SOM" | bc -l)"
printf 'stream without JSON (--no-output): %.0f flows/s, replay-only: %.0f flows/s, ratio: %.2f\n' "$SNM" "$RNM" "$(echo "$SNM / $RNM" | bc -l)"
