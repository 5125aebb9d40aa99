//! The client side of the peer transport ([`PeerClient`]): one link per
//! peer member, dialed lazily and redialed after a failure with a doubling
//! backoff, and the calls openraft and the shard make through it, each
//! bounded by its time to live.

use super::*;

/// Why a call to a peer got no answer.
pub(super) enum CallFailed {
    /// No session to the peer: the call never left this member.
    NotSent(String),
    /// The call was sent (and may have been acted on), but the link failed.
    Unreachable(String),
    Timeout(Duration),
}

pub(super) type Connecting = Shared<LocalBoxFuture<'static, Result<peer_session::Client, String>>>;

pub(super) enum LinkState {
    Connecting(Connecting),
    Up { session: peer_session::Client, connection: u64 },
    Down { retry_at: Instant, backoff: Duration, reason: String },
}

/// This shard's connection to the same shard of one peer member.
pub(super) struct Link {
    address: String,
    state: LinkState,
    /// The last TLS failure logged as a warning: an operator must see a
    /// certificate problem, once, not at every redial.
    tls_warned: Option<String>,
    /// Whether this link was ever up, and since when its dials fail.
    reached: bool,
    outage: Option<Instant>,
    /// Whether this outage was logged as a warning (once, then once more
    /// at INFO when the member is back).
    outage_warned: bool,
}

/// How long dials to a member that was never reached may fail before it
/// is a warning: the members of a new cluster start one after the other.
pub const PEER_UNREACHED_WARN_AFTER: Duration = Duration::from_secs(30);

impl Link {
    /// Says, once per outage, that a member is unreachable (at WARN: at
    /// once for a member that was reached before, after
    /// [`PEER_UNREACHED_WARN_AFTER`] for one never reached, which at the
    /// start of a cluster is only a member that has not started yet), and
    /// that it is back (at INFO). Every failed dial in between is at DEBUG.
    fn report_reachability(&mut self, target: &Member, shard: usize, failure: Option<&String>) {
        let now = Instant::now();
        match failure {
            None => {
                if let (true, Some(since)) = (self.outage_warned, self.outage) {
                    tracing::info!(
                        shard,
                        "{target} is reachable again, after {:.1} s",
                        now.duration_since(since).as_secs_f64()
                    );
                }
                self.reached = true;
                self.outage = None;
                self.outage_warned = false;
            }
            Some(reason) => {
                let since = *self.outage.get_or_insert(now);
                let overdue = now.duration_since(since) >= PEER_UNREACHED_WARN_AFTER;
                if !self.outage_warned && (self.reached || overdue) {
                    let how_long = if self.reached { "" } else { " since this member started" };
                    tracing::warn!(
                        shard,
                        "{reason}{how_long}; its groups go on without it while the other members keep a \
                         quorum, and this member keeps trying to reach it"
                    );
                    self.outage_warned = true;
                }
            }
        }
    }
}

pub(super) struct Links {
    shard: usize,
    identity: Arc<PeerIdentity>,
    links: RefCell<HashMap<NodeId, Link>>,
    /// Numbers connections, so a closed one only takes down its own link.
    connections: std::cell::Cell<u64>,
}

/// The client side of one shard's peer connections; clones share them.
#[derive(Clone)]
pub struct PeerClient {
    links: Rc<Links>,
}

impl PeerClient {
    /// The peer connections of `shard`. Must be made on its reactor thread.
    pub fn new(shard: usize, identity: Arc<PeerIdentity>) -> PeerClient {
        PeerClient {
            links: Rc::new(Links {
                shard,
                identity,
                links: RefCell::default(),
                connections: std::cell::Cell::new(0),
            }),
        }
    }

