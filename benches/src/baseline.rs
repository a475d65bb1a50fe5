//! In-process baselines: a raw ractor actor holding a counter (what one message round trip to
//! an actor costs with nothing on top), and the same counter as an `actor-runtime` virtual actor
//! (what the virtual-actor directory adds).

use std::convert::Infallible;
use std::sync::Arc;

use actor_runtime::{Directory, Reply, RuntimeConfig, VirtualActor};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::BoxError;

/// A raw ractor actor that adds to a counter and answers with the total.
pub struct CounterActor;

/// The raw counter's message.
pub enum CounterMsg {
    /// Add and answer with the new total.
    Add(u64, RpcReplyPort<u64>),
}

impl Actor for CounterActor {
    type Msg = CounterMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        total: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CounterMsg::Add(n, reply) => {
                *total += n;
                // The caller may have given up; that is not the actor's problem.
                let _ = reply.send(*total);
            }
        }
        Ok(())
    }
}

/// Spawns a raw counter actor.
pub async fn spawn_counter() -> Result<ActorRef<CounterMsg>, BoxError> {
    let (actor, _join) = Actor::spawn(None, CounterActor, ()).await?;
    Ok(actor)
}

/// One `call` round trip to a raw counter.
pub async fn call_counter(actor: &ActorRef<CounterMsg>, n: u64) -> Result<u64, BoxError> {
    match actor.call(|reply| CounterMsg::Add(n, reply), None).await? {
        ractor::rpc::CallResult::Success(total) => Ok(total),
        other => Err(format!("counter call failed: {other:?}").into()),
    }
}

/// The counter as a virtual actor of `actor-runtime`.
pub struct VirtualCounter {
    total: u64,
}

/// The virtual counter's message.
pub enum VirtualCounterMsg {
    /// Add and answer with the new total.
    Add(u64, Reply<u64>),
}

impl VirtualActor for VirtualCounter {
    type Key = String;
    type Message = VirtualCounterMsg;
    type Context = ();
    type ActivationError = Infallible;

    async fn activate(_key: &String, _context: &Arc<()>) -> Result<Self, Infallible> {
        Ok(Self { total: 0 })
    }

    async fn handle(&mut self, message: VirtualCounterMsg) {
        match message {
            VirtualCounterMsg::Add(n, reply) => {
                self.total += n;
                reply.send(self.total);
            }
        }
    }
}

/// A directory of virtual counters with no idle passivation and no cap on live actors (the
/// memory probe holds a million; at the default cap every activation past it would evict).
pub fn counter_directory() -> Directory<VirtualCounter> {
    Directory::new(
        Arc::new(()),
        RuntimeConfig {
            idle_timeout: None,
            max_live_actors: None,
            ..RuntimeConfig::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_counters_count() -> Result<(), BoxError> {
        let raw = spawn_counter().await?;
        call_counter(&raw, 2).await?;
        assert_eq!(call_counter(&raw, 3).await?, 5);
        raw.stop(None);
        let directory = counter_directory();
        let key = "k".to_owned();
        directory
            .call(&key, |reply| VirtualCounterMsg::Add(2, reply))
            .await?;
        assert_eq!(
            directory
                .call(&key, |reply| VirtualCounterMsg::Add(3, reply))
                .await?,
            5
        );
        directory.shutdown().await;
        Ok(())
    }
}
