//! Fuzz target: see `faultline_broker::fuzz_targets::metadata`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| faultline_broker::fuzz_targets::metadata(data));