    /// The session with `target`: the open one, the one being opened, or a
    /// new one unless the last failure's backoff still runs.
    async fn session(&self, target: &Member) -> Result<peer_session::Client, String> {
        let connecting = {
            let mut links = self.links.links.borrow_mut();
            let link = links.entry(target.id).or_insert_with(|| Link {
                address: target.peer_address.clone(),
                state: LinkState::Down {
                    retry_at: Instant::now(),
                    backoff: Duration::ZERO,
                    reason: String::new(),
                },
                tls_warned: None,
                reached: false,
                outage: None,
                outage_warned: false,
            });
            if link.address != target.peer_address {
                link.address = target.peer_address.clone();
                link.state = LinkState::Down {
                    retry_at: Instant::now(),
                    backoff: Duration::ZERO,
                    reason: String::new(),
                };
            }
            match &link.state {
                LinkState::Up { session, .. } => return Ok(session.clone()),
                LinkState::Connecting(connecting) => connecting.clone(),
                LinkState::Down { retry_at, reason, .. } if Instant::now() < *retry_at => {
                    return Err(reason.clone())
                }
                LinkState::Down { backoff, .. } => {
                    let connecting = self.clone().connect(target.clone(), *backoff).boxed_local().shared();
                    link.state = LinkState::Connecting(connecting.clone());
                    connecting
                }
            }
        };
        connecting.await
    }

