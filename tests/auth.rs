//! Users, roles and permissions through the CLI against a real `nvkv
//! serve`, as an operator sets them up and as their users meet them:
//!
//! - once authentication is enabled, a client that names no user is
//!   refused, and one with a wrong password too;
//! - a reader can read and cannot put; a writer on `/a/` writes there and
//!   cannot touch `/b/`, not in a put, a delete, a txn or a watch;
//! - a user without the role root cannot add a member, compact or take a
//!   backup, and root can;
//! - the users and roles are in the backup: a store restored from it checks
//!   them as the original did;
//! - a client certificate's common name names its user, who gets its
//!   role's permissions and nothing more.

mod common;

use std::process::Command;

use common::pki::*;
use common::*;

/// Runs the CLI against `port` with `flags` before the command and returns
/// stdout, or stderr on failure.
fn nvkv(port: u16, flags: &[&str], args: &[&str]) -> Result<String, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["--endpoints", &format!("127.0.0.1:{port}")])
        .args(flags)
        .args(args)
        .output()
        .expect("the nvkv client runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn flags(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

/// A refusal that names its kind and, in its message, `naming`.
fn assert_refused(outcome: Result<String, String>, kind: &str, naming: &str) {
    let error = outcome.expect_err(&format!("refused with {kind}"));
    assert!(error.contains(kind), "the refusal is {kind}: {error}");
    assert!(error.contains(naming), "the refusal names {naming:?}: {error}");
}

const ROOT: &str = "--user=root:root-secret";
const READER: &str = "--user=reader:reader-secret";
const WRITER: &str = "--user=writer:writer-secret";

/// Adds root, a reader of `/t/a/` and `/t/b/`, a writer of `/t/a/`, and enables
/// authentication, as an operator would.
fn set_up_users(port: u16) {
    let admin = |args: &[&str]| nvkv(port, &[], args).unwrap_or_else(|error| panic!("{args:?}: {error}"));
    assert_eq!(admin(&["user", "add", "root", "--password", "root-secret"]), "User root created\n");
    admin(&["user", "add", "reader", "--password", "reader-secret"]);
    admin(&["user", "add", "writer", "--password", "writer-secret"]);
    assert_eq!(admin(&["role", "add", "read-all"]), "Role read-all created\n");
    admin(&["role", "grant-permission", "read-all", "read", "/t/a/", "--prefix"]);
    admin(&["role", "grant-permission", "read-all", "read", "/t/b/", "--prefix"]);
    admin(&["role", "add", "write-a"]);
    assert_eq!(
        admin(&["role", "grant-permission", "write-a", "readwrite", "/t/a/", "--prefix"]),
        "Role write-a updated\n"
    );
    admin(&["user", "grant-role", "reader", "read-all"]);
    assert_eq!(
        admin(&["user", "grant-role", "writer", "write-a"]),
        "Role write-a is granted to user writer\n"
    );
    // Written before checking starts, so the readers have something to read.
    admin(&["put", "/t/a/seed", "1"]);
    admin(&["put", "/t/b/seed", "1"]);
    // Like etcdctl: enable adds the role root and grants it to root.
    assert_eq!(admin(&["auth", "enable"]), "Authentication Enabled\n");
}

#[test]
fn users_and_roles_decide_who_may_read_write_watch_and_administer() {
    // One path segment chooses the group: /t/a/ and /t/b/ share one, so a
    // transaction may touch both and is refused for its permissions alone.
    let setup = Setup::new("[store]\npartition_depth = 1\n");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    set_up_users(port);

    eprintln!(
        "phase: with authentication on, a client that names no user is refused, and a wrong password too"
    );
    assert_eq!(
        nvkv(port, &[], &["auth", "status"]).expect("status needs no user").lines().next(),
        Some("Authentication Status: true")
    );
    assert_refused(nvkv(port, &[], &["get", "/t/a/seed"]), "Unauthenticated", "names no user");
    assert_refused(nvkv(port, &[], &["put", "/t/a/x", "1"]), "Unauthenticated", "--user NAME:PASSWORD");
    assert_refused(
        nvkv(port, &["--user=reader:wrong"], &["get", "/t/a/seed"]),
        "Unauthenticated",
        "\"reader\"",
    );
    assert_refused(nvkv(port, &["--user=nobody:x"], &["get", "/t/a/seed"]), "Unauthenticated", "\"nobody\"");

    eprintln!("phase: a reader reads and cannot put");
    assert_eq!(nvkv(port, &[READER], &["get", "/t/a/seed"]).expect("read"), "/t/a/seed\n1\n");
    assert_eq!(
        nvkv(port, &[READER], &["get", "/t/b/", "--prefix"]).expect("read a prefix"),
        "/t/b/seed\n1\n"
    );
    assert_refused(
        nvkv(port, &[READER], &["put", "/t/a/seed", "2"]),
        "PermissionDenied",
        "write permission on key \"/t/a/seed\"",
    );
    assert_refused(nvkv(port, &[READER], &["del", "/t/b/seed"]), "PermissionDenied", "write permission");
    assert_refused(
        nvkv(port, &[READER], &["get", "/t/c/seed"]),
        "PermissionDenied",
        "read permission on key \"/t/c/seed\"",
    );

    eprintln!(
        "phase: a writer on /t/a/ writes there, and cannot touch /t/b/ in a put, a delete, a txn or a watch"
    );
    assert_eq!(nvkv(port, &[WRITER], &["put", "/t/a/x", "1"]).expect("put in /t/a/"), "OK\n");
    assert_eq!(nvkv(port, &[WRITER], &["get", "/t/a/x"]).expect("get in /t/a/"), "/t/a/x\n1\n");
    assert_refused(
        nvkv(port, &[WRITER], &["put", "/t/b/x", "1"]),
        "PermissionDenied",
        "write permission on key \"/t/b/x\"",
    );
    assert_refused(nvkv(port, &[WRITER], &["get", "/t/b/seed"]), "PermissionDenied", "read permission");
    assert_refused(
        nvkv(port, &[WRITER], &["del", "/t/b/", "--prefix"]),
        "PermissionDenied",
        "write permission on range",
    );
    let txn = |text: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nvkv"))
            .args(["--endpoints", &format!("127.0.0.1:{port}"), WRITER, "txn"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nvkv txn runs");
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the txn");
        let output = child.wait_with_output().expect("nvkv txn ends");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    };
    assert_eq!(
        txn("mod(\"/t/a/x\") > 0\n\nput /t/a/x 2\n\nget /t/a/x\n").expect("a txn within /t/a/"),
        "SUCCESS\nOK\n"
    );
    // /t/b/ only in the branch that does not run: still refused, whole.
    assert_refused(
        txn("mod(\"/t/a/x\") > 0\n\nput /t/a/x 3\n\nput /t/b/x 3\n"),
        "PermissionDenied",
        "\"/t/b/x\"",
    );
    assert_refused(
        txn("value(\"/t/b/seed\") = \"1\"\n\nput /t/a/x 4\n\n"),
        "PermissionDenied",
        "read permission on key \"/t/b/seed\"",
    );
    assert_eq!(
        nvkv(port, &[WRITER], &["get", "/t/a/x"]).expect("get"),
        "/t/a/x\n2\n",
        "refused txns changed nothing"
    );
    assert_refused(
        nvkv(port, &[WRITER], &["watch", "/t/b/", "--prefix", "--count", "1"]),
        "PermissionDenied",
        "read permission on range",
    );
    assert_refused(
        nvkv(port, &[WRITER], &["watch", "/t/", "--prefix", "--count", "1"]),
        "PermissionDenied",
        "read permission",
    );
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args([
            "--endpoints",
            &format!("127.0.0.1:{port}"),
            WRITER,
            "watch",
            "/t/a/",
            "--prefix",
            "--count",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("a watch of /t/a/ starts");
    // Puts until the watch, once it is open, has seen one.
    let deadline = std::time::Instant::now() + DEADLINE;
    while watcher.try_wait().expect("try_wait").is_none() && std::time::Instant::now() < deadline {
        nvkv(port, &[WRITER], &["put", "/t/a/watched", "w"]).expect("put");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let output = watcher.wait_with_output().expect("the watch ends after one event");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("/t/a/watched"));

    eprintln!("phase: without the role root, no member add, no compaction, no backup, no user changes");
    let backup = setup.directory.path().join("store.backup");
    let backup_text = backup.to_str().expect("path").to_string();
    let member_add =
        ["member", "add", "9", "--name", "n9", "--peer-urls", "127.0.0.1:1", "--client-urls", "127.0.0.1:2"];
    assert_refused(
        nvkv(port, &[WRITER], &member_add),
        "PermissionDenied",
        "the root role (membership changes)",
    );
    assert_refused(
        nvkv(port, &[WRITER], &["compact", "1", "--group", "0"]),
        "PermissionDenied",
        "the root role (compaction)",
    );
    assert_refused(
        nvkv(port, &[WRITER], &["snapshot", "save", &backup_text]),
        "PermissionDenied",
        "the root role (backups)",
    );
    assert!(!backup.exists(), "a refused backup leaves no file");
    assert_refused(
        nvkv(port, &[WRITER], &["user", "add", "mallory", "--password", "m"]),
        "PermissionDenied",
        "the root role",
    );
    assert_refused(nvkv(port, &[WRITER], &["user", "list"]), "PermissionDenied", "the root role");
    assert_refused(nvkv(port, &[READER], &["auth", "disable"]), "PermissionDenied", "the root role");

    eprintln!("phase: root may do all of it");
    nvkv(port, &[ROOT], &["snapshot", "save", &backup_text]).expect("root takes a backup");
    let status = nvkv(port, &[ROOT, "-w", "json"], &["get", "/t/a/x"]).expect("root reads");
    let json: serde_json::Value = serde_json::from_str(&status).expect("json");
    let (group, revision) = (
        json["header"]["group"].as_u64().expect("group"),
        json["header"]["revision"].as_i64().expect("revision"),
    );
    nvkv(port, &[ROOT], &["compact", &revision.to_string(), "--group", &group.to_string()])
        .expect("root compacts");
    assert_eq!(nvkv(port, &[ROOT], &["user", "list"]).expect("root lists users"), "reader\nroot\nwriter\n");
    assert_eq!(
        nvkv(port, &[ROOT], &["user", "get", "root"]).expect("root's roles"),
        "User: root\nRoles: root\n"
    );

    eprintln!("phase: a revoked permission is refused at once; user delete ends the user's sessions");
    nvkv(port, &[ROOT], &["role", "revoke-permission", "write-a", "/t/a/", "--prefix"]).expect("revoke");
    assert_refused(nvkv(port, &[WRITER], &["put", "/t/a/x", "5"]), "PermissionDenied", "write permission");
    nvkv(port, &[ROOT], &["user", "delete", "reader"]).expect("delete reader");
    assert_refused(nvkv(port, &[READER], &["get", "/t/a/seed"]), "Unauthenticated", "\"reader\"");
    assert_refused(
        nvkv(port, &[ROOT], &["user", "delete", "root"]),
        "AuthRefused",
        "disable authentication first",
    );

    eprintln!("phase: the backup carries the users and roles: a store restored from it checks them");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "clean stop: {stderr}");
    let restored = setup.directory.path().join("restored");
    let output = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["snapshot", "restore", &backup_text, "--data-dir", restored.to_str().expect("path")])
        .args(["--config", setup.config.to_str().expect("path")])
        .output()
        .expect("restore runs");
    assert!(output.status.success(), "restore: {}", String::from_utf8_lossy(&output.stderr));
    let mut daemon =
        Daemon::start_with_args(&setup.config, &["--data-dir", restored.to_str().expect("path")]);
    let port = ready_port(&daemon.wait_ready());
    assert!(nvkv(port, &[], &["auth", "status"]).expect("status").starts_with("Authentication Status: true"));
    assert_refused(nvkv(port, &[], &["get", "/t/a/seed"]), "Unauthenticated", "names no user");
    assert_eq!(
        nvkv(port, &[READER], &["get", "/t/a/seed"]).expect("the reader, as backed up"),
        "/t/a/seed\n1\n"
    );
    assert_refused(nvkv(port, &[READER], &["put", "/t/a/seed", "2"]), "PermissionDenied", "write permission");
    assert_eq!(nvkv(port, &[WRITER], &["put", "/t/a/y", "1"]).expect("the writer, as backed up"), "OK\n");
}

#[test]
fn a_client_certificate_names_a_user_who_gets_its_roles() {
    let directory = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new(directory.path(), "ca");
    let clients = Authority::new(directory.path(), "clients-ca");
    let server = ca.issue("server", &["127.0.0.1"]);
    // The common name (the file name here) names the user.
    let pods = clients.issue("pods-reader", &[]);
    let stranger = clients.issue("not-a-user", &[]);
    let setup = Setup::new(&client_tls_section(&server, Some(&clients.certificate_file())));
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let ca_file = path_text(&ca.certificate_file());
    let with = |certificate: &(std::path::PathBuf, std::path::PathBuf)| {
        vec![
            "--cacert".to_string(),
            ca_file.clone(),
            "--cert".to_string(),
            path_text(&certificate.0),
            "--key".to_string(),
            path_text(&certificate.1),
        ]
    };
    let (pods_flags, stranger_flags) = (with(&pods), with(&stranger));
    let admin = |args: &[&str]| {
        nvkv(port, &flags(&stranger_flags), args).unwrap_or_else(|error| panic!("{args:?}: {error}"))
    };

    eprintln!("phase: a user without a password for the certificate, with a role on /pods/");
    admin(&["user", "add", "root", "--password", "root-secret"]);
    assert_eq!(admin(&["user", "add", "pods-reader", "--no-password"]), "User pods-reader created\n");
    admin(&["role", "add", "pods"]);
    admin(&["role", "grant-permission", "pods", "read", "/pods/", "--prefix"]);
    admin(&["user", "grant-role", "pods-reader", "pods"]);
    admin(&["put", "/pods/a", "1"]);
    admin(&["put", "/nodes/a", "1"]);
    admin(&["auth", "enable"]);

    eprintln!("phase: the certificate's user reads /pods/ and nothing else, with no password");
    assert_eq!(
        nvkv(port, &flags(&pods_flags), &["get", "/pods/a"]).expect("its role's keys"),
        "/pods/a\n1\n"
    );
    assert_refused(
        nvkv(port, &flags(&pods_flags), &["get", "/nodes/a"]),
        "PermissionDenied",
        "user \"pods-reader\"",
    );
    assert_refused(
        nvkv(port, &flags(&pods_flags), &["put", "/pods/a", "2"]),
        "PermissionDenied",
        "write permission",
    );
    let mut with_password = flags(&pods_flags);
    with_password.push("--user=pods-reader:guess");
    assert_refused(nvkv(port, &with_password, &["get", "/pods/a"]), "Unauthenticated", "\"pods-reader\"");

    eprintln!("phase: a certificate whose name is no user is refused; --user over it acts as that user");
    assert_refused(
        nvkv(port, &flags(&stranger_flags), &["get", "/pods/a"]),
        "Unauthenticated",
        "\"not-a-user\"",
    );
    let mut as_root = flags(&stranger_flags);
    as_root.push(ROOT);
    assert_eq!(
        nvkv(port, &as_root, &["get", "/nodes/a"]).expect("root over the certificate"),
        "/nodes/a\n1\n"
    );
}

/// Runs `future` on a single-threaded runtime inside a `LocalSet`, as the
/// client library needs.
fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(tokio::task::LocalSet::new().run_until(future))
}

/// The typed refusal of `result`: its code and message.
fn refusal<T: std::fmt::Debug>(
    result: Result<T, nvkv::rpc::client::ClientError>,
) -> (nvkv::rpc::kv::ErrorCode, String) {
    match result {
        Err(nvkv::rpc::client::ClientError::Refused { error, .. }) => (error.code, error.message),
        other => panic!("expected a typed refusal, got {other:?}"),
    }
}

/// Opens a raw KV stream to `port` with `token` (version 2 of the opening
/// when there is one): the stream, or the node's typed refusal.
async fn raw_stream(
    port: u16,
    token: Option<&str>,
) -> Result<nvkv::rpc::kv_stream_client::KvStream, nvkv::rpc::kv::ServerError> {
    use nvkv::rpc::kv_stream_client::{KvStream, OpenError};
    let endpoint = format!("127.0.0.1:{port}");
    let (reader, writer) = tokio::net::TcpStream::connect(&endpoint).await.expect("connect").into_split();
    match KvStream::open(reader, writer, &endpoint, std::time::Duration::from_secs(10), token).await {
        Ok(stream) => Ok(stream),
        Err(OpenError::Refused(refusal)) => Err(refusal),
        Err(OpenError::Failed(reason)) => panic!("the node did not answer the opening: {reason}"),
    }
}

/// A put over a raw KV stream: its typed refusal, if any.
async fn stream_put(
    stream: &nvkv::rpc::kv_stream_client::KvStream,
    key: &str,
) -> Result<(), nvkv::rpc::kv::ServerError> {
    use nvkv::rpc::kv_stream_client::{Replied, StreamCall};
    let put = nvkv::kv::types::PutRequest { key: key.into(), value: b"1".to_vec(), ..Default::default() };
    match stream.call(StreamCall::Kv(nvkv::rpc::kv::KvRequest::Put(put))).await {
        Ok((Replied::Put(answer), _)) => answer.map(|_| ()),
        other => panic!("a put's reply, not {other:?}"),
    }
}

#[test]
fn a_password_user_s_kv_calls_go_over_the_kv_stream_checked_like_its_rpc_calls() {
    use nvkv::rpc::client::ShardedClient;
    use nvkv::rpc::kv::ErrorCode;
    let setup = Setup::new("[store]\npartition_depth = 1\n[auth]\ntoken_ttl_seconds = 5\n");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    set_up_users(port);
    let endpoint = format!("127.0.0.1:{port}");
    let root = |args: &[&str]| nvkv(port, &[ROOT], args).unwrap_or_else(|error| panic!("{args:?}: {error}"));

    run(async {
        eprintln!("phase: a writer logged in puts and gets over its shards' KV streams");
        let mut writer = ShardedClient::open(&endpoint).await.expect("connect");
        let token = writer.login("writer", "writer-secret").await.expect("log in");
        // The token was made before this: it expires within the ttl plus a second.
        let logged_in_at = std::time::Instant::now();
        let groups = writer.partition_map().groups;
        for group in 0..groups {
            assert!(writer.for_group(group).has_kv_stream(), "group {group}'s shard keeps its KV stream");
        }
        writer.put(b"/t/a/stream", b"1", 0, false).await.expect("a put in /t/a/ over the stream");
        let read = nvkv::kv::types::RangeRequest { key: b"/t/a/stream".to_vec(), ..Default::default() };
        let answer = writer.range(&read, false).await.expect("a get over the stream");
        assert_eq!(answer.kvs.first().map(|kv| kv.value.clone()), Some(b"1".to_vec()));

        eprintln!("phase: without the permission the put is refused typed, naming it");
        let (code, message) = refusal(writer.put(b"/t/b/x", b"1", 0, false).await);
        assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
        assert!(message.contains("write permission on key \"/t/b/x\""), "{message}");

        eprintln!("phase: a stream with the token acts for its user; one without names nobody");
        let stream = raw_stream(port, Some(&token)).await.expect("the token opens a stream");
        stream_put(&stream, "/t/a/raw").await.expect("the writer's put");
        let anonymous = raw_stream(port, None).await.expect("an old client's stream still opens");
        let refused = stream_put(&anonymous, "/t/a/raw").await.expect_err("nobody may put");
        assert_eq!(refused.code, ErrorCode::Unauthenticated, "{}", refused.message);

        eprintln!("phase: a bad token is refused at the opening, typed, saying why");
        let refused = raw_stream(port, Some("not-a-token")).await.err().expect("refused");
        assert_eq!(refused.code, ErrorCode::Unauthenticated, "{}", refused.message);
        assert!(refused.message.contains("not NAME.EXPIRY.MAC"), "{}", refused.message);
        let mut forged = token.clone();
        let last = if forged.ends_with('0') { "1" } else { "0" };
        forged.replace_range(forged.len() - 1.., last);
        let refused = raw_stream(port, Some(&forged)).await.err().expect("refused");
        assert_eq!(refused.code, ErrorCode::Unauthenticated, "{}", refused.message);
        assert!(refused.message.contains("not signed"), "{}", refused.message);

        eprintln!("phase: a role revoked refuses the stream's next call");
        root(&["user", "revoke-role", "writer", "write-a"]);
        let (code, message) = refusal(writer.put(b"/t/a/stream", b"2", 0, false).await);
        assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
        let refused = stream_put(&stream, "/t/a/raw").await.expect_err("revoked");
        assert_eq!(refused.code, ErrorCode::PermissionDenied, "{}", refused.message);
        root(&["user", "grant-role", "writer", "write-a"]);
        writer.put(b"/t/a/stream", b"3", 0, false).await.expect("granted again");

        eprintln!("phase: a user deleted is refused on its stream's next call");
        root(&["user", "delete", "writer"]);
        let (code, message) = refusal(writer.put(b"/t/a/stream", b"4", 0, false).await);
        assert_eq!(code, ErrorCode::Unauthenticated, "{message}");
        assert!(message.contains("\"writer\""), "{message}");

        eprintln!("phase: an expired token is refused at the opening, saying so");
        let ttl = std::time::Duration::from_secs(6);
        tokio::time::sleep(ttl.saturating_sub(logged_in_at.elapsed())).await;
        let refused = raw_stream(port, Some(&token)).await.err().expect("refused");
        assert_eq!(refused.code, ErrorCode::Unauthenticated, "{}", refused.message);
        assert!(refused.message.contains("expired"), "{}", refused.message);
    });

    eprintln!("phase: nvkv bench acts as --user over its streams, and is refused without");
    let bench = ["bench", "put", "--total", "40", "--clients", "2", "--conns", "2", "--key-space", "100"];
    nvkv(port, &[ROOT], &bench).expect("bench put as root");
    let refused = nvkv(port, &[], &bench).expect_err("bench put as nobody");
    assert!(refused.contains("Unauthenticated"), "{refused}");
}

/// On a cluster the client library sends a group's calls to the member
/// leading it, over links it opens in the background: a client that logged
/// in opens them with its session, so routed calls act for its user too.
#[test]
fn calls_routed_to_another_member_s_leader_act_for_the_logged_in_user() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (_members, _daemons, entry, _) = cluster_with_users(directory.path(), "");
    let endpoint = format!("127.0.0.1:{}", entry.client_port);
    run(async {
        let mut client = nvkv::rpc::client::ShardedClient::open(&endpoint).await.expect("connect");
        client.login("root", "root-secret").await.expect("log in");
        // The first calls open the links; the later ones take them.
        put_each_group(&client, 10).await;
    });
}

