"""The report code against runs kept in bench/results/: each report module,
given a kept run's raw JSON and the facts its summary.json recorded, must
write that run's report again, figure for figure. A change that moves a
median, a ratio, a table or a chart's data fails here.

Run: python3 -m unittest discover -s bench -t bench   (.ci/run does)
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from report import stats

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(BENCH, "results")
# Runs kept for the report tests alone, not as results.
FIXTURES = os.path.join(BENCH, "report", "fixtures")


def run_module(module, arguments, environment=None):
    """Runs `python3 -m report.MODULE ARGUMENTS` as the scripts do; its stdout."""
    env = dict(os.environ, PYTHONPATH=BENCH, **(environment or {}))
    done = subprocess.run([sys.executable, "-m", f"report.{module}", *arguments], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"report.{module} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def read(*path):
    with open(os.path.join(*path)) as handle:
        return handle.read()


class KeptRun:
    """A copy of a kept run's inputs in a temporary directory."""

    def __init__(self, name, inputs, parent=None):
        self.kept = os.path.join(parent or RESULTS, name)
        self.directory = tempfile.mkdtemp(prefix=f"nvkv-report-{name}-")
        for item in inputs:
            source = os.path.join(self.kept, item)
            target = os.path.join(self.directory, item)
            (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, target)
        self.summary = json.loads(read(self.kept, "summary.json"))

    def written(self, name):
        return read(self.directory, name)

    def close(self):
        shutil.rmtree(self.directory, ignore_errors=True)


def without(lines, *prefixes):
    """The lines that start with none of `prefixes` (facts of the machine the
    test runs on, not of the kept run)."""
    return [line for line in lines.splitlines() if not line.startswith(prefixes)]


