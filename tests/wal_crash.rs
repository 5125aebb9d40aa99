//! Recovery after SIGKILL in the middle of appends, on the real io_uring
//! file backend: a child process appends to a shard log and prints every
//! entry the log reported durable; the parent kills it at a random moment,
//! reopens the log and checks that every reported entry is there, intact,
//! and that nothing past the tail is half there. Three rounds, each child
//! continuing the log the previous one left.
//!
//! The binary is its own child (`NVKV_CRASH_CHILD` set), so it has its own
//! main instead of the test harness.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvkv::nvme::uring::{UringNamespace, UringOptions};
use nvkv::nvme::{Namespace, QueuePairConfig};
use nvkv::wal::{superblock, FormatOptions, LogOptions, ShardLog, ShardRegion};

const NAMESPACE_BYTES: u64 = 16 << 20;
const GROUPS: u32 = 4;
/// Entries kept per group before purging, so the 12 MiB ring wraps.
const KEEP: u64 = 200;

fn payload(group: u32, index: u64) -> Vec<u8> {
    let seed = format!("group {group} entry {index};");
    let len = 200 + (index as usize * 131 + group as usize * 977) % 3800;
    seed.bytes().cycle().take(len).collect()
}

fn open(path: &Path) -> (Arc<dyn Namespace>, ShardRegion) {
    let options = UringOptions { namespace_bytes: NAMESPACE_BYTES, lba_bytes: 4096, create: true };
    let namespace: Arc<dyn Namespace> =
        Arc::new(UringNamespace::open(path, &options).expect("open namespace"));
    let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
    let (superblock, _) = superblock::open_or_format(
        queue.as_mut(),
        FormatOptions { shards: 1, groups_per_shard_max: 16, member_id: 0 },
    )
    .expect("superblock");
    drop(queue);
    (namespace, superblock.region(0))
}

fn open_log(namespace: &dyn Namespace, region: ShardRegion) -> ShardLog {
    let options = LogOptions { batch_bytes_max: 256 << 10, ..LogOptions::default() };
    ShardLog::open(
        namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair"),
        region,
        options,
    )
    .expect("open the shard log")
}

/// The child: appends forever, in group-commit batches, printing
/// "durable GROUP INDEX" for every entry once the log says it is durable.
fn child(path: &Path) {
    use std::io::Write;
    let (namespace, region) = open(path);
    let mut log = open_log(namespace.as_ref(), region);
    let mut next: Vec<u64> =
        (0..GROUPS).map(|group| log.last_index(group).map_or(1, |last| last + 1)).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut round = 0u64;
    loop {
        round += 1;
        let mut batch = Vec::new();
        for step in 0..(1 + round % 9) {
            let group = ((round + step) % u64::from(GROUPS)) as u32;
            let index = next[group as usize];
            let ticket = log.append(group, index, 1, &payload(group, index)).expect("append");
            batch.push((group, index, ticket));
            next[group as usize] += 1;
            if index > KEEP {
                log.purge(group, index - KEEP, 1).expect("purge");
            }
        }
        let (_, _, last) = *batch.last().expect("batch");
        log.wait_durable(last).expect("durable");
        for (group, index, _) in batch {
            writeln!(out, "durable {group} {index}").expect("stdout");
        }
        out.flush().expect("stdout");
    }
}

fn parent() -> Result<(), String> {
    let directory =
        tempfile::Builder::new().prefix("nvkv-crash-").tempdir_in(std::env::temp_dir()).expect("tempdir");
    let path = directory.path().join("namespace");
    let mut acknowledged: BTreeMap<u32, u64> = BTreeMap::new();
    for round in 1..=3u32 {
        println!("round {round}: a child appends until it is killed with SIGKILL");
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env("NVKV_CRASH_CHILD", &path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child");
        let stdout = child.stdout.take().expect("child stdout");
        let kill_after = Duration::from_millis(400 + u64::from(round) * 350);
        let started = Instant::now();
        let mut lines = BufReader::new(stdout).lines();
        let mut read_acknowledged = || -> Result<u64, String> {
            let mut seen = 0u64;
            while started.elapsed() < kill_after {
                let Some(Ok(line)) = lines.next() else { break };
                let mut words = line.split_whitespace().skip(1);
                let group: u32 =
                    words.next().and_then(|word| word.parse().ok()).ok_or(format!("bad line {line}"))?;
                let index: u64 =
                    words.next().and_then(|word| word.parse().ok()).ok_or(format!("bad line {line}"))?;
                let last = acknowledged.entry(group).or_default();
                *last = (*last).max(index);
                seen += 1;
            }
            Ok(seen)
        };
        let seen = read_acknowledged();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().expect("wait for the child");
        if status.code().is_some() {
            return Err(format!("the child exited by itself ({status}) instead of being killed"));
        }
        let seen = seen?;
        if seen == 0 {
            return Err("the child reported no durable entry before it was killed".into());
        }
        println!("round {round}: killed after {seen} durable entries; recovering");

        let (namespace, region) = open(&path);
        let mut log = open_log(namespace.as_ref(), region);
        for (&group, &last_acknowledged) in &acknowledged {
            let (first, last) = log.entry_range(group).ok_or(format!("group {group} lost every entry"))?;
            if last < last_acknowledged {
                return Err(format!(
                    "group {group}: entry {last_acknowledged} was reported durable, the log ends at {last}"
                ));
            }
            // Every entry the log has, acknowledged or not, is whole.
            for index in first.max(last_acknowledged.saturating_sub(KEEP / 2))..=last {
                let entry = log
                    .read_blocking(group, index)
                    .map_err(|error| format!("group {group} entry {index}: {error}"))?;
                if entry.payload[..] != payload(group, index)[..] {
                    return Err(format!("group {group} entry {index} came back with other bytes"));
                }
            }
            println!(
                "round {round}: group {group} holds {first}..={last}, acknowledged up to {last_acknowledged}"
            );
        }
    }
    Ok(())
}

fn main() {
    if let Some(path) = std::env::var_os("NVKV_CRASH_CHILD") {
        child(Path::new(&path));
        return;
    }
    println!("wal_crash: recovery after SIGKILL in the middle of appends (io_uring file backend)");
    match parent() {
        Ok(()) => println!("1 passed, 0 failed"),
        Err(reason) => {
            println!("wal_crash FAILED: {reason}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    }
}
