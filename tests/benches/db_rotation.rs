//! Bulk verified rotation of database roles through the PostgreSQL connector, side by side in
//! one run with a **bare client** doing the same statements and logins against the same
//! private cluster (`testkit/src/pg_cluster.rs`: initdb, scram-sha-256, TLS, every statement
//! logged).
//!
//! ```sh
//! cargo build --release -p lockstep-server
//! cargo bench -p lockstep-tests --bench db_rotation
//! ```
//!
//! - **Lockstep**: one bulk job over `LOCKSTEP_BENCH_ROLES` (default 1000) roles of one
//!   PostgreSQL resource: journal, vault, a fresh admin session and `ALTER ROLE` with a
//!   client-computed SCRAM verifier per role, a verifying login per role, 8 at once against
//!   the one server (the engine's per-target limit).
//! - **Bare client, same work**: the connector alone (`PostgresConnector::apply` then
//!   `accepts` per role, 8 wide): no journal, database, vault or listeners.
//! - **Bare client, kept sessions**: 8 admin sessions kept open (sqlx), each sending
//!   `ALTER ROLE … PASSWORD 'verifier'` for its share of the roles, then a verifying login
//!   per role: what keeping admin sessions would gain.
//!
//! Each side rotates its own roles (`l…`, `b…`, `k…`), so none meets another's change.

use lockstep_testkit as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg_cluster::PgCluster;
use common::{Api, Server};
use lockstep_server::reset::connector::postgres::{PgEndpoint, PostgresConnector};
use lockstep_server::reset::connector::{
    Admin, AdminKind, Connector, KeyRecorder, TargetKey, Timeouts, scram,
};
use lockstep_server::vault::Secret;
use serde_json::{Value, json};

const ADMIN: &str = "lockstep_admin";
const ADMIN_PW: &str = "Admin-Pw-1";
const START_PW: &str = "Start-Pw-1";
/// Changes at once against the one server, on every side.
const WIDE: usize = 8;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i:05}")).collect()
}

/// Creates `n` roles named `prefix00001…` that log in with [`START_PW`], in one statement.
/// The admin gets ADMIN OPTION on each (PostgreSQL 16 and later require it).
fn create_roles(pg: &PgCluster, prefix: &str, n: usize) {
    pg.sql(&format!(
        "DO $$ BEGIN FOR i IN 1..{n} LOOP \
         EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', \
         '{prefix}' || lpad(i::text, 5, '0'), '{START_PW}'); \
         EXECUTE format('GRANT %I TO {ADMIN} WITH ADMIN OPTION', \
         '{prefix}' || lpad(i::text, 5, '0')); END LOOP; END $$"
    ));
}

/// The bare client pins nothing (the engine records the key at first use).
struct Unpinned;

impl KeyRecorder for Unpinned {
    fn record<'a>(
        &'a self,
        _key: &'a TargetKey,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async { Ok(()) })
    }
}

fn connector(pg: &PgCluster) -> Arc<PostgresConnector> {
    Arc::new(PostgresConnector {
        endpoint: PgEndpoint::new(Some(&pg.url()), "127.0.0.1", None).unwrap(),
        timeouts: Timeouts::default(),
    })
}

/// The connector alone, `WIDE` at once: apply, then a verifying login. Accounts per second
/// and how many were verified.
async fn bare_same_work(pg: &PgCluster, roles: Vec<String>) -> (f64, usize) {
    let c = connector(pg);
    let queue = Arc::new(tokio::sync::Mutex::new(roles.clone()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WIDE {
        let (c, queue) = (c.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let admin = Admin {
                login: ADMIN.into(),
                password: Secret::new(ADMIN_PW.into()),
                kind: AdminKind::Root,
            };
            let mut verified = 0;
            loop {
                let Some(role) = queue.lock().await.pop() else {
                    return verified;
                };
                let new = Secret::new(format!("Bench-{}-Pw-9", common::random_hex(8)));
                c.apply(&admin, &role, &new, &Unpinned).await.unwrap();
                if c.accepts(&role, &new).await.unwrap() {
                    verified += 1;
                }
            }
        }));
    }
    let mut verified = 0;
    for t in tasks {
        verified += t.await.unwrap();
    }
    (roles.len() as f64 / start.elapsed().as_secs_f64(), verified)
}

