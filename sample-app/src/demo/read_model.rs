//! The demo's read-model section: how long the projection took to catch up with the last
//! event the workload wrote, its stats, and this run's customers with the largest balances.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use projections::ProjectionStats;

use super::cents;
use super::table::{Table, duration, int};
use super::workload::Ids;
use crate::read_model::{CustomerTotals, ReadModel, ReadModelError};

/// How long the demo waits for the projection to catch up.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Rows shown.
const SHOWN: usize = 5;

/// What the demo saw of the read model.
#[derive(Debug, Clone)]
pub struct ReadModelReport {
    /// Where the rows live.
    pub backend: &'static str,
    /// The position of the last event in the store when the workload ended.
    pub last_position: u64,
    /// Whether the projection reached it within [`CATCH_UP_TIMEOUT`].
    pub caught_up: bool,
    /// How long that took, from the end of the workload.
    pub waited: Duration,
    /// The projection's stats once caught up (or timed out).
    pub stats: ProjectionStats,
    /// This run's customers in the read model.
    pub customers: usize,
    /// Their balances, summed.
    pub balance_cents: u64,
    /// The five largest balances among them.
    pub top: Vec<CustomerTotals>,
}

/// Waits for the projection to handle the last event written so far, then reads this run's
/// rows.
pub async fn measure(read_model: &ReadModel, ids: &Ids) -> Result<ReadModelReport, ReadModelError> {
    let started = Instant::now();
    let last_position = read_model.last_position().await?;
    let caught_up = read_model.wait_for(last_position, CATCH_UP_TIMEOUT).await;
    let waited = started.elapsed();
    let stats = read_model.stats();

    let prefix = ids.customer_prefix();
    let mut rows = Vec::new();
    loop {
        let after = rows
            .last()
            .map(|row: &CustomerTotals| row.customer_id.clone());
        let page = read_model
            .customers(&prefix, after.as_deref(), 1_000)
            .await?;
        let done = page.len() < 1_000;
        rows.extend(page);
        if done {
            break;
        }
    }
    let balance_cents = rows.iter().map(|row| row.balance_cents).sum();
    let customers = rows.len();
    rows.sort_by_key(|row| std::cmp::Reverse(row.balance_cents));
    rows.truncate(SHOWN);
    Ok(ReadModelReport {
        backend: read_model.backend(),
        last_position,
        caught_up,
        waited,
        stats,
        customers,
        balance_cents,
        top: rows,
    })
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

impl ReadModelReport {
    /// Appends the section to `out`.
    pub fn render(&self, out: &mut String) {
        let s = &self.stats;
        let _ = writeln!(
            out,
            "\nRead model: customer totals kept by the projection {} ({})\n",
            s.name, self.backend
        );
        let _ = writeln!(
            out,
            "caught up with the last event written (position {}): {}, {} after the workload ended",
            int(self.last_position),
            yes_no(self.caught_up),
            duration(self.waited),
        );
        let _ = writeln!(
            out,
            "projection: position {}, events handled {} in {} batches, retries {}, lag {}, caught up: {}{}",
            int(s.position),
            int(s.events_handled),
            int(s.batches),
            int(s.retries),
            duration(s.lag),
            yes_no(s.caught_up),
            s.last_error
                .as_ref()
                .map_or_else(String::new, |e| format!(", last error: {e}")),
        );
        let _ = writeln!(
            out,
            "this run's {} customers hold {} in total; the largest balances:\n",
            int(self.customers as u64),
            cents(self.balance_cents),
        );
        let mut table = Table::new([
            "customer",
            "name",
            "accounts",
            "frozen",
            "closed",
            "deposits",
            "withdrawals",
            "balance",
        ]);
        for row in &self.top {
            table.row([
                row.customer_id.clone(),
                row.name.clone().unwrap_or_else(|| "-".to_owned()),
                int(row.accounts),
                int(row.frozen_accounts),
                int(row.closed_accounts),
                int(row.deposits),
                int(row.withdrawals),
                cents(row.balance_cents),
            ]);
        }
        out.push_str(&table.render());
        let _ = writeln!(
            out,
            "(`serve` answers GET /read-model/customers, /read-model/customers/{{id}} and /read-model/stats)"
        );
    }
}
