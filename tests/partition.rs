//! A member partitioned away from a 3-node cluster by cutting real sockets:
//! each `nvkv serve` runs in a network namespace of its own, on its own IP,
//! joined to the others through veth pairs and a bridge, and the clients
//! (the CLI) run inside the namespaces too. Taking the cut member's bridge
//! port down leaves it a minority of one: it must refuse writes and
//! linearizable reads with the typed error unavailable within the request
//! timeout, never hang or answer stale data as linearizable, while the
//! two others elect leaders where needed and keep serving. After the port
//! comes back up every member must reach the same applied index with the
//! same store (the state hash `nvkv status -w json` reports per group).
//! And membership changes under a partition: the member cut away is
//! removed by the majority while a writer puts, and a fourth member added
//! and promoted; after healing the removed member learns of its removal
//! and refuses clients, while the new configuration's three members reach
//! the same state holding every acknowledged put.
//!
//! Needs network namespaces (root): without them the test fails, saying so,
//! unless NVKV_TEST_SKIP_NETNS=1 opts into skipping it.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::netns::{Network, SKIP_VARIABLE};
use common::*;
use nvkv::kv::partition::Partitioner;

/// Groups in the test cluster: one shard per member, three groups each.
const GROUPS: usize = 3;
/// Every member's client port, on its own address (peer port: + 2).
const CLIENT_PORT: u16 = 7000;
/// The store's default partition depth (`store.partition_depth`).
const PARTITION_DEPTH: usize = 2;
/// How long one CLI call may run before the test calls it hung: well past
/// the server's request timeout (5 s), which bounds every answer.
const CALL_LIMIT: Duration = Duration::from_secs(25);

/// The members' namespaces as the test's clients see them.
struct Cluster<'a> {
    network: &'a Network,
}

impl Cluster<'_> {
    fn endpoint(id: u64) -> String {
        format!("{}:{CLIENT_PORT}", Network::address(id))
    }

    /// Runs the CLI inside member `from`'s namespace against member `to`.
    fn cli(&self, from: u64, to: u64, args: &[&str]) -> Result<String, String> {
        let mut command = self.network.command(from, env!("CARGO_BIN_EXE_nvkv"));
        command.args(["--endpoints", &Cluster::endpoint(to)]).args(args);
        let output = bounded(command)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Member `id`'s groups as its own `nvkv status -w json` shows them.
    fn groups(&self, id: u64) -> Result<Vec<serde_json::Value>, String> {
        let text = self.cli(id, id, &["status", "-w", "json"])?;
        let status: serde_json::Value =
            serde_json::from_str(&text).map_err(|error| format!("status printed no JSON: {error}"))?;
        status[0]["groups"].as_array().cloned().ok_or(format!("no groups in {status}"))
    }

    /// Every group's leader as member `id` sees it (0: none known).
    fn leaders(&self, id: u64) -> Result<Vec<u64>, String> {
        Ok(self.groups(id)?.iter().map(|group| group["leader"].as_u64().unwrap_or(0)).collect())
    }
}

/// Runs `command` to its end, or kills it past [`CALL_LIMIT`] and says so.
/// Its output is read while it runs: a child whose output outgrows the pipe
/// (a prefix read of hundreds of keys as JSON) would otherwise block on its
/// write and look hung.
fn bounded(mut command: Command) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|pipe| Box::new(pipe) as Box<dyn std::io::Read + Send>));
    let stderr = drain(child.stderr.take().map(|pipe| Box::new(pipe) as Box<dyn std::io::Read + Send>));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|error| error.to_string())? {
            break status;
        }
        if started.elapsed() > CALL_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("HUNG: {command:?} gave no answer within {CALL_LIMIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().map_err(|_| "reading the child's stdout panicked".to_string())?;
    let stderr = stderr.join().map_err(|_| "reading the child's stderr panicked".to_string())?;
    Ok(Output { status, stdout, stderr })
}

/// One key prefix per group, in group order: `/part/<n>/` for the first
/// `n` that the partition function puts in each group.
fn prefixes() -> Vec<String> {
    let partitioner = Partitioner::new(GROUPS as u32, PARTITION_DEPTH).expect("a valid partitioner");
    (0..GROUPS as u32)
        .map(|group| {
            (0..1000)
                .map(|n| format!("/part/{n}/"))
                .find(|prefix| partitioner.group_of(prefix.as_bytes()) == group)
                .expect("some prefix falls in every group")
        })
        .collect()
}

