//! The MySQL/MariaDB connector end to end: a real `lockstep` server resets accounts of a
//! private MariaDB server (the machine's own binaries, TLS on, every log turned all the way
//! up), and every outcome is checked by logging in with an independent client (MariaDB's
//! own), in the vault, in the audit trail and in the database server's own logs. The
//! machine's shared MariaDB, which offers no TLS, shows what Lockstep does then.

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::mariadb::MariaDb;
use common::resets::{stored_password, wait_finished};
use common::{Api, Server};
use serde_json::{Value, json};

const ADMIN: &str = "lockstep_admin";
const ADMIN_PW: &str = "Admin-Pw-1";
const START_PW: &str = "Start-Pw-1";

/// A server with the admin account (CREATE USER, nothing else); `users` log in with
/// [`START_PW`] from anywhere (`'user'@'%'`).
fn server_with(users: &[&str]) -> MariaDb {
    let db = MariaDb::start();
    db.sql(&format!(
        "CREATE USER '{ADMIN}'@'%' IDENTIFIED BY '{ADMIN_PW}'; \
         GRANT CREATE USER ON *.* TO '{ADMIN}'@'%'"
    ));
    for u in users {
        db.sql(&format!("CREATE USER '{u}'@'%' IDENTIFIED BY '{START_PW}'"));
    }
    db
}

async fn resource_for(
    api: &Api,
    token: &str,
    db: &MariaDb,
    name: &str,
    logins: &[&str],
) -> (String, String, Vec<(String, String)>) {
    common::db_resource::register(
        api,
        token,
        (name, "MySQL", &db.url()),
        (ADMIN, ADMIN_PW),
        logins,
        START_PW,
    )
    .await
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

async fn bulk(api: &Api, token: &str, resources: &[&str]) -> String {
    let r = api
        .post(
            "/v1/reset-jobs",
            token,
            json!({"resource_ids": resources, "reason": "rotate the database accounts"}),
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

/// Connections the server logged (general log).
fn connects(db: &MariaDb) -> usize {
    db.general_log().matches(" Connect\t").count()
}

#[tokio::test]
async fn accounts_get_verified_passwords_and_the_server_only_ever_sees_hashes() {
    let users = ["app1", "app2", "App3", "hosted"];
    let db = server_with(&users);
    // One account named with its host part.
    db.sql(&format!(
        "DROP USER 'hosted'@'%'; CREATE USER 'hosted'@'127.0.0.1' IDENTIFIED BY '{START_PW}'"
    ));
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let t = api.get("/v1/resource-types/MySQL", &root).await.json();
    assert_eq!(t["reset_method"], "mysql", "{t}");
    // A login written to break out of the quoted account name, beside plain ones.
    let hostile = "app1'@'%' IDENTIFIED BY 'x'; DROP USER 'app2'@'%'; --";
    let logins = ["app1", "app2", "App3", "hosted@127.0.0.1", hostile];
    let (rid, _, accounts) = resource_for(&api, &root, &db, "db1", &logins).await;

    let started = Instant::now();
    let id = bulk(&api, &root, &[&rid]).await;
    let job = wait_finished(&api, &root, &id, Duration::from_secs(60)).await;
    eprintln!("{} accounts in {:?}", logins.len(), started.elapsed());
    assert_eq!(job["progress"]["succeeded"], 4, "{job}");
    let refused = item(&job, &accounts[4].0);
    assert_eq!(refused["state"], "failed", "{job}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be used"),
        "{job}"
    );

    let mut secrets = vec![ADMIN_PW.to_string()];
    for (account, login) in &accounts[..4] {
        let user = login.split('@').next().unwrap();
        let new = stored_password(&api, &root, account).await;
        assert_ne!(new, START_PW);
        assert_eq!(db.logs_in(user, &new), Some(true), "{login}: the new one");
        assert_eq!(
            db.logs_in(user, START_PW),
            Some(false),
            "{login}: not the old"
        );
        secrets.push(new);
    }
    assert_eq!(
        db.sql("SELECT count(*) FROM mysql.user WHERE user IN ('app1', 'app2')"),
        "2",
        "the hostile login was never SQL"
    );
    let settings = api
        .get(&format!("/v1/resources/{rid}/reset-settings"), &root)
        .await
        .json();
    assert_eq!(
        settings["tls_certificate"],
        json!(db.certificate_fingerprint),
        "pinned at first use: {settings}"
    );

    // The server's logs hold every statement, hashes only.
    let logs = db.logs();
    assert!(
        logs.contains("ALTER USER 'app1'@'%' IDENTIFIED WITH mysql_native_password AS '*"),
        "{logs}"
    );
    let hashes: Vec<&str> = logs
        .split('\'')
        .filter(|w| w.len() == 41 && w.starts_with('*'))
        .collect();
    assert!(hashes.len() >= 4, "{logs}");
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a password in MariaDB's logs"
        );
    }
    let audit = api.get("/v1/audit?limit=500", &root).await.text;
    let job_text = job.to_string();
    let lockstep_log = server.log_text();
    for secret in secrets
        .iter()
        .map(String::as_str)
        .chain([START_PW])
        .chain(hashes)
    {
        assert!(!lockstep_log.contains(secret), "a secret in the server log");
        assert!(!audit.contains(secret), "a secret in the audit trail");
        assert!(!job_text.contains(secret), "a secret in the job");
    }
}

