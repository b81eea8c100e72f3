//! Strict JSON: the one way offgrid turns untrusted bytes into a JSON value.
//!
//! `serde_json::from_slice::<Value>` keeps the *last* of two equal keys, so
//! `{"amount":250,"amount":9}` reads as 9 while a proxy or WAF that keeps the
//! first sees 250. Here an object with a duplicate key, at any depth, is an
//! error that names the key (SPEC §1: 400 `invalid_json`). Everything else is
//! serde_json's own parser: UTF-8 is checked, a byte-order mark, a raw NUL or
//! a control character outside a string escape is a syntax error, nesting
//! deeper than serde_json's recursion limit (128) is an error, and numbers
//! past `u64`/`i64` become floats, which every integer field refuses.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why bytes are not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    /// serde_json's description, with line and column.
    pub message: String,
    /// For a duplicate key: its path (`amount`, `attributes.colour`,
    /// `[3].amount`, `events[0].event.id`); `None` for other syntax errors.
    pub duplicate_key: Option<String>,
}

/// Parses `bytes` as one JSON value, refusing duplicate object keys at any depth.
pub fn from_slice_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    let state = Strict::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictSeed { state: &state }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| JsonError { message: e.to_string(), duplicate_key: state.duplicate.into_inner() })
}

/// Deserialises one JSON value from any serde deserializer, refusing
/// duplicate object keys at any depth (for `impl Deserialize`).
pub fn deserialize_strict<'de, D: de::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    let state = Strict::default();
    StrictSeed { state: &state }.deserialize(d)
}

/// Like [`from_slice_strict`], then deserialises the value into `T`.
pub fn from_slice_strict_as<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let value = from_slice_strict(bytes)?;
    serde_json::from_value(value).map_err(|e| JsonError { message: e.to_string(), duplicate_key: None })
}

/// One step of the path to the value being read.
enum Step {
    /// An object member: its key (moved back into the map once the value is read).
    Key(String),
    /// An array element: its index.
    Index(usize),
}

/// The parse's shared state: the path to the value being read, kept as a
/// stack so that a valid document costs no path formatting (the path is
/// only spelled out for a duplicate), and where the duplicate's path is left.
#[derive(Default)]
struct Strict {
    path: RefCell<Vec<Step>>,
    duplicate: RefCell<Option<String>>,
}

impl Strict {
    /// The current path with `last` appended: `a.b[3].c`.
    fn spell(&self, last: &str) -> String {
        let mut out = String::new();
        for step in self.path.borrow().iter() {
            match step {
                Step::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(last);
        out
    }
}

struct StrictSeed<'a> {
    state: &'a Strict,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never yields a non-finite float; `Null` is unreachable.
        Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            self.state.path.borrow_mut().push(Step::Index(out.len()));
            let next = seq.next_element_seed(StrictSeed { state: self.state });
            self.state.path.borrow_mut().pop();
            match next? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let path = self.state.spell(&key);
                let msg = format!("duplicate key {path:?}");
                *self.state.duplicate.borrow_mut() = Some(path);
                return Err(de::Error::custom(msg));
            }
            self.state.path.borrow_mut().push(Step::Key(key));
            let value = map.next_value_seed(StrictSeed { state: self.state });
            let key = match self.state.path.borrow_mut().pop() {
                Some(Step::Key(k)) => k,
                // The stack is balanced (every push is popped in the same
                // call); an error, never a panic, if that ever broke.
                _ => return Err(de::Error::custom("strict JSON: path stack out of step")),
            };
            out.insert(key, value?);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_and_named() {
        let e = from_slice_strict(br#"{"amount":250,"amount":9}"#).unwrap_err();
        assert_eq!(e.duplicate_key.as_deref(), Some("amount"));
        assert!(e.message.contains("duplicate key \"amount\""), "{}", e.message);
        let e = from_slice_strict(br#"{"attributes":{"a":"1","a":"2"}}"#).unwrap_err();
        assert_eq!(e.duplicate_key.as_deref(), Some("attributes.a"));
        let e = from_slice_strict(br#"[{"id":"x"},{"id":"y","id":"z"}]"#).unwrap_err();
        assert_eq!(e.duplicate_key.as_deref(), Some("[1].id"));
    }

    #[test]
    fn same_values_as_serde_json_otherwise() {
        let text = br#"{"a":[1,-2,3.5,"s",null,true,{"b":{}}],"c":18446744073709551616}"#;
        let strict = from_slice_strict(text).unwrap();
        let plain: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(strict, plain);
    }

    #[test]
    fn syntax_errors_stay_errors() {
        for bad in [&b""[..], b"\xef\xbb\xbf{}", b"{}\x00", b"{\"a\":\"\xff\"}", b"{} x", b"{\"a\":\"\x00\"}"] {
            let e = from_slice_strict(bad).unwrap_err();
            assert_eq!(e.duplicate_key, None, "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(from_slice_strict(deep.as_bytes()).is_err());
    }
}
