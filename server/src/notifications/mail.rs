//! Mailing committed notifications through an SMTP relay (`--smtp-url`), off the request path.
//!
//! Best effort by design: the notification itself is already stored (and listed by
//! `GET /v1/notifications`); a relay that is down costs the mail, logged as a warning, never the
//! change. Mail carries only the notification's text: names, ids and kinds, never a secret.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::error::{Error, Result};
use crate::store::notifications::NotificationRow;
use crate::store::{self, Store, redact_url};

/// An SMTP relay and the sender address.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    relay: String,
}

impl Mailer {
    /// `url`: `smtps://[USER:PASS@]HOST[:465]`, `smtp://HOST:587?tls=required` (STARTTLS) or
    /// `smtp://HOST[:25]` (plain).
    pub fn new(url: &str, from: &str) -> Result<Mailer> {
        let relay = redact_url(url);
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| Error::Config(format!("--smtp-url '{relay}': {e}")))?
            .build();
        let from = from.parse::<Mailbox>().map_err(|e| {
            Error::Config(format!("--smtp-from '{from}' is not a mail address: {e}"))
        })?;
        Ok(Mailer {
            transport,
            from,
            relay,
        })
    }

    /// Mails every notification received on `rx` to its user, if they have an address.
    pub fn spawn(self, store: Store, mut rx: UnboundedReceiver<NotificationRow>) {
        tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                if let Err(e) = self.send(&store, &n).await {
                    tracing::warn!(
                        notification = %n.id, relay = %self.relay, error = %e,
                        "could not mail a notification; it is still listed by GET /v1/notifications"
                    );
                }
            }
        });
    }

    async fn send(&self, store: &Store, n: &NotificationRow) -> Result<()> {
        let Some(user) = store::users::get_by_name(store.pool(), &n.user_name).await? else {
            return Ok(());
        };
        let Some(email) = user.email else {
            return Ok(());
        };
        let to = email
            .parse::<Mailbox>()
            .map_err(|e| Error::Internal(format!("stored address of {}: {e}", n.user_name)))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("[Lockstep] {}", n.kind))
            .body(format!(
                "{}\n\nLockstep notification {} at {}. List yours with GET /v1/notifications.\n",
                n.message, n.id, n.at
            ))
            .map_err(|e| Error::Internal(format!("cannot build mail: {e}")))?;
        self.transport
            .send(message)
            .await
            .map_err(|e| Error::Internal(format!("SMTP: {e}")))?;
        tracing::info!(notification = %n.id, user = %n.user_name, "mailed notification");
        Ok(())
    }
}
