//! A JSON value that remembers duplicate member names.
//!
//! Why not `serde_json::Value`: it silently keeps the last of two members with
//! the same name, so `{"alg":"RS256","alg":"none"}` would be read differently
//! by two parsers. A token whose header or claims repeat a name is refused
//! outright ([`parse_object_strict`]); a key set keeps the flag per object so a
//! single bad key can be skipped without discarding the others
//! ([`parse_value`] plus [`Object::has_duplicates`]).
//!
//! Names are compared after unescaping, so `"alg"` and `"\u0061lg"` collide.
//! Nesting is bounded by [`MAX_NESTING`]; deeper documents are refused.

use crate::prelude::*;

use alloc::collections::BTreeMap;
use alloc::collections::btree_map::Entry;
use core::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The deepest nesting of arrays and objects parsed, the outermost counting
/// as one level; deeper documents are refused as not JSON. Cognito's id
/// tokens and key sets nest three levels deep. The bound sets what the
/// guest's stack must hold, as the parse recurses once per level (see
/// guest/build.rs): serde_json's own limit, 127 levels, needed over 32 KiB.
pub const MAX_NESTING: usize = 16;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Object),
}

/// A JSON number as serde_json reports it (no arbitrary precision).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A non-negative integer that fits in `u64`.
    Unsigned(u64),
    /// A negative integer that fits in `i64`.
    Signed(i64),
    /// Anything else: a fraction, an exponent, or an integer out of range.
    Float(f64),
}

/// A JSON object. When a name occurs twice the first member is kept and the
/// object is flagged; callers decide whether that is fatal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object {
    members: BTreeMap<String, Value>,
    duplicate_name: bool,
}

impl Object {
    /// The member called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.members.get(name)
    }

    /// Whether this object itself repeats a member name (not its children).
    pub fn has_duplicates(&self) -> bool {
        self.duplicate_name
    }

    /// Whether this object or any object nested in it repeats a member name.
    pub fn has_duplicates_anywhere(&self) -> bool {
        self.duplicate_name || self.members.values().any(Value::has_duplicates_anywhere)
    }

    /// The number of distinct member names.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl Value {
    /// The string, when this is a JSON string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object, when this is a JSON object.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The elements, when this is a JSON array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    fn has_duplicates_anywhere(&self) -> bool {
        match self {
            Value::Object(o) => o.has_duplicates_anywhere(),
            Value::Array(a) => a.iter().any(Value::has_duplicates_anywhere),
            _ => false,
        }
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON at all (syntax, invalid UTF-8, trailing data, too deep).
    Syntax,
    /// Valid JSON, but the top level is not an object.
    NotAnObject,
    /// Some object repeats a member name.
    DuplicateName,
}

/// Parses any JSON document, keeping duplicate-name flags on objects.
pub fn parse_value(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = ValueSeed::DOCUMENT
        .deserialize(&mut deserializer)
        .map_err(|_| JsonError::Syntax)?;
    // Only whitespace may follow the value.
    deserializer.end().map_err(|_| JsonError::Syntax)?;
    Ok(value)
}

/// Parses a document that must be an object in which no object, at any depth,
/// repeats a member name.
pub fn parse_object_strict(bytes: &[u8]) -> Result<Object, JsonError> {
    match parse_value(bytes)? {
        Value::Object(o) if o.has_duplicates_anywhere() => Err(JsonError::DuplicateName),
        Value::Object(o) => Ok(o),
        _ => Err(JsonError::NotAnObject),
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ValueSeed::DOCUMENT.deserialize(deserializer)
    }
}

/// A value with at most `levels_left` levels of arrays and objects.
#[derive(Clone, Copy)]
struct ValueSeed {
    levels_left: usize,
}

impl ValueSeed {
    /// A whole document: [`MAX_NESTING`] levels.
    const DOCUMENT: ValueSeed = ValueSeed {
        levels_left: MAX_NESTING,
    };

    /// The seed for the members of an array or object, or an error when it
    /// would nest past [`MAX_NESTING`].
    fn inner<E: de::Error>(self) -> Result<ValueSeed, E> {
        match self.levels_left.checked_sub(1) {
            Some(levels_left) => Ok(ValueSeed { levels_left }),
            None => Err(E::custom("JSON nested too deeply")),
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor(self))
    }
}

