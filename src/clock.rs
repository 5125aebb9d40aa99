//! The time of day and the bits that tell processes apart, behind one seam:
//! the system's, or a simulated world's that a test installs for its thread.
//!
//! Durations and deadlines use tokio's clock (`tokio::time::Instant`),
//! which a paused runtime simulates by itself. What tokio cannot simulate
//! is read here: the wall clock (hybrid revisions stamp writes with it, a
//! log's records carry an epoch taken from it, a new namespace's id mixes
//! it in) and what makes two processes started at the same instant differ.
//! The simulator runs whole clusters on one thread on a paused clock, so
//! it installs a wall clock that advances with tokio's and bits that come
//! from a counter: the same seed then writes the same bytes.
//!
//! This module imports nothing of the crate and never blocks.

use std::cell::RefCell;

/// Nanoseconds since the Unix epoch: the system clock, or the simulated
/// one installed on this thread.
pub fn unix_nanos() -> u128 {
    if let Some(nanos) = SIMULATED.with(|simulated| simulated.borrow().as_ref().map(Simulated::unix_nanos)) {
        return nanos;
    }
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos())
}

/// Bits that differ between processes running at the same time (the
/// process id and where its stack is), or in a simulation a number that
/// differs at every call.
pub fn instance_bits() -> u64 {
    if let Some(bits) = SIMULATED.with(|simulated| simulated.borrow_mut().as_mut().map(Simulated::next_bits))
    {
        return bits;
    }
    let marker = 0u8;
    let stack_address = &marker as *const u8 as usize as u64;
    (u64::from(std::process::id()) << 40) ^ stack_address
}

/// A wall clock that starts at `start_unix_nanos` when installed and moves
/// with tokio's clock from then on.
struct Simulated {
    start_unix_nanos: u128,
    origin: tokio::time::Instant,
    calls: u64,
}

impl Simulated {
    fn unix_nanos(&self) -> u128 {
        self.start_unix_nanos + tokio::time::Instant::now().duration_since(self.origin).as_nanos()
    }

    fn next_bits(&mut self) -> u64 {
        self.calls += 1;
        self.calls
    }
}

thread_local! {
    static SIMULATED: RefCell<Option<Simulated>> = const { RefCell::new(None) };
}

/// Makes this thread's wall clock start at `start_unix_nanos` now and move
/// with tokio's clock, and its instance bits a counter, until the returned
/// guard drops. Call it inside the (paused) runtime the simulation runs on.
#[cfg(any(test, feature = "testing"))]
pub fn simulate(start_unix_nanos: u128) -> SimulatedClock {
    let origin = tokio::time::Instant::now();
    SIMULATED.with(|simulated| {
        *simulated.borrow_mut() = Some(Simulated { start_unix_nanos, origin, calls: 0 });
    });
    SimulatedClock(())
}

/// Keeps the simulated clock installed; the system's is back once dropped.
#[cfg(any(test, feature = "testing"))]
pub struct SimulatedClock(());

#[cfg(any(test, feature = "testing"))]
impl Drop for SimulatedClock {
    fn drop(&mut self) {
        SIMULATED.with(|simulated| *simulated.borrow_mut() = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_clock_moves_with_the_paused_runtime_and_counts_instance_bits() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let start = 1_800_000_000u128 * 1_000_000_000;
            let guard = simulate(start);
            assert_eq!(unix_nanos(), start);
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            assert_eq!(unix_nanos(), start + 3_000_000_000);
            assert_eq!((instance_bits(), instance_bits()), (1, 2));
            drop(guard);
            assert!(unix_nanos() > 1_600_000_000u128 * 1_000_000_000, "the system clock is back");
        });
    }
}
