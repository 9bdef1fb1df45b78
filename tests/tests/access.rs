//! Access control end to end (`docs/access-control.md`): a real `lockstep` server, real users
//! with their own tokens, a real OpenSSH target whose password a checkout hands out and whose
//! check-in rotates it. The adversaries: the requester approving alone (directly, or through an
//! account they created), a second user during someone's window, a database writer without the
//! master key granting or stretching a checkout, and a server killed while a window is open.

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::registry::change_freeze_in_dc1;
use common::resets::{logs_in, register, stored_password, users, wait_finished};
use common::sshd::SshTarget;
use common::{Api, Server, api_user, audit_events, resource_with_account, user_with_role};
use serde_json::{Value, json};

async fn set_policy(api: &Api, root: &str, scope: &str, id: &str, body: Value) {
    let r = api
        .call(
            "PUT",
            &format!("/v1/access-policies/{scope}/{id}"),
            Some(root),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn request(api: &Api, token: &str, account: &str, minutes: i64) -> common::Reply {
    api.post(
        &format!("/v1/accounts/{account}/checkouts"),
        token,
        json!({"reason": "fix the nightly export", "minutes": minutes}),
    )
    .await
}

async fn retrieve(api: &Api, token: &str, account: &str) -> common::Reply {
    api.post(
        &format!("/v1/accounts/{account}/password/retrieve"),
        token,
        json!({"reason": "during my checkout"}),
    )
    .await
}

async fn act(api: &Api, token: &str, checkout: &str, verb: &str) -> common::Reply {
    api.post(
        &format!("/v1/checkouts/{checkout}/{verb}"),
        token,
        json!({}),
    )
    .await
}

/// Waits until the checkout's rotation has finished; returns the checkout.
async fn rotated(api: &Api, token: &str, checkout: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let c = api.get(&format!("/v1/checkouts/{checkout}"), token).await;
        assert_eq!(c.status, 200, "{}", c.text);
        let c = c.json();
        if let Some(job) = c["rotation"]["job_id"].as_str() {
            wait_finished(api, token, job, limit).await;
            return api
                .get(&format!("/v1/checkouts/{checkout}"), token)
                .await
                .json();
        }
        assert!(Instant::now() < deadline, "no rotation started: {c}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_checkout_approved_by_a_second_person_is_held_alone_and_rotated_on_check_in() {
    let t = SshTarget::start("Root-Pw-1", &users(1));
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let accounts = register(&api, &root, &t, "db1", 1).await;
    let app = accounts[0].0.clone();
    let rid = api.get(&format!("/v1/accounts/{app}"), &root).await.json()["resource_id"]
        .as_str()
        .unwrap()
        .to_string();
    // amy administers users (so she can make a second account of her own); bob and carl are
    // independent people; amy2 is the account amy made herself.
    let amy = user_with_role(&api, &root, "amy", "admin").await;
    let bob = user_with_role(&api, &root, "bob", "auditor").await;
    let carl = user_with_role(&api, &root, "carl", "password-user").await;
    let amy2 = api_user(&api, &amy, "amy2", "auditor").await;
    set_policy(
        &api,
        &root,
        "resource",
        &rid,
        json!({"approvers": ["amy2", "bob", "carl"], "approvals_needed": 1, "max_minutes": 30}),
    )
    .await;
    let policy = api
        .get(&format!("/v1/accounts/{app}/access-policy"), &root)
        .await
        .json();
    assert_eq!(policy["scope"], "resource", "{policy}");

    // Under access control, nobody retrieves without a checkout, not even the root admin.
    for token in [&amy, &carl, &root] {
        let r = retrieve(&api, token, &app).await;
        assert_eq!(r.status, 403, "{}", r.text);
        assert!(r.text.contains("/checkouts"), "{}", r.text);
    }
    let r = request(&api, &amy, &app, 45).await;
    assert_eq!(r.status, 422, "longer than the policy allows: {}", r.text);
    // The walk from request to rotated password, timed for the record (`--nocapture`).
    let start = Instant::now();
    let mut timeline: Vec<(&str, Duration)> = Vec::new();
    let r = request(&api, &amy, &app, 10).await;
    assert_eq!(r.status, 201, "{}", r.text);
    timeline.push(("requested (201)", start.elapsed()));
    let checkout = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["state"], "requested");
    let asked = api.get("/v1/notifications", &bob).await.text;
    assert!(asked.contains(&checkout), "bob is asked: {asked}");
    let r = request(&api, &amy, &app, 10).await;
    assert_eq!(r.status, 409, "one open request each: {}", r.text);

    // amy cannot approve her own request, neither herself nor through the account she made.
    let r = act(&api, &amy, &checkout, "approve").await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = act(&api, &amy2, &checkout, "approve").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("not be independent"), "{}", r.text);
    let r = retrieve(&api, &amy, &app).await;
    assert_eq!(r.status, 403, "not granted yet: {}", r.text);
    let denied = audit_events(&api, &root, "access.checkout.approve").await;
    assert_eq!(
        denied.iter().filter(|e| e["outcome"] == "denied").count(),
        2,
        "{denied:?}"
    );

    // bob's approval grants the window.
    let r = act(&api, &bob, &checkout, "approve").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let granted = r.json();
    assert_eq!(granted["state"], "checked-out", "{granted}");
    timeline.push(("approved by bob: checked out", start.elapsed()));
    let ends = granted["ends_at"].as_str().unwrap().to_string();
    let seen = retrieve(&api, &amy, &app).await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    timeline.push(("password retrieved by amy", start.elapsed()));
    let seen = seen.json()["password"].as_str().unwrap().to_string();
    assert_eq!(seen, "Start-Pw-1");
    assert!(logs_in(&t, "u01", &seen).await, "the holder logs in");
    timeline.push(("amy logged in to the target with it", start.elapsed()));

    // Nobody else gets it while amy holds it: the refusal names her and the end.
    let r = retrieve(&api, &carl, &app).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.text.contains("amy") && r.text.contains(&ends),
        "{}",
        r.text
    );
    let r = request(&api, &carl, &app, 5).await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = act(&api, &carl, &checkout, "checkin").await;
    assert_eq!(r.status, 403, "only the holder checks in: {}", r.text);

    // Check-in rotates: the password amy saw no longer logs in.
    let r = act(&api, &amy, &checkout, "checkin").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["end_kind"], "holder");
    timeline.push(("checked in (rotation job started)", start.elapsed()));
    let done = rotated(&api, &root, &checkout, Duration::from_secs(60)).await;
    timeline.push(("rotation done (chpasswd, verified login)", start.elapsed()));
    assert_eq!(done["state"], "checked-in", "{done}");
    assert_eq!(done["rotation"]["state"], "done", "{done}");
    let job = api
        .get(
            &format!(
                "/v1/reset-jobs/{}",
                done["rotation"]["job_id"].as_str().unwrap()
            ),
            &root,
        )
        .await
        .json();
    assert_eq!(job["trigger"], "check-in", "{job}");
    assert!(
        !logs_in(&t, "u01", &seen).await,
        "the seen password is dead"
    );
    timeline.push((
        "the password amy saw is refused by the target",
        start.elapsed(),
    ));
    for (step, at) in &timeline {
        eprintln!(
            "checkout timeline: {:>8.1} ms  {step}",
            at.as_secs_f64() * 1000.0
        );
    }
    let r = retrieve(&api, &amy, &app).await;
    assert_eq!(r.status, 403, "the window is over: {}", r.text);

    // The next holder gets the rotated password, and it logs in.
    let r = request(&api, &carl, &app, 5).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let second = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(act(&api, &bob, &second, "approve").await.status, 200);
    let new = stored_password(&api, &carl, &app).await;
    assert_ne!(new, seen);
    assert!(logs_in(&t, "u01", &new).await);

    // Every transition is in the trail, and no password is.
    for action in [
        "access.policy.set",
        "access.checkout.request",
        "access.checkout.start",
        "access.checkout.checkin",
    ] {
        assert!(
            !audit_events(&api, &root, action).await.is_empty(),
            "{action}"
        );
    }
    let trail = api.get("/v1/audit?limit=500", &root).await.text;
    assert!(!trail.contains(&new) && !trail.contains("Start-Pw-1"));
    assert!(!server.log_text().contains(&new));
}

