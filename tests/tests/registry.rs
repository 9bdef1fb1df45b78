//! The listener registry (docs/registry.md) end to end: publisher keys and listeners change only
//! through change requests that the designated second administrator approves, every bad upload
//! gets its own answer, and a listener whose stored bytes were edited in the database (SQLite or
//! PostgreSQL) is refused before it could run.

use lockstep_testkit as common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{
    Api, Reply, Server, ServerOptions, lockstep, lockstep_env, postgres_database, random_hex,
    user_with_role,
};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Connection;

const LISTENER: &str = "/v1/listeners/change-freeze";
const PROPS: &str = "props = [\"RESOURCENAME\", \"LOCATION\"]";
const WIDE_PROPS: &str = "props = [\"RESOURCENAME\", \"LOCATION\", \"IPADDRESS\"]";
/// An empty core WebAssembly module: valid wasm, but not a component.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest_path() -> PathBuf {
    root().join("listeners/change-freeze/manifest.toml")
}

fn manifest() -> String {
    std::fs::read_to_string(manifest_path()).expect("change-freeze manifest")
}

fn manifest_v2() -> String {
    edit(&manifest(), "version = \"0.1.0\"", "version = \"0.2.0\"")
}

fn wasm() -> Vec<u8> {
    common::listeners::wasm("change_freeze")
}

/// `text` with `from` replaced by `to`; `from` must be there, so the edit always bites.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in {text}");
    text.replace(from, to)
}

/// The component with a custom section appended: still a valid component, different bytes.
fn with_custom_section(wasm: &[u8]) -> Vec<u8> {
    let mut out = wasm.to_vec();
    // Section id 0 (custom), 8 bytes: a 6-byte name, then one byte of data.
    out.extend_from_slice(&[0x00, 0x08, 0x06]);
    out.extend_from_slice(b"tamperx");
    out
}

fn association(modes: &[&str], types: &[&str], order: u32, parameters: &[&str]) -> Value {
    json!({
        "phases": ["pre-reset"],
        "modes": modes,
        "resource_types": types,
        "order": order,
        "parameters": parameters,
    })
}

struct Key {
    path: PathBuf,
    public: String,
    id: String,
}

/// `lockstep keygen`; the key id is the first 8 bytes of SHA-256 of the public key, hex.
fn keygen(dir: &Path, name: &str) -> Key {
    let path = dir.join(name);
    let (status, stdout, stderr) = lockstep(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    let public = std::fs::read_to_string(format!("{}.pub", path.display())).unwrap();
    let public = public.trim().to_string();
    let id = hex::encode(&Sha256::digest(hex::decode(&public).unwrap())[..8]);
    assert!(stdout.contains(&id), "{stdout}");
    Key { path, public, id }
}

/// `lockstep listener sign`; returns the JSON signature.
fn sign(dir: &Path, key: &Key, wasm: &[u8], manifest: &str) -> String {
    let tag = random_hex(4);
    let [w, m, s] = ["wasm", "toml", "sig"].map(|ext| dir.join(format!("{tag}.{ext}")));
    std::fs::write(&w, wasm).unwrap();
    std::fs::write(&m, manifest).unwrap();
    let (status, _, stderr) = lockstep(&[
        "listener",
        "sign",
        w.to_str().unwrap(),
        "--manifest",
        m.to_str().unwrap(),
        "--key",
        key.path.to_str().unwrap(),
        "--out",
        s.to_str().unwrap(),
    ]);
    assert!(status.success(), "{stderr}");
    std::fs::read_to_string(s).unwrap()
}

/// The parts of a multipart upload.
#[derive(Clone)]
struct Upload {
    wasm: Vec<u8>,
    manifest: String,
    signature: Option<String>,
    approver: &'static str,
    association: Option<Value>,
}

impl Upload {
    fn with_wasm(&self, wasm: Vec<u8>) -> Upload {
        Upload {
            wasm,
            ..self.clone()
        }
    }

    fn with_manifest(&self, manifest: String) -> Upload {
        Upload {
            manifest,
            ..self.clone()
        }
    }

    fn with_signature(&self, signature: Option<String>) -> Upload {
        Upload {
            signature,
            ..self.clone()
        }
    }

    fn with_approver(&self, approver: &'static str) -> Upload {
        Upload {
            approver,
            ..self.clone()
        }
    }

    fn with_association(&self, association: Value) -> Upload {
        let association = Some(association);
        Upload {
            association,
            ..self.clone()
        }
    }

    fn form(&self) -> Form {
        let component = Part::bytes(self.wasm.clone()).file_name("listener.wasm");
        let mut form = Form::new()
            .part("component", component)
            .text("manifest", self.manifest.clone())
            .text("approver", self.approver);
        if let Some(s) = &self.signature {
            form = form.text("signature", s.clone());
        }
        if let Some(a) = &self.association {
            form = form.text("association", a.to_string());
        }
        form
    }

    async fn send(&self, api: &Api, token: &str, method: &str, path: &str) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        // A fresh connection each time: the server may close one after refusing a large body.
        let resp = reqwest::Client::new()
            .request(method, format!("{}{path}", api.base))
            .bearer_auth(token)
            .multipart(self.form())
            .send()
            .await
            .expect("upload");
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type");
        let content_type = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
        let content_type = content_type.to_string();
        let text = resp.text().await.expect("body");
        Reply {
            status,
            content_type,
            text,
        }
    }
}

/// The `items` of a paginated list.
fn page(v: &Value) -> Vec<Value> {
    let items = v["items"].as_array();
    items.unwrap_or_else(|| panic!("not a page: {v}")).clone()
}

/// A list that may or may not be paginated (history, publisher keys, listeners).
fn list(v: &Value) -> Vec<Value> {
    let items = v["items"].as_array().or(v.as_array());
    items.unwrap_or_else(|| panic!("not a list: {v}")).clone()
}

fn ids(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn change_id(c: &Value) -> String {
    let id = c["id"].as_str().unwrap_or_else(|| panic!("no id: {c}"));
    assert!(id.starts_with("chg_"), "{c}");
    id.to_string()
}

/// A 202 answer: the new change request, of `kind`, pending.
fn pending(r: &Reply, kind: &str) -> Value {
    assert_eq!(r.status, 202, "{}", r.text);
    let c = r.json();
    assert_eq!(c["kind"], kind, "{c}");
    assert_eq!(c["status"], "pending", "{c}");
    c
}

/// A refusal: its status, problem+json, `errors[].field` naming `field` (unless empty), and
/// `fragment` somewhere in the answer.
fn assert_refused(r: &Reply, status: u16, field: &str, fragment: &str) {
    let case = format!("expected {status} {field} {fragment:?}");
    assert_eq!(r.status, status, "{case}: {}", r.text);
    let problem = r.content_type.starts_with("application/problem+json");
    assert!(problem, "{case}: {}", r.content_type);
    if !field.is_empty() {
        let errors = r.json()["errors"].as_array().cloned().unwrap_or_default();
        let named = errors.iter().any(|e| e["field"] == field);
        assert!(named, "{case}: {}", r.text);
    }
    assert!(r.text.contains(fragment), "{case}: {}", r.text);
}

/// Follows `next` to the end of a paginated list.
async fn all_pages(api: &Api, token: &str, path: &str) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut url = path.to_string();
    loop {
        let r = api.get(&url, token).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        let v = r.json();
        out.extend(page(&v));
        match v["next"].as_str() {
            Some(cursor) => url = format!("{path}{sep}cursor={cursor}"),
            None => return out,
        }
    }
}

/// The named entry of the plan's `listeners` or `refused`.
fn entry<'a>(plan: &'a Value, section: &str, name: &str) -> Option<&'a Value> {
    let entries = plan[section].as_array();
    let entries = entries.unwrap_or_else(|| panic!("no {section} in {plan}"));
    entries.iter().find(|l| l["name"] == name)
}

