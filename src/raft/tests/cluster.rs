//! Three members carrying two groups in one process: elections, leader
//! loss, restarts, catch-up from the log and by snapshot, membership
//! changes, a failed device write, votes kept across restarts.

use super::*;

#[test]
fn three_members_two_groups_agree_and_survive_the_loss_of_a_leader() {
    run(async {
        let mut cluster = Cluster::new(fast_config()).await;

        tracing::info!("every group elects a leader, and 200 writes per group reach every member in order");
        let (first, second) =
            tokio::join!(cluster.write_many(GROUPS[0], 0, 200), cluster.write_many(GROUPS[1], 0, 200));
        for (group, last_response) in [(GROUPS[0], first), (GROUPS[1], second)] {
            let hash = cluster.converged(group, 200).await;
            assert_eq!(last_response, hash.to_le_bytes(), "the writer got the state machine's answer");
        }

        tracing::info!("the leader of the first group stops: another takes over and writes go on");
        let old_leader = cluster.agreed_leader(GROUPS[0]).await;
        let old_term = cluster.running(old_leader, GROUPS[0]).group.metrics().term;
        cluster.stop(old_leader).await;
        let new_leader = cluster.leader(GROUPS[0]).await;
        assert_ne!(new_leader, old_leader);
        assert!(cluster.running(new_leader, GROUPS[0]).group.metrics().term > old_term);
        tokio::join!(cluster.write_many(GROUPS[0], 200, 50), cluster.write_many(GROUPS[1], 200, 50));
        let hashes = [cluster.converged(GROUPS[0], 250).await, cluster.converged(GROUPS[1], 250).await];

        tracing::info!("the old leader comes back and catches up from the log");
        cluster.restart(old_leader).await;
        for (group, hash) in GROUPS.into_iter().zip(hashes) {
            assert_eq!(cluster.converged(group, 250).await, hash);
            assert_eq!(
                cluster.running(old_leader, group).machine.borrow().restores,
                0,
                "no snapshot was needed"
            );
        }
    });
}

#[test]
fn a_restarted_follower_catches_up_from_its_log_and_keeps_its_vote() {
    run(async {
        let mut cluster = Cluster::new(fast_config()).await;
        for group in GROUPS {
            cluster.write_many(group, 0, 30).await;
            cluster.converged(group, 30).await;
        }

        tracing::info!("a follower stops; its votes are on its namespace");
        let follower = cluster.plain_follower().await;
        let votes_before: Vec<_> =
            GROUPS.iter().map(|group| cluster.persisted_vote(follower, *group)).collect();
        for (group, vote) in GROUPS.iter().zip(&votes_before) {
            let vote = vote.expect("a member of an elected group has voted");
            assert!(vote.is_committed(), "group {group}: the follower knows the elected leader");
            assert_eq!(Some(vote), Some(cluster.running(follower, *group).group.metrics().vote));
        }
        cluster.stop(follower).await;

        tracing::info!("the others go on without it");
        for group in GROUPS {
            cluster.write_many(group, 30, 100).await;
        }

        tracing::info!("the follower's shard log reopens with the same votes, and its groups catch up");
        let disk = &cluster.down[&follower];
        let (log, ticker) = disk.open_log();
        let votes_after: Vec<_> = GROUPS.iter().map(|group| persisted_vote(&log, *group)).collect();
        assert_eq!(votes_after, votes_before, "a restart must never forget a vote");
        ticker.abort();
        drop(log);
        let device_reads = |cluster: &Cluster| -> u64 {
            cluster.up.values().map(|node| node.log.with(|log| log.stats().reads_from_device)).sum()
        };
        let device_reads_before = device_reads(&cluster);
        cluster.restart(follower).await;
        for group in GROUPS {
            cluster.converged(group, 130).await;
            let machine = cluster.running(follower, group).machine.clone();
            assert_eq!(machine.borrow().restores, 0, "it replayed its log onto an empty state machine");
        }
        assert!(
            device_reads(&cluster) > device_reads_before + 100,
            "catching up read entries that left the cache back from the device"
        );
    });
}

