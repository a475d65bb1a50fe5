//! Snapshot schedules over HTTP: `GET /snapshot-schedules` lists them with their next run,
//! `PUT /snapshot-schedules/{name}` stores one, `DELETE /snapshot-schedules/{name}` removes it.
//!
//! ```text
//! PUT /snapshot-schedules/nightly  {"aggregate_type": "accounts", "cron": "0 0 3 * * *"}
//! PUT /snapshot-schedules/acc-1    {"aggregate_type": "accounts", "id": "acc-1", "cron": "*/30 * * * * *"}
//! GET /snapshot-schedules
//! {"schedules": [{"name": "nightly", "aggregate_type": "account", "id": null,
//!   "cron": "0 0 3 * * *", "next_run_at": "…", "last_run_at": null, "last_outcome": null,
//!   "runs": 0, "runs_on_time": 0}]}
//! ```
//!
//! The service's scheduler runs them (see `aggregate_actors::schedule`); a bad cron expression
//! is 400 `invalid_schedule`.

use aggregate_actors::event_stores::StoredSchedule;
use aggregate_actors::schedule::{ScheduleError, SnapshotSchedule};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use crate::domain::{Account, Customer};
use crate::http::error::ApiError;
use crate::ledger::Collection;

/// What `PUT` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// The collection (`accounts`, `customers`).
    pub aggregate_type: String,
    /// One aggregate; every aggregate of the type when absent.
    pub id: Option<String>,
    /// Six or seven fields, seconds first, UTC.
    pub cron: String,
}

/// One schedule as the API shows it.
#[derive(Debug, Serialize)]
pub struct ScheduleJson {
    name: String,
    aggregate_type: String,
    id: Option<String>,
    cron: String,
    next_run_at: DateTime<Utc>,
    last_run_at: Option<DateTime<Utc>>,
    last_outcome: Option<String>,
    runs: u64,
    runs_on_time: u64,
}

impl From<StoredSchedule> for ScheduleJson {
    fn from(s: StoredSchedule) -> Self {
        Self {
            name: s.name,
            aggregate_type: s.aggregate_type,
            id: s.aggregate_id,
            cron: s.cron,
            next_run_at: s.next_run_at,
            last_run_at: s.last_run_at,
            last_outcome: s.last_outcome,
            runs: s.runs,
            runs_on_time: s.runs_on_time,
        }
    }
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "schedules_unsupported",
        "this service runs no snapshot schedules",
    )
}

fn store_error(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        error.to_string(),
    )
}

/// `GET /snapshot-schedules`.
pub(super) async fn list(State(app): State<AppState>) -> Result<Response, ApiError> {
    let schedules = app.schedules.as_ref().ok_or_else(unavailable)?;
    let listed = schedules.list().await.map_err(store_error)?;
    let listed: Vec<ScheduleJson> = listed.into_iter().map(ScheduleJson::from).collect();
    Ok(Json(json!({ "schedules": listed })).into_response())
}

/// `PUT /snapshot-schedules/{name}`.
pub(super) async fn put(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<ScheduleBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let schedules = app.schedules.as_ref().ok_or_else(unavailable)?;
    let Json(body) = body.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            rejection.body_text(),
        )
    })?;
    let collection = Collection::parse_collection(&body.aggregate_type)
        .ok_or_else(|| ApiError::unknown_type(&body.aggregate_type))?;
    let schedule = match (collection, body.id) {
        (Collection::Accounts, None) => SnapshotSchedule::for_type::<Account>(name, &body.cron),
        (Collection::Customers, None) => SnapshotSchedule::for_type::<Customer>(name, &body.cron),
        (Collection::Accounts, Some(id)) => {
            SnapshotSchedule::for_aggregate::<Account>(name, id, &body.cron)
        }
        (Collection::Customers, Some(id)) => {
            SnapshotSchedule::for_aggregate::<Customer>(name, id, &body.cron)
        }
    };
    let invalid = |error: ScheduleError| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_schedule",
            error.to_string(),
        )
    };
    let stored = match schedules.put(schedule.map_err(invalid)?).await {
        Ok(stored) => stored,
        Err(ScheduleError::Store(error)) => return Err(store_error(error)),
        Err(error) => return Err(invalid(error)),
    };
    Ok((StatusCode::OK, Json(ScheduleJson::from(stored))).into_response())
}

/// `DELETE /snapshot-schedules/{name}`.
pub(super) async fn delete(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let schedules = app.schedules.as_ref().ok_or_else(unavailable)?;
    if schedules.remove(&name).await.map_err(store_error)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no snapshot schedule named {name:?}"),
        ))
    }
}
