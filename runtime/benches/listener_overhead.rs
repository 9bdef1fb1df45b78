//! Per-invocation overhead of a listener against the legacy model, side by side in one run.
//!
//! Listener: fresh store → instantiate from the cached `InstancePre` → call `post-reset`, which
//! reads two properties through host calls → drop. Baseline: spawn `/bin/sh` running a script
//! that reads the same two values from its arguments (what the reference products do).
//!
//! Run: `cargo bench -p lockstep-runtime --bench listener_overhead` (see docs/performance.md).

/// The tests' hand-written listener components (WAT wrapped for the listener world).
use lockstep_testkit::components;
use lockstep_testkit::listeners;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_runtime::{
    HookOutcome, LoadedListener, Manifest, Phase, ResetEvent, RunContext, Runtime, Trigger,
};

const MANIFEST: &str = r#"
name = "bench"
version = "0.1.0"
phases = ["post-reset"]
modes = ["agentless"]
resource_types = ["Linux"]
[capabilities]
props = ["RESOURCENAME", "LOGINNAME"]
secrets = ["new-password"]
network = ["http://127.0.0.1:9", "tcp://127.0.0.1:9"]
[[capabilities.exec]]
program = "/usr/bin/wc"
args = ["-c"]
[[capabilities.target_exec]]
program = "systemctl"
args = ["reload", "*.service"]
"#;

const SCRIPT: &str = r#"name="$1"; login="$2"; echo "$name $login""#;

/// The floor: a hand-written component (no language runtime, no WASI imports) that reads the
/// same two properties through the same host calls and answers `success("")`. What it costs
/// is the host's own share of a run; the rest of a Rust listener's cost is its guest.
fn floor_component() -> Vec<u8> {
    components::CoreModule {
        fields: r#"(import "lockstep:listener/props@0.1.0" "resource-property" (func $rp (param i32 i32 i32)))
  (import "lockstep:listener/props@0.1.0" "account-property" (func $ap (param i32 i32 i32)))
  (data (i32.const 1024) "RESOURCENAMELOGINNAME")"#,
        realloc: components::HONEST_REALLOC,
        hook: &format!(
            "(call $rp (i32.const 1024) (i32.const 12) (i32.const 64)) \
             (call $ap (i32.const 1036) (i32.const 9) (i32.const 96)) {}",
            components::ANSWER_OK
        ),
    }
    .component()
}

fn event() -> ResetEvent {
    ResetEvent {
        job_id: "bench".into(),
        trigger: Trigger::Manual,
        resource_type: "Linux".into(),
        parameters: vec!["two-props".into()],
        delivery: None,
    }
}

fn ctx() -> RunContext {
    RunContext {
        resource: [("RESOURCENAME".to_string(), "web1".to_string())].into(),
        account: [("LOGINNAME".to_string(), "svc".to_string())].into(),
        ..Default::default()
    }
}

async fn one_listener_run(l: &LoadedListener, e: &ResetEvent) {
    let inv = l.run(Phase::PostReset, e, ctx()).await;
    assert_eq!(
        inv.outcome,
        Ok(HookOutcome::Success("web1 svc".into())),
        "{inv:?}"
    );
}

async fn one_freeze_run(l: &LoadedListener, e: &ResetEvent) {
    let mut c = ctx();
    c.resource.insert("LOCATION".into(), "DC1".into());
    let inv = l.run(Phase::PreReset, e, c).await;
    assert_eq!(inv.outcome, Ok(HookOutcome::Proceed), "{inv:?}");
}

async fn one_floor_run(l: &LoadedListener, e: &ResetEvent) {
    let inv = l.run(Phase::PostReset, e, ctx()).await;
    assert_eq!(
        inv.outcome,
        Ok(HookOutcome::Success(String::new())),
        "{inv:?}"
    );
}

async fn one_script_run() {
    let out = tokio::process::Command::new("/bin/sh")
        .args(["-c", SCRIPT, "sh", "web1", "svc"])
        .output()
        .await
        .expect("spawn /bin/sh");
    assert_eq!(out.stdout, b"web1 svc\n");
}

