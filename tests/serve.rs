//! `nvkv serve` as an operator runs it: the real binary, a config in a temp
//! directory, signals, exit codes and what it prints.

mod common;

use common::*;
use std::io::Read;
use std::time::Duration;

#[test]
fn serve_prints_ready_and_stops_cleanly_on_sigterm() {
    let setup = Setup::new("");
    let mut daemon = Daemon::start(&setup.config);
    let ready = daemon.wait_ready();
    assert!(ready.starts_with("nvkv ready: member 1, "), "{ready}");
    assert!(ready.contains(" on cores ["), "{ready}");
    let namespace = setup.data_dir().join("namespace");
    assert!(ready.contains(&format!("namespace {} (", namespace.display())), "{ready}");
    assert!(ready.contains(", 67108864 bytes), durability fua, etcd 127.0.0.1:"), "{ready}");
    assert!(ready.contains(", client 127.0.0.1:"), "{ready}");
    let port: u16 =
        ready.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a port ends the ready line");
    assert_ne!(port, 0, "the ready line names the port the daemon bound");
    let lock = std::fs::read_to_string(setup.data_dir().join("LOCK")).expect("the LOCK file exists");
    assert_eq!(lock.trim(), daemon.pid().to_string(), "LOCK names the daemon");

    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop; stderr:\n{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(stderr.contains("nvkv stopped"), "{stderr}");
}

#[test]
fn a_second_serve_on_the_same_data_dir_is_refused_naming_the_first() {
    let setup = Setup::new("");
    let mut first = Daemon::start(&setup.config);
    first.wait_ready();

    let stderr = refused(&setup.config);
    let expected = format!(
        "data directory {} is in use by another nvkv (pid {})",
        setup.data_dir().display(),
        first.pid()
    );
    assert!(stderr.contains(&expected), "expected {expected:?} in:\n{stderr}");

    first.signal(libc::SIGTERM);
    let (status, stderr) = first.wait_exit();
    assert_eq!(status.code(), Some(0), "the first daemon is unharmed; stderr:\n{stderr}");

    let mut again = Daemon::start(&setup.config);
    again.wait_ready();
    again.signal(libc::SIGINT);
    let (status, stderr) = again.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "the directory is free once the first stopped; SIGINT stops too:\n{stderr}"
    );
}

#[test]
fn a_bad_config_value_is_refused_naming_key_and_value() {
    let setup = Setup::new("[reactor]\npoll_mode = \"spin\"");
    let stderr = refused(&setup.config);
    let line = stderr.lines().find(|line| line.starts_with("nvkv: ")).expect("one error line");
    assert!(line.contains("poll_mode = \"spin\""), "{line}");
    assert!(line.contains("expected \"busy\" or \"adaptive\""), "{line}");
    assert!(line.contains(&setup.config.display().to_string()), "the error names the file: {line}");
}

#[test]
fn an_unknown_key_is_refused_naming_it() {
    let setup = Setup::new("[reactor]\nthreads_per_core = 2");
    let stderr = refused(&setup.config);
    let line = stderr.lines().find(|line| line.starts_with("nvkv: ")).expect("one error line");
    assert!(line.contains("unknown config key reactor.threads_per_core"), "{line}");
}

#[test]
fn durability_none_warns_at_start() {
    let setup = Setup::new("[log]\ndurability = \"none\"");
    let mut daemon = Daemon::start(&setup.config);
    let ready = daemon.wait_ready();
    assert!(ready.contains("durability none"), "{ready}");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("DURABILITY IS OFF"), "the warning is loud: {stderr}");
}

