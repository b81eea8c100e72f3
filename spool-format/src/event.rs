//! The payment event (SPEC §1): parsing from untrusted JSON with a precise field
//! error, and the canonical encoding that decides whether two events are "the same".

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::json::{JsonError, JsonView};

/// Longest event id, in bytes. The id is the client's idempotency key.
pub const ID_BYTES_MAX: usize = 128;
/// Smallest accepted amount, in minor units: zero-value payments are not payments.
pub const AMOUNT_MIN: u64 = 1;
/// Largest accepted amount, in minor units (10^12): far above any real in-world
/// payment, far below anything that could overflow a sum over many events.
pub const AMOUNT_MAX: u64 = 1_000_000_000_000;
/// Longest currency code, in bytes.
pub const CURRENCY_BYTES_MAX: usize = 8;
/// Longest `item`, in bytes.
pub const ITEM_BYTES_MAX: usize = 256;
/// Longest `region` and `terminal`, in bytes.
pub const LABEL_BYTES_MAX: usize = 128;
/// Most `attributes` entries.
pub const ATTRIBUTES_MAX: usize = 32;
/// Longest attribute key, in bytes.
pub const ATTRIBUTE_KEY_BYTES_MAX: usize = 64;
/// Longest attribute value, in bytes.
pub const ATTRIBUTE_VALUE_BYTES_MAX: usize = 1024;

const FIELDS: &[&str] = &[
    "id",
    "kind",
    "amount",
    "currency",
    "payer",
    "payee",
    "recipient",
    "occurred_at",
    "item",
    "region",
    "terminal",
    "attributes",
];

/// What kind of payment an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Purchase,
    Rental,
    Gift,
    Refund,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Purchase => "purchase",
            Kind::Rental => "rental",
            Kind::Gift => "gift",
            Kind::Refund => "refund",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Kind::Purchase => 0,
            Kind::Rental => 1,
            Kind::Gift => 2,
            Kind::Refund => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0 => Kind::Purchase,
            1 => Kind::Rental,
            2 => Kind::Gift,
            3 => Kind::Refund,
            _ => return None,
        })
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "purchase" => Kind::Purchase,
            "rental" => Kind::Rental,
            "gift" => Kind::Gift,
            "refund" => Kind::Refund,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated payment event in canonical form.
///
/// Canonical means: UUIDs lower-case, `occurred_at` normalised to UTC, `recipient`
/// resolved (it defaults to `payer`), `attributes` sorted by key. Only
/// [`Event::parse_json`] / [`Event::from_json_value`] and the record decoder build
/// one, so every `Event` in the program satisfies SPEC §1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub id: String,
    pub kind: Kind,
    pub amount: u64,
    pub currency: String,
    pub payer: Uuid,
    pub payee: Uuid,
    pub recipient: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Why an event was refused: the offending field (SPEC field name) and a
/// human-readable reason. Rendered as `"<field>: <reason>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), reason: reason.into() }
    }
}

/// Error of [`Event::parse_json`]: either the bytes are not strict JSON (syntax,
/// UTF-8, a duplicate key: [`JsonError`]), or they are JSON but not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid json: {0}")]
    Json(JsonError),
    #[error(transparent)]
    Invalid(#[from] FieldError),
}

impl Event {
    /// Parses one event from request bytes.
    pub fn parse_json(bytes: &[u8]) -> Result<Event, ParseError> {
        let value = crate::json::parse(bytes).map_err(ParseError::Json)?;
        Ok(Event::from_json(&value)?)
    }

    /// Validates a JSON value as an event (SPEC §1) and builds its canonical form.
    ///
    /// `null` is not "absent": an optional field that is present must have its
    /// type (`"item": null` is refused as "must be a string"), so that no two
    /// spellings of one event exist and a reader that treats `null` differently
    /// cannot disagree with us. A required field that is `null` is "required".
    pub fn from_json_value(value: &Value) -> Result<Event, FieldError> {
        Event::from_json(value)
    }

