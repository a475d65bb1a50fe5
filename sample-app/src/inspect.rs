//! `inspect`: everything stored about one aggregate — its events, decoded, and its snapshots,
//! verified and decoded — straight from the stores, without activating it; and its type's
//! per-day snapshot statistics as the snapshot store keeps them (every process's writes).

use std::io::Write;

use aggregate_actors::event_stores::{ReadQuery, StoreError, StreamId, StreamPages};
use serde::Serialize;

use crate::domain::{Account, Customer};
use crate::ledger::{Collection, LedgerAggregate, Stores};
use crate::views::{SnapshotDayView, SnapshotView, StoredEventView};

/// Why `inspect` failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The aggregate type is not one this app hosts.
    #[error("unknown aggregate type {0:?}: use accounts or customers")]
    UnknownType(String),
    /// The id is not valid.
    #[error("invalid id: {0}")]
    InvalidId(#[from] aggregate_actors::event_stores::InvalidInput),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The executor that verifies the snapshots could not be built.
    #[error("cannot build the executor: {0}")]
    Build(#[from] aggregate_actors::BuildError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding JSON failed.
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What `inspect` found.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The stored aggregate type.
    pub aggregate_type: &'static str,
    /// The id.
    pub id: String,
    /// The stream's version.
    pub version: u64,
    /// Every event, oldest first.
    pub events: Vec<StoredEventView>,
    /// Every snapshot, newest first, with its state when valid.
    pub snapshots: Vec<SnapshotView>,
    /// The type's snapshot statistics per UTC day over the last [`STATISTICS_DAYS`] days,
    /// oldest first, as the snapshot store keeps them (summed over every process).
    pub snapshot_days: Vec<SnapshotDayView>,
}

/// How many days of per-day snapshot statistics `inspect` shows, today included.
pub const STATISTICS_DAYS: u64 = 31;

/// Reads everything stored about `aggregate_type`/`id`.
pub async fn inspect(
    stores: &Stores,
    aggregate_type: &str,
    id: &str,
) -> Result<Inspection, InspectError> {
    let collection = Collection::parse(aggregate_type)
        .ok_or_else(|| InspectError::UnknownType(aggregate_type.to_owned()))?;
    match collection {
        Collection::Accounts => read::<Account>(stores, id).await,
        Collection::Customers => read::<Customer>(stores, id).await,
    }
}

async fn read<A: LedgerAggregate>(stores: &Stores, id: &str) -> Result<Inspection, InspectError> {
    let stream = StreamId::new(A::TYPE, id)?;
    let version = stores.events.stream_version(&stream).await?;
    let mut events = Vec::new();
    let mut event_ids = std::collections::HashMap::new();
    // Page through the stream rather than reading it in one go.
    let mut pages = StreamPages::new(&*stores.events, &stream, ReadQuery::all());
    while let Some(page) = pages.next_page().await? {
        events.extend(page.iter().map(StoredEventView::of::<A>));
        event_ids.extend(page.iter().map(|e| (e.version, e.event_id)));
    }
    // The framework's verdict on each, which also opens a delta against its base.
    let verdicts = stores.executor_with(None)?.snapshots::<A>(id).await;
    let snapshots = stores
        .snapshots
        .list(&stream, 0, u64::MAX)
        .await?
        .iter()
        .map(|record| {
            let mut view = SnapshotView::of::<A>(record, true);
            view.check_last_event(event_ids.get(&record.version).copied());
            if let Some(info) = verdicts
                .iter()
                .flatten()
                .find(|info| info.version == record.version)
            {
                view.apply_verdict(info);
            }
            view
        })
        .collect();
    let since = chrono::Utc::now().date_naive() - chrono::Days::new(STATISTICS_DAYS - 1);
    let snapshot_days = stores
        .snapshots
        .snapshot_days(A::TYPE, since)
        .await?
        .iter()
        .map(SnapshotDayView::of)
        .collect();
    Ok(Inspection {
        aggregate_type: A::TYPE,
        id: id.to_owned(),
        version,
        events,
        snapshots,
        snapshot_days,
    })
}

impl Inspection {
    /// Writes a human-readable report: one line per event, one block per snapshot.
    pub fn write_text(&self, out: &mut impl Write) -> Result<(), InspectError> {
        writeln!(
            out,
            "{}/{}: version {}, {} events, {} snapshots",
            self.aggregate_type,
            self.id,
            self.version,
            self.events.len(),
            self.snapshots.len()
        )?;
        if self.version == 0 {
            writeln!(out, "(no events: this aggregate does not exist)")?;
        }
        if !self.events.is_empty() {
            writeln!(out, "\nevents")?;
            let type_width = self
                .events
                .iter()
                .map(|e| e.event_type.len())
                .max()
                .unwrap_or(0);
            for event in &self.events {
                writeln!(
                    out,
                    "  v{:<6} {:<type_width$}  {}  {}",
                    event.version,
                    event.event_type,
                    event.recorded_at.format("%Y-%m-%d %H:%M:%S%.6fZ"),
                    serde_json::to_string(&event.payload)?,
                )?;
            }
        }
        if !self.snapshots.is_empty() {
            writeln!(out, "\nsnapshots (newest first)")?;
            for snapshot in &self.snapshots {
                writeln!(
                    out,
                    "  v{:<6} {} B stored / {} B encoded, {}, {} schema v{}{}, checksum {} {}, {}, taken {}",
                    snapshot.version,
                    snapshot.stored_size,
                    snapshot.uncompressed_size,
                    snapshot.compression,
                    snapshot.codec,
                    snapshot.state_schema_version,
                    if snapshot.schema_current {
                        ""
                    } else {
                        " (not current)"
                    },
                    snapshot.checksum,
                    snapshot.integrity,
                    match snapshot.last_event_matches {
                        Some(true) => "last event matches",
                        Some(false) => "LAST EVENT DIFFERS",
                        None => "last event not checked",
                    },
                    snapshot.taken_at.format("%Y-%m-%d %H:%M:%S%.6fZ"),
                )?;
                if let Some(state) = &snapshot.state {
                    writeln!(out, "          state: {}", serde_json::to_string(state)?)?;
                }
            }
        }
        if !self.snapshot_days.is_empty() {
            writeln!(
                out,
                "\nsnapshots of every {} per UTC day (all processes)",
                self.aggregate_type
            )?;
            for day in &self.snapshot_days {
                writeln!(
                    out,
                    "  {}  created {}, deleted {}, archived {}, {} B, mean creation {:.3} ms",
                    day.day,
                    day.created,
                    day.deleted,
                    day.archived,
                    day.bytes,
                    day.mean_creation_ms
                )?;
            }
        }
        Ok(())
    }
}
