@0xb34490c655df968c;
# The Cap'n Proto API of nvkv. Client and peer interfaces grow here; every
# response carries a ResponseHeader and every refusal a typed Error.

struct ResponseHeader {
  group @0 :UInt32;       # the Raft group that answered
  revision @1 :Int64;     # the group's store revision after the request
  raftTerm @2 :UInt64;    # the group leader's term
  memberId @3 :UInt64;    # the member that answered
}

enum ErrorCode {
  unavailable @0;
  notLeader @1;
  compacted @2;
  keyTooLarge @3;
  valueTooLarge @4;
  requestTooLarge @5;
  txnSpansGroups @6;
  leaseNotFound @7;
  invalidArgument @8;
  leaseExists @9;         # a grant named an id that is already granted
  notMember @10;          # this member was removed, or joins and was not added yet
  notCaughtUp @11;        # a learner to promote is too far behind its leader
  noSpace @12;            # the group is out of space (NOSPACE alarm): delete keys; deletes and compaction still work
  permissionDenied @13;   # the caller's roles do not grant what the request needs (the message names it)
  unauthenticated @14;    # authentication is enabled and the request names no valid user (or a wrong password or token)
  authRefused @15;        # a change of users and roles was refused (no such user, exists already, root needed first, ...)
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;       # what was wrong, with which value, and what to do
  leaderHint @2 :UInt64;  # for notLeader: the member id believed to lead, 0 if unknown
  compactRevision @3 :Int64;  # for compacted
}

struct ShardStatus {
  shard @0 :UInt32;
  core @1 :UInt32;            # the CPU the reactor is pinned to
  groups @2 :UInt32;
  logHeadSequence @3 :UInt64;
  logTailSequence @4 :UInt64;
  logUsedBytes @5 :UInt64;
  logCapacityBytes @6 :UInt64;
  # Where appends spend their time in this shard's log since it opened, in
  # microseconds: waiting for their group-commit write, then the write.
  queueWaitP50Us @7 :Float64;
  queueWaitP99Us @8 :Float64;
  deviceWriteP50Us @9 :Float64;
  deviceWriteP99Us @10 :Float64;
  logWrites @11 :UInt64;      # group-commit writes since the log opened
  logRecordsWritten @12 :UInt64;  # records they carried (entries, votes, ...)
  # The stages above the log (src/shard/stages.rs), in microseconds:
  # waiting for a proposal, the Raft round (append to applied), one
  # entry's apply, and a write end to end on the shard that took it.
  proposalWaitP50Us @13 :Float64;
  proposalWaitP99Us @14 :Float64;
  raftP50Us @15 :Float64;
  raftP99Us @16 :Float64;
  applyP50Us @17 :Float64;
  applyP99Us @18 :Float64;
  endToEndP50Us @19 :Float64;
  endToEndP99Us @20 :Float64;
  proposals @21 :UInt64;  # Raft entries proposed for client writes
  proposedCommands @22 :UInt64;  # the writes they carried
  # The device since the log opened: bytes the log wrote (records,
  # checkpoints, snapshots), flushes, and commands that failed or that the
  # device refused (any error also stops the shard's log).
  deviceWrittenBytes @23 :UInt64;
  deviceFlushes @24 :UInt64;
  deviceErrors @25 :UInt64;
  snapshotsWritten @26 :UInt64;      # Raft snapshots written to the snapshot area
  snapshotWrittenBytes @27 :UInt64;  # and their bytes
  # The shard's reactor since it started: time running its loop (spinning
  # included) and time asleep (adaptive polling), in seconds.
  reactorBusySeconds @28 :Float64;
  reactorIdleSeconds @29 :Float64;
  # The latency budget of a write on this shard: every hop a put passes
  # that this member can see, in the order a put passes them (README,
  # "The latency budget").
  hops @30 :List(HopLatency);
}

# One hop of a write's way, on one shard, since the shard started.
struct HopLatency {
  name @0 :Text;              # e.g. "leader append durable"; stable, scripts read it
  count @1 :UInt64;           # writes (or batches, for hops a batch passes once) measured
  sumUs @2 :Float64;          # their total time: two statuses give the mean between them
  p50Us @3 :Float64;
  p99Us @4 :Float64;
  # The whole histogram, in nanoseconds, in HdrHistogram's V2 encoding (no
  # compression): two statuses give any percentile between them.
  histogram @5 :Data;
}

