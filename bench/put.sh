#!/usr/bin/env bash
# Puts against a one-node `nvkv serve` on the embedded default (its data in
# a temporary directory), or a 3-member cluster on this machine with
# --cluster3, with the load generator on the same machine:
# `nvkv bench put` at 1 client and at 256 clients over 16 connections,
# 8-byte keys and 256-byte values, each repeated; medians with the raw runs
# beside them. Writes report.md and summary.json under bench/results/.
#
# Usage: bench/put.sh [--repeats N] [--seconds S] [--out DIR] [--config FILE] [--cluster3]
#   --config FILE   serve with this config (data_dir and client_address are
#                   overridden; with --cluster3, appended to each member's);
#                   default: the embedded default
#   --cluster3      three members (bench/three-nodes.sh), clients spread over
#                   them (a follower forwards writes to the group's leader)
# Environment: NVKV_BIN (default target/release/nvkv, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=3
seconds=5
out=bench/results
config=""
cluster3=0
while [ $# -gt 0 ]; do
    case "$1" in
        --repeats) repeats="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --config) config="$2"; shift 2 ;;
        --cluster3) cluster3=1; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "put.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$repeats" in ''|*[!0-9]*|0) echo "put.sh: --repeats $repeats must be a positive integer" >&2; exit 2 ;; esac
case "$seconds" in ''|*[!0-9]*|0) echo "put.sh: --seconds $seconds must be a positive integer" >&2; exit 2 ;; esac

script=put.sh
if [ "$cluster3" = 1 ]; then
    # shellcheck source=bench/three-nodes.sh
    source bench/three-nodes.sh
    kind="three nodes"; prefix="put-cluster3"
else
    # shellcheck source=bench/one-node.sh
    source bench/one-node.sh
    kind="one node"; prefix="put"
fi

stamp=$(date -u +%Y%m%d-%H%M)
result="$out/$prefix-$stamp"
mkdir -p "$result/raw"
sides=("c1:--clients 1 --conns 1" "c256:--clients 256 --conns 16")
step=0
for repeat in $(seq 1 "$repeats"); do
    for side in "${sides[@]}"; do
        name="${side%%:*}"; args="${side#*:}"
        step=$((step + 1))
        echo "[$step/$((repeats * ${#sides[@]}))] $name, repeat $repeat ..." >&2
        # shellcheck disable=SC2086
        "$bin" --endpoints "$endpoint" bench put $args --key-bytes 8 --value-bytes 256 \
            --key-space 100000 --seconds "$seconds" --json > "$result/raw/$name-r$repeat.json"
    done
done
"$bin" --endpoints "$endpoint" status > "$result/status.txt"

python3 - "$result" "$repeats" "$seconds" "$ready" "$(git rev-parse HEAD)" "$config" "$kind" "$cluster3" <<'PY'
import json, statistics, sys, platform, os
result, repeats, seconds, ready, commit, config, kind, cluster3 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8] == "1"
command = f"bench/put.sh --repeats {repeats} --seconds {seconds}" + (f" --config {config}" if config else "") + (" --cluster3" if cluster3 else "")
sides = {"c1": "1 client, 1 connection", "c256": "256 clients, 16 connections"}
summary = {"command": command, "repeats": repeats,
           "seconds": int(seconds), "commit": commit, "ready": ready, "sides": {}}
lines = [f"# nvkv bench put, {kind}", "",
         f"Command: `{command}`",
         f"- nvkv commit {commit}; {ready}",
         f"- machine: {platform.machine()}, kernel {platform.release()}, {os.cpu_count()} cores; generator on the same cores",
         "- 8-byte keys from a space of 100000, 256-byte values", "",
         "| Side | puts/s | p50 µs | p99 µs | p99.9 µs | raw puts/s per repeat |", "|---|---:|---:|---:|---:|---|"]
for name, label in sides.items():
    runs = [json.load(open(f"{result}/raw/{name}-r{r}.json")) for r in range(1, repeats + 1)]
    median = {key: statistics.median(run[key] for run in runs) for key in ("ops_per_sec", "p50_us", "p99_us", "p999_us")}
    summary["sides"][name] = {"label": label, "median": median, "raw": runs}
    lines.append(f"| {label} | {median['ops_per_sec']:,.0f} | {median['p50_us']:.1f} | {median['p99_us']:.1f} | "
                 f"{median['p999_us']:.1f} | " + " · ".join(f"{run['ops_per_sec']:,.0f}" for run in runs) + " |")
lines += ["", "Where the time goes after the runs (`nvkv status`):", "", "```", open(f"{result}/status.txt").read().rstrip(), "```"]
open(f"{result}/report.md", "w").write("\n".join(lines) + "\n")
json.dump(summary, open(f"{result}/summary.json", "w"), indent=1)
print("\n".join(lines))
PY
