//! `GET /{type}/{id}/events?after=V&limit=N`: one page of an aggregate's stored events,
//! decoded, in version order.
//!
//! ```text
//! {
//!   "aggregate_type": "accounts", "id": "acc-1",
//!   "version": 130,                 // the stream's current version
//!   "after": 80,                    // the page starts after this version
//!   "events": [{"version": 81, "event_type": "Deposited", "schema_version": 1,
//!               "event_id": "…", "recorded_at": "…", "payload": {…},
//!               "position": 81, "command_id": "…" | null,
//!               "correlation_id": "…" | null, "causation_id": "…" | null,
//!               "trace_parent": "00-…-…-01" | null}, …],
//!   "next_after": 130 | null        // `after` of the next page; null on the last one
//! }
//! ```
//!
//! `after` defaults to 0 (from the first event), `limit` to [`DEFAULT_LIMIT`] (at most
//! [`MAX_LIMIT`]). Payloads are decoded as the aggregate's events, through its upcasters
//! ([`StoredEventView`]). An aggregate with no events is 404 `not_found`.

use aggregate_actors::ExecutorError;
use aggregate_actors::event_stores::{ReadQuery, RecordedEvent, StreamId, TraceParent};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{AppState, target};
use crate::domain::{Account, Customer};
use crate::http::error::ApiError;
use crate::ledger::{Collection, LedgerAggregate};
use crate::views::StoredEventView;

/// Events per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// Most events per page.
pub const MAX_LIMIT: usize = 1_000;

/// `?after=V&limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsParams {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

/// One event of the page: the decoded view and where it sits in the store.
#[derive(Debug, Serialize)]
struct EventRow {
    #[serde(flatten)]
    view: StoredEventView,
    position: u64,
    command_id: Option<Uuid>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    trace_parent: Option<TraceParent>,
}

impl EventRow {
    fn of<A: LedgerAggregate>(event: &RecordedEvent) -> Self {
        Self {
            view: StoredEventView::of::<A>(event),
            position: event.position,
            command_id: event.command_id,
            correlation_id: event.metadata.correlation_id,
            causation_id: event.metadata.causation_id,
            trace_parent: event.metadata.trace_parent,
        }
    }
}

/// `GET /{type}/{id}/events`.
pub(super) async fn list_events(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (collection, id) = target(path)?;
    let invalid =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message);
    let Query(params) = query.map_err(|rejection| invalid(rejection.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    match collection {
        Collection::Accounts => page::<Account>(&app, &id, params.after, limit).await,
        Collection::Customers => page::<Customer>(&app, &id, params.after, limit).await,
    }
}

async fn page<A: LedgerAggregate>(
    app: &AppState,
    id: &str,
    after: u64,
    limit: usize,
) -> Result<Response, ApiError> {
    let stream = StreamId::new(A::TYPE, id).map_err(ApiError::invalid_id)?;
    let store = app.executor.event_store();
    let version = store.stream_version(&stream).await?;
    if version == 0 {
        return Err(ExecutorError::NotFound {
            aggregate_type: A::TYPE,
            id: id.to_owned(),
        }
        .into());
    }
    // Bounded by the version read above, so the page and `version` agree even while
    // commands append.
    let query = ReadQuery::after(after)
        .up_to_version(version)
        .page_size(limit);
    let events = if after >= version {
        Vec::new()
    } else {
        store.read_stream(&stream, query).await?
    };
    let next_after = events
        .last()
        .map(|last| last.version)
        .filter(|last| *last < version);
    let rows: Vec<EventRow> = events.iter().map(EventRow::of::<A>).collect();
    Ok(Json(json!({
        "aggregate_type": A::COLLECTION,
        "id": id,
        "version": version,
        "after": after,
        "events": rows,
        "next_after": next_after,
    }))
    .into_response())
}
