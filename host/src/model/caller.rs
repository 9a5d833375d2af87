//! Who sends a request: an API key's name and role (SPEC §6).

use super::UnknownName;
use std::str::FromStr;

/// What a caller may do; each role may do what the lower ones may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Starts instances, runs actions, posts events and reads.
    Client,
    /// A client that also deploys modules.
    Deployer,
    /// Everything: versions, migrations, overrides, diagnostics, admin-only actions.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Client, Role::Deployer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|role| role.as_str() == s).ok_or_else(|| UnknownName(s.into()))
    }
}

/// The caller of a request: its name is the `actor` in history and scopes its
/// idempotency keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// A caller's role is below what it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub required: Role,
    pub role: Role,
}

impl Caller {
    /// Everyone, on a server with no API keys.
    pub const ANONYMOUS: &str = "anonymous";
    /// The host itself: effects' results, timers, cancelled children.
    pub const HOST: &str = "switchyard";

    pub fn anonymous() -> Caller {
        Caller { name: Caller::ANONYMOUS.into(), role: Role::Admin }
    }

    pub fn host() -> Caller {
        Caller { name: Caller::HOST.into(), role: Role::Admin }
    }

    /// Refuses a caller below `required`.
    pub fn require(&self, required: Role) -> Result<(), Forbidden> {
        if self.role >= required { Ok(()) } else { Err(Forbidden { required, role: self.role }) }
    }
}

/// An API key as configured: its name, role and the SHA-256 of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}
