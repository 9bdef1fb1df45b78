//! Real components built from `listeners/` (for wasm32-wasip2), run through the real host:
//! capabilities granted and denied, limits, load-time refusals, the cache.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lockstep_runtime::{
    Contract, Delivery, Error, HookOutcome, Invocation, LoadedListener, Manifest, Phase,
    ProgramOutput, ResetEvent, RunContext, RunFailure, Runtime, TargetExec, Trigger,
};

/// The hostile suite's hand-written components (WAT wrapped for the listener world).
use lockstep_testkit::components;
use lockstep_testkit::listeners::wasm;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(None).expect("runtime"))
}

fn event(params: &[&str]) -> ResetEvent {
    ResetEvent {
        job_id: "job-1".into(),
        trigger: Trigger::Manual,
        resource_type: "Linux".into(),
        parameters: params.iter().map(|p| p.to_string()).collect(),
        delivery: None,
    }
}

fn ctx() -> RunContext {
    RunContext {
        resource: [
            ("RESOURCENAME".to_string(), "web1".to_string()),
            ("LOCATION".to_string(), "DC1".to_string()),
        ]
        .into(),
        account: [("LOGINNAME".to_string(), "svc".to_string())].into(),
        old_password: Some("Old-Secret-1".to_string().into()),
        new_password: Some("New-Secret-2".to_string().into()),
        target: None,
    }
}

/// Loopback servers for the network tests, alive for the whole test process: an HTTP server
/// answering `hello`, a second one (same host, other port, never granted), and a TCP server
/// answering `ping` with `pong`.
struct Servers {
    http: u16,
    http_other: u16,
    tcp: u16,
    /// Records each request (head and body) in [`captured`] and answers like a Splunk HEC.
    capture: u16,
}

/// Requests received by the capture server, as text.
fn captured() -> &'static std::sync::Mutex<Vec<String>> {
    static C: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

fn servers() -> &'static Servers {
    static S: OnceLock<Servers> = OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let capture = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(Servers {
                    http: http.local_addr().unwrap().port(),
                    http_other: other.local_addr().unwrap().port(),
                    tcp: tcp.local_addr().unwrap().port(),
                    capture: capture.local_addr().unwrap().port(),
                })
                .unwrap();
                let serve_capture = async move {
                    loop {
                        let (mut s, _) = capture.accept().await.unwrap();
                        tokio::spawn(async move {
                            let mut req = Vec::new();
                            let mut buf = vec![0u8; 8192];
                            loop {
                                let Ok(n) = s.read(&mut buf).await else { return };
                                if n == 0 {
                                    return;
                                }
                                req.extend_from_slice(&buf[..n]);
                                let text = String::from_utf8_lossy(&req).to_string();
                                if let Some(end) = text.find("\r\n\r\n") {
                                    let len = text[..end]
                                        .lines()
                                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                                        .unwrap_or(0);
                                    if req.len() >= end + 4 + len {
                                        captured().lock().unwrap().push(text);
                                        let body = br#"{"text":"Success","code":0}"#;
                                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                                        let _ = s.write_all(head.as_bytes()).await;
                                        let _ = s.write_all(body).await;
                                        return;
                                    }
                                }
                            }
                        });
                    }
                };
                let serve_http = |l: tokio::net::TcpListener| async move {
                    loop {
                        let (mut s, _) = l.accept().await.unwrap();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 8192];
                            let _ = s.read(&mut buf).await;
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
                                .await;
                        });
                    }
                };
                let serve_tcp = async move {
                    loop {
                        let (mut s, _) = tcp.accept().await.unwrap();
                        tokio::spawn(async move {
                            let mut buf = [0u8; 4];
                            if s.read_exact(&mut buf).await.is_ok() && &buf == b"ping" {
                                let _ = s.write_all(b"pong").await;
                            }
                        });
                    }
                };
                tokio::join!(serve_http(http), serve_http(other), serve_tcp, serve_capture);
            });
        });
        rx.recv().unwrap()
    })
}

fn probe_manifest() -> String {
    let s = servers();
    format!(
        r#"
name = "test-probe"
version = "0.1.0"
phases = ["pre-reset", "post-reset"]
modes = ["agentless"]
resource_types = ["Linux"]
[capabilities]
props = ["RESOURCENAME", "LOGINNAME"]
secrets = ["new-password"]
network = ["http://127.0.0.1:{}", "tcp://127.0.0.1:{}"]
[[capabilities.exec]]
program = "/usr/bin/wc"
args = ["-c"]
[[capabilities.target_exec]]
program = "systemctl"
args = ["reload", "*.service"]
[limits]
timeout_ms = 1000
memory_mib = 32
output_kib = 16
"#,
        s.http, s.tcp
    )
}

fn probe() -> LoadedListener {
    static P: OnceLock<LoadedListener> = OnceLock::new();
    P.get_or_init(|| {
        runtime()
            .load(
                &wasm("test_probe"),
                Manifest::parse(&probe_manifest()).unwrap(),
            )
            .unwrap()
    })
    .clone()
}

async fn post(params: &[&str]) -> Invocation {
    probe().run(Phase::PostReset, &event(params), ctx()).await
}

fn success(inv: &Invocation) -> &str {
    match &inv.outcome {
        Ok(HookOutcome::Success(m)) => m,
        other => panic!("expected success, got {other:?} (stderr: {})", inv.stderr),
    }
}

fn failure(inv: &Invocation) -> &str {
    match &inv.outcome {
        Ok(HookOutcome::Failure(m)) => m,
        other => panic!("expected a failure answer, got {other:?}"),
    }
}

/// Pool slots are reused, and reset by copying back only the pages a run wrote (PAGEMAP_SCAN)
/// or by returning them to the kernel: either way no run may see what an earlier one left in
/// static memory, initialised data or grown pages.
#[tokio::test]
async fn every_run_starts_from_clean_memory() {
    let first = success(&post(&["fresh-memory"]).await).to_string();
    assert!(
        first.starts_with("dirty=0 runs=7 grown=0 pages="),
        "first run: {first}"
    );
    for run in 1..50 {
        let again = post(&["fresh-memory"]).await;
        assert_eq!(
            success(&again),
            first,
            "run {run} saw an earlier run's memory"
        );
    }
}

#[tokio::test]
async fn granted_capabilities_work() {
    let inv = post(&["ok"]).await;
    assert_eq!(success(&inv), "job-1:Phase::PostReset:Trigger::Manual");
    assert_eq!(
        success(&post(&["resource-prop", "RESOURCENAME"]).await),
        "web1"
    );
    assert_eq!(success(&post(&["account-prop", "LOGINNAME"]).await), "svc");
    // The guest got the password (it answered with it); the host redacts it from the answer,
    // which goes to the job record and the audit trail.
    assert_eq!(success(&post(&["new-password"]).await), "[redacted]");
    // Answers are single-line text: the host escapes the newline.
    assert_eq!(
        success(&post(&["exec", "/usr/bin/wc", "-c"]).await),
        "0|0\\n|"
    );
    let logged = post(&["log"]).await;
    assert_eq!(logged.logs.len(), 4);
    assert!(logged.denials.is_empty());
}