/// alice and bob (admins: publisher and approver), carol (auditor), dave (an admin who is not
/// the approver), and a publisher key alice proposed and bob approved.
struct Team {
    api: Api,
    root: String,
    alice: String,
    bob: String,
    carol: String,
    dave: String,
    dir: tempfile::TempDir,
    key: Key,
    key_change: String,
}

impl Team {
    async fn new(server: &Server) -> Team {
        let api = Api::new(server);
        let root = server.root_token.clone();
        let alice = user_with_role(&api, &root, "alice", "admin").await;
        let bob = user_with_role(&api, &root, "bob", "admin").await;
        let carol = user_with_role(&api, &root, "carol", "auditor").await;
        let dave = user_with_role(&api, &root, "dave", "admin").await;
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "ci.key");
        let mut team = Team {
            api,
            root,
            alice,
            bob,
            carol,
            dave,
            dir,
            key,
            key_change: String::new(),
        };
        team.key_change = team.propose_key(&team.key, "ci").await;
        team.approve(&team.key_change).await;
        team
    }

    fn signed(&self, wasm: Vec<u8>, manifest: String) -> Upload {
        let signature = Some(sign(self.dir.path(), &self.key, &wasm, &manifest));
        let approver = "bob";
        let association = None;
        Upload {
            wasm,
            manifest,
            signature,
            approver,
            association,
        }
    }

    async fn upload(&self, method: &str, path: &str, u: &Upload) -> Reply {
        u.send(&self.api, &self.alice, method, path).await
    }

    /// `POST /v1/listeners` as alice.
    async fn add(&self, u: &Upload) -> Reply {
        self.upload("POST", "/v1/listeners", u).await
    }

    /// `GET` as root, which must answer 200.
    async fn get(&self, path: &str) -> Value {
        let r = self.api.get(path, &self.root).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        r.json()
    }

    async fn audit(&self, query: &str) -> Vec<Value> {
        let path = format!("/v1/audit?{query}&limit=500");
        all_pages(&self.api, &self.root, &path).await
    }

    async fn plan(&self, resource_type: &str) -> Value {
        let query = format!("resource_type={resource_type}&phase=pre-reset&mode=agentless");
        let r = self
            .api
            .get(&format!("/v1/listener-plan?{query}"), &self.alice)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }

    /// The version of change-freeze the Linux plan would run, if any.
    async fn planned(&self) -> Option<String> {
        let plan = self.plan("Linux").await;
        let l = entry(&plan, "listeners", "change-freeze");
        l.map(|l| l["version"].as_str().unwrap().to_string())
    }

    /// Asserts that the Linux plan refuses change-freeze; returns the reason.
    async fn refusal(&self) -> String {
        let plan = self.plan("Linux").await;
        assert!(
            entry(&plan, "listeners", "change-freeze").is_none(),
            "{plan}"
        );
        let refused = entry(&plan, "refused", "change-freeze");
        let refused = refused.unwrap_or_else(|| panic!("not refused: {plan}"));
        refused["reason"].as_str().unwrap().to_string()
    }

    async fn alert(&self) -> Value {
        self.get(LISTENER).await["alert"].clone()
    }

    async fn decide(&self, token: &str, id: &str, verb: &str) -> Reply {
        let comment = format!("{verb} in a test");
        if verb == "approve" {
            return common::registry::approval(&self.api, token, id, Some(&comment)).await;
        }
        let path = format!("/v1/change-requests/{id}/{verb}");
        self.api
            .post(&path, token, json!({"comment": comment}))
            .await
    }

    /// bob approves.
    async fn approve(&self, id: &str) -> Value {
        let r = self.decide(&self.bob, id, "approve").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let c = r.json();
        assert_eq!(c["id"], id);
        assert_eq!(c["status"], "approved", "{c}");
        assert_eq!(c["decided_by"], "bob", "{c}");
        assert!(c["decided_at"].is_string(), "{c}");
        c
    }

    /// alice proposes a key for bob to approve.
    async fn propose_key(&self, key: &Key, name: &str) -> String {
        let body = json!({"name": name, "public_key": key.public, "approver": "bob"});
        let r = self.api.post("/v1/publisher-keys", &self.alice, body).await;
        let c = pending(&r, "key-add");
        assert_eq!(c["key_id"], key.id.as_str(), "{c}");
        assert_eq!(c["approver"], "bob");
        change_id(&c)
    }

    /// alice asks for `template` as the Sealed type's reset command, bob to approve; returns the
    /// change request's id.
    async fn propose_template(&self, template: &Value) -> String {
        let r = self
            .api
            .call(
                "PUT",
                "/v1/resource-types/Sealed/reset-command",
                Some(&self.alice),
                Some(json!({"reset_command": template, "approver": "bob"})),
            )
            .await;
        change_id(&pending(&r, "reset-command"))
    }

    async fn key_status(&self, key_id: &str) -> String {
        let keys = list(&self.get("/v1/publisher-keys").await);
        let key = keys.iter().find(|k| k["key_id"] == key_id);
        let key = key.unwrap_or_else(|| panic!("{key_id} not in {keys:?}"));
        key["status"].as_str().unwrap().to_string()
    }

    async fn pending_ids(&self) -> BTreeSet<String> {
        let path = "/v1/change-requests?status=pending";
        ids(&all_pages(&self.api, &self.root, path).await)
    }

    /// Uploads change-freeze 0.1.0 and has bob approve it; returns the change request id.
    async fn publish_active(&self) -> String {
        let r = self.add(&self.signed(wasm(), manifest())).await;
        let id = change_id(&pending(&r, "listener-add"));
        self.approve(&id).await;
        assert_eq!(self.planned().await.as_deref(), Some("0.1.0"));
        id
    }
}

