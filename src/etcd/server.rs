//! The etcd port: shard 0 accepts and deals connections to the shards in
//! turn; each shard serves the connections it got (their TLS handshakes
//! first, on the shard, bounded in time) with hyper's HTTP/2 server on its
//! LocalSet, routing calls to tonic's generated services, which are bound
//! to that shard's request handle; the hot KV calls take the direct unary
//! path (`etcd::unary`) beside them.
//!
//! This file must never block a reactor: a handshake runs on its own task,
//! and a shard that cannot take a connection drops it (the client
//! reconnects) rather than making the acceptor wait.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use super::SharedInfo;
use crate::reactor::admission::{Admitted, Guarded};
use crate::reactor::ReactorContext;
use crate::shard::auth::Caller;

/// How long a keep-alive ping (every `limits.idle_timeout_ms`) may go
/// unanswered before the connection is closed.
const KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Largest gRPC message the etcd port sends (etcd's default is 2 GiB less
/// one byte: a range answer is as large as it is).
pub(super) const RESPONSE_BYTES_MAX: usize = i32::MAX as usize;

/// One connection of the etcd port, plaintext or TLS.
pub enum EtcdStream {
    Plain(Guarded<TcpStream>),
    Tls(Box<tokio_rustls::server::TlsStream<Guarded<TcpStream>>>),
}

impl AsyncRead for EtcdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            EtcdStream::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            EtcdStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for EtcdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            EtcdStream::Plain(stream) => Pin::new(stream).poll_write(context, bytes),
            EtcdStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, bytes),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            EtcdStream::Plain(stream) => Pin::new(stream).poll_flush(context),
            EtcdStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            EtcdStream::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            EtcdStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            EtcdStream::Plain(stream) => Pin::new(stream).poll_write_vectored(context, buffers),
            EtcdStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(context, buffers),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            EtcdStream::Plain(stream) => stream.is_write_vectored(),
            EtcdStream::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

/// A shard's etcd services: tonic's, and the shard the direct unary path
/// (`etcd::unary`) serves its calls on.
#[derive(Clone)]
struct Services {
    tonic: tonic::service::Routes,
    shard: super::kv::ShardLocal,
}

thread_local! {
    /// This shard's etcd services, made on its first connection.
    static SERVICES: RefCell<Option<Services>> = const { RefCell::new(None) };
}

/// Starts accepting etcd clients on `listener` from shard 0's reactor.
pub fn spawn_acceptor(
    context: &ReactorContext,
    listener: std::net::TcpListener,
    info: SharedInfo,
) -> std::io::Result<()> {
    let admission = info.admission.clone();
    let serve = move |context: &ReactorContext, stream, peer, admitted| {
        serve_connection(context, stream, peer, info.clone(), admitted)
    };
    crate::reactor::admission::spawn_accept_loop(context, listener, admission, "an etcd client", true, serve)
}

/// Serves one connection on this shard: its TLS handshake first when the
/// port speaks TLS, then this shard's server takes it.
fn serve_connection(
    context: &ReactorContext,
    stream: TcpStream,
    peer: SocketAddr,
    info: SharedInfo,
    admitted: Admitted,
) {
    let _ = stream.set_nodelay(true);
    // Idle connections are found by HTTP/2 keep-alive pings instead (a
    // quiet watch stream is not idle).
    let mut stream = Guarded::new(stream, admitted);
    stream.set_busy(std::rc::Rc::new(|| true));
    let limits = info.admission.limits();
    let limits =
        (std::time::Duration::from_millis(limits.idle_timeout_ms), limits.calls_in_flight_per_connection_max);
    let services = shard_services(context, &info);
    let Some(acceptor) = info.tls.clone() else {
        hand_over(&services, EtcdStream::Plain(stream), peer, Caller::Anonymous, limits);
        return;
    };
    let shard = context.shard();
    tokio::task::spawn_local(async move {
        match crate::reactor::admission::accept_tls(&acceptor, stream).await {
            Ok(stream) => {
                let caller = certificate_caller(stream.get_ref().1);
                hand_over(&services, EtcdStream::Tls(Box::new(stream)), peer, caller, limits)
            }
            Err(reason) => tracing::info!(%peer, shard, "etcd client TLS handshake failed: {reason}"),
        }
    });
}

