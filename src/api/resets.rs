//! Closing connections that reset streams at an abusive rate
//! (`limits.max_stream_resets_per_sec`; the "rapid reset" attack,
//! CVE-2023-44487, and reset floods).
//!
//! A client may cancel any stream with an HTTP/2 `RST_STREAM` frame, and a
//! cancelled stream costs the broker the work of opening it (HPACK, routing,
//! a task) while it never counts against `max_concurrent_streams`. h2
//! already bounds streams reset before the server accepted them (20 per
//! connection); a client that resets right after the accept is bounded by
//! nothing but its CPU. Legitimate clients cancel rarely: a consumer
//! cancelling a long-poll, a caller whose deadline passed. So the broker
//! counts each connection's `RST_STREAM` frames per one-second window and
//! closes the connection when a window holds more than the limit.
//!
//! The count is made on the bytes the client sends, after TLS and before
//! HTTP/2 parses them ([`crate::api::connections::Limited`] feeds
//! [`FrameScanner`]): tonic does not expose h2's stream events, and a frame
//! header is easy to read. Every HTTP/2 frame starts with this header
//! (RFC 9113 §4.1), after the 24-byte connection preface:
//!
//! | bytes | field     | meaning                                  |
//! |-------|-----------|------------------------------------------|
//! | 0..3  | length    | payload bytes after the header, 24-bit BE |
//! | 3     | type      | `0x3` = `RST_STREAM`                     |
//! | 4     | flags     |                                          |
//! | 5..9  | stream id | reserved bit + 31-bit id                 |
//!
//! Windows are fixed, one second each from the first reset after the last
//! window ended, so a connection may reach up to twice the limit across a
//! window boundary; the limit bounds the attack's rate, not one frame.

use std::time::{Duration, Instant};

/// The client connection preface (RFC 9113 §3.4), before the first frame.
const PREFACE_BYTES: u8 = 24;
/// Length of a frame header.
const HEADER_BYTES: usize = 9;
/// Frame type of `RST_STREAM`.
const RST_STREAM: u8 = 0x3;
/// Length of one counting window.
const WINDOW: Duration = Duration::from_secs(1);

/// Finds the frame headers in the bytes a client sends, read by read (a
/// header may be split across reads), and counts the `RST_STREAM` frames.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    /// Preface bytes still to skip.
    preface_left: u8,
    /// The header being assembled.
    header: [u8; HEADER_BYTES],
    /// Bytes of `header` filled so far.
    header_filled: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: usize,
}

impl Default for FrameScanner {
    fn default() -> Self {
        FrameScanner {
            preface_left: PREFACE_BYTES,
            header: [0; HEADER_BYTES],
            header_filled: 0,
            payload_left: 0,
        }
    }
}

impl FrameScanner {
    /// Reads the next `bytes` of the connection; returns the number of
    /// `RST_STREAM` frame headers they completed.
    pub fn scan(&mut self, mut bytes: &[u8]) -> u32 {
        let mut resets = 0;
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = bytes.len().min(usize::from(self.preface_left));
                // n <= preface_left, a u8.
                self.preface_left -= n as u8;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = bytes.len().min(self.payload_left);
                self.payload_left -= n;
                bytes = &bytes[n..];
            } else {
                let n = bytes.len().min(HEADER_BYTES - self.header_filled);
                self.header[self.header_filled..self.header_filled + n]
                    .copy_from_slice(&bytes[..n]);
                self.header_filled += n;
                bytes = &bytes[n..];
                if self.header_filled == HEADER_BYTES {
                    self.header_filled = 0;
                    let h = &self.header;
                    self.payload_left =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    if h[3] == RST_STREAM {
                        resets += 1;
                    }
                }
            }
        }
        resets
    }
}

/// A connection sent more resets in one window than the limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the client reset more than {limit} streams within a second \
     (limits.max_stream_resets_per_sec, --max-stream-resets-per-sec); closing the connection"
)]
pub struct ResetFlood {
    /// The limit, resets per second.
    pub limit: u32,
}