#[tokio::test]
async fn a_listener_runs_only_after_a_second_administrator_approves_it() {
    let server = Server::start();
    let t = Team::new(&server).await;
    assert_eq!(t.key_status(&t.key.id).await, "trusted");

    // bob was told of the key request; once read, it is no longer unread.
    let notes = all_pages(&t.api, &t.bob, "/v1/notifications").await;
    let note = notes
        .iter()
        .find(|n| n["change_request"] == t.key_change.as_str());
    let note = note.unwrap_or_else(|| panic!("bob was not notified: {notes:?}"));
    let nid = note["id"].as_str().unwrap();
    let read = format!("/v1/notifications/{nid}/read");
    let r = t.api.call("POST", &read, Some(&t.bob), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let unread = all_pages(&t.api, &t.bob, "/v1/notifications?unread=true").await;
    assert!(unread.iter().all(|n| n["id"] != nid), "{unread:?}");

    let upload = t.signed(wasm(), manifest());
    let c = pending(&t.add(&upload).await, "listener-add");
    let add = change_id(&c);
    assert_eq!(c["listener"], "change-freeze");
    assert_eq!(c["version"], "0.1.0");
    assert_eq!(c["key_id"], t.key.id.as_str());
    assert_eq!(c["requested_by"], "alice");
    assert_eq!(c["approver"], "bob");
    let digest = hex::encode(Sha256::digest(&upload.wasm));
    assert_eq!(c["component_sha256"], digest.as_str());
    assert!(c["decided_by"].is_null(), "{c}");

    // Pending: nothing runs yet.
    assert_eq!(t.planned().await, None);
    let notes = all_pages(&t.api, &t.bob, "/v1/notifications").await;
    assert!(
        notes.iter().any(|n| n["change_request"] == add.as_str()),
        "{notes:?}"
    );

    t.approve(&add).await;
    let plan = t.plan("Linux").await;
    let planned = entry(&plan, "listeners", "change-freeze");
    let planned = planned.unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(planned["version"], "0.1.0");
    assert_eq!(planned["order"], 100, "the default association: {planned}");
    assert_eq!(planned["parameters"], json!([]));
    assert!(entry(&plan, "refused", "change-freeze").is_none(), "{plan}");

    let l = t.get(LISTENER).await;
    assert_eq!(l["name"], "change-freeze");
    assert_eq!(l["status"], "active", "{l}");
    assert_eq!(l["version"], "0.1.0", "{l}");
    assert!(l["alert"].is_null(), "{l}");
    let all = list(&t.get("/v1/listeners").await);
    assert!(all.iter().any(|l| l["name"] == "change-freeze"), "{all:?}");

    // alice hears of the decision: her latest notification (they come oldest first).
    let hers = all_pages(&t.api, &t.alice, "/v1/notifications").await;
    assert!(!hers.is_empty(), "alice was not notified");
    assert_eq!(
        hers.last().unwrap()["change_request"],
        add.as_str(),
        "{hers:?}"
    );

    for action in ["publisher-key.add.request", "listener.add.request"] {
        let events = t.audit(&format!("action={action}")).await;
        assert_eq!(events.len(), 1, "{action}: {events:?}");
        assert_eq!(events[0]["actor"], "user:alice");
        assert_eq!(events[0]["outcome"], "success");
    }
    let approvals = t
        .audit("action=change-request.approve&outcome=success")
        .await;
    assert_eq!(
        approvals.len(),
        2,
        "the key and the listener: {approvals:?}"
    );
    // Every one of those events is a link in the intact hash chain.
    let chain = t.get("/v1/audit/verify").await;
    assert_eq!(chain["intact"], true, "{chain}");
}

/// Issue 15: an approval is bound to the change the approver saw. A database writer who edits
/// a pending request (a listener's association, a reset-command template) gets it refused at
/// approval, whether the approver looked before the edit or after it; an approval without the
/// request's digest, or with another one, does not count.
#[tokio::test]
async fn an_edited_pending_request_is_never_approved() {
    let server = Server::start();
    let t = Team::new(&server).await;
    let mut db = common::database_writer(&server.sqlite_url()).await;

    // An approval must name what it approves.
    let upload = t.signed(wasm(), manifest());
    let add = change_id(&pending(&t.add(&upload).await, "listener-add"));
    let path = format!("/v1/change-requests/{add}/approve");
    let bare = t.api.post(&path, &t.bob, json!({})).await;
    assert_refused(&bare, 422, "digest", "digest");
    let wrong = json!({"digest": "0".repeat(64)});
    assert_refused(
        &t.api.post(&path, &t.bob, wrong).await,
        409,
        "",
        "not the one you reviewed",
    );

    // Bob looks; then the database writer widens the association to Windows.
    let seen = t.get(&format!("/v1/change-requests/{add}")).await["digest"].clone();
    let widened = association(&["agentless"], &["Linux", "Windows"], 10, &[]);
    sqlx::query("UPDATE change_requests SET association = $1 WHERE id = $2")
        .bind(widened.to_string())
        .bind(&add)
        .execute(&mut db)
        .await
        .unwrap();
    let stale = json!({"digest": seen});
    let r = t.api.post(&path, &t.bob, stale).await;
    assert_refused(&r, 409, "", "altered in the database");
    // Looking again does not help: the request no longer holds its seal.
    let r = common::registry::approval(&t.api, &t.bob, &add, None).await;
    assert_refused(&r, 409, "", "altered in the database");
    assert_eq!(
        t.get(&format!("/v1/change-requests/{add}")).await["status"],
        "pending"
    );
    assert!(t.planned().await.is_none(), "nothing runs on Linux");
    let windows = t.plan("Windows").await;
    assert!(
        entry(&windows, "listeners", "change-freeze").is_none(),
        "{windows}"
    );
    let failures = t
        .audit("action=change-request.approve&outcome=failure")
        .await;
    assert_eq!(failures.len(), 3, "{failures:?}");
    // The edited request can still be rejected, and the change asked for again.
    let r = t.decide(&t.bob, &add, "reject").await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A reset-command template, edited to run a shell after the approver looked.
    let r = t
        .api
        .post(
            "/v1/resource-types",
            &t.root,
            json!({"name": "Sealed", "reset_method": "ssh"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let template = json!({"program": "/usr/sbin/chpasswd", "args": ["-c", "SHA512"],
        "stdin": "{login}:{password}\n"});
    let change = t.propose_template(&template).await;
    let seen = t.get(&format!("/v1/change-requests/{change}")).await["digest"].clone();
    let shell = json!({"program": "/bin/sh", "args": ["-c", "cat >/tmp/x"], "stdin": "{password}"});
    sqlx::query("UPDATE change_requests SET reset_command = $1 WHERE id = $2")
        .bind(shell.to_string())
        .bind(&change)
        .execute(&mut db)
        .await
        .unwrap();
    let path = format!("/v1/change-requests/{change}/approve");
    let r = t.api.post(&path, &t.bob, json!({"digest": seen})).await;
    assert_refused(&r, 409, "", "altered in the database");
    // Neither the edit nor the proposal took effect: the type keeps the default.
    let kind = t.get("/v1/resource-types/Sealed").await;
    let default = json!({"program": "/usr/sbin/chpasswd", "args": [],
        "stdin": "{login}:{password}\n"});
    assert_eq!(kind["reset_command"], default, "{kind}");

    // A rejected request (seal intact) set back to pending in the database is not offered
    // for approval again: the audit trail says it was decided.
    let r = t.decide(&t.bob, &change, "reject").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rejected = t.propose_template(&template).await;
    let r = t.decide(&t.bob, &rejected, "reject").await;
    assert_eq!(r.status, 200, "{}", r.text);
    sqlx::query(
        "UPDATE change_requests SET status = 'pending', decided_by = NULL, \
         decision_comment = NULL, decided_at = NULL WHERE id = $1",
    )
    .bind(&rejected)
    .execute(&mut db)
    .await
    .unwrap();
    let r = common::registry::approval(&t.api, &t.bob, &rejected, None).await;
    assert_refused(&r, 409, "", "already decided");
    // Nor when the decision's audit event is edited too (its outcome flipped): it fails its
    // keyed hash, which refuses the decision as well.
    sqlx::query(
        "UPDATE audit_events SET outcome = 'denied' \
         WHERE target = $1 AND action = 'change-request.reject'",
    )
    .bind(&rejected)
    .execute(&mut db)
    .await
    .unwrap();
    let r = common::registry::approval(&t.api, &t.bob, &rejected, None).await;
    assert_refused(&r, 409, "", "fails its keyed hash");
    let kind = t.get("/v1/resource-types/Sealed").await;
    assert_eq!(kind["reset_command"], default, "{kind}");
}

/// Issue 15: a key-add request names the whole public key it asks to trust (sealed with the
/// request, shown to the approver), so a database writer who swaps the pending key's public
/// key under the same id gets the approval refused; and rejecting a request whose seal fails
/// unwinds nothing, so pointing it at a trusted key cannot make that key rejected.
#[tokio::test]
async fn a_key_add_trusts_exactly_the_requested_key() {
    let server = Server::start();
    let t = Team::new(&server).await;
    let mut db = common::database_writer(&server.sqlite_url()).await;

    let wanted = keygen(t.dir.path(), "wanted.key");
    let swapped = keygen(t.dir.path(), "swapped.key");
    let change = t.propose_key(&wanted, "wanted").await;
    let shown = t.get(&format!("/v1/change-requests/{change}")).await;
    assert_eq!(shown["public_key"], wanted.public.as_str(), "{shown}");
    sqlx::query("UPDATE publisher_keys SET public_key = $1 WHERE key_id = $2")
        .bind(&swapped.public)
        .bind(&wanted.id)
        .execute(&mut db)
        .await
        .unwrap();
    let r = common::registry::approval(&t.api, &t.bob, &change, None).await;
    assert_refused(&r, 409, "", "not the key that was requested");
    assert_eq!(t.key_status(&wanted.id).await, "pending");

    // The same request pointed at the team's trusted key, then rejected: that key stays
    // trusted (a tampered request unwinds nothing).
    sqlx::query("UPDATE change_requests SET key_id = $1 WHERE id = $2")
        .bind(&t.key.id)
        .bind(&change)
        .execute(&mut db)
        .await
        .unwrap();
    let r = t.decide(&t.bob, &change, "reject").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(t.key_status(&t.key.id).await, "trusted");
    // The key that request left pending can be asked for again, and is then trusted as asked.
    let again = t.propose_key(&wanted, "wanted").await;
    t.approve(&again).await;
    assert_eq!(t.key_status(&wanted.id).await, "trusted");
    let keys = list(&t.get("/v1/publisher-keys").await);
    let trusted = keys
        .iter()
        .find(|k| k["key_id"] == wanted.id.as_str())
        .unwrap();
    assert_eq!(trusted["public_key"], wanted.public.as_str());
}

/// A listener's row renamed while its request is pending is not approved under the new name
/// (the ledger records the name the request was sealed with).
#[tokio::test]
async fn a_listener_renamed_while_pending_is_not_approved() {
    let server = Server::start();
    let t = Team::new(&server).await;
    let mut db = common::database_writer(&server.sqlite_url()).await;
    let add = change_id(&pending(
        &t.add(&t.signed(wasm(), manifest())).await,
        "listener-add",
    ));
    let rename = "UPDATE listeners SET name = $1 WHERE name = $2";
    for (to, from) in [
        ("a-change-freeze", "change-freeze"),
        ("change-freeze", "a-change-freeze"),
    ] {
        let done = sqlx::query(rename)
            .bind(to)
            .bind(from)
            .execute(&mut db)
            .await;
        assert_eq!(done.unwrap().rows_affected(), 1);
        if to == "a-change-freeze" {
            let r = common::registry::approval(&t.api, &t.bob, &add, None).await;
            assert_refused(&r, 409, "", "renamed in the database");
        }
    }
    t.approve(&add).await;
    assert_eq!(t.planned().await.as_deref(), Some("0.1.0"));
}

#[tokio::test]
async fn only_the_designated_approver_decides_and_never_on_their_own_request() {
    let server = Server::start();
    let t = Team::new(&server).await;
    let second = keygen(t.dir.path(), "second.key");
    let chg = t.propose_key(&second, "second").await;

    let own = t.decide(&t.alice, &chg, "approve").await;
    assert_refused(&own, 403, "", "");
    let own = t.decide(&t.alice, &chg, "reject").await;
    assert_refused(&own, 403, "", "");
    let auditor = t.decide(&t.carol, &chg, "approve").await;
    assert_refused(&auditor, 403, "", "approve-listeners");
    let other = t.decide(&t.dave, &chg, "approve").await;
    assert_refused(&other, 403, "", "bob");

    let c = t.get(&format!("/v1/change-requests/{chg}")).await;
    assert_eq!(c["status"], "pending", "refusals decide nothing: {c}");
    assert_eq!(t.key_status(&second.id).await, "pending");

    let decided = t.approve(&chg).await;
    assert_eq!(decided["decision_comment"], "approve in a test");
    assert_eq!(t.key_status(&second.id).await, "trusted");
    let again = t.decide(&t.bob, &chg, "reject").await;
    assert_refused(&again, 409, "", "");

    // A rejected key is never trusted; the requester may withdraw a pending request.
    let third = keygen(t.dir.path(), "third.key");
    let chg3 = t.propose_key(&third, "third").await;
    let r = t.decide(&t.bob, &chg3, "reject").await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("rejected"))
    );
    assert_eq!(t.key_status(&third.id).await, "rejected");
    let fourth = keygen(t.dir.path(), "fourth.key");
    let chg4 = t.propose_key(&fourth, "fourth").await;
    let r = t.decide(&t.alice, &chg4, "withdraw").await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("withdrawn"))
    );

    // The refusals are in the audit trail.
    let denied = t
        .audit("action=change-request.approve&outcome=denied")
        .await;
    let actors: BTreeSet<&str> = denied.iter().filter_map(|e| e["actor"].as_str()).collect();
    assert!(actors.contains("user:alice"), "self-approval: {denied:?}");
    assert!(actors.contains("user:dave"), "not the approver: {denied:?}");
    let authz = t.audit("action=authorize&outcome=denied").await;
    let carol = |e: &Value| e["actor"] == "user:carol";
    let privilege = |e: &Value| e["detail"]["privilege"] == "approve-listeners";
    assert!(authz.iter().any(|e| carol(e) && privilege(e)), "{authz:?}");
}

