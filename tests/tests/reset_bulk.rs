//! Bulk resets over several real OpenSSH targets, and the crash test: the server is killed with
//! SIGKILL in the middle of a bulk job, started again, and every account's stored password must
//! still log in on its target.

use lockstep_testkit as common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::resets::{logs_in, register, stored_password, users, wait_finished};
use common::sshd::SshTarget;
use common::{Api, Server, audit_events};
use serde_json::{Value, json};

async fn job(api: &Api, token: &str, id: &str) -> Value {
    api.get(&format!("/v1/reset-jobs/{id}"), token).await.json()
}

#[tokio::test]
async fn a_bulk_job_gives_every_account_on_several_targets_its_own_verified_password() {
    let targets = [
        SshTarget::start("Root-Pw-1", &users(5)),
        SshTarget::start("Root-Pw-1", &users(5)),
    ];
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let mut accounts = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        for (id, login) in register(&api, &root, t, &format!("bulk{i}"), 5).await {
            accounts.push((i, id, login));
        }
    }
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"resource_type": "Linux", "reason": "bulk rotation"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let j = r.json();
    assert_eq!(j["kind"], "bulk");
    assert_eq!(
        j["progress"]["total"], 10,
        "admin accounts are not selected: {j}"
    );
    let j = wait_finished(
        &api,
        &root,
        j["id"].as_str().unwrap(),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(j["progress"]["succeeded"], 10, "{j}");
    for t in &targets {
        // The admin logs in once per target (twice at most: before and after the host key is
        // pinned), not once per account; every account is verified by its own login.
        let log = t.log();
        let admin = log.matches("Accepted password for root").count();
        assert!((1..=2).contains(&admin), "{admin} admin logins:\n{log}");
        assert_eq!(log.matches("Accepted password for u0").count(), 5, "{log}");
    }
    let mut seen = BTreeSet::new();
    for (i, id, login) in &accounts {
        let pw = stored_password(&api, &root, id).await;
        assert!(
            logs_in(&targets[*i], login, &pw).await,
            "{login} on target {i}"
        );
        seen.insert(pw);
    }
    assert_eq!(seen.len(), 10, "a unique password per account");

    let bad = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"reason": "nothing selected"}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
}

#[tokio::test]
async fn killing_the_server_mid_job_loses_no_password() {
    kill_mid_job(common::ServerOptions::default()).await;
}

#[tokio::test]
async fn killing_the_server_mid_job_loses_no_password_on_postgresql() {
    let Some(db) = common::postgres_database().await else {
        return;
    };
    kill_mid_job(common::ServerOptions {
        database_url: Some(db.url().to_string()),
        ..Default::default()
    })
    .await;
}