    /// [`Event::from_json_value`] on any parsed JSON tree (a
    /// [`crate::json::Json`] from the request paths). Of several faults, the
    /// one named is the same whichever tree holds the event (keys are judged
    /// in sorted order, as a [`Value`] keeps them).
    pub fn from_json<V: JsonView>(obj: &V) -> Result<Event, FieldError> {
        if obj.members().is_none() {
            return Err(FieldError::new("event", "must be a JSON object"));
        }
        if let Some(unknown) = obj.unknown_key(FIELDS) {
            return Err(FieldError::new(unknown, "unknown field"));
        }
        let id = required_str(obj, "id")?;
        check_id(id)?;
        let kind_str = required_str(obj, "kind")?;
        let kind = Kind::parse(kind_str).ok_or_else(|| {
            FieldError::new("kind", "must be one of purchase, rental, gift, refund")
        })?;
        let amount = parse_amount(required(obj, "amount")?)?;
        let currency = required_str(obj, "currency")?;
        if currency.is_empty()
            || currency.len() > CURRENCY_BYTES_MAX
            || !currency.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(FieldError::new(
                "currency",
                format!("must be 1 to {CURRENCY_BYTES_MAX} printable ASCII characters without spaces"),
            ));
        }
        let payer = parse_uuid(obj, "payer")?.ok_or_else(|| missing("payer"))?;
        let payee = parse_uuid(obj, "payee")?.ok_or_else(|| missing("payee"))?;
        let recipient = parse_uuid(obj, "recipient")?.unwrap_or(payer);
        let occurred_at = parse_time(required_str(obj, "occurred_at")?)?;
        let item = optional_str(obj, "item", ITEM_BYTES_MAX)?;
        let region = optional_str(obj, "region", LABEL_BYTES_MAX)?;
        let terminal = optional_str(obj, "terminal", LABEL_BYTES_MAX)?;
        let attributes = parse_attributes(obj.get("attributes"))?;
        Ok(Event {
            id: id.to_owned(),
            kind,
            amount,
            currency: currency.to_owned(),
            payer,
            payee,
            recipient,
            occurred_at,
            item,
            region,
            terminal,
            attributes,
        })
    }

    /// Checks the invariants of a canonical event. Every constructor guarantees
    /// them; the record decoder calls this after reading (pair assertion).
    pub fn validate(&self) -> Result<(), FieldError> {
        check_id(&self.id)?;
        if !(AMOUNT_MIN..=AMOUNT_MAX).contains(&self.amount) {
            return Err(FieldError::new("amount", "out of range"));
        }
        if self.currency.is_empty()
            || self.currency.len() > CURRENCY_BYTES_MAX
            || !self.currency.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(FieldError::new("currency", "invalid"));
        }
        if self.occurred_at.offset() != time::UtcOffset::UTC {
            return Err(FieldError::new("occurred_at", "not normalised to UTC"));
        }
        check_len("item", self.item.as_deref(), ITEM_BYTES_MAX)?;
        check_len("region", self.region.as_deref(), LABEL_BYTES_MAX)?;
        check_len("terminal", self.terminal.as_deref(), LABEL_BYTES_MAX)?;
        check_attributes(self.attributes.iter())?;
        Ok(())
    }

    /// The canonical encoding: the exact bytes the spool stores for this event.
    /// Two events are the same event when these bytes are equal.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        crate::record::encode_event(self)
    }

    /// SHA-256 of the canonical encoding; the idempotency index keeps this to tell
    /// a duplicate (same digest) from a conflict (same id, other digest).
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// The event as JSON (the SPEC §1 shape, canonical values).
    pub fn to_json_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl<'de> Deserialize<'de> for Event {
    /// Deserialising runs the full SPEC §1 validation: there is no way to get an
    /// unvalidated `Event` out of serde.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        let value = crate::json::deserialize_strict(d)?;
        Event::from_json(&value).map_err(serde::de::Error::custom)
    }
}

fn missing(field: &str) -> FieldError {
    FieldError::new(field, "required")
}

fn required<'a, V: JsonView>(obj: &'a V, field: &str) -> Result<&'a V, FieldError> {
    match obj.get(field) {
        Some(v) if !v.is_null() => Ok(v),
        _ => Err(missing(field)),
    }
}

fn required_str<'a, V: JsonView>(obj: &'a V, field: &str) -> Result<&'a str, FieldError> {
    required(obj, field)?
        .as_str()
        .ok_or_else(|| FieldError::new(field, "must be a string"))
}

fn optional_str<V: JsonView>(
    obj: &V,
    field: &str,
    bytes_max: usize,
) -> Result<Option<String>, FieldError> {
    let Some(v) = obj.get(field) else { return Ok(None) };
    let s = v.as_str().ok_or_else(|| FieldError::new(field, "must be a string"))?;
    check_len(field, Some(s), bytes_max)?;
    check_no_nul(field, s)?;
    Ok(Some(s.to_owned()))
}