#[tokio::test]
async fn a_window_left_open_across_a_killed_server_still_ends_and_rotates() {
    let mut server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, acc) =
        resource_with_account(&api, &root, "vault1", "Generic", "svc", "Old-Pass-123!").await;
    let amy = user_with_role(&api, &root, "amy", "password-user").await;
    set_policy(
        &api,
        &root,
        "account",
        &acc,
        json!({"approvals_needed": 0, "max_minutes": 1}),
    )
    .await;
    let r = request(&api, &amy, &acc, 1).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json()["state"],
        "checked-out",
        "granted at once: {}",
        r.text
    );
    let checkout = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(retrieve(&api, &amy, &acc).await.status, 200);

    // The server dies with the window open, and stays down past its end.
    server.kill();
    tokio::time::sleep(Duration::from_secs(62)).await;
    server.restart();
    let api = Api::new(&server);
    let done = rotated(&api, &root, &checkout, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "checked-in", "{done}");
    assert_eq!(done["end_kind"], "expired", "{done}");
    assert_eq!(done["rotation"]["state"], "done", "{done}");
    let r = retrieve(&api, &amy, &acc).await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Ended and rotated once.
    assert_eq!(
        audit_events(&api, &root, "access.checkout.checkin")
            .await
            .len(),
        1
    );
    let jobs = audit_events(&api, &root, "account.password.reset.request").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    // Without the policy the root admin reads the vault: the password changed.
    let r = api
        .call(
            "DELETE",
            &format!("/v1/access-policies/account/{acc}"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_ne!(stored_password(&api, &root, &acc).await, "Old-Pass-123!");
}

#[tokio::test]
async fn a_database_writer_can_neither_grant_a_checkout_nor_stretch_a_window() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, acc) =
        resource_with_account(&api, &root, "vault1", "Generic", "svc", "Old-Pass-123!").await;
    let amy = user_with_role(&api, &root, "amy", "password-user").await;
    let carl = user_with_role(&api, &root, "carl", "password-user").await;
    let bob = user_with_role(&api, &root, "bob", "auditor").await;
    set_policy(
        &api,
        &root,
        "account",
        &acc,
        json!({"approvers": ["bob"], "approvals_needed": 1, "max_minutes": 5, "exclusive": false}),
    )
    .await;
    let mut db = common::database_writer(&server.sqlite_url()).await;

    // A request stretched (or made shared, or given approvals) in the database before its
    // approval: the approver's approval is refused instead of sealing the stretched terms.
    let r = request(&api, &carl, &acc, 5).await;
    let stretched = r.json()["id"].as_str().unwrap().to_string();
    sqlx::query("UPDATE checkouts SET minutes = 525600 WHERE id = $1")
        .bind(&stretched)
        .execute(&mut db)
        .await
        .unwrap();
    let r = act(&api, &bob, &stretched, "approve").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("not the one sealed"), "{}", r.text);
    assert_eq!(act(&api, &carl, &stretched, "withdraw").await.status, 200);

    // carl asks, and writes the grant himself: no seal, no password.
    let r = request(&api, &carl, &acc, 5).await;
    let carls = r.json()["id"].as_str().unwrap().to_string();
    sqlx::query(
        "UPDATE checkouts SET state = 'checked-out', starts_at = requested_at, \
         ends_at = '2999-01-01T00:00:00.000000Z' WHERE id = $1",
    )
    .bind(&carls)
    .execute(&mut db)
    .await
    .unwrap();
    let r = retrieve(&api, &carl, &acc).await;
    assert_eq!(r.status, 403, "{}", r.text);

    // amy's real grant, then her window stretched, or her seal copied onto carl's checkout.
    let r = request(&api, &amy, &acc, 5).await;
    let amys = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(act(&api, &bob, &amys, "approve").await.status, 200);
    assert_eq!(retrieve(&api, &amy, &acc).await.status, 200);
    sqlx::query(
        "UPDATE checkouts SET (starts_at, ends_at, grant_seal) = \
         (SELECT starts_at, ends_at, grant_seal FROM checkouts WHERE id = $1) WHERE id = $2",
    )
    .bind(&amys)
    .bind(&carls)
    .execute(&mut db)
    .await
    .unwrap();
    let r = retrieve(&api, &carl, &acc).await;
    assert_eq!(r.status, 403, "a copied seal names amy: {}", r.text);
    sqlx::query("UPDATE checkouts SET ends_at = '2999-01-01T00:00:00.000000Z' WHERE id = $1")
        .bind(&amys)
        .execute(&mut db)
        .await
        .unwrap();
    let r = retrieve(&api, &amy, &acc).await;
    assert_eq!(
        r.status, 403,
        "a stretched window grants nothing: {}",
        r.text
    );
    let refused = audit_events(&api, &root, "account.password.retrieve").await;
    assert_eq!(
        refused.iter().filter(|e| e["outcome"] == "denied").count(),
        3,
        "{refused:?}"
    );

    // The policy itself: edited to need no approval, or deleted, it shuts the account instead
    // of opening it, and says why.
    sqlx::query("UPDATE access_policies SET approvals_needed = 0")
        .execute(&mut db)
        .await
        .unwrap();
    let r = request(&api, &carl, &acc, 5).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("not the one sealed"), "{}", r.text);
    sqlx::query("DELETE FROM access_policies")
        .execute(&mut db)
        .await
        .unwrap();
    for token in [&carl, &root] {
        let r = retrieve(&api, token, &acc).await;
        assert_eq!(r.status, 403, "a deleted policy opens nothing: {}", r.text);
        assert!(r.text.contains("deleted in the database"), "{}", r.text);
    }
    let alerts = audit_events(&api, &root, "access.policy.integrity").await;
    assert_eq!(alerts.len(), 2, "one alert per refused state: {alerts:?}");
    // An administrator sets it again: the account opens to its holders only, as before.
    set_policy(
        &api,
        &root,
        "account",
        &acc,
        json!({"approvals_needed": 0, "max_minutes": 5}),
    )
    .await;
    let r = request(&api, &root, &acc, 5).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let roots = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(retrieve(&api, &root, &acc).await.status, 200);
    let r = retrieve(&api, &carl, &acc).await;
    assert_eq!(r.status, 409, "root holds it alone: {}", r.text);

    // A held checkout told in the database not to rotate is rotated all the same: its grant
    // says it rotates, and the return writes what the grant says.
    sqlx::query("UPDATE checkouts SET rotate_on_checkin = 0 WHERE id = $1")
        .bind(&roots)
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(act(&api, &root, &roots, "checkin").await.status, 200);
    let done = rotated(&api, &root, &roots, Duration::from_secs(60)).await;
    assert_eq!(done["rotation"]["state"], "done", "{done}");
    assert_eq!(done["rotate_on_checkin"], true, "{done}");
}

