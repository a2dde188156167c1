//! View services (Part 4, 5.8): Browse and BrowseNext, a node's references
//! page by page under continuation points.

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
}

/// HierarchicalReferences: Organizes, HasComponent, HasProperty and their kin.
pub const HIERARCHICAL_REFERENCES: u32 = 33;

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
    let count = r.length(8, "browse results")?.unwrap_or(0);
    if count != 1 {
        return Err(Error::proto(format!("{count} results to a {what} of one node")));
    }
    BrowseResult::decode(&mut r)
}

#[cfg(test)]
mod tests {
    use super::*;

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
