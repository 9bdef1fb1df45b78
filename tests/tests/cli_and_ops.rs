//! The command line and the process: `audit verify` against edited databases (SQLite and
//! PostgreSQL), HTTPS by default with a pinned-able fingerprint, `--dev` only on loopback,
//! graceful shutdown, syslog forwarding, and the PostgreSQL server end to end.

use lockstep_testkit as common;

use std::time::Duration;

use common::{
    Api, Server, ServerOptions, admin_create, lockstep, postgres_database, resource_with_account,
};
use serde_json::json;
use sqlx::Connection;

async fn make_some_history(server: &Server) {
    let api = Api::new(server);
    let root = &server.root_token;
    for i in 0..3 {
        let r = api
            .post(
                "/v1/resources",
                root,
                json!({"name": format!("h{i}"), "resource_type": "Linux"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
}

fn assert_verify(store_args: &[&str], intact: bool, needle: &str) {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(store_args);
    let (status, stdout, stderr) = lockstep(&args);
    if intact {
        assert!(
            status.success(),
            "expected an intact chain: {stdout}{stderr}"
        );
        assert!(stdout.contains("audit chain intact"), "{stdout}");
    } else {
        assert_eq!(
            status.code(),
            Some(1),
            "expected a broken chain: {stdout}{stderr}"
        );
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
}

#[tokio::test]
async fn audit_verify_names_the_edited_deleted_or_reordered_sqlite_row() {
    let mut server = Server::start();
    make_some_history(&server).await;
    assert_eq!(server.stop().code(), Some(0));
    // A clean stop logs no error (the reset workers used to report the closed pool).
    let log = server.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let data = server.data_dir();
    let data_s = data.to_str().unwrap();
    assert_verify(&["--data-dir", data_s], true, "");

    let url = format!("sqlite://{}", data.join("lockstep.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let id3: String = sqlx::query_scalar("SELECT id FROM audit_events WHERE seq = 3")
        .fetch_one(&mut db)
        .await
        .unwrap();

    // Edited: one field of event 3.
    sqlx::query("UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 3")
        .execute(&mut db)
        .await
        .unwrap();
    assert_verify(
        &["--data-dir", data_s],
        false,
        &format!("seq 3 (id {id3}): its content does not match its hash"),
    );
    sqlx::query("UPDATE audit_events SET actor = 'cli:x' WHERE seq = 3")
        .execute(&mut db)
        .await
        .unwrap();

    // Deleted: event 3 removed, the break is reported at the first event after the gap.
    let mut db2 = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM audit_events WHERE seq = 3")
        .execute(&mut db2)
        .await
        .unwrap();
    assert_verify(
        &["--data-dir", data_s],
        false,
        "expected seq 3 next but found 4",
    );

    // Reordered: two events swap positions (their seq numbers are exchanged).
    sqlx::query("UPDATE audit_events SET seq = -5 WHERE seq = 5")
        .execute(&mut db2)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET seq = 5 WHERE seq = 4")
        .execute(&mut db2)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET seq = 4 WHERE seq = -5")
        .execute(&mut db2)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET seq = 3 WHERE seq = 4")
        .execute(&mut db2)
        .await
        .unwrap();
    assert_verify(&["--data-dir", data_s], false, "seq 3 (id");
    assert_verify(&["--data-dir", data_s], false, "prev_hash does not match");

    // A missing database is an error, not an empty chain.
    let (status, _, stderr) = lockstep(&["audit", "verify", "--data-dir", "/nonexistent/lockstep"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("cannot open database"), "{stderr}");
}

#[tokio::test]
async fn postgres_end_to_end_and_audit_verify() {
    let Some(pg) = postgres_database().await else {
        return;
    };
    let url = pg.url();
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(url.to_string()),
        ..Default::default()
    });
    make_some_history(&server).await;
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let res = api.get("/v1/resources", &root).await.json();
    assert_eq!(res["items"].as_array().unwrap().len(), 3);
    let rid = res["items"][0]["id"].as_str().unwrap().to_string();
    let acc = api
        .post(
            &format!("/v1/resources/{rid}/accounts"),
            &root,
            json!({"login_name": "root", "password": "pg-Sentinel-9"}),
        )
        .await;
    assert_eq!(acc.status, 201, "{}", acc.text);
    assert_eq!(server.stop().code(), Some(0));

    // The server's key is in its data directory; `audit verify` needs it.
    let key = server.data_dir().join("master.key");
    let key = key.to_str().unwrap();
    assert_verify(&["--database-url", url, "--master-key-file", key], true, "");
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    let plain: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM accounts WHERE position(convert_to('pg-Sentinel-9', 'UTF8') in password_ciphertext) > 0",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(plain, 0, "the password is sealed at rest");
    let id2: String = sqlx::query_scalar("SELECT id FROM audit_events WHERE seq = 2")
        .fetch_one(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET detail = '{}' WHERE seq = 2")
        .execute(&mut db)
        .await
        .unwrap();
    assert_verify(
        &["--database-url", url, "--master-key-file", key],
        false,
        &format!("seq 2 (id {id2})"),
    );
    db.close().await.unwrap();
}

#[tokio::test]
async fn https_by_default_with_a_stable_fingerprint() {
    let mut server = Server::start_with(ServerOptions {
        dev: false,
        ..Default::default()
    });
    let tls = server.data_dir().join("tls");
    let fingerprint = std::fs::read_to_string(tls.join("fingerprint"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(fingerprint.len(), 64);
    assert!(
        server.log_text().contains(&fingerprint),
        "the fingerprint is printed at start"
    );
    let pem = std::fs::read(tls.join("cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let r = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP to the HTTPS port does not get an answer with data.
    let plain = server.base.replace("https://", "http://");
    let p = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(p.map(|r| r.status() != 200).unwrap_or(true));
    assert_eq!(server.stop().code(), Some(0));

    // A restart keeps the certificate.
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(tls.join("key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    let (status, _, stderr) = {
        let data = server.data_dir();
        let out = std::process::Command::new(common::lockstep_bin())
            .args([
                "serve",
                "--dev",
                "--listen",
                "0.0.0.0:0",
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(status.code(), Some(2), "--dev off loopback is refused");
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[tokio::test]
async fn master_key_is_created_0600_and_another_key_is_refused_at_start() {
    let mut server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let key = server.data_dir().join("master.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let (_, aid) = resource_with_account(&api, &root, "k", "Generic", "a", "Key-Test-1").await;
    server.stop();

    // Same database, another master key (given through the environment): the audit chain is
    // keyed with the first key, so the server refuses to start rather than write events its
    // verifiers cannot check. It names both keys by id, never by value.
    let other = "11".repeat(32);
    let data = server.data_dir();
    let out = std::process::Command::new(common::lockstep_bin())
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env("LOCKSTEP_MASTER_KEY", &other)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("keyed with master key"), "{text}");
    assert!(!text.contains(&other), "the master key is never printed");
    let right = std::fs::read_to_string(&key).unwrap();
    assert!(!text.contains(right.trim()), "nor the right one");

    // With its own key the server starts again and the password opens.
    server.restart();
    let api = Api::new(&server);
    let r = api
        .post(
            &format!("/v1/accounts/{aid}/password/retrieve"),
            &root,
            json!({"reason": "right key test"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["password"], "Key-Test-1");
}

#[tokio::test]
async fn audit_events_are_forwarded_to_syslog() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = format!("udp://{}", sock.local_addr().unwrap());
    let server = Server::start_with(ServerOptions {
        extra: vec!["--syslog".into(), target],
        ..Default::default()
    });
    let api = Api::new(&server);
    let r = api
        .post(
            "/v1/resources",
            &server.root_token,
            json!({"name": "sys1", "resource_type": "Linux"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let mut buf = vec![0u8; 8192];
    let msg = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
            .await
            .expect("a syslog datagram")
            .unwrap();
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.contains("resource.create") {
            break m;
        }
    };
    assert!(msg.starts_with("<85>1 "), "{msg}");
    assert!(msg.contains("[lockstep@32473 "), "{msg}");
    assert!(msg.contains("actor=\"user:root\""), "{msg}");
}

#[test]
fn admin_create_refuses_unknown_roles_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let token = admin_create(&["--data-dir", d], "ops", "admin");
    assert!(token.starts_with("lst_"));
    let (status, _, stderr) =
        lockstep(&["admin", "create", "ops", "--role", "admin", "--data-dir", d]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("already exists"), "{stderr}");
    let (status, _, stderr) =
        lockstep(&["admin", "create", "x", "--role", "wizard", "--data-dir", d]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("no role named 'wizard'"), "{stderr}");
}

#[tokio::test]
async fn a_config_file_sets_what_flags_do_and_typos_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("lockstep.toml");
    let toml = format!(
        "data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\ndev = true\nmax_body_bytes = 2048\n",
        data.display()
    );
    std::fs::write(&config, toml).unwrap();
    let token = admin_create(
        &["--data-dir", data.to_str().unwrap()],
        "root",
        "privileged-admin",
    );
    let log = dir.path().join("server.log");
    let args: Vec<String> = ["serve", "--config", config.to_str().unwrap()]
        .map(String::from)
        .to_vec();
    let (mut child, base) = common::spawn_serve(&args, &[], &log, true);
    let big = json!({"name": "x".repeat(4000), "resource_type": "Linux"});
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/resources"))
        .bearer_auth(&token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        413,
        "max_body_bytes from the config file applies"
    );
    let small = json!({"name": "cfg", "resource_type": "Linux"});
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/resources"))
        .bearer_auth(&token)
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "data_dir from the config file applies (the token was made there)"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());

    std::fs::write(&config, "listen = \"127.0.0.1:0\"\ndevv = true\n").unwrap();
    let (status, _, stderr) = lockstep(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("unknown field `devv`"), "{stderr}");

    // A lease shorter than a renewal may wait on a busy database is refused, except on a --dev
    // (test) server.
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\nreset_lease_secs = 5\n", data.display()),
    )
    .unwrap();
    let (status, _, stderr) = lockstep(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!status.success());
    assert!(
        stderr.contains("--reset-lease-secs must be between 15 and 600"),
        "{stderr}"
    );
}

#[tokio::test]
async fn audit_events_are_forwarded_to_syslog_over_tcp() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("tcp://{}", listener.local_addr().unwrap());
    let server = Server::start_with(ServerOptions {
        extra: vec!["--syslog".into(), target],
        ..Default::default()
    });
    let api = Api::new(&server);
    let r = api
        .post(
            "/v1/resources",
            &server.root_token,
            json!({"name": "tcp1", "resource_type": "Linux"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut received = String::new();
    let mut buf = vec![0u8; 8192];
    while !received.contains("resource.create") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "collector connection closed early");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // RFC 6587 octet counting: "LEN <85>1 ..." where LEN is the byte length of the message.
    let (len, rest) = received.split_once(' ').unwrap();
    let len: usize = len.parse().unwrap();
    assert!(rest.starts_with("<85>1 "), "{rest}");
    assert!(rest.len() >= len);
}
