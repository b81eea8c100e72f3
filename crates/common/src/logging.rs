//! Log set-up: `RUST_LOG`-style filter (default `info`), human-readable lines by
//! default, one JSON object per line with `json = true`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; logs go to stderr (journald picks them up).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
