//! `otwatch::fuzzing::decode`: IPv4 and TCP headers read by hand must agree with etherparse.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    otwatch::fuzzing::decode(data);
});
