//! The OPC UA binary encoding of the built-in types (Part 6, 5.2): numbers
//! little-endian, strings and arrays with an Int32 length (-1: null), and the
//! composite types: QualifiedName, LocalizedText, ExtensionObject (kept as
//! typed bytes), DataValue, Variant (scalars, arrays and matrices) and
//! DiagnosticInfo. Decoding reads a borrowed buffer; malformed input is
//! `EPROTO`, never a panic or an allocation larger than the input.

use bifrost_core::{Error, Result};

use crate::node_id::{ExpandedNodeId, Guid, NodeId};

pub use bifrost_core::wire::{put_u32, Reader};

/// OPC UA's length-prefixed fields, read off the shared little-endian reader.
pub trait ReadLengths<'a> {
    /// An Int32 length: `None` for -1 (null); every element takes at least
    /// `least` bytes, so a length the rest cannot hold is refused before anything is allocated.
    fn length(&mut self, least: usize, what: &str) -> Result<Option<usize>>;
    /// A ByteString: `None` when null.
    fn byte_string(&mut self, what: &str) -> Result<Option<&'a [u8]>>;
    /// A String (UTF-8): `None` when null.
    fn string(&mut self, what: &str) -> Result<Option<&'a str>>;
}

impl<'a> ReadLengths<'a> for Reader<'a> {
    fn length(&mut self, least: usize, what: &str) -> Result<Option<usize>> {
        match self.i32(what)? {
            -1 => Ok(None),
            n if n < 0 => Err(Error::proto(format!("{what}: a negative length {n}"))),
            n if (n as usize).saturating_mul(least) > self.remaining() => {
                Err(Error::proto(format!("{what}: a length of {n} where {} bytes are left", self.remaining())))
            }
            n => Ok(Some(n as usize)),
        }
    }

    fn byte_string(&mut self, what: &str) -> Result<Option<&'a [u8]>> {
        match self.length(1, what)? {
            Some(n) => Ok(Some(self.bytes(n, what)?)),
            None => Ok(None),
        }
    }

    fn string(&mut self, what: &str) -> Result<Option<&'a str>> {
        match self.byte_string(what)? {
            Some(bytes) => {
                std::str::from_utf8(bytes).map(Some).map_err(|_| Error::proto(format!("{what} is not UTF-8")))
            }
            None => Ok(None),
        }
    }
}

/// A type that writes itself in the binary encoding.
pub trait Encode {
    fn encode(&self, out: &mut Vec<u8>);
}

/// A type that reads itself from the binary encoding, borrowing what it can.
pub trait Decode<'a>: Sized {
    fn decode(r: &mut Reader<'a>) -> Result<Self>;
}

/// A String: `None` is the null string (length -1).
impl Encode for Option<&str> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.map(str::as_bytes).encode(out);
    }
}

/// A ByteString: `None` is the null one (length -1).
impl Encode for Option<&[u8]> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Some(bytes) => {
                out.extend_from_slice(&(bytes.len() as i32).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            None => out.extend_from_slice(&(-1i32).to_le_bytes()),
        }
    }
}

fn owned(text: Option<&str>) -> Option<String> {
    text.map(str::to_string)
}

/// A name qualified by its namespace index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QualifiedName {
    pub namespace: u16,
    pub name: Option<String>,
}

impl Encode for QualifiedName {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.namespace.to_le_bytes());
        self.name.as_deref().encode(out);
    }
}

impl Decode<'_> for QualifiedName {
    fn decode(r: &mut Reader<'_>) -> Result<QualifiedName> {
        Ok(QualifiedName { namespace: r.u16("a QualifiedName")?, name: owned(r.string("a QualifiedName")?) })
    }
}

/// Text in a locale; either may be absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalizedText {
    pub locale: Option<String>,
    pub text: Option<String>,
}

impl Encode for LocalizedText {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.locale.is_some()) | u8::from(self.text.is_some()) << 1);
        if let Some(locale) = &self.locale {
            Some(locale.as_str()).encode(out);
        }
        if let Some(text) = &self.text {
            Some(text.as_str()).encode(out);
        }
    }
}

