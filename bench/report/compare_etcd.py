"""The arithmetic and the writing of bench/compare-etcd.sh (run by it, not on
its own): reads every run's JSON under RESULT/raw/, takes the medians over
the repeats, and writes RESULT/summary.json, RESULT/report.md and
RESULT/plot.gp (the charts' gnuplot script, with its data). Standard
library only.

Usage: python3 -m report.compare_etcd RESULT COMMAND SECONDS REPEATS KEY_SPACE WATCHERS SIZES
                                      NVKV_VERSION NVKV_COMMIT LOAD_START SCRATCH
"""

import json
import os
import platform
import statistics
import subprocess
import sys

from report import budget, machine, stats

(result, command, seconds, repeats, key_space, watchers, sizes, nvkv_version, nvkv_commit, load_start,
 scratch) = sys.argv[1:12]
seconds, repeats = int(seconds), int(repeats)
sizes = [int(size) for size in sizes.split(",")]
# nvkv-etcd: nvkv's etcd API, driven by the same etcd client as etcd; runs
# from before nvkv had one have no such side, and their report stays as it was.
ETCD_API = "nvkv-etcd"
STORES = ("nvkv", "etcd") + ((ETCD_API,) if os.path.exists(f"{result}/raw") and any(
    f"-{ETCD_API}-" in name for name in os.listdir(f"{result}/raw")) else ())
PUT_CLIENTS = (1, 16, 64, 256)
LABELS = {f"put-c{clients}": f"put, {clients} client{'s' if clients > 1 else ''}" for clients in PUT_CLIENTS}
LABELS.update({"range-l": "range, linearizable", "range-s": "range, serializable",
               "txn": "txn compare-and-swap", "watch": "watch (put sent → event received)"})
# (cluster size, workload, field, goal, comparison, what it says, nvkv's
# side): ratios nvkv / etcd of the medians.
GOALS = [
    (1, "put-c1", "p50_us", 1 / 3, "<=", "one node: nvkv's put p50 at 1 client at most 1/3 of etcd's", "nvkv"),
    (1, "put-c256", "ops_per_sec", 5.0, ">=", "one node: nvkv's puts/s at 256 clients at least 5x etcd's", "nvkv"),
    (1, "put-c256", "server_cpu_us_per_op", 1 / 6, "<=",
     "one node: nvkv's server CPU per put at 256 clients at most 1/6 of etcd's", "nvkv"),
    (3, "put-c1", "p50_us", 1 / 2, "<=", "three nodes: nvkv's put p50 at 1 client at most 1/2 of etcd's", "nvkv"),
    (3, "put-c256", "ops_per_sec", 4.0, ">=", "three nodes: nvkv's puts/s at 256 clients at least 4x etcd's", "nvkv"),
    (3, "put-c256", "p99_us", 1.0, "<", "three nodes: nvkv's put p99 at 256 clients lower than etcd's", "nvkv"),
    (1, "put-c256", "ops_per_sec", 3.0, ">=",
     "one node, both through the etcd client: nvkv's put throughput at 256 clients at least 3x etcd's", "nvkv-etcd"),
    (1, "put-c1", "p50_us", 1 / 2, "<=",
     "one node, both through the etcd client: nvkv's put p50 at 1 client at most 1/2 of etcd's", "nvkv-etcd"),
    (3, "put-c256", "ops_per_sec", 3.0, ">=",
     "three nodes, both through the etcd client: nvkv's put throughput at 256 clients at least 3x etcd's", "nvkv-etcd"),
    (3, "put-c1", "p50_us", 1 / 2, "<=",
     "three nodes, both through the etcd client: nvkv's put p50 at 1 client at most 1/2 of etcd's", "nvkv-etcd"),
]
# nvkv's put p50 at 1 client over its own device append p50 (same run), µs.
ABOVE_DEVICE_US = 25.0
CPU = ("server_cpu_us_per_op", "generator_cpu_us_per_op")
STAGES = ("queue_wait", "device_write", "proposal_wait", "raft", "apply", "end_to_end")


