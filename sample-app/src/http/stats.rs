//! `GET /stats`: this process's figures per aggregate type, as JSON, for the dashboard
//! ([`super::dashboard`]) and anyone else who polls.
//!
//! ```text
//! {
//!   "at": "2025-01-31T12:00:00.123456Z",      // when the figures were read (rates: Δ/Δat)
//!   "stores": "in-memory",
//!   "types": [{
//!     "aggregate_type": "account", "collection": "accounts",
//!     "live_actors": 3, "activations": 5, "activations_without_read": 3,
//!     "runtime": {"activations", "activation_failures", "passivations", "evictions",
//!                 "crashes", "overloaded", "timeouts"},
//!     "commands": {"total", "succeeded", "rejected", "failed", "duplicate", "expired",
//!                  "indeterminate", "conflicts"},
//!     "replay": {"events_replayed", "mean", "max"},
//!     "activation_time": {"mean_ms", "max_ms"},
//!     "last_activation": {"snapshot_version", "snapshots_skipped", "events_replayed",
//!                         "version", "elapsed_ms"} | null,
//!     "snapshots": {"taken", "failed", "skipped_invalid", "superseded",
//!                   "bytes_stored", "bytes_uncompressed", "delta", "deleted", "archived",
//!                   "days": [{"day": "2025-01-31", "created", "deleted", "archived", "bytes",
//!                             "mean_creation_ms"}, …] | null,
//!                   "days_this_process": [ … the same … ]},
//!     "histograms": {
//!       "replay_size":     {"unit": "events", "count", "sum", "buckets": [{"le": 0, "count": 2}, …, {"le": null, "count": 0}]} | null,
//!       "activation_time": {"unit": "ms", …} | null
//!     }
//!   }, …],
//!   "reminders": {"running": true, "fired", "duplicates", "rejected", "stale", "failed",
//!                 "unserved", "in_flight", "polls", "poll_errors",
//!                 "lag_p50_ms", "lag_p99_ms", "lag_max_ms"} | null,
//!   "recent": [{"collection": "accounts", "id": "acc-1", "version": 12, "recorded_at": "…"}, …]
//! }
//! ```
//!
//! `reminders` are the figures of the reminder scheduler running next to the executor
//! ([`crate::scheduler`]; `null` when there is none, as in cluster mode): reminders whose
//! command was stored (`fired`, of which `duplicates` had been stored by an earlier attempt),
//! refused by the aggregate (`rejected`, recorded on the reminder), skipped because they had
//! been replaced or cancelled (`stale`), failed and to be retried (`failed`), waiting for their
//! due time or running (`in_flight`), and how late firings started after their due time
//! (median, 99th percentile and maximum over the last 65 536 firings).
//!
//! `snapshots.days` are the type's snapshot figures per UTC day over the last 31 days as the
//! snapshot store keeps them: the sum over every process that wrote snapshots of the type,
//! across restarts (`null` when the store could not be read); `days_this_process` are this
//! process's own since it started.
//!
//! `commands.total` counts every answered command whatever its outcome; a client computes
//! commands per second from two polls. The histograms are kept by [`super::histograms`] (`null`
//! without its recorder, as in a test that builds the router itself); their bucket counts are
//! not cumulative. `recent` lists the aggregates that stored the newest events of the store's
//! global log (about the last [`RECENT_WINDOW`]), newest first, at most [`RECENT_AGGREGATES`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use aggregate_actors::event_stores::{RecordedEvent, StoreResult};
use aggregate_actors::{SnapshotDay, TypeStats};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::{AppState, histograms, millis};
use crate::inspect::STATISTICS_DAYS;
use crate::ledger::Collection;
use crate::scheduler::ReminderScheduler;
use crate::views::SnapshotDayView;

/// Most aggregates listed under `recent`.
pub const RECENT_AGGREGATES: usize = 12;

/// How many of the newest events of the global log `recent` looks at, at least (when the log
/// has that many).
pub const RECENT_WINDOW: u64 = 200;

/// The most events `recent` reads.
pub const MAX_READ: u64 = 2_000;

/// `GET /stats`.
pub(super) async fn stats(State(app): State<AppState>) -> Response {
    let stats = app.executor.stats();
    let since = Utc::now().date_naive() - chrono::Days::new(STATISTICS_DAYS - 1);
    let mut types = Vec::with_capacity(stats.types.len());
    for type_stats in &stats.types {
        let aggregate_type = type_stats.aggregate.aggregate_type;
        let stored = match app.executor.snapshot_days(aggregate_type, since).await {
            Ok(days) => Some(days),
            Err(error) => {
                tracing::warn!(aggregate_type, %error, "cannot read the stored per-day snapshot statistics");
                None
            }
        };
        types.push(type_json(type_stats, stored.as_deref()));
    }
    Json(json!({
        "at": Utc::now(),
        "stores": app.stores,
        "types": types,
        "reminders": app.scheduler.as_ref().map(reminders_json),
        "recent": recent(&app).await,
    }))
    .into_response()
}