impl Decode<'_> for LocalizedText {
    fn decode(r: &mut Reader<'_>) -> Result<LocalizedText> {
        let mask = r.u8("a LocalizedText's mask")?;
        let locale = if mask & 1 != 0 { owned(r.string("a locale")?) } else { None };
        let text = if mask & 2 != 0 { owned(r.string("a LocalizedText")?) } else { None };
        Ok(LocalizedText { locale, text })
    }
}

/// A structure by its encoding's NodeId, its body kept as the bytes it came as
/// until a decoder for that type takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtensionObject {
    pub type_id: NodeId,
    pub body: ExtensionBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExtensionBody {
    None,
    Binary(Vec<u8>),
    Xml(Option<String>),
}

impl Encode for ExtensionObject {
    fn encode(&self, out: &mut Vec<u8>) {
        self.type_id.encode(out);
        match &self.body {
            ExtensionBody::None => out.push(0),
            ExtensionBody::Binary(bytes) => {
                out.push(1);
                Some(bytes.as_slice()).encode(out);
            }
            ExtensionBody::Xml(xml) => {
                out.push(2);
                xml.as_deref().encode(out);
            }
        }
    }
}

impl Decode<'_> for ExtensionObject {
    fn decode(r: &mut Reader<'_>) -> Result<ExtensionObject> {
        let type_id = NodeId::decode(r)?;
        let body = match r.u8("an ExtensionObject's encoding")? {
            0 => ExtensionBody::None,
            1 => ExtensionBody::Binary(r.byte_string("an ExtensionObject's body")?.unwrap_or_default().to_vec()),
            2 => ExtensionBody::Xml(owned(r.string("an ExtensionObject's XML")?)),
            other => return Err(Error::proto(format!("unknown ExtensionObject encoding {other}"))),
        };
        Ok(ExtensionObject { type_id, body })
    }
}

/// A value with its status and timestamps (DateTime: 100 ns ticks since 1601).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataValue {
    pub value: Option<Variant>,
    pub status: Option<u32>,
    pub source_timestamp: Option<i64>,
    pub server_timestamp: Option<i64>,
    pub source_picoseconds: Option<u16>,
    pub server_picoseconds: Option<u16>,
}

impl Encode for DataValue {
    fn encode(&self, out: &mut Vec<u8>) {
        let mask = u8::from(self.value.is_some())
            | u8::from(self.status.is_some()) << 1
            | u8::from(self.source_timestamp.is_some()) << 2
            | u8::from(self.server_timestamp.is_some()) << 3
            | u8::from(self.source_picoseconds.is_some()) << 4
            | u8::from(self.server_picoseconds.is_some()) << 5;
        out.push(mask);
        if let Some(value) = &self.value {
            value.encode(out);
        }
        if let Some(status) = self.status {
            out.extend_from_slice(&status.to_le_bytes());
        }
        if let Some(at) = self.source_timestamp {
            out.extend_from_slice(&at.to_le_bytes());
        }
        if let Some(ps) = self.source_picoseconds {
            out.extend_from_slice(&ps.to_le_bytes());
        }
        if let Some(at) = self.server_timestamp {
            out.extend_from_slice(&at.to_le_bytes());
        }
        if let Some(ps) = self.server_picoseconds {
            out.extend_from_slice(&ps.to_le_bytes());
        }
    }
}

impl Decode<'_> for DataValue {
    fn decode(r: &mut Reader<'_>) -> Result<DataValue> {
        let mask = r.u8("a DataValue's mask")?;
        let has = |bit: u8| mask & (1 << bit) != 0;
        let mut value = DataValue::default();
        if has(0) {
            value.value = Some(Variant::decode(r)?);
        }
        if has(1) {
            value.status = Some(r.u32("a DataValue's status")?);
        }
        if has(2) {
            value.source_timestamp = Some(r.u64("a source timestamp")? as i64);
        }
        if has(4) {
            value.source_picoseconds = Some(r.u16("source picoseconds")?);
        }
        if has(3) {
            value.server_timestamp = Some(r.u64("a server timestamp")? as i64);
        }
        if has(5) {
            value.server_picoseconds = Some(r.u16("server picoseconds")?);
        }
        Ok(value)
    }
}

