//! offgrid benchmarks. Every figure is printed next to a baseline measured in the
//! same run on the same machine, as a ratio; nothing here is a pass/fail test.
//!
//! `cargo run --release -p bench -- <subcommand>`; each subcommand's module says
//! what it measures and what its baseline is.

/// mimalloc instead of glibc malloc: sled allocates on every operation, and
/// malloc was ~12% of the append profile (docs/benchmarks.md, "Profile").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commit;
mod drain;
mod ingest;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Commit(args) => commit::run(args),
        Cmd::Ingest(args) => ingest::run(args),
        Cmd::Drain(args) => drain::run(args),
    }
}
