//! `lockstep agent token|list|revoke`: the administrator's side of agents, through the API.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

use reqwest::Method;
use serde_json::json;

use crate::cli::api_client::ApiClient;
use crate::cli::args::AgentCommand;
use crate::error::{Error, Result};

pub async fn run(command: AgentCommand) -> Result<ExitCode> {
    match command {
        AgentCommand::Token {
            owner,
            expires_in,
            allow,
            out,
            server,
        } => {
            let client = ApiClient::new(&server)?;
            let mut body = json!({ "allowed_networks": allow });
            if let Some(o) = owner {
                body["owner"] = json!(o);
            }
            if let Some(e) = expires_in {
                body["expires_in_secs"] = json!(e);
            }
            let issued = match client
                .send(client.request(Method::POST, "/v1/agent-tokens").json(&body))
                .await?
            {
                Ok(v) => v,
                Err(problem) => {
                    eprintln!("lockstep: {problem}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let token = zeroize::Zeroizing::new(issued["token"].as_str().unwrap_or("").to_string());
            match out {
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(Error::io(format!("cannot create {}", path.display())))?;
                    f.write_all(format!("{}\n", token.as_str()).as_bytes())
                        .map_err(Error::io(format!("cannot write {}", path.display())))?;
                    eprintln!("token written to {}", path.display());
                }
                None => println!("{}", token.as_str()),
            }
            eprintln!(
                "owner {}, expires {}, allowed from {}; on the machine: lockstep-agent enroll \
                 --server {} --fingerprint <the server's DATA_DIR/tls/fingerprint> --token-file FILE",
                issued["owner"].as_str().unwrap_or("?"),
                issued["expires_at"].as_str().unwrap_or("?"),
                match issued["allowed_networks"].as_array() {
                    Some(a) if !a.is_empty() => a
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    _ => "anywhere".into(),
                },
                server.server
            );
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::List { server } => {
            let client = ApiClient::new(&server)?;
            match client
                .send(client.request(Method::GET, "/v1/agents"))
                .await?
            {
                Ok(v) => {
                    for a in v.as_array().into_iter().flatten() {
                        println!(
                            "{}  {:<8} {:<24} owner {:<12} resource {}  last seen {}",
                            a["id"].as_str().unwrap_or("?"),
                            a["status"].as_str().unwrap_or("?"),
                            a["hostname"].as_str().unwrap_or("?"),
                            a["owner"].as_str().unwrap_or("?"),
                            a["resource_id"].as_str().unwrap_or("-"),
                            a["last_seen_at"].as_str().unwrap_or("never"),
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(problem) => {
                    eprintln!("lockstep: {problem}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AgentCommand::Revoke { id, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/agents/{id}/revoke");
            match client
                .send(client.request(Method::POST, &path).json(&json!({})))
                .await?
            {
                Ok(_) => {
                    println!("agent {id} revoked");
                    Ok(ExitCode::SUCCESS)
                }
                Err(problem) => {
                    eprintln!("lockstep: {problem}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
