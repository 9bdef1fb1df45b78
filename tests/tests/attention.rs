//! The attention queue end to end (`docs/resets.md`, "The attention queue"): a real server and
//! a real OpenSSH target whose reset command sets a password nobody chose, so the target
//! refuses both the stored and the new password. The account waits in the queue until a person
//! proves which kept password the target accepts; an auditor can read the queue but not act on
//! it; a parked account leaves the queue when the reset its entry names succeeds. On SQLite
//! and PostgreSQL: repeated vetoes past the server's limit, and a checkout whose rotation was
//! vetoed, paged one entry at a time across kinds.

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::registry::change_freeze_in_dc1;
use common::resets::{logs_in, register, set_reset_command, stored_password, users, wait_finished};
use common::sshd::SshTarget;
use common::{
    Api, Server, ServerOptions, audit_events, lockstep_as, postgres_database, user_with_role,
};
use serde_json::{Value, json};

/// The queue's entries (every page, one entry a page), optionally of one kind.
async fn queue(api: &Api, token: &str, kind: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!(
            "/v1/attention?limit=1{}",
            kind.map(|k| format!("&kind={k}")).unwrap_or_default()
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = api.get(&path, token).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.json();
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return out,
        }
    }
}

/// Resets `account` (with `password`, or a generated one) and returns its finished item.
async fn reset(api: &Api, token: &str, account: &str, password: Option<&str>) -> Value {
    let mut body = json!({"reason": "attention queue test"});
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    let r = api
        .post(&format!("/v1/accounts/{account}/reset"), token, body)
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job = wait_finished(
        api,
        token,
        r.json()["id"].as_str().unwrap(),
        Duration::from_secs(120),
    )
    .await;
    job["items"][0].clone()
}