/// Diagnostics of a status: indices into the response's string table, text, and an inner one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiagnosticInfo {
    pub symbolic_id: Option<i32>,
    pub namespace_uri: Option<i32>,
    pub locale: Option<i32>,
    pub localized_text: Option<i32>,
    pub additional_info: Option<String>,
    pub inner_status: Option<u32>,
    pub inner: Option<Box<DiagnosticInfo>>,
}

/// Inner diagnostics deeper than this are refused: a message could otherwise nest without end.
const MAX_DEPTH: usize = 32;

impl Encode for DiagnosticInfo {
    fn encode(&self, out: &mut Vec<u8>) {
        // Mask bits: 0x04 is the localized text, 0x08 the locale; the fields follow in
        // the order symbolic id, namespace, locale, localized text (Part 6, Table 24).
        let mask = u8::from(self.symbolic_id.is_some())
            | u8::from(self.namespace_uri.is_some()) << 1
            | u8::from(self.localized_text.is_some()) << 2
            | u8::from(self.locale.is_some()) << 3
            | u8::from(self.additional_info.is_some()) << 4
            | u8::from(self.inner_status.is_some()) << 5
            | u8::from(self.inner.is_some()) << 6;
        out.push(mask);
        for index in [self.symbolic_id, self.namespace_uri, self.locale, self.localized_text].into_iter().flatten() {
            out.extend_from_slice(&index.to_le_bytes());
        }
        if let Some(info) = &self.additional_info {
            Some(info.as_str()).encode(out);
        }
        if let Some(status) = self.inner_status {
            out.extend_from_slice(&status.to_le_bytes());
        }
        if let Some(inner) = &self.inner {
            inner.encode(out);
        }
    }
}

impl DiagnosticInfo {
    fn decode_at(r: &mut Reader<'_>, depth: usize) -> Result<DiagnosticInfo> {
        if depth > MAX_DEPTH {
            return Err(Error::proto(format!("DiagnosticInfo nested more than {MAX_DEPTH} deep")));
        }
        let mask = r.u8("a DiagnosticInfo's mask")?;
        let has = |bit: u8| mask & (1 << bit) != 0;
        let index =
            |bit: u8, r: &mut Reader<'_>| if has(bit) { r.i32("a DiagnosticInfo index").map(Some) } else { Ok(None) };
        let symbolic_id = index(0, r)?;
        let namespace_uri = index(1, r)?;
        let locale = index(3, r)?;
        let localized_text = index(2, r)?;
        let additional_info = if has(4) { owned(r.string("additional info")?) } else { None };
        let inner_status = if has(5) { Some(r.u32("an inner status")?) } else { None };
        let inner = if has(6) { Some(Box::new(DiagnosticInfo::decode_at(r, depth + 1)?)) } else { None };
        Ok(DiagnosticInfo { symbolic_id, namespace_uri, locale, localized_text, additional_info, inner_status, inner })
    }
}

impl Decode<'_> for DiagnosticInfo {
    fn decode(r: &mut Reader<'_>) -> Result<DiagnosticInfo> {
        DiagnosticInfo::decode_at(r, 0)
    }
}

