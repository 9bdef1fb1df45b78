//! The Active Directory connector end to end: a real `lockstep` server resets users of a
//! Samba AD domain controller (Debian's packages, provisioned per test process, one DC per
//! test on a loopback address of its own) over LDAPS, and every outcome is checked by binding
//! with an independent client (OpenLDAP's), in the vault, in the audit trail and in the job.

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::resets::{stored_password, wait_finished};
use common::samba_dc::{self, SambaDc};
use common::{Api, Server};
use serde_json::{Value, json};

const START_PW: &str = "Start-Pw-1x";

/// A WindowsDomain resource for `dc` with the domain's administrator and `logins`; returns
/// (resource id, admin account id, [(account id, login)]).
async fn resource_for(
    api: &Api,
    token: &str,
    dc: &SambaDc,
    name: &str,
    logins: &[&str],
) -> (String, String, Vec<(String, String)>) {
    let made = common::db_resource::register(
        api,
        token,
        (name, "WindowsDomain", &dc.url()),
        (samba_dc::ADMIN, samba_dc::ADMIN_PW),
        logins,
        START_PW,
    )
    .await;
    let r = api
        .call(
            "PATCH",
            &format!("/v1/resources/{}", made.0),
            Some(token),
            Some(json!({"domain_name": samba_dc::DOMAIN})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    made
}

async fn reset(api: &Api, token: &str, account: &str, body: Value) -> Value {
    let mut body = body;
    body["reason"] = json!("connector test");
    let r = api
        .post(&format!("/v1/accounts/{account}/reset"), token, body)
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_finished(api, token, &id, Duration::from_secs(90)).await
}

async fn bulk(api: &Api, token: &str, resources: &[&str]) -> String {
    let r = api
        .post(
            "/v1/reset-jobs",
            token,
            json!({"resource_ids": resources, "reason": "rotate the domain's accounts"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json()["id"].as_str().unwrap().to_string()
}

fn item<'j>(job: &'j Value, account: &str) -> &'j Value {
    job["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["account_id"] == account)
        .unwrap()
}

fn detail(job: &Value) -> String {
    job["items"][0]["detail"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn domain_users_get_verified_passwords_over_ldaps() {
    let dc = SambaDc::start();
    dc.create_users(&["svc1", "svc2", "svc3", "svc4"], START_PW);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let t = api
        .get("/v1/resource-types/WindowsDomain", &root)
        .await
        .json();
    assert_eq!(t["reset_method"], "active-directory", "{t}");
    // A login written to widen the search filter (to every svc account), beside a
    // sAMAccountName, a user principal name and a distinguished name.
    let hostile = "svc*";
    let upn = format!("svc3@{}", samba_dc::DOMAIN);
    let dn = format!("CN=svc4,{}", samba_dc::USERS);
    let logins = ["svc1", "svc2", upn.as_str(), dn.as_str(), hostile];
    let (rid, _, accounts) = resource_for(&api, &root, &dc, "dc1", &logins).await;

    let started = Instant::now();
    let id = bulk(&api, &root, &[&rid]).await;
    let job = wait_finished(&api, &root, &id, Duration::from_secs(90)).await;
    eprintln!("{} accounts in {:?}", logins.len(), started.elapsed());
    assert_eq!(job["progress"]["succeeded"], 4, "{job}");
    let refused = item(&job, &accounts[4].0);
    assert_eq!(refused["state"], "failed", "{job}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("no user account"),
        "the filter matched nothing, never every user: {job}"
    );

    let mut secrets = vec![samba_dc::ADMIN_PW.to_string()];
    for ((account, _), user) in accounts.iter().zip(["svc1", "svc2", "svc3", "svc4"]) {
        let new = stored_password(&api, &root, account).await;
        assert_ne!(new, START_PW);
        assert_eq!(dc.logs_in(user, &new), Some(true), "{user}: the new one");
        assert_eq!(
            dc.logs_in(user, START_PW),
            Some(false),
            "{user}: not the old"
        );
        secrets.push(new);
    }
    let settings = api
        .get(&format!("/v1/resources/{rid}/reset-settings"), &root)
        .await
        .json();
    assert_eq!(
        settings["tls_certificate"],
        json!(dc.certificate_fingerprint),
        "pinned at first use: {settings}"
    );
    let audit = api.get("/v1/audit?limit=500", &root).await.text;
    let job_text = job.to_string();
    let log = server.log_text();
    for secret in secrets.iter().map(String::as_str).chain([START_PW]) {
        assert!(!log.contains(secret), "a secret in the server log");
        assert!(!audit.contains(secret), "a secret in the audit trail");
        assert!(!job_text.contains(secret), "a secret in the job");
    }
}

#[tokio::test]
async fn failures_change_nothing_and_say_why() {
    let dc = SambaDc::start();
    dc.create_users(&["app", "plain"], START_PW);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, admin, accounts) = resource_for(&api, &root, &dc, "dc1", &["app", "ghost"]).await;
    let (app, ghost) = (&accounts[0].0, &accounts[1].0);
    let failed = |job: &Value| assert_eq!(job["items"][0]["state"], "failed", "{job}");

    // No such user: the search finds nothing, nothing is sent.
    let job = reset(&api, &root, ghost, json!({})).await;
    failed(&job);
    assert!(detail(&job).contains("no user account"), "{job}");

    // The vault's admin password is wrong: the bind is refused, nothing sent.
    let r = api
        .post(
            &format!("/v1/accounts/{admin}/reset"),
            &root,
            json!({"password": "Not-The-Admin-Pw-9", "apply_remote": false, "reason": "test"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let vault_only = r.json()["id"].as_str().unwrap().to_string();
    wait_finished(&api, &root, &vault_only, Duration::from_secs(30)).await;
    let job = reset(&api, &root, app, json!({})).await;
    failed(&job);
    assert!(
        detail(&job).contains("refused the password of 'Administrator'"),
        "{job}"
    );
    assert_eq!(dc.logs_in("app", START_PW), Some(true));

    // An admin that may not reset passwords: the directory refuses, nothing changes.
    let plain = api
        .post(
            &format!("/v1/resources/{rid}/accounts"),
            &root,
            json!({"login_name": "plain", "password": START_PW}),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let settings = format!("/v1/resources/{rid}/reset-settings");
    let put = |body: Value| api.call("PUT", &settings, Some(&root), Some(body));
    assert_eq!(put(json!({"admin_account_id": plain})).await.status, 200);
    let job = reset(&api, &root, app, json!({})).await;
    failed(&job);
    assert!(detail(&job).contains("nothing changed"), "{job}");
    assert_eq!(dc.logs_in("app", START_PW), Some(true));

    // Another certificate pinned: the handshake fails before any bind.
    let other = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let r = put(json!({"admin_account_id": plain, "tls_certificate": other})).await;
    assert_eq!(r.status, 200);
    let job = reset(&api, &root, app, json!({})).await;
    failed(&job);
    assert!(detail(&job).contains("TLS certificate"), "{job}");
    assert!(detail(&job).contains(&dc.certificate_fingerprint), "{job}");

    // The DC is down: nothing reached it.
    let r = put(json!({"admin_account_id": plain, "tls_certificate": null})).await;
    assert_eq!(r.status, 200);
    dc.kill();
    let job = reset(&api, &root, app, json!({})).await;
    failed(&job);
    assert!(detail(&job).contains("cannot reach"), "{job}");
    dc.start_again();
    assert_eq!(dc.logs_in("app", START_PW), Some(true));

    // Plain LDAP is refused when the resource is saved; a resource without its domain fails
    // with the fix.
    let r = api
        .post(
            "/v1/resources",
            &root,
            json!({"name": "dc2", "resource_type": "WindowsDomain", "url": "ldap://127.0.0.1"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("plain LDAP"), "{}", r.text);
    let (_, _, nodomain) = common::db_resource::register(
        &api,
        &root,
        ("dc3", "WindowsDomain", &dc.url()),
        (samba_dc::ADMIN, samba_dc::ADMIN_PW),
        &["app"],
        START_PW,
    )
    .await;
    let job = reset(&api, &root, &nodomain[0].0, json!({})).await;
    failed(&job);
    assert!(detail(&job).contains("needs its domain_name"), "{job}");
}

#[tokio::test]
async fn a_bind_proves_a_password_only_to_a_pinned_dc() {
    use lockstep_server::reset::connector::active_directory::{
        ActiveDirectoryConnector, AdEndpoint,
    };
    use lockstep_server::reset::connector::{Connector, TargetFailure, Timeouts};
    use lockstep_server::vault::Secret;
    let dc = SambaDc::start();
    dc.create_users(&["app"], START_PW);
    let connector = |pin: Option<String>| ActiveDirectoryConnector {
        endpoint: AdEndpoint::new(Some(&dc.url()), &dc.ip, Some(samba_dc::DOMAIN), pin).unwrap(),
        timeouts: Timeouts::default(),
    };
    let right = Secret::new(START_PW.into());
    let pinned = connector(Some(dc.certificate_fingerprint.clone()));
    assert_eq!(pinned.accepts("app", &right).await, Ok(true));
    assert_eq!(
        pinned
            .accepts("app", &Secret::new("Wrong-Pw-1x".into()))
            .await,
        Ok(false)
    );
    // An empty password would be an unauthenticated bind: never sent, never proof.
    assert!(matches!(
        pinned.accepts("app", &Secret::new(String::new())).await,
        Err(TargetFailure::Unprovable { .. })
    ));
    // Without the pin, anyone in the DC's place could answer "bound".
    match connector(None).accepts("app", &right).await {
        Err(TargetFailure::Unprovable { reason, .. }) => {
            assert!(reason.contains("no TLS certificate is pinned"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // Another certificate pinned: refused in the handshake.
    let other = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string();
    assert!(matches!(
        connector(Some(other)).accepts("app", &right).await,
        Err(TargetFailure::CertificateChanged { .. })
    ));
}

#[tokio::test]
async fn a_policy_refusal_regenerates_then_asks_a_person() {
    let dc = SambaDc::start();
    dc.create_users(&["app", "other"], START_PW);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, admin, accounts) = resource_for(&api, &root, &dc, "dc1", &["app", "other"]).await;
    // Lower-case letters only: AD's complexity rule (three kinds of characters) refuses
    // every password this policy generates.
    let r = api
        .post(
            "/v1/password-policies",
            &root,
            json!({"name": "lower-only", "require_uppercase": false, "require_digits": false,
                   "require_symbols": false,
                   "excluded_characters": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&()*+,-./;<=>?@[]^_{|}~"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = api
        .call(
            "PUT",
            &format!("/v1/resources/{rid}/reset-settings"),
            Some(&root),
            Some(json!({"admin_account_id": admin, "password_policy": "lower-only"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let job = reset(&api, &root, &accounts[0].0, json!({})).await;
    let it = &job["items"][0];
    assert_eq!(it["state"], "parked", "{job}");
    assert_eq!(
        it["attempts"], 3,
        "three generated passwords were tried: {job}"
    );
    assert!(
        detail(&job).contains("refused 3 generated passwords") && detail(&job).contains("0000052D"),
        "{job}"
    );
    assert_eq!(dc.logs_in("app", START_PW), Some(true), "nothing changed");
    assert_eq!(stored_password(&api, &root, &accounts[0].0).await, START_PW);

    // A password given by a person is not replaced: it fails, saying why.
    let job = reset(
        &api,
        &root,
        &accounts[1].0,
        json!({"password": "onlylowercase"}),
    )
    .await;
    assert_eq!(job["items"][0]["state"], "failed", "{job}");
    assert!(detail(&job).contains("by its policy"), "{job}");
    assert_eq!(dc.logs_in("other", START_PW), Some(true));
}

#[tokio::test]
async fn a_domain_controller_killed_mid_bulk_loses_no_password() {
    let names: Vec<String> = (1..=30).map(|i| format!("u{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let dc = SambaDc::start();
    dc.create_users(&names, START_PW);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, _, accounts) = resource_for(&api, &root, &dc, "dc1", &names).await;
    let id = bulk(&api, &root, &[&rid]).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let j = api.get(&format!("/v1/reset-jobs/{id}"), &root).await.json();
        let p = &j["progress"];
        if p["succeeded"].as_u64().unwrap_or(0) >= 3 {
            eprintln!("killed the DC at {p}");
            break;
        }
        assert!(j["status"] != "finished", "finished before the kill: {p}");
        assert!(Instant::now() < deadline, "no progress: {p}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    dc.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    dc.start_again();
    let job = wait_finished(&api, &root, &id, Duration::from_secs(240)).await;
    eprintln!("after the restart: {}", job["progress"]);
    for (account, login) in &accounts {
        let state = item(&job, account)["state"].as_str().unwrap().to_string();
        let stored = stored_password(&api, &root, account).await;
        match state.as_str() {
            "done" | "failed" => assert_eq!(
                dc.logs_in(login, &stored),
                Some(true),
                "{login} ({state}): the stored password binds"
            ),
            "out-of-sync" => {
                let r = api
                    .post(
                        &format!("/v1/accounts/{account}/resolve"),
                        &root,
                        json!({"reason": "the DC is back"}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{login}: {}", r.text);
                let stored = stored_password(&api, &root, account).await;
                assert_eq!(dc.logs_in(login, &stored), Some(true), "{login}");
            }
            other => panic!("{login}: {other}: {job}"),
        }
    }
}

#[tokio::test]
async fn listeners_run_around_domain_resets_and_a_veto_touches_nothing() {
    let dc = SambaDc::start();
    dc.create_users(&["app_a", "app_b"], START_PW);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    let freeze = std::fs::read_to_string(common::registry::manifest_path("change-freeze"))
        .unwrap()
        .replace(
            r#"resource_types = ["Linux", "Windows", "Generic"]"#,
            r#"resource_types = ["WindowsDomain"]"#,
        );
    assert!(freeze.contains("WindowsDomain"));
    std::fs::write(dir.path().join("change-freeze.manifest.toml"), freeze).unwrap();
    let probe = common::listeners::probe_manifest(
        "ad-probe",
        "0.2.0",
        "agentless",
        "WindowsDomain",
        &["new-password"],
        &[("behaviour", "what the probe does"), ("attempts", "n")],
    );
    std::fs::write(dir.path().join("ad-probe.manifest.toml"), probe).unwrap();
    let wasm = common::listeners::wasm_dir();
    common::registry::publish_approved(
        &api,
        &root,
        dir.path(),
        &[
            (
                "change-freeze",
                wasm.join("change_freeze.wasm"),
                json!({"phases": ["pre-reset"], "modes": ["agentless"],
                       "resource_types": ["WindowsDomain"], "order": 10, "parameters": ["DC1"]}),
            ),
            (
                "ad-probe",
                wasm.join("test_probe.wasm"),
                json!({"phases": ["post-reset"], "modes": ["agentless"],
                       "resource_types": ["WindowsDomain"], "order": 20,
                       "parameters": ["retry-until", "1"]}),
            ),
        ],
    )
    .await;
    let (rid_a, _, a) = resource_for(&api, &root, &dc, "dc-a", &["app_a"]).await;
    let (rid_b, _, b) = resource_for(&api, &root, &dc, "dc-b", &["app_b"]).await;
    let r = api
        .call(
            "PATCH",
            &format!("/v1/resources/{rid_b}"),
            Some(&root),
            Some(json!({"location": "DC1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = bulk(&api, &root, &[&rid_a, &rid_b]).await;
    let job = wait_finished(&api, &root, &id, Duration::from_secs(90)).await;
    assert_eq!(item(&job, &a[0].0)["state"], "done", "{job}");
    assert_eq!(item(&job, &b[0].0)["state"], "vetoed", "{job}");
    assert_eq!(
        dc.logs_in("app_b", START_PW),
        Some(true),
        "vetoed: untouched"
    );
    let new = stored_password(&api, &root, &a[0].0).await;
    assert_eq!(dc.logs_in("app_a", &new), Some(true));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api
            .get(&format!("/v1/deliveries?account_id={}", a[0].0), &root)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let d = r.json()["items"][0].clone();
        if d["state"] == "delivered" {
            assert_eq!(d["listener"], "ad-probe", "{d}");
            assert!(!d.to_string().contains(&new), "no password in a delivery");
            break;
        }
        assert!(Instant::now() < deadline, "never delivered: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
