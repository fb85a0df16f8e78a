//! The recovery checkpoint file with its producer table, read at every
//! partition open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::storage::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    if let Some(c) = Checkpoint::decode(data) {
        assert_eq!(&c.encode()[..], data, "a decoded checkpoint re-encodes");
    }
    if let Some((c, table)) = Checkpoint::decode_with(data, 64) {
        assert_eq!(
            Checkpoint::decode_with(&c.encode_with(&table), 64),
            Some((c, table)),
            "what decodes round-trips"
        );
    }
});
