//! The `lockstep` binary: parse the command line, run one command, map errors to exit codes.
//! `anyhow`-free on purpose: the library's `Error` already carries a message a person can act
//! on, and `main` prints it in full.

use std::process::ExitCode;

use clap::Parser;
use lockstep_server::api_client::ApiClient;
use lockstep_server::cli::{AdminCommand, AuditCommand, Cli, Command, ListenerCommand};
use lockstep_server::config::{ServeConfig, ensure_data_dir, store_url};
use lockstep_server::store::Store;
use lockstep_server::{Error, audit, identity, listener_test, publisher, reset_cli, serve};

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
        }) => {
            if store.database_url.is_none() {
                let dir = store
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| lockstep_server::config::DEFAULT_DATA_DIR.into());
                ensure_data_dir(&dir)?;
            }
            let db = serve::open_store(&store_url(&store)).await?;
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
        Command::Agent(command) => lockstep_server::agent_cli::run(command).await,
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
        Command::Audit(AuditCommand::Verify { store }) => {
            let db = Store::open_existing(&store_url(&store)).await?;
            let result = audit::verify(&db).await?;
            db.close().await;
            match result {
                Ok(n) => {
                    println!("audit chain intact: {n} events");
                    Ok(ExitCode::SUCCESS)
                }
                Err(b) => {
                    eprintln!("{b}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
