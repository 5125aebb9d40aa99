//! `nvkv put | get | del | txn | compact | watch`: the key-value commands,
//! through a client that sends each request to its key's shard.

use nvkv::kv::types::{EventKind, RangeRequest};
use nvkv::rpc::client::watch::WatchMessage;
use nvkv::rpc::client::{ClientTls, KeyValueView, ShardedClient};

use super::args::{Command, WatchArgs};
use super::connect::{connect, run_client};
use super::output::{print_json, print_key_value, print_responses, txn_json};

/// Runs one key-value command against the first endpoint that answers.
pub fn run(endpoints: &[String], tls: &ClientTls, json: bool, command: Command) -> Result<(), String> {
    run_client(async move {
        let connection = connect(endpoints, tls).await?;
        match command {
            Command::Put { key, value, lease, prev_kv } => {
                let answer = connection
                    .put(key.as_bytes(), value.as_bytes(), lease, prev_kv)
                    .await
                    .map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                println!("OK");
                if let Some(previous) = answer.prev_kv {
                    print_key_value(&previous.key, &previous.value);
                }
            }
            Command::Get { key, range_end, prefix, limit, rev, keys_only, count_only, consistency } => {
                let range_end = range_end_of(&key, range_end, prefix);
                let query = RangeRequest {
                    range_end,
                    key: start_key(key, prefix),
                    limit,
                    revision: rev,
                    count_only,
                    keys_only,
                };
                let answer =
                    connection.range(&query, consistency.serializable()).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                if count_only {
                    println!("{}", answer.count);
                }
                for kv in &answer.kvs {
                    println!("{}", super::output::text(&kv.key));
                    if !keys_only {
                        println!("{}", super::output::text(&kv.value));
                    }
                }
            }
            Command::Del { key, range_end, prefix, prev_kv } => {
                let end = range_end_of(&key, range_end, prefix);
                let answer = connection
                    .delete_range(key.as_bytes(), &end, prev_kv)
                    .await
                    .map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                println!("{}", answer.deleted);
                for kv in &answer.prev_kvs {
                    print_key_value(&kv.key, &kv.value);
                }
            }
            Command::Txn => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|error| format!("cannot read the transaction from standard input: {error}"))?;
                let txn = nvkv::txn_text::parse(&text)?;
                let answer = connection.txn(&txn).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&txn_json(&answer));
                }
                println!("{}", if answer.response.succeeded { "SUCCESS" } else { "FAILURE" });
                print_responses(&answer.response.responses);
            }
            Command::Compact { revision, group, group_of } => {
                let group = match (group, group_of) {
                    (Some(group), _) => group,
                    (None, Some(key)) => {
                        let map = connection.partition_map();
                        nvkv::kv::partition::Partitioner::new(map.groups, map.partition_depth as usize)
                            .map_err(|error| format!("the node's partition map is unusable: {error}"))?
                            .group_of(key.as_bytes())
                    }
                    (None, None) => unreachable!("clap requires --group or --group-of"),
                };
                let revision = match revision {
                    Some(revision) => revision,
                    None => {
                        let groups = connection.main().groups().await.map_err(|e| e.to_string())?;
                        let report = groups.iter().find(|report| report.group == group).ok_or_else(|| {
                            format!(
                                "the node reports no group {group}: it has groups 0 to {}",
                                groups.len().saturating_sub(1)
                            )
                        })?;
                        report.revision
                    }
                };
                let header = connection.compact(group, revision).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&header);
                }
                println!("compacted group {} at revision {revision}", header.group);
            }
            Command::Watch(args) => return watch(&connection, json, args).await,
            _ => unreachable!("only key-value commands come here"),
        }
        Ok(())
    })?
}

/// The range_end of a command line: explicit, every key under the prefix,
/// or none (the single key).
fn range_end_of(key: &str, range_end: Option<String>, prefix: bool) -> Vec<u8> {
    match (range_end, prefix) {
        (Some(end), _) => end.into_bytes(),
        (None, true) => nvkv::kv::types::prefix_range_end(key.as_bytes()),
        (None, false) => Vec::new(),
    }
}

/// The first key of a command line's range: etcd's spelling of "every
/// key" (an empty prefix) is from the zero byte on.
fn start_key(key: String, prefix: bool) -> Vec<u8> {
    if key.is_empty() && prefix {
        vec![0]
    } else {
        key.into_bytes()
    }
}

/// Runs `nvkv watch` until its count, the end of the watch, or Ctrl-C.
async fn watch(connection: &ShardedClient, json: bool, args: WatchArgs) -> Result<(), String> {
    let range_end = range_end_of(&args.key, args.range_end, args.prefix);
    let request = nvkv::kv::watch::WatchRequest {
        key: start_key(args.key, args.prefix),
        range_end,
        start_revision: args.rev,
        prev_kv: args.prev_kv,
        no_put: args.no_put,
        no_delete: args.no_delete,
        progress_notify: args.progress_notify,
    };
    let mut watch = connection.watch(&request).await.map_err(|e| e.to_string())?;
    let mut events_seen = 0;
    while let Some(message) = watch.next().await {
        match message {
            WatchMessage::Events { header, events } => {
                for event in events {
                    let kind = match event.kind {
                        EventKind::Put => "PUT",
                        EventKind::Delete => "DELETE",
                    };
                    if json {
                        print_json(&serde_json::json!({
                            "header": header,
                            "type": kind,
                            "kv": KeyValueView::from(event.kv),
                            "prev_kv": event.prev_kv.map(KeyValueView::from),
                        }))?;
                    } else {
                        println!("{kind}");
                        if let Some(previous) = &event.prev_kv {
                            print_key_value(&previous.key, &previous.value);
                        }
                        print_key_value(&event.kv.key, &event.kv.value);
                    }
                    events_seen += 1;
                    if args.count == Some(events_seen) {
                        return Ok(());
                    }
                }
            }
            WatchMessage::Progress { header } if json => {
                print_json(&serde_json::json!({ "header": header, "progress_notify": true }))?;
            }
            WatchMessage::Progress { header } => {
                println!("progress notify: {} (group {})", header.revision, header.group);
            }
            WatchMessage::Cancelled { group, error } => {
                return Err(match error.code {
                    // Compaction is per group, so is the revision it names.
                    nvkv::rpc::kv::ErrorCode::Compacted => {
                        format!("watch cancelled in group {group}: {}", error.message)
                    }
                    _ => format!("watch cancelled: {}", error.message),
                });
            }
        }
    }
    Err("the connection to the node closed, which ended the watch; watch again with --rev".into())
}
