//! Snapshot settings from a configuration file: the strategy, retention, compression and
//! incremental snapshots of each aggregate type, in TOML or JSON.
//!
//! Every value is checked: a value the code would otherwise clamp (an `every_n_events` of 0, a
//! zstd level out of range, a duration that does not parse) is a [`ConfigError`] naming where
//! it is, so a typo never silently becomes a different setting. Unknown keys are errors too.
//!
//! ```
//! use aggregate_actors::config::SnapshotConfigFile;
//! # use aggregate_actors::{Aggregate, AggregateSettings, Context};
//! # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Ev;
//! # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
//! # struct Account;
//! # impl Aggregate for Account {
//! #     const TYPE: &'static str = "account";
//! #     type Command = (); type Event = Ev; type State = (); type Error = No;
//! #     fn decide(_: &(), _: &(), _: &mut Context<'_, Self>) -> Result<Vec<Ev>, No> { Ok(vec![]) }
//! #     fn apply(_: &mut (), _: &Ev) {}
//! # }
//! let file = SnapshotConfigFile::from_toml(r#"
//!     [types.account]
//!     snapshot_on_passivation = true
//!     strategy = { kind = "any", of = [
//!         { kind = "every_n_events", n = 500 },
//!         { kind = "size", event_bytes = 65536 },
//!     ] }
//!     retention = { keep_newest = 5, max_age = "30d" }
//!     compression = { algorithm = "zstd", level = 6, max_deltas = 4 }
//! "#)?;
//! file.check_types(&[Account::TYPE])?;
//! let settings = file.apply::<Account>(AggregateSettings::new())?;
//! assert_eq!(settings.retention.keep_newest, 5);
//! # Ok::<(), aggregate_actors::config::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::codec::SnapshotCompression;
use crate::settings::{AggregateSettings, Retention};
use crate::strategy::{
    Bounded, EveryNEvents, Hybrid, Interval, Never, ReplayCost, SizeThreshold, SnapshotContext,
    SnapshotStrategy,
};

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid TOML or JSON of this shape (unknown keys included).
    #[error("snapshot configuration is not valid {format}: {message}")]
    Parse {
        /// "TOML" or "JSON".
        format: &'static str,
        /// What the parser said, with the position.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("snapshot configuration: {path} {reason}")]
    Invalid {
        /// Where, e.g. `types.account.strategy.n`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The file configures a type the application does not register.
    #[error("snapshot configuration names aggregate type {0:?}, which is not registered")]
    UnknownType(String),
}

/// A configuration file: settings per aggregate type (`[types.<name>]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfigFile {
    /// By aggregate type name ([`Aggregate::TYPE`]).
    #[serde(default)]
    pub types: BTreeMap<String, SnapshotConfig>,
}

/// The snapshot settings of one type; absent keys keep what the code set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// When to snapshot.
    pub strategy: Option<StrategyConfig>,
    /// Snapshot when the actor passivates.
    pub snapshot_on_passivation: Option<bool>,
    /// How many snapshots to keep.
    pub retention: Option<RetentionConfig>,
    /// How snapshots are compressed.
    pub compression: Option<CompressionSection>,
}

/// A snapshot strategy (see [`crate::strategy`]), tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StrategyConfig {
    /// [`Never`].
    Never,
    /// [`EveryNEvents`]; `n` ≥ 1.
    EveryNEvents {
        /// Events between snapshots.
        n: u64,
    },
    /// [`Interval`]; `every` is a duration such as `"30s"` or `"5m"`.
    Interval {
        /// Time between snapshots.
        every: String,
    },
    /// [`Hybrid`].
    Hybrid {
        /// Events between snapshots.
        n: u64,
        /// Time between snapshots.
        every: String,
    },
    /// [`Bounded`]; 1 ≤ `min_gap` ≤ `max_gap`, `every` ≥ 1.
    Bounded {
        /// Around every this many versions.
        every: u64,
        /// Never closer than this.
        min_gap: u64,
        /// Always within this.
        max_gap: u64,
    },
    /// [`ReplayCost`].
    ReplayCost {
        /// Replays longer than this many events are expensive.
        max_events: u64,
        /// Activations longer than this are expensive.
        max_elapsed: String,
    },
    /// [`SizeThreshold`]: at least one of the two, each ≥ 1.
    Size {
        /// Bytes of events since the last snapshot.
        event_bytes: Option<u64>,
        /// Change of the state's encoded size since the last snapshot.
        state_change: Option<u64>,
    },
    /// Snapshot when any of `of` says so (at least one).
    Any {
        /// The strategies.
        of: Vec<StrategyConfig>,
    },
    /// Snapshot when all of `of` say so (at least one).
    All {
        /// The strategies.
        of: Vec<StrategyConfig>,
    },
}

