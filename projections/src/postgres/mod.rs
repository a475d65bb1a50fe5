//! PostgreSQL read models: checkpoints committed with the projection's writes (exactly once),
//! checkpoints for other read models, and live wake-ups by `LISTEN/NOTIFY`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use event_stores::RecordedEvent;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::{PgConnection, Row};

use crate::checkpoint::Checkpoints;
use crate::error::ProjectionError;
use crate::projection::{EventFilter, HandlerError};
use crate::runner::{ProjectionHandle, Projector};
use crate::sink::Sink;

/// The channel appends notify on, once [`Projector::listen`] has installed the trigger.
pub const CHANNEL: &str = "events_appended";

const CHECKPOINTS_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name       text PRIMARY KEY,
    position   bigint NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
)
"#;

// One statement-level trigger: a multi-row append (a group-commit batch too) notifies once,
// and PostgreSQL folds identical notifications of one transaction into one.
const NOTIFY_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION events_appended_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('events_appended', '');
    RETURN NULL;
END
$$
"#;

const NOTIFY_TRIGGER: &str = r#"
CREATE OR REPLACE TRIGGER events_appended
AFTER INSERT ON events
FOR EACH STATEMENT EXECUTE FUNCTION events_appended_notify()
"#;

const TRIGGER_INSTALLED: &str = r#"
SELECT EXISTS (SELECT 1 FROM pg_trigger
               WHERE tgname = 'events_appended' AND tgrelid = 'events'::regclass)
"#;

/// Serialises this crate's DDL between processes starting at once.
const DDL_LOCK: i64 = 0x7072_6f6a_6563_7473; // "projects"

/// A read model in PostgreSQL, kept **exactly once**: the runner opens a transaction, hands it
/// to [`handle`](Self::handle) with a batch, moves the projection's checkpoint in the same
/// transaction (its row locked first, and only if it is still where this runner read it), and
/// commits. A crash before
/// the commit leaves neither the writes nor the checkpoint; a crash after leaves both. A second
/// runner of the same projection finds the checkpoint moved and rolls its batch back.
///
/// A rebuild ([`ProjectionHandle::rebuild`]) locks the checkpoint row before it calls
/// [`reset`](Self::reset), so it waits for a batch another runner has in flight and clears
/// that batch's writes too, and sets the checkpoint to 0 in the same transaction.
///
/// The checkpoint row is the projection's position: a runner that finds it deleted recreates
/// it at 0 and replays every event into the read model **as it is**, so delete the row only
/// with the read model emptied in the same transaction (or use a rebuild, which does both).
#[async_trait]
pub trait PgProjection: Send + Sync + 'static {
    /// A stable name: the key of its checkpoint row.
    fn name(&self) -> &str;

    /// Which events it wants (all by default).
    fn filter(&self) -> EventFilter {
        EventFilter::All
    }

    /// Writes the effect of `events` (in store order, never empty) through `tx`, an open
    /// transaction. Do not commit it. Keep it short: while it is open it holds back
    /// `read_all` for every reader of the server (the feed waits for older transactions), so a
    /// slow handler delays the other projections and the live feed too.
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), HandlerError>;

    /// Clears the read model through `tx` before a rebuild.
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), HandlerError>;
}

/// Checkpoints in a PostgreSQL table (`projection_checkpoints`), for at-least-once projections
/// whose read model lives elsewhere.
#[derive(Debug, Clone)]
pub struct PgCheckpoints {
    pool: PgPool,
}

