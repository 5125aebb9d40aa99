//! The server side of the peer transport: the acceptor of a shard's peer
//! port, the hello, and the calls a peer's shard makes (appends, votes,
//! snapshots streamed through a sink, forwarded writes, leases, read index),
//! each handed to the group it names on this shard.

use super::*;

/// Starts accepting peer connections on `listener` for the calling shard.
pub fn spawn_peer_acceptor(
    context: &ReactorContext,
    listener: std::net::TcpListener,
    identity: Arc<PeerIdentity>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let shard = context.shard();
    tokio::task::spawn_local(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, shard, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(tls) = identity.tls.clone() else {
                let port: peer_port::Client = capnp_rpc::new_client(PeerPortServer {
                    shard,
                    identity: identity.clone(),
                    certificate: None,
                });
                let network = crate::rpc::buffered_network(
                    stream,
                    rpc_twoparty_capnp::Side::Server,
                    peer_reader_options(),
                );
                run_peer_connection(network, port, peer, shard);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let identity = identity.clone();
            // The handshake runs on its own task: a stalled peer holds
            // only its connection, never the acceptor.
            tokio::task::spawn_local(async move {
                match crate::reactor::admission::accept_tls(&tls.acceptor, stream).await {
                    Ok(stream) => {
                        // What the certificate names is checked against the
                        // member its hello claims to be.
                        let certificate = PeerCertificate::of(stream.get_ref().1);
                        let port: peer_port::Client =
                            capnp_rpc::new_client(PeerPortServer { shard, identity, certificate });
                        let network = crate::rpc::buffered_stream_network(
                            stream,
                            rpc_twoparty_capnp::Side::Server,
                            peer_reader_options(),
                        );
                        run_peer_connection(network, port, peer, shard);
                    }
                    Err(reason) => tracing::info!(%peer, shard, "peer TLS handshake failed: {reason}"),
                }
            });
        }
    });
    Ok(())
}

pub(super) fn run_peer_connection<R>(
    network: capnp_rpc::twoparty::VatNetwork<R>,
    port: peer_port::Client,
    peer: SocketAddr,
    shard: usize,
) where
    R: futures::AsyncRead + Unpin + 'static,
{
    let system = RpcSystem::new(Box::new(network), Some(port.client));
    crate::rpc::spawn_connection(system, "peer", peer, shard);
}

pub(super) struct PeerPortServer {
    shard: usize,
    identity: Arc<PeerIdentity>,
    /// What the connection's TLS certificate names; `None` over plaintext.
    certificate: Option<PeerCertificate>,
}

impl peer_port::Server for PeerPortServer {
    async fn hello(
        self: capnp::capability::Rc<Self>,
        params: peer_port::HelloParams,
        mut results: peer_port::HelloResults,
    ) -> Result<(), capnp::Error> {
        let hello = params.get()?.get_hello()?;
        if let Err(error) = self.identity.check_hello(hello, self.shard, self.certificate.as_ref()) {
            tracing::warn!(shard = self.shard, "{}", error.extra);
            return Err(error);
        }
        let mut answer = results.get();
        self.identity.write_hello(answer.reborrow().init_hello(), self.shard);
        let session = PeerSessionServer { shard: self.shard, member: self.identity.member_id };
        answer.set_session(capnp_rpc::new_client(session));
        Ok(())
    }

    async fn introduce(
        self: capnp::capability::Rc<Self>,
        params: peer_port::IntroduceParams,
        mut results: peer_port::IntroduceResults,
    ) -> Result<(), capnp::Error> {
        let hello = params.get()?.get_hello()?;
        let name = hello.get_cluster_name()?.to_str()?;
        if name != self.identity.cluster_name {
            return Err(capnp::Error::failed(format!(
                "member {} is in cluster {:?}, the asker in {name:?}; check cluster.name",
                self.identity.member_id, self.identity.cluster_name
            )));
        }
        let peer = crate::rpc::incarnation::Incarnation::read(hello)?;
        self.identity
            .check_certificate(peer.member, self.certificate.as_ref())
            .map_err(capnp::Error::failed)?;
        crate::rpc::incarnation::answer(
            &self.identity.keeper,
            peer,
            || voter_here(peer.member),
            results.get().init_introduction(),
        );
        Ok(())
    }
}

pub(super) struct PeerSessionServer {
    shard: usize,
    member: NodeId,
}

impl PeerSessionServer {
    fn group(&self, group: GroupId) -> capnp::Result<PeerRequests> {
        PeerRequests::local(group).ok_or_else(|| {
            capnp::Error::failed(format!(
                "group {group} does not run on shard {} of member {} (it is starting, or the members' \
                 layouts differ)",
                self.shard, self.member
            ))
        })
    }
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> capnp::Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|error| capnp::Error::failed(format!("a peer sent {what} that does not decode: {error}")))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("openraft's messages and nvkv's errors always serialize")
}

impl peer_session::Server for PeerSessionServer {
    async fn append_entries(
        self: capnp::capability::Rc<Self>,
        params: peer_session::AppendEntriesParams,
        mut results: peer_session::AppendEntriesResults,
    ) -> Result<(), capnp::Error> {
        let taken = Instant::now();
        crate::reactor::note_activity();
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let request: AppendEntriesRequest<TypeConfig> = decode(params.get_request()?, "an append")?;
        // A follower's load is its leader's batches while it appends them.
        let commands = request
            .entries
            .iter()
            .map(|entry| match &entry.payload {
                openraft::EntryPayload::Normal(command) => crate::kv::command::command_count(&command.0),
                _ => 0,
            })
            .sum();
        let _counted = crate::reactor::work_in_flight(commands);
        let answer = entry.handle_append_entries(request).await.map_err(capnp::Error::failed)?;
        let mut results = results.get();
        results.set_response(&encode(&answer));
        results.set_answer_nanos(u64::try_from(taken.elapsed().as_nanos()).unwrap_or(u64::MAX));
        Ok(())
    }

