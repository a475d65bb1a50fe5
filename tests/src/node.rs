//! The cluster node process: its line protocol, and a handle the tests use to run it, talk to
//! it, and kill, stop or resume it.
//!
//! The node (`src/bin/cluster_node.rs`) reads one request per line on stdin, handles each
//! concurrently, and writes one answer line per request, flushed at once:
//!
//! ```text
//! → EXEC <wallet> <command-uuid> deposit <amount>   ← ACK <command-uuid> <version> <duplicate 0|1>
//!                                                   ← NACK <command-uuid> <kind>
//! → STATE <wallet>                                  ← STATE <wallet> <version> <balance>
//!                                                   ← NOSTATE <wallet> <kind>
//! → LIVE                                            ← LIVE <ids with a live actor here, comma-separated;
//!                                                     `~` after one whose shard is not served here>
//! → LIVE <prefix> <count>                           ← the same over ids <prefix>0 … <prefix>(count-1)
//! → ACTIVATION <wallet>                             ← ACTIVATION <wallet> <version> <snapshot version|-> <events replayed>
//!                                                   ← NOACTIVATION <wallet> <kind>
//! → SHARDS                                          ← SHARDS <shards owned here>
//! → STATS                                           ← STATS key=value …
//! ```
//!
//! `ACTIVATION` reads the state like `STATE` and reports how the actor answering was
//! activated (the snapshot it started from, the events it replayed): ask the owner, as a
//! forwarded read does not carry it.
//!
//! At start it prints `READY <pid> <address> <node-id>`; on stdin's end or SIGTERM it leaves
//! the cluster, shuts its executor down and prints `BYE`. NACK kinds: `rejected`,
//! `indeterminate`, `fenced` (the append was refused: this node no longer owns the wallet's
//! shard; nothing stored, retry elsewhere), `not_stored_retryable`, `not_stored`; NOSTATE kinds: `not_found`,
//! `not_stored_retryable`, `not_stored`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

/// Settings of one node process (its command-line arguments).
#[derive(Debug, Clone)]
pub struct NodeArgs {
    /// PostgreSQL URL of the database to use.
    pub database_url: String,
    /// The node's `application_name`.
    pub name: String,
    /// Membership TTL.
    pub ttl: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Most shards released per tick.
    pub max_releases_per_tick: usize,
    /// Bound of one command or state read inside the node (forwarding included).
    pub call_timeout: Duration,
    /// Where the node listens for forwarded calls (`127.0.0.1:0`: any free port).
    pub listen: String,
    /// The address it advertises to the others (default: the bound listen address).
    pub advertise: Option<String>,
    /// Reminders on for wallets, with a scheduler on the node's shards.
    pub reminders: bool,
}

impl NodeArgs {
    /// The defaults (TTL 3 s, heartbeat 1 s, 64 releases per tick, 5 s calls) on
    /// `database_url`.
    pub fn new(database_url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            name: name.into(),
            ttl: Duration::from_secs(3),
            heartbeat: Duration::from_secs(1),
            max_releases_per_tick: 64,
            call_timeout: Duration::from_secs(5),
            listen: "127.0.0.1:0".into(),
            advertise: None,
            reminders: false,
        }
    }

    fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--database-url".into(),
            self.database_url.clone(),
            "--name".into(),
            self.name.clone(),
            "--listen".into(),
            self.listen.clone(),
            "--ttl-ms".into(),
            self.ttl.as_millis().to_string(),
            "--heartbeat-ms".into(),
            self.heartbeat.as_millis().to_string(),
            "--max-releases-per-tick".into(),
            self.max_releases_per_tick.to_string(),
            "--call-timeout-ms".into(),
            self.call_timeout.as_millis().to_string(),
        ];
        if let Some(advertise) = &self.advertise {
            args.extend(["--advertise".into(), advertise.clone()]);
        }
        if self.reminders {
            args.push("--reminders".into());
        }
        args
    }
}

/// The answer to an `EXEC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exec {
    /// Stored (or found stored): the stream version after it, and whether it was a repeat.
    Ack {
        /// Stream version after the command.
        version: u64,
        /// True when the command id had already been applied.
        duplicate: bool,
    },
    /// Failed with this kind.
    Nack(String),
    /// The node ended (or was killed) before answering: the outcome is unknown.
    Gone,
    /// No answer in time (the node may be stopped): the outcome is unknown.
    NoAnswer,
}

impl Exec {
    /// True when the command may have been stored but was not acknowledged.
    pub fn is_unknown(&self) -> bool {
        match self {
            Exec::Gone | Exec::NoAnswer => true,
            Exec::Nack(kind) => kind == "indeterminate",
            Exec::Ack { .. } => false,
        }
    }
}

/// The answer to a `STATE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The wallet's version and balance.
    Found {
        /// Stream version.
        version: u64,
        /// Balance.
        balance: i64,
    },
    /// Failed with this kind.
    Failed(String),
    /// The node ended before answering.
    Gone,
    /// No answer in time.
    NoAnswer,
}

