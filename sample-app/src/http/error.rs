//! Errors as the HTTP API returns them: a status and a JSON body
//! `{"error": "<for humans>", "kind": "<stable code>", "stored": false | "unknown", "retryable": bool, …}`.
//!
//! `stored` says whether the request may have stored anything: `false` means certainly nothing
//! (the request can be corrected or retried freely), `"unknown"` means it may have been carried
//! out (only ever for a command's `indeterminate` outcome, and a snapshot request that timed
//! out or, forwarded to its owner, lost its answer). `retryable` says whether the same request may succeed later unchanged.
//!
//! | status | kind | stored | when |
//! |---|---|---|---|
//! | 400 | `malformed_json` | false | the body is not JSON |
//! | 400 | `invalid_id` | false | the id is empty, longer than 256 bytes or has control characters |
//! | 400 | `invalid_idempotency_key` | false | the `Idempotency-Key` header is empty, longer than 255 bytes, repeated or not printable ASCII |
//! | 400 | `invalid_query` | false | `/at` without exactly one of `version` / `time`, or a bad time; `/read-model/customers` with an unknown parameter or a `limit` outside 1 to 1 000 |
//! | 404 | `unknown_aggregate_type` | false | the path names neither `accounts` nor `customers` |
//! | 404 | `not_found` | false | no such aggregate (it has no events), or no such route |
//! | 404 | `version_not_reached` | false | `/at?version=N` beyond the aggregate's version |
//! | 405 | `method_not_allowed` | false | a known route with another method |
//! | 409 | `rejected` | false | a domain rule refused the command (`rule` names it) |
//! | 409 | `conflict` | false | another writer kept winning the race for the aggregate; retryable |
//! | 413 | `payload_too_large` | false | the body exceeds 64 KiB |
//! | 422 | `invalid_command` | false | JSON that is not a valid command: unknown type, unknown or missing field, invalid amount or text |
//! | 500 | `internal` | false | a bug or a corrupt store |
//! | 502 | `owner_failed` | false | cluster mode: the node owning the aggregate failed the call for good |
//! | 503 | `overloaded`, `store_unavailable`, `shutting_down`, `actor_stopped`, `expired` | false | try again later (`Retry-After`) |
//! | 503 | `owner_unavailable`, `forward_lost` | false | cluster mode: no node served the aggregate in time (its shard is moving, or its owner died and its heartbeat has not expired yet), or a forwarded state read lost its answer; try again later (`Retry-After`) |
//! | 503 | `forward_lost` | `"unknown"` | cluster mode: a snapshot request reached the owner but its answer was lost; the snapshot may be written (`Retry-After`) |
//! | 503 | `indeterminate` | `"unknown"` | a command's outcome is unknown (the store connection broke after the write was sent, the actor was stopped mid-command): retry with the same `Idempotency-Key` (`Retry-After`) |
//! | 504 | `indeterminate` | `"unknown"` | a command got no answer in time ([`crate::ledger::CALL_TIMEOUT`]); it may still complete: retry with the same `Idempotency-Key` (`Retry-After`) |
//! | 504 | `timeout` | `"unknown"` | a snapshot request got no answer in time |
//!
//! An `indeterminate` body also carries `command_id` (the id the command was sent with),
//! `cause` (the kind of what happened: `timeout`, `abandoned`, `store_indeterminate`, …) and
//! `retry`: `"same_idempotency_key"` when the request had an `Idempotency-Key` (sending it
//! again is always safe: it answers with the original outcome if the first attempt was stored,
//! and applies the command otherwise), `"not_safe_without_idempotency_key"` when it had none (a
//! blind retry may apply the command twice: read the aggregate first, and send a key next time).
//!
//! Every 4xx stores nothing.

use aggregate_actors::event_stores::{InvalidInput, StoreError};
use aggregate_actors::{CommandId, ExecutorError, Indeterminate};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};

/// Whether a failed request may have stored anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Certainly nothing was stored: serialized as `false`.
    Nothing,
    /// It may have been stored: serialized as `"unknown"`.
    Unknown,
}