/// U+0000 is refused in every string: PostgreSQL text cannot hold it and C
/// readers truncate at it, so two systems would read two different events.
fn check_no_nul(field: &str, s: &str) -> Result<(), FieldError> {
    if s.contains('\0') {
        return Err(FieldError::new(field, "must not contain U+0000 (NUL)"));
    }
    Ok(())
}

fn check_len(field: &str, s: Option<&str>, bytes_max: usize) -> Result<(), FieldError> {
    match s {
        Some(s) if s.len() > bytes_max => {
            Err(FieldError::new(field, format!("must be at most {bytes_max} bytes")))
        }
        _ => Ok(()),
    }
}

fn check_id(id: &str) -> Result<(), FieldError> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
    if id.is_empty() || id.len() > ID_BYTES_MAX || !id.bytes().all(ok_char) {
        return Err(FieldError::new(
            "id",
            format!("must be 1 to {ID_BYTES_MAX} bytes of [A-Za-z0-9._:-]"),
        ));
    }
    Ok(())
}

fn parse_amount<V: JsonView>(v: &V) -> Result<u64, FieldError> {
    let err = || {
        FieldError::new(
            "amount",
            format!("must be a positive integer in minor units, at most {AMOUNT_MAX}"),
        )
    };
    // `as_u64` is `Some` only for a JSON integer that fits: floats (even `250.0`),
    // strings and negative numbers are all refused here.
    let amount = v.as_u64().ok_or_else(err)?;
    if !(AMOUNT_MIN..=AMOUNT_MAX).contains(&amount) {
        return Err(err());
    }
    Ok(amount)
}

fn parse_uuid<V: JsonView>(obj: &V, field: &str) -> Result<Option<Uuid>, FieldError> {
    let Some(v) = obj.get(field) else { return Ok(None) };
    let s = v.as_str().ok_or_else(|| FieldError::new(field, "must be a UUID string"))?;
    // Only the hyphenated 8-4-4-4-12 form is accepted (any case): the other forms
    // `Uuid::try_parse` knows (simple, braced, urn) are not part of the contract.
    if s.len() != 36 {
        return Err(FieldError::new(field, "must be a UUID (8-4-4-4-12 hex digits)"));
    }
    Uuid::try_parse(s)
        .map(Some)
        .map_err(|_| FieldError::new(field, "must be a UUID (8-4-4-4-12 hex digits)"))
}

fn parse_time(s: &str) -> Result<OffsetDateTime, FieldError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.to_offset(time::UtcOffset::UTC))
        .map_err(|_| FieldError::new("occurred_at", "must be an RFC 3339 timestamp"))
}

fn parse_attributes<V: JsonView>(v: Option<&V>) -> Result<BTreeMap<String, String>, FieldError> {
    let Some(v) = v else { return Ok(BTreeMap::new()) };
    let members = v
        .members()
        .ok_or_else(|| FieldError::new("attributes", "must be an object of string values"))?;
    // Judged in key order, whichever tree holds them (the strict parser
    // refused a repeated key, so no entry is lost here).
    let sorted: BTreeMap<&str, &V> = members.collect();
    let mut out = BTreeMap::new();
    for (k, v) in sorted {
        let v = v.as_str().ok_or_else(|| {
            FieldError::new("attributes", format!("value of {k:?} must be a string"))
        })?;
        if k.contains('\0') || v.contains('\0') {
            return Err(FieldError::new("attributes", "keys and values must not contain U+0000 (NUL)"));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    check_attributes(out.iter())?;
    Ok(out)
}

fn check_attributes<'a>(
    mut entries: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), FieldError> {
    if entries.len() > ATTRIBUTES_MAX {
        return Err(FieldError::new(
            "attributes",
            format!("at most {ATTRIBUTES_MAX} entries"),
        ));
    }
    entries.try_for_each(|(k, v)| {
        if k.is_empty() || k.len() > ATTRIBUTE_KEY_BYTES_MAX {
            return Err(FieldError::new(
                "attributes",
                format!("keys must be 1 to {ATTRIBUTE_KEY_BYTES_MAX} bytes"),
            ));
        }
        if v.len() > ATTRIBUTE_VALUE_BYTES_MAX {
            return Err(FieldError::new(
                "attributes",
                format!("value of {k:?} must be at most {ATTRIBUTE_VALUE_BYTES_MAX} bytes"),
            ));
        }
        Ok(())
    })
}
