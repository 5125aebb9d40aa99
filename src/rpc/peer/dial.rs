//! Dialing a peer's shard: the connection (TLS when configured), why a dial
//! fails ([`DialError`]), and the introduction a member that knows no
//! cluster yet asks its peers for before it starts.

use super::*;

/// Why dialing a peer's shard and saying hello failed. The link keeps the
/// message; what it branches on (a TLS problem is a warning, once) is the
/// kind.
#[derive(Clone, Debug, thiserror::Error)]
pub(super) enum DialError {
    /// The member's peer address names no port for this shard, or no IP.
    #[error("{0}")]
    Address(String),
    #[error("{address}: {reason}")]
    Connect { address: SocketAddr, reason: String },
    #[error("TLS handshake with {address} failed: {reason}")]
    TlsHandshake { address: SocketAddr, reason: String },
    /// TLS 1.3: the other end checks this member's certificate after the
    /// handshake, and says no to the hello.
    #[error(
        "TLS: it refused this member's certificate ({0}); check that tls.peer_cert_file is signed by the CA \
         in its tls.peer_ca_file"
    )]
    CertificateRefused(String),
    #[error("it refused the hello: {0}")]
    HelloRefused(String),
    #[error("member {answered} answers at its peer address, not member {dialed}; check cluster.members")]
    WrongMember { answered: NodeId, dialed: NodeId },
    /// The answer could not be read, or the member it names may not talk
    /// to this one (its hello or its certificate).
    #[error("{0}")]
    Answer(String),
    #[error("no hello within {} ms", .0.as_millis())]
    Timeout(Duration),
}

impl DialError {
    /// Whether the failure is TLS's: the certificates or their CAs.
    pub(super) fn is_tls(&self) -> bool {
        matches!(self, DialError::TlsHandshake { .. } | DialError::CertificateRefused(_))
    }
}

/// Connects to the peer port at `address` (over TLS when the identity has
/// it) and returns its bootstrap capability and the RPC system that must run
/// for it to answer.
pub(super) async fn open_port(
    address: SocketAddr,
    identity: &PeerIdentity,
) -> Result<(peer_port::Client, RpcSystem<rpc_twoparty_capnp::Side>, Option<PeerCertificate>), DialError> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|error| DialError::Connect { address, reason: error.to_string() })?;
    let mut certificate = None;
    let mut system = match &identity.tls {
        None => {
            let mut network =
                crate::rpc::buffered_network(stream, rpc_twoparty_capnp::Side::Client, peer_reader_options());
            // This end streams snapshots; the window bounds each stream.
            network.set_window_size(SNAPSHOT_WINDOW_BYTES);
            RpcSystem::new(Box::new(network), None)
        }
        Some(tls) => {
            let _ = stream.set_nodelay(true);
            // Peers verify each other against the peer address they dial.
            let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
            let stream = crate::rpc::tls::connect(&tls.connector, name, stream)
                .await
                .map_err(|reason| DialError::TlsHandshake { address, reason: reason.to_string() })?;
            certificate = PeerCertificate::of(stream.get_ref().1);
            let mut network = crate::rpc::buffered_stream_network(
                stream,
                rpc_twoparty_capnp::Side::Client,
                peer_reader_options(),
            );
            network.set_window_size(SNAPSHOT_WINDOW_BYTES);
            RpcSystem::new(Box::new(network), None)
        }
    };
    let port: peer_port::Client = system.bootstrap(rpc_twoparty_capnp::Side::Server);
    Ok((port, system, certificate))
}

/// Asks every member of `peers` (shard 0 of each, at once) to introduce
/// this member, which knows no cluster yet, before the reactors start. Each
/// answer, or why none came within [`crate::rpc::incarnation::INTRODUCE_TIMEOUT`].
/// It runs on a thread of its own: the caller may be inside a runtime.
pub fn introduce(
    identity: &PeerIdentity,
    peers: &[Member],
) -> Vec<(NodeId, Result<crate::rpc::incarnation::Introduction, String>)> {
    std::thread::scope(|scope| {
        scope.spawn(|| introduce_here(identity, peers)).join().unwrap_or_else(|_| {
            peers.iter().map(|peer| (peer.id, Err("asking it panicked".to_string()))).collect()
        })
    })
}

pub(super) fn introduce_here(
    identity: &PeerIdentity,
    peers: &[Member],
) -> Vec<(NodeId, Result<crate::rpc::incarnation::Introduction, String>)> {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            return peers
                .iter()
                .map(|peer| (peer.id, Err(format!("no runtime to ask it: {error}"))))
                .collect()
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let asks = peers.iter().map(|peer| async move { (peer.id, ask_introduction(identity, peer).await) });
        futures::future::join_all(asks).await
    })
}

/// Asks `peer` to introduce this member: what it knows of the cluster and of
/// this member's namespace, within
/// [`crate::rpc::incarnation::INTRODUCE_TIMEOUT`].
pub(super) async fn ask_introduction(
    identity: &PeerIdentity,
    peer: &Member,
) -> Result<crate::rpc::incarnation::Introduction, String> {
    let ask = async {
        let address = crate::rpc::incarnation::introduction_address(peer)?;
        let (port, system, certificate) =
            open_port(address, identity).await.map_err(|error| error.to_string())?;
        identity.check_certificate(peer.id, certificate.as_ref())?;
        let running = tokio::task::spawn_local(system);
        let mut request = port.introduce_request();
        identity.write_hello(request.get().init_hello(), 0);
        let answer = request.send().promise.await.map_err(|error| error.to_string())?;
        let introduction = answer
            .get()
            .and_then(|answer| crate::rpc::incarnation::read(answer.get_introduction()?))
            .map_err(|error| error.to_string());
        running.abort();
        introduction
    };
    tokio::time::timeout(crate::rpc::incarnation::INTRODUCE_TIMEOUT, ask)
        .await
        .unwrap_or_else(|_| Err("no answer in time".to_string()))
}
