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
# shellcheck source=bench/common.sh
source bench/common.sh
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
progress_start $((repeats * ${#sides[@]}))
for repeat in $(seq 1 "$repeats"); do
    for side in "${sides[@]}"; do
        name="${side%%:*}"; args="${side#*:}"
        progress_step "$name" "$repeat"
        # shellcheck disable=SC2086
        "$bin" --endpoints "$endpoint" bench put $args --key-bytes 8 --value-bytes 256 \
            --key-space 100000 --seconds "$seconds" --json > "$result/raw/$name-r$repeat.json"
    done
done
"$bin" --endpoints "$endpoint" status > "$result/status.txt"

report put "$result" "$repeats" "$seconds" "$ready" "$(git rev-parse HEAD)" "$config" "$kind" "$cluster3"
