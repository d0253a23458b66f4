//! `otwatch::fuzzing::workers`: see src/fuzzing.rs. Any panic (events or alerts that differ
//! between one worker and two) is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    otwatch::fuzzing::workers(data);
});