struct Stats {
    median: Duration,
    p99: Duration,
    mean: Duration,
    n: usize,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let n = v.len();
    let mean = v.iter().sum::<Duration>() / n as u32;
    Stats {
        median: v[n / 2],
        p99: v[(n * 99 / 100).min(n - 1)],
        mean,
        n,
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let wasm = listeners::wasm("test_probe");
    let runtime = Runtime::new(None).expect("runtime");

    // Compile and cache-hit times.
    let t = Instant::now();
    let listener = runtime
        .load(&wasm, Manifest::parse(MANIFEST).expect("manifest"))
        .expect("load");
    let compile = t.elapsed();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    // A fresh subdirectory: the cache creates it 0700 (a temporary directory's own mode
    // depends on the umask and the tempfile version).
    let cached = Runtime::new(Some(&cache_dir.path().join("cache"))).expect("runtime");
    cached
        .load(&wasm, Manifest::parse(MANIFEST).expect("manifest"))
        .expect("load");
    let t = Instant::now();
    cached
        .load(&wasm, Manifest::parse(MANIFEST).expect("manifest"))
        .expect("load");
    let cache_hit = t.elapsed();

    let freeze = runtime
        .load(
            &listeners::wasm("change_freeze"),
            Manifest::parse(include_str!("../../listeners/change-freeze/manifest.toml"))
                .expect("manifest"),
        )
        .expect("load change-freeze");
    let freeze_event = ResetEvent {
        parameters: vec![],
        ..event()
    };

    let floor_wasm = floor_component();
    let floor = runtime
        .load(&floor_wasm, Manifest::parse(MANIFEST).expect("manifest"))
        .expect("load the floor component");

    let e = event();
    let (wasm_stats, freeze_stats, floor_stats, sh_stats) = rt.block_on(async {
        for _ in 0..300 {
            one_listener_run(&listener, &e).await;
        }
        for _ in 0..30 {
            one_script_run().await;
        }
        let mut w = Vec::with_capacity(5000);
        for _ in 0..5000 {
            let t = Instant::now();
            one_listener_run(&listener, &e).await;
            w.push(t.elapsed());
        }
        let mut f = Vec::with_capacity(5000);
        for _ in 0..5000 {
            let t = Instant::now();
            one_freeze_run(&freeze, &freeze_event).await;
            f.push(t.elapsed());
        }
        let mut fl = Vec::with_capacity(5000);
        for _ in 0..5000 {
            let t = Instant::now();
            one_floor_run(&floor, &e).await;
            fl.push(t.elapsed());
        }
        // Spawns last: process start-up and teardown disturb the runs that follow them on two
        // cores (measured: listener medians 15 -> 22-26 µs when spawns were interleaved).
        let mut s = Vec::with_capacity(500);
        for _ in 0..500 {
            let t = Instant::now();
            one_script_run().await;
            s.push(t.elapsed());
        }
        (stats(w), stats(f), stats(fl), stats(s))
    });

    // Throughput with both cores busy: a bounded number of runs, 8 in flight at a time.
    let listener = Arc::new(listener);
    let (wasm_tput, sh_tput) = rt.block_on(async {
        let runs = 20_000;
        let t = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let l = listener.clone();
            tasks.push(tokio::spawn(async move {
                let e = event();
                for _ in (worker..runs).step_by(8) {
                    one_listener_run(&l, &e).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let wasm_tput = runs as f64 / t.elapsed().as_secs_f64();
        let spawns = 1000;
        let t = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..8 {
            tasks.push(tokio::spawn(async move {
                for _ in (worker..spawns).step_by(8) {
                    one_script_run().await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        (wasm_tput, spawns as f64 / t.elapsed().as_secs_f64())
    });

    println!(
        "listener: {} bytes; compile {:.1} ms; cache hit (deserialize + link) {:.2} ms",
        wasm.len(),
        compile.as_secs_f64() * 1e3,
        cache_hit.as_secs_f64() * 1e3
    );
    println!();
    println!("| per invocation | runs | median µs | p99 µs | mean µs |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, s) in [
        (
            "listener: test-probe, 200 KB, 2 property reads",
            &wasm_stats,
        ),
        (
            "listener: change-freeze, 46 KB, 2 property reads + 1 log",
            &freeze_stats,
        ),
        (
            "floor: hand-written component, 2 property reads (host cost alone)",
            &floor_stats,
        ),
        ("/bin/sh script (baseline)", &sh_stats),
    ] {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            s.n,
            us(s.median),
            us(s.p99),
            us(s.mean)
        );
    }
    for (name, l) in [
        ("test-probe", &wasm_stats),
        ("change-freeze", &freeze_stats),
        ("floor", &floor_stats),
    ] {
        println!(
            "| ratio, baseline / {name} | | {:.0}x | {:.0}x | {:.0}x |",
            us(sh_stats.median) / us(l.median),
            us(sh_stats.p99) / us(l.p99),
            us(sh_stats.mean) / us(l.mean)
        );
    }
    println!();
    println!("| throughput, 2 worker threads, 8 in flight | runs/s |");
    println!("| --- | ---: |");
    println!("| listener (test-probe) | {wasm_tput:.0} |");
    println!("| /bin/sh script (baseline) | {sh_tput:.0} |");
    println!("| ratio | {:.0}x |", wasm_tput / sh_tput);
}
