//! Seed derivation: one u64 names a whole run.
//!
//! Every source of randomness in a simulation (turmoil's network RNG, each
//! node's RNG, each disk, the workload's choices, the fault schedule) is a
//! ChaCha8 stream derived from the run seed and a stable label. Deriving by
//! label rather than by drawing in sequence keeps one component's stream
//! unchanged when another component starts drawing more numbers.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trace::fnv1a;

/// A sub-seed for the component called `label`.
pub fn derive(seed: u64, label: &str) -> u64 {
    rng(seed, label).next_u64()
}

/// A ChaCha8 stream for the component called `label`.
pub fn rng(seed: u64, label: &str) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(fnv1a(label.as_bytes()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_give_independent_stable_streams() {
        assert_eq!(derive(7, "turmoil"), derive(7, "turmoil"));
        assert_ne!(derive(7, "turmoil"), derive(7, "broker-0"));
        assert_ne!(derive(7, "turmoil"), derive(8, "turmoil"));
    }
}
