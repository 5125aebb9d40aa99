//! Watches against a real `nvkv serve` with two shards and four groups per
//! shard: `nvkv watch` as a script runs it (--count), and the client
//! library's `Watch`. Every test compares what the watcher saw with what
//! the writes were answered: same revisions, same order, nothing missing,
//! nothing twice.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use nvkv::kv::types::{prefix_range_end, EventKind};
use nvkv::kv::watch::WatchRequest;
use nvkv::rpc::client::watch::{Watch, WatchMessage};
use nvkv::rpc::client::{ClientError, Connection, ShardedClient};
use nvkv::rpc::kv::ErrorCode;

/// One change as a watcher reports it: group, revision, kind, key.
type Seen = (u32, i64, &'static str, String);

struct Node {
    _setup: Setup,
    daemon: Daemon,
    port: u16,
}

impl Node {
    fn start(extra: &str) -> Node {
        let setup = Setup::new(&format!("[reactor]\nshards = 2\n\n[log]\ngroups_per_shard = 4\n\n{extra}"));
        let mut daemon = Daemon::start(&setup.config);
        let port = ready_port(&daemon.wait_ready());
        Node { _setup: setup, daemon, port }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Runs client-library code the way it must run: one thread, a LocalSet.
fn run<T>(future: impl Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Put => "PUT",
        EventKind::Delete => "DELETE",
    }
}

fn prefix(key: &str, start_revision: i64) -> WatchRequest {
    WatchRequest {
        key: key.into(),
        range_end: prefix_range_end(key.as_bytes()),
        start_revision,
        ..WatchRequest::default()
    }
}

/// The next message, or a panic after the deadline.
async fn next(watch: &mut Watch) -> WatchMessage {
    match tokio::time::timeout(DEADLINE, watch.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("the watch ended without a cancellation"),
        Err(_) => panic!("no watch message within {DEADLINE:?}"),
    }
}

/// Reads `count` events, skipping progress notifications.
async fn events(watch: &mut Watch, count: usize) -> Vec<Seen> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match next(watch).await {
            WatchMessage::Events { header, events } => {
                for event in events {
                    let key = String::from_utf8(event.kv.key).expect("utf-8 keys");
                    seen.push((header.group, event.kv.mod_revision, kind_name(event.kind), key));
                }
            }
            WatchMessage::Progress { .. } => {}
            WatchMessage::Cancelled { error, .. } => panic!("the watch was cancelled: {error}"),
        }
    }
    assert_eq!(seen.len(), count, "a batch brought more events than were written");
    seen
}

async fn put(client: &ShardedClient, key: &str, value: &[u8]) -> Seen {
    let answer = client.put(key.as_bytes(), value, 0, false).await.expect("put");
    (answer.header.group, answer.header.revision, "PUT", key.to_string())
}

async fn delete(client: &ShardedClient, key: &str) -> Seen {
    let answer = client.delete_range(key.as_bytes(), &[], false).await.expect("delete");
    assert_eq!(answer.deleted, 1, "{key} existed");
    (answer.header.group, answer.header.revision, "DELETE", key.to_string())
}

/// `writers` concurrent writers, each doing `operations` writes under
/// `prefixes[writer % len]`: puts, and every fifth a delete of its previous
/// key. Returns every write as answered, in revision order per group.
async fn write_concurrently(
    client: &ShardedClient,
    prefixes: &[&str],
    writers: usize,
    operations: usize,
    tag: &str,
) -> Vec<Seen> {
    let tasks = (0..writers).map(|writer| async move {
        let base = prefixes[writer % prefixes.len()];
        let mut done = Vec::new();
        for operation in 0..operations {
            if operation % 5 == 4 {
                done.push(delete(client, &format!("{base}{tag}-{writer}-{}", operation - 1)).await);
            } else {
                done.push(put(client, &format!("{base}{tag}-{writer}-{operation}"), b"v").await);
            }
        }
        done
    });
    let mut all: Vec<Seen> = futures::future::join_all(tasks).await.into_iter().flatten().collect();
    all.sort_by_key(|(group, revision, ..)| (*group, *revision));
    all
}

