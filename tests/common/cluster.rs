//! A 3-node cluster on loopback for the tests that need one: free ports,
//! the members' configs, and the leaders as a member reports them.

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nvkv::kv::types::RangeRequest;
use nvkv::rpc::client::ShardedClient;

use super::{status_json, try_status_json, Daemon, DEADLINE};

/// One member's config and ports.
#[derive(Clone)]
pub struct Member {
    pub id: u64,
    pub client_port: u16,
    pub peer_port: u16,
    pub config: PathBuf,
}

/// A port `base` such that `base..base + count` are all free right now,
/// below the kernel's ephemeral range (32768 and up here): a port the kernel
/// hands out for outgoing connections (the members' own peer dials, other
/// tests' clients) could be taken between this check and the member's bind.
///
/// Ports handed out once are never handed out again by this process: the
/// tests of one binary run in parallel, and a range checked free here stays
/// free until its member binds it, which another test's check cannot see.
pub fn free_ports(count: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    const LOW: u16 = 10_000;
    const HIGH: u16 = 32_000;
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for attempt in 0..1000u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(attempt);
        let base = LOW + (hasher.finish() % u64::from(HIGH - LOW - count)) as u16;
        if handed_out.range(base..base + count).next().is_some() {
            continue;
        }
        let all: Vec<_> = (base..base + count).map(|port| TcpListener::bind(("127.0.0.1", port))).collect();
        if all.iter().all(Result::is_ok) {
            handed_out.extend(base..base + count);
            return base;
        }
    }
    panic!("no {count} consecutive free ports on 127.0.0.1 between {LOW} and {HIGH}");
}

/// Writes three members' configs into `directory`: one shard each with
/// `groups` groups (client port, shard port = client port + 1, peer port =
/// client port + 2).
pub fn cluster_configs(directory: &Path, groups: usize) -> Vec<Member> {
    let hosts: Vec<(u64, IpAddr, u16)> =
        (1..=3).map(|id| (id, IpAddr::from([127, 0, 0, 1]), free_ports(3))).collect();
    member_configs(directory, groups, &hosts)
}

/// Writes the configs of the members `hosts` names (id, IP address, client
/// port; shard port = client port + 1, peer port = client port + 2) into
/// `directory`: one shard each with `groups` groups.
pub fn member_configs(directory: &Path, groups: usize, hosts: &[(u64, IpAddr, u16)]) -> Vec<Member> {
    let listed: String = hosts
        .iter()
        .map(|(id, ip, base)| {
            format!(
                "[[cluster.members]]\nid = {id}\nname = \"node{id}\"\nclient_address = \"{ip}:{base}\"\n\
                 peer_address = \"{ip}:{}\"\n\n",
                base + 2
            )
        })
        .collect();
    hosts
        .iter()
        .map(|(id, ip, base)| {
            let config = directory.join(format!("node{id}.toml"));
            // Members on other addresses than loopback (network namespaces)
            // speak plaintext: that needs tls.insecure.
            let insecure = if ip.is_loopback() { "" } else { "[tls]\ninsecure = true\n\n" };
            let text = format!(
                "{insecure}[node]\nmember_id = {id}\nname = \"node{id}\"\ndata_dir = \"{}\"\n\
                 client_address = \"{ip}:{base}\"\npeer_address = \"{ip}:{}\"\n\n\
                 [etcd]\naddress = \"{ip}:0\"\n\n[reactor]\nshards = 1\n\n[namespace]\nnamespace_bytes = \"64MiB\"\n\n\
                 [log]\ngroups_per_shard = {groups}\n\n[cluster]\nname = \"test-cluster\"\n\n{listed}",
                directory.join(format!("data{id}")).display(),
                base + 2
            );
            std::fs::write(&config, text).expect("write config");
            Member { id: *id, client_port: *base, peer_port: base + 2, config }
        })
        .collect()
}

