//! A short crash-kill soak for CI (the harness runs 50 iterations by default:
//! `cargo run -p lockstep-tests --example soak`). See `common/soak.rs`.

mod common;

use common::soak::{SoakPlan, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_crash_kill_soak_loses_no_password() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let plan = SoakPlan {
        iterations: 3,
        seed,
        accounts_per_target: 6,
    };
    let report = run(plan).await;
    eprintln!("soak (seed {seed}): {report}");
    assert_eq!(report.iterations, 3);
    assert!(report.kills >= 3);
    assert!(report.lost.is_empty(), "seed {seed}: {:?}", report.lost);
    assert_eq!(report.server_errors, 0, "seed {seed}");
    assert!(report.resets_committed > 0, "seed {seed}: {report}");
}
