//! The projection node process: its read model, its line protocol, a handle the tests use to
//! run, watch and kill it, and the raw-SQL audit of what it projected.
//!
//! The node (`src/bin/projection_node.rs`) runs one exactly-once PostgreSQL projection over the
//! event store, [`PROJECTION`], whose read model is the [`READ_MODEL_DDL`] table: per stream, the
//! number of events, the sum of their amounts (each payload is an [`Amount`] in MessagePack) and
//! the last version. Its handler is deliberately not idempotent (`events = events + 1`,
//! `amount_sum = amount_sum + amount`): a batch applied twice, or half applied, shows. It writes
//! one line per event below, each flushed at once:
//!
//! ```text
//! READY <pid>                                  connected, projection started
//! HANDLING <first> <last> <events>             a batch (positions first..=last) is being
//!                                              written, in its open transaction
//! AT <position> <handled> <batches> <retries>  checkpoint committed at <position>; counters of
//!                                              this process
//! ```
//!
//! A SIGKILL can cut the last line short; lines without their newline are dropped.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use aggregate_actors::codec;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::worker::{Chunk, read_lines};

/// The projection's name: its row in `projection_checkpoints`.
pub const PROJECTION: &str = "stream_totals";

/// The read model's table.
pub const READ_MODEL_DDL: &str = "CREATE TABLE IF NOT EXISTS stream_totals (
    stream       text PRIMARY KEY,
    events       bigint NOT NULL,
    amount_sum   bigint NOT NULL,
    last_version bigint NOT NULL
)";

/// The payload of every event the tests append (MessagePack with named fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    /// What the event adds to its stream's sum.
    pub amount: i64,
}

impl Amount {
    /// The encoded payload.
    pub fn encode(self) -> Vec<u8> {
        codec::encode(&self).unwrap_or_else(|e| panic!("encoding {self:?}: {e}"))
    }

    /// Decodes a payload.
    pub fn decode(payload: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(payload)
    }
}

/// One stream's row of the read model, or the same figures folded from the events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamTotals {
    /// Events counted.
    pub events: i64,
    /// Sum of their amounts.
    pub amount_sum: i64,
    /// The highest version counted.
    pub last_version: i64,
}

/// One parsed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeLine {
    /// `READY <pid>`.
    Ready(u32),
    /// `HANDLING <first> <last> <events>`.
    Handling {
        /// Position of the batch's first event.
        first: u64,
        /// Position of its last event.
        last: u64,
        /// Events in it.
        events: u64,
    },
    /// `AT <position> <handled> <batches> <retries>`.
    At {
        /// The committed checkpoint.
        position: u64,
        /// Events handled (and committed) by this process.
        handled: u64,
        /// Batches committed by this process.
        batches: u64,
        /// Batches that failed and were retried in this process.
        retries: u64,
    },
}

impl NodeLine {
    /// The protocol line.
    pub fn line(&self) -> String {
        match self {
            Self::Ready(pid) => format!("READY {pid}"),
            Self::Handling {
                first,
                last,
                events,
            } => format!("HANDLING {first} {last} {events}"),
            Self::At {
                position,
                handled,
                batches,
                retries,
            } => format!("AT {position} {handled} {batches} {retries}"),
        }
    }

