//! The crash-kill soak: bulk rotations against real sshd targets while the server is killed
//! with SIGKILL at random points (mid-job, and sometimes again while it recovers), restarted
//! on the same data, and every account's stored password checked by a fresh SSH login.
//! Alongside every kill, each iteration draws one failure of the apply itself
//! ([`FailureMode`]): a command template that sets the password and then exits 1, the admin's
//! SSH sessions cut mid-job, or one account's line refused by the target. Target 0 answers in
//! German, target 1's admin is a sudoer that needs no password.
//! Run it with `cargo run -p lockstep-tests --example soak` (50 iterations by default); CI
//! runs a short version (`tests/tests/soak.rs`).

use std::time::{Duration, Instant};

use serde_json::json;

use super::resets::{logs_in, register_with_admin, stored_password, users, wait_finished};
use super::sshd::{SshTarget, TargetUser};
use super::{Api, Server};

/// What goes wrong with the apply in one iteration, besides the SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Only the kill.
    KillOnly,
    /// The Linux reset command sets the password, then exits 1.
    AppliesThenExits1,
    /// The admins' SSH sessions on both targets are killed at a random point of the job.
    SessionsCut,
    /// The target refuses one random account's new password (its PAM password stack).
    OneLineRefused,
}

impl FailureMode {
    /// The mode named `name` (`kill-only`, `applies-then-exits-1`, `sessions-cut`,
    /// `one-line-refused`).
    pub fn named(name: &str) -> Option<FailureMode> {
        FailureMode::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            FailureMode::KillOnly => "kill-only",
            FailureMode::AppliesThenExits1 => "applies-then-exits-1",
            FailureMode::SessionsCut => "sessions-cut",
            FailureMode::OneLineRefused => "one-line-refused",
        }
    }

    pub const ALL: [FailureMode; 4] = [
        FailureMode::KillOnly,
        FailureMode::AppliesThenExits1,
        FailureMode::SessionsCut,
        FailureMode::OneLineRefused,
    ];
}

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
    /// Only this failure mode, instead of one drawn per iteration.
    pub only: Option<FailureMode>,
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
    /// Iterations per failure mode, in [`FailureMode::ALL`] order.
    pub modes: [usize; 4],
    /// Items that ended parked (a refused line: the stored password kept).
    pub parked: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} iterations ({} kill only, {} applies-then-exits-1, {} sessions cut, {} one line \
             refused), {} kills ({} mid-job, {} in recovery), {} resets committed, {} parked, \
             {} out-of-sync, {} lost, {} 5xx, {:.0} s",
            self.iterations,
            self.modes[0],
            self.modes[1],
            self.modes[2],
            self.modes[3],
            self.kills,
            self.kills_mid_job,
            self.kills_in_recovery,
            self.resets_committed,
            self.parked,
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
    let mut sudo_users = users(n);
    sudo_users.push(TargetUser::nopasswd_sudoer("ops", "Ops-Pw-1"));
    let targets = [
        SshTarget::start("Root-Pw-1", &users(n)),
        SshTarget::start("Root-Pw-1", &sudo_users),
    ];
    targets[0].speak_german();
    let mut server = Server::start_with(super::ServerOptions {
        database_url: plan.database_url.clone(),
        ..Default::default()
    });
    let mut api = Api::new(&server);
    let root = server.root_token.clone();
    let mut accounts = Vec::new();
    let admins = [("root", "Root-Pw-1", "root"), ("ops", "Ops-Pw-1", "sudo")];
    for (i, t) in targets.iter().enumerate() {
        let name = format!("soak{i}");
        for (id, login) in register_with_admin(&api, &root, t, &name, n, admins[i]).await {
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
        let drawn = FailureMode::ALL[rng.below(4) as usize];
        let mode = plan.only.unwrap_or(drawn);
        report.modes[FailureMode::ALL
            .iter()
            .position(|m| *m == mode)
            .unwrap_or(0)] += 1;
        match mode {
            FailureMode::AppliesThenExits1 => {
                let template = json!({"program": "/bin/sh", "args": ["-c",
                    "IFS= read -r p && printf '%s:%s\\n' \"$1\" \"$p\" | /usr/sbin/chpasswd; \
                     echo 'a later step failed' >&2; exit 1", "sh", "{login}"],
                    "stdin": "{password}\n"});
                set_reset_command(&api, &root, Some(template)).await;
            }
            FailureMode::OneLineRefused => {
                let t = rng.below(2) as usize;
                let victim = format!("u{:02}", 1 + rng.below(n as u64));
                targets[t].refuse_password_changes_for(&victim);
            }
            FailureMode::KillOnly | FailureMode::SessionsCut => {}
        }
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
        let kill_at = Duration::from_millis(rng.below(job_ms));
        if mode == FailureMode::SessionsCut {
            let cut_at = Duration::from_millis(rng.below(job_ms));
            tokio::time::sleep(cut_at.min(kill_at)).await;
            targets[0].cut_sessions_of("root");
            targets[1].cut_sessions_of("ops");
            tokio::time::sleep(kill_at.saturating_sub(cut_at)).await;
        } else {
            tokio::time::sleep(kill_at).await;
        }
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
        report.parked += j["items"]
            .as_array()
            .map(|items| items.iter().filter(|i| i["state"] == "parked").count() as u64)
            .unwrap_or(0);
        match mode {
            FailureMode::AppliesThenExits1 => set_reset_command(&api, &root, None).await,
            FailureMode::OneLineRefused => {
                for t in &targets {
                    t.allow_password_changes();
                }
            }
            FailureMode::KillOnly | FailureMode::SessionsCut => {}
        }
        for (t, account, login) in &accounts {
            let pw = stored_password(&api, &root, account).await;
            if !logs_in(&targets[*t], login, &pw).await {
                let item = j["items"]
                    .as_array()
                    .and_then(|items| items.iter().find(|i| i["account_id"] == *account))
                    .map(|i| format!("{} ({})", i["state"], i["detail"]))
                    .unwrap_or_default();
                report.lost.push(format!(
                    "iteration {it} ({mode:?}): {login} on target {t}: {item}"
                ));
            }
        }
        report.iterations += 1;
        eprintln!(
            "soak {}/{} ({mode:?}): {}",
            it + 1,
            plan.iterations,
            j["progress"]
        );
    }
    report.elapsed = started.elapsed();
    report
}

/// Gives the Linux type `template` as its reset command, or its default back (`None`), each
/// approved by a second administrator.
async fn set_reset_command(api: &Api, token: &str, template: Option<serde_json::Value>) {
    super::resets::set_reset_command(api, token, "Linux", template).await;
}
