//! `nvkv snapshot restore`: a new data directory made from a backup, with
//! no daemon running, from which `nvkv serve` starts serving every key of
//! the backup at the same revisions, versions and leases.
//!
//! It checks the whole backup first (every checksum, every store), then the
//! layout against the config (group count, partition depth), then that the
//! data directory is empty, before it writes anything. It then formats a
//! new namespace and stores each group's store as that group's Raft
//! snapshot, with a membership made from the config: this member alone,
//! or `[cluster] members` when there are several (every member restores
//! the same file with its own config, as with etcdctl's
//! `--initial-cluster`). The snapshot covers log entry 1 of term 0, below
//! any term a leader is elected in, so each group starts with an empty log
//! after its snapshot and elects a leader among the configured members.
//! On a failure after it began writing it removes what it wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::LeaderId;

use super::{BackupError, BackupReader, BackupSummary};
use crate::config::{Config, ConfigError, GROUPS_PER_SHARD_LIMIT};
use crate::nvme::open::open_namespace;
use crate::nvme::{Namespace, NvmeError, QueuePairConfig};
use crate::raft::types::{LogId, Membership, SnapshotMeta, StoredMembership};
use crate::raft::Member;
use crate::wal::{superblock, FormatOptions, ShardLog, WalError};

/// The log position a restored group's snapshot covers: entry 1 of term 0.
/// Terms of elected leaders start at 1, so the first leader's entries
/// follow it.
pub const RESTORED_INDEX: u64 = 1;
pub const RESTORED_TERM: u64 = 0;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "the backup holds {backup} groups ({backup_shards} shards × {backup_groups_per_shard}), but the config \
         makes {configured} ({shards} × log.groups_per_shard = {groups_per_shard}); keys map to groups by their \
         count, so restore with a config that makes {backup} groups (reactor.shards = {backup_shards} and \
         log.groups_per_shard = {backup_groups_per_shard})"
    )]
    GroupCount {
        backup: u32,
        backup_shards: u32,
        backup_groups_per_shard: u32,
        configured: u64,
        shards: String,
        groups_per_shard: u32,
    },
    #[error(
        "the backup was taken with store.partition_depth = {backup}, but the config sets {configured}; keys \
         map to groups by it, so set store.partition_depth = {backup}"
    )]
    PartitionDepth { backup: u32, configured: usize },
    #[error(
        "the config is in join mode (cluster.join = true): a joining member starts empty and receives the \
         store from the cluster; restore the members that form the new cluster instead"
    )]
    JoinMode,
    #[error(
        "data directory {path} is not empty; restore makes a new store and needs an empty or missing directory \
         (set --data-dir to a new one)"
    )]
    DataDirNotEmpty { path: PathBuf },
    #[error(
        "namespace {path} already holds an nvkv namespace; restore writes only to a new one (point \
         namespace.path at a new file or device, or clear it)"
    )]
    NamespaceInUse { path: String },
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot open the namespace: {0}")]
    Namespace(#[from] NvmeError),
    #[error("cannot write the store of group {group}: {source}")]
    Write { group: u32, source: WalError },
    #[error("cannot format the namespace: {0}")]
    Format(WalError),
}

/// What a restore made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub namespace: String,
    pub shards: u32,
    pub members: Vec<u64>,
    pub summary: BackupSummary,
}

/// How many shards the restored node runs: the config's, or the backup's
/// when the config leaves the count to the machine (the namespace's count
/// wins at start then too). Checks the group count and partition depth.
fn shards_for(config: &Config, summary: &BackupSummary) -> Result<u32, RestoreError> {
    let header = &summary.header;
    if header.partition_depth as usize != config.store.partition_depth {
        return Err(RestoreError::PartitionDepth {
            backup: header.partition_depth,
            configured: config.store.partition_depth,
        });
    }
    let groups_per_shard = config.log.groups_per_shard;
    let configured = if !config.reactor.cores.is_empty() {
        Some((config.reactor.cores.len(), format!("{} reactor.cores", config.reactor.cores.len())))
    } else if config.reactor.shards != 0 {
        Some((config.reactor.shards, format!("reactor.shards = {}", config.reactor.shards)))
    } else {
        None
    };
    let mismatch = |shards: u64, shown: String| RestoreError::GroupCount {
        backup: header.groups,
        backup_shards: header.shards,
        backup_groups_per_shard: header.groups_per_shard,
        configured: shards * u64::from(groups_per_shard),
        shards: shown,
        groups_per_shard,
    };
    match configured {
        Some((shards, shown)) => {
            if shards as u64 * u64::from(groups_per_shard) != u64::from(header.groups) {
                return Err(mismatch(shards as u64, shown));
            }
            Ok(shards as u32)
        }
        None => {
            if header.groups % groups_per_shard != 0 {
                let shards = u64::from(header.shards);
                return Err(mismatch(shards, format!("{shards} shards (reactor.shards = 0, the backup's)")));
            }
            Ok(header.groups / groups_per_shard)
        }
    }
}

/// The members every restored group starts with.
fn members_of(config: &Config) -> Vec<Member> {
    if config.cluster.members.is_empty() {
        return vec![Member {
            id: config.node.member_id,
            peer_address: config.node.peer_address.to_string(),
            name: config.node.name.clone(),
            client_address: config.node.client_address.to_string(),
        }];
    }
    config.cluster.members.iter().map(crate::shard::settings::member).collect()
}

