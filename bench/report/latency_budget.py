"""The report of bench/latency-budget.sh (run by it, not on its own): for
each side (n1: one node, n3: three members, spdk: one node on the spdk
backend), the put's latency budget at one client next to its floor, into
RESULT/report.md and RESULT/summary.json. Standard library only.

Usage: python3 -m report.latency_budget RESULT COMMAND SECONDS LOAD_START NVKV_VERSION NVKV_COMMIT LABEL...
"""

import json
import os
import platform
import sys

from report import budget, machine

TITLES = {"n1": "One node", "n3": "Three members (puts sent to the first)",
          "spdk": "One node, spdk backend (NVMe/TCP to SPDK's target)"}


def main(arguments):
    result, command, seconds, load_start, version, commit, *labels = arguments
    load_end = machine.load_average()
    summary = {"command": command, "seconds": int(seconds), "nvkv": version, "commit": commit,
               "load_average_start": load_start, "load_average_end": load_end, "sides": {}}
    lines = ["# The latency budget of a put at one client", "",
             f"Command: `{command}`", "",
             f"- {version}, commit {commit}",
             f"- machine: {platform.machine()}, kernel {platform.release()}, {os.cpu_count()} cores; "
             f"load average {load_start} at the start, {load_end} at the end (latency means something on a "
             "quiet machine only)",
             f"- each run {seconds} s; 8-byte keys from 100,000, 256-byte values; the load generator on the "
             "same cores",
             "- client hops: half of the round trip minus the time the node said the put spent in it; server "
             "hops: the nodes' histograms between their status before and after the run (every shard of every "
             "member); hops marked ↳ run beside the leader's own append, and commit starts once a majority "
             "holds the entry durably"]
    for label in labels:
        def load(run):
            return json.load(open(f"{result}/raw/{label}-{run}.json"))
        put, device, ping = load("put"), load("device"), load("ping")
        summary["sides"][label] = {"put": put, "device": device, "ping": ping,
                                   "ready": open(f"{result}/ready-{label}.txt").read().strip(),
                                   "put_p50_above_device_p50_us": put["p50_us"] - device["p50_us"]}
        lines += ["", f"## {TITLES.get(label, label)}", "", *budget.table(put, device, ping), "",
                  budget.cpu_line(put) + ".", "", f"`{summary['sides'][label]['ready']}`"]
    json.dump(summary, open(f"{result}/summary.json", "w"), indent=1)
    open(f"{result}/report.md", "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
