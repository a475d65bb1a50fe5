//! Measuring: concurrent callers on tokio tasks, latency histograms (hdrhistogram) and the
//! figures the report prints (throughput, p50, p99); [`crate::figures`] writes them out.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hdrhistogram::Histogram;

use crate::BoxError;

/// Highest latency the histograms track: one minute, in nanoseconds.
const MAX_TRACKABLE_NS: u64 = 60_000_000_000;

/// A new latency histogram in nanoseconds with three significant digits.
pub fn histogram() -> Result<Histogram<u64>, BoxError> {
    Ok(Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, 3)?)
}

/// Records one latency, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let ns = u64::try_from(elapsed.as_nanos())
        .unwrap_or(MAX_TRACKABLE_NS)
        .clamp(1, MAX_TRACKABLE_NS);
    histogram.saturating_record(ns);
}

/// What a timed run of concurrent callers did.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Operations completed.
    pub ops: u64,
    /// Wall time from the start until the last caller stopped.
    pub elapsed: Duration,
    /// Per-operation latency, nanoseconds.
    pub latency: Histogram<u64>,
}

impl Measurement {
    /// A measurement from a count, a wall time and a histogram.
    pub fn new(ops: u64, elapsed: Duration, latency: Histogram<u64>) -> Self {
        Self {
            ops,
            elapsed,
            latency,
        }
    }

    /// Operations per second.
    pub fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency at a quantile (0.0–1.0).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(q))
    }

    /// Median latency.
    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    /// 99th percentile latency.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// Mean latency.
    pub fn mean(&self) -> Duration {
        Duration::from_nanos(self.latency.mean() as u64)
    }

    /// Adds another run's operations, wall time and latencies to this one (rounds of one
    /// system merged).
    pub fn absorb(&mut self, other: &Measurement) -> Result<(), BoxError> {
        self.latency.add(&other.latency)?;
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        Ok(())
    }
}

/// Runs `callers` tokio tasks, each calling `op(caller, iteration)` back to back until
/// `duration` has passed, after an unmeasured warm-up of `warmup`. Every call's latency goes into
/// one histogram. The first error stops the run and is returned.
pub async fn run_callers<F, Fut>(
    callers: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> Result<Measurement, BoxError>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let op = Arc::new(op);
    if !warmup.is_zero() {
        run_phase(callers, warmup, &op, false).await?;
    }
    run_phase(callers, duration, &op, true).await
}

async fn run_phase<F, Fut>(
    callers: usize,
    duration: Duration,
    op: &Arc<F>,
    measured: bool,
) -> Result<Measurement, BoxError>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static + ?Sized,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(callers);
    for caller in 0..callers {
        let op = Arc::clone(op);
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram()?;
            let mut iteration = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                op(caller, iteration).await?;
                if measured {
                    record(&mut latency, t0.elapsed());
                }
                iteration += 1;
            }
            Ok::<_, BoxError>((iteration, Some(latency)))
        }));
    }
    merge(started, tasks).await
}

/// A type-erased operation for [`run_alternating`]: `op(caller, iteration)`.
pub type Op =
    Arc<dyn Fn(usize, u64) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync + 'static>;

/// Erases an operation's type.
pub fn op<F, Fut>(f: F) -> Op
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    Arc::new(move |caller, iteration| Box::pin(f(caller, iteration)))
}

/// One contender of [`run_rounds`]: runs for about the given duration and reports what it did.
/// Anything can be one: tokio callers ([`callers_round`]) or an external program such as
/// pgbench.
pub type Round =
    Arc<dyn Fn(Duration) -> BoxFuture<'static, Result<Measurement, BoxError>> + Send + Sync>;

/// A contender of `callers` tokio tasks calling `op` back to back (as [`run_callers`]).
pub fn callers_round(callers: usize, op: Op) -> Round {
    Arc::new(move |duration| {
        let op = Arc::clone(&op);
        Box::pin(async move { run_phase(callers, duration, &op, true).await })
    })
}

