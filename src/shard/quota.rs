//! The task that measures every group of a shard against its quota
//! (`store.quota_bytes`) each second, raising and clearing the group's
//! quota alarm (`super::space::Alarms`). It only measures: what a raised
//! alarm refuses is `super::space`'s.

use std::rc::Rc;
use std::time::Duration;

use super::registry::ShardGroups;

/// How often each group's store is measured against the quota.
const QUOTA_TICK: Duration = Duration::from_secs(1);

/// Starts the task that measures this shard's groups against
/// `store.quota_bytes` each [`QUOTA_TICK`], raising and clearing their
/// quota alarms.
pub fn spawn_quota(groups: Rc<ShardGroups>) {
    let quota_bytes = groups.layout().quota_bytes;
    tokio::task::spawn_local(async move {
        loop {
            tokio::time::sleep(QUOTA_TICK).await;
            let Some(entries) = groups.started() else { continue };
            for entry in entries {
                let store_bytes = crate::kv::snapshot::encoded_len(&entry.machine().borrow().state.store);
                entry.alarms().judge_quota(store_bytes, quota_bytes);
                tokio::task::yield_now().await;
            }
        }
    });
}
