//! The `nvkv` command line. It owns argument parsing, logging setup and the
//! exit code; everything else is in the library (`nvkv::node` for `serve`).
//! It must never hold logic a test of the library could not reach.

use std::io::IsTerminal;

// `println!` and `print!` of this binary: a command whose reader went away
// (`nvkv get --prefix / | head`) ends quietly with status 141, as a shell
// reports a SIGPIPE, instead of panicking on the broken pipe. SIGPIPE itself
// stays ignored: sockets (TLS writes them with writev, which has no
// MSG_NOSIGNAL) must fail with an error, not kill the process.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout(), $($arg)*) {
            stdout_failed(error)
        }
    }};
}
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = write!(std::io::stdout(), $($arg)*) {
            stdout_failed(error)
        }
    }};
}

/// `serve --etcd-listen`: an address, or none ("").
#[derive(Clone, Debug)]
struct EtcdListen(Option<std::net::SocketAddr>);

fn parse_etcd_listen(text: &str) -> Result<EtcdListen, String> {
    nvkv::config::EtcdConfig::parse_address(text).map(EtcdListen)
}

/// Ends the process after a failed write to stdout.
fn stdout_failed(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("nvkv: cannot write to stdout: {error}");
    std::process::exit(1)
}
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use nvkv::config::Config;
use nvkv::rpc::client::ClientTls;

