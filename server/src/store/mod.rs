//! The store: every SQL statement of the server lives under this module, one file per entity.
//!
//! One code path serves both databases through sqlx's `Any` driver: queries use `$1`-style
//! parameters (which SQLite also accepts), integers are `BIGINT`, timestamps fixed-width text.
//! The schema is migrated from `migrations/sqlite` or `migrations/postgres`, which are kept
//! column-for-column identical.
//!
//! **Invariant:** store code knows nothing of HTTP, wasm or plaintext secrets; it moves sealed
//! bytes (`vault::Sealed`) in and out. A `Store` carries the vault that keys the audit chain
//! (`set_chain_key`) to `audit::append` without using it.
//!
//! Writes go through [`Store::begin_write`], which serializes writers inside this process. SQLite
//! has a single writer anyway (this avoids `SQLITE_BUSY` on lock upgrades), and the audit chain
//! needs its appends ordered; on PostgreSQL the audit append additionally takes an advisory lock
//! so several servers on one database keep a single chain.

pub mod access_policies;
pub mod accounts;
pub mod agents;
pub mod attention;
pub mod audit;
pub mod change_requests;
pub mod checkouts;
pub mod cluster;
pub mod deliveries;
mod error;
pub mod listeners;
pub mod notifications;
pub mod password_policies;
pub mod publisher_keys;
pub mod registry_ledger;
pub mod reset_settings;
pub mod resets;
pub mod resource_types;
pub mod resources;
pub mod roles;
pub mod rotation_schedules;
pub mod tokens;
pub mod user_custody;
pub mod user_identity;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Executor, Transaction};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{Mutex, OwnedMutexGuard};

use self::audit::AuditRow;
use self::notifications::NotificationRow;

use crate::error::Result;

pub use self::error::Error;
use crate::vault::Vault;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(crate::error::Error::Config(format!(
                "unsupported database URL '{}'; use sqlite://PATH or postgres://USER@HOST:PORT/DB",
                redact_url(url)
            )))
        }
    }
}

/// Hides a password in a database URL before it is printed.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A connection pool plus the write lock. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    write_lock: Arc<Mutex<()>>,
    audit_sink: Option<UnboundedSender<AuditRow>>,
    notification_sink: Option<UnboundedSender<NotificationRow>>,
    /// The vault whose master key authenticates the audit chain (`audit::append`).
    chain_key: Option<Arc<Vault>>,
    /// The migrations this process applied when it opened the store (empty for
    /// `open_existing`): one-time steps of an upgrade run only where its migration ran.
    applied_now: Arc<[i64]>,
}

/// A write transaction. Holds the process-wide write lock until commit or drop (rollback).
pub struct WriteTx {
    tx: Transaction<'static, sqlx::Any>,
    backend: Backend,
    audited: Vec<AuditRow>,
    audit_sink: Option<UnboundedSender<AuditRow>>,
    notified: Vec<NotificationRow>,
    notification_sink: Option<UnboundedSender<NotificationRow>>,
    chain_key: Option<Arc<Vault>>,
    _guard: OwnedMutexGuard<()>,
}

impl WriteTx {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The vault that authenticates audit events appended in this transaction.
    pub fn chain_key(&self) -> Option<Arc<Vault>> {
        self.chain_key.clone()
    }

    /// Notes an audit row written in this transaction; it is published after commit.
    pub fn record_audit(&mut self, row: AuditRow) {
        self.audited.push(row);
    }

    /// Notes a notification written in this transaction; it is mailed after commit.
    pub fn record_notification(&mut self, row: NotificationRow) {
        self.notified.push(row);
    }

    /// Commits, then hands the audit rows written in this transaction to the audit sink (syslog
    /// forwarding, metrics) and its notifications to the mailer. A rolled-back transaction
    /// publishes nothing.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        // The receivers only go away at shutdown; nothing to do then.
        if let Some(sink) = &self.audit_sink {
            for row in self.audited {
                let _ = sink.send(row);
            }
        }
        if let Some(sink) = &self.notification_sink {
            for row in self.notified {
                let _ = sink.send(row);
            }
        }
        Ok(())
    }
}

