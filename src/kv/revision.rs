//! Revision numbers: where an event sits in a store's history
//! ([`Revision`]), and the hybrid revisions every group of a node makes.
//!
//! As in etcd, a fresh store is at revision [`REVISION_INITIAL`] and the
//! first write happens at the next one.
//!
//! # Hybrid revisions
//!
//! A store made with `MvccStore::hybrid` (every group of a node) does not
//! count 1, 2, 3: its revision is `time << GROUP_BITS | group`, where `time`
//! is a logical clock in microseconds of [`revision_time`]. A write takes
//! `time = max(last time + 1, its stamp)`, the stamp being the wall-clock
//! time its command was made (carried in the log, so every replica takes
//! the same revision). So revisions are unique across all groups of a
//! store (the group is in the low bits), grow strictly within a group, and
//! are comparable across groups as times: revision `r` of one group and
//! revision `s` of another with `r < s` were made in that order, to within
//! the clocks' skew. A fresh hybrid store is at `1 << GROUP_BITS | group`.
//! A store made with `MvccStore::new` counts (tests, tools).

/// The revision of a fresh store, as in etcd.
pub const REVISION_INITIAL: i64 = 1;

/// The low bits of a hybrid revision that name its group: a store of more
/// than `1 << GROUP_BITS` groups cannot make hybrid revisions.
pub const GROUP_BITS: u32 = 12;
/// The most groups hybrid revisions can tell apart.
pub const HYBRID_GROUPS_MAX: u32 = 1 << GROUP_BITS;
/// Where hybrid revision time starts, in seconds since the Unix epoch
/// (2025-01-01T00:00:00Z): 51 bits of microseconds from there last past
/// the year 2090.
pub const REVISION_EPOCH_UNIX_SECONDS: u64 = 1_735_689_600;

/// The stamp of a command made at `unix_micros` (microseconds since the
/// Unix epoch): microseconds since [`REVISION_EPOCH_UNIX_SECONDS`], 0
/// before it. The caller reads the clock; the store never does.
pub fn revision_time(unix_micros: u64) -> u64 {
    unix_micros.saturating_sub(REVISION_EPOCH_UNIX_SECONDS * 1_000_000)
}

/// The group a hybrid revision was made in.
pub fn revision_group(revision: i64) -> u32 {
    (revision as u64 & u64::from(HYBRID_GROUPS_MAX - 1)) as u32
}

/// The logical time of a hybrid revision (see [`revision_time`]).
pub fn revision_clock(revision: i64) -> u64 {
    revision as u64 >> GROUP_BITS
}

/// The hybrid revision of `group` at logical time `time`.
pub fn hybrid_revision(time: u64, group: u32) -> i64 {
    assert!(group < HYBRID_GROUPS_MAX, "group {group} does not fit {GROUP_BITS} bits");
    let revision = time.checked_shl(GROUP_BITS).filter(|revision| *revision >> GROUP_BITS == time);
    let revision = revision.and_then(|revision| i64::try_from(revision | u64::from(group)).ok());
    revision.expect("hybrid revision time runs to the year 2090")
}

/// Where an event sits in history: the write's revision, and its order
/// within that write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    /// The first position of revision `main`.
    pub fn start_of(main: i64) -> Revision {
        Revision { main, sub: 0 }
    }
}
