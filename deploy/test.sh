#!/usr/bin/env bash
# Install what the tests need and run every test, plus fmt, clippy and doc
# checks. This is what CI runs (.ci/run).
#
#   ./deploy/test.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_rust
apt_install ca-certificates pkg-config libpcap-dev python3-venv tshark tcpdump tcpreplay iproute2 util-linux bsdutils libdpdk-dev dpdk \
    prometheus systemd nfdump pmacct
setup_python
cd "$ROOT"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p wirefold-sensor -p wirefold-bench --features wirefold-sensor/dpdk,wirefold-bench/dpdk --all-targets --locked -- -D warnings
log "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
log "tests"
cargo test --workspace --release --locked
log "DPDK tests (sensor built with --features dpdk)"
cargo test --release --locked -p wirefold-sensor --features dpdk --test dpdk
log "all tests passed"
