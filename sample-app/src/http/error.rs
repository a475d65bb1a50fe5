//! Errors as the HTTP API returns them: a status and `{"error": "...", "kind": "..."}`.
//!
//! | status | kind | when |
//! |---|---|---|
//! | 400 | `malformed_json` | the body is not JSON |
//! | 400 | `invalid_id` | the id is empty, longer than 256 bytes or has control characters |
//! | 400 | `invalid_query` | `/at` without exactly one of `version` / `time`, or a bad time |
//! | 404 | `unknown_aggregate_type` | the path names neither `accounts` nor `customers` |
//! | 404 | `not_found` | no such aggregate (it has no events), or no such route |
//! | 404 | `version_not_reached` | `/at?version=N` beyond the aggregate's version |
//! | 405 | `method_not_allowed` | a known route with another method |
//! | 409 | `rejected` | a domain rule refused the command (`rule` names it) |
//! | 409 | `conflict` | another writer kept winning the race for the aggregate |
//! | 413 | `payload_too_large` | the body exceeds 64 KiB |
//! | 422 | `invalid_command` | JSON that is not a valid command: unknown type, unknown or missing field, invalid amount or text |
//! | 500 | `internal` | a bug or a corrupt store |
//! | 503 | `overloaded`, `store_unavailable`, `shutting_down` | try again later |
//! | 504 | `timeout` | no answer in time; the command may still complete |
//!
//! Every 4xx stores nothing.

use aggregate_actors::ExecutorError;
use aggregate_actors::event_stores::{InvalidInput, StoreError};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error reply.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable kind.
    pub kind: &'static str,
    /// For humans.
    pub message: String,
    /// For `rejected`: the domain rule that refused the command.
    pub rule: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
}

impl ApiError {
    /// An error of `kind` with `status`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            rule: None,
        }
    }

    /// 404 `unknown_aggregate_type`.
    pub fn unknown_type(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_aggregate_type",
            format!("unknown aggregate type {name:?}; this service hosts accounts and customers"),
        )
    }

    /// 400 `invalid_id`.
    pub fn invalid_id(problem: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("invalid id: {problem}"),
        )
    }

    /// 409 `rejected`, naming the broken `rule`.
    pub fn rejected(rule: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            rule: Some(rule),
            ..Self::new(StatusCode::CONFLICT, "rejected", message.to_string())
        }
    }

    /// Maps a JSON decoding error: a syntax error is 400 `malformed_json`, well-formed JSON
    /// that is not a valid command is 422 `invalid_command`.
    pub fn from_json(error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        match error.classify() {
            Category::Syntax | Category::Eof | Category::Io => Self::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {error}"),
            ),
            Category::Data => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_command",
                format!("not a valid command: {error}"),
            ),
        }
    }
}

impl From<ExecutorError> for ApiError {
    fn from(error: ExecutorError) -> Self {
        let message = error.to_string();
        let (status, kind) = match &error {
            ExecutorError::UnknownAggregateType(_) => {
                (StatusCode::NOT_FOUND, "unknown_aggregate_type")
            }
            ExecutorError::InvalidInput(input) => match input {
                InvalidInput::EmptyId { .. }
                | InvalidInput::IdTooLong { .. }
                | InvalidInput::IdHasControlCharacters { .. } => {
                    (StatusCode::BAD_REQUEST, "invalid_id")
                }
                InvalidInput::PayloadTooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
                }
                _ => (StatusCode::BAD_REQUEST, "invalid_input"),
            },
            ExecutorError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ExecutorError::VersionNotReached { .. } => {
                (StatusCode::NOT_FOUND, "version_not_reached")
            }
            ExecutorError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ExecutorError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ExecutorError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ExecutorError::ShuttingDown | ExecutorError::NotLocal { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
            }
            ExecutorError::ActorStopped { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "actor_stopped")
            }
            e if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::warn!(%error, kind, "request failed");
        }
        Self::new(status, kind, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ExecutorError::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.message,
            kind: self.kind,
            rule: self.rule,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 here is transient: tell clients when to come back.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
