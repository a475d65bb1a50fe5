//! The scenarios, one module each. Every scenario takes the [`Ctx`] and returns a report
//! [`Section`](crate::report::Section) with its tables, its ratio to the baseline and its headline row.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::pg::PgServer;

pub mod cluster;
pub mod codec;
pub mod cqrs;
pub mod durable;
pub mod executor;
pub mod recovery;
pub mod scale;
pub mod snapshot_cost;

/// What every scenario gets.
pub struct Ctx {
    /// Quick mode: shorter runs and smaller sizes.
    pub quick: bool,
    /// The PostgreSQL server, if one is available.
    pub pg: Option<Arc<PgServer>>,
    /// Where the report and plots go.
    pub out_dir: PathBuf,
}

impl Ctx {
    /// The measured duration of one timed run: short in quick mode.
    pub fn duration(&self) -> Duration {
        if self.quick {
            Duration::from_millis(800)
        } else {
            Duration::from_secs(3)
        }
    }

    /// The unmeasured warm-up before a timed run.
    pub fn warmup(&self) -> Duration {
        if self.quick {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(750)
        }
    }

    /// A longer measured duration, for runs against PostgreSQL whose figures vary more.
    pub fn pg_duration(&self) -> Duration {
        if self.quick {
            Duration::from_millis(1_500)
        } else {
            Duration::from_secs(5)
        }
    }
}

/// A scenario: its name for `--only`, its title, and its entry point.
pub struct Scenario {
    /// Short name, e.g. `executor`.
    pub name: &'static str,
    /// Title in the report.
    pub title: &'static str,
}

/// Every scenario, in report order.
pub const ALL: [Scenario; 8] = [
    Scenario {
        name: "executor",
        title: "1. Executor overhead (in-memory)",
    },
    Scenario {
        name: "recovery",
        title: "2. Recovery: activation time",
    },
    Scenario {
        name: "durable",
        title: "3. Durable commands on PostgreSQL",
    },
    Scenario {
        name: "cqrs",
        title: "4. Against cqrs-es + postgres-es",
    },
    Scenario {
        name: "snapshot-cost",
        title: "5. Snapshot cost on the command path",
    },
    Scenario {
        name: "scale",
        title: "6. Scale: memory per live actor, activations/s",
    },
    Scenario {
        name: "codec",
        title: "7. Codec: snapshot bytes and time",
    },
    Scenario {
        name: "cluster",
        title: "8. Cluster: forwarding overhead, 3 nodes vs 1",
    },
];
