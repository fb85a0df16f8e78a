//! Hand-written protobuf types for the server's zero-copy data path.
//!
//! # The idea: wire format equals disk format
//!
//! A `ProduceRequest` carries its records as field 3 (`repeated Record records = 3`),
//! and a `RecordBatch` carries its records as field 3 too (`repeated Record records = 3`).
//! On the wire, a repeated message field is nothing but a sequence of independent
//! length-delimited entries, and protobuf parsers merge fields that appear in any order.
//! So the bytes of all field-3 entries of a produce request are, *byte for byte*, the
//! `records` field of a `RecordBatch`. The server therefore never decodes records:
//!
//! 1. [`ProduceRequestWire`] takes the request buffer as one [`Bytes`] (tonic hands
//!    it over without copying) and slices out the records entries as one
//!    [`RecordsPayload`] (zero-copy when they are contiguous, which is what every
//!    encoder produces).
//! 2. [`scan_records`] validates the payload in one pass without allocating: it
//!    counts records, checks the structure and limits, and collects timestamps.
//! 3. Storage writes the payload as it came (framed, checksummed) into a segment.
//! 4. A fetch answers with [`FetchResponseWire`]: each [`WireBatch`] writes its two
//!    header fields and then copies the stored payload bytes (a [`PayloadView`] into
//!    the memory map) straight into tonic's encode buffer: one copy, no re-encoding.
//!    [`skip_records`] trims the first batch so a response starts exactly at the
//!    requested offset.
//!
//! Clients use the generated types of [`crate::proto::v1`]; on the wire the two are
//! the same messages.
//!
//! # Byte layout
//!
//! ```text
//! payload   := entry*                       (at least one entry in a produce request)
//! entry     := key(3, LEN) varint(n) record  (key(3, LEN) is normally the single byte 0x1A)
//! record    := encoded strata.v1.Record, n bytes:
//!                field 1 key           LEN  bytes
//!                field 2 value         LEN  bytes
//!                field 3 headers       LEN  Header { 1 key LEN utf-8 string; 2 value LEN bytes }
//!                field 4 timestamp_ms  VARINT int64 (two's complement as u64)
//!                (unknown fields are allowed and skipped)
//!
//! RecordBatch on the wire  := [0x08 varint(base_offset)] [0x10 varint(append_time_ms)] payload
//! FetchResponse on the wire := (0x0A varint(len) RecordBatch)* [0x10 varint(high_watermark)]
//!                              [0x18 varint(log_start_offset)]
//! ConsumeEvent.records     := 0x1A varint(len) ConsumedBatch
//! ConsumedBatch            := [0x0A topic] [0x10 varint(partition)] 0x1A varint(len) RecordBatch
//! ```
//!
//! Record *i* of a payload stored with base offset *b* has offset *b + i*.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{
    self, check_wire_type, encode_key, encode_varint, encoded_len_varint, key_len, DecodeContext,
    WireType,
};
use prost::{DecodeError, Message};

use crate::proto::v1;

/// Field number of `records` in `ProduceRequest` and in `RecordBatch`.
pub const RECORDS_FIELD: u32 = 3;

/// The key byte of a records entry: field 3, wire type LEN (`3 << 3 | 2`).
pub const RECORDS_KEY_BYTE: u8 = 0x1A;

const PRODUCE_TOPIC: u32 = 1;
const PRODUCE_PARTITION: u32 = 2;
const PRODUCE_ACKS: u32 = 4;
const PRODUCE_PRODUCER_ID: u32 = 5;
const PRODUCE_PRODUCER_EPOCH: u32 = 6;
const PRODUCE_BASE_SEQUENCE: u32 = 7;

const BATCH_BASE_OFFSET: u32 = 1;
const BATCH_APPEND_TIME: u32 = 2;

const FETCH_BATCHES: u32 = 1;
const FETCH_HIGH_WATERMARK: u32 = 2;
const FETCH_LOG_START_OFFSET: u32 = 3;

const CONSUME_JOINED: u32 = 1;
const CONSUME_ASSIGNMENT: u32 = 2;
const CONSUME_RECORDS: u32 = 3;

const CONSUMED_TOPIC: u32 = 1;
const CONSUMED_PARTITION: u32 = 2;
const CONSUMED_BATCH: u32 = 3;

const RECORD_KEY: u32 = 1;
const RECORD_VALUE: u32 = 2;
const RECORD_HEADERS: u32 = 3;
const RECORD_TIMESTAMP: u32 = 4;

const HEADER_KEY: u32 = 1;
const HEADER_VALUE: u32 = 2;

const WT_VARINT: u8 = 0;
const WT_FIXED64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_START_GROUP: u8 = 3;
const WT_END_GROUP: u8 = 4;
const WT_FIXED32: u8 = 5;

/// Deepest nesting of (deprecated, unknown) groups that [`scan_records`] skips.
const MAX_GROUP_DEPTH: u32 = 32;

// ---------------------------------------------------------------------------------------
// Errors and scan results
// ---------------------------------------------------------------------------------------

/// Why a records payload was rejected by [`scan_records`] or [`skip_records`].
///
/// `record` is the 0-based index of the record entry being read; `offset` is a byte
/// position within the records payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The payload holds no record; a produce request must carry at least one.
    #[error("the request carries no records; at least one record is required")]
    NoRecords,
    /// A varint ran past the end of its enclosing buffer.
    #[error("record {record}: truncated varint at byte {offset}")]
    TruncatedVarint {
        /// Index of the record being read.
        record: u32,
        /// Byte position where the varint starts.
        offset: usize,
    },
    /// A varint is longer than 10 bytes or does not fit in 64 bits.
    #[error("record {record}: invalid varint at byte {offset} (over 10 bytes or over 64 bits)")]
    InvalidVarint {
        /// Index of the record being read.
        record: u32,
        /// Byte position where the varint starts.
        offset: usize,
    },
    /// A field key has field number 0, does not fit in 32 bits, or has wire type 6 or 7.
    #[error("record {record}: invalid field key {key} at byte {offset}")]
    InvalidKey {
        /// Index of the record being read.
        record: u32,
        /// Byte position of the key.
        offset: usize,
        /// The decoded key varint.
        key: u64,
    },
    /// A length (or a fixed-width value) reaches past the end of its enclosing buffer.
    #[error(
        "record {record}: {what} at byte {offset} needs {length} bytes but only {available} remain"
    )]
    LengthOutOfBounds {
        /// Index of the record being read.
        record: u32,
        /// What was being read, e.g. `"Record.value"`.
        what: &'static str,
        /// Byte position of the length prefix (or of the fixed-width value).
        offset: usize,
        /// The length asked for, in bytes.
        length: u64,
        /// The bytes left in the enclosing buffer.
        available: usize,
    },
    /// A known field carries the wrong wire type.
    #[error(
        "record {record}: {what} at byte {offset} has wire type {wire_type}, expected {expected}"
    )]
    WrongWireType {
        /// Index of the record being read.
        record: u32,
        /// The field, e.g. `"Record.timestamp_ms"`.
        what: &'static str,
        /// Byte position of the field key.
        offset: usize,
        /// The wire type found.
        wire_type: u8,
        /// The wire type the field requires.
        expected: u8,
    },
    /// A header key is not valid UTF-8.
    #[error("record {record}, header {header}: key at byte {offset} is not valid UTF-8")]
    InvalidHeaderKey {
        /// Index of the record.
        record: u32,
        /// Index of the header within the record.
        header: u32,
        /// Byte position of the key's bytes.
        offset: usize,
    },
    /// An (unknown) group field is malformed: unterminated, mismatched, stray end,
    /// or nested too deeply.
    #[error("record {record}: malformed group at byte {offset}: {reason}")]
    MalformedGroup {
        /// Index of the record.
        record: u32,
        /// Byte position of the offending key.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A payload entry is not a record (field 3, wire type LEN).
    #[error(
        "record {record}: entry at byte {offset} is field {field} with wire type {wire_type}, \
         not a record (field 3, length-delimited)"
    )]
    NotARecord {
        /// Index the entry would have had.
        record: u32,
        /// Byte position of the entry's key.
        offset: usize,
        /// The entry's field number.
        field: u32,
        /// The entry's wire type.
        wire_type: u8,
    },
    /// An encoded record is larger than the allowed maximum.
    #[error("record {record} is {size} bytes, over the limit of {limit} bytes (max_record_bytes)")]
    RecordTooLarge {
        /// Index of the record.
        record: u32,
        /// Size of the encoded `Record` message, in bytes.
        size: u64,
        /// The limit, in bytes.
        limit: u32,
    },
    /// The payload holds more than `u32::MAX` records.
    #[error("the payload holds more than {} records", u32::MAX)]
    TooManyRecords,
    /// [`skip_records`] was asked to skip more records than the payload holds.
    #[error("cannot skip {requested} records: the payload holds only {available}")]
    NotEnoughRecords {
        /// Records asked to skip.
        requested: u32,
        /// Records in the payload.
        available: u32,
    },
}

