#!/usr/bin/env bash
# Agent API benchmark: a core holding FLOWS stored flows (default 1M);
# p50/p99 of an indexed flow query and a nearest-neighbour query over MCP,
# next to the same question asked of SQLite directly in the same run; ingest
# throughput with and without an agent calling in a loop.
#   bench/agent.sh [FLOWS] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWS=${1:-1000000}
DIR=${2:-${TMPDIR:-/tmp}/wirefold-agent-bench}
uptime
cargo run --release -q -p wirefold-core --example agent_bench -- "$FLOWS" "$DIR"
