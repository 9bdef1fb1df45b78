//! Operational endpoints: `/healthz`, `/metrics` (Prometheus text format), and the request
//! counter middleware that feeds it. Neither endpoint reveals anything secret, so neither needs
//! a token (as scrapers and load balancers expect).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Counters behind `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Requests by (method, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    audit_events: AtomicU64,
    audit_forward_failures: AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, method: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method.to_string(), status)).or_default() += 1;
        }
    }

    pub fn count_audit_event(&self) {
        self.audit_events.fetch_add(1, Ordering::Relaxed);
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
        out
    }
}

/// Middleware: counts every response by method and status.
pub async fn count_requests(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    s.metrics.count_request(&method, response.status().as_u16());
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

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}
