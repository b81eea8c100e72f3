//! The real daemons and processes the benchmarks run: spoold's config and
//! start-up, and memory figures from `/proc`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use test_support::DaemonProcess;

/// The bearer secret of the benchmark's spoold.
pub const BENCH_TOKEN: &str = "bench-secret-0123456789abcdef";

/// A spoold config in `dir`: loopback `port`, spool in `spool_dir`, no admin
/// socket, a small disk reserve, batches of up to `batch_events_max`; forwards
/// to `ledger_url` when given (with a token file next to the config).
pub fn write_spoold_config(
    dir: &Path,
    port: u16,
    spool_dir: &Path,
    batch_events_max: usize,
    ledger_url: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("bench:{BENCH_TOKEN}\n")).context("write the tokens file")?;
    let mut text = format!(
        "node_id = \"bench-node\"\n[listen]\naddr = \"127.0.0.1:{port}\"\nadmin_socket = \"\"\n\
         [auth]\ntokens_file = \"{}\"\n[spool]\ndir = \"{}\"\ndisk_free_bytes_min = \"256MiB\"\n\
         disk_free_inodes_min = 1000\nbytes_max = \"64GiB\"\n[limits]\nbatch_events_max = {}\nbatch_body_bytes_max = \"16MiB\"\n",
        tokens.display(),
        spool_dir.display(),
        batch_events_max,
    );
    if let Some(url) = ledger_url {
        let token_file = dir.join("ledger.token");
        std::fs::write(&token_file, "bench-ledger-token-0123456789\n").context("write the ledger token file")?;
        text.push_str(&format!("[ledger]\nurls = [\"{url}\"]\ntoken_file = \"{}\"\n", token_file.display()));
    }
    let config = dir.join("spoold.toml");
    std::fs::write(&config, text).context("write the spoold config")?;
    Ok(config)
}

/// Starts the `spoold` next to this binary (same profile) with `config`,
/// logging to `log`. Killed (SIGKILL) when dropped.
pub fn spawn_spoold(config: &Path, log: &Path) -> anyhow::Result<DaemonProcess> {
    DaemonProcess::spawn("spoold", &["--config".to_owned(), config.display().to_string()], log).context("start spoold")
}

/// A `kB` field (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status`, in KiB; `pid`
/// `None` is this process.
pub fn status_kib(pid: Option<u32>, field: &str) -> anyhow::Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("find {field} in {path}"))
}
