//! What the cluster demo measured, as text: tables for people and one `cluster-demo:` line of
//! `key=value` pairs for scripts and tests.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::audit::{Audit, Moves};
use super::load::Ledger;
use crate::demo::table::{Table, duration, int};

/// A node as the report names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// 1, 2, 3…
    pub number: usize,
    /// Its cluster node id.
    pub node_id: Uuid,
}

/// How quickly the killed node's aggregates answered again, measured by sending each of them
/// a deposit right after the kill and retrying it (same key) until it was acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Aggregates of the killed node probed.
    pub probed: usize,
    /// Of those, acknowledged.
    pub answered: usize,
    /// Kill → the last acknowledgement: every aggregate the node owned answers again.
    pub all: Duration,
    /// Kill → the median acknowledgement.
    pub median: Duration,
}

/// Account balances as the surviving nodes serve them (`GET /accounts/{id}`), against the
/// acknowledged commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Accounts read.
    pub checked: usize,
    /// Accounts whose served balance equals the sum of their acknowledged commands.
    pub matching: usize,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The run id in the account ids (`acc-RUN-00000`…).
    pub run: String,
    /// The database, redacted.
    pub database: String,
    /// The nodes started.
    pub nodes: Vec<NodeInfo>,
    /// Accounts.
    pub accounts: usize,
    /// Clients sending commands at once.
    pub concurrency: usize,
    /// Shards in the cluster.
    pub shard_count: u32,
    /// From the first node's start until every shard sat with its preferred owner; `None`
    /// when that did not happen in time (the demo went on).
    pub balanced_after: Option<Duration>,
    /// Shards per node (by node number) just before the kill.
    pub shares: Vec<usize>,
    /// The number of the killed node.
    pub victim: usize,
    /// Shards it owned.
    pub victim_shards: usize,
    /// Accounts in those shards.
    pub victim_accounts: usize,
    /// How long the load had run when the node was killed.
    pub killed_after: Duration,
    /// The measured recovery.
    pub recovery: Recovery,
    /// Kill → the last of its shards claimed by a survivor (database clock, `changed_at`).
    pub claimed_after: Option<Duration>,
    /// `shard_owners` before the kill against after the recovery.
    pub moves: Moves,
    /// Commands acknowledged before the kill and in all.
    pub acked_before_kill: usize,
    /// How long the load ran in all.
    pub load_time: Duration,
    /// What the clients saw.
    pub ledger: Ledger,
    /// Balances served after the load.
    pub served: Served,
    /// The survivors' `/health` `cluster` objects, by node number.
    pub health: Vec<(usize, Value)>,
    /// `cluster_*` series on a survivor's `/metrics`.
    pub cluster_metrics: usize,
    /// Survivors that left the cluster and exited cleanly on SIGTERM, of all survivors.
    pub left_gracefully: (usize, usize),
    /// The SQL audit.
    pub audit: Audit,
    /// The whole run.
    pub elapsed: Duration,
}

impl Report {
    /// The audit passed, every command got a final answer, every aggregate of the killed
    /// node answered again and every served balance was right.
    pub fn passed(&self) -> bool {
        self.audit.passed()
            && self.ledger.failures.is_empty()
            && self.recovery.answered == self.recovery.probed
            && self.served.matching == self.served.checked
    }

    fn node(&self, id: Option<Uuid>) -> String {
        match id {
            None => "nobody".to_owned(),
            Some(id) => self
                .nodes
                .iter()
                .find(|n| n.node_id == id)
                .map_or_else(|| format!("node {id}"), |n| format!("node {}", n.number)),
        }
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let ledger = &self.ledger;
        let acked = ledger.acked.len();
        let after_kill = acked.saturating_sub(self.acked_before_kill);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Load: {} commands acknowledged in {} ({} before the kill, {} after), {} clients",
            int(acked as u64),
            duration(self.load_time),
            int(self.acked_before_kill as u64),
            int(after_kill as u64),
            self.concurrency
        );
        let _ = writeln!(
            out,
            "  withdrawals refused (insufficient funds) {}, retried attempts {}, answered as duplicates {}, no final answer {}",
            int(ledger.rejected),
            int(ledger.retries_total()),
            int(ledger.duplicates),
            ledger.failures.len()
        );
        if !ledger.retries.is_empty() {
            let causes: Vec<String> = ledger
                .retries
                .iter()
                .map(|(cause, n)| format!("{cause} {}", int(*n)))
                .collect();
            let _ = writeln!(out, "  retries by answer: {}", causes.join(", "));
        }
        for failure in ledger.failures.iter().take(10) {
            let _ = writeln!(out, "  FAILED: {failure}");
        }

