//! The Cluster and Maintenance interfaces of `schema/nvkv.capnp`, and the
//! node status they share with `Node.status`: who the members are, every
//! shard's log and every group's Raft and store state on this member, and
//! compaction. Conversions between these schema structs and Rust types live
//! here, for the server and the client library alike.
//!
//! Whatever a shard knows is asked of it through its mailbox; this module
//! never touches another shard's state.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::nvkv_capnp::{cluster, group_status, maintenance, member, member_change_result, node_status};
use crate::reactor::ReactorContext;
use crate::shard::answer::RequestError;
use crate::shard::membership::MembershipChange;
use crate::shard::requests::Requests;
use crate::shard::{self, GroupReport, MemberProgress, MembershipEntry, ShardReport};

use super::server::NodeInfo;

/// A member of the cluster, as a node knows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberInfo {
    pub id: u64,
    /// Empty for a member this node knows only from the Raft membership.
    pub name: String,
    pub client_addresses: Vec<String>,
    pub peer_addresses: Vec<String>,
    pub is_learner: bool,
}

/// Runs `report` on every shard's thread and gathers the answers in shard
/// order.
pub(super) async fn on_every_shard<T: Send + 'static>(
    context: &ReactorContext,
    report: fn(&ReactorContext) -> T,
) -> Result<Vec<T>, capnp::Error> {
    shard::registry::on_every_shard(context, report)
        .await
        .map_err(|error| capnp::Error::overloaded(error.to_string()))
}

/// What every shard says of its log and its groups.
pub struct Gathered {
    pub shards: Vec<ShardReport>,
    pub groups: Vec<GroupReport>,
}

/// Every group's report, in group order.
pub async fn gather_groups(context: &ReactorContext) -> Result<Vec<GroupReport>, capnp::Error> {
    let mut groups: Vec<GroupReport> = on_every_shard(context, |_| shard::registry::local_group_reports())
        .await?
        .into_iter()
        .flatten()
        .collect();
    groups.sort_by_key(|group| group.group);
    Ok(groups)
}

/// Every shard's report and every group's.
pub async fn gather(context: &ReactorContext) -> Result<Gathered, capnp::Error> {
    let mut shards = Vec::new();
    for (target, report) in on_every_shard(context, |reactor| {
        shard::local_report().map(|mut report| {
            let stats = reactor.stats();
            report.reactor_busy_seconds = stats.busy_nanos as f64 / 1e9;
            report.reactor_idle_seconds = stats.idle_nanos as f64 / 1e9;
            report
        })
    })
    .await?
    .into_iter()
    .enumerate()
    {
        shards.push(report.ok_or_else(|| capnp::Error::failed(format!("shard {target} has no log yet")))?);
    }
    Ok(Gathered { shards, groups: gather_groups(context).await? })
}

/// The members the groups' membership names, with this node's own name and
/// client address from its config. A member that votes in any group is a
/// voter; this node is listed even before its groups have started.
pub async fn gather_members(
    context: &ReactorContext,
    info: &NodeInfo,
) -> Result<Vec<MemberInfo>, capnp::Error> {
    let mut merged: BTreeMap<u64, MemberInfo> = BTreeMap::new();
    let entries = on_every_shard(context, |_| shard::registry::served_membership()).await?;
    let entries = entries
        .into_iter()
        .collect::<Result<Vec<_>, RequestError>>()
        .map_err(|error| capnp::Error::failed(error.to_string()))?;
    for MembershipEntry { member, voter } in entries.into_iter().flatten() {
        let known = merged.entry(member.id).or_insert_with(|| MemberInfo {
            id: member.id,
            name: String::new(),
            client_addresses: Vec::new(),
            peer_addresses: Vec::new(),
            is_learner: true,
        });
        known.is_learner &= !voter;
        if known.name.is_empty() {
            known.name = member.name;
        }
        if !member.client_address.is_empty() && !known.client_addresses.contains(&member.client_address) {
            known.client_addresses.push(member.client_address);
        }
        if !known.peer_addresses.contains(&member.peer_address) {
            known.peer_addresses.push(member.peer_address);
        }
    }
    let own = merged.entry(info.member_id).or_insert_with(|| MemberInfo {
        id: info.member_id,
        name: String::new(),
        client_addresses: Vec::new(),
        peer_addresses: Vec::new(),
        is_learner: false,
    });
    own.name = info.name.clone();
    own.client_addresses = vec![info.client_address.to_string()];
    Ok(merged.into_values().collect())
}

