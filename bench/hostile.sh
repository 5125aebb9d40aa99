#!/usr/bin/env bash
# A well-behaved client's put p99 beside hostile clients, against its p99
# alone, on a one-node `nvkv serve` with the embedded default config (its
# data in a temporary directory): `nvkv bench put` at 1 client, 200 puts a
# second, first alone, then while at once
#   - 10,000 connections from 127.0.0.2 send nothing (python3),
#   - one connection pipelines puts from 256 clients (nvkv bench put --conns 1),
#   - one etcd stream holds 10,000 prefix watches of the written keys and its
#     output is never read (etcdctl watch -i into a pipe nobody reads),
#   - a client keeps putting 64 KiB values under new keys (the store fills
#     towards store.quota_bytes).
# In between, the machine's own share: the well-behaved client's p99 while
# the same hostile clients load a second node on the same cores.
# Prints the p99s, their ratio (the target is at most 3), the node's peak
# resident memory and the load average; take the figure only on an
# otherwise idle machine (see `uptime`).
#
# Usage: bench/hostile.sh [--seconds S]
# Environment: NVKV_BIN (default target/release/nvkv, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=20
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "hostile.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$seconds" in ''|*[!0-9]*|0) echo "hostile.sh: --seconds $seconds must be a positive integer" >&2; exit 2 ;; esac
for tool in python3 etcdctl; do
    command -v "$tool" > /dev/null || { echo "hostile.sh: needs $tool (scripts/setup.sh installs it)" >&2; exit 1; }
done

script=hostile.sh
config=""
# shellcheck source=bench/one-node.sh
source bench/one-node.sh

hostile=()
stop_hostile() {
    local pid
    for pid in "${hostile[@]}"; do
        pkill -TERM -P "$pid" 2>/dev/null || true
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 1
    for pid in "${hostile[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    hostile=()
}
decoy=""
stop_decoy() {
    if [ -n "$decoy" ] && kill -0 "$decoy" 2>/dev/null; then
        kill -TERM "$decoy"
        wait "$decoy" 2>/dev/null || true
    fi
    decoy=""
}
trap 'stop_hostile; stop_decoy; cleanup' EXIT

polite() {
    "$bin" bench put --endpoints "$endpoint" --clients 1 --rate 200 --seconds "$seconds" \
        --key-space 1000 --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["p99_us"])'
}

# start_hostile ENDPOINT ETCD_ENDPOINT: the hostile clients, at the node of
# those endpoints, in the background (their pids in $hostile).
start_hostile() {
    local target="$1" target_etcd="$2" unread
    python3 - "${target##*:}" "$((seconds + 30))" <<'EOF' &
import socket, sys, time
port, hold = int(sys.argv[1]), float(sys.argv[2])
held = []
for _ in range(10_000):
    try:
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.settimeout(2)
        s.connect(("127.0.0.1", port))
        held.append(s)
    except OSError:
        pass
time.sleep(hold)
EOF
    hostile+=($!)
    "$bin" bench put --endpoints "$target" --clients 256 --conns 1 --seconds "$((seconds + 30))" \
        --key-space 100000 > /dev/null 2>&1 &
    hostile+=($!)
    unread=$(mktemp -u "$work/unread.XXXX")
    mkfifo "$unread"
    exec 3<> "$unread"
    python3 -c 'import sys; [print("watch --prefix /hostile/") for _ in range(10_000)]' 2> /dev/null |
        ETCDCTL_API=3 etcdctl --endpoints="$target_etcd" watch -i > "$unread" 2> /dev/null &
    hostile+=($!)
    (
        index=0
        while true; do
            "$bin" put --endpoints "$target" "/hostile/fill/$index" "$(cat "$work/fill")" > /dev/null 2>&1 || true
            index=$((index + 1))
        done
    ) &
    hostile+=($!)
    sleep 5
}

python3 - "$work/fill" <<'EOF'
import sys
with open(sys.argv[1], "w") as out:
    out.write("x" * (64 << 10))
EOF

echo "hostile.sh: the well-behaved client alone, $seconds s" >&2
alone=$(polite)

# The machine's share of the figure: the same hostile clients at a second
# node on the same cores, so that the well-behaved client shares the cores
# with them but not its node. No node keeps its clients' p99 below this here.
"$bin" serve --data-dir "$work/decoy" --listen 127.0.0.1:0 --etcd-listen 127.0.0.1:0 \
    > "$work/decoy.out" 2> "$work/decoy.err" &
decoy=$!
decoy_ready=$(await_ready "$work/decoy.out" "$work/decoy.err" "$decoy" "the second nvkv serve") || exit 1
decoy_endpoint="127.0.0.1:${decoy_ready##*:}"
decoy_etcd=$(sed -nE 's/.*, etcd ([0-9.:]+), client .*/\1/p' <<< "$decoy_ready")
start_hostile "$decoy_endpoint" "$decoy_etcd"
echo "hostile.sh: the well-behaved client while the hostile ones load a second node, $seconds s" >&2
floor=$(polite)
stop_hostile
stop_decoy
rm -rf "$work/decoy"

start_hostile "$endpoint" "$nvkv_etcd_endpoint"
(
    while kill -0 "$daemon" 2>/dev/null; do
        awk '/VmRSS/ { print $2 }' "/proc/$daemon/status" 2>/dev/null
        sleep 0.2
    done
) > "$work/rss" &
hostile+=($!)
echo "hostile.sh: the well-behaved client beside the hostile ones, $seconds s" >&2
loaded=$(polite)
peak=$(sort -n "$work/rss" | tail -1)
kill -0 "$daemon" || { echo "hostile.sh: the node died under the hostile clients" >&2; exit 1; }

python3 - "$alone" "$loaded" "$peak" "$(cut -d' ' -f1-3 /proc/loadavg)" "$floor" <<'EOF'
import sys
alone, loaded, peak_kib, load = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3] or 0), sys.argv[4]
floor = float(sys.argv[5])
print(f"well-behaved put p99 alone:          {alone:.0f} us")
print(f"well-behaved put p99, hostile clients at a second node: {floor:.0f} us")
print(f"well-behaved put p99 beside hostile: {loaded:.0f} us")
print(f"ratio: {loaded / alone:.2f} (target: at most 3); the machine's own, hostile clients at a second node: {floor / alone:.2f}")
print(f"node peak resident memory: {peak_kib >> 10} MiB")
print(f"load average at the end: {load}")
EOF