    async fn vote(
        self: capnp::capability::Rc<Self>,
        params: peer_session::VoteParams,
        mut results: peer_session::VoteResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let request: VoteRequest<NodeId> = decode(params.get_request()?, "a vote request")?;
        let proof = request.vote.leader_id().voted_for().and_then(|candidate| entry.removal_proof(candidate));
        let answer = entry.handle_vote(request).await;
        results.get().set_response(&encode(&answer));
        results.get().set_removed_at(proof.unwrap_or(0));
        Ok(())
    }

    async fn install_snapshot(
        self: capnp::capability::Rc<Self>,
        params: peer_session::InstallSnapshotParams,
        mut results: peer_session::InstallSnapshotResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let meta: SnapshotMeta = decode(params.get_meta()?, "snapshot metadata")?;
        let reception = entry.receive_snapshot(meta, params.get_bytes()).map_err(refused)?;
        results.get().set_sink(capnp_rpc::new_client(SnapshotSinkServer { entry, reception }));
        Ok(())
    }

    async fn forward_write(
        self: capnp::capability::Rc<Self>,
        params: peer_session::ForwardWriteParams,
        mut results: peer_session::ForwardWriteResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let command = params.get_command()?.to_vec();
        let answer = entry.write_as_leader(command).await;
        results.get().set_outcome(&encode(&answer));
        Ok(())
    }

    async fn forward_writes(
        self: capnp::capability::Rc<Self>,
        params: peer_session::ForwardWritesParams,
        mut results: peer_session::ForwardWritesResults,
    ) -> Result<(), capnp::Error> {
        let writes = params.get()?.get_writes()?;
        if writes.len() as usize > FORWARD_BATCH_WRITES_MAX {
            return Err(capnp::Error::failed(format!(
                "a batch of {} forwarded writes is more than the {FORWARD_BATCH_WRITES_MAX} one may carry; none \
                 was proposed",
                writes.len()
            )));
        }
        // Each write as if it came alone: a group not on this shard refuses
        // its own write, not the batch.
        let mut proposals = Vec::with_capacity(writes.len() as usize);
        for write in writes.iter() {
            let group = write.get_group();
            let command = write.get_command()?.to_vec();
            let entry = self.group(group);
            let member = self.member;
            proposals.push(async move {
                match entry {
                    Ok(entry) => entry.write_as_leader(command).await,
                    Err(error) => Err(GroupError::Unavailable { group, member, reason: error.extra }),
                }
            });
        }
        let answers = futures::future::join_all(proposals).await;
        let mut outcomes = results.get().init_outcomes(answers.len() as u32);
        for (index, answer) in answers.iter().enumerate() {
            outcomes.set(index as u32, &encode(answer));
        }
        Ok(())
    }

    async fn read_index(
        self: capnp::capability::Rc<Self>,
        params: peer_session::ReadIndexParams,
        mut results: peer_session::ReadIndexResults,
    ) -> Result<(), capnp::Error> {
        let entry = self.group(params.get()?.get_group())?;
        let answer = entry.read_index().await;
        results.get().set_index(&encode(&answer));
        Ok(())
    }

    async fn lease_at_leader(
        self: capnp::capability::Rc<Self>,
        params: peer_session::LeaseAtLeaderParams,
        mut results: peer_session::LeaseAtLeaderResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let query: LeaseQuery = decode(params.get_query()?, "a lease query")?;
        let answer = entry.lease_as_leader(query).await;
        results.get().set_answer(&encode(&answer));
        Ok(())
    }

    async fn change_membership(
        self: capnp::capability::Rc<Self>,
        params: peer_session::ChangeMembershipParams,
        mut results: peer_session::ChangeMembershipResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let change: MembershipChange = decode(params.get_change()?, "a membership change")?;
        let answer = entry.change_as_leader(change).await;
        results.get().set_outcome(&encode(&answer));
        Ok(())
    }
}

pub(super) fn refused(error: crate::raft::SnapshotReceiveError) -> capnp::Error {
    capnp::Error::failed(error.to_string())
}

/// One snapshot arriving for a group. Dropped (the sender released it, or
/// the connection closed) before `finish`, it frees what it buffered.
pub(super) struct SnapshotSinkServer {
    entry: PeerRequests,
    reception: Reception,
}

impl snapshot_sink::Server for SnapshotSinkServer {
    async fn chunk(
        self: capnp::capability::Rc<Self>,
        params: snapshot_sink::ChunkParams,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        self.reception.chunk(params.get_offset(), params.get_data()?).map_err(refused)
    }

    async fn finish(
        self: capnp::capability::Rc<Self>,
        params: snapshot_sink::FinishParams,
        mut results: snapshot_sink::FinishResults,
    ) -> Result<(), capnp::Error> {
        let vote: Vote = decode(params.get()?.get_vote()?, "a leader's vote")?;
        let answer = self.entry.install_received_snapshot(&self.reception, vote).await.map_err(refused)?;
        results.get().set_response(&encode(&answer));
        Ok(())
    }
}
