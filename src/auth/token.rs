//! Bearer tokens: their SHA-256 digests, compared in constant time, and
//! fresh random tokens.
//!
//! The broker never stores a token, only its SHA-256 (`token_sha256` in the
//! auth file, lowercase or uppercase hex). A presented token is hashed and
//! compared with every principal's digest without an early exit, so the
//! time taken does not depend on how many leading bytes matched.

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of a SHA-256 digest.
pub const DIGEST_BYTES: usize = 32;

/// Random bytes in a token made by [`generate`] (256 bits).
pub const TOKEN_RANDOM_BYTES: usize = 32;

/// A SHA-256 digest of a token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; DIGEST_BYTES]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Digests are not secret, but there is no reason to spread them in logs.
        f.write_str("TokenDigest(..)")
    }
}

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &[u8]) -> TokenDigest {
        let d = digest(&SHA256, token);
        let mut out = [0u8; DIGEST_BYTES];
        out.copy_from_slice(d.as_ref());
        TokenDigest(out)
    }

    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// A message saying what is wrong (length or a non-hex character).
    pub fn from_hex(hex: &str) -> Result<TokenDigest, String> {
        let bytes = hex.as_bytes();
        if bytes.len() != DIGEST_BYTES * 2 {
            return Err(format!(
                "expected {} hex digits (a SHA-256), found {}",
                DIGEST_BYTES * 2,
                bytes.len()
            ));
        }
        let mut out = [0u8; DIGEST_BYTES];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]);
            let lo = hex_value(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = h << 4 | l,
                (None, _) => return Err(format!("not a hex digit at position {}", i * 2 + 1)),
                (Some(_), None) => {
                    return Err(format!("not a hex digit at position {}", i * 2 + 2))
                }
            }
        }
        Ok(TokenDigest(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Compares in constant time (no early exit on the first difference).
    pub fn ct_eq(&self, other: &TokenDigest) -> bool {
        let mut diff = 0u8;
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            diff |= a ^ b;
        }
        // black_box keeps the optimiser from turning the loop into an
        // early-exit comparison.
        std::hint::black_box(diff) == 0
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A new random token: `strata_` and 64 hex digits of system randomness.
///
/// # Errors
/// The system's random source failed.
pub fn generate() -> Result<String, String> {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(format!("strata_{}", to_hex(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        // printf 'secret' | sha256sum
        assert_eq!(
            TokenDigest::of(b"secret").to_hex(),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let d = TokenDigest::of(b"x");
        assert_eq!(TokenDigest::from_hex(&d.to_hex()).unwrap(), d);
        assert_eq!(
            TokenDigest::from_hex(&d.to_hex().to_uppercase()).unwrap(),
            d
        );
        assert!(TokenDigest::from_hex("abc").unwrap_err().contains("64 hex"));
        let bad = format!("{}g", &d.to_hex()[..63]);
        assert!(TokenDigest::from_hex(&bad)
            .unwrap_err()
            .contains("position 64"));
    }

    #[test]
    fn constant_time_eq() {
        let a = TokenDigest::of(b"a");
        assert!(a.ct_eq(&TokenDigest::of(b"a")));
        assert!(!a.ct_eq(&TokenDigest::of(b"b")));
    }

    #[test]
    fn generated_tokens_differ() {
        let a = generate().unwrap();
        assert!(a.starts_with("strata_") && a.len() == 7 + 64);
        assert_ne!(a, generate().unwrap());
    }
}
