#!/usr/bin/env bash
# nvkv and etcd side by side on this machine, the same workloads through
# the same load generator (`nvkv bench --target nvkv://... | etcd://...`):
# first one node of each, then three members of each on loopback. nvkv is
# measured twice: through its native API (nvkv://) and through its etcd API
# with the etcd client etcd is driven with (etcd://, side "nvkv-etcd"), so
# the two stores are also compared through the identical client and protocol. Both run
# at the same time, their data under one temporary directory on the
# repository's filesystem (bench/results/tmp), and every workload runs
# against one and then the other (the order alternating between repeats),
# so a busy neighbour slows both sides alike:
#   put    1, 16, 64 and 256 clients (8-byte keys from 100000, 256-byte values)
#   range  64 clients, linearizable and serializable gets of preloaded keys
#   txn    64 clients, compare-and-swap on 1000 keys
#   watch  16 clients putting 1000 puts/s over W/10 keys, W watchers (10 per
#          key); latency from a put's send to each watcher's event
# Connections are scaled as etcd's benchmark tool is run (1 client over 1
# connection, 1000 over 100): one connection per 10 clients, rounded up.
# Every run reports the servers' CPU time per operation (nvkv's from its
# status, etcd's from its /metrics) and the load generator's own. Beside
# the stores, each repeat measures nvkv's floor on the same disk and
# loopback: `nvkv bench device` (1 appender, 300-byte entries: a put's log
# entry) and `nvkv bench ping` (1 client: a KV stream round trip that does
# no work); the report sets nvkv's put budget at 1 client (its hops, from
# the run's JSON) beside them.
# Durability: etcd fsyncs its WAL (its default); nvkv runs with its default
# durability = "fua". etcd is Debian's etcd-server; nvkv is NVKV_BIN
# (default: this tree's release build, cargo build --release first).
#
# Writes OUT/compare-etcd-<UTC YYYYMMDD-HHMM>/: report.md (machine, versions,
# tables, goals, charts, the latency budget at 1 client with its floor, and
# nvkv's per-stage histograms where a goal is missed), summary.json, throughput.png, latency.png, plot.gp, status-1.json
# and status-3.json (`nvkv status -w json` after each size's runs) and raw/
# (every run's JSON). Installs etcd-server and gnuplot-nox (scripts/setup.sh)
# when missing. Stops everything it started, also on Ctrl-C or failure.
#
# Usage: bench/compare-etcd.sh [options]
#   --seconds S    length of each run, whole seconds (default 5)
#   --repeats N    repeats of every workload on each side (default 3)
#   --quick        for development: --seconds 1 --repeats 1, 10000 keys to
#                  read, 100 watchers (options after it still apply)
#   --watchers W   watchers of the watch workload, at least 10 (default 1000)
#   --sizes LIST   cluster sizes to run, from 1,3 (default 1,3)
#   --out DIR      parent of the results directory (default bench/results)
set -euo pipefail
cd "$(dirname "$0")/.."
command_line="bench/compare-etcd.sh${*:+ $*}"
script=compare-etcd.sh

seconds=5
repeats=3
key_space=100000
watchers=1000
sizes=1,3
out=bench/results
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="${2:-}"; shift 2 ;;
        --repeats) repeats="${2:-}"; shift 2 ;;
        --quick) seconds=1; repeats=1; key_space=10000; watchers=100; shift ;;
        --watchers) watchers="${2:-}"; shift 2 ;;
        --sizes) sizes="${2:-}"; shift 2 ;;
        --out) out="${2:-}"; shift 2 ;;
        -h|--help) sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "$script: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for pair in "seconds:$seconds" "repeats:$repeats" "watchers:$watchers"; do
    case "${pair#*:}" in ''|*[!0-9]*|0) echo "$script: --${pair%%:*} ${pair#*:} must be a positive integer" >&2; exit 2 ;; esac
done
if [ "$watchers" -lt 10 ] || [ "$watchers" -gt 10000 ]; then
    echo "$script: --watchers $watchers must be from 10 to 10000 (10 watchers per key)" >&2; exit 2
fi
case "$sizes" in 1|3|1,3|3,1) ;; *) echo "$script: --sizes $sizes: give 1, 3 or 1,3" >&2; exit 2 ;; esac
[ -n "$out" ] || { echo "$script: --out is empty: give a directory" >&2; exit 2; }

command -v python3 >/dev/null || { echo "$script: needs python3 (Debian: apt-get install python3)" >&2; exit 1; }
# shellcheck source=bench/common.sh
source bench/common.sh
if [ ! -x /usr/bin/etcd ] || ! command -v gnuplot >/dev/null; then
    echo "$script: installing etcd-server and gnuplot-nox (scripts/setup.sh)" >&2
    bash scripts/setup.sh gnuplot-nox
fi
etcd_bin=/usr/bin/etcd
use_release_nvkv
bin="$NVKV_BIN"