#[tokio::test]
async fn ungranted_calls_are_denied_inside_the_guest_and_recorded() {
    let inv = post(&["resource-prop", "LOCATION"]).await;
    assert!(failure(&inv).starts_with("denied: props"), "{inv:?}");
    assert_eq!(inv.denials.len(), 1);
    assert_eq!(inv.denials[0].capability, "props");
    assert_eq!(inv.denials[0].requested, "resource LOCATION");

    let inv = post(&["old-password"]).await;
    assert!(failure(&inv).contains("denied"));
    assert_eq!(inv.denials[0].capability, "secrets");
    assert_eq!(inv.denials[0].requested, "old-password");
    assert!(
        !format!("{inv:?}").contains("Old-Secret-1"),
        "a denial never carries the secret"
    );

    for args in [
        &["exec", "/bin/cat", "/etc/shadow"][..],
        &["exec", "/usr/bin/wc", "-l"],
        &["exec", "/usr/bin/wc", "-c", "; rm -rf /"],
        &["exec", "/usr/bin/../bin/wc", "-c"],
        &["exec", "sh", "-c", "id"],
    ] {
        let inv = post(args).await;
        assert!(failure(&inv).contains("denied: exec"), "{args:?}: {inv:?}");
        assert_eq!(inv.denials.len(), 1, "{args:?}");
        assert_eq!(inv.denials[0].capability, "exec");
    }

    let inv = post(&["target-exec", "systemctl", "restart", "sshd"]).await;
    assert!(failure(&inv).contains("denied: target-exec"), "{inv:?}");
}

struct FakeTarget;

impl TargetExec for FakeTarget {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        _stdin: &'a [u8],
        _timeout: Duration,
        _cap: usize,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<ProgramOutput, String>> + Send + 'a>,
    > {
        Box::pin(async move {
            Ok(ProgramOutput {
                status: 0,
                stdout: format!("{program} {}", args.join(" ")).into_bytes(),
                stderr: vec![],
                timed_out: false,
            })
        })
    }
}

#[tokio::test]
async fn target_exec_goes_through_the_resets_connection() {
    let inv = post(&["target-exec", "systemctl", "reload", "app.service"]).await;
    assert!(
        failure(&inv).contains("no connection to a reset target"),
        "{inv:?}"
    );
    let mut c = ctx();
    c.target = Some(Arc::new(FakeTarget));
    let inv = probe()
        .run(
            Phase::PostReset,
            &event(&["target-exec", "systemctl", "reload", "app.service"]),
            c,
        )
        .await;
    assert_eq!(success(&inv), "0|systemctl reload app.service|");
}

#[tokio::test]
async fn the_guest_sees_no_environment_no_files() {
    assert_eq!(success(&post(&["env"]).await), "");
    let inv = post(&["read-file", "/etc/passwd"]).await;
    assert!(
        !failure(&inv).contains("root:"),
        "no file system is reachable"
    );
    assert_eq!(success(&post(&["clock"]).await), "true");
}

#[tokio::test]
async fn limits_stop_hostile_guests_and_the_host_keeps_serving() {
    let inv = post(&["spin"]).await;
    assert!(
        matches!(inv.outcome, Err(RunFailure::Timeout { .. })),
        "{:?}",
        inv.outcome
    );
    assert!(inv.elapsed < Duration::from_secs(5));
    let inv = post(&["hostcall-spin"]).await;
    assert!(
        matches!(inv.outcome, Err(RunFailure::Timeout { .. })),
        "{:?}",
        inv.outcome
    );
    let inv = post(&["alloc"]).await;
    assert_eq!(inv.outcome, Err(RunFailure::MemoryLimit { limit_mib: 32 }));
    let inv = post(&["recurse"]).await;
    assert!(
        matches!(&inv.outcome, Err(RunFailure::Trap(m)) if m.contains("stack overflow")),
        "{:?}",
        inv.outcome
    );
    let inv = post(&["panic"]).await;
    assert!(
        matches!(&inv.outcome, Err(RunFailure::Trap(_))),
        "{:?}",
        inv.outcome
    );
    assert!(
        inv.stderr.contains("probe panicked on purpose"),
        "{}",
        inv.stderr
    );

    // An 8 MiB answer is more than a run may hand the host: stopped, not buffered.
    let inv = post(&["huge-result"]).await;
    assert!(
        matches!(&inv.outcome, Err(RunFailure::Trap(m)) if m.contains("too much data")),
        "{:?}",
        inv.outcome
    );
    let inv = post(&["log-flood"]).await;
    assert_eq!(success(&inv), "flooded");
    assert!(inv.logs.iter().map(|l| l.message.len()).sum::<usize>() <= 16 * 1024);
    assert!(inv.logs_dropped_bytes > 0);
    let inv = post(&["stdout-flood"]).await;
    assert!(inv.stdout.len() <= 16 * 1024 + 64, "stdout is capped");

    // After all that, the same listener still runs normally.
    assert_eq!(
        success(&post(&["ok"]).await),
        "job-1:Phase::PostReset:Trigger::Manual"
    );
}

