#!/usr/bin/env bash
# Runs the linearizability tests (tests/linearizability.rs) over many seeds:
# each seed starts a fresh 3-node cluster and records put/get/cas histories
# from 4 clients, once on loopback while the keys' group leader is SIGKILLed
# and restarted twice, once in network namespaces while the leader is cut
# away and healed, the new leader killed and restarted, and a follower cut
# away and healed; each history is checked with nvkv's WGL checker (about
# 10 s and 15 s per seed on a debug build). Stops at the first failing seed
# and prints it.
#
# Usage: tests/lincheck.sh [--seeds N] [--seed FIRST]
#   --seeds N      how many seeds (default 20)
#   --seed FIRST   the first seed (default: a new one each run); seeds
#                  FIRST, FIRST+1, ... run, so a failing one reruns with
#                  --seeds 1 --seed SEED
set -euo pipefail
cd "$(dirname "$0")/.."

seeds=20
first=""
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --seed) first="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "lincheck.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$seeds" in ''|*[!0-9]*|0) echo "lincheck.sh: --seeds $seeds must be a positive integer" >&2; exit 2 ;; esac
if [ -n "$first" ]; then
    case "$first" in *[!0-9]*) echo "lincheck.sh: --seed $first must be a whole number" >&2; exit 2 ;; esac
    if [ "$first" -gt 4294967295 ]; then
        echo "lincheck.sh: --seed $first is above 4294967295 (seeds are 32-bit)" >&2
        exit 2
    fi
    export NVKV_LINCHECK_SEED="$first"
fi
export NVKV_LINCHECK_SEEDS="$seeds"
exec cargo test --test linearizability -- --nocapture