pub fn set_member(mut builder: member::Builder<'_>, member: &MemberInfo) {
    builder.set_id(member.id);
    builder.set_name(&member.name);
    builder.set_is_learner(member.is_learner);
    let mut client = builder.reborrow().init_client_addresses(member.client_addresses.len() as u32);
    for (position, address) in member.client_addresses.iter().enumerate() {
        client.set(position as u32, address);
    }
    let mut peer = builder.init_peer_addresses(member.peer_addresses.len() as u32);
    for (position, address) in member.peer_addresses.iter().enumerate() {
        peer.set(position as u32, address);
    }
}

pub fn read_member(reader: member::Reader<'_>) -> capnp::Result<MemberInfo> {
    let texts = |list: capnp::text_list::Reader<'_>| -> capnp::Result<Vec<String>> {
        list.iter().map(|text| Ok(text?.to_string()?)).collect()
    };
    Ok(MemberInfo {
        id: reader.get_id(),
        name: reader.get_name()?.to_string()?,
        client_addresses: texts(reader.get_client_addresses()?)?,
        peer_addresses: texts(reader.get_peer_addresses()?)?,
        is_learner: reader.get_is_learner(),
    })
}

pub fn set_group_status(mut builder: group_status::Builder<'_>, report: &GroupReport) {
    builder.set_group(report.group);
    builder.set_shard(report.shard);
    builder.set_leader(report.leader);
    builder.set_term(report.term);
    builder.set_applied_index(report.applied_index);
    builder.set_last_log_index(report.last_log_index);
    builder.set_snapshot_index(report.snapshot_index);
    builder.set_purged_index(report.purged_index);
    builder.set_revision(report.revision);
    builder.set_compact_revision(report.compact_revision);
    builder.set_keys(report.keys);
    builder.set_watchers(report.watchers);
    builder.set_leases(report.leases);
    builder.set_state_hash(report.state_hash);
    builder.set_leader_changes(report.leader_changes);
    builder.set_no_space(report.no_space);
    let mut members = builder.init_members(report.members.len() as u32);
    for (position, progress) in report.members.iter().enumerate() {
        let mut out = members.reborrow().get(position as u32);
        out.set_member_id(progress.member_id);
        out.set_matched_index(progress.matched_index);
    }
}

pub fn read_group_status(reader: group_status::Reader<'_>) -> capnp::Result<GroupReport> {
    let mut members = Vec::new();
    for progress in reader.get_members()? {
        members.push(MemberProgress {
            member_id: progress.get_member_id(),
            matched_index: progress.get_matched_index(),
        });
    }
    Ok(GroupReport {
        group: reader.get_group(),
        shard: reader.get_shard(),
        leader: reader.get_leader(),
        term: reader.get_term(),
        applied_index: reader.get_applied_index(),
        last_log_index: reader.get_last_log_index(),
        snapshot_index: reader.get_snapshot_index(),
        purged_index: reader.get_purged_index(),
        revision: reader.get_revision(),
        compact_revision: reader.get_compact_revision(),
        keys: reader.get_keys(),
        watchers: reader.get_watchers(),
        leases: reader.get_leases(),
        members,
        state_hash: reader.get_state_hash(),
        leader_changes: reader.get_leader_changes(),
        no_space: reader.get_no_space(),
    })
}

fn set_group_statuses(
    mut list: capnp::struct_list::Builder<'_, group_status::Owned>,
    groups: &[GroupReport],
) {
    for (position, report) in groups.iter().enumerate() {
        set_group_status(list.reborrow().get(position as u32), report);
    }
}