#[tokio::test]
async fn failures_change_nothing_and_say_why() {
    let db = server_with(&["app", "weak_admin"]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, admin, accounts) = resource_for(&api, &root, &db, "db1", &["app", "ghost"]).await;
    let (app, ghost) = (&accounts[0].0, &accounts[1].0);
    let detail = |job: &Value| job["items"][0]["detail"].as_str().unwrap_or("").to_string();
    let failed = |job: &Value| assert_eq!(job["items"][0]["state"], "failed", "{job}");

    // No such account: the statement fails whole.
    let job = reset(&api, &root, ghost).await;
    failed(&job);
    assert!(detail(&job).contains("ALTER USER failed"), "{job}");

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
    failed(&job);
    assert!(
        detail(&job).contains(&format!("refused the password of '{ADMIN}'")),
        "{job}"
    );
    assert_eq!(db.logs_in("app", START_PW), Some(true));
    assert_eq!(stored_password(&api, &root, app).await, START_PW);

    // An admin without CREATE USER: MariaDB refuses, nothing changes.
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
    let put_settings = |body: Value| {
        let (api, root, rid) = (&api, &root, &rid);
        async move {
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
    put_settings(json!({"admin_account_id": weak})).await;
    let job = reset(&api, &root, app).await;
    failed(&job);
    assert!(detail(&job).contains("CREATE USER privilege"), "{job}");
    assert_eq!(db.logs_in("app", START_PW), Some(true));

    // Another certificate pinned: the handshake fails before any login.
    let other = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    put_settings(json!({"admin_account_id": weak, "tls_certificate": other})).await;
    let before = connects(&db);
    let job = reset(&api, &root, app).await;
    failed(&job);
    assert!(detail(&job).contains("TLS certificate"), "{job}");
    assert!(detail(&job).contains(&db.certificate_fingerprint), "{job}");
    assert_eq!(connects(&db), before, "no login was even tried");

    // The server is down: nothing reached it.
    put_settings(json!({"admin_account_id": weak, "tls_certificate": null})).await;
    db.kill();
    let job = reset(&api, &root, app).await;
    failed(&job);
    assert!(detail(&job).contains("cannot reach"), "{job}");
    db.start_again();
    assert_eq!(db.logs_in("app", START_PW), Some(true));

    // A URL with credentials or a database is refused when the resource is saved.
    for (url, words) in [
        (
            "mysql://admin:Url-Secret-1@127.0.0.1",
            "credentials do not belong",
        ),
        ("mysql://127.0.0.1/appdb", "no database belongs"),
    ] {
        let r = api
            .post(
                "/v1/resources",
                &root,
                json!({"name": "db2", "resource_type": "MySQL", "url": url}),
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(r.text.contains(words), "{}", r.text);
        assert!(!r.text.contains("Url-Secret-1"), "{}", r.text);
    }
}

#[tokio::test]
async fn a_database_killed_with_changes_in_flight_loses_no_password() {
    let logins: Vec<String> = (1..=30).map(|i| format!("u{i:02}")).collect();
    let names: Vec<&str> = logins.iter().map(String::as_str).collect();
    let db = server_with(&names);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, _, accounts) = resource_for(&api, &root, &db, "db1", &names).await;
    // Every ALTER USER now waits on the lock: sent, unanswered, when the server dies.
    let mut lock = db.hold_global_read_lock();
    let id = bulk(&api, &root, &[&rid]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.general_log().matches("ALTER USER").count() < 4 {
        assert!(Instant::now() < deadline, "no statement reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.kill();
    let _ = lock.kill();
    let _ = lock.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.start_again();
    let job = wait_finished(&api, &root, &id, Duration::from_secs(180)).await;
    eprintln!("after the restart: {}", job["progress"]);
    // The interrupted changes were asked about, found not applied, and sent again.
    let log = db.general_log();
    let resent = names
        .iter()
        .filter(|u| log.matches(&format!("ALTER USER '{u}'@")).count() >= 2)
        .count();
    assert!(
        resent >= 1,
        "no change was interrupted and sent again: {log}"
    );
    for (account, login) in &accounts {
        let state = item(&job, account)["state"].as_str().unwrap().to_string();
        let stored = stored_password(&api, &root, account).await;
        match state.as_str() {
            // Done: the new password; failed before anything was sent: the old one, kept.
            "done" | "failed" => assert_eq!(
                db.logs_in(login, &stored),
                Some(true),
                "{login} ({state}): the stored password logs in"
            ),
            // Never discarded: resolving asks the server again, now that it is back.
            "out-of-sync" => {
                let r = api
                    .post(
                        &format!("/v1/accounts/{account}/resolve"),
                        &root,
                        json!({"reason": "the database is back"}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{login}: {}", r.text);
                let stored = stored_password(&api, &root, account).await;
                assert_eq!(db.logs_in(login, &stored), Some(true), "{login}");
            }
            other => panic!("{login}: {other}: {job}"),
        }
    }
}

#[tokio::test]
async fn listeners_run_around_database_resets_and_a_veto_touches_nothing() {
    let db = server_with(&["app_a", "app_b"]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    let freeze = std::fs::read_to_string(common::registry::manifest_path("change-freeze"))
        .unwrap()
        .replace(
            r#"resource_types = ["Linux", "Windows", "Generic"]"#,
            r#"resource_types = ["MySQL"]"#,
        );
    assert!(freeze.contains("MySQL"));
    std::fs::write(dir.path().join("change-freeze.manifest.toml"), freeze).unwrap();
    let probe = common::listeners::probe_manifest(
        "db-probe",
        "0.2.0",
        "agentless",
        "MySQL",
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
                       "resource_types": ["MySQL"], "order": 10, "parameters": ["DC1"]}),
            ),
            (
                "db-probe",
                wasm.join("test_probe.wasm"),
                json!({"phases": ["post-reset"], "modes": ["agentless"],
                       "resource_types": ["MySQL"], "order": 20,
                       "parameters": ["retry-until", "1"]}),
            ),
        ],
    )
    .await;
    let (rid_a, _, a) = resource_for(&api, &root, &db, "db-a", &["app_a"]).await;
    let (rid_b, _, b) = resource_for(&api, &root, &db, "db-b", &["app_b"]).await;
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
    let job = wait_finished(&api, &root, &id, Duration::from_secs(60)).await;
    assert_eq!(item(&job, &a[0].0)["state"], "done", "{job}");
    assert_eq!(item(&job, &b[0].0)["state"], "vetoed", "{job}");
    assert_eq!(
        db.logs_in("app_b", START_PW),
        Some(true),
        "vetoed: untouched"
    );
    let new = stored_password(&api, &root, &a[0].0).await;
    assert_eq!(db.logs_in("app_a", &new), Some(true));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api
            .get(&format!("/v1/deliveries?account_id={}", a[0].0), &root)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let d = r.json()["items"][0].clone();
        if d["state"] == "delivered" {
            assert_eq!(d["listener"], "db-probe", "{d}");
            assert!(!d.to_string().contains(&new), "no password in a delivery");
            break;
        }
        assert!(Instant::now() < deadline, "never delivered: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_login_that_proves_nothing_commits_nothing() {
    let db = server_with(&["app", "shadowed"]);
    // Two accounts of one user: a login from 127.0.0.1 is 'shadowed'@'%', never the other.
    db.sql(&format!(
        "CREATE USER 'shadowed'@'10.9.9.%' IDENTIFIED BY '{START_PW}'"
    ));
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, _, accounts) =
        resource_for(&api, &root, &db, "db1", &["app", "shadowed@10.9.9.%"]).await;
    let (app, shadowed) = (&accounts[0].0, &accounts[1].0);
    let detail = |job: &Value| job["items"][0]["detail"].as_str().unwrap_or("").to_string();

    // The machine's shared MariaDB offers no TLS: refused at its greeting.
    let (_, _, shared) = common::db_resource::register(
        &api,
        &root,
        ("shared", "MySQL", "mysql://127.0.0.1:3306"),
        ("root", "Never-Sent-Pw-1"),
        &["nobody_here"],
        START_PW,
    )
    .await;
    let job = reset(&api, &root, &shared[0].0).await;
    assert_eq!(job["items"][0]["state"], "failed", "{job}");
    assert!(
        detail(&job).contains("does not offer TLS") && detail(&job).contains("ssl_cert"),
        "{job}"
    );

    // A first reset pins the certificate; then the server loses TLS.
    let job = reset(&api, &root, app).await;
    assert_eq!(job["items"][0]["state"], "done", "{job}");

    // The change reaches 'shadowed'@'10.9.9.%', but a login from here is the other account:
    // it proves nothing, so both passwords are kept and a person is asked.
    let job = reset(&api, &root, shadowed).await;
    assert_eq!(job["items"][0]["state"], "out-of-sync", "{job}");
    assert!(
        detail(&job).contains("is the account 'shadowed@%'"),
        "{job}"
    );
    assert_eq!(stored_password(&api, &root, shadowed).await, START_PW);
    assert_eq!(db.logs_in("shadowed", START_PW), Some(true));

    // With the pin cleared, no login proves anything: resolving says so.
    let settings = format!("/v1/resources/{rid}/reset-settings");
    let current = api.get(&settings, &root).await.json();
    let put = |pin: Value| {
        let mut body = json!({"admin_account_id": current["admin_account_id"]});
        body["tls_certificate"] = pin;
        api.call("PUT", &settings, Some(&root), Some(body))
    };
    assert_eq!(put(Value::Null).await.status, 200);
    let r = api
        .post(
            &format!("/v1/accounts/{shadowed}/resolve"),
            &root,
            json!({"reason": "which password does it hold"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.text.contains("no TLS certificate is pinned"),
        "{}",
        r.text
    );
    assert_eq!(put(json!(db.certificate_fingerprint)).await.status, 200);
    let pw = stored_password(&api, &root, app).await;
    db.without_tls();
    let before = connects(&db);
    let job = reset(&api, &root, app).await;
    assert_eq!(job["items"][0]["state"], "failed", "{job}");
    assert!(detail(&job).contains("no longer offers TLS"), "{job}");
    assert_eq!(connects(&db), before, "no login was tried");
    assert_eq!(stored_password(&api, &root, app).await, pw);
}
