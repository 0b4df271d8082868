//! A deterministic xorshift64 for tests that want many varied inputs: a failing input
//! reproduces from the seed written in the test, with no seed file and no dependency.

/// xorshift64 (Marsaglia): fast, and plenty for making test inputs differ.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator starting from `seed` (0, which xorshift cannot leave, is made 1).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value below `n` (0 for an `n` of 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_values_and_zero_is_not_stuck() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        assert_eq!(a.bytes(32), b.bytes(32));
        let mut zero = XorShift::new(0);
        assert_ne!(zero.next_u64(), zero.next_u64());
        assert!((0..1000).all(|_| a.below(10) < 10));
    }
}
