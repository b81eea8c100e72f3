fn main() {}
mod spoolctl;
mod ledger;
