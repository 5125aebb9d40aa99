"""The device benchmark's arithmetic and writing (bench/device.sh runs it;
not a tool on its own). Standard library only.

  python3 -m report.device report RUN         raw/<side>-r<k>.json -> summary.json, report.md, plot.gp
  python3 -m report.device check-nvkv FILE    fails unless FILE is what nvkv bench device --json prints
  python3 -m report.device spdk-perf TEXT JSON  spdk_nvme_perf's text output -> the JSON the report reads

`report` takes the run's facts (command, machine, target, parameters) from
META_* variables in its environment, as device.sh exports them.
"""

import json
import os
import re
import sys

from report import stats


class BadOutput(Exception):
    pass


def load(run_dir, name, lenient=False):
    path = os.path.join(run_dir, "raw", name + ".json")
    with open(path) as handle:
        text = handle.read()
    if lenient and not text.startswith("{") and "\n{" in text:
        # fio can print notes on stdout before its JSON.
        text = text[text.index("\n{") + 1:]
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadOutput(f"{path} is not one JSON object ({error}); it starts with: {text[:200]!r}")


def dig(document, path, source):
    """Follows a field path like jobs.0.write.iops, naming the missing step."""
    value = document
    for step in path.split("."):
        try:
            value = value[int(step)] if isinstance(value, list) else value[step]
        except (KeyError, IndexError, ValueError, TypeError):
            raise BadOutput(f"{source}: field '{path}' is missing (stopped at '{step}')")
    return value


def percentile_us(document, path, source, percentile):
    # fio names percentiles with six decimals: "50.000000", "99.900000".
    key = f"{percentile:.6f}"
    table = dig(document, path, source)
    if key not in table:
        raise BadOutput(f"{source}: field '{path}' has no \"{key}\" (it has {', '.join(table)})")
    return table[key] / 1000.0


def fio_job(document, source):
    job = dig(document, "jobs.0", source)
    if job.get("error", 0) != 0:
        raise BadOutput(f"{source}: fio reports error {job['error']}")
    return job


def parse_etcd(run_dir, name):
    document = load(run_dir, name, lenient=True)
    job = fio_job(document, name)
    sync = "jobs.0.sync.lat_ns.percentile"
    clat = "jobs.0.write.clat_ns.percentile"
    return {
        "ops_per_sec": dig(document, "jobs.0.write.iops", name),
        "p50_us": percentile_us(document, sync, name, 50),
        "p99_us": percentile_us(document, sync, name, 99),
        "p999_us": percentile_us(document, sync, name, 99.9),
        "write_clat_p50_us": percentile_us(document, clat, name, 50),
        "write_clat_p99_us": percentile_us(document, clat, name, 99),
        "write_clat_p999_us": percentile_us(document, clat, name, 99.9),
        "writes": dig(document, "jobs.0.write.total_ios", name),
        # fio 3.33 leaves sync.total_ios at 0; lat_ns.N counts the fdatasyncs.
        "fdatasyncs": dig(document, "jobs.0.sync.lat_ns.N", name),
        "runtime_ms": job["write"]["runtime"],
    }


def parse_uring(run_dir, name):
    document = load(run_dir, name, lenient=True)
    job = fio_job(document, name)
    clat = "jobs.0.write.clat_ns.percentile"
    lat = "jobs.0.write.lat_ns.percentile"
    return {
        "ops_per_sec": dig(document, "jobs.0.write.iops", name),
        # Total latency (submission to completion), like nvkv's append to durable.
        "p50_us": percentile_us(document, lat, name, 50),
        "p99_us": percentile_us(document, lat, name, 99),
        "p999_us": percentile_us(document, lat, name, 99.9),
        "clat_p50_us": percentile_us(document, clat, name, 50),
        "clat_p99_us": percentile_us(document, clat, name, 99),
        "clat_p999_us": percentile_us(document, clat, name, 99.9),
        "slat_mean_us": dig(document, "jobs.0.write.slat_ns.mean", name) / 1000.0,
        "writes": dig(document, "jobs.0.write.total_ios", name),
        "runtime_ms": job["write"]["runtime"],
    }