/// One type's entry of `types`; `stored_days` are the per-day snapshot statistics the store
/// keeps (`None` when they could not be read).
fn type_json(stats: &TypeStats, stored_days: Option<&[SnapshotDay]>) -> Value {
    let a = &stats.aggregate;
    let r = &stats.runtime;
    let collection = Collection::ALL
        .into_iter()
        .find(|c| c.aggregate_type() == a.aggregate_type)
        .map(Collection::name);
    let commands_total = a.commands_succeeded
        + a.commands_rejected
        + a.commands_failed
        + a.commands_duplicate
        + a.commands_expired
        + a.commands_indeterminate;
    json!({
        "aggregate_type": a.aggregate_type,
        "collection": collection,
        "live_actors": r.live,
        "activations": a.activations,
        "activations_without_read": a.activations_without_read,
        "runtime": {
            "activations": r.activations,
            "activation_failures": r.activation_failures,
            "passivations": r.passivations,
            "evictions": r.evictions,
            "crashes": r.crashes,
            "overloaded": r.overloaded,
            "timeouts": r.timeouts,
        },
        "commands": {
            "total": commands_total,
            "succeeded": a.commands_succeeded,
            "rejected": a.commands_rejected,
            "failed": a.commands_failed,
            "duplicate": a.commands_duplicate,
            "expired": a.commands_expired,
            "indeterminate": a.commands_indeterminate,
            "conflicts": a.conflicts,
        },
        "replay": {
            "events_replayed": a.events_replayed,
            "mean": a.mean_replay_size(),
            "max": a.max_events_replayed,
        },
        "activation_time": {
            "mean_ms": millis(a.mean_activation_time()),
            "max_ms": millis(a.max_activation_time),
        },
        "last_activation": a.last_activation.as_ref().map(|report| json!({
            "snapshot_version": report.snapshot_version(),
            "snapshots_skipped": report.snapshots_skipped,
            "events_replayed": report.events_replayed,
            "version": report.version,
            "elapsed_ms": millis(report.elapsed),
        })),
        "snapshots": {
            "taken": a.snapshots_taken,
            "failed": a.snapshots_failed,
            "skipped_invalid": a.snapshots_skipped_invalid,
            "superseded": a.snapshots_superseded,
            "bytes_stored": a.snapshot_bytes_stored,
            "bytes_uncompressed": a.snapshot_bytes_uncompressed,
            "delta": a.snapshots_delta,
            "deleted": a.snapshots_deleted,
            "archived": a.snapshots_archived,
            // Per UTC day: as the store keeps them (every process), and this process's.
            "days": stored_days.map(|days| days.iter().map(SnapshotDayView::of).collect::<Vec<_>>()),
            "days_this_process": a.snapshot_days.iter().map(SnapshotDayView::of).collect::<Vec<_>>(),
        },
        "histograms": {
            "replay_size": histograms::replay_size(a.aggregate_type),
            "activation_time": histograms::activation_time(a.aggregate_type),
        },
    })
}

/// The `reminders` entry: the scheduler's figures.
fn reminders_json(scheduler: &ReminderScheduler) -> Value {
    let s = scheduler.stats();
    json!({
        "running": scheduler.is_running(),
        "fired": s.fired,
        "duplicates": s.duplicates,
        "rejected": s.rejected,
        "stale": s.stale,
        "failed": s.failed,
        "unserved": s.unserved,
        "in_flight": s.in_flight,
        "polls": s.polls,
        "poll_errors": s.poll_errors,
        "lag_p50_ms": millis(s.lag_p50),
        "lag_p99_ms": millis(s.lag_p99),
        "lag_max_ms": millis(s.lag_max),
    })
}

/// The aggregates behind the newest events of the global log, newest first; empty when the
/// store cannot be read (the rest of the figures are still worth showing).
async fn recent(app: &AppState) -> Vec<Value> {
    let events = match newest_events(app).await {
        Ok(events) => events,
        Err(error) => {
            tracing::warn!(%error, "cannot read the newest events for /stats");
            return Vec::new();
        }
    };
    let mut seen = HashSet::new();
    events
        .iter()
        .rev()
        .filter_map(|event| {
            let collection = Collection::ALL
                .into_iter()
                .find(|c| c.aggregate_type() == event.stream.aggregate_type())?;
            seen.insert(event.stream.clone()).then(|| {
                json!({
                    "collection": collection.name(),
                    "id": event.stream.aggregate_id(),
                    "version": event.version,
                    "recorded_at": event.recorded_at,
                })
            })
        })
        .take(RECENT_AGGREGATES)
        .collect()
}

/// The span of positions [`newest_events`] looked back over last time: the next call starts
/// from it, so a steady store costs one count and one read per call.
static SPAN: AtomicU64 = AtomicU64::new(1_024);

/// About the newest [`RECENT_WINDOW`] events of the global log (at most [`MAX_READ`]), in
/// position order.
///
/// Positions are not dense (PostgreSQL's leave wide gaps), so "the last N" cannot be computed
/// from the head: the head is the read model's position (it follows the log), and the span
/// behind it is narrowed or widened by factors of 4, counting the events in it with
/// [`EventStore::count_after`](aggregate_actors::event_stores::EventStore::count_after), until
/// it holds at least [`RECENT_WINDOW`] events or reaches the start of the log.
async fn newest_events(app: &AppState) -> StoreResult<Vec<RecordedEvent>> {
    let store = app.executor.event_store();
    let head = app.read_model.stats().position;
    let mut span = SPAN.load(Relaxed).max(1);
    let mut count = store.count_after(head.saturating_sub(span)).await?;
    while count > MAX_READ && span > 1 {
        span /= 4;
        count = store.count_after(head.saturating_sub(span)).await?;
    }
    while count < RECENT_WINDOW && span < head {
        span = span.saturating_mul(4);
        count = store.count_after(head.saturating_sub(span)).await?;
    }
    SPAN.store(span, Relaxed);
    let limit = usize::try_from(count.min(MAX_READ)).unwrap_or(usize::MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    store.read_all(head.saturating_sub(span), limit).await
}
