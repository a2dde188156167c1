//! Logix data and services: CIP elementary type codes, element decoding into
//! numbers and values, and the requests of Read Tag, Write Tag, their
//! fragmented forms and Read-Modify-Write Tag.

use bifrost_core::{DataType, Error, Result, Value};

use crate::cip::{self, service};
use crate::wire::{put_u16, put_u32, Reader};

/// The structure handle of the predefined Logix STRING (LEN: DINT, DATA: SINT[82]).
pub const LOGIX_STRING_HANDLE: u16 = 0x0FCE;
/// Bytes of one Logix STRING element: 4 + 82, padded to 88.
pub const LOGIX_STRING_SIZE: usize = 88;
const LOGIX_STRING_CHARS: usize = 82;
/// Type code of a structure; its handle follows it.
const STRUCT_CODE: u16 = 0x02A0;

/// The type of a tag's elements, as a Read Tag reply gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipType {
    Bool,
    Sint,
    Int,
    Dint,
    Lint,
    Usint,
    Uint,
    Udint,
    Ulint,
    Real,
    Lreal,
    /// 32 bits, as BOOL arrays travel.
    Dword,
    /// CIP STRING (0xD0): a 16-bit length, then the characters.
    CipString,
    /// SHORT_STRING (0xDA): an 8-bit length, then the characters.
    ShortString,
    /// A structure by its handle: the Logix STRING, or a user-defined type.
    Struct(u16),
}

impl CipType {
    pub fn from_code(code: u16, handle: Option<u16>) -> Option<CipType> {
        Some(match code {
            0xC1 => CipType::Bool,
            0xC2 => CipType::Sint,
            0xC3 => CipType::Int,
            0xC4 => CipType::Dint,
            0xC5 => CipType::Lint,
            0xC6 => CipType::Usint,
            0xC7 => CipType::Uint,
            0xC8 => CipType::Udint,
            0xC9 => CipType::Ulint,
            0xCA => CipType::Real,
            0xCB => CipType::Lreal,
            0xD3 => CipType::Dword,
            0xD0 => CipType::CipString,
            0xDA => CipType::ShortString,
            STRUCT_CODE => CipType::Struct(handle?),
            _ => return None,
        })
    }

    pub fn code(self) -> u16 {
        match self {
            CipType::Bool => 0xC1,
            CipType::Sint => 0xC2,
            CipType::Int => 0xC3,
            CipType::Dint => 0xC4,
            CipType::Lint => 0xC5,
            CipType::Usint => 0xC6,
            CipType::Uint => 0xC7,
            CipType::Udint => 0xC8,
            CipType::Ulint => 0xC9,
            CipType::Real => 0xCA,
            CipType::Lreal => 0xCB,
            CipType::Dword => 0xD3,
            CipType::CipString => 0xD0,
            CipType::ShortString => 0xDA,
            CipType::Struct(_) => STRUCT_CODE,
        }
    }

    /// The IEC 61131 name, as tags and errors spell types.
    pub fn name(self) -> String {
        match self {
            CipType::Dword => "DWORD".into(),
            CipType::CipString => "STRING".into(),
            CipType::ShortString => "SHORT_STRING".into(),
            CipType::Struct(LOGIX_STRING_HANDLE) => "STRING".into(),
            CipType::Struct(handle) => format!("structure 0x{handle:04x}"),
            numeric => numeric.data_type().map_or("?", DataType::name).into(),
        }
    }

    /// The numeric type of an elementary number (DWORD as UDINT); `None` for strings and structures.
    pub fn data_type(self) -> Option<DataType> {
        Some(match self {
            CipType::Bool => DataType::Bool,
            CipType::Sint => DataType::Sint,
            CipType::Int => DataType::Int,
            CipType::Dint => DataType::Dint,
            CipType::Lint => DataType::Lint,
            CipType::Usint => DataType::Usint,
            CipType::Uint => DataType::Uint,
            CipType::Udint | CipType::Dword => DataType::Udint,
            CipType::Ulint => DataType::Ulint,
            CipType::Real => DataType::Real,
            CipType::Lreal => DataType::Lreal,
            _ => return None,
        })
    }

