//! The daemon's configuration: what `config/nvkv.toml` may say, the default
//! of every key, and the limits each value must respect.
//!
//! This module owns parsing and checking only. It must never touch the
//! machine (no files besides the config itself, no devices, no threads): the
//! node acts on a [`Config`] after [`Config::validate`] accepted it. Every
//! default runs anywhere, so `nvkv serve` with no config file just works.
//! Errors name the key, the value and what is allowed, on one line.

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
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            snapshot_after_entries: 10_000,
            snapshot_after_bytes: 0,
            entries_kept_after_snapshot: 1_000,
            purge_batch_entries: 256,
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

/// `"busy" or "adaptive"`, for error messages.
fn expected<T: ValueEnum>() -> String {
    let names: Vec<String> = T::value_variants()
        .iter()
        .filter_map(|value| value.to_possible_value())
        .map(|value| format!("\"{}\"", value.get_name()))
        .collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Parses `"512MiB"`, `"1 GiB"`, `"4096"`, `"8KiB"` (binary units only, so
/// there is never a doubt whether "1GB" meant 10^9 or 2^30).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|character: char| !character.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier = match unit.trim() {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "TiB" => TIB,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

const BYTES_EXPECTED: &str =
    "a number of bytes: an integer or a string like \"512MiB\" or \"1GiB\" (units B, KiB, MiB, GiB, TiB)";

fn deserialize_address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| de::Error::custom("expected an IP address and a port, like \"127.0.0.1:7379\""))
}

fn deserialize_optional_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    EtcdConfig::parse_address(&text).map_err(de::Error::custom)
}

