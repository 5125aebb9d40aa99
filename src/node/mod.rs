//! The node: one `nvkv serve` process, from a checked config to running
//! shards and back to a clean stop.
//!
//! This module owns the order of start and stop: lock the data directory,
//! open the namespace, choose cores, start one reactor per shard with its
//! driver, report ready; on SIGTERM or SIGINT, stop the reactors (they
//! finish in-flight work), close the namespace, release the lock. It must
//! never do a shard's work itself (that belongs to the drivers on the
//! reactor threads) nor parse config text (that is `config`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError, Durability, ReactorConfig, GROUPS_PER_SHARD_LIMIT};
use crate::data_dir::{DataDirError, DataDirLock};
use crate::kv::watch::WatchLimits;
use crate::nvme::open::open_namespace;
use crate::nvme::{Namespace, NvmeError, QueuePairConfig};
use crate::raft::Member;
use crate::reactor::{DriverFactory, ReactorContext, ReactorError, ReactorSettings, Reactors, ShardDriver};
use crate::rpc::peer::{shard_peer_address, PeerClient, PeerIdentity};
use crate::rpc::server::NodeInfo;
use crate::shard::forward::LeaderLink;
use crate::shard::layout::GroupLayout;
use crate::shard::start::NoPeers;
use crate::shard::{self, LogDriver};
use crate::topology::{self, TopologyError};
use crate::wal::superblock::SuperblockKeeper;
use crate::wal::{superblock, FormatOptions, ShardRegion, Superblock, WalError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("systemd: {0}")]
    Systemd(String),
    #[error(
        "cannot listen for metrics on {address} (metrics.address): {source}; pick a free address, or unset \
         metrics.address"
    )]
    MetricsListen { address: String, source: std::io::Error },
    #[error("cannot create data directory {path}: {source}; create it or set node.data_dir to a writable directory")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    DataDirLock(#[from] DataDirError),
    #[error("cannot open the namespace: {0}")]
    Namespace(#[from] NvmeError),
    #[error(
        "cannot listen for etcd clients on {address} (etcd.address): {source}; is an etcd (or another nvkv) \
         using that port? Choose another address, or set etcd.address = \"\" to serve no etcd API"
    )]
    EtcdListen { address: String, source: std::io::Error },
    #[error(
        "etcd.address is set but this nvkv was built without its etcd API (cargo feature `etcd`); set \
         etcd.address = \"\" or use a build with the feature"
    )]
    EtcdNotBuilt,
    #[error(
        "{shards} shards of log.groups_per_shard groups make {groups} groups, more than the {} a revision can \
         name (its low bits are the group); lower log.groups_per_shard or reactor.shards",
        crate::kv::revision::HYBRID_GROUPS_MAX
    )]
    TooManyGroups { shards: usize, groups: u64 },
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Reactor(#[from] ReactorError),
    #[error(
        "cannot listen for clients on {address} (node.client_address): {source}; \
         is another process using that port? Choose another address, or port 0 for any free one"
    )]
    Listen { address: String, source: std::io::Error },
    #[error(
        "cannot listen for peers on {address} (node.peer_address + shard): {source}; \
         is another process using that port? Choose another node.peer_address (and update cluster.members)"
    )]
    PeerListen { address: String, source: std::io::Error },
    #[error("the key-value groups could not start: {0}")]
    Groups(String),
    #[error("cannot open the log: {0}")]
    Log(#[from] WalError),
    #[error(
        "namespace {path} was formatted for {formatted} shards, but the config asks for {configured} \
         (reactor.shards / reactor.cores); set reactor.shards = {formatted}, or point namespace.path \
         at a new namespace"
    )]
    ShardCount { path: String, formatted: u32, configured: usize },
    #[error("invalid TLS setting {0}")]
    Tls(#[from] crate::rpc::tls::TlsFileError),
    #[error(
        "namespace {path} belongs to member {formatted_by}, but this config makes this node member {configured}; \
         point namespace.path (or node.data_dir) at this member's own namespace, or set node.member_id = \
         {formatted_by}"
    )]
    OtherMember { path: String, formatted_by: u64, configured: u64 },
    #[error("this member may not start: {0}")]
    Refused(#[from] crate::rpc::incarnation::StartRefusal),
    #[error("each shard's log ring ({ring_bytes} bytes, three quarters of its share of the namespace) is too small: {reason}")]
    Ring { ring_bytes: u64, reason: String },
    #[error("cannot listen for SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
}

