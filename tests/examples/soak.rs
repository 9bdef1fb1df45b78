//! The crash-kill soak harness: bulk rotations on real sshd targets, the server killed with
//! SIGKILL at random points and restarted, every stored password checked by a fresh login.
//!
//! ```text
//! cargo build --workspace && cargo run -p lockstep-tests --example soak -- \
//!     [--iterations 50] [--seed N] [--accounts-per-target 8] [--mode NAME] [--postgres]
//! ```
//! `--postgres` runs the server on a fresh database of the machine's PostgreSQL
//! (127.0.0.1:5432, user postgres), dropped afterwards.
//! Needs root (the targets run in namespaces) and `scripts/testbed-deps.sh` run once. Exits
//! non-zero if any password was lost or any answer was a 5xx; prints the seed to repeat a run.

use lockstep_testkit as common;

use common::soak::{SoakPlan, run};

fn main() {
    let mut plan = SoakPlan {
        iterations: 50,
        seed: SoakPlan::time_seed(),
        accounts_per_target: 8,
        database_url: None,
        only: None,
    };
    let mut postgres = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--postgres" {
            postgres = true;
            continue;
        }
        if flag == "--mode" {
            let name = args.next().unwrap_or_default();
            let Some(mode) = common::soak::FailureMode::named(&name) else {
                eprintln!(
                    "--mode: one of kill-only, applies-then-exits-1, sessions-cut, \
                     one-line-refused"
                );
                std::process::exit(2);
            };
            plan.only = Some(mode);
            continue;
        }
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--iterations", Some(v)) => plan.iterations = v as usize,
            ("--seed", Some(v)) => plan.seed = v,
            ("--accounts-per-target", Some(v)) => plan.accounts_per_target = v as usize,
            _ => {
                eprintln!(
                    "usage: soak [--iterations N] [--seed N] [--accounts-per-target N] \
                     [--mode NAME] [--postgres]"
                );
                std::process::exit(2);
            }
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let database = if postgres {
        let Some(db) = runtime.block_on(common::postgres_database()) else {
            eprintln!("--postgres: no PostgreSQL on 127.0.0.1:5432");
            std::process::exit(2);
        };
        plan.database_url = Some(db.url().to_string());
        Some(db)
    } else {
        None
    };
    eprintln!("soak: {plan:?}");
    let report = runtime.block_on(run(&plan));
    // Dropped here, before any `exit` (which would skip its guard).
    drop(database);
    println!("soak (seed {}): {report}", plan.seed);
    for lost in &report.lost {
        println!("lost: {lost}");
    }
    if !report.lost.is_empty() || report.server_errors > 0 {
        std::process::exit(1);
    }
}
