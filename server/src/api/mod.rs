//! The HTTP API: the only module that knows HTTP.
//!
//! Handlers are thin: extract (typed, with problem-document rejections), authorize (through
//! [`extract::Authorized`], the single decision point), call one domain function, map the
//! result. Routes, their OpenAPI descriptions and the router are all listed in this file.

pub mod access;
pub mod agents;
pub mod attention;
pub mod audit;
pub mod cluster;
pub mod deliveries;
pub mod drain;
pub mod extract;
pub mod identity;
pub mod inventory;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod registry;
pub mod reset;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use utoipa::OpenApi;

use self::openapi::{BearerAuth, PathParameters, ProblemContentType};
use crate::registry::Registry;
use crate::store::Store;
use crate::vault::Vault;

/// Default cap on a JSON request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default cap on an uploaded listener component: Python and JavaScript components weigh
/// 12–18 MB.
pub const DEFAULT_MAX_LISTENER_BYTES: usize = 32 * 1024 * 1024;
/// Room for the other parts of an upload (manifest, signature, association, comment).
const UPLOAD_OVERHEAD_BYTES: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub vault: Arc<Vault>,
    pub metrics: Arc<ops::Metrics>,
    pub registry: Registry,
    pub resets: Arc<crate::reset::pipeline::Engine>,
    pub agents: Arc<crate::agents::AgentHub>,
    /// The newest audit checkpoint this server wrote (`GET /v1/audit/verify` compares with it).
    pub checkpoints: Arc<crate::audit::LastCheckpoint>,
    /// How the attention queue decides (`--attention-vetoes`).
    pub attention: crate::attention::Settings,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Lockstep", description = "Privileged password rotation with sandboxed listeners"),
    paths(
        ops::healthz, ops::metrics, cluster::get,
        identity::me, identity::list_users, identity::create_user, identity::get_user,
        identity::reissue_activation, identity::activate, identity::list_user_tokens, identity::list_my_tokens,
        identity::issue_my_token, identity::revoke_token, identity::list_roles,
        identity::create_role, identity::delete_role,
        inventory::list_types, inventory::get_type, inventory::create_type, inventory::delete_type,
        inventory::put_reset_command, inventory::delete_reset_command,
        inventory::list_resources, inventory::create_resource, inventory::get_resource,
        inventory::update_resource, inventory::delete_resource, inventory::list_accounts,
        inventory::search_accounts,
        inventory::create_account, inventory::get_account, inventory::update_account,
        inventory::delete_account, inventory::retrieve_password,
        audit::list, audit::verify,
        registry::list_keys, registry::propose_key, registry::propose_key_removal,
        registry::upload_listener, registry::upload_version, registry::propose_association,
        registry::propose_delete, registry::list_listeners, registry::get_listener,
        registry::history, registry::resources, registry::plan, registry::list_changes,
        registry::get_change, registry::approve, registry::reject, registry::withdraw,
        notifications::list, notifications::mark_read,
        reset::reset_account, reset::bulk_reset, reset::get_job, reset::job_events, reset::get_settings, reset::put_settings,
        reset::list_policies, reset::create_policy, reset::list_schedules,
        reset::create_schedule, reset::delete_schedule,
        agents::issue_token, agents::list, agents::get, agents::revoke, agents::tasks_of_agent,
        agents::my_tasks, agents::enroll, agents::discovery, agents::next_task, agents::report,
        agents::component, agents::verify_account, agents::get_task,
        access::get_policy, access::put_policy, access::delete_policy, access::effective_policy,
        access::request_checkout, access::list_checkouts, access::get_checkout, access::approve,
        access::reject, access::withdraw, access::check_in, access::force_check_in,
        deliveries::list, deliveries::get, deliveries::rerun,
        attention::list, attention::resolve,
    ),
    components(schemas(problem::Problem, crate::error::FieldProblem,
        crate::reset::watch::ItemChange, crate::reset::watch::ProgressChange)),
    modifiers(&BearerAuth, &PathParameters, &ProblemContentType),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// The whole application.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let upload_limit =
        DefaultBodyLimit::max(state.registry.max_component_bytes() + UPLOAD_OVERHEAD_BYTES);
    let v1 = Router::new()
        .route("/me", get(identity::me))
        .route(
            "/users",
            get(identity::list_users).post(identity::create_user),
        )
        .route("/users/{id}", get(identity::get_user))
        .route("/users/{id}/tokens", get(identity::list_user_tokens))
        .route("/users/{id}/activation", post(identity::reissue_activation))
        .route("/activate", post(identity::activate))
        .route(
            "/tokens",
            get(identity::list_my_tokens).post(identity::issue_my_token),
        )
        .route(
            "/tokens/{id}",
            axum::routing::delete(identity::revoke_token),
        )
        .route(
            "/roles",
            get(identity::list_roles).post(identity::create_role),
        )
        .route(
            "/roles/{name}",
            axum::routing::delete(identity::delete_role),
        )
        .route(
            "/resource-types",
            get(inventory::list_types).post(inventory::create_type),
        )
        .route(
            "/resource-types/{name}",
            get(inventory::get_type).delete(inventory::delete_type),
        )
        .route(
            "/resource-types/{name}/reset-command",
            axum::routing::put(inventory::put_reset_command)
                .delete(inventory::delete_reset_command),
        )
        .route(
            "/resources",
            get(inventory::list_resources).post(inventory::create_resource),
        )
        .route(
            "/resources/{id}",
            get(inventory::get_resource)
                .patch(inventory::update_resource)
                .delete(inventory::delete_resource),
        )
        .route(
            "/resources/{id}/accounts",
            get(inventory::list_accounts).post(inventory::create_account),
        )
        .route("/accounts", get(inventory::search_accounts))
        .route(
            "/accounts/{id}",
            get(inventory::get_account)
                .patch(inventory::update_account)
                .delete(inventory::delete_account),
        )
        .route(
            "/accounts/{id}/password/retrieve",
            post(inventory::retrieve_password),
        )
        .route(
            "/publisher-keys",
            get(registry::list_keys).post(registry::propose_key),
        )
        .route(
            "/publisher-keys/{key_id}",
            delete(registry::propose_key_removal),
        )
        .route(
            "/listeners",
            get(registry::list_listeners)
                .merge(post(registry::upload_listener).layer(upload_limit)),
        )
        .route(
            "/listeners/{name}",
            get(registry::get_listener)
                .delete(registry::propose_delete)
                .merge(put(registry::upload_version).layer(upload_limit)),
        )
        .route(
            "/listeners/{name}/association",
            put(registry::propose_association),
        )
        .route("/listeners/{name}/history", get(registry::history))
        .route("/listeners/{name}/resources", get(registry::resources))
        .route("/listener-plan", get(registry::plan))
        .route("/change-requests", get(registry::list_changes))
        .route("/change-requests/{id}", get(registry::get_change))
        .route("/change-requests/{id}/approve", post(registry::approve))
        .route("/change-requests/{id}/reject", post(registry::reject))
        .route("/change-requests/{id}/withdraw", post(registry::withdraw))
        .route("/accounts/{id}/reset", post(reset::reset_account))
        .route("/reset-jobs", post(reset::bulk_reset))
        .route("/reset-jobs/{id}", get(reset::get_job))
        .route("/reset-jobs/{id}/events", get(reset::job_events))
        .route("/deliveries", get(deliveries::list))
        .route("/attention", get(attention::list))
        .route("/accounts/{id}/resolve", post(attention::resolve))
        .route("/deliveries/{id}", get(deliveries::get))
        .route("/deliveries/{id}/rerun", post(deliveries::rerun))
        .route(
            "/resources/{id}/reset-settings",
            get(reset::get_settings).put(reset::put_settings),
        )
        .route(
            "/password-policies",
            get(reset::list_policies).post(reset::create_policy),
        )
        .route(
            "/rotation-schedules",
            get(reset::list_schedules).post(reset::create_schedule),
        )
        .route("/rotation-schedules/{name}", delete(reset::delete_schedule))
        .route("/agent-tokens", post(agents::issue_token))
        .route("/agents", get(agents::list))
        .route("/agents/{id}", get(agents::get))
        .route("/agents/{id}/revoke", post(agents::revoke))
        .route("/agents/{id}/tasks", get(agents::tasks_of_agent))
        .route("/agent-tasks", get(agents::my_tasks))
        .route("/agent-tasks/{id}", get(agents::get_task))
        .route("/accounts/{id}/verify", post(agents::verify_account))
        .route("/agent/enroll", post(agents::enroll))
        .route("/agent/discovery", post(agents::discovery))
        .route("/agent/tasks/next", get(agents::next_task))
        .route("/agent/tasks/{id}/result", post(agents::report))
        .route("/agent/components/{sha256}", get(agents::component))
        .route("/notifications", get(notifications::list))
        .route("/notifications/{id}/read", post(notifications::mark_read))
        .route("/audit", get(audit::list))
        .route("/audit/verify", get(audit::verify))
        .route("/cluster", get(cluster::get))
        .route(
            "/access-policies/{scope}/{id}",
            get(access::get_policy)
                .put(access::put_policy)
                .delete(access::delete_policy),
        )
        .route(
            "/accounts/{id}/access-policy",
            get(access::effective_policy),
        )
        .route("/accounts/{id}/checkouts", post(access::request_checkout))
        .route("/checkouts", get(access::list_checkouts))
        .route("/checkouts/{id}", get(access::get_checkout))
        .route("/checkouts/{id}/approve", post(access::approve))
        .route("/checkouts/{id}/reject", post(access::reject))
        .route("/checkouts/{id}/withdraw", post(access::withdraw))
        .route("/checkouts/{id}/checkin", post(access::check_in))
        .route(
            "/checkouts/{id}/force-checkin",
            post(access::force_check_in),
        );

    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi_json))
        .nest("/v1", v1)
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(drain::drain_refused_bodies))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::count_requests,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
