//! Helpers for reset tests: waiting for a job, reading the vault, logging in on a target.

use std::time::{Duration, Instant};

use lockstep_server::reset::remote;
use lockstep_server::reset::ssh::{Endpoint, Timeouts};
use lockstep_server::vault::Secret;
use serde_json::{Value, json};

use super::Api;
use super::sshd::SshTarget;

/// Polls a reset job until it has finished (at most `limit`); returns it.
pub async fn wait_finished(api: &Api, token: &str, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let j = api.get(&format!("/v1/reset-jobs/{id}"), token).await.json();
        if j["status"] == "finished" {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job never finished: {}",
            j["progress"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The account's password as the vault holds it (an authorized, audited retrieval).
pub async fn stored_password(api: &Api, token: &str, account: &str) -> String {
    let r = api
        .post(
            &format!("/v1/accounts/{account}/password/retrieve"),
            token,
            json!({"reason": "test checks the vault"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["password"].as_str().unwrap().to_string()
}

/// Whether `login` can log in on the target with `password` (a fresh SSH login).
pub async fn logs_in(t: &SshTarget, login: &str, password: &str) -> bool {
    let e = Endpoint {
        host: t.ip.clone(),
        port: t.port,
        pinned_host_key: None,
    };
    remote::accepts(
        &e,
        login,
        &Secret::new(password.into()),
        Timeouts::default(),
    )
    .await
    .expect("target reachable")
}