#[tokio::test]
async fn each_bad_upload_is_refused_with_its_own_answer_and_audited() {
    let server = Server::start_with(ServerOptions {
        extra: vec!["--max-listener-bytes".into(), "1048576".into()],
        ..Default::default()
    });
    let t = Team::new(&server).await;
    let good = t.signed(wasm(), manifest());
    let stranger = keygen(t.dir.path(), "stranger.key");
    let by_stranger = Some(sign(t.dir.path(), &stranger, &good.wasm, &good.manifest));
    let widened = edit(&good.manifest, PROPS, WIDE_PROPS);
    let grown = with_custom_section(&good.wasm);
    let aix = association(&["agentless"], &["AIX"], 10, &[]);
    // The manifest may declare agent mode, but Generic resources do not allow it.
    let agent = edit(
        &manifest(),
        "modes = [\"agentless\"]",
        "modes = [\"agentless\", \"agent\"]",
    );
    let agent = t.signed(wasm(), agent);
    let agent = agent.with_association(association(&["agent"], &["Generic"], 10, &[]));
    let cases = [
        (good.with_signature(None), "signature", "signature"),
        (
            good.with_signature(by_stranger),
            "signature",
            stranger.id.as_str(),
        ),
        (good.with_manifest(widened), "signature", "manifest"),
        (good.with_wasm(grown), "signature", "component"),
        (
            t.signed(b"hello world".to_vec(), manifest()),
            "component",
            "component",
        ),
        (
            t.signed(CORE_MODULE.to_vec(), manifest()),
            "component",
            "component",
        ),
        // Issue 16: a component too costly to compile (one function with 20,000 locals live
        // across a loop took Cranelift about 100 s) is refused before the compiler sees it.
        (
            t.signed(common::components::many_locals(20_000, 0), manifest()),
            "component",
            "too costly to compile",
        ),
        (good.with_association(aix), "association", "AIX"),
        (agent, "association", "Generic"),
        (good.with_approver("alice"), "approver", "approver"),
        (good.with_approver("carol"), "approver", "approver"),
        (good.with_approver("zed"), "approver", "zed"),
    ];
    for (upload, field, fragment) in &cases {
        assert_refused(&t.add(upload).await, 422, field, fragment);
    }
    let oversized = good.with_wasm(vec![0u8; 2 * 1024 * 1024]);
    assert_refused(&t.add(&oversized).await, 413, "", "");

    // Nothing was registered or left pending: the good upload still goes through.
    assert!(t.pending_ids().await.is_empty());
    pending(&t.add(&good).await, "listener-add");

    let failures = t.audit("action=listener.upload&outcome=failure").await;
    let n = cases.len();
    assert_eq!(
        failures.len(),
        n + 1,
        "one event per refusal, the 413 included: {failures:?}"
    );
    for e in &failures {
        assert_eq!(e["actor"], "user:alice", "{e}");
        assert!(e["detail"]["reason"].is_string(), "{e}");
    }
}

