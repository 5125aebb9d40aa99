//! Telling systemd how the daemon is doing (the `sd_notify` protocol of a
//! `Type=notify` unit): `READY=1` once the node serves, `STOPPING=1` when it
//! stops, and `WATCHDOG=1` while every reactor still runs its mailbox.
//!
//! The protocol is one datagram per message on the unix socket named by
//! `NOTIFY_SOCKET` (a path, or an abstract name after `@`); the watchdog
//! interval comes from `WATCHDOG_USEC` (for this process when
//! `WATCHDOG_PID` names it). Without `NOTIFY_SOCKET` nothing is sent: the
//! daemon runs the same under systemd and in a terminal.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::reactor::Mailboxes;

/// Where systemd listens, from `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// The notifier of this process, or `None` when systemd did not ask
    /// for notifications. Err names the variable's value and what failed.
    pub fn from_env() -> Result<Option<Notifier>, String> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let text = name.to_string_lossy().into_owned();
        let address = if let Some(abstract_name) = text.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&text)
        }
        .map_err(|error| format!("NOTIFY_SOCKET={text:?} is not a unix socket address: {error}"))?;
        let socket = UnixDatagram::unbound()
            .map_err(|error| format!("cannot open a socket to notify systemd at {text:?}: {error}"))?;
        Ok(Some(Notifier { socket, address }))
    }

    /// Sends `state` (newline-separated `KEY=value` lines). A failure is
    /// logged, not fatal: the daemon serves whether or not systemd hears.
    pub fn notify(&self, state: &str) {
        if let Err(error) = self.socket.send_to_addr(state.as_bytes(), &self.address) {
            tracing::warn!("cannot notify systemd ({state:?}): {error}");
        }
    }
}

/// How often systemd wants `WATCHDOG=1`, from `WATCHDOG_USEC`, when it is
/// meant for this process. Err names a value that is not a number.
pub fn watchdog_interval() -> Result<Option<Duration>, String> {
    let Ok(usec) = std::env::var("WATCHDOG_USEC") else {
        return Ok(None);
    };
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return Ok(None);
        }
    }
    let usec: u64 = usec
        .trim()
        .parse()
        .map_err(|_| format!("WATCHDOG_USEC={usec:?} is not a whole number of microseconds"))?;
    Ok((usec > 0).then(|| Duration::from_micros(usec)))
}

/// Checks that every reactor is alive: each round posts a task to every
/// shard's mailbox that records the round, and the next round finds which
/// shards ran it. A reactor that is stuck (a blocked shard thread, a spin
/// that never reaches its mailbox) stops the feeding, and systemd restarts
/// the service.
pub struct Liveness {
    rounds: Vec<Arc<AtomicU64>>,
    round: u64,
}

impl Liveness {
    pub fn new(shards: usize) -> Liveness {
        Liveness { rounds: (0..shards).map(|_| Arc::new(AtomicU64::new(0))).collect(), round: 0 }
    }

    /// The shards that did not run the previous round's task (empty on the
    /// first round), then posts this round's.
    pub fn check(&mut self, mailboxes: &Mailboxes) -> Vec<usize> {
        let late: Vec<usize> = if self.round == 0 {
            Vec::new()
        } else {
            let round = self.round;
            (0..self.rounds.len())
                .filter(|shard| self.rounds[*shard].load(Ordering::Acquire) < round)
                .collect()
        };
        self.round += 1;
        for (shard, mailbox) in mailboxes.iter().enumerate() {
            let (seen, round) = (self.rounds[shard].clone(), self.round);
            // A full mailbox is a busy shard, not a dead one: the next
            // round checks again.
            let _ = mailbox.try_send(move |_| seen.store(round, Ordering::Release));
        }
        late
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::config::PollMode;
    use crate::reactor::tests::{cores, idle_factories, settings, wait_until};
    use crate::reactor::Reactors;

    #[test]
    fn notifications_reach_the_socket_named_by_the_variable() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let address = std::os::unix::net::SocketAddr::from_pathname(&path).expect("address");
        let notifier = Notifier { socket: UnixDatagram::unbound().expect("socket"), address };
        notifier.notify("READY=1\nSTATUS=serving");
        let mut buffer = [0u8; 64];
        let read = listener.recv(&mut buffer).expect("a datagram");
        assert_eq!(&buffer[..read], b"READY=1\nSTATUS=serving");
    }

    #[test]
    fn liveness_names_a_shard_that_stops_running_its_mailbox() {
        let reactors =
            Reactors::start(&settings(PollMode::Adaptive), &cores(2), idle_factories(2)).expect("start");
        let (release, stuck) = mpsc::channel::<()>();
        reactors
            .mailboxes()
            .get(1)
            .try_send(move |_| {
                let _ = stuck.recv();
            })
            .expect("room in the mailbox");
        let mut liveness = Liveness::new(2);
        assert_eq!(
            liveness.check(reactors.mailboxes()),
            Vec::<usize>::new(),
            "the first round judges nothing"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            liveness.check(reactors.mailboxes()),
            vec![1],
            "shard 1 is stuck in a task, shard 0 is not"
        );
        release.send(()).expect("shard 1 waits");
        assert!(
            wait_until(|| {
                std::thread::sleep(Duration::from_millis(20));
                liveness.check(reactors.mailboxes()).is_empty()
            }),
            "once free, shard 1 runs its mailbox again"
        );
        reactors.stop().expect("stop");
    }
}