class DeviceReport(unittest.TestCase):
    def test_a_kept_spdk_run_is_written_again_byte_for_byte(self):
        run = KeptRun("device-spdk-20261203-1520", ["raw"])
        try:
            summary, machine, parameters = run.summary, run.summary["machine"], run.summary["parameters"]
            spdk = summary["spdk"]
            plot = read(run.kept, "plot.gp")
            meta = {
                "COMMAND": summary["command"], "ENVIRONMENT": summary["environment"],
                "START_UTC": summary["started_utc"], "END_UTC": summary["finished_utc"],
                "LOAD_START": machine["load_average_start"], "LOAD_END": machine["load_average_end"],
                "KERNEL": machine["kernel"], "CPU_MODEL": machine["cpu_model"],
                "CORES_ONLINE": machine["cores_online"], "CORES_TOTAL": machine["cores_total"],
                "MEMORY_KIB": machine["memory_bytes"] // 1024, "TARGET_KIND": parameters["target_kind"],
                "FIO_TARGET": parameters["fio_target"], "ETCD_TARGET": parameters["etcd_target"],
                "NVKV_NAMESPACE": parameters["nvkv_namespace"], "FILESYSTEM": machine["filesystem"],
                "BLOCK_DEVICE": machine["block_device"], "FIO_VERSION": machine["fio_version"],
                "NVKV_COMMIT": machine["nvkv_commit"], "NVKV_BIN": machine["nvkv_bin"],
                "REPEATS": parameters["repeats"], "SECONDS": parameters["seconds_per_run"],
                "SIZE_BYTES": parameters["size_bytes"], "GNUPLOT_TERMINAL": plot.split()[2],
                "FILE_SIDES": "5" if "etcd_wal" in summary["sides"] else "0", "SPDK": spdk["dir"],
                "SPDK_TRID": spdk["transport_id"], "SPDK_COMMIT": spdk["version"],
                "SPDK_MIB": re.search(r"two (\d+) MiB", spdk["target"]).group(1),
            }
            run_module("device", ["report", run.directory], {f"META_{k}": str(v) for k, v in meta.items()})
            for name in ("report.md", "summary.json", "plot.gp"):
                self.assertEqual(run.written(name), read(run.kept, name), name)
        finally:
            run.close()

    def test_spdk_perf_output_becomes_the_json_the_report_reads(self):
        run = KeptRun("device-spdk-20261203-1520", ["raw"])
        try:
            text = os.path.join(run.directory, "raw", "spdk_perf_qd1-r1.txt")
            written = os.path.join(run.directory, "perf.json")
            run_module("device", ["spdk-perf", text, written])
            self.assertEqual(json.loads(read(written)), json.loads(read(run.kept, "raw", "spdk_perf_qd1-r1.json")))
        finally:
            run.close()

    def test_a_bench_output_without_the_fields_is_refused_naming_them(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as output:
            output.write('{"ops": 1}')
            output.flush()
            env = dict(os.environ, PYTHONPATH=BENCH)
            done = subprocess.run([sys.executable, "-m", "report.device", "check-nvkv", output.name], env=env,
                                  capture_output=True, text=True, check=False)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("lacks seconds, ops_per_sec, p50_us", done.stderr)


class PutReport(unittest.TestCase):
    def test_a_kept_three_member_run_is_written_again(self):
        run = KeptRun("put-cluster3-20261124-1526", ["raw", "status.txt"])
        try:
            summary = run.summary
            printed = run_module("put", [run.directory, str(summary["repeats"]), str(summary["seconds"]),
                                         summary["ready"], summary["commit"], "", "three nodes", "1"])
            kept = read(run.kept, "report.md")
            self.assertEqual(without(run.written("report.md"), "- machine:"), without(kept, "- machine:"))
            self.assertEqual(printed, run.written("report.md"))
            self.assertEqual(json.loads(run.written("summary.json")), summary)
        finally:
            run.close()


class StoreReport(unittest.TestCase):
    def test_a_kept_run_is_written_again(self):
        run = KeptRun("store-20261124-1542", ["raw", "status.txt"])
        try:
            summary = run.summary
            run_module("store", [run.directory, str(summary["repeats"]), str(summary["parameters"]["seconds"]),
                                 summary["ready"], summary["commit"], summary["command"],
                                 ",".join(summary["workloads"])])
            kept = read(run.kept, "report.md")
            self.assertEqual(without(run.written("report.md"), "- machine:"), without(kept, "- machine:"))
            self.assertEqual(json.loads(run.written("summary.json")), summary)
        finally:
            run.close()


class CompareEtcdReport(unittest.TestCase):
    def test_a_kept_run_gives_the_same_goals_tables_and_charts(self):
        # A --quick run on a loaded machine, kept for its shape (server CPU,
        # the floor, the budget), not its figures.
        name = "compare-etcd-quick"
        inputs = [item for item in os.listdir(os.path.join(FIXTURES, name))
                  if item not in ("report.md", "summary.json", "plot.gp", "latency.png", "throughput.png")]
        run = KeptRun(name, inputs, FIXTURES)
        try:
            summary = run.summary
            sizes = ",".join(sorted(summary["results"]))
            parameters = summary["parameters"]
            run_module("compare_etcd", [
                run.directory, summary["command"], str(parameters["seconds"]), str(parameters["repeats"]),
                str(parameters["key_space"]), str(parameters["watchers"]), sizes, summary["versions"]["nvkv"],
                summary["versions"]["nvkv_commit"], summary["machine"]["load_average_start"], tempfile.gettempdir()])
            written = json.loads(run.written("summary.json"))
            for part in ("goals", "results", "parameters", "versions", "durability"):
                self.assertEqual(written[part], summary[part], part)
            tail = "## Goals"
            self.assertEqual(run.written("report.md").split(tail, 1)[1], read(run.kept, "report.md").split(tail, 1)[1])
        finally:
            run.close()


class Stats(unittest.TestCase):
    def test_medians_over_repeats(self):
        runs = [{"ops": 3, "p50": 1.0, "ok": True}, {"ops": 1, "p50": 5.0, "ok": True}, {"ops": 2, "p50": 2.0, "ok": False}]
        self.assertEqual(stats.medians(runs), {"ops": 2, "p50": 2.0})
        self.assertEqual(stats.medians(runs, ("ops",)), {"ops": 2})
        self.assertEqual(stats.median_of(runs, lambda run: run["ops"] * 10), 20)


if __name__ == "__main__":
    unittest.main()
