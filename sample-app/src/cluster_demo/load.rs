//! The demo's clients: commands over HTTP to any live node, each with an `Idempotency-Key`,
//! retried with the same key until the service gives a final answer, and a ledger of what was
//! acknowledged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::http::{IDEMPOTENCY_KEY, command_id_for};
use crate::ledger::Collection;

/// How long one command is retried before the client gives up on it.
const PATIENCE: Duration = Duration::from_secs(45);
/// Pause after the first unanswered attempt; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// What a command does to an account's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `open`: nothing.
    Open,
    /// `deposit` of this many cents.
    Credit(u64),
    /// `withdraw` of this many cents.
    Debit(u64),
}

impl Change {
    /// The signed effect on the balance, in cents.
    pub fn cents(self) -> i128 {
        match self {
            Change::Open => 0,
            Change::Credit(cents) => i128::from(cents),
            Change::Debit(cents) => -i128::from(cents),
        }
    }

    fn body(self, reference: &str) -> Value {
        match self {
            Change::Open => json!({"type": "open", "owner": "cus-cluster-demo"}),
            Change::Credit(cents) => {
                json!({"type": "deposit", "amount_cents": cents, "reference": reference})
            }
            Change::Debit(cents) => {
                json!({"type": "withdraw", "amount_cents": cents, "reference": reference})
            }
        }
    }
}

/// An acknowledged command: the service answered 200, so it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Index of the account.
    pub account: usize,
    /// The command id its `Idempotency-Key` maps to (checked against the answer's).
    pub command_id: Uuid,
    /// What it did.
    pub change: Change,
}

/// The final answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (200).
    Acked(Acked),
    /// Refused by a domain rule (409 `rejected`): nothing stored.
    Rejected,
    /// No final answer, or an answer that should not happen.
    Failed,
}

/// Everything the clients saw.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Acknowledged commands, in acknowledgement order.
    pub acked: Vec<Acked>,
    /// Commands refused by a domain rule (withdrawals beyond the balance).
    pub rejected: u64,
    /// Answers that were duplicates: a retry of a command stored by an earlier attempt.
    pub duplicates: u64,
    /// Attempts answered with something to retry, by status and kind (or `no answer`).
    pub retries: BTreeMap<String, u64>,
    /// Commands without a final answer, or with an unexpected one: each fails the demo.
    pub failures: Vec<String>,
}

impl Ledger {
    /// All retried attempts.
    pub fn retries_total(&self) -> u64 {
        self.retries.values().sum()
    }
}

/// The API addresses of the nodes, and which are alive; requests go round-robin over the
/// live ones.
#[derive(Debug)]
pub struct Targets {
    apis: Vec<String>,
    alive: Vec<AtomicBool>,
    next: AtomicUsize,
}

impl Targets {
    /// Every node alive.
    pub fn new(apis: Vec<String>) -> Self {
        Self {
            alive: apis.iter().map(|_| AtomicBool::new(true)).collect(),
            apis,
            next: AtomicUsize::new(0),
        }
    }

    /// Sends nothing more to node `index`.
    pub fn mark_dead(&self, index: usize) {
        if let Some(alive) = self.alive.get(index) {
            alive.store(false, Ordering::SeqCst);
        }
    }

    /// The next live node's API.
    pub fn pick(&self) -> Option<&str> {
        for _ in 0..self.apis.len() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.apis.len();
            if self.alive[i].load(Ordering::SeqCst) {
                return Some(&self.apis[i]);
            }
        }
        None
    }
}

/// Sends commands and keeps the [`Ledger`].
#[derive(Debug)]
pub struct Driver {
    client: reqwest::Client,
    /// Where requests go.
    pub targets: Targets,
    /// The account ids, by index.
    pub accounts: Vec<String>,
    ledger: Mutex<Ledger>,
}

/// What one attempt gave.
enum Attempt {
    /// 200.
    Acked,
    /// 409 `rejected`.
    Rejected,
    /// Something that should not happen (recorded in the ledger's failures).
    Failed,
    /// Worth another attempt with the same key; why.
    Retry(String),
}

impl Driver {
    /// A driver for `accounts` on the nodes at `apis`.
    pub fn new(apis: Vec<String>, accounts: Vec<String>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // Longer than the service's own call timeout (10 s), which answers 504 first.
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()?;
        Ok(Self {
            client,
            targets: Targets::new(apis),
            accounts,
            ledger: Mutex::new(Ledger::default()),
        })
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the ledger now.
    pub fn snapshot(&self) -> Ledger {
        self.ledger().clone()
    }

    /// Commands acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.ledger().acked.len()
    }

