//! Group commit: one dedicated thread makes sled's writes durable (`Db::flush()`
//! plus the fsyncs of [`durable::Committer::commit`]; `Db::flush()` alone is not
//! an fsync and does not survive a power cut) and wakes every writer whose write
//! happened before that commit began. After a commit it also advances the
//! store's state file (the regression guard, at most once a second) to the
//! highest seq that commit covered.
//!
//! Why not `flush_async`: in sled 0.34.7 many concurrent `flush_async` callers
//! deadlock (seen with 64 callers: every `sled-io` thread parked in `make_stable`,
//! no progress). Here exactly one thread ever flushes, so that cannot happen.
//!
//! The protocol. A writer (1) applies its write to sled, then (2) takes a ticket
//! `t = requested.fetch_add(1) + 1` and (3) waits until `durable >= t`. The flusher
//! reads `target = requested` and only then starts `Db::flush()`; when the flush
//! returns it publishes `durable = target`. Every writer with a ticket `<= target`
//! took it before the flusher read `requested`, so its write happened before the
//! flush started and is covered by it. Likewise a writer raises `applied_high`
//! to its record's seq after applying it and before taking its ticket, and the
//! flusher reads `applied_high` before the flush: the state file is advanced
//! only to a seq whose record that commit made durable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What one group commit did, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct CommitInfo {
    /// Wall time of the commit (`Db::flush()` and the fsyncs).
    pub duration: Duration,
    /// Tickets (writers' requests) this flush made durable.
    pub tickets: u64,
    /// Records written (appends, duplicates and state changes) that this flush
    /// made durable; a batch request counts each of its events.
    pub events: u64,
}

/// Callback invoked by the flusher thread after every successful flush.
pub type CommitObserver = Arc<dyn Fn(CommitInfo) + Send + Sync>;

#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every ticket `<= upto` is durable.
    upto: u64,
    /// Set once a flush failed; the spool is then unusable (a failed fsync leaves
    /// the file's state unknown, so nothing after it may be acknowledged).
    failed: Option<Arc<str>>,
    /// Set when the flusher thread has stopped; nothing later becomes durable.
    closed: bool,
}

/// Handle shared between writers and the flusher thread.
pub(crate) struct GroupCommit {
    requested: AtomicU64,
    /// Events applied so far, added before the writer takes its ticket.
    events: AtomicU64,
    wake: Mutex<()>,
    wake_cv: Condvar,
    /// True while the flusher is (about to be) parked on `wake_cv`. Writers only
    /// take `wake` and signal when it is set, so that a busy flusher costs them
    /// no lock and no futex syscall. SeqCst on both sides (Dekker): either the
    /// flusher sees the writer's ticket, or the writer sees the flag.
    flusher_parked: AtomicBool,
    durable_tx: watch::Sender<Durable>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    commits: AtomicU64,
    /// Highest seq whose record has been applied (see the module docs).
    applied_high: AtomicU64,
}

/// Error of a wait: the flush that should have covered the write failed, or the
/// spool closed before it ran.
#[derive(Debug, Clone)]
pub(crate) enum CommitError {
    Failed(Arc<str>),
    Closed,
}

impl GroupCommit {
    pub(crate) fn start(
        committer: Arc<durable::Committer>,
        state: durable::StateFile,
        observer: Option<CommitObserver>,
    ) -> Arc<GroupCommit> {
        let (durable_tx, _) = watch::channel(Durable::default());
        let gc = Arc::new(GroupCommit {
            requested: AtomicU64::new(0),
            events: AtomicU64::new(0),
            wake: Mutex::new(()),
            wake_cv: Condvar::new(),
            flusher_parked: AtomicBool::new(false),
            durable_tx,
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            commits: AtomicU64::new(0),
            applied_high: AtomicU64::new(state.current().high_water),
        });
        let worker = Arc::clone(&gc);
        let handle = std::thread::Builder::new()
            .name("spool-flusher".into())
            .spawn(move || worker.run(&committer, state, observer))
            .expect("spawn the spool flusher thread");
        *gc.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        gc
    }

