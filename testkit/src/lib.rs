//! The test kit: what the workspace's tests, benchmarks and examples share, as a normal
//! dev-dependency (`use lockstep_testkit as common;`) instead of files included by path.
//!
//! - the root: a real `lockstep` process on loopback ([`Server`], [`spawn_serve`]), its log, a
//!   JSON client ([`Api`]), the CLI ([`lockstep`], [`admin_create`]) and users;
//! - [`postgres`]: a fresh PostgreSQL database per test, dropped by its guard whatever the
//!   test's outcome;
//! - [`sshd`]: real OpenSSH reset targets in namespaces; [`agent`]: `lockstep-agent`
//!   processes inside them; [`sim_agent`]: an agent simulated in the test process;
//! - [`registry`]: listeners approved the way production does; [`listeners`]: the components
//!   in `listeners/`, built by `scripts/build-listeners.sh`; [`components`]: hand-written
//!   hostile components;
//! - with the `server` feature: `resets` (waiting for jobs, reading the vault, logging in on a
//!   target with the server's own SSH client) and `soak` (the crash-kill soak).
//!
//! **Dependencies.** `lockstep-server` depends on `lockstep-runtime`, and the runtime's own
//! tests use [`components`] and [`listeners`]. So the only link to the server is optional,
//! behind the `server` feature (which `lockstep-tests` turns on): the runtime and the server
//! dev-depend on this crate without it, and a build of either alone (`-p`) never builds the
//! server for a dev-dependency. In a `--workspace` build cargo unifies the feature, so the
//! runtime's and the server's test binaries see it on; that is a dev-dependency cycle, which
//! cargo allows, and their tests link the same `lockstep-server` library the test kit does.
//!
//! Not a product crate: the tidy test's layering rules (no SQL outside the store, no HTTP
//! outside the API) do not apply here, but `every_dependency_is_used` does.

pub mod agent;
pub mod components;
pub mod db_resource;
pub mod listeners;
pub mod mariadb;
pub mod pg_cluster;
pub mod postgres;
pub mod registry;
#[cfg(feature = "server")]
pub mod resets;
pub mod samba_dc;
pub mod sim_agent;
#[cfg(feature = "server")]
pub mod soak;
pub mod sshd;