struct ValueVisitor(ValueSeed);

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(Number::Unsigned(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        // serde_json reports non-negative integers through visit_u64.
        Ok(Value::Number(if v >= 0 {
            Number::Unsigned(v as u64)
        } else {
            Number::Signed(v)
        }))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(Number::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.0.inner()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.0.inner()?;
        let mut object = Object::default();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(inner)?;
            match object.members.entry(name) {
                Entry::Occupied(_) => object.duplicate_name = true,
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// `text` as a JSON string literal, quotes included (RFC 8259 §7: `"`, `\\`
/// and control characters escaped; everything else as is).
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_names_are_refused_at_any_depth() {
        assert_eq!(
            parse_object_strict(br#"{"a":1,"a":2}"#),
            Err(JsonError::DuplicateName)
        );
        assert_eq!(
            parse_object_strict(br#"{"x":{"a":1,"b":{"c":[{"d":1,"d":1}]}}}"#),
            Err(JsonError::DuplicateName)
        );
        // Same name once escaped, once not.
        assert_eq!(
            parse_object_strict(br#"{"alg":"RS256","\u0061lg":"none"}"#),
            Err(JsonError::DuplicateName)
        );
        assert!(parse_object_strict(br#"{"a":1,"b":{"a":1}}"#).is_ok());
    }

    #[test]
    fn lenient_parse_keeps_the_first_member_and_flags_it() {
        let v = parse_value(br#"{"a":1,"a":2}"#).unwrap();
        let o = v.as_object().unwrap();
        assert!(o.has_duplicates());
        assert_eq!(o.get("a"), Some(&Value::Number(Number::Unsigned(1))));
    }

    #[test]
    fn non_objects_and_garbage_are_refused() {
        assert_eq!(parse_object_strict(b"[1]"), Err(JsonError::NotAnObject));
        assert_eq!(parse_object_strict(b"\"s\""), Err(JsonError::NotAnObject));
        assert_eq!(parse_object_strict(b"{} x"), Err(JsonError::Syntax));
        assert_eq!(parse_object_strict(b"{"), Err(JsonError::Syntax));
        assert_eq!(
            parse_object_strict(b"\xEF\xBB\xBF{}"),
            Err(JsonError::Syntax)
        );
        assert_eq!(
            parse_object_strict(b"{\"a\":\"\xff\"}"),
            Err(JsonError::Syntax)
        );
        // A lone surrogate escape is not a Unicode scalar value.
        assert_eq!(
            parse_object_strict(br#"{"a":"\ud800"}"#),
            Err(JsonError::Syntax)
        );
        assert!(parse_object_strict(b" {} ").is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse_object_strict(deep.as_bytes()), Err(JsonError::Syntax));
    }

    #[test]
    fn nesting_is_bounded_at_max_nesting_levels() {
        // An object holding arrays and objects in turn, `levels` deep in all.
        let nested = |levels: usize| {
            let (mut open, mut close) = (String::from("{\"a\":"), String::from("}"));
            for level in 1..levels {
                let (o, c) = if level % 2 == 1 {
                    ("[", "]")
                } else {
                    ("{\"b\":", "}")
                };
                open.push_str(o);
                close.insert_str(0, c);
            }
            format!("{open}0{close}")
        };
        assert!(parse_object_strict(nested(1).as_bytes()).is_ok());
        assert!(parse_object_strict(nested(MAX_NESTING).as_bytes()).is_ok());
        assert_eq!(
            parse_object_strict(nested(MAX_NESTING + 1).as_bytes()),
            Err(JsonError::Syntax)
        );
        // An empty array is a level too: in place of the deepest scalar it
        // is one level too many.
        let deepest_empty = nested(MAX_NESTING).replace('0', "[]");
        assert_eq!(
            parse_object_strict(deepest_empty.as_bytes()),
            Err(JsonError::Syntax)
        );
        assert_eq!(parse_value(b"[]"), Ok(Value::Array(vec![])));
    }

    #[test]
    fn numbers_keep_their_kind() {
        let o = parse_object_strict(br#"{"u":5,"s":-5,"f":1.5,"big":1e400}"#);
        // 1e400 overflows f64: serde_json refuses it.
        assert_eq!(o, Err(JsonError::Syntax));
        let o = parse_object_strict(br#"{"u":5,"s":-5,"f":1.5,"e":1e3}"#).unwrap();
        assert_eq!(o.get("u"), Some(&Value::Number(Number::Unsigned(5))));
        assert_eq!(o.get("s"), Some(&Value::Number(Number::Signed(-5))));
        assert_eq!(o.get("f"), Some(&Value::Number(Number::Float(1.5))));
        assert_eq!(o.get("e"), Some(&Value::Number(Number::Float(1000.0))));
    }
}