NVKV_FIELDS = ("ops", "seconds", "ops_per_sec", "p50_us", "p99_us", "p999_us", "max_us")


def nvkv_fields_missing(document):
    """The fields this report needs that `nvkv bench device --json` left out."""
    return [field for field in NVKV_FIELDS if not isinstance(document, dict) or field not in document]


def parse_nvkv(run_dir, name):
    document = load(run_dir, name)
    if not isinstance(document, dict):
        raise BadOutput(f"{name}: nvkv --json printed {type(document).__name__}, not one JSON object")
    missing = nvkv_fields_missing(document)
    if missing:
        raise BadOutput(f"{name}: nvkv --json output lacks {', '.join(missing)}: {json.dumps(document)[:300]}")
    record = {field: float(document[field]) for field in NVKV_FIELDS}
    record["reported"] = document
    return record


def parse_perf(run_dir, name):
    document = load(run_dir, name)
    for field in ("ops_per_sec", "mean_us", "p50_us", "p99_us", "p999_us"):
        if field not in document:
            raise BadOutput(f"{name}: the spdk_nvme_perf summary lacks {field}")
    return document


def sides(meta):
    """The sides of this run, in the order each repeat runs them: key, label, family, parser."""
    chosen = []
    if meta["file_sides"] != "0":
        chosen += [
            ("etcd_wal", "etcd WAL pattern (sync write 2300 B + fdatasync)", "etcd", parse_etcd),
            ("fio_qd1", "fio io_uring O_DIRECT+O_DSYNC 4 KiB, QD1", "fio", parse_uring),
            ("fio_qd32", "fio io_uring O_DIRECT+O_DSYNC 4 KiB, QD32", "fio", parse_uring),
            ("nvkv_a1", "nvkv log, 1 appender, 2300 B entries", "nvkv", parse_nvkv),
            ("nvkv_a64", "nvkv log, 64 appenders, 2300 B entries", "nvkv", parse_nvkv),
        ]
    if meta["spdk"]:
        chosen += [
            ("spdk_perf_qd1", "spdk_nvme_perf 4 KiB writes, QD1 (SPDK, NVMe/TCP)", "spdk", parse_perf),
            ("spdk_perf_qd32", "spdk_nvme_perf 4 KiB writes, QD32 (SPDK, NVMe/TCP)", "spdk", parse_perf),
            ("nvkv_spdk_a1", "nvkv log on the spdk backend, 1 appender, 2300 B entries", "nvkv", parse_nvkv),
        ]
    return chosen


def ratio(numerator, denominator, goal, comparison, per_repeat_pairs, description):
    # A zero denominator (a side that did nothing) gives no ratio: null in JSON, MISS.
    value = numerator / denominator if denominator else None
    passed = value is not None and (value <= goal if comparison == "<=" else value >= goal)
    return {
        "description": description,
        "value": value,
        "numerator": numerator,
        "denominator": denominator,
        "goal": goal,
        "goal_comparison": comparison,
        "result": "PASS" if passed else "MISS",
        "per_repeat": [n / d if d else None for n, d in per_repeat_pairs],
    }


def us(value):
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def ops(value):
    return f"{value:,.0f}"


def number(value):
    return "n/a" if value is None else f"{value:.2f}"


def series(records, field, form):
    return " · ".join(form(r[field]) for r in records)


