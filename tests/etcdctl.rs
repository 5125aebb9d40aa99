//! etcdctl (Debian's etcd-client, etcd 3.4's etcdctl) against nvkv's etcd
//! API, and the same commands against a real etcd (Debian's etcd-server):
//! put, get (prefix, limit, rev, keys-only, sort), del, txn (interactive
//! input), watch (prefix, rev, prev-kv), lease grant / keep-alive /
//! timetolive / list / revoke, compaction, member list, endpoint status and
//! health as JSON. The two transcripts must be the same once numbers and
//! lease ids (which differ between any two stores) are masked; where even
//! the shape of an answer names the store (member names, URLs, JSON
//! numbers), the fields are compared instead.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::pki::{client_tls_section, path_text, Authority};
use common::*;

const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Runs etcdctl against `endpoint` with `input` on stdin; its stdout, or a
/// panic with what it said.
fn etcdctl(endpoint: &str, args: &[&str], input: Option<&str>) -> String {
    etcdctl_outcome(endpoint, args, input).unwrap_or_else(|failure| panic!("{failure}"))
}

/// etcdctl's stdout, or what it said when it failed.
fn etcdctl_outcome(endpoint: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl runs");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("etcdctl ends");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "etcdctl {args:?} against {endpoint} failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(stdout)
}

/// What `etcdctl watch ARGS` prints within `wait` (then it is stopped).
fn etcdctl_watch(endpoint: &str, args: &[&str], lines: usize) -> String {
    let mut child = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch runs");
    let mut stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut buffer = [0u8; 4096];
        while let Ok(read) = stdout.read(&mut buffer) {
            if read == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buffer[..read]));
            let _ = sender.send(text.clone());
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let mut seen = String::new();
    while seen.lines().count() < lines && Instant::now() < deadline {
        if let Ok(text) = receiver.recv_timeout(Duration::from_millis(100)) {
            seen = text;
        }
    }
    // Nothing more may come: wait a little for anything extra.
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(text) = receiver.try_recv() {
        seen = text;
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

/// Masks what differs between any two stores: lease ids (16 hex digits)
/// and numbers (revisions, TTLs left, also inside words: `59s`).
fn masked(text: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() == 16 && word.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push_str("<ID>");
        } else {
            let mut digits = false;
            for character in word.chars() {
                if character.is_ascii_digit() {
                    if !digits {
                        out.push_str("<N>");
                    }
                    digits = true;
                } else {
                    out.push(character);
                    digits = false;
                }
            }
        }
        word.clear();
    };
    for character in text.chars() {
        if character.is_ascii_alphanumeric() {
            word.push(character);
        } else {
            flush(&mut word, &mut out);
            out.push(character);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The keys of a JSON value, recursively ("a.b", arrays as "a[]").
fn shape(value: &serde_json::Value, path: &str, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                let path = format!("{path}.{key}");
                into.push(path.clone());
                shape(field, &path, into);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                shape(item, &format!("{path}[]"), into);
            }
        }
        _ => {}
    }
}

fn json_shape(text: &str) -> Vec<String> {
    let value: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|error| panic!("{error}: {text}"));
    let mut keys = Vec::new();
    shape(&value, "", &mut keys);
    keys.sort();
    keys.dedup();
    keys
}

/// Every command of the test against one store; the transcript, and the
/// answers compared field by field.
struct Transcript {
    lines: Vec<String>,
    member_list: String,
    status: String,
    health: String,
}

