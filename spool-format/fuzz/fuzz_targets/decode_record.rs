//! Any bytes: the decoder returns Ok or a typed error, never panics, and what it
//! accepts re-encodes to the same bytes (the format has one encoding per record).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = spool_format::decode_record(data) {
        assert_eq!(spool_format::encode_record(&record), data);
    }
    let _ = spool_format::IdEntry::decode(data);
});
