//! Logix tag addresses: `Counter`, `Program:Main.Counter`, `Recipe[2].Temp`,
//! `Matrix[1,2]`, `Flags.5` (bit 5 of an integer) and element ranges
//! `Big[0]{2000}` (start, then count), compiled once into the EPATH a
//! request carries; and any CIP object's attributes, `@1/1/7` (class,
//! instance, attribute) or `@1/1` (all of them).

use bifrost_core::{Error, Result};

use crate::cip;

/// A parsed tag address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogixTag {
    /// The address as written, without its range: it names the tag in errors and results.
    pub name: String,
    /// Symbolic and element segments to the first element addressed.
    pub path: Vec<u8>,
    /// Elements from there: `{count}`, else 1.
    pub count: u16,
    /// Whether `{count}` was written: the value is then an array, even of one element.
    pub range: bool,
    /// `Flags.5`: bit 5 of the integer `path` addresses.
    pub bit: Option<u8>,
    /// The name without indices or a bit, upper-case: every element of a tag has
    /// one type, which devices learn under this key.
    pub type_key: Box<str>,
    /// `@class/instance[/attribute]`: a CIP object's attribute, read and written
    /// as raw bytes with Get/Set Attribute Single, or all of them (Get Attributes All).
    pub object: Option<ObjectAccess>,
    /// An address ending in one index (`B[40]`): where its element segment starts
    /// in `path`, and the index. A BOOL array is addressed by 32-bit words: `B[40]`
    /// is bit 8 of word 1 ([`LogixTag::bool_array_word`]).
    pub last_index: Option<(u16, u32)>,
}

/// How an `@class/instance[/attribute]` address is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectAccess {
    /// Get (or Set) Attribute Single.
    Single,
    /// Get Attributes All (read only).
    All,
}

/// The longest element range one tag may ask for.
pub const MAX_COUNT: u16 = 65_535;