/// What [`scan_records`] learned about a valid records payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordsSummary {
    /// Number of records (at least 1).
    pub record_count: u32,
    /// Size of the largest encoded `Record` message, in bytes (without its key and
    /// length prefix).
    pub largest_record_bytes: u32,
    /// Smallest non-zero `timestamp_ms` of any record (ms since the Unix epoch), or
    /// `None` when every record has timestamp 0 (= batch append time).
    pub min_timestamp_ms: Option<i64>,
    /// Largest non-zero `timestamp_ms` of any record, or `None` as above.
    pub max_timestamp_ms: Option<i64>,
}

// ---------------------------------------------------------------------------------------
// Scanning
// ---------------------------------------------------------------------------------------

/// A bounds-checked cursor over `buf[pos..end]`; positions are absolute within `buf`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    record: u32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
            record: 0,
        }
    }

    #[inline]
    fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    #[inline]
    fn available(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    /// Reads a varint. Inlined, with a fast path for the one-byte case:
    /// field keys, and the lengths of records under 128 bytes and of their
    /// keys and values, are all one byte, so in a typical batch every varint
    /// takes it.
    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        if self.pos < self.end {
            if let Some(&byte) = self.buf.get(self.pos) {
                if byte < 0x80 {
                    self.pos += 1;
                    return Ok(u64::from(byte));
                }
            }
        }
        self.varint_slow()
    }

    /// [`Reader::varint`] for multi-byte values and errors.
    #[cold]
    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, WireError> {
        let start = self.pos;
        // `end` bounds sub-readers; `get` keeps this panic-free regardless.
        let within = self.buf.get(..self.end).unwrap_or(self.buf);
        match decode_varint(within, &mut self.pos) {
            Ok(value) => Ok(value),
            Err(VarintFault::Truncated) => Err(WireError::TruncatedVarint {
                record: self.record,
                offset: start,
            }),
            Err(VarintFault::Invalid) => Err(WireError::InvalidVarint {
                record: self.record,
                offset: start,
            }),
        }
    }

    /// Reads a field key; returns (field number, wire type).
    #[inline]
    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let offset = self.pos;
        let key = self.varint()?;
        let wire_type = (key & 0x7) as u8;
        let field = key >> 3;
        if key > u64::from(u32::MAX) || field == 0 || wire_type > WT_FIXED32 {
            return Err(WireError::InvalidKey {
                record: self.record,
                offset,
                key,
            });
        }
        Ok((field as u32, wire_type))
    }

    /// Takes `len` bytes (already known) as a sub-reader, advancing past them.
    #[inline]
    fn take(
        &mut self,
        len: u64,
        what: &'static str,
        offset: usize,
    ) -> Result<Reader<'a>, WireError> {
        let available = self.available();
        if len > available as u64 {
            return Err(WireError::LengthOutOfBounds {
                record: self.record,
                what,
                offset,
                length: len,
                available,
            });
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(Reader {
            buf: self.buf,
            pos: start,
            end: self.pos,
            record: self.record,
        })
    }

    /// Reads a length prefix and takes that many bytes as a sub-reader.
    #[inline]
    fn len_delimited(&mut self, what: &'static str) -> Result<Reader<'a>, WireError> {
        let offset = self.pos;
        let len = self.varint()?;
        self.take(len, what, offset)
    }

    fn slice(&self) -> &'a [u8] {
        self.buf.get(self.pos..self.end).unwrap_or(&[])
    }

    #[inline]
    fn expect_wire_type(
        &self,
        what: &'static str,
        offset: usize,
        wire_type: u8,
        expected: u8,
    ) -> Result<(), WireError> {
        if wire_type == expected {
            Ok(())
        } else {
            Err(WireError::WrongWireType {
                record: self.record,
                what,
                offset,
                wire_type,
                expected,
            })
        }
    }

    /// Skips the value of an unknown field whose key was just read at `key_offset`.
    fn skip_value(
        &mut self,
        field: u32,
        wire_type: u8,
        key_offset: usize,
        depth: u32,
    ) -> Result<(), WireError> {
        match wire_type {
            WT_VARINT => self.varint().map(|_| ()),
            WT_FIXED64 => self.take(8, "fixed64 field", self.pos).map(|_| ()),
            WT_FIXED32 => self.take(4, "fixed32 field", self.pos).map(|_| ()),
            WT_LEN => self.len_delimited("unknown field").map(|_| ()),
            WT_START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(self.malformed_group(key_offset, "groups nested too deeply"));
                }
                loop {
                    if self.at_end() {
                        return Err(self.malformed_group(key_offset, "unterminated group"));
                    }
                    let inner_offset = self.pos;
                    let (inner_field, inner_wire_type) = self.key()?;
                    if inner_wire_type == WT_END_GROUP {
                        if inner_field == field {
                            return Ok(());
                        }
                        return Err(self.malformed_group(inner_offset, "mismatched end group"));
                    }
                    self.skip_value(inner_field, inner_wire_type, inner_offset, depth + 1)?;
                }
            }
            _ => Err(self.malformed_group(key_offset, "unexpected end group")),
        }
    }

    fn malformed_group(&self, offset: usize, reason: &'static str) -> WireError {
        WireError::MalformedGroup {
            record: self.record,
            offset,
            reason,
        }
    }

    /// Reads the key and length prefix of the next records entry and checks bounds.
    /// Returns the sub-reader over the encoded `Record`.
    #[inline]
    fn record_entry(&mut self) -> Result<Reader<'a>, WireError> {
        let offset = self.pos;
        let (field, wire_type) = self.key()?;
        if field != RECORDS_FIELD || wire_type != WT_LEN {
            return Err(WireError::NotARecord {
                record: self.record,
                offset,
                field,
                wire_type,
            });
        }
        self.len_delimited("record")
    }
}

/// Validates one encoded `Record` and returns its `timestamp_ms`.
#[inline]
fn scan_record(r: &mut Reader<'_>) -> Result<i64, WireError> {
    let mut timestamp_ms = 0i64;
    let mut header = 0u32;
    while !r.at_end() {
        let key_offset = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            RECORD_KEY => {
                r.expect_wire_type("Record.key", key_offset, wire_type, WT_LEN)?;
                r.len_delimited("Record.key")?;
            }
            RECORD_VALUE => {
                r.expect_wire_type("Record.value", key_offset, wire_type, WT_LEN)?;
                r.len_delimited("Record.value")?;
            }
            RECORD_HEADERS => {
                r.expect_wire_type("Record.headers", key_offset, wire_type, WT_LEN)?;
                let mut h = r.len_delimited("Record.headers")?;
                scan_header(&mut h, header)?;
                header = header.saturating_add(1);
            }
            RECORD_TIMESTAMP => {
                r.expect_wire_type("Record.timestamp_ms", key_offset, wire_type, WT_VARINT)?;
                // int64 is encoded as the two's complement u64.
                timestamp_ms = r.varint()? as i64;
            }
            _ => r.skip_value(field, wire_type, key_offset, 0)?,
        }
    }
    Ok(timestamp_ms)
}

/// Why [`decode_varint`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VarintFault {
    /// The buffer ended inside the varint.
    Truncated,
    /// More than 10 bytes, or a 10th byte above 1 (over 64 bits).
    Invalid,
}

