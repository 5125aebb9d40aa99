//! What the integration tests share: a real `nvkv serve` process, a config
//! in a temp directory, and the CLI run as a user runs it.
#![allow(dead_code)] // each test file uses its own part of this

pub mod cluster;
pub mod etcd;
pub mod netns;
pub mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running `nvkv serve`. Killed on drop, so a failing test leaves no
/// daemon behind.
pub struct Daemon {
    pub child: Child,
    pub stdout_lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_with_args(config, &[])
    }

    pub fn start_with_args(config: &Path, extra: &[&str]) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nvkv"));
        command.args(["serve", "--config"]).arg(config).args(extra);
        Daemon::spawn(command)
    }

    /// Runs `command`, which must exec `nvkv serve` in its own process (as
    /// `ip netns exec NS nvkv serve ...` does), so that its pid is the
    /// daemon's.
    pub fn spawn(mut command: Command) -> Daemon {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the nvkv binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, stdout_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        Daemon { child, stdout_lines, stderr: Some(stderr) }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The ready line, or a panic naming what the daemon said instead.
    pub fn wait_ready(&mut self) -> String {
        self.wait_line("nvkv ready: ")
    }

    /// The first line on stdout that contains `marker` (within the
    /// deadline), or a panic naming what the process said instead.
    pub fn wait_line(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut said = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return line,
                Ok(line) => said.push(line),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let (status, stderr) = self.wait_exit();
        panic!("no line with {marker:?} (exit {status}); stdout:\n{}\nstderr:\n{stderr}", said.join("\n"));
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits");
        // SAFETY: kill takes no pointers; the child is ours and not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal the daemon");
    }

    /// Waits for the exit (killing the daemon past the deadline) and
    /// returns its status and everything it wrote to stderr.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait");
                let stderr =
                    self.stderr.take().map(|thread| thread.join().unwrap_or_default()).unwrap_or_default();
                panic!("nvkv did not exit within {DEADLINE:?} (killed: {status}); stderr:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = self.stderr.take().map(|thread| thread.join().unwrap_or_default()).unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A temp directory holding `nvkv.toml`: the defaults, with the data in the
/// temp directory and a small namespace, plus `extra` lines.
pub struct Setup {
    pub directory: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    pub fn new(extra: &str) -> Setup {
        let directory = tempfile::tempdir().expect("tempdir");
        let data_dir = directory.path().join("data");
        let config = directory.path().join("nvkv.toml");
        let text = format!(
            "[node]\ndata_dir = \"{}\"\nclient_address = \"127.0.0.1:0\"\n\n[etcd]\naddress = \"127.0.0.1:0\"\n\n[namespace]\nnamespace_bytes = \"64MiB\"\n\n{extra}\n",
            data_dir.display()
        );
        std::fs::write(&config, text).expect("write config");
        Setup { directory, config }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.directory.path().join("data")
    }
}

/// Runs a daemon that must refuse to start; returns its stderr.
pub fn refused(config: &Path) -> String {
    let mut daemon = Daemon::start(config);
    let (status, stderr) = daemon.wait_exit();
    assert!(!status.success(), "nvkv must refuse to start; stderr:\n{stderr}");
    assert!(daemon.stdout_lines.try_iter().all(|line| !line.starts_with("nvkv ready")), "no ready line");
    stderr
}

/// The etcd API's address (`HOST:PORT`) a ready line names.
pub fn ready_etcd_endpoint(ready: &str) -> String {
    let after = ready.split(", etcd ").nth(1).expect("the ready line names the etcd address");
    after.split(',').next().expect("an address").to_string()
}

pub fn ready_port(ready: &str) -> u16 {
    ready.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a port ends the ready line")
}

/// Runs `nvkv status -w json` against `port` and returns its JSON.
pub fn status_json(port: u16) -> serde_json::Value {
    try_status_json(port).unwrap_or_else(|error| panic!("{error}"))
}

/// `status_json`, for a member that may be down: what went wrong instead
/// of a panic.
pub fn try_status_json(port: u16) -> Result<serde_json::Value, String> {
    try_status_json_at(&format!("127.0.0.1:{port}"))
}

/// `try_status_json` of the member at `endpoint` (HOST:PORT).
pub fn try_status_json_at(endpoint: &str) -> Result<serde_json::Value, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["status", "-w", "json", "--endpoints", endpoint])
        .output()
        .expect("nvkv status runs");
    if !output.status.success() {
        return Err(format!("nvkv status failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("nvkv status -w json printed no JSON: {error}"))
}

pub fn client(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["--endpoints", &format!("127.0.0.1:{port}")])
        .args(args)
        .output()
        .expect("the nvkv client runs");
    stdout_or_stderr(output)
}

/// A finished command's stdout, or its stderr when it failed.
pub fn stdout_or_stderr(output: std::process::Output) -> Result<String, String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Runs `nvkv txn` with `text` on standard input.
pub fn txn(port: u16, text: &str) -> Result<String, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["--endpoints", &format!("127.0.0.1:{port}"), "txn"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nvkv txn runs");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the txn");
    let output = child.wait_with_output().expect("nvkv txn ends");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `GET path` on an HTTP endpoint of the node (metrics and probes) at
/// `port`: (status line, body).
pub fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP endpoint");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().expect("a status line").to_string(), body.to_string())
}
