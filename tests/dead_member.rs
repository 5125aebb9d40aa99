//! A dead member does not blind the tools: with one member of three
//! SIGKILLed, `nvkv endpoint status`, `status`, `endpoint health` and
//! `member list` over every endpoint show the two live members and mark
//! the dead one (exiting 1 only after printing everything); the live
//! members' `/readyz` answers 200 once their groups have leaders again. A
//! member whose groups have no leader (the last one standing) answers 503
//! on `/readyz` and `/health` while `/livez` stays 200.

mod common;

use std::process::Command;

use common::cluster::*;
use common::*;

/// Runs the CLI with `args` against `endpoints`: (exit code, stdout, stderr).
fn nvkv(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["--endpoints", endpoints])
        .args(args)
        .output()
        .expect("the nvkv client runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The status line and body of `path` on a member's HTTP port, once it is
/// `status` (probes change as elections finish).
fn probe_becomes(port: u16, path: &str, status: &str) -> String {
    eventually(&format!("{path} on port {port} answering {status}"), || {
        let (line, body) = http_get(port, path);
        if line == format!("HTTP/1.1 {status}") {
            Ok(body)
        } else {
            Err(format!("{line}: {body}"))
        }
    })
}

#[test]
fn one_member_killed_is_marked_and_the_others_shown() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = cluster_configs(directory.path(), 2);
    let metrics_base = free_ports(3);
    let metrics: Vec<u16> = (0..3).map(|index| metrics_base + index).collect();
    for (member, port) in members.iter().zip(&metrics) {
        let mut text = std::fs::read_to_string(&member.config).expect("read config");
        text.push_str(&format!("\n[metrics]\naddress = \"127.0.0.1:{port}\"\n"));
        std::fs::write(&member.config, text).expect("write config");
    }
    let endpoint = |member: &Member| format!("127.0.0.1:{}", member.client_port);
    let endpoints = members.iter().map(endpoint).collect::<Vec<_>>().join(",");

    eprintln!("phase: three members start, elect, and every probe answers 200");
    let mut daemons: Vec<Daemon> = members.iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }
    for port in &metrics {
        assert!(probe_becomes(*port, "/readyz", "200 OK").starts_with("ok: 1 shards serve"));
        assert_eq!(http_get(*port, "/livez").0, "HTTP/1.1 200 OK");
    }
    let (code, table, stderr) = nvkv(&endpoints, &["endpoint", "status"]);
    assert_eq!(code, 0, "{table}{stderr}");
    assert_eq!(table.lines().count(), 4, "a header and three members: {table}");

    eprintln!("phase: member 2 is SIGKILLed");
    let dead = &members[1];
    daemons[1].signal(libc::SIGKILL);
    daemons[1].wait_exit();
    let refused = format!("unreachable: cannot connect to {}: Connection refused", endpoint(dead));

    eprintln!("phase: endpoint status shows members 1 and 3 and marks member 2");
    let (code, table, stderr) = nvkv(&endpoints, &["endpoint", "status"]);
    assert_eq!(code, 1, "a member did not answer: {table}{stderr}");
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("ENDPOINT") && rows[0].ends_with("ERRORS"), "{table}");
    for (row, member) in rows[1..].iter().zip(&members) {
        assert!(row.starts_with(&endpoint(member)), "{table}");
        if member.id == dead.id {
            assert!(row.contains(&refused), "{table}");
        } else {
            let fields: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(fields[1..3], [member.id.to_string(), format!("node{}", member.id)], "{table}");
        }
    }
    assert_eq!(
        stderr.trim(),
        format!("nvkv endpoint status: 1 of 3 endpoints did not answer: {}", endpoint(dead))
    );

    eprintln!("phase: status shows both live members' reports and marks member 2");
    let (code, report, stderr) = nvkv(&endpoints, &["status"]);
    assert_eq!(code, 1, "{report}{stderr}");
    for member in [&members[0], &members[2]] {
        let header = format!("member {} at {} (nvkv ", member.id, endpoint(member));
        assert!(report.contains(&header), "{report}");
    }
    assert!(
        report.contains(&format!("endpoint {} did not answer: cannot connect", endpoint(dead))),
        "{report}"
    );
    assert!(stderr.contains("nvkv status: 1 of 3 endpoints did not answer"), "{stderr}");
    let (code, json, _) = nvkv(&endpoints, &["status", "-w", "json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&json).expect("status -w json is JSON");
    assert_eq!(json[0]["member_id"], 1);
    assert!(json[1]["error"].as_str().expect("member 2's error").contains("Connection refused"), "{json}");
    assert_eq!(json[2]["member_id"], 3);

    eprintln!("phase: the live members become ready again; endpoint health and member list agree");
    for index in [0, 2] {
        probe_becomes(metrics[index], "/readyz", "200 OK");
    }
    let health = eventually("members 1 and 3 healthy", || {
        let (code, out, stderr) = nvkv(&endpoints, &["endpoint", "health"]);
        let healthy = out.lines().filter(|line| line.contains(" is healthy: ")).count();
        if code == 1 && healthy == 2 {
            Ok(out)
        } else {
            Err(format!("exit {code}: {out}{stderr}"))
        }
    });
    assert!(health.contains(&format!("{} is unhealthy: cannot connect", endpoint(dead))), "{health}");
    let (code, list, stderr) = nvkv(&endpoints, &["member", "list"]);
    assert_eq!(code, 1, "{list}{stderr}");
    let status_of = |id: u64| {
        let row = list.lines().find(|row| row.starts_with(&format!("{id} "))).expect("a row per member");
        row.split_whitespace().nth(1).expect("a status").to_string()
    };
    assert_eq!([status_of(1), status_of(2), status_of(3)], ["started", "unreachable", "started"], "{list}");

    eprintln!("phase: member 3 is SIGKILLed too; member 1's groups lose their leaders: /readyz 503");
    daemons[2].signal(libc::SIGKILL);
    daemons[2].wait_exit();
    let not_ready = probe_becomes(metrics[0], "/readyz", "503 Service Unavailable");
    assert!(
        not_ready.starts_with("not ready: groups [") && not_ready.contains("have no leader"),
        "{not_ready}"
    );
    let health = probe_becomes(metrics[0], "/health", "503 Service Unavailable");
    assert!(health.starts_with(r#"{"health":"false","reason":"groups ["#), "{health}");
    assert_eq!(
        http_get(metrics[0], "/livez"),
        ("HTTP/1.1 200 OK".to_string(), "ok: 1 shards answer\n".to_string())
    );

    eprintln!("phase: member 3 back: member 1 is ready again");
    daemons[2] = Daemon::start(&members[2].config);
    daemons[2].wait_ready();
    probe_becomes(metrics[0], "/readyz", "200 OK");
}
