//! Online membership changes on real `nvkv serve` processes: a 4th member
//! started in join mode is added to every group as a learner, catches up,
//! is promoted, and an original member is removed, all while a writer keeps
//! putting; every acknowledged put is readable from the new member, and the
//! removed member refuses client requests; and a member removed while it
//! was down learns it from its peers when it restarts.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{caught_up, eventually, Member};
use common::*;

/// Groups in the test cluster: one shard per member, two groups each.
const GROUPS: usize = 2;

/// Members 1 to 4: 1 to 3 bootstrap the cluster (their configs list only
/// them), 4 joins (its config lists all four, with `join = true`).
fn configs(directory: &Path) -> Vec<Member> {
    let members: Vec<Member> = (1..=4)
        .map(|id| {
            let base = common::cluster::free_ports(3);
            let config = directory.join(format!("node{id}.toml"));
            Member { id, client_port: base, peer_port: base + 2, config }
        })
        .collect();
    let listed = |count: usize| -> String {
        members[..count]
            .iter()
            .map(|member| {
                format!(
                    "[[cluster.members]]\nid = {}\nname = \"node{}\"\nclient_address = \"127.0.0.1:{}\"\n\
                     peer_address = \"127.0.0.1:{}\"\n\n",
                    member.id, member.id, member.client_port, member.peer_port
                )
            })
            .collect()
    };
    for member in &members {
        let joining = member.id == 4;
        let text = format!(
            "[node]\nmember_id = {id}\nname = \"node{id}\"\ndata_dir = \"{data}\"\n\
             client_address = \"127.0.0.1:{client}\"\npeer_address = \"127.0.0.1:{peer}\"\n\n\
             [etcd]\naddress = \"127.0.0.1:0\"\n\n[reactor]\nshards = 1\n\n[namespace]\nnamespace_bytes = \"64MiB\"\n\n\
             [log]\ngroups_per_shard = {GROUPS}\n\n[cluster]\nname = \"member-test\"\njoin = {joining}\n\n{list}",
            id = member.id,
            data = directory.join(format!("data{}", member.id)).display(),
            client = member.client_port,
            peer = member.peer_port,
            list = listed(if joining { 4 } else { 3 }),
        );
        std::fs::write(&member.config, text).expect("write config");
    }
    members
}

/// Starts members 1 to 3 (the fourth is for joining) and waits until each
/// is ready.
fn start_first_three(members: &[Member]) -> Vec<Daemon> {
    let mut daemons: Vec<Daemon> = members[..3].iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }
    daemons
}

/// Puts `{prefix}k0` .. with values `v0` .. through the member at `port`,
/// each retried until it succeeds.
fn put_keys(port: u16, prefix: &str, count: usize) {
    for index in 0..count {
        eventually("a put through member 1", || {
            client(port, &["put", &format!("{prefix}k{index}"), &format!("v{index}")])
        });
    }
}

/// `member list -w json` through `port`: (id, is learner, peer addresses,
/// client addresses) of every member.
fn member_list(port: u16) -> Vec<(u64, bool, String, String)> {
    let text = client(port, &["member", "list", "-w", "json"]).expect("member list");
    let list: serde_json::Value = serde_json::from_str(&text).expect("member list -w json prints JSON");
    list["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|member| {
            let joined = |field: &str| {
                member[field].as_array().map_or(String::new(), |addresses| {
                    addresses.iter().filter_map(|address| address.as_str()).collect::<Vec<_>>().join(",")
                })
            };
            (
                member["id"].as_u64().expect("id"),
                member["is_learner"].as_bool().expect("is_learner"),
                joined("peer_addresses"),
                joined("client_addresses"),
            )
        })
        .collect()
}

