//! What can go wrong in the store, in the terms domain code acts on: a row that already exists,
//! a row still referenced, a database too busy to answer, or anything else (logged, never
//! shown). Only this module looks inside `sqlx::Error`.

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A unique constraint refused the write (a name or id already taken).
    #[error("a row with the same key already exists: {0}")]
    Unique(#[source] sqlx::Error),
    /// A foreign key refused the write (a row referenced meanwhile, or gone).
    #[error("a referenced row is missing or still in use: {0}")]
    ForeignKey(#[source] sqlx::Error),
    /// The database was locked or could not serialize the transaction; trying again may work.
    #[error("the database is busy: {0}")]
    Busy(#[source] sqlx::Error),
    /// Anything else (connection lost, a malformed query, a closed pool).
    #[error("{0}")]
    Database(#[source] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Error {
        use sqlx::error::ErrorKind;
        let kind = match &e {
            sqlx::Error::Database(db) => Some((
                db.kind(),
                db.code().map(|c| c.to_string()).unwrap_or_default(),
            )),
            _ => None,
        };
        match kind {
            Some((ErrorKind::UniqueViolation, _)) => Error::Unique(e),
            Some((ErrorKind::ForeignKeyViolation, _)) => Error::ForeignKey(e),
            // PostgreSQL (five-character SQLSTATEs): serialization_failure, deadlock_detected,
            // lock_not_available. SQLite (numbers below 10,000): SQLITE_BUSY (5) and
            // SQLITE_LOCKED (6), with their extended codes (primary | n << 8).
            Some((_, code))
                if matches!(code.as_str(), "40001" | "40P01" | "55P03")
                    || (code.len() < 5
                        && code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))) =>
            {
                Error::Busy(e)
            }
            _ => Error::Database(e),
        }
    }
}

/// Store functions that return the crate's error convert a database failure the same way.
impl From<sqlx::Error> for crate::error::Error {
    fn from(e: sqlx::Error) -> crate::error::Error {
        crate::error::Error::Store(e.into())
    }
}

impl From<sqlx::migrate::MigrateError> for crate::error::Error {
    fn from(e: sqlx::migrate::MigrateError) -> crate::error::Error {
        crate::error::Error::Store(e.into())
    }
}

impl Error {
    /// A unique constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Error::Unique(_))
    }

    /// A foreign key refused the write.
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, Error::ForeignKey(_))
    }
}
