//! A store that runs short of room, as a client meets it: the log ring of a
//! shard is shared by its groups and only a snapshot and a purge give its
//! space back, and a snapshot needs room in the shard's snapshot area.
//! Large values on one key used to fill the ring before any group was due a
//! snapshot; the records that would have freed space then queued behind the
//! entries waiting for it, and the shard's groups stopped taking writes for
//! good, across restarts. Now snapshots follow the ring's bytes, and a store
//! that is really full raises a NOSPACE alarm that refuses only what adds
//! data, until deletes and compaction make room again.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Runs `nvkv bench put` with `args` (plus --json) and returns its report.
fn bench_put(port: u16, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench", "put", "--json", "--seconds", "600"];
    all.extend_from_slice(args);
    let output = client(port, &all).expect("bench put runs");
    serde_json::from_str(&output).expect("bench put prints one JSON object")
}

/// A config of `shards` shards with a namespace of `namespace` instead of
/// the 64 MiB the tests use, plus `extra`.
fn setup(namespace: &str, extra: &str) -> Setup {
    let setup = Setup::new(extra);
    let text = std::fs::read_to_string(&setup.config).expect("config");
    let text = text.replace("namespace_bytes = \"64MiB\"", &format!("namespace_bytes = \"{namespace}\""));
    std::fs::write(&setup.config, text).expect("config");
    setup
}

/// wal::ring::full through the real binary: eight clients put 100 KiB and
/// 1 MiB values to one key and to ten, several times the size of each
/// shard's ring, on the embedded default's layout (two shards of four
/// groups) over a 256 MiB namespace (96 MiB rings, 32 MiB snapshot areas).
/// Every put succeeds, the rings never fill, and a restart serves again.
#[test]
fn large_values_never_wedge_the_log_ring() {
    let setup = setup("256MiB", "[reactor]\nshards = 2");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    for (value_bytes, keys, total) in
        [(102_400, 1, 3000), (102_400, 10, 3000), (1 << 20, 1, 300), (1 << 20, 10, 300)]
    {
        eprintln!("{total} puts of {value_bytes}-byte values over {keys} keys, 8 clients on 2 connections");
        let report = bench_put(
            port,
            &[
                "--clients",
                "8",
                "--conns",
                "2",
                "--value-bytes",
                &value_bytes.to_string(),
                "--key-space",
                &keys.to_string(),
                "--total",
                &total.to_string(),
            ],
        );
        assert_eq!((report["ops"].as_u64(), report["errors"].as_u64()), (Some(total), Some(0)), "{report}");
    }
    let status = status_json(port);
    for shard in status[0]["shards"].as_array().expect("shards") {
        let (used, capacity) = (shard["log_used_bytes"].as_u64(), shard["log_capacity_bytes"].as_u64());
        assert!(used.zip(capacity).is_some_and(|(used, capacity)| used < capacity), "{shard}");
    }
    for group in status[0]["groups"].as_array().expect("groups") {
        assert_eq!(group["no_space"].as_bool(), Some(false), "{group}");
    }

    eprintln!("a restart serves again");
    daemon.signal(libc::SIGTERM);
    let (exit, stderr) = daemon.wait_exit();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("the shard must restart it"), "no group stopped: {stderr}");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    client(port, &["put", "/after/restart", "serving"]).expect("a write after the restart");
    assert_eq!(client(port, &["get", "/after/restart"]).expect("get"), "/after/restart\nserving\n");
    let report = bench_put(port, &["--value-bytes", "102400", "--key-space", "1", "--total", "500"]);
    assert_eq!((report["ops"].as_u64(), report["errors"].as_u64()), (Some(500), Some(0)), "{report}");
    daemon.signal(libc::SIGTERM);
    let (exit, stderr) = daemon.wait_exit();
    assert_eq!(exit.code(), Some(0), "{stderr}");
}

/// Runs Debian's etcdctl (scripts/setup.sh installs it) against `endpoint`:
/// its stdout, or its stderr when it fails.
fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("etcdctl runs (scripts/setup.sh installs Debian's etcd-client)");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The group's report in `nvkv status -w json`.
fn group_status(port: u16, group: u64) -> serde_json::Value {
    let status = status_json(port);
    status[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|report| report["group"].as_u64() == Some(group))
        .cloned()
        .expect("the group reports")
}

