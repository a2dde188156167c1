//! IEC 61131 data types, byte orders, and the typed value model.

/// The IEC 61131 elementary types Bifrost reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Sint,
    Usint,
    Int,
    Uint,
    Dint,
    Udint,
    Lint,
    Ulint,
    Real,
    Lreal,
    String,
}

impl DataType {
    pub const ALL: [DataType; 12] = [
        DataType::Bool,
        DataType::Sint,
        DataType::Usint,
        DataType::Int,
        DataType::Uint,
        DataType::Dint,
        DataType::Udint,
        DataType::Lint,
        DataType::Ulint,
        DataType::Real,
        DataType::Lreal,
        DataType::String,
    ];

    /// Parses an IEC 61131 type name, case-insensitively.
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Sint => "SINT",
            DataType::Usint => "USINT",
            DataType::Int => "INT",
            DataType::Uint => "UINT",
            DataType::Dint => "DINT",
            DataType::Udint => "UDINT",
            DataType::Lint => "LINT",
            DataType::Ulint => "ULINT",
            DataType::Real => "REAL",
            DataType::Lreal => "LREAL",
            DataType::String => "STRING",
        }
    }

    /// Size of one element in bytes (STRING: one character).
    pub fn size_bytes(self) -> usize {
        match self {
            DataType::Bool | DataType::Sint | DataType::Usint | DataType::String => 1,
            DataType::Int | DataType::Uint => 2,
            DataType::Dint | DataType::Udint | DataType::Real => 4,
            DataType::Lint | DataType::Ulint | DataType::Lreal => 8,
        }
    }
}

/// Order of the bytes of a multi-byte value, named by where the most
/// significant byte `A` of a 32-bit value lands on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    /// Big-endian: `A B C D` (the Modbus default).
    #[default]
    Abcd,
    /// Bytes swapped within each 16-bit word: `B A D C`.
    Badc,
    /// Words swapped, bytes big-endian within a word: `C D A B`.
    Cdab,
    /// Little-endian: `D C B A`.
    Dcba,
}

impl ByteOrder {
    /// Parses `ABCD`/`BADC`/`CDAB`/`DCBA` or the PLC4X long names, case-insensitively.
    pub fn parse(name: &str) -> Option<ByteOrder> {
        let upper = name.to_ascii_uppercase();
        Some(match upper.as_str() {
            "ABCD" | "BIG_ENDIAN" => ByteOrder::Abcd,
            "BADC" | "BIG_ENDIAN_BYTE_SWAP" => ByteOrder::Badc,
            "CDAB" | "LITTLE_ENDIAN_BYTE_SWAP" => ByteOrder::Cdab,
            "DCBA" | "LITTLE_ENDIAN" => ByteOrder::Dcba,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ByteOrder::Abcd => "ABCD",
            ByteOrder::Badc => "BADC",
            ByteOrder::Cdab => "CDAB",
            ByteOrder::Dcba => "DCBA",
        }
    }
}

/// A decoded value. Integers keep full 64-bit range; the addon decides how
/// they cross into JavaScript.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    Array(Vec<Value>),
    /// Named members in order, each typed on its own: a Logix UDT, a device's identity.
    Struct(Vec<(String, TypedValue)>),
}

/// A value read, with whether its integers must reach JavaScript as `bigint`s (64-bit types).
#[derive(Debug, Clone, PartialEq)]
pub struct TypedValue {
    pub value: Value,
    pub wide: bool,
}
