//! Post-reset delivery end to end (`docs/resets.md`, "Post-reset delivery"): a real `lockstep`
//! server, real listener components published and approved, and a real HTTP receiver on
//! loopback that refuses as a scripted outage would. The failure paths: a receiver down for a
//! while (retried, delivered once, every attempt recorded), down past the listener's limits
//! (a dead letter, re-run by a person), and a server SIGKILLed between two attempts (the
//! schedule survives; no attempt lost or doubled).

use lockstep_testkit as common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::listeners::wasm_dir;
use common::registry::publish_approved;
use common::resets::{stored_password, wait_finished};
use common::{Api, Server, audit_events, resource_with_account, user_with_role};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the receiver saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    idempotency_key: String,
    body: Value,
    status: u16,
}

/// An HTTP receiver on loopback answering each request with the next scripted status (200
/// once the script runs out), recording what it saw.
#[derive(Clone)]
struct Receiver {
    port: u16,
    script: Arc<Mutex<VecDeque<u16>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            port: listener.local_addr().unwrap().port(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            seen: Arc::default(),
        };
        let me = r.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move { me.serve(s).await });
            }
        });
        r
    }

    async fn serve(&self, mut s: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Headers, then as much body as content-length says.
        let (head, mut body) = loop {
            let Ok(n) = s.read(&mut chunk).await else {
                return;
            };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
                break (head, buf[at + 4..].to_vec());
            }
        };
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(str::to_string)
        };
        let length: usize = header("content-length")
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        while body.len() < length {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        let status = self.script.lock().unwrap().pop_front().unwrap_or(200);
        self.seen.lock().unwrap().push(Seen {
            idempotency_key: header("idempotency-key").unwrap_or_default(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            status,
        });
        let reply =
            format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = s.write_all(reply.as_bytes()).await;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }
}

/// The webhook's manifest granting the receiver, with `delivery` as its `[delivery]` table.
fn webhook_manifest(dir: &std::path::Path, receiver: &Receiver, delivery: &str) {
    let manifest = std::fs::read_to_string(common::registry::manifest_path("webhook"))
        .unwrap()
        .replace(
            "https://hooks.example.com:443",
            &format!("http://127.0.0.1:{}", receiver.port),
        );
    std::fs::write(
        dir.join("webhook.manifest.toml"),
        format!("{manifest}\n[delivery]\n{delivery}\n"),
    )
    .unwrap();
}

/// A server with `webhook` published for Generic post-reset, telling a receiver that answers
/// `script`, with `limits` as its `[delivery]` table, and a vault-only account; returns the
/// server, its API, the root token, the receiver and the account.
async fn with_webhook(script: &[u16], limits: &str) -> (Server, Api, String, Receiver, String) {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let receiver = Receiver::start(script).await;
    webhook_manifest(server.dir.path(), &receiver, limits);
    let url = receiver.url();
    publish_approved(
        &api,
        &root,
        server.dir.path(),
        &[(
            "webhook",
            wasm_dir().join("webhook.wasm"),
            post(&[&url, "signing-key"]),
        )],
    )
    .await;
    let (_, acc) =
        resource_with_account(&api, &root, "vault1", "Generic", "svc", "Old-Pass-123!").await;
    (server, api, root, receiver, acc)
}

/// A post-reset association for the Generic type.
fn post(parameters: &[&str]) -> Value {
    json!({"phases": ["post-reset"], "modes": ["agentless"], "resource_types": ["Generic"],
        "order": 10, "parameters": parameters})
}