fn session(endpoint: &str) -> Transcript {
    let mut lines = Vec::new();
    let mut step = |args: &[&str], input: Option<&str>| {
        let output = etcdctl(endpoint, args, input);
        lines.push(format!("$ etcdctl {}\n{}", masked(&args.join(" ")), masked(&output)));
        output
    };
    step(&["put", "/registry/pods/a", "alpha"], None);
    step(&["put", "/registry/pods/b", "bravo"], None);
    step(&["put", "/registry/pods/c", "charlie"], None);
    let read: serde_json::Value =
        serde_json::from_str(&etcdctl(endpoint, &["get", "/registry/pods/a", "-w", "json"], None))
            .expect("json");
    let first = read["kvs"][0]["mod_revision"].as_i64().expect("mod_revision").to_string();
    step(&["put", "/registry/pods/a", "alpha2"], None);
    step(&["get", "/registry/pods/", "--prefix"], None);
    step(&["get", "/registry/pods/", "--prefix", "--limit", "2"], None);
    step(&["get", "/registry/pods/a", "--rev", &first], None);
    step(&["get", "/registry/pods/", "--prefix", "--keys-only"], None);
    step(&["get", "/registry/pods/", "--prefix", "--sort-by=VALUE", "--order=DESCEND"], None);
    step(
        &["get", "/registry/pods/", "--prefix", "--sort-by=MODIFY", "--order=ASCEND", "--print-value-only"],
        None,
    );
    step(&["del", "/registry/pods/b"], None);
    let txn =
        "value(\"/registry/pods/a\") = \"alpha2\"\n\nput /registry/pods/t yes\n\nput /registry/pods/t no\n\n";
    step(&["txn", "-i"], Some(txn));
    step(&["txn", "-i"], Some(&txn.replace("alpha2", "nope")));
    step(&["get", "/registry/pods/t"], None);
    // From the first write: every event since, with the values before.
    let watched = etcdctl_watch(endpoint, &["/registry/pods/", "--prefix", "--rev", &first, "--prev-kv"], 23);
    let granted = step(&["lease", "grant", "60"], None);
    let lease = granted.split_whitespace().nth(1).expect("lease grant names the id").to_string();
    step(&["put", "/registry/leases/x", "held", "--lease", &lease], None);
    step(&["lease", "keep-alive", "--once", &lease], None);
    step(&["lease", "timetolive", &lease, "--keys"], None);
    step(&["lease", "list"], None);
    step(&["lease", "revoke", &lease], None);
    step(&["get", "/registry/leases/x"], None);
    step(&["compaction", &first], None);
    lines.push(format!("$ etcdctl watch /registry/pods/ --prefix --rev <N> --prev-kv\n{}", masked(&watched)));
    Transcript {
        lines,
        member_list: etcdctl(endpoint, &["member", "list"], None),
        status: etcdctl(endpoint, &["endpoint", "status", "-w", "json"], None),
        health: etcdctl(endpoint, &["endpoint", "health", "-w", "json"], None),
    }
}

#[test]
fn etcdctl_answers_from_nvkv_as_from_etcd() {
    assert!(
        Path::new(ETCDCTL).exists(),
        "{ETCDCTL} is missing: this test runs etcd's own command line; run scripts/setup.sh (as root) to install \
         Debian's etcd-client"
    );
    let setup = Setup::new("");
    let mut daemon = Daemon::start(&setup.config);
    let nvkv_endpoint = ready_etcd_endpoint(&daemon.wait_ready());
    let etcd = Etcd::start();
    let etcd_endpoint = format!("127.0.0.1:{}", etcd.client_port);

    eprintln!("phase: the same etcdctl session against etcd and against nvkv");
    let expected = session(&etcd_endpoint);
    let got = session(&nvkv_endpoint);
    for (etcd_step, nvkv_step) in expected.lines.iter().zip(&got.lines) {
        assert_eq!(nvkv_step, etcd_step, "nvkv answered otherwise than etcd (left nvkv, right etcd)");
    }
    assert_eq!(got.lines.len(), expected.lines.len());
    assert!(got.lines.iter().any(|step| step.contains("SUCCESS")), "the txn ran: {:?}", got.lines);
    assert!(got.lines.iter().any(|step| step.contains("alpha<N>")), "values came back: {:?}", got.lines);

    eprintln!("phase: member list, endpoint status and health: the same fields");
    for listing in [&expected.member_list, &got.member_list] {
        let fields: Vec<&str> = listing.trim().split(", ").collect();
        assert_eq!(fields.len(), 6, "ID, status, name, peer URLs, client URLs, learner: {listing}");
        assert_eq!((fields[1], fields[5]), ("started", "false"), "{listing}");
        assert!(fields[4].starts_with("http://127.0.0.1:"), "{listing}");
    }
    assert!(got.member_list.contains(&format!("http://{nvkv_endpoint}")), "{}", got.member_list);
    assert_eq!(json_shape(&got.status), json_shape(&expected.status), "{}\n{}", got.status, expected.status);
    assert_eq!(json_shape(&got.health), json_shape(&expected.health), "{}\n{}", got.health, expected.health);
    assert!(got.health.contains("\"health\":true"), "{}", got.health);
    let status: serde_json::Value = serde_json::from_str(&got.status).expect("json");
    assert_eq!(status[0]["Status"]["version"], "3.5.17");
    drop(daemon.child.kill());
}

