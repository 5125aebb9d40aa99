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
}

struct NodeStatus {
  memberId @0 :UInt64;
  version @1 :Text;
  namespace @2 :Text;         # the device or file the node writes to
  backend @3 :Text;           # "uring" or "spdk"
  durability @4 :Text;        # "fua", "flush" or "none"
  uptimeMs @5 :UInt64;
  shards @6 :List(ShardStatus);
}

interface Node {
  # Answers once every shard has recovered its log and serves.
  status @0 () -> (status :NodeStatus);
}