        let _ = writeln!(out);
        let moves = &self.moves;
        let _ = writeln!(
            out,
            "Shard moves (shard_owners before the kill vs after the recovery): {} of {} shards changed owner",
            int(moves.total as u64),
            int(u64::from(self.shard_count))
        );
        let taken: Vec<String> = moves
            .from_victim
            .iter()
            .map(|(owner, n)| format!("{} took {}", self.node(*owner), int(*n as u64)))
            .collect();
        let _ = writeln!(
            out,
            "  node {}'s {} shards: {}; other moves {}",
            self.victim,
            int(self.victim_shards as u64),
            if taken.is_empty() {
                "none moved".to_owned()
            } else {
                taken.join(", ")
            },
            moves.other
        );
        let recovery = &self.recovery;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Time to recover: {} (every one of the {} accounts node {} owned answered a command again; median {}{})",
            duration(recovery.all),
            recovery.probed,
            self.victim,
            duration(recovery.median),
            match self.claimed_after {
                Some(claimed) => format!(", its last shard claimed after {}", duration(claimed)),
                None => String::new(),
            }
        );
        if recovery.answered < recovery.probed {
            let _ = writeln!(
                out,
                "  FAILED: only {} of {} answered",
                recovery.answered, recovery.probed
            );
        }

        if !self.health.is_empty() {
            let _ = writeln!(out);
            let mut table = Table::new([
                "survivors (/health)",
                "shards",
                "members",
                "claims",
                "releases",
                "self-fences",
                "heartbeat",
                "forwards ok",
                "unreachable",
                "lost",
            ]);
            for (number, cluster) in &self.health {
                let n = |key: &str| cluster[key].as_u64().map_or("-".to_owned(), int);
                let f = |key: &str| {
                    cluster["forwards"][key]
                        .as_u64()
                        .map_or("-".to_owned(), int)
                };
                table.row([
                    format!("node {number}"),
                    n("shards_owned"),
                    n("members"),
                    n("claims"),
                    n("releases"),
                    n("self_fences"),
                    cluster["heartbeat_round_trip_ms"]
                        .as_f64()
                        .map_or("-".to_owned(), |ms| format!("{ms:.2} ms")),
                    f("ok"),
                    f("unreachable"),
                    f("lost"),
                ]);
            }
            out.push_str(&table.render());
            let _ = writeln!(
                out,
                "  /metrics of a survivor: {} cluster_* series; on SIGTERM {} of {} left the cluster and exited cleanly",
                self.cluster_metrics, self.left_gracefully.0, self.left_gracefully.1
            );
        }

        let audit = &self.audit;
        let _ = writeln!(out);
        let mut table = Table::new(["Audit (raw SQL on events)", ""]);
        table
            .row(["acknowledged commands", &int(audit.acknowledged as u64)])
            .row(["stored exactly once", &int(audit.stored_once as u64)])
            .row(["missing", &int(audit.missing as u64)])
            .row(["stored more than once", &int(audit.duplicated as u64)])
            .row(["stored, never acknowledged", &int(audit.unexpected as u64)])
            .row(["events", &int(audit.events)])
            .row(["accounts with version gaps", &int(audit.gaps as u64)])
            .row([
                "balances = acknowledged sums".to_owned(),
                format!(
                    "{} / {}",
                    int(audit.balances_match as u64),
                    int(audit.accounts as u64)
                ),
            ])
            .row([
                "served balances = acknowledged sums".to_owned(),
                format!(
                    "{} / {}",
                    int(self.served.matching as u64),
                    int(self.served.checked as u64)
                ),
            ]);
        out.push_str(&table.render());
        for problem in &audit.problems {
            let _ = writeln!(out, "  {problem}");
        }
        let _ = writeln!(out);
        if self.passed() {
            let _ = writeln!(
                out,
                "OK: every acknowledged command stored exactly once, every balance equals its acknowledged deposits and withdrawals ({} in all)",
                duration(self.elapsed)
            );
        } else {
            let _ = writeln!(out, "FAILED: see above");
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    /// One line of `key=value` pairs.
    pub fn summary(&self) -> String {
        let audit = &self.audit;
        format!(
            "cluster-demo: audit={} nodes={} shards={} killed=node-{} victim_shards={} shard_moves={} \
             recovery_ms={} acknowledged={} stored_once={} missing={} duplicated={} \
             unexpected={} balances={}/{} served_balances={}/{} failures={} cluster_metrics={} \
             left_gracefully={}/{}",
            if self.passed() { "passed" } else { "failed" },
            self.nodes.len(),
            self.shard_count,
            self.victim,
            self.victim_shards,
            self.moves.total,
            self.recovery.all.as_millis(),
            audit.acknowledged,
            audit.stored_once,
            audit.missing,
            audit.duplicated,
            audit.unexpected,
            audit.balances_match,
            audit.accounts,
            self.served.matching,
            self.served.checked,
            self.ledger.failures.len(),
            self.cluster_metrics,
            self.left_gracefully.0,
            self.left_gracefully.1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_without_an_audit_fails_and_says_so_in_its_summary() {
        let report = Report::default();
        assert!(!report.passed());
        assert!(report.summary().starts_with("cluster-demo: audit=failed "));
        assert!(report.render().contains("FAILED"));
    }
}
