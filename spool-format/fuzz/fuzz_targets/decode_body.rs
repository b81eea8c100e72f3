//! Arbitrary bytes as a record *body* inside a valid frame (right magic,
//! version, length and CRC32C), so that the fuzzer reaches the bincode decoder
//! and the post-decode validation instead of stopping at the checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(len) = u32::try_from(body.len()) else { return };
    let mut frame = Vec::with_capacity(16 + body.len());
    frame.extend_from_slice(&spool_format::MAGIC);
    frame.extend_from_slice(&spool_format::FORMAT_VERSION.to_le_bytes());
    frame.extend_from_slice(&0u16.to_le_bytes());
    frame.extend_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&frame[4..12]), body);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(body);
    if let Ok(record) = spool_format::decode_record(&frame) {
        assert_eq!(spool_format::encode_record(&record), frame);
    }
});
