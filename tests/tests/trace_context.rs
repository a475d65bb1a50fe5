//! One command followed end to end: the caller's span and W3C trace context, the executor's
//! `execute` span, the actor's `command` and `append` spans and the PostgreSQL store's spans
//! form one tree, and the stored rows carry the caller's `traceparent`, correlation and
//! causation ids (read back with raw SQL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{EventMetadata, StoreLimits, TraceParent};
use aggregate_actors::{AggregateSettings, CommandOptions, Executor};
use integration_tests::wallet::{Wallet, WalletCommand};
use sqlx::Row;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

/// A span as recorded: its name, its parent's record number, its fields.
#[derive(Debug, Clone)]
struct SpanRecord {
    name: &'static str,
    parent: Option<usize>,
    fields: HashMap<String, String>,
}

#[derive(Default)]
struct Recorded {
    spans: Vec<SpanRecord>,
    /// Open spans' ids to their record numbers (ids are reused once a span closes).
    open: HashMap<Id, usize>,
}

/// Records every span of the process, with its parent.
struct Recorder(Arc<Mutex<Recorded>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent_id = if attrs.is_root() {
            None
        } else if let Some(parent) = attrs.parent() {
            Some(parent.clone())
        } else {
            ctx.current_span().id().cloned()
        };
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut recorded = self.0.lock().unwrap();
        let parent = parent_id.and_then(|p| recorded.open.get(&p).copied());
        recorded.spans.push(SpanRecord {
            name: attrs.metadata().name(),
            parent,
            fields,
        });
        let number = recorded.spans.len() - 1;
        recorded.open.insert(id.clone(), number);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut recorded = self.0.lock().unwrap();
        if let Some(&number) = recorded.open.get(id) {
            values.record(&mut Fields(&mut recorded.spans[number].fields));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        self.0.lock().unwrap().open.remove(&id);
    }
}

/// The process-wide recorder (actors and store tasks run on other threads than the test).
fn recorded() -> Arc<Mutex<Recorded>> {
    static RECORDED: OnceLock<Arc<Mutex<Recorded>>> = OnceLock::new();
    Arc::clone(RECORDED.get_or_init(|| {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let subscriber = tracing_subscriber::registry()
            .with(Recorder(Arc::clone(&recorded)))
            .with(tracing_subscriber::filter::LevelFilter::DEBUG);
        tracing::subscriber::set_global_default(subscriber).unwrap();
        recorded
    }))
}

/// The names of `number`'s ancestors, nearest first.
fn ancestors(spans: &[SpanRecord], number: usize) -> Vec<&'static str> {
    let mut names = Vec::new();
    let mut at = spans[number].parent;
    while let Some(parent) = at {
        names.push(spans[parent].name);
        at = spans[parent].parent;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_is_one_span_tree_from_the_request_to_the_store_and_its_rows_carry_the_trace() {
    let recorded = recorded();
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, snapshots) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let executor = Executor::builder(Arc::new(events), Arc::new(snapshots))
        .register::<Wallet>(AggregateSettings::new())
        .build()
        .unwrap();

    let trace: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    let (correlation, causation) = (Uuid::now_v7(), Uuid::now_v7());
    let id = format!("traced-{}", Uuid::now_v7());
    let request = tracing::info_span!("request", request = %id);
    let committed = executor
        .execute_with::<Wallet>(
            &id,
            WalletCommand::Deposit {
                command: Uuid::now_v7(),
                amount: 5,
            },
            CommandOptions::new().metadata(EventMetadata {
                correlation_id: Some(correlation),
                causation_id: Some(causation),
                trace_parent: Some(trace),
            }),
        )
        .instrument(request)
        .await
        .unwrap();
    executor.shutdown().await;

    // The spans: the store's append span descends from the caller's request span.
    let spans = recorded.lock().unwrap().spans.clone();
    let root = spans
        .iter()
        .position(|s| s.name == "request" && s.fields.get("request") == Some(&id))
        .expect("the request span");
    let execute = spans
        .iter()
        .position(|s| s.name == "execute" && s.parent == Some(root))
        .expect("execute is a child of the request");
    assert_eq!(
        spans[execute].fields.get("trace_id").map(String::as_str),
        Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{:?}",
        spans[execute]
    );
    assert_eq!(
        spans[execute].fields.get("command_id"),
        Some(&committed.command_id.to_string())
    );
    let in_tree = |n: usize| {
        let mut at = Some(n);
        while let Some(p) = at.filter(|&p| p != root) {
            at = spans[p].parent;
        }
        at == Some(root)
    };
    let store_append = (0..spans.len())
        .find(|&n| spans[n].name == "pg.append" && in_tree(n))
        .expect("a pg.append span under the request");
    assert_eq!(
        ancestors(&spans, store_append),
        vec!["append", "command", "execute", "request"],
        "store call → actor's append → actor's command → executor → caller"
    );
    assert_eq!(
        spans[store_append].fields.get("stream"),
        Some(&format!("wallet/{id}"))
    );

    // The rows, read with raw SQL.
    let rows = sqlx::query(
        "SELECT trace_parent, correlation_id, causation_id FROM events \
         WHERE aggregate_type = 'wallet' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: Vec<u8> = rows[0].get(0);
    assert_eq!(stored, trace.to_bytes().to_vec());
    assert_eq!(
        TraceParent::from_bytes(&stored).unwrap().to_string(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(rows[0].get::<Uuid, _>(1), correlation);
    assert_eq!(rows[0].get::<Uuid, _>(2), causation);
}
