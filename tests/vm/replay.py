#!/usr/bin/env python3
"""tests/vm/replay.py: the host half of the VM test's power-loss replay.

The uring guest of tests/vm/run.sh has one NVMe namespace whose drive is
QEMU's blklogwrites block driver: every write and flush the guest's kernel
sends to it lands in the backing image and is recorded, with its data, in a
log in the dm-log-writes format. QEMU appends an entry when the request has
completed on the image and before it completes to the guest, so the log is
in completion order: a request the guest issued after another one completed
is always logged after it. Every prefix of the log is therefore a state the
device could hold after a power cut (requests still in flight may or may not
have landed, and a prefix takes some of them).

The image carries an MBR with two partitions. The guest runs a one-node
`nvkv serve` (durability "fua") on partition 1, puts keys one after another,
and after each acknowledged put i writes an ack marker for i to block i of
partition 2 (O_DIRECT, then fsync). A marker in a prefix thus proves that
put i was acknowledged before the power cut the prefix stands for.

Subcommands:
  prepare IMAGE
      creates IMAGE (sparse) with the MBR the guest partitions come from.
  check --log LOG --nvkv NVKV --keys N [--max-points M]
      replays LOG over a fresh prepared image and, at each chosen point
      (see choose_points), recovers nvkv from partition 1 on the host and
      checks that nvkv starts, that every put whose marker is in the image
      is there with its value, that no key holds a value never put, and that
      the puts present are a prefix 1..m (put j was only sent after put j-1
      was acknowledged, so a state with j and without j-1 is a lost ack).
      Prints one line per point and ends with
      `POWER-LOSS-REPLAY: PASS <n> points` or `POWER-LOSS-REPLAY: FAIL <what>`;
      exits 0 only on PASS.

`check` never writes outside the temporary directory it makes (removed at
the end), never changes LOG, and stops every nvkv it starts. Python 3
standard library only.
"""

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

SECTOR = 512
# The image's layout, in 512-byte sectors (the guest's namespace has
# 512-byte logical blocks, so MBR LBAs are sectors too).
PART1_START = 2048
PART1_SECTORS = 65536  # 32 MiB: nvkv's namespace (one shard; its ring must hold 16 MiB)
PART2_START = PART1_START + PART1_SECTORS
PART2_SECTORS = 2048  # 1 MiB: one ack marker per block
IMAGE_BYTES = (PART2_START + PART2_SECTORS + 2048) * SECTOR

# dm-log-writes (Linux drivers/md/dm-log-writes.c, QEMU block/blklogwrites.c)
LOG_MAGIC = 0x6A736677736872
LOG_FLUSH = 1 << 0
LOG_FUA = 1 << 1
LOG_DISCARD = 1 << 2
LOG_MARK = 1 << 3

MARKER_PREFIX = b"NVKV-PL-ACK "


class ReplayError(Exception):
    """A log or an image this script cannot make sense of."""


def mbr() -> bytes:
    """The boot sector: two primary Linux partitions, no boot code."""
    sector = bytearray(SECTOR)
    sector[440:444] = struct.pack("<I", 0x6E766B76)  # disk signature
    for index, (start, count) in enumerate(((PART1_START, PART1_SECTORS), (PART2_START, PART2_SECTORS))):
        # status, CHS first (unused: 0xfe 0xff 0xff), type 0x83, CHS last, LBA, count
        entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start, count)
        sector[446 + 16 * index : 446 + 16 * (index + 1)] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def prepare(image: str) -> None:
    with open(image, "wb") as out:
        out.truncate(IMAGE_BYTES)
        out.write(mbr())


class Entry:
    __slots__ = ("index", "sector", "sectors", "flags", "data")

    def __init__(self, index, sector, sectors, flags, data):
        self.index = index
        self.sector = sector
        self.sectors = sectors
        self.flags = flags
        self.data = data

    def kind(self) -> str:
        if self.flags & LOG_FLUSH:
            return "flush"
        if self.flags & LOG_DISCARD:
            return "discard"
        if self.flags & LOG_MARK:
            return "mark"
        return "write+fua" if self.flags & LOG_FUA else "write"


