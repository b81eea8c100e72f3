//! A profiling probe, not a benchmark: a fixed amount of spool work (N appends
//! from 16 tasks, then N appends in batches of 100) for `valgrind
//! --tool=callgrind`, whose instruction counts repeat exactly on a busy machine
//! where wall-clock figures do not. `docs/profile.md` reports
//! what it showed and what was changed because of it.
//!
//! `cargo build --release -p bench --example spool_cost &&
//!  valgrind --tool=callgrind target/release/examples/spool_cost 4000`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(4000);
    let dir = tempfile::tempdir().context("create temp dir")?;
    let spool = spool::Spool::open(spool::SpoolConfig::for_dir(dir.path())).context("open spool")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..16 {
            let s = spool.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..n / 16 {
                    s.append(test_support::events::spec_event(&format!("w{w}-{i}"))).await?;
                }
                Ok::<_, spool::SpoolError>(())
            }));
        }
        for t in tasks {
            t.await.context("join writer")??;
        }
        for b in 0..n / 100 {
            let events = (0..100).map(|i| test_support::events::spec_event(&format!("b{b}-{i}"))).collect();
            for r in spool.append_batch(events).await {
                r?;
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    spool.close();
    Ok(())
}