/// [`Retention`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Newest snapshots kept (≥ 1).
    pub keep_newest: usize,
    /// Also delete snapshots older than this (a duration such as `"30d"`), except the newest.
    pub max_age: Option<String>,
}

/// Snapshot compression (see [`CompressionConfig`](crate::codec::CompressionConfig)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionSection {
    /// `"zstd"`, `"lz4"` or `"none"`.
    pub algorithm: String,
    /// The zstd level (zstd only).
    pub level: Option<i32>,
    /// States smaller than this are stored uncompressed.
    pub threshold_bytes: Option<usize>,
    /// Delta snapshots allowed after a full one (0: every snapshot full).
    pub max_deltas: Option<u32>,
}

impl SnapshotConfigFile {
    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            format: "TOML",
            message: e.to_string(),
        })
    }

    /// Parses JSON.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Parse {
            format: "JSON",
            message: e.to_string(),
        })
    }

    /// Fails on a type not in `registered`: a misspelt type name would otherwise configure
    /// nothing.
    pub fn check_types(&self, registered: &[&str]) -> Result<(), ConfigError> {
        match self
            .types
            .keys()
            .find(|t| !registered.contains(&t.as_str()))
        {
            Some(unknown) => Err(ConfigError::UnknownType(unknown.clone())),
            None => Ok(()),
        }
    }

    /// `settings` with the file's section for `A` applied (unchanged when it has none).
    pub fn apply<A: Aggregate>(
        &self,
        settings: AggregateSettings<A>,
    ) -> Result<AggregateSettings<A>, ConfigError> {
        match self.types.get(A::TYPE) {
            Some(section) => section.apply(settings, &format!("types.{}", A::TYPE)),
            None => Ok(settings),
        }
    }
}

impl SnapshotConfig {
    /// `settings` with this section applied; `path` names the section in errors.
    pub fn apply<A: Aggregate>(
        &self,
        mut settings: AggregateSettings<A>,
        path: &str,
    ) -> Result<AggregateSettings<A>, ConfigError> {
        if let Some(strategy) = &self.strategy {
            settings.strategy = Arc::from(strategy.build::<A>(&format!("{path}.strategy"))?);
        }
        if let Some(on) = self.snapshot_on_passivation {
            settings.snapshot_on_passivation = on;
        }
        if let Some(retention) = &self.retention {
            let path = format!("{path}.retention");
            settings.retention = Retention {
                keep_newest: at_least_one(retention.keep_newest as u64, &path, "keep_newest")?
                    as usize,
                max_age: retention
                    .max_age
                    .as_deref()
                    .map(|age| duration(age, &format!("{path}.max_age")))
                    .transpose()?,
            };
        }
        if let Some(compression) = &self.compression {
            let path = format!("{path}.compression");
            let algorithm = match (compression.algorithm.as_str(), compression.level) {
                ("zstd", level) => SnapshotCompression::Zstd {
                    level: level.unwrap_or(3),
                },
                ("lz4", None) => SnapshotCompression::Lz4,
                ("none", None) => SnapshotCompression::None,
                ("lz4" | "none", Some(_)) => {
                    return Err(invalid(
                        &format!("{path}.level"),
                        "applies to zstd only".to_owned(),
                    ));
                }
                (other, _) => {
                    return Err(invalid(
                        &format!("{path}.algorithm"),
                        format!("is {other:?}; expected \"zstd\", \"lz4\" or \"none\""),
                    ));
                }
            };
            algorithm
                .validate()
                .map_err(|e| invalid(&format!("{path}.level"), e.to_string()))?;
            settings.compression.algorithm = algorithm;
            if let Some(threshold) = compression.threshold_bytes {
                settings.compression.threshold_bytes = threshold;
            }
            if let Some(max_deltas) = compression.max_deltas {
                settings.compression.max_deltas = max_deltas;
            }
        }
        Ok(settings)
    }
}

