//! etcd's Cluster, Maintenance and Auth services on one shard.
//!
//! nvkv runs many Raft groups where etcd runs one, so what etcd reports of
//! its one Raft is reported of the groups together (docs/etcd.md): the
//! leader is group 0's, the indexes are sums over the groups (so they only
//! grow), the term the highest, the size the members' logs in use. Members
//! are added as learners, as `etcdctl member add --learner`, and promoted
//! once caught up.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};

use super::convert::{self, status};
use super::kv::{on_this_shard, ShardLocal};
use super::proto::etcdserverpb as pb;
use crate::shard::membership::MembershipChange;
use crate::shard::registry::{local_group_reports, on_every_shard, served_membership};
use crate::shard::{GroupReport, MembershipEntry, ShardReport};

pub struct EtcdCluster {
    shard: ShardLocal,
}

impl EtcdCluster {
    pub fn new(shard: ShardLocal) -> EtcdCluster {
        EtcdCluster { shard }
    }
}

pub struct EtcdMaintenance {
    shard: ShardLocal,
}

impl EtcdMaintenance {
    pub fn new(shard: ShardLocal) -> EtcdMaintenance {
        EtcdMaintenance { shard }
    }
}

/// Every group's report, in group order.
async fn group_reports(shard: &ShardLocal) -> Result<Vec<GroupReport>, Status> {
    let mut reports: Vec<GroupReport> = on_every_shard(shard.context(), |_| local_group_reports())
        .await
        .map_err(status)?
        .into_iter()
        .flatten()
        .collect();
    reports.sort_by_key(|report| report.group);
    Ok(reports)
}

/// The members every group names, merged, in id order: a learner in every
/// group is a learner. Only this member's client URL is known here (the
/// others' etcd addresses are not in the membership).
async fn members(shard: &ShardLocal) -> Result<Vec<pb::Member>, Status> {
    let entries = on_every_shard(shard.context(), |_| served_membership()).await.map_err(status)?;
    let entries = entries.into_iter().collect::<Result<Vec<_>, _>>().map_err(status)?;
    let mut merged: BTreeMap<u64, pb::Member> = BTreeMap::new();
    for MembershipEntry { member, voter } in entries.into_iter().flatten() {
        let known = merged.entry(member.id).or_insert_with(|| pb::Member {
            id: member.id,
            name: member.name.clone(),
            is_learner: true,
            ..pb::Member::default()
        });
        known.is_learner &= !voter;
        let peer_url = format!("{}://{}", shard.info.peer_scheme, member.peer_address);
        if !known.peer_ur_ls.contains(&peer_url) {
            known.peer_ur_ls.push(peer_url);
        }
    }
    let own = merged
        .entry(shard.info.member_id)
        .or_insert_with(|| pb::Member { id: shard.info.member_id, ..pb::Member::default() });
    own.name = shard.info.name.clone();
    own.client_ur_ls = vec![shard.info.client_url.clone()];
    Ok(merged.into_values().collect())
}

/// The peer address (`host:port`) of an etcd peer URL.
fn peer_address(url: &str) -> Result<String, Status> {
    let address = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
    let address = address.trim_end_matches('/');
    if address.is_empty() || !address.contains(':') {
        return Err(Status::invalid_argument(format!(
            "peer URL {url:?} names no host:port; give one like http://10.0.0.4:7380 (the new member's \
             node.peer_address)"
        )));
    }
    Ok(address.to_string())
}

/// The member id MemberAdd gives a member at `address`: stable, so adding
/// it again names the same member; never 0, and below 2^63 so that
/// `node.member_id` (a TOML integer) can hold it.
fn new_member_id(address: &str) -> u64 {
    let high = u64::from(crc32c::crc32c(address.as_bytes()));
    let low = u64::from(crc32c::crc32c_append(0x6e766b76, address.as_bytes()));
    (((high << 32) | low) & (u64::MAX >> 1)).max(1)
}

impl EtcdCluster {
    async fn list_response<T>(
        &self,
        build: impl FnOnce(Option<pb::ResponseHeader>, Vec<pb::Member>) -> T,
    ) -> Result<Response<T>, Status> {
        let members = members(&self.shard).await?;
        Ok(Response::new(build(convert::header(&self.shard.info, 0, 0), members)))
    }

    async fn change(shard: &ShardLocal, change: MembershipChange) -> Result<(), Status> {
        shard.requests()?.change_membership(change).await.map_err(status)?;
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for EtcdCluster {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        on_this_shard(async {
            let Some(url) = request.peer_ur_ls.first() else {
                return Err(Status::invalid_argument("etcdserver: given member URLs are invalid"));
            };
            let address = peer_address(url)?;
            let id = new_member_id(&address);
            let member = crate::raft::Member {
                id,
                peer_address: address,
                name: String::new(),
                client_address: String::new(),
            };
            Self::change(&shard, MembershipChange::AddLearner(member)).await?;
            let added = pb::Member {
                id,
                peer_ur_ls: request.peer_ur_ls.clone(),
                is_learner: true,
                ..Default::default()
            };
            self.list_response(|header, members| pb::MemberAddResponse {
                header,
                member: Some(added),
                members,
            })
            .await
        })
        .await
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        on_this_shard(async {
            Self::change(&shard, MembershipChange::Remove(request.id)).await?;
            // Committed in every group, but this member may not have
            // applied it in the groups it follows yet: it is not listed.
            let removed = request.id;
            self.list_response(|header, members| pb::MemberRemoveResponse {
                header,
                members: members.into_iter().filter(|member| member.id != removed).collect(),
            })
            .await
        })
        .await
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(format!(
            "nvkv cannot change the peer URLs of member {:x} in place; remove it and add it again at its new \
             address",
            request.into_inner().id
        )))
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        on_this_shard(self.list_response(|header, members| pb::MemberListResponse { header, members })).await
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        on_this_shard(async {
            Self::change(&shard, MembershipChange::Promote(request.id)).await?;
            self.list_response(|header, members| pb::MemberPromoteResponse { header, members }).await
        })
        .await
    }
}

