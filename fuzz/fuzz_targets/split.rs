//! `otwatch::fuzzing::split`: see models/src/fuzzing.rs. Any panic (alerts that differ between
//! one engine and workers with a stage) is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    otwatch::fuzzing::split(data);
});
