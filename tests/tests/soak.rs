//! A short crash-kill soak for CI, on SQLite and on PostgreSQL (the harness runs 50 iterations
//! by default: `cargo run -p lockstep-tests --example soak [-- --postgres]`). See
//! `testkit/src/soak.rs`.

use lockstep_testkit as common;

use common::soak::{SoakPlan, run};

async fn short_soak(iterations: usize, database_url: Option<String>) {
    let seed = SoakPlan::time_seed();
    let plan = SoakPlan {
        iterations,
        seed,
        accounts_per_target: 6,
        database_url,
        only: None,
    };
    let report = run(&plan).await;
    eprintln!("soak (seed {seed}): {report}");
    assert_eq!(report.iterations, iterations);
    assert!(report.kills >= iterations);
    assert!(report.lost.is_empty(), "seed {seed}: {:?}", report.lost);
    assert_eq!(report.server_errors, 0, "seed {seed}");
    assert!(report.resets_committed > 0, "seed {seed}: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_crash_kill_soak_loses_no_password() {
    short_soak(3, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_crash_kill_soak_on_postgresql_loses_no_password() {
    let Some(db) = common::postgres_database().await else {
        return;
    };
    short_soak(2, Some(db.url().to_string())).await;
}
