//! The listener manifest (`Manifest::parse`): any text an uploader sends as `manifest.toml`.
//!
//! Checks, beyond not panicking:
//! - a refusal is a located syntax error or a non-empty list of field problems;
//! - a manifest that parses means the same after a round trip through its canonical bytes:
//!   those bytes, written back as TOML, parse to a manifest with the same canonical bytes
//!   (what is signed and approved is a fixed point);
//! - what it grants is what its queries allow: every network grant, every property, and
//!   every exec rule run with its literal arguments; a program it does not name is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_runtime::Error;
use lockstep_runtime::limits::{MAX_ARG_BYTES, MAX_ARGS};
use lockstep_runtime::manifest::{Denial, ExecRule, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Manifest::parse(text) {
        Ok(manifest) => check_valid(&manifest),
        Err(Error::Syntax {
            line,
            column,
            message,
        }) => {
            assert!(
                line >= 1 && line <= text.matches('\n').count() + 1,
                "line {line}"
            );
            assert!(column >= 1, "column {column}");
            assert!(!message.is_empty(), "a syntax error without a message");
        }
        Err(Error::Invalid(problems)) => {
            assert!(!problems.is_empty(), "Invalid with no problem");
            for p in &problems {
                assert!(!p.field.is_empty() && !p.problem.is_empty(), "{p:?}");
            }
        }
        Err(other) => panic!("Manifest::parse answered with a non-manifest error: {other}"),
    }
});

fn check_valid(m: &Manifest) {
    let canonical = m.canonical_bytes();
    let digest = m.digest();
    assert_eq!(digest.len(), 64);
    assert_eq!(m.digest(), digest, "the digest is not deterministic");

    // The canonical bytes, as TOML, are the same manifest.
    let mut value: serde_json::Value =
        serde_json::from_slice(&canonical).expect("canonical bytes are JSON");
    let object = value
        .as_object_mut()
        .expect("canonical bytes are an object");
    if object.get("description") == Some(&serde_json::Value::Null) {
        object.remove("description");
    }
    let toml_text = toml::to_string(&value).expect("canonical manifest as TOML");
    let again = Manifest::parse(&toml_text)
        .unwrap_or_else(|e| panic!("canonical form does not parse: {e}\n{toml_text}"));
    assert_eq!(
        String::from_utf8_lossy(&again.canonical_bytes()),
        String::from_utf8_lossy(&canonical),
        "canonical bytes are not a fixed point"
    );

    let caps = m.capabilities();
    let endpoints = m.endpoints();
    assert_eq!(
        endpoints.len(),
        caps.network.len(),
        "a network grant that validated does not parse"
    );
    for e in &endpoints {
        assert!(m.allows_network(e.scheme, &e.host, e.port), "{e}");
        let upper = e.host.to_ascii_uppercase();
        assert!(m.allows_network(e.scheme, &upper, e.port), "{e}, uppercase");
    }
    for p in &caps.props {
        assert!(m.allows_prop(p), "{p}");
    }
    for rule in &caps.exec {
        if let Some(args) = literal_args(rule) {
            let r = m.exec_allowed(&rule.program, &args);
            assert!(
                r.is_ok(),
                "exec rule {rule:?} refuses its own arguments: {r:?}"
            );
        }
    }
    for rule in &caps.target_exec {
        if let Some(args) = literal_args(rule) {
            let r = m.target_exec_allowed(&rule.program, &args);
            assert!(
                r.is_ok(),
                "target_exec rule {rule:?} refuses its own arguments: {r:?}"
            );
        }
    }
    let unnamed = "/nonexistent/not-granted";
    assert!(matches!(
        m.exec_allowed(unnamed, &[] as &[&str]),
        Err(Denial::Program { .. })
    ));
    let limits = m.limits();
    assert!(limits.timeout_ms >= 1 && limits.memory_mib >= 1 && limits.output_kib >= 1);
}

/// The rule's arguments when each is a literal a host call may pass as it is.
fn literal_args(rule: &ExecRule) -> Option<Vec<&str>> {
    let usable = rule.args.len() <= MAX_ARGS
        && rule.program.len() <= MAX_ARG_BYTES
        && rule
            .args
            .iter()
            .all(|a| !a.contains('*') && a.len() <= MAX_ARG_BYTES);
    usable.then(|| rule.args.iter().map(String::as_str).collect())
}