#[tokio::test]
async fn edits_and_deletion_wait_for_approval() {
    let server = Server::start();
    let t = Team::new(&server).await;
    let add = t.publish_active().await;

    let v1 = t.signed(wasm(), manifest());
    assert_refused(&t.add(&v1).await, 409, "", "");
    assert_refused(&t.upload("PUT", LISTENER, &v1).await, 409, "", "");
    let renamed = edit(
        &manifest(),
        "name = \"change-freeze\"",
        "name = \"no-such\"",
    );
    let other = t.signed(wasm(), renamed);
    let r = t.upload("PUT", "/v1/listeners/no-such", &other).await;
    assert_refused(&r, 404, "", "");

    let v2 = t.signed(wasm(), manifest_v2());
    let c = pending(&t.upload("PUT", LISTENER, &v2).await, "listener-edit");
    assert_eq!(c["version"], "0.2.0");
    let edit_id = change_id(&c);

    // One pending change per listener: the conflict names the pending one.
    let delete = format!("{LISTENER}?approver=bob");
    let r = t.api.call("DELETE", &delete, Some(&t.alice), None).await;
    assert_refused(&r, 409, "", &edit_id);

    assert_eq!(t.planned().await.as_deref(), Some("0.1.0"));
    t.approve(&edit_id).await;
    assert_eq!(t.planned().await.as_deref(), Some("0.2.0"));
    assert_eq!(t.get(LISTENER).await["version"], "0.2.0");

    let r = t.api.call("DELETE", &delete, Some(&t.alice), None).await;
    let delete_id = change_id(&pending(&r, "listener-delete"));
    assert_eq!(t.planned().await.as_deref(), Some("0.2.0"));
    t.approve(&delete_id).await;
    let plan = t.plan("Linux").await;
    assert!(
        entry(&plan, "listeners", "change-freeze").is_none(),
        "{plan}"
    );
    assert!(entry(&plan, "refused", "change-freeze").is_none(), "{plan}");

    let history = list(&t.get(&format!("{LISTENER}/history")).await);
    let kinds: Vec<_> = history.iter().map(|c| c["kind"].clone()).collect();
    assert_eq!(kinds, ["listener-add", "listener-edit", "listener-delete"]);
    let ids: Vec<_> = history.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [add.as_str(), edit_id.as_str(), delete_id.as_str()]);
    assert!(
        history.iter().all(|c| c["status"] == "approved"),
        "{history:?}"
    );
}

const CURRENT_COMPONENT: &str = "SELECT component FROM listener_versions WHERE id = \
     (SELECT current_version_id FROM listeners WHERE name = 'change-freeze')";
const SET_CURRENT_COMPONENT: &str = "UPDATE listener_versions SET component = $1 WHERE id = \
     (SELECT current_version_id FROM listeners WHERE name = 'change-freeze')";
const WIDEN_MANIFEST: &str = "UPDATE listener_versions \
     SET manifest = replace(manifest, 'LOCATION\"]', 'LOCATION\", \"IPADDRESS\"]') WHERE id = \
     (SELECT current_version_id FROM listeners WHERE name = 'change-freeze')";
const RESTORE_MANIFEST: &str = "UPDATE listener_versions \
     SET manifest = replace(manifest, 'LOCATION\", \"IPADDRESS\"]', 'LOCATION\"]') WHERE id = \
     (SELECT current_version_id FROM listeners WHERE name = 'change-freeze')";
const SET_CURRENT_DIGEST: &str = "UPDATE listener_versions SET component_sha256 = $1 WHERE id = \
     (SELECT current_version_id FROM listeners WHERE name = 'change-freeze')";
const FORGE_TRUSTED_KEY: &str = "INSERT INTO publisher_keys (key_id, name, public_key, status, \
     trust_seal, created_by, created_at, updated_at) VALUES ($1, 'forged', $2, 'trusted', \
     'k.00.00', 'mallory', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')";
const SET_V2_COMPONENT: &str = "UPDATE listener_versions SET component = $1 \
     WHERE version = '0.2.0' AND listener_id = \
     (SELECT id FROM listeners WHERE name = 'change-freeze')";

/// Runs one tampering statement, with `bytes` bound to `$1` when given; it must hit one row.
async fn tamper(db: &mut sqlx::AnyConnection, sql: &'static str, bytes: Option<Vec<u8>>) {
    let mut query = sqlx::query::<sqlx::Any>(sql);
    if let Some(b) = bytes {
        query = query.bind(b);
    }
    let done = query.execute(&mut *db).await.expect("tamper");
    assert_eq!(done.rows_affected(), 1, "{sql}");
}

/// Edits the stored component, then the stored manifest, of an approved listener behind the
/// running server's back, then the bytes of an uploaded version before its approval.
async fn tampering_is_refused_before_any_run(server: &Server, db_url: &str) {
    let t = Team::new(server).await;
    t.publish_active().await;
    let mut db = common::database_writer(db_url).await;

    let query = sqlx::query_scalar(CURRENT_COMPONENT);
    let original: Vec<u8> = query.fetch_one(&mut db).await.unwrap();
    assert!(
        original == wasm(),
        "the approved bytes are stored as uploaded"
    );
    let mut flipped = original.clone();
    *flipped.last_mut().unwrap() ^= 0xff;
    tamper(&mut db, SET_CURRENT_COMPONENT, Some(flipped)).await;

    let reason = t.refusal().await;
    assert!(reason.contains("component"), "{reason}");
    assert!(t.alert().await.is_string());
    let events = t.audit("action=listener.integrity").await;
    assert!(!events.is_empty(), "the refusal is audited");
    assert!(
        events.iter().all(|e| e["outcome"] == "failure"),
        "{events:?}"
    );
    assert!(events[0]["detail"]["reason"].is_string(), "{events:?}");

    // The approved bytes back: it runs again; the alert stays until a new approval.
    tamper(&mut db, SET_CURRENT_COMPONENT, Some(original)).await;
    assert_eq!(t.planned().await.as_deref(), Some("0.1.0"));
    assert!(t.alert().await.is_string());

    // A widened grant in the stored manifest.
    tamper(&mut db, WIDEN_MANIFEST, None).await;
    let reason = t.refusal().await;
    assert!(reason.contains("manifest"), "{reason}");
    let more = t.audit("action=listener.integrity&outcome=failure").await;
    assert!(more.len() > events.len(), "{more:?}");
    tamper(&mut db, RESTORE_MANIFEST, None).await;
    assert_eq!(t.planned().await.as_deref(), Some("0.1.0"));

    // Someone who can write the database but lacks the master key swaps the bytes and fixes up
    // the recorded digest too: the approval seal no longer matches.
    let mut swapped = wasm();
    *swapped.last_mut().unwrap() ^= 0x01;
    let digest = hex::encode(Sha256::digest(&swapped));
    tamper(&mut db, SET_CURRENT_COMPONENT, Some(swapped)).await;
    let query = sqlx::query::<sqlx::Any>(SET_CURRENT_DIGEST).bind(digest);
    assert_eq!(query.execute(&mut db).await.unwrap().rows_affected(), 1);
    let reason = t.refusal().await;
    assert!(reason.contains("approval record"), "{reason}");
    let digest = hex::encode(Sha256::digest(wasm()));
    tamper(&mut db, SET_CURRENT_COMPONENT, Some(wasm())).await;
    let query = sqlx::query::<sqlx::Any>(SET_CURRENT_DIGEST).bind(digest);
    assert_eq!(query.execute(&mut db).await.unwrap().rows_affected(), 1);
    assert_eq!(t.planned().await.as_deref(), Some("0.1.0"));

    // ...or makes their own key "trusted" with a row of their own: its trust seal fails.
    let forged = keygen(t.dir.path(), "forged.key");
    let insert = sqlx::query::<sqlx::Any>(FORGE_TRUSTED_KEY)
        .bind(forged.id.clone())
        .bind(forged.public.clone());
    assert_eq!(insert.execute(&mut db).await.unwrap().rows_affected(), 1);
    let renamed = edit(&manifest(), "name = \"change-freeze\"", "name = \"forged\"");
    let upload = t.signed(wasm(), renamed.clone());
    let upload = upload.with_signature(Some(sign(t.dir.path(), &forged, &wasm(), &renamed)));
    assert_refused(&t.add(&upload).await, 422, "signature", "integrity check");

    // Bytes edited between upload and approval: the approval is refused and audited.
    let v2 = t.signed(wasm(), manifest_v2());
    let c = pending(&t.upload("PUT", LISTENER, &v2).await, "listener-edit");
    let chg = change_id(&c);
    tamper(&mut db, SET_V2_COMPONENT, Some(b"not it".to_vec())).await;
    assert_refused(&t.decide(&t.bob, &chg, "approve").await, 409, "", "");
    assert_eq!(t.planned().await.as_deref(), Some("0.1.0"));
    let decisions = t.audit("action=change-request.approve").await;
    let refused = |e: &Value| e["outcome"] != "success" && e.to_string().contains(&chg);
    assert!(decisions.iter().any(refused), "{decisions:?}");
    db.close().await.unwrap();
}