    /// Bytes of one element, when fixed (numbers and the Logix STRING).
    pub fn element_size(self) -> Option<usize> {
        match self {
            CipType::Struct(LOGIX_STRING_HANDLE) => Some(LOGIX_STRING_SIZE),
            CipType::Dword => Some(4),
            other => other.data_type().map(DataType::size_bytes),
        }
    }

    /// Whether its integers need 64 bits (a `bigint` in JavaScript).
    pub fn is_wide(self) -> bool {
        matches!(self, CipType::Lint | CipType::Ulint)
    }

    /// Bytes of the type in a request or reply: the code, and a structure's handle.
    fn write(self, out: &mut Vec<u8>) {
        put_u16(out, self.code());
        if let CipType::Struct(handle) = self {
            put_u16(out, handle);
        }
    }
}

/// The typed data of a Read Tag (or Read Tag Fragmented) reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagData<'a> {
    pub ty: CipType,
    pub data: &'a [u8],
}

pub fn parse_read_reply(data: &[u8]) -> Result<TagData<'_>> {
    let mut r = Reader::new(data);
    let code = r.u16("the data type")?;
    let handle = if code == STRUCT_CODE { Some(r.u16("the structure handle")?) } else { None };
    let ty = CipType::from_code(code, handle)
        .ok_or_else(|| Error::proto(format!("the device answered with unknown data type 0x{code:04x}")))?;
    Ok(TagData { ty, data: r.rest() })
}

/// Little-endian bytes (1, 2, 4 or 8) as one number.
fn le(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// One numeric element as a number; strings and structures are NaN.
pub fn element_f64(ty: CipType, bytes: &[u8]) -> f64 {
    let raw = le(bytes);
    match ty {
        CipType::Bool => f64::from(u8::from(raw != 0)),
        CipType::Sint => f64::from(raw as u8 as i8),
        CipType::Int => f64::from(raw as u16 as i16),
        CipType::Dint => f64::from(raw as u32 as i32),
        CipType::Lint => raw as i64 as f64,
        CipType::Usint | CipType::Uint | CipType::Udint | CipType::Dword | CipType::Ulint => raw as f64,
        CipType::Real => f64::from(f32::from_bits(raw as u32)),
        CipType::Lreal => f64::from_bits(raw),
        _ => f64::NAN,
    }
}

/// `out.len()` elements from `data`; an error when `data` is shorter or the type is not numeric.
pub fn elements_f64(ty: CipType, data: &[u8], out: &mut [f64]) -> Result<()> {
    let size = numeric_size(ty)?;
    let needed = size * out.len();
    if data.len() < needed {
        return Err(Error::proto(format!(
            "{} elements of {} need {needed} bytes, the reply has {}",
            out.len(),
            ty.name(),
            data.len()
        )));
    }
    for (value, bytes) in out.iter_mut().zip(data.chunks_exact(size)) {
        *value = element_f64(ty, bytes);
    }
    Ok(())
}

fn numeric_size(ty: CipType) -> Result<usize> {
    match ty.data_type() {
        Some(_) => Ok(ty.element_size().unwrap_or(1)),
        None => Err(Error::invalid_value(format!("{} elements are not numbers; read them with readTags", ty.name()))),
    }
}

/// One element as a value; strings become text.
pub(crate) fn element_value(ty: CipType, bytes: &[u8]) -> Result<Value> {
    let raw = le(bytes);
    Ok(match ty {
        CipType::Bool => Value::Bool(raw != 0),
        CipType::Sint => Value::Int(i64::from(raw as u8 as i8)),
        CipType::Int => Value::Int(i64::from(raw as u16 as i16)),
        CipType::Dint => Value::Int(i64::from(raw as u32 as i32)),
        CipType::Lint => Value::Int(raw as i64),
        CipType::Usint | CipType::Uint | CipType::Udint | CipType::Dword | CipType::Ulint => Value::UInt(raw),
        CipType::Real => Value::Float(f64::from(f32::from_bits(raw as u32))),
        CipType::Lreal => Value::Float(f64::from_bits(raw)),
        CipType::Struct(LOGIX_STRING_HANDLE) => {
            let len = (le(&bytes[..4]) as u32 as i32).clamp(0, LOGIX_STRING_CHARS as i32) as usize;
            Value::String(String::from_utf8_lossy(&bytes[4..4 + len]).into_owned())
        }
        other => return Err(Error::invalid_value(format!("{} values are not decoded yet", other.name()))),
    })
}

/// `count` elements of a reply's data as values: one value, or an array when `array`.
pub fn decode_values(tag: &TagData<'_>, count: usize, array: bool) -> Result<Value> {
    let mut r = Reader::new(tag.data);
    let mut values = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let value = match tag.ty {
            CipType::CipString => {
                let len = r.u16("a STRING's length")?;
                Value::String(String::from_utf8_lossy(r.bytes(usize::from(len), "a STRING's characters")?).into_owned())
            }
            CipType::ShortString => {
                let len = r.u8("a SHORT_STRING's length")?;
                Value::String(
                    String::from_utf8_lossy(r.bytes(usize::from(len), "a SHORT_STRING's characters")?).into_owned(),
                )
            }
            ty => {
                let size = ty
                    .element_size()
                    .ok_or_else(|| Error::invalid_value(format!("{} values are not decoded yet", ty.name())))?;
                element_value(ty, r.bytes(size, "an element")?)?
            }
        };
        values.push(value);
    }
    Ok(match (array, values.len()) {
        (false, 1) => values.pop().unwrap_or(Value::Int(0)),
        _ => Value::Array(values),
    })
}

