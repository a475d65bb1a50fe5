//! Maps sqlx errors onto [`StoreError`], separating "the server could not be reached" (retryable)
//! from everything else.

use sqlx::postgres::{PgDatabaseError, PgSeverity};

use crate::error::StoreError;

/// SQLSTATE of a unique violation.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

/// Classifies a sqlx error. `what` names the operation, for the message.
pub(crate) fn map_sqlx(what: &str, err: sqlx::Error) -> StoreError {
    if is_unavailable(&err) {
        StoreError::Unavailable {
            message: format!("{what}: {err}"),
            source: Some(Box::new(err)),
        }
    } else {
        StoreError::Backend {
            message: format!("{what}: {err}"),
            source: Some(Box::new(err)),
        }
    }
}

/// Classifies a migration error: one that failed on the connection is retryable like any other.
pub(crate) fn map_migrate(err: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    let unavailable = match &err {
        MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _) => {
            is_unavailable(inner)
        }
        _ => false,
    };
    let message = format!("running the event-stores migrations: {err}");
    if unavailable {
        StoreError::Unavailable {
            message,
            source: Some(Box::new(err)),
        }
    } else {
        StoreError::Backend {
            message,
            source: Some(Box::new(err)),
        }
    }
}

/// True when `err` means the server was unreachable, went away or refused more connections:
/// the same call may succeed later.
pub(crate) fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unavailable_sqlstate(&code)),
        sqlx::Error::Migrate(inner) => match inner.as_ref() {
            sqlx::migrate::MigrateError::Execute(e)
            | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => is_unavailable(e),
            _ => false,
        },
        _ => false,
    }
}

/// True when a statement already sent may have been executed although it failed: the
/// connection broke (I/O, protocol, worker) instead of the server answering with an error.
/// A SQLSTATE answer is definite: the statement's transaction did not commit.
pub(crate) fn is_lost_in_flight(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
    )
}

/// True when the session of the connection `err` came from is over, so the connection must be
/// closed, never reused: it broke ([`is_lost_in_flight`]), or the server ended the session as
/// it answered (a FATAL or PANIC error, or a SQLSTATE of [`ends_session_sqlstate`]). Kept, such
/// a connection fails its next statement with an I/O error, even before sending it (sqlx first
/// reads the `ReadyForQuery` the dead server never sent), and an append would then be reported
/// indeterminate although it reached no server.
pub(crate) fn ends_session(err: &sqlx::Error) -> bool {
    if is_lost_in_flight(err) {
        return true;
    }
    let Some(db) = err.as_database_error() else {
        return false;
    };
    let fatal = db
        .try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic));
    fatal || db.code().is_some_and(|code| ends_session_sqlstate(&code))
}

/// SQLSTATEs the server sends as it closes the session: connection exceptions (class 08),
/// administrator shutdown, crash shutdown, cannot connect now, database dropped and idle session
/// timeout (57P01..57P05), and a transaction ended for sitting idle or running too long
/// (25P03, 25P04).
fn ends_session_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P0") || matches!(code, "25P03" | "25P04")
}

/// The session-ending SQLSTATEs a new connection may cure (all but a dropped database, 57P04),
/// and too many connections (53300).
fn is_unavailable_sqlstate(code: &str) -> bool {
    (ends_session_sqlstate(code) && code != "57P04") || code == "53300"
}

/// The SQLSTATE of a database error, if `err` is one.
pub(crate) fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned())
}

/// The constraint a database error names, if any.
pub(crate) fn constraint(err: &sqlx::Error) -> Option<&str> {
    err.as_database_error().and_then(|db| db.constraint())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(map_sqlx("x", io).is_retryable());
        assert!(map_sqlx("x", sqlx::Error::PoolTimedOut).is_retryable());
        assert!(map_sqlx("x", sqlx::Error::PoolClosed).is_retryable());
        assert!(map_sqlx("x", sqlx::Error::WorkerCrashed).is_retryable());
        assert!(map_sqlx("x", sqlx::Error::Protocol("eof".into())).is_retryable());
    }

    #[test]
    fn other_failures_are_backend_errors() {
        let err = map_sqlx("x", sqlx::Error::RowNotFound);
        assert!(matches!(err, StoreError::Backend { .. }));
        assert!(!err.is_retryable());
        let err = map_sqlx("x", sqlx::Error::ColumnNotFound("c".into()));
        assert!(matches!(err, StoreError::Backend { .. }));
    }

    #[test]
    fn sqlstates_for_lost_or_refused_connections_are_unavailable() {
        for code in [
            "08000", "08006", "08P01", "57P01", "57P02", "57P03", "57P05", "25P03", "25P04",
            "53300",
        ] {
            assert!(is_unavailable_sqlstate(code), "{code}");
        }
        for code in ["23505", "40001", "42P01", "53200", "57014", "57P04"] {
            assert!(!is_unavailable_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn sessions_end_with_broken_connections_and_their_closing_sqlstates() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(ends_session(&io));
        assert!(ends_session(&sqlx::Error::Protocol("eof".into())));
        assert!(ends_session(&sqlx::Error::WorkerCrashed));
        // Nothing was sent on a connection, or none was taken.
        assert!(!ends_session(&sqlx::Error::PoolTimedOut));
        assert!(!ends_session(&sqlx::Error::RowNotFound));
        for code in [
            "08000", "08006", "08P01", "57P01", "57P02", "57P03", "57P04", "57P05", "25P03",
            "25P04",
        ] {
            assert!(ends_session_sqlstate(code), "{code}");
        }
        // Errors after which the session goes on, including too many connections (sent only
        // while connecting) and a cancelled statement.
        for code in ["23505", "40001", "40P01", "53300", "55P03", "57014"] {
            assert!(!ends_session_sqlstate(code), "{code}");
        }
    }
}
