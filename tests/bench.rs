//! `nvkv bench put|range|txn|mixed|watch` against a real `nvkv serve`: each
//! workload's JSON report, what it left in the store, --total and --rate,
//! and bad flags refused by name.

mod common;

use common::*;

/// Runs `nvkv bench ARGS --json` against `port` and returns its report.
fn bench(port: u16, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let output = client(port, &all).unwrap_or_else(|stderr| panic!("nvkv {all:?} failed: {stderr}"));
    serde_json::from_str(&output).unwrap_or_else(|error| panic!("one JSON object, not {output:?}: {error}"))
}

/// What every workload's report must hold: the ops asked for, no errors,
/// positive and ordered latencies, and the parameters as given.
fn assert_common(report: &serde_json::Value, workload: &str, ops: u64, clients: u64, key_space: u64) {
    assert_eq!(report["workload"], workload, "{report}");
    assert_eq!(report["ops"], ops, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!((&report["clients"], &report["connections"]), (&clients.into(), &2.into()), "{report}");
    assert_eq!((&report["key_bytes"], &report["value_bytes"]), (&8.into(), &64.into()), "{report}");
    assert_eq!(report["key_space"], key_space, "{report}");
    assert_eq!(report["target"], "nvkv", "{report}");
    assert_eq!(report["endpoints"].as_array().map(Vec::len), Some(1), "{report}");
    assert_ordered(report, "overall");
    for field in ["seconds", "ops_per_sec", "mean_us"] {
        assert!(report[field].as_f64().is_some_and(|value| value > 0.0), "{field} in {report}");
    }
}

/// p50 <= p99 <= p99.9 <= max, all above zero.
fn assert_ordered(latencies: &serde_json::Value, what: &str) {
    let value =
        |field: &str| latencies[field].as_f64().unwrap_or_else(|| panic!("{what}: {field} in {latencies}"));
    let percentiles = [value("p50_us"), value("p99_us"), value("p999_us"), value("max_us")];
    assert!(percentiles[0] > 0.0, "{what}: {latencies}");
    assert!(
        percentiles.windows(2).all(|pair| pair[0] <= pair[1]),
        "{what}: percentiles out of order in {latencies}"
    );
}

/// The store's keys under "" as (key, version) pairs.
fn versions(port: u16) -> Vec<(String, u64)> {
    let text = client(port, &["get", "", "--prefix", "-w", "json"]).expect("get every key");
    let answer: serde_json::Value = serde_json::from_str(&text).expect("json");
    answer["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| (kv["key"].as_str().expect("key").to_string(), kv["version"].as_u64().expect("version")))
        .collect()
}

/// The store holds `keys` keys, each put once (by a preload; gets write nothing).
fn assert_each_key_written_once(port: u16, keys: usize) {
    let versions = versions(port);
    assert_eq!(versions.len(), keys, "{versions:?}");
    assert!(versions.iter().all(|(_, version)| *version == 1), "{versions:?}");
}

fn stop(mut daemon: Daemon) {
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

const SHAPE: [&str; 6] = ["--conns", "2", "--key-bytes", "8", "--value-bytes", "64"];

#[test]
fn bench_put_stops_at_its_total_and_keeps_to_a_rate() {
    let setup = Setup::new("");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());

    eprintln!("phase: --total 400 makes exactly 400 puts, and they land in the store");
    let report = bench(
        port,
        &[&["put", "--clients", "8", "--key-space", "50", "--total", "400"][..], &SHAPE].concat(),
    );
    assert_common(&report, "put", 400, 8, 50);
    assert_eq!((&report["total"], &report["rate"]), (&400.into(), &0.into()), "{report}");
    let versions = versions(port);
    assert_eq!(versions.len(), 50, "8-byte keys 00000000..00000049 all written");
    assert_eq!(versions.iter().map(|(_, version)| version).sum::<u64>(), 400, "400 puts, no more, no fewer");

    eprintln!("phase: --rate 100 for 2 s sends at most 100 x 2 + 1 puts");
    let report =
        bench(port, &[&["put", "--clients", "4", "--rate", "100", "--seconds", "2"][..], &SHAPE].concat());
    let ops = report["ops"].as_u64().expect("ops");
    assert!((1..=201).contains(&ops), "{ops} puts in 2 s at --rate 100: {report}");
    assert_eq!((&report["rate"], &report["total"]), (&100.into(), &serde_json::Value::Null), "{report}");
    assert_ordered(&report, "rated puts");
    stop(daemon);
}

#[test]
fn bench_range_preloads_the_key_space_then_gets() {
    let setup = Setup::new("");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());

    eprintln!("phase: linearizable single-key gets after a preload of 100 keys");
    let report = bench(
        port,
        &[&["range", "--clients", "4", "--key-space", "100", "--total", "300"][..], &SHAPE].concat(),
    );
    assert_common(&report, "range", 300, 4, 100);
    assert_eq!(
        (&report["preloaded_keys"], &report["consistency"], &report["limit"]),
        (&100.into(), &"l".into(), &1.into())
    );
    assert_each_key_written_once(port, 100);

    eprintln!("phase: serializable gets of 5 keys each, without a preload");
    let report = bench(
        port,
        &[
            &[
                "range",
                "--clients",
                "4",
                "--key-space",
                "100",
                "--total",
                "50",
                "--consistency",
                "s",
                "--limit",
                "5",
                "--no-preload",
            ][..],
            &SHAPE,
        ]
        .concat(),
    );
    assert_common(&report, "range", 50, 4, 100);
    assert_eq!(
        (&report["preloaded_keys"], &report["consistency"], &report["limit"]),
        (&0.into(), &"s".into(), &5.into())
    );
    assert_each_key_written_once(port, 100);
    stop(daemon);
}

#[test]
fn bench_txn_counts_swaps_and_conflicts_and_only_swaps_write() {
    let setup = Setup::new("");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let report =
        bench(port, &[&["txn", "--clients", "8", "--key-space", "4", "--total", "400"][..], &SHAPE].concat());
    assert_common(&report, "txn", 400, 8, 4);
    let count = |field: &str| report[field].as_u64().unwrap_or_else(|| panic!("{field} in {report}"));
    let (succeeded, failed) = (count("txn_succeeded"), count("txn_failed"));
    assert_eq!(succeeded + failed, 400, "a swap succeeds or conflicts: {report}");
    assert!(succeeded > 0, "{report}");
    assert!((1..=32).contains(&count("txn_revision_reads")), "a key's revision is read until seen: {report}");
    let versions = versions(port);
    assert_eq!(versions.len(), 4, "{versions:?}");
    assert_eq!(
        versions.iter().map(|(_, version)| version).sum::<u64>(),
        succeeded,
        "every successful swap wrote once and no conflict wrote: {report}"
    );
    stop(daemon);
}

#[test]
fn bench_mixed_reports_gets_and_puts_apart() {
    let setup = Setup::new("");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let report = bench(
        port,
        &[
            &["mixed", "--clients", "4", "--key-space", "50", "--total", "400", "--read-ratio", "0.5"][..],
            &SHAPE,
        ]
        .concat(),
    );
    assert_common(&report, "mixed", 400, 4, 50);
    assert_eq!(
        (&report["read_ratio"], &report["consistency"], &report["preloaded_keys"]),
        (&0.5.into(), &"l".into(), &50.into())
    );
    let (gets, puts) = (
        report["range"]["ops"].as_u64().expect("range.ops"),
        report["put"]["ops"].as_u64().expect("put.ops"),
    );
    assert_eq!(gets + puts, 400, "{report}");
    assert!(gets > 0 && puts > 0, "both kinds ran at a read ratio of 0.5: {report}");
    assert_ordered(&report["range"], "gets");
    assert_ordered(&report["put"], "puts");
    let versions = versions(port);
    assert_eq!(
        versions.iter().map(|(_, version)| version).sum::<u64>(),
        50 + puts,
        "the preload and the puts wrote"
    );

    eprintln!("phase: without --json the table shows gets and puts on their own lines");
    let text = client(port, &["bench", "mixed", "--key-space", "50", "--total", "20", "--no-preload"])
        .expect("bench mixed");
    for line in ["nvkv bench mixed: 1 clients over 1 connections", "ops          20 in", "gets ", "puts "] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    stop(daemon);
}

#[test]
fn bad_bench_flags_are_refused_naming_the_value() {
    // Nothing listens on port 9: every refusal comes before connecting.
    for (args, named) in [
        (&["put", "--clients", "0"][..], "--clients 0"),
        (&["put", "--total", "0"], "--total 0"),
        (&["put", "--rate", "20000000"], "--rate 20000000"),
        (&["put", "--key-bytes", "2", "--key-space", "1000"], "--key-space 1000"),
        (&["put", "--target", "redis://localhost:6379"], "redis"),
        (&["put", "--target", "nvkv://localhost"], "\"localhost\" is not HOST:PORT"),
        (&["range", "--limit", "0"], "--limit 0"),
        (&["range", "--consistency", "x"], "'x'"),
        (&["mixed", "--read-ratio", "1.5"], "--read-ratio 1.5"),
        (&["txn", "--conns", "2"], "--conns 2"),
    ] {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        let stderr = client(9, &all).expect_err("refused");
        assert!(stderr.contains(named), "nvkv {all:?} should name {named:?}: {stderr}");
    }
}

/// The events a watch report says arrived, checked against what a user
/// would count: every put of a key reaches each of its watchers once.
fn assert_events(report: &serde_json::Value, events: u64, watchers: u64) {
    assert_eq!((&report["events"], &report["watchers"]), (&events.into(), &watchers.into()), "{report}");
    for field in ["events_missing", "events_duplicated", "events_unexpected"] {
        assert_eq!(report[field], 0, "{field} in {report}");
    }
    assert!(report["events_per_sec"].as_f64().is_some_and(|rate| rate > 0.0), "{report}");
    let put = |field: &str| report[field].as_f64().unwrap_or_else(|| panic!("{field} in {report}"));
    assert!(0.0 < put("put_p50_us") && put("put_p50_us") <= put("put_p99_us"), "{report}");
}

#[test]
fn bench_watch_delivers_every_put_to_every_watcher_of_its_key_once() {
    let setup = Setup::new("");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());

    eprintln!("phase: 6 watchers on 3 keys, two per key: 200 puts make 400 events");
    let report = bench(
        port,
        &[&["watch", "--watchers", "6", "--clients", "4", "--key-space", "3", "--total", "200"][..], &SHAPE]
            .concat(),
    );
    assert_common(&report, "watch", 200, 4, 3);
    assert_events(&report, 400, 6);
    let written = versions(port);
    assert_eq!(written.len(), 3, "{written:?}");
    assert_eq!(written.iter().map(|(_, version)| version).sum::<u64>(), 200, "ops are the puts");

    eprintln!("phase: 5 watchers on 2 keys (3 on the first, 2 on the second), timed and rated");
    let report = bench(
        port,
        &[
            &[
                "watch",
                "--watchers",
                "5",
                "--clients",
                "2",
                "--key-space",
                "2",
                "--seconds",
                "1",
                "--rate",
                "200",
            ][..],
            &SHAPE,
        ]
        .concat(),
    );
    let after = versions(port);
    let puts = |key: &str| {
        let now = after.iter().find(|(name, _)| name == key).map_or(0, |(_, version)| *version);
        let earlier = written.iter().find(|(name, _)| name == key).map_or(0, |(_, version)| *version);
        now - earlier
    };
    let (first, second) = (puts("00000000"), puts("00000001"));
    assert_eq!(first + second, report["ops"].as_u64().expect("ops"), "{report}");
    assert!((1..=201).contains(&(first + second)), "at most 200 x 1 + 1 puts: {report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_ordered(&report, "events");
    assert_events(&report, 3 * first + 2 * second, 5);

    eprintln!("phase: without --json the table shows the events and the puts' own latency");
    let text = client(port, &["bench", "watch", "--watchers", "2", "--key-space", "1", "--total", "10"])
        .expect("bench watch");
    for line in [
        "nvkv bench watch: 1 clients over 1 connections",
        "ops          10 in",
        "events       20 at 2 watchers",
        "0 missing",
        "puts us ",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    stop(daemon);
}

#[test]
fn bad_bench_watch_flags_are_refused_naming_the_value() {
    // Nothing listens on port 9: every refusal comes before connecting.
    for (args, named) in [
        (&["--watchers", "0"][..], "--watchers 0"),
        (&["--watchers", "10001"], "--watchers 10001"),
        (&["--key-space", "101"], "--key-space 101 is more than --watchers 100"),
        (&["--key-space", "1", "--value-bytes", "8"], "--value-bytes 8"),
        (&["--watchers", "x"], "'x'"),
    ] {
        let mut all = vec!["bench", "watch"];
        all.extend_from_slice(args);
        let stderr = client(9, &all).expect_err("refused");
        assert!(stderr.contains(named), "nvkv {all:?} should name {named:?}: {stderr}");
    }
}
