//! Bulk verified rotation throughput on real OpenSSH targets, side by side in one run with
//! (a) the loop an admin would write (OpenSSH client + sshpass, `chpasswd` then a login with the
//! new password, 8 wide with `xargs -P 8`) and (b) the login ceiling of the same targets (how
//! many password logins per second they accept from a fast client).
//!
//! ```sh
//! cargo build --release -p lockstep-server
//! cargo bench -p lockstep-tests --bench reset_throughput
//! ```
//! (c) the **bare client**: the same remote work Lockstep does per account (one kept admin
//! connection per target, `chpasswd` over it for a batch of accounts, then one verifying login
//! per account with its new password) from the server's own russh client, with no journal,
//! database, vault or listeners, at the best of a few batch and concurrency shapes: the physical
//! ceiling of a verified rotation on these targets. Lockstep's job runs on SQLite (one node),
//! then on PostgreSQL with one node and with three nodes, against the same targets.
//!
//! `LOCKSTEP_BENCH_ACCOUNTS` (default 1000) accounts over 4 targets for Lockstep;
//! `LOCKSTEP_BENCH_BASELINE_ACCOUNTS` (default 200) for the loop and for each shape of the bare
//! client. Needs root (the targets run in namespaces) and the machine's PostgreSQL, and takes
//! about ten minutes. Results go to stdout; docs/performance.md has them.

use lockstep_testkit as common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::registry::publish_approved;
use common::sshd::{SshTarget, TargetUser, testbed_dir};
use common::{Api, Server};
use lockstep_server::reset::connector::Timeouts;
use lockstep_server::reset::ssh::{self, Endpoint};
use lockstep_server::vault::Secret;
use serde_json::{Value, json};
use zeroize::Zeroizing;

const TARGETS: usize = 4;
const START_PW: &str = "Start-Pw-1";
const ROOT_PW: &str = "Root-Pw-1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn endpoint(t: &SshTarget) -> Endpoint {
    Endpoint {
        host: t.ip.clone(),
        port: t.port,
        pinned_host_key: None,
    }
}

/// Password logins per second the targets accept from `concurrency` russh clients, each
/// logging in as one of `logins` (target index, user, password) round robin, for `secs`.
async fn login_ceiling(
    targets: &[SshTarget],
    logins: &[(usize, String, String)],
    concurrency: usize,
    secs: u64,
) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (i, user, pw) = logins[w % logins.len()].clone();
        let e = endpoint(&targets[i]);
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let pw = Secret::new(pw);
            while Instant::now() < deadline {
                if let Ok(c) = ssh::connect(&e, &user, &pw, Timeouts::default()).await {
                    count.fetch_add(1, Ordering::Relaxed);
                    c.close().await;
                }
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Mean seconds of the parts of one verified rotation, measured sequentially on one target:
/// TCP + key exchange, password authentication, `chpasswd` over an open connection.
async fn breakdown(t: &SshTarget, user: &str, samples: usize) -> (f64, f64, f64) {
    let e = endpoint(t);
    let (mut kex, mut auth, mut chpasswd) = (0.0, 0.0, 0.0);
    let root_pw = Secret::new(ROOT_PW.into());
    // Key exchange alone: a login with a wrong password costs the exchange and one PAM check.
    let wrong = Secret::new("wrong".into());
    for _ in 0..samples {
        let s = Instant::now();
        let _ = ssh::connect(&e, "nobody-here", &wrong, Timeouts::default()).await;
        kex += s.elapsed().as_secs_f64();
        let s = Instant::now();
        let c = ssh::connect(&e, "root", &root_pw, Timeouts::default())
            .await
            .expect("root login");
        auth += s.elapsed().as_secs_f64();
        let line = Zeroizing::new(format!("{user}:Bench-Pw-{}!\n", samples).into_bytes());
        let s = Instant::now();
        let out = c.run("/usr/sbin/chpasswd", line).await.expect("chpasswd");
        assert_eq!(out.status, 0);
        chpasswd += s.elapsed().as_secs_f64();
        c.close().await;
    }
    let n = samples as f64;
    (kex / n, (auth - kex).max(0.0) / n, chpasswd / n)
}

/// The loop an admin would write: per account, `chpasswd` over an OpenSSH login as root, then
/// a login with the new password; 8 at a time with `xargs -P 8`. Returns accounts per second
/// and how many were verified.
fn admin_loop(targets: &[SshTarget], accounts: &[(usize, String)]) -> (f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let sshpass = testbed_dir().join("usr/bin/sshpass");
    let root_pw = dir.path().join("root.pw");
    std::fs::write(&root_pw, ROOT_PW).unwrap();
    let script = dir.path().join("one.sh");
    // Each line: ip port user; the new password goes through files only (never argv).
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
set -e
ip=$1 port=$2 user=$3
pw=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')Aa1!
f=$(mktemp); printf '%s' "$pw" > "$f"
O="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p $port"
printf '%s:%s\n' "$user" "$pw" | {sshpass} -f {root} ssh $O root@$ip /usr/sbin/chpasswd
{sshpass} -f "$f" ssh -n $O "$user@$ip" true && echo verified
rm -f "$f"
"#,
            sshpass = sshpass.display(),
            root = root_pw.display()
        ),
    )
    .unwrap();
    let mut input = String::new();
    for (i, user) in accounts {
        input.push_str(&format!("{} {} {user}\n", targets[*i].ip, targets[*i].port));
    }
    let start = Instant::now();
    let mut child = Command::new("xargs")
        .args(["-P", "8", "-n", "3", "sh"])
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("xargs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let verified = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l == "verified")
        .count();
    (accounts.len() as f64 / secs, verified)
}

