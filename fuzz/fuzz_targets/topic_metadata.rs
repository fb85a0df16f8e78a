//! A topic metadata file (`data/meta/topics/<topic>.toml`), read at start-up.
//! The checksum line is recomputed half of the time so that the TOML and
//! version checks behind it are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::broker::metadata::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let text = if mode & 1 == 1 {
        format!("{text}# crc32 = {:08x}\n", crc32(text.as_bytes()))
    } else {
        text.into_owned()
    };
    if let Ok(meta) = decode(&text) {
        assert_eq!(decode(&encode(&meta)), Ok(meta), "what decodes round-trips");
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
