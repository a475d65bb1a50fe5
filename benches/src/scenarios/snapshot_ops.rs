//! Scenario 10: snapshot operations — `Executor::rebuild_snapshots` over every ledger stream
//! (N streams of `EVENTS` events, seeded straight through the `EventStore`) against a
//! hand-written loop that reads each stream, folds it, encodes the state with the framework's
//! codec and saves it, at the same parallelism, in memory and on PostgreSQL. Every run starts
//! with no snapshots, so both replay every stream in full (see the method text in [`run`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregate_actors::batch::BatchOptions;
use aggregate_actors::codec::{self, CompressionConfig};
use aggregate_actors::{Aggregate, AggregateSettings, Executor, RuntimeConfig, strategy::Never};
use event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, PgConfig, PgEventStore, PgSnapshotStore,
    ReadQuery, SnapshotRecord, SnapshotStore, StreamId,
};
use futures::stream::{self, StreamExt};
use uuid::Uuid;

use crate::BoxError;
use crate::figures::{fmt_count, fmt_duration, fmt_rate, fmt_ratio, ratio};
use crate::ledger::{Ledger, LedgerEvent, LedgerState, new_event, seeded_event};
use crate::measure::{median, run_jobs};
use crate::report::{Headline, Section, Table};
use crate::scenarios::Ctx;

/// Events per stream.
const EVENTS: u64 = 20;
/// Parallelism of both systems.
const PARALLELISM: [usize; 3] = [1, 8, 32];
/// The parallelism of the headline row.
const HEADLINE_PARALLELISM: usize = 8;
/// Measured rounds; each reports the median.
const ROUNDS: usize = 3;
/// Ids per `stream_ids` page (as the framework's rebuild asks).
const ID_PAGE: usize = 1_000;
/// Concurrent appends while seeding.
const SEEDERS: usize = 16;
/// Connections of the PostgreSQL pool (events and snapshots share it).
const PG_CONNECTIONS: u32 = 32;

/// A backend: the seeded events, and where snapshots go.
struct Backend {
    name: &'static str,
    events: Arc<dyn EventStore>,
    /// On PostgreSQL: the store whose snapshot table is emptied before each run.
    pg: Option<(PgEventStore, Arc<PgSnapshotStore>)>,
}

impl Backend {
    /// A snapshot store with no snapshots in it.
    async fn clean_snapshots(&self) -> Result<Arc<dyn SnapshotStore>, BoxError> {
        match &self.pg {
            None => Ok(Arc::new(InMemorySnapshotStore::new())),
            Some((events, snapshots)) => {
                sqlx::query("TRUNCATE snapshots")
                    .execute(events.pool())
                    .await?;
                Ok(Arc::clone(snapshots) as Arc<dyn SnapshotStore>)
            }
        }
    }
}

/// One run: its wall time, and the store it wrote to (for the cross-check).
type Run = (Duration, Arc<dyn SnapshotStore>);

fn stream_id(index: usize) -> String {
    format!("snap-{index:06}")
}

/// No snapshots on the command path, no idle passivation: only the batch snapshots.
fn settings() -> AggregateSettings<Ledger> {
    AggregateSettings::new()
        .strategy(Never)
        .snapshot_on_passivation(false)
        .runtime(RuntimeConfig {
            idle_timeout: None,
            ..RuntimeConfig::default()
        })
}

