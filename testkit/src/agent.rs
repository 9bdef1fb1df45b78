//! `lockstep-agent` processes for tests, each inside an SSH target's mount and UTS namespaces:
//! they see the target's private `/etc` (so their resets change only its private shadow file)
//! and share the host's loopback, where the server listens.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::sshd::SshTarget;
use super::{Api, Server, ServerOptions};

/// The agent of one target. Killed on drop.
pub struct AgentHost {
    ns_pid: u32,
    pub dir: PathBuf,
    child: Option<Child>,
    runs: usize,
}

fn agent_bin() -> PathBuf {
    let bin = super::lockstep_bin().with_file_name("lockstep-agent");
    assert!(
        bin.exists(),
        "{} is missing; run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

impl AgentHost {
    /// Puts a copy of the agent binary where the target's namespaces can see it (its state
    /// dir; the build dir under /root is hidden there).
    pub fn new(target: &SshTarget) -> AgentHost {
        let dir = target.state.path().join("agent");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(agent_bin(), dir.join("lockstep-agent")).unwrap();
        AgentHost {
            ns_pid: target.namespace_pid(),
            dir,
            child: None,
            runs: 0,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.ns_pid.to_string(), "-m", "-u", "--"])
            .arg(self.dir.join("lockstep-agent"))
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env("LOCKSTEP_AGENT_LOG", "info");
        c
    }

    /// `lockstep-agent enroll`, the token on stdin.
    pub fn enroll(&self, server: &str, fingerprint: &str, token: &str) -> Output {
        self.enroll_pinning(server, fingerprint, token, &[])
    }

    /// `lockstep-agent enroll` pinning the publisher keys in `publisher_keys` (`FILE.pub`s).
    pub fn enroll_pinning(
        &self,
        server: &str,
        fingerprint: &str,
        token: &str,
        publisher_keys: &[PathBuf],
    ) -> Output {
        self.enroll_with(&[(server, fingerprint)], token, publisher_keys)
    }

    /// `lockstep-agent enroll` with several server nodes, each `(URL, fingerprint)`: the token
    /// is spent on the first.
    pub fn enroll_nodes(&self, nodes: &[(&str, &str)], token: &str) -> Output {
        self.enroll_with(nodes, token, &[])
    }

    fn enroll_with(
        &self,
        nodes: &[(&str, &str)],
        token: &str,
        publisher_keys: &[PathBuf],
    ) -> Output {
        let state = self.dir.join("state");
        let mut args = vec!["enroll"];
        for (server, fingerprint) in nodes {
            args.extend(["--server", server, "--fingerprint", fingerprint]);
        }
        args.extend([
            "--token-file",
            "-",
            "--state-dir",
            state.to_str().unwrap(),
            "--poll-interval",
            "2",
        ]);
        for k in publisher_keys {
            args.push("--publisher-key");
            args.push(k.to_str().unwrap());
        }
        let mut child = self
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run lockstep-agent enroll");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{token}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// `lockstep-agent ARGS` (not `run`) to completion.
    pub fn command_output(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run lockstep-agent")
    }

    /// Edits one `[accounts]` setting of the written configuration.
    pub fn set_account_option(&self, key: &str, value: &str) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        let mut out = String::new();
        let mut done = false;
        for line in text.lines() {
            if line.starts_with(&format!("{key} =")) {
                out.push_str(&format!("{key} = {value}\n"));
                done = true;
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        assert!(done, "no {key} in the agent configuration:\n{text}");
        std::fs::write(self.config(), out).unwrap();
    }

    /// `lockstep-agent run`, logging to `run-N.log`.
    pub fn start(&mut self) {
        self.runs += 1;
        let log = std::fs::File::create(self.dir.join(format!("run-{}.log", self.runs))).unwrap();
        let child = self
            .command(&["run"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run lockstep-agent");
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The log of the current (or last) run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("run-{}.log", self.runs))).unwrap_or_default()
    }

    /// Waits until the current run's log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            if Instant::now() > deadline {
                panic!("the agent never logged '{needle}':\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentHost {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TLS server on a fixed port (an agent's configuration names it across restarts).
pub fn tls_server() -> Server {
    Server::start_with(ServerOptions {
        dev: false,
        listen: Some(format!("127.0.0.1:{}", free_port())),
        ..Default::default()
    })
}

pub fn fingerprint(server: &Server) -> String {
    std::fs::read_to_string(server.data_dir().join("tls/fingerprint"))
        .unwrap()
        .trim()
        .to_string()
}

pub async fn enrollment_token(api: &Api, root: &str, body: Value) -> String {
    let r = api.post("/v1/agent-tokens", root, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["token"].as_str().unwrap().to_string()
}

/// Enrolls and starts the agent of `t`; returns it and its resource's id once discovery has
/// registered the machine.
pub async fn enrolled_agent(
    api: &Api,
    root: &str,
    server: &Server,
    t: &SshTarget,
) -> (AgentHost, String) {
    enrolled_agent_pinning(api, root, server, t, &[]).await
}

/// [`enrolled_agent`] trusting the listener publishers whose `FILE.pub`s are given.
pub async fn enrolled_agent_pinning(
    api: &Api,
    root: &str,
    server: &Server,
    t: &SshTarget,
    publisher_keys: &[PathBuf],
) -> (AgentHost, String) {
    let mut agent = AgentHost::new(t);
    let token = enrollment_token(api, root, json!({})).await;
    let out = agent.enroll_pinning(&server.base, &fingerprint(server), &token, publisher_keys);
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.start();
    agent.wait_for_log("discovery registered", Duration::from_secs(30));
    let agents = api.get("/v1/agents", root).await.json();
    let rid = agents[0]["resource_id"]
        .as_str()
        .expect("resource registered")
        .to_string();
    (agent, rid)
}

pub async fn accounts_of(api: &Api, root: &str, rid: &str) -> Vec<Value> {
    api.get(&format!("/v1/resources/{rid}/accounts"), root)
        .await
        .json()["items"]
        .as_array()
        .unwrap()
        .clone()
}

pub fn account_id(accounts: &[Value], login: &str) -> String {
    accounts
        .iter()
        .find(|a| a["login_name"] == login)
        .unwrap_or_else(|| panic!("no account {login} in {accounts:?}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}
