//! Leases on a real node: two shards with two groups each, so a lease's keys
//! sit in groups on both shards. Grant, attach, time to live, keep-alive,
//! expiry, revoke and restarts, all through the `nvkv lease` CLI.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LAYOUT: &str = "[reactor]\nshards = 2\n\n[log]\ngroups_per_shard = 2";
const GROUPS: u32 = 4;

fn run(port: u16, args: &[&str]) -> String {
    client(port, args).unwrap_or_else(|error| panic!("nvkv {args:?} failed: {error}"))
}

fn json(port: u16, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.extend(["-w", "json"]);
    let output = run(port, &args);
    serde_json::from_str(&output).unwrap_or_else(|error| panic!("nvkv {args:?} printed {output:?}: {error}"))
}

/// Grants a lease of `ttl` seconds and returns its id as the CLI prints it.
fn grant(port: u16, ttl: u64) -> String {
    let line = run(port, &["lease", "grant", &ttl.to_string()]);
    let id = line.split_whitespace().nth(1).expect("an id after 'lease'").to_string();
    assert_eq!(line, format!("lease {id} granted with TTL({ttl}s)\n"));
    id
}

/// One key in each group (prefixes `/<name>/<n>/`), each put with `lease`;
/// the put's answer must name the group the partition function gives.
fn attach_keys(port: u16, name: &str, lease: &str) -> Vec<String> {
    let partitioner = nvkv::kv::partition::Partitioner::new(GROUPS, 2).expect("partitioner");
    let mut keys: Vec<Option<String>> = vec![None; GROUPS as usize];
    for index in 0.. {
        let key = format!("/{name}/{index}/key");
        let group = partitioner.group_of(key.as_bytes());
        if keys[group as usize].is_none() {
            let answer = json(port, &["put", &key, "v", "--lease", lease]);
            assert_eq!(answer["header"]["group"], group, "{answer}");
            keys[group as usize] = Some(key);
        }
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    let mut keys: Vec<String> = keys.into_iter().flatten().collect();
    keys.sort();
    keys
}

fn present(port: u16, keys: &[String]) -> Vec<String> {
    keys.iter().filter(|key| !run(port, &["get", key]).is_empty()).cloned().collect()
}

/// Waits until none of `keys` is there: the lease holding them expired.
fn wait_until_gone(port: u16, keys: &[String]) {
    let deadline = Instant::now() + DEADLINE;
    while !present(port, keys).is_empty() {
        assert!(Instant::now() < deadline, "the keys of an expired lease are still there");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn remaining(port: u16, id: &str) -> i64 {
    json(port, &["lease", "timetolive", id])["ttl"].as_i64().expect("ttl")
}

#[test]
fn leases_hold_keys_of_every_group_and_a_revoke_deletes_them_at_once() {
    let setup = Setup::new(LAYOUT);
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());

    eprintln!("a lease holds keys of all four groups, on both shards");
    let id = grant(port, 60);
    let keys = attach_keys(port, "pods", &id);
    let shown = run(port, &["lease", "timetolive", &id, "--keys"]);
    assert!(shown.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")), "{shown}");
    assert!(shown.ends_with(&format!("s), attached keys([{}])\n", keys.join(" "))), "{shown}");
    let ttl = json(port, &["lease", "ttl", &id, "--keys"]);
    assert_eq!(ttl["granted_ttl"], 60, "{ttl}");
    assert!((58..=60).contains(&ttl["ttl"].as_i64().expect("ttl")), "{ttl}");
    assert_eq!(ttl["keys"], serde_json::json!(keys), "{ttl}");

    eprintln!(
        "ids are picked in order and one given explicitly (hex) is taken as is; a taken one is refused"
    );
    let explicit = json(port, &["lease", "grant", "30", "--id", "1f"]);
    assert_eq!((explicit["id"].as_i64(), explicit["ttl"].as_i64()), (Some(31), Some(30)), "{explicit}");
    let refusal = client(port, &["lease", "grant", "30", "--id", "0x1f"]).expect_err("taken");
    assert!(refusal.contains("LeaseExists: lease 1f already exists"), "{refusal}");
    let list = json(port, &["lease", "list"]);
    let ids: Vec<i64> = list["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(|lease| lease["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, vec![i64::from_str_radix(&id, 16).expect("hex"), 31], "{list}");
    assert_eq!(run(port, &["lease", "list"]), format!("found 2 leases\n{id}\n1f\n"));

    eprintln!("a put naming a lease that does not exist is refused by type, and the node keeps serving");
    let refusal = client(port, &["put", "/pods/x", "v", "--lease", "abc"]).expect_err("unknown lease");
    assert!(refusal.contains("LeaseNotFound: lease abc does not exist"), "{refusal}");
    let refusal = client(port, &["put", "/pods/x", "v", "--lease", "xyz"]).expect_err("not hex");
    assert!(refusal.contains("\"xyz\" is not a positive hexadecimal number"), "{refusal}");
    assert_eq!(run(port, &["put", "/pods/x", "v"]), "OK\n");

    eprintln!("a revoke deletes every attached key in every group at once");
    assert_eq!(
        run(port, &["lease", "revoke", &id]),
        format!("lease {id} revoked (4 attached keys deleted)\n")
    );
    assert_eq!(present(port, &keys), Vec::<String>::new());
    assert_eq!(run(port, &["get", "/pods/x"]), "/pods/x\nv\n", "a key without the lease stays");
    let refusal = client(port, &["lease", "timetolive", &id]).expect_err("revoked");
    assert!(refusal.contains(&format!("LeaseNotFound: lease {id} does not exist")), "{refusal}");
    let refusal = client(port, &["lease", "revoke", &id]).expect_err("revoked twice");
    assert!(refusal.contains("LeaseNotFound"), "{refusal}");
    assert_eq!(run(port, &["lease", "list"]), "found 1 leases\n1f\n");

    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn keep_alive_holds_a_lease_past_its_ttl_while_an_unrenewed_one_expires_in_every_group() {
    let setup = Setup::new(LAYOUT);
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());

    eprintln!("two leases of 3 s, each holding a key in every group; one is kept alive");
    let kept = grant(port, 3);
    let dropped = grant(port, 3);
    let kept_keys = attach_keys(port, "kept", &kept);
    let dropped_keys = attach_keys(port, "dropped", &dropped);
    let mut keep_alive = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["--endpoints", &format!("127.0.0.1:{port}"), "lease", "keep-alive", &kept])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keep-alive runs");
    let stdout = keep_alive.stdout.take().expect("stdout");
    let (sender, renewals) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });

    eprintln!("the unrenewed lease expires: its keys go in every group, the kept one's stay");
    wait_until_gone(port, &dropped_keys);
    let refusal = client(port, &["lease", "ttl", &dropped]).expect_err("expired");
    assert!(refusal.contains("LeaseNotFound"), "{refusal}");
    let refusal = client(port, &["lease", "keep-alive", &dropped, "--once"]).expect_err("expired");
    assert!(refusal.contains("LeaseNotFound"), "{refusal}");

    eprintln!("past twice its TTL, the kept lease and its keys are all there");
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(present(port, &kept_keys), kept_keys);
    assert!(remaining(port, &kept) > 0);
    assert_eq!(keep_alive.try_wait().expect("try_wait"), None, "keep-alive runs until stopped");
    let lines: Vec<String> = renewals.try_iter().collect();
    assert!(lines.len() >= 3, "a renewal every TTL/3: {lines:?}");
    assert!(lines.iter().all(|line| *line == format!("lease {kept} keepalived with TTL(3)")), "{lines:?}");
    let once = json(port, &["lease", "keep-alive", &kept, "--once"]);
    assert_eq!(once["ttl"], 3, "{once}");

    eprintln!("once keep-alive stops, the kept lease expires too");
    keep_alive.kill().expect("stop keep-alive");
    keep_alive.wait().expect("reap keep-alive");
    wait_until_gone(port, &kept_keys);
    assert_eq!(run(port, &["lease", "list"]), "found 0 leases\n");

    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("lease {dropped} expired: revoked")), "{stderr}");
}

