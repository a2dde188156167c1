//! The Logix Template object (class 0x6C): what a structure (a UDT) is made of.
//! Its attributes (Get Attribute List 4, 5, 2, 1) give the definition's size,
//! the structure's size, its member count and the handle its values carry;
//! Read Template gives the definition: each member's type and offset, then the
//! type's name and the members' names. Structure values decode by it.

use bifrost_core::{Error, Result, TypedValue, Value};

use crate::cip::{self, service};
use crate::logix::{self, CipType, LOGIX_STRING_HANDLE};
use crate::wire::{put_u16, put_u32, Reader};

/// Type word bits (a symbol's, a member's): a structure, with its template's id in the low 12 bits.
pub const STRUCTURE_BIT: u16 = 0x8000;
/// Type word bits: array dimensions (0 to 3).
pub const DIMENSION_BITS: u16 = 0x6000;
/// Structures within structures deeper than this are refused (a template naming itself would never end).
pub const MAX_NESTING: usize = 16;
/// Attributes every client asks for, in this order: definition size in words,
/// structure size in bytes, member count, structure handle.
const ATTRIBUTES: [u16; 4] = [4, 5, 2, 1];

/// A template's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateAttributes {
    /// The definition's size in 32-bit words, as the controller counts it.
    pub definition_words: u32,
    /// Bytes of one value of the structure.
    pub structure_size: u32,
    pub member_count: u16,
    /// What Read Tag replies carry after the structure type code (0x02A0).
    pub handle: u16,
}

impl TemplateAttributes {
    /// Bytes of the definition, by the controller's own formula (words × 4 − 23).
    pub fn definition_len(&self) -> usize {
        (self.definition_words as usize * 4).saturating_sub(23)
    }
}

/// Get Attribute List on template `id`.
pub fn attributes_request(out: &mut Vec<u8>, id: u16) -> Result<()> {
    let path = cip::object_path(cip::class::TEMPLATE, u32::from(id), None);
    cip::request(out, service::GET_ATTRIBUTE_LIST, &path, |out| {
        put_u16(out, ATTRIBUTES.len() as u16);
        ATTRIBUTES.iter().for_each(|&attribute| put_u16(out, attribute));
    })
}

/// The attributes in a Get Attribute List reply's data, in whatever order they come.
pub fn parse_attributes(data: &[u8]) -> Result<TemplateAttributes> {
    let mut r = Reader::new(data);
    let mut attributes = TemplateAttributes { definition_words: 0, structure_size: 0, member_count: 0, handle: 0 };
    let mut seen = 0u8;
    for _ in 0..r.u16("the attribute count")? {
        let id = r.u16("an attribute id")?;
        let status = r.u16("an attribute status")?;
        if status != 0 {
            return Err(Error::proto(format!("the template refused attribute {id} (status 0x{status:02x})")));
        }
        match id {
            1 => attributes.handle = r.u16("the structure handle")?,
            2 => attributes.member_count = r.u16("the member count")?,
            3 => drop(r.u16("attribute 3")?),
            4 => attributes.definition_words = r.u32("the definition size")?,
            5 => attributes.structure_size = r.u32("the structure size")?,
            other => return Err(Error::proto(format!("the template answered attribute {other}, never asked for"))),
        }
        seen |= 1 << id;
    }
    if seen & 0b11_0110 != 0b11_0110 {
        return Err(Error::proto("the template's reply lacks some of attributes 1, 2, 4 and 5"));
    }
    Ok(attributes)
}

/// Read Template: `count` bytes of template `id`'s definition from byte `offset`.
pub fn read_request(out: &mut Vec<u8>, id: u16, offset: u32, count: u16) -> Result<()> {
    let path = cip::object_path(cip::class::TEMPLATE, u32::from(id), None);
    cip::request(out, service::READ_TAG, &path, |out| {
        put_u32(out, offset);
        put_u16(out, count);
    })
}

/// One member of a structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// An array's length, a BOOL's bit number in its host byte, else 0.
    pub info: u16,
    /// As a symbol's: a type code, or [`STRUCTURE_BIT`] and a template id; [`DIMENSION_BITS`] for arrays.
    pub type_word: u16,
    /// Where it starts in the structure's bytes.
    pub offset: u32,
}