/// A 3-member cluster of 4 groups (each member's config with `extra`
/// appended), its users set up through the member that leads the fewest
/// groups, so most of a client's calls there go to other members' leaders.
/// Returns the members, their daemons, that member and each group's leader.
fn cluster_with_users(
    directory: &std::path::Path,
    extra: &str,
) -> (Vec<common::cluster::Member>, Vec<Daemon>, common::cluster::Member, Vec<u64>) {
    use common::cluster::{agreed_leaders, cluster_configs, eventually, leaders};
    let members = cluster_configs(directory, 4);
    for member in &members {
        let config = std::fs::read_to_string(&member.config).expect("config");
        std::fs::write(&member.config, format!("{config}\n{extra}")).expect("config");
    }
    let mut daemons: Vec<Daemon> = members.iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }
    let agreed = eventually("one leader per group, the same on every member", || {
        agreed_leaders(&members.iter().map(|member| leaders(member.client_port)).collect::<Vec<_>>())
    });
    let entry = members
        .iter()
        .min_by_key(|member| agreed.iter().filter(|leader| **leader == member.id).count())
        .expect("members")
        .clone();
    assert!(agreed.iter().any(|leader| *leader != entry.id), "another member leads a group: {agreed:?}");
    set_up_users(entry.client_port);
    (members, daemons, entry, agreed)
}

