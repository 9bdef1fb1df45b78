//! `GET /v1/cluster`: the nodes sharing this deployment's database, with their heartbeats and
//! what each holds.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::extract::{Authorized, need};
use crate::cluster::{self, ClusterView};
use crate::error::Result;

#[utoipa::path(get, path = "/v1/cluster", tag = "ops",
    description = "Every node of the cluster (nodes gone for more than a week are forgotten): \
        its address, version, start and last heartbeat, whether it is `live`, `silent` (no \
        heartbeat for 20 s and no graceful stop: killed, hung or cut off; its leases run out \
        and other nodes take its work) or `stopped`, the reset items it holds a live lease on, \
        and the cluster-wide duties it holds.",
    responses((status = 200, body = ClusterView)))]
pub async fn get(
    State(s): State<AppState>,
    _a: Authorized<need::ViewResources>,
) -> Result<Json<ClusterView>> {
    Ok(Json(cluster::node::view(&s.store, s.resets.node()).await?))
}