#[test]
fn a_fourth_member_joins_is_promoted_and_an_old_one_leaves_under_load() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = configs(directory.path());
    let port = |id: u64| members[id as usize - 1].client_port;

    eprintln!("phase: members 1 to 3 form the cluster and take some keys");
    let mut daemons = start_first_three(&members);
    for index in 0..20 {
        client(port(1), &["put", &format!("/before/k{index}"), &format!("v{index}")]).expect("put");
    }

    eprintln!("phase: member 4 starts in join mode; it serves no client until it is added");
    let mut joining = Daemon::start(&members[3].config);
    joining.wait_ready();
    daemons.push(joining);
    let refused = client(port(4), &["get", "/before/k1"]).expect_err("a joining member refuses clients");
    assert!(refused.contains("NotMember") && refused.contains("join mode"), "{refused}");

    eprintln!("phase: a writer keeps putting through member 2 while member 4 is added, promoted and member 1 removed");
    let stop = Arc::new(AtomicBool::new(false));
    let writer_port = port(2);
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
            let mut index = 0;
            while !stop.load(Ordering::Relaxed) || index < 30 {
                let key = format!("/load/k{index:04}");
                match client(writer_port, &["put", &key, &index.to_string()]) {
                    Ok(_) => acknowledged.push(key),
                    Err(error) => refused.push(error),
                }
                index += 1;
            }
            (acknowledged, refused)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    eprintln!("phase: member add 4 --learner: every group replicates to it, it does not vote");
    let peer = format!("127.0.0.1:{}", members[3].peer_port);
    let client_address = format!("127.0.0.1:{}", port(4));
    let added = client(
        port(1),
        &[
            "member",
            "add",
            "4",
            "--name",
            "node4",
            "--peer-urls",
            &peer,
            "--client-urls",
            &client_address,
            "--learner",
        ],
    )
    .expect("member add");
    assert_eq!(
        added,
        format!("Member 4 added as a learner to every group of the cluster ({GROUPS} groups)\n")
    );
    let listed = member_list(port(2));
    assert!(listed.contains(&(4, true, peer.clone(), client_address.clone())), "{listed:?}");
    for group in 0..GROUPS {
        eventually(&format!("member 4 catching up in group {group}"), || caught_up(&members, group, 4));
    }
    let got = client(port(4), &["get", "/before/k19", "--consistency", "s"]).expect("the learner serves");
    assert_eq!(got, "/before/k19\nv19\n", "the learner's own store has the keys written before it joined");

    eprintln!("phase: promoting a member nobody added is refused, naming what to do");
    let refused = client(port(3), &["member", "promote", "9"]).expect_err("9 is no learner");
    assert!(
        refused.contains("member 9 is not a learner") && refused.contains("nvkv member add"),
        "{refused}"
    );

    eprintln!("phase: member promote 4: it votes in every group");
    let promoted = client(port(3), &["member", "promote", "4"]).expect("member promote");
    assert_eq!(
        promoted,
        format!("Member 4 promoted to voter in every group of the cluster ({GROUPS} groups)\n")
    );
    let listed = member_list(port(4));
    assert!(listed.iter().all(|(_, learner, ..)| !learner), "no learner left: {listed:?}");
    assert_eq!(listed.iter().map(|member| member.0).collect::<Vec<_>>(), [1, 2, 3, 4]);

    eprintln!("phase: member remove 1, the writer still putting through member 2");
    let removed = client(port(2), &["member", "remove", "1"]).expect("member remove");
    assert_eq!(removed, format!("Member 1 removed from every group of the cluster ({GROUPS} groups)\n"));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, refused) = writer.join().expect("the writer thread");
    eprintln!("writer: {} puts acknowledged, {} refused: {refused:?}", acknowledged.len(), refused.len());
    assert!(acknowledged.len() >= 20, "the writer kept going: {refused:?}");

    eprintln!("phase: member 1 refuses client requests; member 4 reads every acknowledged put");
    eventually("member 1 refusing clients", || match client(port(1), &["get", "/before/k1"]) {
        Err(error) if error.contains("NotMember") && error.contains("was removed") => Ok(()),
        other => Err(format!("{other:?}")),
    });
    // Groups member 1 led elect a new leader meanwhile: a read may be
    // refused as unavailable until then.
    let read = eventually("a prefix read through member 4", || {
        client(port(4), &["get", "/load/", "--prefix", "--keys-only"])
    });
    let keys: Vec<&str> = read.lines().filter(|line| !line.is_empty()).collect();
    for key in &acknowledged {
        assert!(keys.contains(&key.as_str()), "acknowledged put {key} is missing on member 4");
    }

    eprintln!("phase: member list shows members 2, 3 and 4, all voters");
    let listed = member_list(port(3));
    assert_eq!(
        listed.iter().map(|member| (member.0, member.1)).collect::<Vec<_>>(),
        [(2, false), (3, false), (4, false)]
    );

    eprintln!("phase: killed and restarted, members 1 and 4 read the membership from their logs");
    for id in [1, 4] {
        let index = id as usize - 1;
        daemons[index].signal(libc::SIGKILL);
        let (_, stderr) = daemons[index].wait_exit();
        if id == 4 {
            let waiting =
                "join mode (cluster.join = true): waiting to be added to the cluster; on a member of it, \
                           run `nvkv member add 4 --name node4";
            assert!(stderr.contains(waiting), "the joining member said how to add it: {stderr}");
        }
        daemons[index] = Daemon::start(&members[index].config);
        daemons[index].wait_ready();
    }
    let listed = member_list(port(4));
    assert_eq!(
        listed.iter().map(|member| (member.0, member.1)).collect::<Vec<_>>(),
        [(2, false), (3, false), (4, false)]
    );
    eventually("member 4 serving after its restart", || client(port(4), &["get", "/before/k3"]));
    let refused = client(port(1), &["get", "/before/k1"]).expect_err("member 1 stays removed");
    assert!(refused.contains("was removed"), "{refused}");

    eprintln!("phase: member 4's config still lists member 1, which it said at its restart");
    let mut restarted = daemons.remove(3);
    restarted.signal(libc::SIGTERM);
    let (_, stderr) = restarted.wait_exit();
    let listed = |ids: &[u64]| {
        ids.iter()
            .map(|id| format!("{id} (127.0.0.1:{})", members[*id as usize - 1].peer_port))
            .collect::<Vec<_>>()
    };
    let drift = format!(
        "WARN nvkv::shard::membership: the config's cluster.members lists {}, but the cluster's members are {} \
         (group 0, membership at log index",
        listed(&[1, 2, 3, 4]).join(", "),
        listed(&[2, 3, 4]).join(", ")
    );
    assert!(stderr.contains(&drift), "the restarted member warned of its stale config: {stderr}");
    assert!(!stderr.contains(" ERROR "), "{stderr}");
    drop(daemons);
}