/// Decodes the varint at `buf[*pos..]`, advancing `*pos` past the bytes read.
/// Shared by [`Reader::varint`]'s slow path and the fast paths below.
#[inline(always)]
fn decode_varint(buf: &[u8], pos: &mut usize) -> Result<u64, VarintFault> {
    let mut value = 0u64;
    for i in 0..10u32 {
        let byte = *buf.get(*pos).ok_or(VarintFault::Truncated)?;
        *pos += 1;
        if i == 9 && byte > 1 {
            return Err(VarintFault::Invalid);
        }
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(VarintFault::Invalid)
}

/// Reads a length prefix at `pos` and returns the byte range it delimits, if
/// the prefix is well-formed and the range lies inside `buf`; `None` sends the
/// caller to the general reader, which reports what is wrong.
#[inline(always)]
fn plain_span(buf: &[u8], mut pos: usize) -> Option<(usize, usize)> {
    let len = decode_varint(buf, &mut pos).ok()?;
    if len > (buf.len() - pos) as u64 {
        return None;
    }
    Some((pos, pos + len as usize))
}

/// Reads the key and length prefix of the records entry at `pos` when the key is
/// the one-byte records key and the record lies inside `payload`; returns the
/// record's byte range. `None` sends the caller to [`Reader::record_entry`].
#[inline(always)]
fn plain_entry(payload: &[u8], pos: usize) -> Option<(usize, usize)> {
    if *payload.get(pos)? != RECORDS_KEY_BYTE {
        return None;
    }
    plain_span(payload, pos + 1)
}

/// Validates, in one tight loop, a record of the shape producers write: only
/// `key` and `value` (length-delimited) and `timestamp_ms` (varint) fields, each
/// well-formed and inside the record. Returns the record's `timestamp_ms`, or
/// `None` for anything else (headers, unknown fields, any malformation); the
/// caller then runs the general [`scan_record`], which accepts or rejects with
/// the exact error. The fast path changes the speed, never the verdict: every
/// record it accepts, [`scan_record`] accepts with the same timestamp.
#[inline]
fn scan_plain_record(record: &[u8]) -> Option<i64> {
    const KEY_BYTE: u8 = ((RECORD_KEY as u8) << 3) | WT_LEN;
    const VALUE_BYTE: u8 = ((RECORD_VALUE as u8) << 3) | WT_LEN;
    const TIMESTAMP_BYTE: u8 = ((RECORD_TIMESTAMP as u8) << 3) | WT_VARINT;
    let mut timestamp_ms = 0i64;
    let mut pos = 0usize;
    while let Some(&key) = record.get(pos) {
        pos += 1;
        match key {
            KEY_BYTE | VALUE_BYTE => pos = plain_span(record, pos)?.1,
            TIMESTAMP_BYTE => timestamp_ms = decode_varint(record, &mut pos).ok()? as i64,
            _ => return None,
        }
    }
    Some(timestamp_ms)
}

/// Validates one encoded `Header` (index `header` within its record).
fn scan_header(h: &mut Reader<'_>, header: u32) -> Result<(), WireError> {
    while !h.at_end() {
        let key_offset = h.pos;
        let (field, wire_type) = h.key()?;
        match field {
            HEADER_KEY => {
                h.expect_wire_type("Header.key", key_offset, wire_type, WT_LEN)?;
                let key = h.len_delimited("Header.key")?;
                if std::str::from_utf8(key.slice()).is_err() {
                    return Err(WireError::InvalidHeaderKey {
                        record: h.record,
                        header,
                        offset: key.pos,
                    });
                }
            }
            HEADER_VALUE => {
                h.expect_wire_type("Header.value", key_offset, wire_type, WT_LEN)?;
                h.len_delimited("Header.value")?;
            }
            _ => h.skip_value(field, wire_type, key_offset, 0)?,
        }
    }
    Ok(())
}

/// Validates a records payload (the field-3 entries of a `ProduceRequest`, see the
/// module docs) in one pass, without allocating.
///
/// Checks every record's structure: known fields have the right wire type, varints and
/// lengths are well-formed and stay inside their enclosing message, header keys are
/// UTF-8, and unknown fields (of any wire type) are skippable. Fails if the payload
/// holds no record or a record's encoded size exceeds `max_record_bytes` (pass
/// `u32::MAX` for no limit).
pub fn scan_records(payload: &[u8], max_record_bytes: u32) -> Result<RecordsSummary, WireError> {
    let mut summary = RecordsSummary::default();
    let mut pos = 0usize;
    while pos < payload.len() {
        let index = summary.record_count;
        // The general reader runs only where the fast path declines; it then
        // accepts or rejects exactly as if it had read everything.
        let general = |pos: usize| Reader {
            buf: payload,
            pos,
            end: payload.len(),
            record: index,
        };
        let (start, end) = match plain_entry(payload, pos) {
            Some(range) => range,
            None => {
                let record = general(pos).record_entry()?;
                (record.pos, record.end)
            }
        };
        let size = end - start;
        if size as u64 > u64::from(max_record_bytes) {
            return Err(WireError::RecordTooLarge {
                record: index,
                size: size as u64,
                limit: max_record_bytes,
            });
        }
        let timestamp_ms = match scan_plain_record(&payload[start..end]) {
            Some(timestamp_ms) => timestamp_ms,
            None => scan_record(&mut Reader {
                end,
                ..general(start)
            })?,
        };
        pos = end;
        // size <= max_record_bytes <= u32::MAX here.
        summary.largest_record_bytes = summary.largest_record_bytes.max(size as u32);
        if timestamp_ms != 0 {
            summary.min_timestamp_ms = Some(
                summary
                    .min_timestamp_ms
                    .map_or(timestamp_ms, |t| t.min(timestamp_ms)),
            );
            summary.max_timestamp_ms = Some(
                summary
                    .max_timestamp_ms
                    .map_or(timestamp_ms, |t| t.max(timestamp_ms)),
            );
        }
        summary.record_count = summary
            .record_count
            .checked_add(1)
            .ok_or(WireError::TooManyRecords)?;
    }
    if summary.record_count == 0 {
        return Err(WireError::NoRecords);
    }
    Ok(summary)
}

/// Returns the byte position just after the first `n` record entries of a records
/// payload (0 for `n == 0`), so that `&payload[pos..]` holds the records from index `n`
/// on. Used to trim a stored batch so a fetch starts exactly at the requested offset.
///
/// Only the entry keys and length prefixes are checked (the records themselves were
/// validated when produced). Fails with [`WireError::NotEnoughRecords`] if the payload
/// holds fewer than `n` records.
pub fn skip_records(payload: &[u8], n: u32) -> Result<usize, WireError> {
    let mut r = Reader::new(payload);
    for i in 0..n {
        if r.at_end() {
            return Err(WireError::NotEnoughRecords {
                requested: n,
                available: i,
            });
        }
        r.record = i;
        r.record_entry()?;
    }
    Ok(r.pos)
}

// ---------------------------------------------------------------------------------------
// Produce: ProduceRequestWire
// ---------------------------------------------------------------------------------------

/// The raw bytes of all `records` entries (field 3) of a produce request, keys and length
/// prefixes included, exactly as they appeared on the wire: byte-identical to the
/// `records` field of a `RecordBatch`. See the module docs for the layout.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RecordsPayload {
    bytes: Bytes,
    gathered: bool,
}

impl RecordsPayload {
    /// Wraps bytes that already hold records entries (not validated; use
    /// [`scan_records`]).
    pub fn from_bytes(bytes: Bytes) -> Self {
        RecordsPayload {
            bytes,
            gathered: false,
        }
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The payload bytes, by value.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Length of the payload, in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the payload is empty (no records).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// True when the payload had to be gathered into a new buffer (one copy) because
    /// the records entries were not contiguous in the request; false when it is a
    /// zero-copy slice of the request buffer.
    pub fn is_gathered(&self) -> bool {
        self.gathered
    }
}

impl Deref for RecordsPayload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for RecordsPayload {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for RecordsPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordsPayload")
            .field("len", &self.bytes.len())
            .field("gathered", &self.gathered)
            .finish()
    }
}

/// Collects the byte ranges of records entries while a request buffer is parsed:
/// one contiguous run stays a zero-copy slice; anything else is gathered (one copy).
struct RecordsGather {
    run: Option<Range<usize>>,
    owned: Option<Vec<u8>>,
}

impl RecordsGather {
    fn new() -> Self {
        RecordsGather {
            run: None,
            owned: None,
        }
    }

    fn push(&mut self, whole: &[u8], entry: Range<usize>) {
        if let Some(owned) = &mut self.owned {
            owned.extend_from_slice(&whole[entry]);
            return;
        }
        match &mut self.run {
            None => self.run = Some(entry),
            Some(run) if run.end == entry.start => run.end = entry.end,
            Some(run) => {
                let mut owned = Vec::with_capacity(whole.len());
                owned.extend_from_slice(&whole[run.clone()]);
                owned.extend_from_slice(&whole[entry]);
                self.owned = Some(owned);
            }
        }
    }

    fn finish(self, whole: &Bytes) -> RecordsPayload {
        match (self.owned, self.run) {
            (Some(owned), _) => RecordsPayload {
                bytes: Bytes::from(owned),
                gathered: true,
            },
            (None, Some(run)) => RecordsPayload {
                bytes: whole.slice(run),
                gathered: false,
            },
            (None, None) => RecordsPayload::default(),
        }
    }
}

/// Concatenates two payloads (for protobuf merge semantics: repeated fields append).
fn concat_payloads(first: RecordsPayload, second: RecordsPayload) -> RecordsPayload {
    if first.is_empty() {
        return second;
    }
    if second.is_empty() {
        return first;
    }
    let mut joined = BytesMut::with_capacity(first.len() + second.len());
    joined.extend_from_slice(&first);
    joined.extend_from_slice(&second);
    RecordsPayload {
        bytes: joined.freeze(),
        gathered: true,
    }
}

/// Server-side `strata.v1.ProduceRequest`: the scalar fields decoded, the records kept
/// as raw bytes ([`RecordsPayload`]). Wire-compatible with
/// [`crate::proto::v1::ProduceRequest`].
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct ProduceRequestWire {
    /// Name of the topic to append to (field 1).
    pub topic: String,
    /// Partition to append to (field 2); `None` when absent (the broker picks one).
    pub partition: Option<u32>,
    /// Acknowledgement level (field 4) as the raw enum number; see [`Self::acks_level`].
    pub acks: i32,
    /// Idempotent producer id (field 5); 0 = not idempotent.
    pub producer_id: u64,
    /// Idempotent producer epoch (field 6).
    pub producer_epoch: u32,
    /// Sequence number of the first record (field 7).
    pub base_sequence: i32,
    records: RecordsPayload,
}

