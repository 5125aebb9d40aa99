//! The command line's shape: every command, flag and default, as clap
//! parses them. Plain data: what each command does is in its own module.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use nvkv::config::{Durability, PollMode};

/// nvkv: a strongly consistent, replicated key-value store that writes its
/// Raft logs straight to NVMe.
#[derive(Debug, Parser)]
#[command(name = "nvkv", version, propagate_version = true)]
pub struct Cli {
    /// The nodes to talk to, host:port separated by commas (client commands).
    #[arg(
        long,
        global = true,
        value_name = "ADDR,...",
        default_value = "127.0.0.1:7379",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Speak TLS with the nodes and verify their certificates against this
    /// CA (PEM); a node's certificate must name the endpoint's host (its IP
    /// address or DNS name). Without it, client commands speak plaintext.
    #[arg(long, global = true, value_name = "PATH")]
    pub cacert: Option<PathBuf>,
    /// A client certificate (PEM) to present to nodes that require one
    /// (tls.client_ca_file); needs --key and --cacert.
    #[arg(long = "cert", id = "client_cert", global = true, value_name = "PATH")]
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long = "key", id = "client_key", global = true, value_name = "PATH")]
    pub client_key: Option<PathBuf>,
    /// Act as this user (client commands): its password is checked once per
    /// command and a session token used for every connection. Needed once
    /// the cluster checks users (`nvkv auth enable`), unless a client
    /// certificate (--cert) names the user.
    #[arg(long, global = true, value_name = "NAME:PASSWORD")]
    pub user: Option<String>,
    /// Output format of client commands: simple (for people) or json.
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value_t = OutputFormat::Simple)]
    pub write_out: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the nvkv daemon in the foreground until SIGTERM or SIGINT.
    ///
    /// Locks the data directory, opens the namespace, starts one pinned
    /// reactor thread per shard and prints one "nvkv ready: ..." line on
    /// stdout when every shard runs. Logs go to stderr (level from RUST_LOG,
    /// default info). Exits 0 after a clean stop, non-zero with a one-line
    /// reason on stderr when it cannot start (bad config value, data
    /// directory in use, ...).
    Serve {
        /// The config file (TOML). Without it every key takes its default:
        /// data in ./nvkv-data, one shard per core, clients on
        /// 127.0.0.1:7379. config/nvkv.toml documents every key.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Overrides node.data_dir of the config.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Overrides node.client_address of the config (host:port; port 0
        /// picks a free port, which the ready line names).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Overrides etcd.address of the config: where etcd's v3 API
        /// answers (host:port; port 0 picks a free port, which the ready
        /// line names; "" serves no etcd API).
        #[arg(long, value_name = "ADDR", value_parser = parse_etcd_listen)]
        etcd_listen: Option<EtcdListen>,
        #[command(flatten)]
        client_flags: NotForServe,
    },
    /// Shows each endpoint's status: member, namespace, durability, every
    /// shard's core and log (records, bytes used of the ring), where the
    /// shard's writes spend their time (p50/p99 of queue wait and device
    /// write in the log, proposal wait, the Raft round, apply, and end to
    /// end; records per log write and writes per Raft entry), and every
    /// group: its leader, term, applied / last / snapshot / purged log
    /// index, store revision, compact revision, keys, watchers and leases.
    /// With -w json also each group's members' matched log index (where
    /// the endpoint leads) and the members the endpoint knows.
    Status,
    /// Sets KEY to VALUE. Prints OK (like etcdctl), or the response with -w json.
    Put {
        key: String,
        value: String,
        /// Attach the key to this lease (its id in hexadecimal, as `nvkv
        /// lease grant` prints it; 0: no lease).
        #[arg(long, value_name = "ID", default_value = "0", value_parser = parse_lease_or_none)]
        lease: i64,
        /// Also print the value the key had before.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Prints KEY and its value on two lines (like etcdctl), or a range.
    Get {
        key: String,
        /// The end of the range [KEY, RANGE_END).
        range_end: Option<String>,
        /// Every key that starts with KEY.
        #[arg(long)]
        prefix: bool,
        /// At most this many keys (0: no limit).
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Read at this revision (0: the current one).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Print keys without values.
        #[arg(long)]
        keys_only: bool,
        /// Print only how many keys the range selects.
        #[arg(long)]
        count_only: bool,
        /// l: linearizable (the default, a read barrier); s: serializable
        /// (this member's state as it is).
        #[arg(long, value_enum, default_value_t = Consistency::L)]
        consistency: Consistency,
    },
    /// Deletes KEY (or a range). Prints how many keys were deleted.
    Del {
        key: String,
        /// The end of the range [KEY, RANGE_END).
        range_end: Option<String>,
        /// Every key that starts with KEY.
        #[arg(long)]
        prefix: bool,
        /// Also print the deleted keys and values.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Runs a transaction read from standard input, in three sections
    /// separated by an empty line: compares, operations if they all hold,
    /// operations otherwise. For example:
    ///
    ///     mod("/registry/pods/a") > 0
    ///     value("/registry/pods/a") = "old"
    ///
    ///     put /registry/pods/a "new value"
    ///
    ///     get /registry/pods/a
    ///
    /// Compares: value|version|create|mod|lease("KEY") =|!=|<|> OPERAND.
    /// Operations: put KEY VALUE, get KEY [RANGE_END], del KEY [RANGE_END].
    /// Every key must be in one group (see store.partition_depth). Prints
    /// SUCCESS or FAILURE, then each operation's result like put/get/del.
    Txn,
    /// Forgets the history of one group below REVISION. Revisions are per
    /// group: name it with --group, or with --group-of and a key of it
    /// (`nvkv get KEY -w json` shows a key's group and revision).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["group", "group_of"])))]
    Compact {
        /// The revision to compact at; without it, the group's current
        /// revision (each key keeps its latest value only).
        revision: Option<i64>,
        /// The group to compact.
        #[arg(long)]
        group: Option<u32>,
        /// Compact the group this key is in.
        #[arg(long, value_name = "KEY")]
        group_of: Option<String>,
    },
    /// The endpoints' status and health, like etcdctl endpoint: every
    /// endpoint of --endpoints is asked, and one that does not answer is
    /// marked in the output (see `nvkv endpoint --help`).
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// The members of the cluster: list, add, promote, remove (see
    /// `nvkv member --help`).
    Member {
        #[command(subcommand)]
        action: MemberCommand,
    },
    /// Prints every change to KEY (or a range) as it happens, like etcdctl
    /// watch: a PUT or DELETE line, then the key and the value (with
    /// --prev-kv, the previous key and value before them); -w json prints
    /// one JSON object per event. Runs until Ctrl-C, or until --count events
    /// came. Revisions are per group: a range that spans groups (a prefix
    /// shorter than store.partition_depth segments) is watched in each group,
    /// in order within each group. When the node ends the watch (its start
    /// revision is compacted, the node stops) it says why on stderr and
    /// exits non-zero.
    Watch(WatchArgs),
    /// Load generators that print numbers: see `nvkv bench WORKLOAD --help`.
    Bench {
        #[command(subcommand)]
        workload: BenchCommand,
    },
    /// Leases: keys attached to one are deleted when it expires or is
    /// revoked. A lease exists in every group, so keys of any prefix can
    /// share one. Lease ids are hexadecimal on the command line and in
    /// simple output (as etcdctl shows them); -w json prints numbers.
    Lease {
        #[command(subcommand)]
        command: LeaseCommand,
    },
    /// Backups of the whole store, like etcdctl snapshot: save one from a
    /// running node, check one, restore one into a new data directory
    /// (see `nvkv snapshot save --help`).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Users, like etcdctl user: add, delete, list, get, passwd, grant-role,
    /// revoke-role. Changes need the role root once authentication is on.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Roles and their permissions on keys, like etcdctl role: add, delete,
    /// list, get, grant-permission, revoke-permission.
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// Turns the checking of users on or off, like etcdctl auth: enable,
    /// disable, status.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Adds a user. Prints `User NAME created`.
    Add {
        name: String,
        /// The user's password (stored as an Argon2id hash).
        #[arg(long, required_unless_present = "no_password")]
        password: Option<String>,
        /// A user without a password, which only a client certificate with
        /// this common name can act as.
        #[arg(long, conflicts_with = "password")]
        no_password: bool,
    },
    /// Deletes a user.
    Delete { name: String },
    /// Lists every user, one per line.
    List,
    /// Prints a user's roles.
    Get { name: String },
    /// Changes a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password: String,
    },
    /// Grants a role to a user.
    GrantRole { name: String, role: String },
    /// Revokes a role from a user.
    RevokeRole { name: String, role: String },
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Adds a role (without permissions). Prints `Role NAME created`.
    Add { role: String },
    /// Deletes a role, and takes it from every user that had it.
    Delete { role: String },
    /// Lists every role, one per line.
    List,
    /// Prints a role's permissions.
    Get { role: String },
    /// Grants a role read, write or readwrite on KEY, the range [KEY,
    /// RANGE_END), every key starting with KEY (--prefix) or every key from
    /// KEY on (--from-key). A grant on a range the role already has a
    /// permission on replaces its kind.
    GrantPermission {
        role: String,
        #[arg(value_parser = parse_permission_kind)]
        kind: nvkv::kv::auth::PermissionKind,
        #[command(flatten)]
        range: PermissionRange,
    },
    /// Revokes the permission a role has on exactly this key or range.
    RevokePermission {
        role: String,
        #[command(flatten)]
        range: PermissionRange,
    },
}

