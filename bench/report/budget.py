"""The latency budget of a put at one client, next to its floor: the table
bench/latency-budget.sh prints and bench/compare-etcd.sh's report carries.

`nvkv bench put --json` reports each hop of the run's writes (`budget`: the
client's two hops, estimated as halves of the round trip minus the time the
node said the put spent in it, and the servers' hops from their histograms
before and after the run); the floor is the device's append p50 (`nvkv bench
device`) and a round trip of the same KV stream doing no work (`nvkv bench
ping`), measured in the same run. Standard library only.
"""

# Hops that run beside the leader's own append: the replication branch.
REPLICATION = ("append entries sent", "to follower", "follower append durable", "follower ack received")


def table(put, device=None, ping=None):
    """Markdown lines: the put's p50 and p99, each hop's mean and percentiles
    over the run, then the floor, and what the put's p50 spends above it."""
    lines = ["| Hop | mean µs | p50 µs | p99 µs | measured |", "|---|---:|---:|---:|---:|"]
    for hop in put.get("budget", []):
        if hop["count"] == 0:
            continue
        name = hop["name"]
        if name in REPLICATION:
            name = f"↳ {name} (beside the leader's append)"
        lines.append(f"| {name} | {hop['mean_us']:.1f} | {hop['p50_us']:.1f} | {hop['p99_us']:.1f} | {hop['count']:,} |")
    lines.append(f"| **put, client send to client receive** | {put['mean_us']:.1f} | **{put['p50_us']:.1f}** | "
                 f"{put['p99_us']:.1f} | {put['ops']:,} |")
    if device:
        lines.append(f"| floor: device append (`nvkv bench device`, 1 appender, {device.get('entry_bytes', '?')} B) | "
                     f"{device['mean_us']:.1f} | {device['p50_us']:.1f} | {device['p99_us']:.1f} | {device['ops']:,} |")
    if ping:
        lines.append(f"| floor: KV stream round trip doing no work (`nvkv bench ping`) | {ping['mean_us']:.1f} | "
                     f"{ping['p50_us']:.1f} | {ping['p99_us']:.1f} | {ping['ops']:,} |")
    if device:
        above = put["p50_us"] - device["p50_us"]
        lines += ["", f"Put p50 {put['p50_us']:.1f} µs = device append p50 {device['p50_us']:.1f} µs "
                      f"+ {above:.1f} µs above it."]
    return lines


def cpu_line(put):
    """One line on what the run cost in CPU, server and generator."""
    server = put.get("server_cpu_us_per_op")
    text = f"server CPU {server:.1f} µs per put" if server is not None else "server CPU not reported"
    return f"{text}; load generator {put['generator_cpu_us_per_op']:.1f} µs per put ({put['threads']} thread(s))"
