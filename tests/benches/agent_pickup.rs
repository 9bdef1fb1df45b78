//! Agent task pickup latency: from the reset API call to the agent holding the task, over 200
//! resets, for Lockstep's long-poll beside fixed-interval polling at 1 s (measured) and at the
//! reference product's 60 s (the same uniform-arrival model the 1 s run checks).
//! Then the server's memory with 1,000 agents holding long-polls on loopback, and the pickup
//! latency while they do.
//!
//! ```sh
//! cargo build --release -p lockstep-server
//! cargo bench -p lockstep-tests --bench agent_pickup
//! ```
//! `LOCKSTEP_BENCH_RESETS` (default 200), `LOCKSTEP_BENCH_POLL_RESETS` (default 60),
//! `LOCKSTEP_BENCH_AGENTS` (default 1000). The agents are simulated in this process: they speak
//! the real protocol (enrollment, signed requests, long-poll, reports) but change no password,
//! so what is measured is the server and the channel, not `chpasswd`.

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::sim_agent::{SimAgent, random_bytes};
use common::{Api, Server, ServerOptions};
use serde_json::json;
use tokio::sync::mpsc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs an agent that takes tasks, tells `tx` when each arrived, and reports them. With
/// `interval`, it polls without holding every `interval` (the reference product's model).
fn serve_tasks(agent: SimAgent, interval: Option<Duration>, tx: mpsc::UnboundedSender<Instant>) {
    tokio::spawn(async move {
        let session = hex::encode(random_bytes::<8>());
        loop {
            let wait = if interval.is_some() { 0 } else { 25 };
            match agent.next(&session, wait).await {
                Ok(Some(task)) => {
                    let _ = tx.send(Instant::now());
                    agent.report(&session, &task.id).await;
                }
                Ok(None) => {
                    if let Some(i) = interval {
                        tokio::time::sleep(i).await;
                    }
                }
                Err(_) => return,
            }
        }
    });
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Stats {
        p50: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
        max: *v.last().unwrap(),
    }
}

