//! The role × endpoint authorization matrix, through real HTTP against a real server process:
//! 401 without (or with a bad) token, 403 without the privilege (and audited), allowed with it.

use lockstep_testkit as common;

use common::{Api, Server, resource_with_account, user_with_role};
use serde_json::json;

/// (method, path, body, privilege needed). `{rid}` and `{aid}` are filled in.
fn endpoints() -> Vec<(
    &'static str,
    &'static str,
    Option<serde_json::Value>,
    &'static str,
)> {
    vec![
        ("GET", "/v1/users", None, "manage-users"),
        (
            "POST",
            "/v1/users",
            Some(json!({"name": "u-{n}", "role": "auditor"})),
            "manage-users",
        ),
        (
            "POST",
            "/v1/roles",
            Some(json!({"name": "r-{n}", "privileges": ["read-audit"]})),
            "manage-roles",
        ),
        ("GET", "/v1/resource-types", None, "view-resources"),
        ("GET", "/v1/resource-types/Linux", None, "view-resources"),
        (
            "POST",
            "/v1/resource-types",
            Some(json!({"name": "T{n}", "reset_method": "local"})),
            "manage-resources",
        ),
        (
            // {k}: one ssh type per caller, so each proposal is the only pending one.
            "PUT",
            "/v1/resource-types/S{k}/reset-command",
            Some(
                json!({"reset_command": {"program": "/usr/sbin/chpasswd", "args": [],
                "stdin": "{login}:{password}\n"}, "approver": "root"}),
            ),
            "manage-resources",
        ),
        ("GET", "/v1/resources", None, "view-resources"),
        (
            "POST",
            "/v1/resources",
            Some(json!({"name": "host-{n}", "resource_type": "Linux"})),
            "manage-resources",
        ),
        ("GET", "/v1/resources/{rid}", None, "view-resources"),
        (
            "PATCH",
            "/v1/resources/{rid}",
            Some(json!({"location": "rack {n}"})),
            "manage-resources",
        ),
        (
            "GET",
            "/v1/resources/{rid}/accounts",
            None,
            "view-resources",
        ),
        (
            "POST",
            "/v1/resources/{rid}/accounts",
            Some(json!({"login_name": "svc{n}", "password": "pw-{n}-Aa1!"})),
            "manage-resources",
        ),
        ("GET", "/v1/accounts/{aid}", None, "view-resources"),
        ("GET", "/v1/attention", None, "view-resources"),
        ("GET", "/v1/deliveries", None, "view-resources"),
        (
            "GET",
            "/v1/accounts?login_name=root",
            None,
            "view-resources",
        ),
        (
            "PATCH",
            "/v1/accounts/{aid}",
            Some(json!({"description": "d{n}"})),
            "manage-resources",
        ),
        (
            "POST",
            "/v1/accounts/{aid}/password/retrieve",
            Some(json!({"reason": "matrix test {n}"})),
            "retrieve-passwords",
        ),
        ("GET", "/v1/checkouts", None, "view-resources"),
        (
            "PUT",
            "/v1/access-policies/resource-type/S{k}",
            Some(json!({"enabled": false})),
            "manage-resources",
        ),
        ("GET", "/v1/audit", None, "read-audit"),
        ("GET", "/v1/audit/verify", None, "read-audit"),
        ("GET", "/v1/publisher-keys", None, "view-resources"),
        ("GET", "/v1/listeners", None, "view-resources"),
        ("GET", "/v1/change-requests", None, "view-resources"),
        (
            "GET",
            "/v1/listener-plan?resource_type=Linux&phase=pre-reset&mode=agentless",
            None,
            "view-resources",
        ),
    ]
}

/// Privileges of each built-in role, as documented (the test pins the documented model).
fn role_privileges(role: &str) -> &'static [&'static str] {
    match role {
        "privileged-admin" => &[
            "manage-users",
            "manage-roles",
            "manage-listeners",
            "approve-listeners",
            "manage-resources",
            "view-resources",
            "reset-passwords",
            "retrieve-passwords",
            "read-audit",
        ],
        "admin" => &[
            "manage-users",
            "manage-listeners",
            "approve-listeners",
            "manage-resources",
            "view-resources",
            "reset-passwords",
            "retrieve-passwords",
            "read-audit",
        ],
        "password-admin" => &[
            "manage-resources",
            "view-resources",
            "reset-passwords",
            "retrieve-passwords",
        ],
        "auditor" => &["view-resources", "read-audit"],
        "password-user" => &["view-resources", "retrieve-passwords"],
        "audit-only" => &["read-audit"],
        _ => &[],
    }
}

