//! The Cluster and Maintenance interfaces and the request limits, against a
//! real `nvkv serve`: `nvkv member list`, the per-group status, compaction
//! through Maintenance, and every size limit of `[store]` refused with its
//! typed error while the node keeps serving.

mod common;

use common::*;
use nvkv::kv::types::{PutRequest, RequestOp, TxnRequest};
use nvkv::rpc::client::{ClientError, Connection};
use nvkv::rpc::kv::ErrorCode;

/// Runs `future` on a single-threaded runtime inside a `LocalSet`, as the
/// client library needs.
fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(tokio::task::LocalSet::new().run_until(future))
}

fn refused_code(result: Result<impl std::fmt::Debug, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Refused { error, .. }) => (error.code, error.message),
        other => panic!("expected a typed refusal, got {other:?}"),
    }
}

fn put_op(key: &str, value_bytes: usize) -> RequestOp {
    RequestOp::Put(PutRequest { key: key.into(), value: vec![b'v'; value_bytes], ..PutRequest::default() })
}

#[test]
fn member_list_and_status_show_every_member_and_group() {
    let setup = Setup::new("[reactor]\nshards = 2\n\n[log]\ngroups_per_shard = 3");
    // The name belongs in Setup's own [node] section (a second one is refused).
    let text = std::fs::read_to_string(&setup.config).expect("config");
    std::fs::write(&setup.config, text.replacen("[node]\n", "[node]\nname = \"alpha\"\n", 1))
        .expect("config");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let address = format!("127.0.0.1:{port}");

    eprintln!("phase: member list names this member, started, with its addresses");
    let table = client(port, &["member", "list"]).expect("member list");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split("  ").filter(|cell| !cell.is_empty()).map(str::trim).collect();
    assert_eq!(header, ["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"], "{table}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    // The peer address is node.peer_address (its default: a lone member does not listen on it).
    assert_eq!(row, ["1", "started", "alpha", "127.0.0.1:7479", address.as_str(), "false"], "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&client(port, &["member", "list", "-w", "json"]).expect("json")).expect("JSON");
    assert_eq!(json["member_id"], 1, "{json}");
    assert_eq!(json["members"][0]["client_addresses"][0], address, "{json}");
    assert_eq!(json["members"][0]["is_learner"], false, "{json}");

    eprintln!("phase: writes in two groups show in their groups' status, every group has its leader");
    // Keys under one partition prefix (store.partition_depth = 2 segments) share a group.
    for key in ["/pods/ns/a", "/pods/ns/b", "/nodes/ns/x"] {
        client(port, &["put", key, "v"]).expect("put");
    }
    let pods_group = group_of(port, "/pods/ns/a");
    let nodes_group = group_of(port, "/nodes/ns/x");
    let status = status_json(port);
    let groups = status[0]["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 6, "{status}");
    for (position, group) in groups.iter().enumerate() {
        assert_eq!(group["group"], position, "{status}");
        assert_eq!(group["shard"], position % 2, "group g lives on shard g mod shards: {status}");
        assert_eq!(group["leader"], 1, "{status}");
        let last = group["last_log_index"].as_u64().expect("last log index");
        assert_eq!(group["applied_index"], last, "a lone member applies what it logs: {status}");
        // The leader tracks each member's matched index, itself included.
        assert_eq!(
            group["members"],
            serde_json::json!([{"member_id": 1, "matched_index": last}]),
            "{status}"
        );
    }
    let pods = &groups[pods_group as usize];
    assert_eq!(pods["keys"], if pods_group == nodes_group { 3 } else { 2 }, "{status}");
    let pods_revision = pods["revision"].as_i64().expect("revision");
    assert_eq!(nvkv::kv::revision::revision_group(pods_revision), pods_group, "{status}");
    assert!(pods_revision > nvkv::kv::revision::hybrid_revision(1, pods_group), "written to: {status}");
    assert_eq!(status[0]["members"][0]["name"], "alpha", "{status}");
    let human = client(port, &["status"]).expect("status");
    assert!(human.contains("group  shard  leader  term   applied  last log  snapshot"), "{human}");
    let group_rows = human.lines().skip_while(|line| !line.starts_with("group  shard")).skip(1);
    assert_eq!(group_rows.filter(|line| line.split_whitespace().nth(2) == Some("1")).count(), 6, "{human}");

    eprintln!(
        "phase: Maintenance lists the same groups and compacts one, refusing a group that does not exist"
    );
    run(async {
        let connection = Connection::open(&address).await.expect("connect");
        let listed = connection.groups().await.expect("groups");
        assert_eq!(listed.len(), 6);
        assert_eq!(listed[pods_group as usize].revision, pods["revision"].as_i64().expect("revision"));
        let revision = listed[pods_group as usize].revision;
        let header = connection.maintenance_compact(pods_group, revision).await.expect("compact");
        assert_eq!(header.group, pods_group);
        let listed = connection.groups().await.expect("groups");
        assert_eq!(listed[pods_group as usize].compact_revision, revision);
        let (code, message) = refused_code(connection.maintenance_compact(99, 1).await);
        assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
        assert!(message.contains("group 99 does not exist"), "{message}");
    });

    daemon.signal(libc::SIGTERM);
    let (exit, stderr) = daemon.wait_exit();
    assert_eq!(exit.code(), Some(0), "{stderr}");
}

/// The group `nvkv get -w json` names for a key.
fn group_of(port: u16, key: &str) -> u32 {
    let answer: serde_json::Value =
        serde_json::from_str(&client(port, &["get", key, "-w", "json"]).expect("get")).expect("JSON");
    answer["header"]["group"].as_u64().expect("group") as u32
}

const SMALL_LIMITS: &str =
    "[store]\nkey_bytes_max = 128\nvalue_bytes_max = \"16KiB\"\nrequest_bytes_max = \"32KiB\"\ntxn_ops_max = 8";

#[test]
fn limits_set_in_the_config_are_typed_refusals_through_the_cli() {
    let setup = Setup::new(SMALL_LIMITS);
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());

    eprintln!("phase: a key, a value and a request over the configured limits, each refused by its type");
    let long_key = format!("/pods/{}", "k".repeat(130));
    let error = client(port, &["put", &long_key, "v"]).expect_err("key over 128 bytes");
    assert!(error.contains("KeyTooLarge") && error.contains("136 bytes, over the limit of 128"), "{error}");
    let error = client(port, &["put", "/pods/a", &"v".repeat(17 * 1024)]).expect_err("value over 16 KiB");
    assert!(
        error.contains("ValueTooLarge") && error.contains("17408 bytes, over the limit of 16384"),
        "{error}"
    );
    // Three puts of 12 KiB each: every value fits, the request does not.
    let value = "v".repeat(12 * 1024);
    let text = format!("\nput /pods/a {value}\nput /pods/b {value}\nput /pods/c {value}\n\n");
    let error = txn(port, &text).expect_err("a request over 32 KiB");
    assert!(error.contains("RequestTooLarge") && error.contains("over the limit of 32768"), "{error}");
    let many: String = (0..9).map(|index| format!("put /pods/{index} v\n")).collect();
    let error = txn(port, &format!("\n{many}\n")).expect_err("nine ops over txn_ops_max = 8");
    assert!(
        error.contains("RequestTooLarge") && error.contains("9 success ops, over the limit of 8"),
        "{error}"
    );

    eprintln!("phase: nothing was written, and the node keeps serving");
    assert_eq!(client(port, &["get", "/pods/", "--prefix", "--count-only"]).expect("count"), "0\n");
    client(port, &["put", "/pods/a", &"v".repeat(16 * 1024)]).expect("a value of exactly the limit");
    assert_eq!(client(port, &["get", "/pods/", "--prefix", "--count-only"]).expect("count"), "1\n");

    daemon.signal(libc::SIGTERM);
    let (exit, stderr) = daemon.wait_exit();
    assert_eq!(exit.code(), Some(0), "{stderr}");
}

#[test]
fn oversized_and_absurdly_nested_messages_are_refused_while_others_are_served() {
    let setup = Setup::new(SMALL_LIMITS);
    let mut daemon = Daemon::start(&setup.config);
    let address = format!("127.0.0.1:{}", ready_port(&daemon.wait_ready()));
    run(async {
        let first = Connection::open(&address).await.expect("connect");
        let other = Connection::open(&address).await.expect("connect");
        first.put(b"/pods/a", b"before", 0, false).await.expect("put");

        eprintln!("phase: a request a little over request_bytes_max is read and refused, typed");
        let txn = TxnRequest {
            success: vec![
                put_op("/pods/a", 12 * 1024),
                put_op("/pods/b", 12 * 1024),
                put_op("/pods/c", 12 * 1024),
            ],
            ..TxnRequest::default()
        };
        let (code, message) = refused_code(first.txn(&txn).await);
        assert_eq!(code, ErrorCode::RequestTooLarge, "{message}");

        eprintln!("phase: a txn nested 300 deep passes the reader's nesting limit and is refused, typed");
        let mut nested = TxnRequest { success: vec![put_op("/pods/a", 1)], ..TxnRequest::default() };
        for _ in 0..300 {
            nested = TxnRequest { success: vec![RequestOp::Txn(nested)], ..TxnRequest::default() };
        }
        let (code, message) = refused_code(first.txn(&nested).await);
        assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
        assert!(message.contains("nests pointers deeper than"), "{message}");
        let answer = first.range(&get("/pods/a"), false).await.expect("the same connection still serves");
        assert_eq!(answer.kvs[0].value, b"before", "nothing of the refused requests was applied");

        eprintln!("phase: a message far over the limit (1 MiB against 32 KiB) closes its connection only");
        let closed = first.put(b"/pods/a", &vec![b'v'; 1 << 20], 0, false).await;
        assert!(matches!(closed, Err(ClientError::Rpc { .. })), "{closed:?}");
        let after = first.range(&get("/pods/a"), false).await;
        assert!(matches!(after, Err(ClientError::Rpc { .. })), "the connection is closed: {after:?}");
        let answer = other.range(&get("/pods/a"), false).await.expect("another connection is served");
        assert_eq!(answer.kvs[0].value, b"before");
    });
    daemon.signal(libc::SIGTERM);
    let (exit, stderr) = daemon.wait_exit();
    assert_eq!(exit.code(), Some(0), "{stderr}");
}

fn get(key: &str) -> nvkv::kv::types::RangeRequest {
    nvkv::kv::types::RangeRequest { key: key.into(), ..Default::default() }
}
