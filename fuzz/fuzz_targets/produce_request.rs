//! A produce request as the broker receives it: the zero-copy decode of the
//! whole message, then the scan of its records (the broker's validation) and
//! the record skipper used to trim fetches. Any input must give a value or
//! an error, never a panic, and the decode must agree with prost's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use strata::proto::v1::ProduceRequest;
use strata::wire::{scan_records, skip_records, ProduceRequestWire};

fuzz_target!(|data: &[u8]| {
    let reference = ProduceRequest::decode(data);
    match ProduceRequestWire::decode(data) {
        Ok(wire) => {
            let payload = wire.records_payload();
            let scanned = scan_records(&payload, u32::MAX);
            if let Ok(summary) = &scanned {
                let _ = skip_records(&payload, summary.record_count);
            }
            // What the zero-copy path accepts whole, prost accepts too.
            if scanned.is_ok() {
                assert!(reference.is_ok(), "accepted bytes prost refuses");
            }
        }
        Err(_) => assert!(reference.is_err(), "refused bytes prost accepts"),
    }
    let _ = scan_records(data, 1 << 20);
});