/// What a shard's driver is built from. Handed to the driver builder once
/// per shard, on the node's thread; the driver itself is then made on the
/// reactor thread by the factory the builder returns.
#[derive(Clone, Debug)]
pub struct ShardResources {
    pub shard: usize,
    pub core: usize,
    pub namespace: Arc<dyn Namespace>,
    pub queue_pair: QueuePairConfig,
    pub config: Arc<Config>,
    /// Where this shard's log lives on the namespace.
    pub region: ShardRegion,
    /// How the node's Raft groups are laid out over the shards.
    pub layout: GroupLayout,
    /// Where the shard says its groups serve (or why they cannot).
    pub ready: crossbeam_channel::Sender<Result<usize, String>>,
    /// Who this member is to its peers; `None` without peers.
    pub peers: Option<Arc<PeerIdentity>>,
}

/// Makes one shard's driver factory from its resources. The wal plugs in
/// here: `Node::start_with(config, |resources| Box::new(move |context| ...))`.
pub type DriverBuilder<'a> = dyn FnMut(ShardResources) -> DriverFactory + 'a;

/// The driver of a serving shard: the shard log on the shard's own queue
/// pair, opened (and recovered) on the reactor thread.
pub fn log_driver_factory(resources: ShardResources) -> DriverFactory {
    Box::new(move |context: &ReactorContext| {
        let log = shard::open_shared_log(
            context,
            resources.namespace.as_ref(),
            &resources.queue_pair,
            resources.region,
            shard::log_options(&resources.config),
        )?;
        shard::set_local(shard::ShardState::new(resources.shard, resources.core, log.clone()));
        let (layout, shard, ready) = (resources.layout, resources.shard, resources.ready);
        match resources.peers {
            Some(identity) => {
                let peers = PeerClient::new(shard, identity);
                // Forwarded writes are batched per leader over the peer link.
                let leaders: Rc<dyn LeaderLink> =
                    Rc::new(shard::forward_batch::BatchingLink::new(Rc::new(peers.clone())));
                shard::start::spawn_groups(layout, shard, log.clone(), Rc::new(peers), leaders, ready);
            }
            None => {
                let leaders: Rc<dyn LeaderLink> = Rc::new(NoPeers);
                shard::start::spawn_groups(layout, shard, log.clone(), Rc::new(NoPeers), leaders, ready);
            }
        }
        Ok(Box::new(LogDriver::new(log)) as Box<dyn ShardDriver>)
    })
}

/// Says, at every start, which ports `tls.insecure` lets speak plaintext
/// on a non-loopback address: on stderr even when the log filter hides
/// warnings.
fn warn_plaintext(config: &Config) {
    let plain = config.insecure_addresses();
    if plain.is_empty() {
        return;
    }
    let warning = format!(
        "PLAINTEXT ON A NON-LOOPBACK ADDRESS (tls.insecure = true): {}. Anyone on that network can read and \
         change the traffic; set the [tls] keys to encrypt it.",
        plain.join(", ")
    );
    if tracing::enabled!(tracing::Level::WARN) {
        tracing::warn!("{warning}");
    } else {
        eprintln!("nvkv: warning: {warning}");
    }
}

/// How long a starting node waits for every shard's groups.
const GROUPS_START_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A shard's listeners: the node's main client port (shard 0), its own
/// client port, and its peer port when the member has peers.
struct ShardListeners {
    main: Option<std::net::TcpListener>,
    own: std::net::TcpListener,
    peer: Option<(std::net::TcpListener, Arc<PeerIdentity>)>,
    /// The Prometheus endpoint's (shard 0, when `[metrics] address` is
    /// set), with its TLS when the address is not loopback.
    metrics: Option<(std::net::TcpListener, Option<tokio_rustls::TlsAcceptor>)>,
    /// The etcd API's (shard 0, when `[etcd] address` is set).
    etcd: Option<EtcdListener>,
}

/// The etcd API's listener and what its shards serve it with.
type EtcdListener = (std::net::TcpListener, EtcdServing);

/// What the etcd API needs where the feature that serves it is built.
#[cfg(feature = "etcd")]
type EtcdServing = crate::etcd::SharedInfo;
#[cfg(not(feature = "etcd"))]
type EtcdServing = ();

