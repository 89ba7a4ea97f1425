# shellcheck shell=bash
# Wirefold datagen: topology, capture, server and cleanup helpers.
# Sourced by generate.sh. Everything here lives in network namespaces this
# file creates itself; nothing is configured on the host's own interfaces,
# there are no default routes, no NAT and no forwarding out of the topology.

# ---------------------------------------------------------------- topology --
WFG_BR_NS=wfg-br          # namespace holding the Linux bridge
WFG_BR=br0                # the bridge (capture point)
WFG_NET=10.77.0.0/24
WFG_USER=wfgdata          # temporary local user for ssh/ftp password logins
WFG_PASS='Wf9-datagen-pw'  # its password (never in the brute-force lists' head)

# namespace -> IPv4 address. The attacker is the only attack source.
declare -A WFG_IP=(
  [wfg-server]=10.77.0.10
  [wfg-client1]=10.77.0.11
  [wfg-client2]=10.77.0.12
  [wfg-dns]=10.77.0.53
  [wfg-attacker]=10.77.0.66
  [wfg-victim]=10.77.0.99
)
WFG_DNS_TUN_IP=10.77.0.54   # second address of wfg-dns, used by iodined
WFG_HOSTS=(wfg-server wfg-client1 wfg-client2 wfg-dns wfg-attacker wfg-victim)
SERVER=${WFG_IP[wfg-server]}
CLIENT1=${WFG_IP[wfg-client1]}
CLIENT2=${WFG_IP[wfg-client2]}
DNS=${WFG_IP[wfg-dns]}
ATTACKER=${WFG_IP[wfg-attacker]}
VICTIM=${WFG_IP[wfg-victim]}

WFG_BG_PIDS=()      # background processes we started (servers, captures)
WFG_CAP_PID=""
WFG_USER_MADE=0

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
now_ns() { date +%s%N; }

# Refuse to run if any namespace we want already exists (someone else's, or a
# leftover of an interrupted run: remove it by hand after checking).
topo_check_free() {
  local existing ns
  existing=$(ip netns list | awk '{print $1}')
  for ns in "$WFG_BR_NS" "${WFG_HOSTS[@]}"; do
    if grep -qx "$ns" <<<"$existing"; then
      die "network namespace $ns already exists; refusing to run"
    fi
  done
  if id "$WFG_USER" >/dev/null 2>&1; then
    die "local user $WFG_USER already exists; refusing to run"
  fi
}

# no offloads: frames on the bridge are real <=1500-byte frames with valid
# checksums, as on a wire
_no_offload() {
  local ns=$1 dev=$2
  nsx "$ns" ethtool -K "$dev" tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
}

_ns_base() {
  local ns=$1
  ip netns add "$ns"
  nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  nsx "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
  nsx "$ns" ip link set lo up
}

topo_up() {
  topo_check_free
  log "creating topology ($WFG_BR_NS + ${#WFG_HOSTS[@]} hosts, $WFG_NET)"
  _ns_base "$WFG_BR_NS"
  nsx "$WFG_BR_NS" ip link add "$WFG_BR" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  nsx "$WFG_BR_NS" ip link set "$WFG_BR" mtu 1500 up
  local ns port
  for ns in "${WFG_HOSTS[@]}"; do
    _ns_base "$ns"
    port="p-${ns#wfg-}"
    # both ends are created directly in their namespaces: the host's
    # namespace never sees them
    nsx "$WFG_BR_NS" ip link add "$port" mtu 1500 type veth peer name eth0 netns "$ns"
    nsx "$ns" sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 2>/dev/null || true
    nsx "$WFG_BR_NS" ip link set "$port" master "$WFG_BR" up
    nsx "$ns" ip link set eth0 mtu 1500 up
    nsx "$ns" ip addr add "${WFG_IP[$ns]}/24" dev eth0
    _no_offload "$WFG_BR_NS" "$port"
    _no_offload "$ns" eth0
    # answer scans/UDP probes at full speed instead of the 1/s ICMP limit
    nsx "$ns" sysctl -qw net.ipv4.icmp_ratelimit=0
    nsx "$ns" sysctl -qw net.ipv4.icmp_msgs_per_sec=100000 2>/dev/null || true
  done
  nsx wfg-dns ip addr add "$WFG_DNS_TUN_IP/24" dev eth0
  # sanity: no default route anywhere
  for ns in "${WFG_HOSTS[@]}"; do
    if nsx "$ns" ip route show default | grep -q .; then die "$ns has a default route"; fi
  done
  # warm ARP caches so each capture does not start with a burst of ARP
  for ns in wfg-client1 wfg-client2 wfg-attacker; do
    nsx "$ns" ping -c1 -W1 "$SERVER" >/dev/null 2>&1 || true
    nsx "$ns" ping -c1 -W1 "$DNS" >/dev/null 2>&1 || true
  done
}