/// nvkv: a strongly consistent, replicated key-value store that writes its
/// Raft logs straight to NVMe.
#[derive(Debug, Parser)]
#[command(name = "nvkv", version, propagate_version = true)]
struct Cli {
    /// The nodes to talk to, host:port separated by commas (client commands).
    #[arg(
        long,
        global = true,
        value_name = "ADDR,...",
        default_value = "127.0.0.1:7379",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// Speak TLS with the nodes and verify their certificates against this
    /// CA (PEM); a node's certificate must name the endpoint's host (its IP
    /// address or DNS name). Without it, client commands speak plaintext.
    #[arg(long, global = true, value_name = "PATH")]
    cacert: Option<PathBuf>,
    /// A client certificate (PEM) to present to nodes that require one
    /// (tls.client_ca_file); needs --key and --cacert.
    #[arg(long = "cert", id = "client_cert", global = true, value_name = "PATH")]
    client_cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long = "key", id = "client_key", global = true, value_name = "PATH")]
    client_key: Option<PathBuf>,
    /// Output format of client commands: simple (for people) or json.
    #[arg(short = 'w', long = "write-out", global = true, default_value = "simple", value_parser = ["simple", "json"])]
    write_out: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        #[arg(long, default_value = "l", value_parser = ["l", "s"])]
        consistency: String,
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
    /// Forgets the history of one group below REVISION (revisions are per
    /// group: `nvkv get KEY -w json` names a key's group and revision).
    Compact {
        revision: i64,
        #[arg(long)]
        group: u32,
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
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
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
enum LeaseCommand {
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
enum MemberCommand {
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
enum BenchCommand {
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
}

/// The flags every store workload shares.
#[derive(Debug, clap::Args)]
struct WatchArgs {
    /// The key to watch (with --prefix, every key starting with it).
    key: String,
    /// The end of the range [KEY, RANGE_END).
    range_end: Option<String>,
    /// Every key that starts with KEY.
    #[arg(long)]
    prefix: bool,
    /// Start at this revision of each group (0: the next write). Earlier
    /// revisions are replayed from history; a compacted one ends the watch.
    #[arg(long, value_name = "R", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    rev: i64,
    /// Also print the key as it was before each event.
    #[arg(long)]
    prev_kv: bool,
    /// Leave out puts.
    #[arg(long)]
    no_put: bool,
    /// Leave out deletes.
    #[arg(long)]
    no_delete: bool,
    /// Print "progress notify: REVISION (group G)" when a group has had no
    /// event for the node's store.watch_progress_interval_ms.
    #[arg(long)]
    progress_notify: bool,
    /// Exit 0 after this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// Concurrent clients, each with one operation in flight.
    #[arg(long, value_name = "C", default_value_t = 1)]
    clients: u32,
    /// Connections the clients share (round robin).
    #[arg(long = "conns", value_name = "K", default_value_t = 1)]
    connections: u32,
    /// Bytes of each key: its number in the key space, in decimal digits.
    #[arg(long, value_name = "BYTES", default_value_t = 8)]
    key_bytes: usize,
    /// Bytes of each value written (at most 1572864).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    value_bytes: usize,
    /// Distinct keys the operations choose from (at most 10^key-bytes).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    key_space: u64,
    /// How long to run, in seconds (at most 86400).
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many operations in all, if that comes first.
    #[arg(long, value_name = "N")]
    total: Option<u64>,
    /// Operations per second over all clients (0: as fast as they go).
    #[arg(long, value_name = "OPS", default_value_t = 0)]
    rate: u64,
    /// The store to drive, STORE://HOST:PORT[,HOST:PORT...]: nvkv:// (the
    /// default: nvkv at --endpoints) or etcd:// (etcd's v3 gRPC API at its
    /// client URLs, plain HTTP). The connections go round robin over the
    /// addresses.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Print one JSON object on stdout instead of the table (and no
    /// progress bar).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RangeArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// l: linearizable (a read barrier, the default); s: serializable.
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    consistency: String,
    /// Keys per get: 1 reads the chosen key alone; more reads that many
    /// keys from it on (a range across groups).
    #[arg(long, value_name = "N", default_value_t = 1)]
    limit: i64,
    /// Do not put the key space before the run (the keys are there already).
    #[arg(long)]
    no_preload: bool,
}

#[derive(Debug, clap::Args)]
struct MixedArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// The share of operations that are gets, 0.0 to 1.0; the rest are puts.
    #[arg(long, value_name = "R", default_value_t = 0.5)]
    read_ratio: f64,
    /// l: linearizable gets (the default); s: serializable.
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    consistency: String,
    /// Do not put the key space before the run.
    #[arg(long)]
    no_preload: bool,
}

#[derive(Debug, clap::Args)]
#[command(mut_arg("key_space", |arg| arg.default_value("100")))]
struct WatchBenchArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Watchers, one key each (1 to 10000).
    #[arg(long, value_name = "W", default_value_t = 100)]
    watchers: u32,
}

#[derive(Debug, clap::Args)]
struct DeviceArgs {
    /// Namespace file or raw block device to write to (a block device is
    /// overwritten).
    #[arg(long, value_name = "PATH", default_value = "./nvkv-data/bench-device.img")]
    namespace: PathBuf,
    /// Size of a namespace file, in bytes or with a binary unit (512MiB,
    /// 1GiB). Ignored for a block device.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    namespace_bytes: u64,
    /// Block size of a namespace file.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    lba_bytes: u32,
    /// Concurrent appenders, each waiting for its append before the next.
    #[arg(long, value_name = "A", default_value_t = 1)]
    appenders: u32,
    /// Payload bytes of each entry (etcd's WAL check uses 2300).
    #[arg(long, value_name = "E", default_value_t = 2300)]
    entry_bytes: usize,
    /// How long to append.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many appends in all, if that comes first.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// fua, flush, or none (none is not durable: numbers only).
    #[arg(long, default_value = "fua", value_parser = ["fua", "flush", "none"])]
    durability: String,
    /// adaptive (sleep when idle) or busy (spin).
    #[arg(long, default_value = "adaptive", value_parser = ["adaptive", "busy"])]
    poll_mode: String,
    /// Largest group-commit write, in bytes or with a binary unit.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    batch_bytes_max: u64,
    /// Group-commit writes in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    inflight_writes_max: usize,
    /// Queue pair depth.
    #[arg(long, value_name = "N", default_value_t = 128)]
    queue_depth: u32,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Append through the spdk backend to this controller instead of
    /// --namespace: an SPDK transport id such as "trtype:TCP adrfam:IPv4
    /// traddr:127.0.0.1 trsvcid:4420 subnqn:..." (needs a build with
    /// --features spdk). The namespace is formatted for the run.
    #[arg(long, value_name = "TRID")]
    spdk_transport: Option<String>,
    /// The namespace of --spdk-transport to write to.
    #[arg(long, value_name = "NSID", default_value_t = 1)]
    spdk_nsid: u32,
    /// Take SPDK's memory from ordinary pages, not hugepages (TCP and RDMA
    /// transports only).
    #[arg(long)]
    spdk_no_hugepages: bool,
}

/// Runs a client future on a single-threaded runtime (capnp-rpc is
/// single-threaded).
fn run_client<T>(future: impl std::future::Future<Output = T>) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the client runtime: {error}"))?;
    Ok(runtime.block_on(tokio::task::LocalSet::new().run_until(future)))
}