/// The key or range a permission command names.
#[derive(Debug, clap::Args)]
pub struct PermissionRange {
    pub key: String,
    /// The end of the range [KEY, RANGE_END).
    pub range_end: Option<String>,
    /// Every key that starts with KEY.
    #[arg(long, conflicts_with_all = ["range_end", "from_key"])]
    pub prefix: bool,
    /// Every key from KEY on.
    #[arg(long, conflicts_with = "range_end")]
    pub from_key: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Turns checking on: every request then needs a user (--user, or a
    /// client certificate naming one) whose roles allow it. Needs the user
    /// root; like etcdctl, it adds the role root and grants it to root when
    /// root lacks it.
    Enable,
    /// Turns checking off (root only while it is on).
    Disable,
    /// Prints whether checking is on and the auth revision.
    Status,
}

fn parse_permission_kind(text: &str) -> Result<nvkv::kv::auth::PermissionKind, String> {
    nvkv::kv::auth::PermissionKind::parse(text)
        .ok_or_else(|| format!("{text:?} is not a permission; give read, write or readwrite"))
}

/// The client commands' flags, taken out of `serve` (its help does not
/// list them, and given they are refused by name): they would mean nothing
/// to the daemon. Same ids and types as the global flags, so clap does not
/// add those (and hands these the globals' defaults).
#[derive(Debug, clap::Args)]
pub struct NotForServe {
    #[arg(long, hide = true, value_parser = refuse_for_serve::<String>("--endpoints"))]
    endpoints: Vec<String>,
    #[arg(long, hide = true, value_parser = refuse_for_serve::<PathBuf>("--cacert"))]
    cacert: Option<PathBuf>,
    #[arg(long = "cert", id = "client_cert", hide = true, value_parser = refuse_for_serve::<PathBuf>("--cert"))]
    client_cert: Option<PathBuf>,
    #[arg(long = "key", id = "client_key", hide = true, value_parser = refuse_for_serve::<PathBuf>("--key"))]
    client_key: Option<PathBuf>,
    #[arg(
        short = 'w',
        long = "write-out",
        id = "write_out",
        hide = true,
        value_parser = refuse_for_serve::<OutputFormat>("-w")
    )]
    write_out: Option<OutputFormat>,
}

