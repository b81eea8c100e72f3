//! Crash test with real processes: a child process appends under concurrency
//! and prints every append that returned success; the parent SIGKILLs it at a
//! random moment, reopens the spool, and checks that every acknowledged append
//! is present and intact, and that seqs keep growing.
//!
//! The child is this same test binary, re-run with `OFFGRID_CRASH_CHILD` set,
//! executing only `crash_child`. `OFFGRID_CRASH_CYCLES` overrides the number of
//! cycles (default 50).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;
use spool::AppendOutcome;

use crate::{event, open, rt};

const CHILD_ENV: &str = "OFFGRID_CRASH_CHILD";

/// Amount derived from the id, so that the parent can check the content.
fn amount_for(id: &str) -> u64 {
    id.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))) % 1_000_000 + 1
}

/// The child: 32 concurrent appenders, forever (until killed). Each line on
/// stdout is `seq id`, written only after `append` returned.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Not a child run: nothing to do.
    };
    let cycle: u64 = std::env::var("OFFGRID_CRASH_CYCLE").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    let spool = open(std::path::Path::new(&dir));
    let (tx, rx) = mpsc::sync_channel::<String>(1024);
    let printer = std::thread::spawn(move || {
        let stdout = std::io::stdout();
        for line in rx {
            let mut out = stdout.lock();
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                return;
            }
        }
    });
    rt().block_on(async {
        let mut tasks = Vec::new();
        for w in 0..32u64 {
            let spool = spool.clone();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    // Some ids repeat across cycles: duplicates must also be durable.
                    let id = if i % 10 == 9 { format!("c{}-w{w}-i{}", cycle.saturating_sub(1), i - 1) } else { format!("c{cycle}-w{w}-i{i}") };
                    match spool.append(event(&id, amount_for(&id))).await {
                        Ok(AppendOutcome::Accepted { seq }) | Ok(AppendOutcome::Duplicate { seq }) => {
                            if tx.send(format!("{seq} {id}")).is_err() {
                                return;
                            }
                        }
                        Ok(AppendOutcome::Conflict { .. }) => panic!("conflict for {id}"),
                        Err(e) => panic!("append {id}: {e}"),
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    drop(tx);
    let _ = printer.join();
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cycles: u64 = std::env::var("OFFGRID_CRASH_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut max_seq_seen = 0u64;
    let mut rng = rand::thread_rng();
    let mut total_lines = 0usize;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["crash::crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("OFFGRID_CRASH_CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // Wait for the first acknowledgement, then let it run a random while.
        // Wait for the first acknowledgement (the child's test harness prints
        // a line or two first, and opening takes a moment), then kill it at a
        // random point while appends are in flight.
        let mut lines = Vec::new();
        let first_ack_by = Instant::now() + Duration::from_secs(30);
        while !lines.iter().any(|l: &String| l.split_once(' ').is_some_and(|(s, _)| s.parse::<u64>().is_ok())) {
            match rx.recv_timeout(first_ack_by.saturating_duration_since(Instant::now())) {
                Ok(l) => lines.push(l),
                Err(e) => panic!("cycle {cycle}: child acknowledged nothing: {e}"),
            }
        }
        let run_for = Duration::from_millis(rng.gen_range(5..120));
        let until = Instant::now() + run_for;
        while Instant::now() < until {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(5)) {
                lines.push(l);
            }
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        reader.join().expect("reader");
        lines.extend(rx.try_iter());
        for line in &lines {
            // Only whole lines count: a line cut by the kill has no newline and
            // `lines()` still yields it, so parse strictly.
            let Some((seq, id)) = line.split_once(' ') else { continue };
            let Ok(seq) = seq.parse::<u64>() else { continue };
            if let Some(prev) = acked.insert(id.to_owned(), seq) {
                assert_eq!(prev, seq, "id {id} acknowledged with two seqs");
            }
            max_seq_seen = max_seq_seen.max(seq);
        }
        total_lines += lines.len();

        // Reopen and check everything acknowledged so far.
        let spool = open(dir.path());
        for (id, seq) in &acked {
            let r = spool.get(*seq).expect("get").unwrap_or_else(|| panic!("cycle {cycle}: acknowledged seq {seq} ({id}) lost"));
            assert_eq!(&r.event.id, id, "cycle {cycle}: seq {seq} holds another event");
            assert_eq!(r.event.amount, amount_for(id), "cycle {cycle}: seq {seq} content changed");
        }
        let next = spool.stats().expect("stats").next_seq;
        assert!(next > max_seq_seen, "cycle {cycle}: next seq {next} would reuse {max_seq_seen}");
        let report = spool.verify(|_| {}).expect("verify");
        assert!(report.faults.is_empty(), "cycle {cycle}: {:?}", report.faults);
        spool.close();
    }
    assert!(acked.len() > usize::try_from(cycles).unwrap_or(0), "too few acknowledgements to mean anything: {}", acked.len());
    println!("crash test: {cycles} SIGKILL cycles, {} acknowledged ids ({total_lines} acks), all present", acked.len());
}
