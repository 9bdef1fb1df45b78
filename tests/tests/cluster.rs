//! Several `lockstep serve` nodes on one PostgreSQL database, one of them killed with SIGKILL
//! again and again while bulk jobs run: every account ends done exactly once (one successful
//! `account.password.reset` event per account and job, no more password changes on the target
//! than the item's attempts), every stored password logs in, and no item is left stuck.
//!
//! The CI run is short. The harness is the same test with more of everything:
//! `scripts/kill-harness.sh` (3 nodes, 4 targets × 75 accounts, 20 rounds, one kill each).
//!
//! Beside it: a real `lockstep-agent` listing several nodes keeps working when its node is
//! SIGKILLed (it moves to the next), scheduled rotation runs each period once across a
//! SIGKILLed scheduler-duty holder, and a checkout window that three nodes sweep ends once and
//! rotates once.

use lockstep_testkit as common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::agent::{AgentHost, account_id, accounts_of, enrollment_token, fingerprint};
use common::resets::{logs_in, register, stored_password, users, wait_finished};
use common::sim_agent::SimAgent;
use common::sshd::{SshTarget, TargetUser};
use common::{Api, Server, audit_events};
use serde_json::{Value, json};

/// A harness knob from the environment, else its CI default.
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A random number below `n` (from the OS: the moments of the kills differ run to run).
fn below(n: usize) -> usize {
    let hex = common::random_hex(4);
    (u32::from_str_radix(&hex, 16).unwrap() as usize) % n.max(1)
}