impl ProduceRequestWire {
    /// The records entries (field 3), raw; see [`RecordsPayload`]. Cheap (reference
    /// counted).
    pub fn records_payload(&self) -> RecordsPayload {
        self.records.clone()
    }

    /// Replaces the records entries (e.g. to build a request to encode).
    pub fn set_records_payload(&mut self, payload: RecordsPayload) {
        self.records = payload;
    }

    /// The acknowledgement level, or `None` for an enum number this build does not
    /// know.
    pub fn acks_level(&self) -> Option<v1::Acks> {
        v1::Acks::try_from(self.acks).ok()
    }

    /// Validates the records; shorthand for [`scan_records`] on [`Self::records_payload`].
    pub fn scan(&self, max_record_bytes: u32) -> Result<RecordsSummary, WireError> {
        scan_records(&self.records, max_record_bytes)
    }

    /// Parses a whole encoded request held in `whole`, merging into `self`.
    fn merge_bytes(&mut self, whole: Bytes) -> Result<(), DecodeError> {
        let total = whole.len();
        let mut cur = whole.clone();
        let mut gather = RecordsGather::new();
        while cur.has_remaining() {
            let start = total - cur.remaining();
            let (tag, wire_type) = encoding::decode_key(&mut cur)?;
            if tag == RECORDS_FIELD {
                let checked =
                    check_wire_type(WireType::LengthDelimited, wire_type).and_then(|()| {
                        encoding::skip_field(wire_type, tag, &mut cur, DecodeContext::default())
                    });
                if let Err(mut e) = checked {
                    e.push("ProduceRequest", "records");
                    return Err(e);
                }
                gather.push(&whole, start..total - cur.remaining());
            } else {
                self.merge_field(tag, wire_type, &mut cur, DecodeContext::default())?;
            }
        }
        let parsed = gather.finish(&whole);
        self.records = concat_payloads(std::mem::take(&mut self.records), parsed);
        Ok(())
    }
}

fn in_field<T>(
    result: Result<T, DecodeError>,
    message: &'static str,
    field: &'static str,
) -> Result<T, DecodeError> {
    result.map_err(|mut e| {
        e.push(message, field);
        e
    })
}

impl Message for ProduceRequestWire {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.topic.is_empty() {
            encoding::string::encode(PRODUCE_TOPIC, &self.topic, buf);
        }
        if let Some(partition) = self.partition {
            encoding::uint32::encode(PRODUCE_PARTITION, &partition, buf);
        }
        buf.put_slice(&self.records);
        if self.acks != 0 {
            encoding::int32::encode(PRODUCE_ACKS, &self.acks, buf);
        }
        if self.producer_id != 0 {
            encoding::uint64::encode(PRODUCE_PRODUCER_ID, &self.producer_id, buf);
        }
        if self.producer_epoch != 0 {
            encoding::uint32::encode(PRODUCE_PRODUCER_EPOCH, &self.producer_epoch, buf);
        }
        if self.base_sequence != 0 {
            encoding::int32::encode(PRODUCE_BASE_SEQUENCE, &self.base_sequence, buf);
        }
    }

    /// Used only when this message is decoded field by field (e.g. nested in another
    /// message or via `merge_length_delimited`); records entries are then gathered
    /// into an owned buffer. The top-level fast path is [`Message::merge`].
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const NAME: &str = "ProduceRequest";
        match tag {
            PRODUCE_TOPIC => in_field(
                encoding::string::merge(wire_type, &mut self.topic, buf, ctx),
                NAME,
                "topic",
            ),
            PRODUCE_PARTITION => in_field(
                encoding::uint32::merge(wire_type, self.partition.get_or_insert(0), buf, ctx),
                NAME,
                "partition",
            ),
            RECORDS_FIELD => {
                let mut record = Bytes::new();
                in_field(
                    encoding::bytes::merge(wire_type, &mut record, buf, ctx),
                    NAME,
                    "records",
                )?;
                let mut entry = BytesMut::with_capacity(
                    1 + encoded_len_varint(record.len() as u64) + record.len(),
                );
                encode_key(RECORDS_FIELD, WireType::LengthDelimited, &mut entry);
                encode_varint(record.len() as u64, &mut entry);
                entry.extend_from_slice(&record);
                let entry = RecordsPayload {
                    bytes: entry.freeze(),
                    gathered: true,
                };
                self.records = concat_payloads(std::mem::take(&mut self.records), entry);
                Ok(())
            }
            PRODUCE_ACKS => in_field(
                encoding::int32::merge(wire_type, &mut self.acks, buf, ctx),
                NAME,
                "acks",
            ),
            PRODUCE_PRODUCER_ID => in_field(
                encoding::uint64::merge(wire_type, &mut self.producer_id, buf, ctx),
                NAME,
                "producer_id",
            ),
            PRODUCE_PRODUCER_EPOCH => in_field(
                encoding::uint32::merge(wire_type, &mut self.producer_epoch, buf, ctx),
                NAME,
                "producer_epoch",
            ),
            PRODUCE_BASE_SEQUENCE => in_field(
                encoding::int32::merge(wire_type, &mut self.base_sequence, buf, ctx),
                NAME,
                "base_sequence",
            ),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = self.records.len();
        if !self.topic.is_empty() {
            len += encoding::string::encoded_len(PRODUCE_TOPIC, &self.topic);
        }
        if let Some(partition) = self.partition {
            len += encoding::uint32::encoded_len(PRODUCE_PARTITION, &partition);
        }
        if self.acks != 0 {
            len += encoding::int32::encoded_len(PRODUCE_ACKS, &self.acks);
        }
        if self.producer_id != 0 {
            len += encoding::uint64::encoded_len(PRODUCE_PRODUCER_ID, &self.producer_id);
        }
        if self.producer_epoch != 0 {
            len += encoding::uint32::encoded_len(PRODUCE_PRODUCER_EPOCH, &self.producer_epoch);
        }
        if self.base_sequence != 0 {
            len += encoding::int32::encoded_len(PRODUCE_BASE_SEQUENCE, &self.base_sequence);
        }
        len
    }

    /// Zero-copy decode: takes the whole buffer as one [`Bytes`] (O(1) for tonic's
    /// `DecodeBuf` and for `Bytes`; one copy for other buffers) and parses it by hand,
    /// keeping the records entries as a slice of it.
    fn merge(&mut self, mut buf: impl Buf) -> Result<(), DecodeError> {
        let whole = buf.copy_to_bytes(buf.remaining());
        self.merge_bytes(whole)
    }

    fn clear(&mut self) {
        *self = ProduceRequestWire::default();
    }
}

// ---------------------------------------------------------------------------------------
// Fetch: FetchResponseWire
// ---------------------------------------------------------------------------------------

/// Any byte source a [`PayloadView`] can point into: `Bytes`, a `Vec<u8>`, or a storage
/// view that keeps a memory map alive.
///
/// Contract: `bytes()` returns the same bytes (same length and content) on every call
/// for the lifetime of the value.
pub trait PayloadSource: Send + Sync + fmt::Debug + 'static {
    /// The bytes.
    fn bytes(&self) -> &[u8];
}

impl PayloadSource for Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl PayloadSource for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A shared, cheap-to-clone view of a byte range of a [`PayloadSource`]: the stored
/// records entries of one batch.
#[derive(Clone)]
pub struct PayloadView {
    source: Arc<dyn PayloadSource>,
    start: usize,
    end: usize,
}

impl PayloadView {
    /// A view of `range` of `source`; `None` if the range is not within the source.
    pub fn new(source: Arc<dyn PayloadSource>, range: Range<usize>) -> Option<Self> {
        if range.start > range.end || range.end > source.bytes().len() {
            return None;
        }
        Some(PayloadView {
            source,
            start: range.start,
            end: range.end,
        })
    }

    /// A view of all of `source`.
    pub fn whole(source: Arc<dyn PayloadSource>) -> Self {
        let end = source.bytes().len();
        PayloadView {
            source,
            start: 0,
            end,
        }
    }

    /// A view of all of `bytes` (no copy).
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self::whole(Arc::new(bytes))
    }

    /// The viewed bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.source.bytes().get(self.start..self.end).unwrap_or(&[])
    }

    /// Length of the view, in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A sub-view of `range` (relative to this view); `None` if out of bounds.
    pub fn slice(&self, range: Range<usize>) -> Option<Self> {
        if range.start > range.end || range.end > self.end - self.start {
            return None;
        }
        Some(PayloadView {
            source: Arc::clone(&self.source),
            start: self.start + range.start,
            end: self.start + range.end,
        })
    }
}

impl Default for PayloadView {
    fn default() -> Self {
        PayloadView::from_bytes(Bytes::new())
    }
}

impl From<Bytes> for PayloadView {
    fn from(bytes: Bytes) -> Self {
        PayloadView::from_bytes(bytes)
    }
}

