//! Raw bytes → parse → header check → map → plan → ACK, plus the MLLP decoder and
//! the batch splitter; the invariants are asserted in `fhirvault::hl7v2::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    fhirvault::hl7v2::fuzzing::parse_map_ack(bytes);
});
