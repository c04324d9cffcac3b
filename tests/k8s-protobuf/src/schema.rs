//! A small table-driven protobuf → JSON decoder. Each Kubernetes message is described by a [`Msg`]:
//! its fields' numbers (from upstream `generated.proto`), JSON names and types (from the Go types'
//! `json:` tags). The output mirrors Go's `encoding/json` of the decoded Go struct: `omitempty`
//! drops zero scalars and empty maps/slices but never structs, pointers are emitted iff set, and
//! fields without `omitempty` are always emitted (`null` for nil slices/maps/pointers).

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::wire::{Reader, WireError, WireType};

/// The value type of a field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ty {
    Str,
    Bool,
    I32,
    I64,
    /// An embedded message.
    Msg(&'static Msg),
    /// `metav1.Time`: a Timestamp message, JSON RFC 3339 in UTC with whole seconds (or `null`).
    Time,
    /// `intstr.IntOrString`: JSON number or string according to its `type` field.
    IntOrString,
    /// `metav1.FieldsV1`: raw JSON bytes embedded as-is.
    FieldsV1,
    /// `map<string, string>`.
    MapStr,
    /// `map<string, bytes>`: values become base64 strings, as Go's JSON does for `[]byte`.
    MapBytes,
    /// `map<string, ExtraValue>` (`UserInfo.extra`): values are string lists.
    MapStrList,
}

/// Presence and omission rules: how the Go field is declared and tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Card {
    /// Value type with `omitempty`: zero scalars are left out; structs (incl. Time) are always emitted.
    Omit,
    /// Value type without `omitempty`: always emitted, zero value if absent.
    Always,
    /// Value type with `omitzero`: left out when zero, structs included.
    OmitZero,
    /// Pointer with `omitempty`: emitted iff present on the wire.
    Ptr,
    /// Pointer without `omitempty`: `null` when absent.
    PtrNull,
    /// Repeated field or map with `omitempty`: left out when empty.
    Rep,
    /// Repeated field or map without `omitempty`: `null` when empty (Go leaves it nil).
    RepNull,
}

/// One field of a message.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) number: u32,
    pub(crate) json: &'static str,
    pub(crate) ty: Ty,
    pub(crate) card: Card,
}

/// Shorthand for table entries.
pub(crate) const fn f(number: u32, json: &'static str, ty: Ty, card: Card) -> Field {
    Field {
        number,
        json,
        ty,
        card,
    }
}

/// A message: its upstream name (for error messages) and its fields.
#[derive(Debug)]
pub(crate) struct Msg {
    pub(crate) name: &'static str,
    pub(crate) fields: &'static [Field],
}

/// A decoding failure with the path of JSON names leading to it (built up while unwinding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The innermost message being decoded.
    pub(crate) message: &'static str,
    /// The field number, 0 when the tag itself could not be read.
    pub(crate) field: u32,
    pub(crate) reason: String,
    /// Path segments, innermost first.
    pub(crate) path: Vec<String>,
}

impl Failure {
    pub(crate) fn new(message: &'static str, field: u32, reason: impl Into<String>) -> Self {
        Self {
            message,
            field,
            reason: reason.into(),
            path: Vec::new(),
        }
    }

    fn wire(message: &'static str, field: u32, err: WireError) -> Self {
        Self::new(message, field, err.to_string())
    }

    /// Adds an outer path segment.
    fn within(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }

