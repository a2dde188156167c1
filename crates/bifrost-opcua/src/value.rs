//! Variants as Bifrost values and back: what a read hands JavaScript, and the
//! Variant a written value becomes once the node's built-in type is known.

use bifrost_core::{Error, Result, TypedValue, Value};

use crate::encoding::{ExtensionBody, Variant, VariantArray};
use crate::secure_channel::EPOCH_1601;

/// Built-in type ids (Part 6, 5.1.2).
pub mod builtin {
    pub const BOOLEAN: u8 = 1;
    pub const SBYTE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const INT16: u8 = 4;
    pub const UINT16: u8 = 5;
    pub const INT32: u8 = 6;
    pub const UINT32: u8 = 7;
    pub const INT64: u8 = 8;
    pub const UINT64: u8 = 9;
    pub const FLOAT: u8 = 10;
    pub const DOUBLE: u8 = 11;
    pub const STRING: u8 = 12;
    pub const DATE_TIME: u8 = 13;
    pub const BYTE_STRING: u8 = 15;
}

/// A DateTime as an ISO 8601 UTC text with milliseconds.
fn date_time_text(ticks: i64) -> String {
    let ms = (ticks - EPOCH_1601).div_euclid(10_000);
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// A read Variant as a value: numbers as numbers (64-bit integers marked wide),
/// text as text, a DateTime as ISO 8601 text, arrays as arrays (a matrix flat,
/// row by row), an ExtensionObject as its type and bytes. An empty Variant is `None`.
pub fn to_value(variant: &Variant) -> Option<TypedValue> {
    let plain = |value| Some(TypedValue { value, wide: false });
    match variant {
        Variant::Empty => None,
        Variant::Boolean(b) => plain(Value::Bool(*b)),
        Variant::SByte(n) => plain(Value::Int(i64::from(*n))),
        Variant::Byte(n) => plain(Value::UInt(u64::from(*n))),
        Variant::Int16(n) => plain(Value::Int(i64::from(*n))),
        Variant::UInt16(n) => plain(Value::UInt(u64::from(*n))),
        Variant::Int32(n) => plain(Value::Int(i64::from(*n))),
        Variant::UInt32(n) | Variant::StatusCode(n) => plain(Value::UInt(u64::from(*n))),
        Variant::Int64(n) => Some(TypedValue { value: Value::Int(*n), wide: true }),
        Variant::UInt64(n) => Some(TypedValue { value: Value::UInt(*n), wide: true }),
        Variant::Float(f) => plain(Value::Float(f64::from(*f))),
        Variant::Double(f) => plain(Value::Float(*f)),
        Variant::String(s) | Variant::XmlElement(s) => plain(Value::String(s.clone().unwrap_or_default())),
        Variant::DateTime(ticks) => plain(Value::String(date_time_text(*ticks))),
        Variant::Guid(g) => plain(Value::String(g.to_string())),
        Variant::ByteString(bytes) => {
            plain(Value::Array(bytes.iter().flatten().map(|b| Value::UInt(u64::from(*b))).collect()))
        }
        Variant::NodeId(id) => plain(Value::String(id.to_string())),
        Variant::ExpandedNodeId(id) => plain(Value::String(id.to_string())),
        Variant::QualifiedName(q) => {
            plain(Value::String(format!("{}:{}", q.namespace, q.name.as_deref().unwrap_or(""))))
        }
        Variant::LocalizedText(t) => plain(Value::String(t.text.clone().unwrap_or_default())),
        Variant::ExtensionObject(object) => {
            let bytes = match &object.body {
                ExtensionBody::Binary(bytes) => {
                    Value::Array(bytes.iter().map(|b| Value::UInt(u64::from(*b))).collect())
                }
                ExtensionBody::Xml(xml) => Value::String(xml.clone().unwrap_or_default()),
                ExtensionBody::None => Value::Array(Vec::new()),
            };
            let member = |value| TypedValue { value, wide: false };
            plain(Value::Struct(vec![
                ("typeId".into(), member(Value::String(object.type_id.to_string()))),
                ("body".into(), member(bytes)),
            ]))
        }
        Variant::DataValue(inner) => inner.value.as_ref().and_then(to_value),
        Variant::Variant(inner) => to_value(inner),
        Variant::DiagnosticInfo(_) => plain(Value::String("DiagnosticInfo".into())),
        Variant::Array(array) => {
            let items: Vec<TypedValue> = array.values.iter().filter_map(to_value).collect();
            let wide = items.iter().any(|item| item.wide);
            Some(TypedValue { value: Value::Array(items.into_iter().map(|item| item.value).collect()), wide })
        }
    }
}

fn out_of_range(value: &dyn std::fmt::Display, type_name: &str) -> Error {
    Error::invalid_value(format!("{value} does not fit the node's type {type_name}"))
}

fn integer(value: &Value, type_name: &str, min: i128, max: i128) -> Result<i128> {
    let n = match value {
        Value::Bool(b) => i128::from(*b),
        Value::Int(n) => i128::from(*n),
        Value::UInt(n) => i128::from(*n),
        Value::Float(f) if f.fract() == 0.0 && f.is_finite() && f.abs() < 1.8e19 => *f as i128,
        Value::Float(f) => return Err(out_of_range(f, type_name)),
        other => return Err(Error::invalid_value(format!("{other:?} is not a number for a {type_name} node"))),
    };
    if n < min || n > max {
        return Err(out_of_range(&n, type_name));
    }
    Ok(n)
}

fn float(value: &Value, type_name: &str) -> Result<f64> {
    match value {
        Value::Float(f) => Ok(*f),
        Value::Int(n) => Ok(*n as f64),
        Value::UInt(n) => Ok(*n as f64),
        other => Err(Error::invalid_value(format!("{other:?} is not a number for a {type_name} node"))),
    }
}

/// The Variant of built-in type `type_id` that writes `value`; an array writes
/// an array of that type. A value that does not fit is `EINVAL`.
pub fn to_variant(value: &Value, type_id: u8) -> Result<Variant> {
    use builtin::*;
    if let Value::Array(items) = value {
        let values = items.iter().map(|item| to_variant(item, type_id)).collect::<Result<Vec<_>>>()?;
        return Ok(Variant::Array(Box::new(VariantArray { type_id, values, dimensions: None })));
    }
    let name = type_name(type_id);
    Ok(match type_id {
        BOOLEAN => Variant::Boolean(match value {
            Value::Bool(b) => *b,
            other => integer(other, name, 0, 1)? == 1,
        }),
        SBYTE => Variant::SByte(integer(value, name, i8::MIN.into(), i8::MAX.into())? as i8),
        BYTE => Variant::Byte(integer(value, name, 0, u8::MAX.into())? as u8),
        INT16 => Variant::Int16(integer(value, name, i16::MIN.into(), i16::MAX.into())? as i16),
        UINT16 => Variant::UInt16(integer(value, name, 0, u16::MAX.into())? as u16),
        INT32 => Variant::Int32(integer(value, name, i32::MIN.into(), i32::MAX.into())? as i32),
        UINT32 => Variant::UInt32(integer(value, name, 0, u32::MAX.into())? as u32),
        INT64 => Variant::Int64(integer(value, name, i64::MIN.into(), i64::MAX.into())? as i64),
        UINT64 => Variant::UInt64(integer(value, name, 0, u64::MAX.into())? as u64),
        FLOAT => {
            let f = float(value, name)?;
            if f.is_finite() && f.abs() > f64::from(f32::MAX) {
                return Err(out_of_range(&f, name));
            }
            Variant::Float(f as f32)
        }
        DOUBLE => Variant::Double(float(value, name)?),
        STRING => match value {
            Value::String(s) => Variant::String(Some(s.clone())),
            other => return Err(Error::invalid_value(format!("{other:?} is not text for a String node"))),
        },
        DATE_TIME => {
            let ms = float(value, name)?;
            Variant::DateTime(EPOCH_1601 + (ms * 10_000.0) as i64)
        }
        other => {
            return Err(Error::invalid_value(format!(
                "writing a node of built-in type {} is not supported",
                type_name(other)
            )))
        }
    })
}

/// A built-in type's name, for messages.
pub fn type_name(type_id: u8) -> &'static str {
    [
        "Null",
        "Boolean",
        "SByte",
        "Byte",
        "Int16",
        "UInt16",
        "Int32",
        "UInt32",
        "Int64",
        "UInt64",
        "Float",
        "Double",
        "String",
        "DateTime",
        "Guid",
        "ByteString",
        "XmlElement",
        "NodeId",
        "ExpandedNodeId",
        "StatusCode",
        "QualifiedName",
        "LocalizedText",
        "ExtensionObject",
        "DataValue",
        "Variant",
        "DiagnosticInfo",
    ]
    .get(usize::from(type_id))
    .copied()
    .unwrap_or("an unknown type")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_read_as_iso_text() {
        assert_eq!(date_time_text(EPOCH_1601), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T12:34:56.789Z is 1709210096789 ms after 1970.
        assert_eq!(date_time_text(EPOCH_1601 + 1_709_210_096_789 * 10_000), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn written_values_take_the_nodes_type_and_out_of_range_is_einval() {
        assert_eq!(to_variant(&Value::Float(7.0), builtin::INT16).unwrap(), Variant::Int16(7));
        assert_eq!(to_variant(&Value::Int(1), builtin::BOOLEAN).unwrap(), Variant::Boolean(true));
        assert_eq!(to_variant(&Value::Float(2.5), builtin::FLOAT).unwrap(), Variant::Float(2.5));
        assert!(to_variant(&Value::Float(70_000.0), builtin::INT16).unwrap_err().message.contains("does not fit"));
        assert!(to_variant(&Value::Float(1.5), builtin::INT32).is_err());
        assert!(to_variant(&Value::Float(-1.0), builtin::UINT32).is_err());
        assert!(to_variant(&Value::String("x".into()), builtin::DOUBLE).is_err());
        let array = to_variant(&Value::Array(vec![Value::Int(1), Value::Int(2)]), builtin::UINT16).unwrap();
        assert_eq!(
            array,
            Variant::Array(Box::new(VariantArray {
                type_id: builtin::UINT16,
                values: vec![Variant::UInt16(1), Variant::UInt16(2)],
                dimensions: None
            }))
        );
        let back = to_value(&array).unwrap();
        assert_eq!(back.value, Value::Array(vec![Value::UInt(1), Value::UInt(2)]));
        assert!(to_value(&Variant::Int64(-5)).unwrap().wide);
    }
}
