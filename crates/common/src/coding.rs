//! Content codings of request bodies (SPEC §3, offgrid addition): a forwarded
//! batch may be sent `Content-Encoding: zstd` or `gzip` to a ledger that
//! advertises it, in an `Accept-Encoding` response header (RFC 7694 §3).
//!
//! Both ends use this module: the forwarder encodes with [`encode`], ledgerd
//! decodes with [`decode_bounded`], which stops at a hard bound on the
//! *decoded* size, so a small body that expands to gigabytes (a zip bomb) is
//! refused after reading at most `bytes_max + 1` decoded bytes.
//!
//! Why zstd is preferred: on batches of payment events it is both smaller and
//! faster than gzip (docs/ledger.md, "Compressed batches", measured by
//! `coding::tests::measure_on_payment_events`).

use std::io::{Read, Write};

/// What ledgerd advertises in `Accept-Encoding` on its responses: the request
/// codings it decodes, preferred first.
pub const ACCEPTED_REQUEST_CODINGS: &str = "zstd, gzip";

/// zstd level of forwarded batches: 3 is zstd's default, a few hundred MB/s
/// per core; higher levels gained little on payment events (see the test).
pub const ZSTD_LEVEL: i32 = 3;

/// A request body coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Identity,
    Zstd,
    Gzip,
}

impl Coding {
    /// The `Content-Encoding` token (`None` for identity: no header).
    pub fn token(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Zstd => Some("zstd"),
            Coding::Gzip => Some("gzip"),
        }
    }

    /// Parses a `Content-Encoding` value. `None` for an unknown coding or a
    /// stacked one (`gzip, zstd`), which the ledger refuses with 415.
    pub fn from_content_encoding(v: Option<&str>) -> Option<Coding> {
        let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else { return Some(Coding::Identity) };
        match v.to_ascii_lowercase().as_str() {
            "identity" => Some(Coding::Identity),
            "zstd" => Some(Coding::Zstd),
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            _ => None,
        }
    }
}

/// The best coding of `preferred` (in order) that an `Accept-Encoding` value
/// names with a non-zero q; [`Coding::Identity`] when none.
pub fn pick(accept_encoding: &str, preferred: &[Coding]) -> Coding {
    let offered: Vec<String> = accept_encoding
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let name = parts.next()?.trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f64>().is_ok_and(|q| q <= 0.0))
            });
            (!name.is_empty() && !refused).then_some(name)
        })
        .collect();
    preferred
        .iter()
        .copied()
        .find(|c| c.token().is_some_and(|t| offered.iter().any(|o| o == t)))
        .unwrap_or(Coding::Identity)
}