#[test]
fn the_etcd_port_speaks_the_client_ports_tls_and_checks_client_certificates() {
    let directory = tempfile::tempdir().expect("temp dir");
    let authority = Authority::new(directory.path(), "ca");
    let server = authority.issue("server", &["127.0.0.1"]);
    let clients = Authority::new(directory.path(), "clients");
    let client = clients.issue("client", &["client"]);
    let setup = Setup::new(&client_tls_section(&server, Some(&clients.certificate_file())));
    let mut daemon = Daemon::start(&setup.config);
    let endpoint = format!("https://{}", ready_etcd_endpoint(&daemon.wait_ready()));
    let ca = format!("--cacert={}", path_text(&authority.certificate_file()));
    let certificate = [format!("--cert={}", path_text(&client.0)), format!("--key={}", path_text(&client.1))];

    eprintln!("phase: etcdctl over TLS with a client certificate the port's CA signed");
    let args = |command: &[&str]| -> Vec<String> {
        let mut all = vec![ca.clone(), certificate[0].clone(), certificate[1].clone()];
        all.extend(command.iter().map(|arg| arg.to_string()));
        all
    };
    let put = args(&["put", "/registry/secrets/s", "sealed"]);
    let put: Vec<&str> = put.iter().map(String::as_str).collect();
    assert_eq!(etcdctl(&endpoint, &put, None), "OK\n");
    let get = args(&["get", "/registry/secrets/s"]);
    let get: Vec<&str> = get.iter().map(String::as_str).collect();
    assert_eq!(etcdctl(&endpoint, &get, None), "/registry/secrets/s\nsealed\n");

    eprintln!("phase: without a client certificate, or in plaintext, nothing is served");
    let timeout = "--command-timeout=2s";
    let refused = etcdctl_outcome(&endpoint, &[ca.as_str(), timeout, "get", "/registry/secrets/s"], None);
    assert!(refused.is_err(), "served without a client certificate: {refused:?}");
    let plain = endpoint.replace("https://", "http://");
    let refused = etcdctl_outcome(&plain, &[timeout, "get", "/registry/secrets/s"], None);
    assert!(refused.is_err(), "served in plaintext: {refused:?}");
    drop(daemon.child.kill());
}

/// One etcdctl command of the auth session: its masked output, or the
/// error line it ended with.
fn auth_step(endpoint: &str, args: &[&str], input: Option<&str>) -> String {
    let shown = format!("$ etcdctl {}\n", args.join(" "));
    match etcdctl_outcome(endpoint, args, input) {
        Ok(output) => shown + &masked(&output),
        Err(failure) => {
            let error =
                failure.lines().find(|line| line.starts_with("Error:")).unwrap_or(&failure).to_string();
            format!("{shown}FAILED {error}\n")
        }
    }
}

