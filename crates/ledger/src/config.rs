//! ledgerd configuration: TOML file (SPEC §5) plus command-line overrides,
//! parsed once into a validated [`Config`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::logging::{LogFormat, LogSettings};
use common::tokens::TokenSet;
use common::units::{Bytes, Span};
use serde::Deserialize;
use spool_format::Uuid;

/// Largest accepted `POST /v1/batches` body by default, in bytes. A forwarder
/// sends at most `batch_bytes_max` (1 MiB by default) of spool frames per batch;
/// their JSON is about twice as big, so 16 MiB leaves room for forwarders tuned
/// up eightfold while still bounding what one request can make us buffer.
pub const BODY_BYTES_MAX_DEFAULT: u64 = 16 << 20;
/// Most events in one batch by default: 20 times the forwarder's default of 500,
/// and small enough that one batch is one bounded sled batch / SQL statement.
pub const BATCH_EVENTS_MAX_DEFAULT: usize = 10_000;
/// Concurrent connections by default: a few per edge node for hundreds of nodes.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An edge node: may only `POST /v1/batches`.
    Node,
    /// Reads everything, may also post batches (replays, tools).
    Admin,
    /// Reads only the events whose payee is this UUID.
    Merchant(Uuid),
}

/// A config error naming the key at fault; ledgerd exits 2 on it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_owned(), message: message.into() }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    addr: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    tokens_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    body_bytes_max: Option<Bytes>,
    batch_events_max: Option<usize>,
    connections_max: Option<usize>,
    header_read_timeout: Option<Span>,
    body_read_timeout: Option<Span>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    /// Older spelling of `format = "json"`.
    json: Option<bool>,
    format: Option<LogFormat>,
    level: Option<String>,
}