struct NodeStatus {
  memberId @0 :UInt64;
  version @1 :Text;
  namespace @2 :Text;         # the device or file the node writes to
  backend @3 :Text;           # "uring" or "spdk"
  durability @4 :Text;        # "fua", "flush" or "none"
  uptimeMs @5 :UInt64;
  shards @6 :List(ShardStatus);
  groups @7 :List(GroupStatus);  # every group of the node, in group order
  # CPU time (user and system) the node's process used since it started,
  # in seconds: two statuses give a server's CPU per operation between them.
  processCpuSeconds @8 :Float64;
}

struct KeyValue {
  key @0 :Data;
  value @1 :Data;
  createRevision @2 :Int64;   # the revision of the put that created this generation
  modRevision @3 :Int64;      # the revision of the last write
  version @4 :Int64;          # puts since creation, 1 after the first
  lease @5 :Int64;            # 0 for none
}

struct PutResponse {
  header @0 :ResponseHeader;
  prevKv @1 :KeyValue;        # set when asked for and the key existed
  hasPrevKv @2 :Bool;
}

struct RangeResponse {
  header @0 :ResponseHeader;
  kvs @1 :List(KeyValue);
  count @2 :Int64;            # keys the range selects, whatever the limit
  more @3 :Bool;              # the limit left keys out
}

struct DeleteRangeResponse {
  header @0 :ResponseHeader;
  deleted @1 :Int64;
  prevKvs @2 :List(KeyValue);
}

struct PutResult {
  union {
    ok @0 :PutResponse;
    error @1 :Error;
  }
}

struct RangeResult {
  union {
    ok @0 :RangeResponse;
    error @1 :Error;
  }
}

struct DeleteRangeResult {
  union {
    ok @0 :DeleteRangeResponse;
    error @1 :Error;
  }
}

struct RangeRequest {
  key @0 :Data;
  rangeEnd @1 :Data;
  limit @2 :Int64;
  revision @3 :Int64;
  countOnly @4 :Bool;
  keysOnly @5 :Bool;
}

struct PutRequest {
  key @0 :Data;
  value @1 :Data;
  lease @2 :Int64;
  prevKv @3 :Bool;
}

struct DeleteRangeRequest {
  key @0 :Data;
  rangeEnd @1 :Data;
  prevKv @2 :Bool;
}

enum CompareResult {
  equal @0;
  notEqual @1;
  less @2;
  greater @3;
}

# Holds when it holds for every key of the range; a missing key compares as
# version, revisions and lease 0 and fails every value compare (etcd's rule).
struct Compare {
  key @0 :Data;
  rangeEnd @1 :Data;
  result @2 :CompareResult;
  target :union {
    value @3 :Data;
    version @4 :Int64;
    createRevision @5 :Int64;
    modRevision @6 :Int64;
    lease @7 :Int64;
  }
}

struct RequestOp {
  union {
    range @0 :RangeRequest;
    put @1 :PutRequest;
    deleteRange @2 :DeleteRangeRequest;
    txn @3 :TxnRequest;
  }
}

# All its keys must belong to one group (see PartitionMap); a transaction
# that spans groups is refused with txnSpansGroups, never half applied.
struct TxnRequest {
  compares @0 :List(Compare);
  success @1 :List(RequestOp);
  failure @2 :List(RequestOp);
}

struct ResponseOp {
  union {
    range @0 :RangeResponse;
    put @1 :PutResponse;
    deleteRange @2 :DeleteRangeResponse;
    txn @3 :TxnResponse;
  }
}

struct TxnResponse {
  header @0 :ResponseHeader;
  succeeded @1 :Bool;
  responses @2 :List(ResponseOp);
}

struct TxnResult {
  union {
    ok @0 :TxnResponse;
    error @1 :Error;
  }
}

struct CompactResult {
  union {
    ok @0 :ResponseHeader;
    error @1 :Error;
  }
}

