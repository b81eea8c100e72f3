//! Any bytes: the event parser returns Ok or a typed error, never panics, and an
//! accepted event is canonical (its JSON parses back to the same event).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = spool_format::Event::parse_json(data) {
        let again = spool_format::Event::from_json_value(&event.to_json_value())
            .expect("canonical JSON of an accepted event parses");
        assert_eq!(again, event);
        assert_eq!(again.canonical_bytes(), event.canonical_bytes());
    }
});