fn deserialize_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct BytesVisitor;

    impl Visitor<'_> for BytesVisitor {
        type Value = u64;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str(BYTES_EXPECTED)
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| E::custom(format!("expected {BYTES_EXPECTED}")))
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<u64, E> {
            parse_bytes(value).ok_or_else(|| E::custom(format!("expected {BYTES_EXPECTED}")))
        }
    }

    deserializer.deserialize_any(BytesVisitor)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; pass --config with a readable file, or leave it out to use the defaults")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config value {key} = {value} in {origin}: {reason}")]
    Invalid { key: String, value: String, origin: String, reason: String },
    #[error("unknown config key {key} in {origin}: {message}; see config/nvkv.toml for every key")]
    UnknownKey { key: String, origin: String, message: String },
    #[error("config file {origin} is not valid TOML: {message}")]
    Syntax { origin: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, value: impl fmt::Display, expected: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            origin: "the config".to_string(),
            reason: format!("expected {expected}"),
        }
    }

    /// Says which file the error came from.
    fn in_origin(self, new_origin: &str) -> ConfigError {
        match self {
            ConfigError::Invalid { key, value, reason, .. } => {
                ConfigError::Invalid { key, value, origin: new_origin.to_string(), reason }
            }
            other => other,
        }
    }
}

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

    /// Checks every value against its limits and the values against each
    /// other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let node = &self.node;
        if node.member_id == 0 {
            return Err(ConfigError::invalid(
                "node.member_id",
                0,
                "an integer of at least 1 (0 is no member)",
            ));
        }
        if node.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "node.data_dir",
                "\"\"",
                "a directory path, e.g. \"./nvkv-data\"",
            ));
        }
        if node.name.is_empty() || node.name.len() > 64 || node.name.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "node.name",
                format!("{:?}", node.name),
                "a name of 1 to 64 bytes without control characters, e.g. \"node-a\"",
            ));
        }

        let reactor = &self.reactor;
        check_range("reactor.shards_max", reactor.shards_max as u64, 1, SHARDS_LIMIT as u64)?;
        check_range("reactor.shards", reactor.shards as u64, 0, reactor.shards_max as u64)
            .map_err(|error| with_hint(error, " (0 = one per available core), at most reactor.shards_max"))?;
        if reactor.cores.len() > reactor.shards_max {
            return Err(ConfigError::invalid(
                "reactor.cores",
                format!("{:?}", reactor.cores),
                format!("at most reactor.shards_max = {} CPU ids", reactor.shards_max),
            ));
        }
        if reactor.shards > 0 && !reactor.cores.is_empty() && reactor.shards > reactor.cores.len() {
            return Err(ConfigError::invalid(
                "reactor.shards",
                reactor.shards,
                format!(
                    "at most the {} CPU ids listed in reactor.cores, or 0 to use all of them",
                    reactor.cores.len()
                ),
            ));
        }
        for (index, cpu) in reactor.cores.iter().enumerate() {
            if *cpu > CPU_ID_LIMIT {
                return Err(ConfigError::invalid(
                    "reactor.cores",
                    format!("{:?}", reactor.cores),
                    format!("CPU ids in 0..={CPU_ID_LIMIT}, but {cpu} is larger"),
                ));
            }
            if reactor.cores[..index].contains(cpu) {
                return Err(ConfigError::invalid(
                    "reactor.cores",
                    format!("{:?}", reactor.cores),
                    format!("each CPU id at most once, but {cpu} is listed twice"),
                ));
            }
        }
        check_range("reactor.adaptive_poll_us", reactor.adaptive_poll_us, 0, 1_000_000)?;
        check_range("reactor.mailbox_capacity", reactor.mailbox_capacity as u64, 1, 1 << 20)?;

        let namespace = &self.namespace;
        let lba_bytes = u64::from(namespace.lba_bytes);
        if !(512..=4096).contains(&lba_bytes) || !lba_bytes.is_power_of_two() {
            return Err(ConfigError::invalid(
                "namespace.lba_bytes",
                lba_bytes,
                "a power of two from 512 to 4096 (the device's logical block size, usually 512 or 4096)",
            ));
        }
        check_range("namespace.namespace_bytes", namespace.namespace_bytes, MIB, 1 << 50)?;
        check_multiple("namespace.namespace_bytes", namespace.namespace_bytes, lba_bytes)?;
        check_range("namespace.queue_depth", u64::from(namespace.queue_depth), 1, 4096)?;
        check_range("namespace.registered_buffer_bytes", namespace.registered_buffer_bytes, 0, GIB)?;
        check_multiple("namespace.registered_buffer_bytes", namespace.registered_buffer_bytes, lba_bytes)?;
        namespace.validate_spdk()?;

        let log = &self.log;
        check_range("log.batch_bytes_max", log.batch_bytes_max, lba_bytes, 4 * MIB)?;
        check_multiple("log.batch_bytes_max", log.batch_bytes_max, lba_bytes)?;
        let shard_count = reactor.shards.max(1) as u64;
        if log.batch_bytes_max.saturating_mul(u64::from(log.inflight_writes_max)).saturating_mul(shard_count)
            > namespace.namespace_bytes
        {
            return Err(ConfigError::invalid(
                "log.batch_bytes_max",
                log.batch_bytes_max,
                format!(
                    "batch_bytes_max x inflight_writes_max ({}) x shards ({shard_count}) to fit in \
                     namespace.namespace_bytes = {}; lower them or grow the namespace",
                    log.inflight_writes_max, namespace.namespace_bytes
                ),
            ));
        }
        // Recovery looks 4 MiB x 16 past a damaged record for proof it had been
        // durable; the log never has more than that in flight.
        check_range("log.inflight_writes_max", u64::from(log.inflight_writes_max), 1, 16)?;
        // A checkpoint, a flush and at least one read need a slot beside the
        // group-commit writes.
        if log.inflight_writes_max + 3 > namespace.queue_depth {
            return Err(ConfigError::invalid(
                "log.inflight_writes_max",
                log.inflight_writes_max,
                format!(
                    "at most namespace.queue_depth - 3 = {} (a checkpoint, a flush and reads need slots too)",
                    namespace.queue_depth.saturating_sub(3)
                ),
            ));
        }
        check_range(
            "log.groups_per_shard",
            u64::from(log.groups_per_shard),
            1,
            u64::from(GROUPS_PER_SHARD_LIMIT),
        )?;
        check_range("store.partition_depth", self.store.partition_depth as u64, 1, 16)?;
        check_range(
            "store.watch_progress_interval_ms",
            self.store.watch_progress_interval_ms,
            10,
            86_400_000,
        )?;
        check_range(
            "store.watches_per_connection_max",
            u64::from(self.store.watches_per_connection_max),
            1,
            65_536,
        )?;
        check_range(
            "store.watch_events_pending_max",
            u64::from(self.store.watch_events_pending_max),
            1,
            1 << 20,
        )?;
        check_range("store.watches_per_group_max", u64::from(self.store.watches_per_group_max), 1, 1 << 20)?;
        check_range("store.watch_pending_bytes_max", self.store.watch_pending_bytes_max, 4 * KIB, 1 << 30)?;
        check_range(
            "store.watch_group_pending_bytes_max",
            self.store.watch_group_pending_bytes_max,
            self.store.watch_pending_bytes_max,
            1 << 34,
        )?;
        check_range(
            "store.watch_connection_bytes_max",
            self.store.watch_connection_bytes_max,
            64 * KIB,
            1 << 30,
        )?;
        check_range("store.quota_bytes", self.store.quota_bytes, MIB, 1 << 40)?;
        check_range(
            "store.compact_under_pressure_keep_revisions",
            self.store.compact_under_pressure_keep_revisions,
            0,
            1 << 40,
        )?;
        self.validate_store_limits()?;
        let raft = &self.raft;
        check_range("raft.snapshot_after_entries", raft.snapshot_after_entries, 1, 100_000_000)?;
        if raft.snapshot_after_bytes != 0 {
            check_range("raft.snapshot_after_bytes", raft.snapshot_after_bytes, MIB, 1 << 40)?;
        }
        check_range("raft.entries_kept_after_snapshot", raft.entries_kept_after_snapshot, 0, 100_000_000)?;
        check_range("raft.purge_batch_entries", raft.purge_batch_entries, 1, 1_000_000)?;
        check_range("auth.token_ttl_seconds", self.auth.token_ttl_seconds, 1, 7 * 86_400)?;
        let limits = &self.limits;
        check_range("limits.connections_max", u64::from(limits.connections_max), 1, 1 << 20)?;
        check_range(
            "limits.connections_per_source_max",
            u64::from(limits.connections_per_source_max),
            1,
            u64::from(limits.connections_max),
        )?;
        check_range("limits.handshake_timeout_ms", limits.handshake_timeout_ms, 100, 600_000)?;
        check_range("limits.idle_timeout_ms", limits.idle_timeout_ms, 1000, 86_400_000)?;
        check_range(
            "limits.calls_in_flight_per_connection_max",
            u64::from(limits.calls_in_flight_per_connection_max),
            1,
            1 << 20,
        )?;
        self.validate_metrics()?;
        self.validate_etcd()?;
        self.validate_cluster()?;
        self.validate_tls()
    }

    /// The `[tls]` keys that go together are set together, and plaintext
    /// is only for loopback addresses unless `tls.insecure` says otherwise.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        let shown = |path: &Option<PathBuf>| {
            path.as_ref()
                .map_or_else(|| "unset".to_string(), |path| format!("{:?}", path.display().to_string()))
        };
        for (key, path) in [
            ("tls.client_cert_file", &tls.client_cert_file),
            ("tls.client_key_file", &tls.client_key_file),
            ("tls.client_ca_file", &tls.client_ca_file),
            ("tls.peer_cert_file", &tls.peer_cert_file),
            ("tls.peer_key_file", &tls.peer_key_file),
            ("tls.peer_ca_file", &tls.peer_ca_file),
        ] {
            if path.as_ref().is_some_and(|path| path.as_os_str().is_empty()) {
                return Err(ConfigError::invalid(key, "\"\"", "the path of a PEM file, or the key left out"));
            }
        }
        if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
            let (key, value) = if tls.client_cert_file.is_some() {
                ("tls.client_key_file", &tls.client_key_file)
            } else {
                ("tls.client_cert_file", &tls.client_cert_file)
            };
            return Err(ConfigError::invalid(
                key,
                shown(value),
                "tls.client_cert_file and tls.client_key_file set together (the certificate and its key)",
            ));
        }
        if tls.client_ca_file.is_some() && !tls.client_tls() {
            return Err(ConfigError::invalid(
                "tls.client_ca_file",
                shown(&tls.client_ca_file),
                "tls.client_cert_file and tls.client_key_file set too: client certificates are checked only \
                 over TLS",
            ));
        }
        let peer = [
            ("tls.peer_cert_file", &tls.peer_cert_file),
            ("tls.peer_key_file", &tls.peer_key_file),
            ("tls.peer_ca_file", &tls.peer_ca_file),
        ];
        if peer.iter().any(|(_, path)| path.is_some()) {
            if let Some((key, path)) = peer.iter().find(|(_, path)| path.is_none()) {
                return Err(ConfigError::invalid(
                    key,
                    shown(path),
                    "tls.peer_cert_file, tls.peer_key_file and tls.peer_ca_file all set: peers always verify \
                     each other",
                ));
            }
        }
        if tls.insecure {
            return Ok(());
        }
        let node = &self.node;
        if !tls.client_tls() && !node.client_address.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "node.client_address",
                format!("\"{}\"", node.client_address),
                "a loopback address while the client port is plaintext: set tls.client_cert_file and \
                 tls.client_key_file, or tls.insecure = true to accept plaintext on this address",
            ));
        }
        if let Some(etcd) = self.etcd.address.filter(|address| !address.ip().is_loopback()) {
            if !tls.client_tls() {
                return Err(ConfigError::invalid(
                    "etcd.address",
                    format!("\"{etcd}\""),
                    "a loopback address while the client port is plaintext (the etcd API speaks the client \
                     port's TLS): set tls.client_cert_file and tls.client_key_file, or tls.insecure = true",
                ));
            }
        }
        if self.cluster.has_peers() && !tls.peer_tls() && !node.peer_address.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "node.peer_address",
                format!("\"{}\"", node.peer_address),
                "a loopback address while the peer port is plaintext: set tls.peer_cert_file, \
                 tls.peer_key_file and tls.peer_ca_file, or tls.insecure = true to accept plaintext on this \
                 address",
            ));
        }
        Ok(())
    }

    /// What `nvkv serve` warns about at every start: plaintext on
    /// non-loopback addresses that `tls.insecure` allowed.
    pub fn insecure_addresses(&self) -> Vec<String> {
        let mut plain = Vec::new();
        if !self.tls.client_tls() && !self.node.client_address.ip().is_loopback() {
            plain.push(format!("clients on {} (node.client_address)", self.node.client_address));
        }
        if let Some(etcd) = self.etcd.address.filter(|address| !address.ip().is_loopback()) {
            if !self.tls.client_tls() {
                plain.push(format!("etcd clients on {etcd} (etcd.address)"));
            }
        }
        if self.cluster.has_peers() && !self.tls.peer_tls() && !self.node.peer_address.ip().is_loopback() {
            plain.push(format!("peers on {} (node.peer_address)", self.node.peer_address));
        }
        plain
    }

    /// The cluster's name and members: each member once, with ports of its
    /// own, and this member among them as `[node]` describes it.
    fn validate_metrics(&self) -> Result<(), ConfigError> {
        let Some(address) = self.metrics.address else {
            return Ok(());
        };
        if address == self.node.client_address || address == self.node.peer_address {
            return Err(ConfigError::invalid(
                "metrics.address",
                format!("\"{address}\""),
                "an address no client or peer port uses, e.g. \"127.0.0.1:9379\"",
            ));
        }
        if !address.ip().is_loopback() && !self.tls.client_tls() {
            return Err(ConfigError::invalid(
                "metrics.address",
                format!("\"{address}\""),
                "a loopback address (e.g. \"127.0.0.1:9379\"), or set tls.client_cert_file and \
                 tls.client_key_file: off loopback the metrics endpoint speaks TLS with the client port's keys",
            ));
        }
        Ok(())
    }

    fn validate_etcd(&self) -> Result<(), ConfigError> {
        let Some(address) = self.etcd.address else {
            return Ok(());
        };
        let taken = [Some(self.node.client_address), Some(self.node.peer_address), self.metrics.address];
        if address.port() != 0 && taken.contains(&Some(address)) {
            return Err(ConfigError::invalid(
                "etcd.address",
                format!("\"{address}\""),
                "an address no client, peer or metrics port uses, e.g. \"127.0.0.1:2379\", or \"\" for none",
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if cluster.name.is_empty() || cluster.name.len() > 64 || cluster.name.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "cluster.name",
                format!("{:?}", cluster.name),
                "a name of 1 to 64 bytes without control characters, e.g. \"nvkv-prod\"",
            ));
        }
        if cluster.join && !cluster.has_peers() {
            return Err(ConfigError::invalid(
                "cluster.join",
                "true",
                "cluster.members listing the running cluster's members and this one, so this member \
                 knows its peers; or cluster.join = false to start a new cluster",
            ));
        }
        if cluster.members.is_empty() {
            return Ok(());
        }
        if cluster.members.len() > CLUSTER_MEMBERS_LIMIT {
            return Err(ConfigError::invalid(
                "cluster.members",
                format!("{} members", cluster.members.len()),
                format!("at most {CLUSTER_MEMBERS_LIMIT} members (every member holds every group)"),
            ));
        }
        for (index, member) in cluster.members.iter().enumerate() {
            let key = |field: &str| format!("cluster.members[{index}].{field}");
            if member.id == 0 {
                return Err(ConfigError::invalid(&key("id"), 0, "an integer of at least 1 (0 is no member)"));
            }
            if member.name.is_empty() || member.name.len() > 64 || member.name.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    &key("name"),
                    format!("{:?}", member.name),
                    "a name of 1 to 64 bytes without control characters, e.g. \"node1\"",
                ));
            }
            for (field, address) in
                [("client_address", member.client_address), ("peer_address", member.peer_address)]
            {
                if address.port() == 0 || address.ip().is_unspecified() {
                    return Err(ConfigError::invalid(
                        &key(field),
                        format!("\"{address}\""),
                        "an address the other members and clients can reach, with a port (not 0.0.0.0 or port 0)",
                    ));
                }
            }
            if member.client_address == member.peer_address {
                return Err(ConfigError::invalid(
                    &key("peer_address"),
                    format!("\"{}\"", member.peer_address),
                    "an address other than the member's client_address",
                ));
            }
            let addresses = [member.client_address, member.peer_address];
            if let Some(earlier) = cluster.members[..index].iter().find(|earlier| {
                earlier.id == member.id
                    || earlier.name == member.name
                    || addresses.contains(&earlier.client_address)
                    || addresses.contains(&earlier.peer_address)
            }) {
                return Err(ConfigError::invalid(
                    &format!("cluster.members[{index}]"),
                    format!("member {} {:?}", member.id, member.name),
                    format!(
                        "an id, a name and addresses of its own, but member {} {:?} has the same",
                        earlier.id, earlier.name
                    ),
                ));
            }
        }
        let node = &self.node;
        let Some(own) = cluster.members.iter().find(|member| member.id == node.member_id) else {
            return Err(ConfigError::invalid(
                "cluster.members",
                format!("ids {:?}", cluster.members.iter().map(|member| member.id).collect::<Vec<_>>()),
                format!("this member (node.member_id = {}) among them", node.member_id),
            ));
        };
        let differs = [
            ("node.name", own.name != node.name, format!("{:?}", node.name), format!("{:?}", own.name)),
            (
                "node.client_address",
                own.client_address != node.client_address,
                format!("\"{}\"", node.client_address),
                format!("\"{}\"", own.client_address),
            ),
            (
                "node.peer_address",
                own.peer_address != node.peer_address,
                format!("\"{}\"", node.peer_address),
                format!("\"{}\"", own.peer_address),
            ),
        ];
        for (key, different, value, listed) in differs {
            if different {
                return Err(ConfigError::invalid(
                    key,
                    value,
                    format!("{listed}, as cluster.members says of member {}", node.member_id),
                ));
            }
        }
        Ok(())
    }

    /// The request limits: each in its range, and a key and a value no
    /// larger than the request that carries them.
    fn validate_store_limits(&self) -> Result<(), ConfigError> {
        let store = &self.store;
        check_range("store.request_bytes_max", store.request_bytes_max, 4 * KIB, 64 * MIB)?;
        for (key, value) in
            [("store.key_bytes_max", store.key_bytes_max), ("store.value_bytes_max", store.value_bytes_max)]
        {
            if value > store.request_bytes_max {
                return Err(ConfigError::invalid(
                    key,
                    value,
                    format!(
                        "at most store.request_bytes_max = {} (a request carries it); lower it or raise request_bytes_max",
                        store.request_bytes_max
                    ),
                ));
            }
        }
        check_range("store.key_bytes_max", store.key_bytes_max, 1, 64 * KIB)?;
        check_range("store.txn_ops_max", u64::from(store.txn_ops_max), 1, 65_536)?;
        Ok(())
    }
}

