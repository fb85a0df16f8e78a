//! `strata auth ...`: tokens and their hashes for the broker's auth file.
//!
//! - `strata auth hash-token [TOKEN]` prints the hex SHA-256 of TOKEN (read
//!   from stdin when absent, so the token stays out of the shell history and
//!   `ps`; one trailing newline is dropped), the value of `token_sha256`.
//! - `strata auth gen-token` prints a new random token and, on the next
//!   line, `token_sha256 = "…"` ready to paste into the auth file.

use std::io::Read;

use clap::{Args, Subcommand};

use super::{print_stdout, CliError};
use crate::auth::token::{generate, TokenDigest};

/// Arguments of `strata auth`.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuthCommand,
}

/// The `strata auth` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the SHA-256 (hex) of a token, for `token_sha256` in the auth file.
    HashToken {
        /// The token; read from stdin when absent (safer: not in `ps` or history).
        token: Option<String>,
    },
    /// Print a new random token and its `token_sha256` line.
    GenToken,
}

/// Runs `strata auth`.
///
/// # Errors
/// Reading stdin or writing stdout failed, or the random source failed.
pub fn run(args: AuthArgs) -> Result<(), CliError> {
    match args.command {
        AuthCommand::HashToken { token } => {
            let token = match token {
                Some(t) => t,
                None => read_stdin_token()?,
            };
            print_stdout(&format!("{}\n", TokenDigest::of(token.as_bytes()).to_hex()))
        }
        AuthCommand::GenToken => {
            let token = generate().map_err(|e| CliError::Io {
                action: "generate a token",
                source: std::io::Error::other(e),
            })?;
            let hash = TokenDigest::of(token.as_bytes()).to_hex();
            print_stdout(&format!("{token}\ntoken_sha256 = \"{hash}\"\n"))
        }
    }
}

fn read_stdin_token() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|source| CliError::Io {
            action: "read the token from stdin",
            source,
        })?;
    Ok(strip_one_newline(&text).to_string())
}

/// Drops one trailing `\n` or `\r\n` (what `echo` or a file adds).
fn strip_one_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(strip_one_newline("tok\n"), "tok");
        assert_eq!(strip_one_newline("tok\r\n"), "tok");
        assert_eq!(strip_one_newline("tok"), "tok");
        assert_eq!(strip_one_newline("tok\n\n"), "tok\n");
    }
}