/// Writes `/routed-*` keys, one per group, in `rounds` rounds 100 ms apart,
/// through `client`.
async fn put_each_group(client: &nvkv::rpc::client::ShardedClient, rounds: u32) {
    let map = client.partition_map().clone();
    let partitioner =
        nvkv::kv::partition::Partitioner::new(map.groups, map.partition_depth as usize).expect("map");
    let keys: Vec<String> = (0..map.groups)
        .map(|group| {
            (0..)
                .map(|index| format!("/routed-{index}/x/k"))
                .find(|key| partitioner.group_of(key.as_bytes()) == group)
                .expect("a key in every group")
        })
        .collect();
    for round in 0..rounds {
        for key in &keys {
            client
                .put(key.as_bytes(), round.to_string().as_bytes(), 0, false)
                .await
                .unwrap_or_else(|error| panic!("root's put of {key} in round {round}: {error}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Writes a member forwarded to other members' leaders so far.
fn forwarded_by(port: u16) -> u64 {
    status_json(port)[0]["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .flat_map(|shard| shard["hops"].as_array().cloned().unwrap_or_default())
        .filter(|hop| hop["name"] == "forwarded to leader")
        .map(|hop| hop["count"].as_u64().unwrap_or(0))
        .sum()
}

/// A session token expires (`auth.token_ttl_seconds`); the client library
/// opens its links to other members' leaders in the background, and one
/// opened after that logs in again with the name and password the client
/// logged in with, so the calls keep going straight to the leaders instead
/// of being forwarded by the endpoint for good.
#[test]
fn a_leader_link_opened_after_the_token_expired_logs_in_again() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (_members, _daemons, entry, agreed) =
        cluster_with_users(directory.path(), "[auth]\ntoken_ttl_seconds = 1\n");
    let led_elsewhere = agreed.iter().filter(|leader| **leader != entry.id).count() as u64;
    let endpoint = format!("127.0.0.1:{}", entry.client_port);
    run(async {
        let mut client = nvkv::rpc::client::ShardedClient::open(&endpoint).await.expect("connect");
        client.login("root", "root-secret").await.expect("log in");
        eprintln!("phase: the token expires before any link to another member opens");
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        eprintln!("phase: the first puts open the links (forwarded meanwhile)");
        put_each_group(&client, 10).await;
        let before = forwarded_by(entry.client_port);
        eprintln!("phase: the later ones go straight to the leaders ({before} forwarded so far)");
        put_each_group(&client, 20).await;
        let forwarded = forwarded_by(entry.client_port) - before;
        // Without a new login every one of them (20 per group led
        // elsewhere) is forwarded; a leader change may send a few.
        assert!(
            forwarded < 10,
            "{forwarded} of {} puts to groups other members lead were forwarded by the endpoint: its links \
             did not open after the token expired",
            20 * led_elsewhere
        );
    });
}
