//! Parsing, defaults, every refusal and its message, and config/nvkv.toml
//! against the defaults.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml")
}

#[test]
fn empty_text_gives_the_defaults() {
    assert_eq!(parse("").expect("empty config parses"), Config::default());
    assert_eq!(Config::load(None).expect("defaults load"), Config::default());
    Config::default().validate().expect("the defaults are valid");
}

#[test]
fn defaults_run_anywhere() {
    let config = Config::default();
    assert_eq!(config.node.member_id, 1);
    assert_eq!(config.node.data_dir, PathBuf::from("./nvkv-data"));
    assert_eq!(config.node.client_address.to_string(), "127.0.0.1:7379");
    assert_eq!(config.reactor.shards, 0);
    assert!(config.reactor.cores.is_empty());
    assert_eq!(config.reactor.poll_mode, PollMode::Adaptive);
    assert_eq!(config.namespace.backend, Backend::Uring);
    assert_eq!(config.namespace.resolved_path(&config.node.data_dir), PathBuf::from("./nvkv-data/namespace"));
    assert_eq!(config.namespace.namespace_bytes, 1 << 30);
    assert_eq!(config.log.durability, Durability::Fua);
}

#[test]
fn the_shipped_example_is_exactly_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nvkv.toml");
    let config = Config::load(Some(&path)).expect("config/nvkv.toml parses");
    // The defaults, with data_dir relative to the file's directory.
    let mut defaults = Config::default();
    defaults.resolve_paths(path.parent().expect("config/"));
    assert_eq!(config, defaults, "config/nvkv.toml must show the defaults exactly");
}

#[test]
fn every_key_parses() {
    let config = parse(
        r#"
        [node]
        member_id = 3
        name = "node-c"
        data_dir = "/var/lib/nvkv"
        client_address = "0.0.0.0:7400"

        [tls]
        client_cert_file = "/etc/nvkv/client.pem"
        client_key_file = "/etc/nvkv/client-key.pem"
        client_ca_file = "/etc/nvkv/clients-ca.pem"
        peer_cert_file = "/etc/nvkv/peer.pem"
        peer_key_file = "/etc/nvkv/peer-key.pem"
        peer_ca_file = "/etc/nvkv/ca.pem"
        insecure = true

        [reactor]
        shards = 2
        shards_max = 8
        cores = [2, 3]
        poll_mode = "busy"
        adaptive_poll_us = 0
        mailbox_capacity = 16

        [namespace]
        backend = "spdk"
        path = "/dev/nvme0n1"
        namespace_bytes = "64GiB"
        lba_bytes = 512
        queue_depth = 1024
        registered_buffer_bytes = 16777216
        transport = "trtype:PCIe traddr:0000:01:00.0"
        nsid = 2
        spdk_memory_bytes = "2GiB"
        spdk_hugepages = true

        [log]
        durability = "flush"
        batch_bytes_max = "256KiB"
        inflight_writes_max = 8
        groups_per_shard = 16

        [store]
        partition_depth = 3
        key_bytes_max = 100
        value_bytes_max = "64KiB"
        request_bytes_max = "128KiB"
        txn_ops_max = 8

        [raft]
        snapshot_after_entries = 50
        entries_kept_after_snapshot = 5
        purge_batch_entries = 10
        "#,
    )
    .expect("full config parses");
    assert_eq!(config.node.member_id, 3);
    assert_eq!(config.node.name, "node-c");
    assert_eq!(config.node.client_address.port(), 7400);
    assert_eq!(config.tls.client_ca_file, Some(PathBuf::from("/etc/nvkv/clients-ca.pem")));
    assert_eq!(config.tls.peer_key_file, Some(PathBuf::from("/etc/nvkv/peer-key.pem")));
    assert!(config.tls.client_tls() && config.tls.peer_tls() && config.tls.insecure);
    assert_eq!(config.reactor.cores, vec![2, 3]);
    assert_eq!(config.reactor.poll_mode, PollMode::Busy);
    assert_eq!(config.namespace.backend, Backend::Spdk);
    assert_eq!(config.namespace.resolved_path(Path::new("/ignored")), PathBuf::from("/dev/nvme0n1"));
    assert_eq!(config.namespace.namespace_bytes, 64 << 30);
    assert_eq!(config.namespace.registered_buffer_bytes, 16 << 20);
    assert_eq!(config.namespace.transport, "trtype:PCIe traddr:0000:01:00.0");
    assert_eq!(config.namespace.nsid, 2);
    assert_eq!((config.namespace.spdk_memory_bytes, config.namespace.spdk_hugepages), (2 << 30, true));
    assert_eq!(config.log.durability, Durability::Flush);
    assert_eq!(config.log.batch_bytes_max, 256 << 10);
    assert_eq!((config.store.key_bytes_max, config.store.value_bytes_max), (100, 64 << 10));
    assert_eq!((config.store.request_bytes_max, config.store.txn_ops_max), (128 << 10, 8));
    assert_eq!((config.raft.snapshot_after_entries, config.raft.entries_kept_after_snapshot), (50, 5));
    assert_eq!(config.raft.purge_batch_entries, 10);
}