/// Wraps a shard's driver factory so that, once its driver runs, the shard
/// also accepts client connections, and peer connections, on its listeners.
fn with_acceptor(driver: DriverFactory, listeners: ShardListeners, info: Arc<NodeInfo>) -> DriverFactory {
    Box::new(move |context: &ReactorContext| {
        let driver = driver(context)?;
        let (member, groups) = (info.member_id, info.groups);
        if let Some(main) = listeners.main {
            crate::rpc::server::spawn_acceptor(context, main, info.clone(), true)?;
        }
        crate::rpc::server::spawn_acceptor(context, listeners.own, info, false)?;
        if let Some((peer, identity)) = listeners.peer {
            crate::rpc::peer::spawn_peer_acceptor(context, peer, identity)?;
        }
        if let Some((metrics, tls)) = listeners.metrics {
            crate::rpc::metrics::spawn_metrics_acceptor(context, metrics, tls, member, groups)?;
        }
        #[cfg(feature = "etcd")]
        if let Some((etcd, info)) = listeners.etcd {
            crate::etcd::spawn_acceptor(context, etcd, info)?;
        }
        // Without the feature no listener is bound (`bind_etcd` refuses).
        #[cfg(not(feature = "etcd"))]
        let _ = listeners.etcd;
        Ok(driver)
    })
}

/// Binds the etcd API's listener when `[etcd] address` is set, with what
/// its shards serve it with; returns the bound address too (port 0 resolved).
fn bind_etcd(
    config: &Config,
    tls: &crate::rpc::tls::NodeTls,
    groups: u32,
    admission: &Arc<crate::reactor::admission::Admission>,
) -> Result<(Option<EtcdListener>, Option<std::net::SocketAddr>), NodeError> {
    let Some(address) = config.etcd.address else {
        return Ok((None, None));
    };
    if !cfg!(feature = "etcd") {
        return Err(NodeError::EtcdNotBuilt);
    }
    let listen_failed = |source| NodeError::EtcdListen { address: address.to_string(), source };
    let listener = std::net::TcpListener::bind(address).map_err(listen_failed)?;
    let bound = listener.local_addr().map_err(listen_failed)?;
    #[cfg(feature = "etcd")]
    let serving = {
        let scheme = if tls.etcd.is_some() { "https" } else { "http" };
        Arc::new(crate::etcd::EtcdInfo {
            cluster_id: crate::etcd::EtcdInfo::cluster_id(&config.cluster.name),
            member_id: config.node.member_id,
            name: config.node.name.clone(),
            client_url: format!("{scheme}://{bound}"),
            peer_scheme: if tls.peer.is_some() { "https" } else { "http" },
            groups,
            limits: crate::shard::settings::store_limits(&config.store),
            watch: crate::rpc::watch::WatchSettings::from_config(&config.store).options,
            tls: tls.etcd.clone(),
            admission: Arc::clone(admission),
        })
    };
    #[cfg(not(feature = "etcd"))]
    let serving = {
        let _ = (tls, groups, admission);
    };
    Ok((Some((listener, serving)), Some(bound)))
}

/// Where shard `shard` takes connections of its own: the client port + 1 +
/// the shard, or any free port when the client port is 0.
fn shard_address(client: std::net::SocketAddr, shard: usize) -> Result<std::net::SocketAddr, NodeError> {
    if client.port() == 0 {
        return Ok(client);
    }
    let port = u16::try_from(usize::from(client.port()) + 1 + shard).map_err(|_| NodeError::Listen {
        address: client.to_string(),
        source: std::io::Error::other(format!(
            "no port is left above it for shard {shard}; use a lower port"
        )),
    })?;
    Ok(std::net::SocketAddr::new(client.ip(), port))
}

/// Reads the namespace's superblock, formatting a new namespace with one
/// shard region per chosen core.
fn open_superblock(
    namespace: &dyn Namespace,
    queue_pair: &QueuePairConfig,
    shards: usize,
    member_id: u64,
) -> Result<Superblock, NodeError> {
    let mut queue = namespace.open_queue_pair(queue_pair)?;
    let options =
        FormatOptions { shards: shards as u32, groups_per_shard_max: GROUPS_PER_SHARD_LIMIT, member_id };
    let (superblock, formatted) = superblock::open_or_format(queue.as_mut(), options)?;
    tracing::info!(
        namespace_id = %superblock.namespace_id_hex(),
        shards = superblock.shards,
        formatted,
        "{} the namespace",
        if formatted { "formatted" } else { "opened" }
    );
    Ok(superblock)
}

/// Checks the namespace is this member's (the member that formatted it),
/// and names it this member's when it was formatted before namespaces said.
fn own_namespace(config: &Config, keeper: &SuperblockKeeper, path: &Path) -> Result<(), NodeError> {
    let member = config.node.member_id;
    let formatted_by = keeper.identity().member_id;
    if formatted_by != 0 && formatted_by != member {
        return Err(NodeError::OtherMember {
            path: path.display().to_string(),
            formatted_by,
            configured: member,
        });
    }
    keeper.update(|identity| {
        let unnamed = identity.member_id == 0;
        identity.member_id = member;
        unnamed
    })?;
    Ok(())
}

