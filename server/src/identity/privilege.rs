//! Privileges and the built-in roles.
//!
//! A role is a set of privileges; every API operation needs exactly one privilege (declared on
//! its handler through `api::auth::Authorized<P>`), and [`super::Principal::require`] is the only
//! place that decides.

use serde::{Deserialize, Serialize};

/// What a caller may do. Kebab-case on the wire, matching the WIT names.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Privilege {
    /// Create users and issue or revoke other users' tokens.
    ManageUsers,
    /// Create and delete custom roles.
    ManageRoles,
    /// Upload, edit and delete listeners (each change still needs a second approver).
    ManageListeners,
    /// Approve or reject another administrator's listener change.
    ApproveListeners,
    /// Create, edit and delete resource types, resources and accounts.
    ManageResources,
    /// Read resources and accounts (never passwords).
    ViewResources,
    /// Trigger password resets.
    ResetPasswords,
    /// Read a stored password in plaintext (with a reason; audited).
    RetrievePasswords,
    /// Read the audit trail.
    ReadAudit,
}

impl Privilege {
    pub const ALL: [Privilege; 9] = [
        Privilege::ManageUsers,
        Privilege::ManageRoles,
        Privilege::ManageListeners,
        Privilege::ApproveListeners,
        Privilege::ManageResources,
        Privilege::ViewResources,
        Privilege::ResetPasswords,
        Privilege::RetrievePasswords,
        Privilege::ReadAudit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::ManageUsers => "manage-users",
            Privilege::ManageRoles => "manage-roles",
            Privilege::ManageListeners => "manage-listeners",
            Privilege::ApproveListeners => "approve-listeners",
            Privilege::ManageResources => "manage-resources",
            Privilege::ViewResources => "view-resources",
            Privilege::ResetPasswords => "reset-passwords",
            Privilege::RetrievePasswords => "retrieve-passwords",
            Privilege::ReadAudit => "read-audit",
        }
    }

    pub fn parse(s: &str) -> Option<Privilege> {
        Privilege::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A built-in role: name, what it is for, and its privileges.
pub struct BuiltinRole {
    pub name: &'static str,
    pub description: &'static str,
    pub privileges: &'static [Privilege],
}

use Privilege::*;

/// The built-in roles, after the reference products' role model.
pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        name: "privileged-admin",
        description: "Everything, including defining custom roles",
        privileges: &Privilege::ALL,
    },
    BuiltinRole {
        name: "admin",
        description: "Administers users, listeners, inventory and resets; cannot define roles",
        privileges: &[
            ManageUsers,
            ManageListeners,
            ApproveListeners,
            ManageResources,
            ViewResources,
            ResetPasswords,
            RetrievePasswords,
            ReadAudit,
        ],
    },
    BuiltinRole {
        name: "password-admin",
        description: "Manages resources and accounts, resets and retrieves their passwords",
        privileges: &[
            ManageResources,
            ViewResources,
            ResetPasswords,
            RetrievePasswords,
        ],
    },
    BuiltinRole {
        name: "auditor",
        description: "Reads the inventory and the audit trail; never a password",
        privileges: &[ViewResources, ReadAudit],
    },
    BuiltinRole {
        name: "password-user",
        description: "Reads the inventory and retrieves passwords",
        privileges: &[ViewResources, RetrievePasswords],
    },
];

/// Stored form of a privilege set: sorted, comma-separated.
/// The privileges of the built-in role called `name`, from the code (never from its row).
pub fn builtin(name: &str) -> Option<&'static [Privilege]> {
    BUILTIN_ROLES
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.privileges)
}

pub fn encode(privileges: &[Privilege]) -> String {
    let mut v: Vec<Privilege> = privileges.to_vec();
    v.sort();
    v.dedup();
    v.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
}

/// Privilege names for people, comma-separated in the given order (for messages).
pub fn names(privileges: &[Privilege]) -> String {
    privileges
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses the stored form, ignoring names this build does not know (a newer server may have
/// added some; an unknown privilege grants nothing).
pub fn decode(s: &str) -> Vec<Privilege> {
    s.split(',').filter_map(Privilege::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for p in Privilege::ALL {
            assert_eq!(Privilege::parse(p.as_str()), Some(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        assert_eq!(decode(&encode(&Privilege::ALL)).len(), Privilege::ALL.len());
    }
}