#[tokio::test]
async fn many_runs_at_once() {
    let mut tasks = Vec::new();
    for i in 0..40 {
        tasks.push(tokio::spawn(async move {
            let p = if i % 4 == 0 {
                vec!["spin"]
            } else {
                vec!["resource-prop", "RESOURCENAME"]
            };
            post(&p).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let inv = t.await.unwrap();
        if i % 4 == 0 {
            assert!(matches!(inv.outcome, Err(RunFailure::Timeout { .. })));
        } else {
            assert_eq!(success(&inv), "web1");
        }
    }
}

#[tokio::test]
async fn example_listeners_do_their_job() {
    let freeze = example("change_freeze", "change-freeze");
    let inv = freeze
        .run(Phase::PreReset, &event(&["DC1", "DC7"]), ctx())
        .await;
    assert!(
        matches!(&inv.outcome, Ok(HookOutcome::Veto(r)) if r.contains("DC1 is under a change freeze")),
        "{inv:?}"
    );
    let inv = freeze.run(Phase::PreReset, &event(&["DC9"]), ctx()).await;
    assert_eq!(inv.outcome, Ok(HookOutcome::Proceed));
    assert_eq!(inv.logs[0].message, "DC1 is not frozen");
    let inv = freeze.run(Phase::PostReset, &event(&[]), ctx()).await;
    assert!(
        matches!(inv.outcome, Err(RunFailure::Instantiate(_))),
        "post-reset is not declared"
    );

    let hook = example("exec_hook", "exec-hook");
    let inv = hook
        .run(Phase::PostReset, &event(&["/usr/bin/wc", "-c"]), ctx())
        .await;
    assert!(
        matches!(&inv.outcome, Ok(HookOutcome::Success(m)) if m.contains("accepted the new password for svc")),
        "{inv:?}"
    );
    // "svc:New-Secret-2\n" is 17 bytes: the password went through stdin, not argv.
    assert!(inv.logs[0].message.ends_with("17"), "{:?}", inv.logs);
    let inv = hook
        .run(
            Phase::PostReset,
            &event(&["/usr/bin/tee", "/tmp/leak"]),
            ctx(),
        )
        .await;
    assert!(
        matches!(&inv.outcome, Ok(HookOutcome::Failure(m)) if m.contains("denied")),
        "{inv:?}"
    );
    assert_eq!(inv.denials.len(), 1);
}

#[test]
fn components_importing_ungranted_interfaces_are_refused_at_load() {
    let bare = Manifest::parse(
        "name = \"test-probe\"\nversion = \"0.1.0\"\nphases = [\"post-reset\"]\nmodes = [\"agentless\"]\nresource_types = [\"Linux\"]\n",
    )
    .unwrap();
    let err = runtime().load(&wasm("test_probe"), bare).err().unwrap();
    match &err {
        Error::UngrantedImport { import, grant } => {
            assert!(
                import.starts_with("lockstep:listener/")
                    || import.starts_with("wasi:http/")
                    || import.starts_with("wasi:sockets/"),
                "{import}"
            );
            assert!(import.contains('@'));
            assert!(grant.starts_with("capabilities."));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("grant it in the manifest"));
}

#[test]
fn non_components_are_refused_with_a_reason() {
    let m = || Manifest::parse(&probe_manifest()).unwrap();
    let err = runtime().load(b"not wasm at all", m()).err().unwrap();
    assert!(matches!(err, Error::NotAComponent(_)), "{err}");
    let core_module = b"\0asm\x01\0\0\0";
    let err = runtime().load(core_module, m()).err().unwrap();
    assert!(err.to_string().contains("core WebAssembly module"), "{err}");
    let mut truncated = wasm("test_probe");
    truncated.truncate(truncated.len() / 2);
    let err = runtime().load(&truncated, m()).err().unwrap();
    assert!(matches!(err, Error::Compile(_)), "{err}");
}

#[test]
fn the_cache_serves_later_loads_and_survives_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let m = || Manifest::parse(&probe_manifest()).unwrap();
    let rt = Runtime::new(Some(&cache)).unwrap();
    rt.load(&wasm("test_probe"), m()).unwrap();
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let rt2 = Runtime::new(Some(&cache)).unwrap();
    rt2.load(&wasm("test_probe"), m()).unwrap();
    std::fs::write(&files[0], b"garbage").unwrap();
    let rt3 = Runtime::new(Some(&cache)).unwrap();
    rt3.load(&wasm("test_probe"), m())
        .expect("a damaged cache entry is recompiled");
}

/// A target that answers like a Linux host: `passwd -S` and `systemctl restart`.
struct LinuxLikeTarget;

impl TargetExec for LinuxLikeTarget {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        _stdin: &'a [u8],
        _timeout: Duration,
        _cap: usize,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<ProgramOutput, String>> + Send + 'a>,
    > {
        let reply = |status: i32, stdout: &str, stderr: &str| ProgramOutput {
            status,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            timed_out: false,
        };
        Box::pin(async move {
            Ok(
                match (
                    program,
                    args.iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .as_slice(),
                ) {
                    ("passwd", ["-S", "svc"]) => reply(0, "svc P 2026-01-01 0 99999 7 -1\n", ""),
                    ("passwd", ["-S", "locked"]) => {
                        reply(0, "locked L 2026-01-01 0 99999 7 -1\n", "")
                    }
                    ("passwd", ["-S", _]) => reply(1, "", "passwd: user does not exist"),
                    ("systemctl", ["restart", "app.service"]) => reply(0, "", ""),
                    ("systemctl", ["restart", unit]) => {
                        reply(5, "", &format!("Unit {unit} not found."))
                    }
                    _ => reply(127, "", "unexpected command"),
                },
            )
        })
    }
}

fn with_target(login: &str) -> RunContext {
    let mut c = ctx();
    c.account.insert("LOGINNAME".into(), login.into());
    c.target = Some(Arc::new(LinuxLikeTarget));
    c
}

#[tokio::test]
async fn check_account_active_vetoes_locked_and_unknown_accounts() {
    let l = example("check_account_active", "check-account-active");
    let inv = l
        .run(Phase::PreReset, &event(&[]), with_target("svc"))
        .await;
    assert_eq!(inv.outcome, Ok(HookOutcome::Proceed), "{inv:?}");
    let inv = l
        .run(Phase::PreReset, &event(&[]), with_target("locked"))
        .await;
    assert_eq!(
        inv.outcome,
        Ok(HookOutcome::Veto("locked is locked on the target".into()))
    );
    let inv = l
        .run(Phase::PreReset, &event(&[]), with_target("ghost"))
        .await;
    assert!(
        matches!(&inv.outcome, Ok(HookOutcome::Veto(r)) if r.contains("user does not exist")),
        "{inv:?}"
    );
    // A login that tries to smuggle a second argument does not match `-S *`.
    let inv = l
        .run(Phase::PreReset, &event(&[]), with_target("svc -d"))
        .await;
    assert!(
        matches!(&inv.outcome, Ok(HookOutcome::Veto(r)) if r.contains("denied")),
        "{inv:?}"
    );
    assert_eq!(inv.denials[0].capability, "target-exec");
}

#[tokio::test]
async fn restart_service_restarts_each_unit_and_reports_failures() {
    let l = example("restart_service", "restart-service");
    let inv = l
        .run(
            Phase::PostReset,
            &event(&["app.service"]),
            with_target("svc"),
        )
        .await;
    assert_eq!(
        inv.outcome,
        Ok(HookOutcome::Success("restarted app.service".into()))
    );
    let inv = l
        .run(
            Phase::PostReset,
            &event(&["app.service", "gone.service"]),
            with_target("svc"),
        )
        .await;
    assert_eq!(
        inv.outcome,
        Ok(HookOutcome::Failure(
            "could not restart gone.service (exit 5)".into()
        ))
    );
    let inv = l
        .run(
            Phase::PostReset,
            &event(&["sshd.socket"]),
            with_target("svc"),
        )
        .await;
    assert!(
        matches!(&inv.outcome, Ok(HookOutcome::Failure(m)) if m.contains("denied")),
        "only *.service units: {inv:?}"
    );
    let inv = l
        .run(Phase::PostReset, &event(&[]), with_target("svc"))
        .await;
    assert!(matches!(&inv.outcome, Ok(HookOutcome::Failure(m)) if m.contains("no units given")));
}

#[tokio::test]
async fn http_reaches_granted_destinations_only() {
    let s = servers();
    let ok = post(&["http", "GET", &format!("http://127.0.0.1:{}/x", s.http)]).await;
    assert_eq!(success(&ok), "200 hello");
    assert!(ok.denials.is_empty());
    for url in [
        format!("http://127.0.0.1:{}/x", s.http_other),
        format!("http://localhost:{}/x", s.http),
        format!("https://127.0.0.1:{}/x", s.http),
        "http://example.com:80/".to_string(),
    ] {
        let inv = post(&["http", "POST", &url, "payload"]).await;
        assert!(failure(&inv).starts_with("denied"), "{url}: {inv:?}");
        assert_eq!(inv.denials.len(), 1, "{url}");
        assert_eq!(inv.denials[0].capability, "network");
    }
}

#[tokio::test]
async fn tcp_reaches_granted_addresses_only() {
    let s = servers();
    let ok = post(&["tcp", &format!("127.0.0.1:{}", s.tcp)]).await;
    assert_eq!(success(&ok), "pong");
    let inv = post(&["tcp", &format!("127.0.0.1:{}", s.http_other)]).await;
    assert!(failure(&inv).contains("connect"), "{inv:?}");
    assert_eq!(inv.denials[0].capability, "network");
    // No DNS for guests: a name is not resolved, whatever it is.
    let inv = post(&["tcp", &format!("localhost:{}", s.tcp)]).await;
    assert!(failure(&inv).contains("connect"), "{inv:?}");
}

#[test]
fn tcp_grants_by_name_are_refused_at_load() {
    let m = probe_manifest().replace("tcp://127.0.0.1", "tcp://db.internal");
    let err = runtime()
        .load(&wasm("test_probe"), Manifest::parse(&m).unwrap())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("grant tcp:// by IP address"),
        "{err}"
    );
}

/// Loads an example listener with its network grant pointed at the capture server.
/// An example listener from `listeners/FOLDER/`, loaded with its own manifest.
fn example(wasm_name: &str, folder: &str) -> LoadedListener {
    let path = format!(
        "{}/../listeners/{folder}/manifest.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let manifest = Manifest::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    runtime().load(&wasm(wasm_name), manifest).unwrap()
}

fn with_capture_grant(name: &str, manifest: &str, granted: &str) -> LoadedListener {
    let port = servers().capture;
    let m = manifest.replace(granted, &format!("http://127.0.0.1:{port}"));
    runtime()
        .load(&wasm(name), Manifest::parse(&m).unwrap())
        .unwrap()
}

fn capture_containing(needle: &str) -> String {
    captured()
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.contains(needle))
        .cloned()
        .unwrap_or_else(|| panic!("no request with {needle}"))
}

#[tokio::test]
async fn webhook_posts_a_signed_notice_without_secrets() {
    use hmac::{Hmac, KeyInit, Mac};
    let l = with_capture_grant(
        "webhook",
        include_str!("../../listeners/webhook/manifest.toml"),
        "https://hooks.example.com:443",
    );
    let url = format!("http://127.0.0.1:{}/hook", servers().capture);
    let mut e = event(&[&url, "shared-key"]);
    e.job_id = "job-webhook".into();
    let inv = l.run(Phase::PostReset, &e, ctx()).await;
    assert_eq!(
        inv.outcome,
        Ok(HookOutcome::Success(format!("notified {url}"))),
        "{inv:?}"
    );
    let req = capture_containing("job-webhook");
    let (head, body) = req.split_once("\r\n\r\n").unwrap();
    let sig = head
        .lines()
        .find_map(|l| l.strip_prefix("x-lockstep-signature: sha256="))
        .expect("signature header");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"shared-key").unwrap();
    mac.update(body.as_bytes());
    assert_eq!(
        sig,
        hex::encode(mac.finalize().into_bytes()),
        "the receiver can verify the signature"
    );
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["resource"], "web1");
    assert_eq!(json["account"], "svc");
    assert!(
        !req.contains("New-Secret-2") && !req.contains("Old-Secret-1"),
        "no password leaves"
    );

    let inv = l
        .run(
            Phase::PostReset,
            &event(&["http://127.0.0.1:9/hook", "k"]),
            ctx(),
        )
        .await;
    assert!(
        matches!(&inv.outcome, Ok(HookOutcome::Failure(m)) if m.contains("denied")),
        "{inv:?}"
    );
}