/// Gives a member that knows no cluster yet (a blank namespace, or one
/// formatted before namespaces named their cluster) its cluster id: the one
/// its peers answer with, or for a new cluster the one its config derives.
/// Refuses to start a member its peers knew by another namespace while it
/// still votes: its data was lost (see `rpc::incarnation`). A peer that knew
/// it by another namespace but whose groups are still starting is asked
/// again, and the member refuses to start rather than bootstrap on a guess.
/// A member that bootstrapped blind stays so across restarts (the
/// superblock keeps it), so a peer that later calls it wiped stops it.
fn join_cluster(
    config: &Config,
    keeper: &SuperblockKeeper,
    peers: Option<&PeerIdentity>,
) -> Result<(), NodeError> {
    use crate::rpc::incarnation::{self, StartRefusal};
    let identity = keeper.identity();
    if identity.cluster_id != incarnation::NO_CLUSTER {
        if let (true, Some(peers)) = (identity.bootstrapped_blind, peers) {
            peers.halt.bootstrapped_blind();
        }
        return Ok(());
    }
    let member = config.node.member_id;
    let learned = match peers {
        None => None,
        Some(peers) => {
            let others: Vec<Member> = config
                .cluster
                .members
                .iter()
                .filter(|listed| listed.id != member)
                .map(crate::shard::settings::member)
                .collect();
            let asked_at = std::time::Instant::now();
            loop {
                let answers = crate::rpc::peer::introduce(peers, &others);
                for (peer, answer) in &answers {
                    tracing::debug!(peer, ?answer, "introduced to a peer");
                }
                match incarnation::decide(member, keeper.namespace_id(), &answers, config.cluster.join) {
                    Err(StartRefusal::PeerStarting { peer, .. })
                        if asked_at.elapsed() < incarnation::UNSURE_WAIT =>
                    {
                        tracing::info!(peer, "member {peer} knew this member by another namespace and its groups are still starting: asking again");
                        std::thread::sleep(incarnation::UNSURE_RETRY);
                    }
                    Err(StartRefusal::PeerStarting { member, peer, .. }) => {
                        let waited_s = asked_at.elapsed().as_secs();
                        return Err(StartRefusal::PeerStarting { member, peer, waited_s }.into());
                    }
                    decided => break decided?,
                }
            }
        }
    };
    let blind = learned.is_none() && peers.is_some();
    if let (true, Some(peers)) = (blind, peers) {
        peers.halt.bootstrapped_blind();
    }
    let cluster_id =
        learned.unwrap_or_else(|| config.cluster.bootstrap_cluster_id((member, config.node.peer_address)));
    keeper.update(|identity| {
        identity.cluster_id = cluster_id;
        identity.bootstrapped_blind = blind;
        true
    })?;
    tracing::info!(
        cluster_id = %crate::wal::superblock::hex(&cluster_id),
        "{} cluster {}",
        if learned.is_some() { "joined the running" } else { "bootstraps" },
        crate::wal::superblock::hex(&cluster_id)
    );
    Ok(())
}

/// When the groups snapshot, with `raft.snapshot_after_bytes` resolved
/// against the rings the namespace was formatted with. Refuses a layout
/// whose rings cannot hold what their groups keep between snapshots.
fn snapshot_policy(
    config: &Config,
    superblock: &Superblock,
) -> Result<crate::shard::snapshots::SnapshotPolicy, NodeError> {
    let region = superblock.region(0);
    let ring_bytes = region.ring_blocks() * u64::from(superblock.lba_bytes);
    let groups = u64::from(config.log.groups_per_shard);
    let writes = groups + u64::from(config.log.inflight_writes_max);
    let ring_error = |reason: String| NodeError::Ring { ring_bytes, reason };
    if writes * config.log.batch_bytes_max > ring_bytes {
        return Err(ring_error(format!(
            "it must hold a largest write (log.batch_bytes_max = {}) for each of the shard's \
             log.groups_per_shard = {groups} groups and log.inflight_writes_max = {} writes in flight, {} bytes; \
             lower log.batch_bytes_max, use fewer shards or groups, or give the node a larger namespace_bytes",
            config.log.batch_bytes_max,
            config.log.inflight_writes_max,
            writes * config.log.batch_bytes_max
        )));
    }
    let after_bytes = match config.raft.snapshot_after_bytes {
        0 => (ring_bytes / 4 / groups).max(1),
        explicit if explicit.saturating_mul(groups) > ring_bytes / 2 => {
            return Err(ring_error(format!(
                "its log.groups_per_shard = {groups} groups may each fill raft.snapshot_after_bytes = {explicit} \
                 bytes before they snapshot, {} bytes, more than half of it; lower raft.snapshot_after_bytes (0 \
                 picks a quarter of the ring shared among the groups), use fewer shards or groups, or give the \
                 node a larger namespace_bytes",
                explicit * groups
            )));
        }
        explicit => explicit,
    };
    Ok(crate::shard::snapshots::SnapshotPolicy {
        every_entries: config.raft.snapshot_after_entries,
        after_bytes,
        compact_keep_revisions: config.store.compact_under_pressure_keep_revisions,
    })
}

