//! Network namespaces for tests that must cut real sockets: every member in
//! a namespace of its own, each joined by a veth pair to a bridge in a hub
//! namespace (so the host's own network is never touched, and two test runs
//! never see each other), and a member cut away by taking its bridge port
//! down. Everything is deleted on drop, even when the test fails.
//!
//! Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip` from iproute2.

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Set to 1 to let a test that needs network namespaces pass, loudly,
/// where they cannot be made; unset, such a test fails.
pub const SKIP_VARIABLE: &str = "NVKV_TEST_SKIP_NETNS";

/// Namespaces made by this process so far, so each network has its own names.
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Members' namespaces on one bridge; deleted on drop.
pub struct Network {
    hub: String,
    members: Vec<(u64, String)>,
    /// Every namespace made so far, deleted on drop.
    made: Vec<String>,
}

impl Network {
    /// Makes one namespace per member of `ids`, member `id` at
    /// [`Network::address`], all on one bridge. Err names the `ip` command
    /// that failed: namespaces are not available here.
    pub fn new(ids: &[u64]) -> Result<Network, String> {
        let prefix = format!("nvkvt{}n{}", std::process::id(), NETWORKS.fetch_add(1, Ordering::Relaxed));
        let mut network = Network {
            hub: format!("{prefix}hub"),
            members: ids.iter().map(|id| (*id, format!("{prefix}m{id}"))).collect(),
            made: Vec::new(),
        };
        network.make(&network.hub.clone())?;
        ip(&["-n", &network.hub, "link", "add", "bridge0", "type", "bridge"])?;
        ip(&["-n", &network.hub, "link", "set", "bridge0", "up"])?;
        for (id, namespace) in network.members.clone() {
            network.make(&namespace)?;
            let port = format!("port{id}");
            ip(&[
                "-n",
                &network.hub,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &namespace,
            ])?;
            ip(&["-n", &network.hub, "link", "set", &port, "master", "bridge0", "up"])?;
            ip(&["-n", &namespace, "addr", "add", &format!("{}/24", Network::address(id)), "dev", "eth0"])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    fn make(&mut self, namespace: &str) -> Result<(), String> {
        ip(&["netns", "add", namespace])?;
        self.made.push(namespace.to_string());
        Ok(())
    }

    /// Member `id`'s address inside its namespace.
    pub fn address(id: u64) -> IpAddr {
        IpAddr::from([10, 77, 0, u8::try_from(id).expect("member ids below 256")])
    }

    pub fn namespace(&self, id: u64) -> &str {
        &self.members.iter().find(|(member, _)| *member == id).expect("a member of this network").1
    }

    /// What the test output says about the method.
    pub fn describe(&self) -> String {
        let namespaces: Vec<&str> = self.members.iter().map(|(_, namespace)| namespace.as_str()).collect();
        format!(
            "network namespaces {namespaces:?}, each joined by a veth pair to bridge0 in namespace {}, \
             members at 10.77.0.<id>/24",
            self.hub
        )
    }

    /// `program` to be run inside member `id`'s namespace (`ip netns exec`
    /// execs it, so the process is the program's own).
    pub fn command(&self, id: u64, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.namespace(id), program]);
        command
    }

    /// Moves the calling thread into member `id`'s namespace: the sockets
    /// it opens from then on, and the threads and processes it starts, live
    /// there. Call it on a thread of the test's own (a test harness thread
    /// may run other tests afterwards).
    pub fn enter(&self, id: u64) {
        use std::os::fd::AsRawFd;
        let path = format!("/run/netns/{}", self.namespace(id));
        let file = std::fs::File::open(&path).unwrap_or_else(|error| panic!("open {path}: {error}"));
        // SAFETY: setns on an open namespace file; it changes only this
        // thread's network namespace.
        let done = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(done, 0, "setns into {path}: {}", std::io::Error::last_os_error());
    }

    /// Cuts member `id` off the bridge: its port goes down, so nothing
    /// reaches it or leaves it, while its processes and sockets live on.
    pub fn cut(&self, id: u64) {
        ip(&["-n", &self.hub, "link", "set", &format!("port{id}"), "down"]).expect("take the port down");
    }

    /// Joins member `id` to the bridge again.
    pub fn heal(&self, id: u64) {
        ip(&["-n", &self.hub, "link", "set", &format!("port{id}"), "up"]).expect("bring the port up");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its ends of the veth pairs, and with
        // them the other ends.
        for namespace in self.made.iter().rev() {
            if let Err(error) = ip(&["netns", "delete", namespace]) {
                eprintln!("cleanup: {error}");
            }
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run `ip {}`: {error}; install iproute2", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}