def read_log(path: str):
    """Returns (entries, super_entries): every whole entry in log order.

    The super block's entry count is only rewritten on flushes, so entries
    after the last flush are found by walking on until a header of zeroes
    (the log is written front to back into a file that starts empty) or the
    end of the file."""
    with open(path, "rb") as log:
        data = log.read()
    if len(data) < SECTOR:
        raise ReplayError(f"log {path} holds {len(data)} bytes, less than its super block")
    magic, version, super_entries, sector_size = struct.unpack_from("<QQQI", data, 0)
    if magic != LOG_MAGIC:
        raise ReplayError(f"log {path} starts with magic {magic:#x}, not dm-log-writes' {LOG_MAGIC:#x}")
    if version != 1:
        raise ReplayError(f"log {path} is version {version}; this script reads version 1")
    if sector_size != SECTOR:
        raise ReplayError(f"log {path} has {sector_size}-byte sectors; the VM test writes it with {SECTOR}")
    entries = []
    offset = SECTOR
    while offset + SECTOR <= len(data):
        sector, sectors, flags, data_len = struct.unpack_from("<QQQQ", data, offset)
        if sector == 0 and sectors == 0 and flags == 0 and data_len == 0:
            break
        if flags & ~(LOG_FLUSH | LOG_FUA | LOG_DISCARD | LOG_MARK):
            raise ReplayError(f"log entry {len(entries)} at byte {offset} has unknown flags {flags:#x}")
        payload_bytes = 0
        if flags & LOG_MARK:
            payload_bytes = data_len
        elif not flags & (LOG_DISCARD | LOG_FLUSH):
            payload_bytes = sectors * SECTOR
        start = offset + SECTOR
        end = start + payload_bytes
        if end > len(data):
            # QEMU stopped while writing the last entry: it never completed
            # to the guest, so dropping it is one of the states a cut allows.
            break
        entries.append(Entry(len(entries), sector, sectors, flags, data[start:end]))
        offset = start + (payload_bytes + SECTOR - 1) // SECTOR * SECTOR
    if len(entries) < super_entries:
        raise ReplayError(f"log {path}: its super block counts {super_entries} entries, only {len(entries)} are whole")
    return entries, super_entries


def apply(image: bytearray, entry: Entry) -> None:
    if entry.flags & (LOG_FLUSH | LOG_MARK):
        return
    start = entry.sector * SECTOR
    end = start + entry.sectors * SECTOR
    if end > len(image):
        raise ReplayError(f"log entry {entry.index} writes sectors {entry.sector}..+{entry.sectors}, past the image")
    if entry.flags & LOG_DISCARD:
        # NVMe deallocate reads back zeroes on QEMU's controller.
        image[start:end] = bytes(end - start)
    else:
        image[start:end] = entry.data


def in_partition(entry: Entry, start: int, count: int) -> bool:
    return entry.sectors > 0 and start <= entry.sector < start + count


def choose_points(entries, max_points: int):
    """The prefixes (entry counts) to check, and how many candidates there were.

    The points dm-log-writes users replay to are the flush and FUA entries.
    QEMU's log carries no FUA flag, and its NVMe controller completes a FUA
    write as soon as it is on the image (no flush follows it in the log), so
    each of nvkv's writes (all FUA with durability "fua") is such a point,
    and a flush adds none: it changes nothing on the image. Candidates are
    therefore the prefixes after each write or discard, and the empty one.
    Past max_points: the prefixes after each ack marker write (the states
    that prove the most), the last 20, and an even spread of the rest."""
    candidates = [0] + [e.index + 1 for e in entries if not e.flags & (LOG_FLUSH | LOG_MARK)]
    if len(candidates) <= max_points:
        return candidates, len(candidates)
    chosen = set(candidates[-20:])
    chosen.update(e.index + 1 for e in entries if in_partition(e, PART2_START, PART2_SECTORS))
    rest = [point for point in candidates if point not in chosen]
    room = max_points - len(chosen)
    if room > 0 and rest:
        step = len(rest) / room
        chosen.update(rest[int(i * step)] for i in range(min(room, len(rest))))
    return sorted(chosen), len(candidates)


