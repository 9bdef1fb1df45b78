//! The secret-leak scan: one end-to-end run with sentinel passwords, then a search for them
//! everywhere a password must never be.
//!
//! The run: agentless SSH resets (a sudo admin's password, a given new password, generated
//! ones) and resets through a `lockstep-agent` (a given and generated passwords), with two
//! post-reset listeners granted the passwords: `exec-hook`, which hands the new one to a
//! program on its standard input, and a probe that tries to publish it as its message.
//!
//! The search: every process's argv and environment, snapshotted every few milliseconds while
//! the resets run; the server's and the agent's logs; every audit event; every answer to every
//! GET the OpenAPI document lists, called with each id the run made (authorized retrievals
//! are the only answers allowed to hold a password); the database files.

use lockstep_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::agent::{account_id, accounts_of, enrolled_agent, tls_server};
use common::registry::{manifest_path, publish_approved};
use common::resets::{stored_password, wait_finished};
use common::sshd::{SshTarget, TargetUser};
use common::{Api, audit_events};
use serde_json::{Value, json};

const ADMIN_PW: &str = "Admin-Sentinel-4711!";
const GIVEN_PW: &str = "Given-Sentinel-0815!";
const GIVEN_AGENT_PW: &str = "Agent-Sentinel-2342!";

/// Every process's cmdline and environ, by path.
fn snapshot_proc() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        for file in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                out.push((
                    format!("/proc/{name}/{file}"),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    out
}

/// Snapshots `/proc` until stopped; keeps each distinct (path, text) once, so the passwords
/// generated during the run can be looked for afterwards.
struct ProcWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(BTreeSet<(String, String)>, usize)>,
}

impl ProcWatch {
    fn start() -> ProcWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            let mut snapshots = 0;
            while !flag.load(Ordering::Relaxed) {
                seen.extend(snapshot_proc());
                snapshots += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (seen, snapshots)
        });
        ProcWatch { stop, thread }
    }

    fn finish(self) -> (BTreeSet<(String, String)>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The probe as `leak-probe`: granted both passwords, it answers with the new one.
fn leak_probe_manifest() -> String {
    common::listeners::probe_manifest(
        "leak-probe",
        "0.1.0",
        "agentless",
        "Linux",
        &["old-password", "new-password"],
        &[("behaviour", "what the probe does")],
    )
}

/// Every string under an `id`, `*_id` or `name` key, anywhere in `v`.
fn ids_in(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if let Value::String(s) = v
                    && (k == "id" || k == "name" || k.ends_with("_id"))
                    && !s.is_empty()
                    && s.len() <= 100
                {
                    out.insert(s.clone());
                }
                ids_in(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| ids_in(v, out)),
        _ => {}
    }
}

/// What [`every_get`] saw.
struct Gets {
    /// Every answer's text.
    answers: String,
    /// GET paths in the document.
    paths: usize,
    /// Paths that answered 200 at least once.
    answered: usize,
    requests: usize,
}