#[test]
fn a_member_behind_a_purged_log_catches_up_through_a_snapshot() {
    run(async {
        let config = GroupConfig {
            snapshot_logs_since_last: 20,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..fast_config()
        };
        let mut cluster = Cluster::new(config).await;
        for group in GROUPS {
            cluster.write_many(group, 0, 10).await;
            cluster.converged(group, 10).await;
        }
        let follower = cluster.plain_follower().await;
        let follower_last: Vec<u64> = GROUPS
            .iter()
            .map(|group| cluster.up[&follower].log.with(|log| log.last_index(*group)).expect("entries"))
            .collect();
        cluster.stop(follower).await;

        tracing::info!("the others write on, snapshot and purge past what the follower has");
        for group in GROUPS {
            cluster.write_many(group, 10, 100).await;
        }
        for (group, last) in GROUPS.into_iter().zip(&follower_last) {
            let leader = cluster.leader(group).await;
            let log = cluster.up[&leader].log.clone();
            wait_for(&format!("group {group} to purge its log past entry {last}"), || {
                log.with(|log| log.purged(group)).filter(|(purged, _)| purged > last)
            })
            .await;
        }

        tracing::info!("the follower comes back and catches up through install_snapshot");
        cluster.restart(follower).await;
        for group in GROUPS {
            cluster.converged(group, 110).await;
            let machine = cluster.running(follower, group).machine.clone();
            assert!(machine.borrow().restores >= 1, "group {group} caught up from a snapshot");
            let snapshot = cluster.running(follower, group).group.metrics().snapshot;
            assert!(snapshot.is_some(), "group {group} on the follower has a snapshot");
        }

        tracing::info!("a member with a purged log restarts: snapshot, then log replay");
        let purged_member = cluster.leader(GROUPS[0]).await;
        assert!(cluster.up[&purged_member].log.with(|log| log.purged(GROUPS[0])).is_some());
        cluster.stop(purged_member).await;
        cluster.write_many(GROUPS[0], 110, 5).await;
        cluster.restart(purged_member).await;
        let machine = cluster.running(purged_member, GROUPS[0]).machine.clone();
        assert_eq!(machine.borrow().restores, 1, "the state machine starts from the stored snapshot");
        cluster.converged(GROUPS[0], 115).await;
        cluster.converged(GROUPS[1], 110).await;
    });
}

#[test]
fn a_learner_joins_is_promoted_and_an_old_member_leaves() {
    run(async {
        let mut cluster = Cluster::new(fast_config()).await;
        for group in GROUPS {
            cluster.write_many(group, 0, 20).await;
        }

        tracing::info!("member 4 starts empty and joins every group as a learner");
        let newcomer = Member::new(4, "10.0.0.4:2380");
        cluster.start(newcomer.id, Disk::memory(), false).await;
        for group in GROUPS {
            // An election may take leadership away between finding the
            // leader and asking it (short timeouts on a busy machine): ask
            // the next one.
            let deadline = Instant::now() + WAIT_MAX;
            loop {
                let leader = cluster.leader(group).await;
                match cluster.running(leader, group).group.add_learner(newcomer.clone()).await {
                    Err(GroupError::NotLeader { .. }) if Instant::now() < deadline => continue,
                    added => break added.expect("add learner"),
                }
            }
            cluster.write_many(group, 20, 10).await;
            cluster.converged(group, 30).await;
            let metrics = cluster.running(4, group).group.metrics();
            assert_eq!(metrics.learners, [4].into(), "group {group}");
            assert_eq!(metrics.voters, [1, 2, 3].into(), "group {group}");
        }

        tracing::info!("member 4 is promoted and a member that leads nothing leaves");
        let leaving = cluster.plain_follower().await;
        for group in GROUPS {
            let voters: BTreeSet<NodeId> = [1, 2, 3, 4].into_iter().filter(|id| *id != leaving).collect();
            let deadline = Instant::now() + WAIT_MAX;
            let raft_group = loop {
                let leader = cluster.leader(group).await;
                let raft_group = &cluster.running(leader, group).group;
                let refused = raft_group.change_voters([1, 2, 3, 4, 5].into(), false).await.unwrap_err();
                if matches!(refused, GroupError::NotLeader { .. }) && Instant::now() < deadline {
                    continue;
                }
                match raft_group.change_voters(voters.clone(), false).await {
                    Err(GroupError::NotLeader { .. }) if Instant::now() < deadline => continue,
                    Err(GroupError::NotLeader { .. }) => panic!("group {group} kept changing leaders"),
                    changed => {
                        assert!(
                            matches!(refused, GroupError::MembershipChange { .. }),
                            "member 5 is no learner: {refused}"
                        );
                        changed.expect("change voters");
                        break raft_group;
                    }
                }
            };
            wait_for(&format!("group {group} to report voters {voters:?} and no learner"), || {
                let metrics = raft_group.metrics();
                (metrics.voters == voters && metrics.learners.is_empty()).then_some(())
            })
            .await;
        }
        cluster.stop(leaving).await;
        for group in GROUPS {
            cluster.write_many(group, 30, 10).await;
            cluster.converged(group, 40).await;
        }
    });
}

