//! The node's start, ready report and clean stop, in process.

use std::path::Path;

use super::*;

fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::default();
    config.node.data_dir = data_dir.to_path_buf();
    config.namespace.namespace_bytes = 64 << 20;
    config.reactor.shards = 1;
    // Any free port: tests run side by side.
    config.node.client_address = "127.0.0.1:0".parse().expect("address");
    config.etcd.address = Some("127.0.0.1:0".parse().expect("address"));
    config
}

#[test]
fn a_node_starts_reports_and_stops() {
    let directory = tempfile::tempdir().expect("tempdir");
    let node = Node::start(test_config(directory.path())).expect("node starts");
    let line = node.ready_line();
    assert!(line.starts_with("nvkv ready: member 1, 1 shard on cores ["), "{line}");
    let etcd = node.etcd_address().expect("the etcd API is on by default");
    assert_ne!(etcd.port(), 0, "the ready line names the etcd API's bound port");
    let client = format!(", 67108864 bytes), durability fua, etcd {etcd}, client {}", node.client_address());
    assert!(line.ends_with(&client), "{line}");
    assert_ne!(node.client_address().port(), 0, "the ready line names the bound port");
    let lock = std::fs::read_to_string(directory.path().join("LOCK")).expect("LOCK exists");
    assert_eq!(lock.trim(), std::process::id().to_string(), "the LOCK file names its owner");
    node.stop().expect("node stops");
    let lock = std::fs::read_to_string(directory.path().join("LOCK")).expect("LOCK stays");
    assert!(lock.is_empty(), "a released LOCK names nobody: {lock:?}");
}

#[test]
fn shards_listen_above_the_client_port() {
    let client: std::net::SocketAddr = "127.0.0.1:7379".parse().expect("address");
    assert_eq!(shard_address(client, 0).expect("shard 0").port(), 7380);
    assert_eq!(shard_address(client, 1).expect("shard 1").port(), 7381);
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    assert_eq!(shard_address(any, 3).expect("any port").port(), 0);
    let top: std::net::SocketAddr = "127.0.0.1:65535".parse().expect("address");
    let error = shard_address(top, 0).expect_err("no port above 65535").to_string();
    assert!(error.contains("no port is left above it for shard 0"), "{error}");
}

#[test]
fn drivers_come_from_the_builder_one_per_shard() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut built = Vec::new();
    let node = Node::start_with(test_config(directory.path()), &mut |resources: ShardResources| {
        built.push((resources.shard, resources.core));
        log_driver_factory(resources)
    })
    .expect("node starts");
    let cores = node.reactors().cores();
    node.stop().expect("stops");
    assert_eq!(built, cores.iter().copied().enumerate().collect::<Vec<_>>());
}
