fn main() {}
mod spoolctl;
mod ledger;
mod ingest;
mod forward;
