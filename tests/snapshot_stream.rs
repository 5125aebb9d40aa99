//! A snapshot streamed between real members: a follower that was down while
//! the leader wrote tens of MiB and purged its log past the follower's last
//! entry comes back and catches up through a snapshot of many chunks
//! (`SnapshotSink.chunk`, 1 MiB each, under Cap'n Proto flow control), and
//! its store then holds every key, value and revision the others hold.

mod common;

use common::cluster::*;
use common::*;
use nvkv::kv::types::RangeRequest;
use nvkv::rpc::client::ShardedClient;

/// One group, so every byte lands in one snapshot.
const GROUPS: usize = 1;
/// Values written while the follower is down: together 24 MiB, many chunks
/// of a snapshot stream. Each is small enough that its append reaches a
/// follower within openraft's append timeout (the heartbeat interval) on a
/// busy machine.
const LARGE_VALUES: usize = 384;
const LARGE_VALUE_BYTES: usize = 64 << 10;

fn group_field(member: &Member, field: &str) -> u64 {
    status_json(member.client_port)[0]["groups"][0][field].as_u64().unwrap_or(0)
}

/// The value of large key `index`: different for every key and position,
/// so a chunk lost, repeated or out of place shows.
fn large_value(index: usize) -> Vec<u8> {
    (0..LARGE_VALUE_BYTES).map(|position| ((index * 31 + position * 7) % 251) as u8).collect()
}

fn large_key(index: usize) -> String {
    format!("/large/k{index:03}")
}

/// Keys with their create revision, mod revision and version.
type KeyRevisions = Vec<(Vec<u8>, i64, i64, i64)>;

/// Every key of `member`'s own store (serializable: no leader involved),
/// with its revisions and version.
fn keys_of(member: &Member) -> Result<KeyRevisions, String> {
    runtime().block_on(tokio::task::LocalSet::new().run_until(async {
        let client = ShardedClient::open(&endpoint(member)).await.map_err(|error| error.to_string())?;
        let all =
            RangeRequest { key: vec![0], range_end: vec![0], keys_only: true, ..RangeRequest::default() };
        let answer = client.range(&all, true).await.map_err(|error| error.to_string())?;
        Ok(answer
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.create_revision, kv.mod_revision, kv.version))
            .collect())
    }))
}

#[test]
fn a_follower_behind_a_purged_log_receives_a_snapshot_of_many_chunks() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = cluster_configs(directory.path(), GROUPS);
    for member in &members {
        // Room for a snapshot of tens of MiB: the snapshot area is a
        // quarter of the shard's region, and holds the old and the new one.
        let text = std::fs::read_to_string(&member.config)
            .expect("config")
            .replace("namespace_bytes = \"64MiB\"", "namespace_bytes = \"256MiB\"");
        let text = format!(
            "{text}\n[raft]\nsnapshot_after_entries = 128\nentries_kept_after_snapshot = 2\npurge_batch_entries = 4\n"
        );
        std::fs::write(&member.config, text).expect("config");
    }
    let mut daemons: Vec<Option<Daemon>> =
        members.iter().map(|member| Some(Daemon::start(&member.config))).collect();
    for daemon in daemons.iter_mut().flatten() {
        daemon.wait_ready();
    }
    let leader = eventually("group 0 having one leader on every member", || {
        let seen: Vec<Vec<u64>> = members.iter().map(|member| leaders(member.client_port)).collect();
        agreed_leaders(&seen).map(|leaders| leaders[0])
    });
    let follower = members.iter().position(|member| member.id != leader).expect("a follower");
    let writer = members.iter().position(|member| member.id == leader).expect("the leader");
    let follower_id = members[follower].id;

    eprintln!("phase: a few small keys reach every member; then member {follower_id} (a follower) is killed");
    with_client(&members[writer], async |client| {
        for index in 0..5 {
            put_until_taken(&client, &format!("/small/k{index}"), b"small").await;
        }
    });
    eventually("the follower applying the small keys", || {
        let (applied, leader_applied) = (
            group_field(&members[follower], "applied_index"),
            group_field(&members[writer], "applied_index"),
        );
        if applied >= leader_applied {
            Ok(())
        } else {
            Err(format!("applied {applied} of {leader_applied}"))
        }
    });
    let last_before = group_field(&members[follower], "last_log_index");
    let snapshot_before = group_field(&members[follower], "snapshot_index");
    daemons[follower].take().expect("running").signal(libc::SIGKILL);

    eprintln!(
        "phase: {LARGE_VALUES} values of {LARGE_VALUE_BYTES} bytes while it is down, until the leader purged \
         its log past the follower's last entry {last_before}"
    );
    with_client(&members[writer], async |client| {
        for index in 0..LARGE_VALUES {
            put_until_taken(&client, &large_key(index), &large_value(index)).await;
        }
    });
    eventually(&format!("the leader purging its log past entry {last_before}"), || {
        let purged = group_field(&members[writer], "purged_index");
        if purged > last_before {
            Ok(())
        } else {
            with_client(&members[writer], async |client| put_until_taken(&client, "/nudge", b"1").await);
            Err(format!("purged up to {purged}"))
        }
    });

    eprintln!("phase: restart it: it catches up through a streamed snapshot");
    let mut restarted = Daemon::start(&members[follower].config);
    restarted.wait_ready();
    daemons[follower] = Some(restarted);
    eventually("the restarted follower applying what the leader applied", || {
        let (applied, leader_applied) = (
            group_field(&members[follower], "applied_index"),
            group_field(&members[writer], "applied_index"),
        );
        if applied >= leader_applied && applied > last_before {
            Ok(())
        } else {
            Err(format!("applied {applied} of {leader_applied}"))
        }
    });
    let snapshot = group_field(&members[follower], "snapshot_index");
    assert!(
        snapshot > last_before && snapshot > snapshot_before,
        "member {follower_id} caught up past the purge through a snapshot (its snapshot covers entry {snapshot}, \
         its log ended at {last_before})"
    );

    eprintln!("phase: its store holds what the others hold, every large value byte for byte");
    let keys = eventually("every member holding the same keys and revisions", || {
        let views: Vec<_> = members.iter().map(keys_of).collect::<Result<_, _>>()?;
        if views.iter().all(|view| *view == views[0]) {
            Ok(views[0].clone())
        } else {
            Err(format!("keys per member: {:?}", views.iter().map(Vec::len).collect::<Vec<_>>()))
        }
    });
    assert!(keys.len() >= 5 + LARGE_VALUES, "{} keys", keys.len());
    with_client(&members[follower], async |client| {
        for index in 0..LARGE_VALUES {
            let key = large_key(index);
            let one = RangeRequest { key: key.clone().into_bytes(), ..RangeRequest::default() };
            let answer = client.range(&one, true).await.expect("a serializable get on the follower");
            assert_eq!(answer.kvs.len(), 1, "{key} on member {follower_id}");
            assert!(
                answer.kvs[0].value == large_value(index),
                "{key} on member {follower_id} holds other bytes"
            );
        }
    });
    eprintln!("member {follower_id} holds all {} keys; its snapshot covers entry {snapshot}", keys.len());
}