/// Any value: one of the 25 built-in types, an array of one of them, or a
/// matrix (an array with its dimensions).
#[derive(Debug, Clone, PartialEq)]
pub enum Variant {
    Empty,
    Boolean(bool),
    SByte(i8),
    Byte(u8),
    Int16(i16),
    UInt16(u16),
    Int32(i32),
    UInt32(u32),
    Int64(i64),
    UInt64(u64),
    Float(f32),
    Double(f64),
    String(Option<String>),
    /// 100 ns ticks since 1601-01-01 UTC.
    DateTime(i64),
    Guid(Guid),
    ByteString(Option<Vec<u8>>),
    XmlElement(Option<String>),
    NodeId(Box<NodeId>),
    ExpandedNodeId(Box<ExpandedNodeId>),
    StatusCode(u32),
    QualifiedName(Box<QualifiedName>),
    LocalizedText(Box<LocalizedText>),
    ExtensionObject(Box<ExtensionObject>),
    DataValue(Box<DataValue>),
    Variant(Box<Variant>),
    DiagnosticInfo(Box<DiagnosticInfo>),
    /// Elements all of one built-in type (its id, 1 to 25), with a matrix's dimensions.
    Array(Box<VariantArray>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariantArray {
    pub type_id: u8,
    pub values: Vec<Variant>,
    pub dimensions: Option<Vec<i32>>,
}

/// Variant encoding byte bits: dimensions follow the values; the values are an array.
const DIMENSIONS: u8 = 0x40;
const ARRAY: u8 = 0x80;

impl Variant {
    /// The built-in type's id (0 for Empty); an array's is its elements'.
    pub fn type_id(&self) -> u8 {
        match self {
            Variant::Empty => 0,
            Variant::Boolean(_) => 1,
            Variant::SByte(_) => 2,
            Variant::Byte(_) => 3,
            Variant::Int16(_) => 4,
            Variant::UInt16(_) => 5,
            Variant::Int32(_) => 6,
            Variant::UInt32(_) => 7,
            Variant::Int64(_) => 8,
            Variant::UInt64(_) => 9,
            Variant::Float(_) => 10,
            Variant::Double(_) => 11,
            Variant::String(_) => 12,
            Variant::DateTime(_) => 13,
            Variant::Guid(_) => 14,
            Variant::ByteString(_) => 15,
            Variant::XmlElement(_) => 16,
            Variant::NodeId(_) => 17,
            Variant::ExpandedNodeId(_) => 18,
            Variant::StatusCode(_) => 19,
            Variant::QualifiedName(_) => 20,
            Variant::LocalizedText(_) => 21,
            Variant::ExtensionObject(_) => 22,
            Variant::DataValue(_) => 23,
            Variant::Variant(_) => 24,
            Variant::DiagnosticInfo(_) => 25,
            Variant::Array(array) => array.type_id,
        }
    }

    /// The value alone, without the encoding byte.
    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Variant::Empty | Variant::Array(_) => {}
            Variant::Boolean(b) => out.push(u8::from(*b)),
            Variant::SByte(v) => out.extend_from_slice(&v.to_le_bytes()),
            Variant::Byte(v) => out.push(*v),
            Variant::Int16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Variant::UInt16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Variant::Int32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Variant::UInt32(v) | Variant::StatusCode(v) => out.extend_from_slice(&v.to_le_bytes()),
            Variant::Int64(v) | Variant::DateTime(v) => out.extend_from_slice(&v.to_le_bytes()),
            Variant::UInt64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Variant::Float(v) => out.extend_from_slice(&v.to_le_bytes()),
            Variant::Double(v) => out.extend_from_slice(&v.to_le_bytes()),
            Variant::String(s) | Variant::XmlElement(s) => s.as_deref().encode(out),
            Variant::Guid(g) => g.encode(out),
            Variant::ByteString(b) => b.as_deref().encode(out),
            Variant::NodeId(id) => id.encode(out),
            Variant::ExpandedNodeId(id) => id.encode(out),
            Variant::QualifiedName(name) => name.encode(out),
            Variant::LocalizedText(text) => text.encode(out),
            Variant::ExtensionObject(object) => object.encode(out),
            Variant::DataValue(value) => value.encode(out),
            Variant::Variant(inner) => inner.encode(out),
            Variant::DiagnosticInfo(info) => info.encode(out),
        }
    }

