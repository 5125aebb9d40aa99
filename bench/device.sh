#!/usr/bin/env bash
# bench/device.sh: device-level comparison of etcd's WAL pattern, fio io_uring
# O_DIRECT+O_DSYNC writes, and nvkv's own log path, on one target, in one run.
#
# It owns nothing but its temporary files (under the bench directory and a
# mktemp directory) and its results directory; it never touches a block device
# unless given --device and --yes. See bench/README.md for what each number
# means and how the ratios are judged.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bench/device.sh [options]

Compares, on one target and in one run, the write paths a Raft log can take:
  (a) etcd WAL pattern: fio --rw=write --ioengine=sync --fdatasync=1 --size=22m --bs=2300
      (etcd's well known disk check); ops/s, fdatasync latency, write() latency
  (b) fio io_uring --direct=1 --sync=dsync --bs=4k --rw=write at iodepth 1 and 32,
      time based; ops/s and completion latency p50/p99/p99.9
  (c) nvkv's own log path: nvkv bench device --appenders 1 and 64 --entry-bytes 2300 --json
Each repeat runs the sides interleaved (a, b1, b32, c1, c64), so drift on a noisy
machine hits every side alike. Medians over repeats are reported with the raw
values beside them, plus the two ratios nvkv is judged by:
  (1) nvkv p50 @ 1 appender / fio io_uring dsync QD1 p50     goal <= 1.25
  (2) nvkv ops/s @ 64 appenders / etcd WAL-pattern ops/s      goal >= 10
With --spdk DIR it also starts SPDK's nvmf_tgt from DIR (bench/spdk-common.sh,
on the last core, two malloc namespaces over NVMe/TCP on 127.0.0.1) and runs
in every repeat, before the sides above:
  (d) DIR/build/bin/spdk_nvme_perf -q 1 and -q 32 -o 4096 -w write -t S -L on
      namespace 1 (core 0); ops/s, average and p50/p99/p99.9 latency
  (e) nvkv bench device on the spdk backend, 1 appender, 2300 B entries, on
      namespace 2 of the same target (its shard on core 0)
and a third judged ratio:
  (3) nvkv spdk p50 @ 1 appender / spdk_nvme_perf QD1 p50     goal <= 1.25

Options:
  --repeats N     repeats of every side (default 3)
  --seconds S     seconds per timed run, fio io_uring and nvkv (default
                  $SECONDS_PER_RUN, else 5)
  --size SIZE     size of the target file, or of the region used on a device
                  (default 1GiB; suffixes K M G T, binary; a multiple of 1 MiB,
                  at least 64 MiB). nvkv's namespace gets the same size.
  --device DEV    run on raw block device DEV instead of a file. EVERYTHING in the
                  first SIZE bytes of DEV IS DESTROYED. Needs --yes.
  --yes           confirm that --device may be overwritten
  --out DIR       parent directory of the results (default bench/results of this
                  repository); the run goes to DIR/device-<UTC YYYYMMDD-HHMM>/
                  and is copied to DIR/device-latest/ (with --spdk-only:
                  device-spdk-<...>/ and device-spdk-latest/)
  --spdk DIR      add the SPDK sides, from the SPDK build in DIR (see
                  docs/operations.md#the-spdk-backend); nvkv must be built with --features spdk
  --spdk-only     with --spdk: run only the SPDK sides (d, e), not a to c
  --spdk-mib MIB  size of each of the target's two malloc namespaces (default
                  256; 64 to 4096)
  -h, --help      this text

Environment:
  NVKV_BENCH_DIR   directory holding the target files (default bench/results/tmp,
                   gitignored): device.img (fio, SIZE), etcd-wal.img (22 MiB) and
                   nvkv.img (nvkv's namespace, recreated for every nvkv run). All
                   are deleted on exit.
  NVKV_BIN         nvkv binary (default target/release/nvkv, built with
                   `cargo build --release` when missing)
  SECONDS_PER_RUN  default for --seconds

Needs fio, gnuplot and python3; installs fio and gnuplot-nox with apt-get when
they are missing. At the defaults a run takes about 2 minutes, plus the etcd
pattern's time on a slow disk.
EOF
}

# ---------------------------------------------------------------- helpers

die() {
  printf 'device.sh: error: %s\n' "$*" >&2
  exit 1
}

note() {
  printf 'device.sh: %s\n' "$*" >&2
}

