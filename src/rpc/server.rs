//! The client port of a node. Shard 0 accepts connections and deals them to
//! the shards in turn through their mailboxes; each connection then runs
//! its Cap'n Proto RPC system on the reactor thread it landed on.
//!
//! Every connection is first admitted under `[limits]` (`reactor::admission`:
//! connections in total and per source, the first-message deadline, the
//! idle timeout). With `[tls]` client keys set, every connection (on the
//! main port and the shards' own) then completes a TLS handshake on the
//! shard that serves it, within `reactor::admission::HANDSHAKE_TIMEOUT`; a failed one
//! closes that connection alone.
//!
//! A connection that sends garbage, too large or too deeply nested a
//! message is closed alone; the node and other connections go on. This
//! module must never block a reactor thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use capnp_rpc::{rpc_twoparty_capnp, RpcSystem};
use tokio::io::AsyncReadExt;

use crate::nvkv_capnp::node;
use crate::reactor::ReactorContext;
use crate::shard;
use crate::shard::auth::Caller;

/// What a node says of itself in its status; the same on every shard.
pub struct NodeInfo {
    pub member_id: u64,
    /// This member's name (`node.name`).
    pub name: String,
    pub version: String,
    pub namespace: String,
    pub backend: String,
    pub durability: String,
    pub client_address: SocketAddr,
    /// Where each shard takes connections of its own, in shard order.
    pub shard_endpoints: Vec<SocketAddr>,
    pub groups: u32,
    pub partition_depth: u32,
    pub started: Instant,
    /// What one client request may carry (`[store]` of the config).
    pub limits: crate::kv::limits::Limits,
    pub watch: super::watch::WatchSettings,
    /// The client ports' TLS (`[tls]` client keys); `None`: plaintext.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The client connections the node holds (all its client ports).
    pub admission: Arc<crate::reactor::admission::Admission>,
}

/// Starts accepting on `listener` from the calling reactor. With `deal`,
/// connections go to the shards in turn (the node's main port, on shard
/// 0); without, they stay on this shard (its own port).
pub fn spawn_acceptor(
    context: &ReactorContext,
    listener: std::net::TcpListener,
    info: Arc<NodeInfo>,
    deal: bool,
) -> std::io::Result<()> {
    let admission = info.admission.clone();
    let serve = move |context: &ReactorContext, stream, peer, admitted| {
        serve_connection(context, stream, peer, info.clone(), admitted)
    };
    crate::reactor::admission::spawn_accept_loop(context, listener, admission, "a client", deal, serve)
}

/// Runs one client connection on this reactor until it closes: the TLS
/// handshake first when the client port speaks TLS (on its own task, so
/// the acceptor never waits for it).
pub fn serve_connection(
    context: &ReactorContext,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    info: Arc<NodeInfo>,
    admitted: crate::reactor::admission::Admitted,
) {
    let _ = stream.set_nodelay(true);
    let context = context.clone();
    tokio::task::spawn_local(async move {
        let shard = context.shard();
        let options = super::server_reader_options(info.limits.request_bytes_max);
        let limits = *info.admission.limits();
        // Not idle while it holds a watch, however quiet the watch is.
        let watches: std::rc::Rc<super::watch::ConnectionWatches> = Default::default();
        let held = std::rc::Rc::clone(&watches);
        let busy: crate::reactor::admission::Busy = std::rc::Rc::new(move || held.open() > 0);
        let Some(acceptor) = info.tls.clone() else {
            // A KV stream says so in its first 8 bytes; anything else is an
            // RPC connection, which gets its bytes untouched. Either must
            // say something within the first-message deadline.
            let first_message = std::time::Duration::from_millis(limits.handshake_timeout_ms);
            match tokio::time::timeout(first_message, opens_kv_stream(&stream)).await {
                Ok(Ok(true)) => {
                    let (reader, writer) = stream.into_split();
                    let mut reader = crate::reactor::admission::Guarded::new(reader, admitted);
                    let mut opening = [0u8; 8];
                    if let Err(error) = reader.read_exact(&mut opening).await {
                        tracing::info!(%peer, shard, "a KV stream failed at its opening: {error}");
                        return;
                    }
                    // Anonymous unless a session says otherwise: refused once
                    // users are checked.
                    spawn_kv_stream(&context, reader, writer, opening, Caller::Anonymous, &info, peer);
                }
                Ok(Ok(false)) => {
                    let mut stream = crate::reactor::admission::Guarded::new(stream, admitted);
                    stream.set_busy(busy);
                    let network =
                        super::buffered_stream_network(stream, rpc_twoparty_capnp::Side::Server, options);
                    run_connection(&context, network, peer, info, Caller::Anonymous, watches);
                }
                Ok(Err(error)) => {
                    tracing::debug!(%peer, shard, "a client connection failed at once: {error}")
                }
                Err(_) => tracing::debug!(
                    %peer,
                    shard,
                    "a client connection sent nothing within {first_message:?} (limits.handshake_timeout_ms)"
                ),
            }
            return;
        };
        let mut stream = crate::reactor::admission::Guarded::new(stream, admitted);
        stream.set_busy(busy);
        let stream = match crate::reactor::admission::accept_tls(&acceptor, stream).await {
            Ok(stream) => stream,
            Err(reason) => {
                tracing::info!(%peer, shard, "client TLS handshake failed: {reason}");
                return;
            }
        };
        let caller = super::tls::certificate_caller(stream.get_ref().1);
        let (mut reader, writer) = tokio::io::split(stream);
        let mut opening = [0u8; 8];
        if let Err(error) = reader.read_exact(&mut opening).await {
            tracing::debug!(%peer, shard, "a TLS client connection closed before its first bytes: {error}");
            return;
        }
        if super::kv_stream::Opening::of(&opening).is_some() {
            // Acting for the certificate's user, if any, unless a session
            // says otherwise.
            spawn_kv_stream(&context, reader, writer, opening, caller, &info, peer);
            return;
        }
        // An RPC connection: its first bytes go back in front.
        let reader = std::io::Cursor::new(opening).chain(reader);
        let network =
            super::buffered_halves_network(reader, writer, rpc_twoparty_capnp::Side::Server, options);
        run_connection(&context, network, peer, info, caller, watches);
    });
}

