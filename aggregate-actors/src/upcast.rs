//! Upcasting: reading events stored under an older event schema.
//!
//! Every stored event records the [`Aggregate::EVENT_SCHEMA_VERSION`] it was written with. When
//! the event type changes shape, raise that constant and list, in [`Aggregate::UPCASTERS`], an
//! [`Upcaster`] from each older version to the next: an event of schema 1 read by a build at
//! schema 3 goes through the upcasters from 1 and from 2, in that order, on every read path
//! (activation, tail replay, reconstruction, a retried command's stored outcome, inspection).
//! Events already at the current schema are decoded directly, with no intermediate value.
//!
//! An upcaster works on the event's decoded MessagePack value ([`rmpv::Value`]: an enum event is
//! a one-entry map from the variant's name to its fields, by name), or on typed old and new
//! shapes with [`typed`]. An event no chain can lift — a missing step, a schema newer than this
//! build, an upcaster that fails — is a typed error naming its stream, version, event type and
//! schema version ([`ActivationError::CorruptEvent`](crate::ActivationError::CorruptEvent)),
//! never a panic: events are the source of truth and are never skipped.
//!
//! Snapshots are not upcast: a snapshot of another [`Aggregate::STATE_SCHEMA_VERSION`] is
//! skipped and the state is rebuilt from events, through the upcasters. So raise the state's
//! schema version whenever an event change alters what `apply` builds. The other way round, a
//! snapshot of the current state schema spares the events before it any upcasting: only the
//! tail after it is lifted, and an upcaster may be retired once every aggregate has a snapshot
//! taken after its last old event (a full replay or time travel to an earlier version still
//! needs the whole chain).
//!
//! ```
//! use aggregate_actors::upcast::{self, UpcastError, Upcaster, Value};
//! use serde::{Deserialize, Serialize};
//!
//! // Schema 1 stored whole units; schema 2 stores cents.
//! #[derive(Deserialize)]
//! enum V1 { Deposited { amount: u64 } }
//! #[derive(Serialize)]
//! enum V2 { Deposited { cents: u64 } }
//!
//! fn from_v1(_event_type: &str, value: Value) -> Result<Value, UpcastError> {
//!     upcast::typed(value, |old: V1| match old {
//!         V1::Deposited { amount } => V2::Deposited { cents: amount * 100 },
//!     })
//! }
//!
//! const UPCASTERS: &[Upcaster] = &[Upcaster::new(1, from_v1)];
//! # let _ = UPCASTERS;
//! ```

use event_stores::RecordedEvent;
/// The decoded MessagePack value an upcaster works on (re-exported from `rmpv`).
pub use rmpv::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::Aggregate;
use crate::codec::{self, CodecError};

/// Lifts an event's value from one schema version to the next.
pub type Lift = fn(event_type: &str, value: Value) -> Result<Value, UpcastError>;

/// One step of an upcasting chain: from schema `from` to `from + 1`.
#[derive(Clone, Copy)]
pub struct Upcaster {
    from: u32,
    lift: Lift,
}

impl Upcaster {
    /// The step that lifts events of schema `from` to `from + 1` with `lift`.
    pub const fn new(from: u32, lift: Lift) -> Self {
        Self { from, lift }
    }

    /// The schema version this step reads.
    pub fn from(&self) -> u32 {
        self.from
    }
}

impl std::fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upcaster")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// Why a stored event could not be read as the current event type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastError {
    /// No upcaster reads this schema version, so the chain to the current one has a gap.
    #[error("no upcaster from event schema {from} (this build reads schema {current})")]
    MissingUpcaster {
        /// The schema version with no step from it.
        from: u32,
        /// This build's [`Aggregate::EVENT_SCHEMA_VERSION`].
        current: u32,
    },
    /// The event was written by a newer build than this one.
    #[error("event schema {stored} is newer than this build's {current}")]
    NewerSchema {
        /// The event's schema version.
        stored: u32,
        /// This build's [`Aggregate::EVENT_SCHEMA_VERSION`].
        current: u32,
    },
    /// An upcaster refused the value it was given.
    #[error("the upcaster from schema {from} failed: {message}")]
    Failed {
        /// The schema version the failing step reads.
        from: u32,
        /// What it said.
        message: String,
    },
    /// The payload, or a step's output, is not valid for the shape expected of it.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl UpcastError {
    /// A failure an upcaster reports about the value it was given.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed {
            from: 0,
            message: message.into(),
        }
    }
}

/// Decodes a stored payload of `schema_version` as `A::Event`, lifting it through
/// [`Aggregate::UPCASTERS`] first when it is older than [`Aggregate::EVENT_SCHEMA_VERSION`].
pub fn decode_event<A: Aggregate>(
    event_type: &str,
    schema_version: u32,
    payload: &[u8],
) -> Result<A::Event, UpcastError> {
    let current = A::EVENT_SCHEMA_VERSION;
    if schema_version == current {
        return Ok(codec::decode(payload)?);
    }
    if schema_version > current {
        return Err(UpcastError::NewerSchema {
            stored: schema_version,
            current,
        });
    }
    let mut value = read_value(payload)?;
    for from in schema_version..current {
        let step = A::UPCASTERS
            .iter()
            .find(|step| step.from == from)
            .ok_or(UpcastError::MissingUpcaster { from, current })?;
        value = (step.lift)(event_type, value).map_err(|error| match error {
            UpcastError::Failed { message, .. } => UpcastError::Failed { from, message },
            other => other,
        })?;
    }
    Ok(codec::decode(&write_value(&value)?)?)
}