/// The range_end of a command line: explicit, every key under the prefix,
/// or none (the single key).
fn range_end_of(key: &str, range_end: Option<String>, prefix: bool) -> Vec<u8> {
    match (range_end, prefix) {
        (Some(end), _) => end.into_bytes(),
        (None, true) => nvkv::kv::types::prefix_range_end(key.as_bytes()),
        (None, false) => Vec::new(),
    }
}

/// Connects to the first endpoint that answers.
async fn connect(endpoints: &[String], tls: &ClientTls) -> Result<nvkv::rpc::client::ShardedClient, String> {
    let mut failures = Vec::new();
    for endpoint in endpoints {
        match nvkv::rpc::client::ShardedClient::open_with(endpoint, tls).await {
            Ok(connection) => return Ok(connection),
            Err(error) => failures.push(error.to_string()),
        }
    }
    Err(failures.join("; "))
}

fn print_responses(responses: &[nvkv::kv::types::ResponseOp]) {
    use nvkv::kv::types::ResponseOp;
    for response in responses {
        match response {
            ResponseOp::Put(_) => println!("OK"),
            ResponseOp::Range(range) => {
                for kv in &range.kvs {
                    println!("{}\n{}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
                }
            }
            ResponseOp::DeleteRange(delete) => println!("{}", delete.deleted),
            ResponseOp::Txn(nested) => {
                println!("{}", if nested.succeeded { "SUCCESS" } else { "FAILURE" });
                print_responses(&nested.responses);
            }
        }
    }
}

/// A transaction's answer as JSON (the store's types are not serde types).
fn txn_json(answer: &nvkv::rpc::client::TxnAnswer) -> serde_json::Value {
    fn responses(list: &[nvkv::kv::types::ResponseOp]) -> serde_json::Value {
        use nvkv::kv::types::ResponseOp;
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        serde_json::Value::Array(
            list.iter()
                .map(|response| match response {
                    ResponseOp::Put(put) => serde_json::json!({"put": {"revision": put.revision}}),
                    ResponseOp::Range(range) => serde_json::json!({"range": {
                        "revision": range.revision, "count": range.count, "more": range.more,
                        "kvs": range.kvs.iter().map(|kv| serde_json::json!({
                            "key": text(&kv.key), "value": text(&kv.value),
                            "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
                            "version": kv.version, "lease": kv.lease,
                        })).collect::<Vec<_>>(),
                    }}),
                    ResponseOp::DeleteRange(delete) => {
                        serde_json::json!({"delete_range": {"revision": delete.revision, "deleted": delete.deleted}})
                    }
                    ResponseOp::Txn(nested) => serde_json::json!({"txn": {
                        "succeeded": nested.succeeded, "responses": responses(&nested.responses),
                    }}),
                })
                .collect(),
        )
    }
    serde_json::json!({
        "header": answer.header,
        "succeeded": answer.response.succeeded,
        "responses": responses(&answer.response.responses),
    })
}

fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    println!("{}", serde_json::to_string(value).map_err(|error| error.to_string())?);
    Ok(())
}

