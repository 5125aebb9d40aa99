# shellcheck shell=bash disable=SC2154,SC2034  # $script and $config come from the caller; it uses what this sets
# Sourced by put.sh (not run on its own): builds the nvkv binary when
# missing and starts a 3-member cluster on this machine, shaped like
# config/cluster3 (two shards per member, loopback addresses) but on ports
# picked at random below the ephemeral range (a base from 10000 to 29999,
# members 200 apart) and with
# the data in a temporary directory; every member is stopped with SIGTERM
# (and the directory removed) when the script exits, also on Ctrl-C.
#
# Reads: $script (the caller's name, for messages), $config (extra config
# lines appended to each member's file, or empty), NVKV_BIN, and
# NVKV_MEMBER_SHARDS (shards per member, default 2 as in config/cluster3).
# Sets: $bin, $work, $daemons (the pids), $ready (the ready lines, joined),
# $endpoint (the three client addresses, comma-separated) and
# $nvkv_etcd_endpoint (the three etcd API addresses, comma-separated). Returns once
# every member names a leader for every group.

bin="${NVKV_BIN:-target/release/nvkv}"
if [ ! -x "$bin" ]; then
    echo "$script: building $bin" >&2
    cargo build --release >&2
fi

work=$(mktemp -d)
daemons=()
cleanup() {
    for pid in "${daemons[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${daemons[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

member_shards="${NVKV_MEMBER_SHARDS:-2}"
case "$member_shards" in
    ''|*[!0-9]*|0) echo "$script: NVKV_MEMBER_SHARDS=$member_shards must be a positive integer" >&2; exit 2 ;;
esac
base=$((10000 + RANDOM % 20000))
members=""
for id in 1 2 3; do
    members+="
[[cluster.members]]
id = $id
name = \"node$id\"
client_address = \"127.0.0.1:$((base + (id - 1) * 200))\"
peer_address = \"127.0.0.1:$((base + (id - 1) * 200 + 100))\"
"
done
for id in 1 2 3; do
    cat > "$work/node$id.toml" <<TOML
[node]
member_id = $id
name = "node$id"
data_dir = "$work/node$id"
client_address = "127.0.0.1:$((base + (id - 1) * 200))"
peer_address = "127.0.0.1:$((base + (id - 1) * 200 + 100))"

[etcd]
address = "127.0.0.1:$((base + (id - 1) * 200 + 150))"

[reactor]
shards = $member_shards

[namespace]
namespace_bytes = "1GiB"

[cluster]
name = "bench-cluster3"
$members
TOML
    if [ -n "$config" ]; then
        cat "$config" >> "$work/node$id.toml"
    fi
    "$bin" serve --config "$work/node$id.toml" > "$work/serve$id.out" 2> "$work/serve$id.err" &
    daemons+=($!)
done
# shellcheck source=bench/await-ready.sh
source bench/await-ready.sh
ready=""
for id in 1 2 3; do
    line=$(await_ready "$work/serve$id.out" "$work/serve$id.err" "${daemons[$((id - 1))]}" "member $id") || exit 1
    ready+="${ready:+; }$line"
done
endpoint="127.0.0.1:$base,127.0.0.1:$((base + 200)),127.0.0.1:$((base + 400))"
nvkv_etcd_endpoint="127.0.0.1:$((base + 150)),127.0.0.1:$((base + 350)),127.0.0.1:$((base + 550))"
# Ready members may still be electing: a write to a group with no leader yet
# is refused (NotLeader, no leader known), so wait until every member names
# a leader for every group.
leaders_known() {
    "$bin" --endpoints "$endpoint" status -w json 2>/dev/null | python3 -c '
import json, sys
try:
    members = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
sys.exit(0 if len(members) == 3 and all(group["leader"] for member in members for group in member["groups"]) else 1)'
}
for _ in $(seq 1 300); do
    if leaders_known; then break; fi
    for id in 1 2 3; do
        if ! kill -0 "${daemons[$((id - 1))]}" 2>/dev/null; then
            echo "$script: member $id exited while the groups elected leaders:" >&2; cat "$work/serve$id.err" >&2; exit 1
        fi
    done
    sleep 0.1
done
leaders_known || { echo "$script: the 3 members named no leader for some group within 30 s" >&2; exit 1; }
echo "$script: 3 members ready at $endpoint" >&2
