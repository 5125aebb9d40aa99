//! The limits each value must respect and the rules between values: every
//! check [`Config::validate`] makes, each naming the key, the value and what
//! is allowed.

use super::*;

impl Config {
    /// Checks every value against its limits and the values against each
    /// other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let node = &self.node;
        if node.member_id == 0 {
            return Err(ConfigError::invalid(
                "node.member_id",
                0,
                "an integer of at least 1 (0 is no member)",
            ));
        }
        if node.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "node.data_dir",
                "\"\"",
                "a directory path, e.g. \"./nvkv-data\"",
            ));
        }
        if node.name.is_empty() || node.name.len() > 64 || node.name.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "node.name",
                format!("{:?}", node.name),
                "a name of 1 to 64 bytes without control characters, e.g. \"node-a\"",
            ));
        }

        let reactor = &self.reactor;
        check_range("reactor.shards_max", reactor.shards_max as u64, 1, SHARDS_LIMIT as u64)?;
        check_range("reactor.shards", reactor.shards as u64, 0, reactor.shards_max as u64)
            .map_err(|error| with_hint(error, " (0 = one per available core), at most reactor.shards_max"))?;
        if reactor.cores.len() > reactor.shards_max {
            return Err(ConfigError::invalid(
                "reactor.cores",
                format!("{:?}", reactor.cores),
                format!("at most reactor.shards_max = {} CPU ids", reactor.shards_max),
            ));
        }
        if reactor.shards > 0 && !reactor.cores.is_empty() && reactor.shards > reactor.cores.len() {
            return Err(ConfigError::invalid(
                "reactor.shards",
                reactor.shards,
                format!(
                    "at most the {} CPU ids listed in reactor.cores, or 0 to use all of them",
                    reactor.cores.len()
                ),
            ));
        }
        for (index, cpu) in reactor.cores.iter().enumerate() {
            if *cpu > CPU_ID_LIMIT {
                return Err(ConfigError::invalid(
                    "reactor.cores",
                    format!("{:?}", reactor.cores),
                    format!("CPU ids in 0..={CPU_ID_LIMIT}, but {cpu} is larger"),
                ));
            }
            if reactor.cores[..index].contains(cpu) {
                return Err(ConfigError::invalid(
                    "reactor.cores",
                    format!("{:?}", reactor.cores),
                    format!("each CPU id at most once, but {cpu} is listed twice"),
                ));
            }
        }
        check_range("reactor.adaptive_poll_us", reactor.adaptive_poll_us, 0, 1_000_000)?;
        check_range("reactor.mailbox_capacity", reactor.mailbox_capacity as u64, 1, 1 << 20)?;

        let namespace = &self.namespace;
        let lba_bytes = u64::from(namespace.lba_bytes);
        if !(512..=4096).contains(&lba_bytes) || !lba_bytes.is_power_of_two() {
            return Err(ConfigError::invalid(
                "namespace.lba_bytes",
                lba_bytes,
                "a power of two from 512 to 4096 (the device's logical block size, usually 512 or 4096)",
            ));
        }
        check_range("namespace.namespace_bytes", namespace.namespace_bytes, MIB, 1 << 50)?;
        check_multiple("namespace.namespace_bytes", namespace.namespace_bytes, lba_bytes)?;
        check_range("namespace.queue_depth", u64::from(namespace.queue_depth), 1, 4096)?;
        check_range("namespace.registered_buffer_bytes", namespace.registered_buffer_bytes, 0, GIB)?;
        check_multiple("namespace.registered_buffer_bytes", namespace.registered_buffer_bytes, lba_bytes)?;
        namespace.validate_spdk()?;

        let log = &self.log;
        check_range("log.batch_bytes_max", log.batch_bytes_max, lba_bytes, 4 * MIB)?;
        check_multiple("log.batch_bytes_max", log.batch_bytes_max, lba_bytes)?;
        let shard_count = reactor.shards.max(1) as u64;
        if log.batch_bytes_max.saturating_mul(u64::from(log.inflight_writes_max)).saturating_mul(shard_count)
            > namespace.namespace_bytes
        {
            return Err(ConfigError::invalid(
                "log.batch_bytes_max",
                log.batch_bytes_max,
                format!(
                    "batch_bytes_max x inflight_writes_max ({}) x shards ({shard_count}) to fit in \
                     namespace.namespace_bytes = {}; lower them or grow the namespace",
                    log.inflight_writes_max, namespace.namespace_bytes
                ),
            ));
        }
        // Recovery looks 4 MiB x 16 past a damaged record for proof it had been
        // durable; the log never has more than that in flight.
        check_range("log.inflight_writes_max", u64::from(log.inflight_writes_max), 1, 16)?;
        // A checkpoint, a flush and at least one read need a slot beside the
        // group-commit writes.
        if log.inflight_writes_max + 3 > namespace.queue_depth {
            return Err(ConfigError::invalid(
                "log.inflight_writes_max",
                log.inflight_writes_max,
                format!(
                    "at most namespace.queue_depth - 3 = {} (a checkpoint, a flush and reads need slots too)",
                    namespace.queue_depth.saturating_sub(3)
                ),
            ));
        }
        check_range(
            "log.groups_per_shard",
            u64::from(log.groups_per_shard),
            1,
            u64::from(GROUPS_PER_SHARD_LIMIT),
        )?;
        check_range("store.partition_depth", self.store.partition_depth as u64, 1, 16)?;
        check_range(
            "store.watch_progress_interval_ms",
            self.store.watch_progress_interval_ms,
            10,
            86_400_000,
        )?;
        check_range(
            "store.watches_per_connection_max",
            u64::from(self.store.watches_per_connection_max),
            1,
            65_536,
        )?;
        check_range(
            "store.watch_events_pending_max",
            u64::from(self.store.watch_events_pending_max),
            1,
            1 << 20,
        )?;
        check_range("store.watches_per_group_max", u64::from(self.store.watches_per_group_max), 1, 1 << 20)?;
        check_range("store.watch_pending_bytes_max", self.store.watch_pending_bytes_max, 4 * KIB, 1 << 30)?;
        check_range(
            "store.watch_group_pending_bytes_max",
            self.store.watch_group_pending_bytes_max,
            self.store.watch_pending_bytes_max,
            1 << 34,
        )?;
        check_range(
            "store.watch_connection_bytes_max",
            self.store.watch_connection_bytes_max,
            64 * KIB,
            1 << 30,
        )?;
        check_range("store.quota_bytes", self.store.quota_bytes, MIB, 1 << 40)?;
        check_range("store.proposal_queue_bytes_max", self.store.proposal_queue_bytes_max, MIB, 1 << 34)?;
        check_range(
            "store.compact_under_pressure_keep_revisions",
            self.store.compact_under_pressure_keep_revisions,
            0,
            1 << 40,
        )?;
        self.validate_store_limits()?;
        let raft = &self.raft;
        check_range("raft.snapshot_after_entries", raft.snapshot_after_entries, 1, 100_000_000)?;
        if raft.snapshot_after_bytes != 0 {
            check_range("raft.snapshot_after_bytes", raft.snapshot_after_bytes, MIB, 1 << 40)?;
        }
        check_range("raft.entries_kept_after_snapshot", raft.entries_kept_after_snapshot, 0, 100_000_000)?;
        check_range("raft.purge_batch_entries", raft.purge_batch_entries, 1, 1_000_000)?;
        check_range("auth.token_ttl_seconds", self.auth.token_ttl_seconds, 1, 7 * 86_400)?;
        let limits = &self.limits;
        check_range("limits.connections_max", u64::from(limits.connections_max), 1, 1 << 20)?;
        check_range(
            "limits.connections_per_source_max",
            u64::from(limits.connections_per_source_max),
            1,
            u64::from(limits.connections_max),
        )?;
        check_range("limits.handshake_timeout_ms", limits.handshake_timeout_ms, 100, 600_000)?;
        check_range("limits.idle_timeout_ms", limits.idle_timeout_ms, 1000, 86_400_000)?;
        check_range(
            "limits.calls_in_flight_per_connection_max",
            u64::from(limits.calls_in_flight_per_connection_max),
            1,
            1 << 20,
        )?;
        self.validate_metrics()?;
        self.validate_etcd()?;
        self.validate_cluster()?;
        self.validate_tls()
    }

    /// The `[tls]` keys that go together are set together, and plaintext
    /// is only for loopback addresses unless `tls.insecure` says otherwise.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        let shown = |path: &Option<PathBuf>| {
            path.as_ref()
                .map_or_else(|| "unset".to_string(), |path| format!("{:?}", path.display().to_string()))
        };
        for (key, path) in [
            ("tls.client_cert_file", &tls.client_cert_file),
            ("tls.client_key_file", &tls.client_key_file),
            ("tls.client_ca_file", &tls.client_ca_file),
            ("tls.peer_cert_file", &tls.peer_cert_file),
            ("tls.peer_key_file", &tls.peer_key_file),
            ("tls.peer_ca_file", &tls.peer_ca_file),
        ] {
            if path.as_ref().is_some_and(|path| path.as_os_str().is_empty()) {
                return Err(ConfigError::invalid(key, "\"\"", "the path of a PEM file, or the key left out"));
            }
        }
        if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
            let (key, value) = if tls.client_cert_file.is_some() {
                ("tls.client_key_file", &tls.client_key_file)
            } else {
                ("tls.client_cert_file", &tls.client_cert_file)
            };
            return Err(ConfigError::invalid(
                key,
                shown(value),
                "tls.client_cert_file and tls.client_key_file set together (the certificate and its key)",
            ));
        }
        if tls.client_ca_file.is_some() && !tls.client_tls() {
            return Err(ConfigError::invalid(
                "tls.client_ca_file",
                shown(&tls.client_ca_file),
                "tls.client_cert_file and tls.client_key_file set too: client certificates are checked only \
                 over TLS",
            ));
        }
        let peer = [
            ("tls.peer_cert_file", &tls.peer_cert_file),
            ("tls.peer_key_file", &tls.peer_key_file),
            ("tls.peer_ca_file", &tls.peer_ca_file),
        ];
        if peer.iter().any(|(_, path)| path.is_some()) {
            if let Some((key, path)) = peer.iter().find(|(_, path)| path.is_none()) {
                return Err(ConfigError::invalid(
                    key,
                    shown(path),
                    "tls.peer_cert_file, tls.peer_key_file and tls.peer_ca_file all set: peers always verify \
                     each other",
                ));
            }
        }
        if tls.insecure {
            return Ok(());
        }
        let node = &self.node;
        if !tls.client_tls() && !node.client_address.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "node.client_address",
                format!("\"{}\"", node.client_address),
                "a loopback address while the client port is plaintext: set tls.client_cert_file and \
                 tls.client_key_file, or tls.insecure = true to accept plaintext on this address",
            ));
        }
        if let Some(etcd) = self.etcd.address.filter(|address| !address.ip().is_loopback()) {
            if !tls.client_tls() {
                return Err(ConfigError::invalid(
                    "etcd.address",
                    format!("\"{etcd}\""),
                    "a loopback address while the client port is plaintext (the etcd API speaks the client \
                     port's TLS): set tls.client_cert_file and tls.client_key_file, or tls.insecure = true",
                ));
            }
        }
        if self.cluster.has_peers() && !tls.peer_tls() && !node.peer_address.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "node.peer_address",
                format!("\"{}\"", node.peer_address),
                "a loopback address while the peer port is plaintext: set tls.peer_cert_file, \
                 tls.peer_key_file and tls.peer_ca_file, or tls.insecure = true to accept plaintext on this \
                 address",
            ));
        }
        Ok(())
    }

    /// What `nvkv serve` warns about at every start: plaintext on
    /// non-loopback addresses that `tls.insecure` allowed.
    pub fn insecure_addresses(&self) -> Vec<String> {
        let mut plain = Vec::new();
        if !self.tls.client_tls() && !self.node.client_address.ip().is_loopback() {
            plain.push(format!("clients on {} (node.client_address)", self.node.client_address));
        }
        if let Some(etcd) = self.etcd.address.filter(|address| !address.ip().is_loopback()) {
            if !self.tls.client_tls() {
                plain.push(format!("etcd clients on {etcd} (etcd.address)"));
            }
        }
        if self.cluster.has_peers() && !self.tls.peer_tls() && !self.node.peer_address.ip().is_loopback() {
            plain.push(format!("peers on {} (node.peer_address)", self.node.peer_address));
        }
        plain
    }

    /// The cluster's name and members: each member once, with ports of its
    /// own, and this member among them as `[node]` describes it.
    fn validate_metrics(&self) -> Result<(), ConfigError> {
        let Some(address) = self.metrics.address else {
            return Ok(());
        };
        if address == self.node.client_address || address == self.node.peer_address {
            return Err(ConfigError::invalid(
                "metrics.address",
                format!("\"{address}\""),
                "an address no client or peer port uses, e.g. \"127.0.0.1:9379\"",
            ));
        }
        if !address.ip().is_loopback() && !self.tls.client_tls() {
            return Err(ConfigError::invalid(
                "metrics.address",
                format!("\"{address}\""),
                "a loopback address (e.g. \"127.0.0.1:9379\"), or set tls.client_cert_file and \
                 tls.client_key_file: off loopback the metrics endpoint speaks TLS with the client port's keys",
            ));
        }
        Ok(())
    }

    fn validate_etcd(&self) -> Result<(), ConfigError> {
        let Some(address) = self.etcd.address else {
            return Ok(());
        };
        let taken = [Some(self.node.client_address), Some(self.node.peer_address), self.metrics.address];
        if address.port() != 0 && taken.contains(&Some(address)) {
            return Err(ConfigError::invalid(
                "etcd.address",
                format!("\"{address}\""),
                "an address no client, peer or metrics port uses, e.g. \"127.0.0.1:2379\", or \"\" for none",
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if cluster.name.is_empty() || cluster.name.len() > 64 || cluster.name.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "cluster.name",
                format!("{:?}", cluster.name),
                "a name of 1 to 64 bytes without control characters, e.g. \"nvkv-prod\"",
            ));
        }
        if cluster.join && !cluster.has_peers() {
            return Err(ConfigError::invalid(
                "cluster.join",
                "true",
                "cluster.members listing the running cluster's members and this one, so this member \
                 knows its peers; or cluster.join = false to start a new cluster",
            ));
        }
        if cluster.members.is_empty() {
            return Ok(());
        }
        if cluster.members.len() > CLUSTER_MEMBERS_LIMIT {
            return Err(ConfigError::invalid(
                "cluster.members",
                format!("{} members", cluster.members.len()),
                format!("at most {CLUSTER_MEMBERS_LIMIT} members (every member holds every group)"),
            ));
        }
        for (index, member) in cluster.members.iter().enumerate() {
            let key = |field: &str| format!("cluster.members[{index}].{field}");
            if member.id == 0 {
                return Err(ConfigError::invalid(&key("id"), 0, "an integer of at least 1 (0 is no member)"));
            }
            if member.name.is_empty() || member.name.len() > 64 || member.name.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    &key("name"),
                    format!("{:?}", member.name),
                    "a name of 1 to 64 bytes without control characters, e.g. \"node1\"",
                ));
            }
            for (field, address) in
                [("client_address", member.client_address), ("peer_address", member.peer_address)]
            {
                if address.port() == 0 || address.ip().is_unspecified() {
                    return Err(ConfigError::invalid(
                        &key(field),
                        format!("\"{address}\""),
                        "an address the other members and clients can reach, with a port (not 0.0.0.0 or port 0)",
                    ));
                }
            }
            if member.client_address == member.peer_address {
                return Err(ConfigError::invalid(
                    &key("peer_address"),
                    format!("\"{}\"", member.peer_address),
                    "an address other than the member's client_address",
                ));
            }
            let addresses = [member.client_address, member.peer_address];
            if let Some(earlier) = cluster.members[..index].iter().find(|earlier| {
                earlier.id == member.id
                    || earlier.name == member.name
                    || addresses.contains(&earlier.client_address)
                    || addresses.contains(&earlier.peer_address)
            }) {
                return Err(ConfigError::invalid(
                    &format!("cluster.members[{index}]"),
                    format!("member {} {:?}", member.id, member.name),
                    format!(
                        "an id, a name and addresses of its own, but member {} {:?} has the same",
                        earlier.id, earlier.name
                    ),
                ));
            }
        }
        let node = &self.node;
        let Some(own) = cluster.members.iter().find(|member| member.id == node.member_id) else {
            return Err(ConfigError::invalid(
                "cluster.members",
                format!("ids {:?}", cluster.members.iter().map(|member| member.id).collect::<Vec<_>>()),
                format!("this member (node.member_id = {}) among them", node.member_id),
            ));
        };
        let differs = [
            ("node.name", own.name != node.name, format!("{:?}", node.name), format!("{:?}", own.name)),
            (
                "node.client_address",
                own.client_address != node.client_address,
                format!("\"{}\"", node.client_address),
                format!("\"{}\"", own.client_address),
            ),
            (
                "node.peer_address",
                own.peer_address != node.peer_address,
                format!("\"{}\"", node.peer_address),
                format!("\"{}\"", own.peer_address),
            ),
        ];
        for (key, different, value, listed) in differs {
            if different {
                return Err(ConfigError::invalid(
                    key,
                    value,
                    format!("{listed}, as cluster.members says of member {}", node.member_id),
                ));
            }
        }
        Ok(())
    }

    /// The request limits: each in its range, and a key and a value no
    /// larger than the request that carries them.
    fn validate_store_limits(&self) -> Result<(), ConfigError> {
        let store = &self.store;
        check_range("store.request_bytes_max", store.request_bytes_max, 4 * KIB, 64 * MIB)?;
        for (key, value) in
            [("store.key_bytes_max", store.key_bytes_max), ("store.value_bytes_max", store.value_bytes_max)]
        {
            if value > store.request_bytes_max {
                return Err(ConfigError::invalid(
                    key,
                    value,
                    format!(
                        "at most store.request_bytes_max = {} (a request carries it); lower it or raise request_bytes_max",
                        store.request_bytes_max
                    ),
                ));
            }
        }
        check_range("store.key_bytes_max", store.key_bytes_max, 1, 64 * KIB)?;
        check_range("store.txn_ops_max", u64::from(store.txn_ops_max), 1, 65_536)?;
        Ok(())
    }
}