    /// `GET url` as JSON; `None` unless it answers 200 with JSON.
    pub async fn get(&self, url: &str) -> Option<Value> {
        let response = self.client.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// `GET url` as text; `None` unless it answers 200.
    pub async fn get_text(&self, url: &str) -> Option<String> {
        let response = self.client.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// Sends `change` to account `account` with `Idempotency-Key: key` and retries it with
    /// the same key (on the next live node, after a short pause) while the answer is 503, 504,
    /// a 409 conflict or no answer at all, until it is acknowledged or refused; records the
    /// outcome.
    pub async fn command(&self, account: usize, key: &str, change: Change) -> Outcome {
        let id = &self.accounts[account];
        let body = change.body(key);
        let command_id = command_id_for(Collection::Accounts, id, Some(key)).as_uuid();
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let cause = match self.targets.pick() {
                Some(api) => match self.attempt(api, id, key, &body, command_id).await {
                    Attempt::Acked => {
                        let acked = Acked {
                            account,
                            command_id,
                            change,
                        };
                        self.ledger().acked.push(acked);
                        return Outcome::Acked(acked);
                    }
                    Attempt::Rejected => {
                        self.ledger().rejected += 1;
                        return Outcome::Rejected;
                    }
                    Attempt::Failed => return Outcome::Failed,
                    Attempt::Retry(cause) => cause,
                },
                None => "no live node".to_owned(),
            };
            *self.ledger().retries.entry(cause.clone()).or_default() += 1;
            if started.elapsed() >= PATIENCE {
                self.ledger().failures.push(format!(
                    "{id} key {key}: no final answer within {}s (last: {cause})",
                    PATIENCE.as_secs()
                ));
                return Outcome::Failed;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn attempt(
        &self,
        api: &str,
        id: &str,
        key: &str,
        body: &Value,
        command_id: Uuid,
    ) -> Attempt {
        let sent = self
            .client
            .post(format!("{api}/accounts/{id}/commands"))
            .header(IDEMPOTENCY_KEY, key)
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // Refused, reset, timed out: the outcome is unknown, the key makes a retry safe.
            Err(_) => return Attempt::Retry("no answer".to_owned()),
        };
        let status = response.status().as_u16();
        let Ok(answer) = response.json::<Value>().await else {
            return Attempt::Retry(format!("{status}, answer cut off"));
        };
        let kind = answer["kind"].as_str().unwrap_or("-");
        match (status, kind) {
            (200, _) => {
                let answered_id = answer["command_id"].as_str().and_then(|s| s.parse().ok());
                if answered_id != Some(command_id) {
                    self.ledger().failures.push(format!(
                        "{id} key {key}: answered command id {:?}, expected {command_id}",
                        answer["command_id"]
                    ));
                    return Attempt::Failed;
                }
                if answer["duplicate"] == true {
                    self.ledger().duplicates += 1;
                }
                Attempt::Acked
            }
            (409, "rejected") => Attempt::Rejected,
            (409 | 503 | 504, _) => Attempt::Retry(format!("{status} {kind}")),
            _ => {
                self.ledger().failures.push(format!(
                    "{id} key {key}: unexpected answer {status} {answer}"
                ));
                Attempt::Failed
            }
        }
    }
}

/// One client: until `stop`, deposits (70 %) and transfers (a withdrawal, then, if it was
/// not refused, the deposit of the same amount on another account), on random accounts.
/// Keys are `c{client}-{n}-dep`, `…-out`, `…-in`.
pub async fn client(driver: Arc<Driver>, number: usize, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (number as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let accounts = driver.accounts.len();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let account = rng.random_range(0..accounts);
        if accounts < 2 || rng.random_bool(0.7) {
            let cents = rng.random_range(1..=10_000);
            let key = format!("c{number}-{n}-dep");
            driver.command(account, &key, Change::Credit(cents)).await;
        } else {
            let to = (account + rng.random_range(1..accounts)) % accounts;
            let cents = rng.random_range(1..=5_000);
            let key = format!("c{number}-{n}-out");
            if let Outcome::Acked(_) = driver.command(account, &key, Change::Debit(cents)).await {
                let key = format!("c{number}-{n}-in");
                driver.command(to, &key, Change::Credit(cents)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_round_robin_over_the_live_nodes_only() {
        let targets = Targets::new(vec!["a".into(), "b".into(), "c".into()]);
        let picked: Vec<_> = (0..3).filter_map(|_| targets.pick()).collect();
        assert_eq!(picked, ["a", "b", "c"]);
        targets.mark_dead(1);
        let picked: Vec<_> = (0..4).filter_map(|_| targets.pick()).collect();
        assert!(!picked.contains(&"b"), "{picked:?}");
        targets.mark_dead(0);
        targets.mark_dead(2);
        assert_eq!(targets.pick(), None);
    }

    #[test]
    fn a_transfer_out_is_a_debit_and_a_deposit_a_credit() {
        assert_eq!(Change::Credit(5).cents(), 5);
        assert_eq!(Change::Debit(5).cents(), -5);
        assert_eq!(Change::Open.cents(), 0);
    }
}