    /// Dials `target`, says hello and records the outcome in its link.
    async fn connect(self, target: Member, backoff: Duration) -> Result<peer_session::Client, String> {
        let connection = self.links.connections.get() + 1;
        self.links.connections.set(connection);
        let dialed = tokio::time::timeout(PEER_CONNECT_TIMEOUT, self.dial(&target, connection))
            .await
            .unwrap_or(Err(DialError::Timeout(PEER_CONNECT_TIMEOUT)));
        let tls = dialed.as_ref().is_err_and(DialError::is_tls);
        if matches!(dialed, Err(DialError::HelloRefused(_))) && self.links.identity.halt.is_blind() {
            tokio::task::spawn_local(ask_whether_wiped(self.links.identity.clone(), target.clone()));
        }
        let result =
            dialed.map_err(|error| format!("{target} (shard {}) is unreachable: {error}", self.links.shard));
        let mut links = self.links.links.borrow_mut();
        if let Some(link) = links.get_mut(&target.id) {
            link.report_reachability(&target, self.links.shard, result.as_ref().err());
            link.state = match &result {
                Ok(session) => {
                    link.tls_warned = None;
                    LinkState::Up { session: session.clone(), connection }
                }
                Err(reason) if tls && link.tls_warned.as_ref() != Some(reason) => {
                    tracing::warn!(shard = self.links.shard, "{reason}; retrying");
                    link.tls_warned = Some(reason.clone());
                    let backoff = (backoff * 2).clamp(PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
                    LinkState::Down { retry_at: Instant::now() + backoff, backoff, reason: reason.clone() }
                }
                Err(reason) => {
                    let backoff = (backoff * 2).clamp(PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
                    tracing::debug!(
                        shard = self.links.shard,
                        "{reason}; retrying in {} ms",
                        backoff.as_millis()
                    );
                    LinkState::Down { retry_at: Instant::now() + backoff, backoff, reason: reason.clone() }
                }
            };
        }
        result
    }

    async fn dial(&self, target: &Member, connection: u64) -> Result<peer_session::Client, DialError> {
        let shard = self.links.shard;
        let base: SocketAddr = target.peer_address.parse().map_err(|_| {
            DialError::Address(format!(
                "its peer address {:?} is no IP address and port",
                target.peer_address
            ))
        })?;
        let address = shard_peer_address(base, shard).map_err(DialError::Address)?;
        let (port, system, certificate) = open_port(address, &self.links.identity).await?;
        let links = Rc::downgrade(&self.links);
        let target_id = target.id;
        tokio::task::spawn_local(async move {
            let reason = match system.await {
                Ok(()) => "the connection closed".to_string(),
                Err(error) => format!("the connection failed: {error}"),
            };
            tracing::debug!(shard, member = target_id, "{reason}");
            // The next call redials at once.
            if let Some(links) = links.upgrade() {
                if let Some(link) = links.links.borrow_mut().get_mut(&target_id) {
                    if matches!(link.state, LinkState::Up { connection: up, .. } if up == connection) {
                        link.state =
                            LinkState::Down { retry_at: Instant::now(), backoff: Duration::ZERO, reason };
                    }
                }
            }
        });
        let mut request = port.hello_request();
        self.links.identity.write_hello(request.get().init_hello(), shard);
        let response = request.send().promise.await.map_err(|error| {
            // The one place the TLS layer's verdict reaches us as text:
            // rustls's alert, carried in capnp-rpc's disconnect reason.
            if error.extra.contains("received fatal alert") {
                DialError::CertificateRefused(error.extra)
            } else {
                DialError::HelloRefused(error.extra)
            }
        })?;
        let answer = response.get().map_err(|error| DialError::Answer(error.to_string()))?;
        let hello = answer.get_hello().map_err(|error| DialError::Answer(error.to_string()))?;
        // The member that answers at the address must be the one dialed,
        // and its certificate must name it.
        if hello.get_member_id() != target.id {
            return Err(DialError::WrongMember { answered: hello.get_member_id(), dialed: target.id });
        }
        self.links
            .identity
            .check_hello(hello, shard, certificate.as_ref())
            .map_err(|error| DialError::Answer(error.extra))?;
        answer.get_session().map_err(|error| DialError::Answer(error.to_string()))
    }

    /// Marks the link to `target` down after a failed call; the next call
    /// redials after the shortest backoff.
    fn failed(&self, target: &Member, reason: &str) {
        if let Some(link) = self.links.links.borrow_mut().get_mut(&target.id) {
            if matches!(link.state, LinkState::Up { .. }) {
                link.state = LinkState::Down {
                    retry_at: Instant::now() + PEER_BACKOFF_MIN,
                    backoff: PEER_BACKOFF_MIN,
                    reason: reason.to_string(),
                };
            }
        }
    }

    /// Sends one call to `target` with `send`, within `timeout`, and
    /// returns the answer's bytes.
    async fn call<T, F>(&self, target: &Member, timeout: Duration, send: F) -> Result<T, CallFailed>
    where
        F: FnOnce(peer_session::Client) -> LocalBoxFuture<'static, capnp::Result<T>>,
    {
        let exchange = async {
            let session = self.session(target).await.map_err(CallFailed::NotSent)?;
            send(session).await.map_err(|error| {
                let reason = format!("{target} (shard {}) failed the call: {error}", self.links.shard);
                if error.kind == capnp::ErrorKind::Disconnected {
                    self.failed(target, &reason);
                }
                CallFailed::Unreachable(reason)
            })
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(CallFailed::Timeout(timeout)))
    }

    /// One Raft call: sent, answered, and the answer mapped onto openraft's
    /// errors (a peer whose group stopped counts as unreachable).
    async fn raft_call<Response, E, F>(
        &self,
        action: RPCTypes,
        target: &Member,
        option: &RPCOption,
        send: F,
    ) -> Result<Response, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Response: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(peer_session::Client) -> LocalBoxFuture<'static, capnp::Result<Vec<u8>>>,
    {
        let timeout = option.hard_ttl();
        let bytes = self.call(target, timeout, send).await.map_err(|failed| match failed {
            CallFailed::NotSent(reason) | CallFailed::Unreachable(reason) => {
                RPCError::Unreachable(Unreachable::new(&PeerFailure(reason)))
            }
            CallFailed::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.links.identity.member_id,
                target: target.id,
                timeout,
            }),
        })?;
        let answer: Result<Response, RaftError<NodeId, E>> =
            postcard::from_bytes(&bytes).map_err(|error| {
                RPCError::Network(NetworkError::new(&PeerFailure(format!(
                    "{target} answered garbled: {error}"
                ))))
            })?;
        match answer {
            Ok(response) => Ok(response),
            Err(RaftError::Fatal(fatal)) => Err(RPCError::Unreachable(Unreachable::new(&PeerFailure(
                format!("{target}: its group stopped: {fatal}"),
            )))),
            Err(error) => {
                Err(RPCError::RemoteError(RemoteError::new_with_node(target.id, target.clone(), error)))
            }
        }
    }

