//! No password leaks out of a reset: with sentinel passwords (an admin's, a given new one, and
//! the generated ones), scan every process's argv and environment while the resets run, the
//! server's log, the database files and the API's answers (authorized retrievals aside).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::sshd::{SshTarget, TargetUser};
use common::{Api, Server};
use serde_json::json;

const ADMIN_PW: &str = "Admin-Sentinel-4711!";
const GIVEN_PW: &str = "Given-Sentinel-0815!";

/// Reads every process's cmdline and environ, returning the places a sentinel appears.
fn scan_proc(sentinels: &[String]) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return hits;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let Ok(bytes) = std::fs::read(entry.path().join(file)) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            for s in sentinels {
                if text.contains(s.as_str()) {
                    hits.push(format!("/proc/{}/{file}", name.to_string_lossy()));
                }
            }
        }
    }
    hits
}

#[tokio::test]
async fn no_password_appears_in_argv_environ_logs_database_or_api_answers() {
    let users: Vec<TargetUser> = std::iter::once(TargetUser::sudoer("admin", ADMIN_PW))
        .chain((1..=8).map(|i| TargetUser::new(&format!("s{i:02}"), "Start-Pw-1")))
        .collect();
    let t = SshTarget::start("Root-Pw-1", &users);
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let r = api
        .post(
            "/v1/resources",
            &root,
            json!({"name": "leak0", "resource_type": "Linux", "ip_address": t.ip, "ssh_port": t.port}),
        )
        .await;
    let rid = r.json()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/resources/{rid}/accounts");
    let admin = api
        .post(
            &path,
            &root,
            json!({"login_name": "admin", "password": ADMIN_PW}),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api
        .call(
            "PUT",
            &format!("/v1/resources/{rid}/reset-settings"),
            Some(&root),
            Some(json!({"admin_account_id": admin, "admin_kind": "sudo"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut accounts = Vec::new();
    for i in 1..=8 {
        let r = api
            .post(
                &path,
                &root,
                json!({"login_name": format!("s{i:02}"), "password": "Start-Pw-1"}),
            )
            .await;
        accounts.push(r.json()["id"].as_str().unwrap().to_string());
    }

    // Snapshot /proc continuously while the resets run. First, proof that the scanner sees a
    // password when one is in a process's argv.
    let known = vec![ADMIN_PW.to_string(), GIVEN_PW.to_string()];
    let mut leaky = std::process::Command::new("sh")
        .args(["-c", "sleep 5", GIVEN_PW])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let seen = scan_proc(&known);
    leaky.kill().unwrap();
    leaky.wait().unwrap();
    assert!(
        seen.iter().any(|h| h.ends_with("/cmdline")),
        "the scanner must see a planted password: {seen:?}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (stop, known) = (stop.clone(), known.clone());
        std::thread::spawn(move || {
            let mut hits = Vec::new();
            let mut snapshots = 0;
            while !stop.load(Ordering::Relaxed) {
                hits.extend(scan_proc(&known));
                snapshots += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (hits, snapshots)
        })
    };
    let mut answers = String::new();
    let one = api
        .post(
            &format!("/v1/accounts/{}/reset", accounts[0]),
            &root,
            json!({"reason": "given password", "password": GIVEN_PW}),
        )
        .await;
    assert_eq!(one.status, 202, "{}", one.text);
    answers.push_str(&one.text);
    let bulk = api
        .post(
            "/v1/reset-jobs",
            &root,
            json!({"accounts": &accounts[1..], "reason": "generated passwords"}),
        )
        .await;
    assert_eq!(bulk.status, 202, "{}", bulk.text);
    answers.push_str(&bulk.text);
    for id in [&one, &bulk].map(|r| r.json()["id"].as_str().unwrap().to_string()) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let j = api.get(&format!("/v1/reset-jobs/{id}"), &root).await;
            answers.push_str(&j.text);
            if j.json()["status"] == "finished" {
                assert_eq!(
                    j.json()["progress"]["succeeded"],
                    j.json()["progress"]["total"],
                    "{}",
                    j.text
                );
                break;
            }
            assert!(Instant::now() < deadline, "{}", j.text);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (hits, snapshots) = scanner.join().unwrap();
    assert!(snapshots > 10, "the scanner ran ({snapshots} snapshots)");
    assert!(hits.is_empty(), "passwords in argv or environ: {hits:?}");

    // Everything the API says outside an authorized retrieval, the log and the database files.
    for p in [
        "/v1/audit?limit=500",
        "/v1/resources",
        &format!("/v1/resources/{rid}/accounts"),
    ] {
        answers.push_str(&api.get(p, &root).await.text);
    }
    let mut sentinels = known;
    for acc in &accounts {
        let r = api
            .post(
                &format!("/v1/accounts/{acc}/password/retrieve"),
                &root,
                json!({"reason": "leak scan"}),
            )
            .await;
        sentinels.push(r.json()["password"].as_str().unwrap().to_string());
    }
    assert_eq!(sentinels[2], GIVEN_PW, "the given password was applied");
    let log = server.log_text();
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
    for s in &sentinels {
        assert!(
            !answers.contains(s.as_str()),
            "an API answer holds a password"
        );
        assert!(!log.contains(s.as_str()), "the log holds a password");
        assert!(
            !db.contains(s.as_str()),
            "the database holds a password in clear"
        );
    }
}
