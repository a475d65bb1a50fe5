//! The read model in process memory: a [`Projection`] (at least once) folding into
//! [`Totals`], whose per-stream version guards make a batch handed over twice harmless.

use std::sync::{Arc, RwLock};

use aggregate_actors::event_stores::RecordedEvent;
use async_trait::async_trait;
use projections::{EventFilter, HandlerError, Projection};

use super::fold::{Fact, Totals};
use super::{CustomerTotals, NAME, ReadModelError, filter};

/// The in-memory projection and its rows.
pub(super) struct InMemory {
    pub(super) totals: Arc<RwLock<Totals>>,
}

#[async_trait]
impl Projection for InMemory {
    fn name(&self) -> &str {
        NAME
    }

    fn filter(&self) -> EventFilter {
        filter()
    }

    async fn handle(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        // Decoded before taking the lock: readers wait for the fold only.
        let facts = Fact::decode_all(events)?;
        let mut totals = self.totals.write().map_err(|_| ReadModelError::Poisoned)?;
        for fact in &facts {
            totals.apply(fact);
        }
        Ok(())
    }

    async fn reset(&self) -> Result<(), HandlerError> {
        *self.totals.write().map_err(|_| ReadModelError::Poisoned)? = Totals::default();
        Ok(())
    }
}

/// Up to `limit` rows by customer id: those after `after`, starting with `prefix`.
pub(super) fn list(
    totals: &RwLock<Totals>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<CustomerTotals>, ReadModelError> {
    let totals = totals.read().map_err(|_| ReadModelError::Poisoned)?;
    let from = match after {
        Some(after) => std::ops::Bound::Excluded(after),
        None => std::ops::Bound::Included(prefix),
    };
    Ok(totals
        .customers
        .range::<str, _>((from, std::ops::Bound::Unbounded))
        .skip_while(|(id, _)| id.as_str() < prefix)
        .take_while(|(id, _)| id.starts_with(prefix))
        .take(limit)
        .map(|(_, entry)| entry.totals.clone())
        .collect())
}

/// The row of customer `id`.
pub(super) fn get(
    totals: &RwLock<Totals>,
    id: &str,
) -> Result<Option<CustomerTotals>, ReadModelError> {
    let totals = totals.read().map_err(|_| ReadModelError::Poisoned)?;
    Ok(totals.customers.get(id).map(|entry| entry.totals.clone()))
}