#[tokio::test]
async fn an_edited_sqlite_row_is_refused_before_any_run() {
    let server = Server::start();
    tampering_is_refused_before_any_run(&server, &server.sqlite_url()).await;
}

#[tokio::test]
async fn an_edited_postgres_row_is_refused_before_any_run() {
    on_postgres(async |server, url| tampering_is_refused_before_any_run(server, url).await).await;
}

/// Runs `scenario` against a server on a fresh database of the machine's PostgreSQL, then stops
/// the server and drops the database (skipped where there is none, outside CI).
async fn on_postgres(scenario: impl AsyncFn(&Server, &str)) {
    let Some(db) = postgres_database().await else {
        return;
    };
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(db.url().to_string()),
        ..Default::default()
    });
    scenario(&server, db.url()).await;
    assert_eq!(server.stop().code(), Some(0));
}

/// The approved state of change-freeze's row: (version id, association, position, seal).
type ListenerApproval = (Option<String>, Option<String>, Option<i64>, Option<String>);

const LISTENER_APPROVAL: &str = "SELECT current_version_id, association, position, \
     approval_seal FROM listeners WHERE name = 'change-freeze'";
const RESTORE_LISTENER_APPROVAL: &str = "UPDATE listeners SET current_version_id = $1, \
     association = $2, position = $3, approval_seal = $4, status = 'active' \
     WHERE name = 'change-freeze'";

/// Issue 15, "seals bind what runs" (a): a database writer without the master key saves
/// change-freeze's approved row (0.1.0, Linux), lets 0.2.0 be approved, then writes the old
/// row back with its old seal, which is valid. Before the registry ledger, 0.1.0 ran again.
async fn an_older_listener_row_restored_with_its_seal_is_refused(server: &Server, db_url: &str) {
    let t = Team::new(server).await;
    t.publish_active().await;
    let mut db = common::database_writer(db_url).await;
    let query = sqlx::query_as::<_, ListenerApproval>(LISTENER_APPROVAL);
    let v1: ListenerApproval = query.fetch_one(&mut db).await.unwrap();
    assert!(v1.3.is_some(), "approved rows carry their seal");

    let v2 = t.signed(wasm(), manifest_v2());
    let c = pending(&t.upload("PUT", LISTENER, &v2).await, "listener-edit");
    t.approve(&change_id(&c)).await;
    assert_eq!(t.planned().await.as_deref(), Some("0.2.0"));

    let restore = sqlx::query::<sqlx::Any>(RESTORE_LISTENER_APPROVAL)
        .bind(v1.0.clone())
        .bind(v1.1.clone())
        .bind(v1.2)
        .bind(v1.3.clone());
    assert_eq!(restore.execute(&mut db).await.unwrap().rows_affected(), 1);
    let reason = t.refusal().await;
    assert!(
        reason.contains("older than") && reason.contains("registry ledger"),
        "{reason}"
    );
    assert!(reason.contains("restored from a backup"), "{reason}");
    // Refused everywhere, not only where 0.2.0 applies: it might guard anything.
    let windows = t.plan("Windows").await;
    assert!(
        entry(&windows, "refused", "change-freeze").is_some(),
        "{windows}"
    );
    assert_eq!(t.alert().await.as_str(), Some(reason.as_str()));
    let events = t.audit("action=listener.integrity&outcome=failure").await;
    let named = |e: &Value| e["target"] == "change-freeze" && e["detail"]["reason"] == reason;
    assert!(events.iter().any(named), "{events:?}");
    db.close().await.unwrap();
}

#[tokio::test]
async fn an_older_sqlite_listener_row_restored_with_its_seal_is_refused() {
    let server = Server::start();
    an_older_listener_row_restored_with_its_seal_is_refused(&server, &server.sqlite_url()).await;
}

#[tokio::test]
async fn an_older_postgres_listener_row_restored_with_its_seal_is_refused() {
    on_postgres(async |server, url| {
        an_older_listener_row_restored_with_its_seal_is_refused(server, url).await
    })
    .await;
}

/// (c): a removed publisher key's row written back with its old trust seal is not trusted
/// again: its listeners stay refused and uploads signed with it are refused.
#[tokio::test]
async fn a_removed_publisher_key_restored_with_its_seal_stays_untrusted() {
    let server = Server::start();
    let t = Team::new(&server).await;
    t.publish_active().await;
    let url = server.sqlite_url();
    let mut db = common::database_writer(&url).await;
    let query = "SELECT trust_seal FROM publisher_keys WHERE key_id = $1";
    let query = sqlx::query_scalar::<_, Option<String>>(query).bind(t.key.id.clone());
    let seal = query.fetch_one(&mut db).await.unwrap();
    assert!(seal.is_some());

    let path = format!("/v1/publisher-keys/{}?approver=bob", t.key.id);
    let r = t.api.call("DELETE", &path, Some(&t.alice), None).await;
    t.approve(&change_id(&pending(&r, "key-remove"))).await;
    assert_eq!(t.key_status(&t.key.id).await, "removed");
    assert!(t.refusal().await.contains("no longer trusted"));

    let restore = "UPDATE publisher_keys SET status = 'trusted', trust_seal = $1 WHERE key_id = $2";
    let restore = sqlx::query::<sqlx::Any>(restore)
        .bind(seal)
        .bind(t.key.id.clone());
    assert_eq!(restore.execute(&mut db).await.unwrap().rows_affected(), 1);
    assert_eq!(t.key_status(&t.key.id).await, "trusted", "the row says so");
    let reason = t.refusal().await;
    assert!(
        reason.contains(&t.key.id) && reason.contains("no approval in the registry ledger"),
        "{reason}"
    );
    let v2 = t.signed(wasm(), manifest_v2());
    let r = t.upload("PUT", LISTENER, &v2).await;
    assert_refused(&r, 422, "signature", "registry ledger");
    db.close().await.unwrap();
}

/// What the server answers when the ledger itself is refused: the ledger pins every user's
/// identity too, so nobody is served (503) and the answer says why.
async fn ledger_refusal(t: &Team) -> String {
    let query = "resource_type=Linux&phase=pre-reset&mode=agentless";
    let r = t
        .api
        .get(&format!("/v1/listener-plan?{query}"), &t.alice)
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(
        r.json()["type"],
        "urn:lockstep:problem:integrity",
        "{}",
        r.text
    );
    r.json()["detail"].as_str().unwrap().to_string()
}

