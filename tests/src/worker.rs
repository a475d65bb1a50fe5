//! The worker process: its line protocol, and a handle the tests use to run, kill and read it.
//!
//! The worker (`src/bin/ledger_worker.rs`) writes one line per event, each flushed at once:
//!
//! ```text
//! READY <pid>                                      connected, about to send commands
//! ACK <id> <version> <amount> <command> <events>   execute returned Ok (events are durable)
//! NACK <id> <command> <kind>                       execute returned an error of this kind
//! STATS key=value …                                the executor's counters, at a clean exit
//! ```
//!
//! A SIGKILL can cut the last line short; lines without their newline are dropped.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// An acknowledged command, as the worker reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The wallet id.
    pub id: String,
    /// The stream version after the command.
    pub version: u64,
    /// The balance change.
    pub amount: i64,
    /// The command id carried by its events.
    pub command: Uuid,
    /// Events the command stored.
    pub events: u32,
}

impl Ack {
    /// The protocol line.
    pub fn line(&self) -> String {
        format!(
            "ACK {} {} {} {} {}",
            self.id, self.version, self.amount, self.command, self.events
        )
    }
}

/// A command that failed, as the worker reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The wallet id.
    pub id: String,
    /// The command id.
    pub command: Uuid,
    /// `rejected`, `conflict`, `unavailable`, `timeout`, `stopped` or `other`.
    pub kind: String,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `READY <pid>`.
    Ready(u32),
    /// `ACK …`.
    Ack(Ack),
    /// `NACK …`.
    Nack(Nack),
    /// `STATS …`.
    Stats(BTreeMap<String, u64>),
}

/// Parses one protocol line.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let bad = || format!("unparsable worker line {line:?}");
    match fields.as_slice() {
        ["READY", pid] => Ok(Line::Ready(pid.parse().map_err(|_| bad())?)),
        ["ACK", id, version, amount, command, events] => Ok(Line::Ack(Ack {
            id: (*id).to_owned(),
            version: version.parse().map_err(|_| bad())?,
            amount: amount.parse().map_err(|_| bad())?,
            command: command.parse().map_err(|_| bad())?,
            events: events.parse().map_err(|_| bad())?,
        })),
        ["NACK", id, command, kind] => Ok(Line::Nack(Nack {
            id: (*id).to_owned(),
            command: command.parse().map_err(|_| bad())?,
            kind: (*kind).to_owned(),
        })),
        ["STATS", pairs @ ..] => pairs
            .iter()
            .map(|pair| {
                let (key, value) = pair.split_once('=').ok_or_else(bad)?;
                Ok((key.to_owned(), value.parse().map_err(|_| bad())?))
            })
            .collect::<Result<_, String>>()
            .map(Line::Stats),
        _ => Err(bad()),
    }
}

/// Settings of one worker run (its command-line arguments).
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// PostgreSQL URL of the database to use.
    pub database_url: String,
    /// Name in the worker's `application_name` and ids of nothing else.
    pub name: String,
    /// Wallet ids are `<prefix>-0 … <prefix>-(ids-1)`.
    pub prefix: String,
    /// Number of wallets.
    pub ids: usize,
    /// Concurrent tasks sending commands.
    pub tasks: usize,
    /// Commands per task; 0 = until killed.
    pub commands: u64,
    /// Random seed of the command mix.
    pub seed: u64,
    /// Snapshot every N events.
    pub snapshot_every: u64,
    /// Conflict retries per command.
    pub max_conflict_retries: u32,
    /// Wait for a line on stdin after READY before sending commands.
    pub wait_for_go: bool,
}

impl WorkerArgs {
    /// Defaults for a worker on `database_url`.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            name: "worker".into(),
            prefix: "w".into(),
            ids: 8,
            tasks: 4,
            commands: 0,
            seed: 1,
            snapshot_every: 5,
            max_conflict_retries: 3,
            wait_for_go: false,
        }
    }

    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--database-url".into(),
            self.database_url.clone(),
            "--name".into(),
            self.name.clone(),
            "--prefix".into(),
            self.prefix.clone(),
            "--ids".into(),
            self.ids.to_string(),
            "--tasks".into(),
            self.tasks.to_string(),
            "--commands".into(),
            self.commands.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--snapshot-every".into(),
            self.snapshot_every.to_string(),
            "--max-conflict-retries".into(),
            self.max_conflict_retries.to_string(),
        ];
        if self.wait_for_go {
            args.push("--wait-for-go".into());
        }
        args
    }
}

/// What a worker reported before it ended.
#[derive(Debug)]
pub struct WorkerOutput {
    /// Acknowledged commands.
    pub acks: Vec<Ack>,
    /// Failed commands.
    pub nacks: Vec<Nack>,
    /// The `STATS` line, if it exited cleanly.
    pub stats: Option<BTreeMap<String, u64>>,
    /// How it ended.
    pub status: ExitStatus,
    /// A last line cut short (by SIGKILL), dropped.
    pub cut_line: bool,
}

