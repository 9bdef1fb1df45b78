//! Bulk verified rotation of Active Directory users through the Active Directory connector,
//! side by side in one run with a **bare client** doing the same binds, searches and
//! `unicodePwd` changes against the same Samba AD domain controller
//! (`testkit/src/samba_dc.rs`: one `samba` process, LDAPS).
//!
//! ```sh
//! ./scripts/samba-deps.sh
//! cargo build --release -p lockstep-server
//! cargo bench -p lockstep-tests --bench dir_rotation
//! ```
//!
//! - **Lockstep**: one bulk job over `LOCKSTEP_BENCH_USERS` (default 1000) users of one
//!   WindowsDomain resource: journal, vault, per user a fresh admin bind, a search for the
//!   user, the `unicodePwd` change and a verifying bind as the user, 8 at once against the
//!   one DC (the engine's per-target limit).
//! - **Bare client, same work**: the connector alone (`ActiveDirectoryConnector::apply` then
//!   `accepts` per user, 8 wide): no journal, database, vault or listeners.
//!
//! Each side rotates its own users (`l…`, `b…`), so none meets another's change.

use lockstep_testkit as common;

use std::sync::Arc;
use std::time::Instant;

use common::samba_dc::{self, SambaDc};
use common::{Api, Server};
use lockstep_server::reset::connector::active_directory::{ActiveDirectoryConnector, AdEndpoint};
use lockstep_server::reset::connector::{
    Admin, AdminKind, Connector, KeyRecorder, TargetKey, Timeouts,
};
use lockstep_server::vault::Secret;
use serde_json::{Value, json};

const START_PW: &str = "Start-Pw-1x";
/// Changes at once against the one DC, on every side.
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

/// The bare client's certificate is pinned already (the engine records it at first use).
struct Pinned;

impl KeyRecorder for Pinned {
    fn record<'a>(
        &'a self,
        _key: &'a TargetKey,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async { Ok(()) })
    }
}

/// The connector alone, `WIDE` at once: apply, then a verifying bind. Users per second and
/// how many were verified.
async fn bare_same_work(dc: &SambaDc, users: Vec<String>) -> (f64, usize) {
    let c = Arc::new(ActiveDirectoryConnector {
        endpoint: AdEndpoint::new(
            Some(&dc.url()),
            &dc.ip,
            Some(samba_dc::DOMAIN),
            Some(dc.certificate_fingerprint.clone()),
        )
        .unwrap(),
        timeouts: Timeouts::default(),
    });
    let queue = Arc::new(tokio::sync::Mutex::new(users.clone()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WIDE {
        let (c, queue) = (c.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let admin = Admin {
                login: samba_dc::ADMIN.into(),
                password: Secret::new(samba_dc::ADMIN_PW.into()),
                kind: AdminKind::Root,
            };
            let mut verified = 0;
            loop {
                let Some(user) = queue.lock().await.pop() else {
                    return verified;
                };
                let new = Secret::new(format!("Bench-{}-Pw-9", common::random_hex(8)));
                c.apply(&admin, &user, &new, &Pinned).await.unwrap();
                if c.accepts(&user, &new).await.unwrap() {
                    verified += 1;
                }
            }
        }));
    }
    let mut verified = 0;
    for t in tasks {
        verified += t.await.unwrap();
    }
    (users.len() as f64 / start.elapsed().as_secs_f64(), verified)
}

#[tokio::main]
async fn main() {
    let n = env_usize("LOCKSTEP_BENCH_USERS", 1000);
    println!("dir_rotation: {n} Active Directory users per side, one Samba DC, {WIDE} at once");
    let dc = SambaDc::start();
    let created = Instant::now();
    for prefix in ["l", "b"] {
        let users = names(prefix, n);
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        dc.create_users(&users, START_PW);
    }
    println!(
        "  {} users created in {:.1} s",
        2 * n,
        created.elapsed().as_secs_f64()
    );

    let (same, same_verified) = bare_same_work(&dc, names("b", n)).await;
    println!(
        "  bare client, same work (connector alone): {same:.1} users/s ({same_verified}/{n} verified)"
    );

    let server = Server::start_with(common::ServerOptions {
        extra: vec!["--rotation-check-secs".into(), "0".into()],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let logins = names("l", n);
    let logins: Vec<&str> = logins.iter().map(String::as_str).collect();
    let (rid, _, accounts) = common::db_resource::register(
        &api,
        &root,
        ("bench-dc", "WindowsDomain", &dc.url()),
        (samba_dc::ADMIN, samba_dc::ADMIN_PW),
        &logins,
        START_PW,
    )
    .await;
    let r = api
        .call(
            "PATCH",
            &format!("/v1/resources/{rid}"),
            Some(&root),
            Some(json!({"domain_name": samba_dc::DOMAIN})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
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
    println!("  Lockstep: {done}/{n} verified in {secs:.1} s = {rate:.1} users/s");
    println!("  ratio: Lockstep / same work = {:.2}", rate / same);
    // A sample of the vault's passwords binds (an independent client).
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
        assert_eq!(dc.logs_in(&login, &pw), Some(true), "{login}");
    }
}
