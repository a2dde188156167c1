//! Property tests for the Modbus codec: round trips through every framing,
//! and random input into every decoder (which must never panic).

use bifrost_core::{ByteOrder, DataType, ErrorCode};
use bifrost_modbus::pdu::{DeviceIdentification, Request, Response, MAX_PDU_LEN};
use bifrost_modbus::tag::{ModbusTag, Table};
use bifrost_modbus::{ascii, rtu, tcp};
use proptest::prelude::*;

/// An owned request, so strategies can hold the payload the `Request` borrows.
#[derive(Debug, Clone)]
enum OwnedRequest {
    Read(u8, u16, u16),
    WriteSingleCoil(u16, bool),
    WriteSingleRegister(u16, u16),
    WriteMultipleCoils(u16, u16, Vec<u8>),
    WriteMultipleRegisters(u16, Vec<u8>),
    MaskWrite(u16, u16, u16),
    ReadWrite(u16, u16, u16, Vec<u8>),
    DeviceId(u8, u8),
}

impl OwnedRequest {
    fn request(&self) -> Request<'_> {
        match *self {
            OwnedRequest::Read(f, address, quantity) => match f {
                1 => Request::ReadCoils { address, quantity },
                2 => Request::ReadDiscreteInputs { address, quantity },
                3 => Request::ReadHoldingRegisters { address, quantity },
                _ => Request::ReadInputRegisters { address, quantity },
            },
            OwnedRequest::WriteSingleCoil(address, value) => Request::WriteSingleCoil { address, value },
            OwnedRequest::WriteSingleRegister(address, value) => Request::WriteSingleRegister { address, value },
            OwnedRequest::WriteMultipleCoils(address, quantity, ref packed) => {
                Request::WriteMultipleCoils { address, quantity, packed }
            }
            OwnedRequest::WriteMultipleRegisters(address, ref registers) => {
                Request::WriteMultipleRegisters { address, registers }
            }
            OwnedRequest::MaskWrite(address, and_mask, or_mask) => {
                Request::MaskWriteRegister { address, and_mask, or_mask }
            }
            OwnedRequest::ReadWrite(read_address, read_quantity, write_address, ref w) => {
                Request::ReadWriteMultipleRegisters { read_address, read_quantity, write_address, write_registers: w }
            }
            OwnedRequest::DeviceId(read_code, object_id) => Request::ReadDeviceIdentification { read_code, object_id },
        }
    }
}

/// (address, quantity) with quantity in 1..=max and address + quantity <= 65536.
fn span(max: u16) -> impl Strategy<Value = (u16, u16)> {
    (1..=max).prop_flat_map(|q| ((0..=(65536 - u32::from(q))).prop_map(|a| a as u16), Just(q)))
}

fn valid_request() -> impl Strategy<Value = OwnedRequest> {
    prop_oneof![
        (1u8..=2, span(2000)).prop_map(|(f, (a, q))| OwnedRequest::Read(f, a, q)),
        (3u8..=4, span(125)).prop_map(|(f, (a, q))| OwnedRequest::Read(f, a, q)),
        (any::<u16>(), any::<bool>()).prop_map(|(a, v)| OwnedRequest::WriteSingleCoil(a, v)),
        (any::<u16>(), any::<u16>()).prop_map(|(a, v)| OwnedRequest::WriteSingleRegister(a, v)),
        span(1968).prop_flat_map(|(a, q)| {
            prop::collection::vec(any::<u8>(), usize::from(q).div_ceil(8))
                .prop_map(move |p| OwnedRequest::WriteMultipleCoils(a, q, p))
        }),
        span(123).prop_flat_map(|(a, q)| {
            prop::collection::vec(any::<u8>(), usize::from(q) * 2)
                .prop_map(move |r| OwnedRequest::WriteMultipleRegisters(a, r))
        }),
        (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(a, and, or)| OwnedRequest::MaskWrite(a, and, or)),
        (span(125), span(121)).prop_flat_map(|((ra, rq), (wa, wq))| {
            prop::collection::vec(any::<u8>(), usize::from(wq) * 2)
                .prop_map(move |w| OwnedRequest::ReadWrite(ra, rq, wa, w))
        }),
        (1u8..=4, any::<u8>()).prop_map(|(c, o)| OwnedRequest::DeviceId(c, o)),
    ]
}