/// Encodes `body` (identity: a copy).
pub fn encode(coding: Coding, body: &[u8]) -> std::io::Result<Vec<u8>> {
    match coding {
        Coding::Identity => Ok(body.to_vec()),
        Coding::Zstd => zstd::bulk::compress(body, ZSTD_LEVEL),
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::default());
            e.write_all(body)?;
            e.finish()
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The decoded body passes the bound (413: nothing is recorded).
    #[error("decoded body over {0} bytes")]
    TooLarge(usize),
    /// Not a valid stream of the coding (400).
    #[error("body is not valid {0}: {1}")]
    Corrupt(&'static str, String),
}

/// Decodes `body`, reading at most `bytes_max + 1` decoded bytes: a body that
/// decodes to more than `bytes_max` is [`DecodeError::TooLarge`], however
/// small it was on the wire. Memory stays within `bytes_max` plus the
/// decoder's window.
pub fn decode_bounded(coding: Coding, body: &[u8], bytes_max: usize) -> Result<Vec<u8>, DecodeError> {
    let limit = u64::try_from(bytes_max).unwrap_or(u64::MAX).saturating_add(1);
    let (name, reader): (&'static str, Box<dyn Read + '_>) = match coding {
        Coding::Identity => {
            return if body.len() > bytes_max { Err(DecodeError::TooLarge(bytes_max)) } else { Ok(body.to_vec()) };
        }
        Coding::Zstd => (
            "zstd",
            Box::new(zstd::stream::read::Decoder::with_buffer(body).map_err(|e| DecodeError::Corrupt("zstd", e.to_string()))?),
        ),
        Coding::Gzip => ("gzip", Box::new(flate2::read::GzDecoder::new(body))),
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(bytes_max));
    reader.take(limit).read_to_end(&mut out).map_err(|e| DecodeError::Corrupt(name, e.to_string()))?;
    if out.len() > bytes_max {
        return Err(DecodeError::TooLarge(bytes_max));
    }
    Ok(out)
}

/// A forwarded-batch body of `n` varied payment events (for measurements and
/// tests): random UUIDs, amounts, a few items and regions, as a real node sends.
#[doc(hidden)]
pub fn sample_batch(n: usize) -> Vec<u8> {
    let items = ["Mesh Sofa Deluxe (copy/mod)", "Rental: Beach Hut 7d", "Gift card L$500", "Tip jar", "Hair — Lumae (fatpack)"];
    let regions = ["Casper Isle", "Nautilus City", "Bay City", "Zindra Main"];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut uuid = || {
        let (a, b) = (rnd(), rnd());
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    };
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let id = format!("sl-{}", uuid());
            let (payer, payee) = (uuid(), uuid());
            serde_json::json!({"seq": i + 1, "received_at": "2026-11-24T12:00:01.123456Z", "event": {
                "id": id, "kind": "purchase", "amount": 1 + (i * 7919) % 100_000, "currency": "L$",
                "payer": payer, "payee": payee, "recipient": payer,
                "occurred_at": "2026-11-24T12:00:00.5Z", "item": items[i % items.len()],
                "region": regions[i % regions.len()], "terminal": format!("vendor-{}", i % 50),
            }})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"node": "front-1", "events": events})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_bounds_the_decoded_size() {
        let body = br#"{"node":"front-1","events":[]}"#.repeat(100);
        for c in [Coding::Identity, Coding::Zstd, Coding::Gzip] {
            let wire = encode(c, &body).expect("encode");
            assert_eq!(decode_bounded(c, &wire, body.len()).expect("decode"), body, "{c:?}");
            assert_eq!(decode_bounded(c, &wire, body.len() - 1), Err(DecodeError::TooLarge(body.len() - 1)), "{c:?}");
        }
        assert!(matches!(decode_bounded(Coding::Zstd, b"not zstd", 1000), Err(DecodeError::Corrupt("zstd", _))));
        assert!(matches!(decode_bounded(Coding::Gzip, b"not gzip", 1000), Err(DecodeError::Corrupt("gzip", _))));
    }

    #[test]
    fn a_zip_bomb_is_refused_without_inflating_it() {
        // 1 GiB of zeros is ~33 KB of zstd: decoding stops at the bound.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).expect("encoder");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            enc.write_all(&zeros).expect("write");
        }
        let bomb = enc.finish().expect("finish");
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        assert_eq!(decode_bounded(Coding::Zstd, &bomb, 16 << 20), Err(DecodeError::TooLarge(16 << 20)));
    }

    #[test]
    fn content_encoding_and_accept_encoding() {
        assert_eq!(Coding::from_content_encoding(None), Some(Coding::Identity));
        assert_eq!(Coding::from_content_encoding(Some("ZSTD")), Some(Coding::Zstd));
        assert_eq!(Coding::from_content_encoding(Some("gzip")), Some(Coding::Gzip));
        assert_eq!(Coding::from_content_encoding(Some("br")), None);
        assert_eq!(Coding::from_content_encoding(Some("gzip, zstd")), None);
        let pref = [Coding::Zstd, Coding::Gzip];
        assert_eq!(pick(ACCEPTED_REQUEST_CODINGS, &pref), Coding::Zstd);
        assert_eq!(pick("gzip", &pref), Coding::Gzip);
        assert_eq!(pick("zstd;q=0, gzip", &pref), Coding::Gzip);
        assert_eq!(pick("br", &pref), Coding::Identity);
        assert_eq!(pick("", &pref), Coding::Identity);
    }

    /// Prints the size and time of both codings on a batch of 500 realistic
    /// payment events (random ids, payers and amounts): the figures behind
    /// the choice of zstd (docs/ledger.md). Not a timed assertion; the only
    /// assertion is that both codings shrink the batch.
    #[test]
    fn measure_on_payment_events() {
        let body = crate::coding::sample_batch(500);
        for c in [Coding::Zstd, Coding::Gzip] {
            let t = std::time::Instant::now();
            let wire = encode(c, &body).expect("encode");
            let enc = t.elapsed();
            let t = std::time::Instant::now();
            decode_bounded(c, &wire, body.len()).expect("decode");
            let dec = t.elapsed();
            eprintln!(
                "coding {c:?}: {} -> {} bytes ({:.1}x, {:.0} B/event), encode {:?}, decode {:?}",
                body.len(),
                wire.len(),
                body.len() as f64 / wire.len() as f64,
                wire.len() as f64 / 500.0,
                enc,
                dec
            );
            assert!(wire.len() < body.len() / 2);
        }
    }
}