    /// A forwarded request's answer, or the group error it becomes.
    async fn leader_call<T, F>(&self, group: GroupId, leader: &Member, send: F) -> Result<T, GroupError>
    where
        T: DeserializeOwned,
        F: FnOnce(peer_session::Client) -> LocalBoxFuture<'static, capnp::Result<Vec<u8>>>,
    {
        let timeout = self.links.identity.request_timeout;
        let unavailable = |reason: String| GroupError::Unavailable { group, member: leader.id, reason };
        let bytes = self.call(leader, timeout, send).await.map_err(|failed| match failed {
            CallFailed::NotSent(reason) => GroupError::NotSent { group, leader: leader.id, reason },
            CallFailed::Unreachable(reason) => unavailable(reason),
            CallFailed::Timeout(timeout) => {
                GroupError::Timeout { group, timeout_ms: timeout.as_millis() as u64 }
            }
        })?;
        postcard::from_bytes::<Result<T, GroupError>>(&bytes)
            .map_err(|error| unavailable(format!("{leader} answered garbled: {error}")))?
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct PeerFailure(String);

/// `future`'s outcome, or a timeout once `step` passed without it.
pub(super) async fn within<T>(
    step: Duration,
    future: impl std::future::Future<Output = capnp::Result<T>>,
) -> Result<capnp::Result<T>, CallFailed> {
    tokio::time::timeout(step, future).await.map_err(|_| CallFailed::Timeout(step))
}

impl PeerTransport for PeerClient {
    async fn append_entries(
        &self,
        group: GroupId,
        target: &Member,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendAnswer, RpcError> {
        let entries = request.entries.len() as u64;
        let bytes = encode(&request);
        if bytes.len() > APPEND_BYTES_TARGET && entries > 1 {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)));
        }
        // A member that does not say how long it took answers 0.
        let took = Rc::new(std::cell::Cell::new(0));
        let answer_nanos = took.clone();
        let response = self
            .raft_call(RPCTypes::AppendEntries, target, &option, move |session: peer_session::Client| {
                let mut call = session.append_entries_request();
                call.get().set_group(group);
                call.get().set_request(&bytes);
                Box::pin(async move {
                    let answer = call.send().promise.await?;
                    answer_nanos.set(answer.get()?.get_answer_nanos());
                    Ok(answer.get()?.get_response()?.to_vec())
                }) as LocalBoxFuture<'static, _>
            })
            .await?;
        let took = (took.get() > 0).then(|| Duration::from_nanos(took.get()));
        Ok(AppendAnswer { response, took })
    }

    async fn vote(
        &self,
        group: GroupId,
        target: &Member,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let bytes = encode(&request);
        let removed_at = Rc::new(std::cell::Cell::new(0));
        let proof = removed_at.clone();
        let answer = self
            .raft_call(RPCTypes::Vote, target, &option, move |session: peer_session::Client| {
                let mut call = session.vote_request();
                call.get().set_group(group);
                call.get().set_request(&bytes);
                Box::pin(async move {
                    let answer = call.send().promise.await?;
                    proof.set(answer.get()?.get_removed_at());
                    Ok(answer.get()?.get_response()?.to_vec())
                }) as LocalBoxFuture<'static, _>
            })
            .await;
        PeerRequests::removal_proven(group, removed_at.get(), target.id);
        answer
    }

    async fn full_snapshot(
        &self,
        group: GroupId,
        target: &Member,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotStreamError> {
        let stream = self.stream_snapshot(group, target, &vote, snapshot, option.hard_ttl());
        let failed = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            streamed = stream => match streamed {
                Ok(response) => return Ok(response),
                Err(failed) => failed,
            },
        };
        Err(match failed {
            CallFailed::NotSent(reason) | CallFailed::Unreachable(reason) => {
                StreamingError::Unreachable(Unreachable::new(&PeerFailure(reason)))
            }
            CallFailed::Timeout(timeout) => StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: self.links.identity.member_id,
                target: target.id,
                timeout,
            }),
        })
    }
}

