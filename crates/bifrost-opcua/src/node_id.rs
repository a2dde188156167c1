//! NodeIds: the text forms users write (`ns=2;s=Line1.Speed`, `i=2258`,
//! `g=72962B91-FA75-4AE6-8D28-B404DC7DAF63`, `b=<base64>`, and
//! `nsu=<uri>;s=...`, resolved through the server's namespace array), and the
//! binary forms on the wire (Part 6, 5.2.2.9 and 5.2.2.10).

use bifrost_core::{Error, Result};

use crate::encoding::{Decode, Encode, ReadLengths, Reader};

/// A Guid, as OPC UA lays it out: the first three fields little-endian, the last eight bytes as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

impl Guid {
    /// `72962B91-FA75-4AE6-8D28-B404DC7DAF63` (either case).
    pub fn parse(text: &str) -> Option<Guid> {
        let parts: Vec<&str> = text.split('-').collect();
        let [a, b, c, d, e] = parts[..] else { return None };
        if [a.len(), b.len(), c.len(), d.len(), e.len()] != [8, 4, 4, 4, 12] {
            return None;
        }
        let tail = u64::from_str_radix(&format!("{d}{e}"), 16).ok()?;
        Some(Guid {
            data1: u32::from_str_radix(a, 16).ok()?,
            data2: u16::from_str_radix(b, 16).ok()?,
            data3: u16::from_str_radix(c, 16).ok()?,
            data4: tail.to_be_bytes(),
        })
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.data4;
        write!(f, "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-", self.data1, self.data2, self.data3, d[0], d[1])?;
        d[2..].iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl Encode for Guid {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data1.to_le_bytes());
        out.extend_from_slice(&self.data2.to_le_bytes());
        out.extend_from_slice(&self.data3.to_le_bytes());
        out.extend_from_slice(&self.data4);
    }
}

impl Decode<'_> for Guid {
    fn decode(r: &mut Reader<'_>) -> Result<Guid> {
        let (data1, data2, data3) = (r.u32("a Guid")?, r.u16("a Guid")?, r.u16("a Guid")?);
        let mut data4 = [0; 8];
        data4.copy_from_slice(r.bytes(8, "a Guid")?);
        Ok(Guid { data1, data2, data3, data4 })
    }
}

/// What identifies a node within its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identifier {
    Numeric(u32),
    String(String),
    Guid(Guid),
    /// A ByteString identifier.
    Opaque(Vec<u8>),
}

/// A node: its namespace index and identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId {
    pub namespace: u16,
    pub identifier: Identifier,
}

impl NodeId {
    pub fn numeric(namespace: u16, id: u32) -> NodeId {
        NodeId { namespace, identifier: Identifier::Numeric(id) }
    }

    /// The null NodeId, `i=0`.
    pub fn null() -> NodeId {
        NodeId::numeric(0, 0)
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace != 0 {
            write!(f, "ns={};", self.namespace)?;
        }
        match &self.identifier {
            Identifier::Numeric(id) => write!(f, "i={id}"),
            Identifier::String(s) => write!(f, "s={s}"),
            Identifier::Guid(g) => write!(f, "g={g}"),
            Identifier::Opaque(b) => write!(f, "b={}", base64_encode(b)),
        }
    }
}

/// Binary NodeId encodings (the first byte's low bits).
mod form {
    pub const TWO_BYTE: u8 = 0x00;
    pub const FOUR_BYTE: u8 = 0x01;
    pub const NUMERIC: u8 = 0x02;
    pub const STRING: u8 = 0x03;
    pub const GUID: u8 = 0x04;
    pub const BYTE_STRING: u8 = 0x05;
}
/// ExpandedNodeId flags in the first byte: a namespace URI follows, a server index follows.
const URI_FLAG: u8 = 0x80;
const SERVER_FLAG: u8 = 0x40;

