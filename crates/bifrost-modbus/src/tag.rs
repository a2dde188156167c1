//! PLC4X-style Modbus tag addresses, e.g. `holding-register:20:UINT[10]`,
//! `400021:REAL{byte-order: CDAB}` or `holding-register:5.3`.
//!
//! ```text
//! tag     := area [ '.' bit ] [ ':' type [ '(' strlen ')' ] [ '[' count ']' ] ] [ '{' options '}' ]
//! area    := table ':' address | modicon
//! options := option { ',' option }     option := key ':' value
//! ```

use std::fmt;

use bifrost_core::{ByteOrder, DataType, Error, Result};

use crate::pdu::function;

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Coil,
    DiscreteInput,
    InputRegister,
    HoldingRegister,
}

impl Table {
    const ALL: [Table; 4] = [Table::Coil, Table::DiscreteInput, Table::InputRegister, Table::HoldingRegister];

    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete-input",
            Table::InputRegister => "input-register",
            Table::HoldingRegister => "holding-register",
        }
    }

    /// Coils and discrete inputs hold single bits.
    pub fn is_bit(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    pub fn read_function(self) -> u8 {
        match self {
            Table::Coil => function::READ_COILS,
            Table::DiscreteInput => function::READ_DISCRETE_INPUTS,
            Table::InputRegister => function::READ_INPUT_REGISTERS,
            Table::HoldingRegister => function::READ_HOLDING_REGISTERS,
        }
    }

    pub fn is_writable(self) -> bool {
        matches!(self, Table::Coil | Table::HoldingRegister)
    }

    /// Data type of a tag that names none.
    fn default_type(self) -> DataType {
        if self.is_bit() {
            DataType::Bool
        } else {
            DataType::Int
        }
    }
}

/// A parsed Modbus tag address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModbusTag {
    pub table: Table,
    /// Zero-based protocol address.
    pub address: u16,
    /// BOOL for bit tables and bit-in-register tags.
    pub data_type: DataType,
    /// `Some(n)` for `TYPE[n]` arrays (n >= 1); `None` for a scalar.
    pub count: Option<u16>,
    /// Characters of a `STRING(n)`; 0 otherwise.
    pub string_length: u16,
    /// `holding-register:5.3`: bit 3 (0 = least significant) of register 5.
    pub bit: Option<u8>,
    pub byte_order: ByteOrder,
    pub unit_id: Option<u8>,
}

const TYPE_NAMES: &str = "one of BOOL, SINT, USINT, INT, UINT, DINT, UDINT, LINT, ULINT, REAL, LREAL, STRING";
const TABLE_NAMES: &str = "coil, discrete-input, input-register or holding-register";
const BYTE_ORDERS: &str =
    "ABCD, BADC, CDAB, DCBA, BIG_ENDIAN, LITTLE_ENDIAN, BIG_ENDIAN_BYTE_SWAP or LITTLE_ENDIAN_BYTE_SWAP";
const MAX_UNIT_ID: u32 = 247;

impl ModbusTag {
    /// Parses a tag address; errors are `Error::address` naming the column.
    pub fn parse(text: &str) -> Result<ModbusTag> {
        Parser { text, bytes: text.as_bytes(), pos: 0 }.tag()
    }

    /// Units this tag covers: registers for register tables, bits for bit tables.
    pub fn span(&self) -> u32 {
        self.elements() as u32 * self.element_span()
    }

    /// Units one element covers: 1 for bits (and a bit of a register), else its registers.
    pub fn element_span(&self) -> u32 {
        if self.table.is_bit() || self.bit.is_some() {
            return 1;
        }
        match self.data_type {
            DataType::String => u32::from(self.string_length).div_ceil(2),
            t => (t.size_bytes() as u32).div_ceil(2),
        }
    }

    /// Array length, or 1 for a scalar.
    pub fn elements(&self) -> usize {
        self.count.map_or(1, usize::from)
    }

    /// Whether the type must be spelled out in the canonical form.
    fn shows_type(&self) -> bool {
        let default = if self.bit.is_some() { DataType::Bool } else { self.table.default_type() };
        self.data_type != default || self.count.is_some() || self.data_type == DataType::String
    }
}

