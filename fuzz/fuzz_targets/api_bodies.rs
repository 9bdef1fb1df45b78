//! The API's JSON request bodies, read the way the handlers read them (`ApiJson<T>`, i.e.
//! `axum::Json::<T>::from_bytes`), then the checks their domain functions make before any
//! database access.
//!
//! Input: one byte choosing the body type, then the body.
//!
//! Checks, beyond not panicking:
//! - a refused body becomes a 4xx problem document, never a 5xx;
//! - a password in a body never shows in `Debug` output;
//! - what validation accepts holds what it promises: a policy's generated passwords satisfy
//!   it; a valid template keeps `{password}` off the command line; a valid association is a
//!   subset of the manifest, the existing types and their allowed modes, and its canonical
//!   JSON parses back to it; an accepted e-mail address cannot carry a header; an accepted
//!   reason is trimmed, 3–500 characters, single-line; accepted agent networks are allowed
//!   to call from their own addresses; an accepted publisher key is its hex.
#![no_main]

use std::sync::OnceLock;

use axum::Json;
use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use lockstep_agent_protocol::messages::EnrollRequest;
use lockstep_runtime::manifest::Manifest;
use lockstep_server::Error;
use lockstep_server::agents::enrollment::NewEnrollmentToken;
use lockstep_server::agents::networks;
use lockstep_server::api::registry::DecisionBody;
use lockstep_server::identity::activation::ActivateInput;
use lockstep_server::identity::{NewRole, NewToken, NewUser, validate_email, validate_name};
use lockstep_server::inventory::accounts::{AccountPatch, NewAccount, RetrieveRequest};
use lockstep_server::inventory::fields::check_custom_fields;
use lockstep_server::inventory::resource_types::{NewResourceType, allowed_modes};
use lockstep_server::inventory::resources::{NewResource, ResourcePatch};
use lockstep_server::inventory::{accounts, resources};
use lockstep_server::registry::{
    Association, AssociationChange, NewPublisherKey, ResetCommandChange,
};
use lockstep_server::reset::jobs::{BulkResetRequest, ResetRequest, check_reason};
use lockstep_server::reset::policy::PasswordPolicy;
use lockstep_server::reset::scheduler::RotationSchedule;
use lockstep_server::reset::settings::ResetSettingsInput;
use lockstep_server::vault::Secret;
use serde::de::DeserializeOwned;

/// The resource types that exist in the association check.
const TYPES: [&str; 5] = ["Linux", "Windows", "Kubernetes", "CiscoIOS", "Generic"];

fn association_manifest() -> &'static Manifest {
    static M: OnceLock<Manifest> = OnceLock::new();
    M.get_or_init(|| {
        Manifest::parse(
            r#"
name = "fuzz-association"
version = "1.0.0"
phases = ["pre-reset", "post-reset"]
modes = ["agentless", "agent", "gateway"]
resource_types = ["Linux", "Windows", "Kubernetes", "Generic"]

[[parameters]]
name = "first"
description = "a required value"
required = true

[[parameters]]
name = "second"
description = "an optional value"
"#,
        )
        .expect("the association fixture parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 21 {
        0 => {
            if let Some(t) = read::<NewEnrollmentToken>(body) {
                check_networks(&t.allowed_networks);
            }
        }
        1 => {
            if let Some(r) = read::<EnrollRequest>(body) {
                assert!(format!("{r:?}").contains("token: [redacted]"));
            }
        }
        2 => {
            if let Some(u) = read::<NewUser>(body) {
                check_user(&u);
            }
        }
        3 => {
            let _ = read::<ActivateInput>(body);
        }
        4 => {
            let _ = read::<NewToken>(body);
        }
        5 => {
            let _ = read::<NewRole>(body);
        }
        6 => {
            let _ = read::<NewResourceType>(body);
        }
        7 => {
            if let Some(c) = read::<ResetCommandChange>(body)
                && let Some(command) = c.reset_command
                && command.problems("reset_command").is_empty()
            {
                assert!(!command.args.iter().any(|a| a.contains("{password}")));
                assert!(command.stdin.contains("{password}"));
            }
        }
        8 => {
            if let Some(r) = read::<NewResource>(body) {
                check_custom(&r.custom_fields, resources::PROPERTY_KEYS);
            }
        }
        9 => {
            if let Some(p) = read::<ResourcePatch>(body)
                && let Some(custom) = &p.custom_fields
            {
                check_custom(custom, resources::PROPERTY_KEYS);
            }
        }
        10 => {
            if let Some(a) = read::<NewAccount>(body) {
                check_hidden(&format!("{a:?}"), &a.password);
                check_custom(&a.custom_fields, accounts::PROPERTY_KEYS);
            }
        }
        11 => {
            if let Some(p) = read::<AccountPatch>(body)
                && let Some(custom) = &p.custom_fields
            {
                check_custom(custom, accounts::PROPERTY_KEYS);
            }
        }
        12 => {
            if let Some(r) = read::<RetrieveRequest>(body) {
                check_reason_rule(&r.reason);
            }
        }
        13 => {
            if let Some(k) = read::<NewPublisherKey>(body)
                && let Ok(key) = lockstep_runtime::signature::parse_public_key(&k.public_key)
            {
                let hex_text = k.public_key.trim().to_ascii_lowercase();
                assert_eq!(hex::encode(key.as_bytes()), hex_text);
            }
        }
        14 => {
            if let Some(c) = read::<AssociationChange>(body) {
                check_association(&c.association);
            }
        }
        15 => {
            let _ = read::<DecisionBody>(body);
        }
        16 => {
            if let Some(r) = read::<ResetRequest>(body) {
                if let Some(p) = &r.password {
                    check_hidden(&format!("{r:?}"), p);
                }
                check_reason_rule(&r.reason);
            }
        }
        17 => {
            if let Some(r) = read::<BulkResetRequest>(body) {
                if let Some(p) = &r.password {
                    check_hidden(&format!("{r:?}"), p);
                }
                check_reason_rule(&r.reason);
            }
        }
        18 => {
            let _ = read::<ResetSettingsInput>(body);
        }
        19 => {
            if let Some(p) = read::<PasswordPolicy>(body) {
                check_policy(&p);
            }
        }
        _ => {
            let _ = read::<RotationSchedule>(body);
        }
    }
});

