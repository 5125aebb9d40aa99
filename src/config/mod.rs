//! The daemon's configuration: what `config/nvkv.toml` may say, the default
//! of every key, and the limits each value must respect.
//!
//! This module owns parsing and checking only. It must never touch the
//! machine (no files besides the config itself, no devices, no threads): the
//! node acts on a [`Config`] after [`Config::validate`] accepted it. Every
//! default runs anywhere, so `nvkv serve` with no config file just works.
//! Errors name the key, the value and what is allowed, on one line.
//!
//! Here: the sections, their defaults and reading a file; `values` reads
//! sizes, addresses and choices, `validate` holds every check, `error` the
//! refusals and the rewriting of toml's messages.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Largest `reactor.shards_max`: one shard per core of the largest machines
/// we plan for.
pub const SHARDS_LIMIT: usize = 256;
/// Largest `log.groups_per_shard`: the number of groups a shard log's
/// checkpoint has room for, fixed when the namespace is formatted.
pub const GROUPS_PER_SHARD_LIMIT: u32 = 256;
/// Largest CPU id accepted in `reactor.cores`.
pub const CPU_ID_LIMIT: usize = 4095;

/// Everything `nvkv serve` reads from its config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub reactor: ReactorConfig,
    pub namespace: NamespaceConfig,
    pub log: LogConfig,
    pub store: StoreConfig,
    pub raft: RaftConfig,
    pub cluster: ClusterConfig,
    pub metrics: MetricsConfig,
    pub tls: TlsConfig,
    pub etcd: EtcdConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
}

/// `[auth]`: sessions of users who authenticate with a password (users,
/// roles and whether they are checked are data: `nvkv user`, `nvkv role`,
/// `nvkv auth`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How long a session token stays good after its password was checked.
    pub token_ttl_seconds: u64,
}

impl Default for AuthConfig {
    /// etcd's simple tokens last five minutes.
    fn default() -> Self {
        AuthConfig { token_ttl_seconds: 300 }
    }
}

/// `[limits]`: what client connections a node takes, and for how long (see
/// `reactor::admission`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Client connections (native and etcd) the node holds at once.
    pub connections_max: u32,
    /// Client connections one source address may hold at once.
    pub connections_per_source_max: u32,
    /// How long a new connection may take to send its first bytes and, with
    /// TLS, to finish its handshake.
    pub handshake_timeout_ms: u64,
    /// How long a connection that holds no watch may read and write nothing.
    pub idle_timeout_ms: u64,
    /// Requests one connection may have in flight (KV calls on the native
    /// port, gRPC streams on the etcd port).
    pub calls_in_flight_per_connection_max: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            connections_max: 8192,
            connections_per_source_max: 1024,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 600_000,
            calls_in_flight_per_connection_max: 1024,
        }
    }
}

/// `[etcd]`: etcd's v3 gRPC API, served beside the native one with the
/// client port's TLS settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// Where etcd clients connect; `None` (an empty string in the file):
    /// no etcd API.
    #[serde(deserialize_with = "deserialize_optional_address")]
    pub address: Option<SocketAddr>,
}

/// etcd's own client port, so nvkv is a drop-in for etcd's clients.
pub const ETCD_ADDRESS_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2379);

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig { address: Some(ETCD_ADDRESS_DEFAULT) }
    }
}

impl EtcdConfig {
    /// An address as `--etcd-listen` takes it: host:port, or empty for none.
    pub fn parse_address(text: &str) -> Result<Option<SocketAddr>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            format!(
                "{text:?} is not an IP address and a port, like \"127.0.0.1:2379\" (or \"\" for no etcd API)"
            )
        })
    }
}

