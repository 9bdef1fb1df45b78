//! `siem-forward`: a post-reset listener that sends the reset event to a Splunk HTTP Event
//! Collector (or anything that speaks its API). Parameters: the collector URL (e.g.
//! `https://splunk.example.com:8088/services/collector/event`), then the HEC token. The event
//! holds identifiers only, never a password. A collector that cannot be reached, or answers
//! 408, 429 or 5xx, is tried again by the host (the `retry` answer).

use lockstep_sdk::{Event, Listener, PostOutcome, export_listener, http, props};

struct SiemForward;

impl Listener for SiemForward {
    fn post_reset(event: Event) -> PostOutcome {
        let (Some(url), Some(token)) = (event.parameters.first(), event.parameters.get(1)) else {
            return PostOutcome::Failure("parameters: the HEC URL, then the HEC token".into());
        };
        let resource = props::resource("RESOURCENAME")
            .ok()
            .flatten()
            .unwrap_or_default();
        let address = props::resource("IPADDRESS")
            .ok()
            .flatten()
            .unwrap_or_default();
        let login = props::account("LOGINNAME")
            .ok()
            .flatten()
            .unwrap_or_default();
        let body = serde_json::json!({
            "sourcetype": "lockstep:reset",
            "source": "lockstep",
            "event": {
                "action": "password-reset",
                "job_id": event.job_id,
                "trigger": lockstep_sdk::trigger_name(event.trigger),
                "resource_type": event.resource_type,
                "resource": resource,
                "address": address,
                "account": login,
            },
        })
        .to_string();
        let auth = format!("Splunk {token}");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        match http::request("POST", url, &headers, body.as_bytes(), 4096) {
            Ok(r) if r.status == 200 => PostOutcome::Success(format!("sent to {url}")),
            Ok(r) => {
                let answer = format!(
                    "{url} answered {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body).trim()
                );
                if matches!(r.status, 408 | 429) || r.status >= 500 {
                    PostOutcome::Retry(answer)
                } else {
                    PostOutcome::Failure(answer)
                }
            }
            Err(e @ (http::Error::Denied | http::Error::BadUrl(_))) => {
                PostOutcome::Failure(format!("{url}: {e}"))
            }
            Err(e) => PostOutcome::Retry(format!("{url}: {e}")),
        }
    }
}

export_listener!(SiemForward);
