//! `lockstep checkout request|approve|reject|withdraw|show|list|password|checkin`: the
//! access-control workflow through the API (`docs/access-control.md`). The password goes to
//! stdout only, and only from `password`; everything else about a checkout goes to stdout as
//! one line, and a refusal to stderr with the server's reason.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::cli::api_client::ApiClient;
use crate::cli::args::CheckoutCommand;
use crate::error::Result;
use crate::states::CheckoutState;

/// One checkout as one line: id, state, account, requester, then what the state makes useful.
fn line(c: &Value) -> String {
    let s = |k: &str| c[k].as_str().unwrap_or("-").to_string();
    let state = s("state");
    let tail = match CheckoutState::parse(&state) {
        Some(CheckoutState::Requested) => format!(
            "approvals {}/{} (from {}), answer by {}",
            c["approvals"].as_array().map_or(0, Vec::len),
            c["approvals_needed"],
            c["approvers"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            s("answer_by")
        ),
        Some(CheckoutState::CheckedOut) => format!("until {}", s("ends_at")),
        Some(CheckoutState::CheckedIn) => format!(
            "{} at {}; rotation {} {}",
            s("end_kind"),
            s("ended_at"),
            c["rotation"]["job_id"].as_str().unwrap_or("not started"),
            c["rotation"]["state"].as_str().unwrap_or("")
        ),
        _ => format!("at {}", s("ended_at")),
    };
    format!(
        "{}  {:<11} {}  {:<12} {tail}",
        s("id"),
        state,
        s("account_id"),
        s("requester")
    )
}

/// Prints the answer's line, or the refusal; the exit code says which.
fn report(answer: std::result::Result<Value, String>) -> ExitCode {
    match answer {
        Ok(c) => {
            println!("{}", line(&c));
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("lockstep: {problem}");
            ExitCode::FAILURE
        }
    }
}

pub async fn run(command: CheckoutCommand) -> Result<ExitCode> {
    let post = |client: &ApiClient, path: String, body: Value| {
        client.request(Method::POST, &path).json(&body)
    };
    match command {
        CheckoutCommand::Request {
            account,
            reason,
            minutes,
            server,
        } => {
            let client = ApiClient::new(&server)?;
            let body = json!({ "reason": reason, "minutes": minutes });
            let path = format!("/v1/accounts/{account}/checkouts");
            Ok(report(client.send(post(&client, path, body)).await?))
        }
        CheckoutCommand::Approve { id, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/checkouts/{id}/approve");
            Ok(report(client.send(post(&client, path, json!({}))).await?))
        }
        CheckoutCommand::Reject { id, reason, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/checkouts/{id}/reject");
            let body = json!({ "reason": reason });
            Ok(report(client.send(post(&client, path, body)).await?))
        }
        CheckoutCommand::Withdraw { id, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/checkouts/{id}/withdraw");
            Ok(report(client.send(post(&client, path, json!({}))).await?))
        }
        CheckoutCommand::Checkin { id, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/checkouts/{id}/checkin");
            Ok(report(client.send(post(&client, path, json!({}))).await?))
        }
        CheckoutCommand::Show { id, server } => {
            let client = ApiClient::new(&server)?;
            let path = format!("/v1/checkouts/{id}");
            Ok(report(
                client.send(client.request(Method::GET, &path)).await?,
            ))
        }
        CheckoutCommand::List {
            account,
            requester,
            state,
            server,
        } => {
            let client = ApiClient::new(&server)?;
            let mut query: Vec<(&str, String)> = Vec::new();
            for (k, v) in [
                ("account_id", account),
                ("requester", requester),
                ("state", state),
            ] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let listed = client
                .each_item("/v1/checkouts", &query, |c| println!("{}", line(c)))
                .await?;
            Ok(match listed {
                Ok(()) => ExitCode::SUCCESS,
                Err(problem) => {
                    eprintln!("lockstep: {problem}");
                    ExitCode::FAILURE
                }
            })
        }
        CheckoutCommand::Password { id, server } => {
            let client = ApiClient::new(&server)?;
            let checkout = match client
                .send(client.request(Method::GET, &format!("/v1/checkouts/{id}")))
                .await?
            {
                Ok(c) => c,
                Err(problem) => {
                    eprintln!("lockstep: {problem}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let account = checkout["account_id"].as_str().unwrap_or_default();
            let path = format!("/v1/accounts/{account}/password/retrieve");
            let body = json!({ "reason": format!("checkout {id}") });
            match client.send(post(&client, path, body)).await? {
                Ok(answer) => {
                    let password =
                        Zeroizing::new(answer["password"].as_str().unwrap_or_default().to_string());
                    println!("{}", password.as_str());
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
