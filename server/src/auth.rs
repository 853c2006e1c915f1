//! Secrets and roles: API tokens (`vxa_`), SDK keys (`vxs_`) and relay keys (`vxr_`).
//!
//! A secret is a prefix and 32 random bytes (256 bits) in hex. Only its SHA-256 digest is
//! stored; a presented secret is hashed, looked up by digest, and the digests are compared
//! again in constant time. Secrets are shown once, at creation or rotation.
//!
//! A token's [`Role`] may be limited to projects, and to environments within them, by a
//! [`Scope`] (e.g. editor on `web/staging`, viewer on `web/production`). Every API handler
//! asks the one [`Actor::role_in`] through [`crate::extract::Caller`], which takes the
//! project and environment from the matched route, so no route can forget the scope.

use std::sync::Arc;

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

/// One grant of a scoped token: a role in a project, or in one environment of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Project key.
    pub project: String,
    /// Environment key; absent: every environment of the project, and the project itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The role the grant gives there.
    pub role: Role,
}

/// Where a token's role applies: everywhere (the default), or only where a [`Grant`] says.
///
/// In a scoped token, the role in an environment is the role of the grant naming that
/// environment, else of the grant naming its whole project. The role at project level
/// (flag definitions, kill, archive, metrics, the project itself) is the project-wide
/// grant's; a token with only environment grants in a project may read there (viewer).
/// Routes outside projects (listing or creating projects, the audit log, tokens, relay keys)
/// are for unscoped tokens only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Option<Arc<[Grant]>>);

impl Scope {
    /// No limit: the token's role applies everywhere.
    pub fn unrestricted() -> Self {
        Self(None)
    }

    /// Limited to `grants`.
    pub fn limited(grants: Vec<Grant>) -> Self {
        Self(Some(grants.into()))
    }

    /// The grants, or `None` when unrestricted.
    pub fn grants(&self) -> Option<&[Grant]> {
        self.0.as_deref()
    }

    /// Whether the scope limits the token at all.
    pub fn is_limited(&self) -> bool {
        self.0.is_some()
    }

    /// The role a token with `role` and this scope has on the resource named by `project`
    /// and `environment`; `None`: no access there at all.
    pub fn role_in(
        &self,
        role: Role,
        project: Option<&str>,
        environment: Option<&str>,
    ) -> Option<Role> {
        let Some(grants) = self.grants() else {
            return Some(role);
        };
        let project = project?;
        let in_project = || grants.iter().filter(|g| g.project == project);
        let whole = in_project()
            .filter(|g| g.environment.is_none())
            .map(|g| g.role)
            .max();
        let granted = match environment {
            Some(env) => in_project()
                .filter(|g| g.environment.as_deref() == Some(env))
                .map(|g| g.role)
                .max()
                .or(whole),
            // Environment grants alone let a token read the project it works in.
            None => whole.or_else(|| in_project().next().map(|_| Role::Viewer)),
        };
        // Never more than the token's own role.
        granted.map(|g| g.min(role))
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
    /// Where the role applies (unrestricted for tokens without grants).
    pub scope: Scope,
}

impl Actor {
    /// The server acting on its own behalf (bootstrap, the admin command line).
    pub fn system() -> Self {
        Self {
            token_id: None,
            name: "system".to_owned(),
            role: Role::Admin,
            scope: Scope::unrestricted(),
        }
    }

    /// Whether the actor's role includes `role` everywhere (a scoped token never does).
    pub fn can(&self, role: Role) -> bool {
        !self.scope.is_limited() && self.role >= role
    }

    /// The actor's role on a resource (`None`: no access); see [`Scope::role_in`].
    pub fn role_in(&self, project: Option<&str>, environment: Option<&str>) -> Option<Role> {
        self.scope.role_in(self.role, project, environment)
    }

    /// Whether the actor's role on a resource includes `role`.
    pub fn can_in(&self, role: Role, project: Option<&str>, environment: Option<&str>) -> bool {
        self.role_in(project, environment)
            .is_some_and(|r| r >= role)
    }
}

/// The digest under which a scoped token is stored: SHA-256 of the secret in a domain of its
/// own. A server from before scopes looks tokens up by the plain digest and so never finds a
/// scoped token (it refuses it, rather than granting its role everywhere) while old and new
/// servers run side by side during an upgrade.
pub fn hash_scoped_secret(secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"vexil-scoped-token\0");
    h.update(secret.as_bytes());
    h.finalize().to_vec()
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
            scope: Scope::unrestricted(),
        };
        assert!(editor.can(Role::Viewer) && editor.can(Role::Editor) && !editor.can(Role::Admin));
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
    }

    fn grant(project: &str, environment: Option<&str>, role: Role) -> Grant {
        Grant {
            project: project.into(),
            environment: environment.map(Into::into),
            role,
        }
    }

    #[test]
    fn scopes_pick_the_most_specific_grant() {
        let scope = Scope::limited(vec![
            grant("web", Some("staging"), Role::Editor),
            grant("web", Some("production"), Role::Viewer),
            grant("api", None, Role::Editor),
            grant("api", Some("production"), Role::Viewer),
        ]);
        let r = |p, e| scope.role_in(Role::Admin, p, e);
        assert_eq!(r(Some("web"), Some("staging")), Some(Role::Editor));
        assert_eq!(r(Some("web"), Some("production")), Some(Role::Viewer));
        // An environment with no grant in a project with only environment grants: nothing.
        assert_eq!(r(Some("web"), Some("dev")), None);
        // Project level with only environment grants: read.
        assert_eq!(r(Some("web"), None), Some(Role::Viewer));
        assert_eq!(r(Some("api"), None), Some(Role::Editor));
        assert_eq!(r(Some("api"), Some("dev")), Some(Role::Editor));
        // The environment grant wins over the project-wide one, even when lower.
        assert_eq!(r(Some("api"), Some("production")), Some(Role::Viewer));
        assert_eq!(r(Some("other"), None), None);
        assert_eq!(r(Some("other"), Some("staging")), None);
        // Outside projects, a scoped token has no role.
        assert_eq!(r(None, None), None);
        // A grant never lifts a token above its own role.
        assert_eq!(
            scope.role_in(Role::Viewer, Some("api"), None),
            Some(Role::Viewer)
        );
        assert_eq!(
            Scope::unrestricted().role_in(Role::Editor, None, None),
            Some(Role::Editor)
        );
        let scoped = Actor {
            scope,
            ..Actor::system()
        };
        assert!(!scoped.can(Role::Viewer));
        assert!(scoped.can_in(Role::Editor, Some("web"), Some("staging")));
        assert!(!scoped.can_in(Role::Editor, Some("web"), Some("production")));
    }

    #[test]
    fn scoped_digests_differ_from_plain_ones() {
        let s = generate_secret(API_TOKEN_PREFIX);
        assert_ne!(hash_scoped_secret(&s), hash_secret(&s));
        assert_eq!(hash_scoped_secret(&s).len(), 32);
    }
}
