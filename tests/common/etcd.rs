//! A real etcd (Debian's etcd-server) beside nvkv, for the tests that
//! compare with it or drive it.

use std::path::Path;
use std::process::Command;

use super::cluster::free_ports;
use super::Daemon;

/// Where Debian's etcd-server puts etcd.
const ETCD: &str = "/usr/bin/etcd";

/// A one-member etcd on loopback with its data in a temp directory, killed
/// on drop (it is a [`Daemon`]), so a failing test leaves no etcd behind.
pub struct Etcd {
    _daemon: Daemon,
    pub client_port: u16,
    _data: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it serves its clients.
    pub fn start() -> Etcd {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: this test drives a real etcd; run scripts/setup.sh (as root) to install \
             Debian's etcd-server"
        );
        let data = tempfile::tempdir().expect("temp dir");
        let client_port = free_ports(2);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{}", client_port + 1);
        let mut command = Command::new(ETCD);
        command
            .args(["--name", "bench-test", "--logger", "zap", "--log-outputs", "stdout", "--data-dir"])
            .arg(data.path().join("etcd"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench-test={peer_url}")]);
        let mut daemon = Daemon::spawn(command);
        // etcd 3.4's zap logger says this once its client port answers.
        daemon.wait_line("serving client traffic");
        Etcd { _daemon: daemon, client_port, _data: data }
    }

    pub fn target(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }
}
