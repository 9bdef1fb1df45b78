//! `lockstep reset`: start a reset job through the API and follow it with a progress bar.

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};
use std::process::ExitCode;

use crate::cli::api_client::ApiClient;
use crate::cli::args::{ReconcileArgs, ResetArgs};
use crate::cli::listener_files::read_text;
use crate::error::{Error, Result};
use crate::states::{ItemState, JobStatus};

/// Runs the command; the exit code says whether every account was reset.
pub async fn run(args: ResetArgs) -> Result<ExitCode> {
    let client = ApiClient::new(&args.server)?;
    let password = match &args.password_file {
        Some(p) => Some(zeroize::Zeroizing::new(
            read_text(p, "password file")?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        )),
        None => None,
    };
    let mut body = json!({
        "reason": args.reason,
        "apply_remote": !args.vault_only,
        "notify": args.notify,
    });
    if let Some(pw) = &password {
        body["password"] = json!(pw.as_str());
    }
    let single =
        args.accounts.len() == 1 && args.resources.is_empty() && args.resource_type.is_none();
    let path = if single {
        format!("/v1/accounts/{}/reset", args.accounts[0])
    } else {
        if !args.accounts.is_empty() {
            body["accounts"] = json!(args.accounts);
        }
        if !args.resources.is_empty() {
            body["resource_ids"] = json!(args.resources);
        }
        if let Some(t) = &args.resource_type {
            body["resource_type"] = json!(t);
        }
        "/v1/reset-jobs".to_string()
    };
    let mut request = client.request(Method::POST, &path).json(&body);
    drop(body);
    if let Some(k) = &args.idempotency_key {
        request = request.header("Idempotency-Key", k);
    }
    let job = match client.send(request).await? {
        Ok(job) => job,
        Err(problem) => {
            eprintln!("{problem}");
            return Ok(ExitCode::from(1));
        }
    };
    let id = job["id"].as_str().unwrap_or_default().to_string();
    if args.no_wait {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let total = job["progress"]["total"].as_u64().unwrap_or(0);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} accounts {msg}")
            .map_err(|e| Error::Internal(e.to_string()))?
            .progress_chars("=> "),
    );
    let finished = loop {
        let job = match client
            .send(client.request(Method::GET, &format!("/v1/reset-jobs/{id}?wait=10")))
            .await?
        {
            Ok(j) => j,
            Err(problem) => {
                bar.abandon();
                eprintln!("{problem}");
                return Ok(ExitCode::from(1));
            }
        };
        let p = &job["progress"];
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        bar.set_position(n("total").saturating_sub(n("in_progress")));
        bar.set_message(format!(
            "({} reset, {} vetoed, {} failed, {} out of sync)",
            n("succeeded"),
            n("vetoed"),
            n("failed"),
            n("out_of_sync")
        ));
        if job["status"] == JobStatus::Finished.as_str() {
            bar.finish();
            break job;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&finished).map_err(|e| Error::Internal(e.to_string()))?
        );
    } else {
        print!("{}", render(&finished));
    }
    let p = &finished["progress"];
    let all_reset = p["succeeded"] == p["total"];
    Ok(if all_reset {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A table of the job's accounts for people.
fn render(job: &Value) -> String {
    let mut out = format!(
        "job {} ({}, {}): {}\n",
        job["id"].as_str().unwrap_or("?"),
        job["kind"].as_str().unwrap_or("?"),
        job["trigger"].as_str().unwrap_or("?"),
        job["status"].as_str().unwrap_or("?"),
    );
    out.push_str(&format!("{:<38} {:<14} DETAIL\n", "ACCOUNT", "STATE"));
    for item in job["items"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<38} {:<14} {}\n",
            item["account_id"].as_str().unwrap_or("?"),
            item["state"].as_str().unwrap_or("?"),
            item["detail"].as_str().unwrap_or("")
        ));
    }
    out
}

/// `lockstep reconcile`: settles the items left in flight, without starting new work.
pub async fn reconcile(args: ReconcileArgs) -> Result<ExitCode> {
    use std::sync::Arc;

    use crate::config::{DEFAULT_DATA_DIR, store_url};
    let data_dir = args
        .store
        .data_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let vault = Arc::new(crate::vault::Vault::new(crate::serve::store_master_key(
        &args.store,
        args.master_key_file,
        false,
        "reconcile",
    )?));
    let store = crate::serve::open_store(&store_url(&args.store), vault.clone()).await?;
    // Its claims and leases must mean what the nodes' mean: in the database's time.
    crate::cluster::clock::align(&store).await?;
    let runtime = lockstep_runtime::Runtime::new(Some(&data_dir.join("listener-cache")))?;
    let registry = crate::registry::Registry::new(
        store.clone(),
        vault.clone(),
        Arc::new(runtime),
        crate::api::DEFAULT_MAX_LISTENER_BYTES,
    );
    crate::reset::sealed_binding::bind_to_accounts(&store, &vault).await?;
    let engine = crate::reset::pipeline::Engine::start(
        store.clone(),
        vault,
        registry,
        Arc::new(crate::agents::AgentHub::default()),
        crate::reset::pipeline::EngineOptions {
            workers: 0,
            offline: true,
            timeouts: crate::reset::connector::Timeouts::default(),
            rotation_check: None,
            lease: crate::reset::pipeline::DEFAULT_LEASE,
            // Not a node: its steps name the command that wrote them.
            node: crate::time::new_id("reconcile"),
        },
    );
    let ended = engine.reconcile_all().await?;
    store.close().await;
    if ended.is_empty() {
        println!("nothing in flight");
        return Ok(ExitCode::SUCCESS);
    }
    for (state, n) in &ended {
        let what = match ItemState::parse(state) {
            Some(ItemState::Done) => "committed (the target accepts the new password)",
            Some(ItemState::Planned) => {
                "back to planned (the target kept the old password; a server will redo them)"
            }
            Some(ItemState::OutOfSync) => {
                "OUT OF SYNC (the target accepts neither password; both are kept)"
            }
            _ => state.as_str(),
        };
        println!("{n:>6}  {what}");
    }
    Ok(if ended.iter().any(|(s, _)| ItemState::OutOfSync.is(s)) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