/// The bare client: per target, one kept root connection; `pipelines` loops per target, each
/// taking `batch` accounts at a time: one `chpasswd` run for the batch over the kept
/// connection, then a verifying login per account with its new password, all of the batch at
/// once. Returns accounts per second and how many verified.
async fn bare_client(
    targets: &[SshTarget],
    accounts: &[(usize, String)],
    batch: usize,
    pipelines: usize,
) -> (f64, usize) {
    let start = Instant::now();
    let mut per_target: Vec<Vec<String>> = vec![Vec::new(); targets.len()];
    for (i, user) in accounts {
        per_target[*i].push(user.clone());
    }
    let mut tasks = Vec::new();
    for (i, users) in per_target.into_iter().enumerate() {
        let e = endpoint(&targets[i]);
        tasks.push(tokio::spawn(async move {
            let root_pw = Secret::new(ROOT_PW.into());
            let admin = Arc::new(
                ssh::connect(&e, "root", &root_pw, Timeouts::default())
                    .await
                    .expect("root login"),
            );
            let queue = Arc::new(std::sync::Mutex::new(users));
            let mut loops = Vec::new();
            for _ in 0..pipelines {
                let (admin, queue, e) = (admin.clone(), queue.clone(), e.clone());
                loops.push(tokio::spawn(async move {
                    let mut verified = 0;
                    loop {
                        let mine: Vec<String> = {
                            let mut q = queue.lock().unwrap();
                            let n = q.len().min(batch);
                            q.drain(..n).collect()
                        };
                        if mine.is_empty() {
                            return verified;
                        }
                        let pws: Vec<String> = mine
                            .iter()
                            .map(|_| format!("{}Aa1!", common::random_hex(9)))
                            .collect();
                        let mut lines = Zeroizing::new(Vec::new());
                        for (u, pw) in mine.iter().zip(&pws) {
                            lines.extend_from_slice(format!("{u}:{pw}\n").as_bytes());
                        }
                        let out = admin
                            .run("/usr/sbin/chpasswd", lines)
                            .await
                            .expect("chpasswd");
                        assert_eq!(out.status, 0, "chpasswd");
                        let logins = mine.iter().zip(pws).map(|(u, pw)| {
                            let e = e.clone();
                            let u = u.clone();
                            async move {
                                let pw = Secret::new(pw);
                                match ssh::connect(&e, &u, &pw, Timeouts::default()).await {
                                    Ok(c) => {
                                        c.close().await;
                                        1
                                    }
                                    Err(_) => 0,
                                }
                            }
                        });
                        verified += futures_util::future::join_all(logins)
                            .await
                            .into_iter()
                            .sum::<usize>();
                    }
                }));
            }
            let mut verified = 0;
            for l in loops {
                verified += l.await.unwrap();
            }
            verified
        }));
    }
    let mut verified = 0;
    for t in tasks {
        verified += t.await.unwrap();
    }
    (
        accounts.len() as f64 / start.elapsed().as_secs_f64(),
        verified,
    )
}

