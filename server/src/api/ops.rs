//! Operational endpoints: `/healthz`, `/metrics` (Prometheus text format), and the request
//! counter middleware that feeds it. Neither endpoint reveals anything secret, so neither needs
//! a token (as scrapers and load balancers expect).
//!
//! **Invariant:** every label value comes from a fixed set, never from the request as sent:
//! methods are the nine standard ones or `other`, statuses are numbers the server itself chose
//! (100–999), and no path is a label. Anonymous clients cannot grow the counters' memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::attention::Kind;
use crate::reset::delivery::OpenCounts;

/// What `/metrics` reads from the database: the deliveries and the attention queue, each
/// `None` when it could not be read (its gauges are left out rather than shown as zero).
#[derive(Clone, Default)]
struct QueueCounts {
    deliveries: Option<OpenCounts>,
    attention: Option<Vec<(Kind, i64)>>,
}

/// Counters behind `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Requests by (method label, status): at most 10 × 900 series.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    audit_events: AtomicU64,
    audit_forward_failures: AtomicU64,
    /// Bells heard from the nodes (`cluster::bells`): work, agent, task.
    bells_heard: [AtomicU64; 3],
    /// The queue counts and when they were read: read from the database at most once per
    /// [`QUEUE_COUNTS_TTL`], however often anonymous clients ask.
    queue_counts: Mutex<(Option<std::time::Instant>, Option<QueueCounts>)>,
    /// Held by the one request that reads them again.
    queue_refresh: tokio::sync::Mutex<()>,
}

/// How long `/metrics` reuses the queue counts it read.
const QUEUE_COUNTS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// The method label of a request: a standard method by name, anything else `other` (a
/// client may send any token as its method).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

impl Metrics {
    pub fn count_request(&self, method: &axum::http::Method, status: StatusCode) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method_label(method), status.as_u16()))
                .or_default() += 1;
        }
    }

    pub fn count_audit_event(&self) {
        self.audit_events.fetch_add(1, Ordering::Relaxed);
    }

    /// A bell heard from a node (this one's own included).
    pub fn count_bell_heard(&self, bell: &crate::cluster::bells::Bell) {
        use crate::cluster::bells::Bell;
        let i = match bell {
            Bell::Work => 0,
            Bell::Agent(_) => 1,
            Bell::Task(_) => 2,
        };
        self.bells_heard[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_audit_forward_failure(&self) {
        self.audit_forward_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP lockstep_build_info Lockstep version.\n# TYPE lockstep_build_info gauge"
        );
        let _ = writeln!(
            out,
            "lockstep_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP lockstep_http_requests_total HTTP requests served, by method and status."
        );
        let _ = writeln!(out, "# TYPE lockstep_http_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "lockstep_http_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP lockstep_audit_events_total Audit events committed since start."
        );
        let _ = writeln!(out, "# TYPE lockstep_audit_events_total counter");
        let _ = writeln!(
            out,
            "lockstep_audit_events_total {}",
            self.audit_events.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP lockstep_audit_forward_failures_total Audit events that could not be sent to syslog."
        );
        let _ = writeln!(out, "# TYPE lockstep_audit_forward_failures_total counter");
        let _ = writeln!(
            out,
            "lockstep_audit_forward_failures_total {}",
            self.audit_forward_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP lockstep_cluster_bells_heard_total Wake-ups heard from the cluster's nodes \
             (PostgreSQL NOTIFY), by what they wake.\n# TYPE lockstep_cluster_bells_heard_total counter"
        );
        for (i, bell) in ["work", "agent", "task"].iter().enumerate() {
            let _ = writeln!(
                out,
                "lockstep_cluster_bells_heard_total{{bell=\"{bell}\"}} {}",
                self.bells_heard[i].load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Middleware: counts every response by method and status.
pub async fn count_requests(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let response = next.run(req).await;
    s.metrics.count_request(&method, response.status());
    response
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "ok"), (status = 503)))]
pub async fn healthz(State(s): State<AppState>) -> Response {
    match s.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

/// The queue counts, read at most once per [`QUEUE_COUNTS_TTL`] (a failed read counts as a
/// read), by one request at a time: others meanwhile get the last counts.
async fn queue_counts(s: &AppState) -> QueueCounts {
    let last = || {
        s.metrics
            .queue_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    };
    let (at, counts) = last();
    if at.is_some_and(|t| t.elapsed() < QUEUE_COUNTS_TTL) {
        return counts.unwrap_or_default();
    }
    let Ok(_refreshing) = s.metrics.queue_refresh.try_lock() else {
        return counts.unwrap_or_default();
    };
    let read = |what: &str, e: crate::Error| {
        tracing::warn!(error = %e, "cannot count {what} for /metrics");
    };
    let counts = QueueCounts {
        deliveries: crate::reset::delivery::open_counts(&s.store)
            .await
            .map_err(|e| read("deliveries", e))
            .ok(),
        attention: crate::attention::counts(&s.store, s.attention)
            .await
            .map_err(|e| read("the attention queue", e))
            .ok(),
    };
    *s.metrics
        .queue_counts
        .lock()
        .unwrap_or_else(|p| p.into_inner()) =
        (Some(std::time::Instant::now()), Some(counts.clone()));
    counts
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = format!(
        "{}# HELP lockstep_listener_integrity_refusals_total Listeners refused by the \
         integrity check since start.\n# TYPE lockstep_listener_integrity_refusals_total \
         counter\nlockstep_listener_integrity_refusals_total {}\n",
        s.metrics.render(),
        s.registry.integrity_refusals()
    );
    let QueueCounts {
        deliveries,
        attention,
    } = queue_counts(&s).await;
    if let Some(c) = deliveries {
        let _ = write!(
            text,
            "# HELP lockstep_deliveries_pending Post-reset deliveries waiting for an attempt.\n\
             # TYPE lockstep_deliveries_pending gauge\nlockstep_deliveries_pending {}\n\
             # HELP lockstep_deliveries_dead_letters Post-reset deliveries that gave up and wait \
             for a person (GET /v1/deliveries?state=dead-letter).\n\
             # TYPE lockstep_deliveries_dead_letters gauge\nlockstep_deliveries_dead_letters {}\n",
            c.pending, c.dead_letters
        );
    }
    if let Some(attention) = attention {
        let _ = write!(
            text,
            "# HELP lockstep_attention Entries of the attention queue (GET /v1/attention), by \
             kind: what waits for a person.\n# TYPE lockstep_attention gauge\n"
        );
        for (kind, n) in attention {
            let _ = writeln!(text, "lockstep_attention{{kind=\"{}\"}} {n}", kind.as_str());
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};

    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..1000 {
            let method = Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
            m.count_request(&method, StatusCode::METHOD_NOT_ALLOWED);
        }
        m.count_request(&Method::GET, StatusCode::OK);
        let text = m.render();
        assert!(
            text.contains("method=\"other\",status=\"405\"} 1000"),
            "{text}"
        );
        assert!(text.contains("method=\"GET\",status=\"200\"} 1"), "{text}");
        assert_eq!(m.requests.lock().unwrap().len(), 2);
    }
}
