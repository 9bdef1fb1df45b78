//! Where a listener runs: phases, execution modes, resource types, order, parameters.

use serde::{Deserialize, Serialize};

use lockstep_runtime::manifest::Manifest;

use crate::inventory::resource_types::allowed_modes;

/// Most additional parameters an association may carry, and the longest one.
pub const MAX_PARAMETERS: usize = 64;
pub const MAX_PARAMETER_CHARS: usize = 1024;
/// The order given when none is: after anything an administrator placed explicitly early.
pub const DEFAULT_ORDER: i64 = 100;

/// An association. Serialized in a fixed field order with sorted, de-duplicated lists, so its
/// JSON is canonical: the approval seal covers exactly these bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Association {
    /// `pre-reset` and/or `post-reset`; a subset of the manifest's phases.
    pub phases: Vec<String>,
    /// `agentless`, `agent` and/or `gateway`; a subset of the manifest's modes, each allowed for
    /// every resource type.
    pub modes: Vec<String>,
    /// Existing resource type names; a subset of the manifest's resource types.
    pub resource_types: Vec<String>,
    /// 1–1000: listeners of one phase run in ascending order, then by name.
    #[serde(default = "default_order")]
    pub order: i64,
    /// The listener's additional parameters, in order.
    #[serde(default)]
    pub parameters: Vec<String>,
}

fn default_order() -> i64 {
    DEFAULT_ORDER
}

impl Association {
    /// Everything the manifest declares, in default order, without parameters.
    pub fn from_manifest(m: &Manifest) -> Association {
        Association {
            phases: m.phases().iter().map(|p| p.as_str().to_string()).collect(),
            modes: m.modes().iter().map(|p| p.as_str().to_string()).collect(),
            resource_types: m.resource_types().to_vec(),
            order: DEFAULT_ORDER,
            parameters: Vec::new(),
        }
        .normalized()
    }

    /// Sorts and de-duplicates the sets (parameters keep their order).
    pub fn normalized(mut self) -> Association {
        for v in [&mut self.phases, &mut self.modes, &mut self.resource_types] {
            v.sort();
            v.dedup();
        }
        self
    }

    /// The canonical JSON the approval seal covers.
    pub fn canonical_json(&self) -> String {
        // Serializing a struct of strings, integers and vectors cannot fail.
        serde_json::to_string(&self.clone().normalized()).unwrap_or_default()
    }

    pub fn parse_stored(json: &str) -> Option<Association> {
        serde_json::from_str(json).ok()
    }

    pub fn has(&self, phase: &str, mode: &str) -> bool {
        self.phases.iter().any(|p| p == phase) && self.modes.iter().any(|m| m == mode)
    }

    /// Every problem with this association for `manifest`, given the resource types that
    /// exist. Empty when it is valid.
    pub fn problems(&self, manifest: &Manifest, existing_types: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let declared_phases: Vec<&str> = manifest.phases().iter().map(|p| p.as_str()).collect();
        let declared_modes: Vec<&str> = manifest.modes().iter().map(|m| m.as_str()).collect();
        for (what, values, declared) in [
            ("phases", &self.phases, &declared_phases),
            ("modes", &self.modes, &declared_modes),
        ] {
            if values.is_empty() {
                out.push(format!("{what} must not be empty"));
            }
            for v in values {
                if !declared.contains(&v.as_str()) {
                    out.push(format!(
                        "{what}: '{v}' is not declared by the manifest (it declares {})",
                        declared.join(", ")
                    ));
                }
            }
        }
        if self.resource_types.is_empty() {
            out.push("resource_types must not be empty".into());
        }
        for t in &self.resource_types {
            if !existing_types.contains(t) {
                out.push(format!("resource_types: '{t}' is not a resource type here"));
                continue;
            }
            if !manifest.resource_types().contains(t) {
                out.push(format!(
                    "resource_types: '{t}' is not declared by the manifest (it declares {})",
                    manifest.resource_types().join(", ")
                ));
            }
            let allowed: Vec<&str> = allowed_modes(t).iter().map(|m| m.as_str()).collect();
            for m in &self.modes {
                if declared_modes.contains(&m.as_str()) && !allowed.contains(&m.as_str()) {
                    out.push(format!(
                        "mode '{m}' is not allowed for resource type '{t}' (allowed: {}); \
                         agent mode exists only for Windows, WindowsDomain, Linux, Mac, Solaris, \
                         HPUX and AIX, and gateway mode not for Kubernetes or network devices",
                        allowed.join(", ")
                    ));
                }
            }
        }
        if !(1..=1000).contains(&self.order) {
            out.push(format!("order must be 1 to 1000, not {}", self.order));
        }
        // Parameters are positional: a required one needs every value up to its position.
        let declared = manifest.parameters();
        let required = declared
            .iter()
            .rposition(|p| p.required)
            .map_or(0, |i| i + 1);
        if self.parameters.len() < required {
            let missing: Vec<&str> = declared[self.parameters.len()..required]
                .iter()
                .filter(|p| p.required)
                .map(|p| p.name.as_str())
                .collect();
            out.push(format!(
                "parameters: the manifest requires a value for {}",
                missing.join(", ")
            ));
        }
        if declared.is_empty() && !self.parameters.is_empty() {
            out.push("parameters: the manifest declares no parameters".into());
        }
        if self.parameters.len() > MAX_PARAMETERS {
            out.push(format!(
                "parameters: at most {MAX_PARAMETERS} values, not {}",
                self.parameters.len()
            ));
        }
        if self
            .parameters
            .iter()
            .any(|p| p.chars().count() > MAX_PARAMETER_CHARS || p.chars().any(char::is_control))
        {
            out.push(format!(
                "parameters: each value is at most {MAX_PARAMETER_CHARS} characters without control characters"
            ));
        }
        out
    }
}
