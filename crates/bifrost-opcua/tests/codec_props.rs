//! Property tests for the OPC UA binary encoding: values and NodeIds round-trip
//! through bytes (and NodeIds through text), and random input into every
//! decoder and the transport's parsers is an error at worst, never a panic.

use bifrost_opcua::encoding::{
    DataValue, Decode, DiagnosticInfo, Encode, LocalizedText, Reader, Variant, VariantArray,
};
use bifrost_opcua::node_id::{ExpandedNodeId, Guid, Identifier, NodeId};
use bifrost_opcua::{secure_channel, session, transport};
use proptest::prelude::*;

fn node_id() -> impl Strategy<Value = NodeId> {
    let identifier = prop_oneof![
        any::<u32>().prop_map(Identifier::Numeric),
        "[a-zA-Z0-9_.水]{1,12}".prop_map(Identifier::String),
        any::<(u32, u16, u16, [u8; 8])>().prop_map(|(data1, data2, data3, data4)| Identifier::Guid(Guid {
            data1,
            data2,
            data3,
            data4
        })),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Identifier::Opaque),
    ];
    (prop_oneof![Just(0u16), Just(2), any::<u16>()], identifier)
        .prop_map(|(namespace, identifier)| NodeId { namespace, identifier })
}

fn scalar() -> impl Strategy<Value = Variant> {
    prop_oneof![
        any::<bool>().prop_map(Variant::Boolean),
        any::<i8>().prop_map(Variant::SByte),
        any::<u16>().prop_map(Variant::UInt16),
        any::<i32>().prop_map(Variant::Int32),
        any::<u64>().prop_map(Variant::UInt64),
        any::<i64>().prop_map(Variant::DateTime),
        (-1.0e30f32..1.0e30).prop_map(Variant::Float),
        any::<f64>().prop_filter("a number", |f| f.is_finite()).prop_map(Variant::Double),
        prop::option::of(".{0,10}").prop_map(Variant::String),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..6)).prop_map(Variant::ByteString),
        any::<u32>().prop_map(Variant::StatusCode),
        node_id().prop_map(|id| Variant::NodeId(Box::new(id))),
        (prop::option::of("[a-z]{2}"), prop::option::of(".{0,6}"))
            .prop_map(|(locale, text)| Variant::LocalizedText(Box::new(LocalizedText { locale, text }))),
    ]
}

fn round_trip<T: Encode + for<'a> Decode<'a> + PartialEq + std::fmt::Debug>(value: &T) -> Result<(), TestCaseError> {
    let mut bytes = Vec::new();
    value.encode(&mut bytes);
    let mut r = Reader::new(&bytes);
    prop_assert_eq!(&T::decode(&mut r).unwrap(), value);
    prop_assert_eq!(r.remaining(), 0);
    Ok(())
}

proptest! {
    #[test]
    fn variants_round_trip(value in scalar(), many in prop::collection::vec(any::<i32>(), 0..12), wrap in any::<bool>()) {
        round_trip(&value)?;
        let array = Variant::Array(Box::new(VariantArray { type_id: 6, values: many.iter().copied().map(Variant::Int32).collect(), dimensions: None }));
        round_trip(&array)?;
        let value = if wrap { Variant::Variant(Box::new(value)) } else { value };
        round_trip(&DataValue { value: Some(value), status: Some(0), server_timestamp: Some(5), ..Default::default() })?;
    }

    #[test]
    fn node_ids_round_trip_through_bytes_and_text(id in node_id(), uri in prop::option::of("urn:[a-z;]{1,8}")) {
        round_trip(&id)?;
        let expanded = ExpandedNodeId { node_id: id, namespace_uri: uri, server_index: 0 };
        round_trip(&expanded)?;
        let text = expanded.to_string();
        let mut parsed = ExpandedNodeId::parse(&text).unwrap();
        if expanded.namespace_uri.is_some() {
            // Text with a URI carries no index.
            parsed.node_id.namespace = expanded.node_id.namespace;
        }
        prop_assert_eq!(parsed, expanded);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), text in ".{0,40}") {
        let _ = Variant::decode(&mut Reader::new(&bytes));
        let _ = DataValue::decode(&mut Reader::new(&bytes));
        let _ = DiagnosticInfo::decode(&mut Reader::new(&bytes));
        let _ = ExpandedNodeId::decode(&mut Reader::new(&bytes));
        let _ = ExpandedNodeId::parse(&text);
        let _ = transport::frame_len(&bytes, 65535);
        let _ = transport::Hello::parse(&bytes);
        let _ = transport::Acknowledge::parse(&bytes);
        let _ = transport::parse_error(&bytes);
        let _ = secure_channel::parse_open_response(&bytes, &transport::NoSecurity);
        let _ = secure_channel::response(&bytes, 631, "Read");
        let _ = session::parse_get_endpoints(&bytes);
        let _ = session::parse_find_servers(&bytes);
        let _ = session::parse_create_session(&bytes);
        let _ = session::parse_read(&bytes, 3);
        let _ = session::parse_read_into(&bytes, &mut [0.0; 3], &mut Vec::new());
        if let Ok(chunk) = transport::parse_chunk(&bytes) {
            let limits = transport::Negotiated { send_chunk: 8192, receive_chunk: 8192, send_message: 0, send_chunks: 0, receive_message: 100, receive_chunks: 2 };
            let _ = transport::Reassembly::default().take(&chunk, &limits);
        }
    }
}
