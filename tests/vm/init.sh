#!/bin/busybox sh
# The guest's /init for tests/vm/run.sh (busybox sh, inside the initramfs).
# It checks nvkv on every emulated NVMe namespace the guest sees and prints
# exactly one line `NVKV-VM-RESULT: PASS ...` or `NVKV-VM-RESULT: FAIL <what>`
# on the console, then powers the VM off. The host greps that line: anything
# else (a panic, a hang, no line) is a failure there too.
#
# /etc/nvkv-vm.env (written by run.sh) sets:
#   NVKV_VM_MODE       uring: the kernel's nvme driver, io_uring on /dev/nvmeXn1
#                      spdk: the controller bound to vfio-pci, SPDK's driver
#   NVKV_VM_EXPECT     uring: how many NVMe namespaces must appear
#   NVKV_VM_KEYS       keys written before the SIGKILL and read back after it
#   NVKV_VM_POWERLOSS_KEYS  uring: puts on the power-loss namespace (serial
#                      nvkvpowerloss, its writes logged by QEMU); 0: none
#   NVKV_VM_SPDK_BDF   spdk: the controller's PCI address in the guest
#   NVKV_VM_HUGEPAGES  spdk: 2 MiB hugepages to reserve
PATH=/bin:/sbin
export PATH
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
. /etc/nvkv-vm.env
# The daemon's shards and the CLI talk over loopback.
ip link set lo up

say() { echo "nvkv-vm: [$(cut -d" " -f1 /proc/uptime) s] $*"; }
finish() {
    echo "NVKV-VM-RESULT: $*"
    sync
    poweroff -f
    sleep 30
}
fail() {
    finish "FAIL $*"
}
# Prints the last lines of a log to the console, so that the host's tail of
# the console shows why a step failed.
show() {
    say "---- last lines of $1 ----"
    tail -n "${2:-40}" "$1"
    say "---- end of $1 ----"
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }

say "guest up at $(uptime_s) s: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs, mode $NVKV_VM_MODE"

# Runs lib tests on $1 (what they test, for messages), logging to $2; all
# $3 tests the filter selects must pass. Each mode then checks in the log
# that they ran on its device.
run_tests() {
    what=$1 log=$2 count=$3
    shift 3
    say "$what: $*"
    if ! "$@" >"$log" 2>&1; then
        show "$log"
        fail "$what: the test binary failed"
    fi
    grep -q "test result: ok. $count passed" "$log" || { show "$log"; fail "$what: not $count passing tests in its output"; }
    return 0
}

# Waits up to $2 seconds for the ready line of the daemon logging to $1.
wait_ready() {
    waited=0
    while ! grep -qs "^nvkv ready" "$1"; do
        if ! kill -0 "$serve_pid" 2>/dev/null; then
            show "$1.err" 60
            fail "$3: nvkv serve exited before it was ready"
        fi
        if [ "$waited" -ge "$2" ]; then
            show "$1.err" 60
            fail "$3: nvkv serve not ready within $2 s"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

# A one-node nvkv on the config $1: puts, gets, SIGKILL, restart, every
# acknowledged write read back, then a clean stop. $2 names the namespace in
# messages; $3 is what the ready line must say about the namespace.
check_node() {
    config=$1 name=$2 expected=$3
    out=/tmp/serve-$name.out
    say "$name: nvkv serve --config $config"
    /nvkv/nvkv serve --config "$config" >"$out" 2>"$out.err" &
    serve_pid=$!
    wait_ready "$out" 300 "$name"
    ready=$(grep "^nvkv ready" "$out")
    say "$name: $ready"
    case "$ready" in
        *"$expected"*) ;;
        *) fail "$name: the ready line does not say '$expected': $ready" ;;
    esac
    grep -q "formatted the namespace" "$out.err" || { show "$out.err"; fail "$name: the first start did not format the namespace"; }

    say "$name: $NVKV_VM_KEYS puts through the nvkv CLI, under different prefixes (so in several groups)"
    i=1
    while [ "$i" -le "$NVKV_VM_KEYS" ]; do
        key=$(printf '/vm/k%04d/key' "$i")
        answer=$(/nvkv/nvkv put "$key" "value-$i-on-$name" 2>&1) || fail "$name: put $key: $answer"
        [ "$answer" = "OK" ] || fail "$name: put $key answered '$answer', not OK"
        i=$((i + 1))
    done
    check_values "$name" "before the SIGKILL"

    say "$name: kill -9 the daemon (pid $serve_pid) and start it again"
    kill -9 "$serve_pid"
    wait "$serve_pid" 2>/dev/null
    mv "$out" "$out.first"
    mv "$out.err" "$out.err.first"
    /nvkv/nvkv serve --config "$config" >"$out" 2>"$out.err" &
    serve_pid=$!
    wait_ready "$out" 300 "$name after the SIGKILL"
    grep -q "opened the namespace" "$out.err" || { show "$out.err"; fail "$name: the restart did not open the namespace it had formatted"; }
    say "$name: $(grep "^nvkv ready" "$out")"
    check_values "$name" "after the SIGKILL and restart"

    kill -TERM "$serve_pid"
    if ! wait "$serve_pid"; then
        show "$out.err"
        fail "$name: nvkv serve did not stop cleanly on SIGTERM"
    fi
    say "$name: stopped cleanly on SIGTERM"
}

