//! One node of a wallet cluster, for the multi-process cluster tests: joins the cluster in
//! PostgreSQL (membership, shard ownership, fenced appends), serves forwarded calls over
//! HTTP/2, and answers commands read from stdin, one line each, flushed at once. See
//! `integration_tests::node` for the protocol.

use std::collections::BTreeSet;
use std::error::Error;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregate_actors::event_stores::{PgConfig, PgEventStore, PgSnapshotStore, StoreError};
use aggregate_actors::scheduler::{Scheduler, SchedulerSettings};
use aggregate_actors::{
    Aggregate, AggregateSettings, CommandError, CommandOptions, Executor, ExecutorError,
    RuntimeConfig,
};
use clap::Parser;
use cluster::{ClusterConfig, ClusterNode, HttpTransport, TransportStats};
use integration_tests::wallet::{Wallet, WalletCommand, WalletError};
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

/// Command-line arguments.
#[derive(Debug, Parser)]
struct Args {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Reported to PostgreSQL as `application_name`.
    #[arg(long, default_value = "cluster-node")]
    name: String,
    /// Where to listen for forwarded calls (port 0: any free port; the bound address is
    /// advertised).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The address other nodes reach this one at (e.g. a proxy in front of `--listen`);
    /// default: the bound listen address.
    #[arg(long)]
    advertise: Option<String>,
    /// Membership TTL in milliseconds.
    #[arg(long, default_value_t = 3_000)]
    ttl_ms: u64,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    heartbeat_ms: u64,
    /// Self-fence margin in milliseconds.
    #[arg(long, default_value_t = 500)]
    self_fence_margin_ms: u64,
    /// Most shards released per tick.
    #[arg(long, default_value_t = 64)]
    max_releases_per_tick: usize,
    /// How long one command or state read may take, forwarding and waiting for a route
    /// included.
    #[arg(long, default_value_t = 5_000)]
    call_timeout_ms: u64,
    /// Database connections.
    #[arg(long, default_value_t = 12)]
    connections: u32,
    /// Turns reminders on for wallets and runs a reminder scheduler on this node's shards.
    #[arg(long)]
    reminders: bool,
}

/// One flushed line on stdout; a closed pipe means the test is gone.
fn say(line: &str) {
    static OUT: Mutex<()> = Mutex::new(());
    let _guard = OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

struct Node {
    executor: Executor,
    node: ClusterNode,
    transport: HttpTransport,
    /// Every wallet id this node was asked about.
    seen: Mutex<BTreeSet<String>>,
}

fn nack_kind(error: &CommandError<WalletError>) -> &'static str {
    match error {
        CommandError::Rejected(_) => "rejected",
        CommandError::Indeterminate(_) => "indeterminate",
        CommandError::NotStored(ExecutorError::Store(StoreError::Fenced { .. })) => "fenced",
        CommandError::NotStored(e) if e.is_retryable() => "not_stored_retryable",
        CommandError::NotStored(_) => "not_stored",
    }
}

fn state_error_kind(error: &ExecutorError) -> &'static str {
    match error {
        ExecutorError::NotFound { .. } => "not_found",
        e if e.is_retryable() => "not_stored_retryable",
        _ => "not_stored",
    }
}

impl Node {
    fn remember(&self, id: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(id) {
            seen.insert(id.to_owned());
        }
    }

