//! Reconnect backoff: exponential growth capped at a maximum, with "equal
//! jitter" so many clients that lost the same device do not retry in step.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempts: u32,
    /// xorshift64 state; 0 means not yet seeded.
    rng: u64,
}

impl Backoff {
    /// A `max` below `min` is raised to `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), attempts: 0, rng: 0 }
    }

    /// Delay before the next attempt: `min * 2^attempts` capped at `max`, of
    /// which half is fixed and half random; then counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.base();
        let half = cap / 2;
        // Random part in 0..=cap-half, in nanoseconds; u64 covers 584 years.
        let span = u64::try_from((cap - half).as_nanos()).unwrap_or(u64::MAX);
        let r = self.next_u64();
        let jitter = if span == u64::MAX { r } else { r % (span + 1) };
        self.attempts = self.attempts.saturating_add(1);
        half + Duration::from_nanos(jitter)
    }

    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The un-jittered delay for the current attempt count.
    fn base(&self) -> Duration {
        1u32.checked_shl(self.attempts).and_then(|f| self.min.checked_mul(f)).map_or(self.max, |d| d.min(self.max))
    }

    fn next_u64(&mut self) -> u64 {
        if self.rng == 0 {
            // Seeded lazily so the address is where the struct finally lives,
            // which separates backoffs created in the same clock tick.
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            let addr = self as *const Self as usize as u64;
            self.rng = splitmix64(nanos ^ addr.rotate_left(32)) | 1;
        }
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// Scrambles the seed so nearby clock values give unrelated streams.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_within_jitter_bounds_and_caps() {
        let mut b = Backoff::new(100 * MS, 5000 * MS);
        for k in 0..20u32 {
            let cap = (100 * MS * 2u32.pow(k.min(10))).min(5000 * MS);
            assert_eq!(b.base(), cap);
            let d = b.next_delay();
            assert!(d >= cap / 2 && d <= cap, "attempt {k}: {d:?} outside [{:?}, {cap:?}]", cap / 2);
            assert_eq!(b.attempts(), k + 1);
        }
    }

    #[test]
    fn lower_bound_grows() {
        let mut b = Backoff::new(10 * MS, Duration::from_secs(60));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        // Attempt k+2 is at least 2^(k+2)/2 = 2 * 2^k, above attempt k's maximum 2^k.
        for k in 0..6 {
            assert!(delays[k + 2] >= delays[k], "{delays:?}");
        }
        assert!(delays[7] >= 640 * MS);
    }

    #[test]
    fn never_exceeds_max_even_after_many_attempts() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
        assert_eq!(b.attempts(), 200);
        b.attempts = u32::MAX;
        assert!(b.next_delay() <= Duration::from_secs(30));
        assert_eq!(b.attempts(), u32::MAX);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(100 * MS, 10_000 * MS);
        for _ in 0..6 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() <= 100 * MS);
    }

    #[test]
    fn jitter_varies_and_edge_cases_hold() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..32).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= 500 * MS && *d <= 1000 * MS));
        assert!(delays.iter().any(|d| *d != delays[0]), "no jitter: {delays:?}");

        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.next_delay(), Duration::ZERO);
        let mut inverted = Backoff::new(200 * MS, 100 * MS);
        assert!(inverted.next_delay() <= 200 * MS);
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert!(huge.next_delay() >= Duration::MAX / 2);
    }
}