/// Runs one bulk job over `ids` through `api` and waits for its end; returns (accounts done
/// per second, done, the job).
async fn lockstep_job(api: &Api, root: &str, ids: &[&str]) -> (f64, usize, Value) {
    let start = Instant::now();
    let r = api
        .post(
            "/v1/reset-jobs",
            root,
            json!({"accounts": ids, "reason": "benchmark"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let job: Value = loop {
        let j = api
            .get(&format!("/v1/reset-jobs/{id}?wait=10"), root)
            .await
            .json();
        if j["status"] == "finished" {
            break j;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let done = job["progress"]["succeeded"].as_u64().unwrap_or(0) as usize;
    (done as f64 / secs, done, job)
}

/// Registers the targets and their accounts; returns (account id, target index, login).
async fn register(
    api: &Api,
    token: &str,
    targets: &[SshTarget],
    per: usize,
) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let body = json!({"name": format!("bench{i}"), "resource_type": "Linux", "ip_address": t.ip, "ssh_port": t.port});
        let rid = api.post("/v1/resources", token, body).await.json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/v1/resources/{rid}/accounts");
        let admin = api
            .post(
                &path,
                token,
                json!({"login_name": "root", "password": ROOT_PW}),
            )
            .await
            .json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = api
            .call(
                "PUT",
                &format!("/v1/resources/{rid}/reset-settings"),
                Some(token),
                Some(json!({"admin_account_id": admin})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        for u in 1..=per {
            let login = format!("b{u:04}");
            let r = api
                .post(
                    &path,
                    token,
                    json!({"login_name": login, "password": START_PW}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            out.push((r.json()["id"].as_str().unwrap().to_string(), i, login));
        }
    }
    out
}

/// One pre-reset listener (check-account-active: `passwd -S` on the target) and one
/// post-reset listener (exec-hook: hands LOGIN:PASSWORD to `wc -c` on the server), published
/// and approved like in production.
async fn publish_listeners(api: &Api, root: &str) {
    let dir = tempfile::tempdir().unwrap();
    let wasm = common::listeners::wasm_dir();
    publish_approved(
        api,
        root,
        dir.path(),
        &[
            (
                "check-account-active",
                wasm.join("check_account_active.wasm"),
                json!({"phases": ["pre-reset"], "modes": ["agentless"], "resource_types": ["Linux"], "order": 10}),
            ),
            (
                "exec-hook",
                wasm.join("exec_hook.wasm"),
                json!({"phases": ["post-reset"], "modes": ["agentless"], "resource_types": ["Linux"], "order": 10, "parameters": ["/usr/bin/wc", "-c"]}),
            ),
        ],
    )
    .await;
}

/// CPU time of the machine (busy, all cores, from `/proc/stat`) and of some server processes
/// (`/proc/PID/stat`), from a start, in clock ticks.
struct Cpu {
    machine: u64,
    servers: u64,
}

fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu = stat.lines().next().unwrap();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap())
        .collect();
    v.iter().sum::<u64>() - v[3] - v[4]
}

fn process_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn servers_ticks(servers: &[&Server]) -> u64 {
    servers.iter().map(|s| process_ticks(s.child.id())).sum()
}

impl Cpu {
    fn start(servers: &[&Server]) -> Cpu {
        Cpu {
            machine: machine_busy_ticks(),
            servers: servers_ticks(servers),
        }
    }

    /// "CPU per account: machine X ms, Lockstep server(s) Y ms".
    fn per_account(&self, servers: &[&Server], accounts: usize) -> String {
        // USER_HZ is 100 on Linux.
        let ms = |ticks: u64| ticks as f64 * 10.0 / accounts.max(1) as f64;
        format!(
            "CPU per account: machine {:.0} ms, Lockstep server(s) {:.0} ms",
            ms(machine_busy_ticks() - self.machine),
            ms(servers_ticks(servers) - self.servers)
        )
    }
}

/// The bare client's shapes: (accounts per `chpasswd` run, loops per target).
const BARE_SHAPES: [(usize, usize); 4] = [(1, 8), (4, 4), (8, 2), (16, 1)];

/// Lockstep's job over every `b…` account on PostgreSQL: first with one node, then with two
/// more joined; returns (1 node accounts/s, 3 nodes accounts/s, how many items each node
/// committed), or None without a PostgreSQL.
async fn lockstep_on_postgres(targets: &[SshTarget], per: usize) -> Option<(f64, f64, String)> {
    let db = common::postgres::postgres_database().await?;
    let no_scheduler = ["--rotation-check-secs", "0"];
    let first = Server::start_with(common::ServerOptions {
        database_url: Some(db.url().to_string()),
        extra: no_scheduler.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    let api = Api::new(&first);
    let root = first.root_token.clone();
    let accounts = register(&api, &root, targets, per).await;
    let ids: Vec<&str> = accounts.iter().map(|(id, _, _)| id.as_str()).collect();
    // Where the time goes: the journal alone, then with the listeners; the servers' own CPU.
    let cpu = Cpu::start(&[&first]);
    let (journal_only, done, _) = lockstep_job(&api, &root, &ids).await;
    println!(
        "  Lockstep, PostgreSQL, 1 node, no listeners: {done}/{} verified, {journal_only:.2} accounts/s; {}",
        ids.len(),
        cpu.per_account(&[&first], done)
    );
    publish_listeners(&api, &root).await;
    let cpu = Cpu::start(&[&first]);
    let (one, done, _) = lockstep_job(&api, &root, &ids).await;
    println!(
        "  Lockstep, PostgreSQL, 1 node: {done}/{} verified, {one:.2} accounts/s; {}",
        ids.len(),
        cpu.per_account(&[&first], done)
    );
    let others: Vec<Server> = (0..2)
        .map(|_| Server::join(&first, &no_scheduler))
        .collect();
    let nodes = [&first, &others[0], &others[1]];
    let cpu = Cpu::start(&nodes);
    let (three, done, job) = lockstep_job(&api, &root, &ids).await;
    let three_cpu = cpu.per_account(&nodes, done);
    let mut by_node = std::collections::BTreeMap::<String, usize>::new();
    for item in job["items"].as_array().into_iter().flatten() {
        let committed = item["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["state"] == "done")
            .filter_map(|s| s["node"].as_str());
        for node in committed {
            *by_node.entry(node.to_string()).or_default() += 1;
        }
    }
    let spread = by_node
        .values()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    println!(
        "  Lockstep, PostgreSQL, 3 nodes: {done}/{} verified, {three:.2} accounts/s; items done per node: {spread}; {three_cpu}",
        ids.len()
    );
    drop(others);
    drop(first);
    drop(db);
    Some((one, three, format!("items done per node {spread}")))
}

#[tokio::main]
async fn main() {
    let n = env_usize("LOCKSTEP_BENCH_ACCOUNTS", 1000);
    let baseline_n = env_usize("LOCKSTEP_BENCH_BASELINE_ACCOUNTS", 200);
    let per = n.div_ceil(TARGETS);
    println!(
        "reset_throughput: {n} accounts over {TARGETS} real sshd targets (+ {baseline_n} for the loop)"
    );
    let started = Instant::now();
    // Baseline accounts live on the same targets, under other names.
    let targets: Vec<SshTarget> = (0..TARGETS)
        .map(|_| {
            let mut users: Vec<TargetUser> = (1..=per)
                .map(|u| TargetUser::new(&format!("b{u:04}"), START_PW))
                .collect();
            users.extend(
                (1..=baseline_n.div_ceil(TARGETS))
                    .map(|u| TargetUser::new(&format!("l{u:04}"), START_PW)),
            );
            users.extend(
                (1..=baseline_n.div_ceil(TARGETS))
                    .map(|u| TargetUser::new(&format!("c{u:04}"), START_PW)),
            );
            SshTarget::start(ROOT_PW, &users)
        })
        .collect();
    println!("  targets up in {:.1} s", started.elapsed().as_secs_f64());

    // (b) the login ceiling on the starting SHA-512 hashes.
    let logins: Vec<(usize, String, String)> = (0..TARGETS)
        .flat_map(|i| (1..=4).map(move |u| (i, format!("l{u:04}"), START_PW.to_string())))
        .collect();
    let ceiling_sha512 = login_ceiling(&targets, &logins, 16, 8).await;
    println!("  login ceiling, SHA-512 hashes: {ceiling_sha512:.1} logins/s");

    // (a) the loop an admin would write.
    let loop_accounts: Vec<(usize, String)> = (0..baseline_n)
        .map(|k| (k % TARGETS, format!("l{:04}", k / TARGETS + 1)))
        .collect();
    let (loop_rate, loop_verified) = admin_loop(&targets, &loop_accounts);
    println!(
        "  8-wide OpenSSH loop: {loop_rate:.2} accounts/s ({loop_verified}/{baseline_n} verified)"
    );

    // (c) the bare client, at a few shapes (accounts per chpasswd run × loops per target);
    // the best is the ceiling.
    let bare_accounts: Vec<(usize, String)> = (0..baseline_n)
        .map(|k| (k % TARGETS, format!("c{:04}", k / TARGETS + 1)))
        .collect();
    let mut bare = Vec::new();
    for (batch, pipelines) in BARE_SHAPES {
        let cpu = Cpu::start(&[]);
        let (rate, verified) = bare_client(&targets, &bare_accounts, batch, pipelines).await;
        println!(
            "  bare client, {batch} per chpasswd × {pipelines} per target: {rate:.2} accounts/s \
             ({verified}/{baseline_n} verified); {}",
            cpu.per_account(&[], verified)
        );
        assert_eq!(
            verified, baseline_n,
            "the bare client verifies every account"
        );
        bare.push((batch, pipelines, rate));
    }
    let &(best_batch, best_pipelines, bare_rate) =
        bare.iter().max_by(|a, b| a.2.total_cmp(&b.2)).unwrap();

    // Lockstep.
    let server = Server::start_with(common::ServerOptions {
        extra: vec!["--rotation-check-secs".into(), "0".into()],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    publish_listeners(&api, &root).await;
    let accounts = register(&api, &root, &targets, per).await;
    let ids: Vec<&str> = accounts.iter().map(|(id, _, _)| id.as_str()).collect();
    let cpu = Cpu::start(&[&server]);
    let (rate, done, job) = lockstep_job(&api, &root, &ids).await;
    let sqlite_cpu = cpu.per_account(&[&server], done);
    let secs = done as f64 / rate.max(1e-9);
    let mut pre = Vec::new();
    let mut post = Vec::new();
    for item in job["items"].as_array().unwrap() {
        for l in item["listeners"].as_array().into_iter().flatten() {
            let ms = l["elapsed_ms"].as_f64().unwrap_or(0.0);
            match l["phase"].as_str() {
                Some("pre-reset") => pre.push(ms),
                _ => post.push(ms),
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!("  Lockstep: {done}/{n} verified in {secs:.1} s = {rate:.2} accounts/s; {sqlite_cpu}");
    println!(
        "    listeners per account: pre {:.1} ms, post {:.1} ms (mean)",
        mean(&pre),
        mean(&post)
    );

    // (b) again, on the yescrypt hashes chpasswd wrote: sample the new passwords.
    let mut logins = Vec::new();
    for (acc, i, login) in accounts.iter().step_by(accounts.len() / 16).take(16) {
        let r = api
            .post(
                &format!("/v1/accounts/{acc}/password/retrieve"),
                &root,
                json!({"reason": "benchmark ceiling"}),
            )
            .await;
        logins.push((
            *i,
            login.clone(),
            r.json()["password"].as_str().unwrap().to_string(),
        ));
    }
    let ceiling_yescrypt = login_ceiling(&targets, &logins, 16, 8).await;
    println!("  login ceiling, yescrypt hashes: {ceiling_yescrypt:.1} logins/s");

    let (kex, auth, chpasswd) = breakdown(&targets[0], "l0001", 20).await;
    println!(
        "  where one verified rotation goes (sequential, one target): key exchange {:.1} ms, \
         password check (PAM) {:.1} ms, chpasswd over a kept connection {:.1} ms",
        kex * 1000.0,
        auth * 1000.0,
        chpasswd * 1000.0
    );
    // Lockstep on PostgreSQL, one node and then three, on the same targets and accounts (after
    // the ceiling above, which logs in with the SQLite run's passwords).
    let on_postgres = lockstep_on_postgres(&targets, per).await;

    println!();
    println!("| method | accounts/s (or logins/s) |");
    println!("| --- | --- |");
    println!("| 8-wide OpenSSH loop ({baseline_n} accounts) | {loop_rate:.2} |");
    println!(
        "| bare client (best: {best_batch} per chpasswd × {best_pipelines} per target, {baseline_n} accounts) | {bare_rate:.2} |"
    );
    println!("| Lockstep bulk job ({n} accounts, 1 pre + 1 post listener), SQLite | {rate:.2} |");
    if let Some((one, three, spread)) = &on_postgres {
        println!("| Lockstep, PostgreSQL, 1 node | {one:.2} |");
        println!("| Lockstep, PostgreSQL, 3 nodes ({spread}) | {three:.2} |");
    }
    println!("| login ceiling, SHA-512 | {ceiling_sha512:.1} |");
    println!("| login ceiling, yescrypt | {ceiling_yescrypt:.1} |");
    println!(
        "Lockstep = {:.1}x the 8-wide loop, {:.0}% of the bare client, {:.0}% of the yescrypt login ceiling",
        rate / loop_rate,
        100.0 * rate / bare_rate,
        100.0 * rate / ceiling_yescrypt
    );
    if let Some((one, three, _)) = &on_postgres {
        println!(
            "on PostgreSQL: 1 node {:.0}% of the bare client, 3 nodes {:.0}%",
            100.0 * one / bare_rate,
            100.0 * three / bare_rate
        );
    }
    println!("total bench time {:.0} s", started.elapsed().as_secs_f64());
}
