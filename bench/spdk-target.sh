#!/usr/bin/env bash
# bench/spdk-target.sh: runs nvkv's spdk backend against SPDK's own NVMe-oF
# target on this machine: nvmf_tgt from a given SPDK build serves malloc
# bdevs over NVMe/TCP on 127.0.0.1, and this script runs, against it, the
# namespace suite and the shard log tests (`cargo test --features spdk`),
# then a one-node `nvkv serve` on the spdk backend with a put/get round trip.
#
# It owns the nvmf_tgt it starts, its RPC socket and a temporary directory;
# all are stopped or removed on exit (also on Ctrl-C). It never touches a
# PCI device and never changes the machine's hugepage reservation.
set -euo pipefail

script=spdk-target.sh

usage() {
  cat <<'EOF'
Usage: bench/spdk-target.sh --spdk DIR [options]

Starts SPDK's nvmf_tgt from DIR (an SPDK source tree built with --with-shared,
see README "SPDK backend") exporting three 64 MiB malloc bdevs as namespaces 1,
2 and 3 of one subsystem over NVMe/TCP on 127.0.0.1, then:
  1. cargo test --features spdk --lib spdk  with NVKV_SPDK_TRID naming the target:
     the namespace suite on namespace 1, the shard log round trip on namespace 2
  2. nvkv serve (built with --features spdk) on namespace 3, one node:
     nvkv put, then nvkv get of the same key, which must print the value
and stops the target.

Options:
  --spdk DIR      the SPDK build to use (required): DIR/build/bin/nvmf_tgt,
                  DIR/scripts/rpc.py and DIR/build/lib/pkgconfig
  --port PORT     NVMe/TCP port of the target (default 4420)
  --hugepages     run target and tests on hugepages (reserve them first, e.g.
                  echo 1024 > /proc/sys/vm/nr_hugepages); default: no hugepages
                  (SPDK's --no-huge, which NVMe/TCP allows)
  --keep          leave the target running after the checks, printing its
                  transport id, until Ctrl-C (for bench/device.sh or by hand)
  -h, --help      this text

Needs root (SPDK's env locks memory) and python3 for SPDK's rpc.py.
EOF
}

die() {
  printf '%s: error: %s\n' "$script" "$*" >&2
  exit 1
}

spdk=""
port=4420
hugepages=0
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --spdk) spdk="${2:?--spdk needs a directory}"; shift 2 ;;
    --port) port="${2:?--port needs a number}"; shift 2 ;;
    --hugepages) hugepages=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1'; see --help" ;;
  esac
