//! What callers get back: a command's [`Committed`] outcome and an aggregate's [`StateView`].

use crate::aggregate::Aggregate;
use crate::command::CommandId;
use crate::metrics::ActivationReport;

/// The outcome of a successful command.
pub struct Committed<A: Aggregate> {
    /// The stream version after the command (for a duplicate: after the original command).
    pub version: u64,
    /// The events the command stored (empty if it decided nothing needed to happen).
    pub events: Vec<A::Event>,
    /// The command's id.
    pub command_id: CommandId,
    /// True when this command id had already been applied: nothing was decided or stored now,
    /// and `version` and `events` are those of the original command.
    pub duplicate: bool,
}

/// The current state of an aggregate, as its live actor holds it.
pub struct StateView<A: Aggregate> {
    /// The state.
    pub state: A::State,
    /// Its version.
    pub version: u64,
    /// How the actor holding it was activated.
    pub activation: ActivationReport,
}

impl<A: Aggregate> std::fmt::Debug for Committed<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed")
            .field("version", &self.version)
            .field("events", &self.events)
            .field("command_id", &self.command_id)
            .field("duplicate", &self.duplicate)
            .finish()
    }
}

impl<A: Aggregate> std::fmt::Debug for StateView<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("state", &self.state)
            .field("version", &self.version)
            .field("activation", &self.activation)
            .finish()
    }
}

impl<A: Aggregate> Clone for StateView<A> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            version: self.version,
            activation: self.activation.clone(),
        }
    }
}