fn key_value_command(
    endpoints: &[String],
    tls: &ClientTls,
    json: bool,
    command: Command,
) -> Result<(), String> {
    run_client(async move {
        let connection = connect(endpoints, tls).await?;
        match command {
            Command::Put { key, value, lease, prev_kv } => {
                let answer = connection
                    .put(key.as_bytes(), value.as_bytes(), lease, prev_kv)
                    .await
                    .map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                println!("OK");
                if let Some(previous) = answer.prev_kv {
                    println!(
                        "{}\n{}",
                        String::from_utf8_lossy(&previous.key),
                        String::from_utf8_lossy(&previous.value)
                    );
                }
            }
            Command::Get { key, range_end, prefix, limit, rev, keys_only, count_only, consistency } => {
                let range_end = range_end_of(&key, range_end, prefix);
                // etcd's spelling of "every key": from the zero byte on.
                let key = if key.is_empty() && prefix { vec![0] } else { key.into_bytes() };
                let query = nvkv::kv::types::RangeRequest {
                    range_end,
                    key,
                    limit,
                    revision: rev,
                    count_only,
                    keys_only,
                };
                let answer = connection.range(&query, consistency == "s").await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                if count_only {
                    println!("{}", answer.count);
                }
                for kv in &answer.kvs {
                    println!("{}", String::from_utf8_lossy(&kv.key));
                    if !keys_only {
                        println!("{}", String::from_utf8_lossy(&kv.value));
                    }
                }
            }
            Command::Del { key, range_end, prefix, prev_kv } => {
                let end = range_end_of(&key, range_end, prefix);
                let answer = connection
                    .delete_range(key.as_bytes(), &end, prev_kv)
                    .await
                    .map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                println!("{}", answer.deleted);
                for kv in &answer.prev_kvs {
                    println!("{}\n{}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
                }
            }
            Command::Txn => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|error| format!("cannot read the transaction from standard input: {error}"))?;
                let txn = nvkv::txn_text::parse(&text)?;
                let answer = connection.txn(&txn).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&txn_json(&answer));
                }
                println!("{}", if answer.response.succeeded { "SUCCESS" } else { "FAILURE" });
                print_responses(&answer.response.responses);
            }
            Command::Compact { revision, group } => {
                let header = connection.compact(group, revision).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&header);
                }
                println!("compacted group {} at revision {revision}", header.group);
            }
            Command::Watch(args) => return watch(&connection, json, args).await,
            _ => unreachable!("only key-value commands come here"),
        }
        Ok(())
    })?
}

fn lease_command(
    endpoints: &[String],
    tls: &ClientTls,
    json: bool,
    command: LeaseCommand,
) -> Result<(), String> {
    use nvkv::rpc::lease::format_id;
    run_client(async move {
        let client = connect(endpoints, tls).await?;
        let connection = client.main();
        match command {
            LeaseCommand::Grant { ttl, id } => {
                let answer = connection.lease_grant(ttl, id.unwrap_or(0)).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                println!("lease {} granted with TTL({}s)", format_id(answer.id), answer.ttl);
            }
            LeaseCommand::Revoke { id } => {
                let answer = connection.lease_revoke(id).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                println!("lease {} revoked ({} attached keys deleted)", format_id(id), answer.deleted);
            }
            LeaseCommand::KeepAlive { id, once } => loop {
                let answer = connection.lease_keep_alive(id).await.map_err(|e| e.to_string())?;
                if json {
                    print_json(&answer)?;
                } else {
                    println!("lease {} keepalived with TTL({})", format_id(id), answer.ttl);
                }
                if once {
                    break;
                }
                let period = std::time::Duration::from_millis(
                    u64::try_from(answer.ttl.max(1)).unwrap_or(1) * 1000 / 3,
                );
                tokio::time::sleep(period).await;
            },
            LeaseCommand::Timetolive { id, keys } => {
                let answer = connection.lease_time_to_live(id, keys).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                let mut line = format!(
                    "lease {} granted with TTL({}s), remaining({}s)",
                    format_id(id),
                    answer.granted_ttl,
                    answer.ttl
                );
                if keys {
                    let shown: Vec<_> = answer.keys.iter().map(|key| String::from_utf8_lossy(key)).collect();
                    let more = if answer.more_keys { " and more" } else { "" };
                    line.push_str(&format!(", attached keys([{}]{more})", shown.join(" ")));
                }
                println!("{line}");
            }
            LeaseCommand::List => {
                let answer = connection.lease_list().await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                let more = if answer.more { " (and more not listed)" } else { "" };
                println!("found {} leases{more}", answer.leases.len());
                for lease in &answer.leases {
                    println!("{}", format_id(lease.id));
                }
            }
        }
        Ok(())
    })?
}

