# bench/spdk-common.sh: starting and stopping SPDK's nvmf_tgt for the scripts
# that run nvkv's spdk backend against it (bench/spdk-target.sh,
# bench/device.sh --spdk). Sourced, not run.
#
# spdk_target_start SPDK_DIR WORK PORT HUGEPAGES NAMESPACES MIB
#   starts DIR/build/bin/nvmf_tgt on the last core (nvkv's first shard and
#   spdk_nvme_perf take core 0), its RPC socket and log in WORK, exporting
#   NAMESPACES malloc bdevs of MIB MiB each (4096-byte blocks) as namespaces
#   1..NAMESPACES of one subsystem over NVMe/TCP on 127.0.0.1:PORT. HUGEPAGES
#   is 1 to take the target's memory from hugepages, 0 for --no-huge. Sets
#   SPDK_TARGET_PID, SPDK_TARGET_CORE and SPDK_TRID (the transport id, without
#   a namespace). Dies (through the caller's `die`) when the target does not
#   come up.
# spdk_target_stop
#   stops that target (SIGTERM, then waits); safe to call twice.
# spdk_check_dir SPDK_DIR
#   dies unless SPDK_DIR holds a built SPDK tree.
# spdk_free_port
#   prints a TCP port on 127.0.0.1 that nothing listens on now (other SPDK
#   targets may run on this machine).

SPDK_TARGET_PID=""
SPDK_TARGET_CORE=""
SPDK_TRID=""
SPDK_SUBNQN="nqn.2016-06.io.spdk:nvkv"

spdk_check_dir() {
  local spdk=$1
  [[ -x $spdk/build/bin/nvmf_tgt ]] \
    || die "$spdk/build/bin/nvmf_tgt is missing: build SPDK in $spdk first (docs/operations.md#the-spdk-backend)"
  [[ -f $spdk/scripts/rpc.py ]] || die "$spdk/scripts/rpc.py is missing: --spdk must name an SPDK source tree"
}

spdk_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

spdk_target_start() {
  local spdk=$1 work=$2 port=$3 hugepages=$4 namespaces=$5 mib=$6
  local socket="$work/spdk.sock" log="$work/nvmf_tgt.log" memory nsid
  memory=(--no-huge -s $((1024 + namespaces * mib)))
  if [[ $hugepages == 1 ]]; then memory=(-s $((1024 + namespaces * mib))); fi
  SPDK_TARGET_CORE=$(($(nproc) - 1))
  local mask
  mask=$(printf '0x%x' $((1 << SPDK_TARGET_CORE)))
  printf '%s: starting nvmf_tgt (%s) on core %s, 127.0.0.1:%s\n' "$script" "${memory[*]}" \
    "$SPDK_TARGET_CORE" "$port" >&2
  LD_LIBRARY_PATH="$spdk/build/lib" "$spdk/build/bin/nvmf_tgt" -m "$mask" -r "$socket" "${memory[@]}" \
    >"$log" 2>&1 &
  SPDK_TARGET_PID=$!
  local _
  for _ in $(seq 1 300); do
    [[ -S $socket ]] && break
    kill -0 "$SPDK_TARGET_PID" 2>/dev/null || { cat "$log" >&2; SPDK_TARGET_PID=""; die "nvmf_tgt exited at start"; }
    sleep 0.1
  done
  [[ -S $socket ]] || { cat "$log" >&2; die "nvmf_tgt made no RPC socket in 30 s"; }
  spdk_rpc() { python3 "$spdk/scripts/rpc.py" -s "$socket" "$@" >/dev/null || die "rpc.py $* failed (see $log)"; }
  spdk_rpc nvmf_create_transport -t TCP
  spdk_rpc nvmf_create_subsystem "$SPDK_SUBNQN" -a -s NVKV00000001 -d nvkv
  for nsid in $(seq 1 "$namespaces"); do
    spdk_rpc bdev_malloc_create -b "Malloc$nsid" "$mib" 4096
    spdk_rpc nvmf_subsystem_add_ns -n "$nsid" "$SPDK_SUBNQN" "Malloc$nsid"
  done
  spdk_rpc nvmf_subsystem_add_listener -t tcp -a 127.0.0.1 -s "$port" -f ipv4 "$SPDK_SUBNQN"
  SPDK_TRID="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$SPDK_SUBNQN"
  printf '%s: target ready: %s (namespaces 1-%s of %s MiB, 4096-byte blocks)\n' "$script" "$SPDK_TRID" \
    "$namespaces" "$mib" >&2
}

spdk_target_stop() {
  if [[ -n $SPDK_TARGET_PID ]] && kill -0 "$SPDK_TARGET_PID" 2>/dev/null; then
    kill -TERM "$SPDK_TARGET_PID"
    wait "$SPDK_TARGET_PID" 2>/dev/null || true
  fi
  SPDK_TARGET_PID=""
}
