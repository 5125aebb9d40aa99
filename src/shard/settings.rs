//! The config's sections as the options of the layers a shard runs: the
//! store's limits, a group's Raft settings, the members a membership names
//! and what the spdk backend needs. The config stays plain data that knows
//! no layer; this is where its values meet the layers' own types.

use crate::config::{MemberConfig, NamespaceConfig, RaftConfig, StoreConfig};
use crate::kv::limits::Limits;
use crate::nvme::open::SpdkOptions;
use crate::raft::{GroupConfig, Member};

/// The limits the request path checks, as the store layer names them.
pub fn store_limits(store: &StoreConfig) -> Limits {
    Limits {
        key_bytes_max: store.key_bytes_max as usize,
        value_bytes_max: store.value_bytes_max as usize,
        request_bytes_max: store.request_bytes_max as usize,
        txn_ops_max: store.txn_ops_max as usize,
    }
}

/// A group's Raft settings with `[raft]` applied.
pub fn group_config(raft: &RaftConfig) -> GroupConfig {
    GroupConfig {
        snapshot_logs_since_last: raft.snapshot_after_entries,
        max_in_snapshot_log_to_keep: raft.entries_kept_after_snapshot,
        purge_batch_size: raft.purge_batch_entries,
        refuse_votes_after_unproven_tail: raft.refuse_votes_after_unproven_tail,
        apply_committed_at_start: raft.apply_committed_at_start,
        // The shard decides when, once it knows the snapshot fits.
        snapshot_on_demand: true,
        ..GroupConfig::default()
    }
}

/// A member of `cluster.members` as a group's membership names it.
pub fn member(listed: &MemberConfig) -> Member {
    Member {
        id: listed.id,
        peer_address: listed.peer_address.to_string(),
        name: listed.name.clone(),
        client_address: listed.client_address.to_string(),
    }
}

/// What the spdk backend needs of `[namespace]`.
pub fn spdk_options(namespace: &NamespaceConfig) -> SpdkOptions {
    SpdkOptions {
        transport: namespace.transport.clone(),
        nsid: namespace.nsid,
        memory_bytes: namespace.spdk_memory_bytes,
        hugepages: namespace.spdk_hugepages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_setting_reaches_its_layer() {
        let config = Config::parse(
            "[namespace]\nbackend = \"spdk\"\ntransport = \"trtype:TCP traddr:10.0.0.2 trsvcid:4420\"\nnsid = 2\n\
             spdk_memory_bytes = \"2GiB\"\nspdk_hugepages = false\n\
             [store]\nkey_bytes_max = 100\nvalue_bytes_max = \"64KiB\"\nrequest_bytes_max = \"128KiB\"\ntxn_ops_max = 8\n\
             [raft]\nsnapshot_after_entries = 50\nentries_kept_after_snapshot = 5\npurge_batch_entries = 10\n\
             [[cluster.members]]\nid = 1\nname = \"default\"\nclient_address = \"127.0.0.1:7379\"\n\
             peer_address = \"127.0.0.1:7479\"\n",
            "the test's config",
        )
        .expect("parses");
        assert_eq!(
            spdk_options(&config.namespace),
            SpdkOptions {
                transport: "trtype:TCP traddr:10.0.0.2 trsvcid:4420".to_owned(),
                nsid: 2,
                memory_bytes: 2 << 30,
                hugepages: false
            }
        );
        let limits = store_limits(&config.store);
        assert_eq!((limits.key_bytes_max, limits.value_bytes_max), (100, 64 << 10));
        assert_eq!((limits.request_bytes_max, limits.txn_ops_max), (128 << 10, 8));
        let raft = group_config(&config.raft);
        assert_eq!((raft.snapshot_logs_since_last, raft.max_in_snapshot_log_to_keep), (50, 5));
        assert_eq!(raft.purge_batch_size, 10);
        assert!(raft.snapshot_on_demand, "the shard decides when a group snapshots");
        let listed = &config.cluster.members[0];
        let named = member(listed);
        assert_eq!((named.id, named.name.as_str()), (listed.id, listed.name.as_str()));
        assert_eq!(named.peer_address, listed.peer_address.to_string());
    }
}
