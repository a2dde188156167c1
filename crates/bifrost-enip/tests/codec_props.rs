//! Property tests for the EtherNet/IP codec: round trips of values, packets and
//! tag paths, and random input into every decoder (which must never panic).

use bifrost_core::Value;
use bifrost_enip::cip::{self, Response};
use bifrost_enip::encap;
use bifrost_enip::logix::{self, CipType, TagData};
use bifrost_enip::server;
use bifrost_enip::tag::LogixTag;
use bifrost_enip::template::{self, Template};
use proptest::prelude::*;

/// A number of one elementary type, in its range.
fn number() -> impl Strategy<Value = (CipType, Value)> {
    prop_oneof![
        any::<i8>().prop_map(|v| (CipType::Sint, Value::Int(v.into()))),
        any::<i16>().prop_map(|v| (CipType::Int, Value::Int(v.into()))),
        any::<i32>().prop_map(|v| (CipType::Dint, Value::Int(v.into()))),
        any::<i64>().prop_map(|v| (CipType::Lint, Value::Int(v))),
        any::<u8>().prop_map(|v| (CipType::Usint, Value::UInt(v.into()))),
        any::<u16>().prop_map(|v| (CipType::Uint, Value::UInt(v.into()))),
        any::<u32>().prop_map(|v| (CipType::Udint, Value::UInt(v.into()))),
        any::<u64>().prop_map(|v| (CipType::Ulint, Value::UInt(v))),
        any::<bool>().prop_map(|v| (CipType::Bool, Value::Bool(v))),
        (-1.0e30f32..1.0e30).prop_map(|v| (CipType::Real, Value::Float(f64::from(v)))),
        any::<f64>().prop_filter("a number", |v| v.is_finite()).prop_map(|v| (CipType::Lreal, Value::Float(v))),
    ]
}

proptest! {
    #[test]
    fn values_round_trip(values in prop::collection::vec(number(), 1..8)) {
        let ty = values[0].0;
        let same: Vec<Value> = values.iter().filter(|(t, _)| *t == ty).map(|(_, v)| v.clone()).collect();
        let mut data = Vec::new();
        let count = logix::encode_values(ty, &Value::Array(same.clone()), &mut data).unwrap();
        prop_assert_eq!(usize::from(count), same.len());
        let decoded = logix::decode_values(&TagData { ty, data: &data }, same.len(), true).unwrap();
        prop_assert_eq!(decoded, Value::Array(same.clone()));
        // The bulk decoder agrees with the value decoder.
        let mut numbers = vec![0.0; same.len()];
        logix::elements_f64(ty, &data, &mut numbers).unwrap();
        for (n, v) in numbers.iter().zip(&same) {
            let expected = match v { Value::Int(i) => *i as f64, Value::UInt(u) => *u as f64, Value::Float(f) => *f, Value::Bool(b) => f64::from(u8::from(*b)), _ => unreachable!() };
            prop_assert_eq!(*n, expected);
        }
    }

    #[test]
    fn multiple_service_packets_round_trip(requests in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 1..30)) {
        let slices: Vec<&[u8]> = requests.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        cip::multiple_service_packet(&mut out, &slices).unwrap();
        prop_assert_eq!(out.len(), cip::multiple_service_overhead(slices.len()) + slices.iter().map(|r| r.len()).sum::<usize>());
        prop_assert_eq!(cip::split_multiple(&out[6..]).unwrap(), slices);
    }

    #[test]
    fn tag_names_and_indices_round_trip(name in "[A-Za-z_][A-Za-z0-9_]{0,40}", index in proptest::option::of(any::<u32>()), count in proptest::option::of(1u16..)) {
        let mut text = name.clone();
        if let Some(index) = index { text.push_str(&format!("[{index}]")); }
        if let Some(count) = count { text.push_str(&format!("{{{count}}}")); }
        let tag = LogixTag::parse(&text).unwrap();
        prop_assert_eq!(tag.text(), text);
        prop_assert_eq!(tag.count, count.unwrap_or(1));
        prop_assert_eq!(tag.path.len() % 2, 0, "a path is whole words");
        prop_assert_eq!(&tag.path[2..2 + name.len()], name.as_bytes());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), text in ".{0,60}") {
        let _ = encap::Header::parse(&bytes);
        let _ = encap::frame_len(&bytes);
        let _ = encap::payload(&bytes);
        let _ = encap::items(&bytes);
        let _ = encap::parse_list_identity(&bytes);
        let _ = Response::parse(&bytes);
        let _ = cip::split_multiple(&bytes);
        let _ = cip::parse_unconnected_send(&bytes);
        let _ = cip::parse_forward_open(true, &bytes);
        let _ = cip::parse_forward_open(false, &bytes);
        let _ = cip::parse_forward_open_reply(&bytes);
        let _ = logix::parse_write(&bytes, true);
        if let Ok(tag) = logix::parse_read_reply(&bytes) {
            let _ = logix::decode_values(&tag, 3, true);
            let mut out = [0.0; 4];
            let _ = logix::elements_f64(tag.ty, tag.data, &mut out);
        }
        let _ = LogixTag::parse(&text);
        let _ = cip::route_path(&text);
        if let Ok(attributes) = template::parse_attributes(&bytes) {
            if let Ok(t) = Template::parse(0x100, &attributes, &bytes) {
                // Nested in itself: refused by depth, never a stack overflow.
                let _ = t.decode(&bytes, &|_| Some(&t));
            }
        }
        let _ = server::parse_udt(&text, &[]);
    }

    #[test]
    fn structure_types_lay_out_and_their_definitions_round_trip(members in prop::collection::vec(0usize..9, 1..12)) {
        const TYPES: [&str; 9] = ["BOOL", "SINT", "INT", "DINT", "LINT", "REAL", "LREAL", "STRING", "INT[3]"];
        let spec = members.iter().enumerate().map(|(i, t)| format!("M{i}:{}", TYPES[*t])).collect::<Vec<_>>().join(",");
        let udt = server::parse_udt(&format!("T={spec}"), &[]).unwrap();
        let mut definition = Vec::new();
        udt.write_definition(&mut definition);
        let attributes = udt.attributes();
        prop_assert!(attributes.definition_len() >= definition.len());
        prop_assert_eq!(&Template::parse(udt.id, &attributes, &definition).unwrap(), &udt);
        // Every member lies inside the structure, and zeroes decode to every visible member.
        for member in &udt.members {
            prop_assert!(member.offset < udt.size);
        }
        match udt.decode(&vec![0; udt.size as usize], &|_| None).unwrap() {
            Value::Struct(decoded) => prop_assert_eq!(decoded.len(), members.len()),
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