def markers(image: bytearray, keys: int):
    """The put numbers whose ack marker is in the image."""
    acked = set()
    for i in range(1, keys + 1):
        block = image[(PART2_START + i) * SECTOR : (PART2_START + i + 1) * SECTOR]
        if block.startswith(MARKER_PREFIX):
            text = block[len(MARKER_PREFIX) :].split(b"\n", 1)[0]
            if text != str(i).encode():
                raise ReplayError(f"marker block {i} names put {text!r}")
            acked.add(i)
    return acked


def free_port() -> int:
    """A client port with the next one (shard 0's) free too."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port > 65000:
            continue
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise ReplayError("found no two free neighbouring ports on 127.0.0.1")


def key(i: int) -> str:
    return f"/pl/k{i:04d}/key"


def value(i: int) -> str:
    return f"value-{i}"


class Recovery:
    """One host nvkv recovering a copy of partition 1."""

    def __init__(self, nvkv: str, work: str, timeout: float):
        self.nvkv = nvkv
        self.work = work
        self.timeout = timeout

    def run(self, partition: bytes):
        """Returns (present: dict put -> value, problem or None)."""
        point_dir = os.path.join(self.work, "point")
        shutil.rmtree(point_dir, ignore_errors=True)
        os.makedirs(os.path.join(point_dir, "data"))
        namespace = os.path.join(point_dir, "namespace")
        with open(namespace, "wb") as out:
            out.write(partition)
        port = free_port()
        config = os.path.join(point_dir, "nvkv.toml")
        with open(config, "w") as out:
            out.write(
                f'[node]\ndata_dir = "{point_dir}/data"\nclient_address = "127.0.0.1:{port}"\n'
                f'peer_address = "127.0.0.1:{free_port()}"\n\n'
                "[reactor]\nshards = 1\n\n"
                f'[namespace]\nbackend = "uring"\npath = "{namespace}"\n'
                f"namespace_bytes = {len(partition)}\nlba_bytes = {SECTOR}\n\n"
                '[log]\ndurability = "fua"\n\n'
                # No etcd port: other tests on the host may hold 2379.
                '[etcd]\naddress = ""\n'
            )
        stdout_path = os.path.join(point_dir, "serve.out")
        stderr_path = os.path.join(point_dir, "serve.err")
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            serve = subprocess.Popen([self.nvkv, "serve", "--config", config], stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                with open(stdout_path, "rb") as out:
                    if any(line.startswith(b"nvkv ready") for line in out):
                        break
                if serve.poll() is not None:
                    return {}, f"nvkv serve exited with status {serve.returncode} before it was ready: {tail(stderr_path)}"
                if time.monotonic() > deadline:
                    return {}, f"nvkv serve not ready within {self.timeout:.0f} s: {tail(stderr_path)}"
                time.sleep(0.1)
            get = subprocess.run(
                [self.nvkv, "--endpoints", f"127.0.0.1:{port}", "get", "/pl/", "--prefix"],
                capture_output=True,
                timeout=self.timeout,
            )
            if get.returncode != 0:
                return {}, f"nvkv get /pl/ --prefix failed: {get.stderr.decode(errors='replace').strip()}"
            lines = get.stdout.decode(errors="replace").splitlines()
            if len(lines) % 2:
                return {}, f"nvkv get printed {len(lines)} lines, not key/value pairs: {lines[:6]}"
            present = {}
            for k, v in zip(lines[0::2], lines[1::2]):
                if not (k.startswith("/pl/k") and k.endswith("/key") and k[5:-4].isdigit()):
                    return {}, f"key {k!r} was never put"
                present[int(k[5:-4])] = v
            return present, None
        finally:
            if serve.poll() is None:
                serve.send_signal(signal.SIGTERM)
                try:
                    serve.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    serve.kill()
                    serve.wait()


def tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "(no stderr)"
    return " | ".join(text[-lines:]) or "(empty stderr)"


def check(args) -> int:
    entries, super_entries = read_log(args.log)
    kinds = {}
    for entry in entries:
        kinds[entry.kind()] = kinds.get(entry.kind(), 0) + 1
    points, candidates = choose_points(entries, args.max_points)
    print(
        f"replay: {len(entries)} log entries ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}; "
        f"the super block counts {super_entries}); checking {len(points)} of {candidates} candidate points",
        flush=True,
    )
    if not any(in_partition(e, PART2_START, PART2_SECTORS) for e in entries):
        print("POWER-LOSS-REPLAY: FAIL the log holds no ack marker write: the guest's puts did not run")
        return 1
    work = tempfile.mkdtemp(prefix="nvkv-powerloss-")
    failures = []
    try:
        image = bytearray(IMAGE_BYTES)
        image[0:SECTOR] = mbr()
        recovery = Recovery(args.nvkv, work, args.timeout)
        applied = 0
        most_acked = 0
        for point in points:
            while applied < point:
                apply(image, entries[applied])
                applied += 1
            acked = markers(image, args.keys)
            formatted = any(image[PART1_START * SECTOR : (PART1_START + 8) * SECTOR])
            label = f"point {point}/{len(entries)}"
            if not formatted:
                # Before nvkv's first superblock write there is nothing to
                # recover: nvkv would format the namespace anew.
                print(f"{label}: nvkv's namespace not yet formatted, {len(acked)} acks: skipped", flush=True)
                continue
            present, problem = recovery.run(bytes(image[PART1_START * SECTOR : PART2_START * SECTOR]))
            if problem is None:
                for i in sorted(acked):
                    if i not in present:
                        problem = f"put {i} was acknowledged (its marker is in the image) but is gone"
                        break
                    if present[i] != value(i):
                        problem = f"put {i} reads {present[i]!r}, not {value(i)!r}"
                        break
            if problem is None:
                for i, v in sorted(present.items()):
                    if not 1 <= i <= args.keys or v != value(i):
                        problem = f"{key(i)} holds {v!r}, which was never put"
                        break
            if problem is None and present and sorted(present) != list(range(1, max(present) + 1)):
                missing = sorted(set(range(1, max(present) + 1)) - set(present))
                problem = f"put {max(present)} is there but earlier puts {missing[:5]} are gone"
            most_acked = max(most_acked, len(acked))
            if problem:
                print(f"{label}: FAIL {problem}", flush=True)
                failures.append(f"{label}: {problem}")
            else:
                print(f"{label}: {len(acked)} acks, {len(present)} puts recovered: ok", flush=True)
        if most_acked < args.keys:
            failures.append(f"the whole log holds only {most_acked} of {args.keys} ack markers")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"POWER-LOSS-REPLAY: FAIL {len(failures)} of {len(points)} points: {failures[0]}")
        return 1
    print(f"POWER-LOSS-REPLAY: PASS {len(points)} points")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="create the image with its partition table")
    p.add_argument("image")
    c = sub.add_parser("check", help="replay the write log and recover nvkv at each point")
    c.add_argument("--log", required=True, help="the blklogwrites log")
    c.add_argument("--nvkv", required=True, help="the host's nvkv binary")
    c.add_argument("--keys", type=int, required=True, help="puts the guest made")
    c.add_argument("--max-points", type=int, default=60, help="points to check past which the rest are thinned (default 60; the points after ack markers and the last 20 are always checked)")
    c.add_argument("--timeout", type=float, default=120.0, help="seconds nvkv may take to start or answer")
    args = parser.parse_args()
    try:
        if args.command == "prepare":
            prepare(args.image)
            return 0
        return check(args)
    except ReplayError as error:
        print(f"POWER-LOSS-REPLAY: FAIL {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