/// Requests with unconstrained fields, valid or not.
fn any_request() -> impl Strategy<Value = OwnedRequest> {
    let data = || prop::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        (1u8..=4, any::<u16>(), any::<u16>()).prop_map(|(f, a, q)| OwnedRequest::Read(f, a, q)),
        (any::<u16>(), any::<u16>(), data()).prop_map(|(a, q, p)| OwnedRequest::WriteMultipleCoils(a, q, p)),
        (any::<u16>(), data()).prop_map(|(a, r)| OwnedRequest::WriteMultipleRegisters(a, r)),
        (any::<u16>(), any::<u16>(), any::<u16>(), data())
            .prop_map(|(ra, rq, wa, w)| OwnedRequest::ReadWrite(ra, rq, wa, w)),
        (any::<u8>(), any::<u8>()).prop_map(|(c, o)| OwnedRequest::DeviceId(c, o)),
    ]
}

#[derive(Debug, Clone)]
enum OwnedResponse {
    ReadBits(u8, Vec<u8>),
    ReadRegisters(u8, Vec<u8>),
    WriteSingleCoil(u16, bool),
    WriteSingleRegister(u16, u16),
    WriteMultiple(u8, u16, u16),
    MaskWrite(u16, u16, u16),
    DeviceId { read_code: u8, conformity: u8, more: bool, next: u8, objects: Vec<(u8, Vec<u8>)> },
    Exception(u8, u8),
}

impl OwnedResponse {
    fn function(&self) -> u8 {
        match self {
            OwnedResponse::ReadBits(f, _)
            | OwnedResponse::ReadRegisters(f, _)
            | OwnedResponse::WriteMultiple(f, _, _)
            | OwnedResponse::Exception(f, _) => *f,
            OwnedResponse::WriteSingleCoil(..) => 5,
            OwnedResponse::WriteSingleRegister(..) => 6,
            OwnedResponse::MaskWrite(..) => 22,
            OwnedResponse::DeviceId { .. } => 43,
        }
    }

    /// Raw object bytes for a device identification response.
    fn object_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let OwnedResponse::DeviceId { objects, .. } = self {
            for (id, value) in objects {
                out.push(*id);
                out.push(value.len() as u8);
                out.extend_from_slice(value);
            }
        }
        out
    }

    fn response<'a>(&self, objects: &'a [u8], data: &'a [u8]) -> Response<'a> {
        match *self {
            OwnedResponse::ReadBits(..) => Response::ReadBits { packed: data },
            OwnedResponse::ReadRegisters(..) => Response::ReadRegisters { registers: data },
            OwnedResponse::WriteSingleCoil(address, value) => Response::WriteSingleCoil { address, value },
            OwnedResponse::WriteSingleRegister(address, value) => Response::WriteSingleRegister { address, value },
            OwnedResponse::WriteMultiple(_, address, quantity) => Response::WriteMultiple { address, quantity },
            OwnedResponse::MaskWrite(address, and_mask, or_mask) => {
                Response::MaskWriteRegister { address, and_mask, or_mask }
            }
            OwnedResponse::DeviceId { read_code, conformity, more, next, objects: ref list } => {
                Response::DeviceIdentification(DeviceIdentification {
                    read_code,
                    conformity,
                    more_follows: more,
                    next_object_id: next,
                    object_count: list.len() as u8,
                    objects,
                })
            }
            OwnedResponse::Exception(function, code) => Response::Exception { function, code },
        }
    }

    fn data(&self) -> &[u8] {
        match self {
            OwnedResponse::ReadBits(_, d) | OwnedResponse::ReadRegisters(_, d) => d,
            _ => &[],
        }
    }
}

