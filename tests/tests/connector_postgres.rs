//! The PostgreSQL connector end to end: a real `lockstep` server resets roles of a private
//! PostgreSQL cluster (`initdb`, scram-sha-256 for every TCP login, TLS on, every statement
//! logged), and every outcome is checked by logging in with an independent client (sqlx),
//! in the vault, in the audit trail and in the database server's own log.

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::pg_cluster::PgCluster;
use common::resets::{stored_password, wait_finished};
use common::{Api, Server};
use serde_json::{Value, json};

const ADMIN: &str = "lockstep_admin";
const ADMIN_PW: &str = "Admin-Pw-1";
const START_PW: &str = "Start-Pw-1";

/// A role that may log in with [`START_PW`]; `name` is quoted, whatever it holds.
/// The admin is given ADMIN OPTION on it, which PostgreSQL 16 and later require of a
/// CREATEROLE admin for roles it did not create.
fn create_role(pg: &PgCluster, name: &str) {
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    pg.sql(&format!("CREATE ROLE {quoted} LOGIN PASSWORD '{START_PW}'"));
    pg.sql(&format!("GRANT {quoted} TO {ADMIN} WITH ADMIN OPTION"));
}

/// A PostgreSQL resource for `pg` with the admin role (CREATEROLE, not superuser) and
/// `logins` as accounts; returns (resource id, admin account id, [(account id, login)]).
async fn resource_for(
    api: &Api,
    token: &str,
    pg: &PgCluster,
    name: &str,
    logins: &[&str],
) -> (String, String, Vec<(String, String)>) {
    pg.register(api, token, name, (ADMIN, ADMIN_PW), logins, START_PW)
        .await
}

/// A cluster with the admin role; `roles` log in with [`START_PW`].
fn cluster_with(roles: &[&str]) -> PgCluster {
    let pg = PgCluster::start();
    pg.sql(&format!(
        "CREATE ROLE {ADMIN} LOGIN CREATEROLE PASSWORD '{ADMIN_PW}'"
    ));
    for r in roles {
        create_role(&pg, r);
    }
    pg
}

/// Logins the cluster logged, successful or not.
fn login_attempts(log: &str) -> usize {
    log.matches("connection authorized").count()
        + log.matches("password authentication failed").count()
}