impl Serialize for Stored {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Stored::Nothing => serializer.serialize_bool(false),
            Stored::Unknown => serializer.serialize_str("unknown"),
        }
    }
}

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
    /// Whether anything may have been stored.
    pub stored: Stored,
    /// Whether the same request may succeed later unchanged.
    pub retryable: bool,
    /// For `indeterminate`: the command's id.
    pub command_id: Option<CommandId>,
    /// For `indeterminate`: the kind of what happened.
    pub cause: Option<&'static str>,
    /// For `indeterminate`: how to retry (see the module documentation).
    pub retry: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    kind: &'a str,
    stored: Stored,
    retryable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_id: Option<CommandId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<&'a str>,
}

impl ApiError {
    /// An error of `kind` with `status` that stored nothing and is not retryable.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            rule: None,
            stored: Stored::Nothing,
            retryable: false,
            command_id: None,
            cause: None,
            retry: None,
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

    /// 400 `invalid_idempotency_key`.
    pub fn invalid_idempotency_key(problem: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            format!("invalid Idempotency-Key: {problem}"),
        )
    }

    /// 409 `rejected`, naming the broken `rule`.
    pub fn rejected(rule: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            rule: Some(rule),
            ..Self::new(StatusCode::CONFLICT, "rejected", message.to_string())
        }
    }

    /// A command that stored nothing because of `error` (the framework's
    /// [`CommandError::NotStored`](aggregate_actors::CommandError::NotStored)): mapped as
    /// [`From<ExecutorError>`] does, but always `stored: false`.
    pub fn not_stored(error: ExecutorError) -> Self {
        Self {
            stored: Stored::Nothing,
            ..error.into()
        }
    }

    /// A snapshot request that failed because of `error`: mapped as [`From<ExecutorError>`]
    /// does, but `stored: "unknown"` when it reached the owner and no readable answer came
    /// back, since the owner may still write the snapshot.
    pub fn snapshot_failed(error: ExecutorError) -> Self {
        let may_be_written = error.answer_lost();
        let api: Self = error.into();
        if may_be_written {
            return Self {
                stored: Stored::Unknown,
                ..api
            };
        }
        api
    }

    /// 503 (504 when the cause is a timeout) `indeterminate`: the command may have been
    /// stored. `had_key` says whether the request carried an `Idempotency-Key`, i.e. whether
    /// the client can retry it safely.
    pub fn indeterminate(indeterminate: Indeterminate, had_key: bool) -> Self {
        let Indeterminate {
            command_id, cause, ..
        } = indeterminate;
        let status = if matches!(cause, ExecutorError::Timeout { .. }) {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let (_, cause_kind) = classify(&cause);
        let advice = if had_key {
            "retry with the same Idempotency-Key: it is applied exactly once"
        } else {
            "the request had no Idempotency-Key, so a retry may apply it twice: read the \
             aggregate first, and send an Idempotency-Key next time"
        };
        tracing::warn!(%cause, %command_id, "command outcome unknown");
        Self {
            stored: Stored::Unknown,
            retryable: true,
            command_id: Some(command_id),
            cause: Some(cause_kind),
            retry: Some(if had_key {
                "same_idempotency_key"
            } else {
                "not_safe_without_idempotency_key"
            }),
            ..Self::new(
                status,
                "indeterminate",
                format!("the command may or may not have been stored ({cause}); {advice}"),
            )
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

/// The status and kind of an executor error.
fn classify(error: &ExecutorError) -> (StatusCode, &'static str) {
    match error {
        ExecutorError::UnknownAggregateType(_) => (StatusCode::NOT_FOUND, "unknown_aggregate_type"),
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
        ExecutorError::VersionNotReached { .. } => (StatusCode::NOT_FOUND, "version_not_reached"),
        ExecutorError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
        ExecutorError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        ExecutorError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        ExecutorError::Expired { .. } => (StatusCode::SERVICE_UNAVAILABLE, "expired"),
        ExecutorError::Abandoned { .. } => (StatusCode::SERVICE_UNAVAILABLE, "abandoned"),
        ExecutorError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        // Cluster mode: no node served the aggregate before the deadline (its shard is
        // moving, or its owner died and the others wait for its heartbeat to expire).
        ExecutorError::NotLocal { .. } => (StatusCode::SERVICE_UNAVAILABLE, "owner_unavailable"),
        // Sent to the owner, but no readable answer came back.
        ExecutorError::Remote { .. } if error.answer_lost() => {
            (StatusCode::SERVICE_UNAVAILABLE, "forward_lost")
        }
        ExecutorError::Remote { kind, .. } => classify_remote(kind, error.is_retryable()),
        ExecutorError::ActorStopped { .. } => (StatusCode::SERVICE_UNAVAILABLE, "actor_stopped"),
        ExecutorError::Store(store) if store.is_indeterminate() => {
            (StatusCode::SERVICE_UNAVAILABLE, "store_indeterminate")
        }
        e if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The status and kind of a call forwarded to the aggregate's owner (cluster mode) that failed
/// there, or was not delivered: the owner's own failures keep their single-node kinds.
fn classify_remote(kind: &str, retryable: bool) -> (StatusCode, &'static str) {
    match kind {
        "conflict" => (StatusCode::CONFLICT, "conflict"),
        "overloaded" => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        "expired" => (StatusCode::SERVICE_UNAVAILABLE, "expired"),
        "shutting_down" => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        "invalid_input" => (StatusCode::BAD_REQUEST, "invalid_input"),
        "indeterminate" => (StatusCode::SERVICE_UNAVAILABLE, "owner_indeterminate"),
        _ if retryable => (StatusCode::SERVICE_UNAVAILABLE, "owner_unavailable"),
        _ => (StatusCode::BAD_GATEWAY, "owner_failed"),
    }
}

/// Whether an executor error outside a command's classification may have stored something:
/// a timeout or an abandoned call may still complete, an indeterminate store write may have
/// committed.
fn may_have_stored(error: &ExecutorError) -> bool {
    match error {
        ExecutorError::Timeout { .. } | ExecutorError::Abandoned { .. } => true,
        ExecutorError::Store(store) => store.is_indeterminate(),
        _ => false,
    }
}

impl From<ExecutorError> for ApiError {
    /// Maps an error of a call that is not a command (state, time travel, snapshots); for
    /// commands use [`ApiError::not_stored`] and [`ApiError::indeterminate`].
    fn from(error: ExecutorError) -> Self {
        let message = error.to_string();
        let (status, kind) = classify(&error);
        if status.is_server_error() {
            tracing::warn!(%error, kind, "request failed");
        }
        Self {
            stored: if may_have_stored(&error) {
                Stored::Unknown
            } else {
                Stored::Nothing
            },
            retryable: error.is_retryable(),
            ..Self::new(status, kind, message)
        }
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
            stored: self.stored,
            retryable: self.retryable,
            rule: self.rule,
            command_id: self.command_id,
            cause: self.cause,
            retry: self.retry,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.kind == "indeterminate" {
            // Every 503 here is transient, and an indeterminate outcome is best retried after
            // a pause: tell clients when to come back.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use aggregate_actors::{CommandId, ExecutorError, Indeterminate};
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use serde_json::{Value, json};

    use super::ApiError;
    use aggregate_actors::event_stores::StoreError;

    async fn render(error: ApiError) -> (StatusCode, Option<String>, Value) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, retry_after, serde_json::from_slice(&bytes).unwrap())
    }

    fn indeterminate(cause: ExecutorError) -> Indeterminate {
        Indeterminate {
            id: "acc-1".to_owned(),
            command_id: CommandId::from_key("k"),
            cause,
        }
    }

    #[tokio::test]
    async fn an_indeterminate_timeout_is_504_with_stored_unknown_the_command_id_and_retry_advice() {
        let cause = ExecutorError::Timeout {
            id: "acc-1".to_owned(),
            after: Duration::from_secs(10),
        };
        let (status, retry_after, body) =
            render(ApiError::indeterminate(indeterminate(cause), true)).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["kind"], "indeterminate");
        assert_eq!(body["stored"], "unknown");
        assert_eq!(body["retryable"], true);
        assert_eq!(body["retry"], "same_idempotency_key");
        assert_eq!(body["cause"], "timeout");
        assert_eq!(body["command_id"], json!(CommandId::from_key("k")));
    }

    #[tokio::test]
    async fn an_indeterminate_store_write_is_503_and_without_a_key_says_a_retry_is_not_safe() {
        let cause = ExecutorError::Store(StoreError::Indeterminate {
            message: "connection lost after the append was sent".to_owned(),
            source: None,
        });
        let (status, retry_after, body) =
            render(ApiError::indeterminate(indeterminate(cause), false)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["kind"], "indeterminate");
        assert_eq!(body["stored"], "unknown");
        assert_eq!(body["cause"], "store_indeterminate");
        assert_eq!(body["retry"], "not_safe_without_idempotency_key");
    }

    #[tokio::test]
    async fn an_expired_or_overloaded_command_is_503_stored_false_and_retryable() {
        for (error, kind) in [
            (
                ExecutorError::Expired {
                    id: "acc-1".to_owned(),
                    command_id: CommandId::new(),
                },
                "expired",
            ),
            (
                ExecutorError::Overloaded {
                    id: "acc-1".to_owned(),
                    capacity: 8,
                },
                "overloaded",
            ),
        ] {
            let (status, retry_after, body) = render(ApiError::not_stored(error)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(retry_after.as_deref(), Some("1"));
            assert_eq!(body["kind"], kind);
            assert_eq!(body["stored"], false);
            assert_eq!(body["retryable"], true);
            assert!(body.get("retry").is_none(), "{body}");
        }
    }

    #[tokio::test]
    async fn cluster_failures_keep_the_owners_kind_or_say_the_owner_is_unavailable() {
        let remote = |kind: &str, retryable: bool| ExecutorError::Remote {
            node: "127.0.0.1:7001".to_owned(),
            kind: kind.to_owned(),
            message: "m".to_owned(),
            retryable,
        };
        for (error, status, kind) in [
            (
                ExecutorError::NotLocal { id: "acc-1".into() },
                StatusCode::SERVICE_UNAVAILABLE,
                "owner_unavailable",
            ),
            (
                remote("unreachable", true),
                StatusCode::SERVICE_UNAVAILABLE,
                "owner_unavailable",
            ),
            (remote("conflict", true), StatusCode::CONFLICT, "conflict"),
            (
                remote("overloaded", true),
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
            ),
            (
                remote("lost", true),
                StatusCode::SERVICE_UNAVAILABLE,
                "forward_lost",
            ),
            (
                remote("failed", false),
                StatusCode::BAD_GATEWAY,
                "owner_failed",
            ),
        ] {
            let (got, _, body) = render(ApiError::not_stored(error)).await;
            assert_eq!((got, body["kind"].as_str()), (status, Some(kind)), "{body}");
            assert_eq!(body["stored"], false);
        }
        // A snapshot request whose answer was lost on the way back may still be written.
        for (kind, stored) in [("lost", json!("unknown")), ("unreachable", json!(false))] {
            let (_, _, body) = render(ApiError::snapshot_failed(remote(kind, true))).await;
            assert_eq!(body["stored"], stored, "{kind}: {body}");
        }
        let (status, _, body) = render(ApiError::indeterminate(
            indeterminate(remote("lost", true)),
            true,
        ))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["kind"], "indeterminate");
        assert_eq!(body["cause"], "forward_lost");
        assert_eq!(body["stored"], "unknown");
    }

    #[tokio::test]
    async fn a_conflict_is_409_stored_false_and_retryable() {
        let error = ExecutorError::Conflict {
            stream: aggregate_actors::event_stores::StreamId::new("account", "acc-1").unwrap(),
            retries: 3,
            expected: 1,
            actual: 2,
        };
        let (status, _, body) = render(ApiError::not_stored(error)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["kind"], "conflict");
        assert_eq!(body["stored"], false);
        assert_eq!(body["retryable"], true);
    }

    #[tokio::test]
    async fn an_abandoned_call_outside_a_command_says_stored_unknown() {
        let (status, _, body) = render(ApiError::from(ExecutorError::Abandoned {
            id: "acc-1".to_owned(),
        }))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["kind"], "abandoned");
        assert_eq!(body["stored"], "unknown");
    }
}
