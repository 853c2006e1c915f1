//! Validated identifiers: flag, segment, project and environment keys.
//!
//! Every key matches `[A-Za-z0-9._-]{1,256}`. The newtypes are built only through
//! [`Key::parse`] (or deserialisation, which calls it), so holding one proves it is valid.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// Why a string is not a valid key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than [`MAX_KEY_LEN`] bytes.
    #[error("must be at most {MAX_KEY_LEN} characters, got {0}")]
    TooLong(usize),
    /// The string holds a character outside `[A-Za-z0-9._-]`.
    #[error("may contain only letters, digits, '.', '_' and '-'; found {0:?} at byte {1}")]
    InvalidChar(char, usize),
}

/// Checks `s` against the key grammar `[A-Za-z0-9._-]{1,256}`.
pub fn check_key(s: &str) -> Result<(), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty);
    }
    if s.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(s.len()));
    }
    match s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some((i, c)) => Err(KeyError::InvalidChar(c, i)),
        None => Ok(()),
    }
}

macro_rules! key_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses `s`, returning the key or the rule it breaks.
            pub fn parse(s: impl Into<String>) -> Result<Self, KeyError> {
                let s = s.into();
                check_key(&s)?;
                Ok(Self(s))
            }

            /// The key as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the key, returning the owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = KeyError;
            fn try_from(s: String) -> Result<Self, KeyError> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = KeyError;
            fn try_from(s: &str) -> Result<Self, KeyError> {
                Self::parse(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, KeyError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(k: $name) -> String {
                k.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

key_type!(
    /// The key of a flag, unique within a project.
    FlagKey
);
key_type!(
    /// The key of a segment, unique within an environment.
    SegmentKey
);
key_type!(
    /// The key of a project.
    ProjectKey
);
key_type!(
    /// The key of an environment, unique within a project.
    EnvironmentKey
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        for ok in ["a", "new-checkout", "A.b_c-9", &"x".repeat(256)] {
            assert!(FlagKey::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_with_the_rule_broken() {
        assert_eq!(FlagKey::parse(""), Err(KeyError::Empty));
        assert_eq!(FlagKey::parse("x".repeat(257)), Err(KeyError::TooLong(257)));
        assert_eq!(FlagKey::parse("a b"), Err(KeyError::InvalidChar(' ', 1)));
        assert_eq!(FlagKey::parse("é"), Err(KeyError::InvalidChar('é', 0)));
        assert!(FlagKey::parse("a/b").is_err());
    }

    #[test]
    fn deserialising_validates() {
        let k: FlagKey = serde_json::from_str("\"ok-key\"").unwrap();
        assert_eq!(k, "ok-key");
        let err = serde_json::from_str::<FlagKey>("\"bad key\"").unwrap_err();
        assert!(err.to_string().contains("may contain only"), "{err}");
    }
}
