#!/usr/bin/env bash
# Cut the small test samples in samples/ from a generate.sh run.
#   make_samples.sh [RUN_OUTDIR]     (default: .local/datagen of the repo)
# Needs editcap/capinfos (wireshark-common). Writes samples/*.pcap (classic
# pcap), samples/labels.tsv (the runs' rows of those scenarios) and
# samples/summary.tsv. PROVENANCE.md is written by hand from its output.
set -euo pipefail
DATAGEN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN=${1:-$DATAGEN_DIR/../../.local/datagen}
S=$DATAGEN_DIR/samples
mkdir -p "$S"
rm -f "$S"/*.pcap

first_ts() { capinfos -a -T -r -S "$1" | cut -f2 | cut -d. -f1; }

# 1. nmap SYN scan: the whole scan, full packets (first 2000)
editcap -F pcap -r "$RUN/nmap_syn.pcap" "$S/nmap_syn.pcap" 1-2000
# 2. iperf3 bulk: the first upload (2000 packets), cut to 96 bytes per frame
#    (IP/TCP headers kept; the IP length fields keep the real sizes)
editcap -F pcap -s 96 -r "$RUN/bulk.pcap" "$S/bulk.pcap" 1-2000
# 3. mixed demo: from +3 s of the mixed window, the first MIXED_PKTS packets
#    (benign web/dns/ssh with the nmap scan at +4 s, the hydra ssh run at +6 s
#    and the SYN burst at +8 s in it), frames cut to 96 bytes (headers kept)
MIXED_PKTS=${MIXED_PKTS:-3000}
t0=$(first_ts "$RUN/mixed.pcap")
tmp=$(mktemp /tmp/wfg-mixed.XXXXXX.pcap)
editcap -F pcap -s 96 -A "$((t0 + 3))" -B "$((t0 + 14))" "$RUN/mixed.pcap" "$tmp"
editcap -F pcap -r "$tmp" "$S/mixed.pcap" "1-$MIXED_PKTS"
rm -f "$tmp"
# 4. DNS amplification (spoofed source): the first 1200 packets, 128 bytes
editcap -F pcap -s 128 -r "$RUN/amplification.pcap" "$S/amplification.pcap" 1-1200

{
  head -n1 "$RUN/labels.tsv"
  awk -F'\t' '$1=="nmap_syn"||$1=="bulk"||$1=="mixed"||$1=="amplification"' "$RUN/labels.tsv"
} >"$S/labels.tsv"

{
  printf 'file\tpackets\tbytes_on_disk\tfirst\tlast\n'
  for f in "$S"/*.pcap; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$(basename "$f")" "$(capinfos -c -T -r -M "$f" | cut -f2)" \
      "$(stat -c %s "$f")" "$(capinfos -a -T -r -S "$f" | cut -f2)" "$(capinfos -e -T -r -S "$f" | cut -f2)"
  done
} >"$S/summary.tsv"
column -t -s $'\t' "$S/summary.tsv"
du -cb "$S"/*.pcap | tail -1