# Keys and ranges follow etcd: an empty rangeEnd is the single key, a
# rangeEnd of one zero byte is every key at or above key, otherwise
# [key, rangeEnd). A range within one group is one consistent read; one that
# spans groups is read group by group and merged in key order.
# ---- The KV stream: KV calls without the RPC layer's capability machinery ----
#
# A client that sends many small KV calls may open a KV stream instead of
# calling the KV interface: a connection to a node's client port (or a
# shard's own port) whose first 8 bytes are the ASCII "nvkvKVS1"; the node
# answers the same 8 bytes, and from then on the client sends KvCalls
# messages and the node KvReplies messages, each a Cap'n Proto message in
# the standard stream framing (segment table, then segments). A call is
# answered exactly once, by a reply with its id, in any order; both sides
# put everything they have at one moment into one message. The calls and
# answers are the KV interface's, with the same limits and typed errors; a
# message larger than the node reads (twice store.request_bytes_max plus
# framing) or that does not decode closes the connection. Ids are the
# client's: the node only echoes them.
#
# Version 1 (the opening "nvkvKVS1") acts for the connection's user: the
# common name of its client certificate, or nobody. Version 2 (the opening
# "nvkvKVS2") carries a session: right after its 8 bytes the client sends
# one KvOpen message, and the node answers its own 8 bytes and one KvOpened
# message before any reply. A stream that opens with a session token acts
# for the token's user; its calls are checked like the calls of
# Node.session's Node: the token when the stream opens, the user's roles
# at every call (a user deleted or a role revoked refuses the next call).
# A bad or expired token is answered with an `unauthenticated` error that
# says why, and the node closes the connection.
struct KvOpen {
  # From Node.authenticate. Empty: the connection's user, as in version 1.
  token @0 :Text;
}

struct KvOpened {
  union {
    ok @0 :Void;
    error @1 :Error;
  }
}
struct KvCall {
  id @0 :UInt64;
  union {
    put @1 :PutRequest;
    range @2 :KvRange;
    deleteRange @3 :DeleteRangeRequest;
    txn @4 :TxnRequest;
    # Answered by the connection at once, touching no group: a round trip
    # of the stack alone (the floor under every other call).
    ping @5 :Void;
  }
}

struct KvRange {
  request @0 :RangeRequest;
  serializable @1 :Bool;      # read this member's state as it is, no read barrier
}

struct KvCalls {
  calls @0 :List(KvCall);
}

struct KvReply {
  id @0 :UInt64;              # the call's
  # Time the call spent in the node: from the message that carried it being
  # read to this reply being written. The client's round trip minus this is
  # the network and the client's own stack.
  serverNanos @1 :UInt64;
  union {
    put @2 :PutResult;
    range @3 :RangeResult;
    deleteRange @4 :DeleteRangeResult;
    txn @5 :TxnResult;
    ping @6 :Void;
  }
}

struct KvReplies {
  replies @0 :List(KvReply);
}

interface KV {
  put @0 (key :Data, value :Data, lease :Int64, prevKv :Bool) -> (result :PutResult);
  range @1 (key :Data, rangeEnd :Data, limit :Int64, revision :Int64, countOnly :Bool,
            keysOnly :Bool, serializable :Bool) -> (result :RangeResult);
  deleteRange @2 (key :Data, rangeEnd :Data, prevKv :Bool) -> (result :DeleteRangeResult);
  txn @3 (request :TxnRequest) -> (result :TxnResult);
  # Forgets the history of one group below revision (revisions are per group).
  compact @4 (group :UInt32, revision :Int64) -> (result :CompactResult);
}

# How keys map to groups and groups to shards, and where each shard takes
# connections, so a client sends each request straight to the shard that
# owns its key's group (no hop between shards on the server).
struct PartitionMap {
  groups @0 :UInt32;          # group of a key: crc32c(prefix) mod groups
  partitionDepth @1 :UInt32;  # '/'-separated segments of the prefix
  shards @2 :UInt32;          # group g lives on shard g mod shards
  shardEndpoints @3 :List(Text);  # host:port of each shard, in shard order
  # Who leads each group as this member knows it, in group order, so a client
  # can send a group's requests to its leader (any member takes them: one
  # that does not lead forwards them). Empty from a node that does not say.
  leaders @4 :List(GroupLeader);
  member @5 :UInt64;          # the member that answered
}

