//! Recovery after SIGKILL in the middle of appends, on the real io_uring
//! file backend: a child process appends to a shard log and prints every
//! entry the log reported durable; the parent kills it at a random moment,
//! reads the child's output to its end, reopens the log and checks that
//! every reported entry not purged is there, intact (the first and the
//! last ones too), and that every entry the log holds is whole. Three rounds, each child
//! continuing the log the previous one left.
//!
//! The binary is its own child (`NVKV_CRASH_CHILD` set), so it has its own
//! main instead of the test harness.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

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

/// Entries of one group the child may have appended past the last one it
/// reported durable: its next batch, at most 9 entries spread over the
/// groups in turn.
const UNREPORTED_PER_GROUP_MAX: u64 = 3;

fn parent() -> Result<(), String> {
    let directory =
        tempfile::Builder::new().prefix("nvkv-crash-").tempdir_in(std::env::temp_dir()).expect("tempdir");
    let path = directory.path().join("namespace");
    // Every entry any child reported durable, over all rounds.
    let mut acknowledged: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for round in 1..=3u32 {
        println!("round {round}: a child appends until it is killed with SIGKILL");
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env("NVKV_CRASH_CHILD", &path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child");
        let stdout = child.stdout.take().expect("child stdout");
        // The pipe is read to its end (the kill closes it), on a thread of
        // its own, so the entries reported just before the kill count too.
        let reader = std::thread::spawn(move || -> Result<Vec<(u32, u64)>, String> {
            let mut reported = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let line = line.map_err(|error| format!("reading the child's output: {error}"))?;
                let mut words = line.split_whitespace();
                let parsed = match (words.next(), words.next(), words.next(), words.next()) {
                    (Some("durable"), Some(group), Some(index), None) => {
                        group.parse().ok().zip(index.parse().ok())
                    }
                    _ => None,
                };
                reported
                    .push(parsed.ok_or(format!("the child printed {line:?}, not \"durable GROUP INDEX\""))?);
            }
            Ok(reported)
        });
        std::thread::sleep(Duration::from_millis(400 + u64::from(round) * 350));
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().expect("wait for the child");
        if status.code().is_some() {
            return Err(format!("the child exited by itself ({status}) instead of being killed"));
        }
        let reported =
            reader.join().map_err(|_| "the reader of the child's output panicked".to_string())??;
        if reported.is_empty() {
            return Err("the child reported no durable entry before it was killed".into());
        }
        println!("round {round}: killed after {} durable entries; recovering", reported.len());
        for (group, index) in reported {
            acknowledged.entry(group).or_default().insert(index);
        }

        let (namespace, region) = open(&path);
        let mut log = open_log(namespace.as_ref(), region);
        for (&group, indexes) in &acknowledged {
            let last_acknowledged = *indexes.last().expect("a group is listed with an entry");
            let (first, last) = log.entry_range(group).ok_or(format!("group {group} lost every entry"))?;
            if last < last_acknowledged {
                return Err(format!(
                    "group {group}: entry {last_acknowledged} was reported durable, the log ends at {last}"
                ));
            }
            // The child purges up to KEEP entries behind each append, and
            // it appended at most UNREPORTED_PER_GROUP_MAX entries past the
            // last reported one: every reported entry from here on must be
            // kept, the first of them included.
            let kept_from = (last_acknowledged + UNREPORTED_PER_GROUP_MAX).saturating_sub(KEEP) + 1;
            if first > kept_from {
                return Err(format!(
                    "group {group}: the log starts at entry {first}, but entries from {kept_from} were reported \
                     durable and never purged"
                ));
            }
            let must_keep: Vec<u64> = indexes.range(kept_from..).copied().collect();
            for &index in &must_keep {
                let entry = log
                    .read_blocking(group, index)
                    .map_err(|error| format!("group {group} entry {index}, reported durable: {error}"))?;
                if entry.payload[..] != payload(group, index)[..] {
                    return Err(format!(
                        "group {group} entry {index}, reported durable, came back with other bytes"
                    ));
                }
            }
            // Every entry the log has, reported or not, is whole.
            for index in first..=last {
                let entry = log
                    .read_blocking(group, index)
                    .map_err(|error| format!("group {group} entry {index}: {error}"))?;
                if entry.payload[..] != payload(group, index)[..] {
                    return Err(format!("group {group} entry {index} came back with other bytes"));
                }
            }
            println!(
                "round {round}: group {group} holds {first}..={last}; all {} reported entries from {kept_from} to \
                 {last_acknowledged} checked",
                must_keep.len()
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
