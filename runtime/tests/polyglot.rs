//! Listeners written in Python (componentize-py) and JavaScript (componentize-js), built by
//! `scripts/build-listeners.sh` and run through the same runtime and checks as Rust ones.
//! Their compiled form is cached under the target dir: an 18 MB component takes a while to
//! compile, and the cache is exactly what the server does too.

use std::sync::OnceLock;

use lockstep_runtime::{
    Error, HookOutcome, LoadedListener, Manifest, Phase, ResetEvent, RunContext, Runtime, Trigger,
};
use lockstep_testkit::listeners::{wasm, wasm_dir};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let cache = wasm_dir().join("../../../listener-cache");
        // The cache must be private (it holds native code); older runs may have left it 0755.
        if cache.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Runtime::new(Some(&cache)).expect("runtime")
    })
}

fn load(name: &str, manifest: &str) -> LoadedListener {
    runtime()
        .load(&wasm(name), Manifest::parse(manifest).unwrap())
        .unwrap()
}

fn event(trigger: Trigger, params: &[&str]) -> ResetEvent {
    ResetEvent {
        job_id: "job-poly".into(),
        trigger,
        resource_type: "Linux".into(),
        parameters: params.iter().map(|p| p.to_string()).collect(),
        delivery: None,
    }
}

fn login(name: &str) -> RunContext {
    RunContext {
        account: [("LOGINNAME".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

const PY_MANIFEST: &str = include_str!("../../listeners/maintenance-window-py/manifest.toml");
const JS_MANIFEST: &str = include_str!("../../listeners/protect-accounts-js/manifest.toml");

#[tokio::test]
async fn python_listener_runs_in_the_runtime() {
    let l = load("maintenance_window_py", PY_MANIFEST);
    // Built against the first contract on purpose: 0.1.0 components run on today's host.
    assert_eq!(l.contract(), lockstep_runtime::Contract::V0_1);
    let inv = l
        .run(
            Phase::PreReset,
            &event(Trigger::Manual, &["00:00-24:00"]),
            RunContext::default(),
        )
        .await;
    assert_eq!(inv.outcome, Ok(HookOutcome::Proceed), "{inv:?}");
    assert_eq!(inv.logs[0].message, "inside maintenance window 00:00-24:00");

    // A one-minute window twelve hours from now never contains now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let minute = ((now / 60) + 12 * 60) % (24 * 60);
    let window = format!(
        "{:02}:{:02}-{:02}:{:02}",
        minute / 60,
        minute % 60,
        (minute + 1) / 60,
        (minute + 1) % 60
    );
    let inv = l
        .run(
            Phase::PreReset,
            &event(Trigger::Scheduled, &[&window]),
            RunContext::default(),
        )
        .await;
    assert!(
        matches!(&inv.outcome, Ok(HookOutcome::Veto(r)) if r.starts_with("outside the maintenance windows")),
        "{inv:?}"
    );

    let inv = l
        .run(
            Phase::PreReset,
            &event(Trigger::Manual, &["9am-5pm"]),
            RunContext::default(),
        )
        .await;
    assert!(
        matches!(&inv.outcome, Ok(HookOutcome::Veto(r)) if r.contains("write HH:MM-HH:MM")),
        "{inv:?}"
    );
}

#[tokio::test]
async fn javascript_listener_runs_in_the_runtime() {
    let l = load("protect_accounts_js", JS_MANIFEST);
    let inv = l
        .run(
            Phase::PreReset,
            &event(Trigger::Scheduled, &["root", "breakglass"]),
            login("breakglass"),
        )
        .await;
    assert_eq!(
        inv.outcome,
        Ok(HookOutcome::Veto(
            "breakglass is protected from scheduled rotation; reset it by hand".into()
        )),
        "{inv:?}"
    );
    let inv = l
        .run(
            Phase::PreReset,
            &event(Trigger::Manual, &["breakglass"]),
            login("breakglass"),
        )
        .await;
    assert_eq!(inv.outcome, Ok(HookOutcome::Proceed), "{inv:?}");
    assert_eq!(
        inv.logs[0].message,
        "breakglass: protected, but this reset was asked for by hand"
    );
    let inv = l
        .run(
            Phase::PreReset,
            &event(Trigger::Bulk, &["breakglass"]),
            login("app"),
        )
        .await;
    assert_eq!(inv.outcome, Ok(HookOutcome::Proceed));
}

#[test]
fn interpreted_listeners_get_the_same_import_checks() {
    // Without the props grant, the JavaScript listener's import of props is refused at load.
    let stripped = JS_MANIFEST.replace("props = [\"LOGINNAME\"]", "");
    let err = runtime()
        .load(
            &wasm("protect_accounts_js"),
            Manifest::parse(&stripped).unwrap(),
        )
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::UngrantedImport { import, .. } if import.starts_with("lockstep:listener/props")),
        "{err}"
    );
}