#[test]
fn a_learner_that_acknowledged_nothing_is_not_promoted_however_short_the_log() {
    run(async {
        let cluster = Cluster::new(fast_config()).await;
        let group = GROUPS[0];
        cluster.write_many(group, 0, 5).await;
        // Member 9 never starts: the leader never hears from it.
        let absent = Member::new(9, "10.0.0.9:2380");
        let deadline = Instant::now() + WAIT_MAX;
        let refused = loop {
            let leader = cluster.leader(group).await;
            let raft_group = &cluster.running(leader, group).group;
            match raft_group.add_learner(absent.clone()).await {
                Err(GroupError::NotLeader { .. }) if Instant::now() < deadline => continue,
                added => added.expect("add learner"),
            }
            match raft_group.promote(9, 256).await {
                Err(GroupError::NotLeader { .. }) if Instant::now() < deadline => continue,
                promoted => break promoted,
            }
        };
        assert!(matches!(refused, Err(GroupError::NotCaughtUp { learner: 9, .. })), "{refused:?}");
        let leader = cluster.leader(group).await;
        assert_eq!(cluster.running(leader, group).group.metrics().voters, [1, 2, 3].into());
    });
}

#[test]
fn followers_name_the_leader_and_a_leader_without_quorum_refuses_reads_and_writes() {
    run(async {
        let config = GroupConfig { request_timeout_ms: 400, ..fast_config() };
        let mut cluster = Cluster::new(config).await;
        let group = GROUPS[0];
        cluster.write_many(group, 0, 5).await;
        let leader = cluster.agreed_leader(group).await;
        cluster.running(leader, group).group.ensure_linearizable().await.expect("the leader may read");

        tracing::info!("a follower refuses, naming the leader and its address");
        let follower = *cluster.up.keys().find(|id| **id != leader).expect("a follower");
        let follower_group = &cluster.running(follower, group).group;
        let expected = GroupError::NotLeader {
            group,
            member: follower,
            leader: Some(leader),
            leader_address: Some(format!("10.0.0.{leader}:2380")),
        };
        assert_eq!(follower_group.client_write(b"x".to_vec(), None).await.unwrap_err(), expected);
        assert_eq!(follower_group.ensure_linearizable().await.unwrap_err(), expected);

        tracing::info!("both followers stop: the leader is a minority of one");
        let followers: Vec<NodeId> = cluster.up.keys().copied().filter(|id| *id != leader).collect();
        for id in followers {
            cluster.stop(id).await;
        }
        // It refuses as unavailable or timed out; or, if a follower's
        // election (a late heartbeat on a loaded machine) made it step down
        // just before, as a member that knows no leader.
        let refused = |error: &GroupError| {
            matches!(
                error,
                GroupError::Unavailable { .. }
                    | GroupError::Timeout { timeout_ms: 400, .. }
                    | GroupError::NotLeader { leader: None, .. }
            )
        };
        let alone = &cluster.running(leader, group).group;
        let error = alone.ensure_linearizable().await.unwrap_err();
        assert!(refused(&error), "{error}");
        let error = alone.client_write(b"not committed".to_vec(), None).await.unwrap_err();
        assert!(refused(&error) && !matches!(error, GroupError::Unavailable { .. }), "{error}");
        let machine = cluster.running(leader, group).machine.borrow();
        assert_eq!(machine.commands.len(), 5, "nothing past the quorum loss was applied");
    });
}