impl LogixTag {
    /// Parses an address; a malformed one is `EADDRESS`, naming what is wrong.
    pub fn parse(text: &str) -> Result<LogixTag> {
        let bad = |why: &str| Error::address(format!("bad EtherNet/IP tag '{text}': {why}"));
        let trimmed = text.trim();
        if let Some(object) = trimmed.strip_prefix('@') {
            return Self::object(trimmed, object).ok_or_else(|| {
                bad("an object's attribute is @class/instance/attribute or @class/instance, numbers as 1 or 0x01")
            });
        }
        let (address, count) = match trimmed.strip_suffix('}') {
            Some(head) => {
                let open = head.rfind('{').ok_or_else(|| bad("'}' without '{'"))?;
                let count: u16 = head[open + 1..]
                    .trim()
                    .parse()
                    .ok()
                    .filter(|c| *c >= 1)
                    .ok_or_else(|| bad("the element count in {...} must be 1 to 65535"))?;
                (head[..open].trim_end(), Some(count))
            }
            None => (trimmed, None),
        };
        if address.is_empty() {
            return Err(bad("no tag name"));
        }
        let mut path = Vec::with_capacity(address.len() + 8);
        let mut bit = None;
        let mut last_index = None;
        let parts = split_parts(address).ok_or_else(|| bad("unbalanced '[' and ']'"))?;
        let last = parts.len() - 1;
        for (i, part) in parts.iter().enumerate() {
            // A last part of digits alone is a bit of the integer before it.
            if i == last && i > 0 && part.bytes().all(|b| b.is_ascii_digit()) {
                let number: u8 =
                    part.parse().ok().filter(|b| *b < 64).ok_or_else(|| bad("a bit number must be 0 to 63"))?;
                bit = Some(number);
                continue;
            }
            let (name, indices) = match part.find('[') {
                Some(open) => (&part[..open], Some(&part[open + 1..part.len() - 1])),
                None => (*part, None),
            };
            // A controller's I/O and program tags carry colons (`Local:1:I`, `Program:Main`) in the first part only.
            let colons_allowed = i == 0;
            let valid_start = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
            let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons_allowed && c == ':'));
            if !valid_start || !valid || name.ends_with(':') {
                return Err(bad(&format!("'{name}' is not a tag or member name")));
            }
            cip::symbolic(&mut path, name.as_bytes()).map_err(|e| bad(&e.message))?;
            last_index = None;
            if let Some(indices) = indices {
                let indices: Vec<&str> = indices.split(',').map(str::trim).collect();
                if indices.len() > 3 {
                    return Err(bad("at most 3 array dimensions"));
                }
                let at = path.len() as u16;
                for index in &indices {
                    let index: u32 = index.parse().map_err(|_| bad(&format!("'{index}' is not an array index")))?;
                    cip::logical(&mut path, cip::Logical::Member, index);
                    last_index = (indices.len() == 1).then_some((at, index));
                }
            }
        }
        if bit.is_some() && count.is_some() {
            return Err(bad("a bit cannot have an element count"));
        }
        let type_key =
            type_key(if bit.is_some() { &address[..address.rfind('.').unwrap_or(address.len())] } else { address });
        Ok(LogixTag {
            name: address.to_string(),
            path,
            count: count.unwrap_or(1),
            range: count.is_some(),
            bit,
            type_key,
            object: None,
            last_index,
        })
    }

    /// `@class/instance[/attribute]`, numbers in decimal or 0x hex.
    fn object(text: &str, parts: &str) -> Option<LogixTag> {
        let number = |part: &str| match part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => part.parse().ok(),
        };
        let ids: Vec<u32> = parts.split('/').map(|p| number(p.trim())).collect::<Option<_>>()?;
        let (class, instance, attribute) = match ids[..] {
            [class, instance] => (class, instance, None),
            [class, instance, attribute] => (class, instance, Some(u16::try_from(attribute).ok()?)),
            _ => return None,
        };
        let path = cip::object_path(u16::try_from(class).ok()?, instance, attribute);
        let object = Some(if attribute.is_some() { ObjectAccess::Single } else { ObjectAccess::All });
        Some(LogixTag {
            name: text.to_string(),
            path,
            count: 1,
            range: false,
            bit: None,
            type_key: text.into(),
            object,
            last_index: None,
        })
    }

    /// The symbol the tag reads and the members under it, indices left out:
    /// `Program:Main.Recipe[2].Temp` is in scope `Program:Main`, `["Recipe", "Temp"]`.
    pub fn symbol_chain(&self) -> (Option<&str>, Vec<&str>) {
        let mut names: Vec<&str> = split_parts(&self.name)
            .unwrap_or_default()
            .into_iter()
            .map(|part| part.split('[').next().unwrap_or(part))
            .collect();
        if self.bit.is_some() {
            names.pop();
        }
        match names.first() {
            Some(first) if names.len() > 1 && first.to_ascii_uppercase().starts_with("PROGRAM:") => {
                (Some(names.remove(0)), names)
            }
            _ => (None, names),
        }
    }

    /// For a BOOL array (whose elements travel as 32-bit words): the word holding
    /// the addressed element, that element's bit in it, and how many words hold
    /// the `count` elements from it.
    pub fn bool_array_span(&self) -> Option<(u32, u32, u16)> {
        let (_, index) = self.last_index?;
        let words = (index % 32 + u32::from(self.count)).div_ceil(32);
        Some((index / 32, index % 32, words as u16))
    }

    /// The path to word `word` of a BOOL array this tag addresses an element of.
    pub fn word_path(&self, word: u32) -> Option<Vec<u8>> {
        let (at, _) = self.last_index?;
        let mut path = self.path[..usize::from(at)].to_vec();
        cip::logical(&mut path, cip::Logical::Member, word);
        Some(path)
    }

    /// The path with every index 0: the first element, whose type is every element's.
    pub fn first_element_path(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.path.len());
        let mut i = 0;
        while i < self.path.len() {
            let len = match self.path[i] {
                0x91 => {
                    let name = usize::from(self.path.get(i + 1).copied().unwrap_or(0));
                    2 + name + name % 2
                }
                segment @ 0x28..=0x2A => {
                    out.extend_from_slice(&[0x28, 0]);
                    i += match segment {
                        0x28 => 2,
                        0x29 => 4,
                        _ => 6,
                    };
                    continue;
                }
                // Logical class, instance or attribute segments: 8 or 16 bits.
                segment if segment & 0x03 == 0 => 2,
                _ => 4,
            };
            out.extend_from_slice(&self.path[i..(i + len).min(self.path.len())]);
            i += len;
        }
        out
    }

    /// The tag as it is written back: `name`, then `{count}` for a range.
    pub fn text(&self) -> String {
        match self.range {
            true => format!("{}{{{}}}", self.name, self.count),
            false => self.name.clone(),
        }
    }
}

