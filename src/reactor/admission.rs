//! Which client connections a node takes, and for how long: at most
//! `limits.connections_max` at once on all its client ports (native and
//! etcd), at most `limits.connections_per_source_max` from one address; a
//! connection over either is closed as soon as it is accepted. An admitted
//! connection is read through [`Guarded`]: it must send its first bytes (its
//! TLS handshake or first message) within `limits.handshake_timeout_ms`,
//! and is closed once it has read and written nothing for
//! `limits.idle_timeout_ms` while it holds nothing open (a connection with
//! a watch may wait quietly for events).
//!
//! It also owns what every client port does before its protocol starts:
//! the accept loop ([`spawn_accept_loop`]: admit, then deal the connection
//! to a shard through its mailbox) and the TLS handshake, bounded by
//! [`HANDSHAKE_TIMEOUT`] ([`accept_tls`]). It must never block a reactor:
//! a shard that cannot take a connection drops it (the client reconnects).

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use super::ReactorContext;
use crate::config::LimitsConfig;

/// How long a TLS handshake may take, either way: a client that connects
/// and says nothing holds its connection no longer than this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` from the calling reactor for as long
/// as it runs. Each is admitted under `admission`'s limits (closed as it
/// arrives when over one), then served by `serve` on the shard it goes to:
/// with `deal`, the shards in turn (a node's main port, on shard 0);
/// without, this shard (a shard's own port). `port` names the port in log
/// lines ("a client", "an etcd client").
pub fn spawn_accept_loop<S>(
    context: &ReactorContext,
    listener: std::net::TcpListener,
    admission: Arc<Admission>,
    port: &'static str,
    deal: bool,
    serve: S,
) -> std::io::Result<()>
where
    S: Fn(&ReactorContext, TcpStream, SocketAddr, Admitted) + Clone + Send + 'static,
{
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let context = context.clone();
    tokio::task::spawn_local(async move {
        let next_shard = Cell::new(0usize);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: say so, keep going.
                    tracing::warn!(%error, "accepting {port} connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Over a limit: closed as it arrived (the refusal is logged).
            let Ok(admitted) = admission.admit(peer.ip()) else { continue };
            let shards = context.mailboxes().len();
            let target = if deal { next_shard.get() % shards } else { context.shard() };
            next_shard.set(next_shard.get().wrapping_add(1));
            if target == context.shard() {
                serve(&context, stream, peer, admitted);
                continue;
            }
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, %peer, "cannot hand {port} connection to shard {target}");
                    continue;
                }
            };
            let serve = serve.clone();
            let handed = context.mailbox(target).try_send(move |target_context: &ReactorContext| {
                match TcpStream::from_std(stream) {
                    Ok(stream) => serve(target_context, stream, peer, admitted),
                    Err(error) => tracing::warn!(%error, %peer, "cannot adopt {port} connection"),
                }
            });
            if let Err(refused) = handed {
                // The other shard is full or stopping: the connection is
                // dropped (the client reconnects) rather than blocking here.
                tracing::warn!(%peer, "shard {target} refused {port} connection: {}", refused.error);
            }
        }
    });
    Ok(())
}

/// Runs the server side of a TLS handshake on `stream`, within
/// [`HANDSHAKE_TIMEOUT`]; the error says what went wrong.
pub async fn accept_tls<S>(
    acceptor: &TlsAcceptor,
    stream: S,
) -> Result<tokio_rustls::server::TlsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Err(_) => Err(format!("no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs())),
        Ok(Err(error)) => Err(describe_handshake_error(&error)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// What went wrong in a TLS handshake, from rustls's error inside the I/O
/// error.
pub fn describe_handshake_error(error: &std::io::Error) -> String {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "the other end refused the handshake (alert {alert:?}): it does not trust this end's \
             certificate, or wanted one"
        ),
        Some(tls) => tls.to_string(),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the other end closed the connection (does it speak TLS on this port?)".to_string()
        }
        None => error.to_string(),
    }
}

/// Why a connection was closed as it arrived.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the node holds {connections_max} client connections already (limits.connections_max)")]
    Total { connections_max: usize },
    #[error(
        "{address} holds {per_source_max} client connections already (limits.connections_per_source_max); \
         close some, or raise the limit"
    )]
    PerSource { address: IpAddr, per_source_max: usize },
}