    /// One value of built-in type `type_id`, without an encoding byte (an array's element).
    fn decode_body(type_id: u8, r: &mut Reader<'_>, depth: usize) -> Result<Variant> {
        Ok(match type_id {
            0 => Variant::Empty,
            1 => Variant::Boolean(r.u8("a Boolean")? != 0),
            2 => Variant::SByte(r.u8("an SByte")? as i8),
            3 => Variant::Byte(r.u8("a Byte")?),
            4 => Variant::Int16(r.u16("an Int16")? as i16),
            5 => Variant::UInt16(r.u16("a UInt16")?),
            6 => Variant::Int32(r.i32("an Int32")?),
            7 => Variant::UInt32(r.u32("a UInt32")?),
            8 => Variant::Int64(r.u64("an Int64")? as i64),
            9 => Variant::UInt64(r.u64("a UInt64")?),
            10 => Variant::Float(f32::from_bits(r.u32("a Float")?)),
            11 => Variant::Double(f64::from_bits(r.u64("a Double")?)),
            12 => Variant::String(owned(r.string("a String")?)),
            13 => Variant::DateTime(r.u64("a DateTime")? as i64),
            14 => Variant::Guid(Guid::decode(r)?),
            15 => Variant::ByteString(r.byte_string("a ByteString")?.map(<[u8]>::to_vec)),
            16 => Variant::XmlElement(owned(r.string("an XmlElement")?)),
            17 => Variant::NodeId(Box::new(NodeId::decode(r)?)),
            18 => Variant::ExpandedNodeId(Box::new(ExpandedNodeId::decode(r)?)),
            19 => Variant::StatusCode(r.u32("a StatusCode")?),
            20 => Variant::QualifiedName(Box::new(QualifiedName::decode(r)?)),
            21 => Variant::LocalizedText(Box::new(LocalizedText::decode(r)?)),
            22 => Variant::ExtensionObject(Box::new(ExtensionObject::decode(r)?)),
            23 => Variant::DataValue(Box::new(DataValue::decode(r)?)),
            24 => Variant::Variant(Box::new(Variant::decode_at(r, depth + 1)?)),
            25 => Variant::DiagnosticInfo(Box::new(DiagnosticInfo::decode(r)?)),
            other => return Err(Error::proto(format!("unknown built-in type {other} in a Variant"))),
        })
    }

    fn decode_at(r: &mut Reader<'_>, depth: usize) -> Result<Variant> {
        if depth > MAX_DEPTH {
            return Err(Error::proto(format!("Variants nested more than {MAX_DEPTH} deep")));
        }
        let mask = r.u8("a Variant's encoding")?;
        let type_id = mask & 0x3F;
        if mask & ARRAY == 0 {
            if mask & DIMENSIONS != 0 {
                return Err(Error::proto("a scalar Variant with array dimensions"));
            }
            return Variant::decode_body(type_id, r, depth);
        }
        if type_id == 0 {
            return Err(Error::proto("an array of Empty in a Variant"));
        }
        let count = r.length(1, "a Variant's array")?.unwrap_or(0);
        let values = (0..count).map(|_| Variant::decode_body(type_id, r, depth)).collect::<Result<Vec<_>>>()?;
        let dimensions = match mask & DIMENSIONS {
            0 => None,
            _ => {
                let n = r.length(4, "a Variant's dimensions")?.unwrap_or(0);
                let dims = (0..n).map(|_| r.i32("a dimension")).collect::<Result<Vec<i32>>>()?;
                let product =
                    dims.iter().try_fold(1usize, |p, &d| usize::try_from(d).ok().and_then(|d| p.checked_mul(d)));
                if product != Some(values.len()) {
                    return Err(Error::proto(format!("a matrix of {} values with dimensions {dims:?}", values.len())));
                }
                Some(dims)
            }
        };
        Ok(Variant::Array(Box::new(VariantArray { type_id, values, dimensions })))
    }
}

impl Encode for Variant {
    fn encode(&self, out: &mut Vec<u8>) {
        let Variant::Array(array) = self else {
            out.push(self.type_id());
            return self.encode_body(out);
        };
        let dims = if array.dimensions.is_some() { DIMENSIONS } else { 0 };
        out.push(array.type_id | ARRAY | dims);
        out.extend_from_slice(&(array.values.len() as i32).to_le_bytes());
        for value in &array.values {
            value.encode_body(out);
        }
        if let Some(dimensions) = &array.dimensions {
            out.extend_from_slice(&(dimensions.len() as i32).to_le_bytes());
            dimensions.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        }
    }
}

