fn main() {}
mod spoolctl;
mod ledger;
mod ingest;
mod forward;
mod ledger_pg;
mod observability;
mod powercut;
mod forward_spoold;
mod systemd_units;
mod scenarios;
mod docs_contract;
mod version;
mod openapi;
mod deb;
mod tls;
mod tls_client_certs;