/// Users, roles and permissions set up and used through etcdctl.
fn auth_session(endpoint: &str) -> Vec<String> {
    let root = "--user=root:root-secret";
    let alice = "--user=alice:alice-secret";
    let bob = "--user=bob:bob-secret";
    let steps: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["user", "add", "root", "--new-user-password=root-secret", "--interactive=false"], None),
        (vec!["role", "add", "reader"], None),
        (vec!["role", "grant-permission", "reader", "read", "/a/", "--prefix=true"], None),
        (vec!["role", "add", "writer"], None),
        (vec!["role", "grant-permission", "writer", "readwrite", "/a/x"], None),
        (vec!["user", "add", "alice", "--new-user-password=alice-secret", "--interactive=false"], None),
        (vec!["user", "grant-role", "alice", "reader"], None),
        (vec!["user", "add", "bob", "--new-user-password=bob-secret", "--interactive=false"], None),
        (vec!["user", "grant-role", "bob", "writer"], None),
        (vec!["auth", "enable"], None),
        (vec![root, "put", "/a/x", "1"], None),
        (vec!["get", "/a/x"], None),
        (vec![alice, "get", "/a/x"], None),
        (vec![alice, "put", "/a/x", "2"], None),
        (vec!["--user=alice:wrong", "get", "/a/x"], None),
        (vec![bob, "put", "/a/x", "2"], None),
        (vec![bob, "put", "/a/y", "2"], None),
        (vec![bob, "get", "/a/", "--prefix"], None),
        (vec![bob, "txn", "-i"], Some("mod(\"/a/x\") > \"0\"\n\nput /a/y 3\n\n\n")),
        (vec![bob, "txn", "-i"], Some("mod(\"/a/x\") > \"0\"\n\nput /a/x 3\n\n\n")),
        (vec![root, "role", "get", "reader"], None),
        (vec![root, "role", "get", "writer"], None),
        (vec![root, "user", "get", "alice"], None),
        (vec![root, "user", "list"], None),
        (vec![root, "role", "list"], None),
        (vec![alice, "user", "list"], None),
        (vec![alice, "role", "add", "mine"], None),
        (vec![root, "role", "revoke-permission", "writer", "/a/x"], None),
        (vec![bob, "put", "/a/x", "4"], None),
        (vec![root, "user", "revoke-role", "alice", "reader"], None),
        (vec![alice, "get", "/a/x"], None),
        (vec![root, "user", "delete", "bob"], None),
        (vec![bob, "get", "/a/x"], None),
        (vec![root, "user", "delete", "root"], None),
        (vec![root, "auth", "disable"], None),
        (vec!["put", "/a/z", "1"], None),
        (vec!["get", "/a/", "--prefix"], None),
    ];
    steps.iter().map(|(args, input)| auth_step(endpoint, args, *input)).collect()
}

#[test]
fn etcdctl_users_roles_and_permissions_work_on_nvkv_as_on_etcd() {
    assert!(
        Path::new(ETCDCTL).exists(),
        "{ETCDCTL} is missing: run scripts/setup.sh (as root) to install it"
    );
    // One segment chooses the group, so a txn over /a/x and /a/y is one
    // group's and is refused for its permissions alone, as etcd refuses it.
    let setup = Setup::new("[store]\npartition_depth = 1\n");
    let mut daemon = Daemon::start(&setup.config);
    let nvkv_endpoint = ready_etcd_endpoint(&daemon.wait_ready());
    let etcd = Etcd::start();
    let etcd_endpoint = format!("127.0.0.1:{}", etcd.client_port);

    eprintln!("phase: the same user, role and auth session against etcd and against nvkv");
    let expected = auth_session(&etcd_endpoint);
    let got = auth_session(&nvkv_endpoint);
    eprintln!("{}", got.join(""));
    for (etcd_step, nvkv_step) in expected.iter().zip(&got) {
        assert_eq!(nvkv_step, etcd_step, "nvkv answered otherwise than etcd (left nvkv, right etcd)");
    }
    assert_eq!(got.len(), expected.len());
    for refusal in ["permission denied", "user name is empty", "authentication failed"] {
        assert!(
            got.iter().any(|step| step.contains(refusal)),
            "some step was refused with {refusal:?}: {got:#?}"
        );
    }
    drop(daemon.child.kill());
}
