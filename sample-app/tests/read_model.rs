//! The read model (per-customer totals kept by a projection) after the demo's workload equals
//! an independent fold of the stored events (each stream folded with the domain's own `apply`,
//! then summed per owner): in memory, and on PostgreSQL with two runners racing (exactly once),
//! a restart that resumes from the checkpoint and a rebuild. Then the `/read-model/…` routes,
//! served in process on either store.
//!
//! The PostgreSQL tests return early without `DATABASE_URL` (and fail under `CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use aggregate_actors::event_stores::{EventStore, RecordedEvent};
use aggregate_actors::{Aggregate, CommandError, Executor, upcast};
use event_stores::testing::fresh_database;
use futures::StreamExt;
use reqwest::StatusCode;
use sample_app::demo::workload::{self, Ids, Step};
use sample_app::domain::account::AccountStatus;
use sample_app::domain::{Account, AccountState, Customer, CustomerState, Dated};
use sample_app::http::{AppState, router};
use sample_app::ledger::Stores;
use sample_app::read_model::fold::{Fact, Totals};
use sample_app::read_model::{CustomerTotals, NAME, ReadModel};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Runs the demo's seeded workload (about `commands` commands) phase by phase, waking the read
/// model after each command. Panics on anything but a domain rejection.
async fn run_workload(executor: &Executor, ids: &Ids, commands: usize, read_model: &ReadModel) {
    fn settle<T, E: std::error::Error>(outcome: Result<T, CommandError<E>>) {
        match outcome {
            Ok(_) | Err(CommandError::Rejected(_)) => {}
            Err(error) => panic!("command failed: {error}"),
        }
    }
    let plan = workload::plan(ids, commands, 7).unwrap();
    for steps in [plan.setup, plan.links, plan.traffic] {
        let mut outcomes = futures::stream::iter(steps)
            .map(|planned| async move {
                match planned.step {
                    Step::Account { index, command } => settle(
                        executor
                            .execute::<Account>(&ids.account(index), Dated::at(command, planned.at))
                            .await,
                    ),
                    Step::Customer { index, command } => settle(
                        executor
                            .execute::<Customer>(
                                &ids.customer(index),
                                Dated::at(command, planned.at),
                            )
                            .await,
                    ),
                }
                read_model.wake();
            })
            .buffer_unordered(8);
        while outcomes.next().await.is_some() {}
    }
}

/// Every stored event, in store order.
async fn stored_events(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    loop {
        let after = events.last().map_or(0, |e| e.position);
        let page = store.read_all(after, 1_000).await.unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// The read model computed another way: each stream folded into its aggregate's state with
/// the domain's `apply`, then each account's figures added to its owner's row.
fn independent_fold(events: &[RecordedEvent]) -> BTreeMap<String, CustomerTotals> {
    let mut accounts: BTreeMap<String, AccountState> = BTreeMap::new();
    let mut customers: BTreeMap<String, CustomerState> = BTreeMap::new();
    for event in events {
        let id = event.stream.aggregate_id().to_owned();
        match event.stream.aggregate_type() {
            "account" => Account::apply(
                accounts.entry(id).or_default(),
                &upcast::read::<Account>(event).unwrap(),
            ),
            "customer" => Customer::apply(
                customers.entry(id).or_default(),
                &upcast::read::<Customer>(event).unwrap(),
            ),
            other => panic!("unexpected aggregate type {other}"),
        }
    }
    let mut rows: BTreeMap<String, CustomerTotals> = BTreeMap::new();
    fn row<'a>(rows: &'a mut BTreeMap<String, CustomerTotals>, id: &str) -> &'a mut CustomerTotals {
        rows.entry(id.to_owned()).or_insert_with(|| CustomerTotals {
            customer_id: id.to_owned(),
            ..CustomerTotals::default()
        })
    }
    for (id, state) in &customers {
        let row = row(&mut rows, id);
        row.name = state.registered.then(|| state.name.clone());
        row.linked_accounts = state.accounts.len() as u64;
    }
    for state in accounts.values() {
        let row = row(&mut rows, &state.owner);
        row.accounts += 1;
        row.frozen_accounts += u64::from(state.status == AccountStatus::Frozen);
        row.closed_accounts += u64::from(state.status == AccountStatus::Closed);
        row.balance_cents += state.balance_cents;
        row.deposits += state.counts.deposits;
        row.deposited_cents += state.total_credited_cents;
        row.withdrawals += state.counts.withdrawals;
        row.withdrawn_cents += state.total_debited_cents;
    }
    rows
}

/// Every row of the read model, paging through it.
async fn all_rows(read_model: &ReadModel) -> BTreeMap<String, CustomerTotals> {
    let mut rows: BTreeMap<String, CustomerTotals> = BTreeMap::new();
    loop {
        let after = rows.keys().next_back().cloned();
        let page = read_model.customers("", after.as_deref(), 7).await.unwrap();
        if page.is_empty() {
            return rows;
        }
        rows.extend(page.into_iter().map(|row| (row.customer_id.clone(), row)));
    }
}