# parse_size TEXT -> bytes on stdout. Binary multiples: 1G = 1GiB = 1073741824.
parse_size() {
  local text=$1 number unit
  if [[ ! $text =~ ^([0-9]+)([kKmMgGtT]?)(i?[bB])?$ ]]; then
    die "--size '$text' is not a size; write e.g. 1G, 512M, 2GiB or a byte count"
  fi
  number=${BASH_REMATCH[1]}
  unit=${BASH_REMATCH[2]}
  case $unit in
    '') ;;
    k | K) number=$((number * 1024)) ;;
    m | M) number=$((number * 1024 ** 2)) ;;
    g | G) number=$((number * 1024 ** 3)) ;;
    t | T) number=$((number * 1024 ** 4)) ;;
  esac
  printf '%s\n' "$number"
}

positive_integer() {
  local name=$1 value=$2
  if [[ ! $value =~ ^[0-9]+$ ]] || ((10#$value == 0)); then
    die "$name '$value' must be a positive whole number"
  fi
}

# ---------------------------------------------------------------- options

COMMAND_LINE=$(printf '%q ' "$0" "$@")
COMMAND_LINE=${COMMAND_LINE% }

REPEATS=3
RUN_SECONDS=${SECONDS_PER_RUN:-5}
SIZE_TEXT=1G
DEVICE=""
CONFIRMED=0
OUT_PARENT=""
SPDK=""
SPDK_ONLY=0
SPDK_MIB=256

need_value() {
  if (($# < 2)) || [[ -z $2 ]]; then
    die "$1 needs a value (see --help)"
  fi
}

while (($#)); do
  case $1 in
    --repeats) need_value "$@"; REPEATS=$2; shift 2 ;;
    --repeats=*) REPEATS=${1#*=}; shift ;;
    --seconds) need_value "$@"; RUN_SECONDS=$2; shift 2 ;;
    --seconds=*) RUN_SECONDS=${1#*=}; shift ;;
    --size) need_value "$@"; SIZE_TEXT=$2; shift 2 ;;
    --size=*) SIZE_TEXT=${1#*=}; shift ;;
    --device) need_value "$@"; DEVICE=$2; shift 2 ;;
    --device=*) DEVICE=${1#*=}; shift ;;
    --yes) CONFIRMED=1; shift ;;
    --out) need_value "$@"; OUT_PARENT=$2; shift 2 ;;
    --out=*) OUT_PARENT=${1#*=}; shift ;;
    --spdk) need_value "$@"; SPDK=$2; shift 2 ;;
    --spdk=*) SPDK=${1#*=}; shift ;;
    --spdk-only) SPDK_ONLY=1; shift ;;
    --spdk-mib) need_value "$@"; SPDK_MIB=$2; shift 2 ;;
    --spdk-mib=*) SPDK_MIB=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

