#!/usr/bin/env bash
# Install the programs the datagen scenarios need (Debian 12), only if missing.
# Run as root. Services are NOT started on the host: a temporary policy-rc.d
# forbids invoke-rc.d from starting anything during the install (the scenarios
# start their own server instances inside network namespaces).
set -euo pipefail
[[ $EUID -eq 0 ]] || { echo "apt.sh: run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

# package -> reason. Required ones first, optional ones (may fail) after.
REQUIRED=(
  tcpdump wireshark-common tshark iproute2 ethtool bridge-utils procps psmisc
  nginx-light openssl curl dnsmasq-base dnsutils
  openssh-server openssh-client sshpass iperf3 chrony ntpsec-ntpdate
  vsftpd nmap masscan hping3 hydra slowhttptest iodine sqlmap
  python3 netcat-openbsd iputils-ping
)
OPTIONAL=( chromium )

missing() {
  local out=()
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      out+=("$p")
    fi
  done
  echo "${out[@]:-}"
}

need=$(missing "${REQUIRED[@]}")
opt=$(missing "${OPTIONAL[@]}")
if [[ -z "$need" && -z "$opt" ]]; then
  echo "apt.sh: everything already installed"; exit 0
fi

# Keep package maintainer scripts from starting daemons on the host.
POLICY=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $POLICY ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$POLICY"; chmod 755 "$POLICY"; made_policy=1
fi
cleanup() { if [[ $made_policy == 1 ]]; then rm -f "$POLICY"; fi; }
trap cleanup EXIT INT TERM

BEFORE=""
for d in nginx vsftpd sshd chronyd dnsmasq iodined; do
  BEFORE+=" $(pgrep -x "$d" 2>/dev/null | tr '\n' ' ' || true)"
done
apt-get update -qq
if [[ -n "$need" ]]; then
  echo "apt.sh: installing: $need"
  # shellcheck disable=SC2086
  apt-get install -y --no-install-recommends $need
fi
if [[ -n "$opt" ]]; then
  echo "apt.sh: installing optional: $opt"
  # shellcheck disable=SC2086
  apt-get install -y --no-install-recommends $opt || echo "apt.sh: optional packages failed ($opt); scenarios using them are skipped"
fi

# policy-rc.d kept the packages from starting daemons; as a second guard, stop
# any daemon of these names that appeared in the host's network namespace
# during this install (only pids that did not exist before it).
for d in nginx vsftpd sshd chronyd dnsmasq iodined; do
  for p in $(pgrep -x "$d" 2>/dev/null || true); do
    if [[ " $BEFORE " != *" $p "* && "$(readlink /proc/$p/ns/net 2>/dev/null)" == "$(readlink /proc/1/ns/net)" ]]; then
      echo "apt.sh: stopping host $d (pid $p) started by its package"; kill "$p" 2>/dev/null || true
    fi
  done
done
echo "apt.sh: done"
