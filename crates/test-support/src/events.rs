//! Sample events for tests and benchmarks.

use serde_json::{json, Value};
use spool_format::Event;

/// The SPEC §1 example event, as JSON, with id `id`.
pub fn spec_example(id: &str) -> Value {
    json!({
        "id": id,
        "kind": "purchase",
        "amount": 250,
        "currency": "L$",
        "payer": "9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
        "payee": "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b",
        "recipient": "4d3c2b1a-0f9e-4d8c-b7a6-f5e4d3c2b1a0",
        "occurred_at": "2026-11-24T12:00:00Z",
        "item": "Mesh Sofa Deluxe (copy/mod)",
        "region": "Casper Isle",
        "terminal": "vendor-42",
        "attributes": {"rental_period_days": "7"}
    })
}

/// The SPEC §1 example event, validated, with id `id`.
pub fn spec_event(id: &str) -> Event {
    Event::from_json_value(&spec_example(id)).expect("the SPEC example is a valid event")
}