/// Polls `check` until it returns `Some`, or panics with the last reason.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match check() {
            Ok(done) => return done,
            Err(reason) if Instant::now() > deadline => panic!("{what} did not happen: {reason}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Every group's leader as `port`'s member sees it.
pub fn leaders(port: u16) -> Vec<u64> {
    let status = status_json(port);
    let groups = status[0]["groups"].as_array().expect("groups").clone();
    groups.iter().map(|group| group["leader"].as_u64().expect("leader")).collect()
}

/// The leader of every group when all members name the same ones (each
/// view one member's leaders by group), else what each member sees.
pub fn agreed_leaders(seen: &[Vec<u64>]) -> Result<Vec<u64>, String> {
    let members = seen.len() as u64;
    let known = seen[0].iter().all(|leader| (1..=members).contains(leader));
    if known && seen.iter().all(|view| *view == seen[0]) {
        Ok(seen[0].clone())
    } else {
        Err(format!("leaders as each member sees them: {seen:?}"))
    }
}

/// A client of `endpoints[*node]`, or after a failure to open one within
/// `timeout` (that member down or stopping), `None` with `*node` moved on to
/// the next member after a pause: callers loop until they have a client.
pub async fn connect_next(
    endpoints: &[String],
    node: &mut usize,
    timeout: Duration,
) -> Option<nvkv::rpc::client::ShardedClient> {
    match tokio::time::timeout(timeout, nvkv::rpc::client::ShardedClient::open(&endpoints[*node])).await {
        Ok(Ok(opened)) => Some(opened),
        _ => {
            *node = (*node + 1) % endpoints.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// A current-thread runtime for the client library, which runs on one
/// thread inside a `LocalSet`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Runs client-library code the way it must run: one thread, a LocalSet.
pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::task::LocalSet::new().block_on(&runtime(), future)
}

/// Where `member`'s clients connect.
pub fn endpoint(member: &Member) -> String {
    format!("127.0.0.1:{}", member.client_port)
}

/// Starts every member and waits for each to be ready.
pub fn start_all(members: &[Member]) -> Vec<Option<Daemon>> {
    let mut daemons: Vec<Option<Daemon>> =
        members.iter().map(|member| Some(Daemon::start(&member.config))).collect();
    for daemon in daemons.iter_mut().flatten() {
        daemon.wait_ready();
    }
    daemons
}

/// `group`'s leader as the running members agree on it (one they all name,
/// and itself running); a member whose daemon is `None` is not asked.
pub fn agreed_leader(members: &[Member], daemons: &[Option<Daemon>], group: usize) -> Result<u64, String> {
    let running: Vec<&Member> = members
        .iter()
        .zip(daemons)
        .filter(|(_, daemon)| daemon.is_some())
        .map(|(member, _)| member)
        .collect();
    let mut seen = Vec::new();
    for member in &running {
        let status = try_status_json(member.client_port)?;
        seen.push(status[0]["groups"][group]["leader"].as_u64().unwrap_or(0));
    }
    match seen.first() {
        Some(leader)
            if seen.iter().all(|other| other == leader) && running.iter().any(|m| m.id == *leader) =>
        {
            Ok(*leader)
        }
        _ => Err(format!("group {group}: leaders as the running members see them: {seen:?}")),
    }
}

/// A store's keys with their values and last revisions.
pub type Store = Vec<(Vec<u8>, Vec<u8>, i64)>;

/// Every key-value of the cluster, as `member`'s own store holds it
/// (serializable: no leader involved; after a restart it may lag until a
/// leader commits in its term, see [`read_all`]).
pub fn store_of(member: &Member) -> Result<Store, String> {
    read_all(member, true)
}

/// Every key-value of the cluster read through `member`: serializable
/// (its own store as it is) or linearizable (once the member applied
/// everything the group's leader had committed when the read began).
pub fn read_all(member: &Member, serializable: bool) -> Result<Store, String> {
    block_on(async {
        let client = ShardedClient::open(&endpoint(member)).await.map_err(|error| error.to_string())?;
        let all = RangeRequest { key: vec![0], range_end: vec![0], ..RangeRequest::default() };
        let answer = client.range(&all, serializable).await.map_err(|error| error.to_string())?;
        Ok(answer.kvs.into_iter().map(|kv| (kv.key, kv.value, kv.mod_revision)).collect())
    })
}

/// Waits until every member's store holds the same keys, values and
/// revisions, and returns that store.
pub fn stores_converge(members: &[Member]) -> Store {
    eventually("every member's store holding the same state", || {
        let stores: Vec<_> = members.iter().map(store_of).collect::<Result<_, _>>()?;
        if stores.iter().all(|store| *store == stores[0]) {
            Ok(stores[0].clone())
        } else {
            Err(format!("keys per member: {:?}", stores.iter().map(Vec::len).collect::<Vec<_>>()))
        }
    })
}

/// How far `learner` trails in `group`, as the group's leader reports it:
/// Ok once its matched index reached the leader's applied index.
pub fn caught_up(members: &[Member], group: usize, learner: u64) -> Result<(), String> {
    let asked = members.iter().find(|member| member.id != learner).ok_or("no other member")?;
    let leader = try_status_json(asked.client_port)?[0]["groups"][group]["leader"].as_u64().unwrap_or(0);
    let leader = members.iter().find(|member| member.id == leader).ok_or("no leader known")?;
    let view = try_status_json(leader.client_port)?[0]["groups"][group].clone();
    let applied = view["applied_index"].as_u64().unwrap_or(0);
    let matched = view["members"]
        .as_array()
        .ok_or("no members")?
        .iter()
        .find(|progress| progress["member_id"].as_u64() == Some(learner))
        .and_then(|progress| progress["matched_index"].as_u64())
        .ok_or(format!("leader {} does not replicate to {learner}: {view}", leader.id))?;
    if matched >= applied && applied > 0 {
        Ok(())
    } else {
        Err(format!("member {learner} matched {matched} of the leader's {applied}"))
    }
}

/// Runs `work` with a client of `member`.
pub fn with_client<T>(member: &Member, work: impl AsyncFnOnce(ShardedClient) -> T) -> T {
    runtime().block_on(tokio::task::LocalSet::new().run_until(async {
        let client = ShardedClient::open(&endpoint(member)).await.expect("connect");
        work(client).await
    }))
}

/// Puts `key` = `value` through `client`, again after a refusal while a
/// group changes leader, for up to the tests' deadline (the same key and
/// value, so a put that took effect twice changes nothing a test compares
/// but a revision, the same on every member).
pub async fn put_until_taken(client: &ShardedClient, key: &str, value: &[u8]) {
    let started = Instant::now();
    while let Err(error) = client.put(key.as_bytes(), value, 0, false).await {
        assert!(started.elapsed() < DEADLINE, "put {key} failed for {DEADLINE:?}, last: {error}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Puts `count` keys `/{prefix}/kNNN` = `{prefix}-N` through a client of
/// `member`, each until it is taken.
pub fn put_keys_through(member: &Member, prefix: &str, count: usize) {
    with_client(member, async |client| {
        for index in 0..count {
            put_until_taken(
                &client,
                &format!("/{prefix}/k{index:03}"),
                format!("{prefix}-{index}").as_bytes(),
            )
            .await;
        }
    });
}
