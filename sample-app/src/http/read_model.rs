//! `GET /read-model/…`: the customer totals kept by the projection ([`crate::read_model`]),
//! each answer with the projection's stats, so a reader sees how fresh the rows are.

use aggregate_actors::Aggregate;
use aggregate_actors::event_stores::StreamId;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use projections::ProjectionStats;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, millis};
use crate::domain::Customer;
use crate::http::error::ApiError;
use crate::read_model::ReadModelError;

/// Rows per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// Most rows per page.
pub const MAX_LIMIT: usize = 1_000;

/// The projection's stats as JSON: `{name, position, events_handled, events_read, batches,
/// retries, caught_up, lag_ms, last_event_at, last_error}`.
pub fn stats_json(stats: &ProjectionStats) -> Value {
    json!({
        "name": stats.name,
        "position": stats.position,
        "events_handled": stats.events_handled,
        "events_read": stats.events_read,
        "batches": stats.batches,
        "retries": stats.retries,
        "caught_up": stats.caught_up,
        "lag_ms": millis(stats.lag),
        "last_event_at": stats.last_event_at,
        "last_error": stats.last_error,
    })
}

impl From<ReadModelError> for ApiError {
    fn from(error: ReadModelError) -> Self {
        tracing::warn!(%error, "reading the read model failed");
        match error {
            ReadModelError::Database(_) | ReadModelError::Store(_) => Self {
                retryable: true,
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    error.to_string(),
                )
            },
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

/// `?prefix=…&after=…&limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /read-model/customers`: rows in customer id order, `{customers, next_after,
/// projection}`; `next_after` is the `after` of the next page (`null` on the last one).
pub(super) async fn list_customers(
    State(app): State<AppState>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    })?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    // Ids have 1 to 256 bytes and no control characters: a prefix or cursor that no id could
    // start with or be is bad input, and a NUL would reach PostgreSQL as text it refuses.
    for (what, value) in [
        ("prefix", params.prefix.as_str()),
        ("after", params.after.as_deref().unwrap_or("")),
    ] {
        if !value.is_empty() {
            StreamId::check(Customer::TYPE, value).map_err(|error| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("{what}: {error}"),
                )
            })?;
        }
    }
    // Stats first: the rows are at least as fresh as the position they report.
    let stats = app.read_model.stats();
    let rows = app
        .read_model
        .customers(&params.prefix, params.after.as_deref(), limit)
        .await?;
    let next_after = (rows.len() == limit)
        .then(|| rows.last().map(|row| row.customer_id.clone()))
        .flatten();
    Ok(Json(json!({
        "customers": rows,
        "next_after": next_after,
        "projection": stats_json(&stats),
    }))
    .into_response())
}

/// `GET /read-model/customers/{id}`: `{customer, projection}`; 404 `not_found` while no event
/// named the customer (or the projection has not reached it yet).
pub(super) async fn get_customer(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|rejection| ApiError::invalid_id(rejection.body_text()))?;
    StreamId::check(Customer::TYPE, &id).map_err(ApiError::invalid_id)?;
    let stats = app.read_model.stats();
    let row = app.read_model.customer(&id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no read-model row for customer {id:?} (the projection is at position {})",
                stats.position
            ),
        )
    })?;
    Ok(Json(json!({ "customer": row, "projection": stats_json(&stats) })).into_response())
}

/// `GET /read-model/stats`: the projection's stats and where its rows live.
pub(super) async fn stats(State(app): State<AppState>) -> Json<Value> {
    let mut body = stats_json(&app.read_model.stats());
    body["backend"] = json!(app.read_model.backend());
    Json(body)
}
