//! The recovery checkpoint file with its producer table, read at every
//! partition open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::storage::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    if let Some(c) = Checkpoint::decode(data) {
        // Version 1 files decode too and re-encode as version 2: compare
        // the values, not the bytes.
        assert_eq!(Checkpoint::decode(&c.encode()), Some(c), "round trip");
    }
    if let Some((c, table)) = Checkpoint::decode_with(data, 64) {
        assert_eq!(
            Checkpoint::decode_with(&c.encode_with(&table), 64),
            Some((c, table)),
            "what decodes round-trips"
        );
    }
});
