//! `--rate`: how a store benchmark keeps to a number of operations per
//! second over all its clients. Every client asks the one limiter for a
//! send time before each operation; the limiter hands out times one
//! interval apart. It keeps no credit for idle time (a token bucket one
//! token deep), so a run of S seconds sends at most rate x S + 1 operations,
//! however late the clients come back: a slow store is measured slow, not
//! flooded afterwards. It never sleeps itself; the caller waits for the time.

use std::time::{Duration, Instant};

pub struct Limiter {
    interval: Duration,
    /// The earliest time the next operation may go.
    next: Option<Instant>,
}

impl Limiter {
    /// A limiter for `rate` operations per second, or none for 0 (unlimited).
    pub fn new(rate: u64) -> Option<Limiter> {
        (rate > 0).then(|| Limiter { interval: Duration::from_secs_f64(1.0 / rate as f64), next: None })
    }

    /// The time at which one more operation may be sent, asked at `now`.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let slot = match self.next {
            Some(next) if next > now => next,
            _ => now,
        };
        self.next = Some(slot + self.interval);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_unlimited() {
        assert!(Limiter::new(0).is_none());
    }

    #[test]
    fn operations_asked_together_are_spread_one_interval_apart() {
        let mut limiter = Limiter::new(100).expect("a limit");
        let start = Instant::now();
        let slots: Vec<Instant> = (0..1000).map(|_| limiter.reserve(start)).collect();
        assert_eq!(slots[0], start, "the first goes at once");
        for pair in slots.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(10));
        }
        let within_two_seconds = slots.iter().filter(|&&slot| slot <= start + Duration::from_secs(2)).count();
        assert_eq!(within_two_seconds, 201, "rate x seconds + 1 fit in two seconds");
    }

    #[test]
    fn idle_time_earns_no_burst() {
        let mut limiter = Limiter::new(10).expect("a limit");
        let start = Instant::now();
        limiter.reserve(start);
        let later = start + Duration::from_secs(60);
        let slots: Vec<Instant> = (0..3).map(|_| limiter.reserve(later)).collect();
        assert_eq!(
            slots,
            vec![later, later + Duration::from_millis(100), later + Duration::from_millis(200)],
            "after a minute idle the next operations are still one interval apart"
        );
    }

    #[test]
    fn a_client_that_comes_back_late_goes_at_once_without_catching_up() {
        let mut limiter = Limiter::new(1000).expect("a limit");
        let start = Instant::now();
        assert_eq!(limiter.reserve(start), start);
        let late = start + Duration::from_millis(5);
        assert_eq!(limiter.reserve(late), late);
        assert_eq!(limiter.reserve(late), late + Duration::from_millis(1));
    }
}
