//! Memory probes: resident set size from `/proc/self/statm`, and measurements run in a child
//! process (the benchmark binary re-run with `--probe KIND --count N`) so that what one
//! measurement freed cannot be reused by the next and hide its cost.

use std::sync::Arc;
use std::time::Instant;

use aggregate_actors::{AggregateSettings, Executor, RuntimeConfig, strategy::Never};
use serde::{Deserialize, Serialize};

use crate::BoxError;
use crate::baseline::{CounterMsg, VirtualCounterMsg, counter_directory, spawn_counter};
use crate::ledger::{Ledger, LedgerCommand};
use crate::measure::run_jobs;

/// Concurrent activations while filling.
const FILL_CALLERS: usize = 64;
/// Actors activated before the first RSS reading, so one-time allocations are not counted.
const WARMUP_ACTORS: usize = 2_000;

/// What can be probed.
pub const KINDS: [&str; 3] = ["ours", "directory", "ractor"];

/// What a probe measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResult {
    /// `ours`, `directory` or `ractor`.
    pub kind: String,
    /// Live actors added between the two readings.
    pub count: u64,
    /// RSS before, bytes.
    pub rss_before: u64,
    /// RSS after, bytes.
    pub rss_after: u64,
    /// Wall time of activating `count` actors, seconds.
    pub seconds: f64,
}

impl ProbeResult {
    /// RSS growth per live actor.
    pub fn bytes_per_actor(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.count.max(1) as f64
    }

    /// Activations per second while filling.
    pub fn activations_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.count as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The process's resident set size in bytes (`/proc/self/statm`, second field, in pages).
pub fn rss_bytes() -> Result<u64, BoxError> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("short /proc/self/statm")?
        .parse()?;
    Ok(pages * page_size())
}

fn page_size() -> u64 {
    std::process::Command::new("getconf")
        .arg("PAGESIZE")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// Runs a probe in a child process and returns its result.
pub async fn run_in_child(kind: &str, count: u64) -> Result<ProbeResult, BoxError> {
    let exe = std::env::current_exe()?;
    let output = tokio::process::Command::new(exe)
        .arg("--probe")
        .arg(kind)
        .arg("--count")
        .arg(count.to_string())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "probe {kind} {count} failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PROBE "))
        .ok_or_else(|| format!("probe {kind} printed no result: {stdout}"))?;
    Ok(serde_json::from_str(line)?)
}

/// The child's side: activates `count` actors of `kind`, prints `PROBE {json}`. The caller exits
/// the process right after, without tearing the actors down.
pub async fn run_here(kind: &str, count: u64) -> Result<ProbeResult, BoxError> {
    let count_usize = usize::try_from(count)?;
    let (rss_before, rss_after, seconds) = match kind {
        "ours" => {
            let executor = Executor::in_memory()
                .register::<Ledger>(
                    AggregateSettings::new()
                        .strategy(Never)
                        .snapshot_on_passivation(false)
                        .runtime(RuntimeConfig {
                            idle_timeout: None,
                            // A million actors: above the default cap of 100 000.
                            max_live_actors: None,
                            ..RuntimeConfig::default()
                        }),
                )
                .build()?;
            let touch = move |executor: Executor, offset: usize| {
                move |job: usize| {
                    let executor = executor.clone();
                    async move {
                        executor
                            .execute::<Ledger>(
                                &format!("a{}", offset + job),
                                LedgerCommand::Deposit { amount: 1 },
                            )
                            .await?;
                        Ok(())
                    }
                }
            };
            run_jobs(FILL_CALLERS, WARMUP_ACTORS, touch(executor.clone(), 0)).await?;
            let before = rss_bytes()?;
            let started = Instant::now();
            run_jobs(
                FILL_CALLERS,
                count_usize,
                touch(executor.clone(), WARMUP_ACTORS),
            )
            .await?;
            let seconds = started.elapsed().as_secs_f64();
            let live = executor.stats_of::<Ledger>().map_or(0, |s| s.runtime.live);
            if live != WARMUP_ACTORS + count_usize {
                return Err(format!(
                    "{live} live actors, expected {}",
                    WARMUP_ACTORS + count_usize
                )
                .into());
            }
            (before, rss_bytes()?, seconds)
        }
        "directory" => {
            let directory = counter_directory();
            let add = move |offset: usize| {
                let directory = directory.clone();
                move |job: usize| {
                    let directory = directory.clone();
                    async move {
                        directory
                            .call(&format!("c{}", offset + job), |reply| {
                                VirtualCounterMsg::Add(1, reply)
                            })
                            .await?;
                        Ok(())
                    }
                }
            };
            run_jobs(FILL_CALLERS, WARMUP_ACTORS, add(0)).await?;
            let before = rss_bytes()?;
            let started = Instant::now();
            run_jobs(FILL_CALLERS, count_usize, add(WARMUP_ACTORS)).await?;
            (before, rss_bytes()?, started.elapsed().as_secs_f64())
        }
        "ractor" => {
            let refs: Arc<std::sync::Mutex<Vec<ractor::ActorRef<CounterMsg>>>> =
                Arc::new(std::sync::Mutex::new(Vec::new()));
            let spawn = |refs: Arc<std::sync::Mutex<Vec<_>>>| {
                move |_job: usize| {
                    let refs = Arc::clone(&refs);
                    async move {
                        let actor = spawn_counter().await?;
                        crate::baseline::call_counter(&actor, 1).await?;
                        refs.lock().map_err(|_| "poisoned")?.push(actor);
                        Ok(())
                    }
                }
            };
            run_jobs(FILL_CALLERS, WARMUP_ACTORS, spawn(Arc::clone(&refs))).await?;
            let before = rss_bytes()?;
            let started = Instant::now();
            run_jobs(FILL_CALLERS, count_usize, spawn(Arc::clone(&refs))).await?;
            let seconds = started.elapsed().as_secs_f64();
            let live = refs.lock().map_err(|_| "poisoned")?.len();
            if live != WARMUP_ACTORS + count_usize {
                return Err(
                    format!("{live} actors, expected {}", WARMUP_ACTORS + count_usize).into(),
                );
            }
            (before, rss_bytes()?, seconds)
        }
        other => return Err(format!("unknown probe {other:?}; one of {KINDS:?}").into()),
    };
    Ok(ProbeResult {
        kind: kind.to_owned(),
        count,
        rss_before,
        rss_after,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_readable() -> Result<(), BoxError> {
        assert!(rss_bytes()? > 0);
        Ok(())
    }

    #[tokio::test]
    async fn probes_run_in_process() -> Result<(), BoxError> {
        for kind in KINDS {
            let result = run_here(kind, 100).await?;
            assert_eq!(result.count, 100);
        }
        Ok(())
    }
}
