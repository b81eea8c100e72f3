//! Spool engine tests: behaviour table, model-based property test, real-process
//! crash test, known corruptions, concurrency.

mod behaviour;
mod corruption;
mod crash;
mod model;

use serde_json::json;
use spool::{Spool, SpoolConfig};
use spool_format::Event;

/// A valid event with id `id` and amount `amount`.
pub fn event(id: &str, amount: u64) -> Event {
    Event::from_json_value(&json!({
        "id": id,
        "kind": "purchase",
        "amount": amount,
        "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
        "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "occurred_at": "2026-11-24T12:00:00Z",
        "item": "Mesh Sofa Deluxe",
    }))
    .expect("valid test event")
}

pub fn open(dir: &std::path::Path) -> Spool {
    Spool::open(SpoolConfig::for_dir(dir)).expect("open spool")
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn len<T>(v: &[T]) -> u64 {
    u64::try_from(v.len()).expect("fits")
}
