//! `lockstep listener test`: a real component, a manifest and a sample event, through the
//! real binary.

use lockstep_testkit as common;

use common::lockstep;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn runs_a_listener_locally_and_reports_outcome_denials_and_time() {
    let wasm = common::listeners::wasm_dir().join("change_freeze.wasm");
    let manifest = root().join("listeners/change-freeze/manifest.toml");
    let event = root().join("listeners/change-freeze/samples/frozen.toml");
    let (status, stdout, stderr) = lockstep(&[
        "listener",
        "test",
        wasm.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1), "a veto exits 1: {stdout}{stderr}");
    assert!(
        stdout.contains("veto: DC1 is under a change freeze"),
        "{stdout}"
    );
    assert!(stdout.contains("time: "), "{stdout}");

    // A probe asking for a property its manifest does not grant: the denial is listed.
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("probe.toml");
    std::fs::write(
        &m,
        "name = \"probe\"\nversion = \"0.1.0\"\nphases = [\"post-reset\"]\nmodes = [\"agentless\"]\n\
         resource_types = [\"Linux\"]\n[capabilities]\nprops = [\"RESOURCENAME\"]\nsecrets = [\"new-password\"]\n\
         network = [\"http://127.0.0.1:9\", \"tcp://127.0.0.1:9\"]\n\
         [[capabilities.exec]]\nprogram = \"/usr/bin/wc\"\nargs = [\"-c\"]\n\
         [[capabilities.target_exec]]\nprogram = \"systemctl\"\nargs = [\"status\"]\n",
    )
    .unwrap();
    let e = dir.path().join("event.toml");
    std::fs::write(
        &e,
        "phase = \"post-reset\"\nresource_type = \"Linux\"\nparameters = [\"old-password\"]\n\
         [secrets]\nold_password = \"Sample-Old-1\"\nnew_password = \"Sample-New-2\"\n",
    )
    .unwrap();
    let probe = common::listeners::wasm_dir().join("test_probe.wasm");
    let args = [
        "listener",
        "test",
        probe.to_str().unwrap(),
        "--manifest",
        m.to_str().unwrap(),
        "--event",
        e.to_str().unwrap(),
        "--json",
    ];
    let (status, stdout, _) = lockstep(&args);
    assert_eq!(status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "failure");
    assert_eq!(
        report["denials"][0],
        "secrets: old-password ('old-password' is not in capabilities.secrets)"
    );
    assert!(
        !stdout.contains("Sample-Old-1"),
        "a denied secret is never printed"
    );

    // Load-time refusals exit 2 and name the problem.
    let (status, _, stderr) = lockstep(&[
        "listener",
        "test",
        probe.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("imports 'lockstep:listener/"), "{stderr}");
    std::fs::write(&e, "phase = \"mid-reset\"\nresource_type = \"Linux\"\n").unwrap();
    let (status, _, stderr) = lockstep(&args);
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("phase 'mid-reset' must be pre-reset or post-reset"),
        "{stderr}"
    );
}

#[test]
fn keygen_sign_and_verify_bind_component_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("publisher.key");
    let (status, stdout, stderr) = lockstep(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("key id "), "{stdout}");
    let (status, _, stderr) = lockstep(&["keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(
        status.code(),
        Some(2),
        "an existing key is never overwritten"
    );
    assert!(stderr.contains("cannot create key file"), "{stderr}");

    let wasm = dir.path().join("change_freeze.wasm");
    std::fs::copy(
        common::listeners::wasm_dir().join("change_freeze.wasm"),
        &wasm,
    )
    .unwrap();
    let manifest = dir.path().join("manifest.toml");
    std::fs::copy(
        root().join("listeners/change-freeze/manifest.toml"),
        &manifest,
    )
    .unwrap();
    let (w, m, k) = (
        wasm.to_str().unwrap(),
        manifest.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let (status, stdout, stderr) = lockstep(&["listener", "sign", w, "--manifest", m, "--key", k]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains(".wasm.sig"), "{stdout}");
    let public = format!("{k}.pub");
    let verify = || {
        lockstep(&[
            "listener",
            "verify",
            w,
            "--manifest",
            m,
            "--public-key",
            &public,
        ])
    };
    let (status, stdout, _) = verify();
    assert!(status.success());
    assert!(
        stdout.starts_with("valid: change-freeze 0.1.0 signed by key "),
        "{stdout}"
    );

    // A widened grant is a different manifest: the signature no longer holds.
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace(
            "props = [\"RESOURCENAME\", \"LOCATION\"]",
            "props = [\"RESOURCENAME\", \"LOCATION\", \"IPADDRESS\"]",
        ),
    )
    .unwrap();
    let (status, _, stderr) = verify();
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("the manifest is not the one that was signed"),
        "{stderr}"
    );
    std::fs::write(&manifest, &text).unwrap();

    // One flipped byte in the component.
    let mut bytes = std::fs::read(&wasm).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&wasm, bytes).unwrap();
    let (status, _, stderr) = verify();
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("the component is not the one that was signed"),
        "{stderr}"
    );
}