/// Splits events by group, keeping each group's order as seen.
fn by_group(seen: &[Seen]) -> BTreeMap<u32, Vec<Seen>> {
    let mut groups: BTreeMap<u32, Vec<Seen>> = BTreeMap::new();
    for event in seen {
        groups.entry(event.0).or_default().push(event.clone());
    }
    groups
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// `nvkv watch` running in the background.
struct CliWatch {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl CliWatch {
    fn start(port: u16, args: &[&str]) -> CliWatch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nvkv"))
            .args(["--endpoints", &format!("127.0.0.1:{port}"), "watch"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nvkv watch starts");
        let stdout = read_all(child.stdout.take().expect("piped"));
        let stderr = read_all(child.stderr.take().expect("piped"));
        CliWatch { child, stdout, stderr }
    }

    /// Waits for the exit (a panic past the deadline) and returns its
    /// status, stdout and stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stdout = self.stdout.join().unwrap_or_default();
                panic!("nvkv watch did not exit within {DEADLINE:?}; it printed:\n{stdout}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        (status, self.stdout.join().unwrap_or_default(), self.stderr.join().unwrap_or_default())
    }
}

/// What `nvkv watch -w json` printed, one event per line.
fn json_events(stdout: &str) -> Vec<Seen> {
    stdout
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
            let kind = match event["type"].as_str() {
                Some("PUT") => "PUT",
                Some("DELETE") => "DELETE",
                other => panic!("unknown event type {other:?} in {line}"),
            };
            let group = event["header"]["group"].as_u64().expect("a group") as u32;
            let revision = event["kv"]["mod_revision"].as_i64().expect("a revision");
            (group, revision, kind, event["kv"]["key"].as_str().expect("a key").to_string())
        })
        .collect()
}

#[test]
fn nvkv_watch_count_prints_every_concurrent_write_once_in_order() {
    let node = Node::start("");
    let endpoint = node.endpoint();
    // The watch starts at a known revision, so the writes may begin before
    // it is registered and still none may be missed.
    let marker = run(async {
        let client = ShardedClient::open(&endpoint).await.expect("connect");
        put(&client, "/registry/pods/marker", b"m").await
    });
    let start = (marker.1 + 1).to_string();
    let watch = CliWatch::start(
        node.port,
        &["/registry/pods/", "--prefix", "--rev", &start, "--count", "100", "-w", "json"],
    );
    let written = run(async {
        let client = ShardedClient::open(&endpoint).await.expect("connect");
        write_concurrently(&client, &["/registry/pods/"], 4, 25, "w").await
    });
    let (status, stdout, stderr) = watch.finish();
    assert!(status.success(), "nvkv watch --count exits 0 after its events; stderr:\n{stderr}");
    let seen = json_events(&stdout);
    assert_eq!(seen, written, "every write, in revision order, once");
    let revisions: Vec<i64> = seen.iter().map(|event| event.1).collect();
    assert_eq!(revisions.len(), 100, "no write missed");
    assert!(revisions[0] > marker.1, "every event after the start revision");
    assert!(revisions.windows(2).all(|pair| pair[0] < pair[1]), "no duplicate, in order: {revisions:?}");
}

#[test]
fn nvkv_watch_prints_like_etcdctl_with_prev_kv_and_filters() {
    let node = Node::start("");
    let endpoint = node.endpoint();
    let first = run(async {
        let client = ShardedClient::open(&endpoint).await.expect("connect");
        let first = put(&client, "/registry/pods/a", b"1").await;
        delete(&client, "/registry/pods/a").await;
        put(&client, "/registry/pods/a", b"2").await;
        first
    });
    let from = first.1.to_string();
    let cli = |extra: &[&str]| {
        let mut args = vec!["/registry/pods/a", "--rev", &from];
        args.extend_from_slice(extra);
        let (status, stdout, stderr) = CliWatch::start(node.port, &args).finish();
        assert!(status.success(), "{extra:?}: {stderr}");
        stdout
    };
    assert_eq!(
        cli(&["--prev-kv", "--count", "3"]),
        "PUT\n/registry/pods/a\n1\n\
         DELETE\n/registry/pods/a\n1\n/registry/pods/a\n\n\
         PUT\n/registry/pods/a\n2\n",
        "with --prev-kv the previous key and value come first, when the key was live"
    );
    assert_eq!(
        cli(&["--no-put", "--count", "1"]),
        "DELETE\n/registry/pods/a\n\n",
        "the first put is left out"
    );
    assert_eq!(
        cli(&["--no-delete", "--count", "2"]),
        "PUT\n/registry/pods/a\n1\nPUT\n/registry/pods/a\n2\n",
        "the delete between the puts is left out"
    );
}

#[test]
fn a_watch_resumed_from_the_revision_after_its_last_event_sees_exactly_what_it_missed() {
    let node = Node::start("");
    run(async {
        let client = ShardedClient::open(&node.endpoint()).await.expect("connect");
        let mut watch = client.watch(&prefix("/registry/pods/", 0)).await.expect("watch");
        let written = write_concurrently(&client, &["/registry/pods/"], 4, 10, "first").await;
        // A batch may carry many revisions: read them all, then act as a
        // watcher that stopped after the fifteenth.
        assert_eq!(events(&mut watch, written.len()).await, written);
        let taken = &written[..15];
        drop(watch);
        let more = write_concurrently(&client, &["/registry/pods/"], 2, 5, "second").await;
        let resume = taken.last().expect("events").1 + 1;
        let mut watch = client.watch(&prefix("/registry/pods/", resume)).await.expect("watch again");
        let rest = events(&mut watch, 35).await;
        assert_eq!(rest, [&written[15..], &more[..]].concat(), "the missed events, from history, in order");
        let live = put(&client, "/registry/pods/after", b"v").await;
        assert_eq!(events(&mut watch, 1).await, vec![live], "then live writes, nothing repeated");
    });
}

#[test]
fn a_prefix_watch_spanning_groups_sees_every_groups_writes_in_order_within_each_group() {
    let node = Node::start("");
    run(async {
        let client = ShardedClient::open(&node.endpoint()).await.expect("connect");
        // "/" has fewer segments than store.partition_depth (2): every group.
        let mut watch = client.watch(&prefix("/", 0)).await.expect("watch");
        let prefixes: Vec<String> = (0..8).map(|index| format!("/tenant-{index}/")).collect();
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let written = write_concurrently(&client, &prefixes, 8, 10, "k").await;
        let seen = events(&mut watch, written.len()).await;
        let expected = by_group(&written);
        assert_eq!(by_group(&seen), expected, "per group: every write, in revision order, once");
        let shards: std::collections::BTreeSet<u32> = expected.keys().map(|group| group % 2).collect();
        assert_eq!(shards.len(), 2, "the writes reached groups on both shards: {:?}", expected.keys());
    });
}

#[test]
fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let node = Node::start("");
    let endpoint = node.endpoint();
    let (group, first, compacted) = run(async {
        let client = ShardedClient::open(&endpoint).await.expect("connect");
        let first = put(&client, "/registry/pods/a", b"1").await;
        let mut later = Vec::new();
        for value in [b"2", b"3", b"4"] {
            later.push(put(&client, "/registry/pods/a", value).await.1);
        }
        let compacted = later[1];
        client.compact(first.0, compacted).await.expect("compact");
        let mut watch = client.watch(&prefix("/registry/pods/", first.1)).await.expect("watch");
        match next(&mut watch).await {
            WatchMessage::Cancelled { group, error } => {
                assert_eq!(
                    (group, error.code, error.compact_revision),
                    (first.0, ErrorCode::Compacted, compacted)
                );
                assert!(error.message.contains("watch again from after it"), "{}", error.message);
            }
            other => panic!("expected a cancellation, got {other:?}"),
        }
        assert!(watch.next().await.is_none(), "nothing follows a cancellation");
        let mut watch = client.watch(&prefix("/registry/pods/", compacted + 1)).await.expect("watch");
        assert_eq!(events(&mut watch, 1).await[0].1, later[2], "above the compact revision is fine");
        (first.0, first.1, compacted)
    });
    let (status, stdout, stderr) =
        CliWatch::start(node.port, &["/registry/pods/a", "--rev", &first.to_string()]).finish();
    assert!(!status.success(), "a cancelled watch exits non-zero; printed {stdout:?}");
    assert!(
        stderr.contains(&format!("watch cancelled in group {group}: "))
            && stderr.contains(&format!("compact revision {compacted}")),
        "{stderr}"
    );
}

