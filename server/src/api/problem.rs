//! [`Error`] as an HTTP response: an RFC 9457 `application/problem+json` document.
//!
//! 4xx details are written for the caller. 5xx responses carry only an id; the cause is logged
//! under that id and never echoed (it could name a table, a path or worse).

use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, FieldProblem};

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem, e.g. `urn:lockstep:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// For validation problems: each field at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// For server errors: the id under which the cause was logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

fn problem(status: StatusCode, kind: &str, detail: String) -> Problem {
    Problem {
        kind: format!("urn:lockstep:problem:{kind}"),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail,
        errors: Vec::new(),
        id: None,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let p = match self {
            Error::Unauthenticated(why) => problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                format!("{why}; send 'Authorization: Bearer lst_…' with a valid token"),
            ),
            e @ (Error::Forbidden(_) | Error::NotAllowed(_)) => {
                problem(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            e @ Error::NotFound { .. } => {
                problem(StatusCode::NOT_FOUND, "not-found", e.to_string())
            }
            Error::Conflict(detail) => problem(StatusCode::CONFLICT, "conflict", detail),
            e @ Error::Untrusted(_) => {
                tracing::error!(error = %e, "ALERT: request refused");
                problem(StatusCode::SERVICE_UNAVAILABLE, "integrity", e.to_string())
            }
            Error::TooLarge(detail) => problem(StatusCode::PAYLOAD_TOO_LARGE, "too-large", detail),
            Error::Validation(errors) => {
                let detail = crate::error::describe(&errors);
                Problem {
                    errors,
                    ..problem(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
                }
            }
            Error::Rejected { status, detail } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                problem(status, "bad-request", detail)
            }
            internal => {
                let id = crate::time::new_id("err");
                tracing::error!(error.id = %id, error = %internal, "request failed");
                Problem {
                    id: Some(id.clone()),
                    ..problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        format!("the server failed to handle this request; report error id {id}"),
                    )
                }
            }
        };
        let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(p)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<JsonRejection> for Error {
    fn from(r: JsonRejection) -> Error {
        if let JsonRejection::JsonDataError(e) = &r
            && let Some(problem) = field_problem(e)
        {
            return Error::Validation(vec![problem]);
        }
        let status = r.status().as_u16();
        let detail = if status == 413 {
            "the request body is larger than this server accepts (see --max-body-bytes)".to_string()
        } else {
            r.body_text()
        };
        Error::Rejected { status, detail }
    }
}

/// A body that is JSON but not the request's shape, as the field at fault and what is wrong
/// with it, in the documented problem shape (`errors[]`), instead of serde's sentence with its
/// line and column. axum reports the field's path through `serde_path_to_error`.
fn field_problem(e: &dyn std::error::Error) -> Option<FieldProblem> {
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(e) = c.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            let inner = e.inner();
            // serde_json puts " at line L column C" after its message; the field says where.
            let message = inner.to_string();
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            let path = e.path().to_string();
            let named = message.split('`').nth(1).filter(|_| {
                message.starts_with("missing field") || message.starts_with("unknown field")
            });
            let field = match (path.as_str(), named) {
                (".", Some(name)) => name.to_string(),
                (path, Some(name)) if message.starts_with("missing field") => {
                    format!("{path}.{name}")
                }
                (".", None) => "body".to_string(),
                (path, _) => path.to_string(),
            };
            let problem = if message.starts_with("missing field") {
                "required; the request body does not have it".to_string()
            } else {
                message
            };
            return Some(FieldProblem::new(field, problem));
        }
        cause = c.source();
    }
    None
}

impl From<MultipartRejection> for Error {
    fn from(r: MultipartRejection) -> Error {
        Error::Rejected {
            status: r.status().as_u16(),
            detail: format!(
                "{}; send multipart/form-data (curl -F component=@FILE.wasm -F manifest=@manifest.toml …)",
                r.body_text()
            ),
        }
    }
}

impl From<MultipartError> for Error {
    fn from(e: MultipartError) -> Error {
        let status = e.status().as_u16();
        let detail = if status == 413 {
            "the upload is larger than this server accepts (see --max-listener-bytes)".to_string()
        } else {
            format!("malformed multipart body: {}", e.body_text())
        };
        Error::Rejected { status, detail }
    }
}

impl From<QueryRejection> for Error {
    fn from(r: QueryRejection) -> Error {
        Error::Rejected {
            status: 400,
            detail: r.body_text(),
        }
    }
}

impl From<PathRejection> for Error {
    fn from(r: PathRejection) -> Error {
        Error::Rejected {
            status: r.status().as_u16(),
            detail: r.body_text(),
        }
    }
}

/// The answer to a known path called with a method it does not serve.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    Error::Rejected {
        status: 405,
        detail: format!(
            "{} does not accept {method}; GET /openapi.json lists its methods",
            uri.path()
        ),
    }
}

/// The answer to a path that does not exist.
pub async fn not_found(uri: axum::http::Uri) -> Error {
    Error::Rejected {
        status: 404,
        detail: format!(
            "no such endpoint: {}; GET /openapi.json lists them",
            uri.path()
        ),
    }
}