/// `n` resets of `account`, one at a time, each started at a random point (0–`jitter`) after
/// the previous finished; returns each pickup latency in ms.
async fn pickups(
    api: &Api,
    root: &str,
    account: &str,
    n: usize,
    jitter: Duration,
    rx: &mut mpsc::UnboundedReceiver<Instant>,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if !jitter.is_zero() {
            let f = f64::from(u16::from_le_bytes(random_bytes::<2>())) / f64::from(u16::MAX);
            tokio::time::sleep(jitter.mul_f64(f)).await;
        }
        let t0 = Instant::now();
        let r = api
            .post(
                &format!("/v1/accounts/{account}/reset"),
                root,
                json!({"reason": "bench"}),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let got = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("the agent got the task")
            .unwrap();
        out.push(got.duration_since(t0).as_secs_f64() * 1000.0);
        let job = r.json()["id"].as_str().unwrap().to_string();
        loop {
            let j = api
                .get(&format!("/v1/reset-jobs/{job}?wait=10"), root)
                .await
                .json();
            if j["status"] == "finished" {
                assert_eq!(j["items"][0]["state"], "done", "{j}");
                break;
            }
        }
    }
    out
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

async fn token(api: &Api, root: &str) -> String {
    let r = api.post("/v1/agent-tokens", root, json!({})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["token"].as_str().unwrap().to_string()
}

async fn account_of(api: &Api, root: &str, rid: &str) -> String {
    api.get(&format!("/v1/resources/{rid}/accounts"), root)
        .await
        .json()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let resets = env_usize("LOCKSTEP_BENCH_RESETS", 200);
    let poll_resets = env_usize("LOCKSTEP_BENCH_POLL_RESETS", 60);
    let fleet = env_usize("LOCKSTEP_BENCH_AGENTS", 1000);
    let server = Server::start_with(ServerOptions {
        dev: false,
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let http = api.http.clone();

    // Long-poll.
    let lp = SimAgent::enroll(&http, &server.base, &token(&api, &root).await, "lp").await;
    let lp_account = account_of(&api, &root, &lp.discover("svc").await).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    serve_tasks(lp.clone(), None, tx);
    // A few resets to warm up connections and caches.
    pickups(&api, &root, &lp_account, 5, Duration::ZERO, &mut rx).await;
    let long_poll = stats(
        pickups(
            &api,
            &root,
            &lp_account,
            resets,
            Duration::from_millis(50),
            &mut rx,
        )
        .await,
    );

    // Fixed-interval polling every second.
    let fp = SimAgent::enroll(&http, &server.base, &token(&api, &root).await, "fp").await;
    let fp_account = account_of(&api, &root, &fp.discover("svc").await).await;
    let (tx, mut rx2) = mpsc::unbounded_channel();
    serve_tasks(fp.clone(), Some(Duration::from_secs(1)), tx);
    let poll_1s = stats(
        pickups(
            &api,
            &root,
            &fp_account,
            poll_resets,
            Duration::from_secs(1),
            &mut rx2,
        )
        .await,
    );

    // A fleet holding long-polls: memory, and pickup while they are connected.
    let pid = server.child.id();
    let before = rss_kib(pid);
    let mut agents = Vec::with_capacity(fleet);
    for i in 0..fleet {
        agents.push(
            SimAgent::enroll(
                &http,
                &server.base,
                &token(&api, &root).await,
                &format!("a{i}"),
            )
            .await,
        );
    }
    let enrolled = rss_kib(pid);
    let fleet_http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(
                &std::fs::read(server.data_dir().join("tls/cert.pem")).unwrap(),
            )
            .unwrap(),
        )
        .pool_max_idle_per_host(fleet + 10)
        .build()
        .unwrap();
    for a in &agents {
        let mut a = a.clone();
        a.http = fleet_http.clone();
        tokio::spawn(async move {
            let session = hex::encode(random_bytes::<8>());
            while a.hold(&session).await {}
        });
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let held = rss_kib(pid);
    let under_fleet = stats(
        pickups(
            &api,
            &root,
            &lp_account,
            50,
            Duration::from_millis(50),
            &mut rx,
        )
        .await,
    );
    let held_after = rss_kib(pid);

    println!("agent task pickup latency (reset API call → agent holds the task), ms:");
    println!(
        "  Lockstep long-poll       n={resets:<4} p50 {:>8.1}  p99 {:>8.1}  max {:>8.1}",
        long_poll.p50, long_poll.p99, long_poll.max
    );
    println!(
        "  fixed polling, 1 s       n={poll_resets:<4} p50 {:>8.1}  p99 {:>8.1}  max {:>8.1}",
        poll_1s.p50, poll_1s.p99, poll_1s.max
    );
    println!(
        "  fixed polling, 60 s      model  p50 {:>8.1}  p99 {:>8.1}  (uniform arrival: T/2, 0.99·T)",
        30_000.0, 59_400.0
    );
    println!(
        "  long-poll, {fleet} agents held  n=50   p50 {:>8.1}  p99 {:>8.1}  max {:>8.1}",
        under_fleet.p50, under_fleet.p99, under_fleet.max
    );
    println!("server memory (VmRSS), MiB:");
    println!(
        "  before the fleet enrolled   {:>8.1}",
        before as f64 / 1024.0
    );
    println!(
        "  {fleet} agents enrolled, idle  {:>8.1}",
        enrolled as f64 / 1024.0
    );
    println!(
        "  {fleet} long-polls held         {:>8.1}  (+{:.1} KiB per agent)",
        held as f64 / 1024.0,
        (held.saturating_sub(enrolled)) as f64 / fleet as f64
    );
    println!(
        "  after 50 resets under them  {:>8.1}",
        held_after as f64 / 1024.0
    );
}