impl PeerClient {
    /// Streams `snapshot` of `group` to `target`: a sink, the chunks as
    /// fast as flow control lets them go, then the finish that installs
    /// it. Each of those steps must progress within `step`.
    async fn stream_snapshot(
        &self,
        group: GroupId,
        target: &Member,
        vote: &Vote,
        snapshot: Snapshot,
        step: Duration,
    ) -> Result<SnapshotResponse<NodeId>, CallFailed> {
        let shard = self.links.shard;
        let session = self.session(target).await.map_err(CallFailed::NotSent)?;
        let failed = |error: capnp::Error| {
            let reason = format!("{target} (shard {shard}) failed a snapshot of group {group}: {error}");
            if error.kind == capnp::ErrorKind::Disconnected {
                self.failed(target, &reason);
            }
            CallFailed::Unreachable(reason)
        };
        let data = snapshot.snapshot.into_inner();
        let mut begin = session.install_snapshot_request();
        begin.get().set_group(group);
        begin.get().set_meta(&encode(&snapshot.meta));
        begin.get().set_bytes(data.len() as u64);
        let began = async { begin.send().promise.await?.get()?.get_sink() };
        let sink = within(step, began).await?.map_err(&failed)?;
        for (index, chunk) in data.chunks(SNAPSHOT_CHUNK_BYTES).enumerate() {
            let mut call = sink.chunk_request();
            call.get().set_offset((index * SNAPSHOT_CHUNK_BYTES) as u64);
            call.get().set_data(chunk);
            // Ready once the window has room again, not once this chunk
            // is answered.
            within(step, call.send()).await?.map_err(&failed)?;
        }
        let mut finish = sink.finish_request();
        finish.get().set_vote(&encode(vote));
        let finished = async { Ok(finish.send().promise.await?.get()?.get_response()?.to_vec()) };
        let bytes = within(step, finished).await?.map_err(&failed)?;
        postcard::from_bytes(&bytes).map_err(|error| {
            CallFailed::Unreachable(format!("{target} answered a snapshot garbled: {error}"))
        })
    }
}

