//! The operators' dashboard: one page of plain HTML, CSS and JavaScript, compiled into the
//! binary (`include_str!`) and loading nothing from elsewhere.
//!
//! - `GET /dashboard`: the overview. Per aggregate type: live actors, activations, commands
//!   per second (with a sparkline of the last minute) and in total, outcomes, the replay-size
//!   and activation-time histograms, and the snapshot figures; the aggregates that stored the
//!   newest events, and a form to open any aggregate. Polls `GET /stats` every second.
//! - `GET /dashboard#/{type}/{id}`: one aggregate. Its events (`GET /{type}/{id}/events`, newest
//!   first, paged), its snapshots each with its verification (`GET /{type}/{id}/snapshots`), and
//!   a time-travel slider over versions 0 to the current one that shows the state
//!   reconstructed there (`GET /{type}/{id}/at?version=N`) with the snapshot it started from
//!   and the events it replayed; events after the slider's version are dimmed. Refreshes every
//!   second; a slider at the newest version follows new events.
//!
//! The page only reads: it never sends a command, and nothing it calls activates an actor, so
//! watching an aggregate does not keep it in memory or change the figures it shows.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page.
pub const INDEX_HTML: &str = include_str!("dashboard/index.html");

/// Its script.
pub const APP_JS: &str = include_str!("dashboard/app.js");

/// Its style sheet.
pub const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The assets change with the binary only, but a browser must not keep an old copy across
/// an upgrade: it revalidates every time (they are small).
const CACHE_CONTROL: &str = "no-cache";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, CACHE_CONTROL),
        ],
        body,
    )
        .into_response()
}

/// `GET /dashboard`: the page.
pub(super) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /dashboard/app.js`.
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /dashboard/style.css`.
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("style.css", STYLE_CSS),
        ] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                // The SVG namespace is an identifier, not a request.
                let found = text
                    .match_indices(needle)
                    .any(|(i, _)| !text[i..].starts_with("http://www.w3.org/2000/svg"));
                assert!(!found, "{name} refers to {needle}");
            }
        }
        assert!(INDEX_HTML.contains("/dashboard/app.js"));
        assert!(INDEX_HTML.contains("/dashboard/style.css"));
    }
}
