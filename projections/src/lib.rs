//! Read models for event-sourced aggregates: projections over the store-wide event feed.
//!
//! A [`Projection`] is handed every event (or those of the aggregate types its
//! [`EventFilter`] names) in store order, in batches read with
//! [`EventStore::read_all`](event_stores::EventStore::read_all), which never skips an event
//! that commits late. A [`Projector`] runs projections side by side, each on a task of its
//! own: it catches up from the projection's checkpoint, then follows the feed live, woken by
//! [`Projector::wake`] or by PostgreSQL notifications ([`Projector::listen`]), with polling as
//! the fallback. [`ProjectionHandle`] shows how far each one got ([`ProjectionStats`]: position,
//! events handled, lag) and rebuilds a read model from the first event on request.
//!
//! Two guarantees, by where the read model lives:
//!
//! - **exactly once** for a read model in PostgreSQL: a [`postgres::PgProjection`] writes
//!   through the transaction the runner gives it, and the checkpoint moves in that same
//!   transaction;
//! - **at least once** otherwise ([`Projection`] with [`Checkpoints`]: in memory, or
//!   [`postgres::PgCheckpoints`]): after a crash between handling a batch and saving its
//!   checkpoint the batch comes again, so handlers must be idempotent.
//!
//! Events are decoded with [`aggregate_actors::upcast::read`], which lifts events stored under
//! an older event schema through the aggregate's upcasters.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! use async_trait::async_trait;
//! use event_stores::{EventStore, InMemoryEventStore, NewEvent, RecordedEvent, StreamId};
//! use projections::{HandlerError, InMemoryCheckpoints, Projection, Projector};
//!
//! /// Counts events per stream.
//! #[derive(Default)]
//! struct Counts(Arc<Mutex<Vec<(String, u64)>>>);
//!
//! #[async_trait]
//! impl Projection for Counts {
//!     fn name(&self) -> &str {
//!         "counts"
//!     }
//!     async fn handle(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
//!         let mut counts = self.0.lock().map_err(|e| e.to_string())?;
//!         for event in events {
//!             // Idempotent: the stream's version, not an increment.
//!             let id = event.stream.to_string();
//!             match counts.iter_mut().find(|(s, _)| *s == id) {
//!                 Some(entry) => entry.1 = event.version,
//!                 None => counts.push((id, event.version)),
//!             }
//!         }
//!         Ok(())
//!     }
//!     async fn reset(&self) -> Result<(), HandlerError> {
//!         self.0.lock().map_err(|e| e.to_string())?.clear();
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Arc::new(InMemoryEventStore::new());
//! let stream = StreamId::new("account", "alice")?;
//! let event = NewEvent::new("Opened", 1, vec![0x90]);
//! let receipt = store.append(&stream, 0, vec![event]).await?;
//!
//! let counts = Counts::default();
//! let seen = Arc::clone(&counts.0);
//! let projector = Projector::new(store.clone());
//! let running = projector.run(counts, Arc::new(InMemoryCheckpoints::new()));
//! assert!(running.wait_for(receipt.last_position, Duration::from_secs(5)).await);
//! assert_eq!(*seen.lock().unwrap(), [("account/alice".to_string(), 1)]);
//! running.stop().await;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Features
//!
//! - `postgres` (default): [`postgres::PgProjection`], [`postgres::PgCheckpoints`] and
//!   [`Projector::listen`].

mod checkpoint;
mod error;
#[cfg(feature = "postgres")]
pub mod postgres;
mod projection;
mod recheck;
mod runner;
mod settings;
mod sink;
mod stats;

pub use checkpoint::{Checkpoints, InMemoryCheckpoints};
pub use error::ProjectionError;
pub use projection::{EventFilter, HandlerError, Projection};
pub use runner::{ProjectionHandle, Projector};
pub use settings::ProjectorSettings;
pub use stats::ProjectionStats;