impl LeaderLink for PeerClient {
    fn forward_write(
        &self,
        group: GroupId,
        leader: &Member,
        command: Vec<u8>,
    ) -> LocalBoxFuture<'static, Result<Vec<u8>, GroupError>> {
        let (client, leader) = (self.clone(), leader.clone());
        Box::pin(async move {
            client
                .leader_call(group, &leader, move |session: peer_session::Client| {
                    let mut call = session.forward_write_request();
                    call.get().set_group(group);
                    call.get().set_command(&command);
                    Box::pin(async move { Ok(call.send().promise.await?.get()?.get_outcome()?.to_vec()) })
                        as LocalBoxFuture<'static, _>
                })
                .await
        })
    }

    fn forward_writes(
        &self,
        leader: &Member,
        writes: Vec<(GroupId, Vec<u8>)>,
    ) -> LocalBoxFuture<'static, Vec<Result<Vec<u8>, GroupError>>> {
        let (client, leader) = (self.clone(), leader.clone());
        Box::pin(async move {
            let groups: Vec<GroupId> = writes.iter().map(|(group, _)| *group).collect();
            let timeout = client.links.identity.request_timeout;
            let sent: Result<Option<Vec<Vec<u8>>>, CallFailed> = client
                .call(&leader, timeout, |session: peer_session::Client| {
                    let mut call = session.forward_writes_request();
                    let mut list = call.get().init_writes(writes.len() as u32);
                    for (index, (group, command)) in writes.iter().enumerate() {
                        let mut write = list.reborrow().get(index as u32);
                        write.set_group(*group);
                        write.set_command(command);
                    }
                    Box::pin(async move {
                        let answer = match call.send().promise.await {
                            // A member from before batches: nothing was proposed.
                            Err(error) if error.kind == capnp::ErrorKind::Unimplemented => return Ok(None),
                            answer => answer?,
                        };
                        let outcomes = answer.get()?.get_outcomes()?;
                        let outcomes: capnp::Result<Vec<Vec<u8>>> =
                            outcomes.iter().map(|outcome| Ok(outcome?.to_vec())).collect();
                        Ok(Some(outcomes?))
                    }) as LocalBoxFuture<'static, _>
                })
                .await;
            let failed = |group: GroupId, failed: &CallFailed| match failed {
                CallFailed::NotSent(reason) => {
                    GroupError::NotSent { group, leader: leader.id, reason: reason.clone() }
                }
                CallFailed::Unreachable(reason) => {
                    GroupError::Unavailable { group, member: leader.id, reason: reason.clone() }
                }
                CallFailed::Timeout(timeout) => {
                    GroupError::Timeout { group, timeout_ms: timeout.as_millis() as u64 }
                }
            };
            match sent {
                Ok(Some(outcomes)) => {
                    let mut outcomes = outcomes.into_iter();
                    groups
                        .into_iter()
                        .map(|group| {
                            let unavailable =
                                |reason: String| GroupError::Unavailable { group, member: leader.id, reason };
                            let Some(bytes) = outcomes.next() else {
                                return Err(unavailable(format!("{leader} answered too few outcomes")));
                            };
                            postcard::from_bytes::<Result<Vec<u8>, GroupError>>(&bytes)
                                .map_err(|error| unavailable(format!("{leader} answered garbled: {error}")))?
                        })
                        .collect()
                }
                Ok(None) => {
                    let one_by_one: Vec<_> = writes
                        .into_iter()
                        .map(|(group, command)| client.forward_write(group, &leader, command))
                        .collect();
                    futures::future::join_all(one_by_one).await
                }
                Err(failure) => groups.into_iter().map(|group| Err(failed(group, &failure))).collect(),
            }
        })
    }

    fn read_index(
        &self,
        group: GroupId,
        leader: &Member,
    ) -> LocalBoxFuture<'static, Result<u64, GroupError>> {
        let (client, leader) = (self.clone(), leader.clone());
        Box::pin(async move {
            client
                .leader_call(group, &leader, move |session: peer_session::Client| {
                    let mut call = session.read_index_request();
                    call.get().set_group(group);
                    Box::pin(async move { Ok(call.send().promise.await?.get()?.get_index()?.to_vec()) })
                        as LocalBoxFuture<'static, _>
                })
                .await
        })
    }

    fn lease(
        &self,
        group: GroupId,
        leader: &Member,
        query: LeaseQuery,
    ) -> LocalBoxFuture<'static, Result<LeaseAnswer, GroupError>> {
        let (client, leader, query) = (self.clone(), leader.clone(), encode(&query));
        Box::pin(async move {
            client
                .leader_call(group, &leader, move |session: peer_session::Client| {
                    let mut call = session.lease_at_leader_request();
                    call.get().set_group(group);
                    call.get().set_query(&query);
                    Box::pin(async move { Ok(call.send().promise.await?.get()?.get_answer()?.to_vec()) })
                        as LocalBoxFuture<'static, _>
                })
                .await
        })
    }

    fn forward_membership(
        &self,
        group: GroupId,
        leader: &Member,
        change: MembershipChange,
    ) -> LocalBoxFuture<'static, Result<(), GroupError>> {
        let (client, leader, change) = (self.clone(), leader.clone(), encode(&change));
        Box::pin(async move {
            client
                .leader_call(group, &leader, move |session: peer_session::Client| {
                    let mut call = session.change_membership_request();
                    call.get().set_group(group);
                    call.get().set_change(&change);
                    Box::pin(async move { Ok(call.send().promise.await?.get()?.get_outcome()?.to_vec()) })
                        as LocalBoxFuture<'static, _>
                })
                .await
        })
    }
}

/// After `target` refused the hello of this member, which bootstrapped
/// blind: asks it (by introduction, whose answer is typed) whether it knows
/// this member by another namespace while it votes, and stops the member if
/// so (`crate::rpc::incarnation::halt_wiped`).
async fn ask_whether_wiped(identity: Arc<PeerIdentity>, target: Member) {
    let Ok(crate::rpc::incarnation::Introduction::Wiped { known }) =
        ask_introduction(&identity, &target).await
    else {
        return;
    };
    let refusal = crate::rpc::incarnation::StartRefusal::Wiped {
        member: identity.member_id,
        peer: target.id,
        known: crate::wal::superblock::hex(&known),
        now: crate::wal::superblock::hex(&identity.keeper.namespace_id()),
    };
    crate::rpc::incarnation::halt_wiped(&identity.keeper, &identity.halt, refusal);
}