    fn run(&self, committer: &durable::Committer, mut state: durable::StateFile, observer: Option<CommitObserver>) {
        let mut done = 0u64;
        let mut events_done = 0u64;
        loop {
            if self.requested.load(Ordering::SeqCst) <= done {
                let mut guard = self.wake.lock().unwrap_or_else(|p| p.into_inner());
                self.flusher_parked.store(true, Ordering::SeqCst);
                while self.requested.load(Ordering::SeqCst) <= done
                    && !self.stop.load(Ordering::SeqCst)
                {
                    guard = self.wake_cv.wait(guard).unwrap_or_else(|p| p.into_inner());
                }
                self.flusher_parked.store(false, Ordering::SeqCst);
            }
            // Read the target before the flush starts: see the module docs.
            let target = self.requested.load(Ordering::SeqCst);
            let events_target = self.events.load(Ordering::SeqCst);
            let applied_high = self.applied_high.load(Ordering::SeqCst);
            if target <= done {
                // Stop was requested and nothing is waiting: record the final
                // high-water mark (everything applied was committed).
                if let Err(e) = state.advance(applied_high, true) {
                    tracing::error!(error = %e, path = %state.path().display(), "could not write the spool's state file at close");
                }
                self.durable_tx.send_modify(|d| d.closed = true);
                return;
            }
            let started = Instant::now();
            match committer.commit_and_advance(&mut state, applied_high) {
                Ok(()) => {
                    let info = CommitInfo {
                        duration: started.elapsed(),
                        tickets: target - done,
                        events: events_target.saturating_sub(events_done),
                    };
                    done = target;
                    events_done = events_target;
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    self.durable_tx.send_modify(|d| d.upto = target);
                    if let Some(observe) = &observer {
                        observe(info);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool commit failed; refusing further writes");
                    let msg: Arc<str> = Arc::from(format!("commit failed: {e}"));
                    self.durable_tx.send_modify(|d| d.failed = Some(msg));
                    return;
                }
            }
        }
    }

    /// Records that the record at `seq` has been applied (call before taking
    /// the ticket that waits for it).
    pub(crate) fn note_applied(&self, seq: u64) {
        self.applied_high.fetch_max(seq, Ordering::SeqCst);
    }

    /// Takes a ticket for writes already applied by this thread. Await it with
    /// [`GroupCommit::wait`].
    pub(crate) fn ticket(&self, events: u64) -> u64 {
        self.events.fetch_add(events, Ordering::SeqCst);
        let t = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        if self.flusher_parked.load(Ordering::SeqCst) {
            // Taking the lock waits until the flusher is inside `wait`, so the
            // signal cannot fall between its check and its sleep.
            let _guard = self.wake.lock().unwrap_or_else(|p| p.into_inner());
            self.wake_cv.notify_one();
        }
        t
    }

    /// Resolves once a flush that started after `ticket` was taken has completed.
    pub(crate) async fn wait(&self, ticket: u64) -> Result<(), CommitError> {
        let mut rx = self.durable_tx.subscribe();
        let result = rx
            .wait_for(|d| d.upto >= ticket || d.failed.is_some() || d.closed)
            .await
            .map(|d| d.clone());
        match result {
            Ok(d) if d.upto >= ticket => Ok(()),
            Ok(Durable { failed: Some(f), .. }) => Err(CommitError::Failed(f)),
            Ok(_) => Err(CommitError::Closed),
            Err(_) => Err(CommitError::Closed),
        }
    }

    /// The failure that stopped the flusher, if any.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        self.durable_tx.borrow().failed.clone()
    }

    /// Whether [`GroupCommit::shutdown`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Flushes what is outstanding and stops the thread.
    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.wake.lock().unwrap_or_else(|p| p.into_inner());
            self.wake_cv.notify_one();
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}