/// A value's elements, in order: an array's, or the value alone.
fn elements_of(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    }
}

/// Encodes `value` as elements of `ty`; returns how many. Out-of-range numbers are `EINVAL`.
pub fn encode_values(ty: CipType, value: &Value, out: &mut Vec<u8>) -> Result<u16> {
    let elements = elements_of(value);
    let count =
        u16::try_from(elements.len()).map_err(|_| Error::invalid_value("more than 65535 elements in one write"))?;
    for element in elements {
        encode_element(ty, element, out)?;
    }
    Ok(count)
}

fn encode_element(ty: CipType, value: &Value, out: &mut Vec<u8>) -> Result<()> {
    let mismatch = || Error::invalid_value(format!("{value:?} cannot be written to a {} tag", ty.name()));
    if let Value::String(text) = value {
        let bytes = text.as_bytes();
        return match ty {
            CipType::CipString => {
                let len = u16::try_from(bytes.len())
                    .map_err(|_| Error::invalid_value("a STRING of more than 65535 bytes"))?;
                put_u16(out, len);
                out.extend_from_slice(bytes);
                Ok(())
            }
            CipType::ShortString => {
                let len = u8::try_from(bytes.len())
                    .map_err(|_| Error::invalid_value("a SHORT_STRING of more than 255 bytes"))?;
                out.push(len);
                out.extend_from_slice(bytes);
                Ok(())
            }
            CipType::Struct(LOGIX_STRING_HANDLE) => {
                if bytes.len() > LOGIX_STRING_CHARS {
                    return Err(Error::invalid_value(format!(
                        "a Logix STRING holds at most {LOGIX_STRING_CHARS} characters, not {}",
                        bytes.len()
                    )));
                }
                put_u32(out, bytes.len() as u32);
                out.extend_from_slice(bytes);
                out.resize(out.len() + LOGIX_STRING_SIZE - 4 - bytes.len(), 0);
                Ok(())
            }
            _ => Err(mismatch()),
        };
    }
    let Some(data_type) = ty.data_type() else { return Err(mismatch()) };
    let size = ty.element_size().unwrap_or(1);
    let bits: u64 = match (data_type, value) {
        (DataType::Bool, Value::Bool(b)) => u64::from(*b) * 0xFF,
        (DataType::Bool, Value::Int(0) | Value::UInt(0)) => 0,
        (DataType::Bool, Value::Int(1) | Value::UInt(1)) => 0xFF,
        (DataType::Real, _) => u64::from((number(value).ok_or_else(mismatch)? as f32).to_bits()),
        (DataType::Lreal, _) => number(value).ok_or_else(mismatch)?.to_bits(),
        (DataType::Bool, _) => return Err(mismatch()),
        _ => integer_bits(ty, data_type, value)?,
    };
    out.extend_from_slice(&bits.to_le_bytes()[..size]);
    Ok(())
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Float(f) => Some(*f),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// An integer's two's-complement bits, checked against the type's range.
fn integer_bits(ty: CipType, data_type: DataType, value: &Value) -> Result<u64> {
    let (min, max): (i128, i128) = match data_type {
        DataType::Sint => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int => (i16::MIN.into(), i16::MAX.into()),
        DataType::Dint => (i32::MIN.into(), i32::MAX.into()),
        DataType::Lint => (i64::MIN.into(), i64::MAX.into()),
        DataType::Usint => (0, u8::MAX.into()),
        DataType::Uint => (0, u16::MAX.into()),
        DataType::Udint => (0, u32::MAX.into()),
        _ => (0, u64::MAX.into()),
    };
    let wide: i128 = match value {
        Value::Int(i) => (*i).into(),
        Value::UInt(u) => (*u).into(),
        Value::Float(f) if f.fract() == 0.0 && f.is_finite() && f.abs() < 1.9e19 => *f as i128,
        Value::Bool(b) => i128::from(*b),
        _ => return Err(Error::invalid_value(format!("{value:?} is not a whole number for a {} tag", ty.name()))),
    };
    if wide < min || wide > max {
        return Err(Error::invalid_value(format!("{wide} is out of range for {} ({min} to {max})", ty.name())));
    }
    Ok(wide as u64)
}

/// Read Tag: `count` elements from `path`.
pub fn read_tag(out: &mut Vec<u8>, path: &[u8], count: u16) -> Result<()> {
    cip::request(out, service::READ_TAG, path, |out| put_u16(out, count))
}

/// Read Tag Fragmented: `count` elements in all, this reply from byte `offset` on.
pub fn read_tag_fragmented(out: &mut Vec<u8>, path: &[u8], count: u16, offset: u32) -> Result<()> {
    cip::request(out, service::READ_TAG_FRAGMENTED, path, |out| {
        put_u16(out, count);
        put_u32(out, offset);
    })
}

/// Write Tag: `count` elements of `ty`, encoded in `data`.
pub fn write_tag(out: &mut Vec<u8>, path: &[u8], ty: CipType, count: u16, data: &[u8]) -> Result<()> {
    cip::request(out, service::WRITE_TAG, path, |out| {
        ty.write(out);
        put_u16(out, count);
        out.extend_from_slice(data);
    })
}

/// Write Tag Fragmented: `count` elements in all; `data` goes at byte `offset`.
pub fn write_tag_fragmented(
    out: &mut Vec<u8>,
    path: &[u8],
    ty: CipType,
    count: u16,
    offset: u32,
    data: &[u8],
) -> Result<()> {
    cip::request(out, service::WRITE_TAG_FRAGMENTED, path, |out| {
        ty.write(out);
        put_u16(out, count);
        put_u32(out, offset);
        out.extend_from_slice(data);
    })
}

/// Read-Modify-Write Tag setting or clearing one bit of an integer of `size`
/// bytes, atomically in the controller: other bits are never written.
pub fn write_bit(out: &mut Vec<u8>, path: &[u8], size: usize, bit: u8, on: bool) -> Result<()> {
    if usize::from(bit) >= size * 8 {
        return Err(Error::address(format!("bit {bit} is past the {}-bit integer", size * 8)));
    }
    let mask = 1u64 << bit;
    let (or_mask, and_mask) = if on { (mask, u64::MAX) } else { (0, !mask) };
    read_modify_write(out, path, size, or_mask, and_mask)
}

/// Read-Modify-Write Tag on an integer of `size` bytes: its bits become `(bits | or) & and`.
pub fn read_modify_write(out: &mut Vec<u8>, path: &[u8], size: usize, or_mask: u64, and_mask: u64) -> Result<()> {
    cip::request(out, service::READ_MODIFY_WRITE, path, |out| {
        put_u16(out, size as u16);
        out.extend_from_slice(&or_mask.to_le_bytes()[..size]);
        out.extend_from_slice(&and_mask.to_le_bytes()[..size]);
    })
}

/// Write Tag reply data and a read-only reply carry nothing; a request's data parsed by a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest<'a> {
    pub ty: CipType,
    pub count: u16,
    /// Byte offset of a fragmented write; 0 for a whole one.
    pub offset: u32,
    pub data: &'a [u8],
}