/// Measures several operations side by side: after one warm-up each, `rounds` rounds each run
/// every operation in turn for `duration / rounds` with `callers` tasks (so each operation
/// is measured for `duration` in all), and each operation's rounds are merged. Drift in the
/// machine's load (other processes, a compile next door) then falls on every operation alike,
/// which keeps their ratios honest on a noisy machine.
pub async fn run_alternating(
    callers: usize,
    rounds: usize,
    warmup: Duration,
    duration: Duration,
    ops: &[Op],
) -> Result<Vec<Measurement>, BoxError> {
    let contenders: Vec<Round> = ops
        .iter()
        .map(|op| callers_round(callers, Arc::clone(op)))
        .collect();
    run_rounds(rounds, warmup, duration, &contenders).await
}

/// [`run_alternating`] for any contenders: one unmeasured warm-up of `warmup` each, then
/// `rounds` rounds in which every contender runs for `duration / rounds` in turn (forward
/// order in even rounds, backward in odd ones); each contender's rounds are merged.
pub async fn run_rounds(
    rounds: usize,
    warmup: Duration,
    duration: Duration,
    contenders: &[Round],
) -> Result<Vec<Measurement>, BoxError> {
    let rounds = rounds.max(1);
    let slice = duration / u32::try_from(rounds).unwrap_or(u32::MAX);
    if !warmup.is_zero() {
        for contender in contenders {
            contender(warmup).await?;
        }
    }
    let work: Vec<WorkRound> = contenders
        .iter()
        .map(|contender| -> WorkRound {
            let contender = Arc::clone(contender);
            Arc::new(move |_| contender(slice))
        })
        .collect();
    run_work_rounds(rounds, &work).await
}

/// A contender of [`run_work_rounds`]: does round `r`'s share of a fixed amount of work (for
/// workloads whose cost depends on what was done before, so every system must do the same).
pub type WorkRound =
    Arc<dyn Fn(usize) -> BoxFuture<'static, Result<Measurement, BoxError>> + Send + Sync>;

/// Runs `rounds` rounds in which every contender does its share of round `r` in turn (forward
/// order in even rounds, backward in odd ones, so no contender always runs right after
/// another), and merges each contender's rounds.
pub async fn run_work_rounds(
    rounds: usize,
    contenders: &[WorkRound],
) -> Result<Vec<Measurement>, BoxError> {
    let mut merged: Vec<Option<Measurement>> = vec![None; contenders.len()];
    for round in 0..rounds.max(1) {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..contenders.len()).collect()
        } else {
            (0..contenders.len()).rev().collect()
        };
        for index in order {
            let m = contenders[index](round).await?;
            merge_into(&mut merged[index], m)?;
        }
    }
    merged
        .into_iter()
        .map(|m| m.ok_or_else(|| "no rounds ran".into()))
        .collect()
}

/// Merges `m` into the accumulated measurement in `slot` (or puts it there if empty).
pub fn merge_into(slot: &mut Option<Measurement>, m: Measurement) -> Result<(), BoxError> {
    match slot {
        None => *slot = Some(m),
        Some(acc) => acc.absorb(&m)?,
    }
    Ok(())
}

/// A small deterministic pseudo-random generator (SplitMix64) for shuffling run orders; its
/// seed goes into the report so an order can be replayed.
#[derive(Debug, Clone)]
pub struct Shuffler(u64);