# Kill every process still living in one of our namespaces (these can only be
# processes this script started), then delete the namespaces.
topo_down() {
  local ns pids
  for ns in "${WFG_HOSTS[@]}" "$WFG_BR_NS"; do
    ip netns list | awk '{print $1}' | grep -qx "$ns" || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n "$pids" ]]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
    fi
  done
  sleep 0.5
  for ns in "${WFG_HOSTS[@]}" "$WFG_BR_NS"; do
    ip netns list | awk '{print $1}' | grep -qx "$ns" || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n "$pids" ]]; then
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
  done
}

wfg_cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  log "cleanup"
  capture_stop >/dev/null 2>&1
  local p
  # worker loops and attack sequences running as background jobs of this shell
  for p in $(jobs -p); do kill -TERM "$p" 2>/dev/null; done
  for p in "${WFG_BG_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null
  done
  sleep 0.3
  for p in "${WFG_BG_PIDS[@]}"; do
    kill -KILL "$p" 2>/dev/null
  done
  topo_down
  if [[ $WFG_USER_MADE == 1 ]]; then userdel "$WFG_USER" 2>/dev/null; fi
  if [[ -n "${WORK:-}" && -d "$WORK" && "$WORK" == /tmp/wfg-datagen.* ]]; then
    if [[ -n "${OUTDIR:-}" && -d "$WORK/log" ]]; then
      rm -rf "$OUTDIR/logs"; cp -r "$WORK/log" "$OUTDIR/logs"
    fi
    rm -rf "$WORK"
  fi
  exit "$rc"
}

# -------------------------------------------------------------- processes --
# bg NS LOGNAME CMD... : start a background process inside a namespace
bg() {
  local ns=$1 name=$2; shift 2
  ip netns exec "$ns" "$@" >"$WORK/log/$name.log" 2>&1 &
  WFG_BG_PIDS+=("$!")
  echo "$!"
}
stop_pid() {
  local p=$1
  kill -TERM "$p" 2>/dev/null || true
  local i
  for i in $(seq 1 20); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}
# wait_port NS IP PORT [tcp|udp]: wait until something listens
wait_port() {
  local ns=$1 ip=$2 port=$3 proto=${4:-tcp} i flag=-ltnH
  [[ $proto == udp ]] && flag=-lunH
  for i in $(seq 1 50); do
    if nsx "$ns" ss $flag | awk '{print $4}' | grep -qE "^(${ip//./\\.}|\*|0\.0\.0\.0):$port$"; then return 0; fi
    sleep 0.1
  done
  log "warning: nothing listens on $ns $ip:$port/$proto"; return 1
}

# ---------------------------------------------------------------- capture --
# capture_start FILE: tcpdump on the bridge, pcap format, full snaplen
capture_start() {
  local file=$1
  # a direct command (not the nsx function) so that $! is tcpdump itself;
  # background jobs ignore SIGINT, so it is stopped with SIGTERM
  ip netns exec "$WFG_BR_NS" tcpdump -i "$WFG_BR" -Z root -s 0 -U -n -w "$file" >"$WORK/log/tcpdump.log" 2>&1 &
  WFG_CAP_PID=$!
  local i
  for i in $(seq 1 50); do
    grep -q "listening on" "$WORK/log/tcpdump.log" 2>/dev/null && break
    sleep 0.1
  done
  sleep 0.3
}
capture_stop() {
  [[ -n "$WFG_CAP_PID" ]] || return 0
  sleep 0.5
  kill -TERM "$WFG_CAP_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 50); do kill -0 "$WFG_CAP_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$WFG_CAP_PID" 2>/dev/null || true
  wait "$WFG_CAP_PID" 2>/dev/null || true
  WFG_CAP_PID=""
}

