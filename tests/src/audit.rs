//! Reading what the store holds and checking it against what was acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};

use aggregate_actors::event_stores::{EventStore, ReadQuery, StreamId, StreamPages};
use aggregate_actors::{Aggregate, Executor, codec};
use sqlx::postgres::PgPool;
use uuid::Uuid;

use crate::wallet::{Wallet, WalletEvent, fold};
use crate::worker::Ack;

/// One stored event of a wallet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its version in the stream.
    pub version: u64,
    /// Its event id.
    pub event_id: Uuid,
    /// The decoded event.
    pub event: WalletEvent,
}

/// The stream of wallet `id`.
pub fn wallet_stream(id: &str) -> StreamId {
    StreamId::new(Wallet::TYPE, id).unwrap_or_else(|e| panic!("bad wallet id {id:?}: {e}"))
}

/// Every event of wallet `id`, decoded, in version order. Fails unless the versions are exactly
/// 1, 2, 3 … with no gap and no duplicate.
pub async fn read_wallet(store: &dyn EventStore, id: &str) -> Result<Vec<StoredEvent>, String> {
    let stream = wallet_stream(id);
    let mut pages = StreamPages::new(store, &stream, ReadQuery::all().page_size(2_000));
    let mut events = Vec::new();
    let mut expected = 1;
    while let Some(page) = pages
        .next_page()
        .await
        .map_err(|e| format!("{id}: reading the stream: {e}"))?
    {
        for recorded in page {
            if recorded.version != expected {
                return Err(format!(
                    "{id}: version {} where {expected} was expected (gap or duplicate)",
                    recorded.version
                ));
            }
            expected += 1;
            let event = codec::decode::<WalletEvent>(&recorded.payload)
                .map_err(|e| format!("{id}: event {} does not decode: {e}", recorded.version))?;
            events.push(StoredEvent {
                version: recorded.version,
                event_id: recorded.event_id,
                event,
            });
        }
    }
    Ok(events)
}

/// The ids of every wallet stream in the database, read with SQL (so events written to an
/// unexpected stream are seen too).
pub async fn wallet_ids(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = $1 ORDER BY 1",
    )
    .bind(Wallet::TYPE)
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("listing wallet streams: {e}"))
}

/// Every wallet stream in the database, read and checked for contiguous versions.
pub async fn read_all_wallets(
    pool: &PgPool,
    store: &dyn EventStore,
) -> Result<BTreeMap<String, Vec<StoredEvent>>, String> {
    let mut streams = BTreeMap::new();
    for id in wallet_ids(pool).await {
        let events = read_wallet(store, &id).await?;
        streams.insert(id, events);
    }
    Ok(streams)
}

/// What an audit found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Streams read.
    pub streams: usize,
    /// Events stored.
    pub events: usize,
    /// Distinct commands found in the store.
    pub commands_stored: usize,
    /// Acknowledged commands found exactly once, whole, at the acknowledged version.
    pub acks_verified: usize,
}

/// Where one command's events sit.
struct CommandTrace {
    stream: String,
    versions: Vec<u64>,
    parts: Vec<(u32, u32)>,
    amount: i64,
}

