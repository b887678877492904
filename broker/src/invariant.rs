//! Always-on checks of the node's invariants.
//!
//! `invariant!` is `assert!` under a name that says what is being checked: a
//! property the rest of the node relies on (offsets dense and increasing, the
//! durable offset never past the log end, leader epochs monotonic). Unlike
//! `debug_assert!` it stays in release builds, which is what simulated runs
//! and CI use, so a broken invariant stops the run that broke it. Each check
//! must be O(1) in the size of the log.

/// Assert an invariant in every build profile.
macro_rules! invariant {
    ($cond:expr, $($arg:tt)+) => {
        assert!($cond, $($arg)+)
    };
}