#[tokio::test]
async fn siem_forward_sends_a_hec_event() {
    let l = with_capture_grant(
        "siem_forward",
        include_str!("../../listeners/siem-forward/manifest.toml"),
        "https://splunk.example.com:8088",
    );
    let url = format!(
        "http://127.0.0.1:{}/services/collector/event",
        servers().capture
    );
    let mut e = event(&[&url, "hec-token-123"]);
    e.job_id = "job-siem".into();
    let inv = l.run(Phase::PostReset, &e, ctx()).await;
    assert_eq!(
        inv.outcome,
        Ok(HookOutcome::Success(format!("sent to {url}"))),
        "{inv:?}"
    );
    let req = capture_containing("job-siem");
    assert!(
        req.starts_with("POST /services/collector/event HTTP/1.1"),
        "{req}"
    );
    assert!(req.contains("authorization: Splunk hec-token-123"), "{req}");
    let body: serde_json::Value =
        serde_json::from_str(req.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["sourcetype"], "lockstep:reset");
    assert_eq!(body["event"]["resource"], "web1");
    assert_eq!(body["event"]["trigger"], "manual");
    assert!(!req.contains("New-Secret-2") && !req.contains("Old-Secret-1"));
}

#[tokio::test]
async fn each_secret_is_its_own_grant() {
    let old_only = probe_manifest().replace(
        "secrets = [\"new-password\"]",
        "secrets = [\"old-password\"]",
    );
    let l = runtime()
        .load(&wasm("test_probe"), Manifest::parse(&old_only).unwrap())
        .unwrap();
    let inv = l
        .run(Phase::PostReset, &event(&["old-password"]), ctx())
        .await;
    assert_eq!(
        success(&inv),
        "[redacted]",
        "granted: the guest read it; redacted from the answer"
    );
    let inv = l
        .run(Phase::PostReset, &event(&["new-password"]), ctx())
        .await;
    assert!(failure(&inv).contains("denied"), "{inv:?}");
    assert_eq!(inv.denials[0].requested, "new-password");
    assert!(!format!("{inv:?}").contains("New-Secret-2"));
}