impl Shuffler {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A seed from the clock.
    pub fn clock_seed() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5EED, |d| d.as_nanos() as u64)
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// The smallest and largest of some figures (NaN, NaN when there are none).
pub fn min_max(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values
        .into_iter()
        .fold((f64::NAN, f64::NAN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Runs `jobs` operations over `callers` tasks (each task takes the next job index until none
/// is left) and measures each one. For work that is consumed once, like first activations.
pub async fn run_jobs<F, Fut>(callers: usize, jobs: usize, op: F) -> Result<Measurement, BoxError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let started = Instant::now();
    merge(started, job_callers(callers, jobs, op, true)).await
}

/// [`run_jobs`] for a rate alone: the operations done and the wall time, with no latency per
/// operation, so that the timed window holds the operations and not one histogram per caller
/// (about 200 KiB each to zero, then to merge).
pub async fn count_jobs<F, Fut>(
    callers: usize,
    jobs: usize,
    op: F,
) -> Result<(u64, Duration), BoxError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let started = Instant::now();
    let mut ops = 0;
    for task in job_callers(callers, jobs, op, false) {
        ops += task.await??.0;
    }
    Ok((ops, started.elapsed()))
}

/// The caller tasks of [`run_jobs`] and [`count_jobs`]; `timed`: each records its latencies.
fn job_callers<F, Fut>(callers: usize, jobs: usize, op: F, timed: bool) -> Vec<CallerTask>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (0..callers)
        .map(|_| {
            let op = Arc::clone(&op);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut latency = if timed { Some(histogram()?) } else { None };
                let mut done = 0u64;
                loop {
                    let job = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if job >= jobs {
                        break;
                    }
                    let t0 = latency.is_some().then(Instant::now);
                    op(job).await?;
                    if let (Some(latency), Some(t0)) = (latency.as_mut(), t0) {
                        record(latency, t0.elapsed());
                    }
                    done += 1;
                }
                Ok::<_, BoxError>((done, latency))
            })
        })
        .collect()
}

/// Runs `callers` tasks that each call `op(caller, iteration)` exactly `per_caller` times, and
/// measures every call. For workloads whose cost depends on how much was done before (a history
/// that grows), so every system does the same work.
pub async fn run_per_caller<F, Fut>(
    callers: usize,
    per_caller: u64,
    op: F,
) -> Result<Measurement, BoxError>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(callers);
    for caller in 0..callers {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram()?;
            for iteration in 0..per_caller {
                let t0 = Instant::now();
                op(caller, iteration).await?;
                record(&mut latency, t0.elapsed());
            }
            Ok::<_, BoxError>(latency)
        }));
    }
    let mut total = histogram()?;
    for task in tasks {
        total.add(&task.await??)?;
    }
    Ok(Measurement::new(
        callers as u64 * per_caller,
        started.elapsed(),
        total,
    ))
}

/// One caller task: how many operations it did and, if timed, their latencies.
type CallerTask = tokio::task::JoinHandle<Result<(u64, Option<Histogram<u64>>), BoxError>>;

/// Waits for caller tasks that each report (operations done, their latencies) and merges them
/// into one measurement timed from `started`.
async fn merge(started: Instant, tasks: Vec<CallerTask>) -> Result<Measurement, BoxError> {
    let mut total = histogram()?;
    let mut ops = 0;
    for task in tasks {
        let (count, latency) = task.await??;
        ops += count;
        if let Some(latency) = latency {
            total.add(&latency)?;
        }
    }
    Ok(Measurement::new(ops, started.elapsed(), total))
}

/// The median of some durations (the lower middle one for an even count).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples
        .get(samples.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(vec![]), Duration::ZERO);
    }

    #[test]
    fn shuffles_keep_every_item_and_spread_is_min_max() {
        let mut items: Vec<u32> = (0..10).collect();
        Shuffler::new(7).shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(min_max([3.0, 1.0, 2.0]), (1.0, 3.0));
        assert!(min_max([]).0.is_nan());
    }

    #[tokio::test]
    async fn callers_run_until_the_deadline() -> Result<(), BoxError> {
        let m = run_callers(2, Duration::ZERO, Duration::from_millis(20), |_, _| async {
            tokio::task::yield_now().await;
            Ok(())
        })
        .await?;
        assert!(m.ops > 0);
        assert_eq!(m.latency.len(), m.ops);
        let jobs = run_jobs(3, 10, |_| async { Ok(()) }).await?;
        assert_eq!(jobs.ops, 10);
        Ok(())
    }
}
