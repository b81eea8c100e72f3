//! Format tests: validation table, canonical form, framing, golden vectors,
//! corruption, and properties (round trip, decoder never panics).

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{json, Value};
use spool_format::*;

fn sample() -> Value {
    json!({
        "id": "sl-8f14e45f-ceea-467a-9f1d-1b1b3c7e2e11",
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

fn with(field: &str, value: Value) -> Value {
    let mut v = sample();
    v[field] = value;
    v
}

fn without(field: &str) -> Value {
    let mut v = sample();
    v.as_object_mut().expect("object").remove(field);
    v
}

/// `v` as JSON text with every object's members in reverse key order (a
/// `Value` keeps them sorted): the request paths read the text in document
/// order and must still name the same fault.
fn reversed_text(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let members: Vec<String> =
                m.iter().rev().map(|(k, v)| format!("{}:{}", Value::String(k.clone()), reversed_text(v))).collect();
            format!("{{{}}}", members.join(","))
        }
        other => other.to_string(),
    }
}

/// Asserts that `input` is refused and that the refusal names `field`, the
/// same refusal from a `Value` and from the request bytes.
fn check_refused(input: Value, field: &str) {
    match Event::from_json_value(&input) {
        Ok(e) => panic!("accepted {input} as {e:?}, expected a refusal on {field}"),
        Err(err) => {
            assert_eq!(err.field, field, "input {input}: got {err}");
            match Event::parse_json(reversed_text(&input).as_bytes()) {
                Err(ParseError::Invalid(from_bytes)) => assert_eq!(from_bytes, err, "input {input}"),
                other => panic!("input {input}: from bytes {other:?}, from a Value {err}"),
            }
        }
    }
}

#[test]
fn validation_refuses_each_bad_field() {
    let long = |n: usize| Value::String("x".repeat(n));
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "event"),
        (json!("event"), "event"),
        (with("surprise", json!(1)), "surprise"),
        (without("id"), "id"),
        (with("id", json!("")), "id"),
        (with("id", json!("has space")), "id"),
        (with("id", json!("ünïcode")), "id"),
        (with("id", long(129)), "id"),
        (with("id", json!(42)), "id"),
        (without("kind"), "kind"),
        (with("kind", json!("loan")), "kind"),
        (with("kind", json!("Purchase")), "kind"),
        (without("amount"), "amount"),
        (with("amount", json!(0)), "amount"),
        (with("amount", json!(-5)), "amount"),
        (with("amount", json!(2.5)), "amount"),
        (with("amount", json!(250.0)), "amount"),
        (with("amount", json!("250")), "amount"),
        (with("amount", json!(1_000_000_000_001u64)), "amount"),
        (with("amount", json!(null)), "amount"),
        (without("currency"), "currency"),
        (with("currency", json!("")), "currency"),
        (with("currency", json!("L $")), "currency"),
        (with("currency", json!("TOOLONGXX")), "currency"),
        (with("currency", json!("L\u{e9}")), "currency"),
        (without("payer"), "payer"),
        (with("payer", json!("not-a-uuid")), "payer"),
        (with("payer", json!("9c8b7a6d5e4f4a3b2c1d0e9f8a7b6c5d")), "payer"),
        (with("payee", json!(7)), "payee"),
        (with("recipient", json!("zz8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d")), "recipient"),
        (without("occurred_at"), "occurred_at"),
        (with("occurred_at", json!("yesterday")), "occurred_at"),
        (with("occurred_at", json!("2026-11-24 12:00:00")), "occurred_at"),
        (with("occurred_at", json!(1732449600)), "occurred_at"),
        (with("item", long(257)), "item"),
        (with("item", json!(3)), "item"),
        (with("region", long(129)), "region"),
        (with("terminal", long(129)), "terminal"),
        (with("attributes", json!("k=v")), "attributes"),
        (with("attributes", json!({"k": 1})), "attributes"),
        // Several faults: the one named does not depend on member order.
        (with("attributes", json!({"a": 1, "b": {"c": 2}})), "attributes"),
        ({
            let mut v = with("zz_extra", json!(1));
            v["aa_extra"] = json!(2);
            v
        }, "aa_extra"),
        (with("attributes", json!({"": "v"})), "attributes"),
        (with("attributes", json!({"k".repeat(65): "v"})), "attributes"),
        (with("attributes", json!({"k": "v".repeat(1025)})), "attributes"),
        (
            with(
                "attributes",
                Value::Object((0..33).map(|i| (format!("k{i}"), json!("v"))).collect()),
            ),
            "attributes",
        ),
    ];
    for (input, field) in cases {
        check_refused(input, field);
    }
}

