//! Config values with units: sizes ("64KiB", "10GiB", or a bare number of bytes)
//! and durations ("100ms", "5s", "7d"). Parsed once, at config load.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A size in bytes, written in config as "64KiB", "1 MiB", "10GiB" or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Bytes, String> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| Bytes(b.as_u64()))
            // bytesize's own text repeats itself ("couldn't parse … , Failed to parse unit …").
            .map_err(|_| format!("{s:?} is not a size (try \"64KiB\", \"10GiB\" or a number of bytes)"))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Bytes(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration, written in config as "100ms", "5s", "30s", "7d".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span(pub Duration);

impl Span {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl std::str::FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Span, String> {
        humantime::parse_duration(s.trim())
            .map(Span)
            .map_err(|_| format!("{s:?} is not a duration (try \"5s\", \"100ms\" or \"7d\")"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!("64KiB".parse::<Bytes>(), Ok(Bytes(65536)));
        assert_eq!("10GiB".parse::<Bytes>(), Ok(Bytes(10 << 30)));
        assert_eq!("100".parse::<Bytes>(), Ok(Bytes(100)));
        assert!("lots".parse::<Bytes>().is_err());
        assert_eq!("5s".parse::<Span>(), Ok(Span(Duration::from_secs(5))));
        assert_eq!("100ms".parse::<Span>(), Ok(Span(Duration::from_millis(100))));
        assert_eq!("7d".parse::<Span>(), Ok(Span(Duration::from_secs(7 * 86400))));
        assert!("soon".parse::<Span>().is_err());
    }
}
