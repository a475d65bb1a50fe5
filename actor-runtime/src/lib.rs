//! Virtual actors on [ractor]: a [`Directory`] of actors keyed by id that activate on their
//! first message, exist at most once per key, and go away by themselves.
//!
//! A virtual actor (Orleans' term; Akka calls the pattern cluster sharding with passivation) is
//! addressed only by its key and never created or destroyed explicitly. The directory:
//!
//! - **activates on demand**, exactly once per key however many first calls race, and never has
//!   two live actors for one key (a key being activated or stopped makes its callers wait);
//! - delivers messages one at a time, in order, through a **bounded mailbox**
//!   ([`RuntimeError::Overloaded`] when full) with a **per-call timeout**;
//! - bounds **concurrent activations**, so a burst of cold keys cannot starve warm traffic;
//! - **passivates** actors that are idle, evicts the **least recently used** ones under a
//!   live-actor cap, or stops them on request, always after their queued messages;
//! - **supervises**: a panic in `handle` stops only that actor (its unanswered callers get
//!   [`RuntimeError::ActorStopped`]), a failed activation reaches every waiting caller, and the
//!   next call activates afresh;
//! - gives each live actor **timers** ([`Timers`]) that send it messages later and end with it;
//! - **shuts down gracefully**, letting every actor finish what it accepted;
//! - reports through the `metrics` facade (see [`stats`]) and `tracing` spans.
//!
//! It knows nothing of what the actors do (event sourcing lives in `aggregate-actors`). Whether a
//! key belongs to this node at all is asked of a [`Placement`], the seam for clustering.
//!
//! # Example: a counter
//!
//! ```
//! use std::{convert::Infallible, sync::Arc};
//!
//! use actor_runtime::{Directory, PassivationReason, Reply, RuntimeConfig, VirtualActor};
//!
//! struct Counter {
//!     total: u64,
//! }
//!
//! enum CounterMsg {
//!     Add(u64, Reply<u64>),
//! }
//!
//! impl VirtualActor for Counter {
//!     type Key = String;
//!     type Message = CounterMsg;
//!     type Context = ();
//!     type ActivationError = Infallible;
//!
//!     async fn activate(_key: &String, _context: &Arc<()>) -> Result<Self, Infallible> {
//!         Ok(Counter { total: 0 }) // a real actor would load its state here
//!     }
//!
//!     async fn handle(&mut self, message: CounterMsg) {
//!         match message {
//!             CounterMsg::Add(n, reply) => {
//!                 self.total += n;
//!                 reply.send(self.total);
//!             }
//!         }
//!     }
//!
//!     async fn passivate(&mut self, _reason: PassivationReason) {
//!         // a real actor would save its state here
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let counters = Directory::<Counter>::new(Arc::new(()), RuntimeConfig::default());
//!     let key = "visits".to_string();
//!
//!     counters.call(&key, |reply| CounterMsg::Add(2, reply)).await?;
//!     let total = counters.call(&key, |reply| CounterMsg::Add(3, reply)).await?;
//!     assert_eq!(total, 5);
//!     assert_eq!(counters.stats().activations, 1);
//!
//!     counters.shutdown().await;
//!     assert!(counters.call(&key, |reply| CounterMsg::Add(1, reply)).await.is_err());
//!     Ok(())
//! }
//! ```

mod activation;
mod config;
mod deadlines;
mod directory;
mod error;
mod eviction;
mod guard;
mod host;
mod placement;
mod recency;
pub mod remote;
mod reply;
mod shared;
mod slot;
mod spans;
pub mod stats;
mod sweeper;
mod timer;
mod virtual_actor;

/// Re-exported so implementors of [`Transport`] need no direct dependency on `async-trait`.
pub use async_trait::async_trait;

pub use config::{DEFAULT_MAX_LIVE_ACTORS, RuntimeConfig};
pub use deadlines::instant_after;
pub use directory::{CallResult, Directory, Misplaced};
pub use error::RuntimeError;
pub use placement::{LocalPlacement, Placement};
pub use remote::{Inbound, Location, RemoteCall, Transport, TransportError};
pub use reply::{Reply, ReplyReceiver};
pub use spans::span_if_traced;
pub use stats::RuntimeStats;
pub use timer::{TimerHandle, Timers};
pub use virtual_actor::{PassivationReason, VirtualActor};