fn refuse_for_serve<T>(flag: &'static str) -> impl Fn(&str) -> Result<T, String> + Clone {
    move |_| {
        Err(format!(
            "{flag} is a flag of the client commands; `nvkv serve` takes --config, --data-dir and --listen \
             (clients, peers and TLS are set in the config file)"
        ))
    }
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// One line per endpoint: its member id and name, version, groups, how
    /// many groups it leads and how many have no leader it knows, its keys;
    /// an endpoint that did not answer gets its error in the ERRORS column.
    /// Exits 1 when one did not answer, after printing every one.
    Status,
    /// Whether each endpoint serves: it answers, and a linearizable read of
    /// every group through it succeeds (so every group has a leader and a
    /// quorum). Prints "ENDPOINT is healthy: ..." or "ENDPOINT is
    /// unhealthy: REASON" for each; exits 1 when one is unhealthy.
    Health,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Writes a backup of every group of the store to FILE, asked of the
    /// first endpoint that answers.
    ///
    /// Each group's part is consistent at its own revision: it is taken at
    /// a linearizable point of that group (its leader's read index) and
    /// holds every write acknowledged before it was taken. Groups are
    /// separate Raft groups with their own revisions, so the parts are not
    /// one instant across groups. Each part is streamed from the shard that
    /// runs its group and checked with a CRC32C; the file ends with a
    /// checksum over all of it. It is written to FILE.tmp, synced and
    /// renamed, so a failed save leaves no file that looks whole. Prints a
    /// progress bar on stderr when stderr is a terminal.
    Save {
        /// Where the backup goes.
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Makes a new data directory from a backup, with no daemon running,
    /// like etcdctl snapshot restore; then `nvkv serve` with the same
    /// config serves every key as the backup had it (value, create and mod
    /// revision, version, lease), and every lease (each with a full TTL).
    ///
    /// It checks the whole file first and refuses a truncated or corrupt
    /// one, naming what is wrong. The config must make as many groups as
    /// the backup has (reactor.shards × log.groups_per_shard) with the same
    /// store.partition_depth, and the data directory must be empty or
    /// missing. With [cluster] members in the config, every member restores
    /// the same file with its own config, and the groups start with those
    /// members; without, the node starts alone.
    Restore {
        /// The backup, as `nvkv snapshot save` wrote it.
        file: PathBuf,
        /// The new data directory (overrides node.data_dir of the config).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The config the restored node will run with (TOML); without it,
        /// every key takes its default.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Checks a backup's every checksum and store and prints what it
    /// holds: groups, layout, each group's revision.
    Status {
        /// The backup, as `nvkv snapshot save` wrote it.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grants a lease of TTL seconds (1 to 9000000000). Prints
    /// `lease ID granted with TTL(60s)`.
    Grant {
        /// Seconds the lease lives without a keep-alive.
        ttl: i64,
        /// The id to grant (hexadecimal); without it the node picks one.
        #[arg(long, value_parser = parse_lease_id)]
        id: Option<i64>,
    },
    /// Revokes a lease at once, deleting every key attached to it.
    Revoke {
        /// The lease id, hexadecimal as `nvkv lease grant` prints it.
        #[arg(value_parser = parse_lease_id)]
        id: i64,
    },
    /// Renews a lease every TTL/3 seconds until Ctrl-C, printing each
    /// renewal; fails once the lease expired or was revoked.
    KeepAlive {
        /// The lease id, hexadecimal as `nvkv lease grant` prints it.
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Prints the TTL a lease was granted and how long it has left.
    #[command(visible_alias = "ttl")]
    Timetolive {
        /// The lease id, hexadecimal as `nvkv lease grant` prints it.
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Also print the keys attached to it, in every group.
        #[arg(long)]
        keys: bool,
    },
    /// Prints every lease id (with -w json, each one's TTLs too).
    List,
}

/// How client commands print their answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    // For people: etcdctl's simple format.
    Simple,
    // One JSON object per answer (per event for watch).
    Json,
}

/// How a read is served: `l` linearizable (a read barrier), `s`
/// serializable (the member's state as it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    L,
    S,
}

impl Consistency {
    pub fn serializable(self) -> bool {
        self == Consistency::S
    }
}

impl From<Consistency> for nvkv::bench::workload::Consistency {
    fn from(flag: Consistency) -> Self {
        match flag {
            Consistency::L => nvkv::bench::workload::Consistency::Linearizable,
            Consistency::S => nvkv::bench::workload::Consistency::Serializable,
        }
    }
}

fn parse_lease_id(text: &str) -> Result<i64, String> {
    nvkv::rpc::lease::parse_id(text)
}

fn parse_lease_or_none(text: &str) -> Result<i64, String> {
    if text == "0" {
        return Ok(0);
    }
    nvkv::rpc::lease::parse_id(text)
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Lists the members the first answering endpoint knows, like etcdctl:
    /// ID, STATUS (started when the member has told its name, unstarted for
    /// one known only from the Raft membership), NAME, PEER ADDRS, CLIENT
    /// ADDRS, IS LEARNER. With -w json, one object: the answering member's
    /// id and the list.
    List,
    /// Adds a member to every Raft group of the cluster, through each
    /// group's leader. Start the new member first, in join mode
    /// (`[cluster] join = true`, the same cluster name, and cluster.members
    /// listing the running members and itself). With --learner it stays a
    /// learner (receives the log, does not vote) until `member promote`;
    /// without, the node promotes it once it caught up (or answers
    /// notCaughtUp after 10 s: promote it later).
    Add {
        /// The new member's id: its node.member_id, unused in the cluster.
        id: u64,
        /// The new member's node.name.
        #[arg(long)]
        name: String,
        /// The new member's peer address (its node.peer_address), host:port.
        #[arg(long = "peer-urls")]
        peer_urls: String,
        /// The new member's client address (its node.client_address), host:port.
        #[arg(long = "client-urls")]
        client_urls: String,
        /// Add it as a learner only.
        #[arg(long)]
        learner: bool,
    },
    /// Makes a learner a voter in every group. Refused (notCaughtUp, naming
    /// how many entries it misses) until the learner caught up with each
    /// group's leader: `nvkv status -w json` shows its matched index.
    Promote {
        /// The learner's member id.
        id: u64,
    },
    /// Takes a member (voter or learner) out of every group. The removed
    /// member then refuses client requests (notMember); stop it.
    Remove {
        /// The member's id.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The shard log's append path under load, on a namespace of its own.
    ///
    /// One pinned reactor owns a shard log on the namespace; A appender tasks
    /// each append an E-byte entry, wait until the log reports it durable,
    /// and go again. Appends from one reactor turn share one group-commit
    /// write, as in `nvkv serve`. Prints appends/s, MB/s and latency
    /// percentiles (append to durable); with --json, one JSON object on
    /// stdout. The namespace file is created (and zero-filled) if missing
    /// and kept afterwards: delete it yourself.
    Device(DeviceArgs),
    /// Puts against a running store, like etcd's benchmark put.
    ///
    /// C clients share K connections; each puts a random key of the key
    /// space, waits for the answer and goes again. Prints ops/s and latency
    /// percentiles; with --json, one JSON object on stdout: ops, errors,
    /// seconds, ops_per_sec, p50_us, p99_us, p999_us, max_us, mean_us, and
    /// the parameters (workload, clients, connections, key_bytes,
    /// value_bytes, key_space, total, rate, endpoints, target).
    Put(LoadArgs),
    /// Gets of random keys, like etcd's benchmark range.
    ///
    /// First puts every key of the key space once (with its own progress
    /// bar; --no-preload skips it), then C clients each get a random key,
    /// wait and go again. --json adds consistency, limit and preloaded_keys
    /// to put's fields.
    Range(RangeArgs),
    /// Compare-and-swap transactions: if mod_revision(k) == r then put(k, v).
    ///
    /// r is the last revision of k the generator saw (from an earlier swap,
    /// or a linearizable get the first time, counted as
    /// txn_revision_reads); a swap that loses to another writer is a
    /// conflict, not an error, and its answer tells the revision that won.
    /// --json adds txn_succeeded and txn_failed (their sum is ops).
    Txn(LoadArgs),
    /// Gets and puts mixed: --read-ratio of the operations are gets.
    ///
    /// Preloads like range. --json adds read_ratio, consistency,
    /// preloaded_keys, and the gets' and puts' own latencies as objects
    /// `range` and `put` (ops, p50_us, p99_us, p999_us, max_us, mean_us)
    /// beside the overall ones.
    Mixed(MixedArgs),
    /// Watch latency, like etcd's benchmark watch-latency.
    ///
    /// W watchers each watch one key: watcher w the key numbered w mod
    /// --key-space (at most W), spread over the connections. C clients put
    /// random keys of the key space; each value starts with the put's
    /// sequence number, so every event a watcher receives is matched to
    /// its put. The percentiles are over events: from the put being sent
    /// to the event reaching its watcher (on the bench's one thread). After
    /// the last put the watchers get until every acknowledged put reached
    /// every watcher of its key, or 5 s pass without an event. --json adds
    /// watchers, events, events_per_sec, events_missing, events_duplicated,
    /// events_unexpected (all three also counted in errors), put_p50_us and
    /// put_p99_us; ops are the puts.
    Watch(WatchBenchArgs),
    /// Round trips that do no work: nvkv's KV stream ping.
    ///
    /// Each client pings the shard of a random key's group over the client
    /// library's KV stream, which answers at once without touching a group:
    /// the floor under every other operation's latency (the network and
    /// both ends' stacks). nvkv only.
    Ping(LoadArgs),
}

/// The flags every store workload shares.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The key to watch (with --prefix, every key starting with it).
    pub key: String,
    /// The end of the range [KEY, RANGE_END).
    pub range_end: Option<String>,
    /// Every key that starts with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// Start at this revision of each group (0: the next write). Earlier
    /// revisions are replayed from history; a compacted one ends the watch.
    #[arg(long, value_name = "R", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub rev: i64,
    /// Also print the key as it was before each event.
    #[arg(long)]
    pub prev_kv: bool,
    /// Leave out puts.
    #[arg(long)]
    pub no_put: bool,
    /// Leave out deletes.
    #[arg(long)]
    pub no_delete: bool,
    /// Print "progress notify: REVISION (group G)" when a group has had no
    /// event for the node's store.watch_progress_interval_ms.
    #[arg(long)]
    pub progress_notify: bool,
    /// Exit 0 after this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Concurrent clients, each with one operation in flight.
    #[arg(long, value_name = "C", default_value_t = 1)]
    pub clients: u32,
    /// Connections the clients share (round robin).
    #[arg(long = "conns", value_name = "K", default_value_t = 1)]
    pub connections: u32,
    /// Bytes of each key: its number in the key space, in decimal digits.
    #[arg(long, value_name = "BYTES", default_value_t = 8)]
    pub key_bytes: usize,
    /// Bytes of each value written (at most 1572864).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub value_bytes: usize,
    /// Distinct keys the operations choose from (at most 10^key-bytes).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub key_space: u64,
    /// How long to run, in seconds (at most 86400).
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub seconds: f64,
    /// Stop after this many operations in all, if that comes first.
    #[arg(long, value_name = "N")]
    pub total: Option<u64>,
    /// Operations per second over all clients (0: as fast as they go).
    #[arg(long, value_name = "OPS", default_value_t = 0)]
    pub rate: u64,
    /// The store to drive, STORE://HOST:PORT[,HOST:PORT...]: nvkv:// (the
    /// default: nvkv at --endpoints) or etcd:// (etcd's v3 gRPC API at its
    /// client URLs, plain HTTP). The connections go round robin over the
    /// addresses.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Where to ask the servers for their CPU time (and latency budget)
    /// before and after the run, STORE://HOST:PORT[,HOST:PORT...] as
    /// --target takes it; default: the --target. For nvkv's etcd API
    /// (--target etcd://ITS-ETCD-PORT), nvkv://ITS-CLIENT-PORT asks the
    /// same nodes over their native API.
    #[arg(long, value_name = "URL")]
    pub servers: Option<String>,
    /// Print one JSON object on stdout instead of the table (and no
    /// progress bar).
    #[arg(long)]
    pub json: bool,
    /// Threads the clients run on, each with its share of the clients and
    /// connections. Default: one per connection, up to the CPUs this
    /// process may use (and the --total).
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct RangeArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// l: linearizable (a read barrier, the default); s: serializable.
    #[arg(long, value_enum, default_value_t = Consistency::L)]
    pub consistency: Consistency,
    /// Keys per get: 1 reads the chosen key alone; more reads that many
    /// keys from it on (a range across groups).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub limit: i64,
    /// Do not put the key space before the run (the keys are there already).
    #[arg(long)]
    pub no_preload: bool,
}

#[derive(Debug, clap::Args)]
pub struct MixedArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// The share of operations that are gets, 0.0 to 1.0; the rest are puts.
    #[arg(long, value_name = "R", default_value_t = 0.5)]
    pub read_ratio: f64,
    /// l: linearizable gets (the default); s: serializable.
    #[arg(long, value_enum, default_value_t = Consistency::L)]
    pub consistency: Consistency,
    /// Do not put the key space before the run.
    #[arg(long)]
    pub no_preload: bool,
}

#[derive(Debug, clap::Args)]
#[command(mut_arg("key_space", |arg| arg.default_value("100")))]
pub struct WatchBenchArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Watchers, one key each (1 to 10000).
    #[arg(long, value_name = "W", default_value_t = 100)]
    pub watchers: u32,
}

