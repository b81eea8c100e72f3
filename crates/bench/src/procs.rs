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

/// A CPU list as `taskset -c` takes it: `1`, `0,2`, `2-3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

pub fn parse_cpu_list(list: &str) -> Result<CpuList, String> {
    parse_cpus(list).map(CpuList)
}

fn parse_cpus(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for item in list.split(',').map(str::trim) {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        let (a, b): (usize, usize) =
            (a.parse().map_err(|_| format!("{item:?} is not a CPU"))?, b.parse().map_err(|_| format!("{item:?} is not a CPU"))?);
        if a > b || b >= rustix::thread::CpuSet::MAX_CPU {
            return Err(format!("{item:?} is not a CPU range"));
        }
        cpus.extend(a..=b);
    }
    Ok(cpus)
}

fn cpu_set(cpus: &[usize]) -> rustix::thread::CpuSet {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    set
}

/// Every running `postgres` process (the postmaster, its workers, backends).
fn postgres_pids() -> Vec<rustix::process::Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim_end() == "postgres").then(|| rustix::process::Pid::from_raw(pid)).flatten()
    })
    .collect()
}

/// A run that models a database with CPUs of its own, as in a deployment
/// where PostgreSQL is a separate machine: every `postgres` process (new
/// backends inherit the postmaster's placement) runs on `pg`, this process and
/// so the daemons it starts on `app`. Dropping it gives PostgreSQL every CPU
/// back. Call it before starting threads: only the calling thread is placed,
/// the ones it starts inherit it.
#[derive(Debug)]
pub struct Placement {
    all: Vec<usize>,
}

impl Placement {
    pub fn new(pg: &[usize], app: &[usize]) -> anyhow::Result<Placement> {
        let all: Vec<usize> = (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect();
        let pids = postgres_pids();
        anyhow::ensure!(!pids.is_empty(), "no postgres process on this machine to place on CPUs {pg:?}");
        for pid in &pids {
            rustix::thread::sched_setaffinity(Some(*pid), &cpu_set(pg))
                .with_context(|| format!("place postgres process {} on CPUs {pg:?} (root needed)", pid.as_raw_nonzero()))?;
        }
        let placement = Placement { all };
        rustix::thread::sched_setaffinity(None, &cpu_set(app)).with_context(|| format!("place the bench on CPUs {app:?}"))?;
        println!("placement: {} postgres processes on CPUs {pg:?}; the bench, spoold and ledgerd on CPUs {app:?}", pids.len());
        Ok(placement)
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        for pid in postgres_pids() {
            // A backend that ended meanwhile is gone: nothing to give back.
            let _ = rustix::thread::sched_setaffinity(Some(pid), &cpu_set(&self.all));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cpus;

    #[test]
    fn cpu_lists_parse_like_taskset() {
        assert_eq!(parse_cpus("1"), Ok(vec![1]));
        assert_eq!(parse_cpus("0,2-4"), Ok(vec![0, 2, 3, 4]));
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("").is_err());
    }
}