    /// The path from the outermost object, e.g. `spec.ports[0].targetPort`.
    pub(crate) fn path_string(&self) -> String {
        let mut out = String::new();
        for seg in self.path.iter().rev() {
            if !out.is_empty() && !seg.starts_with('[') {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }
}

/// What was seen on the wire for one schema field.
#[derive(Debug, Clone)]
enum Slot {
    Absent,
    /// A decoded scalar (last occurrence wins, as in Go).
    Scalar(Value),
    /// Embedded-message bytes; repeated occurrences are concatenated, which is protobuf's merge.
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

fn expected_wire(ty: Ty) -> WireType {
    match ty {
        Ty::Bool | Ty::I32 | Ty::I64 => WireType::Varint,
        _ => WireType::Len,
    }
}

fn is_repeated(card: Card) -> bool {
    matches!(card, Card::Rep | Card::RepNull)
}

/// Decodes `buf` as message `msg` into a JSON object.
pub(crate) fn decode_message(msg: &'static Msg, buf: &[u8]) -> Result<Map<String, Value>, Failure> {
    let mut slots = vec![Slot::Absent; msg.fields.len()];
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (number, wire) = r.tag().map_err(|e| Failure::wire(msg.name, 0, e))?;
        let Some(idx) = msg.fields.iter().position(|fd| fd.number == number) else {
            r.skip(number, wire)
                .map_err(|e| Failure::wire(msg.name, number, e))?;
            continue;
        };
        let (fd, slot) = (&msg.fields[idx], &mut slots[idx]);
        let fail = |reason: String| Failure::new(msg.name, number, reason).within(fd.json);
        let wire_err = |e: WireError| fail(e.to_string());
        if wire != expected_wire(fd.ty) {
            return Err(fail(format!(
                "wire type {wire}, expected {}",
                expected_wire(fd.ty)
            )));
        }
        match fd.ty {
            Ty::Bool | Ty::I32 | Ty::I64 => {
                let v = r.varint().map_err(wire_err)?;
                let value = match fd.ty {
                    Ty::Bool => Value::Bool(v != 0),
                    // Truncation to the declared width is what Go's generated code does.
                    Ty::I32 => Value::from(v as i32),
                    _ => Value::from(v as i64),
                };
                store_scalar(slot, fd, value);
            }
            Ty::Str => {
                let bytes = r.len_delimited().map_err(wire_err)?;
                // Go's generated code does not validate UTF-8; its JSON encoder substitutes U+FFFD.
                let value = Value::String(String::from_utf8_lossy(bytes).into_owned());
                store_scalar(slot, fd, value);
            }
            Ty::MapStr | Ty::MapBytes | Ty::MapStrList => {
                let entry = r.len_delimited().map_err(wire_err)?;
                let (k, v) = decode_map_entry(msg.name, fd, entry).map_err(|e| e.within(fd.json))?;
                match slot {
                    Slot::Map(m) => {
                        m.insert(k, v);
                    }
                    _ => *slot = Slot::Map(Map::from_iter([(k, v)])),
                }
            }
            Ty::Msg(_) | Ty::Time | Ty::IntOrString | Ty::FieldsV1 => {
                let bytes = r.len_delimited().map_err(wire_err)?;
                if is_repeated(fd.card) {
                    let index = match slot {
                        Slot::List(l) => l.len(),
                        _ => 0,
                    };
                    let value = convert(fd.ty, Some(bytes))
                        .map_err(|e| e.within(format!("[{index}]")).within(fd.json))?;
                    match slot {
                        Slot::List(l) => l.push(value),
                        _ => *slot = Slot::List(vec![value]),
                    }
                } else {
                    match slot {
                        Slot::Bytes(b) => b.extend_from_slice(bytes),
                        _ => *slot = Slot::Bytes(bytes.to_vec()),
                    }
                }
            }
        }
    }

    let mut out = Map::new();
    for (fd, slot) in msg.fields.iter().zip(slots) {
        if let Some(value) = emit(fd, slot).map_err(|e| e.within(fd.json))? {
            out.insert(fd.json.to_owned(), value);
        }
    }
    Ok(out)
}

fn store_scalar(slot: &mut Slot, fd: &Field, value: Value) {
    if is_repeated(fd.card) {
        match slot {
            Slot::List(l) => l.push(value),
            _ => *slot = Slot::List(vec![value]),
        }
    } else {
        *slot = Slot::Scalar(value);
    }
}

/// Decodes a map entry message (key = 1, value = 2; missing parts are empty, as in Go).
fn decode_map_entry(message: &'static str, fd: &Field, entry: &[u8]) -> Result<(String, Value), Failure> {
    let mut key = String::new();
    let mut value: &[u8] = &[];
    let mut r = Reader::new(entry);
    while !r.is_empty() {
        let (number, wire) = r.tag().map_err(|e| Failure::wire(message, fd.number, e))?;
        match (number, wire) {
            (1 | 2, WireType::Len) => {
                let bytes = r
                    .len_delimited()
                    .map_err(|e| Failure::wire(message, fd.number, e))?;
                if number == 1 {
                    key = String::from_utf8_lossy(bytes).into_owned();
                } else {
                    value = bytes;
                }
            }
            (1 | 2, other) => {
                return Err(Failure::new(
                    message,
                    fd.number,
                    format!("map entry part {number} has wire type {other}, expected length-delimited"),
                ));
            }
            _ => r
                .skip(number, wire)
                .map_err(|e| Failure::wire(message, fd.number, e))?,
        }
    }
    let value = match fd.ty {
        Ty::MapBytes => Value::String(base64::engine::general_purpose::STANDARD.encode(value)),
        Ty::MapStrList => {
            let mut items =
                decode_message(&EXTRA_VALUE, value).map_err(|e| e.within(format!("[{key:?}]")))?;
            items.remove("items").unwrap_or_default()
        }
        _ => Value::String(String::from_utf8_lossy(value).into_owned()),
    };
    Ok((key, value))
}

/// Turns the accumulated slot into the field's JSON value, or `None` when Go would omit it.
fn emit(fd: &Field, slot: Slot) -> Result<Option<Value>, Failure> {
    if is_repeated(fd.card) {
        let value = match slot {
            Slot::List(l) if !l.is_empty() => Value::Array(l),
            Slot::Map(m) if !m.is_empty() => Value::Object(m),
            _ if fd.card == Card::Rep => return Ok(None),
            _ => Value::Null,
        };
        return Ok(Some(value));
    }
    let present = !matches!(slot, Slot::Absent);
    match fd.card {
        Card::Ptr if !present => return Ok(None),
        Card::PtrNull if !present => return Ok(Some(Value::Null)),
        _ => {}
    }
    let value = match slot {
        Slot::Scalar(v) => v,
        Slot::Bytes(b) => convert(fd.ty, Some(&b))?,
        Slot::Absent | Slot::List(_) | Slot::Map(_) => convert(fd.ty, None)?,
    };
    let omit = match fd.card {
        // Go's omitempty never drops a struct (IntOrString, Time, embedded messages).
        Card::Omit => matches!(fd.ty, Ty::Str | Ty::Bool | Ty::I32 | Ty::I64) && is_zero_scalar(&value),
        Card::OmitZero => is_zero_scalar(&value) || value.is_null(),
        _ => false,
    };
    Ok((!omit).then_some(value))
}

/// Go's `omitempty` test for the scalar kinds we emit (structs are never empty to Go).
fn is_zero_scalar(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        _ => false,
    }
}

/// Converts a message-typed value (or its zero value when `bytes` is `None`) to JSON.
fn convert(ty: Ty, bytes: Option<&[u8]>) -> Result<Value, Failure> {
    let buf = bytes.unwrap_or_default();
    match ty {
        Ty::Str => Ok(Value::String(String::new())),
        Ty::Bool => Ok(Value::Bool(false)),
        Ty::I32 | Ty::I64 => Ok(Value::from(0)),
        Ty::MapStr | Ty::MapBytes | Ty::MapStrList => Ok(Value::Null),
        Ty::Msg(m) => decode_message(m, buf).map(Value::Object),
        Ty::Time => time_json(buf),
        Ty::IntOrString => int_or_string_json(buf),
        Ty::FieldsV1 => fields_v1_json(buf),
    }
}

msg! {
    /// `ExtraValue`: a list of strings; an empty one is a nil slice to Go, hence `null`.
    EXTRA_VALUE = "ExtraValue" {
        1 "items" Str RepNull,
    }

    TIMESTAMP = "Timestamp" {
        1 "seconds" I64 Always,
        2 "nanos" I32 Always,
    }
}

/// Go's zero `time.Time` as Unix seconds (January 1, year 1, UTC).
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// `metav1.Time`: empty bytes are the zero time (`null`); otherwise whole seconds, since
/// upstream's Unmarshal drops the nanoseconds, formatted as RFC 3339 in UTC.
fn time_json(buf: &[u8]) -> Result<Value, Failure> {
    if buf.is_empty() {
        return Ok(Value::Null);
    }
    let ts = decode_message(&TIMESTAMP, buf)?;
    let seconds = ts.get("seconds").and_then(Value::as_i64).unwrap_or(0);
    if seconds == GO_ZERO_TIME_UNIX {
        return Ok(Value::Null);
    }
    rfc3339(seconds)
        .map(Value::String)
        .ok_or_else(|| Failure::new("Time", 1, format!("{seconds} seconds is outside years 0-9999")))
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`; `None` outside years 0..=9999.
pub(crate) fn rfc3339(unix: i64) -> Option<String> {
    let t = jiff::Timestamp::from_second(unix).ok()?;
    let year = t.to_zoned(jiff::tz::TimeZone::UTC).year();
    (0..=9999)
        .contains(&year)
        .then(|| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

msg! {
    INT_OR_STRING = "IntOrString" {
        1 "type" I64 Always,
        2 "intVal" I32 Always,
        3 "strVal" Str Always,
    }
}

/// `intstr.IntOrString`: type 0 → the int, type 1 → the string (Go refuses anything else).
fn int_or_string_json(buf: &[u8]) -> Result<Value, Failure> {
    let mut m = decode_message(&INT_OR_STRING, buf)?;
    match m.get("type").and_then(Value::as_i64) {
        Some(0) => Ok(m.remove("intVal").unwrap_or(Value::from(0))),
        Some(1) => Ok(m.remove("strVal").unwrap_or_default()),
        other => Err(Failure::new(
            "IntOrString",
            1,
            format!(
                "invalid type {}, expected 0 (Int) or 1 (String)",
                other.unwrap_or(-1)
            ),
        )),
    }
}

/// `metav1.FieldsV1`: its `Raw` bytes (field 1) are JSON and are embedded unchanged.
fn fields_v1_json(buf: &[u8]) -> Result<Value, Failure> {
    let mut raw: &[u8] = &[];
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (number, wire) = r.tag().map_err(|e| Failure::wire("FieldsV1", 0, e))?;
        if (number, wire) == (1, WireType::Len) {
            raw = r.len_delimited().map_err(|e| Failure::wire("FieldsV1", 1, e))?;
        } else {
            r.skip(number, wire)
                .map_err(|e| Failure::wire("FieldsV1", number, e))?;
        }
    }
    serde_json::from_slice(raw)
        .map_err(|e| Failure::new("FieldsV1", 1, format!("Raw is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc3339_formats_utc_seconds() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(1_779_527_232).as_deref(), Some("2026-05-23T09:07:12Z"));
        assert_eq!(rfc3339(951_782_400).as_deref(), Some("2000-02-29T00:00:00Z"));
        assert_eq!(rfc3339(-1).as_deref(), Some("1969-12-31T23:59:59Z"));
        assert_eq!(
            rfc3339(GO_ZERO_TIME_UNIX).as_deref(),
            Some("0001-01-01T00:00:00Z")
        );
        assert_eq!(rfc3339(253_402_300_800), None); // year 10000
    }

    #[test]
    fn time_values() {
        assert_eq!(time_json(&[]), Ok(Value::Null));
        // seconds = 0 but present: the Unix epoch, not Go's zero time.
        assert_eq!(time_json(&[0x08, 0x00]), Ok(json!("1970-01-01T00:00:00Z")));
        // nanos are dropped, as upstream's Time.Unmarshal does.
        assert_eq!(
            time_json(&[0x08, 0x01, 0x10, 0x05]),
            Ok(json!("1970-01-01T00:00:01Z"))
        );
        assert!(time_json(&[0x08]).is_err());
    }

    #[test]
    fn int_or_string_values() {
        assert_eq!(
            int_or_string_json(&[0x08, 0x00, 0x10, 0x90, 0x3f]),
            Ok(json!(8080))
        );
        assert_eq!(
            int_or_string_json(&[0x08, 0x01, 0x1a, 0x04, b'h', b't', b't', b'p']),
            Ok(json!("http"))
        );
        assert_eq!(int_or_string_json(&[]), Ok(json!(0)));
        assert_eq!(int_or_string_json(&[0x08, 0x01]), Ok(json!("")));
        let err = int_or_string_json(&[0x08, 0x07]).unwrap_err();
        assert!(err.reason.contains("invalid type 7"), "{err:?}");
    }

    #[test]
    fn fields_v1_embeds_raw_json() {
        let raw = br#"{"f:data":{}}"#;
        let mut buf = vec![0x0a, raw.len() as u8];
        buf.extend_from_slice(raw);
        assert_eq!(fields_v1_json(&buf), Ok(json!({"f:data": {}})));
        assert!(fields_v1_json(&[0x0a, 0x01, b'{']).is_err());
    }
}
