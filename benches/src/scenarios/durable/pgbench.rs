//! pgbench as a contender of scenario 3: a custom script that appends the way our store does
//! (reads the stream's head and inserts the next version in one statement), one connection per
//! client, `-M prepared`, run for one round at a time with per-transaction logs for the
//! latencies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::BoxError;
use crate::measure::{Measurement, Round, histogram};

/// The table pgbench appends to (created by [`Pgbench::prepare`]).
const CREATE_TABLE: &str = "CREATE TABLE pgbench_append (stream int NOT NULL, \
     version bigint NOT NULL, payload bytea NOT NULL, PRIMARY KEY (stream, version))";

/// pgbench set up on one database: the binary, the database's URL and a work directory holding
/// the script and the per-run logs.
pub(super) struct Pgbench {
    binary: PathBuf,
    url: String,
    work: PathBuf,
    runs: AtomicU64,
}

impl Pgbench {
    /// Creates the table and writes the script (appending `payload` to stream `:client_id`).
    pub(super) async fn prepare(
        binary: PathBuf,
        url: &str,
        pool: &sqlx::PgPool,
        payload: &[u8],
        tag: &str,
    ) -> Result<Self, BoxError> {
        sqlx::query(CREATE_TABLE).execute(pool).await?;
        let work = std::env::temp_dir().join(format!("bench-pgbench-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&work)?;
        let payload_hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            work.join("append.sql"),
            format!(
                "INSERT INTO pgbench_append (stream, version, payload) \
                 SELECT :client_id, COALESCE(MAX(version), 0) + 1, '\\x{payload_hex}'::bytea \
                 FROM pgbench_append WHERE stream = :client_id;\n"
            ),
        )?;
        Ok(Self {
            binary,
            url: url.to_owned(),
            work,
            runs: AtomicU64::new(0),
        })
    }

    /// A contender running `pgbench -c clients -j clients -T secs` for each round (the round's
    /// duration rounded up to whole seconds, pgbench's unit).
    pub(super) fn round(self: &Arc<Self>, clients: usize) -> Round {
        let this = Arc::clone(self);
        Arc::new(move |duration| {
            let this = Arc::clone(&this);
            Box::pin(async move {
                tokio::task::spawn_blocking(move || this.run(clients, duration)).await?
            })
        })
    }

    /// One run. Its transactions and latencies come from the per-transaction logs, its rate
    /// from pgbench's `tps` (without the initial connection time); the measurement's wall time
    /// is transactions ÷ tps, so merged rounds give the mean rate.
    fn run(&self, clients: usize, duration: Duration) -> Result<Measurement, BoxError> {
        let seconds = duration.as_secs_f64().ceil().max(1.0) as u64;
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let logs = self.work.join(format!("log{clients}-{run}"));
        std::fs::create_dir_all(&logs)?;
        let output = Command::new(&self.binary)
            .arg("-n")
            .arg("-M")
            .arg("prepared")
            .arg("-f")
            .arg(self.work.join("append.sql"))
            .arg("-c")
            .arg(clients.to_string())
            .arg("-j")
            .arg(clients.to_string())
            .arg("-T")
            .arg(seconds.to_string())
            .arg("-l")
            .arg(format!("--log-prefix={}", logs.join("pgb").display()))
            .arg(&self.url)
            .current_dir(&self.work)
            .output()?;
        let result = parse(&output, &logs);
        std::fs::remove_dir_all(&logs)?;
        result
    }
}

impl Drop for Pgbench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

fn parse(output: &std::process::Output, logs: &Path) -> Result<Measurement, BoxError> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "pgbench failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let tps = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {stdout}"))?;
    let mut latency = histogram()?;
    let mut transactions = 0u64;
    for entry in std::fs::read_dir(logs)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            // client_id transaction_no time_us script_no time_epoch time_us_part
            if let Some(micros) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                latency.saturating_record((micros * 1_000).max(1));
                transactions += 1;
            }
        }
    }
    if tps <= 0.0 || transactions == 0 {
        return Err(format!("pgbench ran no transactions: {stdout}").into());
    }
    Ok(Measurement::new(
        transactions,
        Duration::from_secs_f64(transactions as f64 / tps),
        latency,
    ))
}