/// Writes a node's status: who it is, how it runs, every shard's log and
/// every group.
pub fn set_node_status(mut status: node_status::Builder<'_>, info: &NodeInfo, gathered: &Gathered) {
    status.set_member_id(info.member_id);
    status.set_version(&info.version);
    status.set_namespace(&info.namespace);
    status.set_backend(&info.backend);
    status.set_durability(&info.durability);
    status.set_uptime_ms(u64::try_from(info.started.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut shards = status.reborrow().init_shards(gathered.shards.len() as u32);
    for (position, report) in gathered.shards.iter().enumerate() {
        let mut shard = shards.reborrow().get(position as u32);
        shard.set_shard(report.shard);
        shard.set_core(report.core);
        shard.set_groups(report.groups);
        shard.set_log_head_sequence(report.log_head_sequence);
        shard.set_log_tail_sequence(report.log_tail_sequence);
        shard.set_log_used_bytes(report.log_used_bytes);
        shard.set_log_capacity_bytes(report.log_capacity_bytes);
        shard.set_queue_wait_p50_us(report.queue_wait_p50_us);
        shard.set_queue_wait_p99_us(report.queue_wait_p99_us);
        shard.set_device_write_p50_us(report.device_write_p50_us);
        shard.set_device_write_p99_us(report.device_write_p99_us);
        shard.set_log_writes(report.log_writes);
        shard.set_log_records_written(report.log_records_written);
        shard.set_proposal_wait_p50_us(report.proposal_wait_p50_us);
        shard.set_proposal_wait_p99_us(report.proposal_wait_p99_us);
        shard.set_raft_p50_us(report.raft_p50_us);
        shard.set_raft_p99_us(report.raft_p99_us);
        shard.set_apply_p50_us(report.apply_p50_us);
        shard.set_apply_p99_us(report.apply_p99_us);
        shard.set_end_to_end_p50_us(report.end_to_end_p50_us);
        shard.set_end_to_end_p99_us(report.end_to_end_p99_us);
        shard.set_proposals(report.proposals);
        shard.set_proposed_commands(report.proposed_commands);
        shard.set_device_written_bytes(report.device_written_bytes);
        shard.set_device_flushes(report.device_flushes);
        shard.set_device_errors(report.device_errors);
        shard.set_snapshots_written(report.snapshots_written);
        shard.set_snapshot_written_bytes(report.snapshot_written_bytes);
        shard.set_reactor_busy_seconds(report.reactor_busy_seconds);
        shard.set_reactor_idle_seconds(report.reactor_idle_seconds);
        let mut hops = shard.init_hops(report.hops.len() as u32);
        for (position, hop) in report.hops.iter().enumerate() {
            let mut out = hops.reborrow().get(position as u32);
            out.set_name(&hop.name);
            out.set_count(hop.count);
            out.set_sum_us(hop.sum_us);
            out.set_p50_us(hop.p50_us);
            out.set_p99_us(hop.p99_us);
            out.set_histogram(&hop.histogram);
        }
    }
    status.set_process_cpu_seconds(super::metrics::process_cpu_seconds());
    set_group_statuses(status.init_groups(gathered.groups.len() as u32), &gathered.groups);
}

/// Serves the Cluster interface: the members and the node's status.
pub struct ClusterServer {
    pub context: ReactorContext,
    pub info: Arc<NodeInfo>,
    /// Who the membership changes are for (they need the role root).
    pub caller: crate::shard::auth::Caller,
}

impl cluster::Server for ClusterServer {
    async fn members(
        self: capnp::capability::Rc<Self>,
        _: cluster::MembersParams,
        mut results: cluster::MembersResults,
    ) -> Result<(), capnp::Error> {
        let members = gather_members(&self.context, &self.info).await?;
        let mut list = results.get().init_members(members.len() as u32);
        for (position, member) in members.iter().enumerate() {
            set_member(list.reborrow().get(position as u32), member);
        }
        Ok(())
    }

    async fn status(
        self: capnp::capability::Rc<Self>,
        _: cluster::StatusParams,
        mut results: cluster::StatusResults,
    ) -> Result<(), capnp::Error> {
        let gathered = gather(&self.context).await?;
        set_node_status(results.get().init_status(), &self.info, &gathered);
        Ok(())
    }

    async fn add_member(
        self: capnp::capability::Rc<Self>,
        params: cluster::AddMemberParams,
        mut results: cluster::AddMemberResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let member = match check_new_member(&read_member(params.get_member()?)?) {
            Ok(member) => member,
            Err(reason) => {
                super::kv::set_error(results.get().init_result().init_error(), &invalid(reason));
                return Ok(());
            }
        };
        let promote = (!params.get_as_learner()).then_some(member.id);
        tracing::info!(member = member.id, name = %member.name, peer = %member.peer_address, "adding a member");
        let outcome = self.change(MembershipChange::AddLearner(member), promote).await;
        self.answer(outcome, results.get().init_result()).await
    }

    async fn promote_member(
        self: capnp::capability::Rc<Self>,
        params: cluster::PromoteMemberParams,
        mut results: cluster::PromoteMemberResults,
    ) -> Result<(), capnp::Error> {
        let id = params.get()?.get_id();
        tracing::info!(member = id, "promoting a member");
        let outcome = self.change(MembershipChange::Promote(id), None).await;
        self.answer(outcome, results.get().init_result()).await
    }

    async fn remove_member(
        self: capnp::capability::Rc<Self>,
        params: cluster::RemoveMemberParams,
        mut results: cluster::RemoveMemberResults,
    ) -> Result<(), capnp::Error> {
        let id = params.get()?.get_id();
        tracing::info!(member = id, "removing a member");
        let outcome = self.change(MembershipChange::Remove(id), None).await;
        self.answer_without(outcome, Some(id), results.get().init_result()).await
    }
}

/// Serves the Maintenance interface: status, every group, compaction.
pub struct MaintenanceServer {
    pub context: ReactorContext,
    pub info: Arc<NodeInfo>,
    pub requests: Requests,
}

impl maintenance::Server for MaintenanceServer {
    async fn status(
        self: capnp::capability::Rc<Self>,
        _: maintenance::StatusParams,
        mut results: maintenance::StatusResults,
    ) -> Result<(), capnp::Error> {
        let gathered = gather(&self.context).await?;
        set_node_status(results.get().init_status(), &self.info, &gathered);
        Ok(())
    }

    async fn compact(
        self: capnp::capability::Rc<Self>,
        params: maintenance::CompactParams,
        mut results: maintenance::CompactResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let answer = self.requests.compact(params.get_group(), params.get_revision()).await;
        super::kv::set_compact_result(results.get().init_result(), &answer);
        Ok(())
    }

    async fn groups(
        self: capnp::capability::Rc<Self>,
        _: maintenance::GroupsParams,
        mut results: maintenance::GroupsResults,
    ) -> Result<(), capnp::Error> {
        let groups = gather_groups(&self.context).await?;
        set_group_statuses(results.get().init_groups(groups.len() as u32), &groups);
        Ok(())
    }

    async fn backup_group(
        self: capnp::capability::Rc<Self>,
        params: maintenance::BackupGroupParams,
        mut results: maintenance::BackupGroupResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let group = params.get_group();
        let sink = params.get_sink()?;
        let copy = match self.requests.backup_group(group).await {
            Ok(copy) => copy,
            Err(error) => {
                let error = super::kv::server_error(&error);
                super::kv::set_error(results.get().init_result().init_error(), &error);
                return Ok(());
            }
        };
        for chunk in copy.bytes.chunks(BACKUP_CHUNK_BYTES) {
            let mut call = sink.chunk_request();
            call.get().set_data(chunk);
            // Ready once the flow-control window has room, not once this
            // chunk is answered.
            call.send().await?;
        }
        let mut ok = results.get().init_result().init_ok();
        ok.set_group(copy.group);
        ok.set_revision(copy.revision);
        ok.set_compact_revision(copy.compact_revision);
        ok.set_bytes(copy.bytes.len() as u64);
        ok.set_crc32c(crc32c::crc32c(&copy.bytes));
        ok.set_member_id(copy.member);
        Ok(())
    }
}

/// The data of one chunk of a group's backup: well under the client's
/// message limit (`super::MESSAGE_WORDS_MAX`).
pub const BACKUP_CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!(BACKUP_CHUNK_BYTES * 4 <= super::MESSAGE_WORDS_MAX * 8);

/// What a group's backup holds, as the answer of `backupGroup` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupBackupInfo {
    pub group: u32,
    pub revision: i64,
    pub compact_revision: i64,
    pub bytes: u64,
    pub crc32c: u32,
    pub member_id: u64,
}

pub fn read_group_backup(
    reader: crate::nvkv_capnp::group_backup_result::Reader<'_>,
) -> capnp::Result<Result<GroupBackupInfo, super::kv::ServerError>> {
    use crate::nvkv_capnp::group_backup_result::Which;
    Ok(match reader.which()? {
        Which::Ok(ok) => {
            let ok = ok?;
            Ok(GroupBackupInfo {
                group: ok.get_group(),
                revision: ok.get_revision(),
                compact_revision: ok.get_compact_revision(),
                bytes: ok.get_bytes(),
                crc32c: ok.get_crc32c(),
                member_id: ok.get_member_id(),
            })
        }
        Which::Error(error) => Err(super::kv::read_error(error?)?),
    })
}

/// How long `addMember` without `asLearner` waits for the new learner to
/// catch up before it promotes it; past that it answers notCaughtUp and
/// `nvkv member promote` finishes the job.
pub const ADD_PROMOTE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A member as `addMember` may add it: an id, a name, and one client and
/// one peer address that others can reach.
pub fn check_new_member(member: &MemberInfo) -> Result<crate::raft::Member, String> {
    if member.id == 0 {
        return Err("member id 0 is no member; give an id of at least 1, unused in the cluster".into());
    }
    if member.name.is_empty() || member.name.len() > 64 || member.name.chars().any(char::is_control) {
        return Err(format!(
            "member name {:?} is not 1 to 64 bytes without control characters; give one like \"node4\"",
            member.name
        ));
    }
    let address = |what: &str, addresses: &[String]| -> Result<String, String> {
        let [address] = addresses else {
            return Err(format!("give exactly one {what} address, not {addresses:?}"));
        };
        match address.parse::<std::net::SocketAddr>() {
            Ok(parsed) if parsed.port() != 0 && !parsed.ip().is_unspecified() => Ok(address.clone()),
            _ => Err(format!(
                "{what} address {address:?} is not an IP address and port the others can reach (like \
                 127.0.0.1:7979; not 0.0.0.0 or port 0)"
            )),
        }
    };
    Ok(crate::raft::Member {
        id: member.id,
        name: member.name.clone(),
        peer_address: address("peer", &member.peer_addresses)?,
        client_address: address("client", &member.client_addresses)?,
    })
}

impl ClusterServer {
    fn requests(&self) -> Result<Requests, RequestError> {
        shard::requests::local_requests(&self.context)
            .map(|requests| requests.with_caller(self.caller.clone()))
            .ok_or(RequestError::Starting { shard: self.context.shard() })
    }

    /// Applies `change` to every group; for an added voter, promotes it
    /// once it caught up.
    async fn change(&self, change: MembershipChange, promote: Option<u64>) -> Result<u32, RequestError> {
        let requests = self.requests()?;
        let groups = requests.change_membership(change).await?;
        let Some(id) = promote else {
            return Ok(groups);
        };
        let deadline = std::time::Instant::now() + ADD_PROMOTE_WAIT;
        loop {
            match requests.change_membership(MembershipChange::Promote(id)).await {
                Err(RequestError::Group(crate::raft::GroupError::NotCaughtUp { .. }))
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Writes a change's outcome: the groups and the members as this node
    /// knows them now, or the typed error.
    async fn answer(
        &self,
        outcome: Result<u32, RequestError>,
        result: member_change_result::Builder<'_>,
    ) -> Result<(), capnp::Error> {
        self.answer_without(outcome, None, result).await
    }

    /// The answer of a membership change: the members after it, without
    /// `removed` (a removal committed in every group, which this member may
    /// not have applied yet in the groups it follows).
    async fn answer_without(
        &self,
        outcome: Result<u32, RequestError>,
        removed: Option<u64>,
        result: member_change_result::Builder<'_>,
    ) -> Result<(), capnp::Error> {
        match outcome {
            Ok(groups) => {
                let mut members = gather_members(&self.context, &self.info).await?;
                members.retain(|member| Some(member.id) != removed);
                let mut ok = result.init_ok();
                ok.set_groups(groups);
                let mut list = ok.init_members(members.len() as u32);
                for (position, member) in members.iter().enumerate() {
                    set_member(list.reborrow().get(position as u32), member);
                }
            }
            Err(error) => super::kv::set_error(result.init_error(), &super::kv::server_error(&error)),
        }
        Ok(())
    }
}

/// The typed error of a request the server refuses before it reaches a
/// group.
fn invalid(message: String) -> super::kv::ServerError {
    super::kv::ServerError {
        code: super::kv::ErrorCode::InvalidArgument,
        message,
        leader_hint: 0,
        compact_revision: 0,
    }
}

/// A membership change's answer, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberChanged {
    pub groups: u32,
    pub members: Vec<MemberInfo>,
}

pub fn read_member_change(
    reader: member_change_result::Reader<'_>,
) -> capnp::Result<Result<MemberChanged, super::kv::ServerError>> {
    Ok(match reader.which()? {
        member_change_result::Ok(ok) => {
            let ok = ok?;
            Ok(MemberChanged {
                groups: ok.get_groups(),
                members: ok.get_members()?.iter().map(read_member).collect::<capnp::Result<_>>()?,
            })
        }
        member_change_result::Error(error) => Err(super::kv::read_error(error?)?),
    })
}
