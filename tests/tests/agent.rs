//! Agent mode end to end: a real `lockstep` server over TLS and real `lockstep-agent`
//! processes, each inside an SSH target's namespaces with a private `/etc`. The agent changes
//! passwords in that private shadow file; the target's real sshd proves every change by
//! logging in with the password the vault holds.

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::agent::{
    AgentHost, account_id, accounts_of, enrolled_agent, enrollment_token, fingerprint, tls_server,
};
use common::registry::{manifest_path, publish_approved};
use common::resets::{logs_in, stored_password, wait_finished};
use common::sim_agent::SimAgent;
use common::sshd::{SshTarget, TargetUser};
use common::{Api, Server, audit_events};
use serde_json::{Value, json};
use sha2::Digest;

/// `lockstep ARGS --server … --ca-cert …` as the root user (token in the environment).
fn lockstep_cli(server: &Server, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let ca = server.data_dir().join("tls/cert.pem");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", &server.base, "--ca-cert", ca.to_str().unwrap()]);
    common::lockstep_env(&all, &[("LOCKSTEP_TOKEN", &server.root_token)])
}

async fn reset(api: &Api, token: &str, account: &str) -> Value {
    let r = api
        .post(
            &format!("/v1/accounts/{account}/reset"),
            token,
            json!({"reason": "agent test"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_finished(api, token, &id, Duration::from_secs(60)).await
}

/// Verifies the account's stored password through its agent; returns the task's end state.
async fn verify(api: &Api, token: &str, account: &str) -> String {
    let r = api
        .post(&format!("/v1/accounts/{account}/verify"), token, json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = api
            .get(&format!("/v1/agent-tasks/{id}"), token)
            .await
            .json();
        let state = t["state"].as_str().unwrap_or("").to_string();
        if !matches!(state.as_str(), "queued" | "running") {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "verification never finished: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_agent_enrolls_discovers_its_accounts_and_resets_them_locally() {
    let t = SshTarget::start(
        "Root-Pw-1",
        &[
            TargetUser::new("alice", "Alice-Pw-1"),
            TargetUser::new("bob", "Bob-Pw-1"),
        ],
    );
    let server = tls_server();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (mut agent, rid) = enrolled_agent(&api, &root, &server, &t).await;

    // Discovery: the machine (named by its hostname, owned by the token's owner) and its
    // accounts in the UID range, plus root.
    let resource = api.get(&format!("/v1/resources/{rid}"), &root).await.json();
    assert_eq!(resource["name"], format!("t{}", t.port), "{resource}");
    assert_eq!(resource["custom_fields"]["OWNER"], "root");
    let accounts = accounts_of(&api, &root, &rid).await;
    let mut logins: Vec<&str> = accounts
        .iter()
        .map(|a| a["login_name"].as_str().unwrap())
        .collect();
    logins.sort();
    assert_eq!(logins, ["alice", "bob", "root"]);
    assert!(
        accounts
            .iter()
            .all(|a| a["password_sync_status"] == "discovered")
    );
    // A discovered account has no password to retrieve yet, and says how to get one.
    let bob = account_id(&accounts, "bob");
    let r = api
        .post(
            &format!("/v1/accounts/{bob}/password/retrieve"),
            &root,
            json!({"reason": "look"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("reset it"), "{}", r.text);

    // A later start adds nothing twice.
    agent.kill();
    agent.start();
    agent.wait_for_log("discovery registered", Duration::from_secs(30));
    assert_eq!(accounts_of(&api, &root, &rid).await.len(), 3);
    assert_eq!(
        api.get("/v1/agents", &root)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A reset goes through the agent: the target's own sshd accepts the vault's new password.
    let alice = account_id(&accounts, "alice");
    let job = reset(&api, &root, &alice).await;
    assert_eq!(job["items"][0]["state"], "done", "{job}");
    let pw = stored_password(&api, &root, &alice).await;
    assert!(
        logs_in(&t, "alice", &pw).await,
        "the new password logs in over SSH"
    );
    assert!(
        !logs_in(&t, "alice", "Alice-Pw-1").await,
        "the old one does not"
    );
    assert!(
        logs_in(&t, "bob", "Bob-Pw-1").await,
        "other accounts are untouched"
    );
    let a = api
        .get(&format!("/v1/accounts/{alice}"), &root)
        .await
        .json();
    assert_eq!(a["password_sync_status"], "in-sync", "{a}");

    // The agent touches only the accounts it manages: an account added on the server for a
    // system user outside its UID range is refused by the agent itself, and nothing changes.
    let before = t.shadow_hash("sshd");
    let r = api
        .post(
            &format!("/v1/resources/{rid}/accounts"),
            &root,
            json!({"login_name": "sshd", "password": "Whatever-Pw-1"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sshd = r.json()["id"].as_str().unwrap().to_string();
    let job = reset(&api, &root, &sshd).await;
    assert_eq!(job["items"][0]["state"], "failed", "{job}");
    assert!(
        job["items"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not an account this agent manages"),
        "{job}"
    );
    assert_eq!(t.shadow_hash("sshd"), before);

    // Verification through the agent: in sync now; out of sync once someone changes the
    // password on the machine behind Lockstep's back.
    assert_eq!(verify(&api, &root, &alice).await, "succeeded");
    let a = api
        .get(&format!("/v1/accounts/{alice}"), &root)
        .await
        .json();
    assert_eq!(a["password_sync_status"], "in-sync", "{a}");
    t.change_password_locally("alice", "Changed-Behind-Its-Back-1");
    assert_eq!(verify(&api, &root, &alice).await, "refused");
    let a = api
        .get(&format!("/v1/accounts/{alice}"), &root)
        .await
        .json();
    assert_eq!(a["password_sync_status"], "out-of-sync", "{a}");
    // Nothing to verify for an account whose password was never stored.
    let r = api
        .post(&format!("/v1/accounts/{bob}/verify"), &root, json!({}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);

    // The requester sees the task and how it ended (as in the reference product); the audit has it once.
    let tasks = api.get("/v1/agent-tasks", &root).await.json();
    let kinds: Vec<(&str, &str)> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["kind"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("verify", "refused"),
            ("verify", "succeeded"),
            ("reset", "failed"),
            ("reset", "succeeded")
        ],
        "{tasks}"
    );
    assert_eq!(tasks[2]["login_name"], "sshd");
    assert_eq!(tasks[3]["login_name"], "alice");
    assert_eq!(tasks[3]["attempts"], 1);
    let audit = api.get("/v1/audit?action=agent.task", &root).await.json();
    let n = audit["items"].as_array().map(|a| a.len()).unwrap_or(0);
    assert_eq!(n, 4, "one event per task: {audit}");
    // Another user sees neither the list nor a task by id; an administrator sees the task.
    let other = common::user_with_role(&api, &root, "carol", "password-user").await;
    let id = tasks[0]["id"].as_str().unwrap();
    assert_eq!(api.get("/v1/agent-tasks", &other).await.json(), json!([]));
    let r = api.get(&format!("/v1/agent-tasks/{id}"), &other).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let admin = common::user_with_role(&api, &root, "dave", "password-admin").await;
    let r = api.get(&format!("/v1/agent-tasks/{id}"), &admin).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Nothing of the password in the agent's log.
    assert!(!agent.log().contains(&pw));
}

#[tokio::test]
async fn enrollment_refuses_reused_tokens_and_wrong_certificates() {
    let t = SshTarget::start("Root-Pw-1", &[]);
    let server = tls_server();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let agent = AgentHost::new(&t);
    // The administrator's command line issues the token into a private file.
    let file = t.state.path().join("enroll-token");
    let (st, _, err) = lockstep_cli(
        &server,
        &[
            "agent",
            "token",
            "--expires-in",
            "600",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(st.success(), "{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.starts_with("lse_"));

    // A pin that is not the server's certificate: refused before anything is sent, and the
    // token is still good afterwards.
    let wrong = "00".repeat(32);
    let out = agent.enroll(&server.base, &wrong, &token);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is pinned") && err.contains(&fingerprint(&server)),
        "{err}"
    );

    let out = agent.enroll(&server.base, &fingerprint(&server), &token);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Single use.
    let out = agent.enroll(&server.base, &fingerprint(&server), &token);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already used"), "{err}");
    // Unknown and argv tokens.
    let out = agent.enroll(&server.base, &fingerprint(&server), "lse_nope");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown"));
    let denied = api.get("/v1/audit?action=agent.enroll", &root).await.json();
    let outcomes: Vec<&str> = denied["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "success").count(),
        1,
        "{denied}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "denied").count(),
        2,
        "{denied}"
    );

    // Source ranges: a token for 10.0.0.0/8 cannot be used from loopback.
    let fenced = enrollment_token(&api, &root, json!({"allowed_networks": ["10.0.0.0/8"]})).await;
    let out = agent.enroll(&server.base, &fingerprint(&server), &fenced);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("10.0.0.0/8") && err.contains("127.0.0.1"),
        "{err}"
    );
    // Bad ranges are named.
    let r = api
        .post(
            "/v1/agent-tokens",
            &root,
            json!({"allowed_networks": ["10.0.0.0/33"]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("allowed_networks[0]"), "{}", r.text);
}

#[tokio::test]
async fn a_revoked_agent_is_refused_and_its_resets_fail_clearly() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("alice", "Alice-Pw-1")]);
    let server = tls_server();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (agent, rid) = enrolled_agent(&api, &root, &server, &t).await;
    let agent_id = api.get("/v1/agents", &root).await.json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, out, err) = lockstep_cli(&server, &["agent", "list"]);
    assert!(st.success(), "{err}");
    assert!(out.contains(&agent_id) && out.contains("active"), "{out}");
    let (st, out, err) = lockstep_cli(&server, &["agent", "revoke", &agent_id]);
    assert!(st.success(), "{err}");
    assert!(out.contains("revoked"), "{out}");
    let a = api
        .get(&format!("/v1/agents/{agent_id}"), &root)
        .await
        .json();
    assert_eq!(a["status"], "revoked", "{a}");
    // The agent's long-poll is refused from its next request on.
    agent.wait_for_log("the server refuses this agent", Duration::from_secs(40));
    assert!(agent.log().contains("revoked"), "{}", agent.log());
    let denied = api
        .get("/v1/audit?action=agent.authenticate", &root)
        .await
        .json();
    assert!(
        denied["items"][0]["detail"]["reason"] == "revoked",
        "{denied}"
    );

    let alice = account_id(&accounts_of(&api, &root, &rid).await, "alice");
    let job = reset(&api, &root, &alice).await;
    let item = &job["items"][0];
    assert_eq!(item["state"], "failed", "{job}");
    assert!(
        item["detail"].as_str().unwrap().contains("revoked"),
        "{job}"
    );
    assert!(
        logs_in(&t, "alice", "Alice-Pw-1").await,
        "nothing changed on the machine"
    );
    // Revoking twice is a conflict, not a silent success.
    let r = api
        .post(&format!("/v1/agents/{agent_id}/revoke"), &root, json!({}))
        .await;
    assert_eq!(r.status, 409);
    let (st, _, err) = lockstep_cli(&server, &["agent", "revoke", &agent_id]);
    assert!(!st.success());
    assert!(err.contains("already revoked"), "{err}");
}

/// Makes the agent's chpasswd count its runs and then linger `linger_secs` (the password still
/// travels only on stdin), starts a reset of alice, and returns once the machine has the new
/// password and the agent has not reported yet: (alice's account id, job id, the run count file).
async fn reset_lingering_after_chpasswd(
    api: &Api,
    root: &str,
    agent: &mut AgentHost,
    rid: &str,
    linger_secs: u64,
) -> (String, String, std::path::PathBuf) {
    let count = agent.dir.join("chpasswd-runs");
    use_chpasswd_script(
        agent,
        "slow-chpasswd",
        &format!(
            "#!/bin/sh\n/usr/sbin/chpasswd || exit $?\necho run >> {}\nsleep {linger_secs}\n",
            count.display()
        ),
    );

    let alice = account_id(&accounts_of(api, root, rid).await, "alice");
    let r = api
        .post(
            &format!("/v1/accounts/{alice}/reset"),
            root,
            json!({"reason": "interrupted after chpasswd"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job_id = r.json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !count.exists() {
        assert!(
            Instant::now() < deadline,
            "chpasswd never ran: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (alice, job_id, count)
}

#[tokio::test]
async fn a_killed_agent_gets_its_task_again_and_the_password_is_applied_once() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("alice", "Alice-Pw-1")]);
    let server = tls_server();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (mut agent, rid) = enrolled_agent(&api, &root, &server, &t).await;
    // Wait until the target has the new password, then kill the agent before it reports.
    let (alice, job_id, count) =
        reset_lingering_after_chpasswd(&api, &root, &mut agent, &rid, 30).await;
    agent.kill();
    let job = api
        .get(&format!("/v1/reset-jobs/{job_id}"), &root)
        .await
        .json();
    assert_eq!(
        job["status"], "running",
        "nothing is committed without the report: {job}"
    );

    // The restarted agent (a new session) gets the task again at once, finds the password in
    // place and reports it; nothing is applied twice.
    agent.start();
    let job = wait_finished(&api, &root, &job_id, Duration::from_secs(60)).await;
    assert_eq!(job["items"][0]["state"], "done", "{job}");
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        1,
        "chpasswd ran once"
    );
    assert!(
        agent.log().contains("already had this password"),
        "{}",
        agent.log()
    );
    let pw = stored_password(&api, &root, &alice).await;
    assert!(logs_in(&t, "alice", &pw).await, "the password is not lost");
    let tasks = api.get("/v1/agent-tasks", &root).await.json();
    assert_eq!(tasks[0]["attempts"], 2, "{tasks}");
}

#[tokio::test]
async fn the_agent_rides_out_a_server_restart() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("alice", "Alice-Pw-1")]);
    let mut server = tls_server();
    let root = server.root_token.clone();
    let api = Api::new(&server);
    let (agent, rid) = enrolled_agent(&api, &root, &server, &t).await;
    let alice = account_id(&accounts_of(&api, &root, &rid).await, "alice");
    // Killed while the agent holds a long-poll open; back on the same port.
    std::thread::sleep(Duration::from_millis(300));
    server.kill_and_restart();
    let api = Api::new(&server);
    let job = reset(&api, &root, &alice).await;
    assert_eq!(job["items"][0]["state"], "done", "{job}");
    let pw = stored_password(&api, &root, &alice).await;
    assert!(logs_in(&t, "alice", &pw).await);
    assert!(
        agent.log().contains("server unreachable"),
        "{}",
        agent.log()
    );
}

/// Publishes (and has approved) exec-hook as a post-reset agent-mode listener whose program is
/// dd writing LOGIN:NEWPASSWORD into the machine's `/etc/lockstep-proof`: a file only the
/// agent's machine (its namespace) can see. The publisher's key is `dir/publisher.key`.
async fn publish_proof_hook(api: &Api, root: &str, dir: &std::path::Path) {
    let manifest = std::fs::read_to_string(manifest_path("exec-hook"))
        .unwrap()
        .replace(
            "program = \"/usr/bin/wc\"\nargs = [\"-c\"]",
            "program = \"/usr/bin/dd\"\nargs = [\"of=/etc/lockstep-proof\"]",
        );
    assert!(manifest.contains("/usr/bin/dd"));
    std::fs::write(dir.join("exec-hook.manifest.toml"), manifest).unwrap();
    publish_approved(
        api,
        root,
        dir,
        &[(
            "exec-hook",
            common::listeners::wasm_dir().join("exec_hook.wasm"),
            json!({"phases": ["post-reset"], "modes": ["agent"], "resource_types": ["Linux"],
                   "order": 10, "parameters": ["/usr/bin/dd", "of=/etc/lockstep-proof"]}),
        )],
    )
    .await;
}

/// Restarts `agent` with `script` (a shell script) as its chpasswd.
fn use_chpasswd_script(agent: &mut AgentHost, name: &str, script: &str) {
    let wrapper = agent.dir.join(name);
    std::fs::write(&wrapper, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    agent.kill();
    agent.set_account_option("chpasswd", &format!("\"{}\"", wrapper.display()));
    agent.start();
    agent.wait_for_log("discovery registered", Duration::from_secs(30));
}

/// Enrolls an agent for `t` that pins the publisher key `pinned`, resets its account `alice`
/// (the reset must end `done`) and returns the agent, the account's id, the job, and the
/// reset's record of `listener`.
async fn reset_alice_pinning(
    api: &Api,
    root: &str,
    server: &Server,
    t: &SshTarget,
    pinned: &std::path::Path,
    listener: &str,
) -> (AgentHost, String, Value, Value) {
    let (agent, rid) =
        common::agent::enrolled_agent_pinning(api, root, server, t, &[pinned.to_path_buf()]).await;
    let alice = account_id(&accounts_of(api, root, &rid).await, "alice");
    let job = reset(api, root, &alice).await;
    let item = &job["items"][0];
    assert_eq!(item["state"], "done", "{job}");
    let record = item["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["listener"] == listener)
        .unwrap_or_else(|| panic!("no record of {listener}: {job}"))
        .clone();
    (agent, alice, job, record)
}

#[tokio::test]
async fn an_agent_mode_post_listener_runs_on_the_agent_machine() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("alice", "Alice-Pw-1")]);
    let server = tls_server();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    // exec-hook hands LOGIN:NEWPASSWORD to a program on stdin; here the program is dd writing
    // it into the machine's /etc, which only the agent's machine (its namespace) can see.
    let dir = tempfile::tempdir().unwrap();
    publish_proof_hook(&api, &root, dir.path()).await;
    // The agent trusts the publisher itself: it pins the key the listener was signed with.
    let publisher = dir.path().join("publisher.key.pub");
    let (agent, alice, _, hook) =
        reset_alice_pinning(&api, &root, &server, &t, &publisher, "exec-hook").await;
    assert_eq!(hook["outcome"], "success", "{hook}");
    assert!(
        hook["ran_on"].as_str().unwrap().starts_with("agent:"),
        "{hook}"
    );
    // It ran on the agent's machine, with the new password the vault now holds.
    let pw = stored_password(&api, &root, &alice).await;
    let proof = std::fs::read_to_string(t.state.path().join("upper/lockstep-proof")).unwrap();
    assert_eq!(proof, format!("alice:{pw}\n"));
    assert!(
        !std::path::Path::new("/etc/lockstep-proof").exists(),
        "not on the server's host"
    );
    assert!(agent.log().contains("exec-hook success"), "{}", agent.log());
    assert!(!agent.log().contains(&pw), "no password in the agent's log");
    assert!(!server.log_text().contains(&pw), "none in the server's log");
}

#[tokio::test]
async fn an_agent_mode_post_listener_that_answers_retry_is_delivered_again_on_its_agent() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("alice", "Alice-Pw-1")]);
    let server = tls_server();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    // test-probe as an agent-mode post-reset listener for Linux, granted the new password.
    let manifest = common::listeners::probe_manifest(
        "retry-probe",
        "0.2.0",
        "agent",
        "Linux",
        &["new-password"],
        &[
            ("behaviour", "what the probe does"),
            ("attempts", "the attempt that succeeds"),
        ],
    );
    std::fs::write(dir.path().join("retry-probe.manifest.toml"), manifest).unwrap();
    // It answers `retry` until the delivery's third attempt, which it can tell only from the
    // delivery its agent passes on.
    publish_approved(
        &api,
        &root,
        dir.path(),
        &[(
            "retry-probe",
            common::listeners::wasm_dir().join("test_probe.wasm"),
            json!({"phases": ["post-reset"], "modes": ["agent"], "resource_types": ["Linux"],
                   "order": 10, "parameters": ["retry-until", "3"]}),
        )],
    )
    .await;
    let publisher = dir.path().join("publisher.key.pub");
    let (agent, alice, _, first) =
        reset_alice_pinning(&api, &root, &server, &t, &publisher, "retry-probe").await;
    assert_eq!(first["outcome"], "retry", "{first}");
    assert!(
        first["ran_on"].as_str().unwrap().starts_with("agent:"),
        "{first}"
    );

    // The workers run its later attempts on the agent, until it is delivered.
    let deadline = Instant::now() + Duration::from_secs(90);
    let d = loop {
        let r = api
            .get(&format!("/v1/deliveries?account_id={alice}"), &root)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let d = r.json()["items"][0].clone();
        if d["state"] != "pending" {
            break d;
        }
        assert!(Instant::now() < deadline, "never delivered: {d}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(d["state"], "delivered", "{d}");
    assert_eq!(d["mode"], "agent", "{d}");
    assert_eq!(d["attempts"], 3, "{d}");
    let history = d["history"].as_array().unwrap();
    let outcomes: Vec<&str> = history
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "success"], "{d}");
    assert!(
        history
            .iter()
            .all(|a| a["node"].as_str().unwrap().starts_with("agent:")),
        "{d}"
    );
    let pw = stored_password(&api, &root, &alice).await;
    assert_eq!(
        d["message"],
        format!(
            "delivered at attempt 3; new password of {} characters",
            pw.chars().count()
        ),
        "{d}"
    );
    // Each attempt was its own task on the agent, named by the delivery and the attempt.
    let id = d["id"].as_str().unwrap();
    for n in 1..=3 {
        let task = api.get(&format!("/v1/agent-tasks/{id}-{n}"), &root).await;
        assert_eq!(task.status, 200, "attempt {n}: {}", task.text);
    }
    assert!(!agent.log().contains(&pw), "no password in the agent's log");
    assert!(!server.log_text().contains(&pw), "none in the server's log");
}

#[tokio::test]
async fn a_server_killed_while_its_agent_works_commits_the_result_after_restart() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("alice", "Alice-Pw-1")]);
    let mut server = tls_server();
    let root = server.root_token.clone();
    let api = Api::new(&server);
    let (mut agent, rid) = enrolled_agent(&api, &root, &server, &t).await;
    // The machine has the new password once this returns; the agent lingers 3 s before it
    // reports.
    let (alice, job_id, count) =
        reset_lingering_after_chpasswd(&api, &root, &mut agent, &rid, 3).await;
    // The server dies before the agent reports.
    server.kill_and_restart();
    let api = Api::new(&server);
    // The agent reports to the restarted server; the journaled item, found in flight when its
    // lease runs out, takes that result and commits it.
    let job = wait_finished(&api, &root, &job_id, Duration::from_secs(90)).await;
    assert_eq!(job["items"][0]["state"], "done", "{job}");
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        1,
        "applied once"
    );
    let pw = stored_password(&api, &root, &alice).await;
    assert!(logs_in(&t, "alice", &pw).await, "the password is not lost");
    assert!(
        server.log_text().contains("waiting for the agent's result"),
        "{}",
        server.log_text()
    );
}

#[tokio::test]
async fn resets_waiting_for_an_offline_agent_do_not_hold_up_resets_over_ssh() {
    // More accounts behind a stopped agent than the server has reset workers (16).
    let users: Vec<TargetUser> = (0..20)
        .map(|i| TargetUser::new(&format!("u{i}"), "User-Pw-1"))
        .collect();
    let behind_agent = SshTarget::start("Root-Pw-1", &users);
    let over_ssh = SshTarget::start("Root-Pw-2", &[TargetUser::new("app", "App-Pw-1")]);
    let server = tls_server();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (mut agent, rid) = enrolled_agent(&api, &root, &server, &behind_agent).await;
    agent.kill();
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"resource_ids": [rid], "reason": "agent offline"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let waiting = r.json()["id"].as_str().unwrap().to_string();

    // An SSH resource reset meanwhile finishes as usual.
    let r = api
        .post(
            "/v1/resources",
            &root,
            json!({"name": "web", "resource_type": "Linux", "ip_address": over_ssh.ip,
                   "ssh_port": over_ssh.port}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let web = r.json()["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for (login, pw) in [("root", "Root-Pw-2"), ("app", "App-Pw-1")] {
        let r = api
            .post(
                &format!("/v1/resources/{web}/accounts"),
                &root,
                json!({"login_name": login, "password": pw}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let r = api
        .call(
            "PUT",
            &format!("/v1/resources/{web}/reset-settings"),
            Some(&root),
            Some(json!({"admin_account_id": ids[0], "admin_kind": "root"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let job = reset(&api, &root, &ids[1]).await;
    assert_eq!(job["items"][0]["state"], "done", "{job}");
    let pw = stored_password(&api, &root, &ids[1]).await;
    assert!(logs_in(&over_ssh, "app", &pw).await);

    // The agent's resets are still queued for it, and it does them when it comes back.
    let j = api
        .get(&format!("/v1/reset-jobs/{waiting}"), &root)
        .await
        .json();
    assert_eq!(j["status"], "running", "{j}");
    agent.start();
    let j = wait_finished(&api, &root, &waiting, Duration::from_secs(120)).await;
    let states: Vec<&str> = j["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 21, "{j}");
    assert!(states.iter().all(|s| *s == "done"), "{j}");
    let u7 = account_id(&accounts_of(&api, &root, &rid).await, "u7");
    let pw = stored_password(&api, &root, &u7).await;
    assert!(logs_in(&behind_agent, "u7", &pw).await);
}

/// A signed request captured on the wire and sent again inside its time window is refused and
/// audited; the same call signed afresh is served.
#[tokio::test]
async fn a_replayed_agent_request_is_refused_and_audited() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let token = enrollment_token(&api, &root, json!({})).await;
    let agent = SimAgent::enroll(&api.http, &server.base, &token, "replayed").await;
    let path = format!(
        "{}?session=s1&wait=0",
        lockstep_agent_protocol::NEXT_TASK_PATH
    );
    let captured = agent.authorization("GET", &path, b"");
    let send = |auth: String| {
        api.http
            .get(format!("{}{path}", server.base))
            .header("authorization", auth)
            .send()
    };
    assert_eq!(send(captured.clone()).await.unwrap().status(), 204);
    let replay = send(captured).await.unwrap();
    assert_eq!(replay.status(), 401);
    assert!(replay.text().await.unwrap().contains("already received"));
    let fresh = agent.authorization("GET", &path, b"");
    assert_eq!(send(fresh).await.unwrap().status(), 204);
    let refused: Vec<Value> = audit_events(&api, &root, "agent.authenticate")
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]["detail"].to_string().contains("replayed"));
}

/// An agent downloads a component only when one of its own listener tasks names it: an approved
/// component is 404 to an agent that was never asked to run it (the agent-mode listener test
/// above covers the download its task allows).
#[tokio::test]
async fn an_agent_gets_only_the_components_its_tasks_name() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    let wasm = common::listeners::wasm_dir().join("exec_hook.wasm");
    publish_approved(
        &api,
        &root,
        dir.path(),
        &[(
            "exec-hook",
            wasm.clone(),
            json!({"phases": ["post-reset"], "modes": ["agent"], "resource_types": ["Linux"],
                   "order": 10, "parameters": ["/usr/bin/wc", "-c"]}),
        )],
    )
    .await;
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&wasm).unwrap()));
    let token = enrollment_token(&api, &root, json!({})).await;
    let agent = SimAgent::enroll(&api.http, &server.base, &token, "curious").await;
    let r = agent
        .signed(
            reqwest::Method::GET,
            &format!("/v1/agent/components/{digest}"),
            Vec::new(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
}

/// A flood of bad agent requests from one address is audited up to a budget (20 a minute), then
/// only counted; every one of them is still refused.
#[tokio::test]
async fn a_flood_of_bad_agent_requests_does_not_flood_the_audit_trail() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let path = format!(
        "{}{}?session=s1&wait=0",
        server.base,
        lockstep_agent_protocol::NEXT_TASK_PATH
    );
    for _ in 0..50 {
        let r = api
            .http
            .get(&path)
            .header("authorization", "Lockstep-Agent not-a-signature")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let audited = audit_events(&api, &root, "agent.authenticate").await;
    assert_eq!(audited.len(), 20, "{audited:?}");
}

/// The agent trusts publishers, not the server: a listener the server approved (two
/// administrators, a key the server trusts) but signed by a key the agent does not pin is
/// refused on the agent, reported, and audited; it never touches the machine.
#[tokio::test]
async fn a_listener_signed_by_a_key_the_agent_does_not_pin_never_runs_there() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("alice", "Alice-Pw-1")]);
    let server = tls_server();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    publish_proof_hook(&api, &root, dir.path()).await;
    // The agent's operator pins another publisher's key.
    let other = dir.path().join("other.key");
    let (st, _, err) = common::lockstep(&["keygen", "--out", other.to_str().unwrap()]);
    assert!(st.success(), "{err}");
    let other_pub = dir.path().join("other.key.pub");
    // Post-reset: the reset stands, the refusal is recorded.
    let (agent, _, _, hook) =
        reset_alice_pinning(&api, &root, &server, &t, &other_pub, "exec-hook").await;
    assert_eq!(hook["outcome"], "stopped", "{hook}");
    assert!(
        hook["message"].as_str().unwrap().contains("does not pin"),
        "{hook}"
    );
    assert!(
        !t.state.path().join("upper/lockstep-proof").exists(),
        "the unpinned listener ran on the agent's machine"
    );
    let audit = api.get("/v1/audit?action=listener.stopped", &root).await;
    assert!(audit.text.contains("does not pin"), "{}", audit.text);
    drop(agent);
}

/// An agent whose chpasswd applies the change and then exits 1 reports what the shadow file
/// says, not what the exit status says: the reset commits the password the account now has.
#[tokio::test]
async fn an_agent_trusts_the_shadow_file_not_chpasswds_exit_status() {
    let t = SshTarget::start("Root-Pw-1", &[TargetUser::new("alice", "Alice-Pw-1")]);
    let server = tls_server();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let (mut agent, rid) = enrolled_agent(&api, &root, &server, &t).await;
    use_chpasswd_script(
        &mut agent,
        "late-failing-chpasswd",
        "#!/bin/sh\n/usr/sbin/chpasswd\necho 'a later step failed' >&2\nexit 1\n",
    );
    let alice = account_id(&accounts_of(&api, &root, &rid).await, "alice");
    let job = reset(&api, &root, &alice).await;
    let item = &job["items"][0];
    assert_eq!(item["state"], "done", "{job}");
    assert_eq!(item["attempts"], 1, "{job}");
    let pw = stored_password(&api, &root, &alice).await;
    assert!(
        logs_in(&t, "alice", &pw).await,
        "the stored password logs in"
    );
}
