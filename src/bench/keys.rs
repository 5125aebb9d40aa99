//! The keys a store benchmark touches: key number n of the key space is its
//! decimal digits padded to the key size (etcd's benchmark keys), and each
//! client draws numbers from its own deterministic generator, so two runs
//! with the same flags touch the same keys in the same order.

/// The key of number `number`: its decimal digits, left-padded with zeroes
/// (or cut to the last `bytes` digits) to `bytes`.
pub fn key_of(number: u64, bytes: usize) -> Vec<u8> {
    let digits = format!("{number:0bytes$}");
    digits.as_bytes()[digits.len() - bytes..].to_vec()
}

/// How many distinct keys `bytes` decimal digits can name (10^bytes,
/// saturating), the largest key space that does not repeat keys.
pub fn distinct_keys(bytes: usize) -> u64 {
    u32::try_from(bytes).ok().and_then(|bytes| 10u64.checked_pow(bytes)).unwrap_or(u64::MAX)
}

/// One client's random numbers: xorshift64, seeded from the client's
/// number so clients do not walk the key space in step.
pub struct Chooser {
    state: u64,
}

impl Chooser {
    pub fn for_client(client: u32) -> Chooser {
        // xorshift must never hold 0; the odd multiplier keeps seeds apart.
        let state = 0x9e37_79b9_7f4a_7c15 ^ (u64::from(client) + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
        Chooser { state: if state == 0 { 1 } else { state } }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// A key number below `key_space` (more than 0).
    pub fn number_below(&mut self, key_space: u64) -> u64 {
        self.next() % key_space
    }

    /// A fraction in [0, 1), for choosing between kinds of operation.
    pub fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_asked_size() {
        assert_eq!(key_of(42, 8), b"00000042");
        assert_eq!(key_of(123_456_789, 4), b"6789");
        assert_eq!(key_of(7, 1), b"7");
    }

    #[test]
    fn distinct_keys_counts_what_the_digits_can_name() {
        assert_eq!(distinct_keys(1), 10);
        assert_eq!(distinct_keys(8), 100_000_000);
        assert_eq!(distinct_keys(19), 10_000_000_000_000_000_000);
        assert_eq!(distinct_keys(20), u64::MAX);
        assert_eq!(distinct_keys(1536), u64::MAX);
    }

    #[test]
    fn choosers_are_repeatable_in_range_and_differ_between_clients() {
        let numbers = |client| {
            let mut chooser = Chooser::for_client(client);
            (0..1000).map(|_| chooser.number_below(50)).collect::<Vec<_>>()
        };
        assert_eq!(numbers(3), numbers(3), "the same client draws the same numbers");
        assert_ne!(numbers(3), numbers(4), "two clients draw different numbers");
        let drawn = numbers(0);
        assert!(drawn.iter().all(|&number| number < 50));
        let distinct: std::collections::BTreeSet<_> = drawn.iter().collect();
        assert_eq!(distinct.len(), 50, "1000 draws from 50 keys reach every key");
    }

    #[test]
    fn fractions_are_in_the_unit_interval_and_spread() {
        let mut chooser = Chooser::for_client(9);
        let fractions: Vec<f64> = (0..10_000).map(|_| chooser.fraction()).collect();
        assert!(fractions.iter().all(|&fraction| (0.0..1.0).contains(&fraction)));
        let below_a_quarter = fractions.iter().filter(|&&fraction| fraction < 0.25).count();
        assert!((2000..3000).contains(&below_a_quarter), "{below_a_quarter} of 10000 below 0.25");
    }
}
