//! [`ClusterNode`]: one process's membership, its claims and releases of shards, and its
//! self-fencing, driven by a tick loop.
//!
//! Each tick (every `heartbeat_interval`): renew the heartbeat and read the live members (one
//! round trip, database clock), read the ownership of every shard, compute every shard's
//! preferred owner by rendezvous hashing, then
//! - claim the shards this node should own whose owner is nobody or a dead node (conditional
//!   `UPDATE`, epoch + 1);
//! - release, at most `max_releases_per_tick` at a time, the shards another live node should
//!   own: stop taking calls for the shard, let the [`ShardHandoff`] finish and passivate its
//!   actors (snapshots written), then clear the owner (epoch + 1). Each release runs in a task
//!   of its own: a handoff may take as long as its actors' queues and snapshots, and the tick
//!   must go on heartbeating meanwhile, or a slow handoff would cost the node its lease. Those
//!   tasks and their bookkeeping are the `release` module's.
//!
//! A call whose route missed (no owner known, or the owner did not answer) asks for an early
//! tick, at most one per 200 ms: a survivor then claims a dead node's shards, and learns the
//! claims of the others, within moments of the TTL running out instead of up to a heartbeat
//! later each.
//!
//! A node whose heartbeat has not succeeded for `ttl - self_fence_margin` (measured on its own
//! monotonic clock from when the last successful heartbeat was sent) stops serving every shard
//! and tells the handoff to stop its actors, before the others may consider it dead and take
//! its shards: it never serves a state another node may be changing. A tick that starts after
//! such a gap (the process was paused) fences before it heartbeats. Every statement is bounded
//! on the client (`round_trip`): the heartbeat until the lease it would renew has run out, the
//! tick's other statements by one interval (so a slow one does not delay the next heartbeat
//! into a gap), releases, joining and leaving by the lease. A server that answers nothing
//! cannot hold a tick, and with it the fence and [`leave`](ClusterNode::leave), for the
//! minutes TCP takes to give up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::{Mutex, RwLock, watch};
use uuid::Uuid;

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::handoff::ShardHandoff;
use crate::membership::{self, Member};
use crate::owned::OwnedShards;
use crate::ownership::{self, Ownership};
use crate::placement::ClusterPlacement;
use crate::release::{self, Releases, ReleasingNode};
use crate::routes::RouteTable;
use crate::schema;
use crate::shard::{preferred_owner, shard_of};

/// Connections of the node's own pool: the tick's statements run one at a time, and a second
/// one lets `leave` or a test's `tick_now` overlap a tick without waiting.
const MEMBERSHIP_CONNECTIONS: u32 = 2;

/// The shortest time between two ticks when calls ask for an early one.
const EARLY_TICK_GAP: Duration = Duration::from_millis(200);

/// Where an aggregate is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Here.
    Local,
    /// On another live node.
    Remote {
        /// Its node id.
        node_id: Uuid,
        /// Its address.
        address: String,
    },
    /// Nobody serves its shard right now (a move or a failure is in progress); retry shortly.
    Unassigned,
}

/// Counters of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Shards served here now.
    pub shards_owned: usize,
    /// Live members seen at the last successful heartbeat (this one included).
    pub members: usize,
    /// Shards claimed since start.
    pub claims: u64,
    /// Shards released since start.
    pub releases: u64,
    /// Heartbeats that failed.
    pub heartbeat_failures: u64,
    /// Times this node stopped serving everything for want of a heartbeat.
    pub self_fences: u64,
    /// Round-trip time of the last successful heartbeat, in microseconds.
    pub heartbeat_micros: u64,
    /// Appends refused because this node no longer (or never) owned their shard.
    pub fenced_appends: u64,
}

/// One node of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    node_id: Uuid,
    config: ClusterConfig,
    owned: Arc<OwnedShards>,
    routes: Arc<RouteTable>,
    handoff: RwLock<Option<Arc<dyn ShardHandoff>>>,
    /// Serialises ticks (the loop and `tick_now`).
    tick: Mutex<TickState>,
    /// The releases under way, each in a task of its own, and their count.
    releases: Releases,
    stop: watch::Sender<bool>,
    counters: Counters,
}

struct TickState {
    last_heartbeat: Instant,
}

#[derive(Default)]
struct Counters {
    members: AtomicU64,
    claims: AtomicU64,
    heartbeat_failures: AtomicU64,
    self_fences: AtomicU64,
    heartbeat_micros: AtomicU64,
}

