//! Spans made only once a `tracing` subscriber is installed: the command path's (in
//! `aggregate-actors`) and an activation's.
//!
//! With `tracing`'s `log` feature on (sqlx turns it on) and no subscriber installed, a span is
//! still built for the `log` crate: its fields recorded, and its every enter and exit checked
//! against `log`'s level. On the in-memory command path that was about 600 instructions of a
//! 14 000-instruction command (`benches/PROFILE.md`, section 1) for spans nobody reads. Once a
//! subscriber is installed, its filter decides as usual, at the cost of a cached check.
//!
//! The price: a program that only installs a `log` logger, and no `tracing` subscriber, does not
//! get the command path's span lines (`tracing` writes those at `log`'s trace level). Its
//! events (`tracing::debug!` and the like) still reach `log`.

use tracing::Span;

/// `make()` if a `tracing` subscriber has been installed, else a span that does nothing.
///
/// For spans on hot paths whose fields cost something to record (a key formatted, a field
/// computed): without a subscriber, `tracing` would still record them for `log`.
pub fn span_if_traced(make: impl FnOnce() -> Span) -> Span {
    if tracing::dispatcher::has_been_set() {
        make()
    } else {
        Span::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_subscriber_no_span_is_made_and_with_one_it_is() {
        let mut made = false;
        let span = span_if_traced(|| {
            made = true;
            tracing::info_span!("unseen")
        });
        // Other tests of this binary may have installed a subscriber by now; only then is it made.
        assert_eq!(made, tracing::dispatcher::has_been_set());
        assert_eq!(span.is_none(), !made);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = span_if_traced(|| tracing::info_span!("seen"));
            assert!(!span.is_disabled(), "the installed subscriber enables it");
        });
    }
}