/// Waits for `read_model` to catch up, then checks it against the independent fold of
/// `events`; returns the fold.
async fn assert_matches_the_events(
    read_model: &ReadModel,
    last: u64,
    events: &[RecordedEvent],
    ids: &Ids,
) -> BTreeMap<String, CustomerTotals> {
    assert!(
        read_model.wait_for(last, WAIT).await,
        "{:?}",
        read_model.stats()
    );
    let expected = independent_fold(events);
    let rows = all_rows(read_model).await;
    assert_eq!(rows, expected);
    // The figures are real ones, not a fold of nothing.
    assert_eq!(rows.len(), ids.customers);
    let sum = |f: fn(&CustomerTotals) -> u64| rows.values().map(f).sum::<u64>();
    assert_eq!(sum(|r| r.accounts), ids.accounts as u64);
    assert!(sum(|r| r.deposits) > 100, "{rows:?}");
    assert!(sum(|r| r.withdrawals) > 50, "{rows:?}");
    assert!(sum(|r| r.linked_accounts) >= ids.accounts as u64);
    assert_eq!(
        sum(|r| r.balance_cents),
        sum(|r| r.deposited_cents) - sum(|r| r.withdrawn_cents)
    );
    assert!(rows.values().all(|r| r.name.is_some()));
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_the_read_model_equals_an_independent_fold_and_a_rebuild_gives_it_again() {
    let stores = Stores::in_memory();
    let executor = stores.executor().unwrap();
    let read_model = ReadModel::start(&stores).await.unwrap();
    let ids = Ids::new("mem", 40);
    run_workload(&executor, &ids, 3_000, &read_model).await;
    let events = stored_events(&*stores.events).await;
    let last = read_model.last_position().await.unwrap();
    assert_eq!(last, events.last().unwrap().position);
    assert_matches_the_events(&read_model, last, &events, &ids).await;
    let stats = read_model.stats();
    assert_eq!(stats.name, NAME);
    assert_eq!(stats.position, last);
    assert_eq!(stats.events_handled, events.len() as u64);

    read_model.rebuild().await.unwrap();
    assert_matches_the_events(&read_model, last, &events, &ids).await;
    executor.shutdown().await;
}

#[tokio::test]
async fn folding_a_batch_again_changes_nothing() {
    let stores = Stores::in_memory();
    let executor = stores.executor().unwrap();
    let read_model = ReadModel::start(&stores).await.unwrap();
    run_workload(&executor, &Ids::new("twice", 10), 600, &read_model).await;
    executor.shutdown().await;
    let events = stored_events(&*stores.events).await;
    let facts = Fact::decode_all(&events).unwrap();
    let mut once = Totals::default();
    facts.iter().for_each(|fact| once.apply(fact));
    // At least once: every batch may come again after the next one started.
    let mut again = Totals::default();
    for (n, chunk) in facts.chunks(37).enumerate() {
        chunk.iter().for_each(|fact| again.apply(fact));
        if n > 0 {
            facts[(n - 1) * 37..((n + 1) * 37).min(facts.len())]
                .iter()
                .for_each(|fact| again.apply(fact));
        }
    }
    assert_eq!(again, once);
    let rows: BTreeMap<_, _> = once
        .customers
        .into_iter()
        .map(|(id, entry)| (id, entry.totals))
        .collect();
    assert_eq!(rows, independent_fold(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_read_model_equals_an_independent_fold_despite_a_rival_runner() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let stores = Stores::postgres(db.url(), 8).await.unwrap();
    let pool = stores.pool.clone().unwrap();
    let executor = stores.executor().unwrap();
    // Two runners of the same projection on the same tables, as two cluster nodes run it.
    let first = ReadModel::start(&stores).await.unwrap();
    let rival = ReadModel::start(&stores).await.unwrap();
    let ids = Ids::new("pg", 40);
    run_workload(&executor, &ids, 3_000, &first).await;
    executor.shutdown().await;

    let last = first.last_position().await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(first.wait_for(last, WAIT).await, "{:?}", first.stats());
    let events = stored_events(&*stores.events).await;
    assert_eq!(events.len() as i64, stored);
    let expected = assert_matches_the_events(&first, last, &events, &ids).await;
    assert!(rival.wait_for(last, WAIT).await, "{:?}", rival.stats());
    assert_eq!(all_rows(&rival).await, expected);
    // Each event was handled by exactly one of them.
    assert_eq!(
        first.stats().events_handled + rival.stats().events_handled,
        events.len() as u64
    );
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
            .bind(NAME)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(checkpoint as u64, last);
    first.stop().await;
    rival.stop().await;

    // A restart resumes from the checkpoint: nothing is handled again.
    let restarted = ReadModel::start(&stores).await.unwrap();
    assert!(restarted.wait_for(last, WAIT).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(restarted.stats().events_handled, 0);
    assert_eq!(all_rows(&restarted).await, expected);

    restarted.rebuild().await.unwrap();
    assert_matches_the_events(&restarted, last, &events, &ids).await;
    assert_eq!(restarted.stats().events_handled, events.len() as u64);
    restarted.stop().await;
}

/// The API on `stores`, served in this process; returns its base URL.
async fn serve(stores: &Stores) -> String {
    let app = router(AppState {
        schedules: None,
        executor: stores.executor().unwrap(),
        metrics: None,
        stores: stores.description.clone(),
        cluster: None,
        read_model: ReadModel::start(stores).await.unwrap(),
        scheduler: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn get(client: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let response = client.get(url).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn the_routes_serve_the_totals_and_the_projections_stats(stores: Stores) {
    let base = serve(&stores).await;
    let client = reqwest::Client::new();
    let address =
        json!({"line1": "1 Main St", "city": "Utrecht", "postal_code": "3511", "country": "NL"});
    for (path, command) in [
        (
            "customers/cus-1",
            json!({"type": "register", "name": "Ada", "email": "ada@example.com", "address": address}),
        ),
        (
            "customers/cus-2",
            json!({"type": "register", "name": "Bob", "email": "bob@example.com", "address": address}),
        ),
        ("accounts/acc-1", json!({"type": "open", "owner": "cus-1"})),
        ("accounts/acc-2", json!({"type": "open", "owner": "cus-1"})),
        (
            "accounts/acc-1",
            json!({"type": "deposit", "amount_cents": 5_000, "reference": "salary"}),
        ),
        (
            "accounts/acc-2",
            json!({"type": "deposit", "amount_cents": 700, "reference": "gift"}),
        ),
        (
            "accounts/acc-1",
            json!({"type": "withdraw", "amount_cents": 1_200, "reference": "rent"}),
        ),
        (
            "accounts/acc-2",
            json!({"type": "freeze", "reason": "fraud check"}),
        ),
        (
            "customers/cus-2",
            json!({"type": "link_account", "account_id": "acc-1"}),
        ),
    ] {
        let response = client
            .post(format!("{base}/{path}/commands"))
            .json(&command)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path} {command}");
    }
    let ada = json!({
        "customer_id": "cus-1", "name": "Ada", "linked_accounts": 0, "accounts": 2,
        "frozen_accounts": 1, "closed_accounts": 0, "balance_cents": 4_500, "deposits": 2,
        "deposited_cents": 5_700, "withdrawals": 1, "withdrawn_cents": 1_200,
    });
    let bob = json!({
        "customer_id": "cus-2", "name": "Bob", "linked_accounts": 1, "accounts": 0,
        "frozen_accounts": 0, "closed_accounts": 0, "balance_cents": 0, "deposits": 0,
        "deposited_cents": 0, "withdrawals": 0, "withdrawn_cents": 0,
    });
    // Eventually consistent: wait for the projection to take in the nine events, and for its
    // next read to find nothing new, which is when the lag goes back to zero (the batch that
    // caught up still reports how long its events waited).
    let deadline = tokio::time::Instant::now() + WAIT;
    let stats = loop {
        let (status, stats) = get(&client, format!("{base}/read-model/stats")).await;
        assert_eq!(status, StatusCode::OK);
        if stats["events_handled"] == 9 && stats["caught_up"] == true && stats["lag_ms"] == 0.0 {
            break stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stats["name"], NAME);
    assert_eq!(stats["lag_ms"], 0.0);
    assert!(stats["backend"].is_string(), "{stats}");

    let (status, body) = get(&client, format!("{base}/read-model/customers/cus-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["customer"], ada);
    assert_eq!(body["projection"]["events_handled"], 9);
    let (status, body) = get(&client, format!("{base}/read-model/customers")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["customers"], json!([ada, bob]));
    assert_eq!(body["next_after"], Value::Null);
    let (_, body) = get(&client, format!("{base}/read-model/customers?limit=1")).await;
    assert_eq!(
        (&body["customers"], &body["next_after"]),
        (&json!([ada]), &json!("cus-1"))
    );
    let (_, body) = get(
        &client,
        format!("{base}/read-model/customers?after=cus-1&limit=1"),
    )
    .await;
    assert_eq!(body["customers"], json!([bob]));
    let (_, body) = get(&client, format!("{base}/read-model/customers?prefix=cus-2")).await;
    assert_eq!(body["customers"], json!([bob]));

    for (path, status, kind) in [
        ("customers/nobody", StatusCode::NOT_FOUND, "not_found"),
        (
            "customers?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "customers?limit=1001",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "customers?colour=red",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        ("customers/a%01b", StatusCode::BAD_REQUEST, "invalid_id"),
        // No id holds a control character: bad input, not a store failure to retry.
        (
            "customers?prefix=cus%00",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "customers?after=%00",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ] {
        let (got, body) = get(&client, format!("{base}/read-model/{path}")).await;
        assert_eq!(
            (got, body["kind"].as_str()),
            (status, Some(kind)),
            "{path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_the_routes_serve_the_totals_and_the_projections_stats() {
    the_routes_serve_the_totals_and_the_projections_stats(Stores::in_memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_routes_serve_the_totals_and_the_projections_stats() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let stores = Stores::postgres(db.url(), 4).await.unwrap();
    the_routes_serve_the_totals_and_the_projections_stats(stores).await;
}