/// Waits until `/metrics` (which rereads its counts every 5 s) shows `line`.
async fn metrics_show(api: &Api, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api.call("GET", "/metrics", None, None).await;
        if r.text.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{line}` in:\n{}", r.text);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn an_out_of_sync_account_waits_until_the_target_proves_which_kept_password_it_holds() {
    let t = SshTarget::start("Root-Pw-1", &users(2));
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let accounts = register(&api, &root, &t, "drifting", 2).await;
    let (acc, login) = (accounts[0].0.clone(), accounts[0].1.clone());
    let (other, other_login) = (accounts[1].0.clone(), accounts[1].1.clone());
    let auditor = user_with_role(&api, &root, "ann", "auditor").await;

    // The command sets a password nobody chose, then fails: the target now refuses both the
    // stored and the new password.
    set_reset_command(
        &api,
        &root,
        "Linux",
        Some(json!({"program": "/bin/sh", "args": ["-c",
            "IFS= read -r p && printf '%s:%s\\n' \"$1\" 'Nobody-Chose-9!' | /usr/sbin/chpasswd; exit 1",
            "sh", "{login}"], "stdin": "{password}\n"})),
    )
    .await;
    let given = "Given-Pass-4242!";
    let item = reset(&api, &root, &acc, Some(given)).await;
    assert_eq!(item["state"], "out-of-sync", "{item}");

    // Listed, with what it allows, for anyone who may read the inventory; counted in /metrics.
    let listed = queue(&api, &auditor, None).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let e = &listed[0];
    assert_eq!(e["id"], format!("out-of-sync/{acc}"), "{e}");
    assert_eq!(e["kind"], "out-of-sync", "{e}");
    assert_eq!(e["item_id"], item["id"], "{e}");
    assert_eq!(e["kept_passwords"], 1, "the new password is kept: {e}");
    assert_eq!(e["login_name"], login.as_str(), "{e}");
    let actions: Vec<(&str, &str)> = e["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["path"].as_str().unwrap()))
        .collect();
    let resolve_path = format!("/v1/accounts/{acc}/resolve");
    assert_eq!(
        actions,
        [
            ("resolve", resolve_path.as_str()),
            ("retry-reset", format!("/v1/accounts/{acc}/reset").as_str())
        ]
    );
    metrics_show(&api, "lockstep_attention{kind=\"out-of-sync\"} 1").await;
    let text = serde_json::to_string(&listed).unwrap();
    assert!(
        !text.contains(given) && !text.contains("Start-Pw-1"),
        "{text}"
    );

    // An auditor reads the queue but cannot act on it; bad requests say what is wrong.
    let why = json!({"reason": "the service desk restored it"});
    let r = api.post(&resolve_path, &auditor, why.clone()).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = api.post(&resolve_path, &root, json!({"reason": ""})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = api
        .post("/v1/accounts/acc_nobody/resolve", &root, why.clone())
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    for bad in ["kind=stuck", "cursor=bm90LWEta2luZC94"] {
        let r = api.get(&format!("/v1/attention?{bad}"), &root).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
    }

    // Nothing proven while the target holds a password Lockstep never set: nothing changes.
    let (st, out, err) = lockstep_as(
        &api,
        &root,
        &["attention", "resolve", &acc, "--reason", "first look"],
    );
    assert!(!st.success(), "{out}");
    assert!(
        err.contains("accepts none of the 2 password(s)") && err.contains("/reset"),
        "{err}"
    );
    assert_eq!(queue(&api, &root, Some("out-of-sync")).await.len(), 1);
    assert_eq!(stored_password(&api, &root, &acc).await, "Start-Pw-1");

    // A database writer re-points the out-of-sync reset at another account whose target
    // password is that reset's, and marks it out-of-sync: resolving it must not try one
    // account's password on another's target (the kept password opens only for its own).
    t.change_password_locally(&other_login, given);
    let mut db = common::database_writer(&server.sqlite_url()).await;
    let repoint = |to: &str, from: &str| {
        sqlx::query("UPDATE reset_items SET account_id = $1 WHERE account_id = $2")
            .bind(to.to_string())
            .bind(from.to_string())
    };
    repoint(&other, &acc).execute(&mut db).await.unwrap();
    sqlx::query("UPDATE accounts SET password_sync_status = 'out-of-sync' WHERE id = $1")
        .bind(&other)
        .execute(&mut db)
        .await
        .unwrap();
    let r = api
        .post(&format!("/v1/accounts/{other}/resolve"), &root, why.clone())
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("1 kept for it did not open"), "{}", r.text);
    assert_eq!(stored_password(&api, &root, &other).await, "Start-Pw-1");
    repoint(&acc, &other).execute(&mut db).await.unwrap();
    sqlx::query("UPDATE accounts SET password_sync_status = 'in-sync' WHERE id = $1")
        .bind(&other)
        .execute(&mut db)
        .await
        .unwrap();
    drop(db);

    // A person sets the target to the password the failed reset chose; resolving proves it,
    // and the vault takes it.
    t.change_password_locally(&login, given);
    let (st, out, err) = lockstep_as(
        &api,
        &root,
        &[
            "attention",
            "resolve",
            &acc,
            "--reason",
            "the service desk restored it",
        ],
    );
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("accepts the kept password"), "{out}");
    assert_eq!(stored_password(&api, &root, &acc).await, given);
    assert!(logs_in(&t, &login, given).await);
    assert!(queue(&api, &root, None).await.is_empty());
    metrics_show(&api, "lockstep_attention{kind=\"out-of-sync\"} 0").await;
    let r = api.post(&resolve_path, &root, why.clone()).await;
    assert_eq!(
        r.status, 409,
        "an account in sync has nothing to resolve: {}",
        r.text
    );

    // Again, and this time the person puts the stored password back: the vault was right.
    let item = reset(&api, &root, &acc, None).await;
    assert_eq!(item["state"], "out-of-sync", "{item}");
    t.change_password_locally(&login, given);
    let r = api.post(&resolve_path, &root, why.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let done = r.json();
    assert_eq!(done["accepted"], "stored", "{done}");
    assert_eq!(done["tried"], 1, "{done}");
    assert_eq!(done["sync_status"], "in-sync", "{done}");
    assert_eq!(stored_password(&api, &root, &acc).await, given);

    // Every try audited, with its outcome, never a password.
    let events = audit_events(&api, &root, "account.out-of-sync.resolve").await;
    let outcomes: Vec<&str> = events
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.len(), 4, "{events:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == "failure").count(), 2);
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(given) && !text.contains("Nobody-Chose-9!"),
        "{text}"
    );

    // Parked: the target refuses every generated password. The entry names the retry, and
    // the retry that succeeds takes it off the queue.
    set_reset_command(&api, &root, "Linux", None).await;
    t.refuse_password_changes_for(&login);
    let item = reset(&api, &root, &acc, None).await;
    assert_eq!(item["state"], "parked", "{item}");
    let parked = queue(&api, &root, Some("parked")).await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0]["times"], 1, "{parked:?}");
    let retry = parked[0]["actions"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    metrics_show(&api, "lockstep_attention{kind=\"parked\"} 1").await;
    t.allow_password_changes();
    let r = api.post(&retry, &root, why.clone()).await;
    assert_eq!(r.status, 202, "{}", r.text);
    wait_finished(
        &api,
        &root,
        r.json()["id"].as_str().unwrap(),
        Duration::from_secs(120),
    )
    .await;
    assert!(queue(&api, &root, None).await.is_empty());
    let now = stored_password(&api, &root, &acc).await;
    assert!(logs_in(&t, &login, &now).await);
}

/// Vetoes past `--attention-vetoes` and a checkout whose rotation was vetoed (change-freeze
/// vetoes every reset of the account), on the store at `database_url` (SQLite by default).
async fn vetoes_and_an_unrotated_checkout(database_url: Option<String>) {
    let server = Server::start_with(ServerOptions {
        extra: vec!["--attention-vetoes".into(), "1".into()],
        database_url,
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    let acc = change_freeze_in_dc1(&api, &root, dir.path(), "Generic").await;
    let r = api
        .call(
            "PUT",
            "/v1/access-policies/resource-type/Generic",
            Some(&root),
            Some(json!({"approvals_needed": 0, "max_minutes": 10})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let amy = user_with_role(&api, &root, "amy", "password-user").await;
    let r = api
        .post(
            &format!("/v1/accounts/{acc}/checkouts"),
            &amy,
            json!({"reason": "fix the nightly export", "minutes": 10}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let checkout = r.json()["id"].as_str().unwrap().to_string();
    let r = api
        .post(
            &format!("/v1/checkouts/{checkout}/checkin"),
            &amy,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let job = r.json()["rotation"]["job_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no rotation: {}", r.text));
    let done = wait_finished(&api, &root, &job, Duration::from_secs(60)).await;
    assert_eq!(done["items"][0]["state"], "vetoed", "{done}");

    // One veto is within the limit; the password amy saw still logs in: listed.
    let ids = |listed: &[Value]| -> Vec<String> {
        listed
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let listed = queue(&api, &amy, None).await;
    assert_eq!(ids(&listed), [format!("checkout-unrotated/{checkout}")]);
    let e = &listed[0];
    assert_eq!(e["holder"], "amy", "{e}");
    assert_eq!(e["job_id"], job.as_str(), "{e}");
    assert_eq!(e["actions"][0]["action"], "retry-reset", "{e}");
    assert!(
        e["detail"].as_str().unwrap().contains("DC1"),
        "the veto's reason: {e}"
    );

    // A second veto passes the limit of 1: the account is listed too, before the checkout.
    let item = reset(&api, &root, &acc, None).await;
    assert_eq!(item["state"], "vetoed", "{item}");
    let listed = queue(&api, &root, None).await;
    assert_eq!(
        ids(&listed),
        [
            format!("vetoed/{acc}"),
            format!("checkout-unrotated/{checkout}")
        ]
    );
    assert_eq!(listed[0]["times"], 2, "{listed:?}");
    assert_eq!(
        listed[0]["item_id"], item["id"],
        "the latest veto: {listed:?}"
    );
    assert_eq!(
        ids(&queue(&api, &root, Some("vetoed")).await),
        [format!("vetoed/{acc}")]
    );
    metrics_show(&api, "lockstep_attention{kind=\"vetoed\"} 1").await;
    metrics_show(&api, "lockstep_attention{kind=\"checkout-unrotated\"} 1").await;
    metrics_show(&api, "lockstep_attention{kind=\"dead-letter\"} 0").await;
}

#[tokio::test]
async fn vetoes_past_the_limit_and_an_unrotated_checkout_are_listed() {
    vetoes_and_an_unrotated_checkout(None).await;
}

#[tokio::test]
async fn vetoes_past_the_limit_and_an_unrotated_checkout_are_listed_on_postgresql() {
    let Some(pg) = postgres_database().await else {
        return;
    };
    vetoes_and_an_unrotated_checkout(Some(pg.url().to_string())).await;
}