#[test]
fn validation_accepts_the_limits() {
    let mut v = sample();
    v["id"] = json!("A".repeat(128));
    v["amount"] = json!(1_000_000_000_000u64);
    v["currency"] = json!("ABCDEFGH");
    v["item"] = json!("é".repeat(128));
    v["attributes"] =
        Value::Object((0..32).map(|i| (format!("{i:0>64}"), json!("v".repeat(1024)))).collect());
    let e = Event::from_json_value(&v).expect("limits are inclusive");
    assert_eq!(e.amount, 1_000_000_000_000);
    assert_eq!(e.attributes.len(), 32);
    assert!(Event::from_json_value(&with("amount", json!(1))).is_ok());
}

#[test]
fn parse_json_tells_bad_json_from_bad_event() {
    assert!(matches!(Event::parse_json(b"{not json"), Err(ParseError::Json(_))));
    assert!(matches!(Event::parse_json(b"{}"), Err(ParseError::Invalid(_))));
    let ok = serde_json::to_vec(&sample()).expect("encode");
    assert!(Event::parse_json(&ok).is_ok());
}

#[test]
fn canonical_form_ignores_spelling_but_not_content() {
    let a = Event::from_json_value(&sample()).expect("valid");
    // Other field order, upper-case UUIDs, another offset for the same instant.
    let b = Event::parse_json(
        br#"{"attributes":{"rental_period_days":"7"},"terminal":"vendor-42","region":"Casper Isle",
        "item":"Mesh Sofa Deluxe (copy/mod)","occurred_at":"2026-11-24T13:00:00+01:00",
        "recipient":"4D3C2B1A-0F9E-4D8C-B7A6-F5E4D3C2B1A0","payee":"2B6F0D1E-4C1A-4F9E-9A6B-3C2D1E0F9A8B",
        "payer":"9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d","currency":"L$","amount":250,"kind":"purchase",
        "id":"sl-8f14e45f-ceea-467a-9f1d-1b1b3c7e2e11"}"#,
    )
    .expect("valid");
    assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    assert_eq!(a.digest(), b.digest());
    let c = Event::from_json_value(&with("amount", json!(251))).expect("valid");
    assert_ne!(a.digest(), c.digest());
    // recipient defaults to payer: omitted and explicit-equal are the same event.
    let d = Event::from_json_value(&without("recipient")).expect("valid");
    let e = Event::from_json_value(&with("recipient", sample()["payer"].clone())).expect("valid");
    assert_eq!(d.digest(), e.digest());
    assert_eq!(d.recipient, d.payer);
    // JSON output is canonical: lower-case UUIDs, UTC.
    let out = b.to_json_value();
    assert_eq!(out["payee"], "2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b");
    assert_eq!(out["occurred_at"], "2026-11-24T12:00:00Z");
    assert_eq!(Event::from_json_value(&out).expect("round trip"), b);
}

fn sample_record(state: State) -> Record {
    Record {
        seq: 42,
        received_at: time::macros::datetime!(2026-11-24 12:00:01.5 UTC),
        node: "front-1".into(),
        state,
        attempts: 3,
        event: Event::from_json_value(&sample()).expect("valid"),
    }
}

fn golden_cases() -> Vec<(&'static str, Record)> {
    let t = time::macros::datetime!(2026-11-24 12:05:00 UTC);
    vec![
        ("record_v1_pending.bin", sample_record(State::Pending)),
        ("record_v1_acked.bin", sample_record(State::Acked { acked_at: t, ledger_seq: Some(7) })),
        ("record_v1_dead.bin", sample_record(State::dead(t, "conflict", "id seen with another event"))),
    ]
}

/// Spools written by format version 1 must stay readable: these bytes are
/// committed. `UPDATE_GOLDEN=1` rewrites them, which is only right together with
/// a format version bump.
#[test]
fn golden_vectors_decode_and_encode_identically() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (name, record) in golden_cases() {
        let path = dir.join(name);
        let encoded = encode_record(&record);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&dir).expect("mkdir golden");
            std::fs::write(&path, &encoded).expect("write golden");
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert_eq!(decode_record(&golden).expect("golden decodes"), record, "{name}");
        assert_eq!(encoded, golden, "{name}: encoding changed; old spools would not read back");
    }
}