struct GroupLeader {
  member @0 :UInt64;          # the leader's member id; 0 when none is known
  term @1 :UInt64;            # the term it leads in (a response header's raftTerm moves past it when leadership moves)
  clientAddress @2 :Text;     # where its clients connect (its node.client_address); empty when not known
}

interface Node {
  # Answers once every shard has recovered its log and serves.
  status @0 () -> (status :NodeStatus);
  # The key-value API, served by the shard this connection landed on, which
  # forwards each request to the shard that owns its key's group.
  kv @1 () -> (kv :KV);
  partitionMap @2 () -> (map :PartitionMap);
  # Watches served by the shard this connection landed on (see Watch).
  watch @3 () -> (watch :Watch);
  # Leases, served by the shard this connection landed on, which reaches
  # every group's shard through the mailboxes.
  lease @4 () -> (lease :Lease);
  cluster @5 () -> (cluster :Cluster);
  maintenance @6 () -> (maintenance :Maintenance);
  # Checks a user's password and answers a session token for it, good for
  # auth.token_ttl_seconds on every member (empty while authentication is
  # disabled: nothing is checked then). A few checks run at once per member.
  authenticate @7 (name :Text, password :Text) -> (result :TokenResult);
  # A Node whose calls, and every capability they give, act as the user the
  # token names. The Node a connection starts with acts as the user its
  # client certificate's common name names, if it presented one, else as
  # nobody (refused while authentication is enabled).
  session @8 (token :Text) -> (result :SessionResult);
  auth @9 () -> (auth :Auth);
  # Does nothing but count as traffic: a connection with no watch and no
  # traffic for limits.idle_timeout_ms is closed, and a client that keeps an
  # idle connection pings it well within that time, which this answers.
  ping @10 () -> (idleTimeoutMs :UInt64);
}

struct TokenResult {
  union {
    token @0 :Text;
    error @1 :Error;
  }
}

struct SessionResult {
  union {
    node @0 :Node;
    error @1 :Error;
  }
}

# ---- Auth: users, roles and permissions (etcd's model) ----
#
# Once enabled, every request is checked on the shard that serves it:
# reads need read permission on their whole range, writes write permission
# on every key they change (and read permission for the previous values
# they return), a transaction both on every key of its compares and of both
# branches, a watch read permission on its whole range, leases a user;
# compaction, membership changes, backups and this interface's changes need
# the role root. Users and roles live in group 0 and are replicated, backed
# up and restored with it.

enum PermissionKind {
  read @0;
  write @1;
  readwrite @2;
}

struct Permission {
  kind @0 :PermissionKind;
  key @1 :Data;
  rangeEnd @2 :Data;          # etcd's convention: empty is the key alone, one zero byte every key from it on
}

struct AuthUser {
  name @0 :Text;
  roles @1 :List(Text);
  hasPassword @2 :Bool;       # false: only a client certificate names it
}

struct AuthRole {
  name @0 :Text;
  permissions @1 :List(Permission);
}

struct AuthRequest {
  union {
    enable @0 :Void;          # needs the user root with the role root
    disable @1 :Void;
    userAdd @2 :UserPassword; # hasPassword false: a user for a client certificate
    userDelete @3 :Text;
    userPassword @4 :UserPassword;
    userGrantRole @5 :UserRole;
    userRevokeRole @6 :UserRole;
    roleAdd @7 :Text;
    roleDelete @8 :Text;
    roleGrantPermission @9 :RolePermission;
    roleRevokePermission @10 :RolePermission;   # the permission's kind is not compared
  }
}

struct UserPassword {
  name @0 :Text;
  password @1 :Text;
  hasPassword @2 :Bool;
}

struct UserRole {
  name @0 :Text;
  role @1 :Text;
}

struct RolePermission {
  role @0 :Text;
  permission @1 :Permission;
}

struct AuthChangeResult {
  union {
    revision @0 :UInt64;      # the auth revision after the change
    error @1 :Error;
  }
}

struct AuthStatus {
  enabled @0 :Bool;
  revision @1 :UInt64;
}

struct AuthListing {
  users @0 :List(AuthUser);
  roles @1 :List(AuthRole);
}

