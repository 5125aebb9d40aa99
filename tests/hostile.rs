//! Hostile clients against one real node, each in turn while a
//! well-behaved client keeps putting beside them: 10,000 idle connections,
//! a client pipelining 10,000 puts on one connection, a client holding
//! 10,000 watches and reading none, and a client filling a group to its
//! store quota. What is asserted is what holds however loaded the machine
//! is: the node never crashes, its memory stays under `RSS_BOUND_BYTES`,
//! every refusal is typed (or a closed connection), the well-behaved client
//! gets every put answered, and deletes with compaction clear the quota
//! alarm. How fast the well-behaved client is served meanwhile (its put p99
//! against its unloaded p99) is a benchmark's business: bench/hostile.sh.

mod common;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nvkv::kv::types::prefix_range_end;
use nvkv::kv::watch::WatchRequest;
use nvkv::rpc::client::{ClientError, Connection, ShardedClient};
use nvkv::rpc::kv::ErrorCode;

/// The node's resident memory stays under this throughout: its namespace
/// is 64 MiB, its watch buffers are bounded by `[store]` (16 MiB of live
/// events per group, 8 MiB per connection on their way out), its
/// connections by `[limits]`.
const RSS_BOUND_BYTES: u64 = 1 << 30;

fn run<T>(future: impl Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

/// Resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Descriptors process `pid` holds open.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| entries.count())
}

