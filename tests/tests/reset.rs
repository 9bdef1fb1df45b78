//! Password resets end to end: a real `lockstep` server resets accounts on real OpenSSH targets
//! (sshd in namespaces with a private /etc), with real listeners from `listeners/` in the
//! pipeline; every outcome is checked on the target itself, in the vault and in the audit trail.

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::registry::{change_freeze_in_dc1, publish_approved};
use common::resets::{logs_in, set_reset_command, stored_password, wait_finished};
use common::sshd::{SshTarget, TargetUser};
use common::{Api, Server};
use serde_json::{Value, json};

/// A resource for `target` with an admin account and an `app` account; returns
/// (resource id, admin account id, app account id).
async fn resource_for(
    api: &Api,
    token: &str,
    t: &SshTarget,
    name: &str,
    admin: (&str, &str, &str),
    app_password: &str,
    location: Option<&str>,
) -> (String, String, String) {
    let mut body = json!({
        "name": name, "resource_type": "Linux", "ip_address": t.ip, "ssh_port": t.port,
    });
    if let Some(l) = location {
        body["location"] = json!(l);
    }
    let r = api.post("/v1/resources", token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rid = r.json()["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for (login, pw) in [(admin.0, admin.1), ("app", app_password)] {
        let r = api
            .post(
                &format!("/v1/resources/{rid}/accounts"),
                token,
                json!({"login_name": login, "password": pw}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let r = api
        .call(
            "PUT",
            &format!("/v1/resources/{rid}/reset-settings"),
            Some(token),
            Some(json!({"admin_account_id": ids[0], "admin_kind": admin.2})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    (rid, ids.remove(0), ids.remove(0))
}

/// Starts a reset and waits for its job to finish; returns the job.
async fn reset(api: &Api, token: &str, account: &str, body: Value) -> Value {
    let r = api
        .post(&format!("/v1/accounts/{account}/reset"), token, body)
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_finished(api, token, &id, Duration::from_secs(60)).await
}

fn item(job: &Value) -> &Value {
    &job["items"][0]
}

#[tokio::test]
async fn a_root_admin_resets_a_password_that_then_logs_in() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web1",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;

    let job = reset(&api, &root, &app, json!({"reason": "quarterly rotation"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    assert_eq!(job["progress"]["succeeded"], 1);
    let new = stored_password(&api, &root, &app).await;
    assert_ne!(new, "App-Pw-1");
    assert!(
        new.chars().count() >= 24,
        "the default policy generates 24 characters"
    );
    assert!(
        logs_in(&t, "app", &new).await,
        "the vault's password logs in"
    );
    assert!(
        !logs_in(&t, "app", "App-Pw-1").await,
        "the old one does not"
    );
    let acc = api.get(&format!("/v1/accounts/{app}"), &root).await.json();
    assert_eq!(acc["password_sync_status"], "in-sync");
    // The host key was pinned at first use.
    let rid = acc["resource_id"].as_str().unwrap();
    let settings = api
        .get(&format!("/v1/resources/{rid}/reset-settings"), &root)
        .await
        .json();
    assert!(
        settings["ssh_host_key"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:"),
        "{settings}"
    );
    // Audited, and nothing of the password in the trail or the log.
    let audit = api
        .get("/v1/audit?action=account.password.reset&limit=50", &root)
        .await;
    assert!(audit.text.contains("\"success\""), "{}", audit.text);
    assert!(!audit.text.contains(&new));
    assert!(!server.log_text().contains(&new));
}

#[tokio::test]
async fn a_sudo_admin_resets_with_an_explicit_password_checked_against_the_policy() {
    let t = SshTarget::start(
        "Root-Pw-1",
        &[
            TargetUser::sudoer("admin", "Admin-Pw-1"),
            TargetUser::new("app", "App-Pw-1"),
        ],
    );
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web2",
        ("admin", "Admin-Pw-1", "sudo"),
        "App-Pw-1",
        None,
    )
    .await;

    let weak = api
        .post(
            &format!("/v1/accounts/{app}/reset"),
            &root,
            json!({"reason": "x-weak", "password": "short"}),
        )
        .await;
    assert_eq!(weak.status, 422, "{}", weak.text);
    assert!(weak.text.contains("at least 12"), "{}", weak.text);
    assert!(
        !weak.text.contains("short\""),
        "never echoed: {}",
        weak.text
    );

    let chosen = "Chosen-Pass-42!";
    let body = json!({"reason": "handover", "password": chosen});
    let job = reset(&api, &root, &app, body).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    assert_eq!(stored_password(&api, &root, &app).await, chosen);
    assert!(logs_in(&t, "app", chosen).await);

    // The same password again is refused by the history rule.
    let again = api
        .post(
            &format!("/v1/accounts/{app}/reset"),
            &root,
            json!({"reason": "again", "password": chosen}),
        )
        .await;
    assert_eq!(again.status, 422, "{}", again.text);
    assert!(again.text.contains("last 5 passwords"), "{}", again.text);
}

#[tokio::test]
async fn failures_on_the_target_change_nothing_and_say_why() {
    let mut t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    // The vault holds a wrong admin password.
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web3",
        ("root", "Not-The-Root-Pw", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let before = t.shadow_hash("app");
    let job = reset(&api, &root, &app, json!({"reason": "wrong admin"})).await;
    assert_eq!(item(&job)["state"], "failed", "{job}");
    assert!(
        item(&job)["detail"]
            .as_str()
            .unwrap()
            .contains("refused the password of 'root'"),
        "{job}"
    );
    assert_eq!(stored_password(&api, &root, &app).await, "App-Pw-1");
    assert_eq!(t.shadow_hash("app"), before);

    // The target is down.
    t.stop();
    let job = reset(&api, &root, &app, json!({"reason": "target down"})).await;
    assert_eq!(item(&job)["state"], "failed", "{job}");
    assert!(
        item(&job)["detail"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{job}"
    );
    assert_eq!(stored_password(&api, &root, &app).await, "App-Pw-1");
    let acc = api.get(&format!("/v1/accounts/{app}"), &root).await.json();
    assert_ne!(acc["password_sync_status"], "in-sync");
}

#[tokio::test]
async fn a_changed_host_key_refuses_the_reset() {
    let mut t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web4",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let job = reset(&api, &root, &app, json!({"reason": "pins the key"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    let current = stored_password(&api, &root, &app).await;

    t.new_host_key();
    t.restart();
    let job = reset(&api, &root, &app, json!({"reason": "after a rebuild"})).await;
    assert_eq!(item(&job)["state"], "failed", "{job}");
    let detail = item(&job)["detail"].as_str().unwrap();
    assert!(
        detail.contains("host key") && detail.contains("changed"),
        "{detail}"
    );
    assert_eq!(stored_password(&api, &root, &app).await, current);
    assert!(logs_in(&t, "app", &current).await);
}

#[tokio::test]
async fn listeners_veto_before_and_fail_after_without_undoing_the_reset() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    let wasm = common::listeners::wasm_dir();
    publish_approved(
        &api,
        &root,
        dir.path(),
        &[
            (
                "change-freeze",
                wasm.join("change_freeze.wasm"),
                json!({"phases": ["pre-reset"], "modes": ["agentless"], "resource_types": ["Linux"], "order": 10, "parameters": ["DC1"]}),
            ),
            (
                "restart-service",
                wasm.join("restart_service.wasm"),
                json!({"phases": ["post-reset"], "modes": ["agentless"], "resource_types": ["Linux"], "order": 10, "parameters": ["app.service"]}),
            ),
        ],
    )
    .await;

    // web5 sits in DC1, which is frozen: the pre-reset listener vetoes, nothing changes.
    let (_, _, frozen) = resource_for(
        &api,
        &root,
        &t,
        "web5",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        Some("DC1"),
    )
    .await;
    let before = t.shadow_hash("app");
    let job = reset(&api, &root, &frozen, json!({"reason": "during a freeze"})).await;
    assert_eq!(item(&job)["state"], "vetoed", "{job}");
    let detail = item(&job)["detail"].as_str().unwrap();
    assert!(
        detail.contains("vetoed by change-freeze") && detail.contains("DC1"),
        "{detail}"
    );
    assert_eq!(t.shadow_hash("app"), before);
    assert_eq!(stored_password(&api, &root, &frozen).await, "App-Pw-1");
    let audit = api
        .get(
            "/v1/audit?action=account.password.reset&outcome=denied",
            &root,
        )
        .await;
    assert!(audit.text.contains(&frozen), "{}", audit.text);

    // Same target, DC2: the reset goes through; restart-service then fails (the target has no
    // systemctl), which is recorded but does not undo the reset.
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web6",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        Some("DC2"),
    )
    .await;
    let job = reset(&api, &root, &app, json!({"reason": "outside the freeze"})).await;
    let it = item(&job);
    assert_eq!(it["state"], "done", "{job}");
    let listeners = it["listeners"].as_array().unwrap();
    let pre = listeners
        .iter()
        .find(|l| l["listener"] == "change-freeze")
        .unwrap();
    assert_eq!(pre["outcome"], "proceed", "{job}");
    let post = listeners
        .iter()
        .find(|l| l["listener"] == "restart-service")
        .unwrap();
    assert_eq!(post["outcome"], "failure", "{job}");
    assert!(
        post["message"].as_str().unwrap().contains("app.service"),
        "{job}"
    );
    assert!(
        it["detail"]
            .as_str()
            .unwrap()
            .contains("restart-service failed"),
        "{job}"
    );
    let new = stored_password(&api, &root, &app).await;
    assert!(logs_in(&t, "app", &new).await, "the reset stands");
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_job() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web7",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let send = || async {
        let r = api
            .http
            .post(format!("{}/v1/accounts/{app}/reset", api.base))
            .bearer_auth(&root)
            .header("Idempotency-Key", "ticket-4711")
            .json(&json!({"reason": "ticket 4711", "notify": ["root"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = send().await;
    let second = send().await;
    assert_eq!(first, second);
    let job = wait_finished(&api, &root, &first, Duration::from_secs(60)).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    let audit = api
        .get("/v1/audit?action=account.password.reset.request", &root)
        .await
        .json();
    assert_eq!(
        audit["items"].as_array().unwrap().len(),
        1,
        "one request, one reset"
    );
    // root asked to be told when it finished.
    let notes = api.get("/v1/notifications", &root).await.json();
    let told =
        notes["items"].as_array().unwrap().iter().any(|n| {
            n["kind"] == "reset-finished" && n["message"].as_str().unwrap().contains(&first)
        });
    assert!(told, "{notes}");
}

#[tokio::test]
async fn passwords_past_their_maximum_age_are_rotated_by_the_scheduler() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start_with(common::ServerOptions {
        extra: vec!["--rotation-check-secs".into(), "1".into()],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let r = api
        .post(
            "/v1/password-policies",
            &root,
            json!({"name": "monthly", "max_age_days": 30}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (rid, admin, app) = resource_for(
        &api,
        &root,
        &t,
        "web8",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let r = api
        .call(
            "PUT",
            &format!("/v1/resources/{rid}/reset-settings"),
            Some(&root),
            Some(json!({"admin_account_id": admin, "password_policy": "monthly"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // svc's password is fresh: not due. The scheduler pass that finds app's due judges it too.
    let r = api
        .post(
            &format!("/v1/resources/{rid}/accounts"),
            &root,
            json!({"login_name": "svc", "password": "Svc-Pw-1"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let svc = r.json()["id"].as_str().unwrap().to_string();
    // Give app's password an age of a year, as time would.
    let mut db = database(&server).await;
    sqlx::query(
        "UPDATE accounts SET password_changed_at = '2025-11-01T00:00:00.000000Z' WHERE id = $1",
    )
    .bind(&app)
    .execute(&mut db)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let acc = api.get(&format!("/v1/accounts/{app}"), &root).await.json();
        if acc["password_changed_at"].as_str().unwrap() > "2026"
            && acc["password_sync_status"] == "in-sync"
        {
            break;
        }
        assert!(Instant::now() < deadline, "never rotated: {acc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let new = stored_password(&api, &root, &app).await;
    assert!(logs_in(&t, "app", &new).await);
    let audit = api
        .get(
            "/v1/audit?action=account.password.reset.request&actor=system",
            &root,
        )
        .await;
    assert!(audit.text.contains("scheduled rotation"), "{}", audit.text);
    // The admin account was not rotated along: it is reset on its own; svc's was not due.
    assert_eq!(stored_password(&api, &root, &admin).await, "Root-Pw-1");
    assert_eq!(stored_password(&api, &root, &svc).await, "Svc-Pw-1");
    assert!(!audit.text.contains(&svc), "{}", audit.text);
}

#[tokio::test]
async fn the_cli_starts_a_reset_and_follows_it_to_the_end() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web9",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let (status, out, err) = common::lockstep_env(
        &[
            "reset",
            "--account",
            &app,
            "--reason",
            "from the command line",
            "--server",
            &api.base,
        ],
        &[("LOCKSTEP_TOKEN", &root)],
    );
    assert!(status.success(), "{out}{err}");
    assert!(out.contains(&app) && out.contains("done"), "{out}");
    let new = stored_password(&api, &root, &app).await;
    assert!(logs_in(&t, "app", &new).await);
    assert!(
        !out.contains(&new) && !err.contains(&new),
        "the CLI never prints a password"
    );

    // A refusal exits 1 with the server's words.
    let (status, _, err) = common::lockstep_env(
        &[
            "reset",
            "--account",
            &app,
            "--reason",
            "x",
            "--server",
            &api.base,
        ],
        &[("LOCKSTEP_TOKEN", &root)],
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("reason: give a reason of 3 to 500 characters"),
        "{err}"
    );

    // Bulk, by type, as JSON.
    let (status, out, err) = common::lockstep_env(
        &[
            "reset",
            "--resource-type",
            "Linux",
            "--reason",
            "bulk from the CLI",
            "--json",
            "--server",
            &api.base,
        ],
        &[("LOCKSTEP_TOKEN", &root)],
    );
    assert!(status.success(), "{out}{err}");
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["kind"], "bulk");
    assert_eq!(
        job["progress"]["succeeded"], 1,
        "the admin account is not selected: {job}"
    );
}

#[tokio::test]
async fn local_resource_types_change_the_vault_only_and_still_run_their_listeners() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let r = api
        .post(
            "/v1/resource-types",
            &root,
            json!({"name": "AppConfig", "reset_method": "local"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (_, acc) =
        common::resource_with_account(&api, &root, "cfg1", "AppConfig", "svc", "Old-Pass-123!")
            .await;
    let job = reset(
        &api,
        &root,
        &acc,
        json!({"reason": "rotate the app's secret"}),
    )
    .await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    let new = stored_password(&api, &root, &acc).await;
    assert_ne!(new, "Old-Pass-123!");
    assert!(new.chars().count() >= 24);

    // Agent-based types cannot be reached yet: the reset says so and changes nothing, unless
    // it is asked to change the vault only.
    let (_, win) = common::resource_with_account(
        &api,
        &root,
        "win1",
        "Windows",
        "Administrator",
        "Old-Pass-123!",
    )
    .await;
    let job = reset(&api, &root, &win, json!({"reason": "needs the agent"})).await;
    assert_eq!(item(&job)["state"], "failed", "{job}");
    assert!(
        item(&job)["detail"].as_str().unwrap().contains("agent"),
        "{job}"
    );
    assert_eq!(stored_password(&api, &root, &win).await, "Old-Pass-123!");
    let job = reset(
        &api,
        &root,
        &win,
        json!({"reason": "vault only", "apply_remote": false}),
    )
    .await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    assert_ne!(stored_password(&api, &root, &win).await, "Old-Pass-123!");
}

#[tokio::test]
async fn accounts_and_resources_with_reset_history_can_still_be_deleted() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, admin, app) = resource_for(
        &api,
        &root,
        &t,
        "web10",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let job = reset(
        &api,
        &root,
        &app,
        json!({"reason": "before decommissioning"}),
    )
    .await;
    assert_eq!(item(&job)["state"], "done", "{job}");

    let r = api
        .call(
            "DELETE",
            &format!("/v1/accounts/{admin}"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("admin account"), "{}", r.text);
    let r = api
        .call("DELETE", &format!("/v1/accounts/{app}"), Some(&root), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = api
        .call(
            "PUT",
            &format!("/v1/resources/{rid}/reset-settings"),
            Some(&root),
            Some(json!({"admin_account_id": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = api
        .call(
            "DELETE",
            &format!("/v1/accounts/{admin}"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = api
        .call("DELETE", &format!("/v1/resources/{rid}"), Some(&root), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // The audit trail still tells the story.
    let audit = api
        .get("/v1/audit?action=account.password.reset&limit=50", &root)
        .await;
    assert!(audit.text.contains(&app), "{}", audit.text);
}

#[tokio::test]
async fn a_rotation_schedule_rotates_its_group_and_moves_on() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start_with(common::ServerOptions {
        extra: vec!["--rotation-check-secs".into(), "1".into()],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, admin, app) = resource_for(
        &api,
        &root,
        &t,
        "web11",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    for bad in [
        json!({"name": "x", "every_hours": 24}),
        json!({"name": "x", "every_hours": 24, "resource_type": "Linux", "resource_ids": [rid]}),
        json!({"name": "x", "every_hours": 0, "resource_type": "Linux"}),
        json!({"name": "bad name", "every_hours": 24, "resource_type": "Linux"}),
    ] {
        let r = api.post("/v1/rotation-schedules", &root, bad).await;
        assert_eq!(r.status, 422, "{}", r.text);
    }
    let r = api
        .post(
            "/v1/rotation-schedules",
            &root,
            json!({"name": "web11-daily", "every_hours": 24, "resource_ids": [rid], "notify": ["root"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let acc = api.get(&format!("/v1/accounts/{app}"), &root).await.json();
        if acc["password_sync_status"] == "in-sync" {
            break;
        }
        assert!(Instant::now() < deadline, "never rotated: {acc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let new = stored_password(&api, &root, &app).await;
    assert_ne!(new, "App-Pw-1");
    assert!(logs_in(&t, "app", &new).await);
    assert_eq!(
        stored_password(&api, &root, &admin).await,
        "Root-Pw-1",
        "admins are left alone"
    );
    let list = api.get("/v1/rotation-schedules", &root).await.json();
    let next = list[0]["next_run_at"].as_str().unwrap().to_string();
    let created = r.json()["next_run_at"].as_str().unwrap().to_string();
    assert!(next > created, "moved on by a day: {created} -> {next}");
    let r = api
        .call(
            "DELETE",
            "/v1/rotation-schedules/web11-daily",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = api
        .call(
            "DELETE",
            "/v1/rotation-schedules/web11-daily",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn a_target_that_refuses_every_new_password_gets_the_account_parked() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    t.deny_password_changes();
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web12",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let before = t.shadow_hash("app");

    // Generated passwords: a fresh one after each refusal, then parked for a person.
    let job = reset(&api, &root, &app, json!({"reason": "strict target"})).await;
    let it = item(&job);
    assert_eq!(it["state"], "parked", "{job}");
    assert_eq!(it["attempts"], 3, "{job}");
    assert!(
        it["detail"]
            .as_str()
            .unwrap()
            .contains("refused 3 generated passwords"),
        "{job}"
    );
    // A given password is not replaced by another: it fails at once.
    let body = json!({"reason": "given", "password": "Given-Pass-123!"});
    let job = reset(&api, &root, &app, body).await;
    assert_eq!(item(&job)["state"], "failed", "{job}");
    assert_eq!(item(&job)["attempts"], 1, "{job}");
    assert_eq!(t.shadow_hash("app"), before, "the target never changed");
    assert_eq!(stored_password(&api, &root, &app).await, "App-Pw-1");
    let audit = api
        .get(
            "/v1/audit?action=account.password.reset&outcome=failure",
            &root,
        )
        .await;
    assert!(audit.text.contains("parked"), "{}", audit.text);
}

#[tokio::test]
async fn a_resource_types_command_template_sets_passwords_its_own_way() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web1",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    // Proposed by root, approved by a second administrator; returns the type as it is then.
    let put = |body: Value| {
        let api = &api;
        let root = &root;
        async move {
            set_reset_command(api, root, "Linux", Some(body)).await;
            api.get("/v1/resource-types/Linux", root).await
        }
    };
    // A proposal that is refused before any approval.
    let propose = |body: Value, path: &'static str| {
        let api = &api;
        let root = &root;
        async move {
            let body = json!({"reset_command": body, "approver": "root"});
            api.call("PUT", path, Some(root), Some(body)).await
        }
    };
    let linux = api.get("/v1/resource-types/Linux", &root).await.json();
    assert_eq!(
        linux["reset_command"],
        json!({"program": "/usr/sbin/chpasswd", "args": [], "stdin": "{login}:{password}\n"}),
        "the default"
    );

    // Many accounts per run: chpasswd hashing with SHA-512 instead of the system's default.
    let sha512 = json!({"program": "/usr/sbin/chpasswd", "args": ["-c", "SHA512"],
        "stdin": "{login}:{password}\n"});
    let r = put(sha512.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["reset_command"], sha512, "in effect once approved");
    let job = reset(&api, &root, &app, json!({"reason": "template test"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    let pw1 = stored_password(&api, &root, &app).await;
    assert!(
        t.shadow_hash("app").starts_with("$6$"),
        "{}",
        t.shadow_hash("app")
    );
    assert!(logs_in(&t, "app", &pw1).await);

    // One run per account, the login as an argument (quoted for the shell) and the password
    // on stdin: the shape of FreeBSD's `pw usermod LOGIN -h 0`.
    let per_account = json!({"program": "/bin/sh", "args": ["-c",
        "IFS= read -r p && printf '%s:%s\\n' \"$1\" \"$p\" | /usr/sbin/chpasswd -c SHA256",
        "sh", "{login}"], "stdin": "{password}\n"});
    let r = put(per_account).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let job = reset(&api, &root, &app, json!({"reason": "template test"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    let pw2 = stored_password(&api, &root, &app).await;
    assert_ne!(pw1, pw2);
    assert!(
        t.shadow_hash("app").starts_with("$5$"),
        "{}",
        t.shadow_hash("app")
    );
    assert!(logs_in(&t, "app", &pw2).await);

    // A template that fails says which program and why, and changes nothing.
    let r = put(
        json!({"program": "/usr/sbin/no-such-program", "args": ["{login}"],
        "stdin": "{password}\n"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // (A given password: a generated one would be retried with fresh ones, then parked.)
    let body = json!({"reason": "template test", "password": "Given-Pass-123!"});
    let job = reset(&api, &root, &app, body).await;
    assert_eq!(item(&job)["state"], "failed", "{job}");
    let detail = item(&job)["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("no-such-program exited with status 127"),
        "{detail}"
    );
    assert_eq!(stored_password(&api, &root, &app).await, pw2);
    assert!(logs_in(&t, "app", &pw2).await);

    // A program that prints what it read: its error output is kept, the password is not.
    let r = put(
        json!({"program": "/bin/sh", "args": ["-c", "cat >&2; exit 3", "sh", "{login}"],
        "stdin": "{password}\n"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let echoed = "Echoed-Pass-123!";
    let body = json!({"reason": "template test", "password": echoed});
    let job = reset(&api, &root, &app, body).await;
    assert_eq!(item(&job)["state"], "failed", "{job}");
    let detail = item(&job)["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("sh exited with status 3: [redacted]"),
        "{detail}"
    );
    assert!(!job.to_string().contains(echoed), "{job}");

    // Refused: a password on the command line, a type that runs no command.
    let r = propose(
        json!({"program": "/usr/sbin/pw", "args": ["usermod", "{login}", "-w", "{password}"],
        "stdin": "{password}\n"}),
        "/v1/resource-types/Linux/reset-command",
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("reset_command.args[3]"), "{}", r.text);
    let r = propose(sha512, "/v1/resource-types/Kubernetes/reset-command").await;
    assert_eq!(r.status, 409, "{}", r.text);

    // Back to the default: chpasswd with the system's own hash (yescrypt on Debian).
    set_reset_command(&api, &root, "Linux", None).await;
    let job = reset(&api, &root, &app, json!({"reason": "template test"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    let pw3 = stored_password(&api, &root, &app).await;
    assert!(
        t.shadow_hash("app").starts_with("$y$"),
        "{}",
        t.shadow_hash("app")
    );
    assert!(logs_in(&t, "app", &pw3).await);

    // Every change of a template is audited, with the template (placeholders, no secret).
    let audit = api
        .get(
            "/v1/audit?action=resource-type.reset-command&limit=50",
            &root,
        )
        .await;
    assert_eq!(
        audit.json()["items"].as_array().map(Vec::len),
        Some(5),
        "{}",
        audit.text
    );
    let all_audit = api.get("/v1/audit?limit=500", &root).await;
    assert_eq!(all_audit.status, 200, "{}", all_audit.text);
    assert!(all_audit.text.contains("account.password.reset"));
    assert!(!all_audit.text.contains(echoed));
    assert!(!server.log_text().contains(echoed));
    for pw in [&pw1, &pw2, &pw3] {
        assert!(!audit.text.contains(pw.as_str()));
        assert!(!server.log_text().contains(pw.as_str()));
    }
}

#[tokio::test]
async fn updating_reset_settings_without_the_host_key_keeps_the_pin() {
    let mut t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, admin, app) = resource_for(
        &api,
        &root,
        &t,
        "web-pin",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let job = reset(&api, &root, &app, json!({"reason": "pins the key"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    let path = format!("/v1/resources/{rid}/reset-settings");
    let pinned = api.get(&path, &root).await.json()["ssh_host_key"].clone();
    assert!(pinned.as_str().unwrap().starts_with("SHA256:"), "{pinned}");

    // An update that leaves the key out (changing the policy, say) keeps the pin ...
    let body = json!({"admin_account_id": admin, "admin_kind": "root"});
    let r = api.call("PUT", &path, Some(&root), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["ssh_host_key"], pinned, "{}", r.text);
    // ... so a machine answering with another key still gets no admin password.
    let current = stored_password(&api, &root, &app).await;
    t.new_host_key();
    t.restart();
    let job = reset(&api, &root, &app, json!({"reason": "impostor"})).await;
    assert_eq!(item(&job)["state"], "failed", "{job}");
    assert!(
        item(&job)["detail"].as_str().unwrap().contains("host key"),
        "{job}"
    );
    assert_eq!(stored_password(&api, &root, &app).await, current);

    // Forgetting the pin takes an explicit null.
    let body = json!({"admin_account_id": admin, "ssh_host_key": null});
    let r = api.call("PUT", &path, Some(&root), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["ssh_host_key"].is_null(), "{}", r.text);
    let job = reset(&api, &root, &app, json!({"reason": "re-pins"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
}

#[tokio::test]
async fn a_kept_admin_session_is_never_lent_to_a_resource_with_another_password() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    // Two resources for the same host, port and admin login; only the first knows root's
    // password.
    let (_, _, app_a) = resource_for(
        &api,
        &root,
        &t,
        "same-host-a",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let (_, _, app_b) = resource_for(
        &api,
        &root,
        &t,
        "same-host-b",
        ("root", "Not-Roots-Password", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let job = reset(
        &api,
        &root,
        &app_a,
        json!({"reason": "opens a kept session"}),
    )
    .await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    let current = stored_password(&api, &root, &app_a).await;
    // Within the minute A's root session stays open, B's reset must log in itself, and fail.
    let job = reset(&api, &root, &app_b, json!({"reason": "must not borrow it"})).await;
    assert_eq!(item(&job)["state"], "failed", "{job}");
    assert!(
        item(&job)["detail"]
            .as_str()
            .unwrap()
            .contains("refused the password of 'root'"),
        "{job}"
    );
    assert!(logs_in(&t, "app", &current).await, "B changed nothing");
}

#[tokio::test]
async fn a_pre_reset_guard_that_cannot_run_stops_the_reset() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    let wasm = common::listeners::wasm_dir();
    publish_approved(
        &api,
        &root,
        dir.path(),
        &[(
            "change-freeze",
            wasm.join("change_freeze.wasm"),
            json!({"phases": ["pre-reset"], "modes": ["agentless"], "resource_types": ["Linux"],
                "order": 10, "parameters": ["DC1"]}),
        )],
    )
    .await;
    let (_, _, frozen) = resource_for(
        &api,
        &root,
        &t,
        "web-guarded",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        Some("DC1"),
    )
    .await;
    // A database writer flips one byte of the approved guard's stored component.
    let mut db = database(&server).await;
    let mut component: Vec<u8> = sqlx::query_scalar(
        "SELECT component FROM listener_versions WHERE id = \
         (SELECT current_version_id FROM listeners WHERE name = 'change-freeze')",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    *component.last_mut().unwrap() ^= 1;
    let done = sqlx::query(
        "UPDATE listener_versions SET component = $1 WHERE id = \
         (SELECT current_version_id FROM listeners WHERE name = 'change-freeze')",
    )
    .bind(component)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
    let before = t.shadow_hash("app");
    let job = reset(&api, &root, &frozen, json!({"reason": "during a freeze"})).await;
    let it = item(&job);
    assert_eq!(
        it["state"], "vetoed",
        "the reset never runs without its guard: {job}"
    );
    let detail = it["detail"].as_str().unwrap();
    assert!(
        detail.contains("change-freeze cannot run") && detail.contains("stops"),
        "{detail}"
    );
    assert_eq!(t.shadow_hash("app"), before);
    assert_eq!(stored_password(&api, &root, &frozen).await, "App-Pw-1");
    let audit = api.get("/v1/audit?action=listener.integrity", &root).await;
    assert!(audit.text.contains("change-freeze"), "{}", audit.text);

    // The approvers (root among them) and the uploader are told, once per alert, and it
    // shows in /metrics.
    let job = reset(&api, &root, &frozen, json!({"reason": "again"})).await;
    assert_eq!(item(&job)["state"], "vetoed", "{job}");
    let notes = api.get("/v1/notifications?limit=100", &root).await.json();
    let told = notes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n["kind"] == "listener-integrity"
                && n["message"].as_str().unwrap().contains("change-freeze")
        })
        .count();
    assert_eq!(told, 1, "{notes}");
    let metrics = api.get("/metrics", &root).await.text;
    let refusals: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lockstep_listener_integrity_refusals_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no integrity counter in:\n{metrics}"));
    assert!(refusals >= 2, "{metrics}");
}

#[tokio::test]
async fn a_command_template_needs_a_second_administrator_and_an_edited_one_never_runs() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web-template",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    // One administrator alone: a template that would copy every new password off the target.
    let thief = json!({"program": "/bin/sh", "args": ["-c",
        "tee /tmp/stolen | /usr/sbin/chpasswd -c SHA256", "sh", "{login}"],
        "stdin": "{login}:{password}\n"});
    let own = api
        .call(
            "PUT",
            "/v1/resource-types/Linux/reset-command",
            Some(&root),
            Some(json!({"reset_command": thief, "approver": "root"})),
        )
        .await;
    assert_eq!(
        own.status, 422,
        "no one approves their own template: {}",
        own.text
    );
    let helper = common::user_with_role(&api, &root, "helper", "admin").await;
    let r = api
        .call(
            "PUT",
            "/v1/resource-types/Linux/reset-command",
            Some(&root),
            Some(json!({"reset_command": thief, "approver": "helper"})),
        )
        .await;
    assert_eq!(r.status, 202, "a proposal, not a change: {}", r.text);
    assert_eq!(r.json()["kind"], "reset-command", "{}", r.text);
    assert_eq!(
        r.json()["reset_command"],
        thief,
        "the approver sees the template"
    );
    let change = r.json()["id"].as_str().unwrap().to_string();
    // Until it is approved, resets use the approved command (chpasswd).
    let job = reset(&api, &root, &app, json!({"reason": "before approval"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    let hash = t.shadow_hash("app");
    assert!(
        hash.starts_with("$y$"),
        "chpasswd's own hash, not the thief's $5$: {hash}"
    );
    let r = api
        .post(
            &format!("/v1/change-requests/{change}/reject"),
            &helper,
            json!({"comment": "copies passwords"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // An approved template, then a database writer swaps it for the thief.
    common::resets::set_reset_command(
        &api,
        &root,
        "Linux",
        Some(
            json!({"program": "/usr/sbin/chpasswd", "args": ["-c", "SHA512"],
            "stdin": "{login}:{password}\n"}),
        ),
    )
    .await;
    let job = reset(&api, &root, &app, json!({"reason": "approved template"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    let current = stored_password(&api, &root, &app).await;
    let mut db = database(&server).await;
    sqlx::query("UPDATE resource_types SET reset_command = $1 WHERE name = 'Linux'")
        .bind(thief.to_string())
        .execute(&mut db)
        .await
        .unwrap();
    let job = reset(&api, &root, &app, json!({"reason": "after the edit"})).await;
    let it = item(&job);
    assert_eq!(it["state"], "failed", "{job}");
    assert!(
        it["detail"]
            .as_str()
            .unwrap()
            .contains("does not match its approval"),
        "{job}"
    );
    assert_eq!(stored_password(&api, &root, &app).await, current);
    assert!(logs_in(&t, "app", &current).await);
    assert!(
        t.shadow_hash("app").starts_with("$6$"),
        "the edited template never ran"
    );
    let audit = api
        .get("/v1/audit?action=resource-type.integrity", &root)
        .await;
    assert!(audit.text.contains("Linux"), "{}", audit.text);
}

/// The server's SQLite database, opened beside it as a database writer would.
async fn database(server: &Server) -> sqlx::SqliteConnection {
    <sqlx::SqliteConnection as sqlx::Connection>::connect(&server.sqlite_url())
        .await
        .unwrap()
}

#[tokio::test]
async fn where_a_listener_runs_is_read_from_its_sealed_approval_only() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    // change-freeze, approved for Linux only, vetoes DC1. A vault-only account of type
    // Generic in DC1: listeners run for it, the vault changes.
    let acc = change_freeze_in_dc1(&api, &root, dir.path(), "Linux").await;
    let mut db = database(&server).await;

    // 1. An index row inserted by a database writer does not widen the listener to Generic.
    sqlx::query(
        "INSERT INTO listener_resource_types (listener_id, resource_type) \
         SELECT id, 'Generic' FROM listeners WHERE name = 'change-freeze'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let job = reset(
        &api,
        &root,
        &acc,
        json!({"reason": "not approved for Generic"}),
    )
    .await;
    assert_eq!(
        item(&job)["state"],
        "done",
        "it ran outside its approval: {job}"
    );
    let current = stored_password(&api, &root, &acc).await;

    // 2. Approved for Generic, then the index row deleted: the guard still runs.
    let approver = common::user_with_role(&api, &root, "approver2", "admin").await;
    let r = api
        .call(
            "PUT",
            "/v1/listeners/change-freeze/association",
            Some(&root),
            Some(
                json!({"association": {"phases": ["pre-reset"], "modes": ["agentless"],
                "resource_types": ["Generic"], "order": 10, "parameters": ["DC1"]},
                "approver": "approver2"}),
            ),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let change = r.json()["id"].as_str().unwrap().to_string();
    common::registry::approve(&api, &approver, &change).await;
    let done = sqlx::query(
        "DELETE FROM listener_resource_types WHERE listener_id = \
         (SELECT id FROM listeners WHERE name = 'change-freeze')",
    )
    .execute(&mut db)
    .await
    .unwrap();
    assert!(done.rows_affected() >= 1);
    let job = reset(&api, &root, &acc, json!({"reason": "index row deleted"})).await;
    assert_eq!(item(&job)["state"], "vetoed", "the guard was lifted: {job}");

    // 3. A status edited away from 'active' (the seal left in place) does not lift it either.
    sqlx::query("UPDATE listeners SET status = 'deleted' WHERE name = 'change-freeze'")
        .execute(&mut db)
        .await
        .unwrap();
    let job = reset(&api, &root, &acc, json!({"reason": "status edited"})).await;
    assert_eq!(item(&job)["state"], "vetoed", "the guard was lifted: {job}");
    sqlx::query("UPDATE listeners SET status = 'active' WHERE name = 'change-freeze'")
        .execute(&mut db)
        .await
        .unwrap();

    // 4. An edited association (the pre-reset phase removed) fails its seal: the reset stops.
    sqlx::query(
        "UPDATE listeners SET association = replace(association, 'pre-reset', 'post-reset') \
         WHERE name = 'change-freeze'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let job = reset(&api, &root, &acc, json!({"reason": "association edited"})).await;
    assert_eq!(item(&job)["state"], "vetoed", "{job}");
    assert!(
        item(&job)["detail"]
            .as_str()
            .unwrap()
            .contains("cannot run"),
        "{job}"
    );
    assert_eq!(stored_password(&api, &root, &acc).await, current);
    sqlx::query(
        "UPDATE listeners SET association = replace(association, 'post-reset', 'pre-reset') \
         WHERE name = 'change-freeze'",
    )
    .execute(&mut db)
    .await
    .unwrap();

    // 5. A renamed row (the name breaks ties in run order and keys agent tasks) is refused.
    sqlx::query("UPDATE listeners SET name = 'a-change-freeze' WHERE name = 'change-freeze'")
        .execute(&mut db)
        .await
        .unwrap();
    let job = reset(&api, &root, &acc, json!({"reason": "renamed"})).await;
    assert_eq!(item(&job)["state"], "vetoed", "{job}");
    assert!(
        item(&job)["detail"]
            .as_str()
            .unwrap()
            .contains("renamed in the database"),
        "{job}"
    );
    assert_eq!(stored_password(&api, &root, &acc).await, current);
}

/// Issue 15, "seals bind what runs" (b): a database writer lifts an approved pre-reset guard
/// without touching a seal, by clearing its seal along with its status, or by deleting its row
/// and its index rows. Before the registry ledger, resets then went ahead without it; now the
/// ledger still knows the guard and where it applies, so the reset stops.
#[tokio::test]
async fn a_pre_reset_guard_deleted_in_the_database_still_stops_the_reset() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    // change-freeze guards Generic resources in DC1 (it vetoes their resets).
    let acc = change_freeze_in_dc1(&api, &root, dir.path(), "Generic").await;
    let job = reset(&api, &root, &acc, json!({"reason": "guarded"})).await;
    assert_eq!(item(&job)["state"], "vetoed", "{job}");
    let mut db = database(&server).await;
    let stops = |job: &Value| {
        let it = item(job);
        let detail = it["detail"].as_str().unwrap_or_default();
        it["state"] == "vetoed"
            && detail.contains("change-freeze cannot run")
            && detail.contains("deleted in the database")
    };

    // 1. Its seal cleared along with its status: no seal fails, there is simply none.
    let (seal,): (String,) =
        sqlx::query_as("SELECT approval_seal FROM listeners WHERE name = 'change-freeze'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    sqlx::query(
        "UPDATE listeners SET status = 'deleted', approval_seal = NULL \
         WHERE name = 'change-freeze'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let job = reset(&api, &root, &acc, json!({"reason": "seal cleared"})).await;
    assert!(stops(&job), "the guard was lifted: {job}");
    sqlx::query(
        "UPDATE listeners SET status = 'active', approval_seal = $1 WHERE name = 'change-freeze'",
    )
    .bind(seal)
    .execute(&mut db)
    .await
    .unwrap();
    let job = reset(&api, &root, &acc, json!({"reason": "restored"})).await;
    assert_eq!(item(&job)["state"], "vetoed", "{job}");
    assert!(
        item(&job)["detail"].as_str().unwrap().contains("freeze"),
        "its own veto again: {job}"
    );

    // 2. Its row and index rows deleted (its versions too, so nothing dangles).
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut db)
        .await
        .unwrap();
    for sql in [
        "DELETE FROM listener_resource_types WHERE listener_id = \
         (SELECT id FROM listeners WHERE name = 'change-freeze')",
        "DELETE FROM listener_versions WHERE listener_id = \
         (SELECT id FROM listeners WHERE name = 'change-freeze')",
        "DELETE FROM listeners WHERE name = 'change-freeze'",
    ] {
        let done = sqlx::query(sql).execute(&mut db).await.unwrap();
        assert!(done.rows_affected() >= 1, "{sql}");
    }
    let job = reset(&api, &root, &acc, json!({"reason": "row deleted"})).await;
    assert!(stops(&job), "the guard was lifted: {job}");
    assert_eq!(
        stored_password(&api, &root, &acc).await,
        "Old-Pass-123!",
        "nothing changed"
    );
    let audit = api.get("/v1/audit?action=listener.integrity", &root).await;
    assert!(
        audit.text.contains("change-freeze") && audit.text.contains("deleted in the database"),
        "{}",
        audit.text
    );
    // Only where it applied: a Linux plan does not name it.
    let plan = api
        .get(
            "/v1/listener-plan?resource_type=Linux&phase=pre-reset&mode=agentless",
            &root,
        )
        .await;
    assert!(!plan.text.contains("change-freeze"), "{}", plan.text);
}

/// (d): a resource type's older reset-command template written back with its old, valid
/// seal never runs (before the registry ledger it ran as root on every target of the type);
/// nor does a deleted template fall back to chpasswd.
#[tokio::test]
async fn an_older_reset_command_restored_with_its_seal_never_runs() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, _, app) = resource_for(
        &api,
        &root,
        &t,
        "web-older-template",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    // The older template hashes with SHA-256 ($5$), the newer one with SHA-512 ($6$).
    let older = json!({"program": "/usr/sbin/chpasswd", "args": ["-c", "SHA256"],
        "stdin": "{login}:{password}\n"});
    let newer = json!({"program": "/usr/sbin/chpasswd", "args": ["-c", "SHA512"],
        "stdin": "{login}:{password}\n"});
    set_reset_command(&api, &root, "Linux", Some(older)).await;
    let mut db = database(&server).await;
    let (saved, seal): (String, String) = sqlx::query_as(
        "SELECT reset_command, reset_command_seal FROM resource_types WHERE name = 'Linux'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    set_reset_command(&api, &root, "Linux", Some(newer)).await;
    let job = reset(&api, &root, &app, json!({"reason": "the newer template"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    assert!(t.shadow_hash("app").starts_with("$6$"));
    let current = stored_password(&api, &root, &app).await;

    sqlx::query(
        "UPDATE resource_types SET reset_command = $1, reset_command_seal = $2 \
         WHERE name = 'Linux'",
    )
    .bind(saved)
    .bind(seal)
    .execute(&mut db)
    .await
    .unwrap();
    let job = reset(&api, &root, &app, json!({"reason": "older template back"})).await;
    let it = item(&job);
    assert_eq!(it["state"], "failed", "{job}");
    let detail = it["detail"].as_str().unwrap();
    assert!(
        detail.contains("older than") && detail.contains("registry ledger"),
        "{job}"
    );
    assert_eq!(stored_password(&api, &root, &app).await, current);
    assert!(logs_in(&t, "app", &current).await);
    assert!(
        t.shadow_hash("app").starts_with("$6$"),
        "the older template never ran"
    );
    let audit = api
        .get("/v1/audit?action=resource-type.integrity", &root)
        .await;
    assert!(
        audit.text.contains("Linux") && audit.text.contains("registry ledger"),
        "{}",
        audit.text
    );

    // The template deleted: the type does not fall back to chpasswd.
    sqlx::query(
        "UPDATE resource_types SET reset_command = NULL, reset_command_seal = NULL \
         WHERE name = 'Linux'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let job = reset(&api, &root, &app, json!({"reason": "template deleted"})).await;
    let it = item(&job);
    assert_eq!(it["state"], "failed", "{job}");
    assert!(
        it["detail"].as_str().unwrap().contains("is missing"),
        "{job}"
    );
    assert!(t.shadow_hash("app").starts_with("$6$"));
}

#[tokio::test]
async fn a_type_whose_systems_have_no_chpasswd_runs_nothing_until_it_has_a_template() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, _, app) = resource_for(
        &api,
        &root,
        &t,
        "switch1",
        ("root", "Root-Pw-1", "root"),
        "App-Pw-1",
        None,
    )
    .await;
    let r = api
        .call(
            "PATCH",
            &format!("/v1/resources/{rid}"),
            Some(&root),
            Some(json!({"resource_type": "CiscoIOS"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ios = api.get("/v1/resource-types/CiscoIOS", &root).await.json();
    assert_eq!(ios["reset_method"], "ssh", "{ios}");
    assert_eq!(ios["reset_command"], Value::Null, "no default: {ios}");
    let before = t.shadow_hash("app");
    let job = reset(&api, &root, &app, json!({"reason": "no template yet"})).await;
    assert_eq!(item(&job)["state"], "failed", "{job}");
    let detail = item(&job)["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("has no reset command") && detail.contains("reset-command"),
        "{job}"
    );
    assert_eq!(t.shadow_hash("app"), before, "nothing ran on the target");

    // Once a second administrator approves a template for the type, it runs.
    set_reset_command(
        &api,
        &root,
        "CiscoIOS",
        Some(json!({"program": "/usr/sbin/chpasswd", "args": [], "stdin": "{login}:{password}\n"})),
    )
    .await;
    let job = reset(&api, &root, &app, json!({"reason": "with a template"})).await;
    assert_eq!(item(&job)["state"], "done", "{job}");
    assert_ne!(t.shadow_hash("app"), before);
}
