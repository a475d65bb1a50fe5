//! Throw-away PostgreSQL databases for tests (feature `test-support`; the databases need the
//! `postgres` feature as well), and stores that change a call or two of another store
//! ([`Hooked`], [`HookedSnapshots`]: see [`hooks`]).
//!
//! `fresh_database` creates a uniquely named database on the server named by `DATABASE_URL`,
//! so tests running in parallel (in one process or many) never see each other's rows, and drops
//! it again when the `TestDatabase` is dropped. `make test` points `DATABASE_URL` at a cluster
//! that `scripts/pg-tmp` starts for the run. Both exist only with the `postgres` feature; the
//! rest of this module (whether PostgreSQL tests run, skip or fail: [`database_url`],
//! [`in_ci`]) is plain `std` and exists without it.
//!
//! Without `DATABASE_URL` the functions print [`SKIP_MESSAGE`] once and return `None`, except
//! when `CI=true`, where a missing PostgreSQL is a failure and they panic. Every skip is also
//! appended as one line (test binary and test name) to the file named by [`SKIP_LOG_VAR`] when
//! it is set, so `make test` can count the skipped tests and fail when there are any.

use std::io::Write;
use std::sync::Once;
#[cfg(feature = "postgres")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "postgres")]
use std::time::Duration;

#[cfg(feature = "postgres")]
use sqlx::{AssertSqlSafe, Connection, PgConnection};

#[cfg(feature = "postgres")]
use crate::error::StoreResult;
#[cfg(feature = "postgres")]
use crate::limits::StoreLimits;
#[cfg(feature = "postgres")]
use crate::postgres::{PgConfig, PgEventStore, PgSnapshotStore};

pub mod hooks;

pub use hooks::{Hooked, HookedSnapshots, SnapshotHooks, StoreHooks};

/// What tests print (once per process) when they skip for want of PostgreSQL.
pub const SKIP_MESSAGE: &str = "SKIPPED: PostgreSQL tests need DATABASE_URL or PostgreSQL binaries; install with: apt-get install postgresql";

/// Environment variable naming the server tests create their databases on.
pub const DATABASE_URL_VAR: &str = "DATABASE_URL";

/// Environment variable naming a file to which every skip appends one line,
/// `<test binary> <test name>` (`make test` sets it, counts the lines and fails on any).
pub const SKIP_LOG_VAR: &str = "PG_SKIP_LOG";

/// Set to `1` to keep test databases after the tests, for inspection.
pub const KEEP_VAR: &str = "KEEP_TEST_DATABASES";

/// A database created for one test; dropped (with `WITH (FORCE)`) when this value is dropped.
/// Feature `postgres`.
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

#[cfg(feature = "postgres")]
impl TestDatabase {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL for the database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A [`PgConfig`] for the database, sized for tests: a small pool, so many tests can run
    /// side by side, and generous timeouts, so a loaded CI machine does not fail them.
    pub fn config(&self) -> PgConfig {
        PgConfig::new(self.url.clone())
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(30))
            .application_name("event-stores-tests")
    }

    /// An event store and a snapshot store on this database, sharing one pool.
    pub async fn stores(
        &self,
        limits: StoreLimits,
    ) -> StoreResult<(PgEventStore, PgSnapshotStore)> {
        let events = PgEventStore::connect(&self.config().limits(limits)).await?;
        let snapshots = PgSnapshotStore::with_migrated_pool(events.pool().clone(), limits);
        Ok((events, snapshots))
    }
}

#[cfg(feature = "postgres")]
impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::env::var(KEEP_VAR).is_ok_and(|v| v == "1") {
            return;
        }
        // Drop runs outside async context, possibly on a runtime worker: use a thread with its
        // own small runtime and wait for it, so the database is gone when the test ends.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                match PgConnection::connect(&admin_url).await {
                    Ok(mut conn) => {
                        if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await {
                            eprintln!("event-stores testing: could not drop database {name}: {e}");
                        }
                        let _ = conn.close().await;
                    }
                    Err(e) => {
                        eprintln!("event-stores testing: could not drop database {name}: {e}")
                    }
                }
            });
        });
        let _ = dropper.join();
    }
}

