//! The idle sweeper: passivates actors that have had no message for `idle_timeout`, taking them
//! from the front of the directory's recency queue (see [`crate::recency`]).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use crate::{PassivationReason, VirtualActor, shared::Core, slot::millis_since};

/// The sweep period never goes below this.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Spawns the sweeper on the directory's runtime. It holds the directory weakly and ends when
/// the directory is gone or shutting down.
pub(crate) fn spawn<V: VirtualActor>(core: &Arc<Core<V>>, idle_timeout: Duration) {
    let Some(runtime) = core.runtime.clone() else {
        tracing::error!(
            actor = core.actor_name,
            "actor directory created outside a Tokio runtime: idle passivation is disabled"
        );
        return;
    };
    let period = (idle_timeout / 4).max(MIN_PERIOD);
    let weak = Arc::downgrade(core);
    runtime.spawn(run(weak, idle_timeout, period));
}

async fn run<V: VirtualActor>(core: Weak<Core<V>>, idle_timeout: Duration, period: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle_ms = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
    loop {
        ticker.tick().await;
        let Some(core) = core.upgrade() else {
            return;
        };
        if core.is_shutting_down() {
            return;
        }
        sweep(&core, idle_ms);
    }
}

/// Asks every started actor that is quiet and unused for `idle_ms` to passivate.
fn sweep<V: VirtualActor>(core: &Core<V>, idle_ms: u64) {
    let now = millis_since(core.epoch);
    let Some(idle_before) = now.checked_sub(idle_ms) else {
        return;
    };
    for slot in core.recency.idle(idle_before) {
        slot.request_stop(PassivationReason::Idle);
    }
}