impl fmt::Display for ModbusTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.table.name(), self.address)?;
        if let Some(bit) = self.bit {
            write!(f, ".{bit}")?;
        }
        if self.shows_type() {
            write!(f, ":{}", self.data_type.name())?;
            if self.data_type == DataType::String {
                write!(f, "({})", self.string_length)?;
            }
            if let Some(count) = self.count {
                write!(f, "[{count}]")?;
            }
        }
        let mut options = Vec::with_capacity(2);
        if self.byte_order != ByteOrder::default() {
            options.push(format!("byte-order: {}", self.byte_order.name()));
        }
        if let Some(unit) = self.unit_id {
            options.push(format!("unit-id: {unit}"));
        }
        if !options.is_empty() {
            write!(f, "{{{}}}", options.join(", "))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ModbusTag {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ModbusTag::parse(s)
    }
}

/// Recursive-descent parser over the tag's bytes. Positions only ever land
/// on ASCII bytes or the end, so they are char boundaries.
struct Parser<'t> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// 1-based column in characters.
    fn column(&self, pos: usize) -> usize {
        self.text.get(..pos).map_or(pos, |s| s.chars().count()) + 1
    }

    fn error(&self, pos: usize, what: &str, expected: &str) -> Error {
        Error::address(format!("{what} at column {} in '{}' (expected {expected})", self.column(pos), self.text))
    }

    /// "unexpected 'x'" / "unexpected end of tag" at the current position.
    fn unexpected(&self, expected: &str) -> Error {
        let what = match self.text.get(self.pos..).and_then(|s| s.chars().next()) {
            Some(c) => format!("unexpected character '{c}'"),
            None => "unexpected end of tag".to_string(),
        };
        self.error(self.pos, &what, expected)
    }

    fn expect(&mut self, c: u8, expected: &str) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> (usize, &'t str) {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        (start, self.text.get(start..self.pos).unwrap_or_default())
    }

    fn skip_ws(&mut self) {
        self.take_while(|b| b.is_ascii_whitespace());
    }

    /// A decimal number in `min..=max`; `what` names it in errors.
    fn number(&mut self, what: &str, min: u32, max: u32) -> Result<(usize, u32)> {
        let (start, digits) = self.take_while(|b| b.is_ascii_digit());
        let range = format!("{what} {min}..={max}");
        if digits.is_empty() {
            return Err(self.unexpected(&range));
        }
        match digits.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok((start, n)),
            _ => Err(self.error(start, &format!("{what} {digits} out of range"), &range)),
        }
    }

    fn tag(mut self) -> Result<ModbusTag> {
        let (table, address, address_pos) =
            if self.peek().is_some_and(|b| b.is_ascii_digit()) { self.modicon()? } else { self.table_address()? };
        let mut tag = ModbusTag {
            table,
            address,
            data_type: table.default_type(),
            count: None,
            string_length: 0,
            bit: None,
            byte_order: ByteOrder::default(),
            unit_id: None,
        };

        let dot = self.pos;
        if self.eat(b'.') {
            if table.is_bit() {
                return Err(self.error(
                    dot,
                    &format!("bit suffix on the {} table", table.name()),
                    "':' and a type, '{' options or end of tag; '.bit' is only for register tables",
                ));
            }
            let (_, bit) = self.number("a bit number", 0, 15)?;
            tag.bit = Some(bit as u8);
            tag.data_type = DataType::Bool;
        }

        if self.eat(b':') {
            self.data_type(&mut tag)?;
        }

        if self.eat(b'{') {
            self.options(&mut tag)?;
        }

        if self.pos < self.bytes.len() {
            let rest = self.text.get(self.pos..).unwrap_or_default();
            return Err(self.error(self.pos, &format!("unexpected trailing characters '{rest}'"), "end of tag"));
        }

        let span = tag.span();
        if u32::from(tag.address) + span > 0x1_0000 {
            let units = if table.is_bit() { "bits" } else { "registers" };
            return Err(self.error(
                address_pos,
                &format!(
                    "tag of {span} {units} from address {} runs past the end of the {} table",
                    tag.address,
                    table.name()
                ),
                "address + size <= 65536",
            ));
        }
        Ok(tag)
    }

    /// `table ':' address`, zero-based.
    fn table_address(&mut self) -> Result<(Table, u16, usize)> {
        let (start, name) = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if name.is_empty() {
            return Err(self.unexpected(&format!("a table name ({TABLE_NAMES}) or a Modicon address")));
        }
        let Some(table) = Table::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(name)) else {
            return Err(self.error(start, &format!("unknown table '{name}'"), TABLE_NAMES));
        };
        self.expect(b':', "':' and an address after the table name")?;
        let (pos, address) = self.number("an address", 0, 65535)?;
        Ok((table, address as u16, pos))
    }

    /// 5 or 6 digits: table digit + one-based number.
    fn modicon(&mut self) -> Result<(Table, u16, usize)> {
        let (start, digits) = self.take_while(|b| b.is_ascii_digit());
        let expected = "a 5 or 6 digit Modicon address such as 40001 or 400001";
        if !(5..=6).contains(&digits.len()) {
            return Err(self.error(start, &format!("'{digits}' is not a Modicon address"), expected));
        }
        let (kind, number) = digits.split_at_checked(1).unwrap_or_default();
        let table = match kind {
            "0" => Table::Coil,
            "1" => Table::DiscreteInput,
            "3" => Table::InputRegister,
            "4" => Table::HoldingRegister,
            _ => {
                return Err(self.error(
                    start,
                    &format!("unknown Modicon table digit '{kind}'"),
                    "0 (coil), 1 (discrete input), 3 (input register) or 4 (holding register)",
                ))
            }
        };
        let range = "a one-based register number 1..=65536";
        match number.parse::<u32>() {
            Ok(n) if (1..=0x1_0000).contains(&n) => Ok((table, (n - 1) as u16, start)),
            _ => Err(self.error(start + 1, &format!("Modicon register number {number} out of range"), range)),
        }
    }

    /// After ':': `type [ '(' strlen ')' ] [ '[' count ']' ]`.
    fn data_type(&mut self, tag: &mut ModbusTag) -> Result<()> {
        let (start, name) = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'_');
        if name.is_empty() {
            return Err(self.unexpected(&format!("a data type, {TYPE_NAMES}")));
        }
        let Some(data_type) = DataType::parse(name) else {
            return Err(self.error(start, &format!("unknown data type '{name}'"), TYPE_NAMES));
        };
        if data_type != DataType::Bool {
            if tag.bit.is_some() {
                return Err(self.error(
                    start,
                    &format!("data type {} on a bit-in-register tag", data_type.name()),
                    "BOOL",
                ));
            }
            if tag.table.is_bit() {
                return Err(self.error(
                    start,
                    &format!("data type {} on the {} table", data_type.name(), tag.table.name()),
                    "BOOL",
                ));
            }
        }
        tag.data_type = data_type;

        let paren = self.pos;
        if self.eat(b'(') {
            if data_type != DataType::String {
                return Err(self.error(
                    paren,
                    &format!("a '(length)' after {}", data_type.name()),
                    "'[' count, '{' options or end of tag; '(length)' is only for STRING",
                ));
            }
            let (_, n) = self.number("a string length", 1, 65535)?;
            tag.string_length = n as u16;
            self.expect(b')', "')' after the string length")?;
        } else if data_type == DataType::String {
            return Err(self.unexpected("'(' and the string length, e.g. STRING(10)"));
        }

        let bracket = self.pos;
        if self.eat(b'[') {
            if tag.bit.is_some() {
                return Err(self.error(bracket, "an array on a bit-in-register tag", "'{' options or end of tag"));
            }
            let (_, n) = self.number("an array count", 1, 65535)?;
            tag.count = Some(n as u16);
            self.expect(b']', "']' after the array count")?;
        }
        Ok(())
    }

    /// After '{': `key ':' value { ',' key ':' value } '}'`.
    fn options(&mut self, tag: &mut ModbusTag) -> Result<()> {
        let mut seen_byte_order = false;
        let mut seen_unit_id = false;
        loop {
            self.skip_ws();
            let (key_pos, key) = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if key.is_empty() {
                return Err(self.unexpected("an option key (byte-order or unit-id)"));
            }
            self.skip_ws();
            self.expect(b':', "':' after the option key")?;
            self.skip_ws();
            let (value_pos, value) = self.value()?;
            let duplicate =
                |p: &Self| p.error(key_pos, &format!("duplicate option '{key}'"), "each option at most once");
            if key.eq_ignore_ascii_case("byte-order") {
                if seen_byte_order {
                    return Err(duplicate(self));
                }
                seen_byte_order = true;
                tag.byte_order = ByteOrder::parse(value)
                    .ok_or_else(|| self.error(value_pos, &format!("unknown byte order '{value}'"), BYTE_ORDERS))?;
            } else if key.eq_ignore_ascii_case("unit-id") {
                if seen_unit_id {
                    return Err(duplicate(self));
                }
                seen_unit_id = true;
                let unit = match value.parse::<u32>() {
                    Ok(n) if n <= MAX_UNIT_ID && value.bytes().all(|b| b.is_ascii_digit()) => n,
                    _ => return Err(self.error(value_pos, &format!("invalid unit id '{value}'"), "a unit id 0..=247")),
                };
                tag.unit_id = Some(unit as u8);
            } else {
                return Err(self.error(key_pos, &format!("unknown option '{key}'"), "byte-order or unit-id"));
            }
            self.skip_ws();
            if self.eat(b',') {
                continue;
            }
            self.expect(b'}', "',' or '}'")?;
            return Ok(());
        }
    }

    /// A bare, 'single-quoted' or "double-quoted" option value.
    fn value(&mut self) -> Result<(usize, &'t str)> {
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                let open = self.pos;
                self.pos += 1;
                let (start, inner) = self.take_while(|b| b != q);
                if !self.eat(q) {
                    return Err(self.error(open, "unterminated quoted value", "a closing quote"));
                }
                Ok((start, inner))
            }
            _ => {
                let (start, value) = self.take_while(|b| !b.is_ascii_whitespace() && !matches!(b, b',' | b'}' | b'{'));
                if value.is_empty() {
                    return Err(self.unexpected("an option value"));
                }
                Ok((start, value))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bifrost_core::ErrorCode;

    fn tag(text: &str) -> ModbusTag {
        ModbusTag::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn base(table: Table, address: u16) -> ModbusTag {
        ModbusTag {
            table,
            address,
            data_type: table.default_type(),
            count: None,
            string_length: 0,
            bit: None,
            byte_order: ByteOrder::Abcd,
            unit_id: None,
        }
    }

    /// Asserts an address error at `column` whose message contains `needle`.
    fn err(text: &str, column: usize, needle: &str) {
        let e = ModbusTag::parse(text).expect_err(text);
        assert_eq!(e.code, ErrorCode::Address, "{text}");
        assert!(
            e.message.contains(&format!("at column {column} in '{text}'")),
            "{text}: wrong column in {}",
            e.message
        );
        assert!(e.message.contains(needle), "{text}: '{needle}' not in {}", e.message);
        assert!(e.message.contains("(expected "), "{}", e.message);
    }

    #[test]
    fn table_forms() {
        assert_eq!(tag("coil:1"), base(Table::Coil, 1));
        assert_eq!(tag("discrete-input:0"), base(Table::DiscreteInput, 0));
        assert_eq!(tag("input-register:65535"), base(Table::InputRegister, 65535));
        assert_eq!(tag("holding-register:20"), base(Table::HoldingRegister, 20));
        assert_eq!(tag("HOLDING-Register:007"), base(Table::HoldingRegister, 7));
        assert_eq!(tag("holding-register:20").data_type, DataType::Int);
        assert_eq!(tag("coil:20").data_type, DataType::Bool);
    }

    #[test]
    fn modicon_forms() {
        assert_eq!(tag("400021"), base(Table::HoldingRegister, 20));
        assert_eq!(tag("40021"), base(Table::HoldingRegister, 20));
        assert_eq!(tag("400001"), base(Table::HoldingRegister, 0));
        assert_eq!(tag("00001"), base(Table::Coil, 0));
        assert_eq!(tag("100010"), base(Table::DiscreteInput, 9));
        assert_eq!(tag("30001"), base(Table::InputRegister, 0));
        assert_eq!(tag("465536"), base(Table::HoldingRegister, 65535));
        assert_eq!(tag("49999"), base(Table::HoldingRegister, 9998));
        let t = tag("400021:REAL{byte-order: CDAB}");
        assert_eq!((t.address, t.data_type, t.byte_order), (20, DataType::Real, ByteOrder::Cdab));
        assert_eq!(tag("40006.3").bit, Some(3));
    }

    #[test]
    fn types_arrays_strings() {
        let t = tag("holding-register:20:UINT[10]");
        assert_eq!((t.data_type, t.count, t.span(), t.elements()), (DataType::Uint, Some(10), 10, 10));
        let t = tag("input-register:0:real");
        assert_eq!((t.data_type, t.span()), (DataType::Real, 2));
        let t = tag("holding-register:0:LREAL[3]");
        assert_eq!(t.span(), 12);
        let t = tag("holding-register:0:STRING(11)");
        assert_eq!((t.data_type, t.string_length, t.span(), t.count), (DataType::String, 11, 6, None));
        let t = tag("holding-register:0:string(10)[4]");
        assert_eq!((t.span(), t.elements()), (20, 4));
        let t = tag("coil:5:BOOL[16]");
        assert_eq!((t.span(), t.count), (16, Some(16)));
        assert_eq!(tag("discrete-input:5:bool").span(), 1);
        assert_eq!(tag("holding-register:1:BOOL").span(), 1);
        assert_eq!(tag("holding-register:1:SINT[3]").span(), 3);
        for name in ["DINT", "UDINT", "LINT", "ULINT", "INT", "USINT"] {
            let t = tag(&format!("holding-register:1:{name}"));
            assert_eq!(t.data_type.name(), name);
        }
    }

    #[test]
    fn bit_in_register() {
        let t = tag("holding-register:5.3");
        assert_eq!((t.address, t.bit, t.data_type, t.span()), (5, Some(3), DataType::Bool, 1));
        assert_eq!(tag("input-register:5.15:BOOL").bit, Some(15));
        assert_eq!(tag("holding-register:65535.0").span(), 1);
    }

    #[test]
    fn options() {
        let t = tag("holding-register:20:UINT[10]{byte-order: CDAB, unit-id: 7}");
        assert_eq!((t.byte_order, t.unit_id), (ByteOrder::Cdab, Some(7)));
        let t = tag("holding-register:1:DINT{ unit-id :'0' ,byte-order:\"LITTLE_ENDIAN\" }");
        assert_eq!((t.byte_order, t.unit_id), (ByteOrder::Dcba, Some(0)));
        let t = tag("coil:1{UNIT-ID:247}");
        assert_eq!(t.unit_id, Some(247));
        for (name, order) in [
            ("abcd", ByteOrder::Abcd),
            ("BADC", ByteOrder::Badc),
            ("BIG_ENDIAN", ByteOrder::Abcd),
            ("BIG_ENDIAN_BYTE_SWAP", ByteOrder::Badc),
            ("LITTLE_ENDIAN_BYTE_SWAP", ByteOrder::Cdab),
            ("DCBA", ByteOrder::Dcba),
        ] {
            assert_eq!(tag(&format!("400001:DINT{{byte-order: {name}}}")).byte_order, order);
        }
    }

    #[test]
    fn display_canonical() {
        let cases = [
            ("holding-register:20:UINT[10]{byte-order: CDAB, unit-id: 7}", None),
            ("400021", Some("holding-register:20")),
            ("coil:3:BOOL", Some("coil:3")),
            ("holding-register:3:INT", Some("holding-register:3")),
            ("holding-register:3:INT[2]", None),
            ("holding-register:3:BOOL", None),
            ("holding-register:5.3:bool", Some("holding-register:5.3")),
            ("holding-register:0:string(10)[4]", Some("holding-register:0:STRING(10)[4]")),
            ("holding-register:0:STRING(7)", None),
            ("input-register:1:REAL{byte-order:'abcd'}", Some("input-register:1:REAL")),
            ("input-register:1{unit-id: 3}", None),
            ("coil:4:BOOL[3]", None),
        ];
        for (input, canonical) in cases {
            let t = tag(input);
            let shown = t.to_string();
            assert_eq!(shown, canonical.unwrap_or(input));
            assert_eq!(tag(&shown), t);
        }
    }

    #[test]
    fn errors_with_columns() {
        err("holding-register:20:FLOT", 21, "unknown data type 'FLOT'");
        err("holding-register:20:FLOT", 21, "BOOL, SINT");
        err("holding-registers:20", 1, "unknown table 'holding-registers'");
        err("", 1, "unexpected end of tag");
        err(":20", 1, "unexpected character ':'");
        err("holding-register", 17, "unexpected end of tag");
        err("holding-register;20", 17, "unexpected character ';'");
        err("holding-register:", 18, "an address 0..=65535");
        err("holding-register:x", 18, "unexpected character 'x'");
        err("holding-register:65536", 18, "an address 65536 out of range");
        err("holding-register:99999999999999", 18, "out of range");
        err("coil:-1", 6, "unexpected character '-'");
        // Modicon
        err("4001", 1, "'4001' is not a Modicon address");
        err("4000001", 1, "not a Modicon address");
        err("200001", 1, "unknown Modicon table digit '2'");
        err("40000", 2, "Modicon register number 0000 out of range");
        err("400000", 2, "out of range");
        err("465537", 2, "out of range");
        // Bit suffix
        err("coil:5.3", 7, "bit suffix on the coil table");
        err("discrete-input:5.3", 17, "bit suffix");
        err("holding-register:5.16", 20, "a bit number 16 out of range");
        err("holding-register:5.", 20, "unexpected end of tag");
        err("holding-register:5.3:INT", 22, "data type INT on a bit-in-register tag");
        err("holding-register:5.3:BOOL[2]", 26, "an array on a bit-in-register tag");
        // Types on bit tables
        err("coil:5:INT", 8, "data type INT on the coil table");
        err("discrete-input:5:REAL[2]", 18, "on the discrete-input table");
        err("holding-register:5:", 20, "a data type");
        // STRING length
        err("holding-register:5:STRING", 26, "'(' and the string length");
        err("holding-register:5:STRING[3]", 26, "unexpected character '['");
        err("holding-register:5:STRING(0)", 27, "a string length 0 out of range");
        err("holding-register:5:STRING(4", 28, "')' after the string length");
        err("holding-register:5:INT(4)", 23, "a '(length)' after INT");
        // Arrays
        err("holding-register:5:INT[0]", 24, "an array count 0 out of range");
        err("holding-register:5:INT[]", 24, "an array count 1..=65535");
        err("holding-register:5:INT[3", 25, "']' after the array count");
        // Address space
        err("holding-register:65535:DINT", 18, "runs past the end");
        err("holding-register:65530:INT[7]", 18, "tag of 7 registers");
        err("coil:65000:BOOL[537]", 6, "537 bits");
        err("465536:REAL", 1, "runs past");
        assert_eq!(tag("465535:REAL").address, 65534);
        err("holding-register:65534:STRING(5)", 18, "3 registers");
        // Options
        err("coil:1{}", 8, "an option key");
        err("coil:1{ }", 9, "an option key");
        err("coil:1{unit:1}", 8, "unknown option 'unit'");
        err("coil:1{unit-id:1,unit-id:2}", 18, "duplicate option 'unit-id'");
        err("coil:1{byte-order:ABCD, Byte-Order:DCBA}", 25, "duplicate option 'Byte-Order'");
        err("coil:1{unit-id:248}", 16, "invalid unit id '248'");
        err("coil:1{unit-id:'-1'}", 17, "invalid unit id '-1'");
        err("coil:1{unit-id:+1}", 16, "invalid unit id '+1'");
        err("coil:1{byte-order:ABDC}", 19, "unknown byte order 'ABDC'");
        err("coil:1{byte-order:'ABCD}", 19, "unterminated quoted value");
        err("coil:1{unit-id 1}", 16, "':' after the option key");
        err("coil:1{unit-id:}", 16, "an option value");
        err("coil:1{unit-id:1", 17, "',' or '}'");
        err("coil:1{unit-id:1,}", 18, "an option key");
        err("coil:1{unit-id:1 2}", 18, "',' or '}'");
        // Trailing characters
        err("coil:1 ", 7, "unexpected trailing characters ' '");
        err("coil:1{unit-id:1}x", 18, "trailing characters 'x'");
        err("holding-register:1:INT[2]:", 26, "trailing");
        err("holding-register:1:INT[2]{unit-id:1}{unit-id:2}", 37, "trailing");
        // Columns count characters, not bytes.
        err("coil:1{byte-order:'é'}", 20, "unknown byte order 'é'");
        err("coil:1ü", 7, "trailing characters 'ü'");
        err("ü", 1, "unexpected character 'ü'");
        err("hölding-register:1", 1, "unknown table 'h'");
    }
}
