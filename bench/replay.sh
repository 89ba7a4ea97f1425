#!/usr/bin/env bash
# Whole-process replay throughput: wirefold against a bare read loop
# (tcpdump -r) and peer flow tools on the same capture, side by side in one
# run, file in page cache. Prints medians and ratios.
#
#   bench/replay.sh [CAPTURE] [RUNS]
#   BENCH_TOOLS="wirefold wf-ipfix" bench/replay.sh "" 11   # only those tools
#
# Without CAPTURE, builds a 3.16 M-packet capture (bench/make_capture.py) from
# the developers' corpus next to the checkout if present, else from the
# bundled test captures. Installs the peers from Debian (softflowd, nfdump's
# nfpcapd, argus) when they are missing; a peer that fails is reported as such.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/lib.sh"
apt_install tcpdump softflowd nfdump argus-server bc time python3
setup_python   # ONNX Runtime: wirefold embeds every flow, as it does by default
CAP="$(replay_capture "${1:-}")"
RUNS="${2:-5}"
WORK="$ROOT/.local/bench"
mkdir -p "$WORK"
(cd "$ROOT" && cargo build --release --locked -q -p wirefold-sensor --bin wirefold)
WF="$ROOT/target/release/wirefold"
PKTS=$("$WF" replay --no-output --summary-json "$WORK/summary.json" "$CAP" 2>/dev/null; python3 -c "import json;print(json.load(open('$WORK/summary.json'))['packets'])")
cat "$CAP" >/dev/null

# A UDP sink so softflowd's NetFlow and wirefold's IPFIX export have a listener.
python3 -c "
import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1]); sys.stdout.flush()
while True: s.recv(65536)
" >"$WORK/sink.port" &
SINK=$!
trap 'kill $SINK 2>/dev/null || true' EXIT
sleep 0.3
PORT=$(cat "$WORK/sink.port")

declare -A CMD=(
    [tcpdump-r]="tcpdump -r $CAP -w /dev/null"
    [wirefold]="$WF replay --out /dev/null $CAP"
    [wf-noinsp]="$WF replay --out /dev/null --no-inspect $CAP"
    [wf-ipfix]="$WF replay --out /dev/null --ipfix udp://127.0.0.1:$PORT $CAP"
    [wf-ipfix-1400]="$WF replay --out /dev/null --ipfix udp://127.0.0.1:$PORT --ipfix-mtu 1400 $CAP"
    [softflowd]="softflowd -r $CAP -n 127.0.0.1:$PORT"
    [nfpcapd]="nfpcapd -r $CAP -w $WORK/nfpcapd"
    [argus]="argus -r $CAP -w /dev/null"
)
ORDER=(tcpdump-r wirefold wf-noinsp wf-ipfix softflowd nfpcapd argus)
# BENCH_TOOLS="wirefold wf-ipfix" runs only those (for a quick ratio).
if [ -n "${BENCH_TOOLS:-}" ]; then read -r -a ORDER <<<"$BENCH_TOOLS"; fi
mkdir -p "$WORK/nfpcapd"
declare -A TIMES CPU STATUS
for tool in "${ORDER[@]}"; do
    exe=${CMD[$tool]%% *}
    command -v "$exe" >/dev/null || [ -x "$exe" ] || STATUS[$tool]="not installed"
done
for ((i = 0; i < RUNS; i++)); do
    for tool in "${ORDER[@]}"; do
        [ -n "${STATUS[$tool]:-}" ] && continue
        rm -rf "$WORK/nfpcapd"/* 2>/dev/null || true
        if ! /usr/bin/time -f '%e %U %S' -o "$WORK/$tool.time" ${CMD[$tool]} >/dev/null 2>"$WORK/$tool.err"; then
            STATUS[$tool]="failed: $(tail -c 160 "$WORK/$tool.err" | tr '\n' ' ')"
            continue
        fi
        read -r wall usr sys <"$WORK/$tool.time"
        TIMES[$tool]+="$wall "
        CPU[$tool]+="$(echo "$usr + $sys" | bc) "
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
printf '%s packets, %s runs each, medians of wall seconds and CPU seconds (user+sys, all threads); whole process, file in page cache\n' "$PKTS" "$RUNS"
printf '%-10s %9s %9s %9s %s\n' tool seconds Mpps cpu-s note
declare -A MPPS
for tool in "${ORDER[@]}"; do
    if [ -n "${STATUS[$tool]:-}" ]; then
        printf '%-10s %9s %9s %9s %s\n' "$tool" - - - "${STATUS[$tool]}"
        continue
    fi
    s=$(echo "${TIMES[$tool]}" | median)
    MPPS[$tool]=$(echo "scale=3; $PKTS / $s / 1000000" | bc)
    c=$(echo "${CPU[$tool]}" | median)
    printf '%-10s %9.3f %9.2f %9.3f\n' "$tool" "$s" "${MPPS[$tool]}" "$c"
done
best=0
bestname=none
for tool in softflowd nfpcapd argus; do
    v=${MPPS[$tool]:-0}
    if (($(echo "$v > $best" | bc))); then best=$v; bestname=$tool; fi
done
wf=${MPPS[wirefold]}
r_tcpdump=$(echo "scale=2; $wf / ${MPPS[tcpdump-r]:-1}" | bc)
r_peer=$( (($(echo "$best > 0" | bc))) && echo "scale=2; $wf / $best" | bc || echo n/a)
line="replay: wirefold $wf Mpps, tcpdump-r ${MPPS[tcpdump-r]:-n/a} Mpps"
for tool in softflowd nfpcapd argus; do line+=", $tool ${MPPS[$tool]:-n/a}"; done
line+=", wirefold/tcpdump-r $r_tcpdump, wirefold/best-peer($bestname) $r_peer"
echo "$line"
# JSON plus IPFIX export (docs/ipfix.md) against JSON alone, same run.
if [ -n "${MPPS[wf-ipfix-1400]:-}" ]; then
    echo "ipfix-1400: wirefold+ipfix --ipfix-mtu 1400 ${MPPS[wf-ipfix-1400]} Mpps, ratio $(echo "scale=3; ${MPPS[wf-ipfix-1400]} / $wf" | bc)"
fi
if [ -n "${MPPS[wf-ipfix]:-}" ]; then
    echo "ipfix: wirefold+ipfix ${MPPS[wf-ipfix]} Mpps, wirefold ${wf} Mpps, ratio $(echo "scale=3; ${MPPS[wf-ipfix]} / $wf" | bc) ($(grep -h '^ipfix ' "$WORK/wf-ipfix.err" | tail -1))"
fi
# Inspection (docs/inspection.md) against --no-inspect, same run.
if [ -n "${MPPS[wf-noinsp]:-}" ]; then
    echo "inspect: wirefold ${wf} Mpps, --no-inspect ${MPPS[wf-noinsp]} Mpps, ratio $(echo "scale=3; $wf / ${MPPS[wf-noinsp]}" | bc); wirefold/tcpdump-r $r_tcpdump"
fi