async fn reset(api: &Api, token: &str, account: &str) -> Value {
    let r = api
        .post(
            &format!("/v1/accounts/{account}/reset"),
            token,
            json!({"reason": "connector test"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_finished(api, token, &id, Duration::from_secs(60)).await
}

#[tokio::test]
async fn roles_get_verified_passwords_and_the_server_only_ever_sees_verifiers() {
    // A role name built to break out of a quoted identifier, beside plain ones.
    let hostile = r#"app"; DROP ROLE app1; --"#;
    let roles = ["app1", "app2", "App3", hostile];
    let pg = cluster_with(&roles);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let t = api.get("/v1/resource-types/PostgreSQL", &root).await.json();
    assert_eq!(t["reset_method"], "postgres", "{t}");
    // Every statement comes back to the admin's session as a notice too (with its
    // verifier): a server's notices never reach Lockstep's log.
    pg.sql(&format!("ALTER ROLE {ADMIN} SET client_min_messages = log"));
    let (rid, _, accounts) = resource_for(&api, &root, &pg, "db1", &roles).await;

    let started = Instant::now();
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"resource_ids": [rid], "reason": "rotate the database roles"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let job = wait_finished(&api, &root, &id, Duration::from_secs(60)).await;
    eprintln!(
        "{} roles reset and verified in {:?}",
        roles.len(),
        started.elapsed()
    );
    assert_eq!(job["progress"]["succeeded"], roles.len(), "{job}");

    let mut new_passwords = Vec::new();
    for (account, login) in &accounts {
        let new = stored_password(&api, &root, account).await;
        assert_ne!(new, START_PW);
        assert_eq!(
            pg.logs_in(login, &new).await,
            Some(true),
            "{login}: the new one logs in"
        );
        assert_eq!(
            pg.logs_in(login, START_PW).await,
            Some(false),
            "{login}: the old one does not"
        );
        new_passwords.push(new);
    }
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'app1'"),
        "1",
        "the hostile role name was one quoted identifier, not SQL"
    );
    // The certificate was pinned at first use, and it is the cluster's.
    let settings = api
        .get(&format!("/v1/resources/{rid}/reset-settings"), &root)
        .await
        .json();
    assert_eq!(
        settings["tls_certificate"],
        json!(pg.certificate_fingerprint),
        "{settings}"
    );

    // The server's own log has every statement (log_statement = all): verifiers only.
    let pg_log = pg.log();
    assert!(
        pg_log.contains("ALTER ROLE") && pg_log.contains("SCRAM-SHA-256$4096:"),
        "the statements are in the server's log: {pg_log}"
    );
    let audit = api.get("/v1/audit?limit=500", &root).await.text;
    let job_text = job.to_string();
    // The verifiers Lockstep sent, as PostgreSQL logged them: derived from the passwords, they
    // belong in no log or record of Lockstep's.
    let verifiers: Vec<&str> = pg_log
        .split('\'')
        .filter(|w| w.starts_with("SCRAM-SHA-256$"))
        .collect();
    assert_eq!(verifiers.len(), roles.len(), "{pg_log}");
    let mut secrets: Vec<&str> = new_passwords.iter().map(String::as_str).collect();
    secrets.push(ADMIN_PW);
    for secret in &secrets {
        assert!(!pg_log.contains(secret), "a password in PostgreSQL's log");
    }
    secrets.push(START_PW);
    secrets.extend(&verifiers);
    for secret in secrets {
        assert!(
            !server.log_text().contains(secret),
            "a secret in the server log"
        );
        assert!(!audit.contains(secret), "a secret in the audit trail");
        assert!(!job_text.contains(secret), "a secret in the job");
    }
}

#[tokio::test]
async fn failures_change_nothing_and_say_why() {
    let pg = cluster_with(&["app", "weak_admin"]);
    pg.sql("ALTER ROLE weak_admin NOCREATEROLE");
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, admin, accounts) = resource_for(&api, &root, &pg, "db1", &["app", "ghost"]).await;
    let (app, ghost) = (&accounts[0].0, &accounts[1].0);
    let detail = |job: &Value| job["items"][0]["detail"].as_str().unwrap_or("").to_string();
    let failed_cleanly = |job: &Value| {
        assert_eq!(job["items"][0]["state"], "failed", "{job}");
    };

    // A role the server does not have: the statement fails and rolls back.
    let job = reset(&api, &root, ghost).await;
    failed_cleanly(&job);
    assert!(detail(&job).contains("does not exist"), "{job}");

    // The vault's admin password is wrong: refused at login, nothing sent.
    let r = api
        .post(
            &format!("/v1/accounts/{admin}/reset"),
            &root,
            json!({"password": "Not-The-Admin-Pw-99", "apply_remote": false, "reason": "test"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let vault_only = r.json()["id"].as_str().unwrap().to_string();
    wait_finished(&api, &root, &vault_only, Duration::from_secs(30)).await;
    let job = reset(&api, &root, app).await;
    failed_cleanly(&job);
    assert!(
        detail(&job).contains(&format!("refused the password of '{ADMIN}'")),
        "{job}"
    );
    assert_eq!(pg.logs_in("app", START_PW).await, Some(true));
    assert_eq!(stored_password(&api, &root, app).await, START_PW);

    // An admin role without CREATEROLE: PostgreSQL refuses, nothing changes.
    let weak = api
        .post(
            &format!("/v1/resources/{rid}/accounts"),
            &root,
            json!({"login_name": "weak_admin", "password": START_PW}),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let put_admin = |admin: String, extra: Value| {
        let (api, root, rid) = (&api, &root, &rid);
        async move {
            let mut body = json!({"admin_account_id": admin});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let r = api
                .call(
                    "PUT",
                    &format!("/v1/resources/{rid}/reset-settings"),
                    Some(root),
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    };
    put_admin(weak.clone(), json!({})).await;
    let job = reset(&api, &root, app).await;
    failed_cleanly(&job);
    assert!(detail(&job).contains("permission denied"), "{job}");
    assert_eq!(pg.logs_in("app", START_PW).await, Some(true));

    // A different certificate pinned: the handshake fails before any password is sent.
    let other = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    put_admin(weak.clone(), json!({"tls_certificate": other})).await;
    let before = login_attempts(&pg.log());
    let job = reset(&api, &root, app).await;
    failed_cleanly(&job);
    assert!(detail(&job).contains("TLS certificate"), "{job}");
    assert!(detail(&job).contains(&pg.certificate_fingerprint), "{job}");
    assert_eq!(
        login_attempts(&pg.log()),
        before,
        "no login was even tried: the handshake ended first"
    );
    let bad = api
        .call(
            "PUT",
            &format!("/v1/resources/{rid}/reset-settings"),
            Some(&root),
            Some(json!({"admin_account_id": weak, "tls_certificate": "not a fingerprint"})),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("tls_certificate"), "{}", bad.text);

    // The server is down: nothing reached it.
    put_admin(weak.clone(), json!({"tls_certificate": null})).await;
    pg.stop();
    let job = reset(&api, &root, app).await;
    failed_cleanly(&job);
    assert!(detail(&job).contains("cannot reach"), "{job}");
    pg.start_again();
    assert_eq!(pg.logs_in("app", START_PW).await, Some(true));

    // A URL with credentials in it is refused when the resource is saved, with words, and
    // never echoed.
    let r = api
        .post(
            "/v1/resources",
            &root,
            json!({"name": "db2", "resource_type": "PostgreSQL",
                   "url": "postgres://admin:Url-Secret-1@127.0.0.1/postgres"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("credentials do not belong"), "{}", r.text);
    assert!(!r.text.contains("Url-Secret-1"), "{}", r.text);
}

#[tokio::test]
async fn a_server_killed_mid_bulk_loses_no_database_password() {
    let logins: Vec<String> = (1..=24).map(|i| format!("r{i:02}")).collect();
    let names: Vec<&str> = logins.iter().map(String::as_str).collect();
    let pg = cluster_with(&names);
    let mut server = Server::start();
    let mut api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, _, accounts) = resource_for(&api, &root, &pg, "db1", &names).await;
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"resource_ids": [rid], "reason": "rotation interrupted by a crash"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = api.get(&format!("/v1/reset-jobs/{id}"), &root).await.json();
        let p = &j["progress"];
        let in_flight = j["items"].as_array().unwrap().iter().any(|i| {
            matches!(
                i["state"].as_str(),
                Some("pending-written" | "applied" | "verified")
            )
        });
        if p["succeeded"].as_u64().unwrap_or(0) >= 1 && in_flight {
            eprintln!("killed at {p}, with an item in flight");
            break;
        }
        assert!(j["status"] != "finished", "finished before the kill: {p}");
        assert!(Instant::now() < deadline, "no progress: {p}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill_and_restart();
    api = Api::new(&server);
    let j = wait_finished(&api, &root, &id, Duration::from_secs(180)).await;
    assert_eq!(j["progress"]["out_of_sync"], 0, "{j}");
    assert_eq!(j["progress"]["succeeded"], names.len(), "{j}");
    for (account, login) in &accounts {
        let pw = stored_password(&api, &root, account).await;
        assert_eq!(
            pg.logs_in(login, &pw).await,
            Some(true),
            "{login}: the stored password logs in"
        );
    }
}

#[tokio::test]
async fn listeners_run_around_database_resets_and_a_veto_touches_nothing() {
    let pg = cluster_with(&["app_a", "app_b"]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    // change-freeze for PostgreSQL (pre-reset, vetoing DC1) and the probe as a post-reset
    // listener granted the new password, both published and approved as production does.
    let freeze = std::fs::read_to_string(common::registry::manifest_path("change-freeze"))
        .unwrap()
        .replace(
            r#"resource_types = ["Linux", "Windows", "Generic"]"#,
            r#"resource_types = ["PostgreSQL"]"#,
        );
    assert!(freeze.contains("PostgreSQL"));
    std::fs::write(dir.path().join("change-freeze.manifest.toml"), freeze).unwrap();
    let probe = common::listeners::probe_manifest(
        "db-probe",
        "0.2.0",
        "agentless",
        "PostgreSQL",
        &["new-password"],
        &[("behaviour", "what the probe does"), ("attempts", "n")],
    );
    std::fs::write(dir.path().join("db-probe.manifest.toml"), probe).unwrap();
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
                       "resource_types": ["PostgreSQL"], "order": 10, "parameters": ["DC1"]}),
            ),
            (
                "db-probe",
                wasm.join("test_probe.wasm"),
                json!({"phases": ["post-reset"], "modes": ["agentless"],
                       "resource_types": ["PostgreSQL"], "order": 20,
                       "parameters": ["retry-until", "1"]}),
            ),
        ],
    )
    .await;
    let t0 = Instant::now();
    let (rid_a, _, a) = resource_for(&api, &root, &pg, "db-a", &["app_a"]).await;
    let (rid_b, _, b) = resource_for(&api, &root, &pg, "db-b", &["app_b"]).await;
    let r = api
        .call(
            "PATCH",
            &format!("/v1/resources/{rid_b}"),
            Some(&root),
            Some(json!({"location": "DC1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"resource_ids": [rid_a, rid_b], "reason": "rotation with listeners"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let job = wait_finished(&api, &root, &id, Duration::from_secs(60)).await;
    eprintln!(
        "job finished {:?} after the listeners were published",
        t0.elapsed()
    );
    let state = |account: &str| {
        job["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["account_id"] == account)
            .map(|i| i["state"].clone())
            .unwrap()
    };
    assert_eq!(state(&a[0].0), "done", "{job}");
    assert_eq!(state(&b[0].0), "vetoed", "{job}");
    // The vetoed role kept its password; the other has the vault's new one.
    assert_eq!(pg.logs_in("app_b", START_PW).await, Some(true));
    let new = stored_password(&api, &root, &a[0].0).await;
    assert_eq!(pg.logs_in("app_a", &new).await, Some(true));
    // The post-reset listener was delivered, told the new password's length (its grant).
    let deadline = Instant::now() + Duration::from_secs(30);
    let d = loop {
        let r = api
            .get(&format!("/v1/deliveries?account_id={}", a[0].0), &root)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let d = r.json()["items"][0].clone();
        if d["state"] == "delivered" {
            break d;
        }
        assert!(Instant::now() < deadline, "never delivered: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(d["listener"], "db-probe", "{d}");
    assert!(
        !d.to_string().contains(&new),
        "no password in a delivery: {d}"
    );
}

#[tokio::test]
async fn a_server_that_drops_tls_or_checks_no_password_proves_nothing() {
    let pg = cluster_with(&["app", "trusting"]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let long = "r".repeat(64);
    let (_, _, accounts) =
        resource_for(&api, &root, &pg, "db1", &["app", "trusting", long.as_str()]).await;
    let (app, trusting, too_long) = (&accounts[0].0, &accounts[1].0, &accounts[2].0);
    let detail = |job: &Value| job["items"][0]["detail"].as_str().unwrap_or("").to_string();

    // A first reset pins the certificate.
    let job = reset(&api, &root, app).await;
    assert_eq!(job["items"][0]["state"], "done", "{job}");

    // A login name PostgreSQL would cut to 63 bytes (and so could name another role).
    let job = reset(&api, &root, too_long).await;
    assert_eq!(job["items"][0]["state"], "failed", "{job}");
    assert!(detail(&job).contains("longer than"), "{job}");

    // `trust` for one role: any password "logs in", so no login proves the new one. The
    // change is applied, then the account is out of sync with both passwords kept (never
    // committed on a login that proves nothing), and a person sees it in the attention queue.
    pg.hba_first("hostssl all trusting 127.0.0.1/32 trust");
    let job = reset(&api, &root, trusting).await;
    assert_eq!(job["items"][0]["state"], "out-of-sync", "{job}");
    assert!(
        detail(&job).contains("cannot prove") && detail(&job).contains("channel binding"),
        "{job}"
    );
    assert_eq!(
        stored_password(&api, &root, trusting).await,
        START_PW,
        "the vault keeps the stored password until the target proves the new one"
    );
    let queue = api.get("/v1/attention", &root).await;
    assert_eq!(queue.status, 200, "{}", queue.text);
    assert!(queue.text.contains(trusting.as_str()), "{}", queue.text);
    // Resolving it cannot prove anything either, and says why instead of "try again".
    let r = api
        .post(
            &format!("/v1/accounts/{trusting}/resolve"),
            &root,
            json!({"reason": "check which password it holds"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.text.contains("cannot prove") && !r.text.contains("try again"),
        "{}",
        r.text
    );

    // The server stops offering TLS: the pinned certificate is gone, nothing is sent.
    pg.stop();
    pg.configure("ssl = off");
    pg.start_again();
    let before = login_attempts(&pg.log());
    let job = reset(&api, &root, app).await;
    assert_eq!(job["items"][0]["state"], "failed", "{job}");
    assert!(detail(&job).contains("no longer offers TLS"), "{job}");
    assert_eq!(login_attempts(&pg.log()), before, "no login was tried");
}
