//! Secrets and roles: API tokens (`vxa_`), SDK keys (`vxs_`) and relay keys (`vxr_`).
//!
//! A secret is a prefix and 32 random bytes (256 bits) in hex. Only its SHA-256 digest is
//! stored; a presented secret is hashed, looked up by digest, and the digests are compared
//! again in constant time. Secrets are shown once, at creation or rotation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of API tokens.
pub const API_TOKEN_PREFIX: &str = "vxa_";
/// Prefix of SDK keys.
pub const SDK_KEY_PREFIX: &str = "vxs_";
/// Prefix of relay keys.
pub const RELAY_KEY_PREFIX: &str = "vxr_";
/// Prefix of client-side keys (public: browsers and mobile apps).
pub const CLIENT_KEY_PREFIX: &str = "vxc_";

/// What an API token may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Read everything; write projects, environments, flags and segments.
    Editor,
    /// Everything, including API tokens, SDK keys and relay keys.
    Admin,
}

impl Role {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The API token's id (`None` for the server itself, e.g. at bootstrap).
    pub token_id: Option<i64>,
    /// The token's name: the actor recorded in the audit log.
    pub name: String,
    /// The token's role.
    pub role: Role,
}

impl Actor {
    /// The server acting on its own behalf (bootstrap).
    pub fn system() -> Self {
        Self {
            token_id: None,
            name: "system".to_owned(),
            role: Role::Admin,
        }
    }

    /// Whether the actor's role includes `role`.
    pub fn can(&self, role: Role) -> bool {
        self.role >= role
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// A new random secret with `prefix` (256 bits of entropy).
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("{prefix}{}", hex(&bytes))
}

/// The SHA-256 digest under which a secret is stored.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Compares two digests in constant time.
pub fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A displayable hint of a secret that reveals nothing useful: prefix and last four characters.
pub fn hint(secret: &str) -> String {
    let prefix = secret.get(..4).unwrap_or("");
    let tail = secret
        .char_indices()
        .rev()
        .nth(3)
        .map(|(i, _)| &secret[i..])
        .unwrap_or("");
    format!("{prefix}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_long() {
        let a = generate_secret(API_TOKEN_PREFIX);
        let b = generate_secret(API_TOKEN_PREFIX);
        assert!(a.starts_with("vxa_"));
        assert_eq!(a.len(), 4 + 64);
        assert_ne!(a, b);
    }

    #[test]
    fn hashes_compare_in_constant_time_and_correctly() {
        let s = generate_secret(SDK_KEY_PREFIX);
        assert!(digests_equal(&hash_secret(&s), &hash_secret(&s)));
        assert!(!digests_equal(&hash_secret(&s), &hash_secret("vxs_other")));
        assert_eq!(hash_secret(&s).len(), 32);
    }

    #[test]
    fn hints_show_prefix_and_tail_only() {
        assert_eq!(hint("vxa_0123456789abcdef"), "vxa_…cdef");
        assert_eq!(hint("ab"), "…");
    }

    #[test]
    fn roles_are_ordered_by_power() {
        let editor = Actor {
            token_id: Some(1),
            name: "e".into(),
            role: Role::Editor,
        };
        assert!(editor.can(Role::Viewer) && editor.can(Role::Editor) && !editor.can(Role::Admin));
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
    }
}
