//! How the report writes a figure: durations, rates, bytes, counts and ratios with three
//! significant digits.

use std::time::Duration;

/// A duration for humans: ns, µs, ms or s with three significant digits.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{} µs", sig3(ns / 1_000.0))
    } else if ns < 1_000_000_000.0 {
        format!("{} ms", sig3(ns / 1_000_000.0))
    } else {
        format!("{} s", sig3(ns / 1_000_000_000.0))
    }
}

/// A rate for humans, e.g. `123 k/s`.
pub fn fmt_rate(per_second: f64) -> String {
    if per_second >= 1_000_000.0 {
        format!("{} M/s", sig3(per_second / 1_000_000.0))
    } else if per_second >= 1_000.0 {
        format!("{} k/s", sig3(per_second / 1_000.0))
    } else {
        format!("{}/s", sig3(per_second))
    }
}

/// A byte count for humans.
pub fn fmt_bytes(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{} MiB", sig3(bytes / (1024.0 * 1024.0)))
    } else if bytes >= 1024.0 {
        format!("{} KiB", sig3(bytes / 1024.0))
    } else {
        format!("{bytes:.0} B")
    }
}

/// A ratio, e.g. `0.42×`.
pub fn fmt_ratio(ratio: f64) -> String {
    if !ratio.is_finite() {
        "n/a".to_owned()
    } else {
        format!("{}×", sig3(ratio))
    }
}

/// A count with thousands separators.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Three significant digits, without a needless exponent.
pub fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).max(0) as usize;
    format!("{x:.decimals$}")
}

/// The ratio `ours / baseline`, NaN when the baseline is zero.
pub fn ratio(ours: f64, baseline: f64) -> f64 {
    if baseline == 0.0 {
        f64::NAN
    } else {
        ours / baseline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_readable() {
        assert_eq!(fmt_duration(Duration::from_nanos(750)), "750 ns");
        assert_eq!(fmt_duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(fmt_rate(123_456.0), "123 k/s");
        assert_eq!(fmt_count(1_234_567), "1 234 567");
        assert_eq!(fmt_ratio(0.4231), "0.423×");
        assert_eq!(sig3(1234.0), "1234");
        assert!(ratio(1.0, 0.0).is_nan());
    }
}
