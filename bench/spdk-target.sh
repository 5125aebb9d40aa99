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
see docs/operations.md#the-spdk-backend) exporting four 64 MiB malloc bdevs as namespaces 1
to 4 of one subsystem over NVMe/TCP on 127.0.0.1, then:
  1. cargo test --features spdk --lib spdk  with NVKV_SPDK_TRID naming the target:
     the namespace suite on namespace 1, the shard log round trip on namespace 2,
     the shared-controller and failed-queue-pair tests on namespace 3 (the
     latter through a TCP proxy it cuts), and the device benchmark past two
     wraps of its log on namespace 4
  2. nvkv serve (built with --features spdk) on namespace 3, one node:
     nvkv put, then nvkv get of the same key, which must print the value
and stops the target.

Options:
  --spdk DIR      the SPDK build to use (required): DIR/build/bin/nvmf_tgt,
                  DIR/scripts/rpc.py and DIR/build/lib/pkgconfig
  --port PORT     NVMe/TCP port of the target (default: a free port)
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
port=""
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
if [ -n "$port" ]; then
  case "$port" in *[!0-9]*) die "--port $port is not a number" ;; esac
  [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--port $port is outside 1..=65535"
fi

cd "$(dirname "$0")/.."
# shellcheck source=bench/spdk-common.sh
source bench/spdk-common.sh
spdk_check_dir "$spdk"
work=$(mktemp -d)
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
    kill -TERM "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
  fi
  spdk_target_stop
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

[ -n "$port" ] || port=$(spdk_free_port)
spdk_target_start "$spdk" "$work" "$port" "$hugepages" 4 64
trid=$SPDK_TRID
target_pid=$SPDK_TARGET_PID

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
for regression in nvme::spdk::tests::shards_attaching_one_controller_at_once_share_it \
  nvme::spdk::tests::a_failed_queue_pair_fails_its_commands_instead_of_hanging \
  bench::device::tests::the_device_bench_wraps_the_log_on_the_spdk_backend; do
  grep -q "^test $regression ... ok" "$work/test.log" || die "$regression did not pass on the spdk backend"
done

echo "$script: [2/2] one nvkv serve on namespace 3: put, then get" >&2
cargo build --features spdk >&2
bin="${CARGO_TARGET_DIR:-target}/debug/nvkv"
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
"$bin" serve --config "$work/nvkv.toml" --data-dir "$work/data" --listen 127.0.0.1:0 --etcd-listen 127.0.0.1:0 \
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