#[tokio::test]
async fn a_password_never_goes_on_a_command_line_nor_into_a_record() {
    // `*.service` would match, but the argument carries the new password.
    let inv = post(&["target-exec", "systemctl", "reload", "New-Secret-2.service"]).await;
    assert!(failure(&inv).contains("standard input"), "{inv:?}");
    assert_eq!(
        inv.denials[0].requested,
        "[arguments containing a password]"
    );
    assert!(!format!("{inv:?}").contains("New-Secret-2"), "{inv:?}");
}

#[tokio::test]
async fn denial_floods_and_huge_requests_stay_bounded() {
    let inv = post(&["deny-flood"]).await;
    assert_eq!(success(&inv), "flooded denials");
    assert_eq!(inv.denials.len(), 65, "64 records and one summary");
    assert!(
        inv.denials[64].requested.contains("more denied call"),
        "{:?}",
        inv.denials[64]
    );
    assert!(
        inv.denials
            .iter()
            .all(|d| d.requested.len() <= 300 && d.reason.len() <= 300)
    );
}

#[tokio::test]
async fn listener_text_cannot_forge_lines_or_escape_the_terminal() {
    let inv = post(&["log-escape"]).await;
    let line = &inv.logs[0].message;
    assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line:?}");
    assert!(line.contains("line one\\nforged"), "{line:?}");
}

#[tokio::test]
async fn a_value_pattern_never_admits_an_option() {
    let l = example("check_account_active", "check-account-active");
    // `passwd -S *` must not become `passwd -S -a` (the status of every account).
    let inv = l.run(Phase::PreReset, &event(&[]), with_target("-a")).await;
    assert!(
        matches!(&inv.outcome, Ok(HookOutcome::Veto(r)) if r.contains("denied")),
        "{inv:?}"
    );
}

/// A hand-written component that imports only `INTERFACE.run` (`exec` or `target-exec`), so
/// its manifest grants no secret: it runs its first parameter as the program, the others as
/// the arguments, and answers the program's stdout (`success`) or the host's error text
/// (`failure`).
fn guesser(interface: &str) -> Vec<u8> {
    let fields = format!(
        r#"(import "lockstep:listener/{interface}@0.1.0" "run" (func $run (param i32 i32 i32 i32 i32 i32 i32)))"#
    );
    // The event's parameters are a list of (pointer, length) pairs at local 6, length at
    // local 7: the first is the program, the rest are already a `list<string>` of arguments.
    // The result (at 64): a tag, then `output.stdout` or the `host-error`'s text at 72.
    let hook = "(call $run \
         (i32.load (local.get 6)) (i32.load offset=4 (local.get 6)) \
         (i32.add (local.get 6) (i32.const 8)) (i32.sub (local.get 7) (i32.const 1)) \
         (i32.const 0) (i32.const 0) (i32.const 64)) \
         (i32.store8 (i32.const 16) (i32.load8_u (i32.const 64))) \
         (i32.store (i32.const 20) (i32.load (i32.const 72))) \
         (i32.store (i32.const 24) (i32.load (i32.const 76))) \
         (i32.const 16)";
    components::CoreModule {
        fields: &fields,
        realloc: components::HONEST_REALLOC,
        hook,
    }
    .component()
}

/// What a listener and whoever reads its records can observe of a run: its answer and its
/// denial records (what is audited), with `guess` written as `GUESS`.
async fn observed(l: &LoadedListener, shape: &[&str], guess: &str) -> String {
    let params: Vec<String> = shape.iter().map(|p| p.replace("GUESS", guess)).collect();
    let params: Vec<&str> = params.iter().map(String::as_str).collect();
    let mut c = ctx();
    c.target = Some(Arc::new(FakeTarget));
    let inv = l.run(Phase::PostReset, &event(&params), c).await;
    format!("{:?} {:?}", inv.outcome, inv.denials).replace(guess, "GUESS")
}

/// Issue 16: the host compared exec and target-exec arguments with both passwords before the
/// rule and refused a match with its own text, so a listener with no secrets grant could
/// find a password by bisection. A run now holds only the passwords its manifest grants: a
/// guess equal to any other password is an argument like any other, refused by the rule with
/// the same answer and record, or run when the rule admits it.
#[tokio::test]
async fn exec_refusals_tell_nothing_about_passwords_the_listener_may_not_read() {
    let head = "name = \"guesser\"\nversion = \"0.1.0\"\nphases = [\"post-reset\"]\n\
                modes = [\"agentless\"]\nresource_types = [\"Linux\"]\n";
    let exec = runtime()
        .load(
            &guesser("exec"),
            Manifest::parse(&format!(
                "{head}[[capabilities.exec]]\nprogram = \"/usr/bin/echo\"\nargs = [\"ok-*\"]\n"
            ))
            .unwrap(),
        )
        .unwrap();
    assert!(exec.manifest().capabilities().secrets.is_empty());
    let target = runtime()
        .load(
            &guesser("target-exec"),
            Manifest::parse(&format!(
                "{head}[[capabilities.target_exec]]\nprogram = \"systemctl\"\nargs = [\"reload\", \"*.service\"]\n"
            ))
            .unwrap(),
        )
        .unwrap();
    // The probe is granted the new password only: the old one is as unknown to it.
    let probe = probe();
    let cases: [(&LoadedListener, &[&str], &str); 6] = [
        (
            &exec,
            &["/usr/bin/echo", "ok-GUESS"],
            "Ok(Success(\"ok-GUESS\\\\n\")) []",
        ),
        (
            &exec,
            &["/usr/bin/echo", "GUESS"],
            "Failure(\"exec: capabilities.exec: '/usr/bin/echo' is not granted",
        ),
        (
            &target,
            &["systemctl", "reload", "GUESS.service"],
            "Ok(Success(\"systemctl reload GUESS.service\")) []",
        ),
        (
            &target,
            &["systemctl", "reload", "GUESS"],
            "Failure(\"target-exec: capabilities.target_exec: 'systemctl' is not granted",
        ),
        (&probe, &["exec", "/usr/bin/wc", "GUESS"], "denied: exec"),
        (
            &probe,
            &["target-exec", "systemctl", "reload", "GUESS.service"],
            "0|systemctl reload GUESS.service|",
        ),
    ];
    for (l, shape, expected) in cases {
        let control = observed(l, shape, "Wrong-Guess-3").await;
        assert!(control.contains(expected), "{shape:?}: {control}");
        let passwords: &[&str] = if l.manifest().capabilities().secrets.is_empty() {
            &["Old-Secret-1", "New-Secret-2"]
        } else {
            &["Old-Secret-1"]
        };
        for password in passwords {
            assert_eq!(
                observed(l, shape, password).await,
                control,
                "{shape:?}: guessing {password} must look like any other guess"
            );
        }
    }
    // A granted password is still never put on a command line (the listener knows it).
    let inv = post(&["exec", "/usr/bin/wc", "New-Secret-2"]).await;
    assert!(failure(&inv).contains("standard input"), "{inv:?}");
}