/// Appends [`EVENTS`] events to each of `streams` streams, [`SEEDERS`] appends at once.
async fn seed(events: &Arc<dyn EventStore>, streams: usize) -> Result<(), BoxError> {
    let store = Arc::clone(events);
    run_jobs(SEEDERS, streams, move |job| {
        let store = Arc::clone(&store);
        async move {
            let stream = StreamId::new(Ledger::TYPE, stream_id(job))?;
            let batch = (0..EVENTS)
                .map(|i| new_event(&seeded_event(job as u64 * EVENTS + i)))
                .collect::<Result<Vec<_>, _>>()?;
            store.append(&stream, 0, batch).await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}

/// Ours: `rebuild_snapshots` on a fresh executor, checked to have replayed and snapshotted
/// every stream in full.
async fn ours(backend: &Backend, streams: usize, parallelism: usize) -> Result<Run, BoxError> {
    let snapshots = backend.clean_snapshots().await?;
    let executor = Executor::builder(Arc::clone(&backend.events), Arc::clone(&snapshots))
        .register::<Ledger>(settings())
        .snapshot_writers(parallelism)
        .build()?;
    let options = BatchOptions {
        parallelism,
        skip_current: false,
        ..BatchOptions::default()
    };
    let report = executor.rebuild_snapshots::<Ledger>(&options).await?;
    let replayed = executor
        .stats()
        .of(Ledger::TYPE)
        .map_or(0, |t| t.aggregate.events_replayed);
    executor.shutdown().await;
    let expected = streams as u64 * EVENTS;
    if report.snapshotted != streams as u64
        || report.events != expected
        || report.failed != 0
        || replayed != expected
    {
        let first = report.failures.first().map(|(id, e)| format!("{id}: {e}"));
        return Err(format!(
            "rebuild on {}, {expected} events expected: {report:?}, {replayed} \
             replayed (first failure: {first:?})",
            backend.name
        )
        .into());
    }
    Ok((report.elapsed, snapshots))
}

/// The record a hand-written rebuild stores: the bare state, MessagePack, sealed.
fn snapshot_record(
    stream: StreamId,
    version: u64,
    last_event_id: Uuid,
    state: &LedgerState,
) -> Result<SnapshotRecord, BoxError> {
    let sealed = codec::seal(codec::encode(state)?, &CompressionConfig::default())?;
    Ok(SnapshotRecord {
        stream,
        version,
        last_event_id,
        state_schema_version: <Ledger as Aggregate>::STATE_SCHEMA_VERSION,
        codec: codec::CODEC_MSGPACK.to_owned(),
        compression: sealed.compression.to_owned(),
        checksum: sealed.checksum,
        uncompressed_size: sealed.uncompressed_size,
        stored_size: sealed.bytes.len() as u64,
        taken_at: chrono::Utc::now(),
        bytes: sealed.bytes,
        base: None,
    })
}

/// The baseline for one stream: read it in pages, fold, encode, save. Returns its version.
async fn rebuild_one(
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    id: String,
) -> Result<u64, BoxError> {
    let stream = StreamId::new(Ledger::TYPE, id)?;
    let mut state = LedgerState::default();
    let (mut version, mut last_event_id) = (0, None);
    loop {
        let query = ReadQuery::after(version);
        let page = events.read_stream(&stream, query).await?;
        for event in &page {
            state.apply(&codec::decode::<LedgerEvent>(&event.payload)?);
            version = event.version;
            last_event_id = Some(event.event_id);
        }
        if page.len() < query.page_size {
            break;
        }
    }
    let Some(last_event_id) = last_event_id else {
        return Ok(0);
    };
    snapshots
        .save(snapshot_record(stream, version, last_event_id, &state)?)
        .await?;
    Ok(version)
}

/// The baseline: the same walk over `stream_ids`, [`rebuild_one`] per stream.
async fn baseline(backend: &Backend, streams: usize, parallelism: usize) -> Result<Run, BoxError> {
    let snapshots = backend.clean_snapshots().await?;
    let started = Instant::now();
    let (mut after, mut written, mut covered) = (None::<String>, 0u64, 0u64);
    loop {
        let page = backend
            .events
            .stream_ids(Ledger::TYPE, after.as_deref(), ID_PAGE)
            .await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        let mut done = stream::iter(page)
            .map(|id| {
                let job = rebuild_one(Arc::clone(&backend.events), Arc::clone(&snapshots), id);
                tokio::spawn(job)
            })
            .buffer_unordered(parallelism.max(1));
        while let Some(version) = done.next().await {
            covered += version??;
            written += 1;
        }
        after = Some(last);
    }
    let elapsed = started.elapsed();
    let expected = streams as u64 * EVENTS;
    if written != streams as u64 || covered != expected {
        return Err(format!(
            "baseline on {}: {written} snapshots of {streams}, {covered} events of {expected}",
            backend.name
        )
        .into());
    }
    Ok((elapsed, snapshots))
}

/// The state in the newest snapshot of the first stream.
async fn first_state(snapshots: &dyn SnapshotStore) -> Result<(u64, LedgerState), BoxError> {
    let stream = StreamId::new(Ledger::TYPE, stream_id(0))?;
    let record = snapshots
        .load_latest(&stream)
        .await?
        .ok_or("no snapshot of the first stream")?;
    let encoded = codec::unseal(
        &record.bytes,
        &record.codec,
        &record.compression,
        record.checksum,
        record.uncompressed_size,
    )?;
    Ok((
        record.version,
        codec::decode_snapshot(&record.codec, &encoded)?,
    ))
}

/// Median run times of one backend: `[parallelism index][0 = ours, 1 = baseline]`.
type Medians = Vec<[Duration; 2]>;

async fn measure(backend: &Backend, streams: usize) -> Result<Medians, BoxError> {
    // Unmeasured warm-up of each system, and a check that both write the same state.
    let (_, written) = ours(backend, streams, HEADLINE_PARALLELISM).await?;
    let from_ours = first_state(&*written).await?;
    let (_, written) = baseline(backend, streams, HEADLINE_PARALLELISM).await?;
    if first_state(&*written).await? != from_ours {
        return Err(format!(
            "{}: ours and the baseline snapshot different states",
            backend.name
        )
        .into());
    }
    let mut samples = vec![[Vec::new(), Vec::new()]; PARALLELISM.len()];
    for round in 0..ROUNDS {
        for (index, &parallelism) in PARALLELISM.iter().enumerate() {
            for turn in 0..2 {
                // Alternate who goes first, so neither always runs on a store the other warmed.
                let system = (round + index + turn) % 2;
                let (took, _) = if system == 0 {
                    ours(backend, streams, parallelism).await?
                } else {
                    baseline(backend, streams, parallelism).await?
                };
                samples[index][system].push(took);
            }
        }
    }
    Ok(samples
        .into_iter()
        .map(|[ours, base]| [median(ours), median(base)])
        .collect())
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    let title = super::ALL[9].title;
    let streams: usize = if ctx.quick { 2_000 } else { 10_000 };
    let total = streams as u64 * EVENTS;
    let parallelism = PARALLELISM.map(|p| p.to_string()).join(", ");
    let mut section = Section::new(
        title,
        format!(
            "{} ledger streams of {EVENTS} events each ({} events), seeded with direct \
             `EventStore::append` calls. Ours: `Executor::rebuild_snapshots` with \
             `skip_current: false` at parallelism {parallelism}, on a fresh executor per run whose \
             snapshot writer runs as many writes at once (`snapshot_writers`). Baseline: a \
             hand-written loop over the same `stream_ids` pages that, per stream (a tokio task \
             each, as many at once through `buffer_unordered`), reads the stream in \
             `read_stream` pages, folds the events, encodes the state with the framework's codec \
             and `SnapshotStore::save`s it. What the baseline does less: no actor activation or \
             passivation, no dedup window in the snapshot, no read-back and verification of the \
             written snapshot, no retention pass, no skip check. Every run starts with no \
             snapshots (so ours replays every stream in full; checked from the executor's \
             stats), and the first stream's snapshot decodes to the same state from both. One \
             unmeasured warm-up each, then {ROUNDS} rounds alternating which system goes first; \
             the median run is reported. PostgreSQL: test settings server, a pool of \
             {PG_CONNECTIONS} connections shared by events and snapshots.",
            fmt_count(streams as u64),
            fmt_count(total),
        ),
    );

    let mut backends = vec![Backend {
        name: "in-memory",
        events: Arc::new(InMemoryEventStore::new()),
        pg: None,
    }];
    match &ctx.pg {
        Some(pg) => {
            let url = pg.create_database("snapshot_ops").await?;
            let config = PgConfig::new(url).max_connections(PG_CONNECTIONS);
            let events = PgEventStore::connect(&config).await?;
            let snapshots =
                PgSnapshotStore::from_pool(events.pool().clone(), config.limits).await?;
            backends.push(Backend {
                name: "PostgreSQL",
                events: Arc::new(events.clone()),
                pg: Some((events, Arc::new(snapshots))),
            });
        }
        None => section
            .notes
            .push("PostgreSQL: not run (no database URL).".into()),
    }

    let mut table = Table::new(
        "Rebuilding every snapshot (median run)",
        &[
            "backend",
            "parallelism",
            "system",
            "time",
            "streams/s",
            "events/s",
            "÷ baseline",
        ],
    );
    let mut ratios = Vec::new();
    let mut headline = None;
    for backend in &backends {
        let seeding = Instant::now();
        seed(&backend.events, streams).await?;
        println!(
            "  snapshot-ops: seeded {} streams on {} in {}",
            fmt_count(streams as u64),
            backend.name,
            fmt_duration(seeding.elapsed())
        );
        let medians = measure(backend, streams).await?;
        let mut line = Vec::new();
        for (&parallelism, [ours, base]) in PARALLELISM.iter().zip(&medians) {
            let rate = |took: &Duration, count: u64| count as f64 / took.as_secs_f64();
            let r = ratio(rate(ours, total), rate(base, total));
            for (system, took, shown) in [
                ("`rebuild_snapshots`", ours, fmt_ratio(r)),
                ("hand-written loop (baseline)", base, "1×".to_owned()),
            ] {
                table.row(vec![
                    backend.name.into(),
                    parallelism.to_string(),
                    system.into(),
                    fmt_duration(*took),
                    fmt_rate(rate(took, streams as u64)),
                    fmt_rate(rate(took, total)),
                    shown,
                ]);
            }
            line.push(format!("{} at {parallelism}", fmt_ratio(r)));
            if parallelism == HEADLINE_PARALLELISM {
                headline = Some((backend.name, rate(ours, total), rate(base, total), r));
            }
        }
        ratios.push(format!("{}: {}", backend.name, line.join(", ")));
        if let Some([ours, base]) = medians.first() {
            let per_stream = |took: &Duration| took.as_secs_f64() / streams as f64;
            section.notes.push(format!(
                "{}, parallelism {}: a stream costs {} with `rebuild_snapshots` and {} with the \
                 loop; the {} more is the actor's activation and passivation, the writer's \
                 read-back and verification and the retention pass, which parallelism hides \
                 only as far as the machine has idle cores or the store idle connections.",
                backend.name,
                PARALLELISM[0],
                fmt_duration(Duration::from_secs_f64(per_stream(ours))),
                fmt_duration(Duration::from_secs_f64(per_stream(base))),
                fmt_duration(Duration::from_secs_f64(
                    (per_stream(ours) - per_stream(base)).max(0.0)
                )),
            ));
        }
    }
    for backend in &backends {
        if let Some((events, _)) = &backend.pg {
            events.close().await;
        }
    }
    section.tables.push(table);
    section.ratio_line = format!(
        "Ratio (rebuild events/s ÷ hand-written loop, by parallelism): {}.",
        ratios.join("; ")
    );
    if let Some((name, ours, base, r)) = headline {
        section.headline = Some(Headline {
            scenario: title.into(),
            metric: format!(
                "snapshot rebuild events/s, {} streams × {EVENTS} events, parallelism \
                 {HEADLINE_PARALLELISM}, {name}",
                fmt_count(streams as u64)
            ),
            ours: fmt_rate(ours),
            baseline: "hand-written read-fold-save loop".into(),
            baseline_figure: fmt_rate(base),
            ratio: format!("{} ↑", fmt_ratio(r)),
        });
    }
    Ok(section)
}
