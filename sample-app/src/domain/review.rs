//! The review rule's one setting: how long an account may stay frozen before it is reviewed.
//!
//! A frozen account is reviewed automatically once it has been frozen for
//! [`ReviewPolicy::after`]: `freeze` schedules a durable reminder named [`REVIEW_REMINDER`]
//! that sends the account a `review` command then; `unfreeze` and `close` cancel it (see
//! [`Account`](super::Account)). The policy is a service registered with the account type
//! (`AggregateSettings::service`), so the delay is configuration, not code: 30 days by default,
//! a second or two in the demo and the tests (`--review-frozen-after 2s`). Without a registered
//! policy accounts are not reviewed and schedule nothing.

use std::fmt;
use std::str::FromStr;

use chrono::Duration;

/// The name of the reminder a freeze schedules (unique per account: freezing again would
/// replace it, though a frozen account refuses a second freeze).
pub const REVIEW_REMINDER: &str = "review";

/// The longest review delay accepted: ten years.
pub const MAX_REVIEW_DAYS: i64 = 3_650;

/// How long an account may stay frozen before a review is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewPolicy {
    /// The delay between a freeze and its review (positive).
    pub after: Duration,
}

impl ReviewPolicy {
    /// The default delay: 30 days.
    pub const DEFAULT_DAYS: i64 = 30;

    /// Reviews `after` a freeze.
    pub fn after(after: Duration) -> Self {
        Self { after }
    }
}

impl Default for ReviewPolicy {
    fn default() -> Self {
        Self::after(Duration::days(Self::DEFAULT_DAYS))
    }
}

/// Why a review delay could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; give a positive whole number with a unit: ms, s, m, h or d (e.g. 2s, 500ms, 30d)")]
pub struct BadDelay(String);

/// Reads `2s`, `500ms`, `15m`, `12h`, `30d`: a positive whole number and a unit (`ms`, `s`,
/// `m`, `h`, `d`), at most [`MAX_REVIEW_DAYS`] days.
impl FromStr for ReviewPolicy {
    type Err = BadDelay;

    fn from_str(text: &str) -> Result<Self, BadDelay> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| BadDelay(format!("{text:?} has no unit")))?;
        let (number, unit) = text.split_at(split);
        let number: i64 = number
            .parse()
            .map_err(|_| BadDelay(format!("{text:?} does not start with a whole number")))?;
        let per_unit_ms: i64 = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => return Err(BadDelay(format!("unknown unit {other:?}"))),
        };
        let max_ms = MAX_REVIEW_DAYS * 86_400_000;
        match number.checked_mul(per_unit_ms) {
            Some(0) => Err(BadDelay("the delay must be positive".to_owned())),
            Some(ms) if ms <= max_ms => Ok(Self::after(Duration::milliseconds(ms))),
            _ => Err(BadDelay(format!(
                "{text:?} is longer than {MAX_REVIEW_DAYS} days"
            ))),
        }
    }
}

/// The delay in its largest whole unit: `30d`, `2s`, `1500ms`.
impl fmt::Display for ReviewPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.after.num_milliseconds();
        let (per_unit, unit) = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ]
        .into_iter()
        .find(|(per_unit, _)| ms != 0 && ms % per_unit == 0)
        .unwrap_or((1, "ms"));
        write!(f, "{}{unit}", ms / per_unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Duration, BadDelay> {
        text.parse::<ReviewPolicy>().map(|policy| policy.after)
    }

    #[test]
    fn delays_read_with_every_unit_and_print_in_their_largest_unit() {
        assert_eq!(parse("2s"), Ok(Duration::seconds(2)));
        assert_eq!(parse("500ms"), Ok(Duration::milliseconds(500)));
        assert_eq!(parse(" 15m "), Ok(Duration::minutes(15)));
        assert_eq!(parse("12h"), Ok(Duration::hours(12)));
        assert_eq!(parse("30d"), Ok(Duration::days(30)));
        assert_eq!(ReviewPolicy::default().to_string(), "30d");
        assert_eq!(
            ReviewPolicy::after(Duration::milliseconds(1_500)).to_string(),
            "1500ms"
        );
        assert_eq!(
            ReviewPolicy::after(Duration::minutes(90)).to_string(),
            "90m"
        );
    }

    #[test]
    fn zero_negative_unitless_unknown_and_huge_delays_are_refused() {
        for bad in [
            "0s",
            "-2s",
            "2",
            "s",
            "",
            "2 weeks",
            "2.5s",
            "3651d",
            "99999999999999d",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(parse("3650d").is_ok());
    }
}
