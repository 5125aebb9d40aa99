#!/usr/bin/env bash
# Installs the Debian packages nvkv builds, tests and benchmarks with:
#   libhwloc-dev   hwloc, for the topology (cores, NUMA, the NVMe device's node)
#   libudev-dev    needed by hwloc's I/O discovery
#   capnproto      the `capnp` compiler build.rs runs on schema/
#   pkg-config     finds hwloc for the build
#   iproute2       `ip netns`, for the tests that cut real sockets
#   systemd        `systemd-analyze verify` of systemd/nvkv.service in the tests
#   protobuf-compiler  the `protoc` etcd-client's build runs on etcd's .proto files
#   libprotobuf-dev    the well-known .proto files (google/protobuf/descriptor.proto)
#                  etcd's import; only a Recommends of protobuf-compiler, which
#                  --no-install-recommends leaves out
#   qemu-system-x86, busybox-static, cpio
#                  the VM test (tests/vm/run.sh): a QEMU guest with emulated NVMe
#                  controllers, its initramfs built from busybox with cpio (on a
#                  machine with a newer qemu-utils from elsewhere, apt replaces it
#                  with Debian 12's, which qemu-system-x86 7.2 needs)
#   python3        the bench scripts' report code (bench/report/), whose tests
#                  .ci/run runs, the docs' checks (scripts/check-docs.py,
#                  scripts/run-docs.py) and the Python client example
#   python3-venv   the virtual environment pycapnp goes into (below)
#   openssl        the TLS walk-through of docs/operations.md, which the docs
#                  check runs
#   etcd-server    /usr/bin/etcd, which tests/etcd.rs and bench/compare-etcd.sh
#                  run beside nvkv (its Debian service, if systemd started it on
#                  install, is disabled again: the tests pick their own ports)
#   strace         tests/serve.rs watches the daemon fsync the directories it
#                  creates files in
#   etcd-client    /usr/bin/etcdctl, which tests/etcdctl.rs runs against nvkv's
#                  etcd API to show it answers as etcd does
#   curl           tests/metrics.rs scrapes the HTTPS metrics endpoint with and
#                  without a client certificate
# (The bench/ scripts install fio and gnuplot themselves when they run;
# bench/compare-etcd.sh through this script: packages given as arguments
# are installed too, `scripts/setup.sh gnuplot-nox`.)
# Then pycapnp, from PyPI (no Debian package has it): the Cap'n Proto library
# of the Python client example (examples/python/nvkv_client.py), which the
# docs check runs against a real node. It goes into a virtual environment of
# its own, $NVKV_PYTHON_ENV (default ~/.cache/nvkv/python), so neither the
# system's Python nor pip's user site changes; scripts/run-docs.py runs the
# example with that environment's python3.
# Idempotent and non-interactive: does nothing (and prints nothing) when
# every package is already installed. Runs as root, or through sudo.
set -euo pipefail

packages=(libhwloc-dev libudev-dev capnproto pkg-config iproute2 systemd protobuf-compiler libprotobuf-dev
          qemu-system-x86 busybox-static cpio python3 python3-venv openssl etcd-server etcd-client strace curl "$@")
python_env="${NVKV_PYTHON_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/nvkv/python}"
pycapnp_version=2.2.4

install_pycapnp() {
    if "$python_env/bin/python3" -c "import capnp, sys; sys.exit(capnp.version.version != '$pycapnp_version')" \
        2>/dev/null; then
        return 0
    fi
    echo "setup.sh: installing pycapnp $pycapnp_version into $python_env" >&2
    local log
    log=$(mktemp)
    if ! { python3 -m venv "$python_env" && "$python_env/bin/python3" -m pip install --quiet \
            "pycapnp==$pycapnp_version"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "setup.sh: installing pycapnp into $python_env failed (output above)" >&2
        exit 1
    fi
    rm -f "$log"
}

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    install_pycapnp
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: missing packages ${missing[*]}, and this is not a Debian-like system (no apt-get); install them by hand" >&2
    exit 1
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "setup.sh: missing packages ${missing[*]}; run this script as root (sudo is not installed)" >&2
        exit 1
    fi
fi

echo "setup.sh: installing ${missing[*]}" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${as_root[@]}" apt-get update -q && \
       "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
       >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup.sh: installing ${missing[*]} failed (apt-get output above)" >&2
    exit 1
fi
# etcd-server's package enables and starts an etcd on 2379 where systemd runs;
# nvkv only needs the binary.
if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
    "${as_root[@]}" systemctl disable --now etcd >/dev/null 2>&1 || true
fi
install_pycapnp