/// The data of a Write Tag (or, with `fragmented`, Write Tag Fragmented) request.
pub fn parse_write(data: &[u8], fragmented: bool) -> Result<WriteRequest<'_>> {
    let mut r = Reader::new(data);
    let code = r.u16("the data type")?;
    let handle = if code == STRUCT_CODE { Some(r.u16("the structure handle")?) } else { None };
    let ty = CipType::from_code(code, handle).ok_or_else(|| Error::proto(format!("unknown data type 0x{code:04x}")))?;
    let count = r.u16("the element count")?;
    let offset = if fragmented { r.u32("the byte offset")? } else { 0 };
    Ok(WriteRequest { ty, count, offset, data: r.rest() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_replies_carry_their_type_and_structures_their_handle() {
        let reply = [0xC4, 0x00, 0xF9, 0xFF, 0xFF, 0xFF];
        let tag = parse_read_reply(&reply).unwrap();
        assert_eq!(tag.ty, CipType::Dint);
        assert_eq!(decode_values(&tag, 1, false).unwrap(), Value::Int(-7));
        let string = [0xA0, 0x02, 0xCE, 0x0F];
        assert_eq!(parse_read_reply(&string).unwrap().ty, CipType::Struct(LOGIX_STRING_HANDLE));
        assert!(parse_read_reply(&[0xA0, 0x02]).is_err(), "a structure without its handle");
        assert!(parse_read_reply(&[0x99, 0x00]).unwrap_err().message.contains("0x0099"));
    }

    #[test]
    fn numbers_decode_in_bulk_and_one_by_one() {
        let mut out = [0.0; 3];
        elements_f64(CipType::Int, &[0x01, 0x00, 0xFF, 0xFF, 0x00, 0x80], &mut out).unwrap();
        assert_eq!(out, [1.0, -1.0, -32768.0]);
        let mut real = [0.0; 1];
        elements_f64(CipType::Real, &21.5f32.to_le_bytes(), &mut real).unwrap();
        assert_eq!(real, [21.5]);
        assert!(elements_f64(CipType::Dint, &[1, 2, 3], &mut real).is_err(), "too short");
        assert!(elements_f64(CipType::CipString, &[0; 8], &mut real).is_err(), "not numbers");
        assert_eq!(element_f64(CipType::Ulint, &u64::MAX.to_le_bytes()), u64::MAX as f64);
        assert_eq!(element_f64(CipType::Bool, &[0xFF]), 1.0);
    }

    #[test]
    fn values_round_trip_through_every_elementary_type() {
        let cases = [
            (CipType::Bool, Value::Bool(true)),
            (CipType::Sint, Value::Int(-128)),
            (CipType::Int, Value::Int(-1234)),
            (CipType::Dint, Value::Int(i64::from(i32::MIN))),
            (CipType::Lint, Value::Int(i64::MIN)),
            (CipType::Usint, Value::UInt(255)),
            (CipType::Uint, Value::UInt(65535)),
            (CipType::Udint, Value::UInt(u64::from(u32::MAX))),
            (CipType::Ulint, Value::UInt(u64::MAX)),
            (CipType::Real, Value::Float(21.5)),
            (CipType::Lreal, Value::Float(-1.0e300)),
            (CipType::CipString, Value::String("odd".into())),
            (CipType::ShortString, Value::String("short".into())),
            (CipType::Struct(LOGIX_STRING_HANDLE), Value::String("Recipe A".into())),
        ];
        for (ty, value) in cases {
            let mut data = Vec::new();
            assert_eq!(encode_values(ty, &value, &mut data).unwrap(), 1);
            let tag = TagData { ty, data: &data };
            assert_eq!(decode_values(&tag, 1, false).unwrap(), value, "{ty:?}");
        }
        let array = Value::Array(vec![Value::Int(1), Value::Int(-2)]);
        let mut data = Vec::new();
        assert_eq!(encode_values(CipType::Int, &array, &mut data).unwrap(), 2);
        assert_eq!(decode_values(&TagData { ty: CipType::Int, data: &data }, 2, true).unwrap(), array);
        assert_eq!(
            decode_values(&TagData { ty: CipType::Int, data: &data[..2] }, 1, true).unwrap(),
            Value::Array(vec![Value::Int(1)]),
            "a range of one is still an array"
        );
    }

    #[test]
    fn out_of_range_and_mismatched_writes_are_einval() {
        let mut out = Vec::new();
        for (ty, value) in [
            (CipType::Sint, Value::Int(128)),
            (CipType::Uint, Value::Int(-1)),
            (CipType::Dint, Value::Float(1.5)),
            (CipType::Dint, Value::String("x".into())),
            (CipType::Bool, Value::Int(2)),
            (CipType::Struct(LOGIX_STRING_HANDLE), Value::String("x".repeat(83))),
            (CipType::Struct(0x1234), Value::Int(1)),
        ] {
            let e = encode_values(ty, &value, &mut out).unwrap_err();
            assert_eq!(e.code, bifrost_core::ErrorCode::InvalidValue, "{ty:?} {value:?}");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Frames captured between a client and a real ControlLogix 1756-L61 (the
    /// capture cpppo's repository keeps): our requests match byte for byte, and
    /// the controller's replies decode.
    #[test]
    fn a_real_controllers_fragmented_transfers() {
        let scada = crate::tag::LogixTag::parse("SCADA").unwrap();
        let mut out = Vec::new();
        read_tag_fragmented(&mut out, &scada.path, 20, 2).unwrap();
        assert_eq!(out, hex("52 04 91 05 53 43 41 44 41 00 14 00 02 00 00 00"));
        let reply = hex(
            "d2 00 00 00 c3 00 4c 10 08 00 03 00 02 00 02 00 02 00 0e 00 00 00 00 00 e6 42 07 00 c8 40 c8 40 00 00 e4 00 00 00 64 00 b2 02 c8 40",
        );
        let response = crate::cip::Response::parse(&reply).unwrap();
        assert_eq!((response.service, response.status), (service::READ_TAG_FRAGMENTED, 0));
        let tag = parse_read_reply(response.data).unwrap();
        let mut values = [0.0; 19];
        elements_f64(tag.ty, tag.data, &mut values).unwrap();
        assert_eq!(&values[..4], &[4172.0, 8.0, 3.0, 2.0]);
        assert_eq!(values[18], 16584.0);

        let element = crate::tag::LogixTag::parse("SCADA[12]").unwrap();
        out.clear();
        write_tag_fragmented(&mut out, &element.path, CipType::Int, 1, 0, &[0xc9, 0x40]).unwrap();
        assert_eq!(out, hex("53 05 91 05 53 43 41 44 41 00 28 0c c3 00 01 00 00 00 00 00 c9 40"));
        assert_eq!(crate::cip::Response::parse(&hex("d3 00 00 00")).unwrap().ok("write").unwrap(), &[] as &[u8]);
    }

    #[test]
    fn requests_are_byte_exact() {
        let path = [0x91, 0x05, b'S', b'C', b'A', b'D', b'A', 0x00, 0x28, 0x05];
        let mut out = Vec::new();
        read_tag(&mut out, &path, 1).unwrap();
        assert_eq!(out, [&[0x4C, 0x05][..], &path, &[0x01, 0x00]].concat());
        out.clear();
        write_tag(&mut out, &path, CipType::Int, 1, &1234i16.to_le_bytes()).unwrap();
        assert_eq!(out, [&[0x4D, 0x05][..], &path, &[0xC3, 0x00, 0x01, 0x00, 0xD2, 0x04]].concat());
        out.clear();
        read_tag_fragmented(&mut out, &path, 500, 488).unwrap();
        assert_eq!(&out[12..], &[0xF4, 0x01, 0xE8, 0x01, 0x00, 0x00]);
        out.clear();
        write_bit(&mut out, &path, 4, 5, true).unwrap();
        assert_eq!(&out[12..], &[0x04, 0x00, 0x20, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        out.clear();
        write_bit(&mut out, &path, 2, 1, false).unwrap();
        assert_eq!(&out[12..], &[0x02, 0x00, 0, 0, 0xFD, 0xFF]);
        assert!(write_bit(&mut out, &path, 2, 16, true).is_err());
        out.clear();
        write_tag_fragmented(&mut out, &path, CipType::Struct(LOGIX_STRING_HANDLE), 1, 8, &[1, 2]).unwrap();
        let parsed = parse_write(&out[12..], true).unwrap();
        assert_eq!(
            parsed,
            WriteRequest { ty: CipType::Struct(LOGIX_STRING_HANDLE), count: 1, offset: 8, data: &[1, 2] }
        );
    }
}
