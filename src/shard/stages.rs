//! Where the writes of one shard spend their time above the log, per
//! stage, since the shard started: the log keeps its own stages (queue
//! wait, device write); these are the ones Raft and the store add. Kept per
//! reactor thread, so recording takes no lock: a [`Stages`] handle goes to
//! everything that records, and the shard's registry keeps the thread's.
//!
//! - proposal wait: from a write reaching its group's proposer to the batch
//!   that carries it being proposed;
//! - raft: from the proposal to its outcome (append, the log's stages,
//!   commit, apply, and the wake-ups between them);
//! - apply: one entry applied to the store (a batch entry counts once);
//! - end to end: from the request handle taking a write on the shard the
//!   client reached to its answer there (a forward between shards
//!   included; Cap'n Proto decoding and the network not).
//!
//! Beside them, the latency budget: the hops of a write this member can
//! see, in the order a put passes them ([`Hop`]), each its own histogram.
//! The client's own hops (its send to the shard, the reply's way back) are
//! only visible to the client: `nvkv bench` adds them.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use crate::raft::WritePath;
use crate::wal::StageHistogram;

/// One hop of a write's way on the member that leads its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// On a member that does not lead the write's group: from taking the
    /// write to the leader's answer (the leader's own hops inside it).
    Forwarded,
    /// From the request handle taking the write to its batch being proposed.
    ProposalWait,
    /// From the proposal to the entry durable in the leader's log.
    LeaderAppend,
    /// From the proposal to the AppendEntries carrying it leaving for the
    /// follower that completes the quorum.
    AppendEntriesSent,
    /// That AppendEntries on the network (half the round trip outside the
    /// follower).
    ToFollower,
    /// The follower taking it: received, durable in its log, answered.
    FollowerAppend,
    /// The follower's answer on the network back (the other half).
    AckReceived,
    /// From durable on a quorum to the apply starting.
    Commit,
    /// The entry applied to the store.
    Apply,
    /// From applied to the outcome reaching the request handle.
    Handback,
    /// From the outcome to the reply written to the client's connection.
    ReplyWritten,
}

impl Hop {
    pub const ALL: [Hop; 11] = [
        Hop::Forwarded,
        Hop::ProposalWait,
        Hop::LeaderAppend,
        Hop::AppendEntriesSent,
        Hop::ToFollower,
        Hop::FollowerAppend,
        Hop::AckReceived,
        Hop::Commit,
        Hop::Apply,
        Hop::Handback,
        Hop::ReplyWritten,
    ];