impl WorkerOutput {
    /// One counter of the `STATS` line (0 when absent).
    pub fn stat(&self, key: &str) -> u64 {
        self.stats
            .as_ref()
            .and_then(|s| s.get(key).copied())
            .unwrap_or(0)
    }
}

/// What a process output reader sends: a whole line, or word that the output ended inside one.
pub(crate) enum Chunk {
    /// A whole line, without its line end.
    Line(String),
    /// The output ended inside a line (the process died while writing it).
    Cut,
}

/// Reads `stdout` line by line on a task of its own, sending each line, or [`Chunk::Cut`] when
/// the output ends inside one.
pub(crate) fn read_lines(
    stdout: tokio::process::ChildStdout,
) -> (mpsc::UnboundedReceiver<Chunk>, JoinHandle<()>) {
    let (sender, lines) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut stdout = BufReader::new(stdout);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match stdout.read_until(b'\n', &mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) if buffer.last() == Some(&b'\n') => {
                    let line = String::from_utf8_lossy(&buffer).trim_end().to_owned();
                    let _ = sender.send(Chunk::Line(line));
                }
                Ok(_) => {
                    let _ = sender.send(Chunk::Cut);
                    break;
                }
            }
        }
    });
    (lines, reader)
}

/// A running worker process.
pub struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Chunk>,
    reader: JoinHandle<()>,
    seen: Vec<Line>,
    cut_line: bool,
}

impl WorkerProcess {
    /// Starts the worker binary at `program` (`env!("CARGO_BIN_EXE_ledger_worker")`).
    pub fn spawn(program: &str, args: &WorkerArgs) -> std::io::Result<Self> {
        let mut child = Command::new(program)
            .args(args.to_args())
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
        let (lines, reader) = read_lines(stdout);
        Ok(Self {
            child,
            stdin,
            lines,
            reader,
            seen: Vec::new(),
            cut_line: false,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn take(&mut self, chunk: Chunk) -> Option<Line> {
        match chunk {
            Chunk::Line(text) => {
                let line = parse_line(&text).unwrap_or_else(|e| panic!("{e}"));
                self.seen.push(line.clone());
                Some(line)
            }
            Chunk::Cut => {
                self.cut_line = true;
                None
            }
        }
    }

    /// Waits for `READY` (panics if the worker ends first or takes longer than `timeout`).
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let chunk = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("worker not ready within {timeout:?}"));
            let Some(chunk) = chunk else {
                panic!(
                    "worker ended before it was ready: {:?}",
                    self.child.try_wait()
                );
            };
            if let Some(Line::Ready(_)) = self.take(chunk) {
                return;
            }
        }
    }

    /// Lets a worker started with `wait_for_go` send its commands.
    pub async fn go(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            stdin
                .write_all(b"go\n")
                .await
                .unwrap_or_else(|e| panic!("go: {e}"));
            stdin.flush().await.unwrap_or_else(|e| panic!("go: {e}"));
        }
    }

    fn drain(&mut self) {
        while let Ok(chunk) = self.lines.try_recv() {
            self.take(chunk);
        }
    }

    /// True once the worker has reported `READY` (without waiting).
    pub fn is_ready(&mut self) -> bool {
        self.drain();
        self.seen.iter().any(|line| matches!(line, Line::Ready(_)))
    }

    /// Acknowledgements received so far (without waiting).
    pub fn acks_so_far(&mut self) -> usize {
        self.drain();
        self.seen
            .iter()
            .filter(|line| matches!(line, Line::Ack(_)))
            .count()
    }

    /// Kills the worker with SIGKILL and returns what it reported.
    pub async fn kill(mut self) -> WorkerOutput {
        self.child
            .start_kill()
            .unwrap_or_else(|e| panic!("SIGKILL: {e}"));
        self.collect(Duration::from_secs(30)).await
    }

    /// Waits for the worker to exit by itself (panics after `timeout`) and returns what it
    /// reported.
    pub async fn finish(self, timeout: Duration) -> WorkerOutput {
        self.collect(timeout).await
    }

    async fn collect(mut self, timeout: Duration) -> WorkerOutput {
        drop(self.stdin.take());
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.unwrap_or_else(|e| panic!("waiting for the worker: {e}")),
            Err(_) => {
                let _ = self.child.start_kill();
                panic!("worker did not exit within {timeout:?}");
            }
        };
        let _ = (&mut self.reader).await;
        while let Some(chunk) = self.lines.recv().await {
            self.take(chunk);
        }
        let mut output = WorkerOutput {
            acks: Vec::new(),
            nacks: Vec::new(),
            stats: None,
            status,
            cut_line: self.cut_line,
        };
        for line in self.seen.drain(..) {
            match line {
                Line::Ack(ack) => output.acks.push(ack),
                Line::Nack(nack) => output.nacks.push(nack),
                Line::Stats(stats) => output.stats = Some(stats),
                Line::Ready(_) => {}
            }
        }
        output
    }
}