#[test]
fn golden_header_layout_is_as_documented() {
    let bytes = encode_record(&sample_record(State::Pending));
    assert_eq!(&bytes[0..4], b"OGSR");
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 1);
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), 0);
    let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    assert_eq!(len, bytes.len() - HEADER_BYTES);
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let mut covered = bytes[4..12].to_vec();
    covered.extend_from_slice(&bytes[16..]);
    assert_eq!(crc, crc32c::crc32c(&covered));
    // The body starts with the seq, u64 little-endian.
    assert_eq!(&bytes[16..24], &42u64.to_le_bytes());
}

#[test]
fn known_corruptions_are_reported_exactly() {
    let good = encode_record(&sample_record(State::Pending));
    let flip = |i: usize| {
        let mut b = good.clone();
        b[i] ^= 0x01;
        b
    };
    assert!(matches!(decode_record(&good[..10]), Err(DecodeError::Truncated { len: 10 })));
    assert!(matches!(decode_record(&flip(0)), Err(DecodeError::BadMagic { .. })));
    // A flipped version or flag bit is corruption first: the checksum covers them.
    assert!(matches!(decode_record(&flip(4)), Err(DecodeError::Checksum { .. })));
    assert!(matches!(decode_record(&flip(6)), Err(DecodeError::Checksum { .. })));
    assert!(matches!(
        decode_record(&good[..good.len() - 1]),
        Err(DecodeError::LengthMismatch { actual, .. }) if actual == good.len() - 17
    ));
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(decode_record(&longer), Err(DecodeError::LengthMismatch { .. })));
    for i in 12..good.len() {
        assert!(
            matches!(decode_record(&flip(i)), Err(DecodeError::Checksum { .. })),
            "flipped byte {i} not caught"
        );
    }
    let mut huge = good.clone();
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode_record(&huge), Err(DecodeError::TooLarge { .. })));
}

#[test]
fn a_future_version_is_refused_not_misread() {
    let mut b = encode_record(&sample_record(State::Pending));
    b[4..6].copy_from_slice(&2u16.to_le_bytes());
    let mut covered = b[4..12].to_vec();
    covered.extend_from_slice(&b[16..]);
    let crc = crc32c::crc32c(&covered);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(decode_record(&b), Err(DecodeError::UnsupportedVersion { found: 2 }));
}

#[test]
fn id_entry_round_trips_and_detects_flips() {
    let e = IdEntry { seq: 9, digest: [7; 32] };
    let b = e.encode();
    assert_eq!(IdEntry::decode(&b), Ok(e));
    for i in 0..b.len() {
        let mut c = b;
        c[i] ^= 0x80;
        assert!(IdEntry::decode(&c).is_err(), "flip at {i} not caught");
    }
    assert!(IdEntry::decode(&b[..43]).is_err());
}

#[test]
fn dead_reason_is_cut_at_the_limit_on_a_char_boundary() {
    let t = time::macros::datetime!(2026-11-24 12:05:00 UTC);
    let s = State::dead(t, "rejected", &"é".repeat(1000));
    match &s {
        State::Dead { reason, .. } => assert!(reason.len() <= REASON_BYTES_MAX && reason.len() >= 1022),
        other => panic!("{other:?}"),
    }
    let r = sample_record(s);
    assert_eq!(decode_record(&encode_record(&r)).expect("decodes"), r);
}

#[test]
fn record_json_shape_for_export() {
    let r = sample_record(State::Pending);
    let v = serde_json::to_value(&r).expect("json");
    assert_eq!(v["state"], "pending");
    assert_eq!(v["seq"], 42);
    assert_eq!(v["event"]["amount"], 250);
    let back: Record = serde_json::from_value(v).expect("parse back");
    assert_eq!(back, r);
    let mut bad = serde_json::to_value(&r).expect("json");
    bad["event"]["amount"] = json!(0);
    assert!(serde_json::from_value::<Record>(bad).is_err(), "import validates events");
}

fn arb_text(max: usize) -> impl Strategy<Value = String> {
    // Any text but NUL (refused in every string, docs/api.md) and newline.
    proptest::string::string_regex(&format!("[^\\x00\\n]{{0,{max}}}"))
        .expect("regex")
        .prop_map(move |s| truncate(&s, max).to_owned())
}

