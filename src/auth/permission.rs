//! Permissions: `action:pattern`, where the pattern is a glob over topic
//! names (or group names, for `group`).
//!
//! | action    | resource | allows                                               |
//! |-----------|----------|------------------------------------------------------|
//! | `produce` | topic    | `Produce`                                            |
//! | `consume` | topic    | `Fetch`, `Subscribe`, `ListOffsets`; the topics of a group member, its commits and offset resets |
//! | `admin`   | topic    | `CreateTopic`, `DeleteTopic`, `CreatePartitions`, `AlterTopicConfig` |
//! | `group`   | group    | every `Groups` RPC naming that group                 |
//!
//! Any permission on a topic (produce, consume or admin) also allows
//! `DescribeTopic` of it and shows it in `ListTopics` (a producer needs the
//! partition count). Glob syntax: `*` matches any run of characters
//! (including none), `?` exactly one; every other character matches itself.

use std::fmt;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Append records to a topic.
    Produce,
    /// Read records or offsets of a topic.
    Consume,
    /// Create, delete or change a topic.
    Admin,
    /// Use or administer a consumer group.
    Group,
}

impl Action {
    /// Every action, in the order of the table above.
    pub const ALL: [Action; 4] = [
        Action::Produce,
        Action::Consume,
        Action::Admin,
        Action::Group,
    ];

    /// The action's name in permission strings.
    pub fn name(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Admin => "admin",
            Action::Group => "group",
        }
    }

    /// What the action does to its resource, for messages ("produce to").
    pub fn verb(self) -> &'static str {
        match self {
            Action::Produce => "produce to",
            Action::Consume => "consume from",
            Action::Admin => "administer",
            Action::Group => "use",
        }
    }

    /// Whether the action is about topics (rather than groups).
    pub fn on_topics(self) -> bool {
        self != Action::Group
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A permission string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    /// No `:` between action and pattern.
    #[error("permission '{0}' is not of the form action:pattern")]
    MissingColon(String),
    /// The action is not one of the four.
    #[error("permission '{permission}': unknown action '{action}'; allowed: produce, consume, admin, group")]
    UnknownAction {
        /// The whole permission.
        permission: String,
        /// The action part.
        action: String,
    },
    /// The pattern is empty or contains whitespace or control characters.
    #[error(
        "permission '{0}': the pattern must be non-empty, without whitespace or control characters"
    )]
    BadPattern(String),
}

/// One granted permission: an action on the resources a glob matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// The action granted.
    pub action: Action,
    /// The glob over resource names.
    pub pattern: String,
}

impl Permission {
    /// Parses `action:pattern`.
    ///
    /// # Errors
    /// [`PermissionError`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Permission, PermissionError> {
        let (action, pattern) = text
            .split_once(':')
            .ok_or_else(|| PermissionError::MissingColon(text.to_string()))?;
        let action = Action::ALL
            .into_iter()
            .find(|a| a.name() == action)
            .ok_or_else(|| PermissionError::UnknownAction {
                permission: text.to_string(),
                action: action.to_string(),
            })?;
        if pattern.is_empty() || pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PermissionError::BadPattern(text.to_string()));
        }
        Ok(Permission {
            action,
            pattern: pattern.to_string(),
        })
    }

    /// Whether this permission allows `action` on `resource`.
    pub fn allows(&self, action: Action, resource: &str) -> bool {
        self.action == action && glob_match(&self.pattern, resource)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.action, self.pattern)
    }
}

/// Matches `name` against `pattern` (`*` any run, `?` one character).
///
/// Linear in `pattern.len() * name.len()` at worst (the classic two-pointer
/// algorithm with one backtrack point), so a hostile name cannot make it
/// exponential.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    // Where the last `*` was and which name position it was tried against.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("orders", "orders"));
        assert!(!glob_match("orders", "orders2"));
        assert!(!glob_match("orders", "order"));
        assert!(glob_match("orders.*", "orders.eu"));
        assert!(glob_match("orders.*", "orders."));
        assert!(!glob_match("orders.*", "orders"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("billing-*", "billing-eu"));
        assert!(!glob_match("billing-*", "xbilling-eu"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("*.eu", "orders.eu"));
        assert!(glob_match("t?", "t1"));
        assert!(!glob_match("t?", "t"));
        assert!(!glob_match("t?", "t12"));
        assert!(glob_match("**x", "x"));
        assert!(!glob_match("", "x"));
        assert!(glob_match("", ""));
        // No exponential blow-up on a hostile name.
        let name = "a".repeat(10_000);
        assert!(!glob_match("*a*a*a*a*a*b", &name));
    }

    #[test]
    fn parse_permissions() {
        let p = Permission::parse("consume:orders.*").unwrap();
        assert_eq!(p.action, Action::Consume);
        assert!(p.allows(Action::Consume, "orders.eu"));
        assert!(!p.allows(Action::Produce, "orders.eu"));
        assert_eq!(p.to_string(), "consume:orders.*");
        assert!(Permission::parse("admin:*")
            .unwrap()
            .allows(Action::Admin, "x"));
        assert_eq!(
            Permission::parse("read:orders"),
            Err(PermissionError::UnknownAction {
                permission: "read:orders".into(),
                action: "read".into()
            })
        );
        assert!(matches!(
            Permission::parse("orders"),
            Err(PermissionError::MissingColon(_))
        ));
        assert!(matches!(
            Permission::parse("produce:"),
            Err(PermissionError::BadPattern(_))
        ));
        assert!(matches!(
            Permission::parse("produce:a b"),
            Err(PermissionError::BadPattern(_))
        ));
        let e = Permission::parse("read:x").unwrap_err().to_string();
        assert!(e.contains("allowed: produce, consume, admin, group"), "{e}");
    }
}
