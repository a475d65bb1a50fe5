//! What the database says, read with raw SQL: shard ownership (`shard_owners`), and the audit
//! of the `events` table against what the clients saw acknowledged.

use std::collections::{BTreeMap, HashMap};

use aggregate_actors::Aggregate;
use aggregate_actors::codec;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::load::Acked;
use crate::domain::{Account, AccountEvent};

/// Problems listed in the report at most.
const MAX_PROBLEMS: usize = 10;

/// Why the database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A statement failed.
    #[error("reading {what}: {source}")]
    Sql {
        /// What was read.
        what: &'static str,
        /// What failed.
        #[source]
        source: sqlx::Error,
    },
}

fn sql(what: &'static str) -> impl FnOnce(sqlx::Error) -> AuditError {
    move |source| AuditError::Sql { what, source }
}

/// Every shard's owner, as `shard_owners` has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardOwners {
    /// The owner of each shard, by shard.
    pub owners: Vec<Option<Uuid>>,
    /// When each shard last changed owner (database clock).
    pub changed_at: Vec<DateTime<Utc>>,
}

impl ShardOwners {
    /// Reads the table.
    pub async fn read(pool: &PgPool) -> Result<Self, AuditError> {
        let rows: Vec<(i32, Option<Uuid>, DateTime<Utc>)> =
            sqlx::query_as("SELECT shard, owner, changed_at FROM shard_owners ORDER BY shard")
                .fetch_all(pool)
                .await
                .map_err(sql("shard_owners"))?;
        Ok(Self {
            owners: rows.iter().map(|(_, owner, _)| *owner).collect(),
            changed_at: rows.iter().map(|(_, _, at)| *at).collect(),
        })
    }

    /// The number of shards.
    pub fn shard_count(&self) -> u32 {
        u32::try_from(self.owners.len()).unwrap_or(u32::MAX)
    }

    /// Shards owned by `node`.
    pub fn owned_by(&self, node: Uuid) -> Vec<u32> {
        (0..self.shard_count())
            .filter(|&s| self.owners[s as usize] == Some(node))
            .collect()
    }

    /// Whether every shard is owned by the node rendezvous hashing prefers among `live`:
    /// what the cluster converges to.
    pub fn settled(&self, live: &[Uuid]) -> bool {
        !self.owners.is_empty()
            && (0..self.shard_count())
                .all(|s| self.owners[s as usize] == ::cluster::preferred_owner(s, live))
    }

    /// Shards per owner.
    pub fn counts(&self) -> BTreeMap<Option<Uuid>, usize> {
        let mut counts = BTreeMap::new();
        for owner in &self.owners {
            *counts.entry(*owner).or_default() += 1;
        }
        counts
    }
}

/// The database clock now.
pub async fn database_now(pool: &PgPool) -> Result<DateTime<Utc>, AuditError> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .map_err(sql("the database clock"))
}

/// Sessions of the nodes (`application_name` `sample-app`) still open on this database: a
/// killed node's statement may still commit until its session ends.
pub async fn node_sessions(pool: &PgPool) -> Result<i64, AuditError> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'sample-app'",
    )
    .fetch_one(pool)
    .await
    .map_err(sql("pg_stat_activity"))
}

/// Shard moves between two readings of `shard_owners`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moves {
    /// Rows whose owner changed.
    pub total: usize,
    /// Of those, shards of the killed node, by their new owner (`None`: nobody yet).
    pub from_victim: BTreeMap<Option<Uuid>, usize>,
    /// Shards that moved between other nodes (a rebalance, not the failure).
    pub other: usize,
    /// When the last of the killed node's shards was claimed (database clock).
    pub last_claim: Option<DateTime<Utc>>,
}

