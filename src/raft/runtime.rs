//! openraft's async runtime for nvkv: tokio's (tasks on the shard's
//! `LocalSet`, tokio's timers and channels), except that the random numbers
//! openraft draws (its election timeouts) come from a generator a thread
//! may seed. A serving node never seeds it and draws from the system's
//! generator, as tokio's runtime would; the simulator seeds it, so a seed
//! replays every election the same way.
//!
//! This module never changes how tasks run or time passes.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand::RngCore;

/// tokio's runtime with a seedable generator (see the module doc).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RaftRuntime;

type Tokio = TokioRuntime;

impl AsyncRuntime for RaftRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = RaftRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> RaftRng {
        RaftRng(())
    }

    fn oneshot<T: OptionalSend>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>) {
        Tokio::oneshot()
    }
}

thread_local! {
    /// The generator a simulation seeded for this thread, if any.
    static SEEDED: RefCell<Option<rand::rngs::StdRng>> = const { RefCell::new(None) };
}

/// The generator openraft draws from: this thread's seeded one, else the
/// system's (`rand::thread_rng`).
pub struct RaftRng(());

impl RaftRng {
    fn draw<T>(&mut self, draw: impl FnOnce(&mut dyn RngCore) -> T) -> T {
        SEEDED.with(|seeded| match seeded.borrow_mut().as_mut() {
            Some(rng) => draw(rng),
            None => draw(&mut rand::thread_rng()),
        })
    }
}

impl RngCore for RaftRng {
    fn next_u32(&mut self) -> u32 {
        self.draw(|rng| rng.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        self.draw(|rng| rng.next_u64())
    }

    fn fill_bytes(&mut self, destination: &mut [u8]) {
        self.draw(|rng| rng.fill_bytes(destination))
    }

    fn try_fill_bytes(&mut self, destination: &mut [u8]) -> Result<(), rand::Error> {
        self.draw(|rng| rng.try_fill_bytes(destination))
    }
}

/// Makes every draw of openraft on this thread come from a generator
/// seeded with `seed`. Test tool only (cargo feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub fn seed_thread(seed: u64) {
    SEEDED.with(|seeded| {
        *seeded.borrow_mut() = Some(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed))
    });
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn a_seeded_thread_draws_the_same_election_timeouts_again() {
        let draw = || (0..8).map(|_| RaftRuntime::thread_rng().gen_range(150..300)).collect::<Vec<u64>>();
        seed_thread(17);
        let first = draw();
        seed_thread(17);
        assert_eq!(draw(), first);
        seed_thread(18);
        assert_ne!(draw(), first, "another seed, other timeouts");
    }
}