fn valid_response() -> impl Strategy<Value = OwnedResponse> {
    let object = (any::<u8>(), prop::collection::vec(any::<u8>(), 0..40));
    prop_oneof![
        (1u8..=2, prop::collection::vec(any::<u8>(), 1..=250)).prop_map(|(f, d)| OwnedResponse::ReadBits(f, d)),
        (prop::sample::select(vec![3u8, 4, 23]), 1usize..=125).prop_flat_map(|(f, n)| {
            prop::collection::vec(any::<u8>(), n * 2).prop_map(move |d| OwnedResponse::ReadRegisters(f, d))
        }),
        (any::<u16>(), any::<bool>()).prop_map(|(a, v)| OwnedResponse::WriteSingleCoil(a, v)),
        (any::<u16>(), any::<u16>()).prop_map(|(a, v)| OwnedResponse::WriteSingleRegister(a, v)),
        (15u8..=16, any::<u16>(), any::<u16>()).prop_map(|(f, a, q)| OwnedResponse::WriteMultiple(f, a, q)),
        (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(a, and, or)| OwnedResponse::MaskWrite(a, and, or)),
        (any::<u8>(), any::<u8>(), any::<bool>(), any::<u8>(), prop::collection::vec(object, 0..6)).prop_map(
            |(read_code, conformity, more, next, objects)| OwnedResponse::DeviceId {
                read_code,
                conformity,
                more,
                next,
                objects
            }
        ),
        (1u8..0x80, any::<u8>()).prop_map(|(f, c)| OwnedResponse::Exception(f, c)),
    ]
}

const FUNCTIONS: [u8; 11] = [1, 2, 3, 4, 5, 6, 15, 16, 22, 23, 43];

/// A PDU-ish byte string: usually a known function code, then random bytes.
fn pdu_bytes() -> impl Strategy<Value = Vec<u8>> {
    let first = prop_oneof![
        prop::sample::select(FUNCTIONS.to_vec()),
        prop::sample::select(FUNCTIONS.to_vec()).prop_map(|f| f | 0x80),
        any::<u8>(),
    ];
    (first, prop::collection::vec(any::<u8>(), 0..=260)).prop_map(|(f, mut rest)| {
        rest.insert(0, f);
        rest
    })
}

fn valid_tag() -> impl Strategy<Value = ModbusTag> {
    let table =
        prop::sample::select(vec![Table::Coil, Table::DiscreteInput, Table::InputRegister, Table::HoldingRegister]);
    let order = prop::sample::select(vec![ByteOrder::Abcd, ByteOrder::Badc, ByteOrder::Cdab, ByteOrder::Dcba]);
    let data_type = prop::sample::select(DataType::ALL.to_vec());
    (
        table,
        any::<u16>(),
        data_type,
        prop::option::of(1u16..=3000),
        1u16..=300,
        prop::option::of(0u8..=15),
        order,
        prop::option::of(0u8..=247),
    )
        .prop_map(|(table, raw_address, data_type, count, strlen, bit, byte_order, unit_id)| {
            let bit = if table.is_bit() { None } else { bit };
            let data_type = if table.is_bit() || bit.is_some() { DataType::Bool } else { data_type };
            let count = if bit.is_some() { None } else { count };
            let string_length = if data_type == DataType::String { strlen } else { 0 };
            let mut tag = ModbusTag { table, address: 0, data_type, count, string_length, bit, byte_order, unit_id };
            // Keep long STRING arrays inside the address space.
            if tag.span() > 65536 {
                tag.count = None;
            }
            // Pick an address that keeps the whole tag inside the table.
            let room = 65536 - tag.span() + 1;
            tag.address = (u32::from(raw_address) % room) as u16;
            tag
        })
}