/// One line naming the dotted key and its line (`limits.body_bytes_max: … (line 7)`),
/// the same rendering as spoold's.
fn toml_err(text: &str, e: &toml::de::Error) -> ConfigError {
    let (key, message) = common::config::toml_error(text, e);
    err(key.as_deref().unwrap_or("config"), message)
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub store: Option<String>,
    pub tokens_file: Option<PathBuf>,
    /// `--log-format`, overrides `[log] format`.
    pub log_format: Option<LogFormat>,
    /// `--log-level`, overrides `[log] level` and RUST_LOG.
    pub log_level: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `[listen] tls_cert` + `tls_key`: the listener speaks TLS (reloadable on
    /// SIGHUP). `None`: plain HTTP (loopback, tests, or TLS terminated in front).
    pub tls: Option<Arc<common::tls::Certificate>>,
    /// `[listen] tls_client_ca`: every client must present a certificate
    /// signed by one of these CAs (and still its bearer token); reloadable on
    /// SIGHUP. Only with `tls`.
    pub tls_client_ca: Option<Arc<common::tls::ClientCa>>,
    pub store_url: String,
    pub tokens: TokenSet,
    /// Role of each token, by token name.
    pub roles: HashMap<String, Role>,
    pub body_bytes_max: usize,
    pub batch_events_max: usize,
    pub connections_max: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub tokens_file: PathBuf,
    pub log: LogSettings,
}

impl Config {
    /// Reads `path` (if given), applies `over`, validates.
    pub fn load(path: Option<&Path>, over: &Overrides) -> Result<Config, ConfigError> {
        let raw = match path {
            None => RawConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| err("--config", format!("read {}: {e}", p.display())))?;
                toml::from_str(&text).map_err(|e| toml_err(&text, &e))?
            }
        };
        Config::from_raw(raw, over)
    }

    /// Parses TOML text (for tests) and validates.
    pub fn parse(text: &str, over: &Overrides) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_err(text, &e))?;
        Config::from_raw(raw, over)
    }

    fn from_raw(raw: RawConfig, over: &Overrides) -> Result<Config, ConfigError> {
        let addr = over.listen.clone().or(raw.listen.addr).unwrap_or_else(|| "127.0.0.1:8800".into());
        let listen: SocketAddr =
            addr.parse().map_err(|e| err("listen.addr", format!("{addr:?} is not an address:port ({e})")))?;
        let tls = match (raw.listen.tls_cert, raw.listen.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some(common::tls::Certificate::load(&cert, &key).map_err(|e| err("listen.tls_cert", e.to_string()))?)
            }
            (Some(_), None) => return Err(err("listen.tls_key", "required with listen.tls_cert")),
            (None, Some(_)) => return Err(err("listen.tls_cert", "required with listen.tls_key")),
        };
        let tls_client_ca = match (&tls, raw.listen.tls_client_ca) {
            (_, None) => None,
            (None, Some(_)) => {
                return Err(err("listen.tls_client_ca", "needs listen.tls_cert and listen.tls_key (client certificates are a TLS feature)"))
            }
            (Some(_), Some(p)) => {
                Some(common::tls::ClientCa::load(&p).map_err(|e| err("listen.tls_client_ca", e.to_string()))?)
            }
        };
        let store_url = over
            .store
            .clone()
            .or(raw.store.url)
            .ok_or_else(|| err("store.url", "required (e.g. \"sled:///var/lib/ledgerd\"), or --store"))?;
        if let Some(path) = store_url.strip_prefix("sled://") {
            if !path.starts_with('/') {
                return Err(err("store.url", "sled:// needs an absolute path, e.g. sled:///var/lib/ledgerd"));
            }
        } else if store_url.starts_with("postgres://") || store_url.starts_with("postgresql://") {
            crate::pg_store::check_url(&store_url).map_err(|e| err("store.url", e.to_string()))?;
        } else {
            return Err(err("store.url", "must start with sled:// or postgres://"));
        }
        let tokens_key = if over.tokens_file.is_some() { "--tokens-file" } else { "auth.tokens_file" };
        let tokens_file = over
            .tokens_file
            .clone()
            .or(raw.auth.tokens_file)
            .ok_or_else(|| err("auth.tokens_file", "required: ledgerd never serves anonymous requests"))?;
        let tokens = TokenSet::load(&tokens_file).map_err(|e| err(tokens_key, e))?;
        if tokens.is_empty() {
            return Err(err("auth.tokens_file", "holds no token"));
        }
        let mut roles = HashMap::new();
        for t in tokens.tokens() {
            let role = match t.extra.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["node"] => Role::Node,
                ["admin"] => Role::Admin,
                ["merchant", payee] => Role::Merchant(Uuid::try_parse(payee).map_err(|_| {
                    err("auth.tokens_file", format!("token {:?}: merchant payee is not a UUID", t.name))
                })?),
                ["merchant"] => {
                    return Err(err("auth.tokens_file", format!("token {:?}: a merchant token needs a payee UUID", t.name)))
                }
                _ => {
                    return Err(err(
                        "auth.tokens_file",
                        format!("token {:?}: expected name:secret:role[:payee-uuid] with role node, admin or merchant", t.name),
                    ))
                }
            };
            roles.insert(t.name.clone(), role);
        }
        let l = raw.limits;
        let body_bytes_max = l.body_bytes_max.map_or(BODY_BYTES_MAX_DEFAULT, Bytes::as_u64);
        if body_bytes_max < 1024 {
            return Err(err("limits.body_bytes_max", "must be at least 1KiB"));
        }
        let batch_events_max = l.batch_events_max.unwrap_or(BATCH_EVENTS_MAX_DEFAULT);
        if batch_events_max == 0 {
            return Err(err("limits.batch_events_max", "must be at least 1"));
        }
        let connections_max = l.connections_max.unwrap_or(CONNECTIONS_MAX_DEFAULT);
        if connections_max == 0 {
            return Err(err("limits.connections_max", "must be at least 1"));
        }
        let format = over.log_format.or(raw.log.format).unwrap_or(if raw.log.json == Some(true) {
            LogFormat::Json
        } else {
            LogFormat::Text
        });
        let (level_key, level) = match (&over.log_level, raw.log.level) {
            (Some(l), _) => ("--log-level", Some(l.clone())),
            (None, l) => ("log.level", l),
        };
        if let Some(l) = &level {
            LogSettings::check_level(l).map_err(|e| err(level_key, e))?;
        }
        Ok(Config {
            tokens_file,
            log: LogSettings { format, level },
            listen,
            tls,
            tls_client_ca,
            store_url,
            tokens,
            roles,
            body_bytes_max: usize::try_from(body_bytes_max).map_err(|_| err("limits.body_bytes_max", "too large"))?,
            batch_events_max,
            connections_max,
            header_read_timeout: l.header_read_timeout.map_or(common::http::HEADER_READ_TIMEOUT_DEFAULT, Span::get),
            // A 16 MiB body at 1 MiB/s: slow links still make it, stalled ones are cut.
            body_read_timeout: l.body_read_timeout.map_or(Duration::from_secs(30), Span::get),
        })
    }

    /// Every effective value, one `key = value` each, for `--check-config
    /// --print`; the store URL's password and token secrets are redacted.
    pub fn effective_values(&self) -> Vec<(&'static str, String)> {
        let span = |d: Duration| common::units::Span(d).to_string();
        vec![
            ("listen.addr", self.listen.to_string()),
            (
                "listen.tls_cert",
                self.tls.as_ref().map_or("none (plain HTTP)".into(), |c| format!("{} (TLS)", c.paths().0.display())),
            ),
            ("listen.tls_key", self.tls.as_ref().map_or("none".into(), |c| c.paths().1.display().to_string())),
            (
                "listen.tls_client_ca",
                self.tls_client_ca.as_ref().map_or("none (no client certificate asked)".into(), |ca| {
                    format!("{} ({} certificates; a client certificate is required)", ca.path().display(), ca.len())
                }),
            ),
            ("store.url", crate::store::redact_url(&self.store_url)),
            ("auth.tokens_file", format!("{} ({} tokens, secrets redacted)", self.tokens_file.display(), self.tokens.len())),
            ("limits.body_bytes_max", Bytes(self.body_bytes_max as u64).to_string()),
            ("limits.batch_events_max", self.batch_events_max.to_string()),
            ("limits.connections_max", self.connections_max.to_string()),
            ("limits.header_read_timeout", span(self.header_read_timeout)),
            ("limits.body_read_timeout", span(self.body_read_timeout)),
            ("log.format", self.log.format.as_str().to_owned()),
            ("log.level", self.log.effective_level()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("tokens");
        std::fs::write(&p, text).expect("write");
        (d, p)
    }

    #[test]
    fn good_config_and_overrides() {
        let (_d, p) = tokens("n:0123456789abcdef01:node\na:0123456789abcdef02:admin\nm:0123456789abcdef03:merchant:2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b\n");
        let text = format!("[listen]\naddr = \"127.0.0.1:9\"\n[store]\nurl = \"sled:///tmp/x\"\n[auth]\ntokens_file = {:?}\n[limits]\nbody_bytes_max = \"1MiB\"\n", p);
        let c = Config::parse(&text, &Overrides::default()).expect("valid");
        assert_eq!(c.listen.port(), 9);
        assert_eq!(c.body_bytes_max, 1 << 20);
        assert_eq!(c.roles["n"], Role::Node);
        assert!(matches!(c.roles["m"], Role::Merchant(_)));
        let c = Config::parse(&text, &Overrides { listen: Some("127.0.0.1:10".into()), ..Overrides::default() }).expect("valid");
        assert_eq!(c.listen.port(), 10);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let (_d, p) = tokens("n:0123456789abcdef01:node\n");
        let base = format!("[store]\nurl = \"sled:///tmp/x\"\n[auth]\ntokens_file = {:?}\n", p);
        let check = |text: &str, key: &str| {
            let e = Config::parse(text, &Overrides::default()).expect_err(text);
            assert!(e.to_string().contains(key), "{text}: got {e}, want key {key}");
        };
        check(&format!("{base}[listen]\naddr = \"nope\"\n"), "listen.addr");
        check(&format!("{base}[listen]\nadr = \"127.0.0.1:1\"\n"), "adr");
        check(&format!("{base}[limits]\nbody_bytes_max = \"lots\"\n"), "body_bytes_max");
        check(&format!("[auth]\ntokens_file = {:?}\n", p), "store.url");
        check(&format!("[store]\nurl = \"sled://relative\"\n[auth]\ntokens_file = {:?}\n", p), "store.url");
        check(&format!("[store]\nurl = \"postgres://u@h/db?schema=Bad-Name\"\n[auth]\ntokens_file = {:?}\n", p), "store.url");
        check(&format!("[store]\nurl = \"postgres://u@h:notaport/db\"\n[auth]\ntokens_file = {:?}\n", p), "store.url");
        check("[store]\nurl = \"sled:///tmp/x\"\n", "auth.tokens_file");
        check(&format!("{base}[listen]\ntls_client_ca = \"/nonexistent.pem\"\n"), "listen.tls_client_ca");
        let (_d2, p2) = tokens("m:0123456789abcdef03:merchant\n");
        check(&format!("[store]\nurl = \"sled:///tmp/x\"\n[auth]\ntokens_file = {:?}\n", p2), "auth.tokens_file");
        let (_d3, p3) = tokens("m:0123456789abcdef03:boss\n");
        check(&format!("[store]\nurl = \"sled:///tmp/x\"\n[auth]\ntokens_file = {:?}\n", p3), "auth.tokens_file");
    }
}
