//! Scenario 2: recovery — how long activating an aggregate takes as its history grows, by full
//! replay and from a recent snapshot plus the tail, on the in-memory store and on PostgreSQL.
//!
//! Histories of 1 000, 10 000, 100 000 and (full mode) 1 000 000 events are seeded by appending
//! batches of 1 000 straight to the `EventStore`, each event encoded as the framework encodes it
//! (`codec::encode` of a `LedgerEvent`, its variant name, the schema version, a UUID v7). The
//! activation is a `state` call on a fresh executor: first with no snapshot (full replay), then
//! with a snapshot at `N − 100` in the snapshot store (sealed with the public codec exactly as
//! the framework's writer does), so 100 tail events are replayed. Each activation's report is
//! checked (snapshot used or not, events replayed) and both ways must give the same state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregate_actors::codec::{self, CompressionConfig};
use aggregate_actors::{Aggregate, AggregateSettings, Executor, RuntimeConfig, strategy::Never};
use event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, PgConfig, PgEventStore, PgSnapshotStore,
    SnapshotRecord, SnapshotStore, StreamId,
};
use uuid::Uuid;

use crate::BoxError;
use crate::figures::{fmt_count, fmt_duration, fmt_ratio, ratio, sig3};
use crate::ledger::{Ledger, LedgerState, new_event, seeded_event};
use crate::measure::median;
use crate::plot::{Series, recovery_svg};
use crate::report::{Headline, Section, Table};
use crate::scenarios::Ctx;

/// Events per seeding append.
const BATCH: u64 = 1_000;
/// Events after the snapshot.
const TAIL: u64 = 100;

struct Backend {
    name: &'static str,
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
}

/// One measured history length on one backend.
struct Point {
    events: u64,
    full: Duration,
    from_snapshot: Duration,
    full_replayed: u64,
    tail_replayed: u64,
}

fn settings() -> AggregateSettings<Ledger> {
    AggregateSettings::new()
        .strategy(Never)
        .snapshot_on_passivation(false)
        .runtime(RuntimeConfig {
            idle_timeout: None,
            ..RuntimeConfig::default()
        })
}

/// Appends `n` events to `stream` in batches; returns the state and event id at `n − TAIL`.
async fn seed(
    store: &dyn EventStore,
    stream: &StreamId,
    n: u64,
) -> Result<(LedgerState, Uuid), BoxError> {
    let snapshot_at = n - TAIL;
    let mut state = LedgerState::default();
    let mut at_snapshot = None;
    let mut version = 0;
    while version < n {
        let count = BATCH.min(n - version);
        let mut batch = Vec::with_capacity(count as usize);
        for i in version..version + count {
            let event = seeded_event(i);
            let encoded = new_event(&event)?;
            state.apply(&event);
            if i + 1 == snapshot_at {
                at_snapshot = Some((state.clone(), encoded.event_id));
            }
            batch.push(encoded);
        }
        store.append(stream, version, batch).await?;
        version += count;
    }
    at_snapshot.ok_or_else(|| "no event at the snapshot version".into())
}

