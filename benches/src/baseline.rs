//! In-process baselines: a raw ractor actor holding a counter (what one message round trip to
//! an actor costs with nothing on top), the same counter as an `actor-runtime` virtual actor
//! (what the virtual-actor directory adds), and a ledger account written by hand on ractor and
//! the in-memory event store (what the same durable work costs without the framework).

use std::convert::Infallible;
use std::sync::Arc;

use actor_runtime::{Directory, Reply, RuntimeConfig, VirtualActor};
use event_stores::{EventStore, InMemoryEventStore, StreamId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::BoxError;
use crate::ledger::{LedgerCommand, LedgerState, new_event};

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

/// A ledger account written by hand on ractor and an event store: per command it decides,
/// encodes the events (MessagePack, a UUID v7 each), appends them at the expected version,
/// applies them and answers, as [`Ledger`](crate::ledger::Ledger) does through the framework.
///
/// What it does less than the framework: no command ids and no deduplication window (a retry
/// is applied again), no deadlines, no activation on demand, passivation or eviction (its
/// actors are spawned up front and live for ever), no snapshot strategy, no metrics or spans,
/// and a version conflict is an error rather than a reload and retry.
pub struct HandLedger;

/// A hand-written account's message.
pub enum HandLedgerMsg {
    /// Run a command and answer with the new version, or why it was refused or not stored.
    Execute(LedgerCommand, RpcReplyPort<Result<u64, String>>),
}

/// A hand-written account's state: its stream, store, version and folded state.
pub struct HandLedgerState {
    store: Arc<InMemoryEventStore>,
    stream: StreamId,
    version: u64,
    state: LedgerState,
}

impl HandLedgerState {
    async fn execute(&mut self, command: &LedgerCommand) -> Result<u64, String> {
        let events = self.state.decide(command).map_err(|e| e.to_string())?;
        let encoded = events
            .iter()
            .map(new_event)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if encoded.is_empty() {
            return Ok(self.version);
        }
        let receipt = self
            .store
            .append(&self.stream, self.version, encoded)
            .await
            .map_err(|e| e.to_string())?;
        for event in &events {
            self.state.apply(event);
        }
        self.version = receipt.last_version;
        Ok(self.version)
    }
}

impl Actor for HandLedger {
    type Msg = HandLedgerMsg;
    type State = HandLedgerState;
    type Arguments = (Arc<InMemoryEventStore>, StreamId);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (store, stream): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let version = store.stream_version(&stream).await?;
        Ok(HandLedgerState {
            store,
            stream,
            version,
            state: LedgerState::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HandLedgerMsg::Execute(command, reply) => {
                let outcome = state.execute(&command).await;
                // The caller may have given up; that is not the actor's problem.
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }
}

/// Spawns a hand-written account on `stream` of `store`.
pub async fn spawn_hand_ledger(
    store: Arc<InMemoryEventStore>,
    stream: StreamId,
) -> Result<ActorRef<HandLedgerMsg>, BoxError> {
    let (actor, _join) = Actor::spawn(None, HandLedger, (store, stream)).await?;
    Ok(actor)
}

/// One command to a hand-written account: its new version.
pub async fn call_hand_ledger(
    actor: &ActorRef<HandLedgerMsg>,
    command: LedgerCommand,
) -> Result<u64, BoxError> {
    match actor
        .call(|reply| HandLedgerMsg::Execute(command, reply), None)
        .await?
    {
        ractor::rpc::CallResult::Success(outcome) => Ok(outcome?),
        other => Err(format!("hand-written ledger call failed: {other:?}").into()),
    }
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

    #[tokio::test]
    async fn the_hand_written_ledger_stores_its_events_and_refuses_an_overdraft()
    -> Result<(), BoxError> {
        let store = Arc::new(InMemoryEventStore::new());
        let stream = StreamId::new("ledger", "hand")?;
        let account = spawn_hand_ledger(Arc::clone(&store), stream.clone()).await?;
        let deposit = LedgerCommand::Deposit { amount: 5 };
        assert_eq!(call_hand_ledger(&account, deposit.clone()).await?, 1);
        assert_eq!(call_hand_ledger(&account, deposit).await?, 2);
        assert!(
            call_hand_ledger(&account, LedgerCommand::Withdraw { amount: 11 })
                .await
                .is_err()
        );
        assert_eq!(store.stream_version(&stream).await?, 2);
        account.stop(None);
        Ok(())
    }
}
