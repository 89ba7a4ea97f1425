#!/usr/bin/env bash
# Live capture under load: tcpreplay at top speed over a veth pair in a
# network namespace, captured by wirefold (pipeline and run-to-completion),
# tcpdump and netsniff-ng in turn; then --pps steps to find wirefold's highest
# zero-drop rate. Needs root.
#
#   bench/tcpreplay.sh [LOOPS]      (default 10 loops of a 300k-packet capture)
#
# Reports packets sent, seen and dropped, and the CPU seconds each capturing
# process spent per million packets (user+sys from GNU time, all threads).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/lib.sh"
apt_install tcpreplay tcpdump netsniff-ng iproute2 time bc python3
setup_python   # ONNX Runtime: the full pipeline embeds every flow
LOOPS="${1:-10}"
WORK="$ROOT/.local/bench"
mkdir -p "$WORK"
CAP="$WORK/live-300k-nofrag.pcap"
bench_capture "$CAP" "$(corpus_dir)" 300000 9000 nofrag
(cd "$ROOT" && cargo build --release --locked -q -p wirefold-sensor --bin wirefold)
WF="$ROOT/target/release/wirefold"

NS="wfbench$$"
cleanup() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n "$NS" link add wfa type veth peer name wfb
for l in wfa wfb; do ip -n "$NS" link set "$l" mtu 9000 up; done
nsx() { ip netns exec "$NS" "$@"; }

# run_one NAME RATE CMD... : start the capture, replay, stop it with SIGINT.
# Sets SENT, SEEN, DROPPED, CPU (seconds).
run_one() {
    local name=$1 rate=$2
    shift 2
    rm -f "$WORK/$name.time" "$WORK/$name.err" "$WORK/$name.sum"
    setsid ip netns exec "$NS" /usr/bin/time -f '%U %S' -o "$WORK/$name.time" "$@" >"$WORK/$name.err" 2>&1 &
    local pid=$!
    sleep 3
    local speed=(--topspeed)
    [ "$rate" != top ] && speed=(--pps "$rate")
    SENT=$(nsx tcpreplay -i wfa -K --loop "$LOOPS" "${speed[@]}" "$CAP" 2>/dev/null | awk '/Successful packets:/ {print $3}')
    sleep 1
    kill -INT -- -"$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    read -r u s <"$WORK/$name.time"
    CPU=$(echo "$u + $s" | bc)
    case $name in
    wirefold*)
        SEEN=$(python3 -c "import json;print(json.load(open('$WORK/$name.sum'))['packets'])")
        DROPPED=$(python3 -c "import json;l=json.load(open('$WORK/$name.sum'))['live'];print(l['kernel_drops']+l['ring_drops'])")
        ;;
    tcpdump)
        SEEN=$(awk '/packets captured/ {print $1}' "$WORK/$name.err")
        DROPPED=$(awk '/dropped by kernel/ {print $1}' "$WORK/$name.err")
        ;;
    netsniff-ng)
        SEEN=$(tr '\r' '\n' <"$WORK/$name.err" | awk '/packets passed filter/ {print $1}')
        DROPPED=$(tr '\r' '\n' <"$WORK/$name.err" | awk '/failed filter/ {print $1}')
        ;;
    esac
}

per_m() { echo "scale=3; $1 * 1000000 / ($2 + 0.000001)" | bc; }
report() { printf '%-26s sent %9s seen %9s dropped %8s cpu %6.2f s  %6.3f s/Mpkt\n' "$1" "$SENT" "$SEEN" "$DROPPED" "$CPU" "$(per_m "$CPU" "$SEEN")"; }

echo "top speed, $LOOPS loops of $(basename "$CAP") (-K preloaded)"
run_one wirefold-pipeline top "$WF" capture --iface wfb --mode pipeline --out /dev/null --status-interval 0 --summary-json "$WORK/wirefold-pipeline.sum"
report "wirefold pipeline"
W=("$SENT" "$SEEN" "$DROPPED" "$(per_m "$CPU" "$SEEN")")
run_one wirefold-rtc top "$WF" capture --iface wfb --mode run-to-completion --out /dev/null --status-interval 0 --summary-json "$WORK/wirefold-rtc.sum"
report "wirefold run-to-completion"
run_one tcpdump top tcpdump -i wfb -w /dev/null -B 131072
report "tcpdump -w /dev/null"
T=("$SEEN" "$DROPPED" "$(per_m "$CPU" "$SEEN")")
run_one netsniff-ng top netsniff-ng -i wfb -o /dev/null -s -b 0
report "netsniff-ng -o /dev/null -s"

echo "rate steps, wirefold pipeline"
BEST=0
for rate in 200000 400000 600000 800000 1000000 1200000 1500000; do
    run_one wirefold-pipeline "$rate" "$WF" capture --iface wfb --mode pipeline --out /dev/null --status-interval 0 --summary-json "$WORK/wirefold-pipeline.sum"
    report "  --pps $rate"
    [ "$DROPPED" = 0 ] && [ "$SEEN" = "$SENT" ] && BEST=$rate
done
echo "highest zero-drop --pps for wirefold pipeline: $BEST (tcpreplay's own ceiling applies)"
printf 'cpu per Mpkt, wirefold pipeline / tcpdump: %.2f\n' "$(echo "${W[3]} / ${T[2]}" | bc -l)"
echo "afpacket: sent ${W[0]}, seen ${W[1]}, dropped ${W[2]}, cpu ${W[3]} s/Mpkt; tcpdump: seen ${T[0]}, dropped ${T[1]}, cpu ${T[2]} s/Mpkt"
