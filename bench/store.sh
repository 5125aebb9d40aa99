#!/usr/bin/env bash
# The store workloads against a one-node `nvkv serve` on the embedded
# default (its data in a temporary directory), with the load generator on
# the same machine: `nvkv bench put`, `range`, `txn` and `mixed` (and, when
# asked for, `watch`), each repeated, the workloads interleaved within each
# repeat; medians with the raw runs beside them. The key space is preloaded once, before the first
# run (range and mixed then run with --no-preload). Writes report.md and
# summary.json (and every run's JSON under raw/) to
# OUT/store-<UTC YYYYMMDD-HHMM>/.
#
# Usage: bench/store.sh [options]
#   --workloads LIST   comma-separated, from put,range,txn,mixed,watch
#                      (default: put,range,txn,mixed; watch is optional)
#   --repeats N        repeats of every workload (default 3)
#   --seconds S        length of each run, whole seconds (default 5)
#   --clients C        concurrent clients (default 64)
#   --conns K          connections they share (default 8)
#   --key-space N      keys of put, range and mixed (default 100000)
#   --txn-key-space N  keys of txn, small so swaps contend (default 1000)
#   --value-bytes B    value size (default 256; keys are 8 bytes)
#   --read-ratio R     share of gets in mixed (default 0.5)
#   --consistency l|s  reads of range and mixed (default l)
#   --watchers W       watchers of watch, one key each; its key space is W
#                      keys, so every put reaches one watcher (default 100)
#   --rate OPS         operations per second per run (default 0: unlimited)
#   --out DIR          parent of the results directory (default bench/results)
#   --config FILE      serve with this config (data_dir and client_address
#                      are overridden); default: the embedded default
# Environment: NVKV_BIN (default target/release/nvkv, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
command_line="bench/store.sh $*"

workloads=put,range,txn,mixed
repeats=3
seconds=5
clients=64
conns=8
key_space=100000
txn_key_space=1000
value_bytes=256
read_ratio=0.5
consistency=l
watchers=100
rate=0
out=bench/results
config=""
while [ $# -gt 0 ]; do
    case "$1" in
        --workloads) workloads="$2"; shift 2 ;;
        --repeats) repeats="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --clients) clients="$2"; shift 2 ;;
        --conns) conns="$2"; shift 2 ;;
        --key-space) key_space="$2"; shift 2 ;;
        --txn-key-space) txn_key_space="$2"; shift 2 ;;
        --value-bytes) value_bytes="$2"; shift 2 ;;
        --read-ratio) read_ratio="$2"; shift 2 ;;
        --consistency) consistency="$2"; shift 2 ;;
        --watchers) watchers="$2"; shift 2 ;;
        --rate) rate="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --config) config="$2"; shift 2 ;;
        -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "store.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for pair in "repeats:$repeats" "seconds:$seconds"; do
    case "${pair#*:}" in ''|*[!0-9]*|0) echo "store.sh: --${pair%%:*} ${pair#*:} must be a positive integer" >&2; exit 2 ;; esac
done
IFS=, read -r -a chosen <<< "$workloads"
if [ ${#chosen[@]} -eq 0 ]; then echo "store.sh: --workloads is empty: give some of put,range,txn,mixed,watch" >&2; exit 2; fi
for workload in "${chosen[@]}"; do
    case "$workload" in put|range|txn|mixed|watch) ;; *)
        echo "store.sh: --workloads: unknown workload \"$workload\"; give some of put,range,txn,mixed,watch" >&2; exit 2 ;;
    esac
done
if [ -n "$config" ] && [ ! -r "$config" ]; then echo "store.sh: --config $config is not a readable file" >&2; exit 2; fi
# nvkv validates the other values itself (and names the bad one) on the first run.

script=store.sh
# shellcheck source=bench/common.sh
source bench/common.sh
# shellcheck source=bench/one-node.sh
source bench/one-node.sh

stamp=$(date -u +%Y%m%d-%H%M)
result="$out/store-$stamp"
suffix=1
while [ -e "$result" ]; do suffix=$((suffix + 1)); result="$out/store-$stamp-$suffix"; done
mkdir -p "$result/raw"

# Runs one nvkv bench and keeps its JSON; on failure shows the command and
# what nvkv said, and stops without leaving a half-written results directory.
run() {
    local name="$1"; shift
    if ! "$bin" --endpoints "$endpoint" bench "$@" --json > "$result/raw/$name.json" 2> "$work/bench.err"; then
        echo "store.sh: failed: $bin --endpoints $endpoint bench $* --json" >&2
        cat "$work/bench.err" >&2
        rm -rf "$result"
        exit 1
    fi
}

shape=(--clients "$clients" --conns "$conns" --key-bytes 8 --value-bytes "$value_bytes" --rate "$rate")
case ",$workloads," in *,range,*|*,mixed,*)
    echo "preloading $key_space keys ..." >&2
    run preload range "${shape[@]}" --key-space "$key_space" --total 1 --consistency "$consistency" ;;
esac
progress_start $((repeats * ${#chosen[@]}))
for repeat in $(seq 1 "$repeats"); do
    for workload in "${chosen[@]}"; do
        progress_step "$workload" "$repeat"
        timed=("${shape[@]}" --seconds "$seconds")
        case "$workload" in
            put) run "put-r$repeat" put "${timed[@]}" --key-space "$key_space" ;;
            range) run "range-r$repeat" range "${timed[@]}" --key-space "$key_space" --consistency "$consistency" --no-preload ;;
            txn) run "txn-r$repeat" txn "${timed[@]}" --key-space "$txn_key_space" ;;
            mixed) run "mixed-r$repeat" mixed "${timed[@]}" --key-space "$key_space" --read-ratio "$read_ratio" \
                --consistency "$consistency" --no-preload ;;
            watch) run "watch-r$repeat" watch "${timed[@]}" --watchers "$watchers" --key-space "$watchers" ;;
        esac
    done
done
"$bin" --endpoints "$endpoint" status > "$result/status.txt"

report store "$result" "$repeats" "$seconds" "$ready" "$(git rev-parse HEAD)" "$command_line" "$workloads"
echo "store.sh: wrote $result" >&2
