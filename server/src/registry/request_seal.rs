//! A change request's seal and digest: what binds an approval to the change the approver saw.
//!
//! When a request is made, its content (what it changes, who asked, who must approve) is
//! attested with the master key ([`Vault::attest`]). An approval counts only when that seal
//! still holds, so a database writer who edits a pending request gets a refusal, not an
//! approval; and when the approver names the request's digest, the SHA-256 of the same
//! content that `GET /v1/change-requests/{id}` shows, so an edit between the approver's look
//! and the approval is refused too.

use sha2::{Digest, Sha256};

use crate::store::change_requests::ChangeRequestRow;
use crate::vault::Vault;

/// Everything an approver is shown and an approval applies, JSON-encoded so that no field
/// can run into the next.
fn binding(c: &ChangeRequestRow) -> String {
    let fields = serde_json::json!([
        c.id,
        c.kind,
        c.subject,
        c.listener_id,
        c.version_id,
        c.version,
        c.key_id,
        c.component_sha256,
        c.manifest_sha256,
        c.association,
        c.requested_by,
        c.approver,
        c.request_comment,
        c.created_at,
        c.reset_command,
    ]);
    match &c.public_key {
        // Requests made before they named the key keep the binding they were sealed with.
        None => format!("lockstep:change-request:v1\n{fields}"),
        Some(key) => format!(
            "lockstep:change-request:v2\n{fields}\n{}",
            serde_json::json!(key)
        ),
    }
}

/// The request's digest: hex SHA-256 of its content. Not secret; an approver passes it back.
pub fn digest(c: &ChangeRequestRow) -> String {
    hex::encode(Sha256::digest(binding(c).as_bytes()))
}

/// The seal a new request is stored with.
pub fn seal(vault: &Vault, c: &ChangeRequestRow) -> crate::error::Result<String> {
    vault.attest(&binding(c))
}

/// True when the request still holds the content it was sealed with.
pub fn holds(vault: &Vault, c: &ChangeRequestRow) -> bool {
    c.request_seal
        .as_deref()
        .is_some_and(|s| vault.check_attestation(&binding(c), s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChangeRequestRow {
        let mut c = super::super::new_request(
            super::super::ChangeKind::ResetCommand,
            "reset-command:Linux",
            "alice",
            "bob",
            None,
        );
        c.reset_command = Some(r#"{"program":"chpasswd"}"#.into());
        c
    }

    #[test]
    fn a_seal_holds_until_any_field_an_approver_sees_is_edited() {
        let vault = Vault::new(crate::vault::MasterKey::generate().unwrap());
        let mut c = request();
        c.request_seal = Some(seal(&vault, &c).unwrap());
        assert!(holds(&vault, &c));
        // Deciding changes status and decision fields, which the seal does not cover.
        let mut decided = c.clone();
        decided.status = "approved".into();
        decided.decided_by = Some("bob".into());
        assert!(holds(&vault, &decided));
        let edits: [fn(&mut ChangeRequestRow); 5] = [
            |c| c.reset_command = Some(r#"{"program":"/bin/sh"}"#.into()),
            |c| c.approver = "mallory".into(),
            |c| c.requested_by = "bob".into(),
            |c| c.association = Some("{}".into()),
            |c| c.public_key = Some("00".repeat(32)),
        ];
        for edit in edits {
            let mut e = c.clone();
            edit(&mut e);
            assert!(!holds(&vault, &e), "{e:?}");
            assert_ne!(digest(&e), digest(&c));
        }
        let mut unsealed = c.clone();
        unsealed.request_seal = None;
        assert!(!holds(&vault, &unsealed));
        // Another master key's seal does not hold.
        let other = Vault::new(crate::vault::MasterKey::generate().unwrap());
        assert!(!holds(&other, &c));
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        let mut a = request();
        a.requested_by = "al".into();
        a.approver = "icebob".into();
        let mut b = request();
        b.requested_by = "alice".into();
        b.approver = "bob".into();
        assert_ne!(digest(&a), digest(&b));
    }
}