#[test]
fn a_write_applies_only_once_the_device_made_it_durable_and_a_failed_write_stops_the_group() {
    run(async {
        let faults = FaultNamespace::new(Arc::new(MemoryNamespace::new(LBA_BYTES, NAMESPACE_BLOCKS)));
        let plan = faults.plan();
        let disk = Disk::new(Arc::new(faults));
        let (log, _ticker) = disk.open_log();
        let router = Rc::new(LocalRouter::new());
        let machine = Rc::new(RefCell::new(TestMachine::default()));
        let group = RaftGroup::start(
            GROUPS[0],
            1,
            &fast_config(),
            log.clone(),
            machine.clone(),
            disk.snapshots.clone(),
            router.clone(),
        )
        .await
        .expect("start");
        assert!(group.bootstrap(&[Member::new(1, "10.0.0.1:2380")]).await.expect("bootstrap"));
        wait_for("a one-member group to elect itself", || {
            (group.metrics().current_leader == Some(1)).then_some(())
        })
        .await;
        group.client_write(b"before".to_vec(), None).await.expect("a write on a healthy device");
        let oversize = vec![7; group.command_bytes_max() + 1];
        let error = group.client_write(oversize, None).await.unwrap_err();
        assert!(matches!(error, GroupError::CommandTooLarge { group: 3, .. }), "{error}");
        let largest = vec![7; group.command_bytes_max()];
        group.client_write(largest, None).await.expect("the largest command fits, the group goes on");
        let applied = machine.borrow().commands.len();

        tracing::info!("nvme::write::latency: the command is applied only after its write completes");
        let latency = Duration::from_millis(60);
        plan.add_latency(latency);
        let started = Instant::now();
        let write = {
            let group = Rc::new(group);
            let writer = group.clone();
            let task =
                tokio::task::spawn_local(async move { writer.client_write(b"slow".to_vec(), None).await });
            tokio::time::sleep(latency / 2).await;
            assert_eq!(
                machine.borrow().commands.len(),
                applied,
                "nothing is applied while the write is in flight"
            );
            task.await.expect("the writer task").expect("the slow write");
            assert!(started.elapsed() >= latency, "the write waited for the device");
            Rc::try_unwrap(group).ok().expect("one owner left")
        };
        assert_eq!(machine.borrow().commands.len(), applied + 1);

        tracing::info!("nvme::write::error: a failed log write stops the group, nothing is applied");
        plan.fail_write(plan.writes() + 1);
        let error = write.client_write(b"lost".to_vec(), None).await.unwrap_err();
        assert!(matches!(error, GroupError::Stopped { group: 3, member: 1, .. }), "{error}");
        assert!(log.with(|log| log.failure().is_some()), "the shard log stopped");
        assert_eq!(machine.borrow().commands.len(), applied + 1, "the failed command was never applied");
        let error = write.client_write(b"after".to_vec(), None).await.unwrap_err();
        assert!(matches!(error, GroupError::Stopped { .. }), "a stopped group refuses writes: {error}");
        // Its metrics froze naming this member as leader: the group must not
        // pass for one that leads (or follows) anyone.
        assert_eq!(write.metrics().current_leader, Some(1), "openraft's metrics froze at the stop");
        assert!(write.failure().is_some_and(|reason| reason.contains("failed")), "{:?}", write.failure());
        assert_eq!(write.leader(), None, "a stopped group knows no leader");
        let error = write.wait_for_leader().await.unwrap_err();
        assert!(matches!(error, GroupError::Stopped { group: 3, .. }), "said at once: {error}");
    });
}

