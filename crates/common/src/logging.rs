//! Log set-up, the same for both daemons: a level (`--log-level`, `[log]
//! level`, else `RUST_LOG`, else `info`) and a format (`--log-format
//! text|json`, `[log] format`). Logs go to stderr; ANSI colour only when stderr
//! is a terminal and `NO_COLOR` is unset, so journald and log files get plain
//! text.

use std::io::IsTerminal as _;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (journald / log shippers).
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Validated log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive (`info`, `debug`, `spoold=debug,info`); `None`:
    /// `RUST_LOG`, else `info`.
    pub level: Option<String>,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { format: LogFormat::Text, level: None }
    }
}

impl LogSettings {
    /// Checks a level directive; the error is one line for a config message.
    pub fn check_level(level: &str) -> Result<(), String> {
        EnvFilter::builder()
            .parse(level)
            .map(|_| ())
            .map_err(|e| format!("{level:?} is not a log level (try \"info\", \"debug\" or \"spoold=debug,info\"): {e}"))
    }

    /// The level in effect, for printing: the directive, or where it comes from.
    pub fn effective_level(&self) -> String {
        match &self.level {
            Some(l) => l.clone(),
            None => match std::env::var("RUST_LOG") {
                Ok(v) if !v.is_empty() => format!("{v} (RUST_LOG)"),
                _ => "info".to_owned(),
            },
        }
    }
}

/// Installs the global subscriber; logs go to stderr (journald picks them up).
pub fn init(settings: &LogSettings) {
    let filter = match &settings.level {
        Some(l) => EnvFilter::builder().parse(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
