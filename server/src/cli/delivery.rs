//! `lockstep delivery list|show|rerun`: post-reset deliveries through the API
//! (`docs/resets.md`, "Post-reset delivery"). Each delivery goes to stdout as one line (`show`
//! adds one line per attempt), and a refusal to stderr with the server's reason.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::api_client::ApiClient;
use crate::cli::args::DeliveryCommand;
use crate::error::Result;

/// One delivery as one line: id, state, listener, account, attempts, then the latest answer.
fn line(d: &Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or("-").to_string();
    let next = d["next_attempt_at"]
        .as_str()
        .map(|t| format!(", next at {t}"))
        .unwrap_or_default();
    format!(
        "{}  {:<11} {}  {}  attempts {}/{}{next}  {}: {}",
        s("id"),
        s("state"),
        s("listener"),
        s("account_id"),
        d["attempts"],
        d["max_attempts"],
        s("outcome"),
        s("message"),
    )
}

/// One attempt of a delivery's history as one indented line.
fn attempt_line(a: &Value) -> String {
    let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
    format!(
        "  #{} {} {} on {} ({} ms) {}: {}",
        a["attempt"],
        s("started_at"),
        s("version"),
        s("node"),
        a["elapsed_ms"].as_f64().map_or(0, |ms| ms.round() as i64),
        s("outcome"),
        s("message"),
    )
}

fn refused(problem: String) -> ExitCode {
    eprintln!("lockstep: {problem}");
    ExitCode::FAILURE
}

pub async fn run(command: DeliveryCommand) -> Result<ExitCode> {
    match command {
        DeliveryCommand::List {
            state,
            job,
            account,
            server,
        } => {
            let client = ApiClient::new(&server)?;
            let query: Vec<(&str, String)> =
                [("state", state), ("job_id", job), ("account_id", account)]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect();
            let listed = client
                .each_item("/v1/deliveries", &query, |d| println!("{}", line(d)))
                .await?;
            Ok(listed.map_or_else(refused, |()| ExitCode::SUCCESS))
        }
        DeliveryCommand::Show { id, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/deliveries/{id}");
            Ok(
                match client.send(client.request(Method::GET, &path)).await? {
                    Ok(d) => {
                        println!("{}", line(&d));
                        for a in d["history"].as_array().into_iter().flatten() {
                            println!("{}", attempt_line(a));
                        }
                        ExitCode::SUCCESS
                    }
                    Err(problem) => refused(problem),
                },
            )
        }
        DeliveryCommand::Rerun { id, reason, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/deliveries/{id}/rerun");
            let request = client
                .request(Method::POST, &path)
                .json(&json!({ "reason": reason }));
            Ok(match client.send(request).await? {
                Ok(d) => {
                    println!("{}", line(&d));
                    ExitCode::SUCCESS
                }
                Err(problem) => refused(problem),
            })
        }
    }
}
