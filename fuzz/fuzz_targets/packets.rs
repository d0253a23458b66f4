//! `otwatch::fuzzing::packets`: see src/fuzzing.rs for what it drives. Any panic is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    otwatch::fuzzing::packets(data);
});