/// `WIDE` kept admin sessions (sqlx over TLS), each changing its share of the roles with a
/// verifier, then a verifying login per role (also `WIDE` at once).
async fn bare_kept_sessions(pg: &PgCluster, roles: Vec<String>) -> (f64, usize) {
    use sqlx::{ConnectOptions, Executor};
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(pg.port)
        .username(ADMIN)
        .password(ADMIN_PW)
        .database("postgres")
        .ssl_mode(sqlx::postgres::PgSslMode::Require);
    let c = connector(pg);
    let queue = Arc::new(tokio::sync::Mutex::new(roles.clone()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WIDE {
        let (options, queue, c) = (options.clone(), queue.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            let mut session = options.connect().await.unwrap();
            let mut changed = Vec::new();
            loop {
                let Some(role) = queue.lock().await.pop() else {
                    break;
                };
                let new = format!("Bench-{}-Pw-9", common::random_hex(8));
                let verifier = scram::verifier(&new).unwrap();
                let sql = format!("ALTER ROLE \"{role}\" PASSWORD '{}'", verifier.as_str());
                session.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
                changed.push((role, new));
            }
            let mut verified = 0;
            for (role, new) in changed {
                if c.accepts(&role, &Secret::new(new)).await.unwrap() {
                    verified += 1;
                }
            }
            verified
        }));
    }
    let mut verified = 0;
    for t in tasks {
        verified += t.await.unwrap();
    }
    (roles.len() as f64 / start.elapsed().as_secs_f64(), verified)
}

#[tokio::main]
async fn main() {
    let n = env_usize("LOCKSTEP_BENCH_ROLES", 1000);
    println!("db_rotation: {n} PostgreSQL roles per side, one private cluster, {WIDE} at once");
    let pg = PgCluster::start();
    pg.sql(&format!(
        "CREATE ROLE {ADMIN} LOGIN CREATEROLE PASSWORD '{ADMIN_PW}'"
    ));
    for prefix in ["l", "b", "k"] {
        create_roles(&pg, prefix, n);
    }

    let (same, same_verified) = bare_same_work(&pg, names("b", n)).await;
    println!(
        "  bare client, same work (connector alone): {same:.1} roles/s ({same_verified}/{n} verified)"
    );
    let (kept, kept_verified) = bare_kept_sessions(&pg, names("k", n)).await;
    println!(
        "  bare client, {WIDE} kept admin sessions: {kept:.1} roles/s ({kept_verified}/{n} verified)"
    );

    let server = Server::start_with(common::ServerOptions {
        extra: vec!["--rotation-check-secs".into(), "0".into()],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let logins = names("l", n);
    let logins: Vec<&str> = logins.iter().map(String::as_str).collect();
    let (_, _, accounts) = pg
        .register(
            &api,
            &root,
            "bench-db",
            (ADMIN, ADMIN_PW),
            &logins,
            START_PW,
        )
        .await;
    let ids: Vec<String> = accounts.into_iter().map(|(id, _)| id).collect();
    let start = Instant::now();
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"accounts": ids, "reason": "benchmark"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let job: Value = loop {
        let j = api
            .get(&format!("/v1/reset-jobs/{id}?wait=10"), &root)
            .await
            .json();
        if j["status"] == "finished" {
            break j;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let done = job["progress"]["succeeded"].as_u64().unwrap_or(0) as usize;
    let rate = done as f64 / secs;
    println!("  Lockstep: {done}/{n} verified in {secs:.1} s = {rate:.1} roles/s");
    println!(
        "  ratios: Lockstep / same work = {:.2}; Lockstep / kept sessions = {:.2}",
        rate / same,
        rate / kept
    );
    // A sample of the vault's passwords logs in (an independent client).
    for acc in ids.iter().step_by((n / 10).max(1)) {
        let r = api
            .post(
                &format!("/v1/accounts/{acc}/password/retrieve"),
                &root,
                json!({"reason": "benchmark check"}),
            )
            .await;
        let pw = r.json()["password"].as_str().unwrap().to_string();
        let login = api.get(&format!("/v1/accounts/{acc}"), &root).await.json()["login_name"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(pg.logs_in(&login, &pw).await, Some(true), "{login}");
    }
    let log = pg.log();
    println!(
        "  the cluster logged {} ALTER ROLE statements, {} bytes of log",
        log.matches("ALTER ROLE").count(),
        log.len()
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