/// A vault-only reset of `account`; returns the finished job.
async fn reset(api: &Api, token: &str, account: &str) -> Value {
    let r = api
        .post(
            &format!("/v1/accounts/{account}/reset"),
            token,
            json!({"reason": "rotate and tell the receiver", "apply_remote": false}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_finished(api, token, &id, Duration::from_secs(60)).await
}

/// The job's deliveries, by listener name.
async fn deliveries(api: &Api, token: &str, job: &str) -> Vec<Value> {
    let r = api
        .get(&format!("/v1/deliveries?job_id={job}"), token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["items"].as_array().cloned().unwrap_or_default()
}

fn of<'a>(ds: &'a [Value], listener: &str) -> &'a Value {
    ds.iter()
        .find(|d| d["listener"] == listener)
        .unwrap_or_else(|| panic!("no {listener} delivery in {ds:?}"))
}

/// Polls until the job's delivery to `listener` is in `state`; returns it.
async fn until_state(api: &Api, token: &str, job: &str, listener: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ds = deliveries(api, token, job).await;
        let d = of(&ds, listener).clone();
        if d["state"] == state {
            return d;
        }
        assert!(Instant::now() < deadline, "never {state}: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn outcomes(d: &Value) -> Vec<String> {
    d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_string())
        .collect()
}

async fn metric(api: &Api, name: &str) -> Option<i64> {
    let text = api.get("/metrics", "").await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// test-probe as `retry-probe` for Generic, granted both passwords.
fn retry_probe() -> String {
    common::listeners::probe_manifest(
        "retry-probe",
        "0.2.0",
        "agentless",
        "Generic",
        &["old-password", "new-password"],
        &[
            ("behaviour", "what the probe does"),
            ("attempts", "the attempt that succeeds"),
        ],
    )
}

#[tokio::test]
async fn a_receiver_that_refuses_three_times_is_delivered_once_on_the_fourth_attempt() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let receiver = Receiver::start(&[503, 503, 503]).await;
    webhook_manifest(server.dir.path(), &receiver, "max_attempts = 6");
    // test-probe, granted the new password, asks to be tried again once: its second attempt
    // must be told the same password the reset committed, kept sealed in between.
    std::fs::write(
        server.dir.path().join("retry-probe.manifest.toml"),
        retry_probe(),
    )
    .unwrap();
    let url = receiver.url();
    publish_approved(
        &api,
        &root,
        server.dir.path(),
        &[
            (
                "webhook",
                wasm_dir().join("webhook.wasm"),
                post(&[&url, "signing-key"]),
            ),
            (
                "retry-probe",
                wasm_dir().join("test_probe.wasm"),
                post(&["retry-until", "2"]),
            ),
        ],
    )
    .await;
    let (_, acc) =
        resource_with_account(&api, &root, "vault1", "Generic", "svc", "Old-Pass-123!").await;

    let job = reset(&api, &root, &acc).await;
    let item = &job["items"][0];
    assert_eq!(item["state"], "done", "the reset is committed: {job}");
    assert!(
        item["detail"]
            .as_str()
            .is_some_and(|d| d.contains("is tried again at")),
        "{item}"
    );
    let job_id = job["id"].as_str().unwrap();
    let first = deliveries(&api, &root, job_id).await;
    assert_eq!(first.len(), 2, "{first:?}");

    let hook = until_state(&api, &root, job_id, "webhook", "delivered").await;
    assert_eq!(hook["attempts"], 4, "{hook}");
    assert_eq!(outcomes(&hook), ["retry", "retry", "retry", "success"]);
    let seen = receiver.seen();
    assert_eq!(
        seen.iter().map(|s| s.status).collect::<Vec<_>>(),
        [503, 503, 503, 200],
        "delivered once"
    );
    let id = hook["id"].as_str().unwrap();
    for (n, s) in seen.iter().enumerate() {
        assert_eq!(
            s.idempotency_key, id,
            "every attempt carries the delivery id"
        );
        assert_eq!(s.body["delivery_id"], id);
        assert_eq!(s.body["attempt"], n as u64 + 1);
    }
    // The pauses grew (each at least half of 2 s, 4 s, 8 s after the one before).
    let started: Vec<chrono::DateTime<chrono::Utc>> = hook["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["started_at"].as_str().unwrap().parse().unwrap())
        .collect();
    for (i, pair) in started.windows(2).enumerate() {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 1000 << i, "pause {i}: {gap} ms in {started:?}");
    }
    // The timeline, for whoever runs this with --nocapture.
    for (a, at) in hook["history"].as_array().unwrap().iter().zip(&started) {
        println!(
            "attempt {} at +{} ms: {} ({})",
            a["attempt"],
            (*at - started[0]).num_milliseconds(),
            a["outcome"].as_str().unwrap(),
            a["message"].as_str().unwrap()
        );
    }

    let probe = until_state(&api, &root, job_id, "retry-probe", "delivered").await;
    assert_eq!(outcomes(&probe), ["retry", "success"]);
    let password = stored_password(&api, &root, &acc).await;
    assert_eq!(
        probe["message"],
        format!(
            "delivered at attempt 2; new password of {} characters",
            password.chars().count()
        ),
        "the second attempt was told the committed password"
    );
    assert_eq!(
        metric(&api, "lockstep_deliveries_dead_letters").await,
        Some(0)
    );
    // Nothing about a delivery keeps a password in clear: not its view, not the database.
    let all = api.get("/v1/deliveries", &root).await.text;
    assert!(!all.contains(&password));
    for file in ["lockstep.db", "lockstep.db-wal"] {
        let bytes = std::fs::read(server.data_dir().join(file)).unwrap_or_default();
        assert!(
            !bytes
                .windows(password.len())
                .any(|w| w == password.as_bytes()),
            "no clear password in {file}"
        );
    }
}

#[tokio::test]
async fn a_delivery_out_of_attempts_waits_as_a_dead_letter_until_a_person_reruns_it() {
    let (_server, api, root, receiver, acc) = with_webhook(&[503; 2], "max_attempts = 2").await;
    let job = reset(&api, &root, &acc).await;
    let job_id = job["id"].as_str().unwrap();
    let dead = until_state(&api, &root, job_id, "webhook", "dead-letter").await;
    assert_eq!(outcomes(&dead), ["retry", "retry"]);
    assert!(
        dead["history"][1]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("answered 503")),
        "{dead}"
    );
    let id = dead["id"].as_str().unwrap().to_string();
    let events = audit_events(&api, &root, "delivery.dead-letter").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["target"], id.as_str());
    assert_eq!(
        metric(&api, "lockstep_deliveries_dead_letters").await,
        Some(1)
    );

    // Who may re-run it, and how.
    let auditor = user_with_role(&api, &root, "audrey", "auditor").await;
    let r = api
        .post(
            &format!("/v1/deliveries/{id}/rerun"),
            &auditor,
            json!({"reason": "receiver is back"}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = api
        .post(
            &format!("/v1/deliveries/{id}/rerun"),
            &root,
            json!({"reason": "  "}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let listed = cli(&api, &root, &["delivery", "list", "--state", "dead-letter"]);
    assert!(
        listed.contains(&id) && listed.contains("dead-letter"),
        "{listed}"
    );

    // The receiver is back (its script ran out): a person re-runs the dead letter.
    let rerun = cli(
        &api,
        &root,
        &["delivery", "rerun", &id, "--reason", "receiver is back"],
    );
    assert!(rerun.contains(&id), "{rerun}");
    let done = until_state(&api, &root, job_id, "webhook", "delivered").await;
    assert_eq!(outcomes(&done), ["retry", "retry", "success"]);
    assert_eq!(receiver.seen().last().unwrap().body["attempt"], 3);
    let events = audit_events(&api, &root, "delivery.rerun").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail"]["reason"], "receiver is back");
    let r = api
        .post(
            &format!("/v1/deliveries/{id}/rerun"),
            &root,
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(
        r.status, 409,
        "a delivered delivery is not re-run: {}",
        r.text
    );
    let shown = cli(&api, &root, &["delivery", "show", &id]);
    assert_eq!(
        shown.lines().count(),
        4,
        "the delivery and its three attempts: {shown}"
    );
}

#[tokio::test]
async fn a_server_killed_between_attempts_keeps_the_schedule_and_doubles_nothing() {
    let (mut server, api, root, receiver, acc) =
        with_webhook(&[503, 503], "max_attempts = 5").await;
    let job = reset(&api, &root, &acc).await;
    let job_id = job["id"].as_str().unwrap().to_string();
    // The first attempt was refused; the second waits for its time. The server dies now.
    let waiting = of(&deliveries(&api, &root, &job_id).await, "webhook").clone();
    assert_eq!(
        (waiting["state"].as_str(), waiting["attempts"].as_i64()),
        (Some("pending"), Some(1)),
        "{waiting}"
    );
    server.kill();
    assert_eq!(receiver.seen().len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    let api = Api::new(&server);
    let done = until_state(&api, &root, &job_id, "webhook", "delivered").await;
    assert_eq!(outcomes(&done), ["retry", "retry", "success"], "{done}");
    let attempts: Vec<Value> = receiver
        .seen()
        .iter()
        .map(|s| s.body["attempt"].clone())
        .collect();
    assert_eq!(
        attempts,
        [json!(1), json!(2), json!(3)],
        "none lost, none doubled"
    );
}

/// A server with `retry-probe` published and approved for Generic post-reset, answering
/// `retry` until attempt `until`; returns it, its API and the root token.
async fn with_retry_probe(until: u32) -> (Server, Api, String) {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    std::fs::write(
        server.dir.path().join("retry-probe.manifest.toml"),
        retry_probe(),
    )
    .unwrap();
    let until = until.to_string();
    publish_approved(
        &api,
        &root,
        server.dir.path(),
        &[(
            "retry-probe",
            wasm_dir().join("test_probe.wasm"),
            post(&["retry-until", &until]),
        )],
    )
    .await;
    (server, api, root)
}

/// Runs `lockstep ARGS` against the server as `token`'s user; it must succeed. Returns stdout.
fn cli(api: &Api, token: &str, args: &[&str]) -> String {
    let (st, out, err) = common::lockstep_as(api, token, args);
    assert!(st.success(), "{out}{err}");
    out
}

#[tokio::test]
async fn a_password_moved_to_another_delivery_in_the_database_does_not_open() {
    let (server, api, root) = with_retry_probe(3).await;
    let (_, one) =
        resource_with_account(&api, &root, "vault1", "Generic", "svc", "Old-Pass-123!").await;
    let (_, two) =
        resource_with_account(&api, &root, "vault2", "Generic", "svc", "Old-Pass-456!").await;
    let first = reset(&api, &root, &one).await;
    let second = reset(&api, &root, &two).await;
    let d1 = of(
        &deliveries(&api, &root, first["id"].as_str().unwrap()).await,
        "retry-probe",
    )
    .clone();
    let d2 = of(
        &deliveries(&api, &root, second["id"].as_str().unwrap()).await,
        "retry-probe",
    )
    .clone();
    // A database writer moves the second account's sealed passwords into the first's
    // delivery, whose listener would then be told them.
    let mut db = common::database_writer(&server.sqlite_url()).await;
    sqlx::query(
        "UPDATE reset_deliveries SET \
         (old_key_id, old_nonce, old_ciphertext, new_key_id, new_nonce, new_ciphertext) = \
         (SELECT old_key_id, old_nonce, old_ciphertext, new_key_id, new_nonce, new_ciphertext \
          FROM reset_deliveries WHERE id = $2) WHERE id = $1",
    )
    .bind(d1["id"].as_str().unwrap())
    .bind(d2["id"].as_str().unwrap())
    .execute(&mut db)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = first["id"].as_str().unwrap();
    let d = loop {
        let d = of(&deliveries(&api, &root, job).await, "retry-probe").clone();
        if d["history"].as_array().is_some_and(|h| h.len() >= 2) {
            break d;
        }
        assert!(Instant::now() < deadline, "no second attempt: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let next = &d["history"][1];
    assert_eq!(next["outcome"], "interrupted", "{d}");
    assert!(
        next["message"]
            .as_str()
            .is_some_and(|m| m.contains("kept passwords cannot be opened")),
        "{d}"
    );
    let moved = stored_password(&api, &root, &two).await;
    assert!(!d.to_string().contains(&moved));
    // The second account's own delivery still opens its passwords and is delivered.
    let done = until_state(
        &api,
        &root,
        second["id"].as_str().unwrap(),
        "retry-probe",
        "delivered",
    )
    .await;
    assert_eq!(outcomes(&done), ["retry", "retry", "success"], "{done}");
}

#[tokio::test]
async fn a_later_reset_supersedes_a_delivery_about_the_earlier_password() {
    let (_server, api, root) = with_retry_probe(3).await;
    let (_, acc) =
        resource_with_account(&api, &root, "vault1", "Generic", "svc", "Old-Pass-123!").await;
    let first = reset(&api, &root, &acc).await;
    let first = first["id"].as_str().unwrap();
    let second = reset(&api, &root, &acc).await;
    let second = second["id"].as_str().unwrap();
    // The first delivery, about a password the vault no longer holds, never runs again.
    let old = until_state(&api, &root, first, "retry-probe", "superseded").await;
    assert_eq!(outcomes(&old), ["retry"], "{old}");
    let new = until_state(&api, &root, second, "retry-probe", "delivered").await;
    assert_eq!(outcomes(&new), ["retry", "retry", "success"], "{new}");
    let old = of(&deliveries(&api, &root, first).await, "retry-probe").clone();
    assert_eq!(old["state"], "superseded", "{old}");
    assert_eq!(old["attempts"], 1, "{old}");
    // An account with deliveries, and the passwords they keep, can still be deleted.
    let r = api
        .call("DELETE", &format!("/v1/accounts/{acc}"), Some(&root), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(deliveries(&api, &root, second).await.is_empty());
}