#[test]
fn leases_survive_a_restart_and_a_kill_and_their_ttl_starts_again() {
    let setup = Setup::new(LAYOUT);
    let mut daemon = Daemon::start(&setup.config);
    let mut port = ready_port(&daemon.wait_ready());
    let id = grant(port, 20);
    let keys = attach_keys(port, "jobs", &id);

    for signal in [libc::SIGTERM, libc::SIGKILL] {
        eprintln!("the lease runs down for 4 s, then the node stops on signal {signal}");
        std::thread::sleep(Duration::from_secs(4));
        assert!(remaining(port, &id) <= 16, "4 s of a 20 s lease have passed");
        daemon.signal(signal);
        daemon.wait_exit();

        eprintln!("after the restart the lease and its keys are there, with a full TTL again");
        daemon = Daemon::start(&setup.config);
        port = ready_port(&daemon.wait_ready());
        let ttl = json(port, &["lease", "timetolive", &id, "--keys"]);
        assert_eq!(ttl["granted_ttl"], 20, "{ttl}");
        assert!(ttl["ttl"].as_i64().expect("ttl") >= 17, "the new leader restarts the TTL: {ttl}");
        assert_eq!(ttl["keys"], serde_json::json!(keys), "{ttl}");
        assert_eq!(present(port, &keys), keys);
    }

    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn a_follower_renews_answers_and_lists_leases_through_each_group_leader() {
    use common::cluster::*;
    let directory = tempfile::tempdir().expect("tempdir");
    let members = cluster_configs(directory.path(), 2);
    let mut daemons: Vec<Daemon> = members.iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }
    let agreed = eventually("one leader per group, the same on every member", || {
        agreed_leaders(&members.iter().map(|member| leaders(member.client_port)).collect::<Vec<_>>())
    });
    // A member that follows group 0 (whose leader answers time-to-live and
    // listings) and perhaps group 1 too.
    let follower = members.iter().find(|member| member.id != agreed[0]).expect("two members follow");
    let port = follower.client_port;
    eprintln!("leaders by group: {agreed:?}; every lease call goes to member {} alone", follower.id);

    let kept = grant(port, 3);
    run(port, &["put", "/follower/kept", "v", "--lease", &kept]);
    let mut keep_alive = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["--endpoints", &format!("127.0.0.1:{port}"), "lease", "keep-alive", &kept])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keep-alive runs");

    eprintln!("past twice its TTL, renewed through the follower, the lease and its key are there");
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(keep_alive.try_wait().expect("try_wait"), None, "keep-alive runs until stopped");
    assert_eq!(run(port, &["get", "/follower/kept"]), "/follower/kept\nv\n");
    assert!(remaining(port, &kept) > 0);
    let listed = json(port, &["lease", "list"]);
    assert_eq!(listed["leases"].as_array().map(Vec::len), Some(1), "{listed}");
    let once = json(port, &["lease", "keep-alive", &kept, "--once"]);
    assert_eq!(once["ttl"], 3, "{once}");

    eprintln!("once keep-alive stops, the lease expires at the leaders and the key goes everywhere");
    keep_alive.kill().expect("stop keep-alive");
    keep_alive.wait().expect("reap keep-alive");
    for member in &members {
        wait_until_gone(member.client_port, &["/follower/kept".to_string()]);
    }
    let refusal = client(port, &["lease", "timetolive", &kept]).expect_err("expired");
    assert!(refusal.contains("LeaseNotFound"), "{refusal}");
}
