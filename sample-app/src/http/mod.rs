//! The HTTP API (axum): commands, state, events, time travel, snapshots, stats, the dashboard,
//! metrics and health.
//!
//! | method and path | does | success |
//! |---|---|---|
//! | `POST /{type}/{id}/commands` | runs the JSON command in the body | 200 `{version, events, command_id, duplicate, …}` |
//! | `GET /{type}/{id}` | the current state | 200 `{version, state, activation}` |
//! | `GET /{type}/{id}/at?version=N` or `?time=RFC3339` | the state at a past point | 200 `{version, reached_at, from_snapshot, events_replayed, elapsed_ms, state}` |
//! | `GET /{type}/{id}/events?after=V&limit=N` | one page of its stored events, decoded ([`events`]) | 200 `{version, after, events: […], next_after}` |
//! | `GET /{type}/{id}/snapshots` | stored snapshots, verified | 200 `{version, snapshots: […]}` |
//! | `GET /{type}/{id}/reminders` | its durable reminders, by name ([`reminders`]) | 200 `{version, reminders: […]}` |
//! | `POST /{type}/{id}/snapshots` | takes a snapshot now | 201 `{version}` |
//! | `GET /read-model/customers?prefix=P&after=ID&limit=N` | per-customer totals kept by a projection ([`crate::read_model`]), in id order | 200 `{customers, next_after, projection}` |
//! | `GET /read-model/customers/{id}` | one customer's totals | 200 `{customer, projection}` |
//! | `GET /read-model/stats` | the projection's position, events handled, lag, caught up | 200 |
//! | `GET /stats` | per aggregate type: live actors, activations, commands, histograms, snapshots; recent aggregates ([`stats`]) | 200 `{at, stores, types: […], recent: […]}` |
//! | `GET /dashboard` | the operators' dashboard, an HTML page in the binary ([`dashboard`]) | 200 |
//! | `GET /metrics` | Prometheus text | 200 |
//! | `GET /health` | the event store answers (and, in cluster mode, this node's figures) | 200 / 503 |
//!
//! `{type}` is `accounts` or `customers`. Errors are described in [`error`].
//!
//! Every request runs in a `request` span with the W3C trace id of its `traceparent` header (a
//! new trace when it has none or a malformed one), and every response carries that
//! `traceparent`. A command request stores it with each of its events, beside the request's
//! correlation id, so a request can be followed to its rows (see [`trace`]).
//!
//! # Exactly-once commands: `Idempotency-Key`
//!
//! A command request may carry an `Idempotency-Key` header (the convention of the IETF draft
//! "The Idempotency-Key HTTP Header Field"): any printable ASCII string (bytes `0x20..=0x7E`)
//! of 1 to 255 bytes, taken verbatim (quotes included). Anything else is 400
//! `invalid_idempotency_key` and runs nothing. The key names the command: sending the same
//! key again to the same aggregate never applies the command twice but answers with the
//! original outcome, `"duplicate": true` and an `Idempotent-Replayed: true` header. So after
//! an `indeterminate` error (the command may or may not have been stored), retrying with the
//! same key is always safe.
//!
//! The key is scoped to the aggregate (see [`command_id_for`]): the same key sent to two
//! aggregates names two different commands. Without the header every request is a new
//! command with a fresh id. Every successful reply reports the `command_id` it ran under.
//!
//! What is remembered is the command's id, not the request: a key reused with a different
//! body gets the first request's outcome back (the body is not compared). A rejected command
//! stores nothing and so is not remembered: sending its key again decides again.

pub mod dashboard;
pub mod error;
pub mod events;
pub mod histograms;
pub mod read_model;
pub mod reminders;
pub mod schedules;
pub mod server;
pub mod stats;
pub mod trace;

use std::time::{Duration, Instant};

use aggregate_actors::event_stores::{EventMetadata, ReadQuery, StreamId, TraceParent};
use aggregate_actors::schedule::Schedules;
use aggregate_actors::{At, CommandError, CommandId, CommandOptions, Executor, ExecutorError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::cluster::ClusterStatus;
use crate::domain::{Account, Customer};
use crate::ledger::{Collection, LedgerAggregate};
use crate::read_model::ReadModel;
use crate::scheduler::ReminderScheduler;
use crate::views::{SnapshotView, event_json};
use error::ApiError;
pub use server::{ServeError, ServeOptions, serve};
use trace::RequestTrace;

/// Largest request body accepted; larger ones get 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The request header that names a command across retries.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header (`true`) on the answer to a command that had already been applied.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Longest `Idempotency-Key` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The `Idempotency-Key` of a request: `None` without the header; 400
/// `invalid_idempotency_key` when it is repeated, empty, longer than
/// [`MAX_IDEMPOTENCY_KEY_LEN`] bytes or has a byte outside printable ASCII (`0x20..=0x7E`).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid_idempotency_key(
            "the header must be sent at most once",
        ));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(ApiError::invalid_idempotency_key("it is empty"));
    }
    if bytes.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(ApiError::invalid_idempotency_key(format!(
            "it is {} bytes long; at most {MAX_IDEMPOTENCY_KEY_LEN} are allowed",
            bytes.len()
        )));
    }
    if let Some(position) = bytes.iter().position(|b| !(0x20..=0x7e).contains(b)) {
        return Err(ApiError::invalid_idempotency_key(format!(
            "byte {position} is not printable ASCII"
        )));
    }
    // Printable ASCII is valid UTF-8, so this cannot fail.
    value
        .to_str()
        .map(Some)
        .map_err(ApiError::invalid_idempotency_key)
}