/// Kills the server with SIGKILL once a 30-account job over two targets is under way, starts
/// it again, and checks every account's stored password on its target.
async fn kill_mid_job(options: common::ServerOptions) {
    let per_target = 15;
    let targets = [
        SshTarget::start("Root-Pw-1", &users(per_target)),
        SshTarget::start("Root-Pw-1", &users(per_target)),
    ];
    let mut server = Server::start_with(options);
    let mut api = Api::new(&server);
    let root = server.root_token.clone();
    let mut accounts = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        for (id, login) in register(&api, &root, t, &format!("crash{i}"), per_target).await {
            accounts.push((i, id, login));
        }
    }
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"resource_type": "Linux", "reason": "rotation interrupted by a crash"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();

    // Kill it once some accounts are committed and others are in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let j = job(&api, &root, &id).await;
        let p = &j["progress"];
        if p["succeeded"].as_u64().unwrap_or(0) >= 2 && p["in_progress"].as_u64().unwrap_or(0) > 0 {
            break j;
        }
        assert!(j["status"] != "finished", "finished before the kill: {p}");
        assert!(Instant::now() < deadline, "no progress: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.kill_and_restart();
    api = Api::new(&server);
    let in_flight: Vec<String> = at_kill["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| !matches!(i["state"].as_str(), Some("planned" | "done")))
        .map(|i| format!("{}", i["state"]))
        .collect();
    eprintln!(
        "killed with progress {} and in flight: {in_flight:?}",
        at_kill["progress"]
    );

    let j = wait_finished(&api, &root, &id, Duration::from_secs(180)).await;
    eprintln!("after restart: {}", j["progress"]);
    assert_eq!(j["progress"]["out_of_sync"], 0, "{j}");
    let mut lost = Vec::new();
    for (i, acc, login) in &accounts {
        let pw = stored_password(&api, &root, acc).await;
        if !logs_in(&targets[*i], login, &pw).await {
            lost.push(login.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "stored passwords that no longer log in: {lost:?}"
    );
    for it in j["items"].as_array().unwrap() {
        if it["state"] != "done" {
            let id = it["id"].as_str().unwrap();
            let log = server.log_text();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(id)).collect();
            eprintln!("{it}\n{lines:#?}");
        }
    }
    // Items interrupted before their target changed start over: the whole job succeeds.
    assert_eq!(j["progress"]["succeeded"], 2 * per_target, "{j}");
}

#[tokio::test]
async fn a_bulk_job_runs_the_same_on_postgresql() {
    let Some(db) = common::postgres_database().await else {
        return;
    };
    let t = SshTarget::start("Root-Pw-1", &users(6));
    let server = Server::start_with(common::ServerOptions {
        database_url: Some(db.url().to_string()),
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let accounts = register(&api, &root, &t, "pg0", 6).await;
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"resource_ids": [], "accounts": null, "resource_type": null, "reason": "x"}),
        )
        .await;
    assert_eq!(
        r.status, 422,
        "a reason of 3 or more, one selector: {}",
        r.text
    );
    let ids: Vec<&str> = accounts.iter().map(|(id, _)| id.as_str()).collect();
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"accounts": ids, "reason": "rotation on PostgreSQL"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let j = wait_finished(
        &api,
        &root,
        r.json()["id"].as_str().unwrap(),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(j["progress"]["succeeded"], 6, "{j}");
    for (id, login) in &accounts {
        let pw = stored_password(&api, &root, id).await;
        assert!(logs_in(&t, login, &pw).await, "{login}");
    }
    drop(server);
    drop(db);
}

#[tokio::test]
async fn lockstep_reconcile_settles_what_a_dead_server_left_in_flight() {
    let t = SshTarget::start("Root-Pw-1", &users(12));
    // Short leases, so the test waits seconds, not the default 15, for them to run out.
    let mut server = Server::start_with(common::ServerOptions {
        extra: vec!["--reset-lease-secs".into(), "3".into()],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let accounts = register(&api, &root, &t, "rec0", 12).await;
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"resource_type": "Linux", "reason": "interrupted"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = job(&api, &root, &id).await;
        let p = &j["progress"];
        if p["succeeded"].as_u64().unwrap_or(0) >= 1 && p["in_progress"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            j["status"] != "finished" && Instant::now() < deadline,
            "{p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let data = server.data_dir();
    let data = data.to_str().unwrap();
    // While the dead server's leases last, nothing is touched.
    let (status, out, err) = common::lockstep(&["reconcile", "--data-dir", data]);
    assert!(status.success(), "{out}{err}");
    // Once they ran out, everything in flight is settled against the target.
    let mut db = common::database_writer(&server.sqlite_url()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The server's timestamps are fixed-width RFC 3339 in UTC, so they compare as text.
        let leased: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM reset_items WHERE lease_owner IS NOT NULL \
             AND lease_until > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        if leased == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{leased} leases never ran out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, out, err) = common::lockstep(&["reconcile", "--data-dir", data]);
    assert!(status.success(), "{out}{err}");
    assert!(out.trim() != "nothing in flight", "{out}");
    assert!(!out.contains("OUT OF SYNC"), "{out}");
    eprintln!("reconcile said:\n{out}");
    let (status, out, _) = common::lockstep(&["reconcile", "--data-dir", data]);
    assert!(status.success());
    assert_eq!(out.trim(), "nothing in flight", "settled once and for all");

    // The server, started again, finishes the rest; every stored password logs in.
    server.restart();
    let api = Api::new(&server);
    let j = wait_finished(&api, &root, &id, Duration::from_secs(120)).await;
    assert_eq!(j["progress"]["succeeded"], 12, "{j}");
    for (acc, login) in &accounts {
        let pw = stored_password(&api, &root, acc).await;
        assert!(logs_in(&t, login, &pw).await, "{login}");
    }
}

/// 500 reset requests at once: every one of 250 accounts (50 on a real SSH target, 200 in
/// the vault only) twice, both under one `Idempotency-Key`. Each pair gets the same job,
/// no request gets a 5xx, each account is reset exactly once (one success in the audit
/// trail), and every SSH account's stored password logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_requests_reset_each_account_exactly_once() {
    let t = SshTarget::start("Root-Pw-1", &users(50));
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let mut accounts: Vec<(String, Option<String>)> = register(&api, &root, &t, "load", 50)
        .await
        .into_iter()
        .map(|(id, login)| (id, Some(login)))
        .collect();
    let r = api
        .post(
            "/v1/resource-types",
            &root,
            json!({"name": "VaultOnly", "reset_method": "local"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    for n in 0..4 {
        let r = api
            .post(
                "/v1/resources",
                &root,
                json!({"name": format!("vault-{n}"), "resource_type": "VaultOnly"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let rid = r.json()["id"].as_str().unwrap().to_string();
        for i in 0..50 {
            let r = api
                .post(
                    &format!("/v1/resources/{rid}/accounts"),
                    &root,
                    json!({"login_name": format!("svc{i:02}"), "password": "Start-Pw-1"}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            accounts.push((r.json()["id"].as_str().unwrap().to_string(), None));
        }
    }

    let mut calls = tokio::task::JoinSet::new();
    for round in 0..2 {
        for (i, (account, _)) in accounts.iter().enumerate() {
            let request = api
                .http
                .post(format!("{}/v1/accounts/{account}/reset", api.base))
                .bearer_auth(&root)
                .header("idempotency-key", format!("load-{i}"))
                .json(&json!({"reason": format!("load test, request {round}")}));
            let account = account.clone();
            calls.spawn(async move {
                let resp = request.send().await.expect("request");
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                (account, status, body)
            });
        }
    }
    let mut jobs: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    let mut answered = 0;
    while let Some(done) = calls.join_next().await {
        let (account, status, body) = done.unwrap();
        assert!(status < 500, "{status}: {body}");
        assert_eq!(status, 202, "{body}");
        jobs.entry(account)
            .or_default()
            .insert(body["id"].as_str().unwrap().to_string());
        answered += 1;
    }
    assert_eq!(answered, 500);
    assert_eq!(jobs.len(), 250);
    for (account, ids) in &jobs {
        assert_eq!(ids.len(), 1, "{account}: one key, one job: {ids:?}");
    }

    for ids in jobs.values() {
        let id = ids.first().unwrap();
        let j = wait_finished(&api, &root, id, Duration::from_secs(300)).await;
        assert_eq!(j["items"][0]["state"], "done", "{j}");
    }
    let events = audit_events(&api, &root, "account.password.reset").await;
    for (account, login) in &accounts {
        let applied = events
            .iter()
            .filter(|e| &e["target"] == account && e["outcome"] == "success")
            .count();
        assert_eq!(applied, 1, "{account}: reset {applied} times");
        let stored = stored_password(&api, &root, account).await;
        assert_ne!(stored, "Start-Pw-1", "{account}");
        if let Some(login) = login {
            assert!(logs_in(&t, login, &stored).await, "{login}");
        }
    }
}

/// One server-sent event: its name and its JSON data.
#[derive(Debug)]
struct SseEvent {
    name: String,
    data: Value,
}

/// Reads `GET path` as a server-sent event stream to its end (at most `limit`), keeping the
/// named events (keep-alive comments have no name).
async fn read_events(api: &Api, token: &str, path: &str, limit: Duration) -> Vec<SseEvent> {
    let mut response = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("open the event stream");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let deadline = Instant::now() + limit;
    let mut text = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("the stream broke: {e}"),
            Err(_) => panic!("the stream did not end within {limit:?}; so far:\n{text}"),
        }
    }
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            Some(SseEvent {
                name: name?,
                data: serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}")),
            })
        })
        .collect()
}

#[tokio::test]
async fn a_bulk_jobs_progress_streams_as_server_sent_events() {
    let t = SshTarget::start("Root-Pw-1", &users(6));
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let accounts = register(&api, &root, &t, "sse", 6).await;

    let r = api.get("/v1/reset-jobs/no-such-job/events", &root).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.content_type, "application/problem+json");
    let r = api
        .call("GET", "/v1/reset-jobs/no-such-job/events", None, None)
        .await;
    assert_eq!(r.status, 401, "{}", r.text);

    let ids: Vec<&str> = accounts.iter().map(|(id, _)| id.as_str()).collect();
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"accounts": ids, "reason": "rotation followed live"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job_id = r.json()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/reset-jobs/{job_id}/events");
    let events = read_events(&api, &root, &path, Duration::from_secs(120)).await;

    // First the whole current state: one item per account, then the counts, while running.
    let first_progress = events.iter().position(|e| e.name == "progress").unwrap();
    assert_eq!(first_progress, 6, "{events:#?}");
    assert_eq!(events[first_progress].data["status"], "running");
    assert_eq!(events[first_progress].data["job_id"], job_id.as_str());
    // Then changes, and last the whole job, finished.
    let last = events.last().unwrap();
    assert_eq!(last.name, "finished", "{events:#?}");
    assert_eq!(last.data["progress"]["succeeded"], 6, "{}", last.data);
    assert_eq!(last.data, job(&api, &root, &job_id).await);
    assert_eq!(events.iter().filter(|e| e.name == "finished").count(), 1);
    // Every account's states arrive in pipeline order and end in `done`.
    let order = [
        "planned",
        "pre-listeners",
        "pending-written",
        "applied",
        "verified",
        "committed",
        "post-listeners",
        "done",
    ];
    for (id, login) in &accounts {
        let states: Vec<&str> = events
            .iter()
            .filter(|e| e.name == "item" && e.data["account_id"] == id.as_str())
            .map(|e| e.data["state"].as_str().unwrap())
            .collect();
        assert_eq!(states.last(), Some(&"done"), "{login}: {states:?}");
        let ranks: Vec<usize> = states
            .iter()
            .map(|s| order.iter().position(|o| o == s).unwrap())
            .collect();
        assert!(ranks.is_sorted(), "{login}: {states:?}");
    }
    // Accounts were seen moving while the job ran, not only at its start and end (a grouped
    // `chpasswd` of six yescrypt hashes alone outlasts one 200 ms poll).
    assert!(
        events.iter().filter(|e| e.name == "item").count() > 12,
        "{events:#?}"
    );

    // A client that connects after the end gets the state and the end at once.
    let late = read_events(&api, &root, &path, Duration::from_secs(10)).await;
    let names: Vec<&str> = late.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(&names[6..], ["progress", "finished"]);
}
