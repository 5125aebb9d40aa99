#!/usr/bin/env bash
# tests/vm/run.sh: nvkv on an emulated NVMe controller inside a QEMU guest.
#
# Boots Debian 12's own kernel (fetched with apt-get download, its vmlinux
# taken out of the compressed image: TCG boots it in ~3 s instead of ~20 s
# spent decompressing) with busybox, the needed modules, nvkv and the lib
# test binary in an initramfs, and QEMU NVMe controllers backed by raw
# image files. Inside, tests/vm/init.sh runs the namespace suite and a
# one-node nvkv with a SIGKILL and restart on each namespace, and prints one
# result line; this script greps it and fails on FAIL, on no line, or on a
# timeout, printing the end of the guest's console. A third namespace is
# QEMU's blklogwrites driver: nvkv runs on it until the power is cut, and
# tests/vm/replay.py then recovers nvkv on the host at points of its write
# log and fails the test on any acknowledged put lost.
#
# It owns a work directory under the cache directory (images, initramfs,
# console log) and the QEMU it starts; nothing else on the machine changes
# except the Debian packages it installs through scripts/setup.sh.
set -euo pipefail

script=tests/vm/run.sh

usage() {
  cat <<'EOF'
Usage: tests/vm/run.sh [options]

Boots a QEMU guest (TCG, no KVM needed) on Debian 12's kernel with two
emulated NVMe controllers, one namespace each: 512-byte and 4096-byte logical
blocks, 256 MiB. Inside, on each raw namespace /dev/nvmeXn1 with the uring
backend:
  1. the namespace suite (the lib test
     nvme::suite::uring_block_device_passes_the_namespace_suite with
     NVKV_TEST_BLOCK_DEVICE=/dev/nvmeXn1), which must run on the device with
     the block size and capacity the guest reports, and pass;
  2. a one-node `nvkv serve` with namespace.path = "/dev/nvmeXn1" and
     durability "fua" (block size and capacity are the device's own): puts
     through the nvkv CLI and a prefix get, kill -9 of the daemon, a
     restart, every value read back; then a clean stop on SIGTERM.
Then the power-loss replay: a third controller (512-byte blocks) whose drive
is QEMU's blklogwrites driver, which logs every write and flush the guest
sends, with its data, in completion order (dm-log-writes format). Its image
has two partitions; the guest runs a one-node nvkv (durability "fua") on
the first, puts --powerloss-keys keys one after another, after each
acknowledged put writes an ack marker to the second (O_DIRECT, fsync), and
cuts the power (poweroff -f) with nvkv running. On the host,
tests/vm/replay.py rebuilds the image entry by entry and at the prefix
after each write (QEMU logs no FUA flag, so each of nvkv's FUA writes is a
durability point; past 60 points: those after the ack markers, the last 20
and an even spread of the rest) recovers nvkv from partition 1: it must
start, hold every put whose marker is in the image, and no value never put.
It prints one line a point and `POWER-LOSS-REPLAY: PASS <n> points`, or
FAIL, which fails the run (the log and image are then kept in the cache).
With --spdk DIR, a second guest then does the same on the spdk backend
(nvkv and the lib tests built with --features spdk against DIR): one
controller with three 4096-byte-block namespaces behind the emulated Intel
IOMMU, bound to vfio-pci in the guest, hugepages reserved; the namespace
suite on namespace 1, the shard log round trip on namespace 2 (the lib
tests named spdk_backend, NVKV_SPDK_TRID="trtype:PCIe traddr:0000:00:04.0"),
and the one-node nvkv with kill -9 and restart on namespace 3.

Each guest prints `NVKV-VM-RESULT: PASS ...` or `NVKV-VM-RESULT: FAIL <what>`
on its console; this script exits 0 only when every guest passed. The uring
guest and the replay take about 4 minutes on 2 cores, most of it debug
binaries running under TCG.

Options:
  --spdk DIR        also run the spdk backend, with SPDK built in DIR
                    (DIR/build/lib/libspdk_nvme.so; docs/operations.md#the-spdk-backend) and
                    Debian's DPDK libraries
  --spdk-only       with --spdk: skip the uring guest
  --timeout SECS    give up on the guest after SECS seconds (default 900)
  --cache DIR       where the kernel package, images and initramfs go
                    (default target/vm-cache; never committed)
  --smp N           guest CPUs (default 2)
  --keys N          keys put before the SIGKILL and read back (default 4)
  --powerloss-keys N
                    puts before the power cut in the power-loss replay
                    (default 30; 0: no power-loss replay)
  --kernel-package NAME
                    the Debian kernel package to boot (default: what
                    linux-image-amd64 depends on in apt's lists, e.g.
                    linux-image-6.1.0-57-amd64; a .deb of it already in the
                    cache is used when apt knows none)
  -h, --help        this text

Needs: apt-get (scripts/setup.sh installs qemu-system-x86, busybox-static and
cpio when missing; as root or through sudo), cargo (it builds
nvkv and the lib tests in the debug profile), xz, strip and strings.
EOF
}

die() {
  printf '%s: error: %s\n' "$script" "$*" >&2
  exit 1
}
say() {
  printf '%s: %s\n' "$script" "$*" >&2
}

spdk=""
spdk_only=0
timeout_seconds=900
cache=""
smp=2
keys=4
powerloss_keys=30
kernel_package=""
while [ $# -gt 0 ]; do
  case "$1" in
    --spdk) spdk="${2:?--spdk needs a directory}"; shift 2 ;;
    --spdk-only) spdk_only=1; shift ;;
    --timeout) timeout_seconds="${2:?--timeout needs a number of seconds}"; shift 2 ;;
    --cache) cache="${2:?--cache needs a directory}"; shift 2 ;;
    --smp) smp="${2:?--smp needs a number}"; shift 2 ;;
    --keys) keys="${2:?--keys needs a number}"; shift 2 ;;
    --powerloss-keys) powerloss_keys="${2:?--powerloss-keys needs a number}"; shift 2 ;;
    --kernel-package) kernel_package="${2:?--kernel-package needs a package name}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1'; see --help" ;;
  esac
