//! Snapshots of a shard's groups kept on the namespace, in the shard log's
//! snapshot area (`wal::snapshot`), so a node needs no filesystem. The blob
//! holds openraft's snapshot metadata (JSON: it is small and read once per
//! restart) followed by the state machine's bytes:
//!
//! ```text
//! 0 format u8 (1)  1 meta_len u32  5 meta (JSON)  5+meta_len data ...
//! ```
//!
//! The current snapshot of each group is also kept in memory once saved or
//! read: a leader hands it to every follower that needs one, again after
//! every failed attempt, and reading it back from the namespace each time
//! (a device read, a CRC over the blob, a decode) took a large group's
//! shard thread away from its heartbeats. It costs at most the shard's
//! snapshot area in memory.
//!
//! This module must never report a save before the shard log says the
//! snapshot is durable: the group purges its log right after.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::state_machine::{SnapshotStore, SnapshotStoreError, StoredSnapshot};
use super::types::{GroupId, SnapshotMeta};
use crate::wal::{SharedLog, WalError};

const FORMAT: u8 = 1;

/// Room a stored snapshot takes beyond the state machine's bytes, at most:
/// this envelope (its Raft metadata: ids and a membership of a few
/// members) and the blob's header and padding on the namespace.
pub const SNAPSHOT_ENVELOPE_BYTES_MAX: u64 = 64 << 10;

/// The snapshot store of one shard, over its shard log.
#[derive(Clone)]
pub struct WalSnapshotStore {
    log: SharedLog,
    /// The current snapshot of every group that saved or read one.
    current: Rc<RefCell<HashMap<GroupId, StoredSnapshot>>>,
}

impl WalSnapshotStore {
    pub fn new(log: SharedLog) -> WalSnapshotStore {
        WalSnapshotStore { log, current: Rc::default() }
    }
}

/// The blob a group's snapshot is stored as: its metadata, then the state
/// machine's bytes. `backup::restore` writes new snapshots with it too.
pub fn encode(meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let meta = serde_json::to_vec(meta).expect("snapshot metadata always serializes");
    let mut bytes = Vec::with_capacity(5 + meta.len() + data.len());
    bytes.push(FORMAT);
    bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(data);
    bytes
}

fn decode(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8]), String> {
    let (&format, rest) = bytes.split_first().ok_or("an empty snapshot blob")?;
    if format != FORMAT {
        return Err(format!("snapshot envelope format {format}, this build reads {FORMAT}"));
    }
    if rest.len() < 4 {
        return Err("a snapshot envelope cut short before its metadata length".into());
    }
    let meta_len = crate::little_endian::u32_at(rest, 0) as usize;
    let rest = &rest[4..];
    if rest.len() < meta_len {
        return Err(format!("snapshot metadata of {meta_len} bytes, only {} present", rest.len()));
    }
    let meta: SnapshotMeta =
        serde_json::from_slice(&rest[..meta_len]).map_err(|error| format!("snapshot metadata: {error}"))?;
    Ok((meta, &rest[meta_len..]))
}

impl SnapshotStore for WalSnapshotStore {
    async fn save(&self, group: GroupId, snapshot: StoredSnapshot) -> Result<(), SnapshotStoreError> {
        let error = |what, reason: String| SnapshotStoreError { group, what, reason, no_room: false };
        let last = snapshot.meta.last_log_id.ok_or_else(|| {
            error("saving", "a snapshot that covers no log entry has nothing to store".to_string())
        })?;
        let bytes = encode(&snapshot.meta, &snapshot.data);
        self.log.write_snapshot(group, last.index, last.leader_id.term, &bytes).await.map_err(|failure| {
            let no_room =
                matches!(failure, WalError::SnapshotAreaFull { .. } | WalError::SnapshotTooLarge { .. });
            SnapshotStoreError { no_room, ..error("saving", failure.to_string()) }
        })?;
        // A snapshot built here and one installed from the leader may be
        // saved at once and finish in either order: the one that covers
        // more stays current, here as in the shard log.
        let mut current = self.current.borrow_mut();
        let covers_more = current
            .get(&group)
            .and_then(|held| held.meta.last_log_id)
            .is_none_or(|held| (held.index, held.leader_id.term) <= (last.index, last.leader_id.term));
        if covers_more {
            current.insert(group, snapshot);
        }
        Ok(())
    }

    async fn load(&self, group: GroupId) -> Result<Option<StoredSnapshot>, SnapshotStoreError> {
        let error = |reason: String| SnapshotStoreError { group, what: "loading", reason, no_room: false };
        if let Some(current) = self.current.borrow().get(&group) {
            return Ok(Some(current.clone()));
        }
        let Some((_, bytes)) =
            self.log.read_snapshot(group).await.map_err(|failure| error(failure.to_string()))?
        else {
            return Ok(None);
        };
        let (meta, data) = decode(&bytes).map_err(error)?;
        let snapshot = StoredSnapshot { meta, data: Rc::from(data) };
        self.current.borrow_mut().insert(group, snapshot.clone());
        Ok(Some(snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_refuse_damage() {
        let meta = SnapshotMeta::default();
        let bytes = encode(&meta, b"state");
        let (decoded, data) = decode(&bytes).expect("decodes");
        assert_eq!(decoded, meta);
        assert_eq!(data, b"state");
        assert!(decode(&bytes[..3]).is_err());
        let mut newer = bytes.clone();
        newer[0] = 9;
        assert!(decode(&newer).unwrap_err().contains("format 9"));
    }
}