impl PartialEq for PayloadView {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for PayloadView {}

impl fmt::Debug for PayloadView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadView")
            .field("start", &self.start)
            .field("end", &self.end)
            .finish()
    }
}

/// Server-side `strata.v1.RecordBatch`: the two header fields plus the stored records
/// entries, copied verbatim when encoded.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct WireBatch {
    /// Offset of the first record in `records`.
    pub base_offset: u64,
    /// Broker append time of the batch, in ms since the Unix epoch.
    pub append_time_ms: i64,
    /// The records entries (field 3 of `RecordBatch`), as stored.
    pub records: PayloadView,
}

impl WireBatch {
    /// Drops the first `n` records: advances `base_offset` by `n` and slices `records`
    /// (no copy). May leave an empty batch if `n` equals the record count.
    pub fn skip_front(&mut self, n: u32) -> Result<(), WireError> {
        let pos = skip_records(self.records.as_slice(), n)?;
        // skip_records returns a position within the slice, so this cannot fail.
        if let Some(rest) = self.records.slice(pos..self.records.len()) {
            self.records = rest;
        }
        self.base_offset += u64::from(n);
        Ok(())
    }

    /// Length of the encoded `RecordBatch` message (without key and length prefix).
    fn body_len(&self) -> usize {
        let mut len = self.records.len();
        if self.base_offset != 0 {
            len += encoding::uint64::encoded_len(BATCH_BASE_OFFSET, &self.base_offset);
        }
        if self.append_time_ms != 0 {
            len += encoding::int64::encoded_len(BATCH_APPEND_TIME, &self.append_time_ms);
        }
        len
    }

    fn encode_body(&self, buf: &mut impl BufMut) {
        if self.base_offset != 0 {
            encoding::uint64::encode(BATCH_BASE_OFFSET, &self.base_offset, buf);
        }
        if self.append_time_ms != 0 {
            encoding::int64::encode(BATCH_APPEND_TIME, &self.append_time_ms, buf);
        }
        buf.put_slice(self.records.as_slice());
    }

    /// Encoded length as field `tag` (key, length prefix and body).
    fn field_len(&self, tag: u32) -> usize {
        let body = self.body_len();
        key_len(tag) + encoded_len_varint(body as u64) + body
    }

    fn encode_field(&self, tag: u32, buf: &mut impl BufMut) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(self.body_len() as u64, buf);
        self.encode_body(buf);
    }
}

/// Server-side `strata.v1.FetchResponse` (also each message of `Subscribe`).
/// Encode-only: the stored records are copied once, straight into the output buffer.
/// Wire-compatible with [`crate::proto::v1::FetchResponse`].
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct FetchResponseWire {
    /// The batches (field 1), in offset order.
    pub batches: Vec<WireBatch>,
    /// The partition's high watermark (field 2).
    pub high_watermark: u64,
    /// The partition's log start offset (field 3).
    pub log_start_offset: u64,
}

impl Message for FetchResponseWire {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for batch in &self.batches {
            batch.encode_field(FETCH_BATCHES, buf);
        }
        if self.high_watermark != 0 {
            encoding::uint64::encode(FETCH_HIGH_WATERMARK, &self.high_watermark, buf);
        }
        if self.log_start_offset != 0 {
            encoding::uint64::encode(FETCH_LOG_START_OFFSET, &self.log_start_offset, buf);
        }
    }

    /// The server never decodes this type (clients use
    /// [`crate::proto::v1::FetchResponse`]); every field is skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let mut len: usize = self
            .batches
            .iter()
            .map(|b| b.field_len(FETCH_BATCHES))
            .sum();
        if self.high_watermark != 0 {
            len += encoding::uint64::encoded_len(FETCH_HIGH_WATERMARK, &self.high_watermark);
        }
        if self.log_start_offset != 0 {
            len += encoding::uint64::encoded_len(FETCH_LOG_START_OFFSET, &self.log_start_offset);
        }
        len
    }

    fn clear(&mut self) {
        self.batches.clear();
        self.high_watermark = 0;
        self.log_start_offset = 0;
    }
}

// ---------------------------------------------------------------------------------------
// Consume: ConsumeEventWire
// ---------------------------------------------------------------------------------------

/// Server-side `strata.v1.ConsumedBatch`: records of one partition, sent verbatim.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct ConsumedBatchWire {
    /// Topic name (field 1).
    pub topic: String,
    /// Partition index (field 2).
    pub partition: u32,
    /// The batch (field 3), always encoded.
    pub batch: WireBatch,
}

impl ConsumedBatchWire {
    fn body_len(&self) -> usize {
        let mut len = self.batch.field_len(CONSUMED_BATCH);
        if !self.topic.is_empty() {
            len += encoding::string::encoded_len(CONSUMED_TOPIC, &self.topic);
        }
        if self.partition != 0 {
            len += encoding::uint32::encoded_len(CONSUMED_PARTITION, &self.partition);
        }
        len
    }

    fn encode_body(&self, buf: &mut impl BufMut) {
        if !self.topic.is_empty() {
            encoding::string::encode(CONSUMED_TOPIC, &self.topic, buf);
        }
        if self.partition != 0 {
            encoding::uint32::encode(CONSUMED_PARTITION, &self.partition, buf);
        }
        self.batch.encode_field(CONSUMED_BATCH, buf);
    }
}

/// The `event` oneof of [`ConsumeEventWire`].
#[derive(Clone, PartialEq, Debug)]
pub enum WireEvent {
    /// The stream joined the group (field 1).
    Joined(v1::Joined),
    /// The assignment or member epoch changed (field 2).
    Assignment(v1::Assignment),
    /// Records of an assigned partition (field 3), sent without re-encoding.
    Records(ConsumedBatchWire),
}

/// Server-side `strata.v1.ConsumeEvent` (each message of `Groups.Consume`).
/// Encode-only; wire-compatible with [`crate::proto::v1::ConsumeEvent`].
#[derive(Clone, Default, PartialEq, Debug)]
pub struct ConsumeEventWire {
    /// The event; `None` encodes an empty message.
    pub event: Option<WireEvent>,
}

impl ConsumeEventWire {
    /// A `joined` event.
    pub fn joined(member_id: String, member_epoch: i32) -> Self {
        ConsumeEventWire {
            event: Some(WireEvent::Joined(v1::Joined {
                member_id,
                member_epoch,
            })),
        }
    }

    /// An `assignment` event.
    pub fn assignment(assignment: v1::Assignment) -> Self {
        ConsumeEventWire {
            event: Some(WireEvent::Assignment(assignment)),
        }
    }

    /// A `records` event.
    pub fn records(topic: String, partition: u32, batch: WireBatch) -> Self {
        ConsumeEventWire {
            event: Some(WireEvent::Records(ConsumedBatchWire {
                topic,
                partition,
                batch,
            })),
        }
    }
}

