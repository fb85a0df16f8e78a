//! Small output helpers with no dependencies: JSON string escaping, base64,
//! plain-text tables and human-readable durations.
//!
//! JSON is written by hand because the CLI emits only one flat object shape
//! per record; a serializer would add a dependency for twenty lines.

/// The standard base64 alphabet (RFC 4648 §4).
const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` as standard base64 with `=` padding (RFC 4648 §4).
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(BASE64_ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// Appends `s` to `out` as a JSON string literal, quotes included
/// (RFC 8259 §7: `"`, `\` and control characters are escaped).
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `"name":value` for a byte field: the UTF-8 text under `name` when
/// the bytes are valid UTF-8, else their base64 under `name_base64`.
pub fn push_json_bytes(out: &mut String, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            push_json_string(out, name);
            out.push(':');
            push_json_string(out, text);
        }
        Err(_) => {
            push_json_string(out, &format!("{name}_base64"));
            out.push(':');
            push_json_string(out, &base64(bytes));
        }
    }
}

/// A plain-text table: a header row and rows of cells, printed with columns
/// left-aligned and separated by two spaces.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with the given column headings.
    pub fn new(headings: &[&str]) -> Table {
        Table {
            rows: vec![headings.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row (one cell per heading).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let cell_width = |row: &Vec<String>| row.get(c).map_or(0, |s| s.chars().count());
                self.rows.iter().map(cell_width).max().unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[c] - cell.chars().count();
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A duration in milliseconds for people, at most two units: `0`, `850ms`,
/// `1.2s` (tenths, truncated), `3m4s`, `2h5m`, `3d4h`.
pub fn human_duration_ms(ms: u64) -> String {
    const SECOND: u64 = 1000;
    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match ms {
        0 => "0".to_string(),
        _ if ms < SECOND => format!("{ms}ms"),
        _ if ms < MINUTE => format!("{}.{}s", ms / SECOND, ms % SECOND / 100),
        _ if ms < HOUR => format!("{}m{}s", ms / MINUTE, ms % MINUTE / SECOND),
        _ if ms < DAY => format!("{}h{}m", ms / HOUR, ms % HOUR / MINUTE),
        _ => format!("{}d{}h", ms / DAY, ms % DAY / HOUR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\te\u{1}f\u{7f}é😀");
        assert_eq!(out, r#""a\"b\\c\nd\te\u0001f"#.to_string() + "\u{7f}é😀\"");
    }

    #[test]
    fn json_bytes_fall_back_to_base64() {
        let mut out = String::new();
        push_json_bytes(&mut out, "value", b"hi");
        out.push(',');
        push_json_bytes(&mut out, "value", &[0xff, 0x00]);
        assert_eq!(out, r#""value":"hi","value_base64":"/wA=""#);
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["A", "LONG"]);
        t.row(vec!["wide cell".into(), "1".into()]);
        assert_eq!(t.render(), "A          LONG\nwide cell  1\n");
    }

    #[test]
    fn durations_are_short_and_readable() {
        let cases = [
            (0, "0"),
            (1, "1ms"),
            (999, "999ms"),
            (1_000, "1.0s"),
            (1_299, "1.2s"),
            (59_999, "59.9s"),
            (60_000, "1m0s"),
            (184_000, "3m4s"),
            (3_599_999, "59m59s"),
            (3_600_000, "1h0m"),
            (7_500_000, "2h5m"),
            (86_400_000, "1d0h"),
            (273_600_000, "3d4h"),
        ];
        for (ms, text) in cases {
            assert_eq!(human_duration_ms(ms), text, "{ms} ms");
        }
        assert_eq!(human_duration_ms(u64::MAX), "213503982334d14h");
    }
}