/// The port at the end of a ready line.
#[test]
fn status_answers_over_cap_n_proto_with_every_shard() {
    let setup = Setup::new("[reactor]\nshards = 2");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    // Several connections land on different shards; each answers for all.
    for _ in 0..3 {
        let status = status_json(port);
        let node = &status[0];
        assert_eq!(node["member_id"], 1, "{status}");
        assert_eq!(node["durability"], "fua", "{status}");
        assert_eq!(node["backend"], "uring", "{status}");
        let shards = node["shards"].as_array().expect("shards");
        assert_eq!(shards.len(), 2, "{status}");
        assert_eq!(shards[1]["shard"], 1, "{status}");
        assert!(shards[0]["log_capacity_bytes"].as_u64().expect("capacity") > 0, "{status}");
    }
    // The stages above the log count the writes that went through them.
    for key in ["/a/1", "/b/1", "/c/1", "/d/1"] {
        client(port, &["put", key, "v"]).expect("put");
    }
    let status = status_json(port);
    let shards = status[0]["shards"].as_array().expect("shards");
    let sum = |field: &str| shards.iter().map(|shard| shard[field].as_u64().expect(field)).sum::<u64>();
    assert_eq!(sum("proposed_commands"), 4, "{status}");
    assert!((1..=4).contains(&sum("proposals")), "{status}");
    for field in ["raft_p50_us", "apply_p50_us", "end_to_end_p50_us", "device_write_p50_us"] {
        let busiest = shards.iter().map(|shard| shard[field].as_f64().expect(field)).fold(0.0, f64::max);
        assert!(busiest > 0.0, "{field} stays 0 after puts: {status}");
    }
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn garbage_and_oversized_messages_close_only_their_connection() {
    use std::io::Write;
    let setup = Setup::new("");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let closed_by_server = |bytes: &[u8]| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(bytes).expect("write");
        let mut buffer = [0u8; 64];
        // The server closes the connection: reads end with end of file or a
        // reset, never with the timeout.
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(error) => {
                    let timed_out =
                        matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
                    assert!(
                        !timed_out,
                        "the server kept the connection open after {} bad bytes",
                        bytes.len()
                    );
                    break;
                }
            }
        }
    };
    // Random bytes: a frame header naming 2^32 segments.
    closed_by_server(&[0xff; 64]);
    // A well-formed frame header announcing a 2 GiB segment, far past the
    // message limit (about twice store.request_bytes_max).
    let mut huge = Vec::new();
    huge.extend_from_slice(&0u32.to_le_bytes());
    huge.extend_from_slice(&0x0fff_ffffu32.to_le_bytes());
    huge.extend_from_slice(&[0u8; 56]);
    closed_by_server(&huge);
    // The node keeps serving everyone else.
    let status = status_json(port);
    assert_eq!(status[0]["member_id"], 1, "{status}");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn flags_override_the_config() {
    let setup = Setup::new("");
    let other_dir = setup.directory.path().join("elsewhere");
    let mut daemon = Daemon::start_with_args(
        &setup.config,
        &["--data-dir", other_dir.to_str().expect("utf-8"), "--listen", "127.0.0.1:0"],
    );
    let ready = daemon.wait_ready();
    assert!(ready.contains(&format!("namespace {} (", other_dir.join("namespace").display())), "{ready}");
    assert!(other_dir.join("LOCK").exists(), "the data directory comes from --data-dir");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// Runs an `nvkv` client command against `port`; returns stdout, or stderr
/// when it failed.
#[test]
fn put_get_and_del_through_raft_survive_a_restart_and_a_kill() {
    let setup = Setup::new("[reactor]\nshards = 2\n[log]\ngroups_per_shard = 3");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    eprintln!("phase: puts through the CLI land in their groups and read back");
    assert_eq!(client(port, &["put", "/registry/pods/a", "alpha"]).expect("put"), "OK\n");
    assert_eq!(client(port, &["put", "/registry/pods/b", "beta"]).expect("put"), "OK\n");
    for index in 0..20 {
        client(port, &["put", &format!("/keys/{index}"), &format!("value {index}")]).expect("put");
    }
    assert_eq!(client(port, &["get", "/registry/pods/a"]).expect("get"), "/registry/pods/a\nalpha\n");
    let prefix: serde_json::Value = serde_json::from_str(
        &client(port, &["get", "/registry/pods/", "--prefix", "-w", "json"]).expect("get"),
    )
    .expect("json");
    assert_eq!(prefix["count"], 2, "{prefix}");
    assert_eq!(prefix["kvs"][1]["value"], "beta", "{prefix}");
    assert_eq!(prefix["kvs"][1]["version"], 1, "{prefix}");
    // A prefix in one group is one group's answer; the whole key space spans groups.
    assert_eq!(client(port, &["get", "", "--prefix", "--count-only"]).expect("get all"), "22\n");

    eprintln!("phase: an oversize key is a typed refusal and the node keeps serving");
    let long_key = "k".repeat(2000);
    let refusal = client(port, &["put", &long_key, "v"]).expect_err("refused");
    assert!(refusal.contains("KeyTooLarge") && refusal.contains("2000 bytes"), "{refusal}");
    assert_eq!(client(port, &["get", "/keys/7"]).expect("still serving"), "/keys/7\nvalue 7\n");

    eprintln!("phase: SIGTERM, restart: every acknowledged write is there");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    assert_eq!(client(port, &["get", "", "--prefix", "--count-only"]).expect("get all"), "22\n");
    assert_eq!(client(port, &["del", "/registry/pods/", "--prefix"]).expect("del"), "2\n");

    eprintln!("phase: SIGKILL, restart: the delete and every key stay as acknowledged");
    daemon.signal(libc::SIGKILL);
    daemon.wait_exit();
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    assert_eq!(client(port, &["get", "", "--prefix", "--count-only"]).expect("get all"), "20\n");
    assert_eq!(client(port, &["get", "/keys/19"]).expect("get"), "/keys/19\nvalue 19\n");
    assert_eq!(client(port, &["get", "/registry/pods/a"]).expect("get"), "");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn txn_compares_and_swaps_refuses_spanning_groups_and_compact_forgets_history() {
    let setup = Setup::new("[reactor]\nshards = 2\n[log]\ngroups_per_shard = 4");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    client(port, &["put", "/registry/pods/a", "old"]).expect("put");

    eprintln!("phase: compare-and-swap: the first succeeds, the same again fails");
    let swap = "value(\"/registry/pods/a\") = \"old\"\n\nput /registry/pods/a new\nget /registry/pods/a\n\n\
                get /registry/pods/a\n";
    assert_eq!(txn(port, swap).expect("txn"), "SUCCESS\nOK\n/registry/pods/a\nnew\n");
    assert_eq!(txn(port, swap).expect("txn"), "FAILURE\n/registry/pods/a\nnew\n");

    eprintln!("phase: keys of two groups in one transaction are refused, nothing applied");
    let (mut first, mut second) = (None, None);
    for index in 0..64 {
        let key = format!("/spread{index}/x");
        let answer: serde_json::Value =
            serde_json::from_str(&client(port, &["put", &key, "v", "-w", "json"]).expect("put"))
                .expect("json");
        let group = answer["header"]["group"].as_u64().expect("group");
        match (&first, &second) {
            (None, _) => first = Some((key, group)),
            (Some((_, g)), None) if *g != group => second = Some((key, group)),
            _ => {}
        }
    }
    let ((key_a, _), (key_b, _)) = (first.expect("a key"), second.expect("keys in two groups"));
    let spanning = format!("\nput {key_a} changed\nput {key_b} changed\n\n");
    let refusal = txn(port, &spanning).expect_err("refused");
    assert!(refusal.contains("TxnSpansGroups"), "{refusal}");
    assert_eq!(client(port, &["get", &key_a]).expect("get"), format!("{key_a}\nv\n"), "nothing half applied");

    eprintln!("phase: compact, then a read at the old revision is refused as compacted");
    let before: serde_json::Value =
        serde_json::from_str(&client(port, &["get", "/registry/pods/a", "-w", "json"]).expect("get"))
            .expect("json");
    let group = before["header"]["group"].as_u64().expect("group").to_string();
    let revision = before["header"]["revision"].as_i64().expect("revision");
    client(port, &["put", "/registry/pods/a", "newer"]).expect("put");
    client(port, &["compact", &(revision + 1).to_string(), "--group", &group]).expect("compact");
    let refusal =
        client(port, &["get", "/registry/pods/a", "--rev", &revision.to_string()]).expect_err("compacted");
    assert!(refusal.contains("Compacted"), "{refusal}");
    assert_eq!(client(port, &["get", "/registry/pods/a"]).expect("get"), "/registry/pods/a\nnewer\n");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn a_group_short_of_snapshot_room_is_compacted_by_its_leader_and_snapshots_again() {
    // As above, but the leader may compact down to 50 revisions: 5 MB of
    // history, which fits the 16 MiB snapshot area.
    let setup = Setup::new(
        "[reactor]\nshards = 1\n[raft]\nsnapshot_after_entries = 20\n\
         [store]\ncompact_under_pressure_keep_revisions = 50",
    );
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    client(port, &["bench", "put", "--key-space", "1", "--value-bytes", "102400", "--total", "200"])
        .expect("bench put runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let busiest = loop {
        let status = status_json(port);
        let groups = status[0]["groups"].as_array().expect("groups").clone();
        let busiest =
            groups.into_iter().max_by_key(|group| group["applied_index"].as_u64()).expect("a group");
        let caught_up = busiest["snapshot_index"].as_u64().unwrap_or(0) + 20 > 200;
        if caught_up || std::time::Instant::now() > deadline {
            break busiest;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // When the history outgrew the room (how early depends on where the
    // snapshots landed), the leader compacted it to its last 50 revisions.
    assert!(busiest["compact_revision"].as_i64().is_some_and(|revision| revision > 0), "{busiest}");
    assert!(busiest["snapshot_index"].as_u64().is_some_and(|index| index + 20 > 200), "{busiest}");
    daemon.signal(libc::SIGTERM);
    let (exit, stderr) = daemon.wait_exit();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(stderr.contains("so its snapshot fits"), "the node says why it compacted: {stderr}");
}

#[test]
fn a_client_command_whose_reader_goes_away_ends_quietly() {
    let setup = Setup::new("[reactor]\nshards = 1");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let value = "x".repeat(4000);
    for index in 0..40 {
        client(port, &["put", &format!("/pipe/{index}"), &value]).expect("put");
    }
    // 160 KB of answer into a pipe whose reader closes at once.
    let mut get = std::process::Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["--endpoints", &format!("127.0.0.1:{port}"), "get", "/pipe/", "--prefix"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the client starts");
    drop(get.stdout.take());
    let output = get.wait_with_output().expect("the client ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "the client panicked on the closed pipe: {stderr}");
    assert_eq!(output.status.code(), Some(141), "ends as a shell reports a SIGPIPE: {:?}", output.status);
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit();
}

/// A power cut right after the first start must not lose the namespace
/// file's or the LOCK file's name: the daemon fsyncs the directory it
/// created them in (and the one it created the data directory in), as
/// `strace` shows it doing, after the files exist and before it says ready.
#[test]
fn a_first_start_makes_the_names_of_its_files_durable() {
    let setup = Setup::new("[reactor]\nshards = 1");
    let trace = setup.directory.path().join("strace.log");
    let mut command = std::process::Command::new("strace");
    command
        .args(["-f", "-e", "trace=openat,fsync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_nvkv"))
        .args(["serve", "--config"])
        .arg(&setup.config);
    let mut daemon = Daemon::spawn(command);
    daemon.wait_ready();
    // The daemon is strace's child: signal it by the pid its LOCK names.
    let lock = std::fs::read_to_string(setup.data_dir().join("LOCK")).expect("LOCK");
    let pid: i32 = lock.trim().parse().expect("LOCK names a pid");
    // SAFETY: kill with a pid and a signal number; no memory is passed.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "signal the daemon");
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "strace and the daemon end cleanly: {stderr}");
    let trace = std::fs::read_to_string(&trace).expect("strace wrote its log");
    let data_dir = setup.data_dir().display().to_string();
    let parent = setup.directory.path().display().to_string();
    let namespace = format!("{data_dir}/namespace");
    // Each line: "PID call(args) = result"; descriptors are reused, so each
    // fsync belongs to the last openat that returned its descriptor.
    let mut open: std::collections::HashMap<String, String> = Default::default();
    let (mut created, mut synced_data_dir, mut synced_parent) = (false, false, false);
    for line in trace.lines() {
        // strace pads the pid column: "123  openat(" as well as "12345 openat(".
        let Some((_, call)) = line.split_once(' ') else { continue };
        let call = call.trim_start();
        if let Some(arguments) = call.strip_prefix("openat(") {
            let path = arguments.split('"').nth(1).unwrap_or_default().to_string();
            let result = call.rsplit("= ").next().unwrap_or_default().trim().to_string();
            if path == namespace && arguments.contains("O_CREAT") {
                created = true;
            }
            open.insert(result, path);
        } else if let Some(descriptor) = call.strip_prefix("fsync(").and_then(|rest| rest.split(')').next()) {
            match open.get(descriptor).map(String::as_str) {
                Some(path) if path == data_dir && created => synced_data_dir = true,
                Some(path) if path == parent => synced_parent = true,
                _ => {}
            }
        }
    }
    assert!(created, "the first start created {namespace}:\n{trace}");
    assert!(synced_data_dir, "{data_dir} was fsynced after its files were created:\n{trace}");
    assert!(synced_parent, "{parent} was fsynced after the data directory was created in it:\n{trace}");
}

/// A node closes a connection that sends nothing for
/// `limits.idle_timeout_ms`; the client library pings its connections and
/// KV streams well within it, so a client idle for several timeouts still
/// gets answers on the connections it opened. A raw connection that sends
/// nothing after its first bytes is closed by then.
#[test]
fn an_idle_client_keeps_its_connections_through_the_idle_timeout() {
    // The first idle check comes at the handshake deadline: both short.
    let setup = Setup::new("[limits]\nidle_timeout_ms = 1000\nhandshake_timeout_ms = 500\n");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let endpoint = format!("127.0.0.1:{port}");
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::io::Write::write_all(&mut silent, b"nvkvKVS1").expect("the opening");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(tokio::task::LocalSet::new().run_until(async {
        let client = nvkv::rpc::client::ShardedClient::open(&endpoint).await.expect("connect");
        client.put(b"/idle/a", b"1", 0, false).await.expect("a put before idling");
        assert!(client.for_group(0).has_kv_stream(), "KV calls go over the KV stream");
        tokio::time::sleep(Duration::from_millis(3500)).await;
        client.put(b"/idle/a", b"2", 0, false).await.expect("a put over the stream after idling");
        client.main().status().await.expect("an RPC call after idling");
    }));
    silent.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut answer = Vec::new();
    let closed = silent.read_to_end(&mut answer);
    assert!(closed.is_ok(), "the node closed the silent connection: {closed:?}");
    assert_eq!(answer, b"nvkvKVS1", "it answered the opening, then closed the idle stream");
}
