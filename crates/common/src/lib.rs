//! Pieces both daemons and spoolctl share, so they cannot drift apart:
//! - [`wire`]: the JSON bodies of the HTTP APIs (SPEC §2, §3);
//! - [`admin`]: the admin socket protocol between spoold and spoolctl;
//! - [`units`]: config values with units ("64KiB", "5s"), parsed once;
//! - [`tokens`]: bearer tokens, compared in constant time, never printed;
//! - [`http`]: the server loop with connection hygiene (connection cap, header,
//!   body and idle timeouts, graceful shutdown) and response helpers;
//! - [`config`]: TOML errors as one line naming the key and its line;
//! - [`status`]: the one status document of `/v1/status` and admin `status`;
//! - [`logging`]: tracing-subscriber set-up, text or JSON, level, colour only on a terminal.
//! - [`tls`]: rustls server configs from PEM files, for [`http::serve_tls`].
//! - [`coding`]: request body content codings (zstd, gzip) for forwarded
//!   batches, with a hard bound on the decoded size.
//!
//! **Invariant:** no type here prints a token secret, in `Debug` or anywhere else.

pub mod admin;
pub mod coding;
pub mod config;
pub mod http;
pub mod logging;
pub mod status;
pub mod tokens;
pub mod units;
pub mod wire;
pub mod tls;