/// Whether `error` (the CLI's stderr) is the typed refusal of a member
/// that cannot reach a quorum: code unavailable (the leader heard no
/// quorum, a follower learned of no leader, or the request timed out).
fn refused_as_unavailable(error: &str) -> bool {
    error.contains("refused the request: Unavailable: group ")
}

/// A network of three members' namespaces, or `None` (said loudly) where
/// namespaces cannot be made and NVKV_TEST_SKIP_NETNS=1 allows skipping.
fn network_or_skip(ids: &[u64]) -> Option<Network> {
    match Network::new(ids) {
        Ok(network) => Some(network),
        Err(reason) if std::env::var(SKIP_VARIABLE).as_deref() == Ok("1") => {
            eprintln!(
                "SKIPPED (no partition was tested): network namespaces are not available here ({reason}); \
                 {SKIP_VARIABLE}=1 opted into skipping"
            );
            None
        }
        Err(reason) => panic!(
            "the partition tests need network namespaces (run as root with iproute2), and making them \
             failed: {reason}; set {SKIP_VARIABLE}=1 to skip them where that is impossible"
        ),
    }
}

/// Starts `nvkv serve` for members 1 to 3, each in its namespace of
/// `network`, their data in `directory`. The daemons must be dropped
/// (killed) before the network.
fn start_members(network: &Network, directory: &std::path::Path) -> (Vec<Member>, Vec<Daemon>) {
    let hosts: Vec<_> = (1..=3).map(|id| (id, Network::address(id), CLIENT_PORT)).collect();
    let members = member_configs(directory, GROUPS, &hosts);
    let daemons = members
        .iter()
        .map(|member| {
            let mut command = network.command(member.id, env!("CARGO_BIN_EXE_nvkv"));
            command.args(["serve", "--config"]).arg(&member.config);
            Daemon::spawn(command)
        })
        .collect();
    (members, daemons)
}

/// Starts member 4 in join mode in its namespace of `network`: its config
/// lists members 1 to 4, its data in `directory`.
fn start_joining(network: &Network, directory: &std::path::Path) -> Daemon {
    let joining = directory.join("joining");
    std::fs::create_dir_all(&joining).expect("a directory for member 4");
    let hosts: Vec<_> = (1..=4).map(|id| (id, Network::address(id), CLIENT_PORT)).collect();
    let config = &member_configs(&joining, GROUPS, &hosts)[3].config;
    let text = std::fs::read_to_string(config).expect("member 4's config");
    let cluster = "[cluster]\nname = \"test-cluster\"\n";
    assert!(text.contains(cluster), "{text}");
    std::fs::write(config, text.replace(cluster, &format!("{cluster}join = true\n"))).expect("join mode");
    let mut command = network.command(4, env!("CARGO_BIN_EXE_nvkv"));
    command.args(["serve", "--config"]).arg(config);
    Daemon::spawn(command)
}

/// The first member that leads some group and follows in another, else the
/// leader of group 0: cutting it away leaves the minority holding both a
/// leader that lost its quorum and a follower that loses its leader.
fn victim_of(agreed: &[u64]) -> u64 {
    (1..=3).find(|id| agreed.contains(id) && agreed.iter().any(|leader| leader != id)).unwrap_or(agreed[0])
}

