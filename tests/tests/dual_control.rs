//! Dual control against one insider with `manage-users`: no path gets a change approved by a
//! second account that the requester could act as. Each test is an attack that worked before
//! custody existed (tokens minted for another user, a privileged user created and approved
//! as, a second account laundering the approval, a role handing out more than its holder has).

use lockstep_testkit as common;

use common::{Api, Server, activate, lockstep, user_with_role};
use serde_json::{Value, json};

/// Asks for a publisher key change by `requester` naming `approver`.
async fn ask_key_change(api: &Api, requester: &str, approver: &str) -> common::Reply {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.key");
    let (status, _, stderr) = lockstep(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    let public = std::fs::read_to_string(format!("{}.pub", path.display())).unwrap();
    let body = json!({"name": format!("k-{approver}"), "public_key": public.trim(),
        "approver": approver});
    api.post("/v1/publisher-keys", requester, body).await
}

/// A publisher key change requested by `requester` with `approver` named; returns its id.
async fn request_key_change(api: &Api, requester: &str, approver: &str) -> String {
    let r = ask_key_change(api, requester, approver).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json()["id"].as_str().unwrap().to_string()
}

/// Naming an approver the requester controls is refused when the change is asked for.
async fn cannot_name(api: &Api, requester: &str, approver: &str) {
    let r = ask_key_change(api, requester, approver).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("not be independent"), "{}", r.text);
}

async fn approve(api: &Api, token: &str, change: &str) -> common::Reply {
    common::registry::approval(api, token, change, None).await
}