# ----------------------------------------------------------------- labels --
# label SCENARIO LABEL KIND SRC DST PROTO DST_PORT START_NS END_NS TOOL
label() {
  local IFS=$'\t'
  printf '%s\n' "$*" >>"$LABELS"
}
LABEL_HEADER=$'scenario\tlabel\tkind\tsrc\tdst\tproto\tdst_port\tstart_ns\tend_ns\ttool'

# ---------------------------------------------------------------- servers --
# All servers bind to the server/dns namespace addresses only.
make_user() {
  useradd -M -d "$WORK/home" -s /bin/sh "$WFG_USER"
  WFG_USER_MADE=1
  echo "$WFG_USER:$WFG_PASS" | chpasswd
  mkdir -p "$WORK/home/files"
  for i in 1 2 3; do head -c $((i * 40000)) /dev/urandom >"$WORK/home/files/report$i.bin"; done
  echo "hello from the wfg ftp server" >"$WORK/home/files/readme.txt"
  chown -R "$WFG_USER" "$WORK/home"
}

make_www() {
  local d=$WORK/www
  mkdir -p "$d/admin" "$d/img" "$d/docs"
  {
    echo "<!doctype html><html><head><title>wfg test site</title>"
    echo '<link rel="stylesheet" href="/style.css"><script src="/app.js"></script></head><body>'
    echo "<h1>Wirefold datagen</h1>"
    for i in $(seq 1 8); do echo "<img src=\"/img/p$i.bin\" width=1 height=1>"; done
    for i in $(seq 1 6); do echo "<p><a href=\"/docs/page$i.html\">page $i</a></p>"; done
    echo "</body></html>"
  } >"$d/index.html"
  head -c 3000 /dev/urandom | base64 >"$d/style.css"
  head -c 20000 /dev/urandom | base64 >"$d/app.js"
  for i in $(seq 1 8); do head -c $((i * 3000)) /dev/urandom >"$d/img/p$i.bin"; done
  for i in $(seq 1 6); do
    { echo "<html><body><h2>page $i</h2><pre>"; head -c $((i * i * 2000)) /dev/urandom | base64; echo "</pre></body></html>"; } >"$d/docs/page$i.html"
  done
  for s in 1k:1024 10k:10240 100k:102400 500k:512000 2m:2097152; do
    head -c "${s#*:}" /dev/urandom >"$d/file-${s%%:*}.bin"
  done
  echo "admin area" >"$d/admin/index.html"
  printf 'admin:%s\n' "$(openssl passwd -apr1 'Adm1n-s3cret-wfg')" >"$WORK/htpasswd"
  chmod -R a+rX "$d" "$WORK/htpasswd"
  chmod a+x "$WORK"
}

start_nginx() {
  make_www
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=www.wfg.test" \
    -addext "subjectAltName=DNS:www.wfg.test,DNS:wfg.test,IP:$SERVER" \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 2048; }
http {
  access_log $WORK/nginx/access.log;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  types { text/html html; text/css css; application/javascript js; application/octet-stream bin; }
  default_type application/octet-stream;
  sendfile on;
  keepalive_timeout 30;
  server {
    listen $SERVER:80;
    listen $SERVER:443 ssl http2;
    server_name www.wfg.test wfg.test;
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    root $WORK/www;
    location /admin/ { auth_basic "wfg admin"; auth_basic_user_file $WORK/htpasswd; }
  }
}
EOF
  bg wfg-server nginx nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >/dev/null
  wait_port wfg-server "$SERVER" 443
}

