#!/usr/bin/env bash
# Where each microsecond of a put goes, at one client, on one node and on
# three members, next to the floor measured in the same run: for each size,
# a fresh nvkv (bench/one-node.sh, bench/three-nodes.sh) with its data on
# the repository's disk, then
#   1. nvkv bench device  1 appender, 300-byte entries (a put's log entry),
#                         on a namespace file on the same disk: the device's
#                         append p50
#   2. nvkv bench ping    1 client: a round trip of the client's KV stream
#                         that does no work at the node
#   3. nvkv bench put     1 client, 8-byte keys, 256-byte values: the put's
#                         latency and its budget, hop by hop (the node's
#                         hops from its status before and after the run, the
#                         client's own two from the time the node said each
#                         put spent in it)
# Three members take the puts on the first member, as a client of one
# endpoint does: a write whose group another member leads is forwarded (the
# "forwarded to leader" hop), the rest are led there.
#
# Writes OUT/latency-budget-<UTC YYYYMMDD-HHMM>/: report.md (also printed),
# summary.json and raw/ (every run's JSON). Stops what it started, also on
# Ctrl-C or failure. Latency figures mean something on a quiet machine only:
# the report names the load average at the start and the end.
#
# Usage: bench/latency-budget.sh [options]
#   --seconds S     length of each run, whole seconds (default 5)
#   --sizes LIST    cluster sizes, from 1,3 (default 1,3)
#   --spdk DIR      also one node on the spdk backend against SPDK's NVMe/TCP
#                   target (bench/spdk-common.sh) from the SPDK build in DIR;
#                   nvkv must be built with --features spdk (NVKV_BIN)
#   --out DIR       parent of the results directory (default bench/results)
# Environment: NVKV_BIN (default: this tree's release build, cargo build
# --release first).
set -euo pipefail
cd "$(dirname "$0")/.."
script=latency-budget.sh
command_line="bench/latency-budget.sh${*:+ $*}"

seconds=5
sizes=1,3
spdk=""
out=bench/results
die() { echo "$script: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="${2:-}"; shift 2 ;;
        --sizes) sizes="${2:-}"; shift 2 ;;
        --spdk) spdk="${2:-}"; shift 2 ;;
        --out) out="${2:-}"; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "$script: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$seconds" in ''|*[!0-9]*|0) die "--seconds $seconds must be a positive integer" ;; esac
case "$sizes" in 1|3|1,3|3,1) ;; *) die "--sizes $sizes: give 1, 3 or 1,3" ;; esac
command -v python3 >/dev/null || die "needs python3 (Debian: apt-get install python3)"
# shellcheck source=bench/common.sh
source bench/common.sh
use_release_nvkv
bin="$NVKV_BIN"
if [ -n "$spdk" ]; then
    # shellcheck source=bench/spdk-common.sh
    source bench/spdk-common.sh
    [ -d "$spdk" ] || die "--spdk $spdk is not a directory: give an SPDK tree built with --with-shared"
    spdk=$(cd "$spdk" && pwd)
    spdk_check_dir "$spdk"
    "$bin" serve --help >/dev/null
    "$bin" bench device --help | grep -q -- --spdk-transport \
        || die "$bin has no spdk backend: build it with cargo build --release --features spdk and set NVKV_BIN"
fi

mkdir -p bench/results/tmp
scratch=$(mktemp -d "$PWD/bench/results/tmp/latency-budget.XXXXXX")
export TMPDIR="$scratch"
stamp=$(date -u +%Y%m%d-%H%M)
result="$out/latency-budget-$stamp"
suffix=1
while [ -e "$result" ]; do suffix=$((suffix + 1)); result="$out/latency-budget-$stamp-$suffix"; done
mkdir -p "$result/raw"
cleanup() {
    if [ -n "$spdk" ]; then spdk_target_stop; fi
    rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run NAME ARGS...: one nvkv run, its JSON in raw/NAME.json; says what failed.
run() {
    local name=$1; shift
    echo "$script: $name ..." >&2
    if ! "$bin" "$@" --json > "$result/raw/$name.json" 2> "$scratch/run.err"; then
        echo "$script: failed: $bin $* --json" >&2
        cat "$scratch/run.err" >&2
        exit 1
    fi
}

# measure SIZE LABEL: the three runs against the store started for SIZE
# (its endpoints in $endpoint); the device run on DEVICE_ARGS.
measure() {
    local size=$1 label=$2
    run "$label-device" bench device "${device_args[@]}" --appenders 1 --entry-bytes 300 --seconds "$seconds"
    run "$label-ping" --endpoints "$endpoint" bench ping --clients 1 --conns 1 --seconds "$seconds"
    run "$label-put" --endpoints "$endpoint" bench put --clients 1 --conns 1 --key-bytes 8 --value-bytes 256 \
        --key-space 100000 --seconds "$seconds"
    echo "$ready" > "$result/ready-$label.txt"
    "$bin" --endpoints "$endpoint" status -w json > "$result/status-$label.json"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
labels=()
IFS=, read -r -a chosen_sizes <<< "$sizes"
for size in "${chosen_sizes[@]}"; do
    device_args=(--namespace "$scratch/device-$size.img" --namespace-bytes 256MiB)
    (
        config=""
        if [ "$size" = 1 ]; then
            # shellcheck source=bench/one-node.sh
            source bench/one-node.sh
            measure 1 n1
        else
            # shellcheck source=bench/three-nodes.sh
            source bench/three-nodes.sh
            measure 3 n3
        fi
    )
    labels+=("n$size")
done
if [ -n "$spdk" ]; then
    port=$(spdk_free_port)
    spdk_target_start "$spdk" "$scratch" "$port" 0 2 256
    cat > "$scratch/spdk.toml" <<EOF
[reactor]
shards = 1

[namespace]
backend = "spdk"
transport = "$SPDK_TRID"
nsid = 1
spdk_memory_bytes = "512MiB"
spdk_hugepages = false
EOF
    device_args=(--spdk-transport "$SPDK_TRID" --spdk-nsid 2 --spdk-no-hugepages)
    (
        config="$scratch/spdk.toml"
        # shellcheck source=bench/one-node.sh
        source bench/one-node.sh
        measure 1 spdk
    )
    labels+=(spdk)
    spdk_target_stop
fi

report latency_budget "$result" "$command_line" "$seconds" "$load_start" "$("$bin" --version)" \
    "$(git rev-parse HEAD)$(git diff --quiet HEAD -- src || echo ' (with uncommitted changes to src/)')" "${labels[@]}"
cat "$result/report.md"
echo "$script: wrote $result" >&2