def report(run_dir, meta):
    """Reads raw/<side>-r<k>.json, writes summary.json, report.md and plot.gp."""
    repeats = int(meta["repeats"])
    chosen = sides(meta)
    try:
        raw = {key: [parse(run_dir, f"{key}-r{r}") for r in range(1, repeats + 1)] for key, _, _, parse in chosen}
    except (BadOutput, OSError) as error:
        sys.exit(f"device.sh: error: {error}")
    median = {key: stats.medians(raw[key]) for key in raw}
    ratios, reference_ratios = judge(raw, median)
    summary = summarize(meta, chosen, raw, median, ratios, reference_ratios)
    with open(os.path.join(run_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    with open(os.path.join(run_dir, "report.md"), "w") as handle:
        handle.write("\n".join(markdown(meta, summary, chosen, raw, median, ratios, reference_ratios)) + "\n")
    with open(os.path.join(run_dir, "plot.gp"), "w") as handle:
        handle.write("\n".join(plot(meta, chosen, raw, median)) + "\n")


def judge(raw, median):
    """The ratios nvkv is judged by, and the reference ones, from this run's medians."""
    ratios = {}
    reference_ratios = {}
    if "nvkv_a1" in raw:
        ratios["nvkv_p50_a1_over_fio_qd1_p50"] = ratio(
            median["nvkv_a1"]["p50_us"], median["fio_qd1"]["p50_us"], 1.25, "<=",
            [(a["p50_us"], b["p50_us"]) for a, b in zip(raw["nvkv_a1"], raw["fio_qd1"])],
            "nvkv p50 at 1 appender / fio io_uring dsync QD1 p50 (submit to complete, as fio prints it "
            "with --lat_percentiles=1)")
        ratios["nvkv_ops_a64_over_etcd_wal_ops"] = ratio(
            median["nvkv_a64"]["ops_per_sec"], median["etcd_wal"]["ops_per_sec"], 10.0, ">=",
            [(a["ops_per_sec"], b["ops_per_sec"]) for a, b in zip(raw["nvkv_a64"], raw["etcd_wal"])],
            "nvkv ops/s at 64 appenders / etcd WAL-pattern ops/s")
    # For reference only: fio's completion latency (clat) starts after the
    # submitting system call returned, and io_uring may do much of an O_DIRECT
    # write inside that call; nvkv's latency, like fio's total latency, runs from
    # submission (append) to completion (durable).
        reference_ratios["nvkv_p50_a1_over_fio_qd1_clat_p50"] = ratio(
            median["nvkv_a1"]["p50_us"], median["fio_qd1"]["clat_p50_us"], 1.25, "<=",
            [(a["p50_us"], b["clat_p50_us"]) for a, b in zip(raw["nvkv_a1"], raw["fio_qd1"])],
            "reference: nvkv p50 at 1 appender / fio io_uring dsync QD1 completion latency (clat) p50")
    if "nvkv_spdk_a1" in raw:
        ratios["nvkv_spdk_p50_a1_over_spdk_perf_qd1_p50"] = ratio(
            median["nvkv_spdk_a1"]["p50_us"], median["spdk_perf_qd1"]["p50_us"], 1.25, "<=",
            [(a["p50_us"], b["p50_us"]) for a, b in zip(raw["nvkv_spdk_a1"], raw["spdk_perf_qd1"])],
            "nvkv p50 on the spdk backend at 1 appender / spdk_nvme_perf QD1 write p50 (-L), same target")
        reference_ratios["nvkv_spdk_p50_a1_over_spdk_perf_qd1_mean"] = ratio(
            median["nvkv_spdk_a1"]["p50_us"], median["spdk_perf_qd1"]["mean_us"], 1.25, "<=",
            [(a["p50_us"], b["mean_us"]) for a, b in zip(raw["nvkv_spdk_a1"], raw["spdk_perf_qd1"])],
            "reference: nvkv p50 on the spdk backend at 1 appender / spdk_nvme_perf QD1 average latency")
    return ratios, reference_ratios


def summarize(meta, chosen, raw, median, ratios, reference_ratios):
    """summary.json: the run's facts, every side's command, median and raw values, and the ratios."""
    repeats = int(meta["repeats"])
    seconds = int(meta["seconds"])
    size_bytes = int(meta["size_bytes"])
    commands = {
        "etcd_wal": f"fio --name=etcd-wal --filename={meta['etcd_target']} --rw=write --ioengine=sync "
                    f"--fdatasync=1 --size=22m --bs=2300 --output-format=json",
        "fio_qd1": f"fio --filename={meta['fio_target']} --size={size_bytes} --ioengine=io_uring --direct=1 "
                   f"--sync=dsync --bs=4k --rw=write --iodepth=1 --time_based --runtime={seconds} "
                   f"--lat_percentiles=1 --output-format=json",
        "nvkv_a1": f"{meta['nvkv_bin']} bench device --namespace {meta['nvkv_namespace']} "
                   f"--namespace-bytes {size_bytes} --appenders 1 --entry-bytes 2300 --seconds {seconds} --json",
    }
    commands["fio_qd32"] = commands["fio_qd1"].replace("--iodepth=1 ", "--iodepth=32 ")
    commands["nvkv_a64"] = commands["nvkv_a1"].replace("--appenders 1 ", "--appenders 64 ")
    if meta["spdk"]:
        commands["spdk_perf_qd1"] = (f"LD_LIBRARY_PATH={meta['spdk']}/build/lib {meta['spdk']}/build/bin/spdk_nvme_perf "
                                     f"-q 1 -o 4096 -w write -t {seconds} -c 0x1 -L --no-huge -s 1024 "
                                     f"-r '{meta['spdk_trid']} ns:1'")
        commands["spdk_perf_qd32"] = commands["spdk_perf_qd1"].replace(" -q 1 ", " -q 32 ")
        commands["nvkv_spdk_a1"] = (f"{meta['nvkv_bin']} bench device --spdk-transport '{meta['spdk_trid']}' "
                                    f"--spdk-nsid 2 --spdk-no-hugepages --appenders 1 --entry-bytes 2300 "
                                    f"--seconds {seconds} --json")

    summary = {
        "schema": "nvkv-bench-device/1",
        "command": meta["command"],
        "environment": meta["environment"],
        "started_utc": meta["start_utc"],
        "finished_utc": meta["end_utc"],
        "parameters": {
            "repeats": repeats,
            "seconds_per_run": seconds,
            "size_bytes": size_bytes,
            "target_kind": meta["target_kind"],
            "fio_target": meta["fio_target"],
            "etcd_target": meta["etcd_target"],
            "nvkv_namespace": meta["nvkv_namespace"],
            "nvkv_entry_bytes": 2300,
            "nvkv_appenders": [1, 64],
            "fio_iodepths": [1, 32],
            "order_within_repeat": [key for key, _, _, _ in chosen],
        },
        "machine": {
            "kernel": meta["kernel"],
            "cpu_model": meta["cpu_model"],
            "cores_online": int(meta["cores_online"]),
            "cores_total": int(meta["cores_total"]),
            "memory_bytes": int(meta["memory_kib"]) * 1024,
            "filesystem": meta["filesystem"],
            "block_device": meta["block_device"],
            "load_average_start": meta["load_start"],
            "load_average_end": meta["load_end"],
            "fio_version": meta["fio_version"],
            "nvkv_commit": meta["nvkv_commit"],
            "nvkv_bin": meta["nvkv_bin"],
        },
        "sides": {
            key: {"label": label, "command": commands[key], "median": median[key],
                  "raw": [{f: v for f, v in r.items() if f != "reported"} for r in raw[key]]}
            for key, label, _, _ in chosen
        },
        "ratios": ratios,
        "reference_ratios": reference_ratios,
    }
    if meta["spdk"]:
        summary["spdk"] = {
            "dir": meta["spdk"], "version": meta["spdk_commit"], "transport_id": meta["spdk_trid"],
            "target": f"nvmf_tgt --no-huge on the last core, two {meta['spdk_mib']} MiB malloc bdevs "
                      "(4096-byte blocks) as namespaces 1 (spdk_nvme_perf) and 2 (nvkv)",
        }
    for key in ("nvkv_a1", "nvkv_a64", "nvkv_spdk_a1"):
        if key in raw:
            summary["sides"][key]["reported"] = [r["reported"] for r in raw[key]]

    return summary


def markdown(meta, summary, chosen, raw, median, ratios, reference_ratios):
    """The lines of report.md."""
    repeats = int(meta["repeats"])
    seconds = int(meta["seconds"])
    size_bytes = int(meta["size_bytes"])
    lines = []
    out = lines.append
    out("# nvkv device benchmark")
    out("")
    out(f"Command: `{meta['command']}`" + (f" (environment: `{meta['environment']}`)" if meta["environment"] else ""))
    out("")
    out(f"- Date (UTC): {meta['start_utc']} to {meta['end_utc']}")
    out(f"- Kernel: {meta['kernel']}")
    out(f"- CPU: {meta['cpu_model']}, {meta['cores_online']} cores online ({meta['cores_total']} in /proc/cpuinfo)")
    out(f"- Memory: {int(meta['memory_kib']) / 1024 / 1024:.1f} GiB")
    out(f"- Load average (1/5/15 min) at start: {meta['load_start']}; at end: {meta['load_end']}")
    out(f"- Target: {meta['target_kind']} `{meta['fio_target']}`, {size_bytes / 2**20:,.0f} MiB"
        + ("" if meta["target_kind"] == "device" else
           f"; etcd pattern file `{meta['etcd_target']}`, nvkv namespace `{meta['nvkv_namespace']}` beside it"))
    out(f"- Filesystem: {meta['filesystem']}")
    out(f"- fio: {meta['fio_version']}; nvkv commit: {meta['nvkv_commit']}; nvkv binary: `{meta['nvkv_bin']}`")
    out(f"- Repeats: {repeats}, sides interleaved in each ({', '.join(key for key, _, _, _ in chosen)}); "
        f"{seconds} s per timed run")
    if meta["spdk"]:
        out(f"- SPDK: {meta['spdk_commit']} from `{meta['spdk']}`; target: {summary['spdk']['target']}, "
            f"`{meta['spdk_trid']}`; spdk_nvme_perf and nvkv's shard on core 0, nvmf_tgt on core "
            f"{int(meta['cores_online']) - 1}. spdk_nvme_perf writes without FUA, nvkv with FUA "
            "(a malloc bdev has no cache: the same work)")
    out("")
    out("Block device:")
    out("")
    out("```")
    out(meta["block_device"])
    out("```")
    out("")
    out("## Results (medians over repeats)")
    out("")
    out("| Side | ops/s | p50 µs | p99 µs | p99.9 µs | raw per repeat |")
    out("|---|---:|---:|---:|---:|---|")
    for key, label, _, _ in chosen:
        m, r = median[key], raw[key]
        raw_text = (f"ops/s {series(r, 'ops_per_sec', ops)}<br>p50 {series(r, 'p50_us', us)}"
                    f"<br>p99 {series(r, 'p99_us', us)}<br>p99.9 {series(r, 'p999_us', us)}")
        out(f"| {label} | {ops(m['ops_per_sec'])} | {us(m['p50_us'])} | {us(m['p99_us'])} | "
            f"{us(m['p999_us'])} | {raw_text} |")
    out("")
    out("Latency is per operation: for the etcd pattern the fdatasync latency (fio `sync` section); "
        "for fio io_uring the total latency (`lat`, submission to completion); for spdk_nvme_perf its "
        "submission-to-completion latency distribution (`-L`); for nvkv append to durable, "
        "as `nvkv bench device` reports it.")
    if "etcd_wal" in median:
        e, q1 = median["etcd_wal"], median["fio_qd1"]
        out(f"The etcd pattern's write() itself took p50 {us(e['write_clat_p50_us'])} µs, "
            f"p99 {us(e['write_clat_p99_us'])} µs, p99.9 {us(e['write_clat_p999_us'])} µs (medians); "
            f"fio io_uring QD1 completion latency (`clat`, after the submitting call returned) "
            f"p50 {us(q1['clat_p50_us'])} µs, p99 {us(q1['clat_p99_us'])} µs.")
    if "spdk_perf_qd1" in median:
        p1 = median["spdk_perf_qd1"]
        out(f"spdk_nvme_perf QD1 average latency {us(p1['mean_us'])} µs (median of the runs' averages).")
    out("")
    out("## Ratios (from this run's medians)")
    out("")
    out("| Ratio | value | goal | result | per repeat |")
    out("|---|---:|---:|---|---|")
    for item in list(ratios.values()) + list(reference_ratios.values()):
        result = item["result"] if not item["description"].startswith("reference") else f"({item['result']})"
        out(f"| {item['description']} | {number(item['value'])} | {item['goal_comparison']} {item['goal']:g} | "
            f"{result} | {' · '.join(number(v) for v in item['per_repeat'])} |")
    out("")
    out("The ratios without \"reference\" are the ones nvkv is judged by. They compare like with like: "
        "nvkv's latency runs from append to durable, fio's total latency and spdk_nvme_perf's latency from "
        "submission to completion. The reference ratios use fio's completion latency, which leaves out the "
        "submitting system call (where io_uring may do much of an O_DIRECT write), and spdk_nvme_perf's "
        "average instead of its median.")
    out("")
    out("![throughput](throughput.png)")
    out("")
    out("![latency](latency.png)")
    out("")
    out("Raw fio and nvkv JSON of every run: `raw/`.")

    return lines


def plot(meta, chosen, raw, median):
    """The lines of plot.gp: the throughput and latency charts with their data."""
    repeats = int(meta["repeats"])
    # gnuplot: one bar per side, error bars from the smallest to the largest repeat.
    short = {"etcd_wal": "etcd WAL\\npattern", "fio_qd1": "fio io_uring\\ndsync QD1",
             "fio_qd32": "fio io_uring\\ndsync QD32", "nvkv_a1": "nvkv\\n1 appender",
             "nvkv_a64": "nvkv\\n64 appenders", "spdk_perf_qd1": "spdk perf\\nQD1",
             "spdk_perf_qd32": "spdk perf\\nQD32", "nvkv_spdk_a1": "nvkv spdk\\n1 appender"}
    color = {"etcd": "0x888888", "fio": "0x3b75af", "nvkv": "0x2e9e44", "spdk": "0x8e44ad"}
    terminal = meta["gnuplot_terminal"]
    font = "font 'DejaVu Sans,10'" if terminal == "pngcairo" else ""
    script = [f"set terminal {terminal} size {max(900, 180 * len(chosen))},520 noenhanced {font}", "set datafile separator '|'",
            "set style fill solid 0.85 border -1", "set grid ytics lc rgb '#dddddd'", "set key top left",
            f"set xrange [0.4:{len(chosen) + 0.6}]", "set bmargin 4"]
    script.append("$throughput << EOD")
    for index, (key, _, family, _) in enumerate(chosen, 1):
        values = [r["ops_per_sec"] for r in raw[key]]
        script.append(f"{index}|{short[key]}|{median[key]['ops_per_sec']:.1f}|{min(values):.1f}|{max(values):.1f}|"
                    f"{color[family]}|{ops(median[key]['ops_per_sec'])}")
    script.append("EOD")
    script.append("$latency << EOD")
    for index, (key, _, family, _) in enumerate(chosen, 1):
        p50 = [r["p50_us"] for r in raw[key]]
        p99 = [r["p99_us"] for r in raw[key]]
        script.append(f"{index}|{short[key]}|{median[key]['p50_us']:.2f}|{min(p50):.2f}|{max(p50):.2f}|"
                    f"{median[key]['p99_us']:.2f}|{min(p99):.2f}|{max(p99):.2f}|{us(median[key]['p50_us'])}|"
                    f"{us(median[key]['p99_us'])}")
    script.append("EOD")
    title_tail = f"median of {repeats}, bars min–max; {meta['target_kind']} target; {meta['start_utc']}"
    ymax = max(max(r["ops_per_sec"] for r in raw[key]) for key in raw) * 1.15
    script += [
        "set output 'throughput.png'",
        f"set title 'Durable writes per second ({title_tail})'",
        "set ylabel 'ops/s'", f"set yrange [0:{ymax:.0f}]", "set format y \"%'.0f\"",
        "unset key",
        "plot $throughput using 1:3:(0.6):6:xtic(2) with boxes lc rgb variable, "
        "'' using 1:4:(0):($5-$4) with vectors heads size screen 0.006,90 lc rgb 'black', "
        "'' using 1:5:7 with labels offset 0,0.8",
    ]
    low = min(min(r["p50_us"] for r in raw[key]) for key in raw)
    high = max(max(r["p99_us"] for r in raw[key]) for key in raw)
    script += [
        "set output 'latency.png'",
        f"set title 'Latency per durable write, p50 and p99 ({title_tail})'",
        "set ylabel 'µs (log scale)'", "set logscale y", f"set yrange [{low / 2:.3f}:{high * 3:.3f}]",
        "set format y '%g'", "set key top left",
        "plot $latency using ($1-0.19):3:(0.36):xtic(2) with boxes lc rgb '0x3b75af' title 'p50', "
        "'' using ($1+0.19):6:(0.36) with boxes lc rgb '0xd9822b' title 'p99', "
        "'' using ($1-0.19):4:(0):($5-$4) with vectors heads size screen 0.006,90 lc rgb 'black' notitle, "
        "'' using ($1+0.19):7:(0):($8-$7) with vectors heads size screen 0.006,90 lc rgb 'black' notitle, "
        # Values sit inside the bars near the axis, clear of the min-max whiskers.
        f"'' using ($1-0.19):({low * 0.75:.3f}):9 with labels font ',8' tc rgb 'white' notitle, "
        f"'' using ($1+0.19):({low * 0.75:.3f}):10 with labels font ',8' tc rgb 'white' notitle",
    ]
    return script


def check_nvkv(path):
    """Fails, saying why, unless `path` holds what nvkv bench device --json prints."""
    text = open(path).read()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        sys.exit(f"device.sh: error: nvkv --json printed no JSON object ({error}); stdout was: {text[:300]!r}")
    missing = nvkv_fields_missing(document)
    if missing:
        sys.exit(f"device.sh: error: nvkv --json output lacks {', '.join(missing)}: {text[:300]!r}")


def spdk_perf(text_path, json_path):
    """spdk_nvme_perf's text output (its Total line and -L's latency
    distribution) as the JSON the report reads."""
    text = open(text_path).read()
    total = re.search(r"^Total\s*:\s*([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", text, re.M)
    if not total:
        sys.exit(f"device.sh: error: no 'Total' line in spdk_nvme_perf's output: {text[-600:]!r}")
    iops, mib, average, minimum, maximum = map(float, total.groups())
    # -L prints the latency distribution of the run: "50.00000% :    78.123us".
    percentiles = {float(p): float(v) for p, v in re.findall(r"^\s*([0-9.]+)%\s*:\s*([0-9.]+)us", text, re.M)}

    def at(wanted):
        if wanted not in percentiles:
            sys.exit(f"device.sh: error: spdk_nvme_perf printed no {wanted}% latency (has {sorted(percentiles)})")
        return percentiles[wanted]

    json.dump({"ops_per_sec": iops, "mib_per_sec": mib, "mean_us": average, "min_us": minimum,
               "max_us": maximum, "p50_us": at(50.0), "p99_us": at(99.0), "p999_us": at(99.9)},
              open(json_path, "w"))


def main(arguments):
    match arguments:
        case ["report", run_dir]:
            meta = {key[5:].lower(): value for key, value in os.environ.items() if key.startswith("META_")}
            report(run_dir, meta)
        case ["check-nvkv", path]:
            check_nvkv(path)
        case ["spdk-perf", text_path, json_path]:
            spdk_perf(text_path, json_path)
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
