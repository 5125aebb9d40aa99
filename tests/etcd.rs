//! `nvkv bench --target etcd://...` against a real etcd (Debian's
//! etcd-server, /usr/bin/etcd, which scripts/setup.sh installs): put, range
//! (linearizable and serializable), txn and watch each run through etcd's
//! gRPC API with the workload loop nvkv's driver runs, and their JSON
//! reports count what was asked; a wrong address is refused by name.

mod common;

use common::cluster::free_ports;
use common::etcd::Etcd;
use common::*;

/// Runs `nvkv bench WORKLOAD --target TARGET ARGS --json` and returns its report.
fn bench(workload: &str, target: &str, args: &[&str]) -> serde_json::Value {
    let output = bench_output(workload, target, args)
        .unwrap_or_else(|stderr| panic!("nvkv bench {workload} --target {target} {args:?} failed: {stderr}"));
    serde_json::from_str(&output).unwrap_or_else(|error| panic!("one JSON object, not {output:?}: {error}"))
}

fn bench_output(workload: &str, target: &str, args: &[&str]) -> Result<String, String> {
    let port = target.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("etcd://HOST:PORT");
    let mut all = vec!["bench", workload, "--target", target, "--json"];
    all.extend_from_slice(args);
    // --target names the store; the --endpoints `client` gives point at it too.
    client(port, &all)
}

/// What every report must hold: the store and workload, the ops asked for,
/// no errors, and ordered latencies above zero.
fn assert_done(report: &serde_json::Value, workload: &str, ops: u64) {
    assert_eq!((&report["target"], &report["workload"]), (&"etcd".into(), &workload.into()), "{report}");
    assert_eq!((&report["ops"], &report["errors"]), (&ops.into(), &0.into()), "{report}");
    assert_eq!((&report["clients"], &report["connections"]), (&8.into(), &2.into()), "{report}");
    let value = |field: &str| report[field].as_f64().unwrap_or_else(|| panic!("{field} in {report}"));
    let percentiles = [value("p50_us"), value("p99_us"), value("p999_us"), value("max_us")];
    assert!(percentiles[0] > 0.0, "{report}");
    assert!(percentiles.windows(2).all(|pair| pair[0] <= pair[1]), "percentiles out of order in {report}");
    assert!(value("ops_per_sec") > 0.0, "{report}");
}

const SHAPE: [&str; 8] = ["--clients", "8", "--conns", "2", "--key-bytes", "8", "--value-bytes", "64"];

#[test]
fn every_workload_runs_against_etcd_and_counts_what_it_asked_for() {
    let etcd = Etcd::start();
    let target = etcd.target();
    let with = |extra: &[&'static str]| -> Vec<&'static str> { SHAPE.iter().chain(extra).copied().collect() };

    eprintln!("phase: --total 300 puts, every one answered by etcd");
    let report = bench("put", &target, &with(&["--key-space", "1000", "--total", "300"]));
    assert_done(&report, "put", 300);

    for consistency in ["l", "s"] {
        eprintln!("phase: range --consistency {consistency} preloads 200 keys, then gets 400 of them");
        let report = bench(
            "range",
            &target,
            &with(&["--key-space", "200", "--total", "400", "--consistency", consistency]),
        );
        assert_done(&report, "range", 400);
        assert_eq!((&report["consistency"], &report["preloaded_keys"]), (&consistency.into(), &200.into()));
    }

    eprintln!("phase: txn swaps on 4 keys: each succeeds or conflicts, none fails");
    let report = bench("txn", &target, &with(&["--key-space", "4", "--total", "400"]));
    assert_done(&report, "txn", 400);
    let (succeeded, conflicted) = (report["txn_succeeded"].as_u64(), report["txn_failed"].as_u64());
    assert_eq!(succeeded.zip(conflicted).map(|(won, lost)| won + lost), Some(400), "{report}");
    assert!(succeeded.is_some_and(|won| won > 0), "a remembered revision wins: {report}");
    assert!(report["txn_revision_reads"].as_u64().is_some_and(|reads| (1..=16).contains(&reads)), "{report}");

    eprintln!("phase: 20 watchers of 10 keys receive each of 200 puts twice, none missing or repeated");
    let report = bench("watch", &target, &with(&["--watchers", "20", "--key-space", "10", "--total", "200"]));
    assert_done(&report, "watch", 200);
    assert_eq!(report["events"], 400, "{report}");
    for field in ["events_missing", "events_duplicated", "events_unexpected"] {
        assert_eq!(report[field], 0, "{field} in {report}");
    }
}

#[test]
fn an_address_where_no_etcd_serves_is_named() {
    let port = free_ports(1);
    let target = format!("etcd://127.0.0.1:{port}");
    let refusal = bench_output("put", &target, &["--total", "1"]).expect_err("nothing serves there");
    assert!(refusal.contains(&format!("cannot reach etcd at 127.0.0.1:{port}")), "{refusal}");
}