#[test]
fn a_watch_sent_to_the_other_shards_port_still_reaches_its_group() {
    let node = Node::start("");
    run(async {
        let client = ShardedClient::open(&node.endpoint()).await.expect("connect");
        let map = client.partition_map().clone();
        let partitioner =
            nvkv::kv::partition::Partitioner::new(map.groups, map.partition_depth as usize).expect("map");
        for shard in 0..map.shards {
            // A key whose group lives on the shard the connection does not.
            let key = (0..)
                .map(|index| format!("/other-{index}/k"))
                .find(|key| partitioner.group_of(key.as_bytes()) % map.shards != shard)
                .expect("some key");
            let group = partitioner.group_of(key.as_bytes());
            let connection =
                Connection::open(&map.shard_endpoints[shard as usize]).await.expect("shard port");
            let request = WatchRequest { key: key.clone().into_bytes(), ..WatchRequest::default() };
            let mut watch = connection.watch(&request).await.expect("watch");
            let written = put(&client, &key, b"v").await;
            assert_eq!(written.0, group);
            assert_eq!(events(&mut watch, 1).await, vec![written], "shard {shard} forwards group {group}");
        }
    });
}

#[test]
fn a_consumer_that_reads_nothing_for_a_while_loses_nothing() {
    // A live buffer of 8 events: the watcher falls out of it almost at once
    // and the node goes on reading the group's history for it.
    let mut node = Node::start("[store]\nwatch_events_pending_max = 8");
    run(async {
        let client = ShardedClient::open(&node.endpoint()).await.expect("connect");
        let mut watch = client.watch(&prefix("/registry/pods/", 0)).await.expect("watch");
        let value = vec![b'x'; 1024];
        let mut written = Vec::new();
        for round in 0..50 {
            let puts = (0..30).map(|index| {
                let key = format!("/registry/pods/{round}-{index}");
                let value = &value;
                let client = &client;
                async move { put(client, &key, value).await }
            });
            written.extend(futures::future::join_all(puts).await);
        }
        written.sort_by_key(|(group, revision, ..)| (*group, *revision));
        assert_eq!(events(&mut watch, written.len()).await, written, "all 1500, in order, once");
    });
    node.daemon.signal(libc::SIGTERM);
    let (_, stderr) = node.daemon.wait_exit();
    assert!(
        stderr.contains("fell more than 8 events or 1048576 bytes behind"),
        "the node moved the watcher to history (else this test proved nothing):\n{stderr}"
    );
}

