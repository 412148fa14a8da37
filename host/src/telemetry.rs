//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`); text, or one JSON
//! object per line with `SLUICE_LOG_FORMAT=json` (for log collectors; spans' fields such as
//! `trace_id` and `order_id` included).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,librdkafka=warn"));
    // A second init (tests) keeps the first subscriber.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        // Colours only for a terminal: log files and collectors get plain text.
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
