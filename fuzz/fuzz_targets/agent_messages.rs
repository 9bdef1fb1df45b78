//! The agent protocol's JSON messages (`lockstep_agent_protocol::messages`), both ways: what
//! an agent sends (enrollment, discovery, task results with listener reports) and what the
//! server sends (tasks, receipts), and the server's bounding of a listener report
//! (`agents::tasks::bound_listener_report`) before it is stored or audited.
//!
//! Checks, beyond not panicking:
//! - every message that parses writes back to JSON that parses and writes the same again;
//! - a password in a task or an enrollment token never shows in `Debug` output;
//! - a bounded listener report has a known outcome, at most 64 + 1 denials, a cut message and
//!   denials, no control characters or bidi overrides, and a finite time in [0, 1e9] ms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_agent_protocol::messages::{
    Discovery, DiscoveryResult, EnrollRequest, EnrollResponse, ListenerReport, ListenerWork,
    ResultReceipt, Task, TaskResult, Work,
};
use lockstep_runtime::limits::{MAX_DENIAL_TEXT, MAX_DENIALS, MAX_MESSAGE_BYTES};
use lockstep_server::agents::tasks::bound_listener_report;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What `report::truncate` appends to cut text: `… [N bytes cut]`.
const CUT_NOTE: usize = 32;

fuzz_target!(|data: &[u8]| {
    if let Some(req) = round_trip::<EnrollRequest>(data) {
        let shown = format!("{req:?}");
        let expected = format!(
            "EnrollRequest {{ token: [redacted], public_key: {:?}, hostname: {:?}, version: {:?} }}",
            req.public_key, req.hostname, req.version
        );
        assert_eq!(shown, expected, "the enrollment token shows in Debug");
    }
    round_trip::<EnrollResponse>(data);
    round_trip::<Discovery>(data);
    round_trip::<DiscoveryResult>(data);
    round_trip::<ResultReceipt>(data);
    if let Some(task) = round_trip::<Task>(data) {
        check_task(&task);
    }
    if let Some(result) = round_trip::<TaskResult>(data)
        && let Some(report) = result.listener
    {
        check_bounded(&report);
    }
    if let Some(report) = round_trip::<ListenerReport>(data) {
        check_bounded(&report);
    }
});

/// Parses `data` as `T`; when it parses, writes it back and checks the round trip.
fn round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let parsed: T = serde_json::from_slice(data).ok()?;
    let written = serde_json::to_value(&parsed).expect("a parsed message serializes");
    let again: T = serde_json::from_value(written.clone()).unwrap_or_else(|e| {
        panic!(
            "{} written back does not parse: {e}: {written}",
            std::any::type_name::<T>()
        )
    });
    let rewritten = serde_json::to_value(&again).expect("serializes again");
    assert!(
        same(&written, &rewritten),
        "{} does not round-trip:\n{written}\n{rewritten}",
        std::any::type_name::<T>()
    );
    Some(parsed)
}

/// JSON equality, floats within their last digit (serde_json parses a float's shortest text
/// to the nearest double but one, without its `float_roundtrip` feature).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn check_task(task: &Task) {
    let shown = format!("{:?}", task.work);
    let expected = match &task.work {
        Work::Reset { login_name, .. } => {
            format!("Reset {{ login_name: {login_name:?}, password: [redacted] }}")
        }
        Work::Verify { login_name, .. } => {
            format!("Verify {{ login_name: {login_name:?}, password: [redacted] }}")
        }
        Work::Listener(w) => return check_listener_work(w),
    };
    assert_eq!(shown, expected, "a task's password shows in Debug");
}

fn check_listener_work(w: &ListenerWork) {
    let shown = format!("{w:?}");
    for (name, password) in [
        ("old_password", &w.old_password),
        ("new_password", &w.new_password),
    ] {
        if password.is_some() {
            assert!(
                shown.contains(&format!("{name}: Some([redacted])")),
                "{name} shows in Debug"
            );
        }
    }
}

fn check_bounded(report: &ListenerReport) {
    let Ok(b) = bound_listener_report(report.clone()) else {
        return;
    };
    assert!(
        ["proceed", "veto", "success", "failure", "stopped"].contains(&b.outcome.as_str()),
        "{}",
        b.outcome
    );
    assert!(
        b.message.len() <= MAX_MESSAGE_BYTES + CUT_NOTE,
        "{}",
        b.message.len()
    );
    assert!(
        b.denials.len() <= MAX_DENIALS + 1,
        "{} denials kept",
        b.denials.len()
    );
    for text in b.denials.iter().chain([&b.message]) {
        assert!(text.len() <= (2 * MAX_DENIAL_TEXT + 64).max(MAX_MESSAGE_BYTES) + CUT_NOTE);
        assert!(
            !text.chars().any(|c| c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
            "control or bidi character kept: {text:?}"
        );
    }
    for d in &b.denials {
        assert!(
            d.len() <= 2 * MAX_DENIAL_TEXT + 64 + CUT_NOTE,
            "denial of {} bytes",
            d.len()
        );
    }
    assert!(b.elapsed_ms.is_finite() && (0.0..=1e9).contains(&b.elapsed_ms));
    if report.denials.len() <= MAX_DENIALS + 1 {
        assert_eq!(
            b.denials.len(),
            report.denials.len(),
            "an honest report lost denials"
        );
    }
}