prop_compose! {
    fn arb_event()(
        id in "[A-Za-z0-9._:-]{1,128}",
        kind in 0usize..4,
        amount in AMOUNT_MIN..=AMOUNT_MAX,
        currency in "[!-~]{1,8}",
        uuids in proptest::array::uniform3(any::<[u8; 16]>()),
        secs in -62_000_000_000i64..250_000_000_000i64,
        nanos in 0u32..1_000_000_000,
        item in proptest::option::of(arb_text(256)),
        region in proptest::option::of(arb_text(128)),
        terminal in proptest::option::of(arb_text(128)),
        attributes in proptest::collection::btree_map("[a-z]{1,64}", arb_text(64), 0..8),
    ) -> Event {
        let kinds = ["purchase", "rental", "gift", "refund"];
        let at = OffsetDateTime::from_unix_timestamp(secs).expect("in range")
            .replace_nanosecond(nanos).expect("nanos");
        let mut v = json!({
            "id": id, "kind": kinds[kind], "amount": amount, "currency": currency,
            "payer": Uuid::from_bytes(uuids[0]).to_string(),
            "payee": Uuid::from_bytes(uuids[1]).to_string(),
            "recipient": Uuid::from_bytes(uuids[2]).to_string(),
            "occurred_at": at.format(&time::format_description::well_known::Rfc3339).expect("fmt"),
            "attributes": attributes,
        });
        for (k, val) in [("item", item), ("region", region), ("terminal", terminal)] {
            if let Some(val) = val { v[k] = json!(val); }
        }
        Event::from_json_value(&v).expect("generated events are valid")
    }
}

proptest! {
    #[test]
    fn records_round_trip(event in arb_event(), seq: u64, attempts: u32, dead: bool) {
        let t = time::macros::datetime!(2026-01-01 0:00 UTC);
        let state = if dead { State::dead(t, "rejected", "bad") } else { State::Pending };
        let r = Record { seq, received_at: t, node: "n".into(), state, attempts, event };
        let bytes = encode_record(&r);
        prop_assert_eq!(decode_record(&bytes).expect("round trip"), r.clone());
        // JSON round trip too (export / import).
        let json = serde_json::to_string(&r).expect("json");
        prop_assert_eq!(serde_json::from_str::<Record>(&json).expect("parse"), r);
    }

    #[test]
    fn decoder_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_record(&bytes);
        let _ = IdEntry::decode(&bytes);
    }

    #[test]
    fn decoder_never_panics_on_mutated_records(event in arb_event(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let t = time::macros::datetime!(2026-01-01 0:00 UTC);
        let r = Record { seq: 1, received_at: t, node: "n".into(), state: State::Pending, attempts: 0, event };
        let mut bytes = encode_record(&r);
        let len = bytes.len();
        let flips: std::collections::BTreeMap<usize, u8> =
            flips.into_iter().map(|(i, x)| (i % len, x | 1)).collect();
        for (i, x) in flips {
            bytes[i] ^= x;
        }
        prop_assert!(decode_record(&bytes).is_err(), "a mutated frame must never decode");
    }

    #[test]
    fn parser_never_panics(s in ".{0,300}") {
        let _ = Event::parse_json(s.as_bytes());
    }
}

// ---------------------------------------------------------------------------
// Format version 2: entry frames and blocks.

fn sample_block() -> (Vec<u8>, Vec<Entry>) {
    let event = Event::from_json_value(&sample()).expect("valid");
    let mut second = sample();
    second["id"] = json!("sl-0c6f8e2a-8d4b-4f5e-9a1b-2c3d4e5f6a7b");
    second["amount"] = json!(1);
    let event2 = Event::from_json_value(&second).expect("valid");
    let t = time::macros::datetime!(2026-11-24 12:00:01.5 UTC);
    let entries = vec![
        Entry { seq: 42, received_at: t, event },
        Entry { seq: 43, received_at: t + time::Duration::milliseconds(3), event: event2 },
    ];
    let mut b = BlockBuilder::new();
    for e in &entries {
        b.push(e.seq, &encode_entry(e.seq, e.received_at, &e.event));
    }
    (b.finish("front-1"), entries)
}

/// Format version 2 is pinned like version 1: these bytes are committed.
#[test]
fn golden_v2_block_decodes_and_encodes_identically() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/block_v2.bin");
    let (encoded, entries) = sample_block();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &encoded).expect("write golden");
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let block = decode_block(&golden).expect("golden block decodes");
    assert_eq!(block.header, BlockHeader { first_seq: 42, last_seq: 43, count: 2, node: "front-1".into() });
    assert_eq!(block.entries().expect("entries"), entries);
    assert_eq!(encoded, golden, "block encoding changed; old spools would not read back");
}