    /// Parses one protocol line.
    pub fn parse(line: &str) -> Result<Self, String> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("unparsable projection node line {line:?}");
        let number = |field: &str| field.parse::<u64>().map_err(|_| bad());
        match fields.as_slice() {
            ["READY", pid] => Ok(Self::Ready(pid.parse().map_err(|_| bad())?)),
            ["HANDLING", first, last, events] => Ok(Self::Handling {
                first: number(first)?,
                last: number(last)?,
                events: number(events)?,
            }),
            ["AT", position, handled, batches, retries] => Ok(Self::At {
                position: number(position)?,
                handled: number(handled)?,
                batches: number(batches)?,
                retries: number(retries)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// Settings of one node run (its command-line arguments).
#[derive(Debug, Clone)]
pub struct ProjectionNodeArgs {
    /// PostgreSQL URL of the database to use.
    pub database_url: String,
    /// The node's `application_name` (to wait for its sessions to end after a kill).
    pub name: String,
    /// Events per batch.
    pub batch_size: usize,
    /// Pause in the middle of every batch, its transaction open and half its writes done.
    pub handle_delay: Duration,
    /// Poll interval when caught up (notifications wake it sooner).
    pub poll_interval: Duration,
}

impl ProjectionNodeArgs {
    /// Batches of 25, no pause, polling every 50 ms, on `database_url`.
    pub fn new(database_url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            name: name.into(),
            batch_size: 25,
            handle_delay: Duration::ZERO,
            poll_interval: Duration::from_millis(50),
        }
    }

    fn to_args(&self) -> Vec<String> {
        vec![
            "--database-url".into(),
            self.database_url.clone(),
            "--name".into(),
            self.name.clone(),
            "--batch-size".into(),
            self.batch_size.to_string(),
            "--handle-delay-ms".into(),
            self.handle_delay.as_millis().to_string(),
            "--poll-interval-ms".into(),
            self.poll_interval.as_millis().to_string(),
        ]
    }
}

/// What a node reported before it was killed.
#[derive(Debug)]
pub struct NodeOutput {
    /// Every complete line, in order.
    pub lines: Vec<NodeLine>,
    /// How it ended.
    pub status: ExitStatus,
    /// A last line cut short (by SIGKILL), dropped.
    pub cut_line: bool,
}

impl NodeOutput {
    /// The last batch it reported handling.
    pub fn last_handling(&self) -> Option<(u64, u64)> {
        self.lines.iter().rev().find_map(|line| match *line {
            NodeLine::Handling { first, last, .. } => Some((first, last)),
            _ => None,
        })
    }

    /// The last `AT` line's counters: (position, handled, batches, retries).
    pub fn last_at(&self) -> Option<(u64, u64, u64, u64)> {
        self.lines.iter().rev().find_map(|line| match *line {
            NodeLine::At {
                position,
                handled,
                batches,
                retries,
            } => Some((position, handled, batches, retries)),
            _ => None,
        })
    }
}

/// A running projection node.
pub struct ProjectionNodeProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<Chunk>,
    reader: JoinHandle<()>,
    seen: Vec<NodeLine>,
    cut_line: bool,
}

impl ProjectionNodeProcess {
    /// Starts the node binary at `program` (`env!("CARGO_BIN_EXE_projection_node")`).
    pub fn spawn(program: &str, args: &ProjectionNodeArgs) -> std::io::Result<Self> {
        let mut child = Command::new(program)
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (lines, reader) = read_lines(stdout);
        Ok(Self {
            child,
            lines,
            reader,
            seen: Vec::new(),
            cut_line: false,
        })
    }

    fn take(&mut self, chunk: Chunk) -> Option<NodeLine> {
        match chunk {
            Chunk::Line(text) => {
                let line = NodeLine::parse(&text).unwrap_or_else(|e| panic!("{e}"));
                self.seen.push(line);
                Some(line)
            }
            Chunk::Cut => {
                self.cut_line = true;
                None
            }
        }
    }

    /// Waits for a line that `wanted` accepts (panics if the node ends first or takes longer
    /// than `timeout`) and returns it.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&NodeLine) -> bool,
    ) -> NodeLine {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let chunk = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("projection node: no {what} within {timeout:?}"));
            let Some(chunk) = chunk else {
                panic!(
                    "projection node ended before {what}: {:?}",
                    self.child.try_wait()
                );
            };
            if let Some(line) = self.take(chunk)
                && wanted(&line)
            {
                return line;
            }
        }
    }

    /// Waits until the node has committed a batch in this run (an `AT` line with a batch).
    pub async fn wait_for_a_committed_batch(&mut self, timeout: Duration) -> NodeLine {
        if let Some(line) = self
            .seen
            .iter()
            .find(|line| matches!(line, NodeLine::At { batches, .. } if *batches > 0))
        {
            return *line;
        }
        self.wait_for(
            "committed batch",
            timeout,
            |line| matches!(line, NodeLine::At { batches, .. } if *batches > 0),
        )
        .await
    }

    /// Kills the node with SIGKILL and returns what it reported.
    pub async fn kill(mut self) -> NodeOutput {
        self.child
            .start_kill()
            .unwrap_or_else(|e| panic!("SIGKILL: {e}"));
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the projection node did not die within 30 s of SIGKILL"))
            .unwrap_or_else(|e| panic!("waiting for the projection node: {e}"));
        let _ = (&mut self.reader).await;
        while let Some(chunk) = self.lines.recv().await {
            self.take(chunk);
        }
        NodeOutput {
            lines: std::mem::take(&mut self.seen),
            status,
            cut_line: self.cut_line,
        }
    }
}