struct AuthListingResult {
  union {
    ok @0 :AuthListing;
    error @1 :Error;
  }
}

interface Auth {
  change @0 (request :AuthRequest) -> (result :AuthChangeResult);
  # Anyone may ask whether authentication is enabled.
  status @1 () -> (status :AuthStatus);
  # Every user and role, as the answering member applied them (root only).
  list @2 () -> (result :AuthListingResult);
}

# ---- Cluster and Maintenance ----

# A member of the cluster, as this node knows it: from its own config, and
# from the groups' Raft membership for the others.
struct Member {
  id @0 :UInt64;
  name @1 :Text;              # empty for a member this node knows only from the membership
  clientAddresses @2 :List(Text);
  peerAddresses @3 :List(Text);
  isLearner @4 :Bool;         # a learner receives the log but does not vote
}

# What one member has of a group's log, as its leader tracks it.
struct MemberProgress {
  memberId @0 :UInt64;
  matchedIndex @1 :UInt64;    # the last log index known to be on that member (0: none yet)
}

# One Raft group as this member sees it.
struct GroupStatus {
  group @0 :UInt32;
  shard @1 :UInt32;
  leader @2 :UInt64;          # the leader's member id, 0 if none is known
  term @3 :UInt64;
  appliedIndex @4 :UInt64;    # this member's last applied log index
  lastLogIndex @5 :UInt64;
  snapshotIndex @6 :UInt64;   # the log index of this member's last snapshot (0: none)
  purgedIndex @7 :UInt64;     # the log is purged up to this index (0: nothing purged)
  revision @8 :Int64;         # the group's store revision
  compactRevision @9 :Int64;
  keys @10 :UInt64;           # keys with history in the store
  watchers @11 :UInt32;
  leases @12 :UInt32;
  # Every member's matched index, filled only where this member leads (from
  # openraft's replication metrics; the leader itself included).
  members @13 :List(MemberProgress);
  # A fingerprint of this member's store (kv::snapshot::state_hash): replicas
  # at the same applied index must show the same one. 0 when the store's
  # encoding is over 4 MiB (hashing it would stall the shard).
  stateHash @14 :UInt64;
  # Leaderships this member saw the group take since it started (a leader in
  # a term it had not seen led), the first election included.
  leaderChanges @15 :UInt64;
  # The group's NOSPACE alarm is raised on this member: its store does not
  # fit its shard's snapshot area even with all history compacted, so writes
  # that add data are refused (noSpace) until deletes make room.
  noSpace @16 :Bool;
}

# What a membership change did: every group of the cluster changed, each
# through its leader, and the members as the answering member knows them
# afterwards.
struct MemberChangeResponse {
  groups @0 :UInt32;          # the groups changed: all of them
  members @1 :List(Member);
}

struct MemberChangeResult {
  union {
    ok @0 :MemberChangeResponse;
    # The first group that refused; the groups before it changed, and the
    # same call again finishes the rest (every change is idempotent).
    error @1 :Error;
  }
}

interface Cluster {
  members @0 () -> (members :List(Member));
  status @1 () -> (status :NodeStatus);
  # Adds a member to every group as a learner (it must run in join mode,
  # cluster.join = true, with the same cluster name); with asLearner false
  # it is then promoted, which needs it caught up.
  addMember @2 (member :Member, asLearner :Bool) -> (result :MemberChangeResult);
  # Makes a caught-up learner a voter in every group (notCaughtUp names how
  # far behind it is otherwise).
  promoteMember @3 (id :UInt64) -> (result :MemberChangeResult);
  # Takes a member out of every group; it then refuses clients (notMember).
  removeMember @4 (id :UInt64) -> (result :MemberChangeResult);
}

interface Maintenance {
  status @0 () -> (status :NodeStatus);
  # Forgets the history of one group below revision (as KV.compact).
  compact @1 (group :UInt32, revision :Int64) -> (result :CompactResult);
  groups @2 () -> (groups :List(GroupStatus));
  # Streams a consistent copy of one group's store to sink, for `nvkv
  # snapshot save`: the group's leader confirms it still leads (a read
  # index, asked of the leader when this member follows), this member
  # waits to have applied that far, then encodes its store at that point
  # (src/kv/snapshot.rs). The chunks go out under flow control; the answer
  # comes once the last one was taken, with what the copy is (its revision,
  # length and CRC32C, which the receiver checks against the bytes).
  backupGroup @3 (group :UInt32, sink :BackupSink) -> (result :GroupBackupResult);
}

