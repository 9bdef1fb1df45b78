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

/// A manifest for `test-probe` published as `name` (`version`): post-reset, in `mode`, for
/// `resource_type`, granted `secrets` and one rule of every other capability (the probe
/// imports every interface, so each must be granted), with a parameter per
/// `(name, description)` in `parameters`.
pub fn probe_manifest(
    name: &str,
    version: &str,
    mode: &str,
    resource_type: &str,
    secrets: &[&str],
    parameters: &[(&str, &str)],
) -> String {
    let params: String = parameters
        .iter()
        .map(|(n, d)| format!("[[parameters]]\nname = \"{n}\"\ndescription = \"{d}\"\n\n"))
        .collect();
    let secrets: Vec<String> = secrets.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "name = \"{name}\"\nversion = \"{version}\"\nphases = [\"post-reset\"]\n\
         modes = [\"{mode}\"]\nresource_types = [\"{resource_type}\"]\n\n{params}\
         [capabilities]\nprops = [\"LOGINNAME\"]\nsecrets = [{}]\n\
         network = [\"http://127.0.0.1:9\"]\n\n\
         [[capabilities.exec]]\nprogram = \"/usr/bin/wc\"\nargs = [\"-c\"]\n\n\
         [[capabilities.target_exec]]\nprogram = \"systemctl\"\nargs = [\"reload\", \"*.service\"]\n",
        secrets.join(", ")
    )
}
