//! The real `serve` binary on a fresh PostgreSQL database, driven over HTTP.
//!
//! Skipped (returns early) when `DATABASE_URL` is unset, except under `CI=true`, where
//! `fresh_database` panics instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use aggregate_actors::CommandId;
use aggregate_actors::event_stores::{EventStore, PgEventStore, StreamId};
use chrono::Utc;
use common::Server;
use event_stores::testing::{TestDatabase, fresh_database};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    send(client.post(url).json(&body)).await
}

async fn get(client: &reqwest::Client, url: String) -> (StatusCode, Value) {
    send(client.get(url)).await
}

async fn event_store(db: &TestDatabase) -> PgEventStore {
    PgEventStore::connect(&db.config()).await.unwrap()
}

/// Rows in the `events` table, counted directly: `read_all` only shows events below the
/// oldest transaction still open anywhere on the server, so it can lag behind a commit.
async fn total_events(store: &PgEventStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Rows in the `events` table stored by the command `command_id`.
async fn events_of_command(store: &PgEventStore, command_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE command_id = $1")
        .bind(command_id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// A command POST with an `Idempotency-Key`; also returns the `Idempotent-Replayed` header.
async fn post_with_key(
    client: &reqwest::Client,
    url: String,
    key: &str,
    body: Value,
) -> (StatusCode, Option<String>, Value) {
    let response = client
        .post(url)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, replayed, body)
}

fn command_uuid(reply: &Value) -> Uuid {
    reply["command_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no command_id in {reply}"))
        .parse()
        .unwrap()
}

async fn version_of(store: &PgEventStore, aggregate_type: &str, id: &str) -> u64 {
    store
        .stream_version(&StreamId::new(aggregate_type, id).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_service_runs_commands_travels_in_time_takes_snapshots_and_survives_a_restart() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let client = reqwest::Client::new();

    let (status, health) = get(&client, server.url("/health")).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "ok");

    // An account with 130 events: open, then 129 deposits of n × 1.00.
    let commands = server.url("/accounts/acc-1/commands");
    let (status, opened) = post(
        &client,
        commands.clone(),
        json!({"type": "open", "owner": "cus-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{opened}");
    assert_eq!(opened["version"], 1);
    assert_eq!(opened["events"][0]["type"], "Opened");
    assert_eq!(opened["events"][0]["data"]["owner"], "cus-1");
    assert_eq!(opened["duplicate"], false, "{opened}");
    assert!(opened["command_id"].as_str().is_some(), "{opened}");
    let mut midpoint = None;
    for n in 1..=129u64 {
        let (status, body) = post(
            &client,
            commands.clone(),
            json!({"type": "deposit", "amount_cents": n * 100, "reference": format!("dep {n}")}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["version"], n + 1);
        if n == 60 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            midpoint = Some(Utc::now());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let balance_after = |deposits: u64| (1..=deposits).sum::<u64>() * 100;

    let (status, current) = get(&client, server.url("/accounts/acc-1")).await;
    assert_eq!(status, StatusCode::OK, "{current}");
    assert_eq!(current["version"], 130);
    assert_eq!(current["state"]["balance_cents"], balance_after(129));
    assert_eq!(current["state"]["recent"].as_array().unwrap().len(), 50);

    // The strategy (every 100 events) snapshots at version 100, in the background.
    let snapshot_versions = |body: &Value| -> Vec<u64> {
        body["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["version"].as_u64().unwrap())
            .collect()
    };
    let mut waited = 0;
    loop {
        let (status, body) = get(&client, server.url("/accounts/acc-1/snapshots")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if snapshot_versions(&body).contains(&100) {
            break;
        }
        waited += 1;
        assert!(waited < 100, "no snapshot at version 100: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Time travel by version: before any snapshot, a full replay…
    let (status, early) = get(&client, server.url("/accounts/acc-1/at?version=50")).await;
    assert_eq!(status, StatusCode::OK, "{early}");
    assert_eq!(early["version"], 50);
    assert_eq!(early["from_snapshot"], Value::Null);
    assert_eq!(early["events_replayed"], 50);
    assert_eq!(early["state"]["balance_cents"], balance_after(49));
    assert!(early["reached_at"].is_string());
    assert!(early["elapsed_ms"].is_number());
    // …after one, the snapshot and only the events since.
    let (status, later) = get(&client, server.url("/accounts/acc-1/at?version=120")).await;
    assert_eq!(status, StatusCode::OK, "{later}");
    assert_eq!(later["from_snapshot"]["version"], 100);
    assert_eq!(later["events_replayed"], 20);
    assert_eq!(later["state"]["balance_cents"], balance_after(119));
    // By time: everything recorded up to the midpoint, i.e. open + 60 deposits.
    let time = midpoint
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (status, then) = get(
        &client,
        server.url(&format!("/accounts/acc-1/at?time={time}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(then["version"], 61, "{then}");
    assert_eq!(then["state"]["balance_cents"], balance_after(60));

    // A snapshot on demand, then the list: every snapshot verified.
    let (status, taken) = send(client.post(server.url("/accounts/acc-1/snapshots"))).await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert_eq!(taken["version"], 130);
    let (status, list) = get(&client, server.url("/accounts/acc-1/snapshots")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let versions = snapshot_versions(&list);
    assert_eq!(versions.first(), Some(&130), "newest first: {list}");
    assert!(versions.contains(&100));
    for snapshot in list["snapshots"].as_array().unwrap() {
        assert_eq!(snapshot["integrity"], "ok", "{snapshot}");
        assert_eq!(snapshot["valid"], true);
        assert_eq!(snapshot["last_event_matches"], true);
        assert!(snapshot["stored_size"].as_u64().unwrap() > 0);
        assert!(snapshot["uncompressed_size"].as_u64().unwrap() >= 1);
        assert!(snapshot["compression"] == "none" || snapshot["compression"] == "zstd");
        assert!(snapshot["taken_at"].is_string());
    }

    // A customer.
    let customer = server.url("/customers/cus-1/commands");
    for (body, version) in [
        (
            json!({"type": "register", "name": "Ada", "email": "ada@example.com",
                   "address": {"line1": "1 Main St", "city": "Utrecht", "postal_code": "3511", "country": "NL"}}),
            1,
        ),
        (json!({"type": "link_account", "account_id": "acc-1"}), 2),
        (json!({"type": "verify"}), 3),
    ] {
        let (status, reply) = post(&client, customer.clone(), body).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["version"], version);
    }
    let (status, ada) = get(&client, server.url("/customers/cus-1")).await;
    assert_eq!(status, StatusCode::OK, "{ada}");
    assert_eq!(ada["state"]["accounts"], json!(["acc-1"]));
    assert!(ada["state"]["verified_at"].is_string());

    // The framework's metrics reach Prometheus.
    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let metrics = response.text().await.unwrap();
    assert!(metrics.contains("aggregate_commands_total"), "{metrics}");
    assert!(
        metrics.contains(r#"aggregate_commands_total{aggregate="account",outcome="ok"} 130"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("actor_runtime_activations_total"),
        "{metrics}"
    );

    // A graceful stop, a new process on the same database: the same states.
    let status = server.terminate().await;
    assert!(status.success(), "serve exited with {status}");
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let (status, again) = get(&client, server.url("/accounts/acc-1")).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["version"], current["version"]);
    assert_eq!(again["state"], current["state"]);
    assert_eq!(again["activation"]["snapshot_version"], 130, "{again}");
    assert_eq!(again["activation"]["events_replayed"], 0);
    let (status, ada_again) = get(&client, server.url("/customers/cus-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ada_again["state"], ada["state"]);
    let (status, more) = post(
        &client,
        server.url("/accounts/acc-1/commands"),
        json!({"type": "withdraw", "amount_cents": 100, "reference": "after restart"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{more}");
    assert_eq!(more["version"], 131);
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn every_bad_input_gets_its_documented_error_and_stores_nothing() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let client = reqwest::Client::new();
    let store = event_store(&db).await;
    let commands = server.url("/accounts/acc-1/commands");
    post(
        &client,
        commands.clone(),
        json!({"type": "open", "owner": "o"}),
    )
    .await;
    let (status, _) = post(
        &client,
        commands.clone(),
        json!({"type": "deposit", "amount_cents": 1_000, "reference": "r"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(total_events(&store).await, 2);

    let long_id = "x".repeat(300);
    let huge_body = format!(
        r#"{{"type":"deposit","amount_cents":1,"reference":"{}"}}"#,
        "r".repeat(70 * 1024)
    );
    // (what, method, path, raw body, status, kind)
    let cases: Vec<(&str, &str, String, String, StatusCode, &str)> = vec![
        ("malformed JSON", "POST", "/accounts/acc-1/commands".into(), r#"{"type": "deposit", "#.into(), StatusCode::BAD_REQUEST, "malformed_json"),
        ("empty body", "POST", "/accounts/acc-1/commands".into(), String::new(), StatusCode::BAD_REQUEST, "malformed_json"),
        ("unknown command type", "POST", "/accounts/acc-1/commands".into(), r#"{"type":"teleport"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_command"),
        ("unknown field", "POST", "/accounts/acc-1/commands".into(), r#"{"type":"deposit","amount_cents":5,"reference":"r","fee":1}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_command"),
        ("zero amount", "POST", "/accounts/acc-1/commands".into(), r#"{"type":"deposit","amount_cents":0,"reference":"r"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_command"),
        ("negative amount", "POST", "/accounts/acc-1/commands".into(), r#"{"type":"withdraw","amount_cents":-100,"reference":"r"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_command"),
        ("amount above the limit", "POST", "/accounts/acc-1/commands".into(), r#"{"type":"deposit","amount_cents":100000000000,"reference":"r"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_command"),
        ("fractional amount", "POST", "/accounts/acc-1/commands".into(), r#"{"type":"deposit","amount_cents":1.5,"reference":"r"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_command"),
        ("bad e-mail", "POST", "/customers/cus-1/commands".into(), r#"{"type":"register","name":"A","email":"nope","address":{"line1":"x","city":"y","postal_code":"1","country":"NL"}}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_command"),
        ("unknown aggregate type", "POST", "/widgets/w-1/commands".into(), r#"{"type":"open","owner":"o"}"#.into(), StatusCode::NOT_FOUND, "unknown_aggregate_type"),
        ("empty id", "POST", "/accounts//commands".into(), r#"{"type":"open","owner":"o"}"#.into(), StatusCode::BAD_REQUEST, "invalid_id"),
        ("id over 256 bytes", "POST", format!("/accounts/{long_id}/commands"), r#"{"type":"open","owner":"o"}"#.into(), StatusCode::BAD_REQUEST, "invalid_id"),
        ("oversized body", "POST", "/accounts/acc-1/commands".into(), huge_body, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("overdraft", "POST", "/accounts/acc-1/commands".into(), r#"{"type":"withdraw","amount_cents":1001,"reference":"r"}"#.into(), StatusCode::CONFLICT, "rejected"),
        ("opening twice", "POST", "/accounts/acc-1/commands".into(), r#"{"type":"open","owner":"o"}"#.into(), StatusCode::CONFLICT, "rejected"),
        ("deposit before opening", "POST", "/accounts/acc-new/commands".into(), r#"{"type":"deposit","amount_cents":5,"reference":"r"}"#.into(), StatusCode::CONFLICT, "rejected"),
        ("unknown id", "GET", "/accounts/acc-nobody".into(), String::new(), StatusCode::NOT_FOUND, "not_found"),
        ("unknown id's snapshots", "GET", "/accounts/acc-nobody/snapshots".into(), String::new(), StatusCode::NOT_FOUND, "not_found"),
        ("snapshot of an unknown id", "POST", "/accounts/acc-nobody/snapshots".into(), String::new(), StatusCode::NOT_FOUND, "not_found"),
        ("unknown id in the past", "GET", "/accounts/acc-nobody/at?version=1".into(), String::new(), StatusCode::NOT_FOUND, "not_found"),
        ("a version not reached", "GET", "/accounts/acc-1/at?version=99".into(), String::new(), StatusCode::NOT_FOUND, "version_not_reached"),
        ("neither version nor time", "GET", "/accounts/acc-1/at".into(), String::new(), StatusCode::BAD_REQUEST, "invalid_query"),
        ("a time that is not RFC 3339", "GET", "/accounts/acc-1/at?time=yesterday".into(), String::new(), StatusCode::BAD_REQUEST, "invalid_query"),
        ("unknown type's state", "GET", "/widgets/w-1".into(), String::new(), StatusCode::NOT_FOUND, "unknown_aggregate_type"),
        ("wrong method", "DELETE", "/accounts/acc-1".into(), String::new(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (what, method, path, body, status, kind) in cases {
        let request = match method {
            "POST" => client
                .post(server.url(&path))
                .header("content-type", "application/json")
                .body(body),
            "GET" => client.get(server.url(&path)),
            _ => client.delete(server.url(&path)),
        };
        let (got, reply) = send(request).await;
        assert_eq!(got, status, "{what}: {reply}");
        assert_eq!(reply["kind"], kind, "{what}: {reply}");
        assert_eq!(reply["stored"], false, "{what}: {reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {reply}"
        );
        assert_eq!(total_events(&store).await, 2, "{what} stored something");
    }
    // The rejection names the rule it broke.
    let (_, overdraft) = post(
        &client,
        commands.clone(),
        json!({"type": "withdraw", "amount_cents": 1_001, "reference": "r"}),
    )
    .await;
    assert_eq!(overdraft["rule"], "insufficient_funds");
    assert_eq!(version_of(&store, "account", "acc-1").await, 2);
    assert_eq!(version_of(&store, "account", "acc-new").await, 0);
    assert_eq!(version_of(&store, "customer", "cus-1").await, 0);
    let (_, state) = get(&client, server.url("/accounts/acc-1")).await;
    assert_eq!(state["version"], 2);
    assert_eq!(state["state"]["balance_cents"], 1_000);
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn the_same_idempotency_key_sent_twice_applies_the_deposit_once_and_replays_its_outcome() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let client = reqwest::Client::new();
    let store = event_store(&db).await;
    let commands = server.url("/accounts/acc-1/commands");
    let (status, _) = post(
        &client,
        commands.clone(),
        json!({"type": "open", "owner": "o"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let deposit = json!({"type": "deposit", "amount_cents": 2_500, "reference": "salary"});
    let (status, replayed, first) =
        post_with_key(&client, commands.clone(), "pay-1", deposit.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["duplicate"], false, "{first}");
    assert_eq!(replayed, None, "a first application is not a replay");
    assert_eq!(first["version"], 2);
    // The documented mapping: the key scoped to the aggregate.
    let command_id = command_uuid(&first);
    assert_eq!(
        command_id,
        CommandId::from_key("accounts\u{1f}acc-1\u{1f}pay-1").as_uuid()
    );

    let (status, replayed, second) =
        post_with_key(&client, commands.clone(), "pay-1", deposit.clone()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["duplicate"], true, "{second}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(second["version"], first["version"]);
    assert_eq!(second["events"], first["events"]);
    assert_eq!(command_uuid(&second), command_id);
    assert_eq!(second["correlation_id"], first["correlation_id"]);

    // One application: the deposit's one event, the balance credited once.
    assert_eq!(events_of_command(&store, command_id).await, 1);
    assert_eq!(total_events(&store).await, 2);
    assert_eq!(version_of(&store, "account", "acc-1").await, 2);
    let (_, state) = get(&client, server.url("/accounts/acc-1")).await;
    assert_eq!(state["state"]["balance_cents"], 2_500, "{state}");

    // Still a duplicate in a new process, whose actor starts from the passivation snapshot.
    assert!(server.terminate().await.success());
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let (status, replayed, third) = post_with_key(
        &client,
        server.url("/accounts/acc-1/commands"),
        "pay-1",
        deposit,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_eq!(third["duplicate"], true, "{third}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(third["version"], 2);
    assert_eq!(events_of_command(&store, command_id).await, 1);
    assert_eq!(total_events(&store).await, 2);
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn the_same_idempotency_key_on_two_accounts_names_two_commands_each_stored_once() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let client = reqwest::Client::new();
    let store = event_store(&db).await;
    let deposit = json!({"type": "deposit", "amount_cents": 700, "reference": "r"});
    let mut ids = Vec::new();
    for account in ["acc-1", "acc-2"] {
        let commands = server.url(&format!("/accounts/{account}/commands"));
        let (status, _) = post(
            &client,
            commands.clone(),
            json!({"type": "open", "owner": "o"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, replayed, reply) =
            post_with_key(&client, commands, "same-key", deposit.clone()).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["duplicate"], false, "{account}: {reply}");
        assert_eq!(replayed, None);
        assert_eq!(reply["version"], 2);
        ids.push(command_uuid(&reply));
    }
    assert_ne!(ids[0], ids[1], "one key, two aggregates: two command ids");
    for (account, id) in ["acc-1", "acc-2"].into_iter().zip(ids) {
        assert_eq!(events_of_command(&store, id).await, 1, "{account}");
        let (_, state) = get(&client, server.url(&format!("/accounts/{account}"))).await;
        assert_eq!(state["state"]["balance_cents"], 700, "{account}: {state}");
    }
    assert_eq!(total_events(&store).await, 4);
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn a_bad_idempotency_key_is_refused_with_400_and_stores_nothing() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let client = reqwest::Client::new();
    let store = event_store(&db).await;
    let commands = server.url("/accounts/acc-1/commands");
    let (status, _) = post(
        &client,
        commands.clone(),
        json!({"type": "open", "owner": "o"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(total_events(&store).await, 1);

    let deposit = r#"{"type":"deposit","amount_cents":100,"reference":"r"}"#;
    let too_long = "k".repeat(256);
    // (what, the header values sent)
    let cases: Vec<(&str, Vec<&[u8]>)> = vec![
        ("empty", vec![b""]),
        ("256 bytes", vec![too_long.as_bytes()]),
        ("not ASCII", vec!["café".as_bytes()]),
        ("a tab", vec![b"a\tb"]),
        ("sent twice", vec![b"k-1", b"k-2"]),
    ];
    for (what, values) in cases {
        let mut request = client
            .post(commands.clone())
            .header("content-type", "application/json")
            .body(deposit);
        for value in values {
            request = request.header(
                "Idempotency-Key",
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let (status, reply) = send(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {reply}");
        assert_eq!(reply["kind"], "invalid_idempotency_key", "{what}: {reply}");
        assert_eq!(reply["stored"], false, "{what}: {reply}");
        assert_eq!(total_events(&store).await, 1, "{what} stored something");
    }
    // The bounds are inclusive: a 255-byte key of printable ASCII, spaces included, is fine.
    let longest = format!("a b{}", "k".repeat(252));
    let (status, _, reply) = post_with_key(
        &client,
        commands,
        &longest,
        serde_json::from_str(deposit).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(total_events(&store).await, 2);
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn a_key_whose_command_was_rejected_decides_again_when_sent_again() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let client = reqwest::Client::new();
    let store = event_store(&db).await;
    let commands = server.url("/accounts/acc-1/commands");
    let deposit = json!({"type": "deposit", "amount_cents": 300, "reference": "r"});

    let (status, _, refused) =
        post_with_key(&client, commands.clone(), "early", deposit.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["kind"], "rejected");
    assert_eq!(refused["stored"], false);
    assert_eq!(total_events(&store).await, 0);

    let (status, _) = post(
        &client,
        commands.clone(),
        json!({"type": "open", "owner": "o"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, replayed, applied) = post_with_key(&client, commands, "early", deposit).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["duplicate"], false, "{applied}");
    assert_eq!(replayed, None);
    assert_eq!(applied["version"], 2);
    assert_eq!(events_of_command(&store, command_uuid(&applied)).await, 1);
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn events_page_through_a_stream_and_stats_count_what_the_dashboard_shows() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let client = reqwest::Client::new();

    // A customer with six events (customers write no passivation snapshot, so a restart
    // replays them all).
    let commands = server.url("/customers/cus-1/commands");
    let (status, registered) = post(
        &client,
        commands.clone(),
        json!({"type": "register", "name": "Ada", "email": "ada@example.com",
               "address": {"line1": "1 Main St", "city": "Utrecht", "postal_code": "3511", "country": "NL"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{registered}");
    for n in 1..=5 {
        let body = json!({"type": "link_account", "account_id": format!("acc-{n}")});
        let (status, linked) = post(&client, commands.clone(), body).await;
        assert_eq!(status, StatusCode::OK, "{linked}");
    }

    // Pages of events, decoded, with where each sits in the store.
    let (status, first) = get(&client, server.url("/customers/cus-1/events?limit=4")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["version"], 6);
    let versions = |page: &Value| -> Vec<u64> {
        let events = page["events"].as_array().unwrap();
        events
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(versions(&first), [1, 2, 3, 4]);
    assert_eq!(first["next_after"], 4);
    let event = &first["events"][1];
    assert_eq!(event["event_type"], "AccountLinked", "{event}");
    assert_eq!(event["payload"]["account_id"], "acc-1", "{event}");
    assert!(event["correlation_id"].is_string(), "{event}");
    assert_eq!(
        first["events"][0]["correlation_id"],
        registered["correlation_id"]
    );
    assert!(event["position"].as_u64().unwrap() > first["events"][0]["position"].as_u64().unwrap());
    let (status, rest) = get(&client, server.url("/customers/cus-1/events?after=4")).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(versions(&rest), [5, 6]);
    assert_eq!(rest["next_after"], Value::Null);
    let (status, past_end) = get(&client, server.url("/customers/cus-1/events?after=9")).await;
    assert_eq!((status, versions(&past_end)), (StatusCode::OK, vec![]));
    for (query, kind) in [
        ("limit=0", "invalid_query"),
        ("limit=1001", "invalid_query"),
        ("from=1", "invalid_query"),
    ] {
        let (status, body) = get(
            &client,
            server.url(&format!("/customers/cus-1/events?{query}")),
        )
        .await;
        assert_eq!(
            (status, body["kind"].as_str()),
            (StatusCode::BAD_REQUEST, Some(kind)),
            "{query}: {body}"
        );
    }
    let (status, body) = get(&client, server.url("/customers/nobody/events")).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // After a restart, reading the customer activates it: one activation replaying six events,
    // counted in the replay-size histogram; the customer is the newest aggregate written.
    assert!(server.terminate().await.success());
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let (status, state) = get(&client, server.url("/customers/cus-1")).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["activation"]["events_replayed"], 6);
    let (status, stats) = get(&client, server.url("/stats")).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let customers = stats["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["collection"] == "customers")
        .unwrap_or_else(|| panic!("customers in {stats}"));
    assert_eq!(customers["live_actors"], 1, "{customers}");
    assert_eq!(customers["activations"], 1, "{customers}");
    assert_eq!(customers["replay"]["max"], 6, "{customers}");
    assert_eq!(customers["commands"]["total"], 0, "{customers}");
    let replay = &customers["histograms"]["replay_size"];
    let counted: Vec<(Value, Value)> = replay["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["count"] != 0)
        .map(|b| (b["le"].clone(), b["count"].clone()))
        .collect();
    assert_eq!(counted, [(json!(10.0), json!(1))], "{replay}");
    assert_eq!(customers["histograms"]["activation_time"]["count"], 1);
    // `recent` comes from the store's feed, which shows an event only once every older
    // transaction on the server has ended: other tests' transactions (in other databases of
    // the same server) can hold back any suffix of the customer's events a while, so wait for
    // the newest one, not for the first to show.
    let mut stats = stats;
    let started = std::time::Instant::now();
    while stats["recent"][0]["version"] != 6 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = get(&client, server.url("/stats")).await.1;
    }
    assert_eq!(stats["recent"][0]["collection"], "customers", "{stats}");
    assert_eq!(stats["recent"][0]["id"], "cus-1", "{stats}");
    assert_eq!(stats["recent"][0]["version"], 6, "{stats}");

    // The dashboard itself: a page from the binary.
    let page = client.get(server.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("/dashboard/app.js"));
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn a_requests_traceparent_is_answered_and_stored_with_its_events_and_a_missing_one_is_started()
 {
    let Some(db) = fresh_database().await else {
        return;
    };
    let server = Server::start(Some(db.url()), &["--max-connections", "4"]).await;
    let client = reqwest::Client::new();
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    let response = client
        .post(server.url("/accounts/acc-traced/commands"))
        .header("traceparent", caller)
        .json(&json!({"type": "open", "owner": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["traceparent"], caller);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["trace_id"], "0af7651916cd43dd8448eb211c80319c");

    // Without a header (or with a malformed one) the service starts a trace of its own.
    let mut started = Vec::new();
    for header in [None, Some("00-not-a-trace-01")] {
        let mut request = client
            .post(server.url("/accounts/acc-traced/commands"))
            .json(&json!({"type": "deposit", "amount_cents": 100, "reference": "traced"}));
        if let Some(header) = header {
            request = request.header("traceparent", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answered = response.headers()["traceparent"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(answered, caller);
        assert!(
            answered
                .parse::<aggregate_actors::event_stores::TraceParent>()
                .is_ok()
        );
        started.push(answered);
    }

    // The rows, with raw SQL: each event carries its request's traceparent.
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let stored: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT version, trace_parent FROM events \
         WHERE aggregate_type = 'account' AND aggregate_id = 'acc-traced' ORDER BY version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let shown: Vec<String> = stored
        .iter()
        .map(|(_, bytes)| {
            aggregate_actors::event_stores::TraceParent::from_bytes(bytes.as_deref().unwrap())
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        shown,
        [caller.to_owned(), started[0].clone(), started[1].clone()]
    );

    // And the events API shows them.
    let (status, events) = get(&client, server.url("/accounts/acc-traced/events")).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert_eq!(events["events"][0]["trace_parent"], caller);
    assert!(server.terminate().await.success());
}