    async fn answer(&self, line: &str) -> String {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["EXEC", id, command, "deposit", amount] => {
                let (Ok(command), Ok(amount)) = (command.parse::<Uuid>(), amount.parse::<i64>())
                else {
                    return format!("ERR bad EXEC line {line:?}");
                };
                self.remember(id);
                let deposit = WalletCommand::Deposit { command, amount };
                let options = CommandOptions::new().command_id(command.into());
                match self
                    .executor
                    .execute_with::<Wallet>(id, deposit, options)
                    .await
                {
                    Ok(done) => format!(
                        "ACK {command} {} {}",
                        done.version,
                        u8::from(done.duplicate)
                    ),
                    Err(error) => {
                        let kind = nack_kind(&error);
                        if kind == "not_stored" || kind == "rejected" {
                            eprintln!("cluster_node: {id} {command}: {error}");
                        }
                        format!("NACK {command} {kind}")
                    }
                }
            }
            ["STATE", id] => {
                self.remember(id);
                match self.executor.state::<Wallet>(id).await {
                    Ok(view) => format!("STATE {id} {} {}", view.version, view.state.balance),
                    Err(error) => format!("NOSTATE {id} {}", state_error_kind(&error)),
                }
            }
            ["LIVE"] => {
                let seen: Vec<String> = self
                    .seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                self.live(seen.iter().map(String::as_str))
            }
            ["LIVE", prefix, count] => {
                let Ok(count) = count.parse::<usize>() else {
                    return format!("ERR bad LIVE line {line:?}");
                };
                let ids: Vec<String> = (0..count).map(|n| format!("{prefix}{n}")).collect();
                self.live(ids.iter().map(String::as_str))
            }
            ["ACTIVATION", id] => {
                self.remember(id);
                match self.executor.state::<Wallet>(id).await {
                    Ok(view) => {
                        let a = view.activation;
                        let snapshot = a
                            .snapshot_version()
                            .map_or("-".to_owned(), |v| v.to_string());
                        format!(
                            "ACTIVATION {id} {} {snapshot} {}",
                            view.version, a.events_replayed
                        )
                    }
                    Err(error) => format!("NOACTIVATION {id} {}", state_error_kind(&error)),
                }
            }
            ["SHARDS"] => format!("SHARDS {}", self.node.owned().len()),
            ["STATS"] => {
                let TransportStats {
                    ok,
                    unreachable,
                    lost,
                    ..
                } = self.transport.stats();
                let cluster = self.node.stats();
                format!(
                    "STATS forwards_ok={ok} forwards_unreachable={unreachable} \
                     forwards_lost={lost} shards={} claims={} releases={} self_fences={} \
                     heartbeat_failures={} fenced_appends={}",
                    cluster.shards_owned,
                    cluster.claims,
                    cluster.releases,
                    cluster.self_fences,
                    cluster.heartbeat_failures,
                    cluster.fenced_appends
                )
            }
            _ => format!("ERR unknown line {line:?}"),
        }
    }

    /// The ids with a live actor here; one whose shard this node does not serve now (its
    /// lease ran out, or the shard is draining or gone) is marked with a trailing `~`.
    fn live<'a>(&self, ids: impl Iterator<Item = &'a str>) -> String {
        let live: Vec<String> = ids
            .filter(|id| self.executor.is_live::<Wallet>(id))
            .map(|id| {
                let shard = self.node.shard_of(Wallet::TYPE, id);
                if self.node.owned().serves(shard) {
                    id.to_owned()
                } else {
                    format!("{id}~")
                }
            })
            .collect();
        format!("LIVE {}", live.join(","))
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let config = PgConfig::new(args.database_url.clone())
        .max_connections(args.connections.max(4))
        .acquire_timeout(Duration::from_secs(10))
        .application_name(args.name.clone());
    let events = PgEventStore::connect(&config).await?;
    let pool = events.pool().clone();
    let snapshots = PgSnapshotStore::with_migrated_pool(pool.clone(), config.limits)
        .with_client_timeout(config.client_timeout());

    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let address = listener.local_addr()?;
    let cluster_config = ClusterConfig {
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        ttl: Duration::from_millis(args.ttl_ms),
        self_fence_margin: Duration::from_millis(args.self_fence_margin_ms),
        max_releases_per_tick: args.max_releases_per_tick.max(1),
        ..ClusterConfig::new(
            args.advertise
                .clone()
                .unwrap_or_else(|| address.to_string()),
        )
    };
    let node = ClusterNode::start(pool, cluster_config).await?;

    let transport = HttpTransport::new()?;
    let mut wallet_settings = AggregateSettings::new().runtime(RuntimeConfig {
        call_timeout: Duration::from_millis(args.call_timeout_ms),
        ..RuntimeConfig::default()
    });
    if args.reminders {
        wallet_settings = wallet_settings.reminders();
    }
    let executor = node
        .executor_builder(
            Arc::new(events),
            Arc::new(snapshots),
            Arc::new(transport.clone()),
        )
        .register_remote::<Wallet>(wallet_settings)
        .build()?;
    node.attach(&executor).await;
    let _scheduler = args.reminders.then(|| {
        Scheduler::start(
            executor.clone(),
            SchedulerSettings {
                poll_interval: Duration::from_millis(50),
                retry_after: Duration::from_millis(200),
                shards: Some(node.reminder_shards()),
                ..SchedulerSettings::default()
            },
        )
    });
    let server = cluster::serve(listener, executor.inbound());

    let state = Arc::new(Node {
        executor: executor.clone(),
        node: node.clone(),
        transport,
        seen: Mutex::new(BTreeSet::new()),
    });
    say(&format!(
        "READY {} {address} {}",
        std::process::id(),
        node.node_id()
    ));

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let answer = state.answer(&line).await;
                        say(&answer);
                    });
                }
                Ok(None) | Err(_) => break,
            },
            _ = terminate.recv() => break,
        }
    }
    if let Err(error) = node.leave().await {
        eprintln!("cluster_node: leaving the cluster: {error}");
    }
    executor.shutdown().await;
    server.shutdown().await;
    say("BYE");
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}
