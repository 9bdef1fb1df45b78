//! The one PostgreSQL fixture: a fresh database on the machine's server per test, dropped by
//! its guard whatever the test's outcome (a pass, a failed assertion, a panic).

use sqlx::Connection;

/// The machine's server (trust auth) and the database the fixture connects to for
/// `CREATE DATABASE` and `DROP DATABASE`.
const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh database, dropped (`WITH (FORCE)`: open connections are cut) when this guard is
/// dropped. Keep it alive as long as anything uses the database; declare it before a
/// [`Server`](crate::Server) that runs on it, so the server stops first.
#[derive(Debug)]
pub struct PostgresDatabase {
    name: String,
    url: String,
}

/// A fresh PostgreSQL database on the machine's server, or None when there is none and CI is
/// not set (in CI the PostgreSQL tests are mandatory).
pub async fn postgres_database() -> Option<PostgresDatabase> {
    let mut conn = match sqlx::PgConnection::connect(ADMIN_URL).await {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is required in CI: {e}"
            );
            eprintln!("skipping PostgreSQL part: {e}");
            return None;
        }
    };
    let name = format!("lockstep_test_{}", crate::random_hex(6));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let _ = conn.close().await;
    Some(PostgresDatabase {
        url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
        name,
    })
}

impl PostgresDatabase {
    /// `postgres://…/NAME`, for `--database-url` or a connection.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PostgresDatabase {
    /// Drops the database on a fresh thread with its own small runtime: a guard is dropped
    /// inside a tokio test (where blocking on the test's runtime would panic), while a failed
    /// test unwinds, or outside any runtime. Never panics; a database it could not drop is
    /// reported on stderr.
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(ADMIN_URL)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("test database {} not dropped: {e}", self.name),
            Err(_) => eprintln!(
                "test database {} not dropped: the thread panicked",
                self.name
            ),
        }
    }
}
