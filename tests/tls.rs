//! TLS on the client and peer ports, with real `nvkv serve` processes and
//! the CLI over real sockets. Certificates are minted with rcgen into each
//! test's temp directory: a CA, a server certificate for 127.0.0.1, client
//! certificates, and a second CA that nobody trusts.
//!
//! - a TLS client port serves `--cacert` clients and refuses plaintext ones
//!   and ones that trust another CA, saying why;
//! - with mutual TLS a client without a certificate is refused;
//! - three members run with peer TLS (and client TLS) and replicate;
//! - a member whose peer certificate another CA signed cannot join;
//! - a member whose certificate names member 2 cannot say hello as member
//!   3, and a client certificate of the cluster's CA is refused on the peer
//!   port: every member's peer certificate names it;
//! - plaintext on a non-loopback address needs `tls.insecure`, which warns.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::pki::*;
use common::*;

/// The peer lines of `[tls]`.
fn peer_tls_lines(peer: &(PathBuf, PathBuf), ca: &Path) -> String {
    format!(
        "peer_cert_file = {:?}\npeer_key_file = {:?}\npeer_ca_file = {:?}\n",
        path_text(&peer.0),
        path_text(&peer.1),
        path_text(ca)
    )
}

/// Runs the CLI against `127.0.0.1:port` with `tls` flags (--cacert ...)
/// and returns stdout, or stderr on failure, with how long it took.
fn cli(port: u16, tls: &[&str], args: &[&str]) -> (Result<String, String>, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["--endpoints", &format!("127.0.0.1:{port}")])
        .args(tls)
        .args(args)
        .output()
        .expect("the nvkv client runs");
    let result = if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    };
    (result, started.elapsed())
}

/// Every group's leader as the member at `port` sees it (its status over TLS).
fn tls_leaders(port: u16, tls: &[&str]) -> Result<Vec<u64>, String> {
    let status = cli(port, tls, &["status", "-w", "json"]).0?;
    let json: serde_json::Value = serde_json::from_str(&status).map_err(|error| error.to_string())?;
    let groups = json[0]["groups"].as_array().ok_or("no groups")?;
    Ok(groups.iter().map(|group| group["leader"].as_u64().unwrap_or(0)).collect())
}

/// Appends `text` to the config file at `path`.
fn append(path: &Path, text: &str) {
    let mut config = std::fs::read_to_string(path).expect("read config");
    config.push_str(text);
    std::fs::write(path, config).expect("write config");
}

