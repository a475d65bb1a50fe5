//! Reliability suite of the workspace: crashes, concurrent writers, database outages, corrupt
//! snapshots, user-code faults, bad input and decoder robustness, against PostgreSQL and with
//! real processes. The tests live in `tests/`; this library holds what they share:
//!
//! - [`wallet`]: the aggregate under test (every event carries its command's id);
//! - [`worker`]: the line protocol of the `ledger_worker` binary and a handle to run, kill and
//!   read it;
//! - [`audit`]: reading the stored streams and checking them against the acknowledgements;
//! - [`cluster`]: a PostgreSQL cluster a test owns and can stop and start;
//! - [`node`]: the line protocol of the `cluster_node` binary (one node of a wallet cluster)
//!   and a handle to run, kill, stop, resume and talk to it;
//! - [`projection_node`]: the read model, line protocol and raw-SQL audit of the
//!   `projection_node` binary (an exactly-once projection), and a handle to run, watch and kill it;
//! - [`proxy`]: a TCP proxy that cuts, stalls or closes connections to a server;
//! - [`wallet_cluster`]: a cluster of `cluster_node` processes under a deposit load, and the
//!   raw-SQL audit of what it stored.

pub mod audit;
pub mod cluster;
pub mod node;
pub mod pg_wire;
pub mod projection_node;
pub mod proxy;
pub mod reminders;
pub mod wallet;
pub mod wallet_cluster;
pub mod worker;

use std::sync::Arc;

use aggregate_actors::event_stores::{EventStore, SnapshotStore};
use aggregate_actors::strategy::Never;
use aggregate_actors::{AggregateSettings, Executor};

use crate::wallet::Wallet;

/// The seed of a randomised test: `$<var>` if set (to replay a failure), else a fresh one.
/// Printed either way.
pub fn seed(test: &str, var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{var}={value:?} is not a u64")),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: seed {seed} (replay with {var}={seed})");
    seed
}

/// A number from `$<var>`, or `default`.
pub fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    match std::env::var(var) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{var}={value:?} cannot be parsed")),
        Err(_) => default,
    }
}

/// An executor that only reads: no snapshot strategy, no snapshot on passivation, so checking
/// state through it leaves the stores as they were.
pub fn reading_executor(
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
) -> Executor {
    Executor::builder(events, snapshots)
        .register::<Wallet>(
            AggregateSettings::new()
                .strategy(Never)
                .snapshot_on_passivation(false),
        )
        .build()
        .unwrap_or_else(|e| panic!("building an executor: {e}"))
}

/// A URL on 127.0.0.1 at a port nothing listens on (bound, then released).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("binding a local port: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local address: {e}"))
        .port();
    drop(listener);
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// Runs `program` (a probe binary) with `args` and returns its stdout, or a description of how
/// it died (signal, exit code, stderr) when it did not exit successfully.
pub fn run_probe(program: &str, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(program)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "the process died ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Keeps panics raised on purpose by [`wallet::Wallet`] (their message says "on purpose") out of
/// the test output; every other panic is reported as usual.
pub fn quiet_intentional_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if !message.contains("on purpose") {
                default(info);
            }
        }));
    });
}