#[test]
fn golden_v2_layout_is_as_documented() {
    let (b, entries) = sample_block();
    assert_eq!(&b[0..4], b"OGSB");
    assert_eq!(u16::from_le_bytes([b[4], b[5]]), 2);
    assert_eq!(u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")), 42);
    assert_eq!(u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")), 43);
    assert_eq!(u32::from_le_bytes(b[24..28].try_into().expect("8 bytes")), 2);
    let payload_len = u32::from_le_bytes(b[28..32].try_into().expect("8 bytes")) as usize;
    assert_eq!(usize::from(b[32]), "front-1".len());
    assert_eq!(&b[33..40], b"front-1");
    let crc = u32::from_le_bytes(b[40..44].try_into().expect("8 bytes"));
    let mut covered = b[4..40].to_vec();
    covered.extend_from_slice(&b[44..]);
    assert_eq!(crc, crc32c::crc32c(&covered));
    assert_eq!(payload_len, b.len() - 44);
    // The payload is the entry frames, each a version-2 frame of its own.
    let first = encode_entry(42, entries[0].received_at, &entries[0].event);
    assert_eq!(&b[44..44 + first.len()], &first[..]);
    assert_eq!(&first[0..4], b"OGSR");
    assert_eq!(u16::from_le_bytes([first[4], first[5]]), 2);
    assert_eq!(&first[16..24], &42u64.to_le_bytes());
    // A v2 entry is not a v1 record, and the reverse: each names the version.
    assert_eq!(decode_record(&first), Err(DecodeError::UnsupportedVersion { found: 2 }));
    let v1 = encode_record(&sample_record(State::Pending));
    assert_eq!(decode_entry(&v1), Err(DecodeError::UnsupportedVersion { found: 1 }));
}

#[test]
fn every_flipped_byte_of_a_block_is_named() {
    let (good, _) = sample_block();
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x10;
        let verdict = decode_block(&b).and_then(|blk| blk.entries().map(|_| ()));
        assert!(verdict.is_err(), "flipped byte {i} of the block went unnoticed");
    }
    for n in [0, 10, 36, good.len() - 1] {
        assert!(decode_block(&good[..n]).is_err(), "block cut at {n} accepted");
    }
}

#[test]
fn a_damaged_entry_is_named_by_its_index() {
    // Rebuild a block around a damaged entry (so the block checksum holds and
    // the entry's own checksum is what catches it).
    let (_, entries) = sample_block();
    let f0 = encode_entry(42, entries[0].received_at, &entries[0].event);
    let mut f1 = encode_entry(43, entries[1].received_at, &entries[1].event);
    let last = f1.len() - 1;
    f1[last] ^= 1;
    let mut b = BlockBuilder::new();
    b.push(42, &f0);
    b.push(43, &f1);
    let bytes = b.finish("n");
    let block = decode_block(&bytes).expect("block checksum holds");
    assert_eq!(block.find(42).expect("first entry fine").map(|e| e.seq), Some(42));
    match block.entries() {
        Err(BlockError::Entry { index: 1, seq: 43, error: DecodeError::Checksum { .. } }) => {}
        other => panic!("expected entry 1's checksum to fail, got {other:?}"),
    }
}

proptest! {
    #[test]
    fn block_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(b) = decode_block(&bytes) {
            let _ = b.entries();
        }
    }
}

proptest! {
    /// The writer's fast path (the event encoded ahead) writes the very bytes
    /// of the reference encoder.
    #[test]
    fn prepared_entries_are_byte_identical(seq in any::<u64>(), secs in 0i64..4_000_000_000, nanos in 0u32..1_000_000_000, amount in 1u64..1_000_000) {
        let mut v = sample();
        v["amount"] = json!(amount);
        let e = Event::from_json_value(&v).expect("valid");
        let t = time::OffsetDateTime::from_unix_timestamp(secs).expect("time") + time::Duration::nanoseconds(i64::from(nanos));
        let p = Prepared::new(e.clone());
        prop_assert_eq!(encode_entry_prepared(seq, t, &p), encode_entry(seq, t, &e));
        prop_assert_eq!(p.digest, e.digest());
    }
}
