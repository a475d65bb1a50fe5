//! Measuring: concurrent callers on tokio tasks, latency histograms (hdrhistogram) and the
//! figures the report prints (throughput, p50, p99).

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
            Ok::<_, BoxError>((iteration, latency))
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

/// Measures several operations side by side: after one warm-up each, `rounds` rounds each run
/// every operation in turn for `duration / rounds` with `callers` tasks (so each operation
/// is measured for `duration` in all), and each operation's rounds are merged. Drift in the machine's load (other processes, a compile next door) then
/// falls on every operation alike, which keeps their ratios honest on a noisy machine.
pub async fn run_alternating(
    callers: usize,
    rounds: usize,
    warmup: Duration,
    duration: Duration,
    ops: &[Op],
) -> Result<Vec<Measurement>, BoxError> {
    let rounds = rounds.max(1);
    let slice = duration / u32::try_from(rounds).unwrap_or(u32::MAX);
    if !warmup.is_zero() {
        for op in ops {
            run_phase(callers, warmup, op, false).await?;
        }
    }
    let mut merged: Vec<Option<Measurement>> = vec![None; ops.len()];
    for round in 0..rounds {
        // Alternate the order too, so no operation always runs right after another.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..ops.len()).collect()
        } else {
            (0..ops.len()).rev().collect()
        };
        for index in order {
            let m = run_phase(callers, slice, &ops[index], true).await?;
            merged[index] = Some(match merged[index].take() {
                None => m,
                Some(mut acc) => {
                    acc.latency.add(&m.latency)?;
                    acc.ops += m.ops;
                    acc.elapsed += m.elapsed;
                    acc
                }
            });
        }
    }
    merged
        .into_iter()
        .map(|m| m.ok_or_else(|| "no rounds ran".into()))
        .collect()
}

/// Runs `jobs` operations over `callers` tasks (each task takes the next job index until none
/// is left) and measures each one. For work that is consumed once, like first activations.
pub async fn run_jobs<F, Fut>(callers: usize, jobs: usize, op: F) -> Result<Measurement, BoxError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers {
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram()?;
            let mut done = 0u64;
            loop {
                let job = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if job >= jobs {
                    break;
                }
                let t0 = Instant::now();
                op(job).await?;
                record(&mut latency, t0.elapsed());
                done += 1;
            }
            Ok::<_, BoxError>((done, latency))
        }));
    }
    merge(started, tasks).await
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

/// One caller task: how many operations it did and their latencies.
type CallerTask = tokio::task::JoinHandle<Result<(u64, Histogram<u64>), BoxError>>;

/// Waits for caller tasks that each report (operations done, their latencies) and merges them
/// into one measurement timed from `started`.
async fn merge(started: Instant, tasks: Vec<CallerTask>) -> Result<Measurement, BoxError> {
    let mut total = histogram()?;
    let mut ops = 0;
    for task in tasks {
        let (count, latency) = task.await??;
        ops += count;
        total.add(&latency)?;
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

/// A duration for humans: ns, µs, ms or s with three significant digits.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{} µs", sig3(ns / 1_000.0))
    } else if ns < 1_000_000_000.0 {
        format!("{} ms", sig3(ns / 1_000_000.0))
    } else {
        format!("{} s", sig3(ns / 1_000_000_000.0))
    }
}

/// A rate for humans, e.g. `123 k/s`.
pub fn fmt_rate(per_second: f64) -> String {
    if per_second >= 1_000_000.0 {
        format!("{} M/s", sig3(per_second / 1_000_000.0))
    } else if per_second >= 1_000.0 {
        format!("{} k/s", sig3(per_second / 1_000.0))
    } else {
        format!("{}/s", sig3(per_second))
    }
}

/// A byte count for humans.
pub fn fmt_bytes(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{} MiB", sig3(bytes / (1024.0 * 1024.0)))
    } else if bytes >= 1024.0 {
        format!("{} KiB", sig3(bytes / 1024.0))
    } else {
        format!("{bytes:.0} B")
    }
}

/// A ratio, e.g. `0.42×`.
pub fn fmt_ratio(ratio: f64) -> String {
    if !ratio.is_finite() {
        "n/a".to_owned()
    } else {
        format!("{}×", sig3(ratio))
    }
}

/// A count with thousands separators.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Three significant digits, without a needless exponent.
pub fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).max(0) as usize;
    format!("{x:.decimals$}")
}

/// The ratio `ours / baseline`, NaN when the baseline is zero.
pub fn ratio(ours: f64, baseline: f64) -> f64 {
    if baseline == 0.0 {
        f64::NAN
    } else {
        ours / baseline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_readable() {
        assert_eq!(fmt_duration(Duration::from_nanos(750)), "750 ns");
        assert_eq!(fmt_duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(fmt_rate(123_456.0), "123 k/s");
        assert_eq!(fmt_count(1_234_567), "1 234 567");
        assert_eq!(fmt_ratio(0.4231), "0.423×");
        assert_eq!(sig3(1234.0), "1234");
    }

    #[test]
    fn median_takes_the_middle() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(vec![]), Duration::ZERO);
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
