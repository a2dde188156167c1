//! View services (Part 4, 5.8): Browse and BrowseNext, a node's references
//! page by page under continuation points; TranslateBrowsePathsToNodeIds, a
//! path of browse names to the node at its end.

use bifrost_core::{Error, Result};
use bytes::Bytes;

use crate::encoding::{put_u32, Decode, Encode, LocalizedText, QualifiedName, ReadLengths, Reader};
use crate::node_id::{ExpandedNodeId, NodeId};
use crate::secure_channel;
use crate::session::ServiceRequest;

/// The binary encodings' NodeIds of the messages here (namespace 0).
pub mod encoding_id {
    pub const BROWSE_REQUEST: u32 = 527;
    pub const BROWSE_RESPONSE: u32 = 530;
    pub const BROWSE_NEXT_REQUEST: u32 = 533;
    pub const BROWSE_NEXT_RESPONSE: u32 = 536;
    pub const TRANSLATE_REQUEST: u32 = 554;
    pub const TRANSLATE_RESPONSE: u32 = 557;
}

/// HierarchicalReferences: Organizes, HasComponent, HasProperty and their kin.
pub const HIERARCHICAL_REFERENCES: u32 = 33;

/// Aggregates: HasComponent, HasProperty and their kin (a relative path's `.`).
pub const AGGREGATES: u32 = 44;

/// RootFolder, where a relative path starts unless told otherwise.
pub const ROOT_FOLDER: u32 = 84;

/// Node classes (Part 3, 8.29).
pub mod node_class {
    pub const OBJECT: u32 = 1;
    pub const VARIABLE: u32 = 2;
    pub const METHOD: u32 = 4;
}

/// One reference a Browse found.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub node_id: ExpandedNodeId,
    pub browse_name: QualifiedName,
    pub display_name: LocalizedText,
    pub node_class: u32,
}

/// One node's references so far, and where the server left off.
#[derive(Debug, Clone, PartialEq)]
pub struct BrowseResult {
    pub status: u32,
    pub continuation_point: Option<Vec<u8>>,
    pub references: Vec<Reference>,
}

/// Browse of the hierarchical references forward from `node`, at most `max_references` a page (0: the server's choice).
pub fn browse(node: &NodeId, max_references: u32) -> ServiceRequest {
    let mut out = Vec::with_capacity(64);
    NodeId::null().encode(&mut out); // the whole address space, no view
    out.extend_from_slice(&0i64.to_le_bytes());
    put_u32(&mut out, 0); // view version
    put_u32(&mut out, max_references);
    put_u32(&mut out, 1); // one node
    node.encode(&mut out);
    put_u32(&mut out, 0); // forward
    NodeId::numeric(0, HIERARCHICAL_REFERENCES).encode(&mut out);
    out.push(1); // with subtypes
    put_u32(&mut out, 0); // every node class
    put_u32(&mut out, 0x3F); // every field of a reference
    ServiceRequest { type_id: encoding_id::BROWSE_REQUEST, fields: Bytes::from(out) }
}

/// BrowseNext of one continuation point, or its release.
pub fn browse_next(continuation_point: &[u8], release: bool) -> ServiceRequest {
    let mut out = Vec::with_capacity(16 + continuation_point.len());
    out.push(u8::from(release));
    put_u32(&mut out, 1);
    Some(continuation_point).encode(&mut out);
    ServiceRequest { type_id: encoding_id::BROWSE_NEXT_REQUEST, fields: Bytes::from(out) }
}

impl BrowseResult {
    /// A result of no references: `status` says why.
    pub fn failed(status: u32) -> BrowseResult {
        BrowseResult { status, continuation_point: None, references: Vec::new() }
    }
}

impl Decode<'_> for BrowseResult {
    fn decode(r: &mut Reader<'_>) -> Result<BrowseResult> {
        let status = r.u32("a browse status")?;
        let continuation_point = r.byte_string("a continuation point")?.map(<[u8]>::to_vec);
        let count = r.length(20, "references")?.unwrap_or(0);
        let references = (0..count)
            .map(|_| {
                NodeId::decode(r)?; // reference type
                r.u8("a direction")?;
                let node_id = ExpandedNodeId::decode(r)?;
                let browse_name = QualifiedName::decode(r)?;
                let display_name = LocalizedText::decode(r)?;
                let node_class = r.u32("a node class")?;
                ExpandedNodeId::decode(r)?; // type definition
                Ok(Reference { node_id, browse_name, display_name, node_class })
            })
            .collect::<Result<_>>()?;
        Ok(BrowseResult { status, continuation_point, references })
    }
}

