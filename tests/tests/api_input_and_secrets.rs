//! Bad input gets a clear 4xx problem document and never a 5xx; secrets appear in no response
//! but an authorized retrieval, and in no log line, argv or environment.

use lockstep_testkit as common;

use common::{Api, Server, random_hex, user_with_role};
use serde_json::json;

#[tokio::test]
async fn bad_requests_get_4xx_problems_and_the_server_keeps_serving() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let json_ct = Some("application/json");

    let cases: Vec<(&str, common::Reply, u16, &str)> = vec![
        (
            "malformed JSON",
            api.raw(
                "POST",
                "/v1/resources",
                &root,
                json_ct,
                b"{\"name\": ".to_vec(),
            )
            .await,
            400,
            "JSON",
        ),
        (
            "not JSON at all",
            api.raw(
                "POST",
                "/v1/resources",
                &root,
                json_ct,
                b"name=web1".to_vec(),
            )
            .await,
            400,
            "JSON",
        ),
        (
            "no content type",
            api.raw("POST", "/v1/resources", &root, None, b"{}".to_vec())
                .await,
            415,
            "Content-Type",
        ),
        (
            "unknown field",
            api.post(
                "/v1/resources",
                &root,
                json!({"name": "a", "resource_type": "Linux", "colour": "red"}),
            )
            .await,
            422,
            "unknown field `colour`",
        ),
        (
            "wrong type",
            api.post(
                "/v1/resources",
                &root,
                json!({"name": "a", "resource_type": "Linux", "ssh_port": "22"}),
            )
            .await,
            422,
            "ssh_port",
        ),
        (
            "missing field",
            api.post("/v1/resources", &root, json!({"name": "a"})).await,
            422,
            "resource_type",
        ),
        (
            "invalid value",
            api.post(
                "/v1/resources",
                &root,
                json!({"name": "a", "resource_type": "Nope"}),
            )
            .await,
            422,
            "no resource type named 'Nope'",
        ),
        (
            "oversized body",
            api.raw(
                "POST",
                "/v1/resources",
                &root,
                json_ct,
                format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024)).into_bytes(),
            )
            .await,
            413,
            "larger than",
        ),
        (
            "bad limit",
            api.get("/v1/resources?limit=abc", &root).await,
            400,
            "query string",
        ),
        (
            "limit out of range",
            api.get("/v1/resources?limit=100000", &root).await,
            422,
            "limit",
        ),
        (
            "garbage cursor",
            api.get("/v1/resources?cursor=!!!!", &root).await,
            422,
            "cursor",
        ),
        (
            "unknown query parameter",
            api.get("/v1/resources?colour=red", &root).await,
            400,
            "colour",
        ),
        (
            "bad timestamp filter",
            api.get("/v1/audit?since=yesterday", &root).await,
            422,
            "RFC 3339",
        ),
        (
            "unknown id",
            api.get("/v1/resources/res_nope", &root).await,
            404,
            "res_nope",
        ),
        (
            "unknown path",
            api.get("/v1/nothing-here", &root).await,
            404,
            "/v1/nothing-here",
        ),
        (
            "wrong method",
            api.call("PUT", "/v1/resources", Some(&root), None).await,
            405,
            "PUT",
        ),
        (
            "built-in type deletion",
            api.call("DELETE", "/v1/resource-types/Linux", Some(&root), None)
                .await,
            409,
            "built-in",
        ),
    ];
    for (what, reply, status, needle) in cases {
        assert_eq!(reply.status, status, "{what}: {}", reply.text);
        assert!(
            reply.content_type.starts_with("application/problem+json"),
            "{what}: {}",
            reply.content_type
        );
        let detail = reply.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            !detail.is_empty(),
            "{what}: a problem always says what is wrong"
        );
        assert!(
            detail.contains(needle) || reply.text.contains(needle),
            "{what}: {needle:?} not in {}",
            reply.text
        );
    }

    // A body that is JSON but not the request's shape names the field at fault in
    // `errors[]`, without serde's line and column.
    for (body, field, says) in [
        (json!({"name": "a"}), "resource_type", "required"),
        (
            json!({"name": "a", "resource_type": "Linux", "colour": "red"}),
            "colour",
            "unknown field `colour`",
        ),
        (
            json!({"name": "a", "resource_type": "Linux", "ssh_port": "22"}),
            "ssh_port",
            "invalid type",
        ),
    ] {
        let r = api.post("/v1/resources", &root, body).await;
        assert_eq!(r.status, 422, "{}", r.text);
        let errors = r.json()["errors"].clone();
        assert_eq!(errors[0]["field"], field, "{}", r.text);
        let problem = errors[0]["problem"].as_str().unwrap_or_default();
        assert!(problem.contains(says), "{}", r.text);
        assert!(!r.text.contains("line 1 column"), "{}", r.text);
    }

    // Duplicates are conflicts, and nothing was lost on the way.
    let ok = api
        .post(
            "/v1/resources",
            &root,
            json!({"name": "web1", "resource_type": "Linux"}),
        )
        .await;
    assert_eq!(ok.status, 201);
    let dup = api
        .post(
            "/v1/resources",
            &root,
            json!({"name": "web1", "resource_type": "Linux"}),
        )
        .await;
    assert_eq!(dup.status, 409, "{}", dup.text);
    let list = api.get("/v1/resources", &root).await;
    assert_eq!(list.json()["items"].as_array().unwrap().len(), 1);

    let metrics = api.call("GET", "/metrics", None, None).await.text;
    assert!(
        !metrics.contains("status=\"500\""),
        "no 5xx was served:\n{metrics}"
    );
    assert_eq!(api.call("GET", "/healthz", None, None).await.status, 200);
}