/// What the groups add up to, for Status and the hashes.
struct Totals {
    revision: i64,
    compact_revision: i64,
    leader: u64,
    term: u64,
    last_index: u64,
    applied_index: u64,
    hash: u32,
}

fn totals(reports: &[GroupReport]) -> Totals {
    let mut hasher = 0u32;
    for report in reports {
        hasher = crc32c::crc32c_append(hasher, &report.state_hash.to_le_bytes());
    }
    Totals {
        revision: reports.iter().map(|report| report.revision).max().unwrap_or(0),
        compact_revision: reports.iter().map(|report| report.compact_revision).max().unwrap_or(0),
        leader: reports.first().map_or(0, |report| report.leader),
        term: reports.iter().map(|report| report.term).max().unwrap_or(0),
        last_index: reports.iter().map(|report| report.last_log_index).sum(),
        applied_index: reports.iter().map(|report| report.applied_index).sum(),
        hash: hasher,
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for EtcdMaintenance {
    async fn alarm(&self, request: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        // nvkv's one alarm is a group's NOSPACE (see shard::space): raised
        // and cleared by the group itself as room runs out and comes back,
        // so it is listed here and cannot be activated or disarmed by hand.
        let action = request.into_inner().action;
        if action != AlarmAction::Get as i32 {
            return Err(Status::failed_precondition(
                "nvkv raises and clears its NOSPACE alarm itself: delete keys (and compact) to clear it; \
                 only `alarm list` is answered",
            ));
        }
        on_this_shard(async {
            let reports = group_reports(&self.shard).await?;
            let alarms = if reports.iter().any(|report| report.no_space) {
                vec![pb::AlarmMember {
                    member_id: self.shard.info.member_id,
                    alarm: pb::AlarmType::Nospace as i32,
                }]
            } else {
                Vec::new()
            };
            Ok(Response::new(pb::AlarmResponse { header: convert::header(&self.shard.info, 0, 0), alarms }))
        })
        .await
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        on_this_shard(async {
            let reports = group_reports(&self.shard).await?;
            let shards: Vec<ShardReport> =
                on_every_shard(self.shard.context(), |_| crate::shard::local_report())
                    .await
                    .map_err(status)?
                    .into_iter()
                    .flatten()
                    .collect();
            let learner = members(&self.shard)
                .await?
                .iter()
                .any(|member| member.id == self.shard.info.member_id && member.is_learner);
            let totals = totals(&reports);
            let used = shards.iter().map(|shard| shard.log_used_bytes).sum::<u64>();
            let used = i64::try_from(used).unwrap_or(i64::MAX);
            Ok(Response::new(pb::StatusResponse {
                header: convert::header(&self.shard.info, totals.term, totals.revision),
                version: super::ETCD_VERSION.to_string(),
                db_size: used,
                leader: totals.leader,
                raft_index: totals.last_index,
                raft_term: totals.term,
                raft_applied_index: totals.applied_index,
                errors: Vec::new(),
                db_size_in_use: used,
                is_learner: learner,
                storage_version: String::new(),
                db_size_quota: 0,
                downgrade_info: None,
            }))
        })
        .await
    }

    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // Nothing to defragment: compaction frees history in memory, and
        // the log ring reuses its space.
        Ok(Response::new(pb::DefragmentResponse { header: convert::header(&self.shard.info, 0, 0) }))
    }

    async fn hash(&self, _: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        on_this_shard(async {
            let totals = totals(&group_reports(&self.shard).await?);
            Ok(Response::new(pb::HashResponse {
                header: convert::header(&self.shard.info, totals.term, totals.revision),
                hash: totals.hash,
            }))
        })
        .await
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let request = request.into_inner();
        on_this_shard(async {
            let totals = totals(&group_reports(&self.shard).await?);
            Ok(Response::new(pb::HashKvResponse {
                header: convert::header(&self.shard.info, totals.term, totals.revision),
                hash: totals.hash,
                compact_revision: totals.compact_revision,
                // The hash is of the store as this member applied it now.
                hash_revision: if request.revision == 0 {
                    totals.revision
                } else {
                    totals.revision.min(request.revision)
                },
            }))
        })
        .await
    }

    type SnapshotStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>>;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented(
            "an etcd snapshot (a bbolt file) is not what nvkv stores; back nvkv up with `nvkv snapshot save`",
        ))
    }

    async fn move_leader(
        &self,
        _: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(Status::unimplemented(
            "nvkv has a leader per group and spreads them over the members itself; there is no one leader to move",
        ))
    }

    async fn downgrade(
        &self,
        _: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("nvkv's etcd API has no cluster version to downgrade"))
    }
}
