//! Strategies made of two others: [`Or`] and [`And`], built with [`Compose`].

use super::{SnapshotContext, SnapshotStrategy};
use crate::aggregate::Aggregate;

/// `or` and `and` for any strategy (a separate trait, so that `a.or(b)` needs no aggregate
/// type spelled out: a built-in strategy serves every aggregate type).
pub trait Compose: Sized {
    /// A strategy that snapshots when this one or `other` says so.
    fn or<B>(self, other: B) -> Or<Self, B> {
        Or::new(self, other)
    }

    /// A strategy that snapshots only when this one and `other` both say so.
    fn and<B>(self, other: B) -> And<Self, B> {
        And::new(self, other)
    }
}

impl<S> Compose for S {}

/// Snapshots when either strategy says so (both are asked, so neither misses a command).
/// Built by [`Compose::or`].
#[derive(Debug, Clone, Copy)]
pub struct Or<L, R> {
    left: L,
    right: R,
}

impl<L, R> Or<L, R> {
    /// `left` or `right`.
    pub fn new(left: L, right: R) -> Self {
        Self { left, right }
    }
}

impl<A: Aggregate, L: SnapshotStrategy<A>, R: SnapshotStrategy<A>> SnapshotStrategy<A>
    for Or<L, R>
{
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        // Both asked: a stateful strategy may count every command it sees.
        let left = self.left.should_snapshot(context);
        let right = self.right.should_snapshot(context);
        left || right
    }
}

/// Snapshots only when both strategies say so (both are asked). Built by
/// [`Compose::and`]; e.g. a size threshold, but never more often than an interval.
#[derive(Debug, Clone, Copy)]
pub struct And<L, R> {
    left: L,
    right: R,
}

impl<L, R> And<L, R> {
    /// `left` and `right`.
    pub fn new(left: L, right: R) -> Self {
        Self { left, right }
    }
}

impl<A: Aggregate, L: SnapshotStrategy<A>, R: SnapshotStrategy<A>> SnapshotStrategy<A>
    for And<L, R>
{
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        let left = self.left.should_snapshot(context);
        let right = self.right.should_snapshot(context);
        left && right
    }
}