/// The connections a node holds, shared by its client ports on every shard.
#[derive(Debug)]
pub struct Admission {
    limits: LimitsConfig,
    /// Connections open per source address (sum: the total).
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// When a refusal was last logged (seconds since `started`): a flood
    /// of refusals logs one line a second.
    refusal_logged: AtomicU64,
    refused: AtomicU64,
    started: std::time::Instant,
}

impl Admission {
    pub fn new(limits: LimitsConfig) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            open: Mutex::new((0, HashMap::new())),
            refusal_logged: AtomicU64::new(u64::MAX),
            refused: AtomicU64::new(0),
            started: std::time::Instant::now(),
        })
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().map_or(0, |open| open.0)
    }

    /// Takes a connection from `source`, or says why not (and logs it, at
    /// most once a second).
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, Refusal> {
        let verdict = match self.open.lock() {
            Ok(mut open) => {
                let (total, per_source) = &mut *open;
                let from_source = per_source.get(&source).copied().unwrap_or(0);
                if *total >= self.limits.connections_max as usize {
                    Err(Refusal::Total { connections_max: self.limits.connections_max as usize })
                } else if from_source >= self.limits.connections_per_source_max as usize {
                    Err(Refusal::PerSource {
                        address: source,
                        per_source_max: self.limits.connections_per_source_max as usize,
                    })
                } else {
                    *total += 1;
                    per_source.insert(source, from_source + 1);
                    Ok(Admitted { admission: Arc::clone(self), source })
                }
            }
            // A thread panicked holding the lock: the node is going down.
            Err(_) => Err(Refusal::Total { connections_max: 0 }),
        };
        if let Err(refusal) = &verdict {
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            let now = self.started.elapsed().as_secs();
            if self.refusal_logged.swap(now, Ordering::Relaxed) != now {
                tracing::warn!("closed a client connection as it arrived: {refusal} ({refused} so far)");
            }
        }
        verdict
    }

    fn release(&self, source: IpAddr) {
        if let Ok(mut open) = self.open.lock() {
            let (total, per_source) = &mut *open;
            *total -= 1;
            if let Some(count) = per_source.get_mut(&source) {
                *count -= 1;
                if *count == 0 {
                    per_source.remove(&source);
                }
            }
        }
    }
}

/// One admitted connection's place, given back on drop.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.source);
    }
}

/// Whether a connection holds something open that may be quiet for long
/// (a watch), so it is not idle however long nothing moves.
pub type Busy = Rc<dyn Fn() -> bool>;

/// A client connection's byte stream, holding its admission, and closed
/// (an error from its reads) once it misses its first-message deadline or
/// idles past its limit.
pub struct Guarded<S> {
    inner: S,
    _admitted: Admitted,
    timer: Pin<Box<Sleep>>,
    /// Whether nothing was read yet: the timer runs the first-message deadline.
    first: bool,
    handshake: Duration,
    idle: Duration,
    last_activity: Instant,
    busy: Option<Busy>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, admitted: Admitted) -> Guarded<S> {
        let limits = *admitted.admission.limits();
        let handshake = Duration::from_millis(limits.handshake_timeout_ms);
        let now = Instant::now();
        Guarded {
            inner,
            timer: Box::pin(tokio::time::sleep_until(now + handshake)),
            _admitted: admitted,
            first: true,
            handshake,
            idle: Duration::from_millis(limits.idle_timeout_ms),
            last_activity: now,
            busy: None,
        }
    }

    /// Says, when the idle timer runs out, whether the connection still
    /// holds something open (and so is not idle).
    pub fn set_busy(&mut self, busy: Busy) {
        self.busy = Some(busy);
    }

    /// Counts a write done as activity (after the first message).
    fn wrote(&mut self, written: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if written.is_ready() && !self.first {
            self.last_activity = Instant::now();
        }
        written
    }

    fn active(&mut self) {
        self.first = false;
        self.last_activity = Instant::now();
    }

    /// Pending while the connection may wait; the error that closes it once not.
    fn expired(&mut self, context: &mut Context<'_>) -> Option<std::io::Error> {
        loop {
            if self.timer.as_mut().poll(context).is_pending() {
                return None;
            }
            if self.first {
                return Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no first message within {:?} (limits.handshake_timeout_ms)", self.handshake),
                ));
            }
            let until = self.last_activity + self.idle;
            if until > Instant::now() || self.busy.as_ref().is_some_and(|busy| busy()) {
                let next = until.max(Instant::now() + self.idle.min(Duration::from_secs(1)));
                self.timer.as_mut().reset(next);
                continue;
            }
            return Some(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("idle for {:?} (limits.idle_timeout_ms)", self.idle),
            ));
        }
    }
}