# Where the bytes of one group's backup go, in order.
interface BackupSink {
  chunk @0 (data :Data) -> stream;
}

# What one group's backup holds.
struct GroupBackup {
  group @0 :UInt32;
  revision @1 :Int64;         # the store's revision at the point it was taken
  compactRevision @2 :Int64;
  bytes @3 :UInt64;           # the length of the encoded store sent to the sink
  crc32c @4 :UInt32;          # CRC32C of those bytes
  memberId @5 :UInt64;        # the member that encoded it
}

struct GroupBackupResult {
  union {
    ok @0 :GroupBackup;
    error @1 :Error;
  }
}

# ---- Lease ----
#
# A lease is global, like etcd's: it exists in every group, so a key of any
# group can be attached to it. A grant is proposed to group 0 first (which
# picks the id when none is given), then with that id to every other group;
# if one refuses, the groups that granted it revoke it and the grant fails.
# A revoke is proposed to every group, each deleting its attached keys at
# its own revision. Expiry is kept by each group's leader in memory (a new
# leader, after a restart too, gives every lease a full TTL, as etcd does),
# which proposes the revoke through Raft when the TTL runs out; a keep-alive
# renews the deadline at every group's leader without a Raft write.
# Lease ids are positive Int64; TTLs are seconds (1 to 9,000,000,000).
# Every header is group 0's: remaining TTLs are its leader's.

struct LeaseGrantResponse {
  header @0 :ResponseHeader;
  id @1 :Int64;
  ttl @2 :Int64;              # the granted TTL, seconds
}

struct LeaseRevokeResponse {
  header @0 :ResponseHeader;
  deleted @1 :Int64;          # attached keys deleted, over every group
}

struct LeaseKeepAliveResponse {
  header @0 :ResponseHeader;
  id @1 :Int64;
  ttl @2 :Int64;              # seconds left after the renewal: the granted TTL
}

struct LeaseTimeToLiveResponse {
  header @0 :ResponseHeader;
  id @1 :Int64;
  ttl @2 :Int64;              # seconds left, rounded up; 0: expired, its revoke under way
  grantedTtl @3 :Int64;
  keys @4 :List(Data);        # when asked for: the attached keys of every group, in key order
  moreKeys @5 :Bool;          # keys were left out to keep the answer small
}

struct LeaseStatus {
  id @0 :Int64;
  ttl @1 :Int64;              # seconds left, as in LeaseTimeToLiveResponse
  grantedTtl @2 :Int64;
}

struct LeaseLeasesResponse {
  header @0 :ResponseHeader;
  leases @1 :List(LeaseStatus);   # in id order
  more @2 :Bool;              # leases were left out to keep the answer small
}

struct LeaseGrantResult {
  union {
    ok @0 :LeaseGrantResponse;
    error @1 :Error;
  }
}

struct LeaseRevokeResult {
  union {
    ok @0 :LeaseRevokeResponse;
    error @1 :Error;
  }
}

struct LeaseKeepAliveResult {
  union {
    ok @0 :LeaseKeepAliveResponse;
    error @1 :Error;
  }
}

struct LeaseTimeToLiveResult {
  union {
    ok @0 :LeaseTimeToLiveResponse;
    error @1 :Error;
  }
}

struct LeaseLeasesResult {
  union {
    ok @0 :LeaseLeasesResponse;
    error @1 :Error;
  }
}

# Keep-alive is a call per renewal on this long-lived capability: a client
# keeps it and calls keepAlive every TTL/3 or so.
interface Lease {
  # id 0 lets group 0 pick the next free id.
  grant @0 (ttl :Int64, id :Int64) -> (result :LeaseGrantResult);
  revoke @1 (id :Int64) -> (result :LeaseRevokeResult);
  keepAlive @2 (id :Int64) -> (result :LeaseKeepAliveResult);
  timeToLive @3 (id :Int64, keys :Bool) -> (result :LeaseTimeToLiveResult);
  leases @4 () -> (result :LeaseLeasesResult);
}