/// Checks the stored streams against the acknowledgements:
///
/// - every command's events are in one stream, at consecutive versions, parts `0..parts` each
///   exactly once (a multi-event command is stored whole or not at all, and never twice);
/// - every acknowledged command is stored, in the acknowledged stream, ending at the
///   acknowledged version, with the acknowledged number of events and amount;
/// - no event id is stored twice;
/// - no balance ever went negative (withdrawals were decided on fresh state).
///
/// Returns every problem found, not just the first.
pub fn audit(
    acks: &[Ack],
    streams: &BTreeMap<String, Vec<StoredEvent>>,
) -> Result<AuditReport, Vec<String>> {
    let mut problems = Vec::new();
    let mut commands: HashMap<Uuid, CommandTrace> = HashMap::new();
    let mut event_ids = HashSet::new();
    let mut events = 0;
    for (id, stream) in streams {
        events += stream.len();
        for stored in stream {
            if !event_ids.insert(stored.event_id) {
                problems.push(format!("{id}: event id {} stored twice", stored.event_id));
            }
            let trace = commands
                .entry(stored.event.command())
                .or_insert_with(|| CommandTrace {
                    stream: id.clone(),
                    versions: Vec::new(),
                    parts: Vec::new(),
                    amount: 0,
                });
            if trace.stream != *id {
                problems.push(format!(
                    "command {} stored in two streams: {} and {id}",
                    stored.event.command(),
                    trace.stream
                ));
            }
            trace.versions.push(stored.version);
            trace.parts.push(stored.event.part());
            trace.amount += stored.event.amount();
        }
        let state = fold(stream.iter().map(|s| &s.event));
        if state.lowest < 0 {
            problems.push(format!(
                "{id}: the balance went down to {} (a withdrawal was decided on stale state)",
                state.lowest
            ));
        }
    }
    for (command, trace) in &commands {
        let parts = trace.parts.first().map_or(0, |&(_, parts)| parts);
        let mut seen: Vec<u32> = trace.parts.iter().map(|&(part, _)| part).collect();
        seen.sort_unstable();
        let whole =
            trace.parts.iter().all(|&(_, p)| p == parts) && seen == (0..parts).collect::<Vec<_>>();
        let consecutive = trace.versions.windows(2).all(|w| w[1] == w[0] + 1);
        if !whole || !consecutive {
            problems.push(format!(
                "{}: command {command} is stored partially or more than once: parts {:?} at versions {:?}",
                trace.stream, trace.parts, trace.versions
            ));
        }
    }
    let mut acked = HashSet::new();
    let mut verified = 0;
    for ack in acks {
        if !acked.insert(ack.command) {
            problems.push(format!("command {} acknowledged twice", ack.command));
            continue;
        }
        let Some(trace) = commands.get(&ack.command) else {
            problems.push(format!(
                "{}: acknowledged command {} (version {}) is not stored",
                ack.id, ack.command, ack.version
            ));
            continue;
        };
        let last = trace.versions.last().copied().unwrap_or(0);
        if trace.stream != ack.id
            || last != ack.version
            || trace.versions.len() != ack.events as usize
            || trace.amount != ack.amount
        {
            problems.push(format!(
                "acknowledged {ack:?} but stored in {} at versions {:?} with amount {}",
                trace.stream, trace.versions, trace.amount
            ));
            continue;
        }
        verified += 1;
    }
    if problems.is_empty() {
        Ok(AuditReport {
            streams: streams.len(),
            events,
            commands_stored: commands.len(),
            acks_verified: verified,
        })
    } else {
        Err(problems)
    }
}

/// Panics with every problem the audit found.
pub fn assert_audit(acks: &[Ack], streams: &BTreeMap<String, Vec<StoredEvent>>) -> AuditReport {
    match audit(acks, streams) {
        Ok(report) => report,
        Err(problems) => {
            let shown: Vec<&String> = problems.iter().take(20).collect();
            panic!(
                "{} problem(s) in the store, first {}:\n{}",
                problems.len(),
                shown.len(),
                shown
                    .iter()
                    .map(|p| format!("  - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        }
    }
}

/// Checks that `executor` serves, for every stream, the state the test folds from the stored
/// events, at the stored version.
pub async fn assert_states_equal_fold(
    executor: &Executor,
    streams: &BTreeMap<String, Vec<StoredEvent>>,
) {
    for (id, stream) in streams {
        let expected = fold(stream.iter().map(|s| &s.event));
        let view = executor
            .state::<Wallet>(id)
            .await
            .unwrap_or_else(|e| panic!("{id}: state: {e}"));
        assert_eq!(
            view.version,
            stream.len() as u64,
            "{id}: version served differs from the stored stream"
        );
        assert_eq!(
            view.state, expected,
            "{id}: state served differs from the fold of the stored events"
        );
    }
}

/// Waits until the server has no session with `application_name` left: after a client process
/// is killed, its backend may still commit the statement it was running, so what is stored is
/// final only once that backend has ended.
pub async fn wait_for_sessions_to_end(pool: &PgPool, application_name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(application_name)
                .fetch_one(pool)
                .await
                .unwrap_or_else(|e| panic!("reading pg_stat_activity: {e}"));
        if left == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} session(s) of {application_name} still open 30 s after its process ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