impl Moves {
    /// The moves from `before` to `after`, the killed node being `victim`.
    pub fn between(before: &ShardOwners, after: &ShardOwners, victim: Uuid) -> Self {
        let mut moves = Self::default();
        for (shard, (old, new)) in before.owners.iter().zip(&after.owners).enumerate() {
            if old == new {
                continue;
            }
            moves.total += 1;
            if *old == Some(victim) {
                *moves.from_victim.entry(*new).or_default() += 1;
                let at = after.changed_at.get(shard).copied();
                moves.last_claim = moves.last_claim.max(at);
            } else {
                moves.other += 1;
            }
        }
        moves
    }
}

/// The audit of the `events` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Commands the clients saw acknowledged.
    pub acknowledged: usize,
    /// Of those, stored exactly once (one event each).
    pub stored_once: usize,
    /// Acknowledged but not stored.
    pub missing: usize,
    /// Acknowledged and stored more than once.
    pub duplicated: usize,
    /// Stored but never acknowledged (or stored without a command id).
    pub unexpected: usize,
    /// Events of the run's accounts.
    pub events: u64,
    /// Accounts whose stored versions are not 1, 2, … without gaps.
    pub gaps: usize,
    /// Accounts audited.
    pub accounts: usize,
    /// Accounts whose stored balance (deposits minus withdrawals, decoded from the events)
    /// equals the sum of their acknowledged commands.
    pub balances_match: usize,
    /// The first problems found, for the report.
    pub problems: Vec<String>,
}

impl Audit {
    /// Nothing missing, duplicated, unexpected or out of balance.
    pub fn passed(&self) -> bool {
        self.acknowledged > 0
            && self.stored_once == self.acknowledged
            && self.missing == 0
            && self.duplicated == 0
            && self.unexpected == 0
            && self.gaps == 0
            && self.balances_match == self.accounts
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }
}

/// The expected balance of each account: the sum of its acknowledged commands.
pub fn expected_balances(accounts: usize, acked: &[Acked]) -> Vec<i128> {
    let mut balances = vec![0i128; accounts];
    for ack in acked {
        if let Some(balance) = balances.get_mut(ack.account) {
            *balance += ack.change.cents();
        }
    }
    balances
}

