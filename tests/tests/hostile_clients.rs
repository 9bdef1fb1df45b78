//! Inputs from hostile agents and anonymous clients stay bounded: what they send cannot grow the
//! server's memory, the audit trail or a job record without bound, nor carry control characters
//! to whoever reads them.

use lockstep_testkit as common;

use std::time::Duration;

use common::agent::{account_id, accounts_of, enrollment_token};
use common::registry::publish_approved;
use common::resets::wait_finished;
use common::sim_agent::SimAgent;
use common::{Api, Server, audit_events, random_hex};
use lockstep_agent_protocol::messages::{ListenerReport, Outcome, Task, TaskResult, Work};
use serde_json::{Value, json};

/// Requests with made-up HTTP methods are counted under `other`: the request counters behind
/// `/metrics` keep a bounded set of labels whatever methods clients invent.
#[tokio::test]
async fn made_up_http_methods_do_not_grow_the_metrics() {
    let server = Server::start();
    let http = reqwest::Client::new();
    for _ in 0..300 {
        let method = format!("X{}", random_hex(6).to_uppercase());
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(m, server.url("/v1/resources"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("lockstep_http_requests_total{"))
        .collect();
    assert!(
        !metrics.contains("method=\"X"),
        "a made-up method became a label:\n{metrics}"
    );
    assert!(
        series.iter().any(|l| l.contains("method=\"other\"")),
        "{metrics}"
    );
    assert!(series.len() < 20, "{} series:\n{metrics}", series.len());
}

/// Refused enrollments (no token, a made-up one) are audited under the same per-address budget
/// as refused signed agent requests: 20 a minute one by one, the rest counted.
#[tokio::test]
async fn a_flood_of_bad_enrollments_does_not_flood_the_audit_trail() {
    let server = Server::start();
    let api = Api::new(&server);
    for i in 0..60 {
        let body = json!({
            "token": format!("lse_{}", random_hex(16)),
            "public_key": "AAAA",
            "hostname": format!("flood{i}"),
            "version": "x",
        });
        let r = api
            .call(
                "POST",
                lockstep_agent_protocol::ENROLL_PATH,
                None,
                Some(body),
            )
            .await;
        assert!(matches!(r.status, 401 | 422), "{}: {}", r.status, r.text);
    }
    let refused: Vec<Value> = audit_events(&api, &server.root_token, "agent.enroll")
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert_eq!(refused.len(), 20, "{refused:?}");
}

/// A server with an agent-mode post-reset listener, a simulated agent on a machine with one
/// account, and a reset of that account under way; returns when the agent holds the listener
/// task (the reset task reported done).
struct ListenerTaskAtHand {
    server: Server,
    api: Api,
    agent: SimAgent,
    job: String,
    task: Task,
    _dir: tempfile::TempDir,
}

const SESSION: &str = "hostile-1";

async fn listener_task_at_hand() -> ListenerTaskAtHand {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    publish_approved(
        &api,
        &root,
        dir.path(),
        &[(
            "exec-hook",
            common::listeners::wasm_dir().join("exec_hook.wasm"),
            json!({"phases": ["post-reset"], "modes": ["agent"], "resource_types": ["Linux"],
                   "order": 10, "parameters": ["/usr/bin/wc", "-c"]}),
        )],
    )
    .await;
    let token = enrollment_token(&api, &root, json!({})).await;
    let agent = SimAgent::enroll(&api.http, &server.base, &token, "hostile").await;
    let rid = agent.discover("alice").await;
    let alice = account_id(&accounts_of(&api, &root, &rid).await, "alice");
    let r = api
        .post(
            &format!("/v1/accounts/{alice}/reset"),
            &root,
            json!({"reason": "hostile agent test"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job = r.json()["id"].as_str().unwrap().to_string();
    let mut task = None;
    for _ in 0..20 {
        match agent.next(SESSION, 5).await.unwrap() {
            Some(t) if matches!(t.work, Work::Reset { .. }) => agent.report(SESSION, &t.id).await,
            Some(t) => {
                task = Some(t);
                break;
            }
            None => {}
        }
    }
    let task = task.expect("the listener task was handed out");
    assert!(matches!(task.work, Work::Listener(_)));
    ListenerTaskAtHand {
        server,
        api,
        agent,
        job,
        task,
        _dir: dir,
    }
}

async fn send_report(at: &ListenerTaskAtHand, result: &TaskResult) -> (u16, String) {
    let body = serde_json::to_vec(result).unwrap();
    let r = at
        .agent
        .signed(
            reqwest::Method::POST,
            &lockstep_agent_protocol::result_path(&at.task.id),
            body,
        )
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A report far larger than any honest agent sends (a 2 MiB message, under the 4 MiB cap of
/// every agent request) is refused with a 413 that says why, and nothing of it is stored.
#[tokio::test]
async fn a_grossly_oversized_agent_report_is_refused() {
    let at = listener_task_at_hand().await;
    let huge = TaskResult {
        session: SESSION.into(),
        outcome: Outcome::Succeeded,
        message: "done".into(),
        listener: Some(ListenerReport {
            outcome: "success".into(),
            message: "A".repeat(2 << 20),
            denials: Vec::new(),
            elapsed_ms: 1.0,
        }),
    };
    let (status, text) = send_report(&at, &huge).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("task result"), "{text}");
    let task = at
        .api
        .get(
            &format!("/v1/agent-tasks/{}", at.task.id),
            &at.server.root_token,
        )
        .await
        .json();
    assert_eq!(task["state"], "running", "nothing was recorded: {task}");
}

/// A hostile agent's listener report with 10,000 claimed denials, a long message and terminal
/// escapes: at most 64 denials are recorded and audited one by one and the rest are counted in
/// one more; every text is cut and its control characters escaped, in the task, the job
/// record and the audit trail.
#[tokio::test]
async fn a_hostile_agent_report_is_bounded_scrubbed_and_counted() {
    let at = listener_task_at_hand().await;
    let root = at.server.root_token.clone();
    let hostile = TaskResult {
        session: SESSION.into(),
        outcome: Outcome::Succeeded,
        message: format!("done\u{1b}[2J{}", "m".repeat(5000)),
        listener: Some(ListenerReport {
            outcome: "success".into(),
            message: format!("\u{1b}]0;owned\u{7}{}", "B".repeat(100_000)),
            denials: (0..10_000)
                .map(|i| {
                    if i == 0 {
                        format!("exec: {}\u{1b}[31m", "x".repeat(5000))
                    } else {
                        format!("n{i}\u{7}")
                    }
                })
                .collect(),
            elapsed_ms: 1.0,
        }),
    };
    let (status, text) = send_report(&at, &hostile).await;
    assert_eq!(status, 200, "{text}");
    let job = wait_finished(&at.api, &root, &at.job, Duration::from_secs(60)).await;
    let run = job["items"][0]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["listener"] == "exec-hook")
        .unwrap_or_else(|| panic!("no exec-hook run: {job}"))
        .clone();
    let denials = run["denials"].as_array().unwrap();
    assert_eq!(denials.len(), 65, "64 one by one and one count");
    assert!(
        denials[64].as_str().unwrap().contains("9936"),
        "{}",
        denials[64]
    );
    assert!(denials[0].as_str().unwrap().len() < 1024, "{}", denials[0]);
    assert!(run["message"].as_str().unwrap().len() < 4200);
    let audited: Vec<Value> = audit_events(&at.api, &root, "listener.denial")
        .await
        .into_iter()
        .filter(|e| e["target"] == "exec-hook")
        .collect();
    assert_eq!(audited.len(), 65, "one event per recorded denial");
    let task = at
        .api
        .get(&format!("/v1/agent-tasks/{}", at.task.id), &root)
        .await
        .json();
    assert!(task["message"].as_str().unwrap().len() <= 2100, "{task}");
    let mut texts = Vec::new();
    let audit = Value::Array(audit_events(&at.api, &root, "").await);
    for v in [&job, &task, &audit] {
        strings(v, &mut texts);
    }
    for control in ['\u{1b}', '\u{7}'] {
        assert!(
            !texts.iter().any(|t| t.contains(control)),
            "a control character got through: {control:?}"
        );
    }
    assert!(
        texts.iter().any(|t| t.contains("\\u{1b}")),
        "escaped, not dropped"
    );
}

/// Every string in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// A body over `--max-body-bytes` gets its 413 over HTTP/2 too. The server refuses it while the
/// client is still sending; it used to reset the stream at once, and Debian's curl then reported
/// "Stream error in the HTTP/2 framing layer" instead of the answer.
#[tokio::test]
async fn an_oversized_body_gets_its_413_over_http2() {
    let server = Server::start_with(common::ServerOptions {
        dev: false,
        extra: vec![
            "--max-body-bytes".into(),
            "65536".into(),
            "--max-listener-bytes".into(),
            "65536".into(),
        ],
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    let name = "x".repeat(4 << 20);
    std::fs::write(
        &body,
        format!("{{\"name\": \"{name}\", \"resource_type\": \"Linux\"}}"),
    )
    .unwrap();
    let component = dir.path().join("big.wasm");
    std::fs::write(&component, vec![0u8; 4 << 20]).unwrap();
    // Headers from a file: the token stays out of argv.
    let headers = dir.path().join("headers");
    std::fs::write(
        &headers,
        format!("Authorization: Bearer {}\n", server.root_token),
    )
    .unwrap();
    let curl = |args: Vec<String>| {
        let out = std::process::Command::new("curl")
            .args([
                "-sSk",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .arg("-H")
            .arg(format!("@{}", headers.display()))
            .args(args)
            .output()
            .expect("curl (the test command installs it)");
        let answer = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "curl exited {:?} ({answer}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        answer
    };
    // A JSON body over --max-body-bytes.
    let json_answer = curl(vec![
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        format!("@{}", body.display()),
        format!("{}/v1/resources", server.base),
    ]);
    assert_eq!(json_answer, "413 2", "the refusal, over HTTP/2");
    // A listener upload over --max-listener-bytes.
    let upload_answer = curl(vec![
        "-F".into(),
        format!("component=@{}", component.display()),
        "-F".into(),
        "approver=bob".into(),
        format!("{}/v1/listeners", server.base),
    ]);
    assert_eq!(upload_answer, "413 2", "the refusal, over HTTP/2");
}