/// raft::vote::unproven_tail, the way back: a follower whose last record
/// rotted before its seal landed comes back refusing votes in both groups;
/// the leaders bring its logs past the point, and it votes again (the
/// refusal would otherwise leave a group one member short for good).
#[test]
fn a_member_that_dropped_an_unproven_tail_votes_again_once_a_leader_caught_it_up() {
    run(async {
        let mut cluster = Cluster::new(fast_config()).await;
        for group in GROUPS {
            cluster.write_many(group, 0, 10).await;
            cluster.converged(group, 10).await;
        }

        tracing::info!("a follower stops; its seal never landed and its last record rots");
        let follower = cluster.plain_follower().await;
        let (last, seals) = cluster.up[&follower].log.with(|log| log.last_record_and_seals());
        cluster.stop(follower).await;
        let namespace = cluster.down[&follower].namespace.clone();
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        for seal in seals {
            let zeroes = queue.allocate(LBA_BYTES as usize);
            crate::wal::blocking::write(queue.as_mut(), seal, zeroes, true).expect("zero the seal");
        }
        let last = last.expect("records");
        let mut block = crate::wal::blocking::read(queue.as_mut(), last, 1).expect("read the last record");
        block[50] ^= 0x40; // the term field: covered by the CRC whatever the record
        crate::wal::blocking::write(queue.as_mut(), last, block, true).expect("damage the last record");
        drop(queue);

        tracing::info!("it restarts refusing votes, and the leaders bring it past the point");
        cluster.restart(follower).await;
        for group in GROUPS {
            assert!(
                cluster.running(follower, group).group.unproven_after().is_some(),
                "group {group}: every group of the shard may have lost the record"
            );
        }
        for group in GROUPS {
            cluster.write_many(group, 10, 5).await;
            cluster.converged(group, 15).await;
            wait_for(&format!("member {follower} to vote again in group {group}"), || {
                cluster.running(follower, group).group.unproven_after().is_none().then_some(())
            })
            .await;
        }
        let listed = cluster.up[&follower].log.with(|log| GROUPS.map(|group| log.may_have_lost_after(group)));
        assert_eq!(listed, GROUPS.map(|_| None), "the next seal lists no group");
    });
}

/// raft::vote::known_loss: a follower finds a damaged entry in the middle
/// of its log. Recovery skips it and cuts the group there; with the option
/// for unproven tails off, the group still refuses votes (the loss is
/// known), its leader repairs the entries it lost, and it votes again.
#[test]
fn a_member_that_skipped_a_damaged_record_mid_log_refuses_votes_until_repaired_whatever_the_option() {
    run(async {
        let config = GroupConfig { refuse_votes_after_unproven_tail: false, ..fast_config() };
        let mut cluster = Cluster::new(config).await;
        let group = GROUPS[0];
        cluster.write_many(group, 0, 10).await;
        cluster.converged(group, 10).await;

        tracing::info!("a follower stops, and an entry in the middle of its log rots");
        let follower = cluster.plain_follower().await;
        let last = cluster.up[&follower].log.with(|log| log.last_index(group)).expect("entries");
        let entries = cluster.up[&follower].log.with(|log| log.entry_lbas(group));
        assert!(entries.len() >= 6, "entries in the log: {entries:?}");
        let (damaged_index, damaged) = entries[entries.len() / 2];
        cluster.stop(follower).await;
        let namespace = cluster.down[&follower].namespace.clone();
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        let mut block = crate::wal::blocking::read(queue.as_mut(), damaged, 1).expect("read the record");
        block[50] ^= 0x40; // the term field: covered by the CRC
        crate::wal::blocking::write(queue.as_mut(), damaged, block, true).expect("damage the record");
        drop(queue);

        tracing::info!("it restarts with the group cut, refusing votes; the leader repairs it");
        cluster.restart(follower).await;
        let log = cluster.up[&follower].log.clone();
        let repaired = log.with(|log| log.repaired().cloned()).expect("recovery skipped the record");
        assert_eq!(repaired.cut.get(&group), Some(&(damaged_index - 1)), "{repaired:?}");
        assert_eq!(
            cluster.running(follower, group).group.unproven_after_at_start(),
            Some(damaged_index - 1),
            "a known loss is refused with raft.refuse_votes_after_unproven_tail off"
        );
        cluster.write_many(group, 10, 5).await;
        cluster.converged(group, 15).await;
        wait_for(&format!("member {follower} to vote again in group {group}"), || {
            cluster.running(follower, group).group.unproven_after().is_none().then_some(())
        })
        .await;
        assert!(log.with(|log| log.last_index(group)).is_some_and(|index| index > last));
    });
}