# ---- Watch ----
# A watch is a capability the client passes in: the node calls the client's
# Watcher with event batches until the watch ends. Revisions are per group:
# a watch whose range spans groups (a prefix shorter than
# store.partition_depth segments, say) is one watch per group underneath,
# each batch names its group in its header, and order holds within a group
# (never across groups).

enum EventKind {
  put @0;
  delete @1;
}

struct Event {
  kind @0 :EventKind;
  kv @1 :KeyValue;            # a delete carries the key and the delete's revision
  prevKv @2 :KeyValue;        # set when asked for and the key was live before
  hasPrevKv @3 :Bool;
}

struct WatchCreate {
  key @0 :Data;               # with rangeEnd, etcd's range convention (see KV)
  rangeEnd @1 :Data;
  startRevision @2 :Int64;    # 0: from the next write; else from this revision of each group
  prevKv @3 :Bool;
  noPut @4 :Bool;
  noDelete @5 :Bool;
  progressNotify @6 :Bool;    # progress calls when quiet (store.watch_progress_interval_ms)
}

# Implemented by the client. Streaming calls: the node sends the next batch
# only as the client takes them (capnp-rpc's flow control), so a slow client
# slows its own watch, never the store.
interface Watcher {
  # The next events of one group, in revision order; a revision is never
  # split between batches. header.revision is the group's store revision.
  events @0 (watchId :Int64, header :ResponseHeader, events :List(Event)) -> stream;
  # Every event of this group up to header.revision has been sent.
  progress @1 (watchId :Int64, header :ResponseHeader) -> stream;
  # The watch ended and sends nothing more: error says why (compacted, with
  # compactRevision: read the current state and watch again from after it;
  # unavailable: the node stopped). group is the group that ended it (0
  # when the node stopped: then every group did).
  cancelled @2 (watchId :Int64, group :UInt32, error :Error);
}

# Ends its watch when cancelled or dropped (closing the connection drops it).
interface WatchHandle {
  cancel @0 ();
}

struct WatchResult {
  union {
    handle @0 :WatchHandle;
    error @1 :Error;
  }
  watchId @2 :Int64;          # names the watch in the Watcher's calls
}

interface Watch {
  # Registers the watch in every group its range maps to before answering,
  # so every write after the answer reaches the watcher.
  watch @0 (request :WatchCreate, watcher :Watcher) -> (result :WatchResult);
}

# ---- Peer: Raft between members, on each member's peer port ----
#
# Shard s of a member listens on its peer port + s and talks only to shard s
# of the other members: one connection per member pair per shard, shared by
# every group of that shard, each call tagged with its group. openraft's
# messages travel as Data: its serde types encoded with postcard (see
# src/rpc/peer.rs), each answer a postcard `Result` (the Raft answer, or the
# peer's typed Raft or group error). A connection carries at most
# PEER_MESSAGE_BYTES_MAX per message; an append of several entries is
# split by the sender below APPEND_BYTES_TARGET; a snapshot streams through
# a SnapshotSink in chunks.

# What each end of a peer connection says of itself; both check the other's.
struct PeerHello {
  clusterName @0 :Text;   # cluster.name: a member of another cluster is refused
  memberId @1 :UInt64;
  shard @2 :UInt32;       # the shard that dials or answers (the same on both ends)
  shards @3 :UInt32;      # every member must run as many shards...
  groups @4 :UInt32;      # ...and as many groups, so group g is on shard g mod shards everywhere
  # The id of the sender's namespace (its superblock's, 16 bytes). A member
  # remembers the namespace of every peer it met: a voter that comes back
  # with another one lost its votes and acknowledged entries, and is refused.
  # Empty from a member that does not say.
  namespaceId @5 :Data;
  # The cluster the sender belongs to (16 bytes); empty while it knows none.
  # Members of different clusters are refused, whatever their names.
  clusterId @6 :Data;
}

