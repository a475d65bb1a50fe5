//! The PostgreSQL server the benchmarks run against: one database per scenario (created fresh,
//! dropped at the end), the server's description for the report, and where its client binaries
//! (pgbench) are.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sqlx::{Connection, PgConnection, Row};

use crate::BoxError;

/// A PostgreSQL server reachable at a URL.
pub struct PgServer {
    url: String,
    created: Mutex<Vec<String>>,
}

impl PgServer {
    /// Checks that the server answers at `url`.
    pub async fn connect(url: &str) -> Result<Self, BoxError> {
        let mut connection = PgConnection::connect(url).await?;
        sqlx::query("SELECT 1").execute(&mut connection).await?;
        connection.close().await?;
        Ok(Self {
            url: url.to_owned(),
            created: Mutex::new(Vec::new()),
        })
    }

    /// The server's URL (its own default database).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Version and the settings that decide what "durable" means on it.
    pub async fn describe(&self) -> Result<String, BoxError> {
        let mut connection = PgConnection::connect(&self.url).await?;
        let version = show(&mut connection, "server_version").await?;
        let shared_buffers = show(&mut connection, "shared_buffers").await?;
        let durability = Durability::read(&mut connection).await?;
        connection.close().await?;
        Ok(format!(
            "{version} ({durability}, shared_buffers={shared_buffers}), on 127.0.0.1 over TCP"
        ))
    }

    /// The settings that decide whether an acknowledged commit survives a crash.
    pub async fn durability(&self) -> Result<Durability, BoxError> {
        let mut connection = PgConnection::connect(&self.url).await?;
        let durability = Durability::read(&mut connection).await?;
        connection.close().await?;
        Ok(durability)
    }

    /// Creates (or re-creates) database `bench_<pid>_<suffix>` and returns its URL. It is dropped
    /// by [`drop_created`](Self::drop_created).
    pub async fn create_database(&self, suffix: &str) -> Result<String, BoxError> {
        let name = format!("bench_{}_{suffix}", std::process::id());
        let mut connection = PgConnection::connect(&self.url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut connection)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await?;
        connection.close().await?;
        if let Ok(mut created) = self.created.lock() {
            created.push(name.clone());
        }
        Ok(with_database(&self.url, &name))
    }

    /// Drops every database this run created.
    pub async fn drop_created(&self) -> Result<(), BoxError> {
        let names = match self.created.lock() {
            Ok(mut created) => std::mem::take(&mut *created),
            Err(_) => Vec::new(),
        };
        if names.is_empty() {
            return Ok(());
        }
        let mut connection = PgConnection::connect(&self.url).await?;
        for name in names {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut connection)
            .await?;
        }
        connection.close().await?;
        Ok(())
    }
}

/// `SHOW setting` on a connection.
async fn show(connection: &mut PgConnection, setting: &str) -> Result<String, BoxError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
        .fetch_one(connection)
        .await?;
    Ok(row.try_get::<String, _>(0)?)
}

/// A server's `fsync`, `synchronous_commit` and `full_page_writes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `fsync`.
    pub fsync: String,
    /// `synchronous_commit`.
    pub synchronous_commit: String,
    /// `full_page_writes`.
    pub full_page_writes: String,
}

impl Durability {
    async fn read(connection: &mut PgConnection) -> Result<Self, BoxError> {
        Ok(Self {
            fsync: show(connection, "fsync").await?,
            synchronous_commit: show(connection, "synchronous_commit").await?,
            full_page_writes: show(connection, "full_page_writes").await?,
        })
    }

    /// True when every acknowledged commit survives a crash of the server or its machine.
    pub fn survives_crash(&self) -> bool {
        self.fsync == "on" && self.synchronous_commit != "off" && self.full_page_writes == "on"
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fsync={}, synchronous_commit={}, full_page_writes={}",
            self.fsync, self.synchronous_commit, self.full_page_writes
        )
    }
}

/// `url` with its database replaced by `database` (query parameters kept).
pub fn with_database(url: &str, database: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{database}{query}")
}

/// A PostgreSQL client or server binary: first on PATH, then in the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            let candidate = entry.path().join("bin").join(name);
            is_executable(&candidate).then_some((version, candidate))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, path)| path)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "b"),
            "postgres://u@h:5432/b"
        );
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "b"),
            "postgres://u@h:5432/b?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "b"), "postgres://u@h/b");
    }
}