impl Store {
    /// Connects and migrates the schema. `url` is `sqlite://...` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Store> {
        let mut store = Self::connect(url, false).await?;
        store.applied_now = Arc::from(store.migrate().await?);
        Ok(store)
    }

    /// Connects without migrating; for SQLite, the file must exist. Used by read-only tools
    /// such as `lockstep audit verify`, which must not create or change a database.
    pub async fn open_existing(url: &str) -> Result<Store> {
        Self::connect(url, true).await
    }

    async fn connect(url: &str, must_exist: bool) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let mode = if must_exist { "rw" } else { "rwc" };
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode={mode}")
            }
            _ => url.to_string(),
        };
        let options: AnyConnectOptions = url.parse().map_err(|e| {
            crate::error::Error::Config(format!("invalid database URL '{}': {e}", redact_url(&url)))
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer; the busy timeout
                        // covers other processes (the admin CLI) writing at the same time.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| {
                crate::error::Error::Config(format!(
                    "cannot open database '{}': {e}",
                    redact_url(&url)
                ))
            })?;
        Ok(Store {
            pool,
            backend,
            write_lock: Arc::new(Mutex::new(())),
            audit_sink: None,
            notification_sink: None,
            chain_key: None,
            applied_now: Arc::from([]),
        })
    }

    /// Applies the migrations not yet applied; returns their versions.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let before = self.applied_migrations().await;
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        let after = self.applied_migrations().await;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    /// The versions in sqlx's migration table (none before the first migration made it).
    async fn applied_migrations(&self) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default()
    }

    /// Whether this process applied migration `version` when it opened the store.
    pub fn applied_now(&self, version: i64) -> bool {
        self.applied_now.contains(&version)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Sends every committed audit row to `sink` from now on.
    pub fn set_audit_sink(&mut self, sink: UnboundedSender<AuditRow>) {
        self.audit_sink = Some(sink);
    }

    /// Authenticates every audit event appended from now on with `vault`'s master key (see
    /// `audit::chain`). A store without one cannot append audit events.
    pub fn set_chain_key(&mut self, vault: Arc<Vault>) {
        self.chain_key = Some(vault);
    }

    /// Sends every committed notification to `sink` from now on (the mailer).
    pub fn set_notification_sink(&mut self, sink: UnboundedSender<NotificationRow>) {
        self.notification_sink = Some(sink);
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn begin_write(&self) -> Result<WriteTx> {
        let guard = self.write_lock.clone().lock_owned().await;
        // SQLite: take the write lock at BEGIN. A deferred transaction that reads first and
        // then writes fails at once (SQLITE_BUSY_SNAPSHOT, no busy timeout) if a write outside
        // this lock (a lease renewal, another process) committed in between.
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx {
            tx,
            backend: self.backend,
            audited: Vec::new(),
            audit_sink: self.audit_sink.clone(),
            notified: Vec::new(),
            notification_sink: self.notification_sink.clone(),
            chain_key: self.chain_key.clone(),
            _guard: guard,
        })
    }

    /// A trivial round trip, for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Runs `statement` on its own connection to `url`, as a database writer without the master
/// key would: tests prove that what it edits is caught.
#[cfg(test)]
pub(crate) async fn tamper(url: &str, statement: &str) -> std::result::Result<(), Error> {
    use sqlx::Connection;
    let mut c = AnyConnection::connect(url).await?;
    c.execute(sqlx::AssertSqlSafe(statement.to_string()))
        .await?;
    c.close().await?;
    Ok(())
}

/// True when a store write was refused by a unique constraint (both dialects).
pub fn is_unique_violation(e: &Error) -> bool {
    e.is_unique_violation()
}

/// True when a store write was refused by a foreign key (both dialects).
pub fn is_foreign_key_violation(e: &Error) -> bool {
    e.is_foreign_key_violation()
}

/// Most bytes of bound values one statement should carry. sqlx 0.9 no longer sets
/// `TCP_NODELAY` on PostgreSQL connections (transact-rs/sqlx#4335): a message larger than the
/// socket's send buffer leaves in two writes, Nagle holds the second until PostgreSQL's
/// delayed ACK, and the statement stalls 40 ms. Measured on this machine's loopback: 50 rows of
/// 16 values (~17 KiB) run in 0.8 ms, 75 rows (~26 KiB) in 44 ms (docs/performance.md,
/// "Inventory at scale"). Bulk statements stay under this.
pub(crate) const STATEMENT_BYTES: usize = 12 * 1024;

/// Bytes a bound value costs on the wire beyond its own: its length and format code.
pub(crate) const VALUE_OVERHEAD: usize = 6;

/// Splits `rows` into runs for one statement each: at most `max_rows` rows, and (unless one row
/// alone is larger) at most [`STATEMENT_BYTES`] of bound values, `size` estimating one row's.
pub(crate) fn batches<T>(rows: &[T], max_rows: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let b = size(row);
        if i > start && (i - start >= max_rows || bytes + b > STATEMENT_BYTES) {
            out.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// Keyset pagination: rows with an id strictly after `after`, at most `limit`.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: i64,
}

/// One page of rows and the cursor of the next one, if any.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    /// Converts every item, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_after: self.next_after,
        }
    }

    /// Builds a page from `limit + 1` fetched rows: the extra row only says "there is more".
    pub fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Page<T> {
        let limit = usize::try_from(limit).unwrap_or(0);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_after = if more { rows.last().map(key) } else { None };
        Page {
            items: rows,
            next_after,
        }
    }
}

/// Three nullable columns that hold a `vault::Sealed` value when all are set.
#[derive(sqlx::FromRow)]
pub(crate) struct SealedColumns {
    key_id: Option<String>,
    nonce: Option<Vec<u8>>,
    ciphertext: Option<Vec<u8>>,
}

impl SealedColumns {
    pub(crate) fn sealed(self) -> Option<crate::vault::Sealed> {
        Some(crate::vault::Sealed {
            key_id: self.key_id?,
            nonce: self.nonce?,
            ciphertext: self.ciphertext?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_rows_and_bytes_under_their_bounds_and_lose_nothing() {
        let rows: Vec<usize> = (0..1000).map(|i| 100 + i % 300).collect();
        let runs = batches(&rows, 64, |r| *r);
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), rows.len());
        assert_eq!(runs.concat(), rows, "in order, each row once");
        for run in &runs {
            assert!(run.len() <= 64);
            assert!(run.iter().sum::<usize>() <= STATEMENT_BYTES);
        }
        // Small rows: the row bound decides.
        assert!(
            batches(&[1usize; 1000], 200, |r| *r)
                .iter()
                .all(|r| r.len() == 200)
        );
        // One row larger than the byte bound still goes, alone.
        let big = [STATEMENT_BYTES * 2, 10, 10];
        assert_eq!(batches(&big, 10, |r| *r), vec![&big[..1], &big[1..]]);
        assert!(batches(&[] as &[usize], 10, |r| *r).is_empty());
    }
}
