//! offgrid benchmarks. Every figure is printed next to a baseline measured in the
//! same run on the same machine, as a ratio; nothing here is a pass/fail test.
//!
//! `cargo build --release --workspace --bins && cargo run --release -p bench --
//! <subcommand>`; each subcommand's module says what it measures and what its
//! baseline is. `all` runs every one and writes `docs/benchmarks.md` and
//! `docs/benchmarks.svg` (see `all`).

/// mimalloc instead of glibc malloc: sled allocates on every operation, and
/// malloc was ~12% of the append profile (docs/profile.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod all;
mod backlog;
mod commit;
mod drain;
mod ids;
mod ingest;
mod jetstream;
mod procs;
mod report;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bench", about = "offgrid benchmarks (figures with same-run baselines)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Durable appends/s through the spool's group commit vs a bare sled group flush.
    Commit(commit::CommitArgs),
    /// spoold HTTP ingest (single events at 64 conns, batches) vs a bare hyper JSON echo.
    Ingest(ingest::IngestArgs),
    /// Forwarder drain of a spool backlog into ledgerd (sled, PostgreSQL) vs direct single-row INSERTs.
    Drain(drain::DrainArgs),
    /// spoold's RSS, restart-to-ready time and disk bytes per event with a large pending backlog vs an empty spool.
    Backlog(backlog::BacklogArgs),
    /// Every benchmark above in one run; writes the report (markdown + SVG chart).
    All(all::AllArgs),
}

/// CPUs this process may use (0 if unknown).
fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Commit(args) => commit::run(args),
        Cmd::Ingest(args) => ingest::run(args),
        Cmd::Drain(args) => drain::run(args),
        Cmd::Backlog(args) => backlog::run(args),
        Cmd::All(args) => all::run(args),
    }
}