done
[[ "$timeout_seconds" =~ ^[0-9]+$ ]] && [ "$timeout_seconds" -ge 30 ] && [ "$timeout_seconds" -le 7200 ] \
  || die "--timeout $timeout_seconds is not a number of seconds from 30 to 7200"
[[ "$smp" =~ ^[0-9]+$ ]] && [ "$smp" -ge 1 ] && [ "$smp" -le 16 ] || die "--smp $smp is not a number from 1 to 16"
[[ "$keys" =~ ^[0-9]+$ ]] && [ "$keys" -ge 1 ] && [ "$keys" -le 1000 ] || die "--keys $keys is not a number from 1 to 1000"
[[ "$powerloss_keys" =~ ^[0-9]+$ ]] && [ "$powerloss_keys" -le 1000 ] \
  || die "--powerloss-keys $powerloss_keys is not a number from 0 to 1000"
[ "$spdk_only" -eq 0 ] || [ -n "$spdk" ] || die "--spdk-only needs --spdk DIR"
if [ -n "$spdk" ]; then
  spdk=$(cd "$spdk" 2>/dev/null && pwd) || die "--spdk $spdk is not a directory"
  [ -f "$spdk/build/lib/libspdk_nvme.so" ] \
    || die "--spdk $spdk: $spdk/build/lib/libspdk_nvme.so is missing; build SPDK there with --with-shared first (docs/operations.md#the-spdk-backend)"
fi

