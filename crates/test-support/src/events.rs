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

/// A realistic payment event number `n` of a run named `prefix`: its own id,
/// payer and payee (UUIDs derived from `n`, so they differ from event to
/// event as on a real grid), an amount, one of a few items, regions and
/// terminals. For measurements where the spread of values matters (wire
/// bytes, compression); `spec_example` repeats one event's values.
pub fn payment(prefix: &str, n: u64) -> Value {
    let items = ["Mesh Sofa Deluxe (copy/mod)", "Rental: Beach Hut 7d", "Gift card L$500", "Tip jar", "Hair — Lumae (fatpack)"];
    let regions = ["Casper Isle", "Nautilus City", "Bay City", "Zindra Main"];
    let kinds = ["purchase", "purchase", "purchase", "rental", "gift", "refund"];
    // splitmix64: a different, well-spread value per (n, k).
    let mix = |k: u64| {
        let mut z = n.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(k.wrapping_mul(0xbf58_476d_1ce4_e5b9));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let uuid = |k: u64| {
        let (a, b) = (mix(k), mix(k + 100));
        format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xfff, b >> 52, b & 0xffff_ffff_ffff)
    };
    let i = usize::try_from(n % 60).unwrap_or(0);
    json!({
        "id": format!("{prefix}-{n}-{}", &uuid(1)[..8]),
        "kind": kinds[i % kinds.len()],
        "amount": 1 + mix(2) % 100_000,
        "currency": "L$",
        "payer": uuid(3),
        "payee": uuid(4),
        "occurred_at": "2026-11-24T12:00:00Z",
        "item": items[i % items.len()],
        "region": regions[i % regions.len()],
        "terminal": format!("vendor-{}", mix(5) % 50),
    })
}
