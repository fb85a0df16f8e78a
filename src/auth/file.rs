//! The auth file (`--auth-file`): TOML, one `[[principal]]` table per
//! client identity.
//!
//! ```toml
//! # Optional defaults for principals that set no quota of their own
//! # (bytes/s; 0 or absent = unlimited).
//! default_produce_bytes_per_sec = 10485760
//! default_fetch_bytes_per_sec = 0
//!
//! [[principal]]
//! name = "orders-service"
//! token_sha256 = "…64 hex digits: SHA-256 of the token…"
//! permissions = ["produce:orders", "consume:orders.*", "group:billing-*"]
//! produce_bytes_per_sec = 1048576   # optional, overrides the default
//!
//! [[principal]]
//! name = "billing"
//! cert_subject = "billing.internal"  # mTLS: the client certificate's subject CN
//! permissions = ["consume:orders", "group:billing-*"]
//! ```
//!
//! A principal has a `token_sha256`, a `cert_subject`, or both. Names,
//! token digests and certificate subjects must be unique; unknown keys,
//! unknown actions and malformed hex are errors that name the principal.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::permission::Permission;
use super::token::TokenDigest;

/// Why an auth file was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file could not be read.
    #[error("cannot read auth file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid auth file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column, key).
        message: String,
    },
    /// A principal entry is wrong.
    #[error("invalid auth file {path}: principal '{principal}': {reason}")]
    Principal {
        /// The file.
        path: PathBuf,
        /// The principal's name (or its position when the name is the problem).
        principal: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    default_produce_bytes_per_sec: u64,
    #[serde(default)]
    default_fetch_bytes_per_sec: u64,
    #[serde(default)]
    principal: Vec<RawPrincipal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    name: String,
    token_sha256: Option<String>,
    cert_subject: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    produce_bytes_per_sec: Option<u64>,
    fetch_bytes_per_sec: Option<u64>,
}

/// One validated principal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalEntry {
    /// Unique name, used in logs and errors.
    pub name: String,
    /// SHA-256 of its bearer token, if it authenticates by token.
    pub token: Option<TokenDigest>,
    /// Subject CN of its client certificate, if it authenticates by mTLS.
    pub cert_subject: Option<String>,
    /// What it may do.
    pub permissions: Vec<Permission>,
    /// Produce quota, bytes/s; 0 = unlimited.
    pub produce_bytes_per_sec: u64,
    /// Fetch quota, bytes/s; 0 = unlimited.
    pub fetch_bytes_per_sec: u64,
}

/// A validated auth file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFile {
    /// The principals, in file order.
    pub principals: Vec<PrincipalEntry>,
}

