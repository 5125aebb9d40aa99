//! Every random choice of a simulated run comes from its seed: the
//! simulator's own (a [`Rng`] per purpose, split from the seed) and the
//! process's. The process's are std's hash keys (`HashMap` orders), tokio's
//! generator (which `select!` branch is tried first, which waker list a
//! `watch` channel uses) and the futures crate's; all of them start from
//! the kernel's `getrandom`, which libc exposes as a symbol this binary
//! defines over (symbol interposition: the executable's definition wins).
//! openraft's election timeouts come from `raft::runtime`, seeded apart.
//!
//! A run in a new process with the same seed draws the same numbers: the
//! runner starts one process per seed for that reason, and
//! [`check_interposed`] fails loudly if the process's draws do not come
//! from here (a std that reads randomness another way).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The state of the process-wide stream `getrandom` hands out.
static STREAM: AtomicU64 = AtomicU64::new(0x6e76_6b76_5f73_696d);
/// Set by the first call of our `getrandom`.
static CALLED: AtomicBool = AtomicBool::new(false);

/// Makes the process's randomness start from `seed`. Call before any
/// thread, runtime or hash map the simulation uses exists.
pub fn seed_process(seed: u64) {
    STREAM.store(seed ^ 0x9e37_79b9_7f4a_7c15, Ordering::SeqCst);
}

/// glibc's `getrandom(2)` wrapper, defined here so std, tokio and the
/// futures crate draw from the seed instead of the kernel.
///
/// # Safety
/// `buffer` must be valid for writes of `length` bytes, as getrandom(2)
/// requires of its callers.
#[no_mangle]
pub unsafe extern "C" fn getrandom(buffer: *mut u8, length: usize, _flags: u32) -> isize {
    CALLED.store(true, Ordering::SeqCst);
    for offset in 0..length {
        let word = splitmix(STREAM.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::SeqCst));
        // SAFETY: the caller gives `length` writable bytes at `buffer`, and
        // `offset < length`.
        unsafe { buffer.add(offset).write(word as u8) };
    }
    isize::try_from(length).unwrap_or(isize::MAX)
}

/// Fails unless the hash keys of a new thread came from [`getrandom`]:
/// without that, `HashMap` orders and tokio's choices would differ between
/// two runs of one seed.
pub fn check_interposed() -> Result<(), String> {
    std::thread::spawn(|| {
        let _ = std::collections::hash_map::RandomState::new();
    })
    .join()
    .map_err(|_| "a thread making hash keys panicked".to_string())?;
    if CALLED.load(Ordering::SeqCst) {
        Ok(())
    } else {
        Err("std did not take its hash keys from getrandom: this build of std reads randomness another way, so \
             runs of one seed could differ; the simulator cannot promise replays with it"
            .into())
    }
}

fn splitmix(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small generator (SplitMix64) for the simulator's own choices.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: splitmix(seed) }
    }

    /// A generator of its own for `purpose`, so adding draws to one part of
    /// the simulator leaves the others' draws as they were.
    pub fn split(&mut self, purpose: &str) -> Rng {
        let salt = purpose.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        Rng::new(self.next_u64() ^ salt)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix(self.state)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "a draw below 0");
        // Lemire's multiply-shift: unbiased enough for a simulation.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `chance` (0.0..=1.0).
    pub fn chance(&mut self, chance: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < chance
    }

    /// An element of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
