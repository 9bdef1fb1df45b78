//! Agent-mode listeners: the same `lockstep-runtime` and the same capability checks as on the
//! server, but `target-exec` (like `exec`) runs here, on the machine being reset.
//!
//! The agent trusts publishers, not the server: before it loads a listener it checks the
//! publisher's signature over the component and the manifest against the keys pinned in its
//! own configuration (`publisher_keys`). A server (or a database writer) that sends another
//! manifest, another component or a listener signed by a key the agent does not pin gets it
//! refused; the refusal is reported and the server audits it. Verified components are kept in
//! `STATE_DIR/components` so each is fetched once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep_agent_protocol::messages::{ListenerReport, ListenerWork, Outcome};
use lockstep_runtime::signature::{self, ListenerSignature};
use lockstep_runtime::{
    Delivery, LoadedListener, Manifest, Phase, ProgramOutput, ResetEvent, RunContext, Runtime,
    TargetExec, Trigger,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::client::Client;

/// `target-exec` on the agent's own machine.
struct LocalTarget;

impl TargetExec for LocalTarget {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        stdin: &'a [u8],
        timeout: Duration,
        output_cap: usize,
    ) -> Pin<Box<dyn Future<Output = Result<ProgramOutput, String>> + Send + 'a>> {
        Box::pin(lockstep_runtime::host::run_program(
            program, args, stdin, timeout, output_cap,
        ))
    }
}

/// The agent's listener runtime and its verified components.
pub struct ListenerHost {
    runtime: Arc<Runtime>,
    components: PathBuf,
    /// The pinned publisher keys, by key id.
    publishers: HashMap<String, ed25519_dalek::VerifyingKey>,
    loaded: Mutex<HashMap<String, LoadedListener>>,
}

fn phase(s: &str) -> Option<Phase> {
    serde_json::from_value(serde_json::Value::String(s.into())).ok()
}

