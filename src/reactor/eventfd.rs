//! A Linux eventfd: the doorbell other threads ring to wake a sleeping
//! reactor. This file owns the system calls on eventfds and nothing else.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking, close-on-exec eventfd in counter mode.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Adds one to the counter, which makes the fd readable. Never blocks:
    /// a counter near overflow is already readable, so EAGAIN is harmless.
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
        let written = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        debug_assert!(
            written == 8 || io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock,
            "eventfd write failed: {}",
            io::Error::last_os_error()
        );
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Empties an eventfd's counter if it is readable now, whether or not the fd
/// is non-blocking (a driver's fd may be blocking: it is polled first, so
/// the read never waits). Returns true when there was something to read.
pub fn drain(fd: RawFd) -> bool {
    let mut descriptor = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut descriptor, 1, 0) };
    if ready <= 0 || descriptor.revents & libc::POLLIN == 0 {
        return false;
    }
    let mut counter: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64.
    let read = unsafe { libc::read(fd, (&mut counter as *mut u64).cast(), 8) };
    read == 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rung_eventfd_drains_once() {
        let eventfd = EventFd::new().expect("eventfd");
        assert!(!drain(eventfd.as_raw_fd()), "a new eventfd has nothing to read");
        eventfd.ring();
        eventfd.ring();
        assert!(drain(eventfd.as_raw_fd()), "two rings are readable");
        assert!(!drain(eventfd.as_raw_fd()), "one read empties the counter");
    }
}
