//! The crash-kill soak: bulk rotations against real sshd targets while the server is killed
//! with SIGKILL at random points (mid-job, and sometimes again while it recovers), restarted
//! on the same data, and every account's stored password checked by a fresh SSH login.
//! Run it with `cargo run -p lockstep-tests --example soak` (50 iterations by default); CI
//! runs a short version (`tests/tests/soak.rs`).

use std::time::{Duration, Instant};

use serde_json::json;

use super::resets::{logs_in, register, stored_password, users, wait_finished};
use super::sshd::SshTarget;
use super::{Api, Server};

/// How a soak is run.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub iterations: usize,
    /// Seeds the kill points; a failing run is repeated with the same seed.
    pub seed: u64,
    /// Accounts on each of the two targets.
    pub accounts_per_target: usize,
    /// Run the server on this PostgreSQL database instead of its embedded SQLite.
    pub database_url: Option<String>,
}

impl SoakPlan {
    /// A seed from the clock, for runs that do not ask for one.
    pub fn time_seed() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }
}

/// What a soak saw.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub iterations: usize,
    /// SIGKILLs sent, and how many found a job still running.
    pub kills: usize,
    pub kills_mid_job: usize,
    /// Kills during the restart's recovery.
    pub kills_in_recovery: usize,
    /// Accounts whose reset committed, over all iterations.
    pub resets_committed: u64,
    /// Items that ended out-of-sync (both passwords kept for a person to sort out).
    pub out_of_sync: u64,
    /// Accounts whose stored password did not log in: `iteration login`.
    pub lost: Vec<String>,
    /// Answers with a 5xx status.
    pub server_errors: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} iterations, {} kills ({} mid-job, {} in recovery), {} resets committed, \
             {} out-of-sync, {} lost, {} 5xx, {:.0} s",
            self.iterations,
            self.kills,
            self.kills_mid_job,
            self.kills_in_recovery,
            self.resets_committed,
            self.out_of_sync,
            self.lost.len(),
            self.server_errors,
            self.elapsed.as_secs_f64()
        )
    }
}

/// xorshift64*: enough to spread kill points, and repeatable from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

pub async fn run(plan: &SoakPlan) -> SoakReport {
    let started = Instant::now();
    let mut rng = Rng(plan.seed | 1);
    let n = plan.accounts_per_target;
    let targets = [
        SshTarget::start("Root-Pw-1", &users(n)),
        SshTarget::start("Root-Pw-1", &users(n)),
    ];
    let mut server = Server::start_with(super::ServerOptions {
        database_url: plan.database_url.clone(),
        ..Default::default()
    });
    let mut api = Api::new(&server);
    let root = server.root_token.clone();
    let mut accounts = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        for (id, login) in register(&api, &root, t, &format!("soak{i}"), n).await {
            accounts.push((i, id, login));
        }
    }
    let mut report = SoakReport::default();
    // A first rotation, not killed, measures how long one takes, so kill points spread over
    // a running job.
    let t0 = Instant::now();
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"resource_type": "Linux", "reason": "soak warm-up"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_finished(&api, &root, &id, Duration::from_secs(300)).await;
    let job_ms = (t0.elapsed().as_millis() as u64).max(50);
    for it in 0..plan.iterations {
        let r = api
            .post(
                "/v1/reset-jobs",
                &root,
                json!({"resource_type": "Linux", "reason": format!("soak iteration {it}")}),
            )
            .await;
        if r.status >= 500 {
            report.server_errors += 1;
        }
        assert_eq!(r.status, 202, "{}", r.text);
        let id = r.json()["id"].as_str().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(rng.below(job_ms))).await;
        let before = api.get(&format!("/v1/reset-jobs/{id}"), &root).await;
        if before.json()["status"] != "finished" {
            report.kills_mid_job += 1;
        }
        server.kill_and_restart();
        report.kills += 1;
        api = Api::new(&server);
        // Sometimes again, while the new process recovers what the last one left.
        if rng.below(3) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            server.kill_and_restart();
            api = Api::new(&server);
            report.kills += 1;
            report.kills_in_recovery += 1;
        }
        let j = wait_finished(&api, &root, &id, Duration::from_secs(300)).await;
        report.resets_committed += j["progress"]["succeeded"].as_u64().unwrap_or(0);
        report.out_of_sync += j["progress"]["out_of_sync"].as_u64().unwrap_or(0);
        for (t, account, login) in &accounts {
            let pw = stored_password(&api, &root, account).await;
            if !logs_in(&targets[*t], login, &pw).await {
                report
                    .lost
                    .push(format!("iteration {it}: {login} on target {t}"));
            }
        }
        report.iterations += 1;
        eprintln!("soak {}/{}: {}", it + 1, plan.iterations, j["progress"]);
    }
    report.elapsed = started.elapsed();
    report
}