/// Runs `nvkv watch` until its count, the end of the watch, or Ctrl-C.
async fn watch(
    connection: &nvkv::rpc::client::ShardedClient,
    json: bool,
    args: WatchArgs,
) -> Result<(), String> {
    use nvkv::rpc::client::KeyValueView;
    use nvkv::rpc::watch_client::WatchMessage;
    let range_end = range_end_of(&args.key, args.range_end, args.prefix);
    let key = if args.key.is_empty() && args.prefix { vec![0] } else { args.key.into_bytes() };
    let request = nvkv::kv::watch::WatchRequest {
        key,
        range_end,
        start_revision: args.rev,
        prev_kv: args.prev_kv,
        no_put: args.no_put,
        no_delete: args.no_delete,
        progress_notify: args.progress_notify,
    };
    let mut watch = connection.watch(&request).await.map_err(|e| e.to_string())?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut events_seen = 0;
    while let Some(message) = watch.next().await {
        match message {
            WatchMessage::Events { header, events } => {
                for event in events {
                    let kind = match event.kind {
                        nvkv::kv::types::EventKind::Put => "PUT",
                        nvkv::kv::types::EventKind::Delete => "DELETE",
                    };
                    if json {
                        print_json(&serde_json::json!({
                            "header": header,
                            "type": kind,
                            "kv": KeyValueView::from(event.kv),
                            "prev_kv": event.prev_kv.map(KeyValueView::from),
                        }))?;
                    } else {
                        println!("{kind}");
                        if let Some(previous) = &event.prev_kv {
                            println!("{}\n{}", text(&previous.key), text(&previous.value));
                        }
                        println!("{}\n{}", text(&event.kv.key), text(&event.kv.value));
                    }
                    events_seen += 1;
                    if args.count == Some(events_seen) {
                        return Ok(());
                    }
                }
            }
            WatchMessage::Progress { header } if json => {
                print_json(&serde_json::json!({ "header": header, "progress_notify": true }))?;
            }
            WatchMessage::Progress { header } => {
                println!("progress notify: {} (group {})", header.revision, header.group);
            }
            WatchMessage::Cancelled { group, error } => {
                return Err(match error.code {
                    // Compaction is per group, so is the revision it names.
                    nvkv::rpc::kv::ErrorCode::Compacted => {
                        format!("watch cancelled in group {group}: {}", error.message)
                    }
                    _ => format!("watch cancelled: {}", error.message),
                });
            }
        }
    }
    Err("the connection to the node closed, which ended the watch; watch again with --rev".into())
}

fn status(endpoints: &[String], tls: &ClientTls, json: bool) -> Result<(), String> {
    let statuses = run_client(async {
        let mut statuses = Vec::new();
        for endpoint in endpoints {
            let connection = nvkv::rpc::client::Connection::open_with(endpoint, tls).await?;
            statuses.push(connection.status().await?);
        }
        Ok::<_, nvkv::rpc::client::ClientError>(statuses)
    })?
    .map_err(|error| error.to_string())?;
    if json {
        println!("{}", serde_json::to_string(&statuses).map_err(|error| error.to_string())?);
    } else {
        for status in statuses {
            print!("{}", status.human());
        }
    }
    Ok(())
}