cd "$(dirname "$0")/../.."
repo=$(pwd)
# cargo puts its builds where CARGO_TARGET_DIR says, when it is set.
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$target_dir" in /*) ;; *) target_dir=$repo/$target_dir ;; esac
cache=${cache:-$repo/target/vm-cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# -- packages -----------------------------------------------------------------
bash scripts/setup.sh  # qemu-system-x86, busybox-static and cpio are in its list
for tool in qemu-system-x86_64 busybox cpio xz strip strings ldd cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed (it is needed to build or boot the guest)"
done

# -- the kernel -----------------------------------------------------------------
if [ -z "$kernel_package" ]; then
  kernel_package=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
fi
if [ -z "$kernel_package" ]; then
  # apt's lists may be missing on a fresh machine: read them once.
  apt-get update -q >/dev/null 2>&1 || true
  kernel_package=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
fi
if [ -z "$kernel_package" ]; then
  cached_deb=$(ls "$cache"/linux-image-[0-9]*-amd64_*.deb 2>/dev/null | sort | tail -n 1 || true)
  [ -n "$cached_deb" ] || die "apt knows no linux-image-amd64 and $cache holds no kernel .deb: run apt-get update, or give --kernel-package"
  kernel_package=$(basename "$cached_deb" | cut -d_ -f1)
fi
[[ "$kernel_package" =~ ^linux-image-[0-9][0-9a-z.+-]*-amd64$ ]] \
  || die "--kernel-package '$kernel_package' is not a Debian amd64 kernel image package (linux-image-<version>-amd64)"
kernel_version=${kernel_package#linux-image-}
deb=$(ls "$cache/${kernel_package}"_*.deb 2>/dev/null | sort | tail -n 1 || true)
if [ -z "$deb" ]; then
  say "downloading $kernel_package into $cache"
  if ! (cd "$cache" && apt-get download -q "$kernel_package" >/dev/null 2>"$cache/apt-download.log"); then
    # Stale lists name a version the mirror no longer has: read them again once.
    apt-get update -q >/dev/null 2>&1 || true
    (cd "$cache" && apt-get download -q "$kernel_package" >/dev/null 2>"$cache/apt-download.log") \
      || { cat "$cache/apt-download.log" >&2; die "apt-get download $kernel_package failed (output above)"; }
  fi
  deb=$(ls "$cache/${kernel_package}"_*.deb | sort | tail -n 1)
fi
kernel_root=$cache/$kernel_package
modules=$kernel_root/lib/modules/$kernel_version
if [ ! -f "$kernel_root/vmlinux" ] || [ "$deb" -nt "$kernel_root/vmlinux" ]; then
  say "unpacking $(basename "$deb")"
  rm -rf "$kernel_root"
  mkdir -p "$kernel_root"
  dpkg-deb -x "$deb" "$kernel_root"
  compressed=$kernel_root/boot/vmlinuz-$kernel_version
  [ -f "$compressed" ] || die "$deb holds no boot/vmlinuz-$kernel_version"
  # Debian's amd64 kernels are xz-compressed: the vmlinux ELF (with its PVH
  # entry note, which QEMU boots directly) starts at the xz stream's magic.
  offset=$(grep -abo $'\xfd7zXZ\x00' "$compressed" | head -n 1 | cut -d: -f1)
  [ -n "$offset" ] || die "$compressed holds no xz stream: cannot take the vmlinux out of it"
  # xz stops with an error at the padding after the stream; what it wrote is whole.
  tail -c +$((offset + 1)) "$compressed" | xz -dc >"$kernel_root/vmlinux.part" 2>/dev/null || true
  [ "$(head -c 4 "$kernel_root/vmlinux.part" | od -An -c | tr -d ' ')" = '177ELF' ] \
    || die "what xz took out of $compressed is not an ELF vmlinux"
  busybox depmod -b "$kernel_root" "$kernel_version" || die "busybox depmod on $modules failed"
  mv "$kernel_root/vmlinux.part" "$kernel_root/vmlinux"
fi
vmlinux=$kernel_root/vmlinux

# -- nvkv's binaries ----------------------------------------------------------------
# build_binaries DIR [cargo arguments...]: builds nvkv and the lib test
# binary (debug) and copies them to DIR/nvkv and DIR/lib-tests without their
# debug info (most of a debug binary; the guest needs none of it).
build_binaries() {
  local into=$1
  shift
  say "building nvkv and the lib tests (debug${*:+, $*})"
  cargo build --quiet --bin nvkv "$@" || die "cargo build $* failed"
  local lib_tests
  lib_tests=$(cargo test --quiet --lib --no-run --message-format=json "$@" 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  if [ -z "$lib_tests" ] || [ ! -x "$lib_tests" ]; then
    die "cargo test --lib --no-run $* named no test executable"
  fi
  [ -x "$target_dir/debug/nvkv" ] || die "$target_dir/debug/nvkv was not built"
  mkdir -p "$into"
  strip --strip-debug -o "$into/nvkv" "$target_dir/debug/nvkv"
  strip --strip-debug -o "$into/lib-tests" "$lib_tests"
}

# -- the initramfs --------------------------------------------------------------------
# build_initramfs WORK BINARIES ENV MODULE...: WORK/initramfs.cpio with
# busybox, tests/vm/init.sh as /init, the binaries in BINARIES and the
# libraries they load at the same paths (hwloc, udev, libc; SPDK's and
# DPDK's for the spdk build), the modules named with what modules.dep says
# they need, and ENV as /etc/nvkv-vm.env.
build_initramfs() {
  local work=$1 binaries=$2 environment=$3
  shift 3
  local root=$work/root
  rm -rf "$root"
  mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,nvkv,lib/modules/"$kernel_version"}
  cp /bin/busybox "$root/bin/busybox"
  ln -s ../bin/busybox "$root/sbin/modprobe"  # the kernel's request_module runs it
  cp "$repo/tests/vm/init.sh" "$root/init"
  chmod 755 "$root/init"
  cp "$binaries/nvkv" "$binaries/lib-tests" "$root/nvkv/"
  local library
  for library in $(ldd "$root/nvkv/nvkv" "$root/nvkv/lib-tests" | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
    mkdir -p "$root$(dirname "$library")"
    cp -L "$library" "$root$library"
  done
  if ldd "$root/nvkv/nvkv" "$root/nvkv/lib-tests" | grep -q 'not found'; then
    ldd "$root/nvkv/nvkv" "$root/nvkv/lib-tests" | grep 'not found' >&2
    die "some libraries of the binaries are not found on this machine (above)"
  fi
  local eal plugins
  eal=$(find "$root" -name 'librte_eal.so*' | head -n 1)
  if [ -n "$eal" ]; then
    # A shared DPDK's EAL loads every driver in its plugin folder and fails
    # (EINVAL) when that folder is missing. The drivers SPDK needs are linked
    # in, so an empty folder does.
    plugins=$(strings "$eal" | sed -n 's/^DPDK_PLUGIN_PATH=//p' | head -n 1)
    [ -n "$plugins" ] || die "$eal names no DPDK_PLUGIN_PATH"
    mkdir -p "$root$plugins" "$root/var/run"
  fi
  if [ -n "$(find "$root" -name 'libssl.so*' | head -n 1)" ] && [ -f /etc/ssl/openssl.cnf ]; then
    # SPDK initialises OpenSSL, which reads its config from there.
    mkdir -p "$root/etc/ssl" "$root/usr/lib/ssl"
    cp /etc/ssl/openssl.cnf "$root/etc/ssl/openssl.cnf"
    ln -sf /etc/ssl/openssl.cnf "$root/usr/lib/ssl/openssl.cnf"
  fi
  local module line file
  for module in "$@"; do
    line=$(grep "^$module:" "$modules/modules.dep") || die "$modules/modules.dep has no $module"
    for file in ${line/:/}; do
      mkdir -p "$root/lib/modules/$kernel_version/$(dirname "$file")"
      cp "$modules/$file" "$root/lib/modules/$kernel_version/$file"
    done
  done
  cp "$modules"/modules.{dep,alias,symbols,order,builtin} "$root/lib/modules/$kernel_version/"
  printf '%s\n' "$environment" >"$root/etc/nvkv-vm.env"
  (cd "$root" && find . | cpio -o -H newc --quiet) >"$work/initramfs.cpio"
  say "initramfs: $(du -m "$work/initramfs.cpio" | cut -f1) MiB"
}

# -- the VM ----------------------------------------------------------------------------
# boot WORK NAME QEMU-ARGUMENT...: boots the guest on WORK/initramfs.cpio and
# decides by its NVKV-VM-RESULT line; dies with the console's tail on FAIL,
# no line, or the timeout.
boot() {
  local work=$1 name=$2
  shift 2
  local console=$work/console.log
  local qemu=(qemu-system-x86_64 -accel tcg -cpu max -smp "$smp"
    -nodefaults -display none -no-reboot -monitor none -serial "file:$console"
    -kernel "$vmlinux" -initrd "$work/initramfs.cpio" "$@")
  say "$name: booting $kernel_package (timeout ${timeout_seconds} s; console: $console)"
  local started status=0 elapsed result
  started=$(date +%s)
  timeout --kill-after=10 "$timeout_seconds" "${qemu[@]}" >"$work/qemu.out" 2>&1 || status=$?
  elapsed=$(($(date +%s) - started))
  result=$(grep -a '^NVKV-VM-RESULT: ' "$console" | tail -n 1 | tr -d '\r' || true)
  grep -a '^nvkv-vm: ' "$console" | tr -d '\r' | sed "s|^|$script: $name guest: |" >&2 || true
  if [[ "$result" == "NVKV-VM-RESULT: PASS"* ]] && [ "$status" -eq 0 ]; then
    say "$name: $result (VM ran ${elapsed} s)"
    return 0
  fi
  say "---- last 60 lines of the $name guest's console ($console) ----"
  tail -n 60 "$console" | tr -d '\r' >&2
  if [ -s "$work/qemu.out" ]; then
    say "---- qemu's own output ----"
    cat "$work/qemu.out" >&2
  fi
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    die "$name: the guest did not finish within ${timeout_seconds} s${result:+ (last result line: $result)}"
  fi
  [ -n "$result" ] || die "$name: the guest printed no NVKV-VM-RESULT line (qemu exited with status $status after ${elapsed} s)"
  [ "$status" -eq 0 ] || die "$name: qemu exited with status $status after ${elapsed} s ($result)"
  die "$name: $result (VM ran ${elapsed} s)"
}

# -- the uring part: two controllers, the kernel's nvme driver ------------------------
uring_guest() {
  local work=$cache/run
  rm -rf "$work"
  mkdir -p "$work"
  build_binaries "$work/binaries"
  local expect=2 powerloss=()
  if [ "$powerloss_keys" -gt 0 ]; then
    # The power-loss namespace: blklogwrites over a raw image, logging into
    # a file that starts empty. cache.no-flush: the host's disk need not
    # hold either file across a host crash; the guest's flushes still reach
    # blklogwrites, which logs them.
    expect=3
    python3 "$repo/tests/vm/replay.py" prepare "$work/powerloss.img" || die "tests/vm/replay.py prepare failed"
    : >"$work/powerloss.log"
    powerloss=(
      -blockdev "driver=file,filename=$work/powerloss.img,node-name=plimage,cache.no-flush=on"
      -blockdev "driver=file,filename=$work/powerloss.log,node-name=pllog,cache.no-flush=on"
      -blockdev "driver=blklogwrites,node-name=powerloss,file=plimage,log=pllog,log-sector-size=512"
      -device "nvme,serial=nvkvpowerloss,drive=powerloss,logical_block_size=512,physical_block_size=512"
    )
  fi
  build_initramfs "$work" "$work/binaries" "NVKV_VM_MODE=uring
  NVKV_VM_EXPECT=$expect
  NVKV_VM_KEYS=$keys
  NVKV_VM_POWERLOSS_KEYS=$powerloss_keys" \
    kernel/drivers/nvme/host/nvme.ko kernel/crypto/crc64_rocksoft_generic.ko kernel/crypto/crct10dif_generic.ko
  # Raw images: a sparse file is all QEMU needs (no qemu-img). cache=unsafe:
  # the images are scratch, so QEMU need not flush them to the host's disk;
  # the guest's FUA writes still reach the emulated controller as FUA.
  truncate -s 256M "$work/nvme-512.img" "$work/nvme-4096.img"
  boot "$work" uring -machine q35 -m 2048 \
    -append "console=ttyS0 quiet panic=-1" \
    -drive "file=$work/nvme-512.img,if=none,format=raw,id=disk512,cache=unsafe" \
    -device "nvme,serial=nvkv512,drive=disk512,logical_block_size=512,physical_block_size=512" \
    -drive "file=$work/nvme-4096.img,if=none,format=raw,id=disk4096,cache=unsafe" \
    -device "nvme,serial=nvkv4096,drive=disk4096,logical_block_size=4096,physical_block_size=4096" \
    "${powerloss[@]}"
  rm -f "$work/nvme-512.img" "$work/nvme-4096.img"
  [ "$powerloss_keys" -gt 0 ] || return 0
  say "power-loss replay: $(du -m "$work/powerloss.log" | cut -f1) MiB of write log"
  local started replay_status=0
  started=$(date +%s)
  python3 "$repo/tests/vm/replay.py" check --log "$work/powerloss.log" --nvkv "$target_dir/debug/nvkv" \
    --keys "$powerloss_keys" >"$work/replay.out" 2>&1 || replay_status=$?
  sed "s|^|$script: |" "$work/replay.out" >&2
  grep -q '^POWER-LOSS-REPLAY: PASS' "$work/replay.out" && [ "$replay_status" -eq 0 ] \
    || die "the power-loss replay failed (its output above; it took $(($(date +%s) - started)) s; the log and image are in $work)"
  rm -f "$work/powerloss.img" "$work/powerloss.log"
  say "the power-loss replay passed in $(($(date +%s) - started)) s"
}
[ "$spdk_only" -eq 1 ] || uring_guest

[ -n "$spdk" ] || exit 0

# -- the spdk part: one controller bound to vfio-pci behind the emulated IOMMU --------
work=$cache/run-spdk
rm -rf "$work"
mkdir -p "$work"
SPDK_DIR=$spdk build_binaries "$work/binaries" --features spdk
# Put the default build back, so that later cargo runs need not relink.
cargo build --quiet --bin nvkv || die "cargo build failed"
hugepages=768  # 1.5 GiB: the tests' SPDK env takes 512 MiB, nvkv's 256 MiB
build_initramfs "$work" "$work/binaries" "NVKV_VM_MODE=spdk
NVKV_VM_SPDK_BDF=0000:00:04.0
NVKV_VM_HUGEPAGES=$hugepages
NVKV_VM_KEYS=$keys" \
  kernel/drivers/vfio/pci/vfio-pci.ko kernel/drivers/vfio/vfio_iommu_type1.ko
truncate -s 64M "$work/namespace-1.img" "$work/namespace-2.img" "$work/namespace-4.img"
truncate -s 256M "$work/namespace-3.img"
boot "$work" spdk -machine q35,kernel-irqchip=split -m 3072 \
  -append "console=ttyS0 quiet panic=-1 intel_iommu=on iommu=pt" \
  -device intel-iommu,intremap=on \
  -device nvme,id=spdkctrl,serial=nvkvspdk,bus=pcie.0,addr=4.0 \
  -drive "file=$work/namespace-1.img,if=none,format=raw,id=spdk1,cache=unsafe" \
  -device nvme-ns,bus=spdkctrl,drive=spdk1,nsid=1,logical_block_size=4096,physical_block_size=4096 \
  -drive "file=$work/namespace-2.img,if=none,format=raw,id=spdk2,cache=unsafe" \
  -device nvme-ns,bus=spdkctrl,drive=spdk2,nsid=2,logical_block_size=4096,physical_block_size=4096 \
  -drive "file=$work/namespace-3.img,if=none,format=raw,id=spdk3,cache=unsafe" \
  -device nvme-ns,bus=spdkctrl,drive=spdk3,nsid=3,logical_block_size=4096,physical_block_size=4096 \
  -drive "file=$work/namespace-4.img,if=none,format=raw,id=spdk4,cache=unsafe" \
  -device nvme-ns,bus=spdkctrl,drive=spdk4,nsid=4,logical_block_size=4096,physical_block_size=4096