use std::future::Future;

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(context, buf) {
            Poll::Ready(result) => {
                this.active();
                Poll::Ready(result)
            }
            Poll::Pending => match this.expired(context) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(context, data);
        if written.is_ready() && !this.first {
            this.last_activity = Instant::now();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(context, buffers);
        this.wrote(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections_max: u32, connections_per_source_max: u32) -> LimitsConfig {
        LimitsConfig { connections_max, connections_per_source_max, ..LimitsConfig::default() }
    }

    #[test]
    fn connections_are_bounded_in_total_and_per_source_and_given_back_on_drop() {
        let admission = Admission::new(limits(3, 2));
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = admission.admit(one).expect("first");
        let _second = admission.admit(one).expect("second");
        let refusal = admission.admit(one).expect_err("a third from one source");
        assert_eq!(refusal, Refusal::PerSource { address: one, per_source_max: 2 });
        assert!(refusal.to_string().contains("limits.connections_per_source_max"), "{refusal}");
        let _third = admission.admit(two).expect("another source");
        let refusal = admission.admit(two).expect_err("over the total");
        assert_eq!(refusal, Refusal::Total { connections_max: 3 });
        drop(first);
        assert_eq!(admission.open(), 2);
        admission.admit(one).expect("room again once one closed");
    }

    fn run(test: impl Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build();
        tokio::task::LocalSet::new().block_on(&runtime.expect("runtime"), test);
    }

    #[test]
    fn a_silent_connection_is_closed_at_its_first_message_deadline_and_an_idle_one_after_its_idle_limit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        run(async {
            let limits =
                LimitsConfig { handshake_timeout_ms: 1000, idle_timeout_ms: 5000, ..LimitsConfig::default() };
            let admission = Admission::new(limits);
            let source: IpAddr = "10.0.0.1".parse().unwrap();

            let (_client, server) = tokio::io::duplex(64);
            let mut silent = Guarded::new(server, admission.admit(source).expect("admitted"));
            let started = Instant::now();
            let error = silent.read(&mut [0; 8]).await.expect_err("closed");
            assert!(error.to_string().contains("limits.handshake_timeout_ms"), "{error}");
            assert_eq!(started.elapsed().as_millis() / 100, 10, "at its deadline");
            drop(silent);
            assert_eq!(admission.open(), 0, "the place is given back");

            let (mut client, server) = tokio::io::duplex(64);
            let mut idle = Guarded::new(server, admission.admit(source).expect("admitted"));
            client.write_all(b"hello").await.unwrap();
            assert_eq!(idle.read(&mut [0; 8]).await.unwrap(), 5);
            let started = Instant::now();
            let error = idle.read(&mut [0; 8]).await.expect_err("closed");
            assert!(error.to_string().contains("limits.idle_timeout_ms"), "{error}");
            assert_eq!(started.elapsed().as_secs(), 5, "after its idle limit");

            let (mut client, server) = tokio::io::duplex(64);
            let mut busy = Guarded::new(server, admission.admit(source).expect("admitted"));
            let holds = Rc::new(std::cell::Cell::new(true));
            let held = Rc::clone(&holds);
            busy.set_busy(Rc::new(move || held.get()));
            client.write_all(b"hello").await.unwrap();
            assert_eq!(busy.read(&mut [0; 8]).await.unwrap(), 5);
            let quiet = tokio::time::timeout(Duration::from_secs(60), busy.read(&mut [0; 8])).await;
            assert!(quiet.is_err(), "a connection holding a watch is not idle");
            holds.set(false);
            let error = busy.read(&mut [0; 8]).await.expect_err("closed once it holds nothing");
            assert!(error.to_string().contains("limits.idle_timeout_ms"), "{error}");
        });
    }
}
