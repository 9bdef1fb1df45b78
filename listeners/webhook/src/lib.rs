//! `webhook`: a post-reset listener that POSTs a JSON notice of the reset to a URL, signed
//! with HMAC-SHA256 so the receiver can tell it came from Lockstep. Parameters: the URL, then
//! the shared signing key. The notice names the resource, the account and the job, never a
//! password. Header: `X-Lockstep-Signature: sha256=HEX(HMAC(key, body))`.
//!
//! Delivery: a receiver that cannot be reached, or answers 408, 429 or 5xx, is tried again by
//! the host (the `retry` answer); any other answer is final. Every try of one reset carries
//! the same `delivery_id` in the signed body and in `Idempotency-Key`, so a receiver that sees
//! it twice can tell (the second try may follow a first that arrived but whose answer was lost).

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
        "delivery_id": event.delivery.as_ref().map(|d| d.id.as_str()),
        "attempt": event.delivery.as_ref().map(|d| d.attempt),
    })
    .to_string()
}

/// Whether an HTTP status means "try again later" rather than "no".
pub fn worth_retrying(status: u16) -> bool {
    matches!(status, 408 | 429) || status >= 500
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
        let delivery = event
            .delivery
            .as_ref()
            .map(|d| d.id.clone())
            .unwrap_or_default();
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-lockstep-signature", signature.as_str()),
        ];
        if !delivery.is_empty() {
            headers.push(("idempotency-key", delivery.as_str()));
        }
        match http::request("POST", url, &headers, body.as_bytes(), 4096) {
            Ok(r) if (200..300).contains(&r.status) => {
                log::info(&format!("{url} answered {}", r.status));
                PostOutcome::Success(format!("notified {url}"))
            }
            Ok(r) if worth_retrying(r.status) => {
                PostOutcome::Retry(format!("{url} answered {}", r.status))
            }
            Ok(r) => PostOutcome::Failure(format!("{url} answered {}", r.status)),
            // Not granted, or not a URL: another try cannot change that.
            Err(e @ (http::Error::Denied | http::Error::BadUrl(_))) => {
                PostOutcome::Failure(format!("{url}: {e}"))
            }
            // Not reached, refused, timed out: the receiver may be back later.
            Err(e) => PostOutcome::Retry(format!("{url}: {e}")),
        }
    }
}

export_listener!(Webhook);