impl NodeId {
    /// Writes the node id; `flags` go into its first byte (an ExpandedNodeId's).
    fn encode_with(&self, flags: u8, out: &mut Vec<u8>) {
        match &self.identifier {
            Identifier::Numeric(id) if self.namespace == 0 && *id <= 0xFF => {
                out.extend_from_slice(&[form::TWO_BYTE | flags, *id as u8]);
            }
            Identifier::Numeric(id) if self.namespace <= 0xFF && *id <= 0xFFFF => {
                out.extend_from_slice(&[form::FOUR_BYTE | flags, self.namespace as u8]);
                out.extend_from_slice(&(*id as u16).to_le_bytes());
            }
            identifier => {
                let form = match identifier {
                    Identifier::Numeric(_) => form::NUMERIC,
                    Identifier::String(_) => form::STRING,
                    Identifier::Guid(_) => form::GUID,
                    Identifier::Opaque(_) => form::BYTE_STRING,
                };
                out.push(form | flags);
                out.extend_from_slice(&self.namespace.to_le_bytes());
                match identifier {
                    Identifier::Numeric(id) => out.extend_from_slice(&id.to_le_bytes()),
                    Identifier::String(s) => Some(s.as_str()).encode(out),
                    Identifier::Guid(g) => g.encode(out),
                    Identifier::Opaque(b) => Some(b.as_slice()).encode(out),
                }
            }
        }
    }

    /// Reads a node id; returns it with the flag bits of its first byte.
    fn decode_with(r: &mut Reader<'_>) -> Result<(NodeId, u8)> {
        let first = r.u8("a NodeId's encoding")?;
        let identifier_of = |namespace, identifier| NodeId { namespace, identifier };
        let id = match first & 0x3F {
            form::TWO_BYTE => NodeId::numeric(0, u32::from(r.u8("a NodeId")?)),
            form::FOUR_BYTE => {
                let namespace = u16::from(r.u8("a NodeId's namespace")?);
                NodeId::numeric(namespace, u32::from(r.u16("a NodeId")?))
            }
            form::NUMERIC => identifier_of(r.u16("a NodeId's namespace")?, Identifier::Numeric(r.u32("a NodeId")?)),
            form::STRING => {
                let namespace = r.u16("a NodeId's namespace")?;
                let text = r.string("a NodeId's string")?.unwrap_or_default();
                identifier_of(namespace, Identifier::String(text.to_string()))
            }
            form::GUID => identifier_of(r.u16("a NodeId's namespace")?, Identifier::Guid(Guid::decode(r)?)),
            form::BYTE_STRING => {
                let namespace = r.u16("a NodeId's namespace")?;
                let bytes = r.byte_string("a NodeId's bytes")?.unwrap_or_default();
                identifier_of(namespace, Identifier::Opaque(bytes.to_vec()))
            }
            other => return Err(Error::proto(format!("unknown NodeId encoding 0x{other:02x}"))),
        };
        Ok((id, first & 0xC0))
    }
}

impl Encode for NodeId {
    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_with(0, out);
    }
}

impl Decode<'_> for NodeId {
    fn decode(r: &mut Reader<'_>) -> Result<NodeId> {
        match NodeId::decode_with(r)? {
            (id, 0) => Ok(id),
            (_, flags) => Err(Error::proto(format!("a NodeId carries ExpandedNodeId flags 0x{flags:02x}"))),
        }
    }
}

/// A node id that may name its namespace by URI (and a server by index).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExpandedNodeId {
    pub node_id: NodeId,
    /// When set, it names the namespace and `node_id.namespace` is not used.
    pub namespace_uri: Option<String>,
    pub server_index: u32,
}

