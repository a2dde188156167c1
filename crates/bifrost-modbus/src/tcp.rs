//! Modbus TCP framing: the MBAP header (transaction id, protocol id 0,
//! length, unit id) in front of a PDU.

use bifrost_core::{Error, Result};

use crate::pdu::{Request, MAX_PDU_LEN};

/// Transaction id (2) + protocol id (2) + length (2) + unit id (1).
pub const MBAP_HEADER_LEN: usize = 7;
/// Largest ADU: header plus the largest PDU.
pub const MAX_ADU_LEN: usize = MBAP_HEADER_LEN + MAX_PDU_LEN;

/// Smallest length field: unit id + function code.
const MIN_LENGTH: u16 = 2;
/// Largest length field: unit id + the largest PDU.
const MAX_LENGTH: u16 = 1 + MAX_PDU_LEN as u16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub transaction_id: u16,
    pub protocol_id: u16,
    /// Bytes that follow the length field (unit id + PDU).
    pub length: u16,
    pub unit_id: u8,
}

fn push_header(transaction_id: u16, length: u16, unit_id: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&length.to_be_bytes());
    out.push(unit_id);
}

/// Appends MBAP header + encoded request; nothing is left appended on error.
pub fn encode_request(transaction_id: u16, unit_id: u8, request: &Request, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    push_header(transaction_id, 0, unit_id, out);
    if let Err(e) = request.encode(out) {
        out.truncate(start);
        return Err(e);
    }
    // Length is only known after encoding: patch it in place.
    let length = u16::try_from(out.len() - start - MBAP_HEADER_LEN + 1).unwrap_or(u16::MAX);
    if let Some(field) = out.get_mut(start + 4..start + 6) {
        field.copy_from_slice(&length.to_be_bytes());
    }
    Ok(())
}

/// Appends MBAP header + an already-encoded PDU (server replies). A PDU longer
/// than `MAX_PDU_LEN` is written as given and peers will reject the frame.
pub fn encode_frame(transaction_id: u16, unit_id: u8, pdu: &[u8], out: &mut Vec<u8>) {
    let length = u16::try_from(pdu.len() + 1).unwrap_or(u16::MAX);
    push_header(transaction_id, length, unit_id, out);
    out.extend_from_slice(pdu);
}

/// Looks at the start of a receive buffer. `Ok(None)`: need more bytes.
/// `Ok(Some((header, pdu, frame_len)))`: a complete frame whose PDU borrows
/// `buf`. A bad protocol id or length field is reported as soon as it is
/// buffered, so a garbage stream never makes the caller wait for more.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Header, &[u8], usize)>> {
    let field = |at: usize| match (buf.get(at), buf.get(at + 1)) {
        (Some(&hi), Some(&lo)) => Some(u16::from_be_bytes([hi, lo])),
        _ => None,
    };
    let Some(protocol_id) = field(2) else { return Ok(None) };
    if protocol_id != 0 {
        return Err(Error::proto(format!("MBAP protocol id {protocol_id} (expected 0 for Modbus)")));
    }
    let Some(length) = field(4) else { return Ok(None) };
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Err(Error::proto(format!("MBAP length {length} out of range {MIN_LENGTH}..={MAX_LENGTH}")));
    }
    let frame_len = 6 + usize::from(length);
    let (Some(transaction_id), Some(&unit_id), Some(pdu)) = (field(0), buf.get(6), buf.get(MBAP_HEADER_LEN..frame_len))
    else {
        return Ok(None);
    };
    let header = Header { transaction_id, protocol_id, length, unit_id };
    Ok(Some((header, pdu, frame_len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::Response;
    use bifrost_core::ErrorCode;

    #[test]
    fn encode_read_holding_registers() {
        let mut out = vec![0x55];
        let req = Request::ReadHoldingRegisters { address: 107, quantity: 3 };
        encode_request(0x1234, 0x11, &req, &mut out).unwrap();
        assert_eq!(out, [0x55, 0x12, 0x34, 0x00, 0x00, 0x00, 0x06, 0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]);
        let (header, pdu, len) = decode_frame(&out[1..]).unwrap().unwrap();
        assert_eq!(header, Header { transaction_id: 0x1234, protocol_id: 0, length: 6, unit_id: 0x11 });
        assert_eq!(len, 12);
        assert_eq!(Request::decode(pdu), Ok(req));
    }

    #[test]
    fn encode_request_error_leaves_buffer() {
        let mut out = vec![1, 2, 3];
        let req = Request::ReadCoils { address: 0, quantity: 0 };
        assert!(encode_request(1, 1, &req, &mut out).is_err());
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn encode_response_frame() {
        let mut pdu = Vec::new();
        Response::ReadRegisters { registers: &[0x02, 0x2B] }.encode(3, &mut pdu);
        let mut out = Vec::new();
        encode_frame(7, 1, &pdu, &mut out);
        assert_eq!(out, [0x00, 0x07, 0x00, 0x00, 0x00, 0x05, 0x01, 0x03, 0x02, 0x02, 0x2B]);
    }

    #[test]
    fn partial_frames_need_more() {
        let mut frame = Vec::new();
        encode_frame(1, 1, &[0x03, 0x02, 0x00, 0x0A], &mut frame);
        for n in 0..frame.len() {
            assert_eq!(decode_frame(&frame[..n]), Ok(None), "prefix {n}");
        }
        assert!(decode_frame(&frame).unwrap().is_some());
    }

    #[test]
    fn back_to_back_frames() {
        let mut buf = Vec::new();
        encode_frame(1, 9, &[0x06, 0x00, 0x01, 0x00, 0x03], &mut buf);
        encode_frame(2, 9, &[0x81, 0x02], &mut buf);
        buf.extend_from_slice(&[0x00, 0x03]); // start of a third frame
        let (h1, p1, n1) = decode_frame(&buf).unwrap().unwrap();
        assert_eq!((h1.transaction_id, p1, n1), (1, &[0x06, 0x00, 0x01, 0x00, 0x03][..], 12));
        let (h2, p2, n2) = decode_frame(&buf[n1..]).unwrap().unwrap();
        assert_eq!((h2.transaction_id, p2, n2), (2, &[0x81, 0x02][..], 9));
        assert_eq!(decode_frame(&buf[n1 + n2..]), Ok(None));
    }

    #[test]
    fn bad_protocol_id() {
        let buf = [0x00, 0x01, 0x00, 0x01, 0x00, 0x06, 0x01, 0x03, 0, 0, 0, 1];
        let e = decode_frame(&buf).unwrap_err();
        assert_eq!(e.code, ErrorCode::Proto);
        assert!(e.message.contains("protocol id 1"), "{}", e.message);
        // Detected before the rest of the header arrives.
        assert!(decode_frame(&buf[..4]).is_err());
    }

    #[test]
    fn bad_length() {
        for length in [0u16, 1, 255, 0xFFFF] {
            let [hi, lo] = length.to_be_bytes();
            let buf = [0x00, 0x01, 0x00, 0x00, hi, lo, 0x01, 0x03];
            let e = decode_frame(&buf).unwrap_err();
            assert!(e.message.contains("length"), "{}", e.message);
            assert!(decode_frame(&buf[..6]).is_err());
        }
        // Largest legal frame.
        let mut buf = Vec::new();
        encode_frame(1, 1, &[0u8; MAX_PDU_LEN], &mut buf);
        assert_eq!(buf.len(), MAX_ADU_LEN);
        let (_, pdu, n) = decode_frame(&buf).unwrap().unwrap();
        assert_eq!((pdu.len(), n), (MAX_PDU_LEN, MAX_ADU_LEN));
    }
}