# Reads every key back with one prefix get (across the groups, merged in
# key order), which must print exactly the keys and values put.
check_values() {
    wanted=""
    i=1
    while [ "$i" -le "$NVKV_VM_KEYS" ]; do
        wanted="$wanted$(printf '/vm/k%04d/key\nvalue-%s-on-%s' "$i" "$i" "$1")
"
        i=$((i + 1))
    done
    answer=$(/nvkv/nvkv get /vm/ --prefix 2>&1) || fail "$1: get /vm/ --prefix $2: $answer"
    if [ "$answer" != "${wanted%
}" ]; then
        echo "$answer" | head -n 40
        fail "$1: get /vm/ --prefix $2 did not print the $NVKV_VM_KEYS keys and values put (its output above)"
    fi
    say "$1: all $NVKV_VM_KEYS values read back $2"
}

write_config() {
    cat >"$1" <<EOF
[node]
data_dir = "/tmp/data-$2"
client_address = "127.0.0.1:7379"

[namespace]
$3

[log]
durability = "fua"
EOF
}

# The NVMe namespaces the kernel shows, by name (nvme0n1 ...).
nvme_namespaces() {
    for entry in /sys/block/nvme*n*; do
        [ -e "$entry" ] && echo "${entry#/sys/block/}"
    done
}

# The serial number of namespace $1's controller.
nvme_serial() {
    tr -d ' ' <"/sys/block/$1/device/serial" 2>/dev/null
}