/// The Raft snapshot metadata of a restored group.
pub fn restored_meta(group: u32, members: &[Member]) -> SnapshotMeta {
    let log_id = LogId::new(LeaderId::new(RESTORED_TERM, 0), RESTORED_INDEX);
    let voters: BTreeSet<u64> = members.iter().map(|member| member.id).collect();
    let nodes: BTreeMap<u64, Member> = members.iter().map(|member| (member.id, member.clone())).collect();
    SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), Membership::new(vec![voters], nodes)),
        snapshot_id: format!("group{group}-restored"),
    }
}

fn is_empty_dir(path: &Path) -> Result<bool, RestoreError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(RestoreError::Io { what: "read", path: path.to_path_buf(), source }),
    }
}

/// Restores the backup at `path` into the data directory and namespace of
/// `config`. `progress` hears of each group's store bytes, first while the
/// backup is checked, then while it is written.
pub fn restore(path: &Path, config: Config, mut progress: impl FnMut(u64)) -> Result<Restored, RestoreError> {
    config.validate()?;
    if config.cluster.join {
        return Err(RestoreError::JoinMode);
    }
    let summary = super::verify(path, &mut progress)?;
    let shards = shards_for(&config, &summary)?;
    let data_dir = config.node.data_dir.clone();
    if !is_empty_dir(&data_dir)? {
        return Err(RestoreError::DataDirNotEmpty { path: data_dir });
    }
    let namespace_path = config.namespace.resolved_path(&data_dir);
    let created_dir = !data_dir.exists();
    let created_namespace = !namespace_path.starts_with(&data_dir) && !namespace_path.exists();
    let outcome = write(path, &config, shards, &summary, &mut progress);
    if outcome.is_err() {
        // Leave nothing that looks like a store behind: the directory was
        // empty or missing before.
        if created_dir {
            let _ = std::fs::remove_dir_all(&data_dir);
        } else if let Ok(entries) = std::fs::read_dir(&data_dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        if created_namespace {
            let _ = std::fs::remove_file(&namespace_path);
        }
    }
    let namespace = outcome?;
    Ok(Restored {
        data_dir,
        namespace,
        shards,
        members: members_of(&config).iter().map(|m| m.id).collect(),
        summary,
    })
}

fn write(
    path: &Path,
    config: &Config,
    shards: u32,
    summary: &BackupSummary,
    progress: &mut impl FnMut(u64),
) -> Result<String, RestoreError> {
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| RestoreError::Io {
        what: "create",
        path: data_dir.clone(),
        source,
    })?;
    let _lock = crate::data_dir::DataDirLock::acquire(data_dir).map_err(|error| RestoreError::Io {
        what: "lock",
        path: data_dir.clone(),
        source: std::io::Error::other(error.to_string()),
    })?;
    let namespace: Arc<dyn Namespace> = open_namespace(&crate::shard::namespace_settings(config, data_dir))?;
    let description = namespace.info().description.clone();
    let queue_pair = QueuePairConfig {
        depth: config.namespace.queue_depth,
        registered_buffer_bytes: config.namespace.registered_buffer_bytes as usize,
    };
    let superblock = {
        let mut queue = namespace.open_queue_pair(&queue_pair)?;
        let member_id = config.node.member_id;
        let options = FormatOptions { shards, groups_per_shard_max: GROUPS_PER_SHARD_LIMIT, member_id };
        let (mut superblock, formatted) =
            superblock::open_or_format(queue.as_mut(), options).map_err(RestoreError::Format)?;
        if !formatted {
            return Err(RestoreError::NamespaceInUse { path: description });
        }
        // A restore makes a new cluster: every member restored with the
        // same members derives the same id, and none of the old cluster's
        // members is taken for one of its own.
        superblock.identity.cluster_id =
            config.cluster.bootstrap_cluster_id((member_id, config.node.peer_address));
        superblock::rewrite(queue.as_mut(), &mut superblock).map_err(RestoreError::Format)?;
        superblock
    };
    let mut logs = Vec::with_capacity(shards as usize);
    for shard in 0..shards {
        let queue = namespace.open_queue_pair(&queue_pair)?;
        let log = ShardLog::open(queue, superblock.region(shard), crate::shard::log_options(config))
            .map_err(RestoreError::Format)?;
        logs.push(log);
    }
    let members = members_of(config);
    let mut reader = BackupReader::open(path)?;
    if reader.header() != &summary.header {
        return Err(BackupError::Malformed {
            path: path.to_path_buf(),
            reason: "the file changed while it was restored".into(),
        }
        .into());
    }
    while let Some(part) = reader.next_part()? {
        let group = part.group;
        let envelope = crate::raft::wal_snapshots::encode(&restored_meta(group, &members), &part.store);
        let log = &mut logs[(group % shards) as usize];
        let write_error = |source| RestoreError::Write { group, source };
        let ticket =
            log.write_snapshot(group, RESTORED_INDEX, RESTORED_TERM, &envelope).map_err(write_error)?;
        log.wait_snapshot_durable(ticket).map_err(write_error)?;
        progress(part.store.len() as u64);
    }
    reader.finish()?;
    drop(logs);
    Ok(description)
}