impl Encode for BrowseResult {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.status);
        self.continuation_point.as_deref().encode(out);
        put_u32(out, self.references.len() as u32);
        for reference in &self.references {
            NodeId::numeric(0, 47).encode(out); // HasComponent
            out.push(1);
            reference.node_id.encode(out);
            reference.browse_name.encode(out);
            reference.display_name.encode(out);
            put_u32(out, reference.node_class);
            ExpandedNodeId::from(NodeId::numeric(
                0,
                if reference.node_class == node_class::VARIABLE { 63 } else { 61 },
            ))
            .encode(out);
        }
    }
}

/// A Browse or BrowseNext response's one result.
pub fn parse_browse(body: &[u8]) -> Result<BrowseResult> {
    let mut r = Reader::new(body);
    let type_id = NodeId::decode(&mut r)?;
    let (expected, what) = if type_id == NodeId::numeric(0, encoding_id::BROWSE_NEXT_RESPONSE) {
        (encoding_id::BROWSE_NEXT_RESPONSE, "BrowseNext")
    } else {
        (encoding_id::BROWSE_RESPONSE, "Browse")
    };
    let (_, mut r) = secure_channel::response(body, expected, what)?;
    crate::session::result_count(&mut r, 8, 1, || format!("a {what} of one node"))?;
    BrowseResult::decode(&mut r)
}

/// One step of a relative path: references of a type (with its subtypes) followed
/// forward to the target of a browse name.
#[derive(Debug, Clone, PartialEq)]
pub struct PathElement {
    pub reference_type: u32,
    pub target: QualifiedName,
}

/// The characters a browse name in a relative path escapes with `&`.
const RESERVED: &str = "/.<>:#!&";

/// Parses a relative path's text (Part 4, A.2): `/` follows hierarchical
/// references and `.` aggregates, each to a browse name `[namespace index:]name`
/// in which `&` escapes the reserved characters `/.<>:#!&`. Explicit reference
/// types (`<...>`) are refused.
pub fn parse_relative_path(text: &str) -> Result<Vec<PathElement>> {
    let bad = |why: &str| Error::address(format!("'{text}' is not a browse path: {why}"));
    let mut elements = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(step) = chars.next() {
        let reference_type = match step {
            '/' => HIERARCHICAL_REFERENCES,
            '.' => AGGREGATES,
            '<' => return Err(bad("explicit reference types (<...>) are not supported; use / or .")),
            _ => return Err(bad("each step starts with / or .")),
        };
        let (mut name, mut namespace) = (String::new(), None);
        while let Some(&c) = chars.peek() {
            if c == '/' || c == '.' || c == '<' {
                break;
            }
            chars.next();
            match c {
                '&' => match chars.next() {
                    Some(escaped) if RESERVED.contains(escaped) => name.push(escaped),
                    _ => return Err(bad("& escapes one of /.<>:#!&")),
                },
                ':' if namespace.is_none() => {
                    namespace = Some(name.parse::<u16>().map_err(|_| bad("a namespace index is a number"))?);
                    name.clear();
                }
                '>' | ':' | '#' | '!' => return Err(bad(&format!("'{c}' must be escaped as &{c}"))),
                _ => name.push(c),
            }
        }
        if name.is_empty() {
            return Err(bad("a step names no browse name"));
        }
        elements.push(PathElement {
            reference_type,
            target: QualifiedName { namespace: namespace.unwrap_or(0), name: Some(name) },
        });
    }
    if elements.is_empty() {
        return Err(bad("it has no steps"));
    }
    Ok(elements)
}

/// TranslateBrowsePathsToNodeIds of each path from its starting node.
pub fn translate(paths: &[(&NodeId, &[PathElement])]) -> ServiceRequest {
    let mut out = Vec::with_capacity(64 * paths.len());
    put_u32(&mut out, paths.len() as u32);
    for (start, elements) in paths {
        start.encode(&mut out);
        put_u32(&mut out, elements.len() as u32);
        for element in *elements {
            NodeId::numeric(0, element.reference_type).encode(&mut out);
            out.push(0); // forward
            out.push(1); // with subtypes
            element.target.encode(&mut out);
        }
    }
    ServiceRequest { type_id: encoding_id::TRANSLATE_REQUEST, fields: Bytes::from(out) }
}

