//! An agent simulated in the test process: it speaks the real protocol (enrollment, signed
//! requests, long-poll, reports) but changes no password. For benchmarks of the server and the
//! channel, and for tests that need to shape a request by hand (a replay).

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use lockstep_agent_protocol::messages::{
    Discovery, EnrollRequest, EnrollResponse, LocalAccount, Outcome, Password, Task, TaskResult,
};

/// An agent speaking the protocol from this process.
#[derive(Clone)]
pub struct SimAgent {
    pub http: reqwest::Client,
    pub base: String,
    pub id: String,
    key: Arc<SigningKey>,
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut &f, &mut b).unwrap();
    b
}

impl SimAgent {
    pub async fn enroll(http: &reqwest::Client, base: &str, token: &str, name: &str) -> SimAgent {
        let key = SigningKey::from_bytes(&random_bytes::<32>());
        let body = EnrollRequest {
            token: Password::new(token.into()),
            public_key: lockstep_agent_protocol::auth::encode_public_key(&key.verifying_key()),
            hostname: name.into(),
            version: "bench".into(),
        };
        let r = http
            .post(format!("{base}{}", lockstep_agent_protocol::ENROLL_PATH))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let e: EnrollResponse = r.json().await.unwrap();
        SimAgent {
            http: http.clone(),
            base: base.into(),
            id: e.agent_id,
            key: Arc::new(key),
        }
    }

    /// A fresh `Authorization` header (a new nonce, the current time) for one request.
    pub fn authorization(&self, method: &str, path: &str, body: &[u8]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        lockstep_agent_protocol::auth::authorization(
            &self.id,
            &self.key,
            method,
            path,
            now,
            &hex::encode(random_bytes::<8>()),
            body,
        )
    }

    /// A request signed afresh.
    pub fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let auth = self.authorization(method.as_str(), path, &body);
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", auth);
        if !body.is_empty() {
            r = r.header("content-type", "application/json").body(body);
        }
        r
    }

    pub async fn discover(&self, login: &str) -> String {
        let d = Discovery {
            hostname: format!("bench-{}", &self.id[self.id.len() - 8..]),
            os: "bench".into(),
            addresses: vec!["127.0.0.1".into()],
            accounts: vec![LocalAccount {
                login_name: login.into(),
                uid: 1001,
                description: None,
            }],
        };
        let r = self
            .signed(
                reqwest::Method::POST,
                lockstep_agent_protocol::DISCOVERY_PATH,
                serde_json::to_vec(&d).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        v["resource_id"].as_str().unwrap().to_string()
    }

    /// One poll: a task, `None` for 204; `Err` once the server is gone (the run ended).
    pub async fn next(&self, session: &str, wait: u64) -> Result<Option<Task>, reqwest::Error> {
        let path = format!(
            "{}?session={session}&wait={wait}",
            lockstep_agent_protocol::NEXT_TASK_PATH
        );
        let r = self
            .signed(reqwest::Method::GET, &path, Vec::new())
            .timeout(Duration::from_secs(wait + 30))
            .send()
            .await?;
        match r.status().as_u16() {
            204 => Ok(None),
            200 => Ok(Some(r.json().await?)),
            s => panic!("poll answered {s}: {}", r.text().await.unwrap_or_default()),
        }
    }

    /// One held poll of an idle fleet member; false once the server is gone (the run ended).
    pub async fn hold(&self, session: &str) -> bool {
        let path = format!(
            "{}?session={session}&wait=60",
            lockstep_agent_protocol::NEXT_TASK_PATH
        );
        match self
            .signed(reqwest::Method::GET, &path, Vec::new())
            .timeout(Duration::from_secs(90))
            .send()
            .await
        {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    pub async fn report(&self, session: &str, task: &str) {
        let body = TaskResult {
            session: session.into(),
            outcome: Outcome::Succeeded,
            message: "bench".into(),
            listener: None,
        };
        let r = self
            .signed(
                reqwest::Method::POST,
                &lockstep_agent_protocol::result_path(task),
                serde_json::to_vec(&body).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}
