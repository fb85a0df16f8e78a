//! The recovery checkpoint file, read at every partition open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::storage::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    if let Some(c) = Checkpoint::decode(data) {
        assert_eq!(&c.encode()[..], data, "a decoded checkpoint re-encodes");
    }
});