start_sshd() {
  mkdir -p "$WORK/ssh"
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_ed25519" </dev/null
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/client_key" </dev/null
  cp "$WORK/ssh/client_key.pub" "$WORK/ssh/authorized_keys"
  chmod 600 "$WORK/ssh/authorized_keys"
  mkdir -p /run/sshd
  cat >"$WORK/ssh/sshd_config" <<EOF
ListenAddress $SERVER
Port 22
HostKey $WORK/ssh/host_ed25519
PidFile $WORK/ssh/sshd.pid
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AuthorizedKeysFile $WORK/ssh/authorized_keys
StrictModes no
MaxStartups 200
MaxAuthTries 6
LoginGraceTime 20
UseDNS no
Subsystem sftp internal-sftp
EOF
  bg wfg-server sshd /usr/sbin/sshd -D -e -f "$WORK/ssh/sshd_config" >/dev/null
  wait_port wfg-server "$SERVER" 22
}
SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5 -o BatchMode=yes)

start_vsftpd() {
  mkdir -p "$WORK/ftp/empty"
  chmod 755 "$WORK/ftp/empty"
  cat >"$WORK/ftp/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=$SERVER
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=NO
pam_service_name=vsftpd
secure_chroot_dir=$WORK/ftp/empty
seccomp_sandbox=NO
pasv_enable=YES
pasv_min_port=30000
pasv_max_port=30100
delay_failed_login=0
max_login_fails=3
max_clients=200
xferlog_enable=NO
vsftpd_log_file=$WORK/ftp/vsftpd.log
EOF
  bg wfg-server vsftpd vsftpd "$WORK/ftp/vsftpd.conf" >/dev/null
  wait_port wfg-server "$SERVER" 21
}

start_dnsmasq() {
  local big i args=()
  # TXT records of ~200 bytes each for the amplification scenario
  for i in 1 2 3 4 5 6; do
    big=$(head -c 150 /dev/urandom | base64 -w0 | tr -d '/+=' | head -c 200)
    args+=("--txt-record=amp.wfg.test,\"v=amp$i $big\"")
  done
  bg wfg-dns dnsmasq dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
    --bind-interfaces --listen-address="$DNS" --except-interface=lo --port=53 \
    --pid-file="$WORK/dnsmasq.pid" --user=root --group=root \
    --local=/wfg.test/ --domain-needed --bogus-priv --cache-size=0 \
    --host-record=www.wfg.test,"$SERVER" --host-record=wfg.test,"$SERVER" \
    --host-record=mail.wfg.test,"$SERVER" --host-record=ftp.wfg.test,"$SERVER" \
    --host-record=ns.wfg.test,"$DNS" --host-record=ntp.wfg.test,"$SERVER" \
    --host-record=v6.wfg.test,"$SERVER",fd77::10 \
    --mx-host=wfg.test,mail.wfg.test,10 \
    --txt-record=wfg.test,"v=spf1 ip4:10.77.0.0/24 -all" \
    --txt-record=_dmarc.wfg.test,"v=DMARC1; p=none" \
    --cname=static.wfg.test,www.wfg.test \
    --srv-host=_ftp._tcp.wfg.test,ftp.wfg.test,21 \
    "${args[@]}" >/dev/null
  wait_port wfg-dns "$DNS" 53 udp
}

start_chrony() {
  mkdir -p "$WORK/chrony"
  cat >"$WORK/chrony/chrony.conf" <<EOF
pidfile $WORK/chrony/chronyd.pid
driftfile $WORK/chrony/drift
local stratum 8
allow 10.77.0.0/24
bindaddress $SERVER
port 123
cmdport 0
EOF
  bg wfg-server chronyd chronyd -x -d -u root -f "$WORK/chrony/chrony.conf" >/dev/null
  wait_port wfg-server "$SERVER" 123 udp
}

start_iperf3() {
  bg wfg-server iperf3 iperf3 -s -B "$SERVER" -p 5201 >/dev/null
  wait_port wfg-server "$SERVER" 5201
}

start_vulnapp() {
  local py=/usr/bin/python3; [[ -x $py ]] || py=python3
  bg wfg-server vulnapp "$py" "$DATAGEN_DIR/vulnapp.py" "$SERVER" 8080 >/dev/null
  wait_port wfg-server "$SERVER" 8080
}

start_servers() {
  mkdir -p "$WORK/log"
  make_user
  start_nginx
  start_sshd
  start_vsftpd
  start_dnsmasq
  start_chrony || log "chrony failed to start; the ntp scenario will show only queries"
  start_iperf3
  start_vulnapp
}