done
[ -n "$spdk" ] || die "--spdk DIR is required (an SPDK tree built with --with-shared); see --help"
spdk=$(cd "$spdk" && pwd) || die "--spdk $spdk is not a directory"
target_bin="$spdk/build/bin/nvmf_tgt"
rpc="$spdk/scripts/rpc.py"
[ -x "$target_bin" ] || die "$target_bin is missing: build SPDK in $spdk first (README, SPDK backend)"
[ -f "$rpc" ] || die "$rpc is missing: --spdk must name an SPDK source tree"
case "$port" in ''|*[!0-9]*) die "--port $port is not a number" ;; esac
[ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--port $port is outside 1..=65535"

cd "$(dirname "$0")/.."
work=$(mktemp -d)
target_pid=""
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
    kill -TERM "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
  fi
  if [ -n "$target_pid" ] && kill -0 "$target_pid" 2>/dev/null; then
    kill -TERM "$target_pid"; wait "$target_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

subnqn="nqn.2016-06.io.spdk:nvkv"
trid="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$subnqn"
socket="$work/spdk.sock"
memory=(--no-huge -s 1024)
if [ "$hugepages" = 1 ]; then memory=(-s 1024); fi

# The target polls one core at 100%: the last one, since nvkv's first shard
# (and spdk_nvme_perf -c 0x1 in a comparison) takes core 0.
target_core=$(( $(nproc) - 1 ))
target_mask=$(printf '0x%x' $(( 1 << target_core )))
echo "$script: starting $target_bin (${memory[*]}) on core $target_core, 127.0.0.1:$port" >&2
LD_LIBRARY_PATH="$spdk/build/lib" "$target_bin" -m "$target_mask" -r "$socket" "${memory[@]}" > "$work/target.log" 2>&1 &
target_pid=$!
for _ in $(seq 1 300); do
  [ -S "$socket" ] && break
  kill -0 "$target_pid" 2>/dev/null || { cat "$work/target.log" >&2; die "nvmf_tgt exited at start"; }
  sleep 0.1
done
[ -S "$socket" ] || { cat "$work/target.log" >&2; die "nvmf_tgt made no RPC socket in 30 s"; }
call() { python3 "$rpc" -s "$socket" "$@" > /dev/null; }
call nvmf_create_transport -t TCP
call nvmf_create_subsystem "$subnqn" -a -s NVKV00000001 -d nvkv
for nsid in 1 2 3; do
  call bdev_malloc_create -b "Malloc$nsid" 64 4096
  call nvmf_subsystem_add_ns -n "$nsid" "$subnqn" "Malloc$nsid"
done
call nvmf_subsystem_add_listener -t tcp -a 127.0.0.1 -s "$port" -f ipv4 "$subnqn"
echo "$script: target ready: $trid (namespaces 1, 2, 3 of 64 MiB, 4096-byte blocks)" >&2

export SPDK_DIR="$spdk"
export NVKV_SPDK_TRID="$trid"
export NVKV_SPDK_HUGEPAGES="$hugepages"

echo "$script: [1/2] the namespace suite and the shard log on the spdk backend" >&2
cargo test --features spdk --lib spdk -- --nocapture 2>&1 | tee "$work/test.log" >&2
grep -q 'DID NOT RUN' "$work/test.log" && die "a test on the spdk backend did not run (see above)"
grep -q '^test nvme::suite::spdk_backend_passes_the_namespace_suite ... ok' "$work/test.log" \
  || die "the namespace suite did not pass on the spdk backend"
grep -q '^test wal::tests::round_trip_on_the_spdk_backend_in_every_durability_mode ... ok' "$work/test.log" \
  || die "the shard log round trip did not pass on the spdk backend"

echo "$script: [2/2] one nvkv serve on namespace 3: put, then get" >&2
cargo build --features spdk >&2
bin=target/debug/nvkv
spdk_hugepages=false
if [ "$hugepages" = 1 ]; then spdk_hugepages=true; fi
cat > "$work/nvkv.toml" <<EOF
[reactor]
shards = 1

[namespace]
backend = "spdk"
transport = "$trid"
nsid = 3
spdk_memory_bytes = "512MiB"
spdk_hugepages = $spdk_hugepages
EOF
"$bin" serve --config "$work/nvkv.toml" --data-dir "$work/data" --listen 127.0.0.1:0 \
  > "$work/serve.out" 2> "$work/serve.err" &
serve_pid=$!
# shellcheck source=bench/await-ready.sh
source bench/await-ready.sh
ready=$(await_ready "$work/serve.out" "$work/serve.err" "$serve_pid" "nvkv serve") || exit 1
endpoint="127.0.0.1:${ready##*:}"
echo "$script: $ready" >&2
value="on-spdk-$(date +%s)"
"$bin" --endpoints "$endpoint" put /spdk/round-trip "$value" >&2
got=$("$bin" --endpoints "$endpoint" get /spdk/round-trip)
echo "$script: get /spdk/round-trip -> $got" >&2
grep -q -- "$value" <<< "$got" || die "get returned '$got', not the value put ($value)"
kill -TERM "$serve_pid"; wait "$serve_pid" || die "nvkv serve did not stop cleanly (see $work/serve.err)"
serve_pid=""
echo "$script: all checks passed on $trid" >&2

if [ "$keep" = 1 ]; then
  echo "$script: target left running: NVKV_SPDK_TRID='$trid'; Ctrl-C stops it" >&2
  wait "$target_pid"
fi
