//! What the node answers, read into the library's types: the results of
//! KV calls (shared with the KV stream's client) and a node's status as
//! text.

use super::*;

impl NodeStatus {
    /// The status as a person reads it.
    pub fn human(&self) -> String {
        let mut text = format!(
            "member {} at {} (nvkv {}), up {:.1} s\nnamespace {} ({}), durability {}\n",
            self.member_id,
            self.endpoint,
            self.version,
            self.uptime_ms as f64 / 1000.0,
            self.namespace,
            self.backend,
            self.durability
        );
        text.push_str(
            "shard  core  groups  log records (head..tail)   log used / capacity   \
             queue wait p50/p99 us   device write p50/p99 us   records/write\n",
        );
        for shard in &self.shards {
            text.push_str(&format!(
                "{:>5}  {:>4}  {:>6}  {:>12}..{:<12}  {:>7} / {:<7} MiB   {:>8.1} / {:<8.1}      {:>8.1} / {:<8.1}      {:>6.1}\n",
                shard.shard,
                shard.core,
                shard.groups,
                shard.log_head_sequence,
                shard.log_tail_sequence,
                shard.log_used_bytes >> 20,
                shard.log_capacity_bytes >> 20,
                shard.queue_wait_p50_us,
                shard.queue_wait_p99_us,
                shard.device_write_p50_us,
                shard.device_write_p99_us,
                shard.log_records_written as f64 / shard.log_writes.max(1) as f64,
            ));
        }
        text.push_str(
            "shard  proposal wait p50/p99 us   raft p50/p99 us         apply p50/p99 us      \
             write end to end p50/p99 us   writes/proposal\n",
        );
        for shard in &self.shards {
            text.push_str(&format!(
                "{:>5}  {:>9.1} / {:<9.1}      {:>8.1} / {:<8.1}   {:>7.1} / {:<7.1}     {:>9.1} / {:<9.1}       {:>6.1}\n",
                shard.shard,
                shard.proposal_wait_p50_us,
                shard.proposal_wait_p99_us,
                shard.raft_p50_us,
                shard.raft_p99_us,
                shard.apply_p50_us,
                shard.apply_p99_us,
                shard.end_to_end_p50_us,
                shard.end_to_end_p99_us,
                shard.proposed_commands as f64 / shard.proposals.max(1) as f64,
            ));
        }
        text.push_str(
            "shard  device written MiB   flushes  device errors  snapshots  snapshot MiB   reactor busy / idle s\n",
        );
        for shard in &self.shards {
            text.push_str(&format!(
                "{:>5}  {:>18.1}  {:>8}  {:>13}  {:>9}  {:>12.1}   {:>9.1} / {:<9.1}\n",
                shard.shard,
                shard.device_written_bytes as f64 / (1u64 << 20) as f64,
                shard.device_flushes,
                shard.device_errors,
                shard.snapshots_written,
                shard.snapshot_written_bytes as f64 / (1u64 << 20) as f64,
                shard.reactor_busy_seconds,
                shard.reactor_idle_seconds,
            ));
        }
        text.push_str(&budget_table(&self.shards));
        text.push_str(
            "group  shard  leader  term   applied  last log  snapshot    purged  revision  compacted      keys  watchers  leases  leader changes  alarm\n",
        );
        for group in &self.groups {
            text.push_str(&format!(
                "{:>5}  {:>5}  {:>6}  {:>4}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>9}  {:>8}  {:>8}  {:>6}  {:>14}  {}\n",
                group.group,
                group.shard,
                group.leader,
                group.term,
                group.applied_index,
                group.last_log_index,
                group.snapshot_index,
                group.purged_index,
                group.revision,
                group.compact_revision,
                group.keys,
                group.watchers,
                group.leases,
                group.leader_changes,
                if group.no_space { "NOSPACE" } else { "-" },
            ));
        }
        text
    }
}

pub(super) type Decoded<T> = capnp::Result<Result<T, crate::rpc::kv::ServerError>>;