#[test]
fn a_member_removed_while_down_learns_it_from_its_peers_and_stops_serving() {
    use common::cluster::*;
    let directory = tempfile::tempdir().expect("tempdir");
    let members = cluster_configs(directory.path(), GROUPS);
    let mut daemons: Vec<Daemon> = members.iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }
    let (first, gone) = (&members[0], &members[2]);
    eventually("one leader per group, the same on every member", || {
        agreed_leaders(&members.iter().map(|member| leaders(member.client_port)).collect::<Vec<_>>())
    });
    eventually("a put through member 1", || client(first.client_port, &["put", "/away/k", "1"]));

    eprintln!("phase: member {} stops; member remove {} through member 1", gone.id, gone.id);
    let mut stopped = daemons.pop().expect("member 3 runs");
    stopped.signal(libc::SIGTERM);
    let (status, _) = stopped.wait_exit();
    assert_eq!(status.code(), Some(0));
    let removed = eventually("member remove while the member is down", || {
        client(first.client_port, &["member", "remove", &gone.id.to_string()])
    });
    assert_eq!(
        removed,
        format!("Member {} removed from every group of the cluster ({GROUPS} groups)\n", gone.id)
    );

    eprintln!("phase: member {} starts again with its old membership, and learns from its peers", gone.id);
    let mut restarted = Daemon::start(&gone.config);
    restarted.wait_ready();
    eventually(&format!("member {} refusing even serializable reads as removed", gone.id), || {
        match client(gone.client_port, &["get", "/away/k", "--consistency", "s"]) {
            Err(error) if error.contains("NotMember") && error.contains("was removed") => Ok(()),
            other => Err(format!("member {} answered {other:?}", gone.id)),
        }
    });
    eventually("a put through member 2 after the removal", || {
        client(members[1].client_port, &["put", "/away/k", "2"])
    });
    restarted.signal(libc::SIGTERM);
    let (_, stderr) = restarted.wait_exit();
    assert!(stderr.contains("while away, and refuses client requests from now on"), "{stderr}");
}