/// Who an etcd port's TLS connection is: the user its client certificate's
/// common name names (etcd's `--client-cert-auth`), or nobody.
fn certificate_caller(connection: &rustls::ServerConnection) -> Caller {
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::shard::credentials::certificate_user(leaf.as_ref()))
        .map_or(Caller::Anonymous, |name| Caller::user(&name))
}

/// Runs hyper's HTTP/2 server connection over `stream` on this reactor:
/// the connection, and every stream of it (hyper spawns one task per
/// stream through the executor), as local tasks. Every call of the
/// connection carries `caller` (its certificate's user) to the services,
/// which a token in the call's metadata overrides. The connection is pinged
/// every `keep_alive` and holds at most `calls_in_flight_max` streams.
fn hand_over(
    services: &Services,
    stream: EtcdStream,
    peer: SocketAddr,
    caller: Caller,
    (keep_alive, calls_in_flight_max): (std::time::Duration, u32),
) {
    let routes = hyper_util::service::TowerToHyperService::new(services.tonic.clone());
    let both = std::rc::Rc::new((routes, services.shard.clone()));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(caller.clone());
        let both = both.clone();
        async move {
            let (routes, shard) = &*both;
            let Some(call) = super::unary::Call::of(&request) else {
                return hyper::service::Service::call(routes, request).await;
            };
            match super::unary::serve(call, shard, request).await {
                super::unary::Served::Answered(response) => Ok(response),
                super::unary::Served::ToTonic(request) => {
                    hyper::service::Service::call(routes, request).await
                }
            }
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(LocalExecutor);
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(Some(calls_in_flight_max))
        // No `date` header on every answer: gRPC clients ignore it, and
        // encoding it (HPACK) was a share of every call's work; etcd sends
        // none either.
        .auto_date_header(false)
        .keep_alive_interval(keep_alive)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::task::spawn_local(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "an etcd client connection ended on an error");
        }
    });
}

/// Spawns hyper's per-stream tasks on this reactor's LocalSet, where the
/// shard's request handle may be used.
#[derive(Clone, Copy)]
struct LocalExecutor;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExecutor {
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// This shard's services, made on first use.
fn shard_services(context: &ReactorContext, info: &SharedInfo) -> Services {
    if let Some(services) = SERVICES.with(|services| services.borrow().clone()) {
        return services;
    }
    let shard = super::kv::ShardLocal::new(context.clone(), info.clone());
    let request_bytes_max = info.limits.request_bytes_max + super::convert::REQUEST_HEADROOM_BYTES;
    macro_rules! bounded {
        ($server:expr) => {
            $server.max_decoding_message_size(request_bytes_max).max_encoding_message_size(RESPONSE_BYTES_MAX)
        };
    }
    let tonic = tonic::service::Routes::new(bounded!(KvServer::new(super::kv::EtcdKv::new(shard.clone()))))
        .add_service(bounded!(WatchServer::new(super::watch::EtcdWatch::new(shard.clone()))))
        .add_service(bounded!(LeaseServer::new(super::lease::EtcdLease::new(shard.clone()))))
        .add_service(bounded!(ClusterServer::new(super::cluster::EtcdCluster::new(shard.clone()))))
        .add_service(bounded!(MaintenanceServer::new(super::cluster::EtcdMaintenance::new(shard.clone()))))
        .add_service(bounded!(AuthServer::new(super::auth::EtcdAuth::new(shard.clone()))))
        .prepare();
    let services = Services { tonic, shard };
    SERVICES.with(|slot| *slot.borrow_mut() = Some(services.clone()));
    services
}