/// Review finding: the ledger is pinned from what is sealed only by the upgrade that makes it.
/// Afterwards, no ledger row and no `registry.generation` event means both were deleted, and a
/// restart pins nothing: a listener row restored with its old seal stays refused until an
/// operator reseals (before, any process start re-pinned the rows as they were).
#[tokio::test]
async fn only_the_upgrade_pins_the_ledger() {
    let port = common::agent::free_port();
    let mut server = Server::start_with(ServerOptions {
        listen: Some(format!("127.0.0.1:{port}")),
        ..Default::default()
    });
    let mut t = Team::new(&server).await;
    t.publish_active().await;
    let url = server.sqlite_url();
    let forget: [&'static str; 2] = [
        "DELETE FROM registry_ledger",
        "DELETE FROM audit_events WHERE action = 'registry.generation'",
    ];
    // An upgrade from before the ledger: its migration not applied, no table, no events.
    let mut db = common::database_writer(&url).await;
    let upgrade: [&'static str; 3] = [
        "DROP TABLE registry_ledger",
        "DROP INDEX audit_events_action",
        "DELETE FROM _sqlx_migrations WHERE version = 16",
    ];
    for sql in forget.into_iter().chain(upgrade) {
        sqlx::query(sql).execute(&mut db).await.unwrap();
    }
    db.close().await.unwrap();
    assert_eq!(server.stop().code(), Some(0));
    server.restart();
    // A new client: the old one's kept connections went with the old process.
    t.api = Api::new(&server);
    // The upgrade pins what is approved now: it runs.
    assert_eq!(t.planned().await.as_deref(), Some("0.1.0"));
    let mut db = common::database_writer(&url).await;
    let read = "SELECT generation FROM registry_ledger";
    let generation: i64 = sqlx::query_scalar(read).fetch_one(&mut db).await.unwrap();
    assert_eq!(generation, 1);

    // Later, the ledger and its witnesses deleted, and a restart: nothing is pinned. Every
    // sealed thing is unlisted: the listener, and every user's identity (nobody signs in).
    for sql in forget {
        sqlx::query(sql).execute(&mut db).await.unwrap();
    }
    assert_eq!(server.stop().code(), Some(0));
    server.restart();
    t.api = Api::new(&server);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM registry_ledger")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing was pinned");
    db.close().await.unwrap();
    let r = t.api.get("/v1/me", &t.alice).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let log = server.log_text();
    assert!(
        log.contains("ALERT: identity refused")
            && log.contains("no approval in the registry ledger, generation 0"),
        "{log}"
    );
}

/// (5) and the operator's way back: the ledger row rolled back to an older generation with
/// its old, valid seal, or deleted, refuses everything the registry approved (resets stop, and
/// no approval is applied on top of it) until `lockstep registry reseal`.
#[tokio::test]
async fn a_rolled_back_or_deleted_ledger_refuses_everything_until_resealed() {
    let server = Server::start();
    let t = Team::new(&server).await;
    t.publish_active().await;
    let url = server.sqlite_url();
    let mut db = common::database_writer(&url).await;
    let read = "SELECT generation, entries, seal FROM registry_ledger";
    // A key change asked for before anything goes wrong.
    let spare = keygen(t.dir.path(), "spare.key");
    let key_add = t.propose_key(&spare, "spare").await;
    let old: (i64, String, String) = sqlx::query_as(read).fetch_one(&mut db).await.unwrap();
    let v2 = t.signed(wasm(), manifest_v2());
    let c = pending(&t.upload("PUT", LISTENER, &v2).await, "listener-edit");
    t.approve(&change_id(&c)).await;
    let now: (i64, String, String) = sqlx::query_as(read).fetch_one(&mut db).await.unwrap();
    assert_eq!(now.0, old.0 + 1, "one approval, one generation");
    let events = t.audit("action=registry.generation").await;
    let generations: Vec<_> = events
        .iter()
        .map(|e| e["detail"]["generation"].as_i64().unwrap())
        .collect();
    let every: Vec<i64> = (1..=now.0).collect();
    assert_eq!(generations, every, "one event per generation, in order");

    let write = "UPDATE registry_ledger SET generation = $1, entries = $2, seal = $3";
    let roll_back = sqlx::query::<sqlx::Any>(write)
        .bind(old.0)
        .bind(old.1.clone())
        .bind(old.2.clone());
    assert_eq!(roll_back.execute(&mut db).await.unwrap().rows_affected(), 1);
    let reason = ledger_refusal(&t).await;
    let rolled = format!("generation {}, older than generation {}", old.0, now.0);
    assert!(
        reason.contains(&rolled) && reason.contains("reseal"),
        "{reason}"
    );
    // Nothing is approved on top of it: nobody is even authenticated.
    let r = t.decide(&t.bob, &key_add, "approve").await;
    assert_refused(&r, 503, "", "registry ledger");

    // The current row back: it runs again.
    let put_back = sqlx::query::<sqlx::Any>(write)
        .bind(now.0)
        .bind(now.1.clone())
        .bind(now.2.clone());
    assert_eq!(put_back.execute(&mut db).await.unwrap().rows_affected(), 1);
    assert_eq!(t.planned().await.as_deref(), Some("0.2.0"));
    let audited = t.audit("action=registry.integrity&outcome=failure").await;
    assert!(!audited.is_empty(), "the refusal is audited");
    assert_eq!(t.key_status(&spare.id).await, "pending");

    // Deleted: the audit trail says there was one.
    let delete = sqlx::query::<sqlx::Any>("DELETE FROM registry_ledger");
    assert_eq!(delete.execute(&mut db).await.unwrap().rows_affected(), 1);
    let reason = ledger_refusal(&t).await;
    assert!(
        reason.contains("missing") && reason.contains(&format!("generation {}", now.0)),
        "{reason}"
    );
    db.close().await.unwrap();

    // The operator checks the rows and reseals from those whose seals verify.
    let mut args = vec!["registry", "reseal"];
    args.extend(server.store_args.iter().map(String::as_str));
    let (status, out, err) = lockstep(&args);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains(&format!("generation {}", now.0 + 1)), "{out}");
    assert!(
        out.contains("1 listener(s), 1 publisher key(s), 0 reset command(s)"),
        "{out}"
    );
    assert_eq!(t.planned().await.as_deref(), Some("0.2.0"));
    let resealed = t.audit("action=registry.resealed").await;
    assert_eq!(resealed.len(), 1, "{resealed:?}");
    assert!(resealed[0]["actor"].as_str().unwrap().starts_with("cli:"));
    assert_eq!(resealed[0]["detail"]["generation"], now.0 + 1);
    // Approvals go on from there.
    t.approve(&key_add).await;
    assert_eq!(t.key_status(&spare.id).await, "trusted");
    let chain = t.get("/v1/audit/verify").await;
    assert_eq!(chain["intact"], true, "{chain}");
}