#[test]
fn a_tls_client_port_serves_clients_with_the_ca_and_refuses_others() {
    let setup_dir = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new(setup_dir.path(), "ca");
    let other = Authority::new(setup_dir.path(), "other-ca");
    let server = ca.issue("server", &["127.0.0.1", "localhost"]);
    let setup = Setup::new(&client_tls_section(&server, None));
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let ca_file = path_text(&ca.certificate_file());
    let with_ca = ["--cacert", ca_file.as_str()];

    eprintln!("phase: a client with --cacert puts, gets and reads the status");
    cli(port, &with_ca, &["put", "/tls/a", "secret"]).0.expect("put over TLS");
    let got = cli(port, &with_ca, &["get", "/tls/a"]).0.expect("get over TLS");
    assert_eq!(got, "/tls/a\nsecret\n");
    cli(port, &with_ca, &["status"]).0.expect("status over TLS");

    eprintln!("phase: a plaintext client is refused fast, with a hint at --cacert");
    let (plain, took) = cli(port, &[], &["get", "/tls/a"]);
    let error = plain.expect_err("plaintext is refused");
    assert!(error.contains("--cacert"), "the error suggests --cacert: {error}");
    assert!(took < Duration::from_secs(15), "refused within the handshake timeout, took {took:?}");

    eprintln!("phase: a client that trusts another CA refuses the node's certificate");
    let other_file = path_text(&other.certificate_file());
    let error = cli(port, &["--cacert", &other_file], &["get", "/tls/a"]).0.expect_err("unknown issuer");
    assert!(
        error.contains("TLS handshake with 127.0.0.1:")
            && error.contains("invalid peer certificate: UnknownIssuer"),
        "{error}"
    );

    eprintln!("phase: a certificate that does not name the endpoint's host is refused");
    let misnamed = ca.issue("misnamed", &["nvkv.example.com"]);
    drop(daemon);
    let setup = Setup::new(&client_tls_section(&misnamed, None));
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let error = cli(port, &with_ca, &["get", "/tls/a"]).0.expect_err("wrong name");
    assert!(error.contains("certificate not valid for name \"127.0.0.1\""), "{error}");
    daemon.signal(libc::SIGTERM);
    let (status, _) = daemon.wait_exit();
    assert!(status.success(), "clean stop");
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let setup_dir = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new(setup_dir.path(), "ca");
    let clients = Authority::new(setup_dir.path(), "clients-ca");
    let other = Authority::new(setup_dir.path(), "other-ca");
    let server = ca.issue("server", &["127.0.0.1"]);
    let client = clients.issue("client", &["client"]);
    let stranger = other.issue("stranger", &["client"]);
    let setup = Setup::new(&client_tls_section(&server, Some(&clients.certificate_file())));
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    let ca_file = path_text(&ca.certificate_file());

    eprintln!("phase: --cacert without --cert/--key is refused");
    let error = cli(port, &["--cacert", &ca_file], &["put", "/mtls/a", "1"]).0.expect_err("no certificate");
    assert!(error.contains("certificate"), "the refusal speaks of the certificate: {error}");

    eprintln!("phase: a certificate from another CA is refused");
    let (cert, key) = (path_text(&stranger.0), path_text(&stranger.1));
    let error = cli(port, &["--cacert", &ca_file, "--cert", &cert, "--key", &key], &["put", "/mtls/a", "1"])
        .0
        .expect_err("stranger");
    assert!(error.contains("certificate"), "{error}");

    eprintln!("phase: with the client certificate signed by client_ca_file, it works");
    let (cert, key) = (path_text(&client.0), path_text(&client.1));
    let flags = ["--cacert", ca_file.as_str(), "--cert", cert.as_str(), "--key", key.as_str()];
    cli(port, &flags, &["put", "/mtls/a", "1"]).0.expect("put with a client certificate");
    assert_eq!(cli(port, &flags, &["get", "/mtls/a"]).0.expect("get"), "/mtls/a\n1\n");

    eprintln!("phase: the node logged the refused handshakes");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "clean stop: {stderr}");
    assert!(stderr.contains("client TLS handshake failed"), "{stderr}");
}

/// Groups of the TLS clusters: one shard per member, two groups.
const GROUPS: usize = 2;

#[test]
fn three_members_replicate_over_peer_tls() {
    let directory = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new(directory.path(), "ca");
    let server = ca.issue("server", &["127.0.0.1"]);
    let members = cluster_configs(directory.path(), GROUPS);
    for member in &members {
        // Each member's peer certificate names it (its node.name).
        let peer = ca.issue(&format!("node{}", member.id), &["127.0.0.1"]);
        let tls = client_tls_section(&server, None) + &peer_tls_lines(&peer, &ca.certificate_file());
        append(&member.config, &format!("\n{tls}"));
    }
    let ca_file = path_text(&ca.certificate_file());
    let flags = ["--cacert", ca_file.as_str()];

    eprintln!("phase: start three members with peer and client TLS");
    let mut daemons: Vec<Daemon> = members.iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }
    let agreed = eventually("one leader per group, the same on every member", || {
        let seen = members
            .iter()
            .map(|member| tls_leaders(member.client_port, &flags))
            .collect::<Result<Vec<_>, _>>()?;
        agreed_leaders(&seen)
    });
    eprintln!("leaders by group: {agreed:?}");

    eprintln!("phase: a put through member 1 is read through every member");
    for index in 0..4 {
        let key = format!("/peer-tls/{index}/k");
        cli(members[0].client_port, &flags, &["put", &key, &format!("v{index}")]).0.expect("put");
    }
    for member in &members {
        for index in 0..4 {
            let key = format!("/peer-tls/{index}/k");
            let got = cli(member.client_port, &flags, &["get", &key]).0.expect("linearizable get");
            assert_eq!(got, format!("{key}\nv{index}\n"), "member {}", member.id);
        }
        // Serializable: this member's own store has the value, so the
        // entries crossed the peer TLS connections.
        eventually(&format!("member {} applying the last put", member.id), || {
            let got = cli(member.client_port, &flags, &["get", "/peer-tls/3/k", "--consistency", "s"]).0?;
            if got == "/peer-tls/3/k\nv3\n" {
                Ok(())
            } else {
                Err(format!("serializable read: {got:?}"))
            }
        });
    }
}

