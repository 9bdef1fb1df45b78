//! Notifications: what a user should know about (a change waiting for their approval, a
//! decision on their change). Written in the same transaction as the event they report, so a
//! change request never exists without its approver's notification. With an SMTP relay
//! configured, each committed notification is also mailed to the user's address ([`mail`]).

pub mod mail;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::notifications::NotificationRow;
use crate::store::{self, Page, PageRequest, Store, WriteTx};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: String,
    pub at: String,
    /// `approval-requested` or `change-decided`.
    pub kind: String,
    pub message: String,
    pub change_request: Option<String>,
    pub read_at: Option<String>,
}

impl From<NotificationRow> for Notification {
    fn from(n: NotificationRow) -> Notification {
        Notification {
            id: n.id,
            at: n.at,
            kind: n.kind,
            message: n.message,
            change_request: n.change_request_id,
            read_at: n.read_at,
        }
    }
}

/// Queues a notification for `user_name` inside `tx`.
pub async fn notify(
    tx: &mut WriteTx,
    user_name: &str,
    kind: &str,
    message: String,
    change_request: Option<&str>,
) -> Result<()> {
    let row = NotificationRow {
        id: crate::time::new_id("ntf"),
        user_name: user_name.to_string(),
        at: crate::time::now(),
        kind: kind.to_string(),
        message,
        change_request_id: change_request.map(str::to_string),
        read_at: None,
    };
    store::notifications::insert(tx.conn(), &row).await?;
    tx.record_notification(row);
    Ok(())
}

pub async fn list(
    store: &Store,
    user_name: &str,
    unread_only: bool,
    page: &PageRequest,
) -> Result<Page<Notification>> {
    Ok(
        store::notifications::list(store.pool(), user_name, unread_only, page)
            .await?
            .map(Notification::from),
    )
}

/// Marks one of the caller's notifications read (idempotent). Another user's notification is
/// reported as not found, so ids cannot be probed.
pub async fn mark_read(store: &Store, user_name: &str, id: &str) -> Result<()> {
    let mut tx = store.begin_write().await?;
    if !store::notifications::mark_read(tx.conn(), user_name, id, &crate::time::now()).await? {
        return Err(Error::NotFound {
            what: "notification",
            id: id.to_string(),
        });
    }
    tx.commit().await
}