#[test]
fn sizes_accept_integers_and_binary_units() {
    assert_eq!(parse_bytes("4096"), Some(4096));
    assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
    assert_eq!(parse_bytes("1 GiB"), Some(1 << 30));
    assert_eq!(parse_bytes("2TiB"), Some(2 << 40));
    assert_eq!(parse_bytes("1GB"), None, "decimal units are ambiguous and refused");
    assert_eq!(parse_bytes("MiB"), None);
    assert_eq!(parse_bytes("-1"), None);
    assert_eq!(parse_bytes("99999999999999TiB"), None, "overflow is refused");
}

#[test]
fn a_bad_choice_names_key_value_file_and_choices() {
    let error = parse("[reactor]\npoll_mode = \"spin\"\n").expect_err("spin is no poll mode");
    assert_eq!(
        error.to_string(),
        "invalid config value reactor.poll_mode = \"spin\" in test.toml line 2: expected \"busy\" or \"adaptive\""
    );
    let error = parse("[log]\ndurability = \"maybe\"\n").expect_err("maybe is no durability");
    assert!(error.to_string().contains("expected \"fua\", \"flush\" or \"none\""), "{error}");
    let error = parse("[namespace]\nbackend = \"aio\"\n").expect_err("aio is no backend");
    assert!(error.to_string().contains("namespace.backend = \"aio\""), "{error}");
}

#[test]
fn a_wrong_type_names_key_and_value() {
    let error = parse("[namespace]\nqueue_depth = \"deep\"\n").expect_err("a string is no depth");
    let message = error.to_string();
    assert!(
        message.starts_with("invalid config value namespace.queue_depth = \"deep\" in test.toml line 2"),
        "{message}"
    );
    let error = parse("[namespace]\nnamespace_bytes = \"1GB\"\n").expect_err("1GB is ambiguous");
    assert!(error.to_string().contains("namespace.namespace_bytes = \"1GB\""), "{error}");
    let error = parse("[node]\nclient_address = \"localhost\"\n").expect_err("no port");
    assert!(error.to_string().contains("node.client_address = \"localhost\""), "{error}");
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let error = parse("[reactor]\nshards = 2\nthreads = 4\n").expect_err("threads is unknown");
    let message = error.to_string();
    assert!(message.starts_with("unknown config key reactor.threads in test.toml line 3"), "{message}");
    assert!(message.contains("shards_max"), "the message lists the known keys: {message}");
    let error = parse("[raft]\nelection_timeout_ms = 5\n").expect_err("not a raft key");
    assert!(error.to_string().contains("unknown config key raft.election_timeout_ms"), "{error}");
}

