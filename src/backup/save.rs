//! `nvkv snapshot save`: a backup of every group of a running store,
//! asked of one node, written to a file.
//!
//! Each group's part comes from the shard that runs it on the node the
//! client reached (Maintenance.backupGroup): that shard takes it at a
//! linearizable point of the group (the leader's read index, applied
//! there), so each part holds every write acknowledged before it was
//! asked for, at the group's revision of that moment. Groups are separate
//! Raft groups, so the parts are not taken at one instant across groups.
//! One group's bytes are held in memory at a time, never the whole backup.

use std::path::Path;
use std::rc::Rc;

use super::{BackupHeader, BackupWriter, PART_BYTES_MAX};
use crate::rpc::client::ShardedClient;

/// What a save wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Saved {
    pub path: String,
    pub file_bytes: u64,
    pub groups: u32,
    /// Each group's revision, in group order.
    pub revisions: Vec<i64>,
    /// The member whose store the parts were copied from.
    pub member_id: u64,
}

/// Writes a backup of the store `client` reaches to `path` (refusing an
/// existing file unless `force`). `progress` hears of the group count
/// first, then of each group done and the bytes so far.
pub async fn save(
    client: &ShardedClient,
    path: &Path,
    force: bool,
    progress: Rc<dyn Fn(SaveProgress)>,
) -> Result<Saved, String> {
    let map = client.partition_map();
    if map.groups == 0 || map.shards == 0 || map.groups % map.shards != 0 {
        return Err(format!(
            "the node reports {} groups over {} shards, which is no layout a backup can hold",
            map.groups, map.shards
        ));
    }
    let created_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let header = BackupHeader {
        groups: map.groups,
        partition_depth: map.partition_depth,
        shards: map.shards,
        groups_per_shard: map.groups / map.shards,
        created_unix_ms,
    };
    let mut writer = BackupWriter::create(path, header, force).map_err(|error| error.to_string())?;
    progress(SaveProgress::Groups(map.groups));
    let mut revisions = Vec::with_capacity(map.groups as usize);
    let mut member_id = 0;
    for group in 0..map.groups {
        let connection = client.for_group(group);
        let on_chunk: Rc<dyn Fn(u64)> = {
            let progress = progress.clone();
            Rc::new(move |bytes| progress(SaveProgress::Bytes(bytes)))
        };
        let (info, bytes) = connection
            .backup_group(group, PART_BYTES_MAX, on_chunk)
            .await
            .map_err(|error| format!("backing up group {group}: {error}"))?;
        writer
            .write_part(group, info.revision, info.compact_revision, &bytes)
            .map_err(|error| error.to_string())?;
        revisions.push(info.revision);
        member_id = info.member_id;
        progress(SaveProgress::GroupDone(group));
    }
    let file_bytes = writer.finish().map_err(|error| error.to_string())?;
    Ok(Saved { path: path.display().to_string(), file_bytes, groups: map.groups, revisions, member_id })
}

/// What a save reports as it goes.
#[derive(Clone, Copy, Debug)]
pub enum SaveProgress {
    /// How many groups the backup will hold.
    Groups(u32),
    /// Bytes of a group's store arrived.
    Bytes(u64),
    /// A group's part is written.
    GroupDone(u32),
}