#[test]
fn a_quiet_watch_that_asked_for_progress_hears_how_far_its_group_is() {
    let node = Node::start("[store]\nwatch_progress_interval_ms = 200");
    run(async {
        let client = ShardedClient::open(&node.endpoint()).await.expect("connect");
        let written = put(&client, "/registry/pods/a", b"1").await;
        let request = WatchRequest { progress_notify: true, ..prefix("/registry/pods/", 0) };
        let mut watch = client.watch(&request).await.expect("watch");
        match next(&mut watch).await {
            WatchMessage::Progress { header } => {
                assert_eq!((header.group, header.revision), (written.0, written.1))
            }
            other => panic!("expected progress, got {other:?}"),
        }
        let later = put(&client, "/registry/pods/b", b"2").await;
        assert_eq!(events(&mut watch, 1).await, vec![later.clone()]);
        match next(&mut watch).await {
            WatchMessage::Progress { header } => assert_eq!(header.revision, later.1),
            other => panic!("expected progress, got {other:?}"),
        }
    });
}

#[test]
fn watches_per_connection_are_bounded_and_a_cancelled_or_dropped_watch_frees_its_place() {
    let node = Node::start("[store]\nwatches_per_connection_max = 2");
    run(async {
        let connection = Connection::open(&node.endpoint()).await.expect("connect");
        let request = prefix("/registry/pods/", 0);
        let first = connection.watch(&request).await.expect("first");
        let second = connection.watch(&request).await.expect("second");
        match connection.watch(&request).await {
            Err(ClientError::Refused { error, .. }) => {
                assert_eq!(error.code, ErrorCode::Unavailable);
                assert!(
                    error.message.contains("2 watches open (store.watches_per_connection_max)"),
                    "{error}"
                );
            }
            other => panic!("a third watch must be refused, got {:?}", other.map(|watch| watch.id())),
        }
        first.cancel().await.expect("cancel");
        let third = connection.watch(&request).await.expect("a cancelled watch frees its place");
        drop(second);
        // Dropping tells the node asynchronously: retry until it has heard.
        let deadline = Instant::now() + DEADLINE;
        loop {
            match connection.watch(&request).await {
                Ok(_) => break,
                Err(ClientError::Refused { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(error) => panic!("a dropped watch must free its place: {error}"),
            }
        }
        drop(third);
    });
}