/// (leader, applied index, state hash) of every group as member `id` sees
/// them.
fn group_states(cluster: &Cluster<'_>, id: u64) -> Result<Vec<(u64, u64, u64)>, String> {
    Ok(cluster
        .groups(id)?
        .iter()
        .map(|group| {
            (
                group["leader"].as_u64().unwrap_or(0),
                group["applied_index"].as_u64().unwrap_or(0),
                group["state_hash"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Waits until `ids` see every group led, at one applied index with one
/// state hash; returns that view.
fn states_converge(cluster: &Cluster<'_>, ids: &[u64]) -> Vec<(u64, u64, u64)> {
    eventually("every member at the same applied index with the same state hash", || {
        let states = ids.iter().map(|id| group_states(cluster, *id)).collect::<Result<Vec<_>, _>>()?;
        let led = states[0].iter().all(|(leader, _, _)| *leader != 0);
        if led && states.iter().all(|member| *member == states[0]) {
            Ok(states[0].clone())
        } else {
            Err(format!("(leader, applied index, state hash) by group, for members {ids:?}: {states:?}"))
        }
    })
}

#[test]
fn a_member_cut_away_refuses_the_majority_serves_and_all_converge_after_healing() {
    let Some(network) = network_or_skip(&[1, 2, 3]) else { return };
    eprintln!("method: {}; a partition takes a member's bridge port down", network.describe());
    let directory = tempfile::tempdir().expect("tempdir");
    let (_members, mut daemons) = start_members(&network, directory.path());
    let cluster = Cluster { network: &network };
    for daemon in &mut daemons {
        daemon.wait_ready();
    }
    let prefixes = prefixes();

    eprintln!("phase: every group elects one leader, the same on every member");
    let agreed = eventually("one leader per group, the same on every member", || {
        let seen = (1..=3).map(|id| cluster.leaders(id)).collect::<Result<Vec<_>, _>>()?;
        common::cluster::agreed_leaders(&seen)
    });
    eprintln!("leaders by group: {agreed:?}");
    for (group, prefix) in prefixes.iter().enumerate() {
        let from = group as u64 % 3 + 1;
        cluster.cli(from, from, &["put", &format!("{prefix}before"), "1"]).expect("a put before the cut");
    }

    // A member that leads some groups and follows in others is cut away
    // where there is one (leaders are not spread yet: one member may lead
    // them all), so the minority holds both a leader that lost its quorum
    // and a follower that loses its leader.
    let victim = victim_of(&agreed);
    let majority: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    eprintln!("phase: cut member {victim} away (bridge port{victim} down); members {majority:?} remain");
    network.cut(victim);

    eprintln!("phase: the majority elects leaders where needed and serves writes and linearizable reads");
    for (group, prefix) in prefixes.iter().enumerate() {
        let key = format!("{prefix}majority");
        // Retried until a leader on the majority side takes it; the value
        // is the same every time, so a try that timed out but applied
        // changes nothing.
        eventually(&format!("a write to group {group} through member {}", majority[0]), || {
            cluster.cli(majority[0], majority[0], &["put", &key, "2"])
        });
        let got = cluster.cli(majority[1], majority[1], &["get", &key]).expect("a linearizable get");
        assert_eq!(got, format!("{key}\n2\n"), "member {} reads the majority's write", majority[1]);
    }
    let leaders = cluster.leaders(majority[0]).expect("status");
    assert!(
        leaders.iter().all(|leader| majority.contains(leader)),
        "every group is led on the majority side: {leaders:?}"
    );

    eprintln!("phase: member {victim} alone refuses writes and linearizable reads with a typed error");
    let refusals: Vec<(String, Duration, Result<String, String>)> = std::thread::scope(|scope| {
        let calls: Vec<_> = prefixes
            .iter()
            .flat_map(|prefix| {
                [
                    vec!["put".to_string(), format!("{prefix}minority"), "3".to_string()],
                    vec!["get".to_string(), format!("{prefix}before")],
                ]
            })
            .map(|args| {
                let cluster = &cluster;
                scope.spawn(move || {
                    let started = Instant::now();
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let outcome = cluster.cli(victim, victim, &args);
                    (args.join(" "), started.elapsed(), outcome)
                })
            })
            .collect();
        calls.into_iter().map(|call| call.join().expect("the call thread")).collect()
    });
    for (call, took, outcome) in &refusals {
        eprintln!("member {victim}: `{call}` after {took:?}: {outcome:?}");
        match outcome {
            Err(error) => assert!(
                refused_as_unavailable(error),
                "`{call}` on the cut member must be refused as unavailable, not: {error}"
            ),
            Ok(answer) => panic!("`{call}` on the cut member must be refused, it answered {answer:?}"),
        }
    }
    let stale = cluster
        .cli(victim, victim, &["get", &format!("{}before", prefixes[0]), "--consistency", "s"])
        .expect("a serializable get is served from the member's own store");
    assert_eq!(stale, format!("{}before\n1\n", prefixes[0]));

    eprintln!("phase: heal (port{victim} up); every member converges to the same state");
    network.heal(victim);
    eventually(&format!("member {victim} serving writes again"), || {
        cluster.cli(victim, victim, &["put", &format!("{}after", prefixes[1]), "4"])
    });
    let states = states_converge(&cluster, &[1, 2, 3]);
    eprintln!("converged: (leader, applied index, state hash) by group: {states:?}");
    for (group, prefix) in prefixes.iter().enumerate() {
        let got = cluster.cli(victim, victim, &["get", &format!("{prefix}majority")]).expect("get");
        assert_eq!(
            got,
            format!("{prefix}majority\n2\n"),
            "member {victim} has group {group}'s majority write"
        );
        let got = cluster.cli(victim, victim, &["get", &format!("{prefix}minority")]).expect("get");
        assert_eq!(got, "", "the write refused during the cut is in no replica of group {group}");
    }
}

/// `member list -w json` through member `id`: every member's id, and
/// whether it is a learner.
fn member_list(cluster: &Cluster<'_>, id: u64) -> Result<Vec<(u64, bool)>, String> {
    let text = cluster.cli(id, id, &["member", "list", "-w", "json"])?;
    let list: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| format!("member list printed no JSON: {error}"))?;
    Ok(list["members"]
        .as_array()
        .ok_or(format!("no members in {list}"))?
        .iter()
        .filter_map(|member| Some((member["id"].as_u64()?, member["is_learner"].as_bool()?)))
        .collect())
}

/// Runs a membership command through member `through` until it answers,
/// or until the member list shows it took effect anyway (a try that timed
/// out may have applied all the same): `done` says whether it did.
fn membership_change(
    cluster: &Cluster<'_>,
    through: u64,
    args: &[&str],
    done: impl Fn(&[(u64, bool)]) -> bool,
) -> String {
    eventually(&format!("`nvkv {}` through member {through}", args.join(" ")), || {
        match cluster.cli(through, through, args) {
            Ok(answer) => Ok(answer),
            Err(error) => match member_list(cluster, through) {
                Ok(list) if done(&list) => Ok(format!("done (a try answered {error:?})")),
                _ => Err(error),
            },
        }
    })
}

#[test]
fn a_member_cut_away_is_removed_and_another_added_by_the_majority_and_all_converge_after_healing() {
    use std::sync::atomic::{AtomicBool, Ordering};

    // Member 4's namespace waits, empty, until it joins.
    let Some(network) = network_or_skip(&[1, 2, 3, 4]) else { return };
    eprintln!("method: {}; a partition takes a member's bridge port down", network.describe());
    let directory = tempfile::tempdir().expect("tempdir");
    let (_members, mut daemons) = start_members(&network, directory.path());
    let cluster = Cluster { network: &network };
    for daemon in &mut daemons {
        daemon.wait_ready();
    }
    let agreed = eventually("one leader per group, the same on every member", || {
        let seen = (1..=3).map(|id| cluster.leaders(id)).collect::<Result<Vec<_>, _>>()?;
        common::cluster::agreed_leaders(&seen)
    });
    let victim = victim_of(&agreed);
    let majority: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    let remaining = [majority.clone(), vec![4]].concat();
    eprintln!("leaders by group: {agreed:?}; member {victim} will be cut away and removed, member 4 added");

    let stop = AtomicBool::new(false);
    let (acknowledged, changed_at) = std::thread::scope(|scope| {
        // Stops the writer however this scope ends: a failed check below
        // panics, and the scope would otherwise wait for the writer for ever.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop_writer = StopOnDrop(&stop);
        eprintln!("phase: a writer puts through members {majority:?}, each key once");
        let writer = scope.spawn(|| {
            let mut acknowledged = Vec::new();
            for sequence in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let through = majority[sequence % majority.len()];
                let key = format!("/member-load/{sequence:05}/k");
                if let Ok(answer) = cluster.cli(through, through, &["put", &key, &key, "-w", "json"]) {
                    let answer: serde_json::Value =
                        serde_json::from_str(&answer).expect("put -w json prints JSON");
                    let revision = answer["header"]["revision"].as_i64().expect("the put's revision");
                    acknowledged.push((key, revision, Instant::now()));
                }
            }
            acknowledged
        });
        std::thread::sleep(Duration::from_secs(1));

        eprintln!("phase: cut member {victim} away; member remove {victim} through member {}", majority[0]);
        network.cut(victim);
        let removed =
            membership_change(&cluster, majority[0], &["member", "remove", &victim.to_string()], |list| {
                list.iter().all(|(id, _)| *id != victim)
            });
        eprintln!("member remove {victim}: {removed:?}");
        for id in &majority {
            let ids: Vec<u64> =
                member_list(&cluster, *id).expect("member list").iter().map(|m| m.0).collect();
            assert_eq!(ids, majority, "member {id}'s member list after the removal");
        }

        eprintln!(
            "phase: member 4 starts in join mode and is added and promoted, member {victim} still cut away"
        );
        let joining = start_joining(&network, directory.path());
        daemons.push(joining);
        daemons.last_mut().expect("member 4").wait_ready();
        let (peer, client) = (format!("{}:{}", Network::address(4), CLIENT_PORT + 2), Cluster::endpoint(4));
        let add = [
            "member",
            "add",
            "4",
            "--name",
            "node4",
            "--peer-urls",
            &peer,
            "--client-urls",
            &client,
            "--learner",
        ];
        let added =
            membership_change(&cluster, majority[0], &add, |list| list.iter().any(|(id, _)| *id == 4));
        eprintln!("member add 4: {added:?}");
        let promoted = membership_change(&cluster, majority[1], &["member", "promote", "4"], |list| {
            list.contains(&(4, false))
        });
        eprintln!("member promote 4: {promoted:?}");
        let changed_at = Instant::now();
        for id in &remaining {
            let list = eventually(&format!("member {id} listing members {remaining:?}, all voters"), || {
                let list = member_list(&cluster, *id)?;
                if list
                    .iter()
                    .map(|(id, learner)| (*id, *learner))
                    .eq(remaining.iter().map(|id| (*id, false)))
                {
                    Ok(list)
                } else {
                    Err(format!("member {id} lists {list:?}"))
                }
            });
            eprintln!("member {id} lists {list:?}");
        }
        std::thread::sleep(Duration::from_secs(1));

        eprintln!("phase: heal (port{victim} up); member {victim} learns it was removed and refuses clients");
        network.heal(victim);
        eventually(&format!("member {victim} refusing clients as removed"), || {
            match cluster.cli(victim, victim, &["get", "/member-load/00000/k", "--consistency", "s"]) {
                Err(error) if error.contains("NotMember") && error.contains("was removed") => Ok(()),
                other => Err(format!("member {victim} answered {other:?}")),
            }
        });
        // Nor does it list its old membership as the cluster's.
        eventually(&format!("member {victim} refusing member list as removed"), || {
            match cluster.cli(victim, victim, &["member", "list"]) {
                Err(error) if error.contains("was removed") => Ok(()),
                other => Err(format!("member {victim} listed {other:?}")),
            }
        });
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        (writer.join().expect("the writer thread"), changed_at)
    });
    let after_change = acknowledged.iter().filter(|(_, _, at)| *at > changed_at).count();
    eprintln!(
        "{} puts acknowledged, {after_change} after the membership changes committed",
        acknowledged.len()
    );
    assert!(after_change > 0, "no put was acknowledged after the membership changes");

    eprintln!("phase: members {remaining:?} converge and hold every acknowledged put");
    let states = states_converge(&cluster, &remaining);
    eprintln!("converged: (leader, applied index, state hash) by group: {states:?}");
    assert!(states.iter().all(|(leader, _, _)| remaining.contains(leader)), "{states:?}");
    for id in &remaining {
        let listed = cluster
            .cli(*id, *id, &["get", "/member-load/", "--prefix", "-w", "json"])
            .unwrap_or_else(|error| panic!("a prefix read through member {id}: {error}"));
        let listed: serde_json::Value = serde_json::from_str(&listed).expect("get -w json prints JSON");
        let found: std::collections::BTreeMap<&str, (&str, i64)> = listed["kvs"]
            .as_array()
            .expect("kvs")
            .iter()
            .map(|kv| {
                let text = |field: &str| kv[field].as_str().expect("key and value as text");
                (text("key"), (text("value"), kv["mod_revision"].as_i64().expect("a revision")))
            })
            .collect();
        // Every key is written once: an acknowledged put must be there at
        // the revision its answer named.
        for (key, revision, _) in &acknowledged {
            assert_eq!(
                found.get(key.as_str()),
                Some(&(key.as_str(), *revision)),
                "member {id}: acknowledged put {key} at revision {revision}"
            );
        }
    }
    for id in &remaining {
        let ids: Vec<u64> = member_list(&cluster, *id).expect("member list").iter().map(|m| m.0).collect();
        assert_eq!(ids, remaining, "member {id}'s member list after healing: member {victim} stays removed");
    }
}