positive_integer --repeats "$REPEATS"
positive_integer "--seconds (or SECONDS_PER_RUN)" "$RUN_SECONDS"
REPEATS=$((10#$REPEATS))
RUN_SECONDS=$((10#$RUN_SECONDS))
SIZE_BYTES=$(parse_size "$SIZE_TEXT")
((SIZE_BYTES % (1024 * 1024) == 0)) \
  || die "--size '$SIZE_TEXT' ($SIZE_BYTES bytes) must be a multiple of 1 MiB"
((SIZE_BYTES >= 64 * 1024 * 1024)) \
  || die "--size '$SIZE_TEXT' ($SIZE_BYTES bytes) is below the 64 MiB minimum"

positive_integer --spdk-mib "$SPDK_MIB"
SPDK_MIB=$((10#$SPDK_MIB))
((SPDK_MIB >= 64 && SPDK_MIB <= 4096)) || die "--spdk-mib '$SPDK_MIB' must be from 64 to 4096"
((SPDK_ONLY == 0)) || [[ -n $SPDK ]] || die "--spdk-only needs --spdk DIR"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${NVKV_BENCH_DIR:-$REPO_ROOT/bench/results/tmp}
OUT_PARENT=${OUT_PARENT:-$REPO_ROOT/bench/results}
if [[ -n ${NVKV_BIN:-} ]]; then
  NVKV=$NVKV_BIN
  NVKV_IS_DEFAULT=0
else
  NVKV=$REPO_ROOT/target/release/nvkv
  NVKV_IS_DEFAULT=1
fi
ETCD_WAL_BYTES=$((22 * 1024 * 1024))

# shellcheck source=bench/spdk-common.sh
source "$SCRIPT_DIR/spdk-common.sh"
# shellcheck source=bench/common.sh
source "$SCRIPT_DIR/common.sh"
script=device.sh
if [[ -n $SPDK ]]; then
  [[ -d $SPDK ]] || die "--spdk '$SPDK' is not a directory"
  SPDK=$(cd "$SPDK" && pwd)
  spdk_check_dir "$SPDK"
  [[ -x $SPDK/build/bin/spdk_nvme_perf ]] \
    || die "$SPDK/build/bin/spdk_nvme_perf is missing: build SPDK's examples in $SPDK (docs/operations.md#the-spdk-backend)"
fi

# ---------------------------------------------------------------- cleanup

WORK=""
CHILD_PID=""
CREATED_FILES=()

cleanup() {
  if [[ -n $CHILD_PID ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
    kill -TERM "$CHILD_PID" 2>/dev/null || true
    wait "$CHILD_PID" 2>/dev/null || true
  fi
  CHILD_PID=""
  spdk_target_stop
  local file
  for file in "${CREATED_FILES[@]}"; do
    [[ -f $file ]] && rm -f -- "$file"
  done
  [[ -n $WORK && -d $WORK ]] && rm -rf -- "$WORK"
  return 0
}

on_signal() {
  note "interrupted by $1; stopping the running benchmark and removing temporary files"
  trap - EXIT
  cleanup
  exit "$2"
}

trap cleanup EXIT
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGTERM 143' TERM
trap 'on_signal SIGHUP 129' HUP

# ---------------------------------------------------------------- tools

install_packages() {
  command -v apt-get >/dev/null \
    || die "missing $* and there is no apt-get to install them; install them and rerun"
  ((EUID == 0)) || die "missing $*; rerun as root so apt-get can install them, or install them yourself"
  note "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q "$@" >"${TMPDIR:-/tmp}/nvkv-bench-apt.log" 2>&1; then
    apt-get update -q >>"${TMPDIR:-/tmp}/nvkv-bench-apt.log" 2>&1 || true
    apt-get install -y -q "$@" >>"${TMPDIR:-/tmp}/nvkv-bench-apt.log" 2>&1 \
      || die "apt-get install $* failed; see ${TMPDIR:-/tmp}/nvkv-bench-apt.log"
  fi
}

missing=()
command -v fio >/dev/null || missing+=(fio)
command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
command -v python3 >/dev/null || missing+=(python3)
((${#missing[@]} == 0)) || install_packages "${missing[@]}"

FIO_VERSION=$(fio --version)
GNUPLOT_TERMINAL=png
if gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo; then
  GNUPLOT_TERMINAL=pngcairo
fi

if [[ ! -x $NVKV ]]; then
  if ((NVKV_IS_DEFAULT)); then
    command -v cargo >/dev/null \
      || die "$NVKV is missing and cargo is not installed to build it; set NVKV_BIN to an nvkv binary"
    features=()
    if [[ -n $SPDK ]]; then features=(--features spdk); fi
    note "$NVKV is missing; building it with cargo build --release ${features[*]} (this can take minutes)"
    (cd "$REPO_ROOT" && SPDK_DIR=$SPDK cargo build --release "${features[@]}") >&2 \
      || die "cargo build --release ${features[*]} failed in $REPO_ROOT"
    [[ -x $NVKV ]] || die "cargo build --release succeeded but $NVKV is still missing"
  else
    die "NVKV_BIN '$NVKV' is not an executable file"
  fi
fi

# ---------------------------------------------------------------- target

mkdir -p -- "$BENCH_DIR" || die "cannot create NVKV_BENCH_DIR '$BENCH_DIR'"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
exec 9>"$BENCH_DIR/.device.lock"
flock -n 9 || die "another bench/device.sh run holds $BENCH_DIR/.device.lock; wait for it to finish"

if [[ -n $DEVICE ]]; then
  [[ -b $DEVICE ]] || die "--device '$DEVICE' is not a block device"
  DEVICE=$(readlink -f -- "$DEVICE")
  mounted=$(lsblk -nro MOUNTPOINT -- "$DEVICE" 2>/dev/null | grep -v '^$' || true)
  [[ -z $mounted ]] || die "--device '$DEVICE' (or a partition of it) is mounted at: $mounted; refusing to overwrite it"
  device_bytes=$(blockdev --getsize64 "$DEVICE")
  ((SIZE_BYTES <= device_bytes)) \
    || die "--size '$SIZE_TEXT' ($SIZE_BYTES bytes) is larger than --device '$DEVICE' ($device_bytes bytes)"
  cat >&2 <<EOF

  ###########################################################################
  ##  WARNING: the first $SIZE_BYTES bytes of $DEVICE WILL BE OVERWRITTEN.
  ##  Any filesystem, partition table or data there is destroyed.
  ###########################################################################

EOF
  ((CONFIRMED)) || die "refusing to write to --device '$DEVICE' without --yes"
  TARGET_KIND="device"
  FIO_TARGET=$DEVICE
  ETCD_TARGET=$DEVICE
  NVKV_NAMESPACE=$DEVICE
else
  TARGET_KIND="file"
  FIO_TARGET=$BENCH_DIR/device.img
  ETCD_TARGET=$BENCH_DIR/etcd-wal.img
  NVKV_NAMESPACE=$BENCH_DIR/nvkv.img
  available_bytes=$(($(df -Pk -- "$BENCH_DIR" | awk 'NR == 2 { print $4 }') * 1024))
  needed_bytes=$((2 * SIZE_BYTES + ETCD_WAL_BYTES + 64 * 1024 * 1024))
  ((available_bytes >= needed_bytes)) \
    || die "$BENCH_DIR has $available_bytes bytes free, the file targets need $needed_bytes; lower --size or set NVKV_BENCH_DIR"
  CREATED_FILES+=("$FIO_TARGET" "$ETCD_TARGET" "$NVKV_NAMESPACE")
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nvkv-bench-device.XXXXXX")
mkdir -p "$WORK/run/raw"

# ---------------------------------------------------------------- running

# run_logged NAME COMMAND...: runs COMMAND in the background (so a signal can
# stop it), stdout to raw/NAME.json, stderr to WORK/NAME.stderr.
run_logged() {
  local name=$1 status=0
  shift
  printf '%q ' "$@" >"$WORK/$name.command"
  "$@" >"$WORK/run/raw/$name.json" 2>"$WORK/$name.stderr" &
  CHILD_PID=$!
  wait "$CHILD_PID" || status=$?
  CHILD_PID=""
  if ((status != 0)); then
    note "this command failed with exit status $status:"
    printf '  %s\n' "$(cat "$WORK/$name.command")" >&2
    note "its last output:"
    tail -n 20 "$WORK/$name.stderr" "$WORK/run/raw/$name.json" >&2 || true
    return "$status"
  fi
}

FIO_COMMON=(--output-format=json)

fio_etcd_wal() {
  local name=$1
  if [[ $TARGET_KIND == file ]]; then
    rm -f -- "$ETCD_TARGET"   # etcd's check writes a fresh file every time
  fi
  run_logged "$name" fio --name=etcd-wal --filename="$ETCD_TARGET" --rw=write --ioengine=sync \
    --fdatasync=1 --size=22m --bs=2300 "${FIO_COMMON[@]}" \
    || die "the etcd WAL-pattern fio run failed on $ETCD_TARGET"
}

fio_uring() {
  local name=$1 depth=$2
  run_logged "$name" fio --name="uring-qd$depth" --filename="$FIO_TARGET" --size="$SIZE_BYTES" \
    --ioengine=io_uring --direct=1 --sync=dsync --bs=4k --rw=write --iodepth="$depth" \
    --time_based --runtime="$RUN_SECONDS" --lat_percentiles=1 "${FIO_COMMON[@]}" \
    || die "the fio io_uring QD$depth run failed on $FIO_TARGET"
}

nvkv_log() {
  local name=$1 appenders=$2
  if [[ $TARGET_KIND == file ]]; then
    rm -f -- "$NVKV_NAMESPACE"   # nvkv bench device creates its namespace file
  fi
  run_logged "$name" "$NVKV" bench device --namespace "$NVKV_NAMESPACE" --namespace-bytes "$SIZE_BYTES" \
    --appenders "$appenders" --entry-bytes 2300 --seconds "$RUN_SECONDS" --json \
    || die "nvkv bench device --appenders $appenders failed; is $NVKV new enough to have 'bench device'?"
  # Check the output now rather than after minutes of other runs.
  report device check-nvkv "$WORK/run/raw/$name.json" \
    || die "$NVKV bench device --json did not print what this script needs; is the binary new enough?"
  if [[ $TARGET_KIND == file ]]; then
    rm -f -- "$NVKV_NAMESPACE"
  fi
}

# spdk_perf NAME DEPTH: spdk_nvme_perf 4 KiB writes at DEPTH on namespace 1
# of the target, on core 0; its text output is turned into raw/NAME.json.
spdk_perf() {
  local name=$1 depth=$2
  run_logged "$name.txt" env LD_LIBRARY_PATH="$SPDK/build/lib" "$SPDK/build/bin/spdk_nvme_perf" \
    -q "$depth" -o 4096 -w write -t "$RUN_SECONDS" -c 0x1 -L --no-huge -s 1024 \
    -r "$SPDK_TRID ns:1" \
    || die "spdk_nvme_perf -q $depth failed against $SPDK_TRID"
  mv -- "$WORK/run/raw/$name.txt.json" "$WORK/run/raw/$name.txt"
  report device spdk-perf "$WORK/run/raw/$name.txt" "$WORK/run/raw/$name.json" \
    || die "could not read spdk_nvme_perf's output (raw/$name.txt)"
}

# nvkv_spdk NAME: nvkv bench device on the spdk backend, namespace 2 of the
# target, one appender.
nvkv_spdk() {
  local name=$1
  run_logged "$name" "$NVKV" bench device --spdk-transport "$SPDK_TRID" --spdk-nsid 2 --spdk-no-hugepages \
    --appenders 1 --entry-bytes 2300 --seconds "$RUN_SECONDS" --json \
    || die "nvkv bench device on the spdk backend failed; is $NVKV built with --features spdk?"
}

if [[ $TARGET_KIND == file ]] && ((SPDK_ONLY == 0)); then
  # A fully written file, as fio lays it out: O_DIRECT writes then overwrite
  # allocated blocks instead of converting unwritten extents on every write.
  note "[setup] laying out the $SIZE_TEXT fio target $FIO_TARGET"
  rm -f -- "$FIO_TARGET"
  run_logged setup-layout fio --name=layout --filename="$FIO_TARGET" --size="$SIZE_BYTES" \
    --create_only=1 --output-format=json || die "could not lay out $FIO_TARGET"
  rm -f -- "$WORK/run/raw/setup-layout.json"
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
FILE_SIDES=5
((SPDK_ONLY == 0)) || FILE_SIDES=0
SPDK_SIDES=0
if [[ -n $SPDK ]]; then
  SPDK_SIDES=3
  spdk_target_start "$SPDK" "$WORK" "$(spdk_free_port)" 0 2 "$SPDK_MIB"
  ((SPDK_TARGET_CORE != 0)) || die "the SPDK target and the benchmarks would share core 0; this needs 2 cores or more"
fi
progress_start $(((FILE_SIDES + SPDK_SIDES) * REPEATS))

for ((repeat = 1; repeat <= REPEATS; repeat++)); do
  if ((SPDK_SIDES)); then
    progress_step "spdk_nvme_perf write qd1 (SPDK, NVMe/TCP)" "$repeat"
    spdk_perf "spdk_perf_qd1-r$repeat" 1
    progress_step "spdk_nvme_perf write qd32 (SPDK, NVMe/TCP)" "$repeat"
    spdk_perf "spdk_perf_qd32-r$repeat" 32
    progress_step "nvkv log on the spdk backend, 1 appender" "$repeat"
    nvkv_spdk "nvkv_spdk_a1-r$repeat"
  fi
  ((FILE_SIDES)) || continue
  progress_step "fio etcd WAL pattern (sync, fdatasync, 2300 B)" "$repeat"
  fio_etcd_wal "etcd_wal-r$repeat"
  progress_step "fio io_uring dsync qd1" "$repeat"
  fio_uring "fio_qd1-r$repeat" 1
  progress_step "fio io_uring dsync qd32" "$repeat"
  fio_uring "fio_qd32-r$repeat" 32
  progress_step "nvkv log, 1 appender" "$repeat"
  nvkv_log "nvkv_a1-r$repeat" 1
  progress_step "nvkv log, 64 appenders" "$repeat"
  nvkv_log "nvkv_a64-r$repeat" 64
done

END_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- machine

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
memory_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
if [[ $TARGET_KIND == device ]]; then
  target_filesystem="raw block device (no filesystem)"
  block_device=$DEVICE
else
  target_filesystem=$(df -PT -- "$BENCH_DIR" | awk 'NR == 2 { print $2 " on " $1 " mounted at " $7 }')
  block_device=$(df -P -- "$BENCH_DIR" | awk 'NR == 2 { print $1 }')
fi
block_device_info="(not a block device: $block_device)"
if [[ -b $block_device ]]; then
  block_device_info=$(lsblk -o NAME,MODEL,SIZE,ROTA,TRAN,TYPE,MOUNTPOINT -- "$block_device" 2>&1 || true)
fi
nvkv_commit=$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $nvkv_commit != unknown ]] && [[ -n $(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  nvkv_commit="$nvkv_commit (work tree has uncommitted changes)"
fi
spdk_commit=""
if [[ -n $SPDK ]]; then
  spdk_commit=$(git -C "$SPDK" describe --tags 2>/dev/null || git -C "$SPDK" rev-parse HEAD 2>/dev/null || echo unknown)
fi
kernel=$(uname -r)
cores_online=$(nproc)
cores_total=$(grep -c '^processor' /proc/cpuinfo)
environment_used=""
for variable in NVKV_BENCH_DIR NVKV_BIN SECONDS_PER_RUN; do
  if [[ -n ${!variable:-} ]]; then
    environment_used+="$variable=$(printf '%q' "${!variable}") "
  fi
done

export META_COMMAND="$COMMAND_LINE" META_ENVIRONMENT="${environment_used% }" \
  META_START_UTC="$START_UTC" META_END_UTC="$END_UTC" META_LOAD_START="$LOAD_START" \
  META_LOAD_END="$LOAD_END" META_KERNEL="$kernel" META_CPU_MODEL="${cpu_model:-unknown}" \
  META_CORES_ONLINE="$cores_online" META_CORES_TOTAL="$cores_total" \
  META_MEMORY_KIB="$memory_kib" META_TARGET_KIND="$TARGET_KIND" META_FIO_TARGET="$FIO_TARGET" \
  META_ETCD_TARGET="$ETCD_TARGET" META_NVKV_NAMESPACE="$NVKV_NAMESPACE" \
  META_FILESYSTEM="$target_filesystem" META_BLOCK_DEVICE="$block_device_info" \
  META_FIO_VERSION="$FIO_VERSION" META_NVKV_COMMIT="$nvkv_commit" META_NVKV_BIN="$NVKV" \
  META_REPEATS="$REPEATS" META_SECONDS="$RUN_SECONDS" META_SIZE_BYTES="$SIZE_BYTES" \
  META_GNUPLOT_TERMINAL="$GNUPLOT_TERMINAL" META_FILE_SIDES="$FILE_SIDES" META_SPDK="$SPDK" \
  META_SPDK_TRID="$SPDK_TRID" META_SPDK_MIB="$SPDK_MIB" META_SPDK_COMMIT="$spdk_commit"

# ---------------------------------------------------------------- analysis

keep_raw_output() {
  rm -rf -- "$BENCH_DIR/device-failed-raw"
  cp -r -- "$WORK/run/raw" "$BENCH_DIR/device-failed-raw"
  note "the raw outputs are kept in $BENCH_DIR/device-failed-raw for a look"
}

report device report "$WORK/run" || { keep_raw_output; die "could not analyse the results"; }

(cd "$WORK/run" && gnuplot plot.gp) 2>"$WORK/gnuplot.stderr" \
  || { cat "$WORK/gnuplot.stderr" >&2; die "gnuplot failed to draw the charts (script: plot.gp)"; }

# ---------------------------------------------------------------- results

mkdir -p -- "$OUT_PARENT" || die "cannot create --out directory '$OUT_PARENT'"
OUT_PARENT=$(cd "$OUT_PARENT" && pwd)
run_prefix=device
# A run of the SPDK sides alone keeps its own "latest": it has none of the
# file sides that device-latest shows.
((SPDK_ONLY == 0)) || run_prefix=device-spdk
run_name=$run_prefix-$(date -u -d "$START_UTC" +%Y%m%d-%H%M)
RESULT_DIR=$OUT_PARENT/$run_name
suffix=2
while [[ -e $RESULT_DIR ]]; do
  RESULT_DIR=$OUT_PARENT/$run_name-$suffix
  suffix=$((suffix + 1))
done
cp -r -- "$WORK/run" "$RESULT_DIR"
rm -rf -- "$OUT_PARENT/$run_prefix-latest"
cp -r -- "$WORK/run" "$OUT_PARENT/$run_prefix-latest"

note "results: $RESULT_DIR (copied to $OUT_PARENT/$run_prefix-latest)"
# The table and the ratios on stdout, for the terminal and for CI logs.
sed -n '/^## Results/,/^The ratios without/p' "$RESULT_DIR/report.md"
