"""The report of bench/store.sh (run by it, not on its own): each
workload's medians over the repeats, with every repeat's raw figures and
each workload's own numbers (txn's conflicts, mixed's gets and puts,
watch's events) beside them, into RESULT/report.md (also printed) and
RESULT/summary.json.

Usage: python3 -m report.store RESULT REPEATS SECONDS READY COMMIT COMMAND WORKLOADS
"""

import json
import os
import platform
import sys

from report import machine, stats


def main(arguments):
    result, repeats, seconds, ready, commit, command, workloads = arguments
    repeats, seconds, workloads = int(repeats), int(seconds), workloads.split(",")
    labels = {"put": "put", "range": "range (single-key gets)", "txn": "txn (compare-and-swap)", "mixed": "mixed (gets and puts)",
              "watch": "watch (put sent to event received)"}
    summary = {"command": command, "repeats": repeats, "commit": commit, "ready": ready, "workloads": {}}
    first = None
    lines = ["# nvkv store workloads, one node", "", f"Command: `{command}`", "",
             f"- nvkv commit {commit}; {ready}",
             f"- machine: {platform.machine()}, kernel {platform.release()}, {os.cpu_count()} cores, "
             f"load average {machine.load_average()} at the end; generator on the same cores", ""]
    table = ["| Workload | ops/s | p50 µs | p99 µs | p99.9 µs | raw ops/s per repeat | notes |", "|---|---:|---:|---:|---:|---|---|"]
    for workload in workloads:
        runs = [json.load(open(f"{result}/raw/{workload}-r{r}.json")) for r in range(1, repeats + 1)]
        first = first or runs[0]
        median = stats.medians(runs, ("ops_per_sec", "p50_us", "p99_us", "p999_us"))
        notes = ""
        if workload == "txn":
            median["conflict_share"] = stats.median_of(runs, lambda run: run["txn_failed"] / run["ops"])
            notes = f"{median['conflict_share']:.0%} conflicts over {runs[0]['key_space']} keys"
        if workload == "mixed":
            for kind in ("range", "put"):
                for key in ("p50_us", "p99_us"):
                    median[f"{kind}_{key}"] = stats.median_of(runs, lambda run: run[kind][key])
            notes = (f"read ratio {runs[0]['read_ratio']}; gets p50/p99 {median['range_p50_us']:.1f}/{median['range_p99_us']:.1f}, "
                     f"puts p50/p99 {median['put_p50_us']:.1f}/{median['put_p99_us']:.1f}")
        if workload == "watch":
            median.update(stats.medians(runs, ("events_per_sec", "put_p50_us", "put_p99_us")))
            missing = sum(run["events_missing"] for run in runs)
            notes = (f"ops are puts, percentiles events'; {runs[0]['watchers']} watchers on {runs[0]['key_space']} keys, "
                     f"{median['events_per_sec']:,.0f} events/s, {missing} missing; "
                     f"puts p50/p99 {median['put_p50_us']:.1f}/{median['put_p99_us']:.1f}")
        if workload in ("range", "mixed"):
            notes = f"consistency {runs[0]['consistency']}" + (f"; {notes}" if notes else "")
        errors = sum(run["errors"] for run in runs)
        if errors:
            notes += f"; {errors} errors"
        summary["workloads"][workload] = {"label": labels[workload], "median": median, "raw": runs}
        table.append(f"| {labels[workload]} | {median['ops_per_sec']:,.0f} | {median['p50_us']:.1f} | {median['p99_us']:.1f} | "
                     f"{median['p999_us']:.1f} | " + " · ".join(f"{run['ops_per_sec']:,.0f}" for run in runs) + f" | {notes} |")
    parameters = {key: first[key] for key in ("clients", "connections", "key_bytes", "value_bytes", "rate")}
    parameters["seconds"] = seconds
    summary["parameters"] = parameters
    if os.path.exists(f"{result}/raw/preload.json"):
        summary["preloaded_keys"] = json.load(open(f"{result}/raw/preload.json"))["preloaded_keys"]
    lines.insert(6, f"- {parameters['clients']} clients over {parameters['connections']} connections, 8-byte keys, "
                    f"{parameters['value_bytes']}-byte values, {parameters['seconds']} s per run, "
                    + (f"at most {parameters['rate']} ops/s" if parameters["rate"] else "no rate limit")
                    + (f"; {summary['preloaded_keys']} keys preloaded before the first run" if "preloaded_keys" in summary else ""))
    lines += table + ["", "Where the time goes after the runs (`nvkv status`):", "", "```", open(f"{result}/status.txt").read().rstrip(), "```"]
    open(f"{result}/report.md", "w").write("\n".join(lines) + "\n")
    json.dump(summary, open(f"{result}/summary.json", "w"), indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
