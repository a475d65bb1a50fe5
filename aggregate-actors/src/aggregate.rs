//! The `Aggregate` trait: what a user writes.

use std::borrow::Cow;
use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::upcast::Upcaster;

/// An event-sourced aggregate: its commands, events and state, and the two functions that give
/// them meaning.
///
/// - [`decide`](Aggregate::decide) looks at the current state and a command and either emits
///   events or rejects the command with a domain error. Its [`Context`] gives it the
///   aggregate's id, the command's id, a clock and the services registered with the type.
/// - [`apply`](Aggregate::apply) folds one event into the state. It must be deterministic and
///   total: replaying the stored events must always give the same state.
///
/// # What `decide` may do
///
/// `decide` can run more than once for one command: again after a version conflict (another
/// writer got there first, so it decides on the newer state), and again when a creation hint
/// proves wrong. Only the last run's events are stored. So:
///
/// - read the time from [`Context::now`], not the system: the test kit sets it, and one
///   decision sees one instant however often it reads it;
/// - derive anything that must come out the same each run (a reference, a random draw) from
///   [`Context::command_id`];
/// - use services ([`Context::service`]) to read, not to write: sending an email or charging
///   a card from `decide` would happen once per run. Do those after the command is stored
///   (from a projection of its events, or from the caller);
/// - keep it quick and synchronous: it runs on the aggregate's actor, which handles one
///   command at a time.
///
/// `apply` sees no context at all, so it cannot depend on anything but the state and the
/// event: put what it needs (a timestamp, a computed amount) into the event in `decide`.
///
/// Events and state are stored as MessagePack with named fields, so fields can be added later
/// (with `#[serde(default)]`). Bump [`STATE_SCHEMA_VERSION`](Aggregate::STATE_SCHEMA_VERSION)
/// when a state change makes old snapshots unreadable or wrong: they are then skipped and the
/// state is rebuilt from events.
pub trait Aggregate: Sized + Send + Sync + 'static {
    /// The aggregate type name; with the id it names the event stream, e.g. `"account"`.
    const TYPE: &'static str;
    /// Version of the state's shape. Snapshots of another version are ignored.
    const STATE_SCHEMA_VERSION: u32 = 1;
    /// Version of the events' shape, stored with every event for upcasting.
    const EVENT_SCHEMA_VERSION: u32 = 1;
    /// Steps that lift events stored under an older [`EVENT_SCHEMA_VERSION`](Self::EVENT_SCHEMA_VERSION)
    /// to the current one, one version at a time, in any order (see [`crate::upcast`]). Empty by
    /// default: every stored event must then be of the current version.
    const UPCASTERS: &'static [Upcaster] = &[];

    /// What callers ask for.
    type Command: Send + Sync + 'static;
    /// What happened; the source of truth.
    type Event: Serialize + DeserializeOwned + Debug + Send + Sync + 'static;
    /// The state folded from the events. `Default` is the state before the first event.
    type State: Serialize + DeserializeOwned + Default + Clone + Debug + Send + Sync + 'static;
    /// Why a command was rejected.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides which events a command produces, or rejects it. See the trait docs for what it
    /// may do: it can run more than once for one command.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
        ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state.
    fn apply(state: &mut Self::State, event: &Self::Event);

    /// Whether `command` usually starts a new aggregate (`OpenAccount`, `PlaceOrder`). A hint
    /// for a cold aggregate: its actor then skips reading the store, decides on the default
    /// state and appends with expected version 0, so a brand-new aggregate's first command
    /// costs one round trip instead of two.
    ///
    /// A wrong hint costs a round trip, never correctness: if the stream exists, that append
    /// conflicts and the command is decided again on the stored state (a duplicate command id
    /// is recognised there too). A rejection, or a decision with no events, on the presumed
    /// default state is likewise checked against the store before it is answered. Defaults to
    /// `false`: every cold aggregate reads first.
    fn is_creation(_command: &Self::Command) -> bool {
        false
    }

    /// The stored type name of an event. Defaults to the enum variant name (`Deposited` for
    /// `AccountEvent::Deposited { .. }`), or the Rust type name for non-enum events.
    fn event_type(event: &Self::Event) -> Cow<'static, str> {
        match serde_variant::to_variant_name(event) {
            Ok(name) => Cow::Borrowed(name),
            Err(_) => Cow::Borrowed(short_type_name::<Self::Event>()),
        }
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}
