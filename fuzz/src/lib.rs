//! What the session fuzz targets share: one real node in the fuzzing
//! process, and one input written on a fresh connection to it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// How long the node may keep a half-closed connection open: a hang past
/// it fails the run. The node closes on the end of the input at once; the
/// bound is generous because a loaded CI machine runs the node beside the
/// fuzzer on two cores.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(20);

/// Starts a node (one shard, two groups, a 64 MiB namespace file in a temp
/// directory, durability off: nothing here must survive) with `extra`
/// appended to its config, and keeps it up until the process exits.
pub fn start_node(target: &str, node: &str, extra: &str) -> nvkv::node::Node {
    let data_dir = std::env::temp_dir().join(format!("nvkv-fuzz-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let text = format!(
        "[node]\ndata_dir = {data_dir:?}\n{node}\n\
         [reactor]\nshards = 1\n\
         [namespace]\nnamespace_bytes = \"64MiB\"\nqueue_depth = 32\nregistered_buffer_bytes = \"1MiB\"\n\
         [log]\ndurability = \"none\"\ngroups_per_shard = 2\n\
         [etcd]\naddress = \"\"\n{extra}"
    );
    let config = nvkv::config::Config::parse(&text, "the fuzz target's config").expect("the config parses");
    nvkv::node::Node::start(config).expect("the node starts")
}

/// The first of `count` consecutive ports that are all free right now,
/// below the kernel's ephemeral range (32768 and up): a port the kernel
/// hands out for outgoing connections (the node's own dials to an absent
/// member) could be taken between this check and the node's bind, and a
/// node binds its client port + 1 for its shard, so its ports must be a
/// block nothing else can fall into.
pub fn free_port_block(count: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    const LOW: u16 = 10_000;
    const HIGH: u16 = 32_000;
    for attempt in 0..1000u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(attempt);
        let base = LOW + (hasher.finish() % u64::from(HIGH - LOW - count)) as u16;
        let all: Vec<_> =
            (base..base + count).map(|port| std::net::TcpListener::bind(("127.0.0.1", port))).collect();
        if all.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no {count} consecutive free ports on 127.0.0.1 between {LOW} and {HIGH}");
}

/// Writes `bytes` on a new connection to `address`, half-closes it and
/// reads until the node closes it; panics if the node keeps it open past
/// [`CLOSE_WITHIN`].
pub fn send_session(address: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(address).expect("the node accepts");
    stream.set_read_timeout(Some(CLOSE_WITHIN)).expect("a read timeout");
    // The node may close early (a bad frame): then writing fails, which is fine.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = [0u8; 65536];
    loop {
        match stream.read(&mut answer) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(error)
                if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                panic!("the node kept a half-closed connection open for over {CLOSE_WITHIN:?}")
            }
            Err(error) => panic!("reading the node's answer failed: {error}"),
        }
    }
}

/// A real client's status call on `address`: the node still serves.
pub fn check_health(address: SocketAddr) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let status: Result<(), String> = runtime.block_on(tokio::task::LocalSet::new().run_until(async move {
        let connection = nvkv::rpc::client::Connection::open(&address.to_string())
            .await
            .map_err(|error| error.to_string())?;
        match tokio::time::timeout(CLOSE_WITHIN, connection.status()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {CLOSE_WITHIN:?}")),
        }
    }));
    if let Err(error) = status {
        panic!("the node stopped answering status after a fuzz input: {error}");
    }
}
