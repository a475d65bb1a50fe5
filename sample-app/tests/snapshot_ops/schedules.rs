//! Snapshot schedules on the real `serve` binary (in memory): stored over HTTP, listed with
//! their next run, run by the service's scheduler (the scheduled aggregate gets its snapshot),
//! refused with 400 for a bad cron expression, and removed.

use std::time::{Duration, Instant};

use crate::common::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn get(server: &Server, path: &str) -> Value {
    let response = reqwest::get(server.url(path)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn put(server: &Server, name: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .put(server.url(&format!("/snapshot-schedules/{name}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_schedule_stored_over_http_runs_and_snapshots_its_aggregate() {
    let server = Server::start(None, &[]).await;
    let opened = reqwest::Client::new()
        .post(server.url("/accounts/acc-s/commands"))
        .json(&json!({"type": "open", "owner": "cus-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::OK);

    let (status, stored) = put(
        &server,
        "acc-s-every-second",
        json!({"aggregate_type": "accounts", "id": "acc-s", "cron": "* * * * * *"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["runs"], 0);
    assert!(stored["next_run_at"].as_str().is_some(), "{stored}");

    let waited = Instant::now();
    let listed = loop {
        let listed = get(&server, "/snapshot-schedules").await;
        if listed["schedules"][0]["runs"].as_u64() >= Some(1)
            && !listed["schedules"][0]["last_outcome"].is_null()
        {
            break listed;
        }
        assert!(waited.elapsed() < Duration::from_secs(10), "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let schedule = &listed["schedules"][0];
    assert_eq!(schedule["name"], "acc-s-every-second");
    assert_eq!(schedule["id"], "acc-s");
    assert!(
        schedule["last_outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("snapshotted 1")),
        "{schedule}"
    );
    let snapshots = get(&server, "/accounts/acc-s/snapshots").await;
    assert!(
        !snapshots["snapshots"].as_array().unwrap().is_empty(),
        "{snapshots}"
    );
    assert_eq!(snapshots["snapshots"][0]["valid"], true, "{snapshots}");
    assert_eq!(snapshots["archived"], json!([]), "no archive configured");
    // Today's snapshot figures of the type: this process's at once, the store's within about
    // a second of the write.
    let waited = Instant::now();
    loop {
        let stats = get(&server, "/stats").await;
        let accounts = stats["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["aggregate_type"] == "account")
            .unwrap()
            .clone();
        let own = &accounts["snapshots"]["days_this_process"][0];
        assert!(own["created"].as_u64() >= Some(1), "{accounts}");
        assert!(own["mean_creation_ms"].as_f64().is_some(), "{accounts}");
        if accounts["snapshots"]["days"][0]["created"].as_u64() >= Some(1) {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(5), "{accounts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Bad input of every kind is 400 invalid_schedule, never a retryable store failure: a cron
    // that does not parse, a name or an id longer than a schedule may have, a cron too long.
    let long_cron = format!("0 0 3 * * * {}", "2030,".repeat(60) + "2031");
    for (what, name, body) in [
        (
            "bad cron",
            "bad".to_owned(),
            json!({"aggregate_type": "accounts", "cron": "every day"}),
        ),
        (
            "long name",
            "n".repeat(201),
            json!({"aggregate_type": "accounts", "cron": "0 0 3 * * *"}),
        ),
        (
            "long id",
            "bad-id".to_owned(),
            json!({"aggregate_type": "accounts", "id": "i".repeat(250), "cron": "0 0 3 * * *"}),
        ),
        (
            "long cron",
            "bad-cron".to_owned(),
            json!({"aggregate_type": "accounts", "cron": long_cron}),
        ),
    ] {
        let (status, body) = put(&server, &name, body).await;
        assert_eq!(
            (status, body["kind"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_schedule")),
            "{what}: {body}"
        );
    }

    let client = reqwest::Client::new();
    let url = server.url("/snapshot-schedules/acc-s-every-second");
    assert_eq!(
        client.delete(&url).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        client.delete(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert!(server.terminate().await.success());
}