impl ExpandedNodeId {
    /// Parses a NodeId as users write it: `ns=2;s=Line1.Speed`, `i=2258`,
    /// `g=<guid>`, `b=<base64>`, each optionally after `ns=<index>;` or
    /// `nsu=<uri>;`. A malformed one is `EADDRESS`, saying why.
    pub fn parse(text: &str) -> Result<ExpandedNodeId> {
        let bad = |why: &str| {
            Error::address(format!(
                "bad NodeId '{text}': {why} (as in ns=2;s=Line1.Speed, i=2258 or nsu=urn:x;s=Speed)"
            ))
        };
        let trimmed = text.trim();
        let (namespace, namespace_uri, rest) = if let Some(after) = trimmed.strip_prefix("nsu=") {
            // The URI runs to the last ';' before the identifier: URIs may hold ';' themselves.
            let at = ["i=", "s=", "g=", "b="]
                .iter()
                .filter_map(|kind| after.rfind(&format!(";{kind}")))
                .min()
                .ok_or_else(|| bad("no identifier after the namespace URI"))?;
            if at == 0 {
                return Err(bad("an empty namespace URI"));
            }
            (0, Some(after[..at].to_string()), &after[at + 1..])
        } else if let Some(after) = trimmed.strip_prefix("ns=") {
            let (index, rest) = after.split_once(';').ok_or_else(|| bad("no ';' after the namespace index"))?;
            let index = index.parse::<u16>().map_err(|_| bad("the namespace index must be 0 to 65535"))?;
            (index, None, rest)
        } else {
            (0, None, trimmed)
        };
        let identifier = match rest.split_at_checked(2) {
            Some(("i=", id)) => {
                Identifier::Numeric(id.parse().map_err(|_| bad("a numeric identifier must be 0 to 4294967295"))?)
            }
            Some(("s=", s)) if !s.is_empty() => Identifier::String(s.to_string()),
            Some(("s=", _)) => return Err(bad("an empty string identifier")),
            Some(("g=", g)) => Identifier::Guid(Guid::parse(g).ok_or_else(|| bad("not a Guid"))?),
            Some(("b=", b)) => Identifier::Opaque(base64_decode(b).ok_or_else(|| bad("not base64"))?),
            _ => return Err(bad("the identifier must start with i=, s=, g= or b=")),
        };
        Ok(ExpandedNodeId { node_id: NodeId { namespace, identifier }, namespace_uri, server_index: 0 })
    }

    /// The node id on this server: a namespace URI becomes its index in the server's namespace array.
    pub fn resolve(&self, namespaces: &[String]) -> Result<NodeId> {
        if self.server_index != 0 {
            return Err(Error::address(format!("{self} is on another server (index {})", self.server_index)));
        }
        let Some(uri) = &self.namespace_uri else { return Ok(self.node_id.clone()) };
        let index = namespaces
            .iter()
            .position(|n| n == uri)
            .ok_or_else(|| Error::address(format!("the server has no namespace '{uri}'")))?;
        let namespace = u16::try_from(index).map_err(|_| Error::address(format!("namespace '{uri}' is past 65535")))?;
        Ok(NodeId { namespace, identifier: self.node_id.identifier.clone() })
    }
}

impl std::fmt::Display for ExpandedNodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.server_index != 0 {
            write!(f, "svr={};", self.server_index)?;
        }
        match &self.namespace_uri {
            Some(uri) => write!(f, "nsu={uri};{}", NodeId { namespace: 0, ..self.node_id.clone() }),
            None => write!(f, "{}", self.node_id),
        }
    }
}

impl From<NodeId> for ExpandedNodeId {
    fn from(node_id: NodeId) -> ExpandedNodeId {
        ExpandedNodeId { node_id, namespace_uri: None, server_index: 0 }
    }
}

impl Encode for ExpandedNodeId {
    fn encode(&self, out: &mut Vec<u8>) {
        let flags = if self.namespace_uri.is_some() { URI_FLAG } else { 0 }
            | if self.server_index != 0 { SERVER_FLAG } else { 0 };
        self.node_id.encode_with(flags, out);
        if let Some(uri) = &self.namespace_uri {
            Some(uri.as_str()).encode(out);
        }
        if self.server_index != 0 {
            out.extend_from_slice(&self.server_index.to_le_bytes());
        }
    }
}

