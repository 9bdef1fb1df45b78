//! Builds the components in `listeners/` (once per process) for tests and benchmarks.

use std::path::PathBuf;
use std::sync::OnceLock;

/// Builds the listeners workspace for wasm32-wasip2 and returns the directory of `.wasm`s.
pub fn wasm_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("listeners");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--locked",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root.join("listeners/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building listeners/ failed (is the wasm32-wasip2 target installed?)"
        );
        target.join("wasm32-wasip2/release")
    })
}

/// The bytes of one built listener, by crate name with underscores (`test_probe`).
pub fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(wasm_dir().join(format!("{name}.wasm"))).expect("listener wasm")
}