/// The snapshot record the framework's writer would store for `state` at `version`.
fn snapshot_record(
    stream: &StreamId,
    version: u64,
    last_event_id: Uuid,
    state: &LedgerState,
) -> Result<SnapshotRecord, BoxError> {
    let sealed = codec::seal(codec::encode(state)?, &CompressionConfig::default())?;
    Ok(SnapshotRecord {
        stream: stream.clone(),
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

/// Activates `id` on a fresh executor; returns the wall time, events replayed, the snapshot
/// version used and the state.
async fn activate(
    backend: &Backend,
    id: &str,
) -> Result<(Duration, u64, Option<u64>, LedgerState), BoxError> {
    let executor = Executor::builder(Arc::clone(&backend.events), Arc::clone(&backend.snapshots))
        .register::<Ledger>(settings())
        .build()?;
    let started = Instant::now();
    let view = executor.state::<Ledger>(id).await?;
    let elapsed = started.elapsed();
    executor.shutdown().await;
    Ok((
        elapsed,
        view.activation.events_replayed,
        view.activation.snapshot_version(),
        view.state,
    ))
}

fn repeats(quick: bool, n: u64) -> usize {
    match (quick, n) {
        (_, n) if n >= 1_000_000 => 2,
        (true, n) if n >= 100_000 => 2,
        (true, _) => 3,
        (false, n) if n >= 100_000 => 3,
        (false, _) => 5,
    }
}

async fn measure_backend(
    ctx: &Ctx,
    backend: &Backend,
    sizes: &[u64],
) -> Result<Vec<Point>, BoxError> {
    // Unmeasured warm-up of both paths (one-time initialisation, connections, caches).
    let warmup = "history-warmup";
    let stream = StreamId::new(Ledger::TYPE, warmup)?;
    let (state, event_id) = seed(&*backend.events, &stream, 2 * TAIL).await?;
    activate(backend, warmup).await?;
    backend
        .snapshots
        .save(snapshot_record(&stream, TAIL, event_id, &state)?)
        .await?;
    activate(backend, warmup).await?;

    let mut points = Vec::new();
    for &n in sizes {
        let id = format!("history-{n}");
        let stream = StreamId::new(Ledger::TYPE, &id)?;
        let seeding = Instant::now();
        let (snapshot_state, snapshot_event) = seed(&*backend.events, &stream, n).await?;
        println!(
            "  recovery: seeded {} events on {} in {}",
            fmt_count(n),
            backend.name,
            fmt_duration(seeding.elapsed())
        );

        let mut full = Vec::new();
        let mut full_state = None;
        let mut full_replayed = 0;
        for _ in 0..repeats(ctx.quick, n) {
            let (elapsed, replayed, snapshot, state) = activate(backend, &id).await?;
            if snapshot.is_some() || replayed != n {
                return Err(format!(
                    "full replay of {id} on {} used snapshot {snapshot:?} and replayed {replayed}",
                    backend.name
                )
                .into());
            }
            full.push(elapsed);
            full_replayed = replayed;
            full_state = Some(state);
        }

        let record = snapshot_record(&stream, n - TAIL, snapshot_event, &snapshot_state)?;
        backend.snapshots.save(record).await?;
        let mut from_snapshot = Vec::new();
        let mut tail_replayed = 0;
        for _ in 0..repeats(ctx.quick, n) {
            let (elapsed, replayed, snapshot, state) = activate(backend, &id).await?;
            if snapshot != Some(n - TAIL) || replayed != TAIL {
                return Err(format!(
                    "activation of {id} on {} from a snapshot used {snapshot:?} and replayed {replayed}",
                    backend.name
                )
                .into());
            }
            if full_state.as_ref() != Some(&state) {
                return Err(format!("snapshot + tail and full replay of {id} differ").into());
            }
            from_snapshot.push(elapsed);
            tail_replayed = replayed;
        }
        let point = Point {
            events: n,
            full: median(full),
            from_snapshot: median(from_snapshot),
            full_replayed,
            tail_replayed,
        };
        println!(
            "  recovery: {} events on {}: full replay {}, snapshot + tail {}",
            fmt_count(n),
            backend.name,
            fmt_duration(point.full),
            fmt_duration(point.from_snapshot)
        );
        points.push(point);
    }
    Ok(points)
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    let sizes: Vec<u64> = if ctx.quick {
        vec![1_000, 10_000, 100_000]
    } else {
        vec![1_000, 10_000, 100_000, 1_000_000]
    };
    let mut section = Section::new(
        super::ALL[1].title,
        format!(
            "Histories of {} events, seeded in appends of {BATCH} straight through the \
             `EventStore` with events encoded as the framework encodes them. Activation = the \
             first `state` call on a fresh executor, wall time, median of several runs. Full \
             replay: no snapshot. Snapshot + tail: a snapshot at version N − {TAIL} (sealed with \
             the public codec as the framework's writer seals it), so {TAIL} events are \
             replayed. Each activation's report is checked (snapshot used or not, events \
             replayed) and both ways must give equal states. PostgreSQL reads are warm (the \
             history was just written, so it is in the server's cache).",
            sizes
                .iter()
                .map(|n| fmt_count(*n))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    let mut backends = vec![Backend {
        name: "in-memory",
        events: Arc::new(InMemoryEventStore::new()),
        snapshots: Arc::new(InMemorySnapshotStore::new()),
    }];
    let mut pg_stores = None;
    match &ctx.pg {
        Some(pg) => {
            let url = pg.create_database("recovery").await?;
            let config = PgConfig::new(url).max_connections(8);
            let events = PgEventStore::connect(&config).await?;
            let snapshots =
                PgSnapshotStore::from_pool(events.pool().clone(), config.limits).await?;
            pg_stores = Some(events.clone());
            backends.push(Backend {
                name: "PostgreSQL",
                events: Arc::new(events),
                snapshots: Arc::new(snapshots),
            });
        }
        None => section
            .notes
            .push("PostgreSQL: not measured (no database URL and no PostgreSQL binaries).".into()),
    }

    let mut table = Table::new(
        "",
        &[
            "events",
            "backend",
            "full replay",
            "per event",
            "snapshot + tail",
            "events replayed (full / tail)",
            "snapshot + tail ÷ full",
        ],
    );
    let mut series = Vec::new();
    let mut results = Vec::new();
    for (index, backend) in backends.iter().enumerate() {
        let points = measure_backend(ctx, backend, &sizes).await?;
        for p in &points {
            table.row(vec![
                fmt_count(p.events),
                backend.name.into(),
                fmt_duration(p.full),
                fmt_duration(p.full / u32::try_from(p.events).unwrap_or(u32::MAX)),
                fmt_duration(p.from_snapshot),
                format!(
                    "{} / {}",
                    fmt_count(p.full_replayed),
                    fmt_count(p.tail_replayed)
                ),
                fmt_ratio(ratio(p.from_snapshot.as_secs_f64(), p.full.as_secs_f64())),
            ]);
        }
        let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
        series.push(Series {
            label: format!("{}: full replay", backend.name),
            points: points
                .iter()
                .map(|p| (p.events as f64, ms(p.full)))
                .collect(),
            dashed: false,
            colour: index,
        });
        series.push(Series {
            label: format!("{}: snapshot + {TAIL}-event tail", backend.name),
            points: points
                .iter()
                .map(|p| (p.events as f64, ms(p.from_snapshot)))
                .collect(),
            dashed: true,
            colour: index,
        });
        results.push((backend.name, points));
    }
    if let Some(store) = pg_stores {
        store.close().await;
    }
    section.tables.push(table);
    let plot = ctx.out_dir.join("recovery.svg");
    recovery_svg(
        &plot,
        "Activation time against history length (log-log)",
        &series,
    )?;
    section.files.push("recovery.svg".into());

    // The headline and ratio line: the largest history on the slowest backend measured.
    if let Some((name, points)) = results.last()
        && let Some(p) = points.last()
    {
        let r = ratio(p.from_snapshot.as_secs_f64(), p.full.as_secs_f64());
        section.ratio_line = format!(
            "Ratio: at {} events on {name}, snapshot + tail takes {} of a full replay ({} vs {}, {}× faster).",
            fmt_count(p.events),
            fmt_ratio(r),
            fmt_duration(p.from_snapshot),
            fmt_duration(p.full),
            sig3(1.0 / r)
        );
        section.headline = Some(Headline {
            scenario: section.title.clone(),
            metric: format!("activation time, {} events, {name}", fmt_count(p.events)),
            ours: format!("{} (snapshot + tail)", fmt_duration(p.from_snapshot)),
            baseline: "full replay".into(),
            baseline_figure: fmt_duration(p.full),
            ratio: format!("{} ↓", fmt_ratio(r)),
        });
    }
    for (name, points) in &results {
        if let (Some(first), Some(last)) = (points.first(), points.last()) {
            let per_event = last.full.as_secs_f64() / last.events as f64;
            let growth = ratio(
                last.from_snapshot.as_secs_f64(),
                first.from_snapshot.as_secs_f64(),
            );
            section.notes.push(format!(
                "{name}: full replay costs {} per event at {} events (read in pages of 1 000, \
                 decode MessagePack, apply), so it grows linearly with the history; snapshot + \
                 tail changes by {} from {} to {} events, i.e. it is bounded by the tail and the \
                 state's size, not by the history.",
                fmt_duration(Duration::from_secs_f64(per_event)),
                fmt_count(last.events),
                fmt_ratio(growth),
                fmt_count(first.events),
                fmt_count(last.events),
            ));
        }
    }
    Ok(section)
}