#[tokio::test]
async fn a_rotation_vetoed_on_check_in_leaves_the_account_flagged_until_it_is_reset() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    // change-freeze vetoes every reset of Generic accounts in DC1.
    let acc = change_freeze_in_dc1(&api, &root, dir.path(), "Generic").await;
    let amy = user_with_role(&api, &root, "amy", "password-user").await;
    set_policy(
        &api,
        &root,
        "resource-type",
        "Generic",
        json!({"approvals_needed": 0, "max_minutes": 10}),
    )
    .await;
    let r = request(&api, &amy, &acc, 10).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let checkout = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(act(&api, &amy, &checkout, "checkin").await.status, 200);
    let done = rotated(&api, &root, &checkout, Duration::from_secs(60)).await;
    assert_eq!(done["rotation"]["state"], "vetoed", "{done}");

    // The password amy held is still the account's: nobody checks it out until it is reset.
    let r = request(&api, &amy, &acc, 10).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.text.contains("vetoed") && r.text.contains("/reset"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn a_reset_cannot_hand_its_caller_the_password_of_an_account_under_access_control() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, acc) =
        resource_with_account(&api, &root, "vault1", "Generic", "svc", "Old-Pass-123!").await;
    let amy = user_with_role(&api, &root, "amy", "password-user").await;
    set_policy(
        &api,
        &root,
        "account",
        &acc,
        json!({"approvals_needed": 0, "max_minutes": 10}),
    )
    .await;
    // A reset with a password of the caller's choosing would be a retrieval without a checkout.
    let chosen = json!({"reason": "set a known one", "password": "Chosen-Pass-123!"});
    let r = api
        .post(&format!("/v1/accounts/{acc}/reset"), &root, chosen.clone())
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("under access control"), "{}", r.text);
    let mut bulk = chosen.clone();
    bulk["accounts"] = json!([acc]);
    let r = api.post("/v1/reset-jobs", &root, bulk).await;
    assert_eq!(r.status, 403, "{}", r.text);
    // A generated one is fine: nobody learns it.
    let r = api
        .post(
            &format!("/v1/accounts/{acc}/reset"),
            &root,
            json!({"reason": "rotate"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job = r.json()["id"].as_str().unwrap().to_string();
    wait_finished(&api, &root, &job, Duration::from_secs(60)).await;

    // An account with an open checkout is not deleted from under it.
    let r = request(&api, &amy, &acc, 10).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = api
        .call("DELETE", &format!("/v1/accounts/{acc}"), Some(&root), None)
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("checkout"), "{}", r.text);
    assert_eq!(act(&api, &amy, &id, "checkin").await.status, 200);
    rotated(&api, &root, &id, Duration::from_secs(60)).await;
    let r = api
        .call("DELETE", &format!("/v1/accounts/{acc}"), Some(&root), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

#[tokio::test]
async fn policies_are_checked_and_the_narrowest_scope_decides() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (rid, acc) =
        resource_with_account(&api, &root, "vault1", "Generic", "svc", "Old-Pass-123!").await;
    let r = api
        .call(
            "PUT",
            &format!("/v1/access-policies/resource/{rid}"),
            Some(&root),
            Some(json!({"approvers": ["nobody"], "approvals_needed": 2, "max_minutes": 0})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let body = r.json();
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["approvals_needed", "max_minutes", "approvers"],
        "{}",
        r.text
    );
    let r = api
        .call(
            "PUT",
            "/v1/access-policies/group/x",
            Some(&root),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = api
        .call(
            "PUT",
            "/v1/access-policies/account/acc_nope",
            Some(&root),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);

    // A resource's policy holds its accounts; the account's own `enabled: false` lifts it.
    set_policy(&api, &root, "resource", &rid, json!({"max_minutes": 5})).await;
    assert_eq!(retrieve(&api, &root, &acc).await.status, 403);
    set_policy(&api, &root, "account", &acc, json!({"enabled": false})).await;
    assert_eq!(retrieve(&api, &root, &acc).await.status, 200);
    let r = api
        .get(&format!("/v1/accounts/{acc}/access-policy"), &root)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.json()["scope"], &r.json()["enabled"]),
        (&json!("account"), &json!(false)),
        "the override that lifts it: {}",
        r.text
    );
    let r = request(&api, &root, &acc, 5).await;
    assert_eq!(r.status, 409, "not under access control: {}", r.text);
    let r = api.get("/v1/checkouts?state=borrowed", &root).await;
    assert_eq!(r.status, 422, "{}", r.text);
}

#[tokio::test]
async fn the_cli_walks_a_checkout_from_request_to_rotation() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, acc) =
        resource_with_account(&api, &root, "vault1", "Generic", "svc", "Old-Pass-123!").await;
    let amy = user_with_role(&api, &root, "amy", "password-user").await;
    let bob = user_with_role(&api, &root, "bob", "auditor").await;
    set_policy(
        &api,
        &root,
        "account",
        &acc,
        json!({"approvers": ["bob"], "approvals_needed": 1, "max_minutes": 20}),
    )
    .await;
    let cli = |token: &str, args: &[&str]| {
        let mut all = vec!["checkout"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &api.base]);
        common::lockstep_env(&all, &[("LOCKSTEP_TOKEN", token)])
    };
    let (status, out, err) = cli(
        &amy,
        &[
            "request",
            &acc,
            "--reason",
            "rotate the app's key",
            "--minutes",
            "15",
        ],
    );
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("requested") && out.contains("approvals 0/1 (from bob)"),
        "{out}"
    );
    let id = out.split_whitespace().next().unwrap().to_string();
    let (status, _, err) = cli(&amy, &["approve", &id]);
    assert!(!status.success());
    assert!(err.contains("cannot approve it"), "{err}");
    let (status, out, err) = cli(&bob, &["approve", &id]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("checked-out") && out.contains("until"),
        "{out}"
    );
    let (status, out, err) = cli(&amy, &["password", &id]);
    assert!(status.success(), "{out}{err}");
    assert_eq!(out.trim(), "Old-Pass-123!");
    let (status, out, _) = cli(&bob, &["list", "--state", "checked-out"]);
    assert!(status.success() && out.contains(&id), "{out}");
    let (status, out, err) = cli(&amy, &["checkin", &id]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("checked-in") && out.contains("holder"),
        "{out}"
    );
    let done = rotated(&api, &root, &id, Duration::from_secs(60)).await;
    assert_eq!(done["rotation"]["state"], "done", "{done}");
    let (status, out, _) = cli(&amy, &["show", &id]);
    assert!(status.success() && out.contains("done"), "{out}");
    let (status, _, err) = cli(&amy, &["password", &id]);
    assert!(!status.success() && err.contains("403"), "{err}");
}