/// The reset rate of one connection against its limit.
#[derive(Debug, Clone)]
pub struct ResetWindow {
    /// Resets allowed per window; 0 = no limit.
    limit: u32,
    /// When the current window began (`None` before the first reset).
    started: Option<Instant>,
    /// Resets counted in the current window.
    counted: u32,
}

impl ResetWindow {
    /// A window allowing `limit` resets per second; 0 = no limit.
    pub fn new(limit: u32) -> ResetWindow {
        ResetWindow {
            limit,
            started: None,
            counted: 0,
        }
    }

    /// Whether a window went over the limit (the connection is closing).
    pub fn is_flooded(&self) -> bool {
        self.limit != 0 && self.counted > self.limit
    }

    /// Counts `resets` more at `now`.
    ///
    /// # Errors
    ///
    /// [`ResetFlood`] when the current window now holds more than the limit
    /// (and at every later call: the connection is to be closed).
    pub fn record(&mut self, resets: u32, now: Instant) -> Result<(), ResetFlood> {
        if self.limit == 0 || resets == 0 {
            return Ok(());
        }
        match self.started {
            Some(started)
                if self.is_flooded() || now.saturating_duration_since(started) < WINDOW => {}
            _ => {
                self.started = Some(now);
                self.counted = 0;
            }
        }
        self.counted = self.counted.saturating_add(resets);
        if self.counted > self.limit {
            Err(ResetFlood { limit: self.limit })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        f.resize(HEADER_BYTES + payload, 0x3); // payload bytes that look like a type
        f
    }

    /// A connection's bytes: the preface, SETTINGS, then per stream a
    /// HEADERS, a DATA and a RST_STREAM frame.
    fn connection(streams: usize) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 12));
        for _ in 0..streams {
            bytes.extend(frame(0x1, 40));
            bytes.extend(frame(0x0, 300));
            bytes.extend(frame(RST_STREAM, 4));
        }
        bytes
    }

    #[test]
    fn counts_reset_frames_however_the_bytes_are_split() {
        let bytes = connection(7);
        for chunk in [1, 2, 5, 9, 10, 23, 24, 25, 100, bytes.len()] {
            let mut scanner = FrameScanner::default();
            let found: u32 = bytes.chunks(chunk).map(|c| scanner.scan(c)).sum();
            assert_eq!(found, 7, "chunks of {chunk}");
        }
    }

    #[test]
    fn frames_of_other_types_and_payload_bytes_are_not_counted() {
        let mut scanner = FrameScanner::default();
        let mut bytes = PREFACE.to_vec();
        // A payload made of 0x3 bytes, and a 16 MiB - 1 frame length.
        bytes.extend(frame(0x0, 1000));
        bytes.extend(frame(0x0, (1 << 24) - 1));
        assert_eq!(scanner.scan(&bytes), 0);
        assert_eq!(scanner.scan(&frame(RST_STREAM, 4)), 1);
    }

    #[test]
    fn a_window_over_the_limit_is_a_flood() {
        let t0 = Instant::now();
        let mut w = ResetWindow::new(10);
        assert_eq!(w.record(10, t0), Ok(()));
        assert_eq!(
            w.record(1, t0 + Duration::from_millis(999)),
            Err(ResetFlood { limit: 10 })
        );
        // Once flooded, it stays flooded: the connection is closing.
        assert!(w.record(1, t0 + Duration::from_secs(5)).is_err());
    }

    #[test]
    fn resets_spread_over_windows_stay_under_the_limit() {
        let t0 = Instant::now();
        let mut w = ResetWindow::new(10);
        for second in 0..100 {
            let now = t0 + Duration::from_secs(second);
            assert_eq!(w.record(10, now), Ok(()), "second {second}");
        }
    }

    #[test]
    fn zero_means_no_limit() {
        let mut w = ResetWindow::new(0);
        assert_eq!(w.record(u32::MAX, Instant::now()), Ok(()));
        assert_eq!(w.record(u32::MAX, Instant::now()), Ok(()));
    }
}