#[tokio::test]
async fn pagination_is_stable_and_complete() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    for i in 0..7 {
        let r = api
            .post(
                "/v1/resources",
                &root,
                json!({"name": format!("h{i}"), "resource_type": "Generic"}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let mut seen = Vec::new();
    let mut path = "/v1/resources?limit=3".to_string();
    loop {
        let page = api.get(&path, &root).await.json();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["name"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/resources?limit=3&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("h{i}")).collect::<Vec<_>>());
}

/// `GET /v1/accounts`: every account across resources, each filter narrowing, filters
/// combined, pages complete, and a filter that names nothing a 4xx that says what is allowed.
#[tokio::test]
async fn accounts_are_searched_across_resources_by_login_type_and_sync_status() {
    let server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let mut all = Vec::new();
    for (i, kind) in ["Linux", "Linux", "Windows"].iter().enumerate() {
        let r = api
            .post(
                "/v1/resources",
                &root,
                json!({"name": format!("s{i}"), "resource_type": kind}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let rid = r.json()["id"].as_str().unwrap().to_string();
        for login in ["root", &format!("app{i}")] {
            let a = api
                .post(
                    &format!("/v1/resources/{rid}/accounts"),
                    &root,
                    json!({"login_name": login, "password": "Start-pw-123!"}),
                )
                .await;
            assert_eq!(a.status, 201, "{}", a.text);
            all.push((
                kind.to_string(),
                login.to_string(),
                a.json()["id"].as_str().unwrap().to_string(),
            ));
        }
    }
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    let want = |f: &dyn Fn(&(String, String, String)) -> bool| -> Vec<String> {
        let mut v: Vec<String> = all.iter().filter(|a| f(a)).map(|a| a.2.clone()).collect();
        v.sort();
        v
    };
    // Every account, over pages of two.
    let mut seen = Vec::new();
    let mut path = "/v1/accounts?limit=2".to_string();
    loop {
        let page = api.get(&path, &root).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let page = page.json();
        seen.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/accounts?limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, want(&|_| true));
    let get = |q: &'static str| {
        let api = &api;
        let root = &root;
        async move {
            let r = api.get(&format!("/v1/accounts?{q}"), root).await;
            assert_eq!(r.status, 200, "{q}: {}", r.text);
            r.json()
        }
    };
    assert_eq!(ids(&get("login_name=root").await), want(&|a| a.1 == "root"));
    assert_eq!(
        ids(&get("resource_type=Windows").await),
        want(&|a| a.0 == "Windows")
    );
    assert_eq!(
        ids(&get("resource_type=Linux&login_name=app1").await),
        want(&|a| a.0 == "Linux" && a.1 == "app1")
    );
    assert_eq!(
        ids(&get("resource_type=Windows&login_name=app1").await),
        Vec::<String>::new()
    );
    assert_eq!(ids(&get("sync_status=not-verified").await), want(&|_| true));
    assert_eq!(ids(&get("sync_status=in-sync").await), Vec::<String>::new());
    // Filters that cannot match anything say so instead of answering an empty page.
    let r = api.get("/v1/accounts?sync_status=synced", &root).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains("in-sync") && r.text.contains("discovered"),
        "{}",
        r.text
    );
    let r = api.get("/v1/accounts?resource_type=Nope", &root).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = api.get("/v1/accounts?login=root", &root).await;
    assert!((400..500).contains(&r.status), "{}", r.text);
    // A value is bound, never spliced into the statement.
    let r = api
        .get(
            "/v1/accounts?login_name=root%27%20OR%20%271%27%3D%271",
            &root,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(ids(&r.json()).is_empty(), "{}", r.text);
}

fn proc_files_containing(needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        for file in ["cmdline", "environ"] {
            let path = entry.path().join(file);
            if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

fn file_contains(path: &std::path::Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_password_leaves_only_through_an_authorized_retrieval() {
    let mut server = Server::start();
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let sentinel = format!("Sentinel-{}", random_hex(12));
    let auditor = user_with_role(&api, &root, "auditor1", "auditor").await;

    let res = api
        .post(
            "/v1/resources",
            &root,
            json!({"name": "db1", "resource_type": "PostgreSQL"}),
        )
        .await;
    let rid = res.json()["id"].as_str().unwrap().to_string();
    let acc = api
        .post(
            &format!("/v1/resources/{rid}/accounts"),
            &root,
            json!({"login_name": "postgres", "password": sentinel}),
        )
        .await;
    assert_eq!(acc.status, 201, "{}", acc.text);
    assert!(!acc.text.contains(&sentinel));
    let aid = acc.json()["id"].as_str().unwrap().to_string();

    // Bad requests that carry the password never echo it.
    let bad = api
        .post(
            &format!("/v1/resources/{rid}/accounts"),
            &root,
            json!({"login_name": "", "password": sentinel}),
        )
        .await;
    assert_eq!(bad.status, 422);
    let dup = api
        .post(
            &format!("/v1/resources/{rid}/accounts"),
            &root,
            json!({"login_name": "postgres", "password": sentinel}),
        )
        .await;
    assert_eq!(dup.status, 409);
    let typo = api
        .post(
            &format!("/v1/resources/{rid}/accounts"),
            &root,
            json!({"login": "x", "password": sentinel}),
        )
        .await;
    assert_eq!(typo.status, 422);
    for r in [&bad, &dup, &typo] {
        assert!(
            !r.text.contains(&sentinel),
            "an error echoed the password: {}",
            r.text
        );
    }

    // Every ordinary read, for every caller, is free of it.
    let paths = [
        "/v1/resources".to_string(),
        format!("/v1/resources/{rid}"),
        format!("/v1/resources/{rid}/accounts"),
        format!("/v1/accounts/{aid}"),
        "/v1/audit?limit=500".to_string(),
        "/v1/me".to_string(),
    ];
    for token in [&root, &auditor] {
        for p in &paths {
            let r = api.get(p, token).await;
            assert!(r.status < 400, "{p}: {}", r.text);
            assert!(!r.text.contains(&sentinel), "{p} leaked the password");
        }
    }
    for p in ["/metrics", "/openapi.json", "/healthz"] {
        assert!(
            !api.call("GET", p, None, None)
                .await
                .text
                .contains(&sentinel)
        );
    }

    // Retrieval: refused without the privilege or a reason, and audited when granted.
    let denied = api
        .post(
            &format!("/v1/accounts/{aid}/password/retrieve"),
            &auditor,
            json!({"reason": "curious"}),
        )
        .await;
    assert_eq!(denied.status, 403);
    let no_reason = api
        .post(
            &format!("/v1/accounts/{aid}/password/retrieve"),
            &root,
            json!({"reason": ""}),
        )
        .await;
    assert_eq!(no_reason.status, 422);
    assert!(!no_reason.text.contains(&sentinel));
    let got = api
        .post(
            &format!("/v1/accounts/{aid}/password/retrieve"),
            &root,
            json!({"reason": "incident 42"}),
        )
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["password"], sentinel.as_str());
    let trail = api
        .get("/v1/audit?action=account.password.retrieve", &root)
        .await
        .json();
    let items = trail["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["detail"]["reason"], "incident 42");
    assert_eq!(items[0]["actor"], "user:root");
    assert_eq!(items[0]["target"], aid.as_str());

    // Not in argv or the environment of any process, nor in the logs, nor in the database file.
    assert_eq!(proc_files_containing(&sentinel), Vec::<String>::new());
    assert_eq!(server.stop().code(), Some(0));
    let log = server.log_text();
    assert!(log.contains("lockstep stopped"));
    assert!(!log.contains(&sentinel), "the log holds the password");
    assert!(!log.contains(&root), "the log holds a bearer token");
    for name in ["lockstep.db", "lockstep.db-wal", "lockstep.db-shm"] {
        assert!(
            !file_contains(&server.data_dir().join(name), &sentinel),
            "{name} holds the plaintext password"
        );
    }
}