impl ClusterNode {
    /// Prepares the tables, joins with a fresh node id, runs a first tick (claiming what this
    /// node should own) and starts the tick loop. Needs a Tokio runtime.
    ///
    /// `pool` may be the event store's: the node opens its own two connections with the same
    /// settings for heartbeats and ownership, so a saturated pool never delays a heartbeat
    /// into a self-fence.
    pub async fn start(pool: PgPool, config: ClusterConfig) -> Result<Self, ClusterError> {
        config.check()?;
        schema::prepare(&pool, &config).await?;
        let pool = PgPoolOptions::new()
            .max_connections(MEMBERSHIP_CONNECTIONS)
            .acquire_timeout(config.ttl)
            .connect_with((*pool.connect_options()).clone())
            .await
            .map_err(|e| crate::error::db("opening the membership connections", e))?;
        let node_id = Uuid::now_v7();
        membership::join(&pool, node_id, &config.address, config.lease()).await?;
        let (stop, stopped) = watch::channel(false);
        let node = Self {
            inner: Arc::new(Inner {
                owned: Arc::new(OwnedShards::new(config.shard_count)),
                routes: Arc::new(RouteTable::default()),
                handoff: RwLock::new(None),
                tick: Mutex::new(TickState {
                    last_heartbeat: Instant::now(),
                }),
                releases: Releases::new(config.max_releases_per_tick),
                stop,
                counters: Counters::default(),
                pool,
                node_id,
                config,
            }),
        };
        tracing::info!(node = %node_id, address = %node.inner.config.address, "joined the cluster");
        node.tick_now().await;
        tokio::spawn(run(Arc::downgrade(&node.inner), stopped));
        Ok(node)
    }

    /// This process's node id.
    pub fn node_id(&self) -> Uuid {
        self.inner.node_id
    }

    /// The node's own connections (heartbeats, ownership); closing them cuts the node off the
    /// database, as a test of self-fencing does.
    pub fn membership_pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The configuration in effect.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The shards this node owns (shared with its placements and fenced stores).
    pub fn owned(&self) -> &Arc<OwnedShards> {
        &self.inner.owned
    }

    /// The shards this node owns at each call, as a reminder scheduler's filter
    /// ([`SchedulerSettings::shards`](aggregate_actors::scheduler::SchedulerSettings::shards)):
    /// every reminder fires on the owner of its aggregate's shard, and after a shard moves, on
    /// its new owner (the old owner's firing, if any, is refused by the fence).
    pub fn reminder_shards(&self) -> aggregate_actors::scheduler::ShardFilter {
        let owned = Arc::clone(&self.inner.owned);
        Arc::new(move || Some(owned.owned()))
    }

    /// Sets what runs when shards leave this node.
    pub async fn set_handoff(&self, handoff: Arc<dyn ShardHandoff>) {
        *self.inner.handoff.write().await = Some(handoff);
    }

    /// The shard of an aggregate in this cluster.
    pub fn shard_of(&self, aggregate_type: &str, id: &str) -> u32 {
        shard_of(aggregate_type, id, self.inner.config.shard_count)
    }

    /// Where aggregate `id` of `aggregate_type` is served, as of the last tick.
    pub fn route(&self, aggregate_type: &str, id: &str) -> Route {
        let shard = self.shard_of(aggregate_type, id);
        if self.inner.owned.serves(shard) {
            return Route::Local;
        }
        match self.inner.routes.remote_owner(shard, self.inner.node_id) {
            Some((node_id, address)) => Route::Remote { node_id, address },
            None => Route::Unassigned,
        }
    }

    /// The runtime placement of `aggregate_type` on this node: serves the ids of shards owned
    /// here and locates the others through the route table.
    pub fn placement(&self, aggregate_type: &'static str) -> ClusterPlacement {
        ClusterPlacement::new(
            aggregate_type,
            self.inner.node_id,
            Arc::clone(&self.inner.owned),
            Arc::clone(&self.inner.routes),
        )
    }