/// raft::vote::unproven_tail: a member votes for itself, and the vote record
/// (its last, no seal after it, as if the power went before the seal
/// landed) is damaged at rest. Recovery drops it as a tail it cannot prove
/// was never acknowledged; the member must then refuse votes, or it would
/// vote twice in the term of the vote it lost.
#[test]
fn a_member_that_dropped_an_unproven_tail_grants_no_vote() {
    run(async {
        let config = fast_config();
        let memory = Arc::new(MemoryNamespace::new(LBA_BYTES, NAMESPACE_BLOCKS));
        let disk = Disk::new(memory.clone());
        let router = Rc::new(LocalRouter::new());
        let start = |log: SharedLog| {
            let machine = Rc::new(RefCell::new(TestMachine::default()));
            RaftGroup::start(GROUPS[0], 5, &config, log, machine, disk.snapshots.clone(), router.clone())
        };
        let (log, ticker) = disk.open_log();
        let group = start(log.clone()).await.expect("start");
        // Peers that never answer: member 5 stands for election and votes for
        // itself, and no leader comes.
        let members = [5, 6, 7].map(|id| Member::new(id, format!("10.0.0.{id}:2380")));
        group.bootstrap(&members).await.expect("bootstrap");
        let vote = wait_for("member 5 to vote for itself", || {
            persisted_vote(&log, GROUPS[0]).filter(|vote| vote.leader_id.voted_for() == Some(5))
        })
        .await;
        group.raft().runtime_config().elect(false);
        group.shutdown().await.expect("shutdown");
        ticker.abort();
        let vote = persisted_vote(&log, GROUPS[0]).unwrap_or(vote);
        let (last, seals) = log.with(|log| log.last_record_and_seals());
        drop(log);

        tracing::info!("the seal never landed, and the last record (the vote) rots");
        for seal in seals {
            memory.write_bytes(seal * u64::from(LBA_BYTES), &vec![0u8; LBA_BYTES as usize]);
        }
        let last = last.expect("records");
        memory.write_bytes(last * u64::from(LBA_BYTES) + 80, b"bit rot");
        let (log, _ticker) = disk.open_log();
        assert!(log.with(|log| log.unproven_tail().is_some()), "recovery says what it dropped");
        let recovered = persisted_vote(&log, GROUPS[0]);
        assert!(recovered < Some(vote), "the vote {vote} was lost: recovered {recovered:?}");
        let group = start(log).await.expect("restart");
        assert!(group.unproven_after().is_some());
        // Standing for election would vote for itself again in that term and
        // hide the refusal this test is about; the group turns elections off
        // itself too, which the simulator's vote checker covers.
        group.raft().runtime_config().elect(false);
        // Past the leader lease, which would refuse any vote by itself.
        tokio::time::sleep(Duration::from_millis(config.election_timeout_max_ms + 50)).await;
        let far_ahead = Some(LogId::new(LeaderId::new(vote.leader_id.term + 1, 6), 1_000));
        let same_term = openraft::raft::VoteRequest::new(Vote::new(vote.leader_id.term, 6), far_ahead);
        let answer = group.handle_vote(same_term).await.expect("vote answer");
        assert!(
            !answer.vote_granted,
            "member 5 voted for itself in term {} and lost that vote: granting member 6 votes twice",
            vote.leader_id.term
        );
    });
}