#[tokio::test]
async fn reports_show_where_a_listener_runs_and_what_awaits_approval() {
    let server = Server::start();
    let t = Team::new(&server).await;
    let mut made = Vec::new();
    for (name, kind) in [
        ("l1", "Linux"),
        ("l2", "Linux"),
        ("w1", "Windows"),
        ("a1", "AIX"),
    ] {
        let body = json!({"name": name, "resource_type": kind});
        let r = t.api.post("/v1/resources", &t.root, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        made.push(r.json()["id"].as_str().unwrap().to_string());
    }

    let linux_windows = association(&["agentless"], &["Linux", "Windows"], 10, &["DC1"]);
    let upload = t.signed(wasm(), manifest());
    let upload = upload.with_association(linux_windows.clone());
    let add = change_id(&pending(&t.add(&upload).await, "listener-add"));
    let c = t.get(&format!("/v1/change-requests/{add}")).await;
    assert_eq!(c["association"], linux_windows, "{c}");
    let spare = keygen(t.dir.path(), "spare.key");
    let key_add = t.propose_key(&spare, "spare").await;

    let both = BTreeSet::from([add.clone(), key_add.clone()]);
    assert_eq!(t.pending_ids().await, both);
    t.approve(&add).await;
    assert_eq!(t.pending_ids().await, BTreeSet::from([key_add.clone()]));
    let every = all_pages(&t.api, &t.root, "/v1/change-requests").await;
    let expected = BTreeSet::from([t.key_change.clone(), add.clone(), key_add]);
    assert_eq!(ids(&every), expected);

    // The report is paginated like every list.
    let report = format!("{LISTENER}/resources");
    let first = t.get(&format!("{report}?limit=2")).await;
    assert_eq!(page(&first).len(), 2, "{first}");
    assert!(first["next"].is_string(), "{first}");
    let all = all_pages(&t.api, &t.alice, &format!("{report}?limit=2")).await;
    let linux_and_windows: BTreeSet<String> = made[..3].iter().cloned().collect();
    assert_eq!(ids(&all), linux_and_windows);

    let plan = t.plan("Windows").await;
    let planned = entry(&plan, "listeners", "change-freeze");
    let planned = planned.unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(planned["order"], 10);
    assert_eq!(planned["parameters"], json!(["DC1"]));
    let aix = t.plan("AIX").await;
    assert!(entry(&aix, "listeners", "change-freeze").is_none(), "{aix}");

    // A new association is a change request too, for the same version.
    let windows = association(&["agentless"], &["Windows"], 20, &[]);
    let body = json!({"association": windows, "approver": "bob", "comment": "Windows only"});
    let path = format!("{LISTENER}/association");
    let r = t.api.call("PUT", &path, Some(&t.alice), Some(body)).await;
    let c = pending(&r, "listener-edit");
    assert_eq!(c["version"], "0.1.0");
    let unchanged = all_pages(&t.api, &t.alice, &report).await;
    assert_eq!(unchanged.len(), 3, "unchanged until approved");
    t.approve(&change_id(&c)).await;
    let windows_only = all_pages(&t.api, &t.alice, &report).await;
    assert_eq!(ids(&windows_only), BTreeSet::from([made[2].clone()]));
    assert_eq!(t.planned().await, None);
}

#[tokio::test]
async fn removing_a_publisher_key_waits_for_approval_then_stops_its_listeners() {
    let server = Server::start();
    let t = Team::new(&server).await;
    t.publish_active().await;

    let path = format!("/v1/publisher-keys/{}?approver=bob", t.key.id);
    let r = t.api.call("DELETE", &path, Some(&t.alice), None).await;
    let c = pending(&r, "key-remove");
    assert_eq!(c["key_id"], t.key.id.as_str());
    assert_eq!(t.key_status(&t.key.id).await, "trusted");
    assert_eq!(t.planned().await.as_deref(), Some("0.1.0"));

    t.approve(&change_id(&c)).await;
    assert_eq!(t.key_status(&t.key.id).await, "removed");
    let reason = t.refusal().await;
    assert!(reason.contains("key"), "{reason}");
    assert!(t.alert().await.is_string());

    // Nor does the server accept anything new signed with it.
    let v2 = t.signed(wasm(), manifest_v2());
    let r = t.upload("PUT", LISTENER, &v2).await;
    assert_refused(&r, 422, "signature", &t.key.id);
}

#[tokio::test]
async fn publish_signs_and_uploads_with_the_token_from_the_environment_only() {
    let server = Server::start();
    let t = Team::new(&server).await;
    let wasm_file = t.dir.path().join("change_freeze.wasm");
    std::fs::write(&wasm_file, wasm()).unwrap();
    let manifest_file = manifest_path();
    let mut args = vec![
        "listener",
        "publish",
        wasm_file.to_str().unwrap(),
        "--manifest",
        manifest_file.to_str().unwrap(),
        "--key",
        t.key.path.to_str().unwrap(),
        "--server",
        server.base.as_str(),
        "--approver",
        "bob",
    ];
    let (status, stdout, stderr) = lockstep_env(&args, &[("LOCKSTEP_TOKEN", t.alice.as_str())]);
    assert!(status.success(), "{stdout}{stderr}");
    let start = stdout.find("chg_");
    let start = start.unwrap_or_else(|| panic!("no change request id: {stdout}"));
    let id: String = stdout[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let c = t.get(&format!("/v1/change-requests/{id}")).await;
    assert_eq!(c["kind"], "listener-add", "{c}");
    assert_eq!(c["status"], "pending");
    assert_eq!(c["listener"], "change-freeze");
    assert_eq!(c["requested_by"], "alice");
    assert_eq!(c["approver"], "bob");
    assert_eq!(c["key_id"], t.key.id.as_str());

    // A token on the command line is visible to every user of the machine: refused.
    args.extend(["--token", t.alice.as_str()]);
    let (status, stdout, stderr) = lockstep(&args);
    assert!(!status.success(), "{stdout}");
    assert!(stderr.contains("LOCKSTEP_TOKEN"), "{stderr}");
    assert_eq!(t.pending_ids().await, BTreeSet::from([id]));
}

/// A minimal SMTP server on loopback: accepts every message and hands over each one's
/// envelope recipients and data.
fn smtp_sink() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut input = BufReader::new(conn);
                let mut mail = String::new();
                let mut say = |s: &str| out.write_all(s.as_bytes()).is_ok();
                say("220 sink ESMTP\r\n");
                let mut line = String::new();
                while input.read_line(&mut line).unwrap_or(0) > 0 {
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let ok = match verb.as_str() {
                        "EHLO" => say("250-sink\r\n250 8BITMIME\r\n"),
                        "RCPT" => {
                            mail.push_str(&line);
                            say("250 OK\r\n")
                        }
                        "DATA" => {
                            say("354 go on\r\n");
                            line.clear();
                            while input.read_line(&mut line).unwrap_or(0) > 0 && line != ".\r\n" {
                                mail.push_str(&line);
                                line.clear();
                            }
                            let _ = tx.send(std::mem::take(&mut mail));
                            say("250 queued\r\n")
                        }
                        "QUIT" => {
                            say("221 bye\r\n");
                            false
                        }
                        _ => say("250 OK\r\n"),
                    };
                    if !ok {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn approvers_are_mailed_when_the_server_has_an_smtp_relay() {
    let (port, mails) = smtp_sink();
    let server = Server::start_with(ServerOptions {
        extra: vec![
            "--smtp-url".into(),
            format!("smtp://127.0.0.1:{port}"),
            "--smtp-from".into(),
            "lockstep@test.example".into(),
        ],
        ..Default::default()
    });
    let api = Api::new(&server);
    let root = server.root_token.clone();
    let bad = json!({"name": "eve", "role": "admin", "email": "eve@example.com\r\nBcc: x@y.z"});
    assert_refused(&api.post("/v1/users", &root, bad).await, 422, "email", "");
    // alice through the API (root becomes her custodian), bob by the host's operator (so he
    // is independent of her and may be named as her approver).
    let body = json!({"name": "alice", "role": "admin", "email": "alice@example.com"});
    let r = api.post("/v1/users", &root, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["email"], "alice@example.com");
    let code = r.json()["activation"]["activation_code"]
        .as_str()
        .unwrap()
        .to_string();
    let alice = common::activate(&api, "alice", &code).await;
    let mut store: Vec<&str> = api.store_args.iter().map(String::as_str).collect();
    store.extend(["--email", "bob@example.com"]);
    common::admin_create(&store, "bob", "admin");
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "ci.key");
    let body = json!({"name": "ci", "public_key": key.public, "approver": "bob"});
    let r = api.post("/v1/publisher-keys", &alice, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let chg = r.json()["id"].as_str().unwrap().to_string();

    let mail = mails
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("no mail reached the relay")
        // Undo quoted-printable soft line breaks.
        .replace("=\r\n", "");
    assert!(mail.contains("<bob@example.com>"), "{mail}");
    assert!(mail.contains("From: lockstep@test.example"), "{mail}");
    assert!(
        mail.contains("Subject: [Lockstep] approval-requested"),
        "{mail}"
    );
    assert!(mail.contains(&chg), "{mail}");
    let logged = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        server.log_text().contains("mailed notification")
    });
    assert!(logged, "{}", server.log_text());
}
