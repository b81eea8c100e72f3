//! The command line of spoolctl (SPEC §6). The man page and the shell
//! completions are generated from this definition, so they cannot drift.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use common::admin::DEFAULT_ADMIN_SOCKET as DEFAULT_SOCKET;

#[derive(Debug, Parser)]
#[command(
    name = "spoolctl",
    version = buildinfo::version(),
    about = "Inspect and repair an offgrid spool",
    long_about = "Inspect and repair an offgrid spool.\n\n\
        By default spoolctl talks to the running spoold over its admin socket \
        (--socket, default /run/spoold/admin.sock). With --spool-dir it opens a \
        stopped daemon's spool directly; if the daemon still holds the spool it \
        says so and exits 3.",
    after_help = "Records are named seq:N or id:X (a bare key is an id, or a seq when all \
        digits; a bare number that is one record's seq and another's id is refused as ambiguous).\n\
        With --json, lists are JSONL ending with {\"summary\":{\"records\":N,\"next\":SEQ}} \
        (next only when more exist) and errors are one JSON line on stderr.\n\
        Exit codes: 0 ok, 1 check failed or not found (also an unreadable or unwritable file), \
        2 usage or config error, 3 cannot reach the daemon or open the spool."
)]
pub struct Cli {
    /// Admin socket of the running spoold [default: $SPOOLCTL_SOCKET, else /run/spoold/admin.sock]
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "spool_dir")]
    pub socket: Option<PathBuf>,
    /// Open the spool in DIR directly (the daemon must be stopped)
    #[arg(long, global = true, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Node id to stamp on records imported offline (spoold.toml `node_id` of the spool's owner)
    #[arg(long, global = true, value_name = "ID")]
    pub node_id: Option<String>,
    /// Machine-readable output: one JSON document, or JSONL for lists (ending with a summary line); errors as JSON on stderr
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Depth, bytes, oldest pending age, dead letters, ledger state, last error
    Status,
    /// List records in seq order
    Ls(LsArgs),
    /// One record, decoded, with its state and attempts
    Show {
        /// seq:N, id:X, or a bare id (or seq, when all digits and unambiguous)
        #[arg(value_name = "seq:N|id:X")]
        key: String,
    },
    /// Live view: ingest and forward rates, depth, oldest pending age, ledger state, commit rate
    Top {
        /// Print one frame (two samples INTERVAL apart) and exit
        #[arg(long)]
        once: bool,
        /// Sampling interval, e.g. "1s", "500ms"
        #[arg(long, default_value = "1s", value_name = "DURATION")]
        interval: common::units::Span,
    },
    /// Newest records; with -f, keep printing new ones
    Tail {
        /// Keep following new records (Ctrl-C to stop)
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the newest records to print first
        #[arg(short = 'n', long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        lines: u32,
        /// Poll interval while following, e.g. "1s", "500ms"
        #[arg(long, default_value = "1s", value_name = "DURATION")]
        interval: common::units::Span,
    },
    /// Export records as JSONL (one record per line), for audit or to move a spool
    Export(ExportArgs),
    /// Re-spool events from a JSONL export (or JSONL of bare events); dedupe applies.
    /// Only pending records of an export are re-spooled unless told otherwise; skipped ones are counted
    Import {
        /// JSONL file written by `spoolctl export`
        file: PathBuf,
        /// Also re-spool records the export shows as acked (already in the ledger: the ledger answers duplicate)
        #[arg(long)]
        include_acked: bool,
        /// Also re-spool dead letters (the ledger refused them once; they will be sent again)
        #[arg(long)]
        include_dead: bool,
    },
    /// Check every record's checksum and the indexes; exit 1 on any fault
    Verify,
    /// Ask the ledger whether it holds every acked event still kept here; with
    /// --requeue, send the missing ones again. Exit 1 when some are missing
    /// (and not requeued) or different
    Reconcile(ReconcileArgs),
    /// Manage dead letters (events the ledger refused)
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout
    Man,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only pending records (not yet accepted by the ledger)
    #[arg(long, group = "state")]
    pub pending: bool,
    /// Only dead letters
    #[arg(long, group = "state")]
    pub dead: bool,
    /// Only acked records (kept for dedupe and audit)
    #[arg(long, group = "state")]
    pub acked: bool,
    /// Most records to print
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// Start at this seq
    #[arg(long, default_value_t = 0, value_name = "SEQ")]
    pub from_seq: u64,
}

impl LsArgs {
    pub fn state(&self) -> StateArg {
        if self.pending {
            StateArg::Pending
        } else if self.dead {
            StateArg::Dead
        } else if self.acked {
            StateArg::Acked
        } else {
            StateArg::All
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    All,
    Pending,
    Dead,
    Acked,
}

impl StateArg {
    pub fn as_str(self) -> &'static str {
        match self {
            StateArg::All => "all",
            StateArg::Pending => "pending",
            StateArg::Dead => "dead",
            StateArg::Acked => "acked",
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Which records to export
    #[arg(long, value_enum, default_value = "all")]
    pub state: StateArg,
    /// Only records received at or after this time: RFC 3339 ("2026-11-24T12:00:00Z") or an age ("2h", "7d")
    #[arg(long, value_name = "TIME-OR-AGE")]
    pub since: Option<String>,
    /// Output file ("-" for stdout); written to FILE.partial, fsynced, then renamed
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Only records received at or after this time: RFC 3339 or an age ("2h", "7d")
    #[arg(long, value_name = "TIME-OR-AGE")]
    pub since: Option<String>,
    /// Only records received before this time: RFC 3339 or an age
    #[arg(long, value_name = "TIME-OR-AGE")]
    pub until: Option<String>,
    /// Put the records the ledger lacks back to pending: the forwarder sends them again
    /// (the ledger's dedupe keeps the effect exactly once); audited
    #[arg(long)]
    pub requeue: bool,
    /// The ledger to ask [default: online, the daemon's current ledger URL]
    #[arg(long, value_name = "URL")]
    pub ledger_url: Option<String>,
    /// This node's ledger bearer secret (spoold.toml `ledger.token_file`)
    #[arg(long, value_name = "FILE", default_value = "/etc/offgrid/ledger.token")]
    pub ledger_token_file: PathBuf,
    /// Why, for the spool's audit log (with --requeue)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead letters with the ledger's reason
    Ls {
        /// Most records to print
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
    /// Put a dead letter (or all) back in the pending queue
    Retry {
        /// seq:N or id:X of the dead letter (a bare key as for show)
        #[arg(value_name = "seq:N|id:X", required_unless_present = "all", conflicts_with = "all")]
        key: Option<String>,
        /// Retry every dead letter
        #[arg(long)]
        all: bool,
        /// Why, for the spool's audit log
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Remove a dead letter for good (needs --yes)
    Drop {
        /// seq:N or id:X of the dead letter (a bare key as for show)
        #[arg(value_name = "seq:N|id:X")]
        key: String,
        /// Confirm: the event is removed from this spool for good
        #[arg(long)]
        yes: bool,
        /// Why, for the spool's audit log (the dropped event is kept there)
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// The spool's audit log: every dlq retry and drop (who, when, which, why)
    Audit {
        /// Most entries to print (the newest)
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
}