/// Strings assembled from grammar pieces in grammar order, each piece often
/// valid and sometimes not, to reach deep into the parser.
fn tag_like() -> impl Strategy<Value = String> {
    fn piece(options: &[&'static str]) -> impl Strategy<Value = &'static str> {
        prop::sample::select(options.to_vec())
    }
    let area = piece(&[
        "holding-register:20",
        "input-register:0",
        "coil:7",
        "discrete-input:65535",
        "400021",
        "40001",
        "300001",
        "000010",
        "465536",
        "40000",
        "4001",
        "holding-register:",
        "HOLDING-REGISTER:65530",
        "coils:1",
        "",
    ]);
    let bit = piece(&["", "", ".3", ".15", ".16", ".", ".x"]);
    let data_type = piece(&["", "", ":REAL", ":int", ":BOOL", ":STRING", ":LREAL", ":UDINT", ":", ":FLOT", ":SINT"]);
    let strlen = piece(&["", "", "(10)", "(1)", "(0)", "(", "(65535)"]);
    let count = piece(&["", "", "[2]", "[1]", "[0]", "[", "[65535]", "[]"]);
    let options = piece(&[
        "",
        "",
        "{unit-id: 7}",
        "{byte-order: CDAB}",
        "{ byte-order : 'LITTLE_ENDIAN' , unit-id:\"0\" }",
        "{unit-id: 248}",
        "{}",
        "{unit-id:1,unit-id:2}",
        "{byte-order:'x}",
        "{foo: 1}",
        "{unit-id:1,}",
    ]);
    let junk = piece(&["", "", "", " ", "x", "é", ":", "}"]);
    (area, bit, data_type, strlen, count, options, junk)
        .prop_map(|(a, b, t, s, c, o, j)| [a, b, t, s, c, o, j].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trip(owned in valid_request(), unit in any::<u8>(), tid in any::<u16>()) {
        let req = owned.request();
        let mut pdu = Vec::new();
        req.encode(&mut pdu).unwrap();
        prop_assert!(pdu.len() <= MAX_PDU_LEN);
        prop_assert_eq!(Request::decode(&pdu), Ok(req));

        // MBAP
        let mut buf = Vec::new();
        tcp::encode_request(tid, unit, &req, &mut buf).unwrap();
        let (header, got, n) = tcp::decode_frame(&buf).unwrap().unwrap();
        prop_assert_eq!((header.transaction_id, header.unit_id, got, n), (tid, unit, &pdu[..], buf.len()));

        // RTU
        let mut frame = Vec::new();
        rtu::encode_request(unit, &req, &mut frame).unwrap();
        prop_assert_eq!(rtu::request_frame_len(&frame), Ok(Some(frame.len())));
        prop_assert_eq!(rtu::decode_frame(&frame), Ok((unit, &pdu[..])));

        // ASCII
        let mut text = Vec::new();
        ascii::encode_frame(unit, &pdu, &mut text);
        let mut scratch = Vec::new();
        let decoded = ascii::decode_frame(&text, &mut scratch).unwrap().unwrap();
        prop_assert_eq!(decoded, (unit, &pdu[..], text.len()));
    }

    #[test]
    fn request_encode_is_all_or_nothing(owned in any_request()) {
        let req = owned.request();
        let mut out = vec![0xA5];
        match req.encode(&mut out) {
            Ok(()) => prop_assert_eq!(Request::decode(&out[1..]), Ok(req)),
            Err(e) => {
                prop_assert_eq!(e.code, ErrorCode::InvalidValue);
                prop_assert_eq!(out, vec![0xA5]);
            }
        }
    }

    #[test]
    fn response_round_trip(owned in valid_response(), unit in any::<u8>()) {
        let objects = owned.object_bytes();
        let resp = owned.response(&objects, owned.data());
        let function = owned.function();
        let mut pdu = Vec::new();
        resp.encode(function, &mut pdu);
        prop_assert_eq!(Response::decode(&pdu, function), Ok(resp));

        let mut frame = Vec::new();
        rtu::encode_frame(unit, &pdu, &mut frame);
        if frame.len() <= rtu::MAX_FRAME_LEN {
            prop_assert_eq!(rtu::response_frame_len(&frame), Ok(Some(frame.len())));
            prop_assert_eq!(rtu::decode_frame(&frame), Ok((unit, &pdu[..])));
        }
    }

    #[test]
    fn request_decode_never_panics(pdu in pdu_bytes()) {
        if let Ok(req) = Request::decode(&pdu) {
            // Whatever decodes re-encodes to the same bytes.
            let mut out = Vec::new();
            prop_assert!(req.encode(&mut out).is_ok());
            prop_assert_eq!(out, pdu);
        }
    }

    #[test]
    fn response_decode_never_panics(pdu in pdu_bytes(), other in any::<u8>()) {
        for function in FUNCTIONS.into_iter().chain([other]) {
            if let Ok(resp) = Response::decode(&pdu, function) {
                if pdu.len() <= MAX_PDU_LEN {
                    let mut out = Vec::new();
                    resp.encode(function, &mut out);
                    prop_assert_eq!(&out, &pdu);
                }
                if let Response::DeviceIdentification(id) = resp {
                    prop_assert_eq!(id.objects().count(), usize::from(id.object_count));
                }
            }
        }
    }

    #[test]
    fn response_decode_survives_mutation(
        owned in valid_response(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let objects = owned.object_bytes();
        let resp = owned.response(&objects, owned.data());
        let mut pdu = Vec::new();
        resp.encode(owned.function(), &mut pdu);
        let i = at.index(pdu.len());
        pdu[i] = value;
        let _ = Response::decode(&pdu, owned.function());
        let _ = Response::decode(&pdu[..cut.index(pdu.len())], owned.function());
        let mut frame = Vec::new();
        rtu::encode_frame(1, &pdu, &mut frame);
        let _ = rtu::response_frame_len(&frame);
        let _ = rtu::response_frame_len(&frame[..cut.index(frame.len())]);
    }

    #[test]
    fn tcp_decode_never_panics(buf in prop::collection::vec(any::<u8>(), 0..300), small in 0u8..=1) {
        let mut buf = buf;
        if small == 1 && buf.len() >= 6 {
            // Make the protocol id and length plausible half of the time.
            buf[2] = 0;
            buf[3] = 0;
            buf[4] = 0;
        }
        if let Ok(Some((header, pdu, n))) = tcp::decode_frame(&buf) {
            prop_assert!(n <= buf.len());
            prop_assert_eq!(n, 6 + usize::from(header.length));
            prop_assert_eq!(pdu.len() + 1, usize::from(header.length));
        }
    }

    #[test]
    fn rtu_decoders_never_panic(buf in prop::collection::vec(any::<u8>(), 0..300), f in prop::sample::select(FUNCTIONS.to_vec())) {
        let _ = rtu::decode_frame(&buf);
        let mut with_fc = buf.clone();
        if with_fc.len() >= 2 {
            with_fc[1] = f;
        }
        for b in [&buf, &with_fc] {
            for len_fn in [rtu::response_frame_len, rtu::request_frame_len] {
                if let Ok(Some(n)) = len_fn(b) {
                    prop_assert!((4..=rtu::MAX_FRAME_LEN).contains(&n));
                }
            }
        }
    }

    #[test]
    fn ascii_decode_never_panics(
        raw in prop::collection::vec(any::<u8>(), 0..600),
        text in "(:[0-9A-Fa-f\r\n:]{0,40})|([0-9A-F:\r\n]{0,600})",
    ) {
        let mut scratch = Vec::new();
        for buf in [&raw[..], text.as_bytes()] {
            if let Ok(Some((_, pdu, used))) = ascii::decode_frame(buf, &mut scratch) {
                prop_assert!(used <= buf.len());
                prop_assert!(!pdu.is_empty());
            }
        }
    }

    #[test]
    fn tag_parse_never_panics(text in any::<String>(), fragments in tag_like()) {
        for t in [&text, &fragments] {
            match ModbusTag::parse(t) {
                Ok(tag) => {
                    prop_assert!(u32::from(tag.address) + tag.span() <= 65536);
                    prop_assert_eq!(ModbusTag::parse(&tag.to_string()), Ok(tag));
                }
                Err(e) => {
                    prop_assert_eq!(e.code, ErrorCode::Address);
                    prop_assert!(e.message.contains(" at column "), "{}", e.message);
                }
            }
        }
    }

    #[test]
    fn tag_display_parse_round_trip(tag in valid_tag()) {
        let text = tag.to_string();
        prop_assert_eq!(ModbusTag::parse(&text), Ok(tag.clone()), "{}", text);
        prop_assert_eq!(text, ModbusTag::parse(&tag.to_string()).unwrap().to_string());
    }
}