/// Issue 16: a granted password used as an HTTP method, or in the query of a request past
/// the connection budget, reached the denial record (and so the audit trail) verbatim.
/// A network denial records a standard method, the scheme, host, port and path, never the
/// query; and the run's granted passwords are redacted from it.
#[tokio::test]
async fn a_password_never_reaches_a_network_denial_record() {
    let s = servers();
    let other = format!("http://127.0.0.1:{}", s.http_other);
    let inv = post(&["http", "{new}", &format!("{other}/x")]).await;
    assert!(failure(&inv).contains("denied"), "{inv:?}");
    assert_eq!(
        inv.denials[0].requested,
        format!("non-standard method {other}/x")
    );
    // In the path, plain or percent-encoded: redacted.
    for path in ["{new}", "{new%}"] {
        let inv = post(&["http", "GET", &format!("{other}/u/{path}?q=1")]).await;
        assert_eq!(
            inv.denials[0].requested,
            format!("GET {other}/u/[redacted]")
        );
    }
    // In the query of the 33rd request: past the budget, recorded without its query.
    let granted = format!("http://127.0.0.1:{}", s.http);
    let inv = post(&["http-repeat", "33", &format!("{granted}/q?pw={{new}}")]).await;
    assert_eq!(inv.denials.len(), 1, "{inv:?}");
    assert_eq!(inv.denials[0].requested, format!("GET {granted}/q"));
    assert_eq!(inv.denials[0].reason, "more than 32 connections in one run");
    assert!(!format!("{inv:?}").contains("New-Secret-2"), "{inv:?}");
}

/// True when `text` holds four or more consecutive bytes of `secret`.
fn holds_part_of(text: &str, secret: &str) -> bool {
    secret
        .as_bytes()
        .windows(4)
        .any(|w| text.contains(std::str::from_utf8(w).unwrap()))
}

/// `s` repeated so that `{new}` (the 12-byte `New-Secret-2`) placed after it straddles byte
/// `cut` by half, then some text after it.
fn straddling(cut: usize) -> String {
    format!("{}{{new}}{}", "s".repeat(cut - 6), "t".repeat(64))
}

/// Issue 16: text was cut to its limit before the run's passwords were redacted, so a
/// password straddling the cut no longer matched and its first half was kept. Every exit
/// now redacts the whole text first: answers (4 KiB), log lines (4 KiB), stdout and stderr
/// (the output cap), a refused property key (32 bytes shown) and network denials (256 bytes).
#[tokio::test]
async fn a_password_straddling_a_cut_is_redacted_before_the_cut() {
    let secret = "New-Secret-2";
    let inv = post(&["emit", "answer", &straddling(4096)]).await;
    let answer = success(&inv);
    assert!(
        answer.contains("[redac") && !holds_part_of(answer, secret),
        "{answer}"
    );

    let inv = probe()
        .run(
            Phase::PreReset,
            &event(&["emit", "failure", &straddling(4096)]),
            ctx(),
        )
        .await;
    match &inv.outcome {
        Ok(HookOutcome::Veto(reason)) => {
            assert!(!holds_part_of(reason, secret), "veto: {reason}")
        }
        other => panic!("expected a veto, got {other:?}"),
    }

    let inv = post(&["emit", "log", &straddling(4096)]).await;
    let line = &inv.logs[0].message;
    assert!(
        line.contains("bytes cut") && !holds_part_of(line, secret),
        "{line}"
    );

    // The probe's output cap is 16 KiB: the stream keeps that much and drops the rest.
    for stream in ["stdout", "stderr"] {
        let inv = post(&["emit", stream, &straddling(16 * 1024)]).await;
        assert_eq!(success(&inv), "written");
        let text = if stream == "stdout" {
            &inv.stdout
        } else {
            &inv.stderr
        };
        assert!(text.starts_with("sss"), "{stream} was kept");
        assert!(
            !holds_part_of(text, secret),
            "{stream}: …{}",
            &text[text.len() - 40..]
        );
    }

    let inv = post(&["emit", "prop", &straddling(32)]).await;
    assert!(failure(&inv).contains("denied: props"), "{inv:?}");
    let shown = &inv.denials[0].requested;
    assert!(
        shown.starts_with("resource sss") && !holds_part_of(shown, secret),
        "{shown}"
    );

    // The record is `GET http://127.0.0.1:PORT/PATH`, cut at 256 bytes.
    let granted = format!("http://127.0.0.1:{}/", servers().http);
    let path = straddling(256 - "GET ".len() - granted.len());
    let inv = post(&["http-repeat", "33", &format!("{granted}{path}")]).await;
    let recorded = &inv.denials[0].requested;
    assert!(
        recorded.contains("bytes cut") && !holds_part_of(recorded, secret),
        "{recorded}"
    );
    assert!(!format!("{inv:?}").contains(secret));
}

