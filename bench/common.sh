# shellcheck shell=bash
# Sourced by the bench scripts (not run on its own): what they share.
#
# report MODULE ARGS...            runs bench/report/MODULE.py (the report
#                                  code: medians, ratios, report.md, charts)
# progress_start TOTAL             the timed runs to come; counting starts again
# progress_step WHAT REPEAT [WHO]  the one progress line before each timed run,
#                                  on stderr: "[WHO ][step/TOTAL] WHAT, repeat REPEAT ..."
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