    /// The node's counters.
    pub fn stats(&self) -> ClusterStats {
        let c = &self.inner.counters;
        ClusterStats {
            shards_owned: self.inner.owned.len(),
            members: usize::try_from(c.members.load(Relaxed)).unwrap_or(usize::MAX),
            claims: c.claims.load(Relaxed),
            releases: self.inner.releases.released(),
            heartbeat_failures: c.heartbeat_failures.load(Relaxed),
            self_fences: c.self_fences.load(Relaxed),
            heartbeat_micros: c.heartbeat_micros.load(Relaxed),
            fenced_appends: self.inner.owned.fenced_appends(),
        }
    }

    /// Runs one tick now and waits until the releases it started have finished (the loop runs
    /// ticks on its own and does not wait; tests use this to step).
    pub async fn tick_now(&self) {
        tick(&self.inner).await;
        self.inner.releases.done().await;
    }

    /// Leaves gracefully: stops the loop, releases every shard through the handoff, and marks
    /// the node as gone so the others claim its shards at their next tick.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let _ = self.inner.stop.send(true);
        let _state = self.inner.tick.lock().await;
        let under_way = self.inner.releases.under_way();
        for shard in self.inner.owned.owned() {
            if let Some(epoch) = self.inner.owned.epoch(shard)
                && !under_way.contains(&shard)
            {
                release::release_shard(&*self.inner, shard, epoch).await;
            }
        }
        self.inner.releases.done().await;
        self.inner.owned.publish_gauge();
        membership::leave(
            &self.inner.pool,
            self.inner.node_id,
            self.inner.config.lease(),
        )
        .await
    }
}

async fn run(inner: std::sync::Weak<Inner>, mut stopped: watch::Receiver<bool>) {
    let Some(routes) = inner.upgrade().map(|i| Arc::clone(&i.routes)) else {
        return;
    };
    let mut last = tokio::time::Instant::now();
    loop {
        let Some(interval) = inner.upgrade().map(|i| i.config.heartbeat_interval) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(last + interval) => {}
            // A call is waiting for a route (its shard's owner died or moved): look now rather
            // than at the next heartbeat, though not more often than every EARLY_TICK_GAP.
            _ = routes.refresh_wanted() => {
                tokio::select! {
                    _ = tokio::time::sleep_until(last + EARLY_TICK_GAP.min(interval)) => {}
                    _ = stopped.changed() => return,
                }
            }
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        last = tokio::time::Instant::now();
        tick(&inner).await;
    }
}

async fn tick(inner: &Arc<Inner>) {
    let mut state = inner.tick.lock().await;
    let limit = inner.config.lease();
    // Woken after a gap past the limit (the process was paused, or the loop starved): others
    // may have taken our shards meanwhile, and our actors may hold state they changed. Stop
    // them now, not after the heartbeat's round trip; what is still ours is granted again
    // below, onto fresh activations.
    let gap = state.last_heartbeat.elapsed();
    if gap >= limit {
        tracing::warn!(node = %inner.node_id, ?gap, "heartbeat gap past the limit");
        self_fence(inner).await;
    }
    // Taken after the fence, however long that took: the lease runs from the heartbeat's send.
    let sent = Instant::now();
    // An answer after the lease ran out renews nothing, so wait no longer than that (or one
    // interval, once it has run out) before counting the heartbeat as failed.
    let within = (state.last_heartbeat + limit)
        .saturating_duration_since(sent)
        .max(inner.config.heartbeat_interval);
    let heartbeat = membership::heartbeat(&inner.pool, inner.node_id, inner.config.ttl, within);
    let members = match heartbeat.await {
        Ok(Some(members)) => {
            // Answered after the previous lease ran out (the statement waited on a lock, say):
            // meanwhile our row looked stale, so others may have claimed our shards. Stop
            // serving the old grants before renewing the lease; the read below grants anew.
            if state.last_heartbeat.elapsed() >= limit {
                self_fence(inner).await;
            }
            state.last_heartbeat = sent;
            inner.owned.renew_lease(sent + limit);
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            inner.counters.heartbeat_micros.store(micros, Relaxed);
            inner.counters.members.store(members.len() as u64, Relaxed);
            metrics::histogram!("cluster_heartbeat_seconds").record(sent.elapsed().as_secs_f64());
            metrics::gauge!("cluster_members").set(members.len() as f64);
            members
        }
        Ok(None) => {
            tracing::error!(node = %inner.node_id, "this node is no longer a member; serving nothing");
            self_fence(inner).await;
            return;
        }
        Err(error) => {
            inner.counters.heartbeat_failures.fetch_add(1, Relaxed);
            metrics::counter!("cluster_heartbeat_failures_total").increment(1);
            tracing::warn!(node = %inner.node_id, %error, since = ?state.last_heartbeat.elapsed(), "heartbeat failed");
            if state.last_heartbeat.elapsed() >= limit && !inner.owned.is_empty() {
                self_fence(inner).await;
            }
            return;
        }
    };
    // The tick's other statements get one interval: one that waits longer (on a lock, say)
    // gives up, so the next heartbeat goes out on time rather than after a gap that would
    // fence the node. The next tick tries again.
    let interval = inner.config.heartbeat_interval;
    let Ok(ownership) = ownership::read_all(&inner.pool, interval).await else {
        return;
    };
    inner
        .routes
        .update(inner.config.shard_count, &members, &ownership);
    rebalance(inner, &members, &ownership).await;
}