#[tokio::test]
async fn a_request_inside_an_auto_approval_window_is_granted_without_approval() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (_, acc) =
        resource_with_account(&api, &root, "vault1", "Generic", "svc", "Old-Pass-123!").await;
    let (_, other) =
        resource_with_account(&api, &root, "vault2", "Generic", "svc", "Old-Pass-456!").await;
    let amy = user_with_role(&api, &root, "amy", "password-user").await;
    user_with_role(&api, &root, "bob", "auditor").await;
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    // Today (UTC) is days[today]; the second policy's window is on every other day only.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // Not in the last minute of a day: the day must not change under the test.
    if now() % 86_400 > 86_340 {
        tokio::time::sleep(Duration::from_secs(86_400 - now() % 86_400 + 1)).await;
    }
    // 1970-01-01 was a Thursday (index 3).
    let today = ((now() / 86_400 + 3) % 7) as usize;
    let others: Vec<&str> = (1..7).map(|i| days[(today + i) % 7]).collect();
    let all_week = json!([{"days": days, "from": "00:00", "to": "24:00"}]);
    let not_today = json!([{"days": others, "from": "00:00", "to": "24:00"}]);
    for (account, windows) in [(&acc, all_week), (&other, not_today)] {
        set_policy(
            &api,
            &root,
            "account",
            account,
            json!({"approvers": ["bob"], "approvals_needed": 1, "max_minutes": 10,
                "auto_approve": windows}),
        )
        .await;
    }
    let r = request(&api, &amy, &acc, 10).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json()["state"],
        "checked-out",
        "inside the window: {}",
        r.text
    );
    assert_eq!(retrieve(&api, &amy, &acc).await.status, 200);
    let events = audit_events(&api, &root, "access.checkout.request").await;
    assert!(
        events[0]["detail"]["auto_approved"]["days"].is_array(),
        "the window that granted it is audited: {events:?}"
    );
    let r = request(&api, &amy, &other, 10).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json()["state"],
        "requested",
        "outside the window: {}",
        r.text
    );
    // A window that cannot be read is refused with the field that holds it.
    let r = api
        .call(
            "PUT",
            &format!("/v1/access-policies/account/{acc}"),
            Some(&root),
            Some(json!({"auto_approve": [{"days": ["mon"], "from": "18:00", "to": "06:00"}]})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json()["errors"][0]["field"], "auto_approve[0]");
}