/// `[tls]`: TLS on the client port (and the shards' own ports) and on the
/// peer port. Only the paths are checked here; `rpc::tls` reads the files
/// when the node starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The client port's certificate chain (PEM); with `client_key_file`,
    /// clients must speak TLS.
    pub client_cert_file: Option<PathBuf>,
    /// The private key of `client_cert_file` (PEM).
    pub client_key_file: Option<PathBuf>,
    /// When set, clients must present a certificate signed by this CA
    /// (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// This member's certificate on the peer port, as server and as client.
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of `peer_cert_file`.
    pub peer_key_file: Option<PathBuf>,
    /// The CA every member's peer certificate must be signed by; both ends
    /// of a peer connection verify the other.
    pub peer_ca_file: Option<PathBuf>,
    /// Allows plaintext on a non-loopback client or peer address (warned
    /// about at every start).
    pub insecure: bool,
}

impl TlsConfig {
    /// Whether the client port speaks TLS.
    pub fn client_tls(&self) -> bool {
        self.client_cert_file.is_some()
    }

    /// Whether the peer port speaks TLS.
    pub fn peer_tls(&self) -> bool {
        self.peer_cert_file.is_some()
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` answers in Prometheus text format: plain HTTP on
    /// loopback, HTTPS with the client port's keys (and client
    /// certificates, when it asks for them) elsewhere; unset: no endpoint.
    pub address: Option<SocketAddr>,
}

/// `[node]`: who this member is and where it keeps its data.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This member's Raft id, unique in the cluster, never 0.
    pub member_id: u64,
    /// This member's human-readable name, as `nvkv member list` shows it.
    pub name: String,
    /// Holds the lock file and, by default, the namespace file.
    pub data_dir: PathBuf,
    /// Where clients connect.
    #[serde(deserialize_with = "deserialize_address")]
    pub client_address: SocketAddr,
    /// Where this member's shards take connections from the other members'
    /// (shard s on port + s); listened on only when `cluster.members` names
    /// other members.
    #[serde(deserialize_with = "deserialize_address")]
    pub peer_address: SocketAddr,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            member_id: 1,
            name: "default".to_string(),
            data_dir: PathBuf::from("./nvkv-data"),
            client_address: SocketAddr::from(([127, 0, 0, 1], 7379)),
            peer_address: SocketAddr::from(([127, 0, 0, 1], 7479)),
        }
    }
}

/// `[reactor]`: the thread-per-core runtime.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReactorConfig {
    /// Shards (one reactor thread each); 0 means one per available core,
    /// capped by `shards_max`.
    pub shards: usize,
    pub shards_max: usize,
    /// Explicit CPU ids for the shards, in shard order; empty lets the
    /// topology choose.
    pub cores: Vec<usize>,
    pub poll_mode: PollMode,
    /// How long an adaptive reactor keeps polling after its last progress
    /// before it sleeps.
    pub adaptive_poll_us: u64,
    /// Messages a shard's mailbox holds before senders are refused.
    pub mailbox_capacity: usize,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            shards: 0,
            shards_max: 16,
            cores: Vec::new(),
            poll_mode: PollMode::Adaptive,
            adaptive_poll_us: 250,
            mailbox_capacity: 4096,
        }
    }
}

/// `[namespace]`: the device the logs go to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    pub backend: Backend,
    /// A file or a raw block device; empty means `<data_dir>/namespace`.
    pub path: PathBuf,
    #[serde(deserialize_with = "deserialize_bytes")]
    pub namespace_bytes: u64,
    pub lba_bytes: u32,
    pub queue_depth: u32,
    #[serde(deserialize_with = "deserialize_bytes")]
    pub registered_buffer_bytes: u64,
    /// The spdk backend's controller, as an SPDK transport id.
    pub transport: String,
    /// The spdk backend's namespace on that controller.
    pub nsid: u32,
    /// Memory SPDK's env reserves for the whole process.
    #[serde(deserialize_with = "deserialize_bytes")]
    pub spdk_memory_bytes: u64,
    /// Whether SPDK's memory comes from hugepages.
    pub spdk_hugepages: bool,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            backend: Backend::Uring,
            path: PathBuf::new(),
            namespace_bytes: GIB,
            lba_bytes: 4096,
            queue_depth: 128,
            registered_buffer_bytes: 8 * MIB,
            transport: String::new(),
            nsid: 1,
            spdk_memory_bytes: 256 * MIB,
            spdk_hugepages: true,
        }
    }
}

impl NamespaceConfig {
    /// The namespace path with the default applied: `<data_dir>/namespace`
    /// when `path` is empty.
    pub fn resolved_path(&self, data_dir: &Path) -> PathBuf {
        if self.path.as_os_str().is_empty() {
            data_dir.join("namespace")
        } else {
            self.path.clone()
        }
    }
}

/// `[store]`: how keys map to Raft groups.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Leading '/'-separated segments of a key that choose its group, so all
    /// keys under one prefix (`/registry/pods/` at depth 2) share a group:
    /// prefix ranges and transactions within it are served by one group.
    pub partition_depth: usize,
    /// Largest key a client may write or read.
    #[serde(deserialize_with = "deserialize_bytes")]
    pub key_bytes_max: u64,
    /// Largest value a client may put.
    #[serde(deserialize_with = "deserialize_bytes")]
    pub value_bytes_max: u64,
    /// Largest request message as it arrives (etcd's `--max-request-bytes`).
    #[serde(deserialize_with = "deserialize_bytes")]
    pub request_bytes_max: u64,
    /// Most compares, and most operations in each branch, of one txn.
    pub txn_ops_max: u32,
    /// How long a watch that asked for progress notifications may go
    /// without hearing from its group before it is told how far it is
    /// (etcd's default: ten minutes).
    pub watch_progress_interval_ms: u64,
    /// Watches one client connection may hold open at once.
    pub watches_per_connection_max: u32,
    /// Watches one group may hold open at once, whoever opened them.
    pub watches_per_group_max: u32,
    /// Events a watch may leave untaken before it is moved from the live
    /// buffer to reading history (nothing is lost; memory stays bounded).
    pub watch_events_pending_max: u32,
    /// Bytes (keys and values) a watch may leave untaken in its group's
    /// live buffer before it is moved to reading history.
    #[serde(deserialize_with = "deserialize_bytes")]
    pub watch_pending_bytes_max: u64,
    /// Bytes of events all the live buffers of one group hold, each event
    /// counted once however many watches share it; past it the watches
    /// holding the most are moved to reading history.
    #[serde(deserialize_with = "deserialize_bytes")]
    pub watch_group_pending_bytes_max: u64,
    /// Bytes of events one client connection's watches may have on their
    /// way to the client (sent, not yet taken); past it they wait.
    #[serde(deserialize_with = "deserialize_bytes")]
    pub watch_connection_bytes_max: u64,
    /// Bytes one group's store may take (as its snapshot encodes it: live
    /// keys, values and the history not yet compacted) before the group
    /// raises its NOSPACE alarm and refuses writes that add data.
    #[serde(deserialize_with = "deserialize_bytes")]
    pub quota_bytes: u64,
    /// Bytes of client writes one group's proposal queue may hold while
    /// its earlier proposals are in flight; past it writes wait for room
    /// (within their request timeout), which holds their connection back.
    #[serde(deserialize_with = "deserialize_bytes")]
    pub proposal_queue_bytes_max: u64,
    /// When a group's snapshot does not fit its shard's snapshot area, its
    /// leader compacts its history down to this many revisions (0: never;
    /// the group then serves from its log until an operator compacts).
    pub compact_under_pressure_keep_revisions: u64,
}

impl Default for StoreConfig {
    /// etcd's limits: 1.5 MiB per request, 128 operations per txn; a key
    /// is rarely over a few hundred bytes, so keys get 1.5 KiB.
    fn default() -> Self {
        StoreConfig {
            partition_depth: 2,
            key_bytes_max: 1536,
            value_bytes_max: 1536 * KIB,
            request_bytes_max: 1536 * KIB,
            txn_ops_max: 128,
            watch_progress_interval_ms: 600_000,
            watches_per_connection_max: 1024,
            watches_per_group_max: 10_000,
            watch_events_pending_max: 1024,
            watch_pending_bytes_max: MIB,
            watch_group_pending_bytes_max: 16 * MIB,
            watch_connection_bytes_max: 8 * MIB,
            quota_bytes: 2048 * MIB,
            proposal_queue_bytes_max: 32 * MIB,
            compact_under_pressure_keep_revisions: 10_000,
        }
    }
}

/// `[raft]`: when each group snapshots its store and purges its log.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// A group snapshots its store once this many entries were applied
    /// since its last snapshot.
    pub snapshot_after_entries: u64,
    /// A group also snapshots (and purges its log up to the snapshot) once
    /// its entries take this many bytes of its shard's log ring. 0: a
    /// quarter of the ring shared among the shard's groups.
    #[serde(deserialize_with = "deserialize_bytes")]
    pub snapshot_after_bytes: u64,
    /// Entries kept in the log behind a snapshot, so a follower a little
    /// behind catches up from the log instead of a whole snapshot.
    pub entries_kept_after_snapshot: u64,
    /// The log is purged in steps of at least this many entries.
    pub purge_batch_entries: u64,
    /// Whether a member that dropped an unproven tail at recovery refuses
    /// votes until a leader repairs its log (`raft::GroupConfig`).
    pub refuse_votes_after_unproven_tail: bool,
    /// Whether a restarted member applies its log up to the committed index
    /// it kept before it serves (`raft::GroupConfig`).
    pub apply_committed_at_start: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            snapshot_after_entries: 10_000,
            snapshot_after_bytes: 0,
            entries_kept_after_snapshot: 1_000,
            purge_batch_entries: 256,
            refuse_votes_after_unproven_tail: false,
            apply_committed_at_start: true,
        }
    }
}

/// Most members `cluster.members` may list.
pub const CLUSTER_MEMBERS_LIMIT: usize = 9;

/// `[cluster]`: which cluster this member belongs to, and the members every
/// group starts with.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Names the cluster. Both ends of every peer connection check they
    /// carry the same name, so a member of another cluster is never joined
    /// by mistake.
    pub name: String,
    /// The members every group is bootstrapped with, this one included.
    /// Empty: this member alone (no peers, no peer port).
    pub members: Vec<MemberConfig>,
    /// Join mode, for a member added to a running cluster: its groups are
    /// never bootstrapped; they wait until the cluster's leaders add it
    /// (`nvkv member add`), and it refuses client requests until then.
    /// `members` lists the running cluster's members and this one.
    pub join: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { name: "nvkv".to_string(), members: Vec::new(), join: false }
    }
}

impl ClusterConfig {
    /// Whether this member has peers to replicate with.
    pub fn has_peers(&self) -> bool {
        self.members.len() > 1
    }

    /// The id of the cluster these members bootstrap: the same on every
    /// member whose config lists the same name and members (ids and peer
    /// addresses, in any order), as etcd derives its cluster id from the
    /// initial cluster and its token. `own` stands for the member list of a
    /// node alone. Members started later learn the id from the cluster.
    pub fn bootstrap_cluster_id(&self, own: (u64, SocketAddr)) -> [u8; 16] {
        let mut members: Vec<(u64, SocketAddr)> =
            self.members.iter().map(|member| (member.id, member.peer_address)).collect();
        if members.is_empty() {
            members.push(own);
        }
        members.sort();
        let mut seed = self.name.as_bytes().to_vec();
        for (id, address) in members {
            seed.push(0);
            seed.extend_from_slice(&id.to_le_bytes());
            seed.extend_from_slice(address.to_string().as_bytes());
        }
        let mut cluster_id = [0u8; 16];
        for (lane, chunk) in cluster_id.chunks_mut(4).enumerate() {
            chunk.copy_from_slice(&crc32c::crc32c_append(0x6e76_6b76 ^ lane as u32, &seed).to_le_bytes());
        }
        cluster_id
    }
}

/// One `[[cluster.members]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u64,
    pub name: String,
    #[serde(deserialize_with = "deserialize_address")]
    pub client_address: SocketAddr,
    #[serde(deserialize_with = "deserialize_address")]
    pub peer_address: SocketAddr,
}

/// `[log]`: the per-shard log and its group commit.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub durability: Durability,
    /// Largest single group-commit write.
    #[serde(deserialize_with = "deserialize_bytes")]
    pub batch_bytes_max: u64,
    /// Group-commit writes a shard keeps in flight at once.
    pub inflight_writes_max: u32,
    /// Raft groups each shard hosts.
    pub groups_per_shard: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            durability: Durability::Fua,
            // etcd's largest request (1.5 MiB) and its entry header fit one
            // entry, so every value a client may put has room in the log.
            batch_bytes_max: 2 * MIB,
            inflight_writes_max: 4,
            groups_per_shard: 4,
        }
    }
}

