//! The store contract, run against the in-memory backends.

use event_stores::contract::{self, Fixture};
use event_stores::{InMemoryEventStore, InMemorySnapshotStore};

event_stores::store_contract! {
    make = async {
        let limits = contract::limits();
        Some(Fixture::new(
            InMemoryEventStore::with_limits(limits),
            InMemorySnapshotStore::with_limits(limits),
            limits,
        ))
    }
}