/// True when running in CI (`CI=true` or `CI=1`), where missing PostgreSQL fails the tests.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The server URL from `DATABASE_URL`; `None` (after printing [`SKIP_MESSAGE`] once, and
/// recording the skip in the [`SKIP_LOG_VAR`] file) when it is unset outside CI. Panics when it
/// is unset in CI.
pub fn database_url() -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if in_ci() {
                panic!(
                    "{DATABASE_URL_VAR} is not set but CI=true: PostgreSQL tests must run in CI. \
                     Run them through `make test` (which starts a throw-away cluster with \
                     scripts/pg-tmp) or install PostgreSQL: apt-get install postgresql"
                );
            }
            static SKIP_NOTICE: Once = Once::new();
            // Straight to the stream, not eprintln!: the test harness captures the latter and
            // would hide the notice, since a skipped test passes.
            SKIP_NOTICE.call_once(|| {
                let _ = writeln!(std::io::stderr(), "{SKIP_MESSAGE}");
            });
            record_skip();
            None
        }
    }
}

/// Appends `<test binary> <test name>` to the [`SKIP_LOG_VAR`] file, if it is set. The test
/// harness names each test's thread after the test; a test that skips from another thread is
/// recorded under that thread's name (or `unnamed`).
fn record_skip() {
    let Some(path) = std::env::var_os(SKIP_LOG_VAR).filter(|p| !p.is_empty()) else {
        return;
    };
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into());
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed");
    // One short write in append mode: lines of parallel tests and processes do not interleave.
    let line = format!("{binary} {test}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(e) = written {
        let _ = writeln!(
            std::io::stderr(),
            "event-stores testing: cannot record a skip in {}: {e}",
            std::path::Path::new(&path).display()
        );
    }
}

/// Creates a fresh, uniquely named database on the `DATABASE_URL` server (from `template0`, so
/// it is empty and quick to make) and returns it; `None` when PostgreSQL tests are skipped.
/// Feature `postgres`.
///
/// Panics when `DATABASE_URL` is set but the server cannot be used: a configured database that
/// does not work is a failure, not a reason to skip.
///
/// ```no_run
/// # async fn demo() {
/// let Some(db) = event_stores::testing::fresh_database().await else {
///     return; // no PostgreSQL here, and not in CI: the test is skipped
/// };
/// let (events, snapshots) = db.stores(event_stores::StoreLimits::default()).await.unwrap();
/// # drop((events, snapshots));
/// # }
/// ```
#[cfg(feature = "postgres")]
pub async fn fresh_database() -> Option<TestDatabase> {
    fresh_database_with("").await
}

/// [`fresh_database`] created with `options` added to its `CREATE DATABASE` statement, e.g.
/// `LOCALE_PROVIDER icu ICU_LOCALE 'en-US'` for a database whose text sorts as people read it
/// rather than byte by byte. `options` is SQL, written by the test. Feature `postgres`.
#[cfg(feature = "postgres")]
pub async fn fresh_database_with(options: &str) -> Option<TestDatabase> {
    let admin_url = database_url()?;
    let name = unique_name();
    let mut conn = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {DATABASE_URL_VAR} ({admin_url}): {e}"));
    sqlx::query(AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" TEMPLATE template0 {options}"
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("cannot create test database {name} on {admin_url}: {e}"));
    let _ = conn.close().await;
    Some(TestDatabase {
        url: with_database(&admin_url, &name),
        name,
        admin_url,
    })
}

/// `esa_test_<pid>_<counter>_<random>`: unique across processes and within one.
#[cfg(feature = "postgres")]
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "esa_test_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// `url` with its database (the path) replaced by `database`, keeping any query string.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{base}/{database}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "t2"),
            "postgres://u:p@h:1/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
        assert_eq!(
            with_database("postgres://h?x=1", "t4"),
            "postgres://h/t4?x=1"
        );
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn names_are_unique() {
        assert_ne!(unique_name(), unique_name());
        assert!(
            unique_name().len() < 63,
            "PostgreSQL truncates longer names"
        );
    }
}