# The power-loss run on namespace $1 (its controller's drive is QEMU's
# blklogwrites, which logs every write and flush for tests/vm/replay.py on
# the host). nvkv on partition 1 with durability "fua"; after each
# acknowledged put i, an ack marker in block i of partition 2, written with
# O_DIRECT and then fsync, so that it lands in the write log after every
# write put i waited for. The caller then cuts the power with nvkv still
# running. The verdict is the host's; this only fails on what it sees here.
powerloss_run() {
    name=$1
    part1=/dev/${name}p1 part2=/dev/${name}p2
    waited=0
    while [ ! -b "$part1" ] || [ ! -b "$part2" ]; do
        [ "$waited" -ge 30 ] && fail "power loss: $part1 and $part2 did not appear within 30 s"
        sleep 1
        waited=$((waited + 1))
    done
    cat >/tmp/powerloss.toml <<EOF
[node]
data_dir = "/tmp/data-powerloss"
client_address = "127.0.0.1:7379"

[reactor]
shards = 1

[namespace]
backend = "uring"
path = "$part1"

[log]
durability = "fua"
EOF
    out=/tmp/serve-powerloss.out
    say "power loss: nvkv serve on $part1, $NVKV_VM_POWERLOSS_KEYS puts, an ack marker on $part2 after each"
    /nvkv/nvkv serve --config /tmp/powerloss.toml >"$out" 2>"$out.err" &
    serve_pid=$!
    wait_ready "$out" 300 "power loss"
    grep -q "formatted the namespace" "$out.err" || { show "$out.err"; fail "power loss: the first start did not format $part1"; }
    i=1
    while [ "$i" -le "$NVKV_VM_POWERLOSS_KEYS" ]; do
        key=$(printf '/pl/k%04d/key' "$i")
        answer=$(/nvkv/nvkv put "$key" "value-$i" 2>&1) || fail "power loss: put $key: $answer"
        [ "$answer" = "OK" ] || fail "power loss: put $key answered '$answer', not OK"
        printf 'NVKV-PL-ACK %d\n' "$i" | dd of="$part2" bs=512 seek="$i" count=1 conv=sync,notrunc,fsync oflag=direct 2>/tmp/dd.err \
            || { cat /tmp/dd.err; fail "power loss: writing the ack marker of put $i to $part2"; }
        i=$((i + 1))
    done
    say "power loss: $NVKV_VM_POWERLOSS_KEYS puts acknowledged and marked; cutting the power with nvkv running"
}

uring_mode() {
    modprobe nvme || fail "modprobe nvme"
    waited=0
    while [ "$(nvme_namespaces | wc -l)" -lt "$NVKV_VM_EXPECT" ]; do
        [ "$waited" -ge 30 ] && fail "only [$(nvme_namespaces | tr '\n' ' ')] appeared within 30 s, expected $NVKV_VM_EXPECT NVMe namespaces"
        sleep 1
        waited=$((waited + 1))
    done
    checked=""
    powerloss=""
    for name in $(nvme_namespaces); do
        if [ "$(nvme_serial "$name")" = nvkvpowerloss ]; then
            powerloss=$name
            continue
        fi
        device=/dev/$name
        [ -b "$device" ] || fail "$device is not a block device"
        lba_bytes=$(cat "/sys/block/$name/queue/logical_block_size")
        bytes=$(($(cat "/sys/block/$name/size") * 512))
        blocks=$((bytes / lba_bytes))
        fua=$(cat "/sys/block/$name/queue/fua" 2>/dev/null || echo "?")
        say "$device: $bytes bytes in $lba_bytes-byte blocks, write cache: $(cat "/sys/block/$name/queue/write_cache"), fua: $fua"

        log=/tmp/suite-$name.log
        run_tests "namespace suite on $device ($blocks blocks of $lba_bytes bytes)" "$log" 1 \
            env NVKV_TEST_BLOCK_DEVICE="$device" /nvkv/lib-tests \
            nvme::suite::uring_block_device_passes_the_namespace_suite --exact --nocapture --test-threads=1
        grep -q "running the namespace suite on block device $device" "$log" || { show "$log"; fail "namespace suite on $device: it did not run on the device"; }
        grep -q "block device: $blocks blocks of $lba_bytes bytes" "$log" || { show "$log"; fail "namespace suite on $device: it did not see $blocks blocks of $lba_bytes bytes"; }
        say "namespace suite on $device passed"

        # The suite leaves its own bytes on the device; nvkv never formats
        # over data it did not write, so clear the superblock copies as its
        # error message tells an operator to.
        dd if=/dev/zero of="$device" bs=4096 count=256 conv=fsync 2>/dev/null || fail "zeroing the start of $device"

        write_config "/tmp/$name.toml" "$name" "backend = \"uring\"
path = \"$device\""
        check_node "/tmp/$name.toml" "$name" "namespace $device (uring, $bytes bytes), durability fua"
        checked="$checked $name($lba_bytes-byte blocks)"
    done
    if [ "$NVKV_VM_POWERLOSS_KEYS" -gt 0 ]; then
        [ -n "$powerloss" ] || fail "no NVMe namespace with serial nvkvpowerloss for the power-loss run"
        powerloss_run "$powerloss"
        # The result line first, and no sync before the cut: it must find
        # whatever nvkv left in flight.
        echo "NVKV-VM-RESULT: PASS uring on$checked, $NVKV_VM_POWERLOSS_KEYS power-loss puts on $powerloss at $(uptime_s) s"
        poweroff -f
        sleep 30
    fi
    finish "PASS uring on$checked at $(uptime_s) s"
}