#[test]
fn a_restarted_member_never_grants_a_vote_below_the_one_it_persisted() {
    run(async {
        let config = fast_config();
        let disk = Disk::memory();
        let router = Rc::new(LocalRouter::new());
        let start = |log: SharedLog| {
            let machine = Rc::new(RefCell::new(TestMachine::default()));
            RaftGroup::start(GROUPS[0], 5, &config, log, machine, disk.snapshots.clone(), router.clone())
        };
        let (log, ticker) = disk.open_log();
        let group = start(log.clone()).await.expect("start");
        group.bootstrap(&[Member::new(5, "10.0.0.5:2380")]).await.expect("bootstrap");
        let vote = wait_for("member 5 to elect itself", || {
            let metrics = group.metrics();
            (metrics.current_leader == Some(5)).then_some(metrics.vote)
        })
        .await;
        assert_eq!(persisted_vote(&log, GROUPS[0]), Some(vote));
        group.shutdown().await.expect("shutdown");
        ticker.abort();
        drop(log);

        tracing::info!("after a restart, with elections off, the persisted vote decides");
        let (log, _ticker) = disk.open_log();
        let group = start(log).await.expect("restart");
        group.raft().runtime_config().elect(false);
        // Past the leader lease, which would refuse any vote by itself.
        tokio::time::sleep(Duration::from_millis(config.election_timeout_max_ms + 50)).await;
        let far_ahead = Some(LogId::new(LeaderId::new(vote.leader_id.term + 1, 1), 1_000));
        let below = openraft::raft::VoteRequest::new(Vote::new(vote.leader_id.term, 1), far_ahead);
        let answer = group.handle_vote(below).await.expect("vote answer");
        assert!(!answer.vote_granted, "member 5 voted {vote} before the restart and must not go below it");
        let above = openraft::raft::VoteRequest::new(Vote::new(vote.leader_id.term + 1, 1), far_ahead);
        let answer = group.handle_vote(above).await.expect("vote answer");
        assert!(
            answer.vote_granted,
            "a vote in a later term is granted, so the refusal above was the vote's"
        );
    });
}

#[test]
fn a_purge_lost_after_its_vote_slot_was_written_leaves_the_earlier_purge_point_readable() {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};

    run(async {
        let faults = FaultNamespace::new(Arc::new(MemoryNamespace::new(LBA_BYTES, NAMESPACE_BLOCKS)));
        let plan = faults.plan();
        let disk = Disk::new(Arc::new(faults));
        let (log, ticker) = disk.open_log();
        let mut store = GroupLogStore::open(log.clone(), GROUPS[0]).expect("open");
        // Entries 0..=4 from leader 7 in term 1, 5..=9 from leader 8 in term 2.
        let log_id = |index: u64| {
            let leader = if index < 5 { LeaderId::new(1, 7) } else { LeaderId::new(2, 8) };
            LogId::new(leader, index)
        };
        let entries = (0..10).map(|index| Entry { log_id: log_id(index), payload: EntryPayload::Blank });
        store.blocking_append(entries).await.expect("append");
        store.purge(log_id(3)).await.expect("first purge");

        tracing::info!(
            "nvme::write::error: the vote slot naming the next purge point is durable, its purge is not"
        );
        plan.fail_write(plan.writes() + 2);
        let error = store.purge(log_id(6)).await.unwrap_err();
        assert!(error.to_string().contains("purging up to"), "{error}");
        ticker.abort();
        drop((store, log));

        let (log, _ticker) = disk.open_log();
        let mut store = GroupLogStore::open(log.clone(), GROUPS[0]).expect("reopen");
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(3)), "the log stayed at the first purge point");
        assert_eq!(state.last_log_id, Some(log_id(9)));
        store.purge(log_id(6)).await.expect("the purge goes through on a healthy device");
        assert_eq!(store.get_log_state().await.expect("log state").last_purged_log_id, Some(log_id(6)));
    });
}