/// The command id a request runs under: with an `Idempotency-Key`,
/// `CommandId::from_key("{collection}\u{1f}{id}\u{1f}{key}")` — the key scoped to the
/// aggregate, so the same key sent to two aggregates names two commands (U+001F, the unit
/// separator, can appear in neither an id nor a key, so no two triples give the same string);
/// without one, a fresh id.
pub fn command_id_for(collection: Collection, id: &str, key: Option<&str>) -> CommandId {
    match key {
        Some(key) => CommandId::from_key(&format!("{}\u{1f}{id}\u{1f}{key}", collection.name())),
        None => CommandId::new(),
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Runs the commands.
    pub executor: Executor,
    /// Renders `/metrics`; `None` when no Prometheus recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Where the stores live, for `/health`.
    pub stores: String,
    /// This node's part in the cluster, for `/health`; `None` on a single process.
    pub cluster: Option<ClusterStatus>,
    /// The customer totals, for `/read-model/…`; woken after every command that stored events.
    pub read_model: ReadModel,
    /// The reminder scheduler next to the executor, for `/stats`; `None` when none runs
    /// (cluster mode, or a router built without one).
    pub scheduler: Option<ReminderScheduler>,
    /// The snapshot schedules the scheduler runs, for `/snapshot-schedules`; `None` when
    /// none run.
    pub schedules: Option<Schedules>,
}

/// The API's routes on `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/read-model/customers", get(read_model::list_customers))
        .route("/read-model/customers/{id}", get(read_model::get_customer))
        .route("/read-model/stats", get(read_model::stats))
        .route("/stats", get(stats::stats))
        .route("/snapshot-schedules", get(schedules::list))
        .route(
            "/snapshot-schedules/{name}",
            axum::routing::put(schedules::put).delete(schedules::delete),
        )
        .route("/dashboard", get(dashboard::index))
        .route("/dashboard/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/style.css", get(dashboard::style))
        .route("/{aggregate_type}/{id}", get(get_state))
        .route(
            "/{aggregate_type}/{id}/commands",
            axum::routing::post(post_command),
        )
        .route("/{aggregate_type}/{id}/at", get(get_at))
        .route("/{aggregate_type}/{id}/events", get(events::list_events))
        .route(
            "/{aggregate_type}/{id}/reminders",
            get(reminders::list_reminders),
        )
        .route(
            "/{aggregate_type}/{id}/snapshots",
            get(list_snapshots).post(take_snapshot),
        )
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(trace::trace_requests))
        .with_state(state)
}

/// Runs `$f::<A>(args…)` for the aggregate type `A` that `$collection` names.
macro_rules! dispatch {
    ($collection:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $collection {
            Collection::Accounts => $f::<Account>($($arg),*).await,
            Collection::Customers => $f::<Customer>($($arg),*).await,
        }
    };
}

/// Resolves the path's aggregate type (404 when unknown) and checks its id (400 when invalid),
/// in that order: an unknown type is not found whatever the id.
fn target(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Collection, String), ApiError> {
    let Path((aggregate_type, id)) =
        path.map_err(|rejection| ApiError::invalid_id(rejection.body_text()))?;
    let collection = Collection::parse_collection(&aggregate_type)
        .ok_or_else(|| ApiError::unknown_type(&aggregate_type))?;
    StreamId::check(collection.aggregate_type(), &id).map_err(ApiError::invalid_id)?;
    Ok((collection, id))
}

async fn post_command(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    trace: Option<Extension<RequestTrace>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (collection, id) = target(path)?;
    let key = idempotency_key(&headers)?;
    let command_id = command_id_for(collection, &id, key);
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body exceeds {BODY_LIMIT} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                rejection.body_text(),
            )
        }
    })?;
    dispatch!(
        collection,
        execute(
            &app,
            &id,
            &body,
            command_id,
            key.is_some(),
            trace.map(|Extension(RequestTrace(t))| t)
        )
    )
}

