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
# Prints both p99s, their ratio (the target is at most 3), the node's peak
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
}
trap 'stop_hostile; cleanup' EXIT

polite() {
    "$bin" bench put --endpoints "$endpoint" --clients 1 --rate 200 --seconds "$seconds" \
        --key-space 1000 --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["p99_us"])'
}

echo "hostile.sh: the well-behaved client alone, $seconds s" >&2
alone=$(polite)

port=${endpoint##*:}
python3 - "$port" "$((seconds + 30))" <<'EOF' &
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
"$bin" bench put --endpoints "$endpoint" --clients 256 --conns 1 --seconds "$((seconds + 30))" \
    --key-space 100000 > /dev/null 2>&1 &
hostile+=($!)
mkfifo "$work/unread"
# The fifo is opened for reading once and never read: etcdctl blocks on
# its output and stops reading its stream.
exec 3<> "$work/unread"
python3 -c 'import sys; [print("watch --prefix /hostile/") for _ in range(10_000)]' 2> /dev/null |
    ETCDCTL_API=3 etcdctl --endpoints="$nvkv_etcd_endpoint" watch -i > "$work/unread" 2> /dev/null &
hostile+=($!)
python3 - "$work/fill" <<'EOF' &
import sys
with open(sys.argv[1], "w") as out:
    out.write("x" * (64 << 10))
EOF
wait $!
(
    index=0
    while true; do
        "$bin" put --endpoints "$endpoint" "/hostile/fill/$index" "$(cat "$work/fill")" > /dev/null 2>&1 || true
        index=$((index + 1))
    done
) &
hostile+=($!)
sleep 5

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

python3 - "$alone" "$loaded" "$peak" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import sys
alone, loaded, peak_kib, load = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3] or 0), sys.argv[4]
print(f"well-behaved put p99 alone:          {alone:.0f} us")
print(f"well-behaved put p99 beside hostile: {loaded:.0f} us")
print(f"ratio: {loaded / alone:.2f} (target: at most 3)")
print(f"node peak resident memory: {peak_kib >> 10} MiB")
print(f"load average at the end: {load}")
EOF
