//! One group's store copied for a backup (`nvkv snapshot save`): taken on
//! the shard that runs the group, at a linearizable point, encoded whole.
//!
//! The point is the one a linearizable read gets (`forward::linearizable`):
//! the group's leader confirms it still leads and names its commit index
//! (asked over the peer link when this member follows), and this member
//! waits until it applied that far. The store is then encoded in one go on
//! the shard's thread, so the copy is the store at one revision, with every
//! write acknowledged before the request began. It never writes to the
//! group and never holds the store borrowed across an await.

use super::answer::RequestError;
use super::registry::{group_on, on_shard};
use super::requests::Requests;
use crate::raft::GroupId;

/// A group's store as a backup holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCopy {
    pub group: GroupId,
    pub revision: i64,
    pub compact_revision: i64,
    /// `kv::snapshot::encode` of the store.
    pub bytes: Vec<u8>,
    /// The member that encoded it.
    pub member: u64,
}

impl Requests {
    /// A consistent copy of `group`'s store (see the module doc).
    pub async fn backup_group(&self, group: GroupId) -> Result<GroupCopy, RequestError> {
        if group >= self.layout.groups() {
            return Err(RequestError::NoSuchGroup { group, last: self.layout.groups() - 1 });
        }
        let shard = self.layout.shard_of(group);
        let member = self.member();
        let caller = self.caller.clone();
        on_shard(&self.context, shard, move |groups| async move {
            // A backup holds every key, and the users' password hashes.
            groups.layout().auth.require_root(&caller, "backups")?;
            let entry = group_on(&groups, group)?;
            super::forward::linearizable(entry.clone(), groups.leaders()).await?;
            let machine = entry.machine().borrow();
            let store = &machine.state.store;
            Ok(GroupCopy {
                group,
                revision: store.revision(),
                compact_revision: store.compact_revision(),
                bytes: crate::kv::snapshot::encode(store),
                member,
            })
        })
        .await
    }
}
