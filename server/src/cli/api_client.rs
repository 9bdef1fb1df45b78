//! The command line's client of the HTTP API (`lockstep listener publish`, `lockstep reset`):
//! the server's address, a CA certificate to trust, and the token, which never comes from argv.

use std::path::Path;

use clap::Args;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::cli::listener_files::{read_bytes, read_text};
use crate::error::{Error, Result};

/// How to reach the server, shared by every command that calls the API.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server, e.g. https://lockstep.example.com:7470.
    #[arg(long, env = "LOCKSTEP_SERVER")]
    pub server: String,
    /// A file holding the API token (instead of LOCKSTEP_TOKEN).
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// Refused: a token on the command line is readable by every local user. Use
    /// LOCKSTEP_TOKEN or --token-file.
    #[arg(long, hide = true)]
    pub token: Option<String>,
    /// A PEM CA certificate to trust (the server's self-signed cert.pem).
    #[arg(long)]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// The API token: `--token-file` or `LOCKSTEP_TOKEN`; never argv.
pub fn token(token_file: Option<&Path>, argv_token: Option<&str>) -> Result<Zeroizing<String>> {
    if argv_token.is_some() {
        return Err(Error::Config(
            "--token: a token on the command line is readable by every local user (/proc/*/cmdline); \
             set LOCKSTEP_TOKEN or use --token-file"
                .into(),
        ));
    }
    let text = match token_file {
        Some(path) => Zeroizing::new(read_text(path, "token file")?),
        None => Zeroizing::new(std::env::var("LOCKSTEP_TOKEN").map_err(|_| {
            Error::Config("no API token: set LOCKSTEP_TOKEN or use --token-file".into())
        })?),
    };
    Ok(Zeroizing::new(text.trim().to_string()))
}

/// An authenticated client of one server.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Zeroizing<String>,
}

impl ApiClient {
    pub fn new(args: &ServerArgs) -> Result<ApiClient> {
        let token = token(args.token_file.as_deref(), args.token.as_deref())?;
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &args.ca_cert {
            let pem = read_bytes(path, "CA certificate")?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| Error::Config(format!("CA certificate {}: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build an HTTPS client: {e}")))?;
        Ok(ApiClient {
            http,
            base: args.server.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// A request to `path` (starting with `/v1/`), with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str())
    }

    /// Sends; `Ok(Ok(body))` on success, `Ok(Err(problem))` when the server refused, with its
    /// problem document in words.
    pub async fn send(
        &self,
        request: RequestBuilder,
    ) -> Result<std::result::Result<Value, String>> {
        let response = request
            .send()
            .await
            .map_err(|e| Error::Config(format!("cannot reach {}: {e}", self.base)))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(Ok(body));
        }
        let errors = body["errors"].as_array().filter(|e| !e.is_empty());
        let mut problem = match errors {
            // The detail repeats the field problems; list them one per line instead.
            Some(_) => format!("the server refused ({status}):"),
            None => format!(
                "the server refused ({status}): {}",
                body["detail"].as_str().unwrap_or("no details")
            ),
        };
        for e in errors.into_iter().flatten() {
            problem.push_str(&format!(
                "\n  {}: {}",
                e["field"].as_str().unwrap_or("?"),
                e["problem"].as_str().unwrap_or("?")
            ));
        }
        Ok(Err(problem))
    }

    /// Every item of the list at `path` (filtered by `query`), page after page, each given to
    /// `each`; `Ok(Err(problem))` when the server refused a page.
    pub async fn each_item(
        &self,
        path: &str,
        query: &[(&str, String)],
        mut each: impl FnMut(&Value),
    ) -> Result<std::result::Result<(), String>> {
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let page = match self.send(self.request(Method::GET, path).query(&q)).await? {
                Ok(page) => page,
                Err(problem) => return Ok(Err(problem)),
            };
            page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .for_each(&mut each);
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(Ok(())),
            }
        }
    }
}