/// Reads a `...Result` union of the schema (module `$result`): its `ok`
/// side as `$read_ok` reads it, or its typed error.
macro_rules! read_result {
    ($reader:expr, $result:ident, |$ok:ident| $read_ok:expr) => {{
        use crate::nvkv_capnp::$result::Which;
        Ok(match $reader.which()? {
            Which::Ok($ok) => {
                let $ok = $ok?;
                Ok($read_ok)
            }
            Which::Error(error) => Err(crate::rpc::kv::read_error(error?)?),
        })
    }};
}

/// A put's answer as the schema carries it (the KV interface and the KV stream alike).
pub(in crate::rpc) fn read_put_result(
    reader: crate::nvkv_capnp::put_result::Reader<'_>,
) -> Decoded<PutAnswer> {
    read_result!(reader, put_result, |ok| PutAnswer {
        header: crate::rpc::kv::read_header(ok.get_header()?),
        prev_kv: if ok.get_has_prev_kv() {
            Some(crate::rpc::kv::read_key_value(ok.get_prev_kv()?)?.into())
        } else {
            None
        },
    })
}

pub(in crate::rpc) fn read_range_result(
    reader: crate::nvkv_capnp::range_result::Reader<'_>,
) -> Decoded<RangeAnswer> {
    read_result!(reader, range_result, |ok| RangeAnswer {
        header: crate::rpc::kv::read_header(ok.get_header()?),
        kvs: read_key_value_views(ok.get_kvs()?)?,
        count: ok.get_count(),
        more: ok.get_more(),
    })
}

pub(in crate::rpc) fn read_delete_range_result(
    reader: crate::nvkv_capnp::delete_range_result::Reader<'_>,
) -> Decoded<DeleteAnswer> {
    read_result!(reader, delete_range_result, |ok| DeleteAnswer {
        header: crate::rpc::kv::read_header(ok.get_header()?),
        deleted: ok.get_deleted(),
        prev_kvs: read_key_value_views(ok.get_prev_kvs()?)?,
    })
}

pub(in crate::rpc) fn read_txn_result(
    reader: crate::nvkv_capnp::txn_result::Reader<'_>,
) -> Decoded<TxnAnswer> {
    read_result!(reader, txn_result, |ok| TxnAnswer {
        header: crate::rpc::kv::read_header(ok.get_header()?),
        response: crate::rpc::kv::read_txn_response(ok)?,
    })
}

pub(super) fn read_key_value_views(
    list: capnp::struct_list::Reader<'_, crate::nvkv_capnp::key_value::Owned>,
) -> capnp::Result<Vec<KeyValueView>> {
    list.iter().map(|kv| Ok(crate::rpc::kv::read_key_value(kv)?.into())).collect()
}

/// The latency budget of every shard, a hop a line (p50 / p99 in µs, and
/// how many writes each measured), for `status`.
pub(super) fn budget_table(shards: &[ShardReport]) -> String {
    let mut text = format!("{:<26}", "latency budget p50/p99 us");
    for shard in shards {
        text.push_str(&format!("  {:>28}", format!("shard {} (count)", shard.shard)));
    }
    text.push('\n');
    let names: Vec<&str> = shards
        .first()
        .map(|shard| shard.hops.iter().map(|hop| hop.name.as_str()).collect())
        .unwrap_or_default();
    for (position, name) in names.iter().enumerate() {
        text.push_str(&format!("{name:<26}"));
        for shard in shards {
            let cell = shard.hops.get(position).map_or(String::new(), |hop| {
                format!("{:.1} / {:.1} ({})", hop.p50_us, hop.p99_us, hop.count)
            });
            text.push_str(&format!("  {cell:>28}"));
        }
        text.push('\n');
    }
    text
}

/// A compaction's answer: its header, or its typed refusal.
pub(super) fn read_compact_result(
    reader: crate::nvkv_capnp::compact_result::Reader<'_>,
) -> Decoded<crate::rpc::kv::Header> {
    read_result!(reader, compact_result, |ok| crate::rpc::kv::read_header(ok))
}
