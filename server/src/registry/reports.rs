//! Reading the registry: listeners, their history and resources, change requests.

use serde::Serialize;

use super::{Association, ChangeRequest, Registry};
use crate::error::{Error, Result};
use crate::inventory::resources::Resource;
use crate::states::ChangeStatus;
use crate::store::listeners::ListenerRow;
use crate::store::{self, Page, PageRequest};

/// A listener: its approved state, its pending change, its alert.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Listener {
    pub name: String,
    /// `pending` (waiting for its first approval), `active`, `deleted` or `rejected`.
    pub status: String,
    /// The approved, current version.
    pub version: Option<String>,
    pub component_sha256: Option<String>,
    pub manifest_sha256: Option<String>,
    /// The publisher key that signed the current version.
    pub key_id: Option<String>,
    /// The current version's manifest, as uploaded.
    pub manifest: Option<String>,
    pub association: Option<Association>,
    pub approved_by: Option<String>,
    pub approved_at: Option<String>,
    /// Set when the integrity check refused to run it: what did not match.
    pub alert: Option<String>,
    pub alert_at: Option<String>,
    /// The id of its pending change request, if any.
    pub pending_change: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Registry {
    async fn describe(&self, l: ListenerRow) -> Result<Listener> {
        let version = match &l.current_version_id {
            Some(id) => store::listeners::get_version(self.store.pool(), id).await?,
            None => None,
        };
        let pending = store::change_requests::pending_for(self.store.pool(), &l.name).await?;
        Ok(Listener {
            association: l.association.as_deref().and_then(Association::parse_stored),
            version: version.as_ref().map(|v| v.version.clone()),
            component_sha256: version.as_ref().map(|v| v.component_sha256.clone()),
            manifest_sha256: version.as_ref().map(|v| v.manifest_sha256.clone()),
            key_id: version.as_ref().map(|v| v.key_id.clone()),
            manifest: version.map(|v| v.manifest),
            pending_change: pending.map(|p| p.id),
            name: l.name,
            status: l.status,
            approved_by: l.approved_by,
            approved_at: l.approved_at,
            alert: l.alert,
            alert_at: l.alert_at,
            created_at: l.created_at,
            updated_at: l.updated_at,
        })
    }

    async fn row(&self, name: &str) -> Result<ListenerRow> {
        store::listeners::get_by_name(self.store.pool(), name)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "listener",
                id: name.to_string(),
            })
    }

    pub async fn get_listener(&self, name: &str) -> Result<Listener> {
        let row = self.row(name).await?;
        self.describe(row).await
    }

    pub async fn list_listeners(&self, page: &PageRequest) -> Result<Page<Listener>> {
        let rows = store::listeners::list(self.store.pool(), page).await?;
        let mut items = Vec::with_capacity(rows.items.len());
        for r in rows.items {
            items.push(self.describe(r).await?);
        }
        Ok(Page {
            items,
            next_after: rows.next_after,
        })
    }

    /// Every change request of a listener, oldest first.
    pub async fn history(&self, name: &str, page: &PageRequest) -> Result<Page<ChangeRequest>> {
        let l = self.row(name).await?;
        Ok(
            store::change_requests::list(self.store.pool(), None, Some(&l.id), page)
                .await?
                .map(Into::into),
        )
    }

    /// The resources a listener is configured for: those of its associated types.
    pub async fn resources_of(&self, name: &str, page: &PageRequest) -> Result<Page<Resource>> {
        let l = self.row(name).await?;
        Ok(
            store::resources::list_for_listener(self.store.pool(), &l.id, page)
                .await?
                .map(Into::into),
        )
    }

    pub async fn list_change_requests(
        &self,
        status: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<ChangeRequest>> {
        if let Some(s) = status
            && ChangeStatus::parse(s).is_none()
        {
            return Err(Error::validation(
                "status",
                "one of pending, approved, rejected, withdrawn",
            ));
        }
        Ok(
            store::change_requests::list(self.store.pool(), status, None, page)
                .await?
                .map(Into::into),
        )
    }

    pub async fn get_change_request(&self, id: &str) -> Result<ChangeRequest> {
        store::change_requests::get(self.store.pool(), id)
            .await?
            .map(Into::into)
            .ok_or_else(|| Error::NotFound {
                what: "change request",
                id: id.to_string(),
            })
    }
}