/// The body as `ApiJson<T>` reads it; a refusal must be a 4xx problem.
fn read<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    match Json::<T>::from_bytes(body) {
        Ok(Json(t)) => Some(t),
        Err(rejection) => {
            let response = Error::from(rejection).into_response();
            let status = response.status();
            assert!(status.is_client_error(), "a bad body answered {status}");
            let content_type = response.headers().get("content-type").cloned();
            assert_eq!(
                content_type.as_ref().and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
            None
        }
    }
}

/// `Debug` of a body shows its password as `Secret([redacted])`.
fn check_hidden(shown: &str, password: &Secret) {
    assert_eq!(format!("{password:?}"), "Secret([redacted])");
    assert!(
        shown.contains("password: Secret([redacted])")
            || shown.contains("password: Some(Secret([redacted]))"),
        "{shown}"
    );
}

fn check_user(u: &NewUser) {
    if validate_name("name", &u.name).is_none() {
        assert!((1..=64).contains(&u.name.len()));
        assert!(
            u.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        );
    }
    if let Some(email) = &u.email
        && validate_email("email", email).is_none()
    {
        // Nothing that could end a mail header or start another address.
        assert_eq!(email.matches('@').count(), 1, "{email:?}");
        assert!(
            email
                .chars()
                .all(|c| c.is_ascii_graphic() && !"<>,;\"".contains(c)),
            "{email:?}"
        );
        assert!(email.len() <= 254);
    }
}

fn check_reason_rule(reason: &str) {
    if let Ok(r) = check_reason(reason) {
        assert_eq!(r, reason.trim());
        assert!((3..=500).contains(&r.chars().count()));
        assert!(!r.chars().any(char::is_control), "{r:?}");
    }
}

fn check_custom(fields: &std::collections::BTreeMap<String, String>, reserved: &[&str]) {
    let mut problems = Vec::new();
    check_custom_fields(fields, reserved, &mut problems);
    if problems.is_empty() {
        assert!(fields.len() <= 50);
        for (k, v) in fields {
            assert!(!reserved.iter().any(|r| r.eq_ignore_ascii_case(k)), "{k}");
            assert!((1..=64).contains(&k.chars().count()) && !k.chars().any(char::is_control));
            assert!(v.chars().count() <= 1024);
        }
    }
    for p in &problems {
        assert!(p.field.starts_with("custom_fields"), "{p:?}");
    }
}

fn check_networks(entries: &[String]) {
    let Ok(nets) = networks::parse("allowed_networks", entries) else {
        return;
    };
    assert_eq!(nets.len(), entries.len());
    // Stored as enrollment stores them; each range lets its own first address call.
    let stored: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
    let stored = serde_json::to_string(&stored).expect("strings serialize");
    for n in &nets {
        let ip = n.network().to_string();
        assert!(networks::allows(&stored, Some(&ip)), "{n} refuses {ip}");
    }
    assert_eq!(networks::allows(&stored, None), nets.is_empty());
}

fn check_association(a: &Association) {
    let manifest = association_manifest();
    let existing: Vec<String> = TYPES.iter().map(|t| t.to_string()).collect();
    let problems = a.problems(manifest, &existing);
    let canonical = a.canonical_json();
    let back = Association::parse_stored(&canonical).expect("canonical JSON parses");
    assert_eq!(
        back,
        a.clone().normalized(),
        "association does not round-trip"
    );
    assert_eq!(back.canonical_json(), canonical);
    if !problems.is_empty() {
        return;
    }
    let phases: Vec<&str> = manifest.phases().iter().map(|p| p.as_str()).collect();
    let modes: Vec<&str> = manifest.modes().iter().map(|m| m.as_str()).collect();
    assert!(!a.phases.is_empty() && a.phases.iter().all(|p| phases.contains(&p.as_str())));
    assert!(!a.modes.is_empty() && a.modes.iter().all(|m| modes.contains(&m.as_str())));
    assert!(!a.resource_types.is_empty());
    for t in &a.resource_types {
        assert!(
            existing.contains(t) && manifest.resource_types().contains(t),
            "{t}"
        );
        let allowed = allowed_modes(t);
        for m in &a.modes {
            assert!(allowed.iter().any(|x| x.as_str() == m), "mode {m} for {t}");
        }
    }
    assert!((1..=1000).contains(&a.order));
    assert!(
        !a.parameters.is_empty(),
        "the fixture requires its first parameter"
    );
}

fn check_policy(p: &PasswordPolicy) {
    if let Err(e) = p.validate() {
        assert!(
            matches!(e, Error::Validation(ref v) if !v.is_empty()),
            "{e}"
        );
        return;
    }
    for _ in 0..3 {
        let pw = p.generate().expect("a valid policy generates");
        let n = pw.expose().chars().count() as i64;
        assert_eq!(n, p.generated_length);
        let problems = p.problems(&pw);
        assert!(
            problems.is_empty(),
            "a generated password breaks its policy: {problems:?}"
        );
    }
}