async fn execute<A: LedgerAggregate>(
    app: &AppState,
    id: &str,
    body: &[u8],
    command_id: CommandId,
    had_key: bool,
    trace: Option<TraceParent>,
) -> Result<Response, ApiError> {
    let request: A::Request = serde_json::from_slice(body).map_err(|e| ApiError::from_json(&e))?;
    // One id per request, stored on every event it produces, so the events of one HTTP call
    // can be found together later.
    let correlation_id = Uuid::now_v7();
    let metadata = EventMetadata {
        correlation_id: Some(correlation_id),
        trace_parent: trace,
        ..EventMetadata::default()
    };
    let command = A::command(request, Utc::now());
    let options = CommandOptions::new()
        .command_id(command_id)
        .metadata(metadata);
    match app.executor.execute_with::<A>(id, command, options).await {
        Ok(committed) => {
            if !committed.duplicate && !committed.events.is_empty() {
                app.read_model.wake();
            }
            let correlation_id = if committed.duplicate {
                original_correlation_id::<A>(app, id, committed.command_id).await
            } else {
                Some(correlation_id)
            };
            let mut response = Json(json!({
                "aggregate_type": A::COLLECTION,
                "id": id,
                "version": committed.version,
                "events": committed.events.iter().map(event_json::<A>).collect::<Vec<_>>(),
                "command_id": committed.command_id,
                "duplicate": committed.duplicate,
                "correlation_id": correlation_id,
                "trace_id": trace.map(|t| t.trace_id_hex()),
            }))
            .into_response();
            if committed.duplicate {
                response
                    .headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            }
            Ok(response)
        }
        Err(CommandError::Rejected(error)) => Err(ApiError::rejected(A::rule(&error), &error)),
        Err(CommandError::NotStored(error)) => Err(ApiError::not_stored(error)),
        Err(CommandError::Indeterminate(indeterminate)) => {
            Err(ApiError::indeterminate(indeterminate, had_key))
        }
    }
}

/// The correlation id stored with the events of an earlier command: a duplicate answer
/// reports the original request's. `None` when the command stored no events or they cannot be
/// read now (the answer itself is still right: the command was applied once).
async fn original_correlation_id<A: LedgerAggregate>(
    app: &AppState,
    id: &str,
    command_id: CommandId,
) -> Option<Uuid> {
    let stream = StreamId::new(A::TYPE, id).ok()?;
    match app
        .executor
        .event_store()
        .read_command(&stream, command_id.as_uuid())
        .await
    {
        Ok(events) => events.first().and_then(|e| e.metadata.correlation_id),
        Err(error) => {
            tracing::warn!(%error, %command_id, "cannot read the original command's events");
            None
        }
    }
}

async fn get_state(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (collection, id) = target(path)?;
    dispatch!(collection, state(&app, &id))
}

async fn state<A: LedgerAggregate>(app: &AppState, id: &str) -> Result<Response, ApiError> {
    let view = app.executor.state::<A>(id).await?;
    Ok(Json(json!({
        "aggregate_type": A::COLLECTION,
        "id": id,
        "version": view.version,
        "state": view.state,
        "activation": {
            "snapshot_version": view.activation.snapshot_version(),
            "snapshots_skipped": view.activation.snapshots_skipped,
            "events_replayed": view.activation.events_replayed,
            "elapsed_ms": millis(view.activation.elapsed),
        },
    }))
    .into_response())
}

/// `?version=N` or `?time=RFC3339`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AtParams {
    version: Option<u64>,
    time: Option<String>,
}

impl AtParams {
    fn at(self) -> Result<At, ApiError> {
        let invalid =
            |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message);
        match (self.version, self.time) {
            (Some(version), None) => Ok(At::Version(version)),
            (None, Some(time)) => {
                // In a query string an unencoded `+` (as in `+02:00`) arrives as a space;
                // put it back rather than refuse an otherwise valid timestamp.
                let time = time.trim().replace(' ', "+");
                DateTime::parse_from_rfc3339(&time)
                    .map(|t| At::Time(t.with_timezone(&Utc)))
                    .map_err(|e| {
                        invalid(format!(
                            "time must be RFC 3339 (e.g. 2025-01-31T12:00:00Z): {e}"
                        ))
                    })
            }
            _ => Err(invalid(
                "give exactly one of version=N or time=RFC3339".to_owned(),
            )),
        }
    }
}

async fn get_at(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<AtParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (collection, id) = target(path)?;
    let Query(params) = query.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    })?;
    let at = params.at()?;
    dispatch!(collection, reconstruct(&app, &id, at))
}