/// Short leases, so a dead node's items come back within seconds; no scheduled rotation.
const NODE_OPTIONS: [&str; 4] = ["--reset-lease-secs", "3", "--rotation-check-secs", "0"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_and_run_nothing_twice_when_one_is_killed_mid_job() {
    let Some((_db, mut nodes)) = cluster(3, &NODE_OPTIONS).await else {
        return;
    };
    let rounds = knob("LOCKSTEP_KILL_ROUNDS", 2);
    let per_target = knob("LOCKSTEP_KILL_ACCOUNTS_PER_TARGET", 12);
    let target_count = knob("LOCKSTEP_KILL_TARGETS", 2);

    let targets: Vec<SshTarget> = (0..target_count)
        .map(|_| SshTarget::start("Root-Pw-1", &users(per_target)))
        .collect();
    for t in &targets {
        t.count_password_changes();
    }
    let root = nodes[0].root_token.clone();
    let mut accounts = Vec::new();
    {
        let api = Api::new(&nodes[0]);
        for (i, t) in targets.iter().enumerate() {
            for (id, login) in register(&api, &root, t, &format!("cluster{i}"), per_target).await {
                accounts.push((i, id, login));
            }
        }
    }
    let total = accounts.len();

    let mut jobs = Vec::new();
    for round in 0..rounds {
        let before: Vec<BTreeMap<String, usize>> =
            targets.iter().map(SshTarget::password_changes).collect();
        // The job is queued on one node; all three work it.
        let api = Api::new(&nodes[below(nodes.len())]);
        let r = api
            .post(
                "/v1/reset-jobs",
                &root,
                json!({"resource_type": "Linux", "reason": format!("cluster round {round}")}),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let id = r.json()["id"].as_str().unwrap().to_string();

        // Kill a random node once a random share of the job is done (5% to 80%).
        let victim = below(nodes.len());
        let at = (total * (5 + below(76)) / 100).max(1);
        let deadline = Instant::now() + Duration::from_secs(120);
        let observer = Api::new(&nodes[(victim + 1) % nodes.len()]);
        let progress = loop {
            let j = observer
                .get(&format!("/v1/reset-jobs/{id}"), &root)
                .await
                .json();
            let p = j["progress"].clone();
            if p["succeeded"].as_u64().unwrap_or(0) as usize >= at || j["status"] == "finished" {
                break p;
            }
            assert!(Instant::now() < deadline, "no progress: {p}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        nodes[victim].kill_and_restart();
        eprintln!("round {round}: killed node {victim} at {progress}");

        let api = Api::new(&nodes[below(nodes.len())]);
        let j = wait_finished(&api, &root, &id, Duration::from_secs(300)).await;
        let stuck: Vec<&Value> = j["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] != "done")
            .collect();
        assert!(
            stuck.is_empty(),
            "round {round}: items not done: {stuck:#?}"
        );
        assert_eq!(j["progress"]["succeeded"], total, "{}", j["progress"]);

        // No password was applied more often than the item tried one.
        let attempts: BTreeMap<&str, i64> = j["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["account_id"].as_str().unwrap(),
                    i["attempts"].as_i64().unwrap(),
                )
            })
            .collect();
        for (i, acc, login) in &accounts {
            let after = targets[*i].password_changes();
            let changed = after.get(login).copied().unwrap_or(0)
                - before[*i].get(login).copied().unwrap_or(0);
            let tried = attempts[acc.as_str()].max(1) as usize;
            assert!(
                (1..=tried).contains(&changed),
                "round {round}: {login} on target {i} changed {changed} times for {tried} attempts"
            );
        }
        // Every stored password logs in.
        let mut lost = Vec::new();
        for (i, acc, login) in &accounts {
            let pw = stored_password(&api, &root, acc).await;
            if !logs_in(&targets[*i], login, &pw).await {
                lost.push(login.clone());
            }
        }
        assert!(lost.is_empty(), "round {round}: passwords lost: {lost:?}");
        jobs.push(id);
    }

    // Exactly one successful reset per account and job, whichever node committed it.
    let api = Api::new(&nodes[0]);
    let events = audit_events(&api, &root, "account.password.reset").await;
    let mut per_job_account: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e["outcome"] == "success") {
        let job = e["detail"]["job"].as_str().unwrap_or_default().to_string();
        let account = e["target"].as_str().unwrap_or_default().to_string();
        *per_job_account.entry((job, account)).or_default() += 1;
    }
    for job in &jobs {
        for (_, acc, login) in &accounts {
            let n = per_job_account
                .get(&(job.clone(), acc.clone()))
                .copied()
                .unwrap_or(0);
            assert_eq!(n, 1, "job {job}: {login} was reset {n} times");
        }
    }
    eprintln!(
        "{rounds} rounds, {total} accounts each over {target_count} targets, one node killed \
         per round: nothing lost, nothing twice"
    );
}

/// A deployment of `n` nodes on a fresh PostgreSQL database (`None` without PostgreSQL).
async fn cluster(
    n: usize,
    extra: &[&str],
) -> Option<(common::postgres::PostgresDatabase, Vec<Server>)> {
    cluster_over(n, extra, true).await
}

/// [`cluster`] over HTTP (`dev`) or TLS (each node with its own self-signed certificate).
async fn cluster_over(
    n: usize,
    extra: &[&str],
    dev: bool,
) -> Option<(common::postgres::PostgresDatabase, Vec<Server>)> {
    let db = common::postgres_database().await?;
    let first = Server::start_with(common::ServerOptions {
        dev,
        database_url: Some(db.url().to_string()),
        extra: extra.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    let mut nodes = vec![first];
    for _ in 1..n {
        let node = Server::join(&nodes[0], extra);
        nodes.push(node);
    }
    Some((db, nodes))
}

/// Queues, through `node`, the reset of account `svc` on a machine whose agent enrolled and
/// never polls, so the reset's worker waits for it holding its lease; returns the job's id.
async fn reset_through_a_silent_agent(node: &Server, reason: &str) -> String {
    let api = Api::new(node);
    let root = &node.root_token;
    let token = common::agent::enrollment_token(&api, root, json!({})).await;
    let agent = SimAgent::enroll(&api.http, &node.base, &token, "silent").await;
    let rid = agent.discover("svc").await;
    let accounts = common::agent::accounts_of(&api, root, &rid).await;
    let account = common::agent::account_id(&accounts, "svc");
    let r = api
        .post(
            &format!("/v1/accounts/{account}/reset"),
            root,
            json!({ "reason": reason }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json()["id"].as_str().unwrap().to_string()
}

/// `GET /v1/cluster` as `node` answers it.
async fn view(node: &Server) -> Value {
    let r = Api::new(node).get("/v1/cluster", &node.root_token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

/// The node ids of `view` whose state is `state`.
fn in_state(view: &Value, state: &str) -> Vec<String> {
    view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == state)
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

/// The node that holds `duty` in `view`, if one does.
fn holder(view: &Value, duty: &str) -> Option<String> {
    view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["duties"].as_array().unwrap().iter().any(|d| d == duty))
        .map(|n| n["id"].as_str().unwrap().to_string())
}

/// Polls `node`'s view until `ok` holds (at most `limit`); returns that view.
async fn view_until(node: &Server, limit: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = view(node).await;
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never got there: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn nodes_see_each_other_and_a_stopping_node_hands_its_duty_over_at_once() {
    let Some((_db, mut nodes)) = cluster(2, &[]).await else {
        return;
    };
    // Both live, one scheduler between them, and either node tells the same story.
    let v = view_until(&nodes[1], Duration::from_secs(15), |v| {
        in_state(v, "live").len() == 2 && holder(v, "scheduler").is_some()
    })
    .await;
    let other = view(&nodes[0]).await;
    assert_eq!(holder(&v, "scheduler"), holder(&other, "scheduler"));
    assert_ne!(v["answered_by"], other["answered_by"]);
    for n in v["nodes"].as_array().unwrap() {
        let address = n["address"].as_str().unwrap();
        assert!(
            address.starts_with("127.0.0.1:") && !address.ends_with(":0"),
            "{n}"
        );
        assert_eq!(n["resets_held"], 0, "{n}");
    }
    // The holder stops gracefully: it says so, and the other node takes the duty with its
    // next heartbeat rather than after the duty's 20-second lease.
    let duty_holder = holder(&v, "scheduler").unwrap();
    let (stopping, staying) = if v["answered_by"] == duty_holder.as_str() {
        (1, 0)
    } else {
        (0, 1)
    };
    let status = nodes[stopping].stop();
    assert!(status.success(), "{status}");
    let stopped_at = Instant::now();
    let after = view_until(&nodes[staying], Duration::from_secs(15), |v| {
        holder(v, "scheduler").is_some_and(|h| h != duty_holder)
    })
    .await;
    assert!(
        stopped_at.elapsed() < Duration::from_secs(15),
        "taken over only after {:?}",
        stopped_at.elapsed()
    );
    assert_eq!(in_state(&after, "stopped"), vec![duty_holder], "{after:#}");
    assert_eq!(in_state(&after, "live").len(), 1, "{after:#}");
}

#[tokio::test]
async fn a_stopping_node_hands_back_the_reset_it_cannot_finish() {
    let Some((db, mut nodes)) = cluster(1, &[]).await else {
        return;
    };
    let root = nodes[0].root_token.clone();
    // It waits for its agent far beyond the stop's grace, holding its lease.
    let job = reset_through_a_silent_agent(&nodes[0], "waits for an agent that never comes").await;
    view_until(&nodes[0], Duration::from_secs(15), |v| {
        v["nodes"][0]["resets_held"] == 1
    })
    .await;

    let status = nodes[0].stop();
    assert!(status.success(), "{status}");
    assert!(
        nodes[0]
            .log_text()
            .contains("handed the reset back for another node"),
        "{}",
        nodes[0].log_text()
    );
    // Its lease ends well before a lease from now: the task it queued may still be applied by
    // the agent, so the next node waits as long as a settling target gets (7 s), no longer.
    let mut db_conn = common::database_writer(db.url()).await;
    // Seconds from the database's now to the item's lease end.
    let (left, owner): (f64, Option<String>) = sqlx::query_as(
        "SELECT CAST(EXTRACT(EPOCH FROM (CAST(lease_until AS timestamptz) - clock_timestamp())) \
         AS DOUBLE PRECISION), lease_owner FROM reset_items WHERE job_id = $1",
    )
    .bind(&job)
    .fetch_one(&mut db_conn)
    .await
    .unwrap();
    assert!(
        owner.is_some(),
        "the item keeps its last owner for the record"
    );
    assert!(left <= 7.5, "handed back for {left} s more");
    // A node that comes up takes it over and waits for the agent in its turn.
    let next = Server::join(&nodes[0], &[]);
    let next_api = Api::new(&next);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j = next_api
            .get(&format!("/v1/reset-jobs/{job}"), &root)
            .await
            .json();
        if j["items"][0]["claims"] == 2 {
            let steps = j["items"][0]["steps"].as_array().unwrap();
            assert!(!steps.is_empty(), "{j}");
            break;
        }
        assert!(Instant::now() < deadline, "not taken over: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// libfaketime moves a process's clock; Debian's `libfaketime` package (the test command
/// installs it).
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_ninety_seconds_ahead_takes_over_nothing() {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "{FAKETIME} is missing; run ./scripts/test.sh, which installs libfaketime"
    );
    let Some(db) = common::postgres_database().await else {
        return;
    };
    let per_target = 12;
    let targets = [
        SshTarget::start("Root-Pw-1", &users(per_target)),
        SshTarget::start("Root-Pw-1", &users(per_target)),
    ];
    let first = Server::start_with(common::ServerOptions {
        database_url: Some(db.url().to_string()),
        extra: NODE_OPTIONS.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    // Its leases, read with its own clock, would all look expired to the other node, and the
    // other node's to it, if nodes kept their own time.
    let ahead = Server::join_with_env(
        &first,
        &NODE_OPTIONS,
        &[
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME", "+90"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let api = Api::new(&first);
    let root = first.root_token.clone();
    let mut accounts = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        for (id, login) in register(&api, &root, t, &format!("skew{i}"), per_target).await {
            accounts.push((i, id, login));
        }
    }
    let v = view_until(&ahead, Duration::from_secs(15), |v| {
        in_state(v, "live").len() == 2
    })
    .await;
    for n in v["nodes"].as_array().unwrap() {
        assert!(
            n["heartbeat_at"].as_str().unwrap() <= v["now"].as_str().unwrap(),
            "a heartbeat in the future: {v:#}"
        );
    }
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"resource_type": "Linux", "reason": "two nodes, two clocks"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let j = wait_finished(&api, &root, &id, Duration::from_secs(180)).await;
    assert_eq!(
        j["progress"]["succeeded"],
        2 * per_target,
        "{}",
        j["progress"]
    );
    let mut nodes_seen = std::collections::BTreeSet::new();
    for item in j["items"].as_array().unwrap() {
        assert_eq!(
            item["claims"], 1,
            "taken over although no node died: {item:#}"
        );
        for step in item["steps"].as_array().unwrap() {
            nodes_seen.insert(step["node"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        nodes_seen.len(),
        2,
        "both nodes worked the job: {nodes_seen:?}"
    );
    for (i, acc, login) in &accounts {
        let pw = stored_password(&api, &root, acc).await;
        assert!(logs_in(&targets[*i], login, &pw).await, "{login}");
    }
}

#[tokio::test]
async fn a_task_queued_on_one_node_answers_an_agent_long_polling_another() {
    let Some(db) = common::postgres_database().await else {
        return;
    };
    let first = Server::start_with(common::ServerOptions {
        database_url: Some(db.url().to_string()),
        ..Default::default()
    });
    // B claims no resets: A's worker queues the agent's task, and only A's bell can reach B.
    let only_api = Server::join(&first, &["--reset-workers", "0"]);
    let nodes = [first, only_api];
    let (a, b) = (Api::new(&nodes[0]), Api::new(&nodes[1]));
    let root = nodes[0].root_token.clone();
    let token = common::agent::enrollment_token(&a, &root, json!({})).await;
    // The agent talks to node B only.
    let agent = SimAgent::enroll(&b.http, &nodes[1].base, &token, "b-side").await;
    let rid = agent.discover("svc").await;
    let account =
        common::agent::account_id(&common::agent::accounts_of(&b, &root, &rid).await, "svc");
    // A poll held on B for 20 s: it re-reads the database only every 30 s (and once at the
    // end of the hold), so node A's bell (PostgreSQL NOTIFY) is what answers it.
    let poll = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.next("sess-b", 20).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = a
        .post(
            &format!("/v1/accounts/{account}/reset"),
            &root,
            json!({"reason": "queued on A, taken on B"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let task = poll.await.unwrap().expect("the poll");
    let task = task.expect("the held poll answered with the task, not an empty 204");
    assert!(
        matches!(&task.work, lockstep_agent_protocol::messages::Work::Reset { login_name, .. } if login_name == "svc"),
        "{task:?}"
    );
    // B heard it from A (PostgreSQL NOTIFY): nothing on B queued it.
    let metrics = b
        .http
        .get(format!("{}/metrics", b.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    let heard = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lockstep_cluster_bells_heard_total{bell=\"agent\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(heard >= 1, "node B heard no agent bell:\n{metrics}");
    // The agent reports to B; the reset waiting on A goes on at A's bell from B.
    agent.report("sess-b", &task.id).await;
    let job = r.json()["id"].as_str().unwrap().to_string();
    let j = wait_finished(&a, &root, &job, Duration::from_secs(60)).await;
    assert_eq!(j["items"][0]["state"], "done", "{j}");
}

#[tokio::test]
async fn a_worker_whose_lease_is_taken_over_stops_at_once() {
    let server = Server::start_with(common::ServerOptions {
        extra: NODE_OPTIONS.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    // Its worker waits for the agent, renewing its lease.
    let job = reset_through_a_silent_agent(&server, "its lease is stolen").await;
    let mut db = common::database_writer(&server.sqlite_url()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let steps_before = loop {
        let (state, steps): (String, String) =
            sqlx::query_as("SELECT state, steps FROM reset_items WHERE job_id = $1")
                .bind(&job)
                .fetch_one(&mut db)
                .await
                .unwrap();
        if state == "pending-written" {
            break steps;
        }
        assert!(
            Instant::now() < deadline,
            "never reached the agent: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Another claim takes the item over (as a node whose clock ran ahead, or one that saw the
    // lease run out, would).
    sqlx::query(
        "UPDATE reset_items SET lease_owner = 'srv_other/lease_1', \
         lease_until = '9999-12-31T00:00:00.000000Z' WHERE job_id = $1",
    )
    .bind(&job)
    .execute(&mut db)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !server.log_text().contains("lost the lease on this reset") {
        assert!(
            Instant::now() < deadline,
            "the worker kept going:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (owner, steps): (String, String) =
        sqlx::query_as("SELECT lease_owner, steps FROM reset_items WHERE job_id = $1")
            .bind(&job)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(owner, "srv_other/lease_1");
    assert_eq!(
        steps, steps_before,
        "no step written after the lease was lost"
    );
}

/// Lines in `path` (0 when it does not exist yet).
fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Waits until `path` has `n` lines.
fn wait_for_lines(path: &std::path::Path, n: usize, limit: Duration, why: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while lines_in(path) < n {
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_to_the_next_node_when_its_node_is_killed() {
    // TLS nodes (the agent talks only TLS), each with its own certificate. Item leases are
    // the production 15 s (shorter ones need --dev, which serves no TLS).
    let Some((_db, mut nodes)) = cluster_over(3, &["--rotation-check-secs", "0"], false).await
    else {
        return;
    };
    let fps: Vec<String> = nodes.iter().map(fingerprint).collect();
    assert!(
        fps[0] != fps[1] && fps[1] != fps[2] && fps[0] != fps[2],
        "each node has its own certificate: {fps:?}"
    );
    let root = nodes[0].root_token.clone();
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("alice", "Alice-Pw-1")]);
    let mut agent = AgentHost::new(&t);

    // Enrolled through node A, listing A and B (each with its own pin).
    let token = enrollment_token(&Api::new(&nodes[0]), &root, json!({})).await;
    let out = agent.enroll_nodes(
        &[(&nodes[0].base, &fps[0]), (&nodes[1].base, &fps[1])],
        &token,
    );
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Node C is added later. Under another node's pin it is refused, and the file stays as
    // it was: a URL is accepted only with its own certificate.
    let written = std::fs::read_to_string(agent.config()).unwrap();
    let out = agent.command_output(&[
        "add-server",
        "--server",
        &nodes[2].base,
        "--fingerprint",
        &fps[0],
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong pin was taken: {err}");
    assert!(
        err.contains(&nodes[2].base) && err.contains(&fps[2]) && err.contains("is pinned"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(agent.config()).unwrap(), written);
    let out = agent.command_output(&[
        "add-server",
        "--server",
        &nodes[2].base,
        "--fingerprint",
        &fps[2],
    ]);
    assert!(
        out.status.success(),
        "add-server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(agent.config()).unwrap();
    assert_eq!(written.matches("[[servers]]").count(), 3, "{written}");

    // Each chpasswd run is counted, then lingers 3 s before the agent reports.
    let runs = agent.dir.join("chpasswd-runs");
    let script = agent.dir.join("slow-chpasswd");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n/usr/sbin/chpasswd || exit $?\necho run >> {}\nsleep 3\n",
            runs.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    agent.set_account_option("chpasswd", &format!("\"{}\"", script.display()));
    agent.start();
    agent.wait_for_log("discovery registered", Duration::from_secs(30));
    agent.wait_for_log(
        &format!("using server node {}", nodes[0].base),
        Duration::from_secs(5),
    );
    let b = Api::new(&nodes[1]);
    let agents = b.get("/v1/agents", &root).await.json();
    let rid = agents[0]["resource_id"].as_str().unwrap().to_string();
    let alice = account_id(&accounts_of(&b, &root, &rid).await, "alice");

    // A dies while the agent holds its long-poll there; a reset queued through B is done.
    nodes[0].kill();
    let r = b
        .post(
            &format!("/v1/accounts/{alice}/reset"),
            &root,
            json!({"reason": "node A is dead"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job = r.json()["id"].as_str().unwrap().to_string();
    let j = wait_finished(&b, &root, &job, Duration::from_secs(60)).await;
    assert_eq!(j["items"][0]["state"], "done", "{j}");
    let log = agent.log();
    assert!(
        log.contains(&format!("using server node {}", nodes[1].base)),
        "{log}"
    );
    assert!(
        log.contains("server node unreachable; trying the next node")
            && log.contains(&nodes[0].base),
        "{log}"
    );
    assert_eq!(lines_in(&runs), 1);
    assert!(logs_in(&t, "alice", &stored_password(&b, &root, &alice).await).await);

    // B, which handed the next task out, dies before the agent reports: the report that fails
    // on B goes to C, is taken there, and the reset ends done with the password applied once.
    let c = Api::new(&nodes[2]);
    let r = c
        .post(
            &format!("/v1/accounts/{alice}/reset"),
            &root,
            json!({"reason": "node B dies before the report"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job = r.json()["id"].as_str().unwrap().to_string();
    wait_for_lines(&runs, 2, Duration::from_secs(30), || {
        format!("chpasswd never ran:\n{}", agent.log())
    });
    nodes[1].kill();
    let j = wait_finished(&c, &root, &job, Duration::from_secs(90)).await;
    assert_eq!(j["items"][0]["state"], "done", "{j}");
    assert_eq!(lines_in(&runs), 2, "applied once");
    let log = agent.log();
    assert!(
        log.contains(&format!("using server node {}", nodes[2].base)),
        "{log}"
    );
    assert!(!log.contains("result not taken"), "{log}");
    // The report itself was sent to B first (the node in use: the long-poll moved to C is
    // still held there), failed, and was sent again to C.
    assert!(
        log.lines().any(|l| l.contains("trying the next node")
            && l.contains(&format!("cannot reach the server node {}", nodes[1].base))
            && l.contains("/result")),
        "{log}"
    );
    assert!(logs_in(&t, "alice", &stored_password(&c, &root, &alice).await).await);
    let tasks = c.get("/v1/agent-tasks", &root).await.json();
    assert!(
        tasks
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "succeeded"),
        "{tasks}"
    );
}

/// `next_run_at` of schedule `name` set to the database's now (less a second): its next
/// period has come, as an hour passing would make it (periods are whole hours). Returns it.
async fn period_comes(db: &mut sqlx::AnyConnection, name: &str) -> String {
    let (at,): (String,) = sqlx::query_as(
        "UPDATE rotation_schedules SET next_run_at = to_char((clock_timestamp() - \
         interval '1 second') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
         WHERE name = $1 RETURNING next_run_at",
    )
    .bind(name)
    .fetch_one(db)
    .await
    .unwrap();
    at
}

/// The idempotency key of the run of schedule `name` at `at` (`reset::scheduler`): the
/// schedule, as its name and creation time, and the run time.
async fn run_key(db: &mut sqlx::AnyConnection, name: &str, at: &str) -> String {
    let (created,): (String,) =
        sqlx::query_as("SELECT created_at FROM rotation_schedules WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *db)
            .await
            .unwrap();
    format!("#schedule\n{name}\n{created}\n{at}")
}

/// The job the scheduler started for the run of schedule `name` at `at`, once there is one.
async fn job_of_period(
    db: &mut sqlx::AnyConnection,
    name: &str,
    at: &str,
    limit: Duration,
) -> String {
    let key = run_key(db, name, at).await;
    let deadline = Instant::now() + limit;
    loop {
        let found: Option<(String,)> =
            sqlx::query_as("SELECT id FROM reset_jobs WHERE idempotency_key = $1")
                .bind(&key)
                .fetch_optional(&mut *db)
                .await
                .unwrap();
        if let Some((id,)) = found {
            return id;
        }
        assert!(Instant::now() < deadline, "no job for the run at {at}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rotation_runs_each_period_once_across_a_killed_duty_holder() {
    let Some((db, mut nodes)) = cluster(
        3,
        &["--reset-lease-secs", "3", "--rotation-check-secs", "1"],
    )
    .await
    else {
        return;
    };
    let per_target = 4;
    let t = SshTarget::start("Root-Pw-1", &users(per_target));
    t.count_password_changes();
    let root = nodes[0].root_token.clone();
    let api = Api::new(&nodes[0]);
    let accounts = register(&api, &root, &t, "sched", per_target).await;
    let mut sql = common::database_writer(db.url()).await;
    let mut ids = Vec::new();
    for n in &nodes {
        ids.push(view(n).await["answered_by"].as_str().unwrap().to_string());
    }

    // Period 1 is the schedule's first run, now.
    let r = api
        .post(
            "/v1/rotation-schedules",
            &root,
            json!({"name": "fleet", "every_hours": 1, "resource_type": "Linux"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut periods = vec![r.json()["next_run_at"].as_str().unwrap().to_string()];
    let mut jobs =
        vec![job_of_period(&mut sql, "fleet", &periods[0], Duration::from_secs(15)).await];
    wait_finished(&api, &root, &jobs[0], Duration::from_secs(60)).await;

    // Period 2; the duty holder is SIGKILLed while its job runs.
    periods.push(period_comes(&mut sql, "fleet").await);
    jobs.push(job_of_period(&mut sql, "fleet", &periods[1], Duration::from_secs(15)).await);
    let v = view(&nodes[0]).await;
    let killed_id = holder(&v, "scheduler").expect("a scheduler");
    let killed = ids.iter().position(|i| *i == killed_id).unwrap();
    nodes[killed].kill();
    let killed_at = Instant::now();
    let live = (killed + 1) % nodes.len();
    let api = Api::new(&nodes[live]);
    wait_finished(&api, &root, &jobs[1], Duration::from_secs(60)).await;

    // Periods 3 and 4 come while the dead node's duty lease (20 s) runs out, and after.
    for k in 2..4 {
        periods.push(period_comes(&mut sql, "fleet").await);
        jobs.push(job_of_period(&mut sql, "fleet", &periods[k], Duration::from_secs(45)).await);
        wait_finished(&api, &root, &jobs[k], Duration::from_secs(60)).await;
    }
    let v = view(&nodes[live]).await;
    let now_holder = holder(&v, "scheduler").expect("a scheduler after the kill");
    assert_ne!(now_holder, killed_id, "{v:#}");
    eprintln!(
        "the duty passed from {killed_id} to {now_holder}; the last period ran {:?} after the kill",
        killed_at.elapsed()
    );
    // No period is due now: three more checks start nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // One job per period, and no other scheduled job.
    let scheduled: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT id, idempotency_key FROM reset_jobs WHERE trigger = 'scheduled' ORDER BY created_at",
    )
    .fetch_all(&mut sql)
    .await
    .unwrap();
    let mut expected: Vec<(String, Option<String>)> = Vec::new();
    for (j, at) in jobs.iter().zip(&periods) {
        expected.push((j.clone(), Some(run_key(&mut sql, "fleet", at).await)));
    }
    assert_eq!(scheduled, expected, "one job per period");

    // Every account rotated exactly once per period, whichever node committed it.
    let events = audit_events(&api, &root, "account.password.reset").await;
    let mut per_job_account: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e["outcome"] == "success") {
        let job = e["detail"]["job"].as_str().unwrap_or_default().to_string();
        let account = e["target"].as_str().unwrap_or_default().to_string();
        *per_job_account.entry((job, account)).or_default() += 1;
    }
    for (id, login) in &accounts {
        for (k, job) in jobs.iter().enumerate() {
            let n = per_job_account
                .get(&(job.clone(), id.clone()))
                .copied()
                .unwrap_or(0);
            assert_eq!(n, 1, "period {}: {login} was rotated {n} times", k + 1);
        }
        let all = per_job_account
            .iter()
            .filter(|((_, a), _)| a == id)
            .map(|(_, n)| n)
            .sum::<usize>();
        assert_eq!(all, jobs.len(), "{login} was rotated outside the periods");
    }
    // On the target: no password changed more often than its items tried one, and the stored
    // one logs in.
    let mut attempts: BTreeMap<String, usize> = BTreeMap::new();
    for job in &jobs {
        let j = api
            .get(&format!("/v1/reset-jobs/{job}"), &root)
            .await
            .json();
        for i in j["items"].as_array().unwrap() {
            assert_eq!(i["state"], "done", "{i:#}");
            *attempts
                .entry(i["account_id"].as_str().unwrap().to_string())
                .or_default() += i["attempts"].as_u64().unwrap().max(1) as usize;
        }
    }
    let changes = t.password_changes();
    for (id, login) in &accounts {
        let changed = changes.get(login).copied().unwrap_or(0);
        assert!(
            (jobs.len()..=attempts[id]).contains(&changed),
            "{login} changed {changed} times in {} periods ({} attempts)",
            jobs.len(),
            attempts[id]
        );
        let pw = stored_password(&api, &root, id).await;
        assert!(logs_in(&t, login, &pw).await, "{login}");
    }
}

/// Checkout windows end from the database's clock on whichever node sweeps first; all three
/// sweep every 5 seconds, and the window must end once and rotate once.
#[tokio::test]
async fn three_nodes_end_a_checkout_window_once_and_rotate_it_once() {
    let Some((_db, nodes)) = cluster(3, &[]).await else {
        return;
    };
    let apis: Vec<Api> = nodes.iter().map(Api::new).collect();
    let root = nodes[0].root_token.clone();
    let (_, acc) =
        common::resource_with_account(&apis[0], &root, "vault1", "Generic", "svc", "Old-Pass-123!")
            .await;
    let amy = common::user_with_role(&apis[0], &root, "amy", "password-user").await;
    let r = apis[1]
        .call(
            "PUT",
            &format!("/v1/access-policies/account/{acc}"),
            Some(&root),
            Some(json!({"approvals_needed": 0, "max_minutes": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = apis[2]
        .post(
            &format!("/v1/accounts/{acc}/checkouts"),
            &amy,
            json!({"reason": "one minute on three nodes", "minutes": 1}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/accounts/{acc}/password/retrieve");
    let body = json!({"reason": "holder on another node"});
    assert_eq!(apis[0].post(&path, &amy, body.clone()).await.status, 200);
    // The window ends about a minute later; then one node ends it and starts one rotation.
    let deadline = Instant::now() + Duration::from_secs(150);
    let done = loop {
        let c = apis[0]
            .get(&format!("/v1/checkouts/{id}"), &root)
            .await
            .json();
        if c["rotation"]["state"] == "done" {
            break c;
        }
        assert!(Instant::now() < deadline, "not rotated: {c}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(done["end_kind"], "expired", "{done}");
    // A few more sweeps on every node change nothing.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        audit_events(&apis[0], &root, "access.checkout.checkin")
            .await
            .len(),
        1
    );
    let jobs = audit_events(&apis[0], &root, "account.password.reset.request").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        audit_events(&apis[0], &root, "account.password.reset")
            .await
            .iter()
            .filter(|e| e["outcome"] == "success")
            .count(),
        1
    );
    assert_eq!(apis[1].post(&path, &amy, body).await.status, 403);
}