/// Starts the three members of `members`, of which member 3's peer
/// certificate is wrong (`why`), and checks that 1 and 2 form the cluster
/// and serve while 3 never receives data nor follows a leader; returns what
/// each member logged.
fn shut_out_member_3(members: &[Member], why: &str) -> Vec<String> {
    eprintln!("phase: start members 1 and 2 (good certificates) and 3 ({why})");
    let mut daemons: Vec<Daemon> = members.iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }

    eprintln!("phase: members 1 and 2 elect leaders among themselves and serve writes");
    eventually("members 1 and 2 agreeing on leaders among them", || {
        let seen: Vec<Vec<u64>> = members[..2].iter().map(|member| leaders(member.client_port)).collect();
        let agreed = agreed_leaders(&seen)?;
        if agreed.iter().all(|leader| [1, 2].contains(leader)) {
            Ok(agreed)
        } else {
            Err(format!("leaders {agreed:?} include member 3"))
        }
    });
    for index in 0..4 {
        let key = format!("/shut-out/{index}/k");
        client(members[0].client_port, &["put", &key, "v"]).expect("put through member 1");
        let got = client(members[1].client_port, &["get", &key]).expect("get through member 2");
        assert_eq!(got, format!("{key}\nv\n"));
    }

    eprintln!("phase: member 3 never receives the data nor learns of a leader");
    std::thread::sleep(Duration::from_secs(2));
    for index in 0..4 {
        let key = format!("/shut-out/{index}/k");
        let got = client(members[2].client_port, &["get", &key, "--consistency", "s"])
            .expect("a serializable read on member 3");
        assert_eq!(got, "", "member 3 must not have {key}");
    }
    let seen = leaders(members[2].client_port);
    assert!(seen.iter().all(|leader| ![1, 2].contains(leader)), "member 3 follows no leader: {seen:?}");

    eprintln!("phase: member 3 and the others logged the certificate errors");
    let mut stderrs = Vec::new();
    for daemon in &mut daemons {
        daemon.signal(libc::SIGTERM);
        stderrs.push(daemon.wait_exit().1);
    }
    stderrs
}

#[test]
fn a_member_with_a_peer_certificate_of_another_ca_cannot_join() {
    let directory = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new(directory.path(), "ca");
    let other = Authority::new(directory.path(), "other-ca");
    // Member 3 trusts the right CA but presents a certificate of another:
    // the others must refuse it as client and as server.
    let bad = other.issue("node3", &["127.0.0.1"]);
    let members = cluster_configs(directory.path(), GROUPS);
    configure_peer_tls(&members, &ca, &bad);

    let stderrs = shut_out_member_3(&members, "signed by another CA");
    for (member, stderr) in members.iter().zip(&stderrs) {
        let first = stderr.lines().find(|line| line.contains("TLS")).unwrap_or("(no TLS line)");
        eprintln!("member {}: {first}", member.id);
    }
    assert!(
        stderrs[0].contains("invalid peer certificate: UnknownIssuer"),
        "member 1 names the bad certificate:\n{}",
        stderrs[0]
    );
    assert!(
        stderrs[2].contains("TLS: it refused this member's certificate"),
        "member 3 learns its certificate was refused:\n{}",
        stderrs[2]
    );
    assert!(
        stderrs[2].contains("peer TLS handshake failed") && stderrs[2].contains("certificate"),
        "member 3 logs the refusal of its certificate:\n{}",
        stderrs[2]
    );
}

