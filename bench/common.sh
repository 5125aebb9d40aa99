# shellcheck shell=bash
# Sourced by the bench scripts (not run on its own): what they share.
#
# report MODULE ARGS...            runs bench/report/MODULE.py (the report
#                                  code: medians, ratios, report.md, charts)
# progress_start TOTAL             the timed runs to come; counting starts again
# progress_step WHAT REPEAT [WHO]  the one progress line before each timed run,
#                                  on stderr: "[WHO ][step/TOTAL] WHAT, repeat REPEAT ..."
# use_release_nvkv                 exports NVKV_BIN, the nvkv to measure: as
#                                  given, or else this tree's release build in
#                                  cargo's build directory (CARGO_TARGET_DIR when
#                                  set), brought up to date first so a stale
#                                  binary is never measured
bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

report() {
    local module=$1
    shift
    PYTHONPATH="$bench_dir${PYTHONPATH:+:$PYTHONPATH}" python3 -m "report.$module" "$@"
}

progress_start() {
    progress_total=$1
    progress_done=0
}

progress_step() {
    progress_done=$((progress_done + 1))
    printf '%s[%d/%d] %s, repeat %d ...\n' "${3:+$3 }" "$progress_done" "$progress_total" "$1" "$2" >&2
}

use_release_nvkv() {
    if [ -z "${NVKV_BIN:-}" ]; then
        NVKV_BIN="${CARGO_TARGET_DIR:-target}/release/nvkv"
        echo "$script: cargo build --release (for $NVKV_BIN)" >&2
        (cd "$bench_dir/.." && cargo build --release >&2) \
            || { echo "$script: cargo build --release failed; fix the build or set NVKV_BIN to an nvkv binary" >&2; exit 1; }
    fi
    [ -x "$NVKV_BIN" ] || { echo "$script: NVKV_BIN=$NVKV_BIN is not an executable nvkv binary; build it or set NVKV_BIN to one" >&2; exit 1; }
    export NVKV_BIN
}