    /// The hop's name in status, metrics and reports; scripts read it.
    pub fn name(self) -> &'static str {
        match self {
            Hop::Forwarded => "forwarded to leader",
            Hop::ProposalWait => "proposal wait",
            Hop::LeaderAppend => "leader append durable",
            Hop::AppendEntriesSent => "append entries sent",
            Hop::ToFollower => "to follower",
            Hop::FollowerAppend => "follower append durable",
            Hop::AckReceived => "follower ack received",
            Hop::Commit => "commit",
            Hop::Apply => "apply",
            Hop::Handback => "outcome handed back",
            Hop::ReplyWritten => "reply written",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ShardStages {
    pub proposal_wait: StageHistogram,
    pub raft: StageHistogram,
    pub apply: StageHistogram,
    pub end_to_end: StageHistogram,
    /// Raft entries proposed for client writes, and the writes they
    /// carried: their ratio is how well proposals batch.
    pub proposals: u64,
    pub proposed_commands: u64,
    /// Writes that found their group's proposal queue full and waited for
    /// room (`store.proposal_queue_bytes_max`).
    pub proposals_held_back: u64,
    /// etcd KV calls the etcd port's direct unary path answered
    /// (`etcd::unary`), on this shard's connections.
    pub etcd_direct_calls: u64,
    /// Calls that forwarded client writes to their group's leader on
    /// another member (`super::forward_batch`), and the writes they
    /// carried: their ratio is how well forwarded writes batch.
    pub forwarded_write_calls: u64,
    pub forwarded_writes: u64,
    /// The budget's hops in [`Hop::ALL`] order; proposal wait's slot stays
    /// empty (it is `proposal_wait`).
    hops: [StageHistogram; Hop::ALL.len()],
}

impl ShardStages {
    pub fn hop(&self, hop: Hop) -> &StageHistogram {
        match hop {
            Hop::ProposalWait => &self.proposal_wait,
            other => &self.hops[other as usize],
        }
    }

    pub fn hop_mut(&mut self, hop: Hop) -> &mut StageHistogram {
        match hop {
            Hop::ProposalWait => &mut self.proposal_wait,
            other => &mut self.hops[other as usize],
        }
    }

    /// Records the hops a write's way through Raft measured.
    pub fn record_path(&mut self, path: &WritePath) {
        let measured = [
            (Hop::LeaderAppend, path.leader_append),
            (Hop::AppendEntriesSent, path.sent),
            (Hop::ToFollower, path.to_follower),
            (Hop::FollowerAppend, path.follower_append),
            (Hop::AckReceived, path.ack_back),
            (Hop::Commit, path.commit),
            (Hop::Handback, path.handback),
        ];
        for (hop, took) in measured {
            if let Some(took) = took {
                self.hop_mut(hop).record(took);
            }
        }
        // The apply hop is the store's own histogram (`apply`), recorded
        // by the state machine for every entry; the path's is the same time.
        if let Some(took) = path.apply {
            self.hop_mut(Hop::Apply).record(took);
        }
    }
}

/// One hop's numbers, as status and metrics report them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct HopReport {
    pub name: String,
    pub count: u64,
    /// Their total, in µs (two reports give the mean between them).
    pub sum_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The whole histogram (nanoseconds, HdrHistogram's V2 encoding), so
    /// two reports give the percentiles between them; not in `-w json`.
    #[serde(skip)]
    pub histogram: Vec<u8>,
}

impl HopReport {
    pub fn of(name: &str, histogram: &StageHistogram) -> HopReport {
        let count = histogram.count();
        let mut encoded = Vec::new();
        if count > 0 {
            hdrhistogram::serialization::Serializer::serialize(
                &mut hdrhistogram::serialization::V2Serializer::new(),
                histogram.histogram(),
                &mut encoded,
            )
            .expect("a histogram encodes into memory");
        }
        HopReport {
            name: name.to_string(),
            count,
            sum_us: histogram.histogram().mean() * count as f64 / 1000.0,
            p50_us: histogram.quantile_us(0.5),
            p99_us: histogram.quantile_us(0.99),
            histogram: encoded,
        }
    }

    /// The histogram `histogram` carries; empty when it carries none.
    pub fn decode_histogram(&self) -> Result<hdrhistogram::Histogram<u64>, String> {
        if self.histogram.is_empty() {
            return Ok(crate::latency::histogram());
        }
        hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut self.histogram.as_slice())
            .map_err(|error| format!("the histogram of hop {:?} does not decode: {error:?}", self.name))
    }
}

impl ShardStages {
    /// Every hop's numbers, in the order a write passes them.
    pub fn hop_reports(&self) -> Vec<HopReport> {
        Hop::ALL.iter().map(|hop| HopReport::of(hop.name(), self.hop(*hop))).collect()
    }
}

/// A handle on one shard's stages: cloned into everything of the shard
/// that records (its groups' state machines and proposal queues), so
/// recording needs neither a lookup nor a lock. One shard's tasks share
/// one thread, hence `Rc`.
#[derive(Clone, Default)]
pub struct Stages {
    stages: Rc<RefCell<ShardStages>>,
}

impl Stages {
    /// Records into these stages.
    pub fn record(&self, update: impl FnOnce(&mut ShardStages)) {
        update(&mut self.stages.borrow_mut());
    }

    /// A copy of these stages (every histogram: for the metrics endpoint;
    /// a report reads them in place with [`Stages::read`]).
    pub fn snapshot(&self) -> ShardStages {
        self.stages.borrow().clone()
    }

    /// Reads these stages in place.
    pub fn read<T>(&self, reader: impl FnOnce(&ShardStages) -> T) -> T {
        reader(&self.stages.borrow())
    }

    /// Records the time since `started` in the stage `pick` chooses.
    pub fn record_since(&self, started: Instant, pick: fn(&mut ShardStages) -> &mut StageHistogram) {
        let elapsed = started.elapsed();
        self.record(|stages| pick(stages).record(elapsed));
    }
}
