//! `lockstep-agent`: enroll once, then run.

mod accounts;
mod client;
mod config;
mod crypt;
mod enroll;
mod error;
mod keyfile;
mod listener;
mod password;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lockstep-agent",
    version,
    about = "The outbound-only Lockstep agent"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "LOCKSTEP_AGENT_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll with a one-time token and write the configuration file.
    Enroll {
        /// A server node, https://HOST:PORT. Repeat, each followed by its --fingerprint, for
        /// every node of a deployment (the token is spent on the first; the agent passes over
        /// a node it cannot reach for the next).
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        /// SHA-256 fingerprint of a --server's certificate (the server prints it at start and
        /// keeps it in DATA_DIR/tls/fingerprint); one per --server, paired in order.
        #[arg(long = "fingerprint", required = true)]
        fingerprints: Vec<String>,
        /// A file holding the enrollment token, or - for stdin. LOCKSTEP_ENROLL_TOKEN works too.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Refused: a token on the command line is readable by every local user.
        #[arg(long, hide = true)]
        token: Option<String>,
        /// Where the agent keeps its key.
        #[arg(long, default_value = "/var/lib/lockstep-agent")]
        state_dir: PathBuf,
        /// The longest wait between reconnect attempts, in seconds.
        #[arg(long, default_value_t = 60)]
        poll_interval: u64,
        /// A listener publisher's public key file (`lockstep keygen`'s FILE.pub) to trust;
        /// repeat for several. Agent-mode listeners signed by no pinned key never run here.
        #[arg(long = "publisher-key")]
        publisher_keys: Vec<PathBuf>,
    },
    /// Add a server node of the same deployment to the configuration (restart the agent to
    /// use it). Its certificate is checked now if it can be reached.
    AddServer {
        /// The node, https://HOST:PORT.
        #[arg(long)]
        server: String,
        /// SHA-256 fingerprint of that node's certificate (its DATA_DIR/tls/fingerprint).
        #[arg(long)]
        fingerprint: String,
    },
    /// Register this machine and take tasks until stopped.
    Run,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCKSTEP_AGENT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lockstep-agent: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main_of(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstep-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main_of(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Enroll {
            servers,
            fingerprints,
            token_file,
            token,
            state_dir,
            poll_interval,
            publisher_keys,
        } => {
            if token.is_some() {
                anyhow::bail!(
                    "--token would put the enrollment token in the process list, readable by \
                     every local user; use --token-file FILE (or - for stdin) or \
                     LOCKSTEP_ENROLL_TOKEN"
                );
            }
            if servers.len() != fingerprints.len() {
                anyhow::bail!(
                    "enroll: {} --server but {} --fingerprint; give each --server its own \
                     --fingerprint (every node has its own certificate)",
                    servers.len(),
                    fingerprints.len()
                );
            }
            let servers = servers
                .iter()
                .zip(&fingerprints)
                .map(|(s, f)| config::ServerNode::new(s, f))
                .collect::<Result<Vec<_>, _>>()?;
            if !(1..=3600).contains(&poll_interval) {
                anyhow::bail!("--poll-interval must be 1 to 3600 seconds");
            }
            let publisher_keys = publisher_keys
                .iter()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .map(|t| t.trim().to_string())
                        .map_err(|e| anyhow::anyhow!("--publisher-key {}: {e}", p.display()))
                })
                .collect::<anyhow::Result<Vec<String>>>()?;
            let token = enroll::read_token(token_file.as_deref())?;
            let done = enroll::enroll(enroll::EnrollArgs {
                servers,
                token,
                config: cli.config.clone(),
                state_dir,
                poll_interval_secs: poll_interval,
                publisher_keys,
            })
            .await?;
            println!(
                "enrolled as {} (owner {}); configuration written to {}",
                done.agent_id,
                done.owner,
                cli.config.display()
            );
            Ok(())
        }
        Command::AddServer {
            server,
            fingerprint,
        } => {
            let node = config::ServerNode::new(&server, &fingerprint)?;
            let servers = enroll::add_server(&cli.config, node).await?;
            println!(
                "{} now lists {} server node(s): {}; restart the agent to use them",
                cli.config.display(),
                servers.len(),
                servers
                    .iter()
                    .map(|s| s.url.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Command::Run => {
            let cfg = config::AgentConfig::load(&cli.config)?;
            run::run(cfg).await?;
            Ok(())
        }
    }
}