/// Where one path led: the node at its end, or the status saying why none.
pub type PathTarget = std::result::Result<ExpandedNodeId, u32>;

/// A TranslateBrowsePathsToNodeIds response's results, one per path asked: each
/// path's first target reached by the whole path.
pub fn parse_translate(body: &[u8], asked: usize) -> Result<Vec<PathTarget>> {
    let (_, mut r) = secure_channel::response(body, encoding_id::TRANSLATE_RESPONSE, "TranslateBrowsePathsToNodeIds")?;
    crate::session::result_count(&mut r, 8, asked, || format!("a translation of {asked} browse paths"))?;
    (0..asked)
        .map(|_| {
            let status = r.u32("a browse path status")?;
            let targets = r.length(8, "browse path targets")?.unwrap_or(0);
            let mut whole = None;
            for _ in 0..targets {
                let target = ExpandedNodeId::decode(&mut r)?;
                // u32::MAX: the whole path was followed (else the index of the first step left).
                if r.u32("a remaining path index")? == u32::MAX && whole.is_none() {
                    whole = Some(target);
                }
            }
            Ok(match whole {
                Some(target) if crate::status::severity(status) != crate::status::Severity::Bad => Ok(target),
                _ => Err(if crate::status::severity(status) == crate::status::Severity::Bad {
                    status
                } else {
                    BAD_NO_MATCH
                }),
            })
        })
        .collect()
}

/// BadNoMatch: the path leads nowhere.
pub const BAD_NO_MATCH: u32 = 0x806F_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_parse_as_part_4_a2_writes_them() {
        let path = parse_relative_path("/Objects/2:Line&/1.Speed").unwrap();
        let names: Vec<_> =
            path.iter().map(|e| (e.reference_type, e.target.namespace, e.target.name.clone().unwrap())).collect();
        assert_eq!(names, [(33, 0, "Objects".into()), (33, 2, "Line/1".into()), (44, 0, "Speed".into())]);
        for bad in ["", "Objects", "/", "/x:y", "/a<b>", "<HasChild>x", "/a&", "/a:b:c", "/a#b"] {
            assert_eq!(parse_relative_path(bad).unwrap_err().code, bifrost_core::ErrorCode::Address, "{bad}");
        }
        // One path of one step: RootFolder, HierarchicalReferences forward with subtypes, 0:Objects.
        let request = translate(&[(&NodeId::numeric(0, ROOT_FOLDER), &parse_relative_path("/Objects").unwrap())]);
        let expected =
            [1, 0, 0, 0, 0, 84, 1, 0, 0, 0, 0, 33, 0, 1, 0, 0, 7, 0, 0, 0, b'O', b'b', b'j', b'e', b'c', b't', b's'];
        assert_eq!(&request.fields[..], &expected);
    }

    #[test]
    fn browse_results_round_trip_and_requests_are_byte_exact() {
        let result = BrowseResult {
            status: 0,
            continuation_point: Some(vec![1, 2, 3]),
            references: vec![Reference {
                node_id: ExpandedNodeId::from(NodeId::numeric(1, 7)),
                browse_name: QualifiedName { namespace: 1, name: Some("Speed".into()) },
                display_name: LocalizedText { locale: None, text: Some("Speed".into()) },
                node_class: node_class::VARIABLE,
            }],
        };
        let mut out = Vec::new();
        result.encode(&mut out);
        assert_eq!(BrowseResult::decode(&mut Reader::new(&out)).unwrap(), result);
        // Forward, HierarchicalReferences (i=33) with subtypes, every class, every field.
        let request = browse(&NodeId::numeric(0, 85), 100);
        assert!(request.fields.ends_with(&[0x00, 0x55, 0, 0, 0, 0, 0, 0x21, 1, 0, 0, 0, 0, 0x3F, 0, 0, 0]));
        let next = browse_next(&[9, 9], true);
        assert_eq!(&next.fields[..], &[1, 1, 0, 0, 0, 2, 0, 0, 0, 9, 9]);
    }
}