# The bootstrap capability of a peer port.
interface PeerPort {
  # Answers with this end's hello and a session, or fails with a message
  # naming what differs (cluster name, shard, layout, cluster id, a voter
  # whose data was lost) and what to do.
  hello @0 (hello :PeerHello) -> (hello :PeerHello, session :PeerSession);
  # Asked by a member that knows no cluster yet (a blank namespace, or one
  # formatted before namespaces named their cluster), before it starts its
  # groups: which cluster this member belongs to, and whether it knew the
  # asker by another namespace while the asker still votes.
  introduce @1 (hello :PeerHello) -> (introduction :Introduction);
}

struct Introduction {
  clusterId @0 :Data;          # empty: this member knows no cluster either
  verdict @1 :IntroductionVerdict;
  knownNamespace @2 :Data;     # for wiped: the namespace this member knew the asker by
}

enum IntroductionVerdict {
  welcome @0;   # nothing against the asker starting
  wiped @1;     # the asker votes in this member's groups, and came back with another namespace
  unsure @2;    # this member's groups are still starting: ask again
}

# The calls one shard makes of the same shard of another member.
interface PeerSession {
  # answerNanos: the time this member took from taking the call to
  # answering it (the append made durable included), so the leader can
  # tell the network's part of the round trip from the follower's.
  appendEntries @0 (group :UInt32, request :Data) -> (response :Data, answerNanos :UInt64);
  # removedAt: non-zero when this member applied a membership, at that log
  # index, that leaves the candidate out: a candidate whose own membership
  # is older missed its removal and stops serving.
  vote @1 (group :UInt32, request :Data) -> (response :Data, removedAt :UInt64);
  # Starts streaming a whole snapshot to the group: meta is openraft's
  # snapshot metadata (postcard), bytes the size of its data. Refused when
  # the shard's snapshot area cannot take that many bytes. A group receives
  # one snapshot at a time: a newer one supersedes it. (Until the peer
  # protocol's first release @2 carried one chunk per call; this replaced it.)
  installSnapshot @2 (group :UInt32, meta :Data, bytes :UInt64) -> (sink :SnapshotSink);
  # A client write a follower received, for this member to propose as the
  # group's leader; outcome is the store's encoded answer. Never forwarded
  # again: a member that does not lead answers notLeader.
  forwardWrite @3 (group :UInt32, command :Data) -> (outcome :Data);
  # The log index a linearizable read on a follower must wait to have
  # applied (read index), once this member confirmed it still leads.
  readIndex @4 (group :UInt32) -> (index :Data);
  # A membership change (add learner, promote, remove) for this member to
  # apply as the group's leader; outcome is a postcard Result<(), GroupError>.
  changeMembership @5 (group :UInt32, change :Data) -> (outcome :Data);
  # A question about the group's leases (a renewal, a lease's time to live,
  # the list; postcard shard::lease::LeaseQuery) for this member to answer
  # as the group's leader; answer is a postcard Result<LeaseAnswer,
  # GroupError>. Never forwarded again: a member that does not lead answers
  # notLeader.
  leaseAtLeader @6 (group :UInt32, query :Data) -> (answer :Data);
  # Writes a follower received for groups this member leads, batched: each
  # is proposed as if it came alone by forwardWrite, and outcomes answers
  # each in the order of writes (an outcome as forwardWrite's). At most 128
  # writes; more is refused whole, unproposed.
  forwardWrites @7 (writes :List(ForwardedWrite)) -> (outcomes :List(Data));
}

# One write of a forwardWrites batch.
struct ForwardedWrite {
  group @0 :UInt32;
  command @1 :Data;
}

# Where the bytes of one snapshot go, in order. The sender keeps the stream
# full under Cap'n Proto's flow control (`-> stream`) instead of waiting for
# each chunk's answer; each chunk stays well under PEER_MESSAGE_BYTES_MAX.
# Dropping the sink before finish abandons the snapshot and frees its
# buffer on the receiver.
interface SnapshotSink {
  # The chunk that starts at byte offset; a chunk out of order or past the
  # declared size fails the stream.
  chunk @0 (offset :UInt64, data :Data) -> stream;
  # Installs the snapshot once every declared byte arrived, as the leader
  # of vote (postcard) sent it; response is openraft's answer (postcard),
  # which carries the receiver's vote.
  finish @1 (vote :Data) -> (response :Data);
}