/// A store filled past its limit: one group on one shard of a 64 MiB
/// namespace (a 16 MiB snapshot area) whose leader may not compact on its
/// own, and 100 KiB values under ever new keys. Once the live keys no longer
/// fit the snapshot area, the group raises its NOSPACE alarm: puts are
/// refused with the typed error noSpace while deletes and compaction still
/// work; after them the alarm clears by itself and puts work again, with no
/// restart.
#[test]
fn a_store_filled_to_its_limit_refuses_puts_until_deletes_and_compaction_make_room() {
    fill_refuse_and_clear("compact_under_pressure_keep_revisions = 0", "out of space", 100..1000);
}

/// The same with a store quota of 2 MiB, well inside the snapshot area: the
/// quota raises the alarm within a second of the store passing 20 values of
/// 100 KiB, with its own message, and deletes and compaction clear it the
/// same way.
#[test]
fn a_store_filled_to_its_quota_refuses_puts_until_deletes_and_compaction_make_room() {
    fill_refuse_and_clear("quota_bytes = \"2MiB\"", "over its quota", 10..400);
}

/// One group on one shard with `store` added to its `[store]`, filled with
/// 100 KiB values until a put is refused with `reason` (after a number of
/// puts in `stored_range`), then emptied and compacted until it takes puts
/// again.
fn fill_refuse_and_clear(store: &str, reason: &str, stored_range: std::ops::Range<usize>) {
    let setup = Setup::new(&format!("[reactor]\nshards = 1\n[log]\ngroups_per_shard = 1\n[store]\n{store}"));
    let mut daemon = Daemon::start(&setup.config);
    let ready = daemon.wait_ready();
    let port = ready_port(&ready);
    let etcd = ready_etcd_endpoint(&ready);
    let value = "v".repeat(100 << 10);

    eprintln!("filling the store until it refuses");
    let mut stored = 0;
    let refusal = loop {
        assert!(stored < stored_range.end, "{stored} values of 100 KiB never filled the store ({store})");
        match client(port, &["put", &format!("/fill/{stored:04}"), &value]) {
            Ok(_) => stored += 1,
            Err(refusal) => break refusal,
        }
    };
    assert!(refusal.contains("NoSpace") && refusal.contains(reason), "{refusal}");
    assert!(refusal.contains("delete keys"), "the refusal says what to do: {refusal}");
    assert!(stored >= stored_range.start, "{stored} values of 100 KiB were taken before the alarm");
    assert_eq!(group_status(port, 0)["no_space"].as_bool(), Some(true));
    let again = client(port, &["put", "/fill/more", "small"]).expect_err("puts stay refused");
    assert!(again.contains("NoSpace"), "{again}");
    eprintln!("etcd's clients see etcd's alarm and error");
    let alarms = etcdctl(&etcd, &["alarm", "list"]).expect("alarm list");
    assert!(alarms.contains("alarm:NOSPACE"), "{alarms}");
    let refused = etcdctl(&etcd, &["put", "/fill/more", "small"]).expect_err("etcdctl put refused");
    assert!(refused.contains("database space exceeded"), "{refused}");

    eprintln!("deletes and compaction still work, and clear the alarm");
    assert_eq!(client(port, &["del", "/fill/", "--prefix"]).expect("delete"), format!("{stored}\n"));
    let revision = group_status(port, 0)["revision"].as_i64().expect("revision");
    client(port, &["compact", &revision.to_string(), "--group", "0"]).expect("compact");
    let deadline = Instant::now() + Duration::from_secs(30);
    while group_status(port, 0)["no_space"].as_bool() != Some(false) {
        assert!(Instant::now() < deadline, "the alarm never cleared: {}", group_status(port, 0));
        std::thread::sleep(Duration::from_millis(100));
    }
    client(port, &["put", "/fill/again", &value]).expect("puts work again, without a restart");
    assert_eq!(etcdctl(&etcd, &["alarm", "list"]).expect("alarm list"), "", "no alarm is left");
    assert_eq!(client(port, &["get", "/fill/", "--prefix", "--keys-only"]).expect("get"), "/fill/again\n");

    daemon.signal(libc::SIGTERM);
    let (exit, stderr) = daemon.wait_exit();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(stderr.contains("alarm NOSPACE"), "the node said it was out of space: {stderr}");
    assert!(stderr.contains("the NOSPACE alarm is cleared"), "and that it has space again: {stderr}");
    assert!(!stderr.contains("the shard must restart it"), "no group stopped: {stderr}");
}