impl PgCheckpoints {
    /// Checkpoints in `pool`'s database, creating the table if needed.
    pub async fn new(pool: PgPool) -> Result<Self, ProjectionError> {
        create_table(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Checkpoints for PgCheckpoints {
    async fn load(&self, projection: &str) -> Result<u64, ProjectionError> {
        load(&self.pool, projection).await
    }

    async fn save(&self, projection: &str, position: u64) -> Result<(), ProjectionError> {
        sqlx::query(
            "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
        )
        .bind(projection)
        .bind(to_i64(projection, position)?)
        .execute(&self.pool)
        .await
        .map_err(|e| checkpoint_error(projection, e))?;
        Ok(())
    }
}

/// A [`PgProjection`] on its pool.
struct Transactional<P> {
    projection: P,
    pool: PgPool,
}

#[async_trait]
impl<P: PgProjection> Sink for Transactional<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn filter(&self) -> EventFilter {
        self.projection.filter()
    }

    /// The checkpoint, its row recreated at 0 if it was deleted (else `apply` would find it
    /// missing, "moved", on every batch).
    async fn position(&self) -> Result<u64, ProjectionError> {
        let name = self.name();
        if let Some(position) = load_row(&self.pool, name).await? {
            return Ok(position);
        }
        tracing::warn!(
            projection = name,
            "checkpoint row missing; recreating it at 0 and replaying from the first event"
        );
        ensure_row(&self.pool, name).await?;
        load(&self.pool, name).await
    }

    async fn apply(
        &self,
        events: &[RecordedEvent],
        from: u64,
        to: u64,
    ) -> Result<(), ProjectionError> {
        let name = self.name();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| checkpoint_error(name, e))?;
        let written = async {
            // The checkpoint row first: a second runner of this projection waits here, then
            // finds it moved, before touching the read model (no deadlocks between them).
            let held = sqlx::query(
                "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
            )
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| checkpoint_error(name, e))?
            .map(|row| row.try_get::<i64, _>(0))
            .transpose()
            .map_err(|e| checkpoint_error(name, e))?;
            if held != Some(to_i64(name, from)?) {
                return Err(ProjectionError::CheckpointMoved {
                    projection: name.to_owned(),
                });
            }
            if !events.is_empty() {
                self.projection
                    .handle(&mut tx, events)
                    .await
                    .map_err(|source| ProjectionError::Handler {
                        projection: name.to_owned(),
                        source,
                    })?;
            }
            sqlx::query(
                "UPDATE projection_checkpoints SET position = $2, updated_at = now() \
                 WHERE name = $1",
            )
            .bind(name)
            .bind(to_i64(name, to)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| checkpoint_error(name, e))?;
            Ok(())
        }
        .await;
        match written {
            Ok(()) => tx.commit().await.map_err(|e| checkpoint_error(name, e)),
            Err(error) => {
                // Rolled back now, not when the connection is next used: an open transaction
                // would hold back every reader's `read_all` horizon meanwhile.
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }

    async fn reset(&self) -> Result<(), ProjectionError> {
        let name = self.name();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| checkpoint_error(name, e))?;
        let cleared = async {
            // The checkpoint row first, as `apply` takes it: this waits for a batch another
            // runner has in flight, so the reset below (a new snapshot per statement) sees
            // and clears that batch's writes instead of missing rows it had not committed yet.
            // An upsert, so a deleted row comes back too.
            sqlx::query(
                "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) \
                 ON CONFLICT (name) DO UPDATE SET position = 0, updated_at = now()",
            )
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| checkpoint_error(name, e))?;
            self.projection
                .reset(&mut tx)
                .await
                .map_err(|source| ProjectionError::Handler {
                    projection: name.to_owned(),
                    source,
                })
        }
        .await;
        match cleared {
            Ok(()) => tx.commit().await.map_err(|e| checkpoint_error(name, e)),
            Err(error) => {
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }
}

impl Projector {
    /// Starts `projection` exactly once on `pool` (its read model's database, which holds its
    /// checkpoint row; usually the event store's).
    pub async fn run_pg<P: PgProjection>(
        &self,
        projection: P,
        pool: PgPool,
    ) -> Result<ProjectionHandle, ProjectionError> {
        create_table(&pool).await?;
        ensure_row(&pool, projection.name()).await?;
        Ok(self.start(Arc::new(Transactional { projection, pool })))
    }

    /// Wakes this projector's projections whenever events are appended to `pool`'s event store:
    /// installs a statement-level trigger on `events` that notifies [`CHANNEL`] (so every
    /// append statement pays one `pg_notify`, and committing transactions that notify take
    /// a database-wide lock in turn: one per group-commit batch), and listens on it. Polling
    /// stays on as the fallback. Listening ends when the returned [`Listening`] is dropped.
    pub async fn listen(&self, pool: &PgPool) -> Result<Listening, ProjectionError> {
        let ddl = |e: sqlx::Error| ProjectionError::Checkpoint {
            projection: "*".into(),
            message: format!("installing the append notification: {e}"),
        };
        let mut tx = pool.begin().await.map_err(ddl)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DDL_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(ddl)?;
        // Installed once: replacing a trigger locks `events` against appends for a moment.
        let installed: bool = sqlx::query_scalar(TRIGGER_INSTALLED)
            .fetch_one(&mut *tx)
            .await
            .map_err(ddl)?;
        if !installed {
            for statement in [NOTIFY_FUNCTION, NOTIFY_TRIGGER] {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(ddl)?;
            }
        }
        tx.commit().await.map_err(ddl)?;
        let mut listener = PgListener::connect_with(pool).await.map_err(ddl)?;
        listener.listen(CHANNEL).await.map_err(ddl)?;
        let wake = self.wake_handle();
        let task = tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => wake.wake(),
                    // Reconnected after a lost connection: notifications may have been missed.
                    Ok(None) => wake.wake(),
                    Err(error) => {
                        tracing::warn!(%error, "listening for appends failed; polling until it recovers");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Listening { task })
    }
}

/// Live wake-ups from PostgreSQL; dropping it stops listening.
#[derive(Debug)]
pub struct Listening {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn create_table(pool: &PgPool) -> Result<(), ProjectionError> {
    let ddl = |e| checkpoint_error("*", e);
    let mut tx = pool.begin().await.map_err(ddl)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(DDL_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(ddl)?;
    sqlx::query(CHECKPOINTS_TABLE)
        .execute(&mut *tx)
        .await
        .map_err(ddl)?;
    tx.commit().await.map_err(ddl)
}

/// Creates `projection`'s checkpoint row at 0 unless it has one.
async fn ensure_row(pool: &PgPool, projection: &str) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(projection)
    .execute(pool)
    .await
    .map_err(|e| checkpoint_error(projection, e))?;
    Ok(())
}

/// `projection`'s checkpoint, 0 without a row.
async fn load(pool: &PgPool, projection: &str) -> Result<u64, ProjectionError> {
    Ok(load_row(pool, projection).await?.unwrap_or(0))
}

/// `projection`'s checkpoint, `None` without a row.
async fn load_row(pool: &PgPool, projection: &str) -> Result<Option<u64>, ProjectionError> {
    let row = sqlx::query("SELECT position FROM projection_checkpoints WHERE name = $1")
        .bind(projection)
        .fetch_optional(pool)
        .await
        .map_err(|e| checkpoint_error(projection, e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let position: i64 = row
        .try_get(0)
        .map_err(|e| checkpoint_error(projection, e))?;
    u64::try_from(position)
        .map(Some)
        .map_err(|_| ProjectionError::Checkpoint {
            projection: projection.to_owned(),
            message: format!("negative position {position}"),
        })
}

fn to_i64(projection: &str, position: u64) -> Result<i64, ProjectionError> {
    i64::try_from(position).map_err(|_| ProjectionError::Checkpoint {
        projection: projection.to_owned(),
        message: format!("position {position} is beyond PostgreSQL's bigint"),
    })
}

fn checkpoint_error(projection: &str, error: sqlx::Error) -> ProjectionError {
    ProjectionError::Checkpoint {
        projection: projection.to_owned(),
        message: error.to_string(),
    }
}
