//! The `lockstep` binary: parse the command line, run one command, map errors to exit codes.
//! `anyhow`-free on purpose: the library's `Error` already carries a message a person can act
//! on, and `main` prints it in full.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use lockstep_server::cli::api_client::ApiClient;
use lockstep_server::cli::{
    AdminCommand, AuditCommand, Cli, Command, ListenerCommand, RegistryCommand,
};
use lockstep_server::cli::{listener_test, publisher, reset as reset_cli};
use lockstep_server::config::{ServeConfig, ensure_data_dir, store_url};
use lockstep_server::store::Store;
use lockstep_server::vault::Vault;
use lockstep_server::{Error, audit, identity, serve};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCKSTEP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A command's yes-or-no answer: the line on stdout and exit 0, or the reason on stderr and
/// exit 1 (2 is kept for "could not even try").
fn verdict(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Serve(args) => {
            serve::run(ServeConfig::resolve(args)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(AdminCommand::Create {
            name,
            role,
            email,
            expires_in_days,
            store,
            master_key_file,
        }) => {
            let key_in_data_dir =
                master_key_file.is_none() && std::env::var_os("LOCKSTEP_MASTER_KEY").is_none();
            if store.database_url.is_none() || key_in_data_dir {
                let dir = store
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| lockstep_server::config::DEFAULT_DATA_DIR.into());
                ensure_data_dir(&dir)?;
            }
            // The events written here are keyed: the first command on a new data directory
            // creates its master key, as `serve` would.
            let vault = Vault::new(serve::store_master_key(
                &store,
                master_key_file,
                true,
                "admin create",
            )?);
            let db = serve::open_store(&store_url(&store), Arc::new(vault)).await?;
            let actor = audit::Actor::cli();
            // The host's operator: the new user is its own only custodian (independent of
            // every other account), so it may approve another administrator's change.
            let user =
                identity::create_user(&db, None, &actor, identity::NewUser { name, role, email })
                    .await?
                    .user;
            let issued = identity::issue_token(
                &db,
                &actor,
                &user.id,
                identity::NewToken {
                    name: Some("bootstrap".into()),
                    expires_in_days: Some(expires_in_days),
                },
            )
            .await?;
            db.close().await;
            println!(
                "created user {} ({}) with role {}",
                user.name, user.id, user.role
            );
            println!(
                "token {} expires {}; it is shown only now:",
                issued.info.id, issued.info.expires_at
            );
            println!("{}", issued.token);
            Ok(ExitCode::SUCCESS)
        }
        Command::Registry(RegistryCommand::Reseal {
            store,
            master_key_file,
        }) => {
            let vault = Arc::new(Vault::new(serve::store_master_key(
                &store,
                master_key_file,
                false,
                "registry reseal",
            )?));
            let db = serve::open_store(&store_url(&store), vault.clone()).await?;
            let done = lockstep_server::registry::ledger::reseal(&db, &vault, &audit::Actor::cli())
                .await?;
            db.close().await;
            println!(
                "registry ledger resealed at generation {}: {} listener(s), {} publisher key(s), \
                 {} reset command(s), {} user identit(ies) and {} access polic(ies) whose seals \
                 verify are the approved state now; start the servers again",
                done.generation,
                done.listeners,
                done.keys,
                done.reset_commands,
                done.identities,
                done.access_policies
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Listener(ListenerCommand::Test {
            wasm,
            manifest,
            event,
            json,
        }) => {
            let (report, ok) = listener_test::run(&wasm, &manifest, &event).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report)
                        .map_err(|e| Error::Internal(e.to_string()))?
                );
            } else {
                print!("{}", listener_test::render(&report));
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Keygen { out } => {
            println!("{}", publisher::keygen(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Listener(ListenerCommand::Sign {
            wasm,
            manifest,
            key,
            out,
        }) => {
            let (sig, path) = publisher::sign(&wasm, &manifest, &key, out)?;
            println!(
                "wrote {} (key {}, component {})",
                path.display(),
                sig.key_id,
                sig.component_sha256
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Listener(ListenerCommand::Publish {
            wasm,
            manifest,
            key,
            approver,
            association,
            comment,
            update,
            server,
        }) => {
            let client = ApiClient::new(&server)?;
            let publish = publisher::Publish {
                wasm,
                manifest,
                key,
                approver,
                association,
                comment,
                update,
            };
            Ok(verdict(publisher::publish(&client, publish).await?))
        }
        Command::Reset(args) => reset_cli::run(args).await,
        Command::Agent(command) => lockstep_server::cli::agent::run(command).await,
        Command::Checkout(command) => lockstep_server::cli::checkout::run(command).await,
        Command::Delivery(command) => lockstep_server::cli::delivery::run(command).await,
        Command::Attention(command) => lockstep_server::cli::attention::run(command).await,
        Command::Reconcile(args) => reset_cli::reconcile(args).await,
        Command::Listener(ListenerCommand::Verify {
            wasm,
            manifest,
            signature,
            public_key,
        }) => Ok(verdict(publisher::verify(
            &wasm,
            &manifest,
            signature,
            &public_key,
        )?)),
        Command::Audit(AuditCommand::Verify {
            store,
            master_key_file,
            checkpoints,
        }) => {
            let db = Store::open_existing(&store_url(&store)).await?;
            let vault = Vault::new(serve::store_master_key(
                &store,
                master_key_file,
                false,
                "audit verify",
            )?);
            let mut problems = Vec::new();
            let mut authentic = Vec::new();
            for path in &checkpoints {
                let text = std::fs::read_to_string(path).map_err(Error::io(format!(
                    "audit verify: cannot read checkpoints from {}",
                    path.display()
                )))?;
                let (good, bad) = audit::read_checkpoints(&vault, &text);
                if good.is_empty() && bad.is_empty() {
                    problems.push(format!(
                        "{}: no checkpoint in it (lines with `lockstep-checkpoint v1`)",
                        path.display()
                    ));
                }
                authentic.extend(good);
                problems.extend(bad.into_iter().map(|p| format!("{}: {p}", path.display())));
            }
            let result = audit::verify(&db, &vault, &authentic).await?;
            db.close().await;
            for p in &problems {
                eprintln!("checkpoint refused: {p}");
            }
            match result {
                Ok(report) if problems.is_empty() => {
                    println!("{}", describe_intact(&report));
                    Ok(ExitCode::SUCCESS)
                }
                Ok(report) => {
                    println!("{}", describe_intact(&report));
                    Ok(ExitCode::from(1))
                }
                Err(b) => {
                    eprintln!("{b}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// `audit chain intact: N events`, with what the unkeyed ones and checkpoints mean.
fn describe_intact(r: &audit::ChainReport) -> String {
    let mut line = format!("audit chain intact: {} events", r.events);
    if r.unkeyed == r.events && r.events > 0 {
        line.push_str(
            " (all unkeyed: this database predates the keyed chain; a server seals them at its \
             next start)",
        );
    } else if r.unkeyed > 0 {
        line.push_str(&format!(
            " ({} unkeyed from before the upgrade, sealed by event {})",
            r.unkeyed,
            r.unkeyed + 1
        ));
    }
    if r.checkpoints > 0 {
        line.push_str(&format!("; {} checkpoint(s) match", r.checkpoints));
    }
    line
}
