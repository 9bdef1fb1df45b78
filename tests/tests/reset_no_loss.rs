//! No password is ever lost: an apply that did not clearly succeed (non-zero exit after
//! applying, a connection cut mid-command, a timeout, a batch with one refused line, error
//! output in another language, a sudo that reads no password) is settled by asking the target
//! which password it accepts before anything is retried, regenerated, parked or failed. Every
//! test ends by logging in with each account's stored password on the real target.

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::resets::{logs_in, stored_password, wait_finished};
use common::sshd::{SshTarget, TargetUser};
use common::{Api, Server, ServerOptions};
use serde_json::{Value, json};

/// A Linux resource for `t` whose admin is `admin` (`root` or `sudo` kind) with one account per
/// login in `logins` (all starting with the password `start`); returns (resource id, account
/// ids in the order of `logins`).
async fn resource(
    api: &Api,
    token: &str,
    t: &SshTarget,
    name: &str,
    admin: (&str, &str, &str),
    logins: &[&str],
    start: &str,
) -> (String, Vec<String>) {
    let body = json!({"name": name, "resource_type": "Linux", "ip_address": t.ip,
        "ssh_port": t.port});
    let r = api.post("/v1/resources", token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rid = r.json()["id"].as_str().unwrap().to_string();
    let add = |login: &str, pw: &str| {
        let (path, body) = (
            format!("/v1/resources/{rid}/accounts"),
            json!({"login_name": login, "password": pw}),
        );
        async move {
            let r = api.post(&path, token, body).await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.json()["id"].as_str().unwrap().to_string()
        }
    };
    let admin_id = add(admin.0, admin.1).await;
    let r = api
        .call(
            "PUT",
            &format!("/v1/resources/{rid}/reset-settings"),
            Some(token),
            Some(json!({"admin_account_id": admin_id, "admin_kind": admin.2})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut ids = Vec::new();
    for l in logins {
        ids.push(add(l, start).await);
    }
    (rid, ids)
}

/// Starts a job (one account, or every account of `resource`) and waits for it to finish.
async fn run_job(api: &Api, token: &str, path: &str, body: Value) -> Value {
    let r = api.post(path, token, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_finished(api, token, &id, Duration::from_secs(120)).await
}

/// The item of `account` in `job`.
fn item_of<'a>(job: &'a Value, account: &str) -> &'a Value {
    job["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["account_id"] == account)
        .unwrap_or_else(|| panic!("no item for {account}: {job}"))
}

/// The invariant every test ends with: each account's stored password logs in on the target.
async fn every_stored_password_logs_in(
    api: &Api,
    token: &str,
    t: &SshTarget,
    accounts: &[(&str, &str)],
) {
    for (id, login) in accounts {
        let pw = stored_password(api, token, id).await;
        assert!(
            logs_in(t, login, &pw).await,
            "{login}: the stored password does not log in; the account is locked out"
        );
    }
}

/// Sets the Linux type's reset command, proposed and approved by two administrators.
async fn set_template(api: &Api, token: &str, template: Value) {
    common::resets::set_reset_command(api, token, "Linux", Some(template)).await;
}

#[tokio::test]
async fn a_sudo_admin_that_needs_no_password_resets_one_account_and_many() {
    let logins = ["app", "u1", "u2", "u3", "u4"];
    let mut users = vec![TargetUser::nopasswd_sudoer("ops", "Ops-Pw-1")];
    users.extend(logins.iter().map(|l| TargetUser::new(l, "Start-Pw-1")));
    let t = SshTarget::start("Root-Pw-1", &users);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let admin = ("ops", "Ops-Pw-1", "sudo");
    let (rid, ids) = resource(&api, &root, &t, "nopasswd", admin, &logins, "Start-Pw-1").await;

    // One account, generated password: sudo reads no password, so the admin's must not be
    // written ahead of chpasswd's input (it used to become a malformed first line, with the
    // account's line applied and the reset parked with no password that worked).
    let job = run_job(
        &api,
        &root,
        &format!("/v1/accounts/{}/reset", ids[0]),
        json!({"reason": "nopasswd single"}),
    )
    .await;
    let it = item_of(&job, &ids[0]);
    assert_eq!(it["state"], "done", "{job}");
    assert_eq!(it["attempts"], 1, "{job}");
    assert!(!logs_in(&t, "app", "Start-Pw-1").await);

    // Many accounts in one job (changes reaching the target together share a chpasswd run).
    let job = run_job(
        &api,
        &root,
        "/v1/reset-jobs",
        json!({"resource_ids": [rid], "reason": "nopasswd bulk"}),
    )
    .await;
    assert_eq!(job["progress"]["succeeded"], 5, "{job}");
    let accounts: Vec<(&str, &str)> = ids.iter().map(String::as_str).zip(logins).collect();
    every_stored_password_logs_in(&api, &root, &t, &accounts).await;
    // The admin's password never reached a command on the target.
    assert!(!t.log().contains("Ops-Pw-1"));
}

#[tokio::test]
async fn a_german_target_that_refuses_one_line_of_a_batch_loses_no_password() {
    let logins = ["u1", "u2", "u3", "u4", "u5", "u6"];
    let users: Vec<TargetUser> = logins
        .iter()
        .map(|l| TargetUser::new(l, "Start-Pw-1"))
        .collect();
    let t = SshTarget::start("Root-Pw-1", &users);
    t.speak_german();
    t.refuse_password_changes_for("u3");
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let admin = ("root", "Root-Pw-1", "root");
    let (rid, ids) = resource(&api, &root, &t, "german", admin, &logins, "Start-Pw-1").await;

    // Generated passwords: the refused account is parked after 3 tries with the stored
    // password still working; every other account is reset whatever chpasswd said about
    // the run it shared with u3, in whatever language.
    let job = run_job(
        &api,
        &root,
        "/v1/reset-jobs",
        json!({"resource_ids": [rid], "reason": "german bulk"}),
    )
    .await;
    let refused = item_of(&job, &ids[2]);
    assert_eq!(refused["state"], "parked", "{job}");
    assert_eq!(refused["attempts"], 3, "{job}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("still accepts the stored one"), "{detail}");
    assert!(
        detail.contains("Passwort") || detail.contains("Benutzer"),
        "the target answered in German: {detail}"
    );
    assert_eq!(job["progress"]["succeeded"], 5, "{job}");
    assert_eq!(stored_password(&api, &root, &ids[2]).await, "Start-Pw-1");

    // One given password for all: the refused account fails cleanly, the others take it.
    let given = "Given-Pass-4242!";
    let job = run_job(
        &api,
        &root,
        "/v1/reset-jobs",
        json!({"resource_ids": [rid], "reason": "german given", "password": given}),
    )
    .await;
    assert_eq!(item_of(&job, &ids[2])["state"], "failed", "{job}");
    assert_eq!(job["progress"]["succeeded"], 5, "{job}");
    assert!(logs_in(&t, "u1", given).await);
    let accounts: Vec<(&str, &str)> = ids.iter().map(String::as_str).zip(logins).collect();
    every_stored_password_logs_in(&api, &root, &t, &accounts).await;
}

#[tokio::test]
async fn a_template_that_changes_the_password_and_then_exits_1_commits_it() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let admin = ("root", "Root-Pw-1", "root");
    let (_, ids) = resource(&api, &root, &t, "late-fail", admin, &["app"], "App-Pw-1").await;
    // Sets the password, then fails a later step (a service restart, say).
    set_template(
        &api,
        &root,
        json!({"program": "/bin/sh", "args": ["-c",
            "IFS= read -r p && printf '%s:%s\\n' \"$1\" \"$p\" | /usr/sbin/chpasswd; \
             echo 'restarting app.service failed' >&2; exit 1", "sh", "{login}"],
            "stdin": "{password}\n"}),
    )
    .await;
    for body in [
        json!({"reason": "generated, late failure"}),
        json!({"reason": "given, late failure", "password": "Given-Pass-4242!"}),
    ] {
        let job = run_job(&api, &root, &format!("/v1/accounts/{}/reset", ids[0]), body).await;
        let it = item_of(&job, &ids[0]);
        assert_eq!(it["state"], "done", "{job}");
        assert_eq!(
            it["attempts"], 1,
            "one password, never a second over it: {job}"
        );
        every_stored_password_logs_in(&api, &root, &t, &[(&ids[0], "app")]).await;
    }
    assert_eq!(
        stored_password(&api, &root, &ids[0]).await,
        "Given-Pass-4242!"
    );
}

#[tokio::test]
async fn a_change_the_target_acknowledged_but_does_not_show_keeps_its_password() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let admin = ("root", "Root-Pw-1", "root");
    let (_, ids) = resource(&api, &root, &t, "ack", admin, &["app"], "App-Pw-1").await;
    // Exits 0 without changing anything: as a standby behind a virtual IP, or a cache, would
    // look right after a change it shows only later.
    set_template(
        &api,
        &root,
        json!({"program": "/bin/sh", "args": ["-c", "IFS= read -r p; exit 0"],
            "stdin": "{password}\n"}),
    )
    .await;
    let job = run_job(
        &api,
        &root,
        &format!("/v1/accounts/{}/reset", ids[0]),
        json!({"reason": "acknowledged, not shown"}),
    )
    .await;
    let it = item_of(&job, &ids[0]);
    assert_eq!(it["state"], "failed", "{job}");
    assert!(
        it["detail"].as_str().unwrap().contains("acknowledged"),
        "{job}"
    );
    every_stored_password_logs_in(&api, &root, &t, &[(&ids[0], "app")]).await;
    // The password the target said it took stays sealed with the item, for a later reset
    // that finds neither password working.
    let mut db = common::database_writer(&server.sqlite_url()).await;
    let kept: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM reset_items WHERE account_id = $1 AND state = 'failed' \
         AND pending_ciphertext IS NOT NULL",
    )
    .bind(&ids[0])
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(kept, 1, "{job}");
}

#[tokio::test]
async fn an_admin_connection_cut_after_the_command_started_loses_nothing() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let admin = ("root", "Root-Pw-1", "root");
    let (_, ids) = resource(&api, &root, &t, "cut", admin, &["app"], "App-Pw-1").await;
    // Sets the password, then hangs on a later step until the connection is cut.
    set_template(
        &api,
        &root,
        json!({"program": "/bin/sh", "args": ["-c",
            "IFS= read -r p && printf '%s:%s\\n' \"$1\" \"$p\" | /usr/sbin/chpasswd && sleep 600",
            "sh", "{login}"], "stdin": "{password}\n"}),
    )
    .await;
    let before = t.shadow_hash("app");
    let r = api
        .post(
            &format!("/v1/accounts/{}/reset", ids[0]),
            &root,
            json!({"reason": "cut mid-command"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job_id = r.json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.shadow_hash("app") == before {
        assert!(Instant::now() < deadline, "the target never changed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(t.cut_sessions_of("root"), "the admin's session was open");
    let job = wait_finished(&api, &root, &job_id, Duration::from_secs(60)).await;
    let it = item_of(&job, &ids[0]);
    assert_eq!(it["state"], "done", "{job}");
    every_stored_password_logs_in(&api, &root, &t, &[(&ids[0], "app")]).await;
}

#[tokio::test]
async fn a_command_that_times_out_after_applying_is_committed_and_one_before_is_retried() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start_with(ServerOptions {
        extra: vec!["--ssh-command-timeout-secs".into(), "2".into()],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let admin = ("root", "Root-Pw-1", "root");
    let (_, ids) = resource(&api, &root, &t, "slow", admin, &["app"], "App-Pw-1").await;
    let path = format!("/v1/accounts/{}/reset", ids[0]);

    // Applies, then outlives the command timeout: committed on the target's word.
    set_template(
        &api,
        &root,
        json!({"program": "/bin/sh", "args": ["-c",
            "IFS= read -r p && printf '%s:%s\\n' \"$1\" \"$p\" | /usr/sbin/chpasswd && sleep 600",
            "sh", "{login}"], "stdin": "{password}\n"}),
    )
    .await;
    let job = run_job(&api, &root, &path, json!({"reason": "slow after"})).await;
    let it = item_of(&job, &ids[0]);
    assert_eq!(it["state"], "done", "{job}");
    assert_eq!(it["attempts"], 1, "{job}");
    every_stored_password_logs_in(&api, &root, &t, &[(&ids[0], "app")]).await;
    let stored = stored_password(&api, &root, &ids[0]).await;

    // Times out before it applies, every time: the target still holds the stored password,
    // so the same password is tried again, then the reset fails with nothing changed.
    set_template(
        &api,
        &root,
        json!({"program": "/bin/sh", "args": ["-c",
            "sleep 600; IFS= read -r p && printf '%s:%s\\n' \"$1\" \"$p\" | /usr/sbin/chpasswd",
            "sh", "{login}"], "stdin": "{password}\n"}),
    )
    .await;
    let job = run_job(&api, &root, &path, json!({"reason": "slow before"})).await;
    let it = item_of(&job, &ids[0]);
    assert_eq!(it["state"], "failed", "{job}");
    assert_eq!(it["attempts"], 3, "{job}");
    let detail = it["detail"].as_str().unwrap();
    assert!(detail.contains("timed out"), "{detail}");
    assert!(
        detail.contains("still accepts the stored password"),
        "{detail}"
    );
    assert_eq!(stored_password(&api, &root, &ids[0]).await, stored);
    every_stored_password_logs_in(&api, &root, &t, &[(&ids[0], "app")]).await;
}

#[tokio::test]
async fn a_password_an_interrupted_command_applies_later_is_kept_and_found_again() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start_with(ServerOptions {
        extra: vec!["--ssh-command-timeout-secs".into(), "1".into()],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let admin = ("root", "Root-Pw-1", "root");
    let (_, ids) = resource(&api, &root, &t, "straggler", admin, &["app"], "App-Pw-1").await;
    let path = format!("/v1/accounts/{}/reset", ids[0]);

    // Every try outlives the timeout before it applies, and applies after it: the reset
    // fails with the stored password still working then, but keeps the new one.
    set_template(
        &api,
        &root,
        json!({"program": "/bin/sh", "args": ["-c",
            "sleep 8; IFS= read -r p && printf '%s:%s\\n' \"$1\" \"$p\" | /usr/sbin/chpasswd",
            "sh", "{login}"], "stdin": "{password}\n"}),
    )
    .await;
    let late = "Late-Applied-Pass-1!";
    let job = run_job(
        &api,
        &root,
        &path,
        json!({"reason": "straggler", "password": late}),
    )
    .await;
    let it = item_of(&job, &ids[0]);
    assert_eq!(it["state"], "failed", "{job}");
    assert!(
        it["detail"]
            .as_str()
            .unwrap()
            .contains("kept with this item"),
        "{job}"
    );
    // The stragglers apply it behind Lockstep's back.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !logs_in(&t, "app", late).await {
        assert!(
            Instant::now() < deadline,
            "the interrupted command never applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!logs_in(&t, "app", "App-Pw-1").await);

    // The next reset's command fails without applying: the target takes neither the stored
    // nor the new password, and the kept one is tried, found, and becomes the stored one.
    set_template(
        &api,
        &root,
        json!({"program": "/bin/sh", "args": ["-c", "exit 1", "sh", "{login}"],
            "stdin": "{password}\n"}),
    )
    .await;
    let job = run_job(
        &api,
        &root,
        &path,
        json!({"reason": "after the straggler", "password": "Another-Pass-77!"}),
    )
    .await;
    let it = item_of(&job, &ids[0]);
    assert_eq!(it["state"], "failed", "{job}");
    assert_eq!(stored_password(&api, &root, &ids[0]).await, late);
    every_stored_password_logs_in(&api, &root, &t, &[(&ids[0], "app")]).await;
    let audit = api
        .get("/v1/audit?action=account.password.recovered", &root)
        .await;
    assert_eq!(
        audit.json()["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        audit.text
    );
    assert!(!audit.text.contains(late), "{}", audit.text);
}

#[tokio::test]
async fn a_password_carried_by_a_cut_off_command_is_kept_when_a_fresh_one_replaces_it() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("app", "App-Pw-1")]);
    let server = Server::start_with(ServerOptions {
        extra: vec!["--ssh-command-timeout-secs".into(), "1".into()],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let admin = ("root", "Root-Pw-1", "root");
    let (_, ids) = resource(&api, &root, &t, "kept", admin, &["app"], "App-Pw-1").await;
    let path = format!("/v1/accounts/{}/reset", ids[0]);
    // The first run outlives the timeout and applies its password 6 s later; every later run
    // is refused at once (as a chpasswd waiting for the shadow lock would be), so the engine
    // moves on to fresh generated passwords while the first is still on its way.
    set_template(
        &api,
        &root,
        json!({"program": "/bin/sh", "args": ["-c",
            "if [ ! -e /root/ran ]; then touch /root/ran; sleep 6; \
             IFS= read -r p && printf '%s:%s\\n' \"$1\" \"$p\" | /usr/sbin/chpasswd; \
             else echo 'cannot lock /etc/shadow; try again later' >&2; exit 1; fi",
            "sh", "{login}"], "stdin": "{password}\n"}),
    )
    .await;
    let job = run_job(
        &api,
        &root,
        &path,
        json!({"reason": "cut off, then refused"}),
    )
    .await;
    let it = item_of(&job, &ids[0]);
    assert!(
        matches!(
            it["state"].as_str(),
            Some("parked" | "failed" | "out-of-sync")
        ),
        "{job}"
    );
    // The first run applies its password behind the engine's back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while logs_in(&t, "app", "App-Pw-1").await {
        assert!(
            Instant::now() < deadline,
            "the cut-off command never applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The next reset's command fails without applying; the kept password is found.
    set_template(
        &api,
        &root,
        json!({"program": "/bin/sh", "args": ["-c", "exit 1", "sh", "{login}"],
            "stdin": "{password}\n"}),
    )
    .await;
    let job = run_job(
        &api,
        &root,
        &path,
        json!({"reason": "find it", "password": "Another-Pass-77!"}),
    )
    .await;
    assert_eq!(item_of(&job, &ids[0])["state"], "failed", "{job}");
    every_stored_password_logs_in(&api, &root, &t, &[(&ids[0], "app")]).await;
}

#[tokio::test]
async fn a_sudo_rule_that_needs_no_password_for_the_command_alone_never_gets_the_admins() {
    // Least privilege: ops may run the reset's programs as root without a password, nothing
    // else (so `sudo -n true` fails). The admin's password must not be written ahead of the
    // command's input: here the command would have made it the account's password.
    let t = SshTarget::start(
        "Root-Pw-1",
        &[
            TargetUser::with_sudo_rule(
                "ops",
                "Ops-Secret-Pw-9",
                "ALL=(root) NOPASSWD: /usr/sbin/chpasswd, /bin/sh",
            ),
            TargetUser::new("app", "App-Pw-1"),
        ],
    );
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let admin = ("ops", "Ops-Secret-Pw-9", "sudo");
    let (_, ids) = resource(&api, &root, &t, "least", admin, &["app"], "App-Pw-1").await;
    // A per-account template (the shape of FreeBSD's `pw usermod LOGIN -h 0`): the first line
    // it reads becomes the password.
    set_template(
        &api,
        &root,
        json!({"program": "/bin/sh", "args": ["-c",
            "IFS= read -r p && printf '%s:%s\\n' \"$1\" \"$p\" | /usr/sbin/chpasswd",
            "sh", "{login}"], "stdin": "{password}\n"}),
    )
    .await;
    let job = run_job(
        &api,
        &root,
        &format!("/v1/accounts/{}/reset", ids[0]),
        json!({"reason": "least privilege"}),
    )
    .await;
    assert_eq!(item_of(&job, &ids[0])["state"], "done", "{job}");
    every_stored_password_logs_in(&api, &root, &t, &[(&ids[0], "app")]).await;
    assert!(
        !logs_in(&t, "app", "Ops-Secret-Pw-9").await,
        "the account was given the admin's password"
    );
    // chpasswd itself, many accounts per run, under the same rule.
    common::resets::set_reset_command(&api, &root, "Linux", None).await;
    let job = run_job(
        &api,
        &root,
        &format!("/v1/accounts/{}/reset", ids[0]),
        json!({"reason": "least privilege, chpasswd"}),
    )
    .await;
    assert_eq!(item_of(&job, &ids[0])["state"], "done", "{job}");
    assert_eq!(item_of(&job, &ids[0])["attempts"], 1, "{job}");
    every_stored_password_logs_in(&api, &root, &t, &[(&ids[0], "app")]).await;
}
