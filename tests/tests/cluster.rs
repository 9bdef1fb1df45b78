//! Several `lockstep serve` nodes on one PostgreSQL database, one of them killed with SIGKILL
//! again and again while bulk jobs run: every account ends done exactly once (one successful
//! `account.password.reset` event per account and job, no more password changes on the target
//! than the item's attempts), every stored password logs in, and no item is left stuck.
//!
//! The CI run is short. The harness is the same test with more of everything:
//! `scripts/kill-harness.sh` (3 nodes, 4 targets × 75 accounts, 20 rounds, one kill each).

use lockstep_testkit as common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::resets::{logs_in, register, stored_password, users, wait_finished};
use common::sshd::SshTarget;
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
    let Some(db) = common::postgres_database().await else {
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
    let first = Server::start_with(common::ServerOptions {
        database_url: Some(db.url().to_string()),
        extra: NODE_OPTIONS.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    let root = first.root_token.clone();
    let mut nodes = vec![
        Server::join(&first, &NODE_OPTIONS),
        Server::join(&first, &NODE_OPTIONS),
    ];
    nodes.insert(0, first);
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