#[test]
fn a_syntax_error_names_the_line() {
    let error = parse("[node]\nmember_id = = 3\n").expect_err("double equals");
    let message = error.to_string();
    assert!(message.starts_with("config file test.toml line 2 column 13 is not valid TOML"), "{message}");
    assert!(!message.contains('\n'), "errors are one line: {message}");
}

/// A config of member 1 named "a" (client 7379, peer 7479) in a cluster
/// of `members` (id, name, client port, peer port).
fn cluster(members: &[(u64, &str, u16, u16)]) -> String {
    let mut text = "[node]\nname = \"a\"\npeer_address = \"127.0.0.1:7479\"\n[cluster]\n".to_string();
    for (id, name, client, peer) in members {
        text += &format!(
            "[[cluster.members]]\nid = {id}\nname = \"{name}\"\nclient_address = \"127.0.0.1:{client}\"\n\
             peer_address = \"127.0.0.1:{peer}\"\n"
        );
    }
    text
}

#[test]
fn the_cluster3_example_parses_as_three_members_of_one_cluster() {
    for member in 1..=3u64 {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/cluster3/node{member}.toml"));
        let config = Config::load(Some(&path)).expect("config/cluster3 parses");
        assert_eq!(config.node.member_id, member);
        assert_eq!(
            config.node.data_dir,
            path.parent().expect("cluster3/").join(format!("nvkv-data/node{member}"))
        );
        assert_eq!(config.cluster.name, "cluster3");
        assert_eq!(config.cluster.members.iter().map(|listed| listed.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(config.cluster.has_peers());
    }
    let config = parse(&cluster(&[(1, "a", 7379, 7479), (2, "b", 7579, 7679)])).expect("a 2-member cluster");
    assert_eq!(config.cluster.members[1].peer_address.to_string(), "127.0.0.1:7679");
}

#[test]
fn limits_are_enforced() {
    let cases: &[(&str, &str)] = &[
        ("[node]\nmember_id = 0", "node.member_id = 0"),
        ("[reactor]\nshards_max = 0", "reactor.shards_max = 0"),
        ("[reactor]\nshards_max = 257", "reactor.shards_max = 257"),
        ("[reactor]\nshards = 20", "reactor.shards = 20"),
        ("[reactor]\ncores = [1, 1]", "listed twice"),
        ("[reactor]\ncores = [99999]", "99999 is larger"),
        ("[reactor]\nshards = 3\ncores = [0, 1]", "reactor.shards = 3"),
        ("[reactor]\nmailbox_capacity = 0", "reactor.mailbox_capacity = 0"),
        ("[reactor]\nadaptive_poll_us = 5000000", "reactor.adaptive_poll_us = 5000000"),
        ("[namespace]\nlba_bytes = 1000", "namespace.lba_bytes = 1000"),
        ("[namespace]\nqueue_depth = 0", "namespace.queue_depth = 0"),
        ("[namespace]\nbackend = \"spdk\"", "namespace.transport = \"\""),
        ("[namespace]\nnsid = 0", "namespace.nsid = 0"),
        ("[namespace]\nspdk_memory_bytes = \"32MiB\"", "namespace.spdk_memory_bytes = 33554432"),
        ("[namespace]\nspdk_memory_bytes = 100000000", "a whole number of MiB"),
        (
            "[namespace]\ntransport = \"trtype:PCIe traddr:0000:01:00.0\"\nspdk_hugepages = false",
            "namespace.spdk_hugepages = false",
        ),
        ("[namespace]\nqueue_depth = 5000", "namespace.queue_depth = 5000"),
        ("[namespace]\nnamespace_bytes = 1000", "namespace.namespace_bytes = 1000"),
        ("[namespace]\nnamespace_bytes = 1048577", "a multiple of namespace.lba_bytes"),
        ("[log]\nbatch_bytes_max = 5000", "log.batch_bytes_max = 5000"),
        ("[log]\ninflight_writes_max = 0", "log.inflight_writes_max = 0"),
        (
            "[namespace]\nqueue_depth = 2\n[log]\ninflight_writes_max = 4",
            "at most namespace.queue_depth - 3 = 0",
        ),
        ("[log]\ngroups_per_shard = 0", "log.groups_per_shard = 0"),
        ("[store]\nwatch_progress_interval_ms = 5", "store.watch_progress_interval_ms = 5"),
        ("[store]\nwatches_per_connection_max = 0", "store.watches_per_connection_max = 0"),
        ("[store]\nwatch_events_pending_max = 0", "store.watch_events_pending_max = 0"),
        ("[store]\nwatch_pending_bytes_max = 10", "store.watch_pending_bytes_max = 10"),
        ("[store]\nwatch_connection_bytes_max = 0", "store.watch_connection_bytes_max = 0"),
        ("[store]\nquota_bytes = 1000", "store.quota_bytes = 1000"),
        ("[store]\nproposal_queue_bytes_max = 1000", "store.proposal_queue_bytes_max = 1000"),
        ("[namespace]\nnamespace_bytes = \"1MiB\"", "to fit in namespace.namespace_bytes"),
        ("[node]\nname = \"\"", "node.name = \"\""),
        ("[store]\nrequest_bytes_max = 100", "store.request_bytes_max = 100"),
        ("[store]\nrequest_bytes_max = \"1GiB\"", "store.request_bytes_max = 1073741824"),
        ("[store]\nvalue_bytes_max = \"2MiB\"", "at most store.request_bytes_max = 1572864"),
        ("[store]\nrequest_bytes_max = \"8KiB\"", "store.value_bytes_max = 1572864"),
        ("[store]\nkey_bytes_max = 0", "store.key_bytes_max = 0"),
        ("[store]\ntxn_ops_max = 0", "store.txn_ops_max = 0"),
        ("[raft]\nsnapshot_after_entries = 0", "raft.snapshot_after_entries = 0"),
        ("[raft]\npurge_batch_entries = 0", "raft.purge_batch_entries = 0"),
        ("[cluster]\nname = \"\"", "cluster.name = \"\""),
    ];
    let cluster_cases: Vec<(String, &str)> = vec![
        (cluster(&[(1, "a", 7379, 7479), (2, "b", 7579, 7579)]), "cluster.members[1].peer_address"),
        (cluster(&[(1, "a", 7379, 7479), (2, "b", 7479, 7679)]), "cluster.members[1]"),
        (cluster(&[(1, "a", 7379, 7479), (1, "b", 7579, 7679)]), "member 1 \"a\" has the same"),
        (
            cluster(&[(2, "b", 7579, 7679), (3, "c", 7779, 7879)]),
            "this member (node.member_id = 1) among them",
        ),
        (cluster(&[(1, "a", 7379, 7479), (0, "b", 7579, 7679)]), "cluster.members[1].id = 0"),
        (cluster(&[(1, "a", 7379, 0), (2, "b", 7579, 7679)]), "cluster.members[0].peer_address"),
        (cluster(&[(1, "x", 7379, 7479), (2, "b", 7579, 7679)]), "node.name = \"a\""),
        (cluster(&[(1, "a", 7379, 7480), (2, "b", 7579, 7679)]), "node.peer_address = \"127.0.0.1:7479\""),
    ];
    let cases = cases.iter().map(|(text, expected)| (text.to_string(), *expected)).chain(cluster_cases);
    for (text, expected) in cases {
        let error = parse(&text).expect_err(&text);
        let message = error.to_string();
        assert!(message.contains(expected), "{text:?} gave {message:?}, which does not mention {expected:?}");
        assert!(message.contains("in test.toml"), "{message}");
    }
}

#[test]
fn relative_paths_are_the_config_files_directory() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("node1.toml");
    std::fs::write(
        &path,
        "[node]\ndata_dir = \"./nvkv-data/node1\"\n[namespace]\npath = \"/dev/nvme0n1\"\n\
         [tls]\nclient_cert_file = \"tls/node.pem\"\nclient_key_file = \"tls/node-key.pem\"\n",
    )
    .expect("write the config");
    let config = Config::load(Some(&path)).expect("loads");
    assert_eq!(config.node.data_dir, directory.path().join("nvkv-data/node1"));
    assert_eq!(config.namespace.path, PathBuf::from("/dev/nvme0n1"), "absolute paths stay");
    assert_eq!(config.tls.client_cert_file, Some(directory.path().join("tls/node.pem")));
    assert_eq!(config.tls.client_key_file, Some(directory.path().join("tls/node-key.pem")));
    assert_eq!(config.tls.client_ca_file, None);
    // Without a config file, the defaults stay relative to where nvkv runs.
    assert_eq!(Config::load(None).expect("defaults").node.data_dir, PathBuf::from("./nvkv-data"));
}

#[test]
fn a_missing_file_is_named() {
    let error = Config::load(Some(Path::new("/nonexistent/nvkv.toml"))).expect_err("no such file");
    assert!(error.to_string().contains("/nonexistent/nvkv.toml"), "{error}");
}

#[test]
fn tls_keys_go_together_and_plaintext_stays_on_loopback() {
    let members = "[[cluster.members]]\nid = 1\nname = \"default\"\nclient_address = \"10.0.0.1:7379\"\n\
                   peer_address = \"10.0.0.1:7479\"\n[[cluster.members]]\nid = 2\nname = \"b\"\n\
                   client_address = \"10.0.0.2:7379\"\npeer_address = \"10.0.0.2:7479\"\n";
    let node = "[node]\nclient_address = \"10.0.0.1:7379\"\npeer_address = \"10.0.0.1:7479\"\n";
    let client_tls = "client_cert_file = \"c.pem\"\nclient_key_file = \"k.pem\"\n";
    let peer_tls = "peer_cert_file = \"p.pem\"\npeer_key_file = \"pk.pem\"\npeer_ca_file = \"ca.pem\"\n";
    let cases = [
        (node.to_string(), "node.client_address = \"10.0.0.1:7379\""),
        (format!("{node}[tls]\n{client_tls}[cluster]\n{members}"), "node.peer_address = \"10.0.0.1:7479\""),
        ("[tls]\nclient_cert_file = \"c.pem\"\n".to_string(), "tls.client_key_file = unset"),
        ("[tls]\nclient_key_file = \"k.pem\"\n".to_string(), "tls.client_cert_file = unset"),
        ("[tls]\nclient_ca_file = \"ca.pem\"\n".to_string(), "client certificates are checked only"),
        (
            "[tls]\npeer_cert_file = \"p.pem\"\npeer_key_file = \"pk.pem\"\n".to_string(),
            "tls.peer_ca_file = unset",
        ),
        ("[tls]\npeer_ca_file = \"\"\n".to_string(), "tls.peer_ca_file = \"\""),
    ];
    for (text, expected) in cases {
        let message = parse(&text).expect_err(&text).to_string();
        assert!(message.contains(expected), "{text:?} gave {message:?}, not {expected:?}");
    }
    let message = parse(node).expect_err("plaintext on 10.0.0.1").to_string();
    assert!(message.contains("tls.insecure = true"), "the refusal names the setting: {message}");

    let insecure = parse(&format!("{node}[tls]\ninsecure = true\n[cluster]\n{members}")).expect("insecure");
    assert_eq!(
        insecure.insecure_addresses(),
        ["clients on 10.0.0.1:7379 (node.client_address)", "peers on 10.0.0.1:7479 (node.peer_address)"]
    );
    let secured = parse(&format!("{node}[tls]\n{client_tls}{peer_tls}[cluster]\n{members}")).expect("TLS");
    assert!(secured.insecure_addresses().is_empty());
    assert!(Config::default().insecure_addresses().is_empty(), "loopback plaintext is the quiet default");
}