#[test]
fn a_group_whose_log_is_purged_past_its_stored_snapshot_refuses_to_start() {
    run(async {
        let config = GroupConfig {
            snapshot_logs_since_last: 5,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..fast_config()
        };
        let mut disk = Disk::memory();
        let router = Rc::new(LocalRouter::new());
        let (log, ticker) = disk.open_log();
        let machine = Rc::new(RefCell::new(TestMachine::default()));
        let group = RaftGroup::start(
            GROUPS[0],
            1,
            &config,
            log.clone(),
            machine,
            disk.snapshots.clone(),
            router.clone(),
        )
        .await
        .expect("start");
        group.bootstrap(&[Member::new(1, "10.0.0.1:2380")]).await.expect("bootstrap");
        wait_for("member 1 to elect itself", || (group.metrics().current_leader == Some(1)).then_some(()))
            .await;
        for number in 0..20 {
            group.client_write(format!("command {number}").into_bytes(), None).await.expect("write");
        }
        wait_for("the log to be purged", || log.with(|log| log.purged(GROUPS[0]))).await;
        group.shutdown().await.expect("shutdown");
        ticker.abort();
        drop(log);

        tracing::info!("the snapshot store is lost, the purged log stays");
        disk.snapshots = Rc::new(MemorySnapshotStore::new());
        let (log, _ticker) = disk.open_log();
        let machine = Rc::new(RefCell::new(TestMachine::default()));
        let error = RaftGroup::start(GROUPS[0], 1, &config, log, machine, disk.snapshots.clone(), router)
            .await
            .err()
            .expect("a group that cannot replay its log must not start");
        assert!(
            matches!(&error, GroupError::Start { reason, .. } if reason.contains("the snapshot was lost")),
            "{error}"
        );
    });
}

#[test]
fn a_config_whose_heartbeat_outlasts_the_election_timeout_is_refused_with_its_values() {
    assert!(fast_config().openraft_config().is_ok());
    let config = GroupConfig { heartbeat_ms: 200, ..fast_config() };
    let error = config.openraft_config().unwrap_err();
    assert!(
        error.contains("heartbeat_ms = 200") && error.contains("election_timeout_min_ms = 80"),
        "{error}"
    );
    let config = GroupConfig { election_timeout_min_ms: 300, election_timeout_max_ms: 300, ..fast_config() };
    assert!(config.openraft_config().is_err(), "the election timeout needs a range to pick from");
}

#[test]
fn a_member_restarted_without_a_quorum_applies_what_it_knew_committed() {
    run(async {
        let mut cluster = Cluster::new(fast_config()).await;
        for group in GROUPS {
            cluster.write_many(group, 0, 30).await;
            cluster.converged(group, 30).await;
        }
        // The commit of a member's last appends rides on what it writes
        // next (an append, or the seal when its log goes idle): one more
        // write carries the commit of the 30 before it to every member.
        for group in GROUPS {
            cluster.write_many(group, 30, 1).await;
            cluster.converged(group, 31).await;
        }
        let applied: BTreeMap<GroupId, Vec<(u64, Vec<u8>)>> = GROUPS
            .iter()
            .map(|group| (*group, cluster.running(1, *group).machine.borrow().commands.clone()))
            .collect();

        tracing::info!("every member stops; one comes back alone, with no quorum and no leader");
        for id in [1, 2, 3] {
            cluster.stop(id).await;
        }
        for id in [1, 2, 3] {
            cluster.restart(id).await;
            for group in GROUPS {
                let metrics = cluster.running(id, group).group.metrics();
                assert_ne!(metrics.state, ServerState::Leader, "member {id} alone leads group {group}");
                let machine = cluster.running(id, group).machine.clone();
                let commands = machine.borrow().commands.clone();
                assert!(
                    commands.len() >= 30,
                    "member {id}, group {group}: a restart without a quorum applied {} commands, \
                     fewer than the 30 it knew committed before its last append: its reads go back in time",
                    commands.len()
                );
                assert_eq!(commands[..], applied[&group][..commands.len()], "member {id}, group {group}");
            }
            cluster.stop(id).await;
        }
    });
}