#[test]
fn plaintext_on_a_non_loopback_address_needs_insecure_and_warns() {
    eprintln!("phase: 0.0.0.0 without TLS is refused, naming the address and tls.insecure");
    let setup = Setup::new("");
    let mut daemon = Daemon::start_with_args(&setup.config, &["--listen", "0.0.0.0:0"]);
    let (status, stderr) = daemon.wait_exit();
    assert!(!status.success(), "plaintext on 0.0.0.0 must not start: {stderr}");
    assert!(stderr.contains("node.client_address = \"0.0.0.0:0\""), "{stderr}");
    assert!(stderr.contains("tls.insecure = true"), "{stderr}");

    eprintln!("phase: with tls.insecure = true it starts and warns");
    let setup = Setup::new("[tls]\ninsecure = true\n");
    let mut daemon = Daemon::start_with_args(&setup.config, &["--listen", "0.0.0.0:0"]);
    let port = ready_port(&daemon.wait_ready());
    client(port, &["put", "/insecure", "1"]).expect("plaintext put");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("PLAINTEXT ON A NON-LOOPBACK ADDRESS"), "{stderr}");
    assert!(stderr.contains("clients on 0.0.0.0:0 (node.client_address)"), "{stderr}");

    eprintln!("phase: a missing certificate file stops the start, naming key and file");
    let setup = Setup::new(
        "[tls]\nclient_cert_file = \"/nonexistent/server.pem\"\nclient_key_file = \"/nonexistent/key.pem\"\n",
    );
    let stderr = refused(&setup.config);
    assert!(
        stderr.contains("tls.client_cert_file = \"/nonexistent/server.pem\": there is no such file"),
        "{stderr}"
    );
}

/// Each member's peer certificate signed by `ca`, naming it, except member
/// 3's, which is `third`.
fn configure_peer_tls(members: &[Member], ca: &Authority, third: &(PathBuf, PathBuf)) {
    for member in members {
        let certificate = if member.id == 3 {
            third.clone()
        } else {
            ca.issue(&format!("node{}", member.id), &["127.0.0.1"])
        };
        append(&member.config, &format!("\n[tls]\n{}", peer_tls_lines(&certificate, &ca.certificate_file())));
    }
}

#[test]
fn a_member_whose_certificate_names_member_2_cannot_say_hello_as_member_3() {
    let directory = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new(directory.path(), "ca");
    // Member 3 runs with a valid certificate of the cluster's CA: member 2's.
    let node2 = ca.issue("node2", &["127.0.0.1"]);
    let members = cluster_configs(directory.path(), GROUPS);
    configure_peer_tls(&members, &ca, &node2);
    let stderrs = shut_out_member_3(&members, "holding member 2's certificate");

    eprintln!("phase: members 1 and 2 refused its hellos, saying what its certificate names");
    for stderr in &stderrs[..2] {
        assert!(
            stderr.contains(
                "refuses peer member 3: it says it is member 3 (\"node3\") but its certificate names"
            ),
            "{stderr}"
        );
        assert!(stderr.contains("\"node2\""), "{stderr}");
    }
}

#[test]
fn a_client_certificate_is_refused_on_the_peer_port() {
    let directory = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new(directory.path(), "ca");
    // A client certificate of the same CA, even one that carries the
    // member's name: made for clients only.
    let client = ca.issue_for("node3", &["127.0.0.1"], &[rcgen::ExtendedKeyUsagePurpose::ClientAuth]);
    let members = cluster_configs(directory.path(), GROUPS);
    configure_peer_tls(&members, &ca, &client);
    let stderrs = shut_out_member_3(&members, "holding a client certificate");

    eprintln!("phase: members 1 and 2 refused it as a client certificate");
    for stderr in &stderrs[..2] {
        assert!(stderr.contains("refuses peer member 3"), "{stderr}");
        assert!(stderr.contains("a client certificate is never accepted on the peer port"), "{stderr}");
    }
}