impl AuthFile {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// [`AuthFileError`] naming the file and, for a bad entry, the principal.
    pub fn load(path: &Path) -> Result<AuthFile, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AuthFile::parse(&text, path)
    }

    /// Validates the text of an auth file (`path` is for messages).
    ///
    /// # Errors
    /// See [`AuthFile::load`].
    pub fn parse(text: &str, path: &Path) -> Result<AuthFile, AuthFileError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| AuthFileError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut names = HashSet::new();
        let mut tokens = Vec::<TokenDigest>::new();
        let mut subjects = HashSet::new();
        let mut principals = Vec::with_capacity(raw.principal.len());
        for (i, p) in raw.principal.into_iter().enumerate() {
            let fail = |principal: &str, reason: String| AuthFileError::Principal {
                path: path.to_path_buf(),
                principal: principal.to_string(),
                reason,
            };
            if p.name.trim().is_empty() {
                return Err(fail(&format!("#{}", i + 1), "the name is empty".into()));
            }
            if !names.insert(p.name.clone()) {
                return Err(fail(&p.name, "duplicate name".into()));
            }
            let token = match &p.token_sha256 {
                Some(hex) => {
                    let d = TokenDigest::from_hex(hex.trim())
                        .map_err(|e| fail(&p.name, format!("token_sha256: {e}")))?;
                    if tokens.contains(&d) {
                        return Err(fail(
                            &p.name,
                            "token_sha256 is the same as another principal's".into(),
                        ));
                    }
                    tokens.push(d);
                    Some(d)
                }
                None => None,
            };
            if let Some(subject) = &p.cert_subject {
                if subject.is_empty() {
                    return Err(fail(&p.name, "cert_subject is empty".into()));
                }
                if !subjects.insert(subject.clone()) {
                    return Err(fail(
                        &p.name,
                        format!("cert_subject '{subject}' is the same as another principal's"),
                    ));
                }
            }
            if token.is_none() && p.cert_subject.is_none() {
                return Err(fail(
                    &p.name,
                    "needs token_sha256 (bearer token) or cert_subject (mTLS), or both".into(),
                ));
            }
            let permissions = p
                .permissions
                .iter()
                .map(|s| Permission::parse(s).map_err(|e| fail(&p.name, e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            principals.push(PrincipalEntry {
                name: p.name,
                token,
                cert_subject: p.cert_subject,
                permissions,
                produce_bytes_per_sec: p
                    .produce_bytes_per_sec
                    .unwrap_or(raw.default_produce_bytes_per_sec),
                fetch_bytes_per_sec: p
                    .fetch_bytes_per_sec
                    .unwrap_or(raw.default_fetch_bytes_per_sec),
            });
        }
        Ok(AuthFile { principals })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::permission::Action;

    const HASH_A: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
    const HASH_B: &str = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";

    fn parse(text: &str) -> Result<AuthFile, AuthFileError> {
        AuthFile::parse(text, Path::new("auth.toml"))
    }

    #[test]
    fn a_good_file() {
        let f = parse(&format!(
            r#"
            default_produce_bytes_per_sec = 100
            [[principal]]
            name = "orders"
            token_sha256 = "{HASH_A}"
            permissions = ["produce:orders", "consume:orders.*", "group:billing-*"]
            fetch_bytes_per_sec = 7
            [[principal]]
            name = "billing"
            cert_subject = "billing.internal"
            permissions = ["admin:*"]
            produce_bytes_per_sec = 0
            "#
        ))
        .unwrap();
        assert_eq!(f.principals.len(), 2);
        let o = &f.principals[0];
        assert_eq!(o.token, Some(TokenDigest::from_hex(HASH_A).unwrap()));
        assert_eq!(o.permissions.len(), 3);
        assert!(o.permissions[1].allows(Action::Consume, "orders.eu"));
        assert_eq!((o.produce_bytes_per_sec, o.fetch_bytes_per_sec), (100, 7));
        let b = &f.principals[1];
        assert_eq!(b.cert_subject.as_deref(), Some("billing.internal"));
        assert_eq!(b.produce_bytes_per_sec, 0, "explicit 0 beats the default");
    }

    #[test]
    fn an_empty_file_has_no_principals() {
        assert!(parse("").unwrap().principals.is_empty());
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e = error(&format!(
            "[[principal]]\nname = \"a\"\ntoken_sha256 = \"{HASH_A}\"\npermissions = [\"read:x\"]\n"
        ));
        assert!(
            e.contains("principal 'a'") && e.contains("unknown action 'read'"),
            "{e}"
        );

        let e = error("[[principal]]\nname = \"a\"\ntoken_sha256 = \"xyz\"\n");
        assert!(
            e.contains("principal 'a'") && e.contains("64 hex digits"),
            "{e}"
        );

        let e = error(&format!(
            "[[principal]]\nname = \"a\"\ntoken_sha256 = \"{HASH_A}\"\n[[principal]]\nname = \"a\"\ntoken_sha256 = \"{HASH_B}\"\n"
        ));
        assert!(e.contains("principal 'a': duplicate name"), "{e}");

        let e = error(&format!(
            "[[principal]]\nname = \"a\"\ntoken_sha256 = \"{HASH_A}\"\n[[principal]]\nname = \"b\"\ntoken_sha256 = \"{HASH_A}\"\n"
        ));
        assert!(
            e.contains("principal 'b'") && e.contains("same as another"),
            "{e}"
        );

        let e = error("[[principal]]\nname = \"a\"\npermissions = []\n");
        assert!(e.contains("needs token_sha256"), "{e}");

        let e = error("[[principal]]\nname = \"a\"\ntokn = \"x\"\n");
        assert!(
            e.contains("unknown field") && e.contains("auth.toml"),
            "{e}"
        );

        let e = error("[[principal]]\nname = \"\"\ncert_subject = \"x\"\n");
        assert!(e.contains("'#1'") && e.contains("empty"), "{e}");

        let e = error(
            "[[principal]]\nname = \"a\"\ncert_subject = \"x\"\n[[principal]]\nname = \"b\"\ncert_subject = \"x\"\n",
        );
        assert!(
            e.contains("principal 'b'") && e.contains("cert_subject 'x'"),
            "{e}"
        );
    }
}
