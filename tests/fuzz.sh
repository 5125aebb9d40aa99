#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time: the decoders of
# the log records, superblock/checkpoint/snapshot reference, store snapshots,
# store commands and outcomes, client Cap'n Proto requests and peer
# messages. Each target starts from its seeds in fuzz/corpus/<target> (a
# copy: the repository's corpus stays small) and fails the run on any crash,
# printing the input that crashed; make that input a regression test (see
# the superblock's `a_short_copy_is_an_error_not_a_panic`).
#
# Runs on the stable toolchain without a sanitizer (`--sanitizer none`:
# Rust's own checks, with debug assertions and overflow checks on); installs
# cargo-fuzz with `cargo install` when it is missing.
#
# Usage: tests/fuzz.sh [--seconds N] [TARGET...]
#   --seconds N   how long each target runs (default 20)
#   TARGET        only these targets (default: all of fuzz/Cargo.toml's)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=20
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
case "$seconds" in ''|*[!0-9]*|0) echo "fuzz.sh: --seconds $seconds must be a positive integer" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked --version 0.13.2
fi
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

echo "fuzz.sh: building ${#targets[@]} targets (release with debug assertions, no sanitizer)" >&2
cargo fuzz build --sanitizer none

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
    mkdir -p "$work/$target"
    if [ -d "corpus/$target" ]; then
        cp -r "corpus/$target/." "$work/$target/"
    fi
    log="$work/$target.log"
    if cargo fuzz run --sanitizer none "$target" "$work/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 >"$log" 2>&1; then
        echo "fuzz.sh: $target: $(grep -E '^Done [0-9]+ runs' "$log" | tail -1), no crash"
    else
        echo "fuzz.sh: $target CRASHED; why (the panic or libFuzzer's verdict), then the end of its output:" >&2
        grep -E -A2 'panicked at|^==[0-9]+== ERROR|deadly signal|out-of-memory|timeout after' "$log" | head -20 >&2 || true
        grep -v '^#' "$log" | grep -v -E '^ +([0-9]+: | *at )' | tail -30 >&2
        failed+=("$target")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashes in ${failed[*]}; the inputs are under fuzz/artifacts/ (cargo fuzz fmt TARGET FILE shows one)" >&2
    exit 1
fi
