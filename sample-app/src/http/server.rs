//! `serve`: the API on a listener until Ctrl-C or SIGTERM, on one process or as a node of a
//! cluster ([`crate::cluster`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aggregate_actors::event_stores::StoreError;
use aggregate_actors::schedule::Schedules;
use aggregate_actors::scheduler::SchedulerSettings;

use super::{AppState, router};
use crate::cluster::{ClusterOptions, JoinError, Member};
use crate::domain::ReviewPolicy;
use crate::ledger::{SnapshotConfigFileError, Stores, read_snapshot_config};
use crate::read_model::{ReadModel, ReadModelError};
use crate::scheduler::ReminderScheduler;

/// How to run `serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// PostgreSQL URL; in-memory stores when `None`.
    pub database_url: Option<String>,
    /// PostgreSQL pool size.
    pub max_connections: u32,
    /// How long an account may stay frozen before its automatic review.
    pub review_frozen_after: ReviewPolicy,
    /// Join a cluster of `serve` processes on the same database; a single process when `None`.
    pub cluster: Option<ClusterOptions>,
    /// A snapshot configuration file (TOML, or JSON by its `.json` name) applied over the
    /// types' own snapshot settings.
    pub snapshot_config: Option<std::path::PathBuf>,
}

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The Prometheus recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    /// The stores could not be opened.
    #[error("cannot open the stores: {0}")]
    Store(#[from] StoreError),
    /// The executor could not be built.
    #[error("cannot build the executor: {0}")]
    Build(#[from] aggregate_actors::BuildError),
    /// Joining the cluster failed (`--cluster` without a database among the reasons).
    #[error(transparent)]
    Cluster(#[from] JoinError),
    /// The snapshot configuration file could not be used.
    #[error(transparent)]
    SnapshotConfig(#[from] SnapshotConfigFileError),
    /// The read model's projection could not be started.
    #[error("cannot start the read model: {0}")]
    ReadModel(#[from] ReadModelError),
    /// Binding or serving failed.
    #[error("cannot serve on {address}: {source}")]
    Io {
        /// The address.
        address: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the API until Ctrl-C or SIGTERM, then drains requests in flight and shuts the
/// executor down (queued commands finish, passivation snapshots are written). In cluster mode
/// the node then leaves the cluster first, handing its shards to the others.
///
/// A [`ReminderScheduler`] runs next to the executor and fires due reminders (the reviews of
/// accounts frozen for [`ServeOptions::review_frozen_after`]); a cluster node fires those of
/// the shards it owns. It is stopped after the HTTP server and before the executor (and before
/// the node leaves the cluster).
///
/// Prints `listening on http://ADDRESS` on stdout once serving, so a caller that asked for
/// port 0 can read the port; in cluster mode a second line follows,
/// `cluster node NODE_ID at ADVERTISED (listening on BOUND)`.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    // Checked before anything starts: a cluster cannot share in-memory stores.
    if options.cluster.is_some() && options.database_url.is_none() {
        return Err(JoinError::NeedsDatabase.into());
    }
    // The recorder must be in place before the executor is built: the framework resolves its
    // metric handles when aggregate types are registered.
    // Tapped: the activation histograms are also kept in buckets for `/stats` and the dashboard.
    let handle = super::histograms::install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        // Histograms accumulate until upkeep drains them into their summaries.
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });

    // Bound before joining, so a busy port fails before this process owns any shard.
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Io {
            address: options.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| ServeError::Io {
        address: options.listen,
        source,
    })?;
    // Read before anything starts: a bad file fails the start.
    let snapshot_config = options
        .snapshot_config
        .as_deref()
        .map(read_snapshot_config)
        .transpose()?;
    let mut stores = Stores::open(options.database_url.as_deref(), options.max_connections).await?;
    if let (Some(file), Some(path)) = (snapshot_config, &options.snapshot_config) {
        stores = stores.with_snapshot_config(file).map_err(|source| {
            SnapshotConfigFileError::Config {
                path: path.clone(),
                source,
            }
        })?;
    }
    // Before joining: a failure here leaves no shard to hand back.
    let read_model = ReadModel::start(&stores).await?;
    let (executor, member) = match &options.cluster {
        Some(cluster) => {
            let (member, executor) =
                Member::join(&stores, cluster, options.review_frozen_after).await?;
            (executor, Some(member))
        }
        None => (
            stores.executor_with(Some(options.review_frozen_after))?,
            None,
        ),
    };
    // A cluster node fires the reminders of the shards it owns at each poll: after a shard
    // moves, its new owner fires them (an old owner's late firing is refused by the fence).
    // Snapshot schedules live next to the events (every node of a cluster sees the same
    // ones, and each occurrence runs on one of them).
    let schedules = Schedules::new(stores.schedule_store());
    let settings = SchedulerSettings {
        shards: member.as_ref().map(Member::reminder_shards),
        schedules: Some(Arc::clone(schedules.store())),
        ..ReminderScheduler::service_settings()
    };
    let scheduler = Some(ReminderScheduler::start(&executor, settings));
    tracing::info!(%address, stores = %stores.description, "serving");
    println!("listening on http://{address}");
    if let Some(member) = &member {
        println!(
            "cluster node {} at {} (listening on {})",
            member.node_id(),
            member.advertised(),
            member.listening()
        );
    }

    let app = router(AppState {
        executor: executor.clone(),
        metrics: Some(handle),
        stores: stores.description.clone(),
        cluster: member.as_ref().map(Member::status),
        read_model: read_model.clone(),
        scheduler: scheduler.clone(),
        schedules: Some(schedules),
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|source| ServeError::Io { address, source });
    tracing::info!("HTTP server stopped; shutting the executor down");
    if let Some(scheduler) = &scheduler {
        let stats = scheduler.stop().await;
        tracing::info!(
            fired = stats.fired,
            rejected = stats.rejected,
            failed = stats.failed,
            "reminder scheduler stopped"
        );
    }
    match member {
        Some(member) => member.leave(&executor).await,
        None => executor.shutdown().await,
    }
    read_model.stop().await;
    tracing::info!("executor and read model shut down");
    served
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