# Everything of this run's stores lives here, on the repository's disk; the
# nvkv scripts make their directories here too (mktemp honours TMPDIR).
mkdir -p bench/results/tmp
scratch=$(mktemp -d "$PWD/bench/results/tmp/compare-etcd.XXXXXX")
export TMPDIR="$scratch"
stamp=$(date -u +%Y%m%d-%H%M)
result="$out/compare-etcd-$stamp"
suffix=1
while [ -e "$result" ]; do suffix=$((suffix + 1)); result="$out/compare-etcd-$stamp-$suffix"; done
mkdir -p "$result/raw"

etcd_pids=()
stop_etcd() {
    local pid
    for pid in "${etcd_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${etcd_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    etcd_pids=()
}
finished=0
cleanup() {
    stop_etcd
    if [ "$finished" != 1 ] && [ -d "$result" ]; then
        rm -rf bench/results/tmp/compare-etcd-failed
        mv "$result" bench/results/tmp/compare-etcd-failed
        echo "$script: stopped before the end; what it had is in bench/results/tmp/compare-etcd-failed" >&2
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# MEMBERS etcd members on loopback, ports in 30600..32699: above the ports
# bench/three-nodes.sh picks (at most 30500 or so) and below the kernel's
# ephemeral range. Sets etcd_pids and etcd_endpoints.
start_etcd() {
    local members="$1" base cluster="" id
    base=$(report ports "$((members * 2))" 30600 32700 etcd) || exit 1
    etcd_endpoints=""
    for id in $(seq 1 "$members"); do
        cluster+="${cluster:+,}etcd$id=http://127.0.0.1:$((base + 2 * id - 1))"
        etcd_endpoints+="${etcd_endpoints:+,}127.0.0.1:$((base + 2 * id - 2))"
    done
    for id in $(seq 1 "$members"); do
        local client="http://127.0.0.1:$((base + 2 * id - 2))" peer="http://127.0.0.1:$((base + 2 * id - 1))"
        "$etcd_bin" --name "etcd$id" --data-dir "$scratch/etcd$members-$id" --logger zap \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$cluster" --initial-cluster-token "compare-etcd-$members" \
            --initial-cluster-state new > /dev/null 2> "$scratch/etcd$members-$id.log" &
        etcd_pids+=($!)
    done
    for id in $(seq 1 "$members"); do
        for _ in $(seq 1 600); do
            # etcd 3.4's zap logger says this once its client port answers.
            if grep -q 'serving client traffic' "$scratch/etcd$members-$id.log"; then break; fi
            if ! kill -0 "${etcd_pids[$((id - 1))]}" 2>/dev/null; then
                echo "$script: etcd member $id of $members exited:" >&2; tail -20 "$scratch/etcd$members-$id.log" >&2; exit 1
            fi
            sleep 0.1
        done
        grep -q 'serving client traffic' "$scratch/etcd$members-$id.log" \
            || { echo "$script: etcd member $id of $members did not serve clients in 60 s" >&2; exit 1; }
    done
    echo "$script: $members etcd member(s) ready at $etcd_endpoints" >&2
}

# The workloads, NAME:ARGS; each runs with --key-bytes 8 --value-bytes 256.
conns() { echo $(( ($1 + 9) / 10 )); }
workloads=()
for clients in 1 16 64 256; do
    workloads+=("put-c$clients:put --clients $clients --conns $(conns "$clients") --key-space $key_space")
done
workloads+=("range-l:range --clients 64 --conns $(conns 64) --key-space $key_space --consistency l --no-preload"
            "range-s:range --clients 64 --conns $(conns 64) --key-space $key_space --consistency s --no-preload"
            "txn:txn --clients 64 --conns $(conns 64) --key-space 1000"
            "watch:watch --clients 16 --conns $(conns 16) --watchers $watchers --key-space $((watchers / 10)) --rate 1000")
printf '%s\n' "${workloads[@]}" > "$result/workloads.txt"
"$etcd_bin" --version > "$result/etcd-version.txt"

# Runs inside the subshell that started nvkv: SIZE STORE NAME ARGS...; on
# failure says so, with the command and what the generator said.
try_bench() {
    local size="$1" store="$2" name="$3"; shift 3
    local target="nvkv://$endpoint" raw="$result/raw/n$size-$store-$name.json"
    # Where the servers' CPU time is read: the target itself, but nvkv's
    # over its native API when it is driven through its etcd API.
    local servers="$target"
    # --foreground keeps the bench in this process group, so Ctrl-C reaches
    # it (and this script's trap) instead of stopping only the stores.
    [ "$store" = etcd ] && target="etcd://$etcd_endpoints" && servers="$target"
    [ "$store" = nvkv-etcd ] && target="etcd://$nvkv_etcd_endpoint"
    local status=0
    timeout --foreground $((seconds * 4 + 300)) "$bin" bench "$@" --key-bytes 8 --value-bytes 256 \
        --seconds "$seconds" --target "$target" --servers "$servers" --json > "$raw" 2> "$scratch/bench.err" || status=$?
    if [ "$status" != 0 ]; then
        echo "$script: failed (exit status $status): $bin bench $* --key-bytes 8 --value-bytes 256 --seconds $seconds --target $target --servers $servers --json" >&2
        cat "$scratch/bench.err" >&2
        return 1
    fi
    # What a run said besides its preload line (its first failed operation,
    # when some failed) stays beside its JSON.
    grep -v '^preloading ' "$scratch/bench.err" > "${raw%.json}.err" || rm -f "${raw%.json}.err"
}
run_bench() { try_bench "$@" || exit 1; }

# The floor under nvkv's put, on the disk and loopback the stores use: SIZE
# REPEAT. The device run writes its own namespace file under the scratch
# directory; ping talks to the nvkv started for SIZE.
run_floor() {
    local size="$1" repeat="$2" raw
    raw="$result/raw/n$size-floor-device-r$repeat.json"
    if ! "$bin" bench device --namespace "$scratch/device.img" --namespace-bytes 256MiB --appenders 1 \
            --entry-bytes 300 --seconds "$seconds" --json > "$raw" 2> "$scratch/bench.err"; then
        echo "$script: failed: $bin bench device ... (see below)" >&2; cat "$scratch/bench.err" >&2; exit 1
    fi
    raw="$result/raw/n$size-floor-ping-r$repeat.json"
    if ! "$bin" --endpoints "$endpoint" bench ping --clients 1 --conns 1 --seconds "$seconds" --json \
            > "$raw" 2> "$scratch/bench.err"; then
        echo "$script: failed: $bin bench ping at $endpoint (see below)" >&2; cat "$scratch/bench.err" >&2; exit 1
    fi
}

# Every workload against both stores of SIZE members, REPEATS times.
measure() {
    local size="$1" repeat store workload name args
    progress_start $((repeats * (${#workloads[@]} * 3 + 1)))
    for store in nvkv etcd; do
        echo "[$size node(s)] preloading $key_space keys into $store ..." >&2
        # The preload is setup, not a measurement, and stops at its first
        # refused put (a leader elected anew under load refuses until it
        # is known): it is tried up to three times, and said so.
        local attempt=1
        until try_bench "$size" "$store" preload range --clients 64 --conns "$(conns 64)" --key-space "$key_space" --total 1; do
            if [ "$attempt" -ge 3 ]; then exit 1; fi
            attempt=$((attempt + 1))
            echo "[$size node(s)] preloading $store again (attempt $attempt of 3)" >&2
            echo "$store: preload attempt $attempt" >> "$result/preload-retries.txt"
            sleep 1
        done
    done
    for repeat in $(seq 1 "$repeats"); do
        progress_step "nvkv's floor (device append, ping)" "$repeat" "[$size node(s)]"
        run_floor "$size" "$repeat"
        for workload in "${workloads[@]}"; do
            name="${workload%%:*}"; args="${workload#*:}"
            # Which store goes first alternates, so neither always runs
            # right after the other's heaviest load.
            # (nvkv-etcd is nvkv's own data through its etcd API: no preload of its own.)
            local order=(nvkv nvkv-etcd etcd)
            if [ $((repeat % 2)) = 0 ]; then order=(etcd nvkv-etcd nvkv); fi
            for store in "${order[@]}"; do
                progress_step "$store $name" "$repeat" "[$size node(s)]"
                # shellcheck disable=SC2086
                run_bench "$size" "$store" "$name-r$repeat" $args
            done
        done
    done
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
IFS=, read -r -a chosen_sizes <<< "$sizes"
for size in "${chosen_sizes[@]}"; do
    start_etcd "$size"
    # nvkv in a subshell: the sourced script's trap stops it when the
    # subshell ends, before the next size starts.
    (
        config=""
        if [ "$size" = 1 ]; then
            # shellcheck source=bench/one-node.sh
            source bench/one-node.sh
        else
            # shellcheck source=bench/three-nodes.sh
            source bench/three-nodes.sh
        fi
        echo "$ready" > "$result/ready-$size.txt"
        measure "$size"
        "$bin" --endpoints "$endpoint" status -w json > "$result/status-$size.json"
    )
    stop_etcd
done

# shellcheck disable=SC2031  # the subshells set $bin to the value it has here
report compare_etcd "$result" "$command_line" "$seconds" "$repeats" "$key_space" "$watchers" \
    "$sizes" "$("$bin" --version)" "$(git rev-parse HEAD)$(git diff --quiet HEAD -- src || echo ' (with uncommitted changes to src/)')" \
    "$load_start" "$scratch"
(cd "$result" && gnuplot plot.gp)
finished=1
cat "$result/report.md"
echo "$script: wrote $result" >&2