type Waiters = HashMap<String, VecDeque<oneshot::Sender<String>>>;

/// A running node process. Killed when dropped.
pub struct NodeProcess {
    child: Mutex<Child>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    waiters: Arc<Mutex<Waiters>>,
    ready: watch::Receiver<Option<(u32, String, Uuid)>>,
    name: String,
}

/// The key an answer line is matched to its request by.
fn answer_key(line: &str) -> Option<String> {
    let mut fields = line.split_whitespace();
    let head = fields.next()?;
    match head {
        "ACK" | "NACK" => fields.next().map(|c| format!("EXEC {c}")),
        "STATE" | "NOSTATE" => fields.next().map(|id| format!("STATE {id}")),
        "ACTIVATION" | "NOACTIVATION" => fields.next().map(|id| format!("ACTIVATION {id}")),
        "LIVE" | "SHARDS" | "STATS" => Some(head.to_owned()),
        _ => None,
    }
}

impl NodeProcess {
    /// Starts the node binary at `program` (`env!("CARGO_BIN_EXE_cluster_node")`).
    pub fn spawn(program: &str, args: &NodeArgs) -> std::io::Result<Self> {
        let mut child = Command::new(program)
            .args(args.to_args())
            .env("RUST_LOG", std::env::var("NODE_LOG").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let stdin = child.stdin.take();
        let waiters: Arc<Mutex<Waiters>> = Arc::default();
        let (ready_tx, ready) = watch::channel(None);
        let name = args.name.clone();
        let reader_waiters = Arc::clone(&waiters);
        let reader_name = name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if let ["READY", pid, address, node_id] = fields.as_slice() {
                    let parsed = (pid.parse(), node_id.parse());
                    if let (Ok(pid), Ok(node_id)) = parsed {
                        let _ = ready_tx.send(Some((pid, (*address).to_owned(), node_id)));
                    }
                    continue;
                }
                let Some(key) = answer_key(&line) else {
                    if line != "BYE" {
                        eprintln!("{reader_name}: unexpected line {line:?}");
                    }
                    continue;
                };
                let waiter = reader_waiters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&key)
                    .and_then(VecDeque::pop_front);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(line);
                }
            }
            // The process ended: every request still waiting gets no answer.
            reader_waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        });
        Ok(Self {
            child: Mutex::new(child),
            stdin: tokio::sync::Mutex::new(stdin),
            waiters,
            ready,
            name,
        })
    }

    /// Waits for `READY` (panics if the node ends first or takes longer than `timeout`) and
    /// returns its pid, address and node id.
    pub async fn wait_ready(&self, timeout: Duration) -> (u32, String, Uuid) {
        let mut ready = self.ready.clone();
        let waited = tokio::time::timeout(timeout, ready.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(value)) => value
                .clone()
                .unwrap_or_else(|| panic!("{}: no READY", self.name)),
            Ok(Err(_)) => panic!("{}: the node ended before READY", self.name),
            Err(_) => panic!("{}: no READY within {timeout:?}", self.name),
        }
    }

    /// The node's id (after [`wait_ready`](Self::wait_ready)).
    pub fn node_id(&self) -> Option<Uuid> {
        self.ready.borrow().as_ref().map(|(_, _, id)| *id)
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `line` and waits up to `timeout` for the answer matched by `key`; `Err(true)`
    /// when the node ended first, `Err(false)` when no answer came in time.
    async fn request(&self, key: String, line: String, timeout: Duration) -> Result<String, bool> {
        let (sender, answer) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .push_back(sender);
        let written = {
            let mut stdin = self.stdin.lock().await;
            match stdin.as_mut() {
                Some(stdin) => {
                    let mut bytes = line.into_bytes();
                    bytes.push(b'\n');
                    match stdin.write_all(&bytes).await {
                        Ok(()) => stdin.flush().await.is_ok(),
                        Err(_) => false,
                    }
                }
                None => false,
            }
        };
        if !written {
            return Err(true);
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(_)) => Err(true),
            // Given up on. Its sender stays queued, closed: the node answers every line, and
            // its late answer must be dropped there, not handed to the next request with this
            // key (a later STATE read would get an older state).
            Err(_) => Err(false),
        }
    }

    /// Deposits `amount` into `wallet` as command `command`.
    pub async fn exec(&self, wallet: &str, command: Uuid, amount: i64, timeout: Duration) -> Exec {
        let line = format!("EXEC {wallet} {command} deposit {amount}");
        match self.request(format!("EXEC {command}"), line, timeout).await {
            Ok(answer) => {
                let fields: Vec<&str> = answer.split_whitespace().collect();
                match fields.as_slice() {
                    ["ACK", _, version, duplicate] => Exec::Ack {
                        version: version
                            .parse()
                            .unwrap_or_else(|_| panic!("bad answer {answer:?}")),
                        duplicate: *duplicate == "1",
                    },
                    ["NACK", _, kind] => Exec::Nack((*kind).to_owned()),
                    _ => panic!("{}: bad answer {answer:?}", self.name),
                }
            }
            Err(true) => Exec::Gone,
            Err(false) => Exec::NoAnswer,
        }
    }

    /// The version and balance of `wallet`.
    pub async fn state(&self, wallet: &str, timeout: Duration) -> State {
        let line = format!("STATE {wallet}");
        match self.request(line.clone(), line, timeout).await {
            Ok(answer) => {
                let fields: Vec<&str> = answer.split_whitespace().collect();
                match fields.as_slice() {
                    ["STATE", _, version, balance] => State::Found {
                        version: version
                            .parse()
                            .unwrap_or_else(|_| panic!("bad answer {answer:?}")),
                        balance: balance
                            .parse()
                            .unwrap_or_else(|_| panic!("bad answer {answer:?}")),
                    },
                    ["NOSTATE", _, kind] => State::Failed((*kind).to_owned()),
                    _ => panic!("{}: bad answer {answer:?}", self.name),
                }
            }
            Err(true) => State::Gone,
            Err(false) => State::NoAnswer,
        }
    }

    /// How the actor answering for `wallet` on this node was activated: `Ok((version,
    /// snapshot version, events replayed))`, or the failure kind (`"gone"`, `"no_answer"` when
    /// the node ended or did not answer).
    pub async fn activation(
        &self,
        wallet: &str,
        timeout: Duration,
    ) -> Result<(u64, Option<u64>, u64), String> {
        let line = format!("ACTIVATION {wallet}");
        let answer = match self.request(line.clone(), line, timeout).await {
            Ok(answer) => answer,
            Err(true) => return Err("gone".into()),
            Err(false) => return Err("no_answer".into()),
        };
        let fields: Vec<&str> = answer.split_whitespace().collect();
        let number = |text: &str| {
            text.parse::<u64>()
                .unwrap_or_else(|_| panic!("{}: bad answer {answer:?}", self.name))
        };
        match fields.as_slice() {
            ["ACTIVATION", _, version, snapshot, replayed] => Ok((
                number(version),
                (*snapshot != "-").then(|| number(snapshot)),
                number(replayed),
            )),
            ["NOACTIVATION", _, kind] => Err((*kind).to_owned()),
            _ => panic!("{}: bad answer {answer:?}", self.name),
        }
    }

    /// The ids among `<prefix>0 … <prefix>(count-1)` with a live actor on this node, each with
    /// whether the node serves it now (false: the actor exists, but its shard is not served
    /// here, so it takes no call); `None` when the node did not answer in time.
    pub async fn live(
        &self,
        prefix: &str,
        count: usize,
        timeout: Duration,
    ) -> Option<Vec<(String, bool)>> {
        let line = format!("LIVE {prefix} {count}");
        let answer = self.request("LIVE".into(), line, timeout).await.ok()?;
        let list = answer.strip_prefix("LIVE").unwrap_or_default().trim();
        Some(
            list.split(',')
                .filter(|id| !id.is_empty())
                .map(|id| match id.strip_suffix('~') {
                    Some(id) => (id.to_owned(), false),
                    None => (id.to_owned(), true),
                })
                .collect(),
        )
    }

    /// How many shards the node serves; `None` when it did not answer in time.
    pub async fn shards(&self, timeout: Duration) -> Option<usize> {
        let answer = self
            .request("SHARDS".into(), "SHARDS".into(), timeout)
            .await
            .ok()?;
        answer.strip_prefix("SHARDS ")?.trim().parse().ok()
    }

    /// The node's counters (`forwards_ok`, `forwards_lost`, `claims`, `self_fences`, …);
    /// `None` when it did not answer in time.
    pub async fn stats(&self, timeout: Duration) -> Option<BTreeMap<String, u64>> {
        let answer = self
            .request("STATS".into(), "STATS".into(), timeout)
            .await
            .ok()?;
        Some(
            answer
                .split_whitespace()
                .skip(1)
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    fn signal(&self, signal: &str) {
        let Some(pid) = self.pid() else {
            return;
        };
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill {signal} {pid}: {e}"));
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Kills the node with SIGKILL and waits until it is gone.
    pub async fn kill(&self) {
        let _ = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start_kill();
        self.wait_exit(Duration::from_secs(10)).await;
    }

    /// Freezes the node (SIGSTOP): it answers nothing and heartbeats nothing until
    /// [`cont`](Self::cont).
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// Resumes a node frozen by [`stop`](Self::stop) (SIGCONT).
    pub fn cont(&self) {
        self.signal("-CONT");
    }

    /// Asks the node to leave gracefully (closes its stdin) and waits up to `timeout` for it
    /// to exit; kills it after that. True when it exited by itself.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        drop(self.stdin.lock().await.take());
        let exited = self.wait_exit(timeout).await;
        if !exited {
            self.kill().await;
        }
        exited
    }

    async fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let exited = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_wait()
                .map(|status| status.is_some())
                .unwrap_or(true);
            if exited {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