impl Decode<'_> for Variant {
    fn decode(r: &mut Reader<'_>) -> Result<Variant> {
        Variant::decode_at(r, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn encoded(value: &impl Encode) -> Vec<u8> {
        let mut out = Vec::new();
        value.encode(&mut out);
        out
    }

    #[test]
    fn strings_and_scalars_are_byte_exact() {
        // Part 6, 5.2.2.4: "水Boy" is 6 bytes of UTF-8 after its length; null is -1.
        assert_eq!(encoded(&Some("水Boy")), hex("06 00 00 00 E6 B0 B4 42 6F 79"));
        assert_eq!(encoded(&None::<&str>), hex("FF FF FF FF"));
        assert_eq!(encoded(&Variant::Double(1.5)), hex("0B 00 00 00 00 00 00 F8 3F"));
        assert_eq!(encoded(&Variant::Int32(-2)), hex("06 FE FF FF FF"));
        assert_eq!(encoded(&Variant::Boolean(true)), hex("01 01"));
        let text = LocalizedText { locale: Some("en".into()), text: Some("Hi".into()) };
        assert_eq!(encoded(&text), hex("03 02 00 00 00 65 6E 02 00 00 00 48 69"));
    }

    #[test]
    fn arrays_and_matrices_carry_their_flags_and_dimensions() {
        let matrix = Variant::Array(Box::new(VariantArray {
            type_id: 4,
            values: (1..=6).map(Variant::Int16).collect(),
            dimensions: Some(vec![2, 3]),
        }));
        let bytes = encoded(&matrix);
        assert_eq!(
            bytes,
            hex("C4 06 00 00 00 01 00 02 00 03 00 04 00 05 00 06 00 02 00 00 00 02 00 00 00 03 00 00 00")
        );
        assert_eq!(Variant::decode(&mut Reader::new(&bytes)).unwrap(), matrix);
        // Dimensions that do not multiply to the count are refused.
        let mut wrong = bytes.clone();
        let last = wrong.len() - 4;
        wrong[last] = 4;
        assert!(Variant::decode(&mut Reader::new(&wrong)).unwrap_err().message.contains("matrix"));
    }

    #[test]
    fn data_values_write_their_fields_in_the_specifications_order() {
        let value = DataValue {
            value: Some(Variant::Float(2.0)),
            status: Some(0x8034_0000),
            source_timestamp: Some(1),
            source_picoseconds: Some(2),
            server_timestamp: Some(3),
            server_picoseconds: None,
        };
        let bytes = encoded(&value);
        assert_eq!(bytes[0], 0x1F);
        assert_eq!(&bytes[1..6], &hex("0A 00 00 00 40"));
        assert_eq!(
            &bytes[10..20],
            &hex("01 00 00 00 00 00 00 00 02 00"),
            "the source picoseconds follow its timestamp"
        );
        assert_eq!(DataValue::decode(&mut Reader::new(&bytes)).unwrap(), value);
    }

    #[test]
    fn diagnostic_infos_put_the_locale_before_the_localized_text() {
        let info =
            DiagnosticInfo { locale: Some(7), localized_text: Some(9), inner_status: Some(1), ..Default::default() };
        let bytes = encoded(&info);
        assert_eq!(bytes, hex("2C 07 00 00 00 09 00 00 00 01 00 00 00"));
        assert_eq!(DiagnosticInfo::decode(&mut Reader::new(&bytes)).unwrap(), info);
    }

    #[test]
    fn unknown_extension_objects_keep_their_bytes() {
        let object = ExtensionObject { type_id: NodeId::numeric(2, 5001), body: ExtensionBody::Binary(vec![1, 2, 3]) };
        let bytes = encoded(&Variant::ExtensionObject(Box::new(object.clone())));
        assert_eq!(bytes, hex("16 01 02 89 13 01 03 00 00 00 01 02 03"));
        assert_eq!(Variant::decode(&mut Reader::new(&bytes)).unwrap(), Variant::ExtensionObject(Box::new(object)));
    }

    #[test]
    fn malformed_input_is_eproto_without_large_allocations() {
        for (bytes, why) in [
            (hex("8B FF FF FF 7F"), "a length of 2147483647"),
            (hex("0C FE FF FF FF"), "a negative length"),
            (hex("0C 02 00 00 00 FF FE"), "not UTF-8"),
            (hex("1A"), "unknown built-in type 26"),
            (hex("4B 00"), "scalar Variant with array dimensions"),
            (hex("0B 00 00"), "a Double needs 8 bytes"),
        ] {
            let e = Variant::decode(&mut Reader::new(&bytes)).unwrap_err();
            assert_eq!(e.code, bifrost_core::ErrorCode::Proto);
            assert!(e.message.contains(why), "{bytes:02x?}: {}", e.message);
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x18u8, 100).chain([0]).collect();
        assert!(Variant::decode(&mut Reader::new(&deep)).unwrap_err().message.contains("nested"));
    }
}