/// A stored event as `A::Event`: [`decode_event`] on its recorded type, schema and payload.
pub fn read<A: Aggregate>(event: &RecordedEvent) -> Result<A::Event, UpcastError> {
    decode_event::<A>(&event.event_type, event.schema_version, &event.payload)
}

/// An upcaster's body on typed shapes: reads `value` as `Old`, maps it, and gives back the
/// value of the `New` it returns (fields by name, as events are stored).
pub fn typed<Old: DeserializeOwned, New: Serialize>(
    value: Value,
    lift: impl FnOnce(Old) -> New,
) -> Result<Value, UpcastError> {
    let old: Old = codec::decode(&write_value(&value)?)?;
    read_value(&codec::encode(&lift(old))?)
}

fn read_value(bytes: &[u8]) -> Result<Value, UpcastError> {
    let mut reader = bytes;
    rmpv::decode::read_value(&mut reader)
        .map_err(|e| UpcastError::Codec(CodecError::Decode(e.to_string())))
}

fn write_value(value: &Value) -> Result<Vec<u8>, UpcastError> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value)
        .map_err(|e| UpcastError::Codec(CodecError::Encode(e.to_string())))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Context;
    use serde::Deserialize;
    use std::borrow::Cow;

    #[derive(Debug, Serialize, Deserialize)]
    enum V1 {
        Deposited { amount: u64 },
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    enum V3 {
        Deposited { cents: u64, currency: String },
    }

    #[derive(Serialize, Deserialize)]
    enum V2 {
        Deposited { cents: u64 },
    }

    fn one_to_two(_: &str, value: Value) -> Result<Value, UpcastError> {
        typed(value, |old: V1| match old {
            V1::Deposited { amount } => V2::Deposited {
                cents: amount * 100,
            },
        })
    }

    fn two_to_three(_: &str, mut value: Value) -> Result<Value, UpcastError> {
        // Untyped: add a field to the variant's map of fields.
        let Value::Map(variant) = &mut value else {
            return Err(UpcastError::failed("not an enum value"));
        };
        let Some((_, Value::Map(fields))) = variant.first_mut() else {
            return Err(UpcastError::failed("no fields"));
        };
        fields.push((Value::from("currency"), Value::from("EUR")));
        Ok(value)
    }

    fn refuses(_: &str, _: Value) -> Result<Value, UpcastError> {
        Err(UpcastError::failed("refused on purpose"))
    }

    struct Wallet<const STEPS: usize>;

    impl<const STEPS: usize> Aggregate for Wallet<STEPS> {
        const TYPE: &'static str = "wallet";
        const EVENT_SCHEMA_VERSION: u32 = 3;
        const UPCASTERS: &'static [Upcaster] = match STEPS {
            2 => &[Upcaster::new(2, two_to_three), Upcaster::new(1, one_to_two)],
            1 => &[Upcaster::new(2, two_to_three)],
            _ => &[Upcaster::new(1, one_to_two), Upcaster::new(2, refuses)],
        };
        type Command = ();
        type Event = V3;
        type State = ();
        type Error = std::convert::Infallible;
        fn decide(_: &(), _: &(), _ctx: &mut Context<'_, Self>) -> Result<Vec<V3>, Self::Error> {
            Ok(Vec::new())
        }
        fn apply(_: &mut (), _: &V3) {}
        fn event_type(_: &V3) -> Cow<'static, str> {
            Cow::Borrowed("Deposited")
        }
    }

    fn schema_one_payload() -> Vec<u8> {
        codec::encode(&V1::Deposited { amount: 7 }).unwrap()
    }

    #[test]
    fn an_old_event_goes_through_every_step_in_order_whatever_order_they_are_listed_in() {
        let event = decode_event::<Wallet<2>>("Deposited", 1, &schema_one_payload()).unwrap();
        assert_eq!(
            event,
            V3::Deposited {
                cents: 700,
                currency: "EUR".into()
            }
        );
    }

    #[test]
    fn a_current_event_is_decoded_directly() {
        let payload = codec::encode(&V3::Deposited {
            cents: 1,
            currency: "USD".into(),
        })
        .unwrap();
        let event = decode_event::<Wallet<1>>("Deposited", 3, &payload).unwrap();
        assert_eq!(
            event,
            V3::Deposited {
                cents: 1,
                currency: "USD".into()
            }
        );
    }

    #[test]
    fn a_gap_in_the_chain_names_the_missing_step() {
        let error = decode_event::<Wallet<1>>("Deposited", 1, &schema_one_payload()).unwrap_err();
        assert_eq!(
            error,
            UpcastError::MissingUpcaster {
                from: 1,
                current: 3
            }
        );
    }

    #[test]
    fn an_event_from_a_newer_build_is_refused() {
        let error = decode_event::<Wallet<2>>("Deposited", 4, &schema_one_payload()).unwrap_err();
        assert_eq!(
            error,
            UpcastError::NewerSchema {
                stored: 4,
                current: 3
            }
        );
    }

    #[test]
    fn a_failing_step_is_named_by_the_schema_it_reads() {
        let error = decode_event::<Wallet<0>>("Deposited", 1, &schema_one_payload()).unwrap_err();
        assert!(
            matches!(&error, UpcastError::Failed { from: 2, message } if message == "refused on purpose"),
            "{error:?}"
        );
    }

    #[test]
    fn a_payload_that_is_not_the_old_shape_is_a_codec_error() {
        let error = decode_event::<Wallet<2>>("Deposited", 1, b"\xc1").unwrap_err();
        assert!(matches!(error, UpcastError::Codec(_)), "{error:?}");
    }
}