/// Samples the node's memory every 50 ms until dropped; the peak is kept.
struct MemoryWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemoryWatch {
    fn start(pid: u32) -> MemoryWatch {
        let (peak, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (sampled, stopping) = (Arc::clone(&peak), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                sampled.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        MemoryWatch { peak, stop, thread: Some(thread) }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The well-behaved client: one put at a time under `prefix` until told to
/// stop; every put must be answered with success.
struct Polite {
    stop: Rc<std::cell::Cell<bool>>,
    task: tokio::task::JoinHandle<Result<usize, String>>,
}

impl Polite {
    fn start(client: Rc<ShardedClient>, prefix: String) -> Polite {
        let stop = Rc::new(std::cell::Cell::new(false));
        let stopping = Rc::clone(&stop);
        let task = tokio::task::spawn_local(async move {
            let mut done = 0usize;
            while !stopping.get() {
                let key = format!("{prefix}{}", done % 100);
                client.put(key.as_bytes(), b"polite", 0, false).await.map_err(|error| error.to_string())?;
                done += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(done)
        });
        Polite { stop, task }
    }

    /// Stops it; how many puts it made, all answered with success.
    async fn finish(self, phase: &str) -> usize {
        self.stop.set(true);
        let done = self.task.await.expect("the polite client's task").unwrap_or_else(|error| {
            panic!("during {phase}, a well-behaved put failed: {error}");
        });
        assert!(done > 0, "during {phase}, the well-behaved client made no put at all");
        eprintln!("{phase}: the well-behaved client made {done} puts, all answered");
        done
    }
}

/// `count` TCP connections to `port` from `source`, sending nothing: the
/// ones the kernel completed (the node closes them or refuses them).
async fn idle_connections(source: IpAddr, port: u16, count: usize) -> Vec<tokio::net::TcpStream> {
    let target = SocketAddr::new("127.0.0.1".parse().expect("address"), port);
    let mut open = Vec::with_capacity(count);
    for batch in 0..count.div_ceil(500) {
        let connects = (0..500.min(count - batch * 500)).map(|_| async move {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind(SocketAddr::new(source, 0)).ok()?;
            tokio::time::timeout(Duration::from_secs(10), socket.connect(target)).await.ok()?.ok()
        });
        open.extend(futures::future::join_all(connects).await.into_iter().flatten());
    }
    open
}

/// Whether the node closed `stream` (end of stream or a reset, after
/// whatever it sent first: a Cap'n Proto abort message).
async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 512];
    loop {
        match tokio::time::timeout(Duration::from_millis(10), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn refusal(result: Result<impl Sized, ClientError>) -> Option<ErrorCode> {
    match result {
        Ok(_) => None,
        Err(ClientError::Refused { error, .. }) => Some(error.code),
        Err(other) => panic!("a refusal must be typed, got {other}"),
    }
}

#[test]
fn hostile_clients_leave_the_node_serving_within_its_memory_bound() {
    let setup = Setup::new(
        "[reactor]\nshards = 1\n\n[log]\ngroups_per_shard = 2\n\n[store]\nquota_bytes = \"4MiB\"\n\n\
         [limits]\nhandshake_timeout_ms = 2000\nconnections_per_source_max = 100\n\
         calls_in_flight_per_connection_max = 100",
    );
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let memory = MemoryWatch::start(daemon.pid());
    let endpoint = format!("127.0.0.1:{port}");
    run(async {
        let polite_client = Rc::new(ShardedClient::open(&endpoint).await.expect("connect"));
        let map = polite_client.partition_map().clone();
        let partitioner =
            nvkv::kv::partition::Partitioner::new(map.groups, map.partition_depth as usize).expect("map");
        // Three segments: each prefix lives in one group. The hostile ones
        // share the filler's group; the well-behaved client has the other.
        let fill_group = partitioner.group_of(b"/fill/x/k");
        let pipe = (0..)
            .map(|index| format!("/pipe-{index}/x/"))
            .find(|prefix| partitioner.group_of(format!("{prefix}k").as_bytes()) == fill_group)
            .expect("a prefix in the filler's group");
        let polite = (0..)
            .map(|index| format!("/polite-{index}/x/"))
            .find(|prefix| partitioner.group_of(format!("{prefix}k").as_bytes()) != fill_group)
            .expect("a prefix in the other group");
        let daemon_pid = daemon.pid();
        let fds_before = fds(daemon_pid);
        let unloaded = rss_bytes(daemon_pid);
        eprintln!("the node holds {} MiB before the hostile clients", unloaded >> 20);

        eprintln!("10,000 idle connections from 127.0.0.2");
        let running = Polite::start(Rc::clone(&polite_client), polite.clone());
        let mut idle = idle_connections("127.0.0.2".parse().expect("address"), port, 10_000).await;
        eprintln!("{} of 10,000 connects completed at the kernel", idle.len());
        running.finish("10,000 idle connections").await;
        // What the node holds is what counts: connections the kernel
        // completed but dropped from a full accept queue look open to the
        // client until it sends something, yet never reached the node.
        let deadline = Instant::now() + Duration::from_secs(60);
        while fds(daemon_pid) > fds_before + 50 {
            assert!(
                Instant::now() < deadline,
                "the node holds {} descriptors a minute on ({fds_before} before)",
                fds(daemon_pid)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut closed_seen = 0;
        for stream in &mut idle {
            closed_seen += usize::from(closed(stream).await);
        }
        eprintln!(
            "the node is back to {} descriptors; {closed_seen} idle connections saw it close",
            fds(daemon_pid)
        );
        drop(idle);
        eprintln!(
            "every idle connection was closed (over a limit, or silent past its first-message deadline)"
        );

        eprintln!("one connection pipelining 10,000 puts");
        let running = Polite::start(Rc::clone(&polite_client), polite.clone());
        let pipelined = Connection::open(&endpoint).await.expect("connect");
        let puts = (0..10_000).map(|index| {
            let (pipelined, key) = (&pipelined, format!("{pipe}{index}"));
            async move { pipelined.put(key.as_bytes(), &[b'p'; 100], 0, false).await }
        });
        let results = futures::future::join_all(puts).await;
        let refused: Vec<ErrorCode> = results.into_iter().filter_map(refusal).collect();
        eprintln!("{} of 10,000 pipelined puts refused (typed): {:?}", refused.len(), refused.first());
        assert!(!refused.is_empty(), "10,000 puts sent at once pass 100 calls in flight");
        assert!(refused.iter().all(|code| *code == ErrorCode::Unavailable), "{:?}", refused.first());
        running.finish("10,000 pipelined puts").await;

        eprintln!("one connection asking for 10,000 watches and reading none");
        let running = Polite::start(Rc::clone(&polite_client), polite.clone());
        let watching = Connection::open(&endpoint).await.expect("connect");
        let request = WatchRequest {
            key: pipe.as_bytes().to_vec(),
            range_end: prefix_range_end(pipe.as_bytes()),
            ..WatchRequest::default()
        };
        let mut watches = Vec::new();
        let mut watch_refusals = 0;
        for _ in 0..10_000 {
            match watching.watch(&request).await {
                Ok(watch) => watches.push(watch),
                Err(ClientError::Refused { error, .. }) => {
                    assert!(error.message.contains("store.watches_per_connection_max"), "{}", error.message);
                    watch_refusals += 1;
                }
                Err(other) => panic!("a refused watch must be typed, got {other}"),
            }
        }
        eprintln!("{} watches open, {watch_refusals} refused (typed)", watches.len());
        assert_eq!(watches.len() + watch_refusals, 10_000);
        let value = vec![b'w'; 4096];
        for index in 0..2000 {
            let key = format!("{pipe}{}", index % 500);
            if let Some(code) = refusal(pipelined.put(key.as_bytes(), &value, 0, false).await) {
                assert_eq!(code, ErrorCode::NoSpace, "only the quota may refuse these puts");
            }
        }
        running.finish("10,000 watches not read").await;
        drop(watches);

        eprintln!("a client filling its group to the quota");
        let running = Polite::start(Rc::clone(&polite_client), polite.clone());
        let value = vec![b'f'; 64 << 10];
        let (mut stored, mut busy) = (0, 0);
        let code = loop {
            assert!(stored < 1000, "1000 values of 64 KiB never reached a 4 MiB quota");
            match pipelined.put(format!("/fill/x/{stored}").as_bytes(), &value, 0, false).await {
                Ok(_) => stored += 1,
                // The group may be busy with what the hostile clients left
                // (its log's room, its snapshots): unavailable says so, typed.
                Err(ClientError::Refused { error, .. })
                    if error.code == ErrorCode::Unavailable && busy < 100 =>
                {
                    if busy == 0 {
                        eprintln!("the filler was told to wait: {}", error.message);
                    }
                    busy += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break refusal(other).expect("a refusal"),
            }
        };
        assert_eq!(code, ErrorCode::NoSpace, "the quota refuses with noSpace");
        eprintln!("the quota refused a put after {stored} values of 64 KiB");
        running.finish("a group at its quota").await;

        eprintln!("deletes and compaction clear the alarm");
        let mut deleted = 0;
        for prefix in ["/fill/x/", pipe.as_str()] {
            let range_end = prefix_range_end(prefix.as_bytes());
            let answer = polite_client.delete_range(prefix.as_bytes(), &range_end, false).await;
            let answer = answer.expect("a delete is taken over the quota");
            deleted += answer.deleted;
            let (group, revision) = (answer.header.group, answer.header.revision);
            assert_eq!(group, fill_group);
            polite_client.compact(group, revision).await.expect("compaction is taken over the quota");
        }
        eprintln!("{deleted} values deleted and their group compacted");
        let deadline = Instant::now() + Duration::from_secs(30);
        while refusal(pipelined.put(b"/fill/x/again", b"v", 0, false).await).is_some() {
            assert!(Instant::now() < deadline, "the quota alarm never cleared");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let peak = memory.peak();
    eprintln!("the node's memory peaked at {} MiB (bound {} MiB)", peak >> 20, RSS_BOUND_BYTES >> 20);
    assert!(peak > 0, "the node's memory was sampled");
    assert!(peak < RSS_BOUND_BYTES, "the node's memory peaked at {peak} bytes");
    assert!(daemon.child.try_wait().expect("wait").is_none(), "the node is still running");
    daemon.signal(libc::SIGTERM);
    let (exit, stderr) = daemon.wait_exit();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(stderr.contains("limits.connections_per_source_max"), "the refusals were logged: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
