//! `/v1/me`, `/v1/users`, `/v1/tokens`, `/v1/roles`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use super::extract::{
    ApiJson, ApiPath, ApiQuery, Authenticated, Authorized, ClientIp, List, ListQuery, need,
};
use crate::error::Result;
use crate::identity::activation::{self, ActivateInput, Activation};
use crate::identity::{
    self, CreatedUser, IssuedToken, NewRole, NewToken, NewUser, Privilege, Role, TokenInfo, User,
};

/// The caller, as the server sees them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user_id: String,
    pub name: String,
    pub role: String,
    pub privileges: Vec<Privilege>,
    pub token_id: String,
}

#[utoipa::path(get, path = "/v1/me", tag = "identity", responses((status = 200, body = Me)))]
pub async fn me(auth: Authenticated) -> Json<Me> {
    let p = auth.principal;
    Json(Me {
        user_id: p.user_id,
        name: p.user_name,
        role: p.role,
        privileges: p.privileges,
        token_id: p.token_id,
    })
}

#[utoipa::path(get, path = "/v1/users", tag = "identity", params(ListQuery),
    responses((status = 200, body = List<User>)))]
pub async fn list_users(
    State(s): State<AppState>,
    _auth: Authorized<need::ManageUsers>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<User>>> {
    Ok(Json(
        identity::list_users(&s.store, &q.page()?).await?.into(),
    ))
}

#[utoipa::path(post, path = "/v1/users", tag = "identity", request_body = NewUser,
    responses((status = 201, body = CreatedUser, description = "The activation code is shown only in this response"),
               (status = 403, body = super::problem::Problem), (status = 409, body = super::problem::Problem),
               (status = 422, body = super::problem::Problem)))]
pub async fn create_user(
    State(s): State<AppState>,
    auth: Authorized<need::ManageUsers>,
    ApiJson(input): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<CreatedUser>)> {
    Ok((
        StatusCode::CREATED,
        Json(identity::create_user(&s.store, Some(&auth.principal), &auth.actor, input).await?),
    ))
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "identity", responses((status = 200, body = User)))]
pub async fn get_user(
    State(s): State<AppState>,
    _auth: Authorized<need::ManageUsers>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<User>> {
    Ok(Json(identity::get_user(&s.store, &id).await?))
}

#[utoipa::path(post, path = "/v1/users/{id}/activation", tag = "identity",
    responses((status = 201, body = Activation, description = "Every token of the user is revoked; the new code is shown only here"),
              (status = 403, body = super::problem::Problem)))]
pub async fn reissue_activation(
    State(s): State<AppState>,
    auth: Authorized<need::ManageUsers>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Activation>)> {
    Ok((
        StatusCode::CREATED,
        Json(activation::reissue(&s.store, &auth.principal, &auth.actor, &id).await?),
    ))
}

#[utoipa::path(post, path = "/v1/activate", tag = "identity", request_body = ActivateInput, security(()),
    responses((status = 201, body = IssuedToken, description = "The user's first token, shown only here"),
              (status = 401, body = super::problem::Problem)))]
pub async fn activate(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(input): ApiJson<ActivateInput>,
) -> Result<(StatusCode, Json<IssuedToken>)> {
    let actor = crate::audit::Actor::anonymous(ip);
    Ok((
        StatusCode::CREATED,
        Json(activation::activate(&s.store, &s.registry, &actor, input).await?),
    ))
}

#[utoipa::path(get, path = "/v1/users/{id}/tokens", tag = "identity", responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn list_user_tokens(
    State(s): State<AppState>,
    _auth: Authorized<need::ManageUsers>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<TokenInfo>>> {
    identity::get_user(&s.store, &id).await?;
    Ok(Json(identity::list_tokens(&s.store, &id).await?))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "identity", responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn list_my_tokens(
    State(s): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Vec<TokenInfo>>> {
    Ok(Json(
        identity::list_tokens(&s.store, &auth.principal.user_id).await?,
    ))
}

#[utoipa::path(post, path = "/v1/tokens", tag = "identity", request_body = NewToken,
    responses((status = 201, body = IssuedToken, description = "The token text is shown only in this response")))]
pub async fn issue_my_token(
    State(s): State<AppState>,
    auth: Authenticated,
    ApiJson(input): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<IssuedToken>)> {
    let user_id = auth.principal.user_id.clone();
    Ok((
        StatusCode::CREATED,
        Json(identity::issue_token(&s.store, &auth.actor, &user_id, input).await?),
    ))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "identity",
    responses((status = 200, body = TokenInfo, description = "Revoked; revoking another user's token needs manage-users")))]
pub async fn revoke_token(
    State(s): State<AppState>,
    auth: Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TokenInfo>> {
    Ok(Json(
        identity::revoke_token(&s.store, &auth.principal, &auth.actor, &id).await?,
    ))
}

#[utoipa::path(get, path = "/v1/roles", tag = "identity", responses((status = 200, body = Vec<Role>)))]
pub async fn list_roles(
    State(s): State<AppState>,
    _auth: Authenticated,
) -> Result<Json<Vec<Role>>> {
    Ok(Json(identity::list_roles(&s.store).await?))
}

#[utoipa::path(post, path = "/v1/roles", tag = "identity", request_body = NewRole,
    responses((status = 201, body = Role)))]
pub async fn create_role(
    State(s): State<AppState>,
    auth: Authorized<need::ManageRoles>,
    ApiJson(input): ApiJson<NewRole>,
) -> Result<(StatusCode, Json<Role>)> {
    Ok((
        StatusCode::CREATED,
        Json(identity::create_role(&s.store, &auth.principal, &auth.actor, input).await?),
    ))
}

#[utoipa::path(delete, path = "/v1/roles/{name}", tag = "identity", responses((status = 204)))]
pub async fn delete_role(
    State(s): State<AppState>,
    auth: Authorized<need::ManageRoles>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode> {
    identity::delete_role(&s.store, &auth.actor, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
