//! `lockstep attention list|resolve`: the attention queue through the API (`docs/resets.md`,
//! "The attention queue"). Each entry goes to stdout as one line, followed by one indented
//! line per action; a refusal goes to stderr with the server's reason.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::api_client::ApiClient;
use crate::cli::args::AttentionCommand;
use crate::error::Result;

/// One entry as one line: id, the account (login on resource), since when, then what
/// happened; each action on its own indented line.
fn lines(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "{}  {}@{}  since {}  {}",
        s("id"),
        s("login_name"),
        s("resource_id"),
        s("since"),
        s("detail"),
    );
    for a in e["actions"].as_array().into_iter().flatten() {
        let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
        out.push_str(&format!(
            "\n  {}: {} {}",
            s("action"),
            s("method"),
            s("path")
        ));
    }
    out
}

fn refused(problem: String) -> ExitCode {
    eprintln!("lockstep: {problem}");
    ExitCode::FAILURE
}

pub async fn run(command: AttentionCommand) -> Result<ExitCode> {
    match command {
        AttentionCommand::List { kind, server } => {
            let client = ApiClient::new(&server)?;
            let query: Vec<(&str, String)> = kind.map(|k| ("kind", k)).into_iter().collect();
            let listed = client
                .each_item("/v1/attention", &query, |e| println!("{}", lines(e)))
                .await?;
            Ok(listed.map_or_else(refused, |()| ExitCode::SUCCESS))
        }
        AttentionCommand::Resolve {
            account,
            reason,
            server,
        } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/accounts/{account}/resolve");
            let request = client
                .request(Method::POST, &path)
                .json(&json!({ "reason": reason }));
            Ok(match client.send(request).await? {
                Ok(r) => {
                    let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                    let by = r["kept_by_item"]
                        .as_str()
                        .map(|i| format!(" (kept by {i})"))
                        .unwrap_or_default();
                    println!(
                        "{}: the target accepts the {} password{by}, tried {}; now {}",
                        s("account_id"),
                        s("accepted"),
                        r["tried"],
                        s("sync_status")
                    );
                    ExitCode::SUCCESS
                }
                Err(problem) => refused(problem),
            })
        }
    }
}
