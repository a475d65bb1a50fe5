//! [`Placement`]: the one seam where a cluster decides which node owns a key.

use crate::remote::Location;

/// Where a key lives. Local now; a cluster placement (consistent hashing over members) later.
///
/// The directory asks on every call; a key that is not local fails with
/// [`RuntimeError::NotLocal`](crate::RuntimeError::NotLocal) and is never activated here.
pub trait Placement<K>: Send + Sync + 'static {
    /// `true` if this node owns `key`.
    fn is_local(&self, key: &K) -> bool;

    /// Where `key` is served: here, on another node, or nowhere right now. The default knows
    /// only this node.
    fn locate(&self, key: &K) -> Location {
        if self.is_local(key) {
            Location::Local
        } else {
            Location::Unknown
        }
    }

    /// The location last given for `key` did not work out: nobody serves it yet, its node could
    /// not be reached, or that node no longer serves it. A placement that learns routes in the
    /// background may look again sooner. The default does nothing.
    fn missed(&self, _key: &K) {}
}

/// Everything is local: the placement of a single-node deployment.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalPlacement;

impl<K> Placement<K> for LocalPlacement {
    fn is_local(&self, _key: &K) -> bool {
        true
    }
}