/// `nvkv member add | promote | remove`: sent to the first endpoint that
/// answers; a refusal is final (it says what to do).
fn member_change(
    endpoints: &[String],
    tls: &ClientTls,
    json: bool,
    action: MemberCommand,
) -> Result<(), String> {
    use nvkv::rpc::client::{ClientError, Connection};
    let (id, done) = match &action {
        MemberCommand::Add { id, learner: true, .. } => (*id, "added as a learner to"),
        MemberCommand::Add { id, .. } => (*id, "added as a voter to"),
        MemberCommand::Promote { id } => (*id, "promoted to voter in"),
        MemberCommand::Remove { id } => (*id, "removed from"),
        MemberCommand::List => unreachable!("member list is not a change"),
    };
    let changed = run_client(async {
        let mut failures = Vec::new();
        for endpoint in endpoints {
            let connection = match Connection::open_with(endpoint, tls).await {
                Ok(connection) => connection,
                Err(error) => {
                    failures.push(error.to_string());
                    continue;
                }
            };
            let answer = match &action {
                MemberCommand::Add { id, name, peer_urls, client_urls, learner } => {
                    let member = nvkv::rpc::cluster::MemberInfo {
                        id: *id,
                        name: name.clone(),
                        client_addresses: vec![client_urls.clone()],
                        peer_addresses: vec![peer_urls.clone()],
                        is_learner: *learner,
                    };
                    connection.add_member(&member, *learner).await
                }
                MemberCommand::Promote { id } => connection.promote_member(*id).await,
                MemberCommand::Remove { id } => connection.remove_member(*id).await,
                MemberCommand::List => unreachable!("member list is not a change"),
            };
            match answer {
                Err(
                    error @ (ClientError::Connect { .. }
                    | ClientError::ConnectTimeout { .. }
                    | ClientError::Tls { .. }),
                ) => failures.push(error.to_string()),
                answer => return answer.map_err(|error| error.to_string()),
            }
        }
        Err(failures.join("; "))
    })??;
    if json {
        return print_json(
            &serde_json::json!({ "member_id": id, "groups": changed.groups, "members": changed.members }),
        );
    }
    println!("Member {id} {done} every group of the cluster ({} groups)", changed.groups);
    Ok(())
}

/// `nvkv member list`: a table like etcdctl's, or JSON.
fn member_list(endpoints: &[String], tls: &ClientTls, json: bool) -> Result<(), String> {
    let (member_id, members) = run_client(async {
        let mut failures = Vec::new();
        for endpoint in endpoints {
            let connection = match nvkv::rpc::client::Connection::open_with(endpoint, tls).await {
                Ok(connection) => connection,
                Err(error) => {
                    failures.push(error.to_string());
                    continue;
                }
            };
            match connection.status().await {
                Ok(status) => return Ok((status.member_id, status.members)),
                Err(error) => failures.push(error.to_string()),
            }
        }
        Err(failures.join("; "))
    })??;
    let status = |member: &nvkv::rpc::cluster::MemberInfo| {
        if member.name.is_empty() {
            "unstarted"
        } else {
            "started"
        }
    };
    if json {
        let members: Vec<serde_json::Value> = members
            .iter()
            .map(|member| {
                let mut value = serde_json::to_value(member).unwrap_or_default();
                value["status"] = status(member).into();
                value
            })
            .collect();
        return print_json(&serde_json::json!({ "member_id": member_id, "members": members }));
    }
    let mut rows =
        vec![["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"].map(String::from)];
    for member in &members {
        rows.push([
            member.id.to_string(),
            status(member).to_string(),
            member.name.clone(),
            member.peer_addresses.join(","),
            member.client_addresses.join(","),
            member.is_learner.to_string(),
        ]);
    }
    let widths: Vec<usize> =
        (0..6).map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0)).collect();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}

fn parse_size(text: &str) -> Result<u64, String> {
    nvkv::config::parse_bytes(text)
        .ok_or_else(|| format!("{text:?} is not a size: give bytes or a number with KiB, MiB, GiB or TiB"))
}

fn bench_device(args: DeviceArgs) -> Result<(), String> {
    use nvkv::bench::device::{run, DeviceBenchOptions};
    use nvkv::config::{Durability, PollMode};
    let options = DeviceBenchOptions {
        namespace: args.namespace,
        namespace_bytes: args.namespace_bytes,
        lba_bytes: args.lba_bytes,
        appenders: args.appenders,
        entry_bytes: args.entry_bytes,
        seconds: args.seconds,
        count: args.count,
        durability: match args.durability.as_str() {
            "flush" => Durability::Flush,
            "none" => Durability::None,
            _ => Durability::Fua,
        },
        poll_mode: if args.poll_mode == "busy" { PollMode::Busy } else { PollMode::Adaptive },
        batch_bytes_max: args.batch_bytes_max as usize,
        inflight_writes_max: args.inflight_writes_max,
        queue_depth: args.queue_depth,
        progress: !args.json,
        spdk: args.spdk_transport.map(|transport| nvkv::nvme::open::SpdkOptions {
            transport,
            nsid: args.spdk_nsid,
            hugepages: !args.spdk_no_hugepages,
            ..Default::default()
        }),
    };
    if let Some(parent) = options.namespace.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    }
    let report = run(&options).map_err(|error| error.to_string())?;
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(|error| error.to_string())?);
    } else {
        println!("{}", report.human());
    }
    Ok(())
}

