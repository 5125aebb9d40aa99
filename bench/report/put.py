"""The report of bench/put.sh (run by it, not on its own): the medians of
`nvkv bench put` at 1 and at 256 clients over the repeats, with every
repeat's raw figures beside them, into RESULT/report.md (also printed) and
RESULT/summary.json.

Usage: python3 -m report.put RESULT REPEATS SECONDS READY COMMIT CONFIG KIND CLUSTER3
"""

import json
import os
import platform
import sys

from report import stats

SIDES = {"c1": "1 client, 1 connection", "c256": "256 clients, 16 connections"}


def main(arguments):
    result, repeats, seconds, ready, commit, config, kind, cluster3 = arguments
    repeats, cluster3 = int(repeats), cluster3 == "1"
    command = (f"bench/put.sh --repeats {repeats} --seconds {seconds}" + (f" --config {config}" if config else "")
               + (" --cluster3" if cluster3 else ""))
    summary = {"command": command, "repeats": repeats,
               "seconds": int(seconds), "commit": commit, "ready": ready, "sides": {}}
    lines = [f"# nvkv bench put, {kind}", "",
             f"Command: `{command}`",
             f"- nvkv commit {commit}; {ready}",
             f"- machine: {platform.machine()}, kernel {platform.release()}, {os.cpu_count()} cores; "
             "generator on the same cores",
             "- 8-byte keys from a space of 100000, 256-byte values", "",
             "| Side | puts/s | p50 µs | p99 µs | p99.9 µs | raw puts/s per repeat |", "|---|---:|---:|---:|---:|---|"]
    for name, label in SIDES.items():
        runs = [json.load(open(f"{result}/raw/{name}-r{r}.json")) for r in range(1, repeats + 1)]
        median = stats.medians(runs, ("ops_per_sec", "p50_us", "p99_us", "p999_us"))
        summary["sides"][name] = {"label": label, "median": median, "raw": runs}
        lines.append(f"| {label} | {median['ops_per_sec']:,.0f} | {median['p50_us']:.1f} | {median['p99_us']:.1f} | "
                     f"{median['p999_us']:.1f} | " + " · ".join(f"{run['ops_per_sec']:,.0f}" for run in runs) + " |")
    lines += ["", "Where the time goes after the runs (`nvkv status`):", "", "```",
              open(f"{result}/status.txt").read().rstrip(), "```"]
    open(f"{result}/report.md", "w").write("\n".join(lines) + "\n")
    json.dump(summary, open(f"{result}/summary.json", "w"), indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
