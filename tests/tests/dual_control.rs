//! Dual control against one insider with `manage-users`: no path gets a change approved by a
//! second account that the requester could act as. Each test is an attack that worked before
//! custody existed (tokens minted for another user, a privileged user created and approved
//! as, a second account laundering the approval, a role handing out more than its holder has).

mod common;

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
    let dave_id = api.get("/v1/me", &dave).await.json()["user_id"]
        .as_str()
        .unwrap()
        .to_string();
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
    let root_id = api.get("/v1/me", &root).await.json()["user_id"]
        .as_str()
        .unwrap()
        .to_string();
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
