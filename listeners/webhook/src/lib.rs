//! `webhook`: a post-reset listener that POSTs a JSON notice of the reset to a URL, signed
//! with HMAC-SHA256 so the receiver can tell it came from Lockstep. Parameters: the URL, then
//! the shared signing key. The notice names the resource, the account and the job, never a
//! password. Header: `X-Lockstep-Signature: sha256=HEX(HMAC(key, body))`.

use hmac::{Hmac, KeyInit, Mac};
use lockstep_sdk::{Event, Listener, PostOutcome, export_listener, http, log, props};
use sha2::Sha256;

struct Webhook;

/// The JSON body, built only from non-secret values.
pub fn notice(event: &Event, resource: &str, login: &str) -> String {
    serde_json::json!({
        "event": "password-reset",
        "job_id": event.job_id,
        "trigger": lockstep_sdk::trigger_name(event.trigger),
        "resource_type": event.resource_type,
        "resource": resource,
        "account": login,
    })
    .to_string()
}

impl Listener for Webhook {
    fn post_reset(event: Event) -> PostOutcome {
        let (Some(url), Some(key)) = (event.parameters.first(), event.parameters.get(1)) else {
            return PostOutcome::Failure(
                "parameters: the webhook URL, then the signing key".into(),
            );
        };
        let resource = props::resource("RESOURCENAME")
            .ok()
            .flatten()
            .unwrap_or_default();
        let login = props::account("LOGINNAME")
            .ok()
            .flatten()
            .unwrap_or_default();
        let body = notice(&event, &resource, &login);
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
            return PostOutcome::Failure("the signing key is not usable".into());
        };
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let headers = [
            ("content-type", "application/json"),
            ("x-lockstep-signature", signature.as_str()),
        ];
        match http::request("POST", url, &headers, body.as_bytes(), 4096) {
            Ok(r) if (200..300).contains(&r.status) => {
                log::info(&format!("{url} answered {}", r.status));
                PostOutcome::Success(format!("notified {url}"))
            }
            Ok(r) => PostOutcome::Failure(format!("{url} answered {}", r.status)),
            Err(e) => PostOutcome::Failure(format!("{url}: {e}")),
        }
    }
}

export_listener!(Webhook);
