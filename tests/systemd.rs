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

/// The install guide of docs/operations.md ("systemd"), its shell block.
fn install_guide() -> Vec<String> {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md");
    let section = docs.split("\n## systemd\n").nth(1).expect("a systemd section");
    let block = section.split("```sh\n").nth(1).and_then(|rest| rest.split("\n```").next());
    let block = block.expect("a sh block in the systemd section");
    block.lines().map(str::to_string).collect()
}

/// The install guide, run as written in a scratch root: its own mount and
/// network namespaces, where /etc is a copy (useradd's user is gone with
/// it), /usr/local/bin and /var/lib are empty, and the documented ports are
/// free. Two lines are not run as written: `cargo build --release` (the
/// checkout holds this build's binary as target/release/nvkv) and
/// `systemctl` (no systemd runs here: the test does what the unit says,
/// StateDirectory, WorkingDirectory, UMask, User and Group, and execs its
/// ExecStart). The service user must read its config and the node must
/// serve.
#[test]
fn the_install_guide_leaves_a_service_that_starts() {
    assert_eq!(
        // SAFETY: geteuid takes nothing and cannot fail.
        unsafe { libc::geteuid() },
        0,
        "this test runs the install guide as root (useradd, install -o, mount and network namespaces): run it \
         as root, as CI does"
    );
    let guide = install_guide();
    assert!(guide.iter().any(|line| line.starts_with("useradd ")), "{guide:?}");
    assert!(
        guide.iter().any(|line| line.starts_with("install -d -m 0750 -o root -g nvkv /etc/nvkv")),
        "{guide:?}"
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    let checkout = scratch.path().join("checkout");
    for directory in ["target/release", "config", "systemd"] {
        std::fs::create_dir_all(checkout.join(directory)).expect("mkdir");
    }
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::copy(env!("CARGO_BIN_EXE_nvkv"), checkout.join("target/release/nvkv")).expect("copy nvkv");
    for file in ["config/nvkv.toml", "systemd/nvkv.service"] {
        std::fs::copy(format!("{root}/{file}"), checkout.join(file)).expect("copy");
    }
    let unit = std::fs::read_to_string(format!("{root}/systemd/nvkv.service")).expect("the unit");
    let setting = |key: &str| {
        unit.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("the unit sets {key}="))
            .to_string()
    };
    let steps: Vec<&String> = guide
        .iter()
        .filter(|line| !line.starts_with("cargo build") && !line.starts_with("systemctl"))
        .collect();
    let script = format!(
        "set -euo pipefail\n\
         scratch={scratch}\n\
         cp -a /etc \"$scratch/etc\" && mount --bind \"$scratch/etc\" /etc\n\
         mount -t tmpfs tmpfs /usr/local/bin\n\
         mkdir \"$scratch/var-lib\" && mount --bind \"$scratch/var-lib\" /var/lib\n\
         ip link set lo up\n\
         cd \"$scratch/checkout\"\n\
         {steps}\n\
         # What systemd does for the unit: its state directory, then ExecStart as its user.\n\
         install -d -m {mode} -o {user} -g {group} /var/lib/{state}\n\
         cd {directory}\n\
         umask {umask}\n\
         exec setpriv --reuid={user} --regid={group} --init-groups -- {exec}\n",
        scratch = scratch.path().display(),
        steps = steps.iter().map(|line| line.as_str()).collect::<Vec<_>>().join("\n"),
        mode = setting("StateDirectoryMode"),
        user = setting("User"),
        group = setting("Group"),
        state = setting("StateDirectory"),
        directory = setting("WorkingDirectory"),
        umask = setting("UMask"),
        exec = setting("ExecStart"),
    );
    let mut command = Command::new("unshare");
    command.args(["--mount", "--net", "--propagation", "private", "bash", "-c", &script]);
    let mut daemon = Daemon::spawn(command);
    let ready = daemon.wait_ready();
    assert!(ready.contains("namespace /var/lib/nvkv/namespace"), "{ready}");
    let in_namespace = |args: &[&str]| {
        let output = Command::new("nsenter")
            .args(["--target", &daemon.pid().to_string(), "--net", "--mount"])
            .args(args)
            .output()
            .expect("nsenter runs");
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(in_namespace(&["/usr/local/bin/nvkv", "put", "/systemd/guide", "followed"]), "OK\n");
    let owner = in_namespace(&[
        "stat",
        "-c",
        "%U:%G %a",
        "/etc/nvkv",
        "/etc/nvkv/nvkv.toml",
        "/var/lib/nvkv/namespace",
    ]);
    assert_eq!(owner, "root:nvkv 750\nroot:nvkv 640\nnvkv:nvkv 600\n", "owners and modes");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// `systemd-analyze security` rates the unit at most 3.0, and the unit
/// says, for each item the rating still counts, why it stays.
#[test]
fn the_unit_is_hardened_and_says_why_for_the_rest() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/nvkv.service");
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", path])
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run systemd-analyze ({error}): install systemd (scripts/setup.sh does)")
        });
    let report = String::from_utf8_lossy(&output.stdout);
    let overall = report
        .lines()
        .find_map(|line| line.split("Overall exposure level for nvkv.service: ").nth(1))
        .unwrap_or_else(|| {
            panic!("no overall exposure in:\n{report}{}", String::from_utf8_lossy(&output.stderr))
        });
    let exposure: f64 =
        overall.split_whitespace().next().and_then(|number| number.parse().ok()).expect("a number");
    assert!(exposure <= 3.0, "exposure {exposure} > 3.0:\n{report}");
    let unit = std::fs::read_to_string(path).expect("the unit");
    let reasons: String = unit.lines().filter(|line| line.starts_with("# - ")).collect::<Vec<_>>().join("\n");
    for line in report.lines().filter(|line| line.starts_with('✗')) {
        let setting = line.trim_start_matches('✗').split_whitespace().next().expect("a setting");
        // `RestrictAddressFamilies=~AF_UNIX` is explained as `~AF_UNIX`.
        let (key, detail) = setting.split_once('=').expect("KEY=...");
        let named = reasons.contains(setting)
            || (!detail.is_empty() && reasons.contains(detail) && reasons.contains(key))
            || reasons.contains(&format!("{key}="));
        assert!(named, "the unit gives no reason for {setting}:\n{reasons}");
    }
}