/// Audits the events of `accounts` (ids all starting with `prefix`) against `acked`:
/// events grouped by `command_id` (each acknowledged command exactly one event, nothing
/// else stored), versions without gaps, and each balance as stored equal to the sum of the
/// acknowledged deposits minus withdrawals.
pub async fn audit(
    pool: &PgPool,
    prefix: &str,
    accounts: &[String],
    acked: &[Acked],
) -> Result<Audit, AuditError> {
    let pattern = format!("{prefix}%");
    let mut audit = Audit {
        accounts: accounts.len(),
        ..Audit::default()
    };

    // Exactly once: every command's events, counted per command id.
    let stored: Vec<(Option<Uuid>, i64)> = sqlx::query_as(
        "SELECT command_id, count(*) FROM events
         WHERE aggregate_type = $1 AND aggregate_id LIKE $2
         GROUP BY command_id",
    )
    .bind(Account::TYPE)
    .bind(&pattern)
    .fetch_all(pool)
    .await
    .map_err(sql("events by command id"))?;
    let mut stored: HashMap<Option<Uuid>, i64> = stored.into_iter().collect();
    let mut seen = HashMap::new();
    for ack in acked {
        if seen.insert(ack.command_id, ack.account).is_some() {
            audit.problem(format!("command {} acknowledged twice", ack.command_id));
            continue;
        }
        audit.acknowledged += 1;
        let account = &accounts[ack.account];
        match stored.remove(&Some(ack.command_id)).unwrap_or(0) {
            1 => audit.stored_once += 1,
            0 => {
                audit.missing += 1;
                audit.problem(format!("{account}: command {} missing", ack.command_id));
            }
            n => {
                audit.duplicated += 1;
                audit.problem(format!(
                    "{account}: command {} stored {n} times",
                    ack.command_id
                ));
            }
        }
    }
    for (command_id, count) in stored {
        audit.unexpected += 1;
        match command_id {
            Some(id) => audit.problem(format!(
                "command {id} stored ({count} events) but never acknowledged"
            )),
            None => audit.problem(format!("{count} events stored without a command id")),
        }
    }

    // Balances and versions, from the events themselves.
    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT aggregate_id, version, payload FROM events
         WHERE aggregate_type = $1 AND aggregate_id LIKE $2
         ORDER BY aggregate_id, version",
    )
    .bind(Account::TYPE)
    .bind(&pattern)
    .fetch_all(pool)
    .await
    .map_err(sql("events"))?;
    audit.events = rows.len() as u64;
    let index: HashMap<&str, usize> = accounts
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut balances = vec![0i128; accounts.len()];
    let mut versions = vec![0i64; accounts.len()];
    let mut gap = vec![false; accounts.len()];
    for (id, version, payload) in &rows {
        let Some(&i) = index.get(id.as_str()) else {
            audit.problem(format!("events of an account the demo did not use: {id}"));
            continue;
        };
        gap[i] |= *version != versions[i] + 1;
        versions[i] = *version;
        match codec::decode::<AccountEvent>(payload) {
            Ok(AccountEvent::Deposited { amount_cents, .. }) => {
                balances[i] += i128::from(amount_cents);
            }
            Ok(AccountEvent::Withdrew { amount_cents, .. }) => {
                balances[i] -= i128::from(amount_cents);
            }
            Ok(_) => {}
            Err(error) => {
                gap[i] = true;
                audit.problem(format!("{id} v{version}: undecodable event: {error}"));
            }
        }
    }
    audit.gaps = gap.iter().filter(|g| **g).count();
    let expected = expected_balances(accounts.len(), acked);
    for (i, id) in accounts.iter().enumerate() {
        if balances[i] == expected[i] {
            audit.balances_match += 1;
        } else {
            audit.problem(format!(
                "{id}: stored balance {} cents, acknowledged commands sum to {}",
                balances[i], expected[i]
            ));
        }
        if gap[i] {
            audit.problem(format!("{id}: versions have a gap or a bad event"));
        }
    }
    Ok(audit)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cluster_demo::load::Change;

    #[test]
    fn moves_count_changed_rows_and_who_took_the_killed_nodes_shards() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(3);
        let before = ShardOwners {
            owners: vec![Some(a), Some(b), Some(b), Some(c), None],
            changed_at: vec![t0; 5],
        };
        let after = ShardOwners {
            owners: vec![Some(a), Some(a), Some(c), Some(c), Some(a)],
            changed_at: vec![t0, t1, t0, t0, t0],
        };
        let moves = Moves::between(&before, &after, b);
        assert_eq!(moves.total, 3);
        assert_eq!(moves.from_victim.get(&Some(a)), Some(&1));
        assert_eq!(moves.from_victim.get(&Some(c)), Some(&1));
        assert_eq!(moves.other, 1);
        assert_eq!(moves.last_claim, Some(t1));
        assert_eq!(before.owned_by(b), vec![1, 2]);
    }

    #[test]
    fn expected_balances_add_credits_and_subtract_debits() {
        let ack = |account, change| Acked {
            account,
            command_id: Uuid::new_v4(),
            change,
        };
        let acked = [
            ack(0, Change::Open),
            ack(0, Change::Credit(500)),
            ack(1, Change::Credit(70)),
            ack(0, Change::Debit(200)),
        ];
        assert_eq!(expected_balances(3, &acked), vec![300, 70, 0]);
    }

    #[test]
    fn an_audit_with_anything_missing_or_nothing_acknowledged_fails() {
        let clean = Audit {
            acknowledged: 3,
            stored_once: 3,
            accounts: 1,
            balances_match: 1,
            ..Audit::default()
        };
        assert!(clean.passed());
        assert!(!Audit::default().passed());
        assert!(
            !Audit {
                missing: 1,
                stored_once: 2,
                ..clean.clone()
            }
            .passed()
        );
        assert!(
            !Audit {
                balances_match: 0,
                ..clean
            }
            .passed()
        );
    }
}