/// A member whose data was wiped comes back with a blank namespace and no
/// memory of its votes or of the entries it acknowledged: with one more
/// failure a committed write could be lost. SIGKILLed and wiped, member 3
/// refuses to start with the same config, saying how to rejoin; members 1
/// and 2 serve meanwhile; removed and started in join mode, member 3 is
/// added back, catches up and votes as a new member.
#[test]
fn a_member_whose_data_was_wiped_is_refused_until_removed_and_added_back() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = configs(directory.path());
    let port = |id: u64| members[id as usize - 1].client_port;
    let mut daemons = start_first_three(&members);
    put_keys(port(1), "/wiped/", 20);
    eventually("member 3 holding the keys", || {
        match client(port(3), &["get", "/wiped/k19", "--consistency", "s"]) {
            Ok(value) if value == "/wiped/k19\nv19\n" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    eprintln!("phase: member 3 is SIGKILLed, its data directory removed, and started again: it refuses");
    let mut wiped = daemons.pop().expect("member 3 runs");
    wiped.signal(libc::SIGKILL);
    let _ = wiped.wait_exit();
    std::fs::remove_dir_all(directory.path().join("data3")).expect("remove member 3's data");
    let stderr = refused(&members[2].config);
    assert!(stderr.contains("its data was lost"), "{stderr}");
    assert!(stderr.contains("nvkv member remove 3") && stderr.contains("cluster.join = true"), "{stderr}");

    eprintln!("phase: members 1 and 2 serve");
    eventually("a put through member 1", || client(port(1), &["put", "/wiped/after", "1"]));
    assert_eq!(client(port(2), &["get", "/wiped/after"]).expect("get"), "/wiped/after\n1\n");

    eprintln!("phase: member remove 3, then member 3 starts in join mode and is added back");
    let removed = eventually("member remove 3", || client(port(1), &["member", "remove", "3"]));
    assert_eq!(removed, format!("Member 3 removed from every group of the cluster ({GROUPS} groups)\n"));
    let config = std::fs::read_to_string(&members[2].config).expect("config");
    std::fs::write(&members[2].config, config.replace("join = false", "join = true")).expect("config");
    let mut rejoined = Daemon::start(&members[2].config);
    rejoined.wait_ready();
    let peer = format!("127.0.0.1:{}", members[2].peer_port);
    let client_address = format!("127.0.0.1:{}", port(3));
    let add =
        ["member", "add", "3", "--name", "node3", "--peer-urls", &peer, "--client-urls", &client_address];
    let added = eventually("member add 3", || client(port(1), &[&add[..], &["--learner"]].concat()));
    assert!(added.starts_with("Member 3 added as a learner"), "{added}");
    for group in 0..GROUPS {
        eventually(&format!("member 3 catching up in group {group}"), || caught_up(&members, group, 3));
    }
    let promoted = eventually("member promote 3", || client(port(2), &["member", "promote", "3"]));
    assert!(promoted.starts_with("Member 3 promoted to voter"), "{promoted}");
    assert_eq!(
        client(port(3), &["get", "/wiped/k5", "--consistency", "s"]).expect("member 3 serves"),
        "/wiped/k5\nv5\n"
    );
    assert_eq!(client(port(3), &["get", "/wiped/after"]).expect("get"), "/wiped/after\n1\n");
    daemons.push(rejoined);
    drop(daemons);
}

/// After a stop of the whole cluster, wiped member 3 comes back first: no
/// peer answers its introduction, so it cannot tell a new cluster from the
/// one it lost its data in, and it bootstraps. Once members 1 and 2 are back
/// they refuse its hellos (they know it by another namespace, as a voter),
/// and it learns from them that it lost its data and exits with the
/// start-up refusal's words. Before, it ran on, campaigning with its blank
/// log, and a member added since (which never knew its old namespace)
/// granted it votes that deposed every leader. It stays "bootstrapped
/// blind" across a restart before its peers return (its superblock keeps
/// it; before, the restart ran as a plain voter), and once stopped it has
/// forgotten its cluster, so its next start asks its peers and is refused
/// there instead of running until a peer refuses it again.
#[test]
fn a_wiped_member_that_started_while_its_peers_were_down_stops_when_they_return() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = configs(directory.path());
    let port = |id: u64| members[id as usize - 1].client_port;
    let mut daemons = start_first_three(&members);
    put_keys(port(1), "/blind/", 10);

    eprintln!("phase: the whole cluster stops; member 3's data is removed; member 3 starts alone");
    for daemon in &mut daemons {
        daemon.signal(libc::SIGTERM);
        let (status, stderr) = daemon.wait_exit();
        assert!(status.success(), "{stderr}");
    }
    daemons.clear();
    std::fs::remove_dir_all(directory.path().join("data3")).expect("remove member 3's data");
    let mut wiped = Daemon::start(&members[2].config);
    wiped.wait_ready();
    eprintln!(
        "phase: member 3 restarts alone: it still counts as bootstrapped blind (its superblock says so)"
    );
    wiped.signal(libc::SIGTERM);
    let (status, stderr) = wiped.wait_exit();
    assert!(status.success(), "{stderr}");
    let mut wiped = Daemon::start(&members[2].config);
    wiped.wait_ready();

    eprintln!("phase: members 1 and 2 start again; member 3 learns from them that it lost its data");
    let mut daemons: Vec<Daemon> = members[..2].iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }
    let (status, stderr) = wiped.wait_exit();
    assert!(!status.success(), "member 3 must stop; stderr:\n{stderr}");
    assert!(stderr.contains("bootstrapped while no peer answered"), "{stderr}");
    assert!(stderr.contains("its data was lost") && stderr.contains("nvkv member remove 3"), "{stderr}");

    eprintln!("phase: member 3 starts again while its peers serve: it forgot its cluster, asks them, and is refused at start");
    let mut again = Daemon::start(&members[2].config);
    let (status, stderr) = again.wait_exit();
    assert!(!status.success(), "member 3 must not start; stderr:\n{stderr}");
    assert!(stderr.contains("its data was lost"), "{stderr}");
    assert!(
        !stderr.contains("bootstrapped while no peer answered"),
        "refused at start, not after running: {stderr}"
    );

    eprintln!("phase: members 1 and 2 serve what was written");
    eventually("a put through member 1", || client(port(1), &["put", "/blind/after", "1"]));
    assert_eq!(client(port(2), &["get", "/blind/k7"]).expect("get"), "/blind/k7\nv7\n");
    drop(daemons);
}
