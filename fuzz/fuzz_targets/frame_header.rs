//! The batch frame header and CRC check that every read and the recovery
//! scan apply to bytes from disk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::storage::frame::{check_frame, check_header, FrameCheck, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    for check in [check_header(data), check_frame(data)] {
        if let FrameCheck::Valid(h) = check {
            assert!(h.frame_len as usize <= data.len());
            assert!(h.frame_len as usize >= HEADER_LEN);
            assert!(h.meta.record_count > 0);
        }
    }
});