/// Longest `namespace.transport`: SPDK's transport id fields (address 256,
/// NQN 223 bytes, and a few short ones) fit well within it.
const TRANSPORT_BYTES_MAX: usize = 1024;

impl NamespaceConfig {
    /// The spdk backend's keys. Their limits hold whatever the backend, so
    /// a config stays valid when only `backend` changes; a transport id is
    /// needed only by the spdk backend.
    fn validate_spdk(&self) -> Result<(), ConfigError> {
        if self.transport.len() > TRANSPORT_BYTES_MAX {
            return Err(ConfigError::invalid(
                "namespace.transport",
                format!("{:?}", self.transport),
                format!("at most {TRANSPORT_BYTES_MAX} bytes"),
            ));
        }
        if self.backend == Backend::Spdk && self.transport.trim().is_empty() {
            return Err(ConfigError::invalid(
                "namespace.transport",
                "\"\"",
                "the controller's SPDK transport id with backend = \"spdk\", e.g. \"trtype:PCIe \
                 traddr:0000:01:00.0\" or \"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 \
                 subnqn:nqn.2016-06.io.spdk:cnode1\"",
            ));
        }
        // NSID 0 is no namespace and 0xffffffff means all of them.
        check_range("namespace.nsid", u64::from(self.nsid), 1, 0xffff_fffe)?;
        check_range("namespace.spdk_memory_bytes", self.spdk_memory_bytes, 64 * MIB, TIB)?;
        if self.spdk_memory_bytes % MIB != 0 {
            return Err(ConfigError::invalid(
                "namespace.spdk_memory_bytes",
                self.spdk_memory_bytes,
                "a whole number of MiB (SPDK reserves memory in MiB)",
            ));
        }
        if !self.spdk_hugepages && self.transport.to_ascii_lowercase().contains("trtype:pcie") {
            return Err(ConfigError::invalid(
                "namespace.spdk_hugepages",
                false,
                "true for a PCIe transport (a PCIe device reads and writes pinned hugepages; only TCP and \
                 RDMA work without them)",
            ));
        }
        Ok(())
    }
}