async fn reconstruct<A: LedgerAggregate>(
    app: &AppState,
    id: &str,
    at: At,
) -> Result<Response, ApiError> {
    let reconstruction = app.executor.reconstruct::<A>(id, at).await?;
    Ok(Json(json!({
        "aggregate_type": A::COLLECTION,
        "id": id,
        "version": reconstruction.version,
        "reached_at": reconstruction.reached_at,
        "from_snapshot": reconstruction.from_snapshot.map(|s| json!({
            "version": s.version,
            "taken_at": s.taken_at,
        })),
        "snapshots_skipped": reconstruction.snapshots_skipped,
        "events_replayed": reconstruction.events_replayed,
        "elapsed_ms": millis(reconstruction.elapsed),
        "state": reconstruction.state,
    }))
    .into_response())
}

async fn list_snapshots(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (collection, id) = target(path)?;
    dispatch!(collection, snapshots(&app, &id))
}

async fn snapshots<A: LedgerAggregate>(app: &AppState, id: &str) -> Result<Response, ApiError> {
    let stream = StreamId::new(A::TYPE, id).map_err(ApiError::invalid_id)?;
    let version = app.executor.event_store().stream_version(&stream).await?;
    if version == 0 {
        return Err(ExecutorError::NotFound {
            aggregate_type: A::TYPE,
            id: id.to_owned(),
        }
        .into());
    }
    let records = app
        .executor
        .snapshot_store()
        .list(&stream, 0, u64::MAX)
        .await?;
    let mut views = Vec::with_capacity(records.len());
    for record in &records {
        let mut view = SnapshotView::of::<A>(record, false);
        // The event at the snapshot's version must be the one it was taken after.
        let query = ReadQuery::after(record.version.saturating_sub(1))
            .up_to_version(record.version)
            .page_size(1);
        let stored = app
            .executor
            .event_store()
            .read_stream(&stream, query)
            .await?;
        view.check_last_event(stored.first().map(|e| e.event_id));
        views.push(view);
    }
    // The framework's own verdict, which also opens a delta against its base.
    let verified = app.executor.snapshots::<A>(id).await?;
    for view in &mut views {
        if let Some(info) = verified.iter().find(|info| info.version == view.version) {
            view.apply_verdict(info);
        }
    }
    let archived: Vec<serde_json::Value> = app
        .executor
        .archived_snapshots::<A>(id)
        .await?
        .iter()
        .map(|a| {
            json!({
                "version": a.record.version,
                "taken_at": a.record.taken_at,
                "archived_at": a.archived_at,
                "stored_size": a.record.stored_size,
                "compression": a.record.compression,
            })
        })
        .collect();
    Ok(Json(json!({
        "aggregate_type": A::COLLECTION,
        "id": id,
        "version": version,
        "snapshots": views,
        "archived": archived,
    }))
    .into_response())
}

async fn take_snapshot(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (collection, id) = target(path)?;
    dispatch!(collection, snapshot_now(&app, &id))
}

async fn snapshot_now<A: LedgerAggregate>(app: &AppState, id: &str) -> Result<Response, ApiError> {
    let version = app
        .executor
        .snapshot_now::<A>(id)
        .await
        .map_err(ApiError::snapshot_failed)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "aggregate_type": A::COLLECTION, "id": id, "version": version })),
    )
        .into_response())
}

async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
    let handle = app.metrics.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "no metrics recorder installed",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}

async fn health(State(app): State<AppState>) -> Result<Response, ApiError> {
    // A cheap read proves the event store answers; the stream never exists.
    let probe = StreamId::new("health", "probe")
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let started = Instant::now();
    match app.executor.event_store().stream_version(&probe).await {
        Ok(_) => {
            let mut body = json!({
                "status": "ok",
                "stores": app.stores,
                "store_latency_ms": millis(started.elapsed()),
            });
            if let Some(cluster) = &app.cluster {
                body["cluster"] = json!(cluster.report());
            }
            Ok(Json(body).into_response())
        }
        Err(error) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            error.to_string(),
        )),
    }
}

/// Unmatched paths. A path like `/accounts//commands` lands here because the router does not
/// match empty segments: that is an empty id (400), not a missing route.
async fn fallback(request: Request) -> ApiError {
    let path = request.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let [aggregate_type, id, ..] = segments.as_slice()
        && id.is_empty()
        && !aggregate_type.is_empty()
        && !matches!(*aggregate_type, "health" | "metrics")
    {
        return match Collection::parse_collection(aggregate_type) {
            Some(_) => ApiError::invalid_id("the id must not be empty"),
            None => ApiError::unknown_type(aggregate_type),
        };
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {path}"),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Milliseconds with microsecond resolution (no float noise in the JSON).
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}