/// A component whose hooks call `wasi:random/random.get-random-bytes(len)` in an endless loop.
fn random_flood(len: u64) -> Vec<u8> {
    let module = components::CoreModule {
        fields: r#"(import "wasi:random/random@0.2.0" "get-random-bytes" (func $bytes (param i64 i32)))"#,
        // Every allocation at 64 KiB, the memory grown to fit: results are never read.
        realloc: "(local $need i32) \
             (local.set $need (i32.add (i32.const 65536) (local.get 3))) \
             (if (i32.gt_u (local.get $need) (i32.mul (memory.size) (i32.const 65536))) \
               (then (drop (memory.grow (i32.add (i32.const 1) (i32.div_u \
                 (i32.sub (local.get $need) (i32.mul (memory.size) (i32.const 65536))) \
                 (i32.const 65536))))))) \
             (i32.const 65536)",
        hook: &format!(
            "(loop $l (call $bytes (i64.const {len}) (i32.const 64)) (br $l)) unreachable"
        ),
    };
    let mut core = wat::parse_str(module.wat()).expect("the WAT parses");
    let mut resolve = wit_parser::Resolve::default();
    let wit = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wit/v0.1.0");
    resolve.push_dir(&wit).expect("wit/v0.1.0 parses");
    resolve
        .push_str(
            "random.wit",
            "package wasi:random@0.2.0;\ninterface random {\n  \
             get-random-bytes: func(len: u64) -> list<u8>;\n}\n",
        )
        .expect("wasi:random parses");
    let flood = resolve
        .push_str(
            "flood.wit",
            "package test:flood;\nworld flood {\n  include lockstep:listener/listener@0.1.0;\n  \
             import wasi:random/random@0.2.0;\n}\n",
        )
        .expect("the flood world parses");
    let world = resolve.select_world(&[flood], Some("flood")).unwrap();
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&core)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// Issue 15: a synchronous host call is not interrupted by the deadline, so an endless loop of
/// `get-random-bytes(64 MiB)` with a 1,000 ms limit stopped after 21.7 s in a debug build.
/// Random bytes are capped per call, so the documented overshoot holds.
#[tokio::test]
async fn a_synchronous_host_call_cannot_carry_a_run_past_its_deadline() {
    let manifest = "name = \"random-flood\"\nversion = \"0.1.0\"\nphases = [\"post-reset\"]\n\
         modes = [\"agentless\"]\nresource_types = [\"Linux\"]\n\
         [limits]\ntimeout_ms = 1000\nmemory_mib = 256\n";
    for len in [64 << 20, 1 << 20, 64 << 10] {
        let l = runtime()
            .load(&random_flood(len), Manifest::parse(manifest).unwrap())
            .unwrap();
        let inv = l.run(Phase::PostReset, &event(&[]), ctx()).await;
        match &inv.outcome {
            // A request over the per-call cap traps at once.
            Err(RunFailure::Trap(m)) if len > 64 << 10 => assert!(m.contains("exceeds"), "{m}"),
            Err(RunFailure::Timeout { .. }) if len <= 64 << 10 => {}
            other => panic!("get-random-bytes({len}): {other:?}"),
        }
        // Documented: timeout + 250 ms (measured here: about 1,050 ms). The bound only tells
        // a run that stops near its deadline from one that does not (the old code took 18 s):
        // it leaves room for a loaded CI machine, whose cores the epoch thread shares.
        assert!(
            inv.elapsed < Duration::from_millis(5000),
            "get-random-bytes({len}) in a loop ran {:?}: {:?}",
            inv.elapsed,
            inv.outcome
        );
    }
}

/// The test probe with its manifest's `timeout_ms` raised to `ms`.
fn probe_with_timeout_ms(ms: u64) -> LoadedListener {
    let manifest = probe_manifest().replace("timeout_ms = 1000", &format!("timeout_ms = {ms}"));
    runtime()
        .load(&wasm("test_probe"), Manifest::parse(&manifest).unwrap())
        .unwrap()
}

/// The host's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Issue 16: outgoing requests whose bodies are written and never sent were buffered by the
/// host (about 2 MiB each, fields 128 KiB each), bounded only by the 2,000 resource-table
/// entries: about 4 GiB of host memory under a 32 MiB `memory_mib`. The run is stopped at its
/// handle cap and what it holds is small. (The bound only separates "stopped" from "held
/// hundreds of MiB": other tests of this process run at the same time.)
#[tokio::test]
async fn a_run_cannot_make_the_host_hold_unbounded_memory() {
    // Time enough for the old code to buffer all 400 (about 3 s in a debug build).
    let patient = probe_with_timeout_ms(20_000);
    let before = peak_rss_kib();
    let inv = patient
        .run(Phase::PostReset, &event(&["http-hoard", "400", "6"]), ctx())
        .await;
    let grown_mib = peak_rss_kib().saturating_sub(before) >> 10;
    assert!(
        matches!(&inv.outcome, Err(RunFailure::Trap(m)) if m.contains("live resource handles")),
        "{:?}",
        inv.outcome
    );
    // Measured: a few MiB; the old code grew by about 850 MiB.
    assert!(grown_mib < 200, "the host grew by {grown_mib} MiB");
    // One fields object holds at most 8 KiB (wasmtime's default: 128 KiB).
    let inv = post(&["http-hoard", "1", "100"]).await;
    assert!(
        matches!(&inv.outcome, Err(RunFailure::Trap(m)) if m.contains("fields exceeds limit")),
        "{:?}",
        inv.outcome
    );
}

/// Issue 16, the stated bound: 64 runs at once, each holding what it can in the host between
/// calls, keep the host under 64 x `MAX_HELD_BYTES_PER_RUN` (2 GiB) beyond their guests' own
/// memory. Here 60 runs (the pool holds 64; other tests of this process may hold a few) each
/// keep 40 unsent requests with 6 KiB of headers and bodies written as far as the host takes
/// them, all at the same time for 3 s. Under wasmtime's defaults each request buffered about
/// 2 MiB: 60 runs held about 4.8 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_runs_hoarding_at_once_stay_under_the_stated_bound() {
    const RUNS: usize = 60;
    let patient = probe_with_timeout_ms(60_000);
    let before = peak_rss_kib();
    let runs: Vec<_> = (0..RUNS)
        .map(|_| {
            let listener = patient.clone();
            tokio::spawn(async move {
                listener
                    .run(
                        Phase::PostReset,
                        &event(&["http-hoard", "40", "6", "3000"]),
                        ctx(),
                    )
                    .await
            })
        })
        .collect();
    for run in runs {
        assert_eq!(success(&run.await.unwrap()), "hoarded 40");
    }
    let grown = (peak_rss_kib().saturating_sub(before) as usize) << 10;
    // The guests' own memory counts too: each instance touches a few MiB of its 32 MiB.
    let bound = RUNS * (lockstep_runtime::limits::MAX_HELD_BYTES_PER_RUN + (32 << 20));
    eprintln!(
        "{RUNS} runs hoarding at once: the host grew by {} MiB (bound {} MiB)",
        grown >> 20,
        bound >> 20
    );
    assert!(grown < bound, "the host grew by {} MiB", grown >> 20);
}

/// Issue 16: creating a socket is not a connection, so a run with a TCP grant could hold
/// about 2,000 unconnected sockets (file descriptors of the server).
#[tokio::test]
async fn a_run_cannot_hold_more_sockets_than_its_cap() {
    let inv = post(&["socket-hoard", "100"]).await;
    assert!(
        failure(&inv).contains("socket 8:") && failure(&inv).contains("new-socket-limit"),
        "{:?}",
        inv.outcome
    );
    assert!(
        inv.denials
            .iter()
            .any(|d| d.requested == "create-tcp-socket" && d.reason.contains("more than 8 sockets")),
        "{:?}",
        inv.denials
    );
    // Within the cap, sockets still work.
    let s = servers();
    assert_eq!(
        success(&post(&["tcp", &format!("127.0.0.1:{}", s.tcp)]).await),
        "pong"
    );
}

