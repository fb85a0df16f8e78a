//! The group offsets log and snapshot (`data/groups/`): a sequence of
//! length- and CRC-framed records, replayed at start-up. Odd first bytes
//! frame the rest with a valid length and CRC, so the body parser is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::broker::groups::offsets::OffsetRecord;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let mut buf = if mode & 1 == 1 && !rest.is_empty() {
        let mut v = Vec::with_capacity(rest.len() + 8);
        v.extend_from_slice(&(rest.len() as u32).to_le_bytes());
        v.extend_from_slice(&crc32(rest).to_le_bytes());
        v.extend_from_slice(rest);
        framed = v;
        &framed[..]
    } else {
        rest
    };
    while let Ok(Some((record, len))) = OffsetRecord::decode(buf) {
        let mut again = Vec::new();
        record.encode(&mut again);
        assert_eq!(&again[..], &buf[..len], "a decoded record re-encodes");
        buf = &buf[len..];
    }
});

/// CRC-32 (IEEE), bitwise: the fuzz crate needs no more dependencies.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