/// Runs a store workload (`nvkv bench put|range|txn|mixed|watch`) and prints its
/// report.
fn bench_store(endpoints: &[String], tls: &ClientTls, command: BenchCommand) -> ExitCode {
    use nvkv::bench::workload::{Consistency, Workload};
    let consistency =
        |flag: &str| if flag == "s" { Consistency::Serializable } else { Consistency::Linearizable };
    let (workload, load) = match command {
        BenchCommand::Put(load) => (Workload::Put, load),
        BenchCommand::Range(args) => (
            Workload::Range {
                consistency: consistency(&args.consistency),
                limit: args.limit,
                preload: !args.no_preload,
            },
            args.load,
        ),
        BenchCommand::Txn(load) => (Workload::Txn, load),
        BenchCommand::Mixed(args) => (
            Workload::Mixed {
                read_ratio: args.read_ratio,
                consistency: consistency(&args.consistency),
                preload: !args.no_preload,
            },
            args.load,
        ),
        BenchCommand::Watch(args) => (Workload::Watch { watchers: args.watchers }, args.load),
        BenchCommand::Device(_) => unreachable!("bench device has its own runner"),
    };
    let options = nvkv::bench::workload::LoadOptions {
        clients: load.clients,
        connections: load.connections,
        key_bytes: load.key_bytes,
        value_bytes: load.value_bytes,
        key_space: load.key_space,
        seconds: load.seconds,
        total: load.total,
        rate: load.rate,
        progress: !load.json,
    };
    let outcome = nvkv::bench::target::Target::parse(load.target.as_deref(), endpoints)
        .and_then(|target| nvkv::bench::target::run(&workload, &options, &target, tls))
        .and_then(|report| {
            if load.json {
                print_json(&report)
            } else {
                println!("{}", report.human());
                Ok(())
            }
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nvkv bench {}: {error}", workload.name());
            ExitCode::FAILURE
        }
    }
}

/// A progress bar on stderr when it is a terminal.
fn progress_bar(length: u64, template: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template).expect("progress template").progress_chars("=> "),
    );
    Some(bar)
}

