//! The offset and time index files, validated when a segment is opened. The
//! first 16 bytes choose the trusted log end and next relative offset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::storage::index::{
    valid_offset_entries, valid_time_entries, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN,
};

fuzz_target!(|data: &[u8]| {
    let Some((head, index)) = data.split_first_chunk::<16>() else {
        return;
    };
    let log_end = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
    let next_relative = u64::from_le_bytes(head[8..].try_into().unwrap_or_default());
    let n = valid_offset_entries(index, log_end, next_relative) as usize;
    assert!(n <= index.len() / OFFSET_ENTRY_LEN);
    let n = valid_time_entries(index, next_relative) as usize;
    assert!(n <= index.len() / TIME_ENTRY_LEN);
});