impl ListenerHost {
    pub fn new(state_dir: &Path, publisher_keys: &[String]) -> Result<ListenerHost, String> {
        let runtime = Runtime::new(Some(&state_dir.join("listener-cache")))
            .map_err(|e| format!("cannot start the listener runtime: {e}"))?;
        let mut publishers = HashMap::new();
        for text in publisher_keys {
            let key = signature::parse_public_key(text).map_err(|e| {
                format!("publisher_keys: {e}; use the FILE.pub of `lockstep keygen`")
            })?;
            publishers.insert(signature::key_id(&key), key);
        }
        Ok(ListenerHost {
            runtime: Arc::new(runtime),
            components: state_dir.join("components"),
            publishers,
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// Checks the publisher's signature over `component` and `manifest` with a pinned key.
    fn check_signature(
        &self,
        w: &ListenerWork,
        component: &[u8],
        manifest: &Manifest,
    ) -> Result<(), String> {
        let sig: ListenerSignature = serde_json::from_str(&w.signature)
            .map_err(|e| format!("its signature cannot be read ({e}); not run"))?;
        let Some(key) = self.publishers.get(&sig.key_id) else {
            return Err(if self.publishers.is_empty() {
                "this agent pins no publisher key, so it runs no listener; add the publisher's \
                 key to publisher_keys in its configuration (or enroll with --publisher-key)"
                    .to_string()
            } else {
                format!(
                    "it is signed by publisher key {}, which this agent does not pin; not run",
                    sig.key_id
                )
            });
        };
        signature::verify_digest(&sig, key, &Sha256::digest(component), manifest)
            .map_err(|e| format!("its signature does not hold ({e}); not run"))
    }

    /// The component with `sha256`: from the local store, else fetched; checked either way.
    async fn component(&self, client: &Client, sha256: &str) -> Result<Vec<u8>, String> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("'{sha256}' is not a SHA-256 digest"));
        }
        let path = self.components.join(format!("{sha256}.wasm"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(_) => client
                .get_bytes(&lockstep_agent_protocol::component_path(sha256))
                .await
                .map_err(|e| format!("cannot fetch the component: {e}"))?,
        };
        let got = hex::encode(Sha256::digest(&bytes));
        if got != sha256 {
            let _ = std::fs::remove_file(&path);
            return Err(format!(
                "the component's SHA-256 is {got}, not the {sha256} the server approved; not run"
            ));
        }
        if !path.exists() {
            let _ = std::fs::create_dir_all(&self.components);
            let _ = std::fs::write(&path, &bytes);
        }
        Ok(bytes)
    }

    async fn load(&self, client: &Client, w: &ListenerWork) -> Result<LoadedListener, String> {
        let manifest =
            Manifest::parse(&w.manifest).map_err(|e| format!("the manifest is invalid: {e}"))?;
        // Keyed by the signature too: a cached listener runs again only under the signature
        // that was verified when it was loaded.
        let key = format!(
            "{}\n{}\n{}",
            w.component_sha256,
            manifest.digest(),
            hex::encode(Sha256::digest(w.signature.as_bytes()))
        );
        if let Some(l) = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(l.clone());
        }
        let bytes = self.component(client, &w.component_sha256).await?;
        self.check_signature(w, &bytes, &manifest)?;
        let runtime = self.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&bytes, manifest))
            .await
            .map_err(|e| format!("the load task failed: {e}"))?
            .map_err(|e| format!("it does not load: {e}"))?;
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, loaded.clone());
        Ok(loaded)
    }

    /// Runs one listener task; the report goes back to the server with the outcome.
    pub async fn run(
        &self,
        client: &Client,
        w: ListenerWork,
    ) -> (Outcome, String, Option<ListenerReport>) {
        let Some(phase) = phase(&w.phase) else {
            return (
                Outcome::Failed,
                format!("unknown phase '{}'", w.phase),
                None,
            );
        };
        let listener = match self.load(client, &w).await {
            Ok(l) => l,
            Err(e) => return (Outcome::Failed, format!("{}: {e}", w.name), None),
        };
        let event = ResetEvent {
            job_id: w.job_id.clone(),
            trigger: Trigger::from_job(&w.trigger),
            resource_type: w.resource_type.clone(),
            parameters: w.parameters.clone(),
            // A post-reset run is one attempt of a delivery the server schedules.
            delivery: w.delivery.as_ref().map(|d| Delivery {
                id: d.id.clone(),
                attempt: d.attempt,
            }),
        };
        let ctx = RunContext {
            resource: w.resource.clone(),
            account: w.account.clone(),
            old_password: w
                .old_password
                .as_ref()
                .map(|p| Zeroizing::new(p.expose().to_string())),
            new_password: w
                .new_password
                .as_ref()
                .map(|p| Zeroizing::new(p.expose().to_string())),
            target: Some(Arc::new(LocalTarget)),
        };
        let inv = listener.run(phase, &event, ctx).await;
        let (outcome, message) = inv.verdict();
        for line in &inv.logs {
            tracing::info!(listener = %w.name, "{}", line.message);
        }
        let report = ListenerReport {
            outcome: outcome.into(),
            message: message.clone(),
            denials: inv.denials.iter().map(|d| d.to_string()).collect(),
            elapsed_ms: inv.elapsed.as_secs_f64() * 1000.0,
        };
        (
            Outcome::Succeeded,
            format!("{} {outcome}: {message}", w.name),
            Some(report),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "name = \"hook\"\nversion = \"1.0.0\"\nphases = [\"post-reset\"]\n\
                            modes = [\"agent\"]\nresource_types = [\"Linux\"]\n";

    fn work(signature: String) -> ListenerWork {
        ListenerWork {
            name: "hook".into(),
            version: "1.0.0".into(),
            phase: "post-reset".into(),
            component_sha256: String::new(),
            manifest: MANIFEST.into(),
            signature,
            job_id: "job_1".into(),
            trigger: "manual".into(),
            resource_type: "Linux".into(),
            parameters: Vec::new(),
            resource: Default::default(),
            account: Default::default(),
            old_password: None,
            new_password: None,
            delivery: None,
        }
    }

    /// Issue 15: whatever the server sends, the agent runs a listener only when its signature
    /// over component and manifest verifies with a key the agent pinned itself. Unsigned,
    /// signed by another key, or altered after signing: refused, saying why.
    #[test]
    fn only_a_pinned_publishers_signature_over_these_exact_bytes_passes() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = dir.path().join("pinned.key");
        let stranger = dir.path().join("stranger.key");
        signature::write_new_key(&pinned).unwrap();
        signature::write_new_key(&stranger).unwrap();
        let pinned_pub = std::fs::read_to_string(dir.path().join("pinned.key.pub")).unwrap();
        let host = ListenerHost::new(dir.path(), &[pinned_pub.trim().to_string()]).unwrap();

        let component = b"\0asm a component".to_vec();
        let manifest = Manifest::parse(MANIFEST).unwrap();
        let sign = |key: &Path, wasm: &[u8], m: &Manifest| {
            let k = signature::read_signing_key(key).unwrap();
            serde_json::to_string(&signature::sign(&k, wasm, m)).unwrap()
        };
        let good = sign(&pinned, &component, &manifest);
        assert_eq!(
            host.check_signature(&work(good.clone()), &component, &manifest),
            Ok(())
        );

        let refused = |signature: String, wasm: &[u8], m: &Manifest| {
            host.check_signature(&work(signature), wasm, m).unwrap_err()
        };
        let unsigned = refused(String::new(), &component, &manifest);
        assert!(unsigned.contains("cannot be read"), "{unsigned}");
        let by_stranger = refused(
            sign(&stranger, &component, &manifest),
            &component,
            &manifest,
        );
        assert!(by_stranger.contains("does not pin"), "{by_stranger}");
        let mut altered = component.clone();
        altered.push(0);
        let altered_component = refused(good.clone(), &altered, &manifest);
        assert!(
            altered_component.contains("does not hold"),
            "{altered_component}"
        );
        let widened = Manifest::parse(&format!(
            "{MANIFEST}[capabilities]\nprops = [\"LOCATION\"]\n"
        ))
        .unwrap();
        let altered_manifest = refused(good, &component, &widened);
        assert!(
            altered_manifest.contains("does not hold"),
            "{altered_manifest}"
        );

        // An agent that pins no key runs nothing, and says how to fix it.
        let none = ListenerHost::new(&dir.path().join("none"), &[]).unwrap();
        let sig = sign(&pinned, &component, &manifest);
        let why = none
            .check_signature(&work(sig), &component, &manifest)
            .unwrap_err();
        assert!(why.contains("pins no publisher key"), "{why}");
    }
}
