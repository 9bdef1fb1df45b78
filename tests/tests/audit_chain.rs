//! The keyed audit chain against a database writer: someone who can edit the database but has
//! no master key. They edit an event and recompute the chain's SHA-256 hashes from there on, as
//! they could when the chain was unkeyed; they delete the newest events; they forge a
//! checkpoint. `lockstep audit verify` and `GET /v1/audit/verify` name what they did.

use lockstep_testkit as common;

use std::time::{Duration, Instant};

use common::{Api, Server, ServerOptions, lockstep};
use serde_json::{Value, json};
use sha2::Digest;
use sqlx::{Connection, SqliteConnection};

/// Some history: one event per resource created.
async fn make_history(server: &Server, n: usize) {
    let api = Api::new(server);
    for i in 0..n {
        let r = api
            .post(
                "/v1/resources",
                &server.root_token,
                json!({"name": format!("h{i}"), "resource_type": "Linux"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
}

async fn sqlite(server: &Server) -> SqliteConnection {
    let url = format!(
        "sqlite://{}",
        server.data_dir().join("lockstep.db").display()
    );
    SqliteConnection::connect(&url).await.unwrap()
}

/// What the attacker does: edits event `seq`, then recomputes every hash from it to the end the
/// way the unkeyed chain did (`SHA-256(prev_hash || "\n" || canonical JSON)`), so each event's
/// hash matches its content and each `prev_hash` its predecessor. With `downgrade` they also mark
/// the rewritten events as written with the unkeyed scheme (if the table says which scheme).
async fn rewrite_from(db: &mut SqliteConnection, seq: i64, downgrade: bool) {
    sqlx::query("UPDATE audit_events SET actor = 'user:mallory' WHERE seq = $1")
        .bind(seq)
        .execute(&mut *db)
        .await
        .unwrap();
    let has_scheme: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pragma_table_info('audit_events') WHERE name = 'chain_version'",
    )
    .fetch_one(&mut *db)
    .await
    .unwrap();
    let mut prev: String = sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = $1")
        .bind(seq - 1)
        .fetch_one(&mut *db)
        .await
        .unwrap();
    type Row = (
        i64,
        String,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT seq, id, at, actor, action, target, outcome, source_ip, detail \
         FROM audit_events WHERE seq >= $1 ORDER BY seq",
    )
    .bind(seq)
    .fetch_all(&mut *db)
    .await
    .unwrap();
    for (seq, id, at, actor, action, target, outcome, source_ip, detail) in rows {
        let body = json!({
            "seq": seq, "id": id, "at": at, "actor": actor, "action": action,
            "target": target, "outcome": outcome, "source_ip": source_ip,
            "detail": serde_json::from_str::<Value>(&detail).unwrap(),
        });
        let mut h = sha2::Sha256::new();
        h.update(prev.as_bytes());
        h.update(b"\n");
        h.update(lockstep_canonical_json::to_string(&body).as_bytes());
        let hash = hex::encode(h.finalize());
        sqlx::query("UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE seq = $3")
            .bind(&prev)
            .bind(&hash)
            .bind(seq)
            .execute(&mut *db)
            .await
            .unwrap();
        if downgrade && has_scheme > 0 {
            sqlx::query("UPDATE audit_events SET chain_version = 1, key_id = NULL WHERE seq = $1")
                .bind(seq)
                .execute(&mut *db)
                .await
                .unwrap();
        }
        prev = hash;
    }
}

fn verify_cli(server: &Server, extra: &[&str]) -> (Option<i32>, String, String) {
    let data = server.data_dir();
    let mut args = vec!["audit", "verify", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = lockstep(&args);
    (status.code(), stdout, stderr)
}

async fn verify_api(server: &Server) -> Value {
    let api = Api::new(server);
    let r = api.get("/v1/audit/verify", &server.root_token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

async fn event_id(db: &mut SqliteConnection, seq: i64) -> String {
    sqlx::query_scalar("SELECT id FROM audit_events WHERE seq = $1")
        .bind(seq)
        .fetch_one(db)
        .await
        .unwrap()
}

/// The attack that passed against the unkeyed chain: edit an event, recompute the SHA-256 chain
/// from it to the end. The keyed chain names the edited event, whether the attacker leaves the
/// rows marked as keyed or marks them as written with the unkeyed scheme.
#[tokio::test]
async fn an_edited_event_is_named_even_after_the_sha256_chain_is_recomputed() {
    for downgrade in [false, true] {
        let mut server = Server::start();
        make_history(&server, 6).await;
        let (code, stdout, stderr) = verify_cli(&server, &[]);
        assert_eq!(code, Some(0), "intact before the edit: {stdout}{stderr}");

        let mut db = sqlite(&server).await;
        let total: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM audit_events")
            .fetch_one(&mut db)
            .await
            .unwrap();
        let edited = total - 3;
        let id = event_id(&mut db, edited).await;
        rewrite_from(&mut db, edited, downgrade).await;
        db.close().await.unwrap();

        // The running server's API names it.
        let status = verify_api(&server).await;
        assert_eq!(status["intact"], false, "downgrade={downgrade}: {status}");
        assert_eq!(status["broken_at_seq"], edited, "{status}");
        assert_eq!(status["broken_at_id"], id.as_str(), "{status}");

        // So does the command line, with the server stopped.
        assert_eq!(server.stop().code(), Some(0));
        let (code, stdout, stderr) = verify_cli(&server, &[]);
        assert_eq!(code, Some(1), "downgrade={downgrade}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("seq {edited} (id {id})")),
            "downgrade={downgrade}: {stderr}"
        );
    }
}

/// `audit verify` checks a keyed chain, so it needs the server's master key: without it, or with
/// another one, it refuses to vouch for the chain (and never prints a key).
#[tokio::test]
async fn audit_verify_needs_the_servers_master_key() {
    let mut server = Server::start();
    make_history(&server, 2).await;
    assert_eq!(server.stop().code(), Some(0));
    let key = std::fs::read_to_string(server.data_dir().join("master.key")).unwrap();
    let moved = server.dir.path().join("elsewhere.key");
    std::fs::rename(server.data_dir().join("master.key"), &moved).unwrap();

    let (code, _, stderr) = verify_cli(&server, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("master key"), "{stderr}");

    let (code, stdout, stderr) =
        verify_cli(&server, &["--master-key-file", moved.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("audit chain intact"), "{stdout}");

    let other = server.dir.path().join("other.key");
    std::fs::write(&other, format!("{}\n", "11".repeat(32))).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (code, stdout, stderr) =
        verify_cli(&server, &["--master-key-file", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("does not have"), "{stderr}");
    assert!(!stderr.contains(key.trim()) && !stderr.contains(&"11".repeat(32)));
}

/// Collects syslog datagrams into a file until `done` says so.
async fn collect_syslog(
    sock: &tokio::net::UdpSocket,
    into: &std::path::Path,
    done: impl Fn(&str) -> bool,
) {
    let mut all = String::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&all) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no such syslog message came; got:\n{all}"))
            .unwrap();
        all.push_str(&String::from_utf8_lossy(&buf[..n]));
        all.push('\n');
    }
    std::fs::write(into, &all).unwrap();
}

/// The `seq=` of every checkpoint line in `text`.
fn checkpoint_seqs(text: &str) -> Vec<i64> {
    text.match_indices("lockstep-checkpoint v1 seq=")
        .filter_map(|(i, m)| {
            text[i + m.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Deleting the newest events leaves a chain that is intact in itself; the signed checkpoints
/// in the server's log and at the syslog collector remember how far it reached. The running
/// server remembers its last checkpoint, and `audit verify --checkpoints FILE` compares a log
/// with the database. A forged checkpoint line is refused.
#[tokio::test]
async fn deleting_the_newest_events_is_caught_by_a_signed_checkpoint() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut server = Server::start_with(ServerOptions {
        extra: vec![
            "--syslog".into(),
            format!("udp://{}", sock.local_addr().unwrap()),
            "--audit-checkpoint-events".into(),
            "4".into(),
        ],
        ..Default::default()
    });
    make_history(&server, 8).await;
    let mut db = sqlite(&server).await;
    let head: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM audit_events")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let syslog = server.dir.path().join("syslog.txt");
    collect_syslog(&sock, &syslog, |all| {
        checkpoint_seqs(all).iter().any(|s| *s >= head - 3)
    })
    .await;
    let last = *checkpoint_seqs(&std::fs::read_to_string(&syslog).unwrap())
        .iter()
        .max()
        .unwrap();
    assert!(
        checkpoint_seqs(&server.log_text()).contains(&last),
        "the server's own log has checkpoint {last} too"
    );
    assert_eq!(verify_api(&server).await["intact"], true);

    // The attacker deletes the newest events, down to below the last checkpoint.
    let keep = last - 2;
    sqlx::query("DELETE FROM audit_events WHERE seq > $1")
        .bind(keep)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();

    let status = verify_api(&server).await;
    assert_eq!(status["intact"], false, "{status}");
    assert!(
        status["problem"].as_str().unwrap().contains("deleted"),
        "{status}"
    );
    assert_eq!(server.stop().code(), Some(0));

    // The table alone still looks intact: that is what the checkpoints are for.
    let (code, stdout, stderr) = verify_cli(&server, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for witness in [syslog.clone(), server.log.clone()] {
        let (code, stdout, stderr) =
            verify_cli(&server, &["--checkpoints", witness.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{}: {stdout}{stderr}", witness.display());
        assert!(
            stderr.contains(&format!("seq {last}")) && stderr.contains("deleted"),
            "{stderr}"
        );
    }

    // A checkpoint line written by someone without the master key is refused.
    let forged = server.dir.path().join("forged.txt");
    let text = std::fs::read_to_string(&syslog).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("lockstep-checkpoint"))
        .unwrap();
    let start = line.find("lockstep-checkpoint").unwrap();
    let mac_at = line.rfind("mac=").unwrap();
    let forged_line = format!(
        "{} mac={}",
        &line[start..mac_at].trim_end(),
        "00".repeat(32)
    );
    std::fs::write(&forged, forged_line).unwrap();
    let (code, stdout, stderr) = verify_cli(&server, &["--checkpoints", forged.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("not signed"), "{stderr}");
}