fn snapshot_command(
    endpoints: &[String],
    tls: &ClientTls,
    json: bool,
    command: SnapshotCommand,
) -> Result<(), String> {
    use nvkv::backup::save::SaveProgress;
    match command {
        SnapshotCommand::Save { file, force } => {
            let saved = run_client(async move {
                let client = connect(endpoints, tls).await?;
                let bar = std::rc::Rc::new(progress_bar(
                    0,
                    "{spinner} saving group {pos}/{len} [{bar:40}] {msg} received",
                ));
                let received = std::rc::Rc::new(std::cell::Cell::new(0u64));
                let shown = bar.clone();
                let progress = std::rc::Rc::new(move |event: SaveProgress| {
                    let Some(bar) = shown.as_ref() else { return };
                    match event {
                        SaveProgress::Groups(groups) => bar.set_length(u64::from(groups)),
                        SaveProgress::Bytes(bytes) => {
                            received.set(received.get() + bytes);
                            bar.set_message(indicatif::HumanBytes(received.get()).to_string());
                        }
                        SaveProgress::GroupDone(_) => bar.inc(1),
                    }
                });
                let saved = nvkv::backup::save::save(&client, &file, force, progress).await;
                if let Some(bar) = bar.as_ref() {
                    bar.finish_and_clear();
                }
                saved
            })??;
            if json {
                return print_json(&saved);
            }
            println!(
                "Snapshot saved at {}: {} groups, {} bytes, from member {}",
                saved.path, saved.groups, saved.file_bytes, saved.member_id
            );
        }
        SnapshotCommand::Restore { file, data_dir, config } => {
            let mut config = Config::load(config.as_deref()).map_err(|error| error.to_string())?;
            config.node.data_dir = data_dir;
            let file_bytes = std::fs::metadata(&file).map(|metadata| metadata.len()).unwrap_or(0);
            let bar = progress_bar(
                2 * file_bytes,
                "{spinner} checking, then restoring [{bar:40}] {bytes}/{total_bytes}",
            );
            let restored = nvkv::backup::restore::restore(&file, config, |bytes| {
                if let Some(bar) = &bar {
                    bar.inc(bytes);
                }
            });
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let restored = restored.map_err(|error| error.to_string())?;
            if json {
                return print_json(&restored);
            }
            println!(
                "Restored {} into {}: {} groups ({} keys with history) on {} shards, namespace {}, members {:?}; \
                 start it with nvkv serve and the same config and data directory",
                file.display(),
                restored.data_dir.display(),
                restored.summary.header.groups,
                restored.summary.keys_with_history,
                restored.shards,
                restored.namespace,
                restored.members,
            );
        }
        SnapshotCommand::Status { file } => {
            let summary = nvkv::backup::verify(&file, |_| {}).map_err(|error| error.to_string())?;
            if json {
                return print_json(&summary);
            }
            println!(
                "{}: a whole nvkv backup of {} bytes: {} groups ({} shards × {}), partition depth {}, {} keys \
                 with history",
                file.display(),
                summary.file_bytes,
                summary.header.groups,
                summary.header.shards,
                summary.header.groups_per_shard,
                summary.header.partition_depth,
                summary.keys_with_history,
            );
            for (group, (revision, compacted)) in summary.revisions.iter().enumerate() {
                println!("group {group}: revision {revision}, compacted at {compacted}");
            }
        }
    }
    Ok(())
}

/// Per-thread heaps suit a thread-per-core daemon: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // openraft reports every election at info; nvkv's own lines say what matters.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let colors = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colors).init();
    let tls = match &cli.command {
        Command::Serve { .. } | Command::Bench { workload: BenchCommand::Device(_) } => {
            ClientTls::plaintext()
        }
        _ => match ClientTls::from_files(
            cli.cacert.as_deref(),
            cli.client_cert.as_deref(),
            cli.client_key.as_deref(),
        ) {
            Ok(tls) => tls,
            Err(error) => {
                eprintln!("nvkv: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    match cli.command {
        Command::Serve { config, data_dir, listen, etcd_listen } => {
            let outcome = Config::load(config.as_deref())
                .map(|mut config| {
                    if let Some(data_dir) = data_dir {
                        config.node.data_dir = data_dir;
                    }
                    if let Some(listen) = listen {
                        config.node.client_address = listen;
                    }
                    if let Some(EtcdListen(etcd)) = etcd_listen {
                        config.etcd.address = etcd;
                    }
                    config
                })
                .map_err(nvkv::node::NodeError::from)
                .and_then(nvkv::node::serve);
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("nvkv: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Put { .. }
        | Command::Get { .. }
        | Command::Del { .. }
        | Command::Txn
        | Command::Compact { .. }
        | Command::Watch(_) => {
            match key_value_command(&cli.endpoints, &tls, cli.write_out == "json", cli.command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("nvkv: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status => match status(&cli.endpoints, &tls, cli.write_out == "json") {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("nvkv status: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Member { action: MemberCommand::List } => {
            match member_list(&cli.endpoints, &tls, cli.write_out == "json") {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("nvkv member list: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Member { action } => {
            match member_change(&cli.endpoints, &tls, cli.write_out == "json", action) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("nvkv member: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Lease { command } => {
            match lease_command(&cli.endpoints, &tls, cli.write_out == "json", command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("nvkv lease: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Snapshot { command } => {
            match snapshot_command(&cli.endpoints, &tls, cli.write_out == "json", command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("nvkv snapshot: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench { workload: BenchCommand::Device(args) } => match bench_device(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("nvkv bench device: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Bench { workload } => bench_store(&cli.endpoints, &tls, workload),
    }
}