/// `creator` creates `name` through the API; returns (user id, activation code).
async fn create(api: &Api, creator: &str, name: &str, role: &str) -> (String, String) {
    let r = api
        .post("/v1/users", creator, json!({"name": name, "role": role}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let j: Value = r.json();
    (
        j["id"].as_str().unwrap().to_string(),
        j["activation"]["activation_code"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

fn refused_as_not_independent(r: &common::Reply) {
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.text.contains("not be independent") || r.text.contains("after this change"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn an_admin_cannot_approve_as_a_user_they_created_or_credentialed() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    // alice: an independent administrator (bootstrapped on the host), role admin, which holds
    // manage-users.
    let alice = user_with_role(&api, &root, "alice", "admin").await;

    // 1. Minting a token for another user is no longer a thing.
    let (bob_id, bob_code) = create(&api, &alice, "bob", "admin").await;
    let minted = api
        .post(&format!("/v1/users/{bob_id}/tokens"), &alice, json!({}))
        .await;
    assert!(
        matches!(minted.status, 404 | 405),
        "alice minted a token for bob: {}",
        minted.text
    );

    // 2. alice saw bob's activation code, so she can be bob: she cannot name bob as her
    //    approver, and bob cannot decide a change of hers assigned to him before he existed.
    let bob = activate(&api, "bob", &bob_code).await;
    cannot_name(&api, &alice, "bob").await;
    let ann = user_with_role(&api, &root, "ann", "admin").await;
    let change = request_key_change(&api, &alice, "ann").await;
    let r = approve(&api, &bob, &change).await;
    assert_eq!(
        r.status, 403,
        "only the designated approver decides: {}",
        r.text
    );
    let _ = ann;

    // 3. Re-credentialing an independent admin (dave) makes alice dave's custodian too.
    let dave = user_with_role(&api, &root, "dave", "admin").await;
    let dave_id = user_id(&api, &dave).await;
    let change2 = request_key_change(&api, &alice, "dave").await;
    let r = api
        .post(
            &format!("/v1/users/{dave_id}/activation"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        api.get("/v1/me", &dave).await.status,
        401,
        "dave's old tokens are revoked"
    );
    let code = r.json()["activation_code"].as_str().unwrap().to_string();
    let dave_by_alice = activate(&api, "dave", &code).await;
    refused_as_not_independent(&approve(&api, &dave_by_alice, &change2).await);
    // An activation code is spent once.
    let again = api
        .call(
            "POST",
            "/v1/activate",
            None,
            Some(json!({"name": "dave", "activation_code": code})),
        )
        .await;
    assert_eq!(again.status, 401, "{}", again.text);

    // Every refusal is audited; the changes are still pending.
    let audit = api
        .get(
            "/v1/audit?action=change-request.approve&outcome=denied",
            &root,
        )
        .await;
    assert!(
        audit.text.contains(&change) && audit.text.contains(&change2),
        "{}",
        audit.text
    );
    let cr = api
        .get(&format!("/v1/change-requests/{change}"), &root)
        .await;
    assert_eq!(cr.json()["status"], "pending", "{}", cr.text);
}

#[tokio::test]
async fn a_second_account_of_the_same_person_does_not_launder_an_approval() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let alice = user_with_role(&api, &root, "alice", "admin").await;
    // alice makes two accounts; as one she requests, as the other she approves.
    let (_, carol_code) = create(&api, &alice, "carol", "admin").await;
    let carol = activate(&api, "carol", &carol_code).await;
    cannot_name(&api, &carol, "alice").await;
    // erin is made after carol asked for a change naming her: the name was free then, but
    // erin's account is younger than the request and alice controls both.
    let change = {
        let (_, code) = create(&api, &alice, "erin", "admin").await;
        cannot_name(&api, &carol, "erin").await;
        code
    };
    let erin = activate(&api, "erin", &change).await;
    // Decided at approval time too: a request named erin while she was independent of carol
    // (created by root), then alice re-credentials erin.
    let (_, gwen_code) = create(&api, &root, "gwen", "admin").await;
    let gwen_by_root = activate(&api, "gwen", &gwen_code).await;
    let _ = gwen_by_root;
    let change = request_key_change(&api, &carol, "gwen").await;
    let gwen_id = api.get("/v1/users?limit=100", &root).await.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "gwen")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api
        .post(
            &format!("/v1/users/{gwen_id}/activation"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let code = r.json()["activation_code"].as_str().unwrap().to_string();
    let gwen_by_alice = activate(&api, "gwen", &code).await;
    refused_as_not_independent(&approve(&api, &gwen_by_alice, &change).await);
    let _ = erin;

    // An independent approver decides it.
    let frank = user_with_role(&api, &root, "frank", "admin").await;
    let change2 = request_key_change(&api, &carol, "frank").await;
    let r = approve(&api, &frank, &change2).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn nobody_hands_out_a_role_with_privileges_they_do_not_hold() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let r = api
        .post(
            "/v1/roles",
            &root,
            json!({"name": "user-managers", "description": "only users",
                "privileges": ["manage-users"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mallory = user_with_role(&api, &root, "mallory", "user-managers").await;
    for role in ["privileged-admin", "admin", "password-admin"] {
        let r = api
            .post(
                "/v1/users",
                &mallory,
                json!({"name": format!("m-{role}"), "role": role}),
            )
            .await;
        assert_eq!(r.status, 403, "{role}: {}", r.text);
        assert!(
            r.text.contains("holds privileges your role does not"),
            "{}",
            r.text
        );
    }
    // A role with only what mallory holds is fine to give.
    let r = api
        .post(
            "/v1/users",
            &mallory,
            json!({"name": "m-peer", "role": "user-managers"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Nor can a role holder widen a role (manage-roles is needed, and then only within what
    // the caller holds).
    let admin = user_with_role(&api, &root, "ann", "admin").await;
    let me = api.get("/v1/me", &admin).await.json();
    if me["privileges"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "manage-roles")
    {
        let r = api
            .post(
                "/v1/roles",
                &admin,
                json!({"name": "everything", "description": "",
                    "privileges": ["retrieve-passwords", "approve-listeners", "manage-users"]}),
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.text);
    }
    // Re-credentialing a more privileged account is refused too.
    let root_id = user_id(&api, &root).await;
    let r = api
        .post(
            &format!("/v1/users/{root_id}/activation"),
            &mallory,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        api.get("/v1/me", &root).await.status,
        200,
        "root keeps its token"
    );
}

/// The SHA-256 (hex) a token or activation code is looked up by.
fn sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Runs one statement as the database writer and checks that it changed something.
async fn write(db: &mut sqlx::AnyConnection, sql: &'static str, binds: &[&str]) {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let done = q.execute(&mut *db).await.expect(sql);
    assert!(done.rows_affected() > 0, "{sql} changed nothing");
}

async fn user_id(api: &Api, token: &str) -> String {
    let r = api.get("/v1/me", token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["user_id"].as_str().unwrap().to_string()
}

fn refused_as_edited(r: &common::Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text);
    assert!(
        r.text.contains("integrity") || r.text.contains("unknown"),
        "{what}: {}",
        r.text
    );
}

/// A database writer without the master key (alice, an administrator who can also write the
/// database) tries every row that makes a person who they are: a token for the approver, her
/// own token moved to him, her puppet's custody deleted, her role raised, a revoked token
/// brought back, an activation code planted, and an identity restored from a backup. Each is
/// refused, audited, and the change she asked for stays pending.
#[tokio::test]
async fn a_database_writer_cannot_sign_in_or_approve_as_someone_else() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let alice = user_with_role(&api, &root, "alice", "admin").await;
    let bob = user_with_role(&api, &root, "bob", "admin").await;
    let bob_id = user_id(&api, &bob).await;
    let alice_id = user_id(&api, &alice).await;
    let change = request_key_change(&api, &alice, "bob").await;
    let mut db = common::database_writer(&server.sqlite_url()).await;

    // 1. A token row for bob whose text alice chose.
    let forged = "lst_forged-by-the-database-writer-000000000000000";
    write(
        &mut db,
        "INSERT INTO api_tokens (id, user_id, name, token_sha256, created_at, expires_at) \
         VALUES ('tok_forged', $1, 'x', $2, '2026-01-01T00:00:00Z', '2099-01-01T00:00:00Z')",
        &[&bob_id, &sha256(forged)],
    )
    .await;
    refused_as_edited(&approve(&api, forged, &change).await, "a planted token");
    // bob's own token is refused too while his rows are not the sealed ones: the edit shows.
    refused_as_edited(&api.get("/v1/me", &bob).await, "bob beside a planted token");
    write(
        &mut db,
        "DELETE FROM api_tokens WHERE id = 'tok_forged'",
        &[],
    )
    .await;
    assert_eq!(
        api.get("/v1/me", &bob).await.status,
        200,
        "undone, bob is bob"
    );

    // 2. alice's own token moved to bob.
    let moved = api.get("/v1/me", &alice).await.json()["token_id"]
        .as_str()
        .unwrap()
        .to_string();
    write(
        &mut db,
        "UPDATE api_tokens SET user_id = $1 WHERE id = $2",
        &[&bob_id, &moved],
    )
    .await;
    refused_as_edited(&approve(&api, &alice, &change).await, "a moved token");
    write(
        &mut db,
        "UPDATE api_tokens SET user_id = $1 WHERE id = $2",
        &[&alice_id, &moved],
    )
    .await;

    // 3. A puppet whose custody row is deleted so that it looks independent of alice.
    let (carol_id, carol_code) = create(&api, &alice, "carol", "admin").await;
    let carol = activate(&api, "carol", &carol_code).await;
    write(
        &mut db,
        "DELETE FROM user_custody WHERE user_name = 'carol' AND custodian = 'alice'",
        &[],
    )
    .await;
    refused_as_edited(&api.get("/v1/me", &carol).await, "deleted custody");
    let named = ask_key_change(&api, &alice, "carol").await;
    assert_eq!(named.status, 422, "{}", named.text);
    assert!(named.text.contains("integrity"), "{}", named.text);
    // Nor does an API change to the edited account (a token revoked, a new activation code)
    // seal the edit in: it is refused, and the account stays refused.
    let tokens = api
        .get(&format!("/v1/users/{carol_id}/tokens"), &alice)
        .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    let carol_token = tokens.json()[0]["id"].as_str().unwrap().to_string();
    let revoke = api
        .call(
            "DELETE",
            &format!("/v1/tokens/{carol_token}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(revoke.status, 409, "{}", revoke.text);
    assert!(revoke.text.contains("integrity"), "{}", revoke.text);
    let reissue = api
        .post(
            &format!("/v1/users/{carol_id}/activation"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(reissue.status, 409, "{}", reissue.text);
    refused_as_edited(&api.get("/v1/me", &carol).await, "still edited");

    // 4. Her own role raised.
    write(
        &mut db,
        "UPDATE users SET role = 'privileged-admin' WHERE name = 'alice'",
        &[],
    )
    .await;
    refused_as_edited(&api.get("/v1/me", &alice).await, "a raised role");
    write(
        &mut db,
        "UPDATE users SET role = 'admin' WHERE name = 'alice'",
        &[],
    )
    .await;
    assert_eq!(api.get("/v1/me", &alice).await.status, 200);

    // 5. A revoked token brought back.
    let spare = api.post("/v1/tokens", &alice, json!({})).await;
    assert_eq!(spare.status, 201, "{}", spare.text);
    let (spare_id, spare) = (
        spare.json()["id"].as_str().unwrap().to_string(),
        spare.json()["token"].as_str().unwrap().to_string(),
    );
    let revoked = api
        .call(
            "DELETE",
            &format!("/v1/tokens/{spare_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    write(
        &mut db,
        "UPDATE api_tokens SET revoked_at = NULL WHERE id = $1",
        &[&spare_id],
    )
    .await;
    refused_as_edited(&api.get("/v1/me", &spare).await, "an unrevoked token");
    write(
        &mut db,
        "UPDATE api_tokens SET revoked_at = '2026-01-01T00:00:00Z' WHERE id = $1",
        &[&spare_id],
    )
    .await;

    // 6. An activation code planted for bob.
    let code = "lsa_planted-by-the-database-writer-00000000000000";
    write(
        &mut db,
        "INSERT INTO user_activations (user_id, code_sha256, issued_by, expires_at) \
         VALUES ($1, $2, 'cli', '2099-01-01T00:00:00Z')",
        &[&bob_id, &sha256(code)],
    )
    .await;
    let planted = api
        .call(
            "POST",
            "/v1/activate",
            None,
            Some(json!({"name": "bob", "activation_code": code})),
        )
        .await;
    assert_eq!(planted.status, 401, "{}", planted.text);
    write(
        &mut db,
        "DELETE FROM user_activations WHERE user_id = $1",
        &[&bob_id],
    )
    .await;
    assert_eq!(api.get("/v1/me", &bob).await.status, 200);

    // 7. An identity restored from a backup: dave's rows and seal exactly as they were before
    //    alice re-credentialed him. The seal verifies; the ledger pins the newer one.
    let dave = user_with_role(&api, &root, "dave", "admin").await;
    let dave_id = user_id(&api, &dave).await;
    let backup: (String, String) =
        sqlx::query_as("SELECT identity_seal, custody_changed_at FROM users WHERE id = $1")
            .bind(&dave_id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    let r = api
        .post(
            &format!("/v1/users/{dave_id}/activation"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    write(
        &mut db,
        "UPDATE users SET identity_seal = $2, custody_changed_at = $3 WHERE id = $1",
        &[&dave_id, &backup.0, &backup.1],
    )
    .await;
    write(
        &mut db,
        "DELETE FROM user_custody WHERE user_name = 'dave' AND custodian = 'alice'",
        &[],
    )
    .await;
    write(
        &mut db,
        "DELETE FROM user_activations WHERE user_id = $1",
        &[&dave_id],
    )
    .await;
    write(
        &mut db,
        "UPDATE api_tokens SET revoked_at = NULL WHERE user_id = $1",
        &[&dave_id],
    )
    .await;
    let restored = api.get("/v1/me", &dave).await;
    refused_as_edited(&restored, "a restored identity");

    // The change is still pending, bob (untouched now) may still decide it, and every refused
    // identity was audited.
    let cr = api
        .get(&format!("/v1/change-requests/{change}"), &root)
        .await;
    assert_eq!(cr.json()["status"], "pending", "{}", cr.text);
    let audit = api.get("/v1/audit?action=identity.integrity", &root).await;
    for who in ["bob", "alice", "carol", "dave"] {
        assert!(audit.text.contains(who), "{who}: {}", audit.text);
    }
    assert!(
        server.log_text().contains("ALERT: identity refused"),
        "the refusals are logged as alerts"
    );
    let r = approve(&api, &bob, &change).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// An upgrade seals the users that exist, in the process that applies the migration (here from
/// before the registry ledger and identity seals: both migrations run at the restart). After
/// it, an unsealed user is an inserted one: a later restart does not seal it.
#[tokio::test]
async fn only_the_upgrade_seals_existing_users() {
    let mut server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let alice = user_with_role(&api, &root, "alice", "admin").await;
    let url = server.sqlite_url();
    let mut db = common::database_writer(&url).await;
    for sql in [
        "DELETE FROM audit_events WHERE action = 'registry.generation'",
        "DROP TABLE registry_ledger",
        "DROP INDEX audit_events_action",
        "DROP INDEX audit_events_target",
        "ALTER TABLE change_requests DROP COLUMN public_key",
        "ALTER TABLE users DROP COLUMN identity_seal",
        "DELETE FROM _sqlx_migrations WHERE version IN (16, 17)",
    ] {
        sqlx::query(sql).execute(&mut db).await.expect(sql);
    }
    assert_eq!(server.stop().code(), Some(0));
    server.restart();
    let api = Api::new(&server);
    for token in [&root, &alice] {
        let r = api.get("/v1/me", token).await;
        assert_eq!(r.status, 200, "sealed by the upgrade: {}", r.text);
    }
    let unsealed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE identity_seal IS NULL")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(unsealed, 0);

    // Later, a user whose seal is gone is not sealed again by a restart.
    write(
        &mut db,
        "UPDATE users SET identity_seal = NULL WHERE name = 'alice'",
        &[],
    )
    .await;
    assert_eq!(server.stop().code(), Some(0));
    server.restart();
    let api = Api::new(&server);
    refused_as_edited(&api.get("/v1/me", &alice).await, "an unsealed user");
    assert_eq!(api.get("/v1/me", &root).await.status, 200);
    assert!(server.log_text().contains("no identity seal"));
}
