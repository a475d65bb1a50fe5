//! What a PostgreSQL server promises about acknowledged commits surviving a crash.

use std::fmt;

use sqlx::postgres::PgPool;

use crate::error::StoreResult;

use super::error::map_sqlx;

const READ: &str = "SELECT current_setting('fsync'), current_setting('synchronous_commit'), \
                    current_setting('full_page_writes')";

/// The server settings that decide whether an acknowledged commit survives a server crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `fsync`: off means a crash can corrupt or lose the whole cluster's recent writes.
    pub fsync: bool,
    /// `synchronous_commit`: `off` acknowledges a commit before its WAL is flushed, so a crash
    /// loses the last few hundred milliseconds of acknowledged commits.
    pub synchronous_commit: String,
    /// `full_page_writes`: off risks torn pages after an OS crash.
    pub full_page_writes: bool,
}

impl Durability {
    /// Reads the settings in effect for sessions of `pool`.
    pub async fn read(pool: &PgPool) -> StoreResult<Self> {
        let (fsync, synchronous_commit, full_page_writes): (String, String, String) =
            sqlx::query_as(READ)
                .fetch_one(pool)
                .await
                .map_err(|e| map_sqlx("reading the server's durability settings", e))?;
        Ok(Self {
            fsync: fsync == "on",
            synchronous_commit,
            full_page_writes: full_page_writes == "on",
        })
    }

    /// True when a commit waits for its WAL to be flushed before it is acknowledged.
    pub fn commits_wait_for_flush(&self) -> bool {
        self.fsync && self.synchronous_commit != "off"
    }

    /// True when every acknowledged commit survives a crash of the server (or its machine).
    pub fn survives_server_crash(&self) -> bool {
        self.fsync && self.synchronous_commit != "off" && self.full_page_writes
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        write!(
            f,
            "fsync={} synchronous_commit={} full_page_writes={}",
            on(self.fsync),
            self.synchronous_commit,
            on(self.full_page_writes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_all_three_on_survive_a_crash() {
        let safe = Durability {
            fsync: true,
            synchronous_commit: "on".into(),
            full_page_writes: true,
        };
        assert!(safe.survives_server_crash());
        for unsafe_ in [
            Durability {
                fsync: false,
                ..safe.clone()
            },
            Durability {
                synchronous_commit: "off".into(),
                ..safe.clone()
            },
            Durability {
                full_page_writes: false,
                ..safe.clone()
            },
        ] {
            assert!(!unsafe_.survives_server_crash(), "{unsafe_}");
        }
        let local = Durability {
            synchronous_commit: "local".into(),
            ..safe
        };
        assert!(local.survives_server_crash());
    }
}