impl StrategyConfig {
    /// The strategy this describes; `path` names it in errors.
    pub fn build<A: Aggregate>(
        &self,
        path: &str,
    ) -> Result<Box<dyn SnapshotStrategy<A>>, ConfigError> {
        Ok(match self {
            Self::Never => Box::new(Never),
            Self::EveryNEvents { n } => Box::new(EveryNEvents::new(at_least_one(*n, path, "n")?)),
            Self::Interval { every } => {
                Box::new(Interval::new(duration(every, &format!("{path}.every"))?))
            }
            Self::Hybrid { n, every } => Box::new(Hybrid::new(
                at_least_one(*n, path, "n")?,
                duration(every, &format!("{path}.every"))?,
            )),
            Self::Bounded {
                every,
                min_gap,
                max_gap,
            } => {
                at_least_one(*every, path, "every")?;
                at_least_one(*min_gap, path, "min_gap")?;
                if max_gap < min_gap {
                    return Err(invalid(
                        &format!("{path}.max_gap"),
                        format!("is {max_gap}, below min_gap {min_gap}"),
                    ));
                }
                Box::new(Bounded::new(*every, *min_gap, *max_gap))
            }
            Self::ReplayCost {
                max_events,
                max_elapsed,
            } => Box::new(ReplayCost::new(
                *max_events,
                duration(max_elapsed, &format!("{path}.max_elapsed"))?,
            )),
            Self::Size {
                event_bytes,
                state_change,
            } => {
                let threshold = match (event_bytes, state_change) {
                    (Some(bytes), change) => {
                        let t =
                            SizeThreshold::event_bytes(at_least_one(*bytes, path, "event_bytes")?);
                        match change {
                            Some(c) => t.or_state_change(at_least_one(*c, path, "state_change")?),
                            None => t,
                        }
                    }
                    (None, Some(c)) => {
                        SizeThreshold::state_change(at_least_one(*c, path, "state_change")?)
                    }
                    (None, None) => {
                        return Err(invalid(
                            path,
                            "needs event_bytes or state_change".to_owned(),
                        ));
                    }
                };
                Box::new(threshold)
            }
            Self::Any { of } => Box::new(AnyOf(Self::build_all::<A>(of, path)?)),
            Self::All { of } => Box::new(AllOf(Self::build_all::<A>(of, path)?)),
        })
    }

    fn build_all<A: Aggregate>(
        of: &[StrategyConfig],
        path: &str,
    ) -> Result<Vec<Box<dyn SnapshotStrategy<A>>>, ConfigError> {
        if of.is_empty() {
            return Err(invalid(&format!("{path}.of"), "is empty".to_owned()));
        }
        of.iter()
            .enumerate()
            .map(|(i, s)| s.build::<A>(&format!("{path}.of[{i}]")))
            .collect()
    }
}

/// Snapshots when any of its strategies says so (each is asked).
struct AnyOf<A: Aggregate>(Vec<Box<dyn SnapshotStrategy<A>>>);

impl<A: Aggregate> SnapshotStrategy<A> for AnyOf<A> {
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        // Every one asked (no short cut): a stateful strategy may count each command.
        let mut any = false;
        for strategy in &self.0 {
            any |= strategy.should_snapshot(context);
        }
        any
    }
}

/// Snapshots when all of its strategies say so (each is asked).
struct AllOf<A: Aggregate>(Vec<Box<dyn SnapshotStrategy<A>>>);

impl<A: Aggregate> SnapshotStrategy<A> for AllOf<A> {
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        let mut all = true;
        for strategy in &self.0 {
            all &= strategy.should_snapshot(context);
        }
        all
    }
}

fn invalid(path: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        reason,
    }
}

fn at_least_one(value: u64, path: &str, key: &str) -> Result<u64, ConfigError> {
    if value == 0 {
        Err(invalid(
            &format!("{path}.{key}"),
            "must be at least 1".to_owned(),
        ))
    } else {
        Ok(value)
    }
}

fn duration(text: &str, path: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        invalid(
            path,
            format!("{text:?} is not a duration (\"30s\", \"5m\", \"7d\"): {e}"),
        )
    })
}
