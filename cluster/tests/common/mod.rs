//! What several test files share: a remote-capable aggregate that adds numbers.

use aggregate_actors::{Aggregate, Context};
use serde::{Deserialize, Serialize};

/// A running total; every command adds its number.
pub struct Tally;

/// A number added.
#[derive(Debug, Serialize, Deserialize)]
pub struct Added(pub u32);

/// A `Tally` refuses nothing.
#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
#[error("never")]
pub struct Never;

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = u32;
    type Event = Added;
    type State = u32;
    type Error = Never;

    fn decide(_: &u32, n: &u32, _: &mut Context<'_, Self>) -> Result<Vec<Added>, Never> {
        Ok(vec![Added(*n)])
    }

    fn apply(state: &mut u32, event: &Added) {
        *state += event.0;
    }
}
