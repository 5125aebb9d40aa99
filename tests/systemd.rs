//! nvkv under systemd: the unit file verifies, and a daemon started with
//! NOTIFY_SOCKET and WATCHDOG_USEC (as systemd starts a Type=notify unit)
//! says READY=1 only once it serves, feeds the watchdog while it runs, and
//! says STOPPING=1 on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;

use common::*;

#[test]
fn the_unit_file_verifies() {
    verify(None);
}

/// The drop-in for SPDK deployments (systemd/nvkv-spdk.conf, installed as
/// nvkv.service.d/spdk.conf) verifies with the unit: systemd reads it (a bad
/// setting there shows on stderr) and keeps what SPDK needs.
#[test]
fn the_unit_file_verifies_with_the_spdk_drop_in() {
    let drop_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/nvkv-spdk.conf"))
        .expect("systemd/nvkv-spdk.conf");
    for setting in ["\nLimitMEMLOCK=infinity\n", "\nExecStartPre=+", "PCI_ALLOWED=", "TARGET_USER=nvkv"] {
        assert!(drop_in.contains(setting), "the SPDK drop-in lacks {setting:?}");
    }
    // verify checks that ExecStartPre names an executable: SPDK's setup.sh
    // is not installed here.
    let installed = drop_in.replace("/opt/spdk/scripts/setup.sh", "/bin/true");
    assert_ne!(installed, drop_in, "the drop-in runs /opt/spdk/scripts/setup.sh");
    verify(Some(&installed));
}

/// Runs `systemd-analyze verify` on systemd/nvkv.service with this build's
/// binary, and with `drop_in` as nvkv.service.d/spdk.conf beside it.
fn verify(drop_in: Option<&str>) {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/nvkv.service"))
        .expect("systemd/nvkv.service");
    assert!(unit.contains("\nType=notify\n") && unit.contains("\nWatchdogSec="), "{unit}");
    // verify checks that ExecStart names an executable: this build's binary.
    let directory = tempfile::tempdir().expect("tempdir");
    let installed = unit.replace("/usr/local/bin/nvkv", env!("CARGO_BIN_EXE_nvkv"));
    assert_ne!(installed, unit, "the unit starts /usr/local/bin/nvkv");
    let path = directory.path().join("nvkv.service");
    std::fs::write(&path, installed).expect("write the unit");
    if let Some(drop_in) = drop_in {
        let drop_ins = directory.path().join("nvkv.service.d");
        std::fs::create_dir(&drop_ins).expect("create nvkv.service.d");
        std::fs::write(drop_ins.join("spdk.conf"), drop_in).expect("write the drop-in");
    }
    let output = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap_or_else(|error| {
        panic!("cannot run systemd-analyze ({error}): install systemd (scripts/setup.sh does)")
    });
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn ready_only_once_serving_then_watchdog_then_stopping() {
    let setup = Setup::new("");
    let socket_path = setup.directory.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    systemd.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nvkv"));
    command
        .args(["serve", "--config"])
        .arg(&setup.config)
        .env("NOTIFY_SOCKET", &socket_path)
        // 300 ms: a datagram every 100 ms.
        .env("WATCHDOG_USEC", "300000");
    let mut daemon = Daemon::spawn(command);
    let receive = || -> String {
        let mut buffer = vec![0u8; 4096];
        let read = systemd.recv(&mut buffer).expect("a notification before the deadline");
        String::from_utf8(buffer[..read].to_vec()).expect("text")
    };

    let first = receive();
    assert!(first.starts_with("READY=1\n"), "the first notification is READY=1: {first:?}");
    assert!(first.contains(&format!("MAINPID={}", daemon.pid())), "{first:?}");
    // The moment systemd hears READY=1, the node answers requests.
    let ready = daemon.wait_ready();
    let port = ready_port(&ready);
    assert!(first.contains(&format!("STATUS={ready}")), "{first:?}");
    assert_eq!(client(port, &["put", "/systemd/k", "v"]).expect("a put right after READY=1"), "OK\n");

    let mut watchdogs = 0;
    while watchdogs < 5 {
        let message = receive();
        assert_eq!(message, "WATCHDOG=1", "only watchdog pings while it runs");
        watchdogs += 1;
    }

    daemon.signal(libc::SIGTERM);
    let stopping = loop {
        let message = receive();
        if message != "WATCHDOG=1" {
            break message;
        }
    };
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("systemd watchdog: every 300ms"), "{stderr}");
}