impl Member {
    /// The controller's own: hosts of BOOL members, and names it hides.
    pub fn is_hidden(&self) -> bool {
        self.name.is_empty() || self.name.starts_with("ZZZZZZZZZZ") || self.name.starts_with("__")
    }

    /// The template of a structure member.
    pub fn structure(&self) -> Option<u16> {
        (self.type_word & STRUCTURE_BIT != 0).then_some(self.type_word & 0x0FFF)
    }

    fn is_array(&self) -> bool {
        self.type_word & DIMENSION_BITS != 0
    }

    /// Elements it holds: an array's length, else one.
    fn count(&self) -> usize {
        if self.is_array() {
            usize::from(self.info)
        } else {
            1
        }
    }
}

/// A structure's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Its instance in the Template object; symbols and members name it.
    pub id: u16,
    pub name: String,
    pub handle: u16,
    /// Bytes of one value.
    pub size: u32,
    /// In definition order, hidden ones included.
    pub members: Vec<Member>,
}

impl Template {
    /// Parses a definition (Read Template's bytes) read after its attributes.
    pub fn parse(id: u16, attributes: &TemplateAttributes, definition: &[u8]) -> Result<Template> {
        let count = usize::from(attributes.member_count);
        let mut r = Reader::new(definition);
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push((r.u16("a member's info")?, r.u16("a member's type")?, r.u32("a member's offset")?));
        }
        // The type's name (`RECIPE;n...`: what follows ';' is not part of it), then a name per member.
        let mut names = r.rest().split(|&b| b == 0).map(|name| String::from_utf8_lossy(name).into_owned());
        let name = names.next().unwrap_or_default();
        let name = name.split(';').next().unwrap_or_default().to_string();
        let members: Vec<Member> = entries
            .into_iter()
            .map(|(info, type_word, offset)| Member { name: names.next().unwrap_or_default(), info, type_word, offset })
            .collect();
        if let Some(past) = members.iter().find(|m| m.offset >= attributes.structure_size && !m.is_hidden()) {
            return Err(Error::proto(format!(
                "template {id:#x}: member '{}' starts at byte {}, past the structure's {} bytes",
                past.name, past.offset, attributes.structure_size
            )));
        }
        Ok(Template { id, name, handle: attributes.handle, size: attributes.structure_size, members })
    }

    /// Appends the definition, as Read Template returns it.
    pub fn write_definition(&self, out: &mut Vec<u8>) {
        for member in &self.members {
            put_u16(out, member.info);
            put_u16(out, member.type_word);
            put_u32(out, member.offset);
        }
        // After ';' come two characters a member (pylogix reads them), as Logix writes them.
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(b";n");
        out.extend(std::iter::repeat_n(b'A', 2 * self.members.len()));
        out.push(0);
        for member in &self.members {
            out.extend_from_slice(member.name.as_bytes());
            out.push(0);
        }
    }

    /// Its attributes, as a controller gives them.
    pub fn attributes(&self) -> TemplateAttributes {
        let mut definition = Vec::new();
        self.write_definition(&mut definition);
        TemplateAttributes {
            // The controller's formula, inverted: words × 4 − 23 bytes hold the definition.
            definition_words: (definition.len() as u32 + 23).div_ceil(4),
            structure_size: self.size,
            member_count: self.members.len() as u16,
            handle: self.handle,
        }
    }

    /// Templates its members are made of, which decoding it needs too.
    pub fn nested(&self) -> impl Iterator<Item = u16> + '_ {
        self.members.iter().filter_map(Member::structure).filter(|&id| id != LOGIX_STRING_HANDLE)
    }

    /// A member by name, as Logix matches names: ignoring case.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name.eq_ignore_ascii_case(name))
    }

    /// A string type: a `LEN` (DINT) and its characters, `DATA` (SINT[n]), as the
    /// predefined STRING and user string types are.
    fn is_string(&self) -> bool {
        let visible: Vec<&Member> = self.members.iter().filter(|m| !m.is_hidden()).collect();
        matches!(&visible[..], [len, data]
            if len.name.eq_ignore_ascii_case("LEN") && len.type_word & 0xFF == 0xC4
            && data.name.eq_ignore_ascii_case("DATA") && data.type_word & 0xFF == 0xC2 && data.is_array())
    }

    /// One value of the structure from its `size` bytes: a plain object of its visible
    /// members (a string type: its text). `templates` gives the templates of nested structures.
    pub fn decode<'t>(&self, bytes: &[u8], templates: &impl Fn(u16) -> Option<&'t Template>) -> Result<Value> {
        self.decode_nested(bytes, templates, 0)
    }

    /// As [`Template::decode`], `depth` structures deep: a template that holds itself is refused.
    fn decode_nested<'t>(
        &self,
        bytes: &[u8],
        templates: &impl Fn(u16) -> Option<&'t Template>,
        depth: usize,
    ) -> Result<Value> {
        if depth > MAX_NESTING {
            return Err(Error::proto(format!("template {} nests more than {MAX_NESTING} structures deep", self.name)));
        }
        let short =
            |member: &str| Error::proto(format!("the value of {} is too short for its member '{member}'", self.name));
        if self.is_string() {
            let (len, data) = (self.member("LEN").ok_or_else(|| short("LEN"))?, self.member("DATA"));
            let data = data.ok_or_else(|| short("DATA"))?;
            let at = len.offset as usize;
            let len = bytes.get(at..at + 4).ok_or_else(|| short("LEN"))?;
            let len = (i32::from_le_bytes([len[0], len[1], len[2], len[3]]).max(0) as usize).min(data.count());
            let at = data.offset as usize;
            let text = bytes.get(at..at + len).ok_or_else(|| short("DATA"))?;
            return Ok(Value::String(String::from_utf8_lossy(text).into_owned()));
        }
        let mut members = Vec::with_capacity(self.members.len());
        for member in self.members.iter().filter(|m| !m.is_hidden()) {
            let at = member.offset as usize;
            let typed = if member.structure().is_none() && member.type_word & 0xFF == 0xC1 {
                // A BOOL: a bit of its host.
                let bit = usize::from(member.info);
                let host = bytes.get(at + bit / 8).ok_or_else(|| short(&member.name))?;
                TypedValue { value: Value::Bool(host >> (bit % 8) & 1 == 1), wide: false }
            } else {
                // Its elements: a nested structure (decoded by its template), or of an elementary type.
                let (nested, ty) = match member.structure() {
                    Some(LOGIX_STRING_HANDLE) => (None, CipType::Struct(LOGIX_STRING_HANDLE)),
                    Some(id) => {
                        let nested = templates(id).ok_or_else(|| {
                            Error::proto(format!("template {id:#x} of member '{}' is not known", member.name))
                        })?;
                        (Some(nested), CipType::Struct(nested.handle))
                    }
                    None => {
                        let code = member.type_word & 0xFF;
                        let ty = CipType::from_code(code, None).filter(|ty| ty.element_size().is_some());
                        let ty = ty.ok_or_else(|| {
                            Error::proto(format!("member '{}' has unknown type 0x{code:02x}", member.name))
                        })?;
                        (None, ty)
                    }
                };
                let size = nested.map_or_else(|| ty.element_size().unwrap_or(1), |n| n.size as usize).max(1);
                let decode = |b: &[u8]| match nested {
                    Some(nested) => nested.decode_nested(b, templates, depth + 1),
                    None => logix::element_value(ty, b),
                };
                let wide = ty.is_wide();
                let whole = bytes.get(at..at + size * member.count()).ok_or_else(|| short(&member.name))?;
                let mut values = whole.chunks_exact(size).map(decode).collect::<Result<Vec<Value>>>()?;
                let value = match member.is_array() {
                    true => Value::Array(values),
                    false => values.pop().unwrap_or(Value::Int(0)),
                };
                TypedValue { value, wide }
            };
            members.push((member.name.clone(), typed));
        }
        Ok(Value::Struct(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Rockwell's worked example (1756-PM020, "Read Template"): STRUCT_B with a
    /// hidden BOOL host, a BOOL, an INT[12] and a REAL, and its attributes' reply.
    fn struct_b() -> (TemplateAttributes, Vec<u8>) {
        let attributes = parse_attributes(&hex(
            "04 00 04 00 00 00 1E 00 00 00 05 00 00 00 20 00 00 00 02 00 00 00 04 00 01 00 00 00 CD 9E",
        ))
        .unwrap();
        let mut definition =
            hex("00 00 C2 00 00 00 00 00 00 00 C1 00 00 00 00 00 0C 00 C3 20 04 00 00 00 00 00 CA 00 1C 00 00 00");
        definition.extend_from_slice(b"STRUCT_B;nEBECEAHA\0ZZZZZZZZZZSTRUCT_B0\0pilot_on\0hourlyCount\0rate\0");
        (attributes, definition)
    }

    #[test]
    fn rockwells_example_template_parses() {
        let (attributes, definition) = struct_b();
        assert_eq!(
            attributes,
            TemplateAttributes { definition_words: 0x1E, structure_size: 0x20, member_count: 4, handle: 0x9ECD }
        );
        assert_eq!(attributes.definition_len(), definition.len(), "words × 4 − 23 is the definition's length");
        let template = Template::parse(0x2E9, &attributes, &definition).unwrap();
        assert_eq!(template.name, "STRUCT_B");
        let names: Vec<&str> = template.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["ZZZZZZZZZZSTRUCT_B0", "pilot_on", "hourlyCount", "rate"]);
        assert_eq!(template.member("HOURLYCOUNT").map(|m| (m.info, m.type_word, m.offset)), Some((12, 0x20C3, 4)));
        assert!(template.members[0].is_hidden());
    }

    #[test]
    fn a_definition_written_back_reads_the_same() {
        let (attributes, definition) = struct_b();
        let template = Template::parse(0x2E9, &attributes, &definition).unwrap();
        let mut written = Vec::new();
        template.write_definition(&mut written);
        let again = Template::parse(0x2E9, &template.attributes(), &written).unwrap();
        assert_eq!(again, template);
        assert!(template.attributes().definition_len() >= written.len());
    }

    #[test]
    fn values_decode_into_their_visible_members() {
        let (attributes, definition) = struct_b();
        let template = Template::parse(0x2E9, &attributes, &definition).unwrap();
        let mut bytes = vec![0u8; 32];
        bytes[0] = 0b1; // pilot_on: bit 0 of the hidden host
        for (i, v) in [1i16, -2, 3, 4].iter().enumerate() {
            bytes[4 + 2 * i..6 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        bytes[28..32].copy_from_slice(&2.5f32.to_le_bytes());
        let value = template.decode(&bytes, &|_| None).unwrap();
        let counts = [1, -2, 3, 4].into_iter().chain([0; 8]).map(Value::Int).collect();
        assert_eq!(
            value,
            Value::Struct(vec![
                ("pilot_on".into(), TypedValue { value: Value::Bool(true), wide: false }),
                ("hourlyCount".into(), TypedValue { value: Value::Array(counts), wide: false }),
                ("rate".into(), TypedValue { value: Value::Float(2.5), wide: false }),
            ])
        );
        assert!(template.decode(&bytes[..30], &|_| None).unwrap_err().message.contains("'rate'"));
    }

    #[test]
    fn requests_are_byte_exact() {
        let mut out = Vec::new();
        attributes_request(&mut out, 0x2E9).unwrap();
        assert_eq!(out, hex("03 03 20 6C 25 00 E9 02 04 00 04 00 05 00 02 00 01 00"));
        out.clear();
        read_request(&mut out, 0x2E9, 0, 97).unwrap();
        assert_eq!(out, hex("4C 03 20 6C 25 00 E9 02 00 00 00 00 61 00"));
    }

    #[test]
    fn a_refused_or_missing_attribute_is_eproto() {
        let refused = hex("01 00 04 00 14 00");
        assert!(parse_attributes(&refused).unwrap_err().message.contains("status 0x14"));
        let missing = hex("01 00 04 00 00 00 1E 00 00 00");
        assert!(parse_attributes(&missing).unwrap_err().message.contains("lacks"));
    }
}
