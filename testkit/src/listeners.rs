//! Builds the components in `listeners/` (once per process, through
//! `scripts/build-listeners.sh`) for tests and benchmarks.

use std::path::PathBuf;
use std::sync::OnceLock;

/// Builds every listener (Rust, Python, JavaScript) and returns the directory of `.wasm`s.
pub fn wasm_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("listeners");
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/build-listeners.sh"))
            .env("CARGO_TARGET_DIR", target.parent().expect("target dir"))
            .status()
            .expect("run scripts/build-listeners.sh");
        assert!(status.success(), "scripts/build-listeners.sh failed");
        target.join("wasm32-wasip2/release")
    })
}

/// The bytes of one built listener, by crate name with underscores (`test_probe`).
pub fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(wasm_dir().join(format!("{name}.wasm"))).expect("listener wasm")
}
