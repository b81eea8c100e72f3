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

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

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

/// One JSON value as the strict parser reads it: strings (and keys) borrowed
/// from the input when they hold no escape, an object as its members in
/// document order (no key twice: the parser refused that). The request paths
/// read events from this instead of a [`Value`], which costs a map node and
/// an owned string per member (about a fifth of ledgerd's CPU per event).
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl Json<'_> {
    /// The same value as a [`Value`] (owned).
    pub fn into_value(self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(b),
            Json::Number(n) => Value::Number(n),
            Json::Str(s) => Value::String(s.into_owned()),
            Json::Array(a) => Value::Array(a.into_iter().map(Json::into_value).collect()),
            Json::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k.into_owned(), v.into_value())).collect::<Map<_, _>>()),
        }
    }
}

/// Read access to a parsed JSON value, whichever tree holds it: the event
/// validation (`Event::from_json`) runs on a [`Value`] and on a [`Json`] alike.
pub trait JsonView: Sized {
    /// `Some` for a string.
    fn as_str(&self) -> Option<&str>;
    /// `Some` for an integer in `0..=u64::MAX` (not for `250.0`).
    fn as_u64(&self) -> Option<u64>;
    fn is_null(&self) -> bool;
    /// An object's members (in no promised order); `None` for any other value.
    fn members(&self) -> Option<impl Iterator<Item = (&str, &Self)>>;
    /// An object's member `key`; `None` if absent or not an object.
    fn get(&self, key: &str) -> Option<&Self>;
    /// The first (in key order) of an object's keys not in `known`: of
    /// several, the one named is the same whichever tree holds the object.
    fn unknown_key(&self, known: &[&str]) -> Option<&str> {
        self.members()?.map(|(k, _)| k).filter(|k| !known.contains(k)).min()
    }
}

impl JsonView for Value {
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn as_u64(&self) -> Option<u64> {
        Value::as_u64(self)
    }
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn members(&self) -> Option<impl Iterator<Item = (&str, &Self)>> {
        self.as_object().map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
    }
    fn get(&self, key: &str) -> Option<&Self> {
        self.as_object()?.get(key)
    }
}

impl JsonView for Json<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
    fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => n.as_u64(),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
    fn members(&self) -> Option<impl Iterator<Item = (&str, &Self)>> {
        match self {
            Json::Object(m) => Some(m.iter().map(|(k, v)| (&**k, v))),
            _ => None,
        }
    }
    fn get(&self, key: &str) -> Option<&Self> {
        // Linear: an event has a dozen members. A hostile object with
        // thousands is bounded by the body limit and read a dozen times.
        match self {
            Json::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Parses `bytes` as one JSON value, refusing duplicate object keys at any
/// depth; strings without escapes stay borrowed from `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Json<'_>, JsonError> {
    let state = Strict::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictSeed { state: &state }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| JsonError { message: e.to_string(), duplicate_key: state.duplicate.into_inner() })
}

/// Parses `bytes` as one JSON value, refusing duplicate object keys at any depth.
pub fn from_slice_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    parse(bytes).map(Json::into_value)
}

/// Deserialises one JSON value from any serde deserializer, refusing
/// duplicate object keys at any depth (for `impl Deserialize`).
pub fn deserialize_strict<'de, D: de::Deserializer<'de>>(d: D) -> Result<Json<'de>, D::Error> {
    let state = Strict::default();
    StrictSeed { state: &state }.deserialize(d)
}

/// Like [`from_slice_strict`], then deserialises the value into `T`.
pub fn from_slice_strict_as<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let value = from_slice_strict(bytes)?;
    serde_json::from_value(value).map_err(|e| JsonError { message: e.to_string(), duplicate_key: None })
}

/// One step of the path to the value being read.
enum Step<'de> {
    /// An object member: its key (moved back into the object once the value is read).
    Key(Cow<'de, str>),
    /// An array element: its index.
    Index(usize),
}

/// The parse's shared state: the path to the value being read, kept as a
/// stack so that a valid document costs no path formatting (the path is
/// only spelled out for a duplicate), and where the duplicate's path is left.
#[derive(Default)]
struct Strict<'de> {
    path: RefCell<Vec<Step<'de>>>,
    duplicate: RefCell<Option<String>>,
}

impl Strict<'_> {
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

struct StrictSeed<'a, 'de> {
    state: &'a Strict<'de>,
}

/// Objects up to this many members are checked for a repeated key by a scan
/// of the members read so far; larger ones (only a hostile client sends
/// them) through a set, so the check stays linear in the object's size.
const SCAN_MEMBERS_MAX: usize = 16;

impl<'de> DeserializeSeed<'de> for StrictSeed<'_, 'de> {
    type Value = Json<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_, 'de> {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        // serde_json never yields a non-finite float; `Null` is unreachable.
        Ok(Number::from_f64(v).map(Json::Number).unwrap_or(Json::Null))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            self.state.path.borrow_mut().push(Step::Index(out.len()));
            let next = seq.next_element_seed(StrictSeed { state: self.state });
            self.state.path.borrow_mut().pop();
            match next? {
                Some(v) => out.push(v),
                None => return Ok(Json::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut out: Vec<(Cow<'de, str>, Json<'de>)> = Vec::new();
        let mut seen: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let repeated = match &mut seen {
                Some(set) => !set.insert(key.clone()),
                None => {
                    let repeated = out.iter().any(|(k, _)| *k == key);
                    if !repeated && out.len() >= SCAN_MEMBERS_MAX {
                        seen = Some(out.iter().map(|(k, _)| k.clone()).chain([key.clone()]).collect());
                    }
                    repeated
                }
            };
            if repeated {
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
            out.push((key, value?));
        }
        Ok(Json::Object(out))
    }
}

/// An object key, borrowed from the input when it holds no escape
/// (serde's own `Cow<str>` always copies).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
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
    fn a_key_repeated_in_a_large_object_or_spelled_with_an_escape_is_refused() {
        // Past SCAN_MEMBERS_MAX members the check goes through a set.
        let members: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let mut text = format!("{{{}}}", members.join(","));
        assert!(parse(text.as_bytes()).is_ok());
        text.insert_str(text.len() - 1, ",\"k3\":0");
        assert_eq!(parse(text.as_bytes()).unwrap_err().duplicate_key.as_deref(), Some("k3"));
        // The first and the 17th member, found while the set is built.
        let mut text = format!("{{{}", members[..16].join(","));
        text.push_str(",\"k0\":1}");
        assert_eq!(parse(text.as_bytes()).unwrap_err().duplicate_key.as_deref(), Some("k0"));
        // `\u0061` is `a`: the same key, however it is spelled.
        let e = parse(br#"{"a":1,"\u0061":2}"#).unwrap_err();
        assert_eq!(e.duplicate_key.as_deref(), Some("a"));
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_input() {
        let v = parse(br#"{"id":"ev-1","item":"caf\u00e9"}"#).unwrap();
        let Json::Object(members) = &v else { panic!("{v:?}") };
        assert!(matches!(&members[0].0, Cow::Borrowed("id")));
        assert!(matches!(&members[0].1, Json::Str(Cow::Borrowed("ev-1"))));
        assert!(matches!(&members[1].1, Json::Str(Cow::Owned(s)) if s == "café"));
        assert_eq!(JsonView::get(&v, "item").and_then(JsonView::as_str), Some("café"));
        assert_eq!(JsonView::get(&v, "nope"), None);
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
