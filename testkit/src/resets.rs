//! Helpers for reset tests: waiting for a job, reading the vault, logging in on a target.

use std::time::{Duration, Instant};

use lockstep_server::reset::connector::{Timeouts, ssh::accepts};
use lockstep_server::reset::ssh::Endpoint;
use lockstep_server::vault::Secret;
use serde_json::{Value, json};

use super::Api;
use super::sshd::{SshTarget, TargetUser};

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
    accepts(
        &e,
        login,
        &Secret::new(password.into()),
        Timeouts::default(),
    )
    .await
    .expect("target reachable")
}

/// `n` accounts `u01…` on a target, all with the same starting password.
pub fn users(n: usize) -> Vec<TargetUser> {
    (1..=n)
        .map(|i| TargetUser::new(&format!("u{i:02}"), "Start-Pw-1"))
        .collect()
}

/// A Linux resource for `t` with root as admin and every target user as an account; returns
/// the account ids (admin excluded) with their login names.
pub async fn register(
    api: &Api,
    token: &str,
    t: &SshTarget,
    name: &str,
    n: usize,
) -> Vec<(String, String)> {
    register_with_admin(api, token, t, name, n, ("root", "Root-Pw-1", "root")).await
}

/// [`register`] with another admin: (login, password, `root` or `sudo`).
pub async fn register_with_admin(
    api: &Api,
    token: &str,
    t: &SshTarget,
    name: &str,
    n: usize,
    admin: (&str, &'static str, &str),
) -> Vec<(String, String)> {
    let r = api
        .post(
            "/v1/resources",
            token,
            json!({"name": name, "resource_type": "Linux", "ip_address": t.ip, "ssh_port": t.port}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rid = r.json()["id"].as_str().unwrap().to_string();
    let add = |login: String, pw: &'static str| {
        let path = format!("/v1/resources/{rid}/accounts");
        async move {
            let r = api
                .post(&path, token, json!({"login_name": login, "password": pw}))
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.json()["id"].as_str().unwrap().to_string()
        }
    };
    let admin_id = add(admin.0.into(), admin.1).await;
    let r = api
        .call(
            "PUT",
            &format!("/v1/resources/{rid}/reset-settings"),
            Some(token),
            Some(json!({"admin_account_id": admin_id, "admin_kind": admin.2})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut out = Vec::new();
    for u in users(n) {
        out.push((add(u.name.clone(), "Start-Pw-1").await, u.name));
    }
    out
}

/// Gives resource type `resource_type` the command `template` (`None`: back to `chpasswd`) the
/// way production does: proposed by `requester` (manage-resources), approved by a second,
/// independent administrator made for the purpose. Returns the approved change request.
pub async fn set_reset_command(
    api: &Api,
    requester: &str,
    resource_type: &str,
    template: Option<Value>,
) -> Value {
    let approver = format!("rc-approver-{}", super::random_hex(4));
    let approver_token = super::user_with_role(api, requester, &approver, "admin").await;
    let r = api
        .call(
            "PUT",
            &format!("/v1/resource-types/{resource_type}/reset-command"),
            Some(requester),
            Some(json!({"reset_command": template, "approver": approver})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = super::registry::approval(api, &approver_token, &id, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}