fn check_range(key: &str, value: u64, low: u64, high: u64) -> Result<(), ConfigError> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, value, format!("an integer in {low}..={high}")))
    }
}

fn check_multiple(key: &str, value: u64, lba_bytes: u64) -> Result<(), ConfigError> {
    if value % lba_bytes == 0 {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, value, format!("a multiple of namespace.lba_bytes = {lba_bytes}")))
    }
}

fn with_hint(error: ConfigError, hint: &str) -> ConfigError {
    match error {
        ConfigError::Invalid { key, value, origin, reason } => {
            ConfigError::Invalid { key, value, origin, reason: format!("{reason}{hint}") }
        }
        other => other,
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |index| index + 1);
    (text[..offset].matches('\n').count() + 1, offset - line_start + 1)
}

fn describe_syntax_error(error: &toml::de::Error, text: &str, origin: &str) -> ConfigError {
    let message = error.message().trim().replace('\n', "; ");
    let origin = match error.span() {
        Some(span) => {
            let (line, column) = line_and_column(text, span.start);
            format!("{origin} line {line} column {column}")
        }
        None => origin.to_string(),
    };
    ConfigError::Syntax { origin, message }
}

/// Turns a TOML error into one line that names the file, line, key and
/// value. Serde reports a bad value with the span of the value, so the key
/// is read back from the text before it, and the section from the nearest
/// `[section]` header above.
fn describe_toml_error(error: &toml::de::Error, text: &str, origin: &str) -> ConfigError {
    let message = error.message().trim().replace('\n', "; ");
    let Some(span) = error.span() else {
        return ConfigError::Syntax { origin: origin.to_string(), message };
    };
    let start = span.start.min(text.len());
    let line_number = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |index| index + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |index| start + index);
    let line = &text[line_start..line_end];
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|candidate| candidate.starts_with('[') && candidate.ends_with(']'))
        .map(|header| {
            header.trim_matches(|character| character == '[' || character == ']').trim().to_string()
        });
    let qualify = |key: &str| match &section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_string(),
    };
    let origin_at_line = format!("{origin} line {line_number}");

    if message.starts_with("unknown field") {
        let key = text[span.clone()].trim().trim_matches('"').to_string();
        return ConfigError::UnknownKey { key: qualify(&key), origin: origin_at_line, message };
    }
    let column = start - line_start;
    if let Some(equals) = line.find('=').filter(|equals| *equals < column) {
        let key = line[..equals].trim();
        let value = text[span.clone()].trim();
        if !key.is_empty() && !key.starts_with('[') {
            return ConfigError::Invalid {
                key: qualify(key),
                value: value.to_string(),
                origin: origin_at_line,
                reason: message,
            };
        }
    }
    ConfigError::Syntax { origin: format!("{origin_at_line} column {}", column + 1), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml")
    }

    #[test]
    fn empty_text_gives_the_defaults() {
        assert_eq!(parse("").expect("empty config parses"), Config::default());
        assert_eq!(Config::load(None).expect("defaults load"), Config::default());
        Config::default().validate().expect("the defaults are valid");
    }

    #[test]
    fn defaults_run_anywhere() {
        let config = Config::default();
        assert_eq!(config.node.member_id, 1);
        assert_eq!(config.node.data_dir, PathBuf::from("./nvkv-data"));
        assert_eq!(config.node.client_address.to_string(), "127.0.0.1:7379");
        assert_eq!(config.reactor.shards, 0);
        assert!(config.reactor.cores.is_empty());
        assert_eq!(config.reactor.poll_mode, PollMode::Adaptive);
        assert_eq!(config.namespace.backend, Backend::Uring);
        assert_eq!(
            config.namespace.resolved_path(&config.node.data_dir),
            PathBuf::from("./nvkv-data/namespace")
        );
        assert_eq!(config.namespace.namespace_bytes, 1 << 30);
        assert_eq!(config.log.durability, Durability::Fua);
    }

    #[test]
    fn the_shipped_example_is_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nvkv.toml");
        let config = Config::load(Some(&path)).expect("config/nvkv.toml parses");
        // The defaults, with data_dir relative to the file's directory.
        let mut defaults = Config::default();
        defaults.resolve_paths(path.parent().expect("config/"));
        assert_eq!(config, defaults, "config/nvkv.toml must show the defaults exactly");
    }

    #[test]
    fn every_key_parses() {
        let config = parse(
            r#"
            [node]
            member_id = 3
            name = "node-c"
            data_dir = "/var/lib/nvkv"
            client_address = "0.0.0.0:7400"

            [tls]
            client_cert_file = "/etc/nvkv/client.pem"
            client_key_file = "/etc/nvkv/client-key.pem"
            client_ca_file = "/etc/nvkv/clients-ca.pem"
            peer_cert_file = "/etc/nvkv/peer.pem"
            peer_key_file = "/etc/nvkv/peer-key.pem"
            peer_ca_file = "/etc/nvkv/ca.pem"
            insecure = true

            [reactor]
            shards = 2
            shards_max = 8
            cores = [2, 3]
            poll_mode = "busy"
            adaptive_poll_us = 0
            mailbox_capacity = 16

            [namespace]
            backend = "spdk"
            path = "/dev/nvme0n1"
            namespace_bytes = "64GiB"
            lba_bytes = 512
            queue_depth = 1024
            registered_buffer_bytes = 16777216
            transport = "trtype:PCIe traddr:0000:01:00.0"
            nsid = 2
            spdk_memory_bytes = "2GiB"
            spdk_hugepages = true

            [log]
            durability = "flush"
            batch_bytes_max = "256KiB"
            inflight_writes_max = 8
            groups_per_shard = 16

            [store]
            partition_depth = 3
            key_bytes_max = 100
            value_bytes_max = "64KiB"
            request_bytes_max = "128KiB"
            txn_ops_max = 8

            [raft]
            snapshot_after_entries = 50
            entries_kept_after_snapshot = 5
            purge_batch_entries = 10
            "#,
        )
        .expect("full config parses");
        assert_eq!(config.node.member_id, 3);
        assert_eq!(config.node.name, "node-c");
        assert_eq!(config.node.client_address.port(), 7400);
        assert_eq!(config.tls.client_ca_file, Some(PathBuf::from("/etc/nvkv/clients-ca.pem")));
        assert_eq!(config.tls.peer_key_file, Some(PathBuf::from("/etc/nvkv/peer-key.pem")));
        assert!(config.tls.client_tls() && config.tls.peer_tls() && config.tls.insecure);
        assert_eq!(config.reactor.cores, vec![2, 3]);
        assert_eq!(config.reactor.poll_mode, PollMode::Busy);
        assert_eq!(config.namespace.backend, Backend::Spdk);
        assert_eq!(config.namespace.resolved_path(Path::new("/ignored")), PathBuf::from("/dev/nvme0n1"));
        assert_eq!(config.namespace.namespace_bytes, 64 << 30);
        assert_eq!(config.namespace.registered_buffer_bytes, 16 << 20);
        assert_eq!(config.namespace.transport, "trtype:PCIe traddr:0000:01:00.0");
        assert_eq!(config.namespace.nsid, 2);
        assert_eq!((config.namespace.spdk_memory_bytes, config.namespace.spdk_hugepages), (2 << 30, true));
        assert_eq!(config.log.durability, Durability::Flush);
        assert_eq!(config.log.batch_bytes_max, 256 << 10);
        assert_eq!((config.store.key_bytes_max, config.store.value_bytes_max), (100, 64 << 10));
        assert_eq!((config.store.request_bytes_max, config.store.txn_ops_max), (128 << 10, 8));
        assert_eq!((config.raft.snapshot_after_entries, config.raft.entries_kept_after_snapshot), (50, 5));
        assert_eq!(config.raft.purge_batch_entries, 10);
    }

    #[test]
    fn sizes_accept_integers_and_binary_units() {
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("1 GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("2TiB"), Some(2 << 40));
        assert_eq!(parse_bytes("1GB"), None, "decimal units are ambiguous and refused");
        assert_eq!(parse_bytes("MiB"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("99999999999999TiB"), None, "overflow is refused");
    }

    #[test]
    fn a_bad_choice_names_key_value_file_and_choices() {
        let error = parse("[reactor]\npoll_mode = \"spin\"\n").expect_err("spin is no poll mode");
        assert_eq!(
            error.to_string(),
            "invalid config value reactor.poll_mode = \"spin\" in test.toml line 2: expected \"busy\" or \"adaptive\""
        );
        let error = parse("[log]\ndurability = \"maybe\"\n").expect_err("maybe is no durability");
        assert!(error.to_string().contains("expected \"fua\", \"flush\" or \"none\""), "{error}");
        let error = parse("[namespace]\nbackend = \"aio\"\n").expect_err("aio is no backend");
        assert!(error.to_string().contains("namespace.backend = \"aio\""), "{error}");
    }

    #[test]
    fn a_wrong_type_names_key_and_value() {
        let error = parse("[namespace]\nqueue_depth = \"deep\"\n").expect_err("a string is no depth");
        let message = error.to_string();
        assert!(
            message.starts_with("invalid config value namespace.queue_depth = \"deep\" in test.toml line 2"),
            "{message}"
        );
        let error = parse("[namespace]\nnamespace_bytes = \"1GB\"\n").expect_err("1GB is ambiguous");
        assert!(error.to_string().contains("namespace.namespace_bytes = \"1GB\""), "{error}");
        let error = parse("[node]\nclient_address = \"localhost\"\n").expect_err("no port");
        assert!(error.to_string().contains("node.client_address = \"localhost\""), "{error}");
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let error = parse("[reactor]\nshards = 2\nthreads = 4\n").expect_err("threads is unknown");
        let message = error.to_string();
        assert!(message.starts_with("unknown config key reactor.threads in test.toml line 3"), "{message}");
        assert!(message.contains("shards_max"), "the message lists the known keys: {message}");
        let error = parse("[raft]\nelection_timeout_ms = 5\n").expect_err("not a raft key");
        assert!(error.to_string().contains("unknown config key raft.election_timeout_ms"), "{error}");
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let error = parse("[node]\nmember_id = = 3\n").expect_err("double equals");
        let message = error.to_string();
        assert!(message.starts_with("config file test.toml line 2 column 13 is not valid TOML"), "{message}");
        assert!(!message.contains('\n'), "errors are one line: {message}");
    }

    /// A config of member 1 named "a" (client 7379, peer 7479) in a cluster
    /// of `members` (id, name, client port, peer port).
    fn cluster(members: &[(u64, &str, u16, u16)]) -> String {
        let mut text = "[node]\nname = \"a\"\npeer_address = \"127.0.0.1:7479\"\n[cluster]\n".to_string();
        for (id, name, client, peer) in members {
            text += &format!(
                "[[cluster.members]]\nid = {id}\nname = \"{name}\"\nclient_address = \"127.0.0.1:{client}\"\n\
                 peer_address = \"127.0.0.1:{peer}\"\n"
            );
        }
        text
    }

    #[test]
    fn the_cluster3_example_parses_as_three_members_of_one_cluster() {
        for member in 1..=3u64 {
            let path =
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/cluster3/node{member}.toml"));
            let config = Config::load(Some(&path)).expect("config/cluster3 parses");
            assert_eq!(config.node.member_id, member);
            assert_eq!(
                config.node.data_dir,
                path.parent().expect("cluster3/").join(format!("nvkv-data/node{member}"))
            );
            assert_eq!(config.cluster.name, "cluster3");
            assert_eq!(config.cluster.members.iter().map(|listed| listed.id).collect::<Vec<_>>(), [1, 2, 3]);
            assert!(config.cluster.has_peers());
        }
        let config =
            parse(&cluster(&[(1, "a", 7379, 7479), (2, "b", 7579, 7679)])).expect("a 2-member cluster");
        assert_eq!(config.cluster.members[1].peer_address.to_string(), "127.0.0.1:7679");
    }

    #[test]
    fn limits_are_enforced() {
        let cases: &[(&str, &str)] = &[
            ("[node]\nmember_id = 0", "node.member_id = 0"),
            ("[reactor]\nshards_max = 0", "reactor.shards_max = 0"),
            ("[reactor]\nshards_max = 257", "reactor.shards_max = 257"),
            ("[reactor]\nshards = 20", "reactor.shards = 20"),
            ("[reactor]\ncores = [1, 1]", "listed twice"),
            ("[reactor]\ncores = [99999]", "99999 is larger"),
            ("[reactor]\nshards = 3\ncores = [0, 1]", "reactor.shards = 3"),
            ("[reactor]\nmailbox_capacity = 0", "reactor.mailbox_capacity = 0"),
            ("[reactor]\nadaptive_poll_us = 5000000", "reactor.adaptive_poll_us = 5000000"),
            ("[namespace]\nlba_bytes = 1000", "namespace.lba_bytes = 1000"),
            ("[namespace]\nqueue_depth = 0", "namespace.queue_depth = 0"),
            ("[namespace]\nbackend = \"spdk\"", "namespace.transport = \"\""),
            ("[namespace]\nnsid = 0", "namespace.nsid = 0"),
            ("[namespace]\nspdk_memory_bytes = \"32MiB\"", "namespace.spdk_memory_bytes = 33554432"),
            ("[namespace]\nspdk_memory_bytes = 100000000", "a whole number of MiB"),
            (
                "[namespace]\ntransport = \"trtype:PCIe traddr:0000:01:00.0\"\nspdk_hugepages = false",
                "namespace.spdk_hugepages = false",
            ),
            ("[namespace]\nqueue_depth = 5000", "namespace.queue_depth = 5000"),
            ("[namespace]\nnamespace_bytes = 1000", "namespace.namespace_bytes = 1000"),
            ("[namespace]\nnamespace_bytes = 1048577", "a multiple of namespace.lba_bytes"),
            ("[log]\nbatch_bytes_max = 5000", "log.batch_bytes_max = 5000"),
            ("[log]\ninflight_writes_max = 0", "log.inflight_writes_max = 0"),
            (
                "[namespace]\nqueue_depth = 2\n[log]\ninflight_writes_max = 4",
                "at most namespace.queue_depth - 3 = 0",
            ),
            ("[log]\ngroups_per_shard = 0", "log.groups_per_shard = 0"),
            ("[store]\nwatch_progress_interval_ms = 5", "store.watch_progress_interval_ms = 5"),
            ("[store]\nwatches_per_connection_max = 0", "store.watches_per_connection_max = 0"),
            ("[store]\nwatch_events_pending_max = 0", "store.watch_events_pending_max = 0"),
            ("[store]\nwatch_pending_bytes_max = 10", "store.watch_pending_bytes_max = 10"),
            ("[store]\nwatch_connection_bytes_max = 0", "store.watch_connection_bytes_max = 0"),
            ("[store]\nquota_bytes = 1000", "store.quota_bytes = 1000"),
            ("[namespace]\nnamespace_bytes = \"1MiB\"", "to fit in namespace.namespace_bytes"),
            ("[node]\nname = \"\"", "node.name = \"\""),
            ("[store]\nrequest_bytes_max = 100", "store.request_bytes_max = 100"),
            ("[store]\nrequest_bytes_max = \"1GiB\"", "store.request_bytes_max = 1073741824"),
            ("[store]\nvalue_bytes_max = \"2MiB\"", "at most store.request_bytes_max = 1572864"),
            ("[store]\nrequest_bytes_max = \"8KiB\"", "store.value_bytes_max = 1572864"),
            ("[store]\nkey_bytes_max = 0", "store.key_bytes_max = 0"),
            ("[store]\ntxn_ops_max = 0", "store.txn_ops_max = 0"),
            ("[raft]\nsnapshot_after_entries = 0", "raft.snapshot_after_entries = 0"),
            ("[raft]\npurge_batch_entries = 0", "raft.purge_batch_entries = 0"),
            ("[cluster]\nname = \"\"", "cluster.name = \"\""),
        ];
        let cluster_cases: Vec<(String, &str)> = vec![
            (cluster(&[(1, "a", 7379, 7479), (2, "b", 7579, 7579)]), "cluster.members[1].peer_address"),
            (cluster(&[(1, "a", 7379, 7479), (2, "b", 7479, 7679)]), "cluster.members[1]"),
            (cluster(&[(1, "a", 7379, 7479), (1, "b", 7579, 7679)]), "member 1 \"a\" has the same"),
            (
                cluster(&[(2, "b", 7579, 7679), (3, "c", 7779, 7879)]),
                "this member (node.member_id = 1) among them",
            ),
            (cluster(&[(1, "a", 7379, 7479), (0, "b", 7579, 7679)]), "cluster.members[1].id = 0"),
            (cluster(&[(1, "a", 7379, 0), (2, "b", 7579, 7679)]), "cluster.members[0].peer_address"),
            (cluster(&[(1, "x", 7379, 7479), (2, "b", 7579, 7679)]), "node.name = \"a\""),
            (
                cluster(&[(1, "a", 7379, 7480), (2, "b", 7579, 7679)]),
                "node.peer_address = \"127.0.0.1:7479\"",
            ),
        ];
        let cases = cases.iter().map(|(text, expected)| (text.to_string(), *expected)).chain(cluster_cases);
        for (text, expected) in cases {
            let error = parse(&text).expect_err(&text);
            let message = error.to_string();
            assert!(
                message.contains(expected),
                "{text:?} gave {message:?}, which does not mention {expected:?}"
            );
            assert!(message.contains("in test.toml"), "{message}");
        }
    }

    #[test]
    fn relative_paths_are_the_config_files_directory() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("node1.toml");
        std::fs::write(
            &path,
            "[node]\ndata_dir = \"./nvkv-data/node1\"\n[namespace]\npath = \"/dev/nvme0n1\"\n\
             [tls]\nclient_cert_file = \"tls/node.pem\"\nclient_key_file = \"tls/node-key.pem\"\n",
        )
        .expect("write the config");
        let config = Config::load(Some(&path)).expect("loads");
        assert_eq!(config.node.data_dir, directory.path().join("nvkv-data/node1"));
        assert_eq!(config.namespace.path, PathBuf::from("/dev/nvme0n1"), "absolute paths stay");
        assert_eq!(config.tls.client_cert_file, Some(directory.path().join("tls/node.pem")));
        assert_eq!(config.tls.client_key_file, Some(directory.path().join("tls/node-key.pem")));
        assert_eq!(config.tls.client_ca_file, None);
        // Without a config file, the defaults stay relative to where nvkv runs.
        assert_eq!(Config::load(None).expect("defaults").node.data_dir, PathBuf::from("./nvkv-data"));
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = Config::load(Some(Path::new("/nonexistent/nvkv.toml"))).expect_err("no such file");
        assert!(error.to_string().contains("/nonexistent/nvkv.toml"), "{error}");
    }

    #[test]
    fn tls_keys_go_together_and_plaintext_stays_on_loopback() {
        let members = "[[cluster.members]]\nid = 1\nname = \"default\"\nclient_address = \"10.0.0.1:7379\"\n\
                       peer_address = \"10.0.0.1:7479\"\n[[cluster.members]]\nid = 2\nname = \"b\"\n\
                       client_address = \"10.0.0.2:7379\"\npeer_address = \"10.0.0.2:7479\"\n";
        let node = "[node]\nclient_address = \"10.0.0.1:7379\"\npeer_address = \"10.0.0.1:7479\"\n";
        let client_tls = "client_cert_file = \"c.pem\"\nclient_key_file = \"k.pem\"\n";
        let peer_tls = "peer_cert_file = \"p.pem\"\npeer_key_file = \"pk.pem\"\npeer_ca_file = \"ca.pem\"\n";
        let cases = [
            (node.to_string(), "node.client_address = \"10.0.0.1:7379\""),
            (
                format!("{node}[tls]\n{client_tls}[cluster]\n{members}"),
                "node.peer_address = \"10.0.0.1:7479\"",
            ),
            ("[tls]\nclient_cert_file = \"c.pem\"\n".to_string(), "tls.client_key_file = unset"),
            ("[tls]\nclient_key_file = \"k.pem\"\n".to_string(), "tls.client_cert_file = unset"),
            ("[tls]\nclient_ca_file = \"ca.pem\"\n".to_string(), "client certificates are checked only"),
            (
                "[tls]\npeer_cert_file = \"p.pem\"\npeer_key_file = \"pk.pem\"\n".to_string(),
                "tls.peer_ca_file = unset",
            ),
            ("[tls]\npeer_ca_file = \"\"\n".to_string(), "tls.peer_ca_file = \"\""),
        ];
        for (text, expected) in cases {
            let message = parse(&text).expect_err(&text).to_string();
            assert!(message.contains(expected), "{text:?} gave {message:?}, not {expected:?}");
        }
        let message = parse(node).expect_err("plaintext on 10.0.0.1").to_string();
        assert!(message.contains("tls.insecure = true"), "the refusal names the setting: {message}");

        let insecure =
            parse(&format!("{node}[tls]\ninsecure = true\n[cluster]\n{members}")).expect("insecure");
        assert_eq!(
            insecure.insecure_addresses(),
            ["clients on 10.0.0.1:7379 (node.client_address)", "peers on 10.0.0.1:7479 (node.peer_address)"]
        );
        let secured =
            parse(&format!("{node}[tls]\n{client_tls}{peer_tls}[cluster]\n{members}")).expect("TLS");
        assert!(secured.insecure_addresses().is_empty());
        assert!(Config::default().insecure_addresses().is_empty(), "loopback plaintext is the quiet default");
    }
}
