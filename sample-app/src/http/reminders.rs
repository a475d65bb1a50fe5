//! `GET /{type}/{id}/reminders`: an aggregate's durable reminders, by name, as stored.
//!
//! ```text
//! {
//!   "aggregate_type": "accounts", "id": "acc-1",
//!   "version": 3,                       // the stream's version when the list was read
//!   "reminders": [{
//!     "name": "review",
//!     "reminder_id": "0193…",           // a new id each time the name is scheduled again
//!     "due_at": "2025-07-01T12:00:00Z", // when it fires next
//!     "period_ms": null,                // set for a periodic reminder
//!     "state": "scheduled",             // or "rejected": its command was refused when it fired
//!     "last_error": null,               // why that command was refused
//!     "last_fired_at": null
//!   }]
//! }
//! ```
//!
//! A frozen account has its `review` reminder until it is reviewed (a one-shot reminder is
//! gone once fired), unfrozen or closed; any other aggregate with events answers an empty
//! list. An aggregate with no events is 404 `not_found`, as for its events and snapshots. A
//! store that keeps no reminders answers 501 `reminders_unsupported`.

use aggregate_actors::ExecutorError;
use aggregate_actors::event_stores::{StoreError, StreamId};
use aggregate_actors::reminder::ReminderView;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::{AppState, target};
use crate::domain::{Account, Customer};
use crate::http::error::ApiError;
use crate::ledger::{Collection, LedgerAggregate};

/// One reminder as the API shows it.
#[derive(Debug, Serialize)]
pub struct ReminderJson {
    /// Its name, unique per aggregate.
    pub name: String,
    /// The id of its current schedule.
    pub reminder_id: Uuid,
    /// When it is due next.
    pub due_at: DateTime<Utc>,
    /// Its period in milliseconds, for a periodic reminder.
    pub period_ms: Option<i64>,
    /// `scheduled`, or `rejected` when its command was refused as it fired.
    pub state: &'static str,
    /// Why its last firing was refused.
    pub last_error: Option<String>,
    /// When it last fired.
    pub last_fired_at: Option<DateTime<Utc>>,
}

impl From<&ReminderView> for ReminderJson {
    fn from(view: &ReminderView) -> Self {
        Self {
            name: view.name.clone(),
            reminder_id: view.reminder_id,
            due_at: view.due_at,
            period_ms: view.period.map(|period| period.num_milliseconds()),
            state: view.state.as_str(),
            last_error: view.last_error.clone(),
            last_fired_at: view.last_fired_at,
        }
    }
}

/// `GET /{type}/{id}/reminders`.
pub(super) async fn list_reminders(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (collection, id) = target(path)?;
    match collection {
        Collection::Accounts => reminders::<Account>(&app, &id).await,
        Collection::Customers => reminders::<Customer>(&app, &id).await,
    }
}

async fn reminders<A: LedgerAggregate>(app: &AppState, id: &str) -> Result<Response, ApiError> {
    let stream = StreamId::new(A::TYPE, id).map_err(ApiError::invalid_id)?;
    let version = app.executor.event_store().stream_version(&stream).await?;
    if version == 0 {
        return Err(ExecutorError::NotFound {
            aggregate_type: A::TYPE,
            id: id.to_owned(),
        }
        .into());
    }
    let views = match app.executor.reminders::<A>(id).await {
        Ok(views) => views,
        Err(ExecutorError::Store(StoreError::Unsupported(what))) => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "reminders_unsupported",
                format!("{what} are not kept by this store"),
            ));
        }
        Err(error) => return Err(error.into()),
    };
    let reminders: Vec<ReminderJson> = views.iter().map(ReminderJson::from).collect();
    Ok(Json(json!({
        "aggregate_type": A::COLLECTION,
        "id": id,
        "version": version,
        "reminders": reminders,
    }))
    .into_response())
}
