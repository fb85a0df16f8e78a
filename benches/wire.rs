//! The wire hot paths, each beside a baseline measured in the same run:
//!
//! - produce-request decode: Strata's zero-copy `ProduceRequestWire` vs
//!   prost's full decode of the same bytes into `ProduceRequest`;
//! - batch validation: `scan_records` per record vs prost's full decode;
//! - fetch response assembly: encoding a 1 MiB `FetchResponseWire` from
//!   stored payloads vs a plain memcpy of the same bytes.
//!
//! Run: `cargo bench --bench wire`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use strata::proto::v1::{ProduceRequest, Record};
use strata::wire::{scan_records, FetchResponseWire, PayloadView, ProduceRequestWire, WireBatch};

/// The W1 request shape: 1,000 records, 16-byte keys, 100-byte values.
fn request() -> ProduceRequest {
    ProduceRequest {
        topic: "bench".into(),
        partition: Some(0),
        records: (0..1000u32)
            .map(|i| Record {
                key: format!("key-{i:012}").into_bytes(),
                value: vec![(i % 251) as u8; 100],
                headers: Vec::new(),
                timestamp_ms: 0,
            })
            .collect(),
        ..Default::default()
    }
}

fn decode(c: &mut Criterion) {
    let bytes = Bytes::from(request().encode_to_vec());
    let mut g = c.benchmark_group("produce_request_decode_1000_records");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("strata_zero_copy", |b| {
        b.iter(|| black_box(ProduceRequestWire::decode(bytes.clone()).expect("valid")))
    });
    g.bench_function("prost_full_decode_baseline", |b| {
        b.iter(|| black_box(ProduceRequest::decode(bytes.clone()).expect("valid")))
    });
    g.finish();

    let wire = ProduceRequestWire::decode(bytes.clone()).expect("valid");
    let payload = wire.records_payload().into_bytes();
    let mut g = c.benchmark_group("batch_validation_1000_records");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("scan_records", |b| {
        b.iter(|| black_box(scan_records(&payload, 1 << 20).expect("valid")))
    });
    g.bench_function("prost_full_decode_baseline", |b| {
        b.iter(|| black_box(ProduceRequest::decode(bytes.clone()).expect("valid")))
    });
    g.finish();
}

fn assembly(c: &mut Criterion) {
    // Ten stored batches of ~105 KB: about one 1 MiB fetch.
    let payload = ProduceRequestWire::decode(Bytes::from(request().encode_to_vec()))
        .expect("valid")
        .records_payload()
        .into_bytes();
    let batches: Vec<WireBatch> = (0..10u64)
        .map(|i| WireBatch {
            base_offset: i * 1000,
            append_time_ms: 1_700_000_000_000,
            records: PayloadView::from_bytes(payload.clone()),
        })
        .collect();
    let response = FetchResponseWire {
        batches,
        high_watermark: 10_000,
        log_start_offset: 0,
    };
    let len = response.encoded_len();
    let mut g = c.benchmark_group("fetch_response_assembly_1MiB");
    g.throughput(Throughput::Bytes(len as u64));
    let mut out = BytesMut::with_capacity(len);
    g.bench_function("encode_from_stored_payloads", |b| {
        b.iter(|| {
            out.clear();
            response.encode(&mut out).expect("capacity");
            black_box(&out);
        })
    });
    let flat: Vec<u8> = (0..10).flat_map(|_| payload.iter().copied()).collect();
    let mut dst = vec![0u8; flat.len()];
    g.bench_function("memcpy_baseline", |b| {
        b.iter(|| {
            dst.copy_from_slice(&flat);
            black_box(&dst);
        })
    });
    g.finish();
}

criterion_group!(benches, decode, assembly);
criterion_main!(benches);