/// How a reactor waits for work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PollMode {
    /// Never sleeps: lowest latency, one core at 100%.
    Busy,
    /// Polls for `adaptive_poll_us` after the last progress, then sleeps until
    /// a completion, a mailbox message or a timer wakes it.
    Adaptive,
}

/// The namespace backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// io_uring with O_DIRECT on a file or raw block device.
    Uring,
    /// SPDK's user-space NVMe driver (cargo feature `spdk`).
    Spdk,
}

/// When a log write counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Each group-commit write carries FUA.
    Fua,
    /// Each group-commit write is followed by a flush.
    Flush,
    /// Nothing is made durable: for benchmarks only.
    None,
}

// A string-valued setting is spelled the way its clap `ValueEnum` names it
// (the variant in lower case): one spelling for the config file, the
// command line, printing and error messages.
macro_rules! choice_traits {
    ($($type:ty),*) => {$(
        impl fmt::Display for $type {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.to_possible_value().expect("no variant is skipped").get_name())
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                <$type as ValueEnum>::from_str(&name, false)
                    .map_err(|_| de::Error::custom(format!("expected {}", expected::<$type>())))
            }
        }
    )*};
}

choice_traits!(PollMode, Backend, Durability);

impl Config {
    /// Reads and checks the config file, or returns the defaults (checked
    /// too) when there is none.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            let config = Config::default();
            config.validate().map_err(|error| error.in_origin("the defaults"))?;
            return Ok(config);
        };
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: origin.clone(), source })?;
        let mut config = Config::parse(&text, &origin)?;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let directory = std::path::absolute(directory)
            .map_err(|source| ConfigError::Read { path: origin.clone(), source })?;
        config.resolve_paths(&directory);
        Ok(config)
    }

    /// Makes every relative path of the config relative to `directory`
    /// (the config file's): a config means the same files wherever nvkv is
    /// started from. Absolute paths stay as they are.
    pub fn resolve_paths(&mut self, directory: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() && !path.as_os_str().is_empty() {
                let relative: PathBuf = path
                    .components()
                    .filter(|component| *component != std::path::Component::CurDir)
                    .collect();
                *path = directory.join(relative);
            }
        };
        resolve(&mut self.node.data_dir);
        resolve(&mut self.namespace.path);
        let tls = &mut self.tls;
        for path in [
            &mut tls.client_cert_file,
            &mut tls.client_key_file,
            &mut tls.client_ca_file,
            &mut tls.peer_cert_file,
            &mut tls.peer_key_file,
            &mut tls.peer_ca_file,
        ]
        .into_iter()
        .flatten()
        {
            resolve(path);
        }
    }

    /// Parses and checks config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // Syntax first, so that a malformed line is never mistaken for a bad value.
        toml::from_str::<toml::Table>(text).map_err(|error| describe_syntax_error(&error, text, origin))?;
        let config: Config =
            toml::from_str(text).map_err(|error| describe_toml_error(&error, text, origin))?;
        config.validate().map_err(|error| error.in_origin(origin))?;
        Ok(config)
    }
}

mod error;
#[cfg(test)]
mod tests;
mod validate;
mod values;

pub use error::ConfigError;
use error::*;
pub use values::parse_bytes;
use values::*;
