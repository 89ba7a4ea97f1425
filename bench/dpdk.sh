#!/usr/bin/env bash
# DPDK rx + parse + flow tracking on one lcore, from net_pcap with
# infinite_rx=1 on a capture built from the corpus, next to offline replay of
# the same capture in the same run, and the bare DPDK read loop (rx and free
# only, dpdk-shim's `rxonly` example) as the ceiling the PMD sets. Reports the
# median of the per-second status lines (after a warm-up), and ends with
# `dpdk: X Mpps, offline: Z Mpps`.
#
# Then the same capture path without the PMD's copy: bench's dpdk-ring-bench
# feeds a net_ring device from a second lcore with the capture's frames, the
# same mbufs again and again (reference counted, like a NIC's DMA), and reads
# it on one lcore twice: the bare read loop, then DpdkSource -> decode -> flow
# table -> export thread (what `wirefold capture --dpdk` runs per lcore).
# Median of 5 runs.
#
#   bench/dpdk.sh [SECONDS]     (default 12)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/lib.sh"
apt_install libdpdk-dev dpdk pkg-config python3
SECS="${1:-12}"
WORK="$ROOT/.local/bench"
mkdir -p "$WORK"
CAP="$WORK/dpdk-60k-2k.pcap"
# net_pcap cannot loop (infinite_rx) frames that need chained mbufs: keep frames within one 2 KiB buffer.
bench_capture "$CAP" "$(corpus_dir)" 60000 2000
(cd "$ROOT" && cargo build --release --locked -q -p wirefold-sensor --features dpdk --bin wirefold &&
    cargo build --release --locked -q -p dpdk-shim --example rxonly &&
    cargo build --release --locked -q -p wirefold-bench --features dpdk --bin dpdk-ring-bench)
WF="$ROOT/target/release/wirefold"
PKTS=$(python3 -c "import sys;d=open('$CAP','rb').read();o=24;n=0
while o+16<=len(d):
    import struct;c=struct.unpack('<I',d[o+8:o+12])[0];o+=16+c;n+=1
print(n)")
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

"$WF" capture --dpdk --eal "--no-huge -m 2048 --no-shconf --no-pci -l 0 --vdev net_pcap0,rx_pcap=$CAP,infinite_rx=1" \
    --mbufs $((PKTS * 2 + 4096)) --no-embed --out /dev/null --status-interval 1 --summary-json "$WORK/dpdk.sum" \
    2>"$WORK/dpdk.err" &
pid=$!
sleep "$SECS"
kill -INT $pid
wait $pid || true
DPDK=$(grep -E '^wirefold: [0-9]+ pkt/s' "$WORK/dpdk.err" | awk '{print $2}' | tail -n +4 | median)
python3 -c "import json;d=json.load(open('$WORK/dpdk.sum'))['live']['dpdk'];print('dpdk port stats:', {k:d[k] for k in ('ipackets','imissed','ierrors','rx_nombuf')})"

EAL="--no-huge -m 2048 --no-shconf --no-pci -l 0 --vdev net_pcap0,rx_pcap=$CAP,infinite_rx=1"
# shellcheck disable=SC2086
RX=$("$ROOT/target/release/examples/rxonly" "$((SECS - 2))" $((PKTS * 2 + 4096)) $EAL 2>/dev/null | awk '/^rxonly:/{print $2}')

RING_WF=()
RING_BARE=()
for _ in 1 2 3 4 5; do
    line=$("$ROOT/target/release/dpdk-ring-bench" "$CAP" 4 2>/dev/null | grep '^dpdk-ring:')
    RING_WF+=("$(echo "$line" | awk '{print $3}')")
    RING_BARE+=("$(echo "$line" | awk '{print $6}')")
done
RWF=$(printf '%s\n' "${RING_WF[@]}" | median)
RBARE=$(printf '%s\n' "${RING_BARE[@]}" | median)

OFF=()
for _ in 1 2 3 4 5; do
    "$WF" replay --no-embed --out /dev/null --summary-json "$WORK/off.sum" "$CAP" "$CAP" "$CAP" "$CAP" "$CAP" 2>/dev/null
    OFF+=("$(python3 -c "import json;print(json.load(open('$WORK/off.sum'))['packets_per_second'])")")
done
OFFM=$(printf '%s\n' "${OFF[@]}" | median)
echo "capture: $PKTS packets looped by net_pcap (infinite_rx), one lcore; offline: the same file x5, in-process time, median of 5"
printf 'rx only (bare read loop, rx + free): %.2f Mpps; dpdk / rx-only: %.2f\n' "$(echo "$RX / 1000000" | bc -l)" "$(echo "$DPDK / $RX" | bc -l)"
printf 'zero-copy net_ring, one lcore, median of 5: wirefold %.2f Mpps (runs: %s), bare read loop %.2f Mpps, ratio %.2f\n' \
    "$RWF" "${RING_WF[*]}" "$RBARE" "$(echo "$RWF / $RBARE" | bc -l)"
printf 'dpdk / offline: %.2f\n' "$(echo "$DPDK / $OFFM" | bc -l)"
printf 'dpdk: %.2f Mpps, offline: %.2f Mpps\n' "$(echo "$DPDK / 1000000" | bc -l)" "$(echo "$OFFM / 1000000" | bc -l)"