/// Whether a plain connection opens with the KV stream's bytes, read
/// without taking them from the stream. A connection that sends fewer
/// than 8 bytes and waits is polled until it says more or closes.
async fn opens_kv_stream(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 8];
    loop {
        let peeked = stream.peek(&mut first).await?;
        if peeked == 0 || !super::kv_stream::Opening::may_start(&first[..peeked]) {
            return Ok(false);
        }
        if peeked == first.len() {
            return Ok(true);
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Serves a KV stream that opened with `opening`, once the shard's groups
/// run, acting for `caller` (the connection's certificate user, or nobody)
/// unless its session names another.
fn spawn_kv_stream<R, W>(
    context: &ReactorContext,
    reader: R,
    writer: W,
    opening: [u8; 8],
    caller: Caller,
    info: &NodeInfo,
    peer: SocketAddr,
) where
    R: tokio::io::AsyncRead + Unpin + 'static,
    W: tokio::io::AsyncWrite + Unpin + 'static,
{
    let shard = context.shard();
    let Some(opening) = super::kv_stream::Opening::of(&opening) else { return };
    let Some(requests) = shard::requests::local_requests(context) else {
        tracing::info!(%peer, shard, "a KV stream came before the groups started");
        return;
    };
    let spawn = super::kv_stream::Spawn {
        opening,
        requests: requests.with_caller(caller),
        limits: info.limits,
        open_deadline: std::time::Duration::from_millis(info.admission.limits().handshake_timeout_ms),
        calls_in_flight_max: info.admission.limits().calls_in_flight_per_connection_max as usize,
        peer,
        shard,
    };
    super::kv_stream::spawn(reader, writer, spawn);
}

fn run_connection<R>(
    context: &ReactorContext,
    network: capnp_rpc::twoparty::VatNetwork<R>,
    peer: SocketAddr,
    info: Arc<NodeInfo>,
    caller: Caller,
    watches: std::rc::Rc<super::watch::ConnectionWatches>,
) where
    R: futures::AsyncRead + Unpin + 'static,
{
    let calls =
        super::kv::CallsInFlight::new(info.admission.limits().calls_in_flight_per_connection_max as usize);
    let server = NodeServer { context: context.clone(), info, watches, caller, calls };
    let client: node::Client = capnp_rpc::new_client(server);
    let system = RpcSystem::new(Box::new(network), Some(client.client));
    super::spawn_connection(system, "client", peer, context.shard());
}

struct NodeServer {
    context: ReactorContext,
    info: Arc<NodeInfo>,
    /// The watches this connection holds, however many Watch capabilities it asked for.
    watches: std::rc::Rc<super::watch::ConnectionWatches>,
    /// Who this Node's calls act for: the connection's certificate user,
    /// or the user of the session it was made for.
    caller: Caller,
    /// The KV calls the connection has in flight.
    calls: super::kv::CallsInFlight,
}

impl NodeServer {
    /// The request handle of this connection's shard, once its groups run,
    /// acting for this Node's caller.
    fn requests(&self) -> Result<shard::requests::Requests, capnp::Error> {
        let requests = shard::requests::local_requests(&self.context).ok_or_else(|| {
            capnp::Error::overloaded(format!("shard {} is still starting its groups", self.context.shard()))
        })?;
        Ok(requests.with_caller(self.caller.clone()))
    }
}

impl node::Server for NodeServer {
    async fn partition_map(
        self: capnp::capability::Rc<Self>,
        _: node::PartitionMapParams,
        mut results: node::PartitionMapResults,
    ) -> Result<(), capnp::Error> {
        let mut map = results.get().init_map();
        map.set_member(self.info.member_id);
        map.set_groups(self.info.groups);
        map.set_partition_depth(self.info.partition_depth);
        map.set_shards(self.info.shard_endpoints.len() as u32);
        let mut endpoints = map.reborrow().init_shard_endpoints(self.info.shard_endpoints.len() as u32);
        for (position, endpoint) in self.info.shard_endpoints.iter().enumerate() {
            endpoints.set(position as u32, endpoint.to_string());
        }
        let mut leaders: Vec<_> =
            super::cluster::on_every_shard(&self.context, |_| shard::registry::local_group_leaders())
                .await?
                .into_iter()
                .flatten()
                .collect();
        leaders.sort_by_key(|(group, ..)| *group);
        let mut list = map.init_leaders(leaders.len() as u32);
        for (position, (_, leader, term, address)) in leaders.iter().enumerate() {
            let mut out = list.reborrow().get(position as u32);
            out.set_member(leader.unwrap_or(0));
            out.set_term(*term);
            out.set_client_address(address);
        }
        Ok(())
    }

    async fn kv(
        self: capnp::capability::Rc<Self>,
        _: node::KvParams,
        mut results: node::KvResults,
    ) -> Result<(), capnp::Error> {
        let kv: crate::nvkv_capnp::k_v::Client = capnp_rpc::new_client(super::kv::KvServer::new(
            self.requests()?,
            self.info.limits,
            self.calls.clone(),
        ));
        results.get().set_kv(kv);
        Ok(())
    }

    async fn lease(
        self: capnp::capability::Rc<Self>,
        _: node::LeaseParams,
        mut results: node::LeaseResults,
    ) -> Result<(), capnp::Error> {
        let lease: crate::nvkv_capnp::lease::Client =
            capnp_rpc::new_client(super::lease::LeaseServer::new(self.requests()?));
        results.get().set_lease(lease);
        Ok(())
    }

    async fn watch(
        self: capnp::capability::Rc<Self>,
        _: node::WatchParams,
        mut results: node::WatchResults,
    ) -> Result<(), capnp::Error> {
        let server = super::watch::WatchServer::new(
            self.requests()?,
            self.info.watch,
            self.watches.clone(),
            self.info.limits,
        );
        results.get().set_watch(capnp_rpc::new_client(server));
        Ok(())
    }

    async fn status(
        self: capnp::capability::Rc<Self>,
        _: node::StatusParams,
        mut results: node::StatusResults,
    ) -> Result<(), capnp::Error> {
        let gathered = super::cluster::gather(&self.context).await?;
        super::cluster::set_node_status(results.get().init_status(), &self.info, &gathered);
        Ok(())
    }

    async fn cluster(
        self: capnp::capability::Rc<Self>,
        _: node::ClusterParams,
        mut results: node::ClusterResults,
    ) -> Result<(), capnp::Error> {
        let server = super::cluster::ClusterServer {
            context: self.context.clone(),
            info: self.info.clone(),
            caller: self.caller.clone(),
        };
        results.get().set_cluster(capnp_rpc::new_client(server));
        Ok(())
    }

    async fn maintenance(
        self: capnp::capability::Rc<Self>,
        _: node::MaintenanceParams,
        mut results: node::MaintenanceResults,
    ) -> Result<(), capnp::Error> {
        let requests = self.requests()?;
        let server = super::cluster::MaintenanceServer {
            context: self.context.clone(),
            info: self.info.clone(),
            requests,
        };
        results.get().set_maintenance(capnp_rpc::new_client(server));
        Ok(())
    }

    async fn authenticate(
        self: capnp::capability::Rc<Self>,
        params: node::AuthenticateParams,
        mut results: node::AuthenticateResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let (name, password) = (params.get_name()?.to_str()?, params.get_password()?.to_str()?);
        let answer = self.requests()?.authenticate(name, password).await;
        let mut result = results.get().init_result();
        match answer {
            Ok(token) => result.set_token(&token),
            Err(error) => super::kv::set_error(result.init_error(), &super::kv::server_error(&error)),
        }
        Ok(())
    }

    async fn session(
        self: capnp::capability::Rc<Self>,
        params: node::SessionParams,
        mut results: node::SessionResults,
    ) -> Result<(), capnp::Error> {
        let token = params.get()?.get_token()?.to_str()?;
        let mut result = results.get().init_result();
        match self.requests()?.session(token) {
            Ok(caller) => {
                let server = NodeServer {
                    context: self.context.clone(),
                    info: self.info.clone(),
                    watches: self.watches.clone(),
                    caller,
                    calls: self.calls.clone(),
                };
                result.set_node(capnp_rpc::new_client(server));
            }
            Err(error) => super::kv::set_error(result.init_error(), &super::kv::server_error(&error)),
        }
        Ok(())
    }

    async fn ping(
        self: capnp::capability::Rc<Self>,
        _: node::PingParams,
        mut results: node::PingResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_idle_timeout_ms(self.info.admission.limits().idle_timeout_ms);
        Ok(())
    }

    async fn auth(
        self: capnp::capability::Rc<Self>,
        _: node::AuthParams,
        mut results: node::AuthResults,
    ) -> Result<(), capnp::Error> {
        let server = super::auth::AuthServer::new(self.requests()?);
        results.get().set_auth(capnp_rpc::new_client(server));
        Ok(())
    }
}
