//! The hostile-listener corpus: components written to hang, exhaust, break out or lie, each
//! published, approved and associated like any listener and run by a real server in a real
//! reset. Every case states the containment it must meet: how its run ends, the denial the
//! audit trail must name (listener, capability, what was asked), and that nothing it was not
//! granted was reached. All cases run at once, in one bulk job; afterwards the server still
//! answers and an honest listener still runs.
//!
//! The cases come from two kinds of component: the test probe (Rust, through the SDK; its
//! first parameter picks the behaviour) and hand-written core modules (WAT) wrapped for the
//! listener world, for what no compiler emits: a lying allocator, pointers out of bounds,
//! invalid UTF-8, an unknown variant tag, table growth.

use lockstep_testkit as common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::components::{ANSWER_OK, CoreModule, HONEST_REALLOC};
use common::registry::publish_approved;
use common::resets::{stored_password, wait_finished};
use common::{Api, Server, audit_events, lockstep_env, resource_with_account};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The limits every case runs under.
const LIMITS: &str = "[limits]\ntimeout_ms = 1500\nmemory_mib = 32\noutput_kib = 16\n";
/// The password every account starts with; a vetoed or stopped pre-reset keeps it.
const START: &str = "Start-Pw-1";

enum Component {
    /// The test probe with these parameters.
    Probe(Vec<String>),
    /// A hand-written component.
    Wat(CoreModule<'static>),
}

struct Case {
    /// The listener's name; its resource type is `H-<name>`.
    name: &'static str,
    phase: &'static str,
    component: Component,
    /// `proceed`, `veto`, `success`, `failure` or `stopped`.
    outcome: &'static str,
    /// A piece of the recorded message.
    message: String,
    /// The denial the audit trail must hold: capability, and a piece of what was asked.
    denial: Option<(&'static str, String)>,
}

fn probe(
    name: &'static str,
    phase: &'static str,
    params: &[&str],
    outcome: &'static str,
    message: &str,
    denial: Option<(&'static str, &str)>,
) -> Case {
    Case {
        name,
        phase,
        component: Component::Probe(params.iter().map(|p| p.to_string()).collect()),
        outcome,
        message: message.into(),
        denial: denial.map(|(c, r)| (c, r.to_string())),
    }
}

/// A hand-written component whose hooks run `hook` (and whose allocator runs `realloc`);
/// each of these is stopped.
fn wat(
    name: &'static str,
    phase: &'static str,
    fields: &'static str,
    realloc: &'static str,
    hook: &'static str,
    message: &str,
) -> Case {
    Case {
        name,
        phase,
        component: Component::Wat(CoreModule {
            fields,
            realloc,
            hook,
        }),
        outcome: "stopped",
        message: message.into(),
        denial: None,
    }
}

/// The corpus. `http` is a granted loopback HTTP server; `other` (on 127.0.0.1, the granted
/// host) and `elsewhere` (on 127.0.0.2, another host) are ports nothing may reach.
fn corpus(http: u16, other: u16, elsewhere: u16) -> Vec<Case> {
    let ungranted_host = format!("http://127.0.0.2:{elsewhere}/");
    let other_port = format!("http://127.0.0.1:{other}/");
    let redirect = format!("http://127.0.0.1:{http}/redirect");
    let other_tcp = format!("127.0.0.1:{other}");
    let pre = "pre-reset";
    let post = "post-reset";
    vec![
        // Time: a guest that never yields, one that spins through host calls, and a
        // post-listener that never returns after the password is committed.
        probe(
            "spin",
            pre,
            &["spin"],
            "stopped",
            "timed out after 1500 ms",
            None,
        ),
        probe(
            "hostcall-spin",
            pre,
            &["hostcall-spin"],
            "stopped",
            "timed out",
            None,
        ),
        probe(
            "post-never-returns",
            post,
            &["spin"],
            "stopped",
            "timed out",
            None,
        ),
        // Space: memory, the stack, return values, logs and standard output.
        probe(
            "memory-growth",
            pre,
            &["alloc"],
            "stopped",
            "memory limit of 32 MiB",
            None,
        ),
        probe(
            "deep-recursion",
            pre,
            &["recurse"],
            "stopped",
            "stack overflow",
            None,
        ),
        probe(
            "huge-result",
            post,
            &["huge-result"],
            "stopped",
            "too much data",
            None,
        ),
        probe(
            "huge-logs",
            post,
            &["log-flood"],
            "success",
            "flooded",
            None,
        ),
        // Standard output past the cap is refused; Rust's `println!` panics on that.
        probe(
            "stdout-flood",
            post,
            &["stdout-flood"],
            "stopped",
            "panicked",
            None,
        ),
        probe(
            "veto-1mb-reason",
            pre,
            &["veto-huge"],
            "veto",
            "vvvvvvvv",
            None,
        ),
        probe(
            "panic",
            post,
            &["panic"],
            "stopped",
            "panicked or aborted",
            None,
        ),
        // Programs: not granted, a disallowed argument, shell syntax, path traversal.
        probe(
            "exec-ungranted-program",
            pre,
            &["exec", "/usr/bin/id"],
            "veto",
            "denied",
            Some(("exec", "/usr/bin/id")),
        ),
        probe(
            "exec-disallowed-argument",
            pre,
            &["exec", "/usr/bin/wc", "--files0-from=/etc/shadow"],
            "veto",
            "denied",
            Some(("exec", "--files0-from=/etc/shadow")),
        ),
        // Shell syntax the pattern admits reaches the program as plain text: no shell ran.
        probe(
            "exec-shell-metacharacters",
            post,
            &["exec", "/usr/bin/echo", "`id`;$(id)&&|>x"],
            "success",
            // Status 0, the argument echoed verbatim (the newline is shown escaped).
            "0|`id`;$(id)&&|>x\\n|",
            None,
        ),
        probe(
            "exec-shell-command",
            pre,
            &["exec", "/usr/bin/echo", "a; id"],
            "veto",
            "denied",
            Some(("exec", "a; id")),
        ),
        probe(
            "exec-path-traversal",
            pre,
            &[
                "exec",
                "/usr/bin/wc",
                "-c",
                "/var/log/app-../../../etc/shadow.log",
            ],
            "veto",
            "denied",
            Some(("exec", "app-../../../etc/shadow.log")),
        ),
        probe(
            "target-exec-ungranted",
            pre,
            &["target-exec", "/bin/sh", "-c", "id"],
            "veto",
            "denied",
            Some(("target-exec", "/bin/sh")),
        ),
        // The network: another host, another port, a redirect, raw TCP.
        probe(
            "http-ungranted-host",
            pre,
            &["http", "GET", &ungranted_host],
            "veto",
            "denied",
            Some(("network", "127.0.0.2")),
        ),
        probe(
            "http-granted-host-other-port",
            pre,
            &["http", "GET", &other_port],
            "veto",
            "denied",
            Some(("network", &format!(":{other}"))),
        ),
        probe(
            "http-redirect-to-ungranted",
            pre,
            &["http-follow", &redirect],
            "veto",
            "following 302",
            Some(("network", &format!("127.0.0.2:{elsewhere}"))),
        ),
        probe(
            "tcp-ungranted-address",
            pre,
            &["tcp", &other_tcp],
            "veto",
            "connect",
            Some(("network", &format!(":{other}"))),
        ),
        // Issue 16. The old password is not granted: a guess equal to it runs like any
        // other argument the rule admits (no "password on a command line" refusal to tell
        // it apart).
        probe(
            "exec-guesses-ungranted-password",
            post,
            &["exec", "/usr/bin/echo", START],
            "success",
            "0|Start-Pw-1\\n|",
            None,
        ),
        // Host memory and descriptors a guest makes the host hold: unsent requests with
        // headers and bodies, unconnected sockets, a listening socket.
        probe(
            "http-hoard",
            pre,
            &["http-hoard", "400", "6"],
            "stopped",
            "resource limit",
            None,
        ),
        probe(
            "socket-hoard",
            pre,
            &["socket-hoard", "100"],
            "veto",
            "new-socket-limit",
            Some(("network", "create-tcp-socket")),
        ),
        probe(
            "tcp-listen",
            pre,
            &["tcp-listen"],
            "veto",
            "access-denied",
            Some(("network", "tcp listen")),
        ),
        // Data: a secret and a property not granted, files with none granted, the
        // environment, and ten thousand denied calls.
        probe(
            "secret-not-granted",
            pre,
            &["old-password"],
            "veto",
            "denied",
            Some(("secrets", "old-password")),
        ),
        probe(
            "props-not-granted",
            pre,
            &["resource-prop", "LOCATION"],
            "veto",
            "denied",
            Some(("props", "LOCATION")),
        ),
        probe(
            "filesystem",
            pre,
            &["read-file", "/etc/shadow"],
            "veto",
            // No directory is preopened: to the guest, no file exists.
            "No such file or directory",
            None,
        ),
        probe("environment", post, &["env"], "success", "", None),
        probe(
            "denial-flood",
            post,
            &["deny-flood"],
            "success",
            "flooded denials",
            Some(("props", "NOT_GRANTED")),
        ),
        // Hand-written components.
        wat(
            "wasm-infinite-loop",
            pre,
            "",
            HONEST_REALLOC,
            "(loop $l (br $l)) (i32.const 16)",
            "timed out",
        ),
        wat(
            "wasm-memory-grow",
            pre,
            "",
            HONEST_REALLOC,
            "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i32.const 16)",
            "memory limit",
        ),
        wat(
            "wasm-table-grow",
            pre,
            "(table $t 1 funcref)",
            HONEST_REALLOC,
            "(loop $l (drop (table.grow $t (ref.null func) (i32.const 1024))) (br $l)) \
             (i32.const 16)",
            "table limit of 100000 elements reached",
        ),
        wat(
            "wasm-recursion",
            pre,
            "(func $r (call $r))",
            HONEST_REALLOC,
            "(call $r) (i32.const 16)",
            "stack overflow",
        ),
        wat(
            "wasm-unreachable",
            post,
            "",
            HONEST_REALLOC,
            "unreachable",
            "panicked or aborted",
        ),
        wat(
            "string-out-of-bounds",
            pre,
            "",
            HONEST_REALLOC,
            "(i32.store8 (i32.const 16) (i32.const 1)) \
             (i32.store (i32.const 20) (i32.const -16)) (i32.store (i32.const 24) (i32.const 16)) \
             (i32.const 16)",
            "string pointer/length out of bounds",
        ),
        wat(
            "string-2gb-length",
            post,
            "",
            HONEST_REALLOC,
            "(i32.store8 (i32.const 16) (i32.const 0)) \
             (i32.store (i32.const 20) (i32.const 0)) \
             (i32.store (i32.const 24) (i32.const 0x7fffffff)) (i32.const 16)",
            "string pointer/length out of bounds",
        ),
        wat(
            "invalid-utf8",
            pre,
            "(data (i32.const 64) \"\\ff\\fe\\fd\")",
            HONEST_REALLOC,
            "(i32.store8 (i32.const 16) (i32.const 1)) \
             (i32.store (i32.const 20) (i32.const 64)) (i32.store (i32.const 24) (i32.const 3)) \
             (i32.const 16)",
            "invalid utf-8",
        ),
        wat(
            "unknown-variant-tag",
            pre,
            "",
            HONEST_REALLOC,
            "(i32.store8 (i32.const 16) (i32.const 9)) (i32.const 16)",
            "unexpected discriminant: 9",
        ),
        wat(
            "return-area-out-of-bounds",
            pre,
            "",
            HONEST_REALLOC,
            "(i32.const -8)",
            "pointer out of bounds of memory",
        ),
        wat(
            "lying-allocator",
            pre,
            "",
            "(i32.const -256)",
            ANSWER_OK,
            "realloc return: beyond end of memory",
        ),
    ]
}

/// The manifest of one case: the probe gets one grant of every kind (so it may import every
/// interface); a hand-written component gets none.
fn manifest(case: &Case, http: u16) -> String {
    let head = format!(
        "name = \"{name}\"\nversion = \"0.1.0\"\nphases = [\"{phase}\"]\nmodes = [\"agentless\"]\n\
         resource_types = [\"H-{name}\"]\n",
        name = case.name,
        phase = case.phase,
    );
    match case.component {
        Component::Wat(_) => format!("{head}{LIMITS}"),
        Component::Probe(_) => format!(
            r#"{head}
[[parameters]]
name = "behaviour"
description = "what the probe does; the rest are its arguments"

[capabilities]
props = ["RESOURCENAME", "LOGINNAME"]
secrets = ["new-password"]
network = ["http://127.0.0.1:{http}", "tcp://127.0.0.1:{http}"]

[[capabilities.exec]]
program = "/usr/bin/wc"
args = ["-c"]

[[capabilities.exec]]
program = "/usr/bin/wc"
args = ["-c", "/var/log/app-*.log"]

[[capabilities.exec]]
program = "/usr/bin/echo"
args = ["*"]

[[capabilities.target_exec]]
program = "systemctl"
args = ["reload", "*.service"]

{LIMITS}"#
        ),
    }
}

/// A loopback HTTP server: `/redirect` answers 302 to `elsewhere` on 127.0.0.2, anything else
/// 200. Returns its port and the number of requests it answered.
async fn http_server(elsewhere: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let reply = if head.starts_with("GET /redirect ") {
                    format!(
                        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.2:{elsewhere}/\r\n\
                         content-length: 0\r\nconnection: close\r\n\r\n"
                    )
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".into()
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, hits)
}

/// A port on loopback address `ip` that counts connections and answers none: nothing may
/// reach it.
async fn forbidden_port(ip: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, hits)
}

fn association(case: &Case) -> Value {
    let parameters = match &case.component {
        Component::Probe(p) => p.clone(),
        Component::Wat(_) => Vec::new(),
    };
    json!({
        "phases": [case.phase], "modes": ["agentless"],
        "resource_types": [format!("H-{}", case.name)], "order": 10, "parameters": parameters,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_listener_is_contained_audited_and_the_server_keeps_serving() {
    let (other, other_hits) = forbidden_port("127.0.0.1").await;
    let (elsewhere, elsewhere_hits) = forbidden_port("127.0.0.2").await;
    let (http, http_hits) = http_server(elsewhere).await;
    let cases = corpus(http, other, elsewhere);
    assert!(cases.len() >= 25, "the corpus has {} cases", cases.len());

    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let dir = tempfile::tempdir().unwrap();
    let probe_wasm = common::listeners::wasm_dir().join("test_probe.wasm");

    // One resource type, resource and account per case: each case is its own reset. The
    // honest listener runs after the corpus, on a type of its own.
    let honest = probe("honest", "pre-reset", &["ok"], "proceed", "", None);
    let mut accounts = BTreeMap::new();
    let mut listeners = Vec::new();
    for case in cases.iter().chain([&honest]) {
        let r = api
            .post(
                "/v1/resource-types",
                &root,
                json!({"name": format!("H-{}", case.name), "reset_method": "local"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let (_, account) = resource_with_account(
            &api,
            &root,
            &format!("host-{}", case.name),
            &format!("H-{}", case.name),
            "svc",
            START,
        )
        .await;
        accounts.insert(case.name, account);
        let wasm = match &case.component {
            Component::Probe(_) => probe_wasm.clone(),
            Component::Wat(m) => {
                let path = dir.path().join(format!("{}.wasm", case.name));
                std::fs::write(&path, m.component()).unwrap();
                path
            }
        };
        std::fs::write(
            dir.path().join(format!("{}.manifest.toml", case.name)),
            manifest(case, http),
        )
        .unwrap();
        listeners.push((case.name, wasm, association(case)));
    }
    publish_approved(&api, &root, dir.path(), &listeners).await;

    // All at once: one bulk job over every case's account.
    let all: Vec<&String> = cases.iter().map(|c| &accounts[c.name]).collect();
    let r = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"accounts": all, "reason": "hostile corpus"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job = wait_finished(
        &api,
        &root,
        r.json()["id"].as_str().unwrap(),
        Duration::from_secs(240),
    )
    .await;
    // Nothing a listener returned or logged made the job's record large.
    assert!(
        job.to_string().len() < 512 << 10,
        "{} bytes",
        job.to_string().len()
    );

    let denials = audit_events(&api, &root, "listener.denial").await;
    let stopped = audit_events(&api, &root, "listener.stopped").await;
    let items = job["items"].as_array().expect("items");
    for case in &cases {
        let account = &accounts[case.name];
        let item = items
            .iter()
            .find(|i| &i["account_id"] == account)
            .unwrap_or_else(|| panic!("{}: no item in {job}", case.name));
        let run = item["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["listener"] == case.name))
            .unwrap_or_else(|| panic!("{}: no run recorded: {item}", case.name));
        let message = run["message"].as_str().unwrap_or_default();
        assert_eq!(run["outcome"], case.outcome, "{}: {run}", case.name);
        assert!(
            message.contains(case.message.as_str()),
            "{}: {:?} does not contain {:?}",
            case.name,
            message,
            case.message
        );
        // 4 KiB, and the note of what was cut.
        assert!(
            message.len() <= 4096 + 64,
            "{}: message of {} bytes",
            case.name,
            message.len()
        );
        assert!(!message.contains("root:"), "{}: {message}", case.name);

        // Stopped runs are audited with their reason; denials with capability and request.
        let mine = |events: &[Value]| -> Vec<String> {
            events
                .iter()
                .filter(|e| e["target"] == case.name)
                .map(|e| e["detail"].to_string())
                .collect()
        };
        if case.outcome == "stopped" {
            let s = mine(&stopped);
            assert_eq!(s.len(), 1, "{}: {s:?}", case.name);
            assert!(s[0].contains(&case.message), "{}: {s:?}", case.name);
        }
        let d = mine(&denials);
        match &case.denial {
            Some((capability, requested)) => {
                assert!(
                    // `capability: requested (reason)`
                    d.iter().any(|e| e.contains(&format!("{capability}: "))
                        && e.contains(requested.as_str())
                        && e.contains(" (")),
                    "{}: no {capability} denial of {requested} in {d:?}",
                    case.name
                );
                assert!(d.len() <= 65, "{}: {} denials audited", case.name, d.len());
            }
            None => assert!(d.is_empty(), "{}: {d:?}", case.name),
        }

        // A pre-reset that did not proceed changed nothing; a post-reset cannot undo the
        // committed password.
        let stored = stored_password(&api, &root, account).await;
        if case.phase == "pre-reset" {
            assert_ne!(item["state"], "done", "{}: {item}", case.name);
            assert_eq!(stored, START, "{}", case.name);
        } else {
            assert_eq!(item["state"], "done", "{}: {item}", case.name);
            assert_ne!(stored, START, "{}", case.name);
        }
    }
    // The flood is summarised, not stored ten thousand times.
    let flood = denials
        .iter()
        .filter(|e| e["target"] == "denial-flood")
        .count();
    assert_eq!(flood, 65, "64 records and one summary");
    // Only the redirect's first hop reached the granted server; nothing reached the others.
    assert_eq!(http_hits.load(Ordering::SeqCst), 1);
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0);

    // A component importing an interface its manifest does not grant is refused when
    // published, before anyone can approve it.
    let importer = CoreModule {
        fields: "(import \"lockstep:listener/secrets@0.1.0\" \"old-password\" (func (param i32)))",
        realloc: HONEST_REALLOC,
        hook: "(call 0 (i32.const 32)) (i32.const 16)",
    };
    let path = dir.path().join("importer.wasm");
    std::fs::write(&path, importer.component()).unwrap();
    let m = dir.path().join("importer.toml");
    std::fs::write(
        &m,
        format!(
            "name = \"importer\"\nversion = \"0.1.0\"\nphases = [\"pre-reset\"]\n\
             modes = [\"agentless\"]\nresource_types = [\"Linux\"]\n{LIMITS}"
        ),
    )
    .unwrap();
    let key = dir.path().join("publisher.key");
    let (st, out, err) = lockstep_env(
        &[
            "listener",
            "publish",
            path.to_str().unwrap(),
            "--manifest",
            m.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--server",
            &api.base,
            "--approver",
            "approver",
        ],
        &[("LOCKSTEP_TOKEN", &root)],
    );
    assert!(!st.success(), "{out}");
    assert!(
        err.contains("lockstep:listener/secrets@0.1.0") && err.contains("grant it"),
        "{err}"
    );

    // The server still answers, and an honest listener still runs.
    assert_eq!(api.get("/healthz", &root).await.status, 200);
    let account = &accounts["honest"];
    let r = api
        .post(
            &format!("/v1/accounts/{account}/reset"),
            &root,
            json!({"reason": "after the corpus"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job = wait_finished(
        &api,
        &root,
        r.json()["id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(job["items"][0]["state"], "done", "{job}");
    assert_eq!(
        job["items"][0]["listeners"][0]["outcome"], "proceed",
        "{job}"
    );
}