#[tokio::test]
async fn every_role_gets_exactly_its_privileges_on_every_endpoint() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();

    let r = api
        .post(
            "/v1/roles",
            &root,
            json!({"name": "audit-only", "privileges": ["read-audit"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (rid, aid) =
        resource_with_account(&api, &root, "matrix", "Linux", "root", "x-Matrix-1").await;

    let roles = [
        "privileged-admin",
        "admin",
        "password-admin",
        "auditor",
        "password-user",
        "audit-only",
    ];
    for k in 0..roles.len() {
        let body = json!({"name": format!("S{k}"), "reset_method": "ssh"});
        let r = api.post("/v1/resource-types", &root, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let mut tokens = Vec::new();
    for role in roles {
        tokens.push((
            role,
            user_with_role(&api, &root, &format!("user-{role}"), role).await,
        ));
    }

    let mut n = 0;
    let mut denials = 0;
    for (method, path, body, privilege) in endpoints() {
        let path = path.replace("{rid}", &rid).replace("{aid}", &aid);
        let fill = |n: i32| {
            body.as_ref().map(|b| {
                serde_json::from_str(&b.to_string().replace("{n}", &n.to_string())).unwrap()
            })
        };

        let anon_path = path.replace("{k}", "0");
        let anon = api.call(method, &anon_path, None, fill(n)).await;
        assert_eq!(
            anon.status, 401,
            "{method} {path} without a token: {}",
            anon.text
        );
        assert!(anon.content_type.starts_with("application/problem+json"));
        let bad = api
            .call(method, &anon_path, Some("lst_not-a-real-token"), fill(n))
            .await;
        assert_eq!(bad.status, 401, "{method} {path} with an unknown token");

        for (k, (role, token)) in tokens.iter().enumerate() {
            n += 1;
            let path = path.replace("{k}", &k.to_string());
            let reply = api.call(method, &path, Some(token), fill(n)).await;
            if role_privileges(role).contains(&privilege) {
                assert!(
                    reply.status < 400,
                    "{role} holds {privilege} but {method} {path} answered {}: {}",
                    reply.status,
                    reply.text
                );
            } else {
                denials += 1;
                assert_eq!(
                    reply.status, 403,
                    "{role} lacks {privilege} but {method} {path} answered {}",
                    reply.status
                );
                assert!(
                    reply.json()["detail"].as_str().unwrap().contains(privilege),
                    "{}",
                    reply.text
                );
            }
        }
    }

    // Every 403 is in the audit trail, with the privilege that was missing.
    let audit = api.get("/v1/audit?outcome=denied&limit=500", &root).await;
    let events = audit.json()["items"].as_array().unwrap().clone();
    assert_eq!(events.len(), denials, "one denied event per 403");
    assert!(
        events
            .iter()
            .all(|e| e["action"] == "authorize" && e["detail"]["privilege"].is_string())
    );
}

#[tokio::test]
async fn revoked_and_foreign_tokens_are_refused() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let alice = user_with_role(&api, &root, "alice", "auditor").await;
    let bob = user_with_role(&api, &root, "bob", "auditor").await;

    // A user issues and lists their own tokens; the token text is shown once.
    let t = api
        .post(
            "/v1/tokens",
            &alice,
            json!({"name": "laptop", "expires_in_days": 1}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.text);
    let second = t.json()["token"].as_str().unwrap().to_string();
    let tid = t.json()["id"].as_str().unwrap().to_string();
    let list = api.get("/v1/tokens", &alice).await;
    assert!(
        !list.text.contains(&second),
        "token listings never show the token"
    );
    assert_eq!(list.json().as_array().unwrap().len(), 2);

    // Bob cannot revoke Alice's token without manage-users.
    let r = api
        .call("DELETE", &format!("/v1/tokens/{tid}"), Some(&bob), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    let r = api
        .call("DELETE", &format!("/v1/tokens/{tid}"), Some(&alice), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let after = api.get("/v1/me", &second).await;
    assert_eq!(after.status, 401);
    assert!(after.json()["detail"].as_str().unwrap().contains("revoked"));
    assert_eq!(
        api.get("/v1/me", &alice).await.status,
        200,
        "other tokens keep working"
    );

    let r = api
        .post("/v1/tokens", &alice, json!({"expires_in_days": 0}))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["errors"][0]["field"], "expires_in_days");
}