spdk_mode() {
    bdf=$NVKV_VM_SPDK_BDF
    transport="trtype:PCIe traddr:$bdf"
    modprobe vfio-pci || fail "modprobe vfio-pci"
    modprobe vfio_iommu_type1 || fail "modprobe vfio_iommu_type1"
    [ -d "/sys/bus/pci/devices/$bdf" ] || fail "no PCI device $bdf in the guest: $(ls /sys/bus/pci/devices | tr '\n' ' ')"
    [ -e "/sys/bus/pci/devices/$bdf/iommu_group" ] || fail "$bdf has no IOMMU group: the guest runs without the emulated IOMMU"
    echo vfio-pci >"/sys/bus/pci/devices/$bdf/driver_override"
    echo "$bdf" >/sys/bus/pci/drivers_probe
    driver=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")")
    [ "$driver" = vfio-pci ] || fail "$bdf is bound to '$driver', not vfio-pci"
    group=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/iommu_group")")
    [ -c "/dev/vfio/$group" ] || fail "/dev/vfio/$group (the IOMMU group of $bdf) is missing"
    say "$bdf bound to vfio-pci, IOMMU group $group"

    # SPDK keeps its PCI claim locks in /var/tmp, DPDK its runtime files in /var/run.
    mkdir -p /dev/hugepages /var/run /var/tmp
    mount -t hugetlbfs nodev /dev/hugepages || fail "mounting hugetlbfs"
    echo "$NVKV_VM_HUGEPAGES" >/proc/sys/vm/nr_hugepages
    reserved=$(sed -n 's/^HugePages_Total: *//p' /proc/meminfo)
    [ "$reserved" -ge "$NVKV_VM_HUGEPAGES" ] || fail "only $reserved of $NVKV_VM_HUGEPAGES hugepages could be reserved"
    say "$reserved hugepages of $(sed -n 's/^Hugepagesize: *//p' /proc/meminfo) reserved"

    # Namespaces 1, 2 and 4: the namespace suite, the shard log round trip
    # and the device bench past two ring wraps.
    log=/tmp/suite-spdk.log
    run_tests "namespace suite, shard log round trip and device bench on $transport" "$log" 3 \
        env NVKV_SPDK_TRID="$transport" /nvkv/lib-tests spdk_backend --nocapture --test-threads=1
    grep -q "running the namespace suite on the spdk backend: $transport nsid 1" "$log" \
        || { show "$log"; fail "the namespace suite did not run on $transport"; }
    grep -q "running the shard log round trip on the spdk backend: $transport nsid 2" "$log" \
        || { show "$log"; fail "the shard log round trip did not run on $transport"; }
    grep -q "running the device bench past a ring wrap on the spdk backend: $transport nsid 4" "$log" \
        || { show "$log"; fail "the device bench did not run on $transport"; }
    say "$(grep "spdk namespace:" "$log" | head -n 1)"
    say "namespace suite, shard log round trip and device bench passed on $transport"

    # Namespace 3: a one-node nvkv.
    write_config /tmp/spdk.toml spdk "backend = \"spdk\"
transport = \"$transport\"
nsid = 3"
    check_node /tmp/spdk.toml spdk "namespace $transport nsid 3 (spdk, "
    finish "PASS spdk on $transport at $(uptime_s) s"
}

case "$NVKV_VM_MODE" in
    uring) uring_mode ;;
    spdk) spdk_mode ;;
    *) fail "unknown NVKV_VM_MODE '$NVKV_VM_MODE'" ;;
esac