impl Message for ConsumeEventWire {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.event {
            None => {}
            Some(WireEvent::Joined(joined)) => {
                encoding::message::encode(CONSUME_JOINED, joined, buf);
            }
            Some(WireEvent::Assignment(assignment)) => {
                encoding::message::encode(CONSUME_ASSIGNMENT, assignment, buf);
            }
            Some(WireEvent::Records(records)) => {
                encode_key(CONSUME_RECORDS, WireType::LengthDelimited, buf);
                encode_varint(records.body_len() as u64, buf);
                records.encode_body(buf);
            }
        }
    }

    /// The server never decodes this type (clients use
    /// [`crate::proto::v1::ConsumeEvent`]); every field is skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match &self.event {
            None => 0,
            Some(WireEvent::Joined(joined)) => {
                encoding::message::encoded_len(CONSUME_JOINED, joined)
            }
            Some(WireEvent::Assignment(assignment)) => {
                encoding::message::encoded_len(CONSUME_ASSIGNMENT, assignment)
            }
            Some(WireEvent::Records(records)) => {
                let body = records.body_len();
                key_len(CONSUME_RECORDS) + encoded_len_varint(body as u64) + body
            }
        }
    }

    fn clear(&mut self) {
        self.event = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{
        consume_event, Assignment, ConsumeEvent, ConsumedBatch, FetchResponse, Header, Joined,
        ProduceRequest, Record, RecordBatch, TopicPartitions,
    };
    use proptest::prelude::*;

    /// The records payload of `records`: the encoding of a `RecordBatch` with only its
    /// `records` field set.
    fn payload_of(records: &[Record]) -> Vec<u8> {
        RecordBatch {
            base_offset: 0,
            append_time_ms: 0,
            records: records.to_vec(),
        }
        .encode_to_vec()
    }

    fn record(key: &[u8], value: &[u8], headers: &[(&str, &[u8])], timestamp_ms: i64) -> Record {
        Record {
            key: key.to_vec(),
            value: value.to_vec(),
            headers: headers
                .iter()
                .map(|(k, v)| Header {
                    key: (*k).to_string(),
                    value: v.to_vec(),
                })
                .collect(),
            timestamp_ms,
        }
    }

    fn sample_records(n: usize, tag: &str) -> Vec<Record> {
        (0..n)
            .map(|i| {
                record(
                    format!("{tag}-key-{i}").as_bytes(),
                    format!("{tag}-value-{i}").repeat(i + 1).as_bytes(),
                    &[("h", b"1"), ("h", format!("{i}").as_bytes())],
                    if i % 2 == 0 {
                        1_700_000_000_000 + i as i64
                    } else {
                        0
                    },
                )
            })
            .collect()
    }

    fn arb_header() -> impl Strategy<Value = Header> {
        (".{0,6}", proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(key, value)| Header { key, value })
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(arb_header(), 0..4),
            prop_oneof![Just(0i64), any::<i64>()],
        )
            .prop_map(|(key, value, headers, timestamp_ms)| Record {
                key,
                value,
                headers,
                timestamp_ms,
            })
    }

    fn arb_request() -> impl Strategy<Value = ProduceRequest> {
        (
            "[a-z0-9._-]{0,12}",
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(arb_record(), 0..12),
            prop_oneof![Just(0i32), Just(1i32), any::<i32>()],
            any::<u64>(),
            any::<u32>(),
            any::<i32>(),
        )
            .prop_map(
                |(topic, partition, records, acks, producer_id, producer_epoch, base_sequence)| {
                    ProduceRequest {
                        topic,
                        partition,
                        records,
                        acks,
                        producer_id,
                        producer_epoch,
                        base_sequence,
                    }
                },
            )
    }

    fn check_decoded(req: &ProduceRequest, wire: &ProduceRequestWire) {
        assert_eq!(wire.topic, req.topic);
        assert_eq!(wire.partition, req.partition);
        assert_eq!(wire.acks, req.acks);
        assert_eq!(wire.producer_id, req.producer_id);
        assert_eq!(wire.producer_epoch, req.producer_epoch);
        assert_eq!(wire.base_sequence, req.base_sequence);
        assert_eq!(&wire.records_payload()[..], &payload_of(&req.records)[..]);
    }

    /// Prepends a `base_offset` field to a payload and decodes it as a `RecordBatch`.
    fn as_batch(base_offset: u64, payload: &[u8]) -> RecordBatch {
        let mut buf = Vec::new();
        encoding::uint64::encode(1, &base_offset, &mut buf);
        buf.extend_from_slice(payload);
        RecordBatch::decode(&buf[..]).expect("payload decodes as a RecordBatch")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// (1) prost-encoded requests decode zero-copy; the payload is the records field.
        #[test]
        fn produce_roundtrip(req in arb_request(), base_offset in any::<u64>()) {
            let encoded = req.encode_to_vec();
            let whole = Bytes::from(encoded.clone());
            let wire = ProduceRequestWire::decode(whole.clone()).expect("decodes");
            check_decoded(&req, &wire);
            let payload = wire.records_payload();
            prop_assert!(!payload.is_gathered());
            if !payload.is_empty() {
                // Zero-copy: the payload points into the request buffer.
                let base = whole.as_ptr() as usize;
                let p = payload.as_ptr() as usize;
                prop_assert!(p >= base && p + payload.len() <= base + whole.len());
            }

            // The payload is a valid RecordBatch records field.
            let batch = as_batch(base_offset, &payload);
            prop_assert_eq!(batch.base_offset, base_offset);
            prop_assert_eq!(&batch.records, &req.records);

            // Re-encoding gives the same bytes (same field order as prost).
            prop_assert_eq!(wire.encoded_len(), encoded.len());
            prop_assert_eq!(wire.encode_to_vec(), encoded.clone());

            // Decoding from a plain slice (one copy) gives the same result.
            let from_slice = ProduceRequestWire::decode(&encoded[..]).expect("decodes");
            prop_assert_eq!(&from_slice, &wire);

            // Field-by-field path (nested decoding) gives the same result.
            let delimited = req.encode_length_delimited_to_vec();
            let slow = ProduceRequestWire::decode_length_delimited(&delimited[..]).expect("decodes");
            check_decoded(&req, &slow);

            // The scan agrees with the records.
            match scan_records(&payload, u32::MAX) {
                Ok(summary) => {
                    prop_assert_eq!(summary.record_count as usize, req.records.len());
                    let largest = req.records.iter().map(|r| r.encoded_len()).max().unwrap_or(0);
                    prop_assert_eq!(summary.largest_record_bytes as usize, largest);
                    let ts: Vec<i64> = req.records.iter().map(|r| r.timestamp_ms).filter(|&t| t != 0).collect();
                    prop_assert_eq!(summary.min_timestamp_ms, ts.iter().copied().min());
                    prop_assert_eq!(summary.max_timestamp_ms, ts.iter().copied().max());
                    // Limit boundary: exactly the largest passes, one less fails.
                    prop_assert!(scan_records(&payload, summary.largest_record_bytes).is_ok());
                    if summary.largest_record_bytes > 0 {
                        let over = scan_records(&payload, summary.largest_record_bytes - 1);
                        let is_too_large = matches!(over, Err(WireError::RecordTooLarge { .. }));
                        prop_assert!(is_too_large);
                    }
                }
                Err(e) => {
                    prop_assert!(req.records.is_empty());
                    prop_assert_eq!(e, WireError::NoRecords);
                }
            }

            // skip_records lands on every record boundary.
            for n in 0..=req.records.len() {
                let pos = skip_records(&payload, n as u32).expect("skips");
                prop_assert_eq!(&payload[pos..], &payload_of(&req.records[n..])[..]);
            }
            let too_many = skip_records(&payload, req.records.len() as u32 + 1);
            prop_assert_eq!(
                too_many,
                Err(WireError::NotEnoughRecords {
                    requested: req.records.len() as u32 + 1,
                    available: req.records.len() as u32,
                })
            );
        }

        /// (3) Arbitrary bytes never panic the decoder or the scanners.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), limit in any::<u32>(), n in 0u32..20) {
            let _ = ProduceRequestWire::decode(&bytes[..]);
            let _ = ProduceRequestWire::decode_length_delimited(&bytes[..]);
            let _ = scan_records(&bytes, limit);
            let _ = skip_records(&bytes, n);
            let _ = FetchResponseWire::decode(&bytes[..]);
            let _ = ConsumeEventWire::decode(&bytes[..]);
            differential(&bytes);
        }

        /// The record fast path never changes a verdict: whatever it accepts, the
        /// general scan accepts with the same timestamp.
        #[test]
        fn plain_record_path_agrees_with_general(
            record in arb_record(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        ) {
            let mut bytes = record.encode_to_vec();
            for (index, byte) in edits {
                if !bytes.is_empty() {
                    let i = index.index(bytes.len());
                    bytes[i] = byte;
                }
            }
            if let Some(timestamp_ms) = scan_plain_record(&bytes) {
                prop_assert_eq!(scan_record(&mut Reader::new(&bytes)), Ok(timestamp_ms));
            }
            if record.headers.is_empty() && bytes == record.encode_to_vec() {
                prop_assert_eq!(scan_plain_record(&bytes), Some(record.timestamp_ms));
            }
        }

        /// (3) Mutated valid requests: never panic, and agree with prost's decoder.
        #[test]
        fn mutated_requests_agree_with_prost(
            req in arb_request(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut bytes = req.encode_to_vec();
            for (index, byte, op) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = index.index(bytes.len());
                match op {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => { bytes.remove(i); }
                }
            }
            differential(&bytes);
        }
    }

    /// ProduceRequestWire decode + scan accepts exactly what prost's full decode accepts.
    fn differential(bytes: &[u8]) {
        let reference = ProduceRequest::decode(bytes);
        let wire = ProduceRequestWire::decode(bytes);
        let scanned = wire
            .as_ref()
            .ok()
            .map(|w| scan_records(&w.records_payload(), u32::MAX));
        match (&reference, &wire, &scanned) {
            (Ok(req), Ok(w), Some(scan)) => {
                // Compare decoded values: the input may carry unknown fields, which
                // prost drops, so the payload need not equal prost's re-encoding.
                assert_eq!(w.topic, req.topic);
                assert_eq!(w.partition, req.partition);
                assert_eq!(w.acks, req.acks);
                assert_eq!(w.producer_id, req.producer_id);
                assert_eq!(w.producer_epoch, req.producer_epoch);
                assert_eq!(w.base_sequence, req.base_sequence);
                assert_eq!(as_batch(0, &w.records_payload()).records, req.records);
                if req.records.is_empty() {
                    assert_eq!(scan, &Err(WireError::NoRecords));
                } else {
                    assert_eq!(
                        scan.as_ref().map(|s| s.record_count as usize),
                        Ok(req.records.len())
                    );
                }
            }
            (Err(_), Ok(_), Some(scan)) => {
                assert!(scan.is_err(), "prost rejects, wire accepts: {bytes:?}");
            }
            (Err(_), Err(_), None) => {}
            _ => panic!("disagreement on {bytes:?}: {reference:?} vs {wire:?} / {scanned:?}"),
        }
    }

    #[test]
    fn non_canonical_varints_take_the_general_path_and_are_accepted() {
        let record = Record {
            key: b"k".to_vec(),
            value: vec![7; 300],
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
        };
        let encoded = record.encode_to_vec();
        // Entry key 3/LEN written as two bytes (0x9A 0x00), record length padded
        // to a non-minimal three bytes: prost accepts both, so must the scan.
        let mut payload = vec![0x9A, 0x00];
        let len = encoded.len() as u64;
        payload.extend_from_slice(&[(len as u8) | 0x80, ((len >> 7) as u8) | 0x80, 0x00]);
        payload.extend_from_slice(&encoded);
        // And one plain entry after it.
        payload.extend_from_slice(&payload_of(std::slice::from_ref(&record)));
        let summary = scan_records(&payload, u32::MAX).expect("valid");
        assert_eq!(summary.record_count, 2);
        assert_eq!(summary.largest_record_bytes as usize, encoded.len());
        assert_eq!(summary.min_timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(as_batch(0, &payload).records, vec![record.clone(), record]);
    }

    #[test]
    fn interleaved_records_are_gathered() {
        let records = sample_records(5, "r");
        let mut buf = Vec::new();
        buf.extend_from_slice(&payload_of(&records[..2]));
        encoding::string::encode(1, &"orders".to_string(), &mut buf);
        buf.extend_from_slice(&payload_of(&records[2..4]));
        encoding::int32::encode(4, &1, &mut buf);
        // An unknown field of every wire type is skipped.
        encoding::uint64::encode(100, &7, &mut buf);
        encoding::fixed32::encode(101, &7, &mut buf);
        encoding::fixed64::encode(102, &7, &mut buf);
        encoding::bytes::encode(103, &vec![1u8, 2, 3], &mut buf);
        buf.extend_from_slice(&[0xA3, 0x06, 0x08, 0x01, 0xA4, 0x06]); // group 100 { 1: 1 }
        buf.extend_from_slice(&payload_of(&records[4..]));
        encoding::uint32::encode(2, &0, &mut buf);

        let wire = ProduceRequestWire::decode(Bytes::from(buf.clone())).expect("decodes");
        assert_eq!(wire.topic, "orders");
        assert_eq!(wire.partition, Some(0));
        assert_eq!(wire.acks_level(), Some(v1::Acks::Durable));
        let payload = wire.records_payload();
        assert!(payload.is_gathered());
        assert_eq!(&payload[..], &payload_of(&records)[..]);
        assert_eq!(scan_records(&payload, 1024).map(|s| s.record_count), Ok(5));

        // prost agrees.
        let reference = ProduceRequest::decode(&buf[..]).expect("prost decodes");
        assert_eq!(reference.records, records);
    }

    #[test]
    fn merge_appends_records() {
        let first = ProduceRequest {
            topic: "a".into(),
            records: sample_records(2, "x"),
            ..Default::default()
        };
        let second = ProduceRequest {
            topic: "b".into(),
            records: sample_records(3, "y"),
            ..Default::default()
        };
        let mut wire = ProduceRequestWire::decode(&first.encode_to_vec()[..]).expect("decodes");
        wire.merge(&second.encode_to_vec()[..]).expect("merges");
        assert_eq!(wire.topic, "b");
        let all: Vec<Record> = first
            .records
            .iter()
            .chain(&second.records)
            .cloned()
            .collect();
        assert_eq!(&wire.records_payload()[..], &payload_of(&all)[..]);
        wire.clear();
        assert_eq!(wire, ProduceRequestWire::default());
    }

    #[test]
    fn produce_decode_errors_are_decode_errors() {
        // Truncated records entry.
        assert!(ProduceRequestWire::decode(&[0x1A, 0x05, 0x00][..]).is_err());
        // Records with the wrong wire type.
        assert!(ProduceRequestWire::decode(&[0x18, 0x01][..]).is_err());
        // Topic that is not UTF-8.
        assert!(ProduceRequestWire::decode(&[0x0A, 0x01, 0xFF][..]).is_err());
        // Partition with the wrong wire type.
        assert!(ProduceRequestWire::decode(&[0x12, 0x00][..]).is_err());
        // Field number 0.
        assert!(ProduceRequestWire::decode(&[0x00][..]).is_err());
    }

    /// A source that looks like a storage segment: batches embedded in a larger buffer.
    #[derive(Debug)]
    struct Segment(Vec<u8>);

    impl PayloadSource for Segment {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
    }

    /// (2) FetchResponseWire encodes to what clients decode as FetchResponse.
    #[test]
    fn fetch_response_roundtrip() {
        let a = sample_records(5, "a");
        let b = sample_records(3, "b");
        let pa = payload_of(&a);
        let pb = payload_of(&b);
        let mut seg = vec![0xEE; 7];
        let a_range = seg.len()..seg.len() + pa.len();
        seg.extend_from_slice(&pa);
        seg.extend_from_slice(&[0xEE; 3]);
        let b_range = seg.len()..seg.len() + pb.len();
        seg.extend_from_slice(&pb);
        seg.extend_from_slice(&[0xEE; 5]);
        let segment: Arc<dyn PayloadSource> = Arc::new(Segment(seg));

        let mut first = WireBatch {
            base_offset: 10,
            append_time_ms: 1_700_000_000_123,
            records: PayloadView::new(Arc::clone(&segment), a_range).expect("in bounds"),
        };
        // The fetch asked for offset 12: trim the first two records.
        first.skip_front(2).expect("trims");
        assert_eq!(first.base_offset, 12);
        let second = WireBatch {
            base_offset: 15,
            append_time_ms: -5,
            records: PayloadView::new(Arc::clone(&segment), b_range).expect("in bounds"),
        };
        let response = FetchResponseWire {
            batches: vec![first, second],
            high_watermark: 18,
            log_start_offset: 3,
        };
        let encoded = response.encode_to_vec();
        assert_eq!(encoded.len(), response.encoded_len());
        let decoded = FetchResponse::decode(&encoded[..]).expect("client decodes");
        let expected = FetchResponse {
            batches: vec![
                RecordBatch {
                    base_offset: 12,
                    append_time_ms: 1_700_000_000_123,
                    records: a[2..].to_vec(),
                },
                RecordBatch {
                    base_offset: 15,
                    append_time_ms: -5,
                    records: b.clone(),
                },
            ],
            high_watermark: 18,
            log_start_offset: 3,
        };
        assert_eq!(decoded, expected);
        // Byte-identical to prost's own encoding.
        assert_eq!(encoded, expected.encode_to_vec());

        // Zero values and empty batches.
        let empty = FetchResponseWire {
            batches: vec![WireBatch::default()],
            ..Default::default()
        };
        let decoded = FetchResponse::decode(&empty.encode_to_vec()[..]).expect("decodes");
        assert_eq!(decoded.batches, vec![RecordBatch::default()]);
        assert_eq!(
            FetchResponseWire::default().encode_to_vec(),
            Vec::<u8>::new()
        );

        // Trimming everything leaves an empty batch; trimming more fails.
        let mut all = WireBatch {
            base_offset: 0,
            append_time_ms: 0,
            records: PayloadView::from_bytes(Bytes::from(pb.clone())),
        };
        assert_eq!(
            all.clone().skip_front(4),
            Err(WireError::NotEnoughRecords {
                requested: 4,
                available: 3
            })
        );
        all.skip_front(3).expect("trims");
        assert!(all.records.is_empty());
        assert_eq!(all.base_offset, 3);

        // The server never decodes it, but decoding must not panic or loop.
        let mut merged = FetchResponseWire::default();
        merged.merge(&encoded[..]).expect("skips fields");
        merged.clear();
        assert_eq!(merged, FetchResponseWire::default());
    }

    #[test]
    fn payload_view_bounds() {
        let view = PayloadView::from_bytes(Bytes::from_static(b"0123456789"));
        assert_eq!(view.len(), 10);
        assert_eq!(
            view.slice(2..5).map(|v| v.as_slice().to_vec()),
            Some(b"234".to_vec())
        );
        let inner = view.slice(2..8).expect("in bounds");
        assert_eq!(
            inner.slice(1..3).map(|v| v.as_slice().to_vec()),
            Some(b"34".to_vec())
        );
        assert!(inner.slice(0..7).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = inner.slice(3..2);
        assert!(reversed.is_none());
        let source: Arc<dyn PayloadSource> = Arc::new(b"abc".to_vec());
        assert!(PayloadView::new(Arc::clone(&source), 0..4).is_none());
        assert_eq!(PayloadView::new(source, 1..3).map(|v| v.len()), Some(2));
    }

    #[test]
    fn consume_event_roundtrip() {
        let joined = ConsumeEventWire::joined("member-1".into(), 3);
        let assignment = Assignment {
            partitions: vec![TopicPartitions {
                topic: "t".into(),
                partitions: vec![0, 2],
            }],
            member_epoch: 4,
        };
        let records = sample_records(4, "c");
        let batch = WireBatch {
            base_offset: 40,
            append_time_ms: 99,
            records: PayloadView::from_bytes(Bytes::from(payload_of(&records))),
        };
        let cases = vec![
            (
                joined,
                consume_event::Event::Joined(Joined {
                    member_id: "member-1".into(),
                    member_epoch: 3,
                }),
            ),
            (
                ConsumeEventWire::assignment(assignment.clone()),
                consume_event::Event::Assignment(assignment),
            ),
            (
                ConsumeEventWire::records("t".into(), 2, batch.clone()),
                consume_event::Event::Records(ConsumedBatch {
                    topic: "t".into(),
                    partition: 2,
                    batch: Some(RecordBatch {
                        base_offset: 40,
                        append_time_ms: 99,
                        records: records.clone(),
                    }),
                }),
            ),
            (
                ConsumeEventWire::records(String::new(), 0, WireBatch::default()),
                consume_event::Event::Records(ConsumedBatch {
                    topic: String::new(),
                    partition: 0,
                    batch: Some(RecordBatch::default()),
                }),
            ),
        ];
        for (wire, expected) in cases {
            let encoded = wire.encode_to_vec();
            assert_eq!(encoded.len(), wire.encoded_len());
            let decoded = ConsumeEvent::decode(&encoded[..]).expect("client decodes");
            let expected = ConsumeEvent {
                event: Some(expected),
            };
            assert_eq!(decoded, expected);
            assert_eq!(encoded, expected.encode_to_vec());
        }
        assert!(ConsumeEventWire::default().encode_to_vec().is_empty());
    }

    // (4) Malformed payloads, each with its typed error.

    #[test]
    fn scan_zero_records() {
        assert_eq!(scan_records(&[], 1024), Err(WireError::NoRecords));
        let wire = ProduceRequestWire::decode(&[0x0A, 0x01, b't'][..]).expect("decodes");
        assert_eq!(wire.scan(1024), Err(WireError::NoRecords));
    }

    #[test]
    fn scan_truncated_varint() {
        // Length prefix of the first record cut off.
        assert_eq!(
            scan_records(&[0x1A, 0x80], 1024),
            Err(WireError::TruncatedVarint {
                record: 0,
                offset: 1
            })
        );
        // timestamp_ms varint cut off at the end of the second record.
        assert_eq!(
            scan_records(&[0x1A, 0x00, 0x1A, 0x02, 0x20, 0x80], 1024),
            Err(WireError::TruncatedVarint {
                record: 1,
                offset: 5
            })
        );
        // Varint longer than 10 bytes.
        let mut overlong = vec![0x1A, 0x0B, 0x20];
        overlong.extend_from_slice(&[0xFF; 10]);
        assert_eq!(
            scan_records(&overlong, 1024),
            Err(WireError::InvalidVarint {
                record: 0,
                offset: 3
            })
        );
    }

    #[test]
    fn scan_length_past_end() {
        assert_eq!(
            scan_records(&[0x1A, 0x05, 0x0A], 1024),
            Err(WireError::LengthOutOfBounds {
                record: 0,
                what: "record",
                offset: 1,
                length: 5,
                available: 1
            })
        );
        // Record.value longer than its record (but not than the payload).
        assert_eq!(
            scan_records(&[0x1A, 0x03, 0x12, 0x03, b'a', b'b', b'c'], 1024),
            Err(WireError::LengthOutOfBounds {
                record: 0,
                what: "Record.value",
                offset: 3,
                length: 3,
                available: 1
            })
        );
        // A fixed64 unknown field cut short.
        assert_eq!(
            scan_records(&[0x1A, 0x03, 0x29, 0x01, 0x02], 1024),
            Err(WireError::LengthOutOfBounds {
                record: 0,
                what: "fixed64 field",
                offset: 3,
                length: 8,
                available: 2
            })
        );
    }

    #[test]
    fn scan_wrong_wire_type() {
        assert_eq!(
            scan_records(&[0x1A, 0x02, 0x22, 0x00], 1024),
            Err(WireError::WrongWireType {
                record: 0,
                what: "Record.timestamp_ms",
                offset: 2,
                wire_type: 2,
                expected: 0
            })
        );
        assert_eq!(
            scan_records(&[0x1A, 0x02, 0x08, 0x01], 1024),
            Err(WireError::WrongWireType {
                record: 0,
                what: "Record.key",
                offset: 2,
                wire_type: 0,
                expected: 2
            })
        );
        // Header.value as a varint.
        assert_eq!(
            scan_records(&[0x1A, 0x04, 0x1A, 0x02, 0x10, 0x01], 1024),
            Err(WireError::WrongWireType {
                record: 0,
                what: "Header.value",
                offset: 4,
                wire_type: 0,
                expected: 2
            })
        );
        // A payload entry that is not field 3 / LEN.
        assert_eq!(
            scan_records(&[0x0A, 0x00], 1024),
            Err(WireError::NotARecord {
                record: 0,
                offset: 0,
                field: 1,
                wire_type: 2
            })
        );
        // Invalid keys: field 0, wire type 7.
        assert_eq!(
            scan_records(&[0x1A, 0x01, 0x00], 1024),
            Err(WireError::InvalidKey {
                record: 0,
                offset: 2,
                key: 0
            })
        );
        assert_eq!(
            scan_records(&[0x1A, 0x01, 0x0F], 1024),
            Err(WireError::InvalidKey {
                record: 0,
                offset: 2,
                key: 0x0F
            })
        );
    }

    #[test]
    fn scan_invalid_header_key() {
        // Record 0 is empty; record 1 has header 0 fine, header 1 with key 0xFF.
        let payload = [
            0x1A, 0x00, // record 0
            0x1A, 0x0A, // record 1, 10 bytes
            0x1A, 0x03, 0x0A, 0x01, b'k', // header 0 { key: "k" }
            0x1A, 0x03, 0x0A, 0x01, 0xFF, // header 1 { key: [0xFF] }
        ];
        assert_eq!(
            scan_records(&payload, 1024),
            Err(WireError::InvalidHeaderKey {
                record: 1,
                header: 1,
                offset: 13
            })
        );
        // prost agrees that this is not a valid RecordBatch.
        assert!(RecordBatch::decode(&payload[..]).is_err());
    }

    #[test]
    fn scan_record_over_limit() {
        let records = vec![
            record(b"", b"small", &[], 0),
            record(b"k", &[7u8; 100], &[], 5),
        ];
        let payload = payload_of(&records);
        let size = records[1].encoded_len() as u64;
        assert_eq!(
            scan_records(&payload, 100),
            Err(WireError::RecordTooLarge {
                record: 1,
                size,
                limit: 100
            })
        );
        let ok = scan_records(&payload, size as u32).expect("at the limit is fine");
        assert_eq!(
            ok,
            RecordsSummary {
                record_count: 2,
                largest_record_bytes: size as u32,
                min_timestamp_ms: Some(5),
                max_timestamp_ms: Some(5),
            }
        );
    }

    #[test]
    fn scan_groups() {
        // Record { 5: group { 1: 1 } } is valid (and prost agrees).
        let ok = [0x1A, 0x04, 0x2B, 0x08, 0x01, 0x2C];
        assert_eq!(scan_records(&ok, 1024).map(|s| s.record_count), Ok(1));
        assert!(RecordBatch::decode(&ok[..]).is_ok());
        // Unterminated group.
        assert_eq!(
            scan_records(&[0x1A, 0x01, 0x2B], 1024),
            Err(WireError::MalformedGroup {
                record: 0,
                offset: 2,
                reason: "unterminated group"
            })
        );
        // Mismatched end group.
        assert_eq!(
            scan_records(&[0x1A, 0x02, 0x2B, 0x34], 1024),
            Err(WireError::MalformedGroup {
                record: 0,
                offset: 3,
                reason: "mismatched end group"
            })
        );
        // Stray end group.
        assert_eq!(
            scan_records(&[0x1A, 0x01, 0x2C], 1024),
            Err(WireError::MalformedGroup {
                record: 0,
                offset: 2,
                reason: "unexpected end group"
            })
        );
        // Nested too deeply.
        let depth = MAX_GROUP_DEPTH as usize + 1;
        let mut record = vec![0x2B; depth];
        record.extend(std::iter::repeat_n(0x2C, depth));
        let mut payload = vec![0x1A, record.len() as u8];
        payload.extend_from_slice(&record);
        assert!(matches!(
            scan_records(&payload, 1024),
            Err(WireError::MalformedGroup {
                reason: "groups nested too deeply",
                ..
            })
        ));
    }

    #[test]
    fn errors_display_context() {
        let e = WireError::RecordTooLarge {
            record: 3,
            size: 2000,
            limit: 1000,
        };
        assert_eq!(
            e.to_string(),
            "record 3 is 2000 bytes, over the limit of 1000 bytes (max_record_bytes)"
        );
    }
}