async fn rebalance(inner: &Arc<Inner>, members: &[Member], ownership: &[Ownership]) {
    let me = inner.node_id;
    let live: Vec<Uuid> = members.iter().map(|m| m.node_id).collect();
    let mut to_claim = Vec::new();
    let mut to_release = Vec::new();
    let mut lost = Vec::new();
    let under_way = inner.releases.under_way();
    for row in ownership {
        if under_way.contains(&row.shard) {
            // Its release decides what happens to it; the tick after that looks again.
            continue;
        }
        let preferred = preferred_owner(row.shard, &live);
        match (row.owner == Some(me), preferred == Some(me)) {
            // Ours and meant to be: make sure it is served (e.g. after a self-fence).
            (true, true) => {
                if inner.owned.epoch(row.shard) != Some(row.epoch) {
                    inner.owned.grant(row.shard, row.epoch);
                }
            }
            // Released at the database's epoch, served here or not: after a self-fence (or a
            // release whose last step failed) the row still names this node, and until it is
            // cleared no other node may claim the shard.
            (true, false) => to_release.push((row.shard, row.epoch)),
            (false, preferred_here) => {
                // Not ours in the database: never serve it, and drop the actors of a takeover
                // we missed, so they cannot serve their old state if the shard comes back.
                if inner.owned.revoke(row.shard).is_some() {
                    tracing::warn!(shard = row.shard, "shard taken over by another node");
                    // Claimed back, if it is ours to claim, by a tick after its actors stopped.
                    lost.push(row.shard);
                } else if preferred_here {
                    to_claim.push(row.shard);
                }
            }
        }
    }
    release::stop_lost(inner, lost);
    if !to_claim.is_empty() {
        match ownership::claim(
            &inner.pool,
            me,
            &to_claim,
            inner.config.ttl,
            inner.config.heartbeat_interval,
        )
        .await
        {
            Ok(won) => {
                for row in &won {
                    inner.owned.grant(row.shard, row.epoch);
                }
                inner.counters.claims.fetch_add(won.len() as u64, Relaxed);
                metrics::counter!("cluster_shard_claims_total").increment(won.len() as u64);
                if !won.is_empty() {
                    tracing::info!(node = %me, shards = won.len(), "claimed shards");
                }
            }
            Err(error) => tracing::warn!(%error, "claiming shards failed"),
        }
    }
    inner.owned.publish_gauge();
    release::start(inner, to_release);
}

async fn self_fence(inner: &Inner) {
    let revoked = inner.owned.revoke_all();
    if revoked == 0 {
        return;
    }
    inner.owned.publish_gauge();
    inner.counters.self_fences.fetch_add(1, Relaxed);
    metrics::counter!("cluster_self_fences_total").increment(1);
    tracing::error!(node = %inner.node_id, shards = revoked, "no heartbeat in time: serving nothing until the database answers again");
    let handoff = inner.handoff.read().await.clone();
    if let Some(handoff) = handoff {
        handoff.fenced().await;
    }
}

/// What a release task borrows of the node: it holds the `Inner` itself, so the node keeps
/// heartbeating until its releases end.
impl ReleasingNode for Inner {
    fn releases(&self) -> &Releases {
        &self.releases
    }

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn answer_within(&self) -> Duration {
        self.config.lease()
    }

    fn node_id(&self) -> Uuid {
        self.node_id
    }

    fn owned(&self) -> &OwnedShards {
        &self.owned
    }

    fn handoff(&self) -> &RwLock<Option<Arc<dyn ShardHandoff>>> {
        &self.handoff
    }
}
