//! What the session fuzz targets share: one real node in the fuzzing
//! process, and one input written on a fresh connection to it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// How long the node may keep a half-closed connection open: a hang past
/// it fails the run. Past the node's first-message deadline
/// (`limits.handshake_timeout_ms`, 10 s), which closes a connection that
/// sent nothing.
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

/// `N` distinct ports nothing listens on right now. They are held open
/// together while picked: a port released after its own pick may be handed
/// out again by the next one, and two members' addresses would collide.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> =
        (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    std::array::from_fn(|at| listeners[at].local_addr().expect("its address").port())
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