/// A running node.
pub struct Node {
    config: Arc<Config>,
    namespace_path: PathBuf,
    /// Where clients connect: `node.client_address` with its port resolved.
    client_address: std::net::SocketAddr,
    /// Where etcd clients connect (`[etcd] address`, resolved), if anywhere.
    etcd_address: Option<std::net::SocketAddr>,
    /// Set when a peer proves this member lost its data after it
    /// bootstrapped blind (`rpc::incarnation::Halt`); `None` alone.
    halt: Option<Arc<crate::rpc::incarnation::Halt>>,
    // Field order is stop order: reactors, then the namespace, then the lock.
    reactors: Reactors,
    namespace: Arc<dyn Namespace>,
    lock: DataDirLock,
}

impl Node {
    /// Starts a node whose shards run their logs.
    pub fn start(config: Config) -> Result<Node, NodeError> {
        Node::start_with(config, &mut log_driver_factory)
    }

    /// Starts a node whose shard drivers come from `build_driver`, one call
    /// per shard in shard order.
    pub fn start_with(config: Config, build_driver: &mut DriverBuilder<'_>) -> Result<Node, NodeError> {
        config.validate()?;
        // Before anything is locked or opened: a bad certificate stops the
        // start at once, naming its key and file.
        let tls = crate::rpc::tls::NodeTls::load(&config.tls)?;
        warn_plaintext(&config);
        let config = Arc::new(config);
        if config.log.durability == Durability::None {
            tracing::warn!(
                "DURABILITY IS OFF (log.durability = \"none\"): acknowledged writes are lost on power failure \
                 or crash. This setting exists for benchmarks only; never run it with data that matters."
            );
        }
        let data_dir = &config.node.data_dir;
        let data_dir_error = |source| NodeError::DataDir { path: data_dir.display().to_string(), source };
        if !data_dir.is_dir() {
            std::fs::create_dir_all(data_dir).map_err(data_dir_error)?;
            crate::data_dir::sync_parent(data_dir).map_err(data_dir_error)?;
        }
        let lock = DataDirLock::acquire(data_dir)?;
        tracing::debug!(lock = %lock.path().display(), "locked the data directory");

        let namespace = open_namespace(&shard::namespace_settings(&config, data_dir))?;
        // What the backend says it opened: the path, or for spdk the
        // transport id and NSID (namespace.path means nothing there).
        let namespace_path = PathBuf::from(&namespace.info().description);
        // The LOCK file and a namespace file just created are names in
        // their directories: make those durable before anything is written
        // that a restart must find.
        crate::data_dir::sync_parent(lock.path()).map_err(data_dir_error)?;
        if namespace_path.is_file() && namespace_path.parent() != lock.path().parent() {
            crate::data_dir::sync_parent(&namespace_path).map_err(|source| NodeError::DataDir {
                path: namespace_path.parent().unwrap_or(std::path::Path::new(".")).display().to_string(),
                source,
            })?;
        }

        let queue_pair = QueuePairConfig {
            depth: config.namespace.queue_depth,
            registered_buffer_bytes: config.namespace.registered_buffer_bytes as usize,
        };
        let pci_address = namespace.info().pci_address.clone();
        // Members that share a machine (a test or benchmark cluster) would
        // otherwise pin shard s, and with it every replica of the groups on
        // shard s, to the same core: member m starts m - 1 cores along.
        let start = config.node.member_id.saturating_sub(1) as usize;
        let mut cores = topology::choose_cores(&config.reactor, pci_address.as_deref(), start)?;
        let superblock =
            open_superblock(namespace.as_ref(), &queue_pair, cores.len(), config.node.member_id)?;
        if superblock.shards as usize != cores.len() {
            let automatic = config.reactor.shards == 0 && config.reactor.cores.is_empty();
            if !automatic {
                return Err(NodeError::ShardCount {
                    path: namespace_path.display().to_string(),
                    formatted: superblock.shards,
                    configured: cores.len(),
                });
            }
            // One shard per core was only a default: the namespace's own
            // layout wins.
            tracing::info!(
                shards = superblock.shards,
                "using the shard count the namespace was formatted with"
            );
            let reactor = ReactorConfig { shards: superblock.shards as usize, ..config.reactor.clone() };
            cores = topology::choose_cores(&reactor, pci_address.as_deref(), start)?;
        }
        let listener = std::net::TcpListener::bind(config.node.client_address).map_err(|source| {
            NodeError::Listen { address: config.node.client_address.to_string(), source }
        })?;
        let client_address = listener.local_addr().map_err(|source| NodeError::Listen {
            address: config.node.client_address.to_string(),
            source,
        })?;
        let mut shard_listeners = Vec::with_capacity(cores.len());
        let mut shard_endpoints = Vec::with_capacity(cores.len());
        for shard in 0..cores.len() {
            // From the configured port, not the bound one: port 0 must give
            // the shards free ports too, not the ones above a random port.
            let address = shard_address(config.node.client_address, shard)?;
            let listener = std::net::TcpListener::bind(address)
                .map_err(|source| NodeError::Listen { address: address.to_string(), source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| NodeError::Listen { address: address.to_string(), source })?;
            shard_listeners.push(Some(listener));
            shard_endpoints.push(bound);
        }
        // One count for every client port, native and etcd.
        let admission = crate::reactor::admission::Admission::new(config.limits);
        let info = Arc::new(NodeInfo {
            member_id: config.node.member_id,
            name: config.node.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            namespace: namespace_path.display().to_string(),
            backend: namespace.info().backend.to_string(),
            durability: config.log.durability.to_string(),
            client_address,
            shard_endpoints,
            groups: cores.len() as u32 * config.log.groups_per_shard,
            partition_depth: config.store.partition_depth as u32,
            started: std::time::Instant::now(),
            limits: crate::shard::settings::store_limits(&config.store),
            watch: crate::rpc::watch::WatchSettings::from_config(&config.store),
            tls: tls.client.clone(),
            admission: Arc::clone(&admission),
        });
        let mut listener = Some(listener);
        // Off loopback the metrics speak TLS with the client port's keys
        // (the config refuses such an address without them).
        let metrics_tls = config
            .metrics
            .address
            .filter(|address| !address.ip().is_loopback())
            .and_then(|_| tls.client.clone());
        let mut metrics_listener = match config.metrics.address {
            Some(address) => Some(
                std::net::TcpListener::bind(address)
                    .map_err(|source| NodeError::MetricsListen { address: address.to_string(), source })?,
            ),
            None => None,
        };
        let (mut etcd_listener, etcd_address) =
            bind_etcd(&config, &tls, cores.len() as u32 * config.log.groups_per_shard, &admission)?;
        let keeper =
            Arc::new(SuperblockKeeper::new(namespace.clone(), queue_pair.clone(), superblock.clone()));
        own_namespace(&config, &keeper, &namespace_path)?;
        let peers = config.cluster.has_peers().then(|| {
            Arc::new(PeerIdentity {
                tls: tls.peer.clone(),
                cluster_name: config.cluster.name.clone(),
                member_id: config.node.member_id,
                shards: cores.len() as u32,
                groups: cores.len() as u32 * config.log.groups_per_shard,
                request_timeout: std::time::Duration::from_millis(
                    crate::shard::settings::group_config(&config.raft).request_timeout_ms,
                ),
                keeper: keeper.clone(),
                member_names: config
                    .cluster
                    .members
                    .iter()
                    .map(|member| (member.id, member.name.clone()))
                    .collect(),
                halt: Arc::default(),
            })
        });
        join_cluster(&config, &keeper, peers.as_deref())?;
        let halt = peers.as_ref().map(|peers| peers.halt.clone());
        let mut peer_listeners = Vec::with_capacity(cores.len());
        for shard in 0..cores.len() {
            let Some(identity) = &peers else {
                peer_listeners.push(None);
                continue;
            };
            let address = shard_peer_address(config.node.peer_address, shard).map_err(|reason| {
                NodeError::PeerListen {
                    address: config.node.peer_address.to_string(),
                    source: std::io::Error::other(reason),
                }
            })?;
            let listener = std::net::TcpListener::bind(address)
                .map_err(|source| NodeError::PeerListen { address: address.to_string(), source })?;
            peer_listeners.push(Some((listener, identity.clone())));
        }
        let groups = cores.len() as u64 * u64::from(config.log.groups_per_shard);
        if groups > u64::from(crate::kv::revision::HYBRID_GROUPS_MAX) {
            return Err(NodeError::TooManyGroups { shards: cores.len(), groups });
        }
        let member = Member {
            id: config.node.member_id,
            peer_address: config.node.peer_address.to_string(),
            name: config.node.name.clone(),
            client_address: client_address.to_string(),
        };
        let initial_members = if config.cluster.members.is_empty() {
            vec![member.clone()]
        } else {
            config.cluster.members.iter().map(crate::shard::settings::member).collect()
        };
        let layout = GroupLayout {
            shards: cores.len(),
            groups_per_shard: config.log.groups_per_shard,
            partition_depth: config.store.partition_depth,
            member,
            initial_members,
            join: config.cluster.join,
            raft: crate::raft::GroupConfig {
                cluster_name: config.cluster.name.clone(),
                ..crate::shard::settings::group_config(&config.raft)
            },
            watch: WatchLimits {
                watchers_max: config.store.watches_per_group_max as usize,
                watch_events_pending_max: config.store.watch_events_pending_max as usize,
                watch_pending_bytes_max: config.store.watch_pending_bytes_max as usize,
                group_pending_bytes_max: config.store.watch_group_pending_bytes_max as usize,
            },
            quota_bytes: config.store.quota_bytes,
            proposal_queue_bytes_max: config.store.proposal_queue_bytes_max as usize,
            snapshots: snapshot_policy(&config, &superblock)?,
            auth: Arc::new(crate::shard::auth::AuthCell::new(Duration::from_secs(
                config.auth.token_ttl_seconds,
            ))),
        };
        let (ready_sender, ready_receiver) = crossbeam_channel::bounded(cores.len());
        let factories = cores
            .iter()
            .enumerate()
            .map(|(shard, core)| {
                let driver = build_driver(ShardResources {
                    shard,
                    core: *core,
                    namespace: namespace.clone(),
                    queue_pair: queue_pair.clone(),
                    config: config.clone(),
                    region: superblock.region(shard as u32),
                    layout: layout.clone(),
                    ready: ready_sender.clone(),
                    peers: peers.clone(),
                });
                // Shard 0 also accepts on the main port and deals those
                // connections out; every shard takes its own port's.
                let listeners = ShardListeners {
                    main: listener.take(),
                    own: shard_listeners[shard].take().expect("one listener per shard"),
                    peer: peer_listeners[shard].take(),
                    metrics: metrics_listener.take().map(|listener| (listener, metrics_tls.clone())),
                    etcd: etcd_listener.take(),
                };
                with_acceptor(driver, listeners, info.clone())
            })
            .collect();
        let reactors = Reactors::start(&ReactorSettings::from_config(&config.reactor), &cores, factories)?;
        drop(ready_sender);
        for _ in 0..cores.len() {
            match ready_receiver.recv_timeout(GROUPS_START_WAIT) {
                Ok(Ok(_)) => {}
                Ok(Err(reason)) => return Err(NodeError::Groups(reason)),
                Err(_) => {
                    return Err(NodeError::Groups(format!(
                        "the shards' Raft groups did not start within {} s",
                        GROUPS_START_WAIT.as_secs()
                    )))
                }
            }
        }
        Ok(Node { config, namespace_path, client_address, etcd_address, halt, reactors, namespace, lock })
    }

    /// The one line that says the node is up and how it runs.
    pub fn ready_line(&self) -> String {
        let info = self.namespace.info();
        let shards = self.reactors.len();
        format!(
            "nvkv ready: member {}, {shards} {} on cores {:?}, namespace {} ({}, {} bytes), durability {}, {}client {}",
            self.config.node.member_id,
            if shards == 1 { "shard" } else { "shards" },
            self.reactors.cores(),
            self.namespace_path.display(),
            info.backend,
            info.capacity_bytes(),
            self.config.log.durability,
            self.etcd_address.map_or_else(String::new, |address| format!("etcd {address}, ")),
            self.client_address,
        )
    }

    /// Where clients connect (the bound address, so port 0 is resolved).
    pub fn client_address(&self) -> std::net::SocketAddr {
        self.client_address
    }

    /// Where etcd clients connect (bound, so port 0 is resolved), if anywhere.
    pub fn etcd_address(&self) -> Option<std::net::SocketAddr> {
        self.etcd_address
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn reactors(&self) -> &Reactors {
        &self.reactors
    }

    /// Stops the reactors (each finishes its in-flight work), closes the
    /// namespace and releases the data directory.
    /// Waits until the node must stop because a peer proved it lost its
    /// data (never, for a node without peers).
    pub async fn halted(&self) -> crate::rpc::incarnation::StartRefusal {
        match &self.halt {
            Some(halt) => halt.halted().await,
            None => std::future::pending().await,
        }
    }

    pub fn stop(self) -> Result<(), NodeError> {
        let Node { reactors, namespace, lock, .. } = self;
        let stats = reactors.stop()?;
        tracing::debug!(?stats, "reactors stopped");
        drop(namespace);
        drop(lock);
        Ok(())
    }
}

/// `nvkv serve`: starts the node, prints the ready line, runs until SIGTERM
/// or SIGINT, then stops cleanly.
pub fn serve(config: Config) -> Result<(), NodeError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(NodeError::Signals)?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        // Listen before announcing ready, so a signal right after the ready
        // line is never missed.
        let mut terminate = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
        let notifier = crate::systemd::Notifier::from_env().map_err(NodeError::Systemd)?;
        let watchdog = crate::systemd::watchdog_interval().map_err(NodeError::Systemd)?;
        let node = Node::start(config)?;
        let ready = node.ready_line();
        tracing::info!("{ready}");
        for line in serving_notes(node.config()) {
            tracing::info!("{line}");
        }
        println!("{ready}");
        let _ = std::io::stdout().flush();
        // Every listener is bound and every shard serves by now.
        if let Some(notifier) = &notifier {
            notifier.notify(&format!("READY=1\nMAINPID={}\nSTATUS={ready}", std::process::id()));
        }
        let feeding = feed_watchdog(notifier.as_ref().zip(watchdog), &node);
        let refused = tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM received: stopping the shards"); None }
            _ = interrupt.recv() => { tracing::info!("SIGINT received: stopping the shards"); None }
            refusal = node.halted() => Some(refusal),
            _ = feeding => unreachable!("the watchdog feeds until the node stops"),
        };
        if let Some(notifier) = &notifier {
            notifier.notify("STOPPING=1\nSTATUS=stopping: finishing in-flight log writes");
        }
        node.stop()?;
        tracing::info!("nvkv stopped");
        match refused {
            // Exits as the start-up check would have: refused.
            Some(refusal) => Err(NodeError::Refused(refusal)),
            None => Ok(()),
        }
    })
}