def read(path):
    with open(path) as file:
        return file.read()


def command_output(*arguments):
    try:
        return subprocess.run(arguments, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


workloads = [line.split(":", 1) for line in read(f"{result}/workloads.txt").splitlines() if line]


def side(size, store, name):
    """The medians over the repeats of one workload on one store, and its raw runs."""
    runs = [json.load(open(f"{result}/raw/n{size}-{store}-{name}-r{repeat}.json"))
            for repeat in range(1, repeats + 1)]
    median = stats.medians(runs, ("ops_per_sec", "p50_us", "p99_us", "p999_us"))
    for field in CPU:
        # A run whose servers could not be asked has no server CPU.
        values = [run[field] for run in runs if run.get(field) is not None]
        median[field] = statistics.median(values) if values else None
    if name == "watch":
        median.update(stats.medians(runs, ("events_per_sec", "put_p50_us", "put_p99_us")))
    if name == "txn":
        median["conflict_share"] = stats.median_of(runs, lambda run: run["txn_failed"] / run["ops"])
    return {"median": median, "errors": sum(run["errors"] for run in runs),
            "events_missing": sum(run.get("events_missing") or 0 for run in runs),
            "raw": runs}


def ratio(nvkv, etcd):
    return nvkv / etcd if nvkv is not None and etcd else None


def floor(size):
    """nvkv's floor runs of one size: the device's append and the ping, the
    repeat whose p50 is the median of each; None for a run from before the
    floor was measured."""
    floors = {}
    for kind in ("device", "ping"):
        paths = [f"{result}/raw/n{size}-floor-{kind}-r{repeat}.json" for repeat in range(1, repeats + 1)]
        if not all(os.path.exists(path) for path in paths):
            return None
        runs = [json.load(open(path)) for path in paths]
        floors[kind] = sorted(runs, key=lambda run: run["p50_us"])[len(runs) // 2]
    return floors


def median_run(runs):
    """The run whose p50 is the median of the repeats' (its budget is shown)."""
    return sorted(runs, key=lambda run: run["p50_us"])[len(runs) // 2]


floors = {size: floor(size) for size in sizes}

results = {}
for size in sizes:
    results[str(size)] = {}
    for name, arguments in workloads:
        entry = {"label": LABELS[name], "arguments": arguments.strip()}
        for store in STORES:
            entry[store] = side(size, store, name)
        entry["ratios"] = {key: ratio(entry["nvkv"]["median"][key], entry["etcd"]["median"][key])
                           for key in ("ops_per_sec", "p50_us", "p99_us", "server_cpu_us_per_op")}
        if ETCD_API in STORES:
            entry["etcd_api_ratios"] = {key: ratio(entry[ETCD_API]["median"][key], entry["etcd"]["median"][key])
                                        for key in ("ops_per_sec", "p50_us", "p99_us", "server_cpu_us_per_op")}
        results[str(size)][name] = entry


goals = []
for size, name, field, goal, comparison, text, store in GOALS:
    if str(size) not in results or store not in STORES:
        continue
    value = results[str(size)][name]["ratios" if store == "nvkv" else "etcd_api_ratios"][field]
    met = value is not None and (value <= goal if comparison == "<=" else value >= goal if comparison == ">=" else value < goal)
    goals.append({"goal": text, "cluster_size": size, "workload": name, "ratio_of": field,
                  "value": value, "target": goal, "comparison": comparison, "result": "PASS" if met else "MISS",
                  "nvkv": results[str(size)][name][store]["median"][field],
                  **({"nvkv_side": store} if ETCD_API in STORES else {}),
                  "etcd": results[str(size)][name]["etcd"]["median"][field]})
if "1" in results and floors.get(1):
    put_p50 = results["1"]["put-c1"]["nvkv"]["median"]["p50_us"]
    device_p50 = floors[1]["device"]["p50_us"]
    goals.append({"goal": f"one node: nvkv's put p50 at 1 client at most its device append p50 + {ABOVE_DEVICE_US:.0f} µs",
                  "cluster_size": 1, "workload": "put-c1", "ratio_of": "p50_us above the device append p50",
                  "value": put_p50 - device_p50, "target": ABOVE_DEVICE_US, "comparison": "<=",
                  "result": "PASS" if put_p50 - device_p50 <= ABOVE_DEVICE_US else "MISS",
                  "nvkv": put_p50, "etcd": None, "device_p50_us": device_p50})

disk_line = command_output("df", "-T", scratch).splitlines()[-1:] or [""]
device = disk_line[0].split()[0] if disk_line[0] else ""
block = command_output("lsblk", "-dno", "NAME,SIZE,ROTA,MODEL", device) if device.startswith("/dev/") else ""
memory = next((line.split(":")[1].strip() for line in read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), "")
cpu = next((line.split(":", 1)[1].strip() for line in command_output("lscpu").splitlines() if line.startswith("Model name")),
           platform.processor())
machine = {"cpu": cpu, "cores": os.cpu_count(), "memory": memory, "kernel": platform.release(),
           "disk": f"{disk_line[0].split()[1] if disk_line[0] else '?'} on {device} ({block or 'no lsblk detail'})",
           "data_directory": os.path.relpath(scratch), "load_average_start": load_start,
           "load_average_end": machine.load_average()}
etcd_version = read(f"{result}/etcd-version.txt").splitlines()
statuses = {size: json.load(open(f"{result}/status-{size}.json")) for size in sizes}
durability = sorted({member.get("durability", "?") for status in statuses.values() for member in status})
versions = {"nvkv": nvkv_version, "nvkv_commit": nvkv_commit,
            "etcd": " ".join(line for line in etcd_version if line.startswith(("etcd Version", "Go Version")))}
summary = {"command": command, "parameters": {"seconds": seconds, "repeats": repeats, "key_bytes": 8, "value_bytes": 256,
                                              "key_space": int(key_space), "watchers": int(watchers),
                                              "workloads": {name: arguments.strip() for name, arguments in workloads}},
           "machine": machine, "versions": versions,
           "durability": {"nvkv": durability, "etcd": "WAL fsynced (etcd's default; --unsafe-no-fsync not given)"},
           "ratios_are": "nvkv / etcd, of the medians" + (" (etcd_api_ratios: nvkv's etcd API / etcd)"
                                                           if ETCD_API in STORES else ""), "goals": goals, "results": results,
           "floor": {str(size): floors[size] for size in sizes},
           "ready": {size: read(f"{result}/ready-{size}.txt").strip() for size in sizes}}
retries = f"{result}/preload-retries.txt"
summary["preload_retries"] = read(retries).splitlines() if os.path.exists(retries) else []
json.dump(summary, open(f"{result}/summary.json", "w"), indent=1)


def shards_of(size):
    """The shards each nvkv member ran in this size's runs, from its status."""
    counts = sorted({len(member["shards"]) for member in statuses.get(size, [])})
    if not counts:
        return "shards not measured"
    return " or ".join(str(count) for count in counts) + (" shard" if counts == [1] else " shards")


def number(value, digits=0):
    return "–" if value is None else f"{value:,.{digits}f}"


def times(value):
    return "–" if value is None else f"{value:.2f}×"


size_name = {1: "one node", 3: "three nodes"}
lines = ["# nvkv and etcd side by side", "",
         f"Command: `{command}`", "",
         f"- nvkv {nvkv_version.removeprefix('nvkv ')}, commit {nvkv_commit}; durability {', '.join(durability)} (nvkv's default: "
         "every group-commit write is durable when it completes)",
         f"- {versions['etcd']} (Debian's etcd-server), its defaults: the WAL is fsynced before a write is acknowledged",
         f"- machine: {cpu}, {os.cpu_count()} cores, {memory} memory, kernel {platform.release()}; "
         f"load average {load_start} at the start, {machine['load_average_end']} at the end",
         f"- data of both stores on the same disk: {machine['disk']}, under `{machine['data_directory']}` (removed afterwards)",
         "- the load generator (`nvkv bench`; threads: one per connection up to the cores) runs on the same cores as "
         "the stores; both stores run at the same time and each workload runs on one, then the other (the order "
         "alternates between repeats); server CPU per operation is the user and system time of every server "
         "process during the run (nvkv's from its status, etcd's `process_cpu_seconds_total`) over the operations",
         f"- {repeats} repeat(s) of {seconds} s per workload and store; the figures are medians over the repeats, "
         "the raw ops/s of every repeat beside them; ratios are nvkv ÷ etcd of the medians",
         f"- 8-byte keys, 256-byte values; put and range over {int(key_space):,} keys (preloaded before the first run), "
         "txn over 1,000; one connection per 10 clients, rounded up (as etcd's benchmark tool is run: 1000 clients "
         f"over 100 connections); watch: {watchers} watchers, 10 per key, 16 clients putting 1000 puts/s in all "
         "(its ops/s is that rate; its percentiles are the events')",
         f"- one node of each: nvkv's embedded default ({shards_of(1)}); etcd one member. Three nodes: nvkv's "
         f"`bench/three-nodes.sh` (config/cluster3's shape: {shards_of(3)} per member); three etcd members; all on loopback"]
if summary["preload_retries"]:
    lines.append(f"- a preload stopped at a refused put and ran again: {'; '.join(summary['preload_retries'])} "
                 "(what it said is in `raw/*preload*.err`)")
lines += ["",
         "## Goals", "", "| Goal | nvkv | etcd | ratio | target | result |", "|---|---:|---:|---:|---:|---|"]
for goal in goals:
    unit = "ops/s" if goal["ratio_of"] == "ops_per_sec" else "µs"
    if goal["etcd"] is None:
        # Against nvkv's own device, not etcd: the value is µs above it.
        lines.append(f"| {goal['goal']} | {number(goal['nvkv'], 1)} µs | device append p50 "
                     f"{number(goal['device_p50_us'], 1)} µs | +{goal['value']:.1f} µs | "
                     f"{goal['comparison']} +{goal['target']:.0f} µs | **{goal['result']}** |")
        continue
    lines.append(f"| {goal['goal']} | {number(goal['nvkv'], 0 if unit == 'ops/s' else 1)} {unit} | "
                 f"{number(goal['etcd'], 0 if unit == 'ops/s' else 1)} {unit} | {times(goal['value'])} | "
                 f"{goal['comparison']} {goal['target']:.2f} | **{goal['result']}** |")
for size in sizes:
    lines += ["", f"## {size_name[size].capitalize()}", "",
              "| Workload | nvkv ops/s | etcd ops/s | ops/s ratio | nvkv p50 µs | etcd p50 µs | p50 ratio | nvkv p99 µs | "
              "etcd p99 µs | p99 ratio | server CPU µs/op, nvkv — etcd (ratio) | bench CPU µs/op, nvkv — etcd | "
              "raw ops/s, nvkv — etcd" + (" — nvkv's etcd API" if ETCD_API in STORES else "") + " | notes |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, _ in workloads:
        entry = results[str(size)][name]
        nvkv, etcd = entry["nvkv"]["median"], entry["etcd"]["median"]
        raw = " — ".join(" · ".join(f"{run['ops_per_sec']:,.0f}" for run in entry[store]["raw"]) for store in STORES)
        notes = []
        if name == "txn":
            notes.append(f"conflicts: nvkv {nvkv['conflict_share']:.0%}, etcd {etcd['conflict_share']:.0%}")
        if name == "watch":
            notes.append(f"events/s nvkv {nvkv['events_per_sec']:,.0f}, etcd {etcd['events_per_sec']:,.0f}; "
                         f"puts p50 nvkv {nvkv['put_p50_us']:.0f} µs, etcd {etcd['put_p50_us']:.0f} µs; missing events "
                         f"nvkv {entry['nvkv']['events_missing']}, etcd {entry['etcd']['events_missing']}")
        for store in STORES:
            if entry[store]["errors"]:
                notes.append(f"{store}: {entry[store]['errors']} errors (the first in `raw/n{size}-{store}-{name}-r*.err`)")
        ratios = entry["ratios"]
        lines.append(f"| {entry['label']} | {number(nvkv['ops_per_sec'])} | {number(etcd['ops_per_sec'])} | "
                     f"{times(ratios['ops_per_sec'])} | {number(nvkv['p50_us'], 1)} | {number(etcd['p50_us'], 1)} | "
                     f"{times(ratios['p50_us'])} | {number(nvkv['p99_us'], 1)} | {number(etcd['p99_us'], 1)} | "
                     f"{times(ratios['p99_us'])} | {number(nvkv['server_cpu_us_per_op'], 1)} — "
                     f"{number(etcd['server_cpu_us_per_op'], 1)} ({times(ratios['server_cpu_us_per_op'])}) | "
                     f"{number(nvkv['generator_cpu_us_per_op'], 1)} — {number(etcd['generator_cpu_us_per_op'], 1)} | "
                     f"{raw} | {'; '.join(notes)} |")
    put = median_run(results[str(size)]["put-c1"]["nvkv"]["raw"])
    if floors[size] and put.get("budget"):
        lines += ["", f"### nvkv's latency budget, put at 1 client, {size_name[size]}", "",
                  "The repeat with the median p50; client hops are half of the round trip minus the time the node "
                  "said the put spent in it, server hops the nodes' histograms over the run (every shard of every "
                  "member). Hops marked ↳ run beside the leader's own append. The floor: nvkv's device append p50 "
                  "and its KV stream round trip doing no work, the repeat with the median p50 of each.", "",
                  *budget.table(put, floors[size]["device"], floors[size]["ping"])]
    if ETCD_API not in STORES:
        continue
    lines += ["", f"Through the etcd client on both sides ({size_name[size]}): nvkv's etcd API (`etcd://`) and etcd, "
              "the same driver and protocol.", "",
              "| Workload | nvkv etcd API ops/s | etcd ops/s | ops/s ratio | nvkv etcd API p50 µs | etcd p50 µs | "
              "p50 ratio | nvkv etcd API p99 µs | etcd p99 µs | p99 ratio | server CPU µs/op, nvkv etcd API — etcd |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, _ in workloads:
        entry = results[str(size)][name]
        api, etcd, ratios = entry["nvkv-etcd"]["median"], entry["etcd"]["median"], entry["etcd_api_ratios"]
        lines.append(f"| {entry['label']} | {number(api['ops_per_sec'])} | {number(etcd['ops_per_sec'])} | "
                     f"{times(ratios['ops_per_sec'])} | {number(api['p50_us'], 1)} | {number(etcd['p50_us'], 1)} | "
                     f"{times(ratios['p50_us'])} | {number(api['p99_us'], 1)} | {number(etcd['p99_us'], 1)} | "
                     f"{times(ratios['p99_us'])} | {number(api['server_cpu_us_per_op'], 1)} — "
                     f"{number(etcd['server_cpu_us_per_op'], 1)} |")
lines += ["", "![put throughput against clients](throughput.png)", "", "![latency percentiles](latency.png)"]

missed = sorted({goal["cluster_size"] for goal in goals if goal["result"] == "MISS"})
for size in missed:
    lines += ["", f"## Where nvkv's time goes, {size_name[size]} (`nvkv status -w json` after the runs)", "",
              "Per-stage latency histograms of every shard, over all of this size's runs since the node(s) started "
              "(preload, every workload, every repeat): queue wait (a write waiting for its shard's group-commit "
              "write), device write (the write with FUA), proposal wait (a write waiting to join a batched "
              "proposal), raft (proposal to commit), apply, and end to end on the shard. "
              f"The whole JSON is in [`status-{size}.json`](status-{size}.json).", "",
              "| Member | shard | " + " | ".join(f"{stage.replace('_', ' ')} p50 / p99 µs" for stage in STAGES)
              + " | log writes | proposals | commands per proposal |",
              "|---|---:|" + "---:|" * (len(STAGES) + 3)]
    for member in statuses[size]:
        for shard in member["shards"]:
            stages = " | ".join(f"{shard[stage + '_p50_us']:,.0f} / {shard[stage + '_p99_us']:,.0f}" for stage in STAGES)
            per = shard["proposed_commands"] / shard["proposals"] if shard["proposals"] else 0
            lines.append(f"| {member['member_id']} | {shard['shard']} | {stages} | {shard['log_writes']:,} | "
                         f"{shard['proposals']:,} | {per:.1f} |")
open(f"{result}/report.md", "w").write("\n".join(lines) + "\n")

# The charts: put throughput against clients, and p50/p99 of every workload
# (gnuplot runs in RESULT, so plot.gp redraws them wherever it is copied).
plot = ["set terminal pngcairo size 1000,600 noenhanced font ',10'" if "pngcairo" in command_output("gnuplot", "-e", "set terminal")
        else "set terminal png size 1000,600 noenhanced", "set datafile separator ','"]
plot += ["$throughput << EOD"]
for clients in PUT_CLIENTS:
    plot.append(f"{clients}," + ",".join(f"{results[str(size)][f'put-c{clients}'][store]['median']['ops_per_sec']:.1f}"
                                         for size in sizes for store in STORES))
plot += ["EOD", "set output 'throughput.png'", "set title 'put throughput against clients (medians)'",
         "set xlabel 'clients (one connection per 10)'", "set ylabel 'puts/s'", "set logscale x 2", "set logscale y",
         "set grid", "set key top left", "set xtics (1, 16, 64, 256)", "set xrange [0.8:320]"]
colours = {"nvkv": "#1f77b4", "etcd": "#ff7f0e", "nvkv-etcd": "#2ca02c"}
light = {"nvkv": "#aec7e8", "etcd": "#ffbb78", "nvkv-etcd": "#98df8a"}
shapes = {1: "pt 7 dt 1", 3: "pt 5 dt 2"}
columns = [(size, store) for size in sizes for store in STORES]
plot.append("plot " + ", ".join(f"$throughput using 1:{index + 2} with linespoints lw 2 {shapes[size]} lc rgb '{colours[store]}' "
                                f"title '{store}, {size_name[size]}'" for index, (size, store) in enumerate(columns)))
plot += ["unset logscale x", "unset xtics", "set xtics", "set autoscale x", "set output"]
highest = max(results[str(size)][name][store]["median"]["p99_us"] for size in sizes for name, _ in workloads for store in STORES)
plot += ["set output 'latency.png'", f"set terminal {'pngcairo' if 'pngcairo' in plot[0] else 'png'} size {600 * len(sizes)},650 noenhanced",
         f"set multiplot layout 1,{len(sizes)} title 'latency percentiles, medians (µs, log scale)'",
         "set style data histogram", "set style histogram clustered gap 1", "set style fill solid 0.8 border -1",
         # One scale for every panel, so sizes compare at a glance.
         "set logscale y", f"set yrange [10:{highest * 2:.0f}]", "set format y '%.0s%c'",
         "set xtics rotate by -40", "unset xlabel", "set ylabel 'µs'",
         "set key top left"]
for size in sizes:
    plot.append(f"$latency{size} << EOD")
    for name, _ in workloads:
        entry = results[str(size)][name]
        plot.append(f"{name}," + ",".join(f"{max(entry[store]['median'][key], 10.0):.1f}"
                                          for key in ("p50_us", "p99_us") for store in STORES))
    series = [(key, store) for key in ("p50", "p99") for store in STORES]
    parts = []
    for index, (key, store) in enumerate(series):
        using = "using 2:xtic(1)" if index == 0 else f"'' using {index + 2}"
        parts.append(f"{using} title '{store} {key}' lc rgb '{(colours if key == 'p50' else light)[store]}'")
    plot += ["EOD", f"set title '{size_name[size]}'", f"plot $latency{size} " + ", ".join(parts)]
plot += ["unset multiplot", "set output"]
open(f"{result}/plot.gp", "w").write("\n".join(plot) + "\n")
