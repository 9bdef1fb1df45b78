//! Typed extractors: JSON and query parameters with Lockstep's error responses, the client's
//! address, pagination, and [`Authorized`], the one place a request is authorized.

use std::marker::PhantomData;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::request::Parts;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::audit::{self, Actor, NewEvent, Outcome};
use crate::error::{Error, Result};
use crate::identity::{self, Principal, Privilege};
use crate::store::{Page, PageRequest};

/// `axum::Json` whose rejections are problem documents.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query` whose rejections are problem documents.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` whose rejections are problem documents.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct ApiPath<T>(pub T);

pub(super) fn client_ip(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// The caller's address (for unauthenticated endpoints that still check and audit it).
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        Ok(ClientIp(client_ip(parts)))
    }
}

fn bearer(parts: &Parts) -> Result<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(Error::Unauthenticated("no Authorization header"))?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("the Authorization header is not text"))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or(Error::Unauthenticated(
            "the Authorization header is not 'Bearer TOKEN'",
        ))
}

/// A privilege required by an endpoint, as a type (see [`need`]).
pub trait Requirement: Send + Sync {
    const PRIVILEGE: Privilege;
}

/// Marker types, one per privilege, for `Authorized<need::X>`.
pub mod need {
    use super::{Privilege, Requirement};
    macro_rules! needs {
        ($($name:ident),*) => {$(
            pub struct $name;
            impl Requirement for $name {
                const PRIVILEGE: Privilege = Privilege::$name;
            }
        )*};
    }
    needs!(
        ManageUsers,
        ManageRoles,
        ManageListeners,
        ApproveListeners,
        ManageResources,
        ViewResources,
        ResetPasswords,
        RetrievePasswords,
        ReadAudit
    );
}

/// A caller with a valid token (any role).
pub struct Authenticated {
    pub principal: Principal,
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = bearer(parts)?;
        let principal = identity::authenticate(&state.store, &state.registry, token).await?;
        let actor = principal.actor(client_ip(parts));
        Ok(Authenticated { principal, actor })
    }
}

/// A caller whose role holds `R::PRIVILEGE`. A refusal is audited with the privilege missing.
pub struct Authorized<R: Requirement> {
    pub principal: Principal,
    pub actor: Actor,
    _need: PhantomData<R>,
}

impl<R: Requirement> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Authenticated { principal, actor } =
            Authenticated::from_request_parts(parts, state).await?;
        if let Err(denied) = principal.require(R::PRIVILEGE) {
            audit::record(
                &state.store,
                NewEvent {
                    actor: &actor,
                    action: "authorize",
                    target: &format!("{} {}", parts.method, parts.uri.path()),
                    outcome: Outcome::Denied,
                    detail: serde_json::json!({
                        "privilege": R::PRIVILEGE.as_str(),
                        "role": principal.role,
                    }),
                },
            )
            .await?;
            return Err(denied);
        }
        Ok(Authorized {
            principal,
            actor,
            _need: PhantomData,
        })
    }
}

/// Largest page a list returns.
pub const MAX_LIMIT: i64 = 500;
const DEFAULT_LIMIT: i64 = 100;

/// `?limit=&cursor=` on every list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Items per page, 1–500 (default 100).
    pub limit: Option<i64>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn page(&self) -> Result<PageRequest> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::validation(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(decode_cursor(c)?),
        };
        Ok(PageRequest { after, limit })
    }
}

pub fn encode_cursor(after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            Error::validation(
                "cursor",
                "is not a cursor this server issued; use the 'next' value of a previous page",
            )
        })
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl<T> From<Page<T>> for List<T> {
    fn from(p: Page<T>) -> List<T> {
        List {
            items: p.items,
            next: p.next_after.as_deref().map(encode_cursor),
        }
    }
}