/// What the ready line leaves out of how the node serves: TLS on each
/// port, and where metrics and health checks answer.
fn serving_notes(config: &Config) -> Vec<String> {
    let tls = &config.tls;
    let shown =
        |path: &Option<PathBuf>| path.as_ref().map_or(String::new(), |path| path.display().to_string());
    let mut notes = vec![match (tls.client_tls(), &tls.client_ca_file) {
        (true, Some(_)) => format!(
            "client ports: TLS, mutual: a client needs a certificate signed by {}",
            shown(&tls.client_ca_file)
        ),
        (true, None) => format!("client ports: TLS with {}", shown(&tls.client_cert_file)),
        (false, _) => "client ports: plaintext (no tls.client_cert_file)".to_string(),
    }];
    if config.cluster.has_peers() {
        notes.push(if tls.peer_tls() {
            format!(
                "peer ports from {}: TLS, each member verified against {}",
                config.node.peer_address,
                shown(&tls.peer_ca_file)
            )
        } else {
            format!("peer ports from {}: plaintext (no tls.peer_cert_file)", config.node.peer_address)
        });
    }
    notes.push(match config.metrics.address {
        Some(address) => {
            format!("metrics and health checks on http://{address}: /metrics, /livez, /readyz, /health")
        }
        None => "no metrics or health checks (metrics.address is unset)".to_string(),
    });
    notes
}

/// Sends `WATCHDOG=1` three times per interval systemd asked for, as long
/// as every reactor runs its mailbox ([`crate::systemd::Liveness`]); never
/// returns. Without a watchdog it waits forever.
async fn feed_watchdog(watchdog: Option<(&crate::systemd::Notifier, Duration)>, node: &Node) {
    let Some((notifier, interval)) = watchdog else {
        return std::future::pending().await;
    };
    tracing::info!("systemd watchdog: every {interval:?}, fed while every reactor runs its mailbox");
    let mut liveness = crate::systemd::Liveness::new(node.reactors().len());
    let mut ticks = tokio::time::interval(interval / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let late = liveness.check(node.reactors().mailboxes());
        if late.is_empty() {
            notifier.notify("WATCHDOG=1");
        } else {
            tracing::warn!(
                "systemd watchdog not fed: shards {late:?} did not run their mailbox within {:?}",
                interval / 3
            );
        }
    }
}

#[cfg(test)]
mod tests;
