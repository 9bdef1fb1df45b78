//! Getting listeners approved the way production does: a publisher key proposed by one
//! administrator and approved by another, then each listener published with `lockstep listener
//! publish` and approved.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{Api, lockstep_env, user_with_role};

/// `listeners/<name>/manifest.toml` in the repository.
pub fn manifest_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../listeners")
        .join(name)
        .join("manifest.toml")
}

/// Approves change request `id` as an approver does: looks at it, then approves exactly what
/// was shown (its `digest`), with `comment`.
pub async fn approval(api: &Api, token: &str, id: &str, comment: Option<&str>) -> super::Reply {
    let r = api.get(&format!("/v1/change-requests/{id}"), token).await;
    let digest = match r.status {
        200 => r.json()["digest"].clone(),
        _ => Value::Null,
    };
    api.post(
        &format!("/v1/change-requests/{id}/approve"),
        token,
        json!({"comment": comment, "digest": digest}),
    )
    .await
}

pub async fn approve(api: &Api, token: &str, id: &str) {
    let r = approval(api, token, id, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Makes users `publisher` and `approver` (role admin) and a trusted publisher key, then
/// publishes and approves each (listener name, component, association). `dir` holds the key.
pub async fn publish_approved(
    api: &Api,
    root: &str,
    dir: &Path,
    listeners: &[(&str, PathBuf, Value)],
) {
    let alice = user_with_role(api, root, "publisher", "admin").await;
    let bob = user_with_role(api, root, "approver", "admin").await;
    let key = dir.join("publisher.key");
    let (st, _, err) = lockstep_env(&["keygen", "--out", key.to_str().unwrap()], &[]);
    assert!(st.success(), "{err}");
    let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    let r = api
        .post(
            "/v1/publisher-keys",
            &alice,
            json!({"name": "ci", "public_key": public.trim(), "approver": "approver"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    approve(api, &bob, r.json()["id"].as_str().unwrap()).await;
    for (name, wasm, association) in listeners {
        let assoc = dir.join(format!("{name}.json"));
        std::fs::write(&assoc, association.to_string()).unwrap();
        // A test may put its own manifest beside the key (`NAME.manifest.toml`).
        let own = dir.join(format!("{name}.manifest.toml"));
        let manifest = if own.exists() {
            own
        } else {
            manifest_path(name)
        };
        let mut args = vec![
            "listener".to_string(),
            "publish".into(),
            wasm.to_str().unwrap().into(),
            "--manifest".into(),
            manifest.to_str().unwrap().into(),
            "--key".into(),
            key.to_str().unwrap().into(),
            "--server".into(),
            api.base.clone(),
            "--approver".into(),
            "approver".into(),
            "--association".into(),
            assoc.to_str().unwrap().into(),
        ];
        if let Some(ca) = &api.ca_cert {
            args.push("--ca-cert".into());
            args.push(ca.to_str().unwrap().into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (st, out, err) = lockstep_env(&args, &[("LOCKSTEP_TOKEN", &alice)]);
        assert!(st.success(), "{out}{err}");
        let chg = out
            .split_whitespace()
            .find(|w| w.starts_with("chg_"))
            .unwrap();
        approve(api, &bob, chg).await;
    }
}

/// change-freeze published and approved for `resource_type` (pre-reset, agentless, order 10,
/// vetoing DC1), and a vault-only Generic account `svc` on `gen1` in DC1; returns the account.
pub async fn change_freeze_in_dc1(
    api: &Api,
    root: &str,
    dir: &Path,
    resource_type: &str,
) -> String {
    publish_approved(
        api,
        root,
        dir,
        &[(
            "change-freeze",
            super::listeners::wasm_dir().join("change_freeze.wasm"),
            json!({"phases": ["pre-reset"], "modes": ["agentless"],
                "resource_types": [resource_type], "order": 10, "parameters": ["DC1"]}),
        )],
    )
    .await;
    let (rid, acc) =
        super::resource_with_account(api, root, "gen1", "Generic", "svc", "Old-Pass-123!").await;
    let r = api
        .call(
            "PATCH",
            &format!("/v1/resources/{rid}"),
            Some(root),
            Some(json!({"location": "DC1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    acc
}