pub use postgres::{PostgresDatabase, postgres_database};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `lockstep` binary built beside this test (scripts/test.sh builds every binary first).
pub fn lockstep_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("lockstep");
    assert!(
        bin.exists(),
        "{} is missing; run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// Runs `lockstep ARGS` to completion, returning (status, stdout, stderr).
pub fn lockstep(args: &[&str]) -> (ExitStatus, String, String) {
    lockstep_env(args, &[])
}

pub fn lockstep_env(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = Command::new(lockstep_bin())
        .args(args)
        .envs(env.iter().copied())
        .env("LOCKSTEP_LOG", "info")
        .output()
        .expect("run lockstep");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `lockstep ARGS --server … [--ca-cert …]` against `api`'s server as `token`'s user (the
/// CLI's API commands): (status, stdout, stderr).
pub fn lockstep_as(api: &Api, token: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--server".into(), api.base.clone()]);
    if let Some(ca) = &api.ca_cert {
        all.extend(["--ca-cert".into(), ca.to_str().unwrap().into()]);
    }
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    lockstep_env(&all, &[("LOCKSTEP_TOKEN", token)])
}

/// A database connection beside the running server, as a database writer without the master
/// key has one (SQLite waits for the server's writer).
pub async fn database_writer(db_url: &str) -> sqlx::AnyConnection {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(db_url).await.expect("connect");
    if db_url.starts_with("sqlite:") {
        db.execute("PRAGMA busy_timeout = 10000").await.unwrap();
    }
    db
}

/// Creates a user through the CLI and returns its token (the last line of stdout).
pub fn admin_create(store_args: &[&str], name: &str, role: &str) -> String {
    let mut args = vec!["admin", "create", name, "--role", role];
    args.extend_from_slice(store_args);
    let (status, stdout, stderr) = lockstep(&args);
    assert!(status.success(), "admin create failed: {stderr}");
    stdout
        .lines()
        .last()
        .expect("token line")
        .trim()
        .to_string()
}

/// A running server. Stopped with SIGTERM on drop.
pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub log: PathBuf,
    pub root_token: String,
    /// `--data-dir` (and `--database-url`) of its store.
    pub store_args: Vec<String>,
    /// The `lockstep serve` arguments, to start it again.
    args: Vec<String>,
    dev: bool,
}

pub struct ServerOptions {
    pub dev: bool,
    pub extra: Vec<String>,
    pub database_url: Option<String>,
    /// `--listen` (default `127.0.0.1:0`); a fixed port survives restarts.
    pub listen: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            dev: true,
            extra: Vec::new(),
            database_url: None,
            listen: None,
        }
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(ServerOptions::default())
    }

    pub fn start_with(opts: ServerOptions) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let data_s = data.to_str().expect("utf-8 path").to_string();
        let mut store_args = vec!["--data-dir".to_string(), data_s.clone()];
        if let Some(url) = &opts.database_url {
            store_args.push("--database-url".into());
            store_args.push(url.clone());
        }
        let store_refs: Vec<&str> = store_args.iter().map(String::as_str).collect();
        let root_token = admin_create(&store_refs, "root", "privileged-admin");
        let log = dir.path().join("server.log");
        let listen = opts.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        let mut args = vec!["serve".to_string(), "--listen".into(), listen];
        args.extend(store_args.iter().cloned());
        if opts.dev {
            args.push("--dev".into());
        }
        args.extend(opts.extra.iter().cloned());
        let (child, base) = spawn_serve(&args, &[], &log, opts.dev);
        Server {
            child,
            dir,
            base,
            log,
            root_token,
            store_args,
            args,
            dev: opts.dev,
        }
    }

    /// Starts another node of `first`'s deployment: its own data directory (listener cache,
    /// TLS), `first`'s database (which must be PostgreSQL) and master key. `extra` are more
    /// `serve` options. Its root token is `first`'s.
    pub fn join(first: &Server, extra: &[&str]) -> Server {
        Server::join_with_env(first, extra, &[])
    }

    /// [`Server::join`] with more environment for the new node's process (`LD_PRELOAD` of a
    /// fake clock, say).
    pub fn join_with_env(first: &Server, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let url = first
            .store_args
            .iter()
            .skip_while(|a| *a != "--database-url")
            .nth(1)
            .expect("a node joins a deployment on a shared database (--database-url)")
            .clone();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let data_s = data.to_str().expect("utf-8 path").to_string();
        let key = first.data_dir().join("master.key");
        let store_args = vec![
            "--data-dir".to_string(),
            data_s,
            "--database-url".into(),
            url,
        ];
        let mut args = vec!["serve".to_string(), "--listen".into(), "127.0.0.1:0".into()];
        args.extend(store_args.iter().cloned());
        args.push("--master-key-file".into());
        args.push(key.to_str().expect("utf-8 path").to_string());
        if first.dev {
            args.push("--dev".into());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = dir.path().join("server.log");
        let (child, base) = spawn_serve(&args, env, &log, first.dev);
        Server {
            child,
            dir,
            base,
            log,
            root_token: first.root_token.clone(),
            store_args,
            args,
            dev: first.dev,
        }
    }

    /// Kills the server with SIGKILL (no chance to clean up) and starts it again on the same
    /// data; the new log goes to `server-N.log`. Returns the new base URL.
    pub fn kill_and_restart(&mut self) -> String {
        self.kill();
        self.restart()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same data (after `kill`); returns the new base URL.
    pub fn restart(&mut self) -> String {
        let n = std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        self.log = self.dir.path().join(format!("server-{n}.log"));
        let (child, base) = spawn_serve(&self.args, &[], &self.log, self.dev);
        self.child = child;
        self.base = base.clone();
        base
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URL of its SQLite database (the default store in its data directory).
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.data_dir().join("lockstep.db").display())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// Starts `lockstep ARGS` with its output in `log` and waits until it listens; returns the
/// child and its base URL (`http://localhost:PORT` or `https://...`).
pub fn spawn_serve(
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
    dev: bool,
) -> (Child, String) {
    let log_file = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(lockstep_bin())
        .args(args)
        .envs(env.iter().copied())
        .env("LOCKSTEP_LOG", "info,tower_http=debug")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("dup"))
        .stderr(log_file)
        .spawn()
        .expect("spawn lockstep serve");
    let scheme = if dev { "http" } else { "https" };
    let needle = format!("lockstep listening on {scheme}://");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(i) = text.find(&needle) {
            let rest = &text[i + needle.len()..];
            let addr = rest
                .split_whitespace()
                .next()
                .expect("addr")
                .replace("127.0.0.1", "localhost");
            return (child, format!("{scheme}://{addr}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("lockstep serve exited with {status}:\n{text}");
        }
        assert!(Instant::now() < deadline, "server did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A small JSON client.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    /// `--data-dir`/`--database-url` of the server, for CLI commands on its store.
    pub store_args: Vec<String>,
    /// The server's certificate when it serves HTTPS (for the CLI's `--ca-cert`).
    pub ca_cert: Option<PathBuf>,
}

/// A response: status, content type and body text (parsed as JSON where possible).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

impl Reply {
    async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.expect("body");
        Reply {
            status,
            content_type,
            text,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl Api {
    pub fn new(server: &Server) -> Api {
        let mut http = reqwest::Client::builder();
        let mut ca_cert = None;
        if server.base.starts_with("https://") {
            // Trust exactly the server's own self-signed certificate.
            let path = server.data_dir().join("tls/cert.pem");
            let pem = std::fs::read(&path).expect("cert.pem");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"));
            ca_cert = Some(path);
        }
        Api {
            http: http.build().expect("client"),
            base: server.base.clone(),
            store_args: server.store_args.clone(),
            ca_cert,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Reply::read(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// Sends raw bytes with a content type.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        // A fresh connection: a server may close one after refusing an oversized body, and a
        // pooled connection reused after that would fail the next request.
        let http = reqwest::Client::new();
        let mut req = http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(token)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Reply::read(req.send().await.expect("request")).await
    }
}

/// Creates an independent user with `role`, as an operator bootstraps administrators (the
/// host's `lockstep admin create`, so nobody else holds custody of it), and returns its token.
pub async fn user_with_role(api: &Api, _root: &str, name: &str, role: &str) -> String {
    let store: Vec<&str> = api.store_args.iter().map(String::as_str).collect();
    admin_create(&store, name, role)
}

/// Creates a user through the API as `creator` (who becomes its custodian), spends its
/// activation code as the new user would, and returns the new user's token.
pub async fn api_user(api: &Api, creator: &str, name: &str, role: &str) -> String {
    let r = api
        .post(
            "/v1/users",
            creator,
            serde_json::json!({ "name": name, "role": role }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let code = r.json()["activation"]["activation_code"]
        .as_str()
        .expect("activation code")
        .to_string();
    activate(api, name, &code).await
}

/// Spends an activation code (no bearer token); returns the first token.
pub async fn activate(api: &Api, name: &str, code: &str) -> String {
    let r = api
        .call(
            "POST",
            "/v1/activate",
            None,
            Some(serde_json::json!({ "name": name, "activation_code": code })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["token"].as_str().expect("token").to_string()
}

/// Every audit event with `action` (every event if empty), across all pages.
pub async fn audit_events(api: &Api, token: &str, action: &str) -> Vec<Value> {
    let filter = if action.is_empty() {
        String::new()
    } else {
        format!("action={action}&")
    };
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api
            .get(&format!("/v1/audit?{filter}limit=100{cursor}"), token)
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        let page = page.json();
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

/// Creates a resource and one account on it with `password`; returns (resource id, account id).
pub async fn resource_with_account(
    api: &Api,
    token: &str,
    name: &str,
    resource_type: &str,
    login: &str,
    password: &str,
) -> (String, String) {
    let res = api
        .post(
            "/v1/resources",
            token,
            serde_json::json!({ "name": name, "resource_type": resource_type }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let rid = res.json()["id"].as_str().expect("resource id").to_string();
    let acc = api
        .post(
            &format!("/v1/resources/{rid}/accounts"),
            token,
            serde_json::json!({ "login_name": login, "password": password }),
        )
        .await;
    assert_eq!(acc.status, 201, "{}", acc.text);
    let aid = acc.json()["id"].as_str().expect("account id").to_string();
    (rid, aid)
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    let f = std::fs::File::open("/dev/urandom").expect("urandom");
    std::io::Read::read_exact(&mut &f, &mut b).expect("read urandom");
    hex::encode(b)
}