impl Decode<'_> for ExpandedNodeId {
    fn decode(r: &mut Reader<'_>) -> Result<ExpandedNodeId> {
        let (node_id, flags) = NodeId::decode_with(r)?;
        let namespace_uri = match flags & URI_FLAG {
            0 => None,
            _ => r.string("a namespace URI")?.map(str::to_string),
        };
        let server_index = if flags & SERVER_FLAG != 0 { r.u32("a server index")? } else { 0 };
        Ok(ExpandedNodeId { node_id, namespace_uri, server_index })
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as opaque identifiers are written.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            match i <= chunk.len() {
                true => out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char),
                false => out.push('='),
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes() {
        bits = bits << 6 | BASE64.iter().position(|&b| b == c)? as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn encoded(id: &NodeId) -> Vec<u8> {
        let mut out = Vec::new();
        id.encode(&mut out);
        out
    }

    /// The examples of Part 6, 5.2.2.9: each form takes its shortest encoding.
    #[test]
    fn the_specifications_examples_encode_byte_exact() {
        assert_eq!(encoded(&NodeId::numeric(0, 72)), hex("00 48"));
        assert_eq!(encoded(&NodeId::numeric(5, 1025)), hex("01 05 01 04"));
        let string = NodeId { namespace: 1, identifier: Identifier::String("Hot水".into()) };
        assert_eq!(encoded(&string), hex("03 01 00 06 00 00 00 48 6F 74 E6 B0 B4"));
        let guid = Guid::parse("72962B91-FA75-4AE6-8D28-B404DC7DAF63").unwrap();
        let mut out = Vec::new();
        guid.encode(&mut out);
        assert_eq!(out, hex("91 2B 96 72 75 FA E6 4A 8D 28 B4 04 DC 7D AF 63"));
        assert_eq!(guid.to_string(), "72962B91-FA75-4AE6-8D28-B404DC7DAF63");
        assert_eq!(encoded(&NodeId::numeric(0, 2258)), hex("01 00 D2 08"));
        assert_eq!(encoded(&NodeId::numeric(300, 7)), hex("02 2C 01 07 00 00 00"));
    }

    #[test]
    fn text_forms_parse_and_print_back() {
        for text in [
            "i=2258",
            "ns=2;s=Line1.Speed",
            "ns=3;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63",
            "ns=1;b=AQID/w==",
            "nsu=urn:x;s=Speed",
            "nsu=urn:a;b;i=5",
        ] {
            assert_eq!(ExpandedNodeId::parse(text).unwrap().to_string(), text);
        }
        let id = ExpandedNodeId::parse("ns=1;b=AQID/w==").unwrap();
        assert_eq!(id.node_id.identifier, Identifier::Opaque(vec![1, 2, 3, 255]));
        let uri = ExpandedNodeId::parse("nsu=urn:a;b;i=5").unwrap();
        assert_eq!(uri.namespace_uri.as_deref(), Some("urn:a;b"), "a URI may hold ';'");
    }

    #[test]
    fn namespace_uris_resolve_through_the_servers_array() {
        let namespaces = ["http://opcfoundation.org/UA/".to_string(), "urn:x".into(), "urn:y".into()];
        let id = ExpandedNodeId::parse("nsu=urn:y;s=Speed").unwrap();
        assert_eq!(id.resolve(&namespaces).unwrap().to_string(), "ns=2;s=Speed");
        let missing = ExpandedNodeId::parse("nsu=urn:z;i=1").unwrap().resolve(&namespaces).unwrap_err();
        assert!(missing.message.contains("no namespace 'urn:z'"));
    }

    #[test]
    fn malformed_text_is_eaddress_and_says_why() {
        for (bad, why) in [
            ("", "must start with i="),
            ("i=x", "numeric identifier"),
            ("ns=70000;i=1", "0 to 65535"),
            ("ns=2", "no ';'"),
            ("ns=2;s=", "empty string"),
            ("ns=2;g=nope", "not a Guid"),
            ("ns=2;b=@@", "not base64"),
            ("nsu=urn:x", "no identifier"),
            ("x=1", "must start with i="),
        ] {
            let e = ExpandedNodeId::parse(bad).unwrap_err();
            assert_eq!(e.code, bifrost_core::ErrorCode::Address, "{bad}");
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn expanded_node_ids_carry_their_uri_and_server() {
        let id =
            ExpandedNodeId { node_id: NodeId::numeric(0, 5), namespace_uri: Some("urn:x".into()), server_index: 2 };
        let mut out = Vec::new();
        id.encode(&mut out);
        assert_eq!(out, hex("C0 05 05 00 00 00 75 72 6E 3A 78 02 00 00 00"));
        assert_eq!(ExpandedNodeId::decode(&mut Reader::new(&out)).unwrap(), id);
        assert!(NodeId::decode(&mut Reader::new(&out)).is_err(), "a NodeId field never carries the flags");
    }
}