/// Longest `namespace.transport`: SPDK's transport id fields (address 256,
/// NQN 223 bytes, and a few short ones) fit well within it.
pub(super) const TRANSPORT_BYTES_MAX: usize = 1024;

impl NamespaceConfig {
    /// The spdk backend's keys. Their limits hold whatever the backend, so
    /// a config stays valid when only `backend` changes; a transport id is
    /// needed only by the spdk backend.
    fn validate_spdk(&self) -> Result<(), ConfigError> {
        if self.transport.len() > TRANSPORT_BYTES_MAX {
            return Err(ConfigError::invalid(
                "namespace.transport",
                format!("{:?}", self.transport),
                format!("at most {TRANSPORT_BYTES_MAX} bytes"),
            ));
        }
        if self.backend == Backend::Spdk && self.transport.trim().is_empty() {
            return Err(ConfigError::invalid(
                "namespace.transport",
                "\"\"",
                "the controller's SPDK transport id with backend = \"spdk\", e.g. \"trtype:PCIe \
                 traddr:0000:01:00.0\" or \"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 \
                 subnqn:nqn.2016-06.io.spdk:cnode1\"",
            ));
        }
        // NSID 0 is no namespace and 0xffffffff means all of them.
        check_range("namespace.nsid", u64::from(self.nsid), 1, 0xffff_fffe)?;
        check_range("namespace.spdk_memory_bytes", self.spdk_memory_bytes, 64 * MIB, TIB)?;
        if self.spdk_memory_bytes % MIB != 0 {
            return Err(ConfigError::invalid(
                "namespace.spdk_memory_bytes",
                self.spdk_memory_bytes,
                "a whole number of MiB (SPDK reserves memory in MiB)",
            ));
        }
        if !self.spdk_hugepages && self.transport.to_ascii_lowercase().contains("trtype:pcie") {
            return Err(ConfigError::invalid(
                "namespace.spdk_hugepages",
                false,
                "true for a PCIe transport (a PCIe device reads and writes pinned hugepages; only TCP and \
                 RDMA work without them)",
            ));
        }
        Ok(())
    }
}

pub(super) fn check_range(key: &str, value: u64, low: u64, high: u64) -> Result<(), ConfigError> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, value, format!("an integer in {low}..={high}")))
    }
}

pub(super) fn check_multiple(key: &str, value: u64, lba_bytes: u64) -> Result<(), ConfigError> {
    if value % lba_bytes == 0 {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, value, format!("a multiple of namespace.lba_bytes = {lba_bytes}")))
    }
}
