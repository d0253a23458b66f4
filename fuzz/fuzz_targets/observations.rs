//! `otwatch::fuzzing::observations`: see src/fuzzing.rs. Any panic (a disagreement between the
//! two ways to an observation) is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    otwatch::fuzzing::observations(data);
});