/// Calls every GET of the OpenAPI document: paths without parameters once, the others with
/// each id seen in earlier answers.
async fn every_get(api: &Api, token: &str) -> Gets {
    let doc = api.get("/openapi.json", token).await.json();
    let mut answers = String::new();
    let mut ids = BTreeSet::new();
    let mut templates: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(_, ops)| ops.get("get").is_some())
        .map(|(p, _)| p.clone())
        .collect();
    // Lists first, so their ids are known when the paths that take one come.
    templates.sort_by_key(|p| p.contains('{'));
    let mut ok: BTreeMap<String, bool> = BTreeMap::new();
    let mut requests = 0;
    for template in &templates {
        let paths: Vec<String> = if template.contains('{') {
            ids.iter()
                .map(|id: &String| {
                    let mut p = template.clone();
                    while let (Some(a), Some(b)) = (p.find('{'), p.find('}')) {
                        p.replace_range(a..=b, id);
                    }
                    p
                })
                .collect()
        } else {
            vec![template.clone()]
        };
        for path in paths {
            let r = api.get(&path, token).await;
            requests += 1;
            *ok.entry(template.clone()).or_default() |= r.status == 200;
            ids_in(&r.json(), &mut ids);
            answers.push_str(&r.text);
        }
    }
    Gets {
        answers,
        paths: templates.len(),
        answered: ok.values().filter(|v| **v).count(),
        requests,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_appears_in_argv_environ_logs_audit_database_or_api_answers() {
    let users: Vec<TargetUser> = std::iter::once(TargetUser::sudoer("admin", ADMIN_PW))
        .chain((1..=6).map(|i| TargetUser::new(&format!("s{i:02}"), "Start-Pw-1")))
        .collect();
    let t = SshTarget::start("Root-Pw-1", &users);
    let agent_target = SshTarget::start(
        "Root-Pw-1",
        &[
            TargetUser::new("a01", "Start-Pw-1"),
            TargetUser::new("a02", "Start-Pw-1"),
            TargetUser::new("a03", "Start-Pw-1"),
        ],
    );
    let server = tls_server();
    let api = Api::new(&server);
    let root = server.root_token.clone();

    // Two listeners that receive the new password.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("leak-probe.manifest.toml"),
        leak_probe_manifest(),
    )
    .unwrap();
    assert!(manifest_path("exec-hook").exists());
    publish_approved(
        &api,
        &root,
        dir.path(),
        &[
            (
                "exec-hook",
                common::listeners::wasm_dir().join("exec_hook.wasm"),
                json!({"phases": ["post-reset"], "modes": ["agentless", "agent"],
                       "resource_types": ["Linux"], "order": 10,
                       "parameters": ["/usr/bin/wc", "-c"]}),
            ),
            (
                "leak-probe",
                common::listeners::wasm_dir().join("test_probe.wasm"),
                json!({"phases": ["post-reset"], "modes": ["agentless"],
                       "resource_types": ["Linux"], "order": 20,
                       "parameters": ["new-password"]}),
            ),
        ],
    )
    .await;

    // The agentless resource: a sudo admin and six accounts.
    let r = api
        .post(
            "/v1/resources",
            &root,
            json!({"name": "leak0", "resource_type": "Linux", "ip_address": t.ip, "ssh_port": t.port}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rid = r.json()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/resources/{rid}/accounts");
    let r = api
        .post(
            &path,
            &root,
            json!({"login_name": "admin", "password": ADMIN_PW}),
        )
        .await;
    let admin = r.json()["id"].as_str().unwrap().to_string();
    let r = api
        .call(
            "PUT",
            &format!("/v1/resources/{rid}/reset-settings"),
            Some(&root),
            Some(json!({"admin_account_id": admin, "admin_kind": "sudo"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut agentless = Vec::new();
    for i in 1..=6 {
        let r = api
            .post(
                &path,
                &root,
                json!({"login_name": format!("s{i:02}"), "password": "Start-Pw-1"}),
            )
            .await;
        agentless.push(r.json()["id"].as_str().unwrap().to_string());
    }
    // The agent's machine registers itself and its accounts.
    let (agent, agent_rid) = enrolled_agent(&api, &root, &server, &agent_target).await;
    let on_agent = accounts_of(&api, &root, &agent_rid).await;
    let through_agent: Vec<String> = ["a01", "a02", "a03"]
        .iter()
        .map(|l| account_id(&on_agent, l))
        .collect();

    // First, proof that the watch sees a password in a process's argv.
    let watch = ProcWatch::start();
    let mut planted = std::process::Command::new("sh")
        .args(["-c", "sleep 5", "Planted-Sentinel-1"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    planted.kill().unwrap();
    planted.wait().unwrap();
    let (seen, _) = watch.finish();
    assert!(
        seen.iter()
            .any(|(p, text)| p.ends_with("/cmdline") && text.contains("Planted-Sentinel-1")),
        "the watch must see a planted password"
    );

    // The resets, watched.
    let watch = ProcWatch::start();
    let mut answers = String::new();
    let mut jobs = Vec::new();
    for (account, body) in [
        (
            &agentless[0],
            json!({"reason": "given password", "password": GIVEN_PW}),
        ),
        (
            &through_agent[0],
            json!({"reason": "given password", "password": GIVEN_AGENT_PW}),
        ),
    ] {
        let r = api
            .post(&format!("/v1/accounts/{account}/reset"), &root, body)
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        answers.push_str(&r.text);
        jobs.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let generated: Vec<&String> = agentless[1..].iter().chain(&through_agent[1..]).collect();
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"accounts": generated, "reason": "generated passwords"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    answers.push_str(&r.text);
    jobs.push(r.json()["id"].as_str().unwrap().to_string());
    for id in &jobs {
        let j = wait_finished(&api, &root, id, Duration::from_secs(120)).await;
        assert_eq!(j["progress"]["succeeded"], j["progress"]["total"], "{j}");
        // Both listeners ran on every agentless item, the probe got its password redacted.
        for item in j["items"].as_array().unwrap() {
            let runs = item["listeners"].as_array().unwrap();
            let hook = runs.iter().find(|r| r["listener"] == "exec-hook");
            assert_eq!(hook.unwrap()["outcome"], "success", "{item}");
            if let Some(probe) = runs.iter().find(|r| r["listener"] == "leak-probe") {
                assert_eq!(probe["outcome"], "success", "{probe}");
                assert!(
                    probe["message"].as_str().unwrap().contains("[redacted]"),
                    "{probe}"
                );
            }
        }
        answers.push_str(&j.to_string());
    }
    let (seen, snapshots) = watch.finish();
    assert!(snapshots > 10, "the watch ran ({snapshots} snapshots)");

    // The passwords: the sentinels, and what the vault now holds (authorized retrievals).
    let mut sentinels = vec![
        ADMIN_PW.to_string(),
        GIVEN_PW.to_string(),
        GIVEN_AGENT_PW.to_string(),
    ];
    for account in agentless.iter().chain(&through_agent) {
        sentinels.push(stored_password(&api, &root, account).await);
    }
    assert_eq!(sentinels[3], GIVEN_PW, "the given password was applied");
    assert_eq!(sentinels[9], GIVEN_AGENT_PW, "through the agent too");

    // Everything the API answers to a GET, the audit trail, the logs, the database files.
    let gets = every_get(&api, &root).await;
    assert!(
        gets.answered >= 20,
        "only {} GET paths answered 200",
        gets.answered
    );
    answers.push_str(&gets.answers);
    // Every audit event, whatever its action.
    let events = audit_events(&api, &root, "").await;
    let trail: String = events.iter().map(Value::to_string).collect();
    assert!(trail.contains("account.password.retrieve"), "{trail}");
    let logs = [server.log_text(), agent.log(), t.log(), agent_target.log()].concat();
    let mut db = Vec::new();
    for entry in std::fs::read_dir(server.data_dir()).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("lockstep.db")
        {
            db.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    let db = String::from_utf8_lossy(&db);
    let mut hits = Vec::new();
    for (i, s) in sentinels.iter().enumerate() {
        for (place, text) in [
            ("an API answer", answers.as_str()),
            ("the audit trail", trail.as_str()),
            ("a log", logs.as_str()),
            ("the database in clear", &db),
        ] {
            if text.contains(s.as_str()) {
                hits.push(format!("password {i} in {place}"));
            }
        }
        for (path, text) in &seen {
            if text.contains(s.as_str()) {
                hits.push(format!("password {i} in {path}"));
            }
        }
    }
    assert!(hits.is_empty(), "{hits:?}");
    eprintln!(
        "leak scan: {} passwords; {snapshots} /proc snapshots ({} distinct texts); {} of {} GET \
         paths answered ({} requests); {} audit events; {} bytes of logs; 0 hits",
        sentinels.len(),
        seen.len(),
        gets.answered,
        gets.paths,
        gets.requests,
        events.len(),
        logs.len()
    );
}
