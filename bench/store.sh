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
step=0
for repeat in $(seq 1 "$repeats"); do
    for workload in "${chosen[@]}"; do
        step=$((step + 1))
        echo "[$step/$((repeats * ${#chosen[@]}))] $workload, repeat $repeat ..." >&2
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

python3 - "$result" "$repeats" "$seconds" "$ready" "$(git rev-parse HEAD)" "$command_line" "$workloads" <<'PY'
import json, os, platform, statistics, sys
result, repeats, seconds, ready, commit, command = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
workloads = sys.argv[7].split(",")
labels = {"put": "put", "range": "range (single-key gets)", "txn": "txn (compare-and-swap)", "mixed": "mixed (gets and puts)",
          "watch": "watch (put sent to event received)"}
summary = {"command": command, "repeats": repeats, "commit": commit, "ready": ready, "workloads": {}}
first = None
lines = ["# nvkv store workloads, one node", "", f"Command: `{command}`", "",
         f"- nvkv commit {commit}; {ready}",
         f"- machine: {platform.machine()}, kernel {platform.release()}, {os.cpu_count()} cores, "
         f"load average {' '.join(f'{load:.2f}' for load in os.getloadavg())} at the end; generator on the same cores", ""]
table = ["| Workload | ops/s | p50 µs | p99 µs | p99.9 µs | raw ops/s per repeat | notes |", "|---|---:|---:|---:|---:|---|---|"]
for workload in workloads:
    runs = [json.load(open(f"{result}/raw/{workload}-r{r}.json")) for r in range(1, repeats + 1)]
    first = first or runs[0]
    median = {key: statistics.median(run[key] for run in runs) for key in ("ops_per_sec", "p50_us", "p99_us", "p999_us")}
    notes = ""
    if workload == "txn":
        median["conflict_share"] = statistics.median(run["txn_failed"] / run["ops"] for run in runs)
        notes = f"{median['conflict_share']:.0%} conflicts over {runs[0]['key_space']} keys"
    if workload == "mixed":
        for kind in ("range", "put"):
            for key in ("p50_us", "p99_us"):
                median[f"{kind}_{key}"] = statistics.median(run[kind][key] for run in runs)
        notes = (f"read ratio {runs[0]['read_ratio']}; gets p50/p99 {median['range_p50_us']:.1f}/{median['range_p99_us']:.1f}, "
                 f"puts p50/p99 {median['put_p50_us']:.1f}/{median['put_p99_us']:.1f}")
    if workload == "watch":
        for key in ("events_per_sec", "put_p50_us", "put_p99_us"):
            median[key] = statistics.median(run[key] for run in runs)
        missing = sum(run["events_missing"] for run in runs)
        notes = (f"ops are puts, percentiles events'; {runs[0]['watchers']} watchers on {runs[0]['key_space']} keys, "
                 f"{median['events_per_sec']:,.0f} events/s, {missing} missing; "
                 f"puts p50/p99 {median['put_p50_us']:.1f}/{median['put_p99_us']:.1f}")
    if workload in ("range", "mixed"):
        notes = f"consistency {runs[0]['consistency']}" + (f"; {notes}" if notes else "")
    errors = sum(run["errors"] for run in runs)
    if errors:
        notes += f"; {errors} errors"
    summary["workloads"][workload] = {"label": labels[workload], "median": median, "raw": runs}
    table.append(f"| {labels[workload]} | {median['ops_per_sec']:,.0f} | {median['p50_us']:.1f} | {median['p99_us']:.1f} | "
                 f"{median['p999_us']:.1f} | " + " · ".join(f"{run['ops_per_sec']:,.0f}" for run in runs) + f" | {notes} |")
parameters = {key: first[key] for key in ("clients", "connections", "key_bytes", "value_bytes", "rate")}
parameters["seconds"] = seconds
summary["parameters"] = parameters
if os.path.exists(f"{result}/raw/preload.json"):
    summary["preloaded_keys"] = json.load(open(f"{result}/raw/preload.json"))["preloaded_keys"]
lines.insert(6, f"- {parameters['clients']} clients over {parameters['connections']} connections, 8-byte keys, "
                f"{parameters['value_bytes']}-byte values, {parameters['seconds']} s per run, "
                + (f"at most {parameters['rate']} ops/s" if parameters["rate"] else "no rate limit")
                + (f"; {summary['preloaded_keys']} keys preloaded before the first run" if "preloaded_keys" in summary else ""))
lines += table + ["", "Where the time goes after the runs (`nvkv status`):", "", "```", open(f"{result}/status.txt").read().rstrip(), "```"]
open(f"{result}/report.md", "w").write("\n".join(lines) + "\n")
json.dump(summary, open(f"{result}/summary.json", "w"), indent=1)
print("\n".join(lines))
PY
echo "store.sh: wrote $result" >&2
