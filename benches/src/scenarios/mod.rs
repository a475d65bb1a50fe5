//! The scenarios, one module each. Every scenario takes the [`Ctx`] and returns a report
//! [`Section`](crate::report::Section) with its tables, its ratio to the baseline and its headline row.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::BoxError;
use crate::pg::PgServer;

pub mod cluster;
pub mod codec;
pub mod cqrs;
pub mod durable;
pub mod executor;
pub mod projections;
pub mod recovery;
pub mod scale;
pub mod snapshot_cost;
pub mod snapshot_ops;

/// What every scenario gets.
pub struct Ctx {
    /// Quick mode: shorter runs and smaller sizes.
    pub quick: bool,
    /// The PostgreSQL server, if one is available (`DATABASE_URL`; the test settings of
    /// `scripts/pg-tmp`: fsync and synchronous commit off).
    pub pg: Option<Arc<PgServer>>,
    /// The durable server for the second mode of scenarios 3 and 4 (`DURABLE_DATABASE_URL`:
    /// fsync, synchronous_commit and full_page_writes on), or why there is none.
    pub durable_pg: Result<Arc<PgServer>, String>,
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

/// A PostgreSQL server scenarios 3 and 4 measure on, and what it promises.
pub struct PgMode {
    /// The mode's name in the report: `test settings` or `durable`.
    pub name: &'static str,
    /// The server.
    pub server: Arc<PgServer>,
    /// Its durability settings, e.g. `fsync=off, synchronous_commit=off, full_page_writes=off`.
    pub settings: String,
}

impl Ctx {
    /// The modes scenarios 3 and 4 run in, in report order: the test settings (`pg`), then
    /// durable (`durable_pg`); and, when the durable mode does not run, why not.
    pub async fn pg_modes(&self) -> Result<(Vec<PgMode>, Option<String>), BoxError> {
        let mut modes = Vec::new();
        if let Some(server) = &self.pg {
            modes.push(PgMode {
                name: "test settings",
                server: Arc::clone(server),
                settings: server.durability().await?.to_string(),
            });
        }
        let why_not = match &self.durable_pg {
            Ok(server) => {
                let durability = server.durability().await?;
                if durability.survives_crash() {
                    modes.push(PgMode {
                        name: "durable",
                        server: Arc::clone(server),
                        settings: durability.to_string(),
                    });
                    None
                } else {
                    Some(format!(
                        "the server at DURABLE_DATABASE_URL is not durable ({durability})"
                    ))
                }
            }
            Err(why) => Some(why.clone()),
        };
        Ok((modes, why_not))
    }
}

/// Where the durable mode's server comes from, for its "not run" note.
pub const NO_DURABLE_URL: &str = "no durable server (DURABLE_DATABASE_URL or \
     --durable-database-url; benches/run.sh starts one with `scripts/pg-tmp start --durable`)";

/// A scenario: its name for `--only`, its title, and its entry point.
pub struct Scenario {
    /// Short name, e.g. `executor`.
    pub name: &'static str,
    /// Title in the report.
    pub title: &'static str,
}

/// Every scenario, in report order.
pub const ALL: [Scenario; 10] = [
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
    Scenario {
        name: "projections",
        title: "9. Projections: catch-up and live lag (PostgreSQL)",
    },
    Scenario {
        name: "snapshot-ops",
        title: "10. Snapshot operations",
    },
];