/// `Recipe[2].Temp` → `RECIPE.TEMP`.
fn type_key(name: &str) -> Box<str> {
    let mut key = String::with_capacity(name.len());
    let mut depth = 0;
    for c in name.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => key.push(c.to_ascii_uppercase()),
            _ => {}
        }
    }
    key.into()
}

/// Splits at the dots outside brackets, checking brackets balance and come last in a part.
fn split_parts(address: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in address.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => {
                depth = 0;
                // Nothing may follow an index list inside a part.
                if !matches!(address[i + 1..].chars().next(), None | Some('.')) {
                    return None;
                }
            }
            '[' | ']' => return None,
            '.' if depth == 0 => {
                parts.push(&address[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return None;
    }
    parts.push(&address[start..]);
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bifrost_core::ErrorCode;

    fn path(tag: &str) -> Vec<u8> {
        LogixTag::parse(tag).unwrap().path
    }

    #[test]
    fn names_members_and_program_scope_become_symbolic_segments() {
        assert_eq!(path("Counter"), [&[0x91, 7][..], b"Counter", &[0]].concat());
        assert_eq!(
            path("Program:Main.Counter"),
            [&[0x91, 12][..], b"Program:Main", &[0x91, 7], b"Counter", &[0]].concat()
        );
        assert_eq!(path("Recipe[2].Temp"), [&[0x91, 6][..], b"Recipe", &[0x28, 2, 0x91, 4], b"Temp"].concat());
    }

    #[test]
    fn indices_take_their_shortest_element_segment() {
        assert_eq!(path("A[5]"), [0x91, 1, b'A', 0, 0x28, 5]);
        assert_eq!(path("A[300]"), [0x91, 1, b'A', 0, 0x29, 0, 0x2C, 0x01]);
        assert_eq!(path("A[70000]"), [0x91, 1, b'A', 0, 0x2A, 0, 0x70, 0x11, 0x01, 0x00]);
        assert_eq!(path("M[1, 2]"), [0x91, 1, b'M', 0, 0x28, 1, 0x28, 2]);
    }

    #[test]
    fn ranges_and_bits() {
        let range = LogixTag::parse("Big[0]{2000}").unwrap();
        assert_eq!(
            (range.count, range.range, range.name.as_str(), range.text()),
            (2000, true, "Big[0]", "Big[0]{2000}".into())
        );
        let one = LogixTag::parse("SCADA[5]").unwrap();
        assert_eq!((one.count, one.range, one.bit), (1, false, None));
        let bit = LogixTag::parse("Flags.5").unwrap();
        assert_eq!((bit.bit, bit.path), (Some(5), [&[0x91, 5][..], b"Flags", &[0]].concat()));
        assert_eq!(LogixTag::parse("Motor[1].Status.31").unwrap().bit, Some(31));
    }

    #[test]
    fn symbol_chains_leave_out_indices_and_bits() {
        let chain = |t: &str| {
            let tag = LogixTag::parse(t).unwrap();
            let (scope, names) = tag.symbol_chain();
            (scope.map(str::to_string), names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(chain("Recipe[2].Temp"), (None, vec!["Recipe".into(), "Temp".into()]));
        assert_eq!(chain("Program:Main.Line[0]{3}"), (Some("Program:Main".into()), vec!["Line".into()]));
        assert_eq!(chain("Motor.Status.3"), (None, vec!["Motor".into(), "Status".into()]));
    }

    #[test]
    fn bool_array_elements_address_their_word_and_bit() {
        let tag = LogixTag::parse("B[40]").unwrap();
        assert_eq!((tag.bool_array_span(), tag.word_path(1)), (Some((1, 8, 1)), Some(vec![0x91, 1, b'B', 0, 0x28, 1])));
        let range = LogixTag::parse("Program:P.B[30]{4}").unwrap();
        assert_eq!(range.bool_array_span(), Some((0, 30, 2)), "bits 30 to 33 span two words");
        assert!(range.word_path(1).unwrap().ends_with(&[0x28, 1]));
        assert_eq!(LogixTag::parse("M[1,2]").unwrap().bool_array_span(), None);
        assert_eq!(LogixTag::parse("R[1].Temp").unwrap().bool_array_span(), None);
        assert_eq!(LogixTag::parse("B").unwrap().bool_array_span(), None);
    }

    #[test]
    fn the_first_element_path_zeroes_every_index() {
        let first = |t: &str| LogixTag::parse(t).unwrap().first_element_path();
        assert_eq!(first("A[300]"), path("A[0]"));
        assert_eq!(first("Recipe[70000].Steps[2]"), path("Recipe[0].Steps[0]"));
        assert_eq!(first("Program:Main.Odd[5]"), path("Program:Main.Odd[0]"));
        assert_eq!(first("Counter"), path("Counter"));
    }

    #[test]
    fn object_attributes_are_logical_paths() {
        let single = LogixTag::parse("@1/1/7").unwrap();
        assert_eq!((single.path, single.object), (vec![0x20, 1, 0x24, 1, 0x30, 7], Some(ObjectAccess::Single)));
        let all = LogixTag::parse("@0xF5/1").unwrap();
        assert_eq!((all.path, all.object), (vec![0x20, 0xF5, 0x24, 1], Some(ObjectAccess::All)));
        for bad in ["@1", "@1/x/2", "@70000/1", "@1/1/70000", "@1/1/1/1"] {
            assert!(LogixTag::parse(bad).unwrap_err().message.contains("@class/instance"), "{bad}");
        }
    }

    #[test]
    fn type_keys_drop_indices_bits_and_case() {
        let key = |t: &str| LogixTag::parse(t).unwrap().type_key;
        assert_eq!(&*key("SCADA[5]"), "SCADA");
        assert_eq!(&*key("scada[0]{10}"), "SCADA");
        assert_eq!(&*key("Recipe[2].Temp"), "RECIPE.TEMP");
        assert_eq!(&*key("Program:Main.Counter"), "PROGRAM:MAIN.COUNTER");
        assert_eq!(&*key("Flags.5"), "FLAGS");
    }

    #[test]
    fn malformed_addresses_are_eaddress_and_say_why() {
        for (bad, why) in [
            ("", "no tag name"),
            ("A[1", "unbalanced"),
            ("A]1[", "unbalanced"),
            ("A[1]x", "unbalanced"),
            ("A[x]", "not an array index"),
            ("A[1,2,3,4]", "at most 3"),
            ("1abc", "not a tag or member name"),
            ("A.B-C", "not a tag or member name"),
            ("A.b:c", "not a tag or member name"),
            ("Flags.64", "0 to 63"),
            ("Flags.5.Other", "'5' is not a tag or member name"),
            ("Flags.5{2}", "cannot have an element count"),
            ("Big[0]{0}", "1 to 65535"),
            ("Big[0]{70000}", "1 to 65535"),
            ("Big}", "without '{'"),
        ] {
            let e = LogixTag::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::Address, "{bad}");
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
    }
}