#[derive(Debug, clap::Args)]
pub struct DeviceArgs {
    /// Namespace file or raw block device to write to (a block device is
    /// overwritten).
    #[arg(long, value_name = "PATH", default_value = "./nvkv-data/bench-device.img")]
    pub namespace: PathBuf,
    /// Size of a namespace file, in bytes or with a binary unit (512MiB,
    /// 1GiB). Ignored for a block device.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub namespace_bytes: u64,
    /// Block size of a namespace file.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub lba_bytes: u32,
    /// Concurrent appenders, each waiting for its append before the next.
    #[arg(long, value_name = "A", default_value_t = 1)]
    pub appenders: u32,
    /// Payload bytes of each entry (etcd's WAL check uses 2300).
    #[arg(long, value_name = "E", default_value_t = 2300)]
    pub entry_bytes: usize,
    /// How long to append.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub seconds: f64,
    /// Stop after this many appends in all, if that comes first.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// fua, flush, or none (none is not durable: numbers only).
    #[arg(long, value_enum, default_value_t = Durability::Fua)]
    pub durability: Durability,
    /// adaptive (sleep when idle) or busy (spin).
    #[arg(long, value_enum, default_value_t = PollMode::Adaptive)]
    pub poll_mode: PollMode,
    /// Largest group-commit write, in bytes or with a binary unit.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub batch_bytes_max: u64,
    /// Group-commit writes in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub inflight_writes_max: usize,
    /// Queue pair depth.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub queue_depth: u32,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Append through the spdk backend to this controller instead of
    /// --namespace: an SPDK transport id such as "trtype:TCP adrfam:IPv4
    /// traddr:127.0.0.1 trsvcid:4420 subnqn:..." (needs a build with
    /// --features spdk). The namespace is formatted for the run.
    #[arg(long, value_name = "TRID")]
    pub spdk_transport: Option<String>,
    /// The namespace of --spdk-transport to write to.
    #[arg(long, value_name = "NSID", default_value_t = 1)]
    pub spdk_nsid: u32,
    /// Take SPDK's memory from ordinary pages, not hugepages (TCP and RDMA
    /// transports only).
    #[arg(long)]
    pub spdk_no_hugepages: bool,
}

fn parse_size(text: &str) -> Result<u64, String> {
    nvkv::config::parse_bytes(text)
        .ok_or_else(|| format!("{text:?} is not a size: give bytes or a number with KiB, MiB, GiB or TiB"))
}

/// `serve --etcd-listen`: an address, or none ("").
#[derive(Clone, Debug)]
pub struct EtcdListen(pub Option<std::net::SocketAddr>);

fn parse_etcd_listen(text: &str) -> Result<EtcdListen, String> {
    nvkv::config::EtcdConfig::parse_address(text).map(EtcdListen)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of the whole command line (flags that clash,
    /// groups that name no flag), which it otherwise makes only when the
    /// command that breaks them is run.
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