/// A listener with a TCP grant may bind the wildcard address (wasi's implicit bind before a
/// connect needs it), and wasi would then let it listen: a port open on every interface of the
/// server, and every accepted connection a descriptor outside the socket cap. Listening is
/// refused and recorded.
#[tokio::test]
async fn a_listener_cannot_listen_for_connections() {
    let inv = post(&["tcp-listen"]).await;
    let said = failure(&inv);
    assert!(
        said.starts_with("listen:") && said.contains("access-denied"),
        "{said}"
    );
    assert!(
        inv.denials
            .iter()
            .any(|d| d.requested == "tcp listen" && d.reason.contains("may not accept")),
        "{:?}",
        inv.denials
    );
}

/// Issue 16: one function with 20,000 locals live across a loop (a 490 KB component) took
/// Cranelift about 100 s to compile, at upload and at every load. It is refused before
/// compiling, with the reason.
#[test]
fn a_component_too_costly_to_compile_is_refused_before_compiling() {
    let manifest = "name = \"many-locals\"\nversion = \"0.1.0\"\nphases = [\"post-reset\"]\n\
         modes = [\"agentless\"]\nresource_types = [\"Linux\"]\n";
    let wasm = components::many_locals(20_000, 0);
    let started = std::time::Instant::now();
    let err = runtime()
        .load(&wasm, Manifest::parse(manifest).unwrap())
        .err()
        .expect("refused");
    assert!(matches!(err, Error::TooCostly(_)), "{err}");
    assert!(
        err.to_string()
            .contains("declares 20000 locals, more than 2000"),
        "{err}"
    );
    // Refused by reading the code, not by compiling it (the old code compiled for ~100 s).
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // Many functions, each under the per-function caps, add up: refused on their total cost.
    let err =
        lockstep_runtime::limits::check_code(&components::many_locals(1_900, 30)).unwrap_err();
    assert!(
        matches!(&err, Error::TooCostly(m) if m.contains("locals x body bytes add up to")),
        "{err}"
    );
    // A small one of the same shape loads.
    runtime()
        .load(
            &components::many_locals(50, 0),
            Manifest::parse(manifest).unwrap(),
        )
        .unwrap();
}

/// A post-reset event for delivery `id`, attempt `attempt`.
fn delivered(params: &[&str], id: &str, attempt: u32) -> ResetEvent {
    ResetEvent {
        delivery: Some(Delivery {
            id: id.into(),
            attempt,
        }),
        ..event(params)
    }
}

#[tokio::test]
async fn a_current_listener_is_told_its_delivery_and_may_ask_to_be_tried_again() {
    let p = probe();
    assert_eq!(p.contract(), Contract::V0_2);
    let inv = p
        .run(
            Phase::PostReset,
            &delivered(&["delivery"], "dlv_7", 3),
            ctx(),
        )
        .await;
    assert_eq!(success(&inv), "dlv_7#3");
    // A pre-reset run is no delivery.
    let inv = p.run(Phase::PreReset, &event(&["delivery"]), ctx()).await;
    assert_eq!(inv.outcome, Ok(HookOutcome::Proceed), "{inv:?}");
    assert_eq!(inv.logs[0].message, "none");
    let first = p
        .run(
            Phase::PostReset,
            &delivered(&["retry-until", "2"], "d", 1),
            ctx(),
        )
        .await;
    assert_eq!(
        first.outcome,
        Ok(HookOutcome::Retry("attempt 1 of 2".into()))
    );
    assert_eq!(first.verdict().0, "retry");
    let second = p
        .run(
            Phase::PostReset,
            &delivered(&["retry-until", "2"], "d", 2),
            ctx(),
        )
        .await;
    assert!(
        success(&second).starts_with("delivered at attempt 2; new password of "),
        "{second:?}"
    );
}

#[tokio::test]
async fn a_first_contract_component_loads_and_runs_beside_current_ones() {
    // The hostile suite's hand-written components are built for the 0.1.0 world.
    let manifest = "name = \"old\"\nversion = \"1.0.0\"\nphases = [\"pre-reset\", \"post-reset\"]\n\
                    modes = [\"agentless\"]\nresource_types = [\"Linux\"]\n";
    let module = components::CoreModule {
        fields: "",
        realloc: components::HONEST_REALLOC,
        hook: components::ANSWER_OK,
    };
    let old = runtime()
        .load(&module.component(), Manifest::parse(manifest).unwrap())
        .unwrap();
    assert_eq!(old.contract(), Contract::V0_1);
    // It is never told a delivery it has no field for; its answers mean what they meant.
    let inv = old
        .run(Phase::PreReset, &delivered(&[], "dlv_1", 1), ctx())
        .await;
    assert_eq!(inv.outcome, Ok(HookOutcome::Proceed), "{inv:?}");
    assert_eq!(probe().contract(), Contract::V0_2);
}

#[tokio::test]
async fn webhook_asks_for_another_try_when_the_receiver_is_down_and_names_the_delivery() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();
    let seen = tokio::spawn(async move {
        let mut requests = Vec::new();
        for answer in ["503 Service Unavailable", "404 Not Found"] {
            let (mut s, _) = receiver.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).await.unwrap();
            requests.push(String::from_utf8_lossy(&buf[..n]).to_string());
            let reply =
                format!("HTTP/1.1 {answer}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            s.write_all(reply.as_bytes()).await.unwrap();
        }
        requests
    });
    let manifest = include_str!("../../listeners/webhook/manifest.toml").replace(
        "https://hooks.example.com:443",
        &format!("http://127.0.0.1:{port}"),
    );
    let l = runtime()
        .load(&wasm("webhook"), Manifest::parse(&manifest).unwrap())
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/hook");
    let down = l
        .run(
            Phase::PostReset,
            &delivered(&[&url, "k"], "dlv_42", 2),
            ctx(),
        )
        .await;
    assert_eq!(
        down.outcome,
        Ok(HookOutcome::Retry(format!("{url} answered 503")))
    );
    let refused = l
        .run(
            Phase::PostReset,
            &delivered(&[&url, "k"], "dlv_42", 3),
            ctx(),
        )
        .await;
    assert_eq!(
        refused.outcome,
        Ok(HookOutcome::Failure(format!("{url} answered 404")))
    );
    let requests = seen.await.unwrap();
    for (r, attempt) in requests.iter().zip([2, 3]) {
        assert!(r.to_lowercase().contains("idempotency-key: dlv_42"), "{r}");
        let body = r.split_once("\r\n\r\n").unwrap().1;
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (json["delivery_id"].as_str(), json["attempt"].as_u64()),
            (Some("dlv_42"), Some(attempt))
        );
    }
    // Nobody listening at all: worth another try too.
    drop(requests);
    let inv = l
        .run(
            Phase::PostReset,
            &delivered(&[&url, "k"], "dlv_42", 4),
            ctx(),
        )
        .await;
    assert!(matches!(&inv.outcome, Ok(HookOutcome::Retry(_))), "{inv:?}");
}