/// The projection's checkpoint (0 when it has no row yet), read with raw SQL.
pub async fn checkpoint(conn: &mut PgConnection) -> u64 {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
            .bind(PROJECTION)
            .fetch_optional(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("reading the checkpoint: {e}"));
    to_u64(position.unwrap_or(0))
}

/// The highest position in `events` (0 when empty).
pub async fn head(conn: &mut PgConnection) -> u64 {
    let position: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("reading the head of the events table: {e}"));
    to_u64(position)
}

/// The read model, by stream.
pub async fn read_model(conn: &mut PgConnection) -> BTreeMap<String, StreamTotals> {
    sqlx::query("SELECT stream, events, amount_sum, last_version FROM stream_totals")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("reading the read model: {e}"))
        .iter()
        .map(|row| {
            (
                row.get::<String, _>(0),
                StreamTotals {
                    events: row.get(1),
                    amount_sum: row.get(2),
                    last_version: row.get(3),
                },
            )
        })
        .collect()
}

/// An independent fold of every event at or below `position`, read with raw SQL from `events`
/// and decoded here: per stream (`<type>/<id>`), the count, the sum of the amounts and the
/// highest version. Checks versions are 1, 2, 3 … per stream on the way.
pub async fn fold_events(conn: &mut PgConnection, position: u64) -> BTreeMap<String, StreamTotals> {
    let position = i64::try_from(position).unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "SELECT aggregate_type, aggregate_id, version, payload FROM events \
         WHERE position <= $1 ORDER BY aggregate_type, aggregate_id, version",
    )
    .bind(position)
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_else(|e| panic!("reading the events: {e}"));
    let mut folded: BTreeMap<String, StreamTotals> = BTreeMap::new();
    for row in rows {
        let stream = format!("{}/{}", row.get::<String, _>(0), row.get::<String, _>(1));
        let version: i64 = row.get(2);
        let payload: Vec<u8> = row.get(3);
        let amount = Amount::decode(&payload)
            .unwrap_or_else(|e| panic!("{stream}: event {version} does not decode: {e}"))
            .amount;
        let totals = folded.entry(stream.clone()).or_default();
        // Not contiguous below the checkpoint would mean the feed skipped an event.
        assert_eq!(
            version,
            totals.last_version + 1,
            "{stream}: version {version} follows {} among the events at or below the checkpoint",
            totals.last_version
        );
        totals.events += 1;
        totals.amount_sum += amount;
        totals.last_version = version;
    }
    folded
}

/// Where the read model and the fold differ (at most `limit` streams described).
pub fn differences(
    read_model: &BTreeMap<String, StreamTotals>,
    folded: &BTreeMap<String, StreamTotals>,
    limit: usize,
) -> Vec<String> {
    let mut streams: Vec<&String> = read_model.keys().chain(folded.keys()).collect();
    streams.sort();
    streams.dedup();
    streams
        .into_iter()
        .filter_map(|stream| {
            let projected = read_model.get(stream);
            let expected = folded.get(stream);
            (projected != expected).then(|| {
                format!("{stream}: read model {projected:?}, fold of the events {expected:?}")
            })
        })
        .take(limit)
        .collect()
}

fn to_u64(position: i64) -> u64 {
    u64::try_from(position).unwrap_or_else(|_| panic!("negative position {position}"))
}
