//! Inventory at scale on one node: 1,000 → 10,000 → 100,000 accounts (ten per resource, so
//! 100 → 1,000 → 10,000 resources), on SQLite and on PostgreSQL. At each size, over HTTPS
//! with the root token: p50/p99 of listing and filtering resources and accounts, of reading
//! one, and of creating a bulk reset job of 10,000 accounts (1,000 at the smallest size); the
//! server's resident memory. Every row is made through the API, as an operator's import
//! would, and the seeding rate is printed too.
//!
//! ```sh
//! cargo build --release -p lockstep-server
//! cargo bench -p lockstep-tests --bench inventory_scale
//! ```
//! `LOCKSTEP_BENCH_SIZES` (default `1000,10000,100000`), `LOCKSTEP_BENCH_BACKENDS` (default
//! `sqlite,postgres`), `LOCKSTEP_BENCH_SAMPLES` (requests per measured row, default 300).
//! Written up in `docs/performance.md`, "Inventory at scale".

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::postgres::{PostgresDatabase, postgres_database};
use common::{Api, Server, ServerOptions};
use futures_util::StreamExt;
use serde_json::json;

/// Accounts per resource; one of them is `root`, the login the filter looks for.
const PER_RESOURCE: usize = 10;
/// One resource in this many is of the rarer type (`Windows`; the rest are `Linux`).
const RARE_TYPE_EVERY: usize = 10;
/// Requests in flight while seeding.
const SEED_CONCURRENCY: usize = 8;
/// Most accounts one bulk job takes (`reset::jobs::MAX_JOB_ACCOUNTS`).
const BULK: usize = 10_000;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// (p50, p99) in ms.
fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A deterministic spread of indexes (no RNG dependency; the bench only needs every request
/// to land somewhere different).
fn spread(i: usize, n: usize) -> usize {
    (i.wrapping_mul(2_654_435_761) >> 7) % n.max(1)
}

struct Inventory {
    resources: Vec<String>,
    accounts: Vec<String>,
}

/// Grows the inventory to `accounts` accounts through the API; returns the seconds it took.
async fn seed_to(api: &Api, root: &str, inv: &mut Inventory, accounts: usize) -> f64 {
    let t0 = Instant::now();
    let have = inv.resources.len();
    let want = accounts / PER_RESOURCE;
    let new_resources: Vec<String> = futures_util::stream::iter(have..want)
        .map(|i| async move {
            let kind = if i % RARE_TYPE_EVERY == 0 {
                "Windows"
            } else {
                "Linux"
            };
            let r = api
                .post(
                    "/v1/resources",
                    root,
                    json!({"name": format!("host-{i:06}"), "resource_type": kind,
                           "ip_address": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.json()["id"].as_str().unwrap().to_string()
        })
        .buffered(SEED_CONCURRENCY)
        .collect()
        .await;
    let new_accounts: Vec<String> = futures_util::stream::iter(
        new_resources
            .iter()
            .enumerate()
            .flat_map(|(k, rid)| (0..PER_RESOURCE).map(move |j| (have + k, rid.clone(), j))),
    )
    .map(|(i, rid, j)| async move {
        let login = if j == 0 {
            "root".to_string()
        } else {
            format!("svc{i:06}x{j}")
        };
        let r = api
            .post(
                &format!("/v1/resources/{rid}/accounts"),
                root,
                json!({"login_name": login, "password": format!("Seed-{i}-{j}-pw!")}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["id"].as_str().unwrap().to_string()
    })
    .buffered(SEED_CONCURRENCY)
    .collect()
    .await;
    inv.resources.extend(new_resources);
    inv.accounts.extend(new_accounts);
    t0.elapsed().as_secs_f64()
}

/// `samples` GETs of `path(i)`, one after another; (p50, p99) in ms. Every answer must be a
/// 200 whose `items` (for a list) are as many as `expect_items` says.
async fn measure(
    api: &Api,
    root: &str,
    samples: usize,
    path: impl Fn(usize) -> String,
    expect_items: impl Fn(&serde_json::Value) -> bool,
) -> (f64, f64) {
    let mut ms = Vec::with_capacity(samples);
    for i in 0..samples {
        let p = path(i);
        let t0 = Instant::now();
        let r = api.get(&p, root).await;
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 200, "{p}: {}", r.text);
        assert!(expect_items(&r.json()), "{p}: unexpected answer {}", r.text);
    }
    p50_p99(ms)
}

fn cursor_at(id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn page_of(n: usize) -> impl Fn(&serde_json::Value) -> bool {
    move |v| v["items"].as_array().is_some_and(|a| a.len() == n)
}

fn some_items(v: &serde_json::Value) -> bool {
    v["items"].as_array().is_some_and(|a| !a.is_empty())
}

/// A page of a list (ids are not in creation order, so a cursor's page may be short).
fn a_list(v: &serde_json::Value) -> bool {
    v["items"].as_array().is_some_and(|a| a.len() <= 100)
}

fn no_items(v: &serde_json::Value) -> bool {
    v["items"].as_array().is_some_and(|a| a.is_empty())
}

fn has_id(v: &serde_json::Value) -> bool {
    v["id"].is_string()
}

/// One measured row: its name and (p50, p99) at each size.
type Row = (&'static str, Vec<(f64, f64)>);

struct BackendRun {
    backend: String,
    sizes: Vec<usize>,
    rows: Vec<Row>,
    seed_rate: Vec<f64>,
    bulk: Vec<(usize, f64, f64)>,
    rss_mib: Vec<f64>,
    peak_mib: Vec<f64>,
}

async fn run_backend(backend: &str, sizes: &[usize], samples: usize) -> Option<BackendRun> {
    let db: Option<PostgresDatabase> = if backend == "postgres" {
        Some(postgres_database().await?)
    } else {
        None
    };
    let server = Server::start_with(ServerOptions {
        dev: false,
        database_url: db.as_ref().map(|d| d.url().to_string()),
        // The scheduler would read every account on each check; this bench measures requests.
        extra: vec!["--rotation-check-secs".into(), "0".into()],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let pid = server.child.id();
    let mut inv = Inventory {
        resources: Vec::new(),
        accounts: Vec::new(),
    };
    let mut run = BackendRun {
        backend: backend.into(),
        sizes: sizes.to_vec(),
        rows: Vec::new(),
        seed_rate: Vec::new(),
        bulk: Vec::new(),
        rss_mib: Vec::new(),
        peak_mib: Vec::new(),
    };
    let mut rows: Vec<(&'static str, Vec<(f64, f64)>)> = Vec::new();
    for &size in sizes {
        let before = inv.accounts.len();
        let secs = seed_to(&api, &root, &mut inv, size).await;
        run.seed_rate
            .push((inv.accounts.len() - before) as f64 / secs.max(1e-9));
        eprintln!(
            "{backend}: {} accounts on {} resources ({secs:.0} s to seed)",
            inv.accounts.len(),
            inv.resources.len()
        );
        let (res, acc) = (&inv.resources, &inv.accounts);
        let mut at =
            |name: &'static str, v: (f64, f64)| match rows.iter_mut().find(|(n, _)| *n == name) {
                Some((_, vs)) => vs.push(v),
                None => rows.push((name, vec![v])),
            };
        let s = samples;
        // Warm the connection and the server's caches.
        measure(
            &api,
            &root,
            20,
            |_| "/v1/resources?limit=1".into(),
            some_items,
        )
        .await;
        at(
            "list resources, first page (100)",
            measure(&api, &root, s, |_| "/v1/resources".into(), page_of(100)).await,
        );
        at(
            "list resources, a page anywhere (cursor)",
            measure(
                &api,
                &root,
                s,
                |i| {
                    let k = spread(i, res.len());
                    format!("/v1/resources?cursor={}", cursor_at(&res[k]))
                },
                a_list,
            )
            .await,
        );
        at(
            "filter resources by type (1 in 10)",
            measure(
                &api,
                &root,
                s,
                |_| "/v1/resources?resource_type=Windows&limit=10".into(),
                page_of(10),
            )
            .await,
        );
        at(
            "get one resource",
            measure(
                &api,
                &root,
                s,
                |i| format!("/v1/resources/{}", res[spread(i, res.len())]),
                has_id,
            )
            .await,
        );
        at(
            "list accounts, a page anywhere (cursor)",
            measure(
                &api,
                &root,
                s,
                |i| {
                    let k = spread(i, acc.len());
                    format!("/v1/accounts?cursor={}", cursor_at(&acc[k]))
                },
                a_list,
            )
            .await,
        );
        at(
            "list one resource's accounts",
            measure(
                &api,
                &root,
                s,
                |i| format!("/v1/resources/{}/accounts", res[spread(i, res.len())]),
                page_of(PER_RESOURCE),
            )
            .await,
        );
        at(
            "filter accounts by login (1 in 10)",
            measure(
                &api,
                &root,
                s,
                |_| "/v1/accounts?login_name=root".into(),
                page_of(100),
            )
            .await,
        );
        at(
            "filter accounts by login (one match)",
            measure(
                &api,
                &root,
                s,
                |i| {
                    let r = spread(i, res.len());
                    format!("/v1/accounts?login_name=svc{r:06}x3")
                },
                page_of(1),
            )
            .await,
        );
        at(
            "filter accounts by resource type (1 in 10)",
            measure(
                &api,
                &root,
                s,
                |_| "/v1/accounts?resource_type=Windows".into(),
                page_of(100),
            )
            .await,
        );
        at(
            "filter accounts by sync status (none match)",
            measure(
                &api,
                &root,
                s,
                |_| "/v1/accounts?sync_status=out-of-sync".into(),
                no_items,
            )
            .await,
        );
        at(
            "get one account",
            measure(
                &api,
                &root,
                s,
                |i| format!("/v1/accounts/{}", acc[spread(i, acc.len())]),
                has_id,
            )
            .await,
        );
        // A bulk job over explicit accounts (the heaviest selector: each is checked). The job
        // changes vault passwords only, and runs to its end before the next size is seeded,
        // so it does not weigh on the next measurements.
        let n = BULK.min(acc.len());
        let start = spread(7, acc.len() - n + 1);
        let chosen = &acc[start..start + n];
        let t0 = Instant::now();
        let r = api
            .post(
                "/v1/reset-jobs",
                &root,
                json!({"accounts": chosen, "reason": "scale bench", "apply_remote": false}),
            )
            .await;
        let create_s = t0.elapsed().as_secs_f64();
        assert_eq!(r.status, 202, "{}", r.text);
        let job = r.json()["id"].as_str().unwrap().to_string();
        let t1 = Instant::now();
        loop {
            let j = api
                .get(&format!("/v1/reset-jobs/{job}?wait=30"), &root)
                .await
                .json();
            if j["status"] == "finished" {
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(1800),
                "the bulk job did not finish: {j}"
            );
        }
        run.bulk.push((n, create_s, t1.elapsed().as_secs_f64()));
        run.rss_mib.push(status_kib(pid, "VmRSS:") as f64 / 1024.0);
        run.peak_mib.push(status_kib(pid, "VmHWM:") as f64 / 1024.0);
    }
    run.rows = rows;
    drop(server);
    drop(db);
    Some(run)
}

fn print(run: &BackendRun) {
    println!("\n{} (one node), p50 / p99 in ms:", run.backend);
    let head: Vec<String> = run.sizes.iter().map(|s| format!("{s} accounts")).collect();
    println!("| request | {} |", head.join(" | "));
    println!("| --- |{}", " ---: |".repeat(run.sizes.len()));
    for (name, vs) in &run.rows {
        let cells: Vec<String> = vs.iter().map(|(a, b)| format!("{a:.1} / {b:.1}")).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let cells = |f: &dyn Fn(usize) -> String| -> String {
        (0..run.sizes.len()).map(f).collect::<Vec<_>>().join(" | ")
    };
    println!(
        "| create a bulk job (accounts: s) | {} |",
        cells(&|i| format!("{}: {:.2}", run.bulk[i].0, run.bulk[i].1))
    );
    println!(
        "| that job run to its end, vault only (s) | {} |",
        cells(&|i| format!("{:.0}", run.bulk[i].2))
    );
    println!(
        "| server RSS after the size's job / peak (MiB) | {} |",
        cells(&|i| format!("{:.0} / {:.0}", run.rss_mib[i], run.peak_mib[i]))
    );
    println!(
        "| seeding through the API (accounts/s, 8 in flight) | {} |",
        cells(&|i| format!("{:.0}", run.seed_rate[i]))
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = env_list("LOCKSTEP_BENCH_SIZES", "1000,10000,100000")
        .iter()
        .map(|s| s.parse().expect("LOCKSTEP_BENCH_SIZES: numbers"))
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] < w[1]) && sizes[0] >= 1000,
        "LOCKSTEP_BENCH_SIZES: growing sizes of at least 1000"
    );
    let samples: usize = std::env::var("LOCKSTEP_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for backend in env_list("LOCKSTEP_BENCH_BACKENDS", "sqlite,postgres") {
        assert!(
            backend == "sqlite" || backend == "postgres",
            "LOCKSTEP_BENCH_BACKENDS: sqlite and/or postgres"
        );
        match run_backend(&backend, &sizes, samples).await {
            Some(run) => print(&run),
            None => println!("\n{backend}: skipped (no PostgreSQL at 127.0.0.1:5432)"),
        }
    }
}
