//! Modbus RTU framing: unit address + PDU + CRC-16 (low byte first), as in
//! the Modbus over Serial Line specification V1.02.

use bifrost_core::{Error, Result};

use crate::pdu::{function::*, Request, MEI_READ_DEVICE_ID};

/// Largest RTU frame: address (1) + PDU (253) + CRC (2).
pub const MAX_FRAME_LEN: usize = 256;

/// Byte-at-a-time table for the reflected polynomial 0xA001.
const CRC_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Modbus CRC-16 (reflected polynomial 0xA001, initial value 0xFFFF). The
/// frame carries it low byte first, i.e. `crc16(..).to_le_bytes()`.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFF, |crc, &b| (crc >> 8) ^ CRC_TABLE[usize::from((crc as u8) ^ b)])
}

fn push_crc(out: &mut Vec<u8>, start: usize) {
    let crc = crc16(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Appends unit id + PDU + CRC.
pub fn encode_frame(unit_id: u8, pdu: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.push(unit_id);
    out.extend_from_slice(pdu);
    push_crc(out, start);
}

/// Appends unit id + encoded request + CRC; nothing is appended on error.
pub fn encode_request(unit_id: u8, request: &Request, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    out.push(unit_id);
    if let Err(e) = request.encode(out) {
        out.truncate(start);
        return Err(e);
    }
    push_crc(out, start);
    Ok(())
}

/// `header + byte_count + CRC` once the byte count at `count_at` is buffered.
fn counted(buf: &[u8], count_at: usize) -> Result<Option<usize>> {
    let Some(&count) = buf.get(count_at) else { return Ok(None) };
    bounded(count_at + 1 + usize::from(count) + 2)
}

fn bounded(len: usize) -> Result<Option<usize>> {
    if len > MAX_FRAME_LEN {
        return Err(Error::proto(format!("RTU frame length {len} exceeds the maximum of {MAX_FRAME_LEN}")));
    }
    Ok(Some(len))
}

/// Length of a Read Device Identification response: walks the objects.
fn device_id_response_len(buf: &[u8]) -> Result<Option<usize>> {
    // unit, 43, MEI, read code, conformity, more follows, next id, count
    let Some(&mei) = buf.get(2) else { return Ok(None) };
    if mei != MEI_READ_DEVICE_ID {
        return Err(Error::proto(format!("RTU response with unsupported MEI type {mei}")));
    }
    let Some(&count) = buf.get(7) else { return Ok(None) };
    let mut at = 8;
    for _ in 0..count {
        // Each object is id, length, value.
        let Some(&len) = buf.get(at + 1) else {
            return if at + 2 > MAX_FRAME_LEN { bounded(at + 2) } else { Ok(None) };
        };
        at += 2 + usize::from(len);
        if at > MAX_FRAME_LEN {
            return bounded(at);
        }
    }
    bounded(at + 2)
}

/// Total length (address + PDU + CRC) of the RESPONSE frame at the start of
/// `buf`. `Ok(None)`: not enough bytes yet to tell. Errors for an unknown
/// function code or a length past `MAX_FRAME_LEN`.
pub fn response_frame_len(buf: &[u8]) -> Result<Option<usize>> {
    let Some(&function) = buf.get(1) else { return Ok(None) };
    if function & 0x80 != 0 {
        return Ok(Some(5));
    }
    match function {
        READ_COILS
        | READ_DISCRETE_INPUTS
        | READ_HOLDING_REGISTERS
        | READ_INPUT_REGISTERS
        | READ_WRITE_MULTIPLE_REGISTERS => counted(buf, 2),
        WRITE_SINGLE_COIL | WRITE_SINGLE_REGISTER | WRITE_MULTIPLE_COILS | WRITE_MULTIPLE_REGISTERS => Ok(Some(8)),
        MASK_WRITE_REGISTER => Ok(Some(10)),
        ENCAPSULATED_INTERFACE => device_id_response_len(buf),
        _ => Err(Error::proto(format!("RTU response with unknown function code {function}"))),
    }
}

/// Total length (address + PDU + CRC) of the REQUEST frame at the start of
/// `buf` (server side). Same conventions as [`response_frame_len`].
pub fn request_frame_len(buf: &[u8]) -> Result<Option<usize>> {
    let Some(&function) = buf.get(1) else { return Ok(None) };
    match function {
        READ_COILS
        | READ_DISCRETE_INPUTS
        | READ_HOLDING_REGISTERS
        | READ_INPUT_REGISTERS
        | WRITE_SINGLE_COIL
        | WRITE_SINGLE_REGISTER => Ok(Some(8)),
        // unit, fc, address, quantity, byte count
        WRITE_MULTIPLE_COILS | WRITE_MULTIPLE_REGISTERS => counted(buf, 6),
        MASK_WRITE_REGISTER => Ok(Some(10)),
        // unit, fc, read address, read quantity, write address, write quantity, byte count
        READ_WRITE_MULTIPLE_REGISTERS => counted(buf, 10),
        ENCAPSULATED_INTERFACE => match buf.get(2) {
            None => Ok(None),
            // unit, 43, MEI, read code, object id, CRC
            Some(&MEI_READ_DEVICE_ID) => Ok(Some(7)),
            Some(&mei) => Err(Error::proto(format!("RTU request with unsupported MEI type {mei}"))),
        },
        _ => Err(Error::proto(format!("RTU request with unknown function code {function}"))),
    }
}

/// Checks the CRC of a complete frame and returns `(unit_id, pdu)` borrowing it.
pub fn decode_frame(frame: &[u8]) -> Result<(u8, &[u8])> {
    if frame.len() < 4 {
        return Err(Error::proto(format!("RTU frame of {} bytes is shorter than the minimum of 4", frame.len())));
    }
    if frame.len() > MAX_FRAME_LEN {
        return Err(Error::proto(format!("RTU frame of {} bytes exceeds the maximum of {MAX_FRAME_LEN}", frame.len())));
    }
    let Some((body, crc_bytes)) = frame.split_at_checked(frame.len() - 2) else {
        return Err(Error::proto("RTU frame is truncated"));
    };
    let received = match crc_bytes {
        [lo, hi] => u16::from_le_bytes([*lo, *hi]),
        _ => return Err(Error::proto("RTU frame is truncated")),
    };
    let computed = crc16(body);
    if received != computed {
        return Err(Error::proto(format!(
            "RTU CRC mismatch: frame carries 0x{received:04X}, computed 0x{computed:04X}"
        )));
    }
    match body.split_first() {
        Some((&unit_id, pdu)) => Ok((unit_id, pdu)),
        None => Err(Error::proto("RTU frame is truncated")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::Response;

    /// Bit-by-bit reference implementation, to cross-check the table.
    fn crc_reference(data: &[u8]) -> u16 {
        let mut crc = 0xFFFFu16;
        for &b in data {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
            }
        }
        crc
    }

    #[test]
    fn crc_known_vectors() {
        // CRC-16/MODBUS catalogue check value.
        assert_eq!(crc16(b"123456789"), 0x4B37);
        // Serial line spec example: 02 07 → CRC 0x1241, sent 41 12.
        assert_eq!(crc16(&[0x02, 0x07]), 0x1241);
        assert_eq!(crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]), 0xCDC5);
        assert_eq!(crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01]), 0x0A84);
        assert_eq!(crc16(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]), 0x8776);
        assert_eq!(crc16(&[]), 0xFFFF);
        for data in [&b"modbus"[..], &[0u8; 40], &[0xFF; 7], &[0x81, 0x02]] {
            assert_eq!(crc16(data), crc_reference(data));
        }
    }

    #[test]
    fn encode_known_frames() {
        let mut out = Vec::new();
        let req = Request::ReadHoldingRegisters { address: 0, quantity: 10 };
        encode_request(1, &req, &mut out).unwrap();
        assert_eq!(out, [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]);
        out.clear();
        let req = Request::ReadHoldingRegisters { address: 107, quantity: 3 };
        encode_request(0x11, &req, &mut out).unwrap();
        assert_eq!(out, [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]);
        assert_eq!(decode_frame(&out), Ok((0x11, &out[1..6])));
        // A frame including its CRC checks to zero.
        assert_eq!(crc16(&out), 0);

        let mut prefixed = vec![0xEE];
        encode_frame(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03], &mut prefixed);
        assert_eq!(prefixed[1..], out[..]);

        let mut out = vec![9];
        assert!(encode_request(1, &Request::ReadCoils { address: 0, quantity: 0 }, &mut out).is_err());
        assert_eq!(out, [9]);
    }

    #[test]
    fn decode_errors() {
        assert!(decode_frame(&[]).is_err());
        assert!(decode_frame(&[0x01, 0x03, 0xC5]).is_err());
        let e = decode_frame(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xCD, 0xC5]).unwrap_err();
        assert!(e.message.contains("CRC mismatch"), "{}", e.message);
        // Minimal 4-byte frame: unit + function + CRC.
        let mut f = Vec::new();
        encode_frame(1, &[0x07], &mut f);
        assert_eq!(decode_frame(&f), Ok((1, &[0x07][..])));
        let mut big = Vec::new();
        encode_frame(1, &[0u8; 254], &mut big);
        assert!(decode_frame(&big).is_err());
    }

    fn frame(pdu: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(1, pdu, &mut out);
        out
    }

    /// Every strict prefix needs more bytes; the whole frame reports its length.
    fn check_len(f: &[u8], len_fn: fn(&[u8]) -> Result<Option<usize>>) {
        let n = f.len();
        let mut known = false;
        for i in 0..n {
            match len_fn(&f[..i]) {
                Ok(None) => assert!(!known, "length became unknown again at {i}"),
                Ok(Some(len)) => {
                    known = true;
                    assert_eq!(len, n, "prefix {i} of {f:02X?}");
                }
                Err(e) => panic!("prefix {i}: {e}"),
            }
        }
        assert_eq!(len_fn(f), Ok(Some(n)));
        let mut longer = f.to_vec();
        longer.extend_from_slice(&[0xAA; 5]);
        assert_eq!(len_fn(&longer), Ok(Some(n)));
    }

    fn resp(r: Response, function: u8) -> Vec<u8> {
        let mut pdu = Vec::new();
        r.encode(function, &mut pdu);
        frame(&pdu)
    }

    fn req(r: Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(1, &r, &mut out).unwrap();
        out
    }

    #[test]
    fn response_lengths() {
        let rl = response_frame_len;
        check_len(&resp(Response::ReadBits { packed: &[0xCD, 0x6B, 0x05] }, 1), rl);
        check_len(&resp(Response::ReadBits { packed: &[0xAC] }, 2), rl);
        check_len(&resp(Response::ReadRegisters { registers: &[0, 1, 2, 3, 4, 5] }, 3), rl);
        check_len(&resp(Response::ReadRegisters { registers: &[0; 250] }, 4), rl);
        check_len(&resp(Response::ReadRegisters { registers: &[0; 24] }, 23), rl);
        check_len(&resp(Response::WriteSingleCoil { address: 172, value: true }, 5), rl);
        check_len(&resp(Response::WriteSingleRegister { address: 1, value: 3 }, 6), rl);
        check_len(&resp(Response::WriteMultiple { address: 19, quantity: 10 }, 15), rl);
        check_len(&resp(Response::WriteMultiple { address: 1, quantity: 2 }, 16), rl);
        let mask = Response::MaskWriteRegister { address: 4, and_mask: 0xF2, or_mask: 0x25 };
        check_len(&resp(mask, 22), rl);
        for function in [1, 2, 3, 4, 5, 6, 15, 16, 22, 23, 43] {
            let f = resp(Response::Exception { function, code: 2 }, function);
            assert_eq!(f.len(), 5);
            check_len(&f, rl);
        }
        let id = crate::pdu::DeviceIdentification {
            read_code: 1,
            conformity: 1,
            more_follows: false,
            next_object_id: 0,
            object_count: 3,
            objects: &[0, 3, b'A', b'C', b'M', 1, 0, 2, 2, b'V', b'1'],
        };
        check_len(&resp(Response::DeviceIdentification(id), 43), rl);
        let empty = crate::pdu::DeviceIdentification { object_count: 0, objects: &[], ..id };
        check_len(&resp(Response::DeviceIdentification(empty), 43), rl);
    }

    #[test]
    fn response_length_errors() {
        assert!(response_frame_len(&[0x01, 0x08]).is_err());
        assert!(response_frame_len(&[0x01, 0x00]).is_err());
        assert!(response_frame_len(&[0x01, 0x2B, 0x0D]).is_err());
        // Byte count that would overflow the 256-byte frame.
        assert_eq!(response_frame_len(&[0x01, 0x03, 251]), Ok(Some(256)));
        assert!(response_frame_len(&[0x01, 0x03, 252]).is_err());
        // Device id objects that overflow the frame are rejected early.
        let mut buf = vec![0x01, 0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, 0x05];
        for _ in 0..2 {
            buf.extend_from_slice(&[0x00, 0xF0]);
            buf.extend_from_slice(&[0x41; 0xF0]);
        }
        assert!(response_frame_len(&buf).is_err());
        assert_eq!(response_frame_len(&[]), Ok(None));
        assert_eq!(response_frame_len(&[0x01]), Ok(None));
    }

    #[test]
    fn request_lengths() {
        let ql = request_frame_len;
        check_len(&req(Request::ReadCoils { address: 19, quantity: 19 }), ql);
        check_len(&req(Request::ReadDiscreteInputs { address: 196, quantity: 22 }), ql);
        check_len(&req(Request::ReadHoldingRegisters { address: 107, quantity: 3 }), ql);
        check_len(&req(Request::ReadInputRegisters { address: 8, quantity: 1 }), ql);
        check_len(&req(Request::WriteSingleCoil { address: 172, value: true }), ql);
        check_len(&req(Request::WriteSingleRegister { address: 1, value: 3 }), ql);
        check_len(&req(Request::WriteMultipleCoils { address: 19, quantity: 10, packed: &[0xCD, 0x01] }), ql);
        check_len(&req(Request::WriteMultipleRegisters { address: 1, registers: &[0, 0x0A, 1, 2] }), ql);
        check_len(&req(Request::WriteMultipleRegisters { address: 1, registers: &[0; 246] }), ql);
        check_len(&req(Request::MaskWriteRegister { address: 4, and_mask: 0xF2, or_mask: 0x25 }), ql);
        check_len(
            &req(Request::ReadWriteMultipleRegisters {
                read_address: 3,
                read_quantity: 6,
                write_address: 14,
                write_registers: &[0, 0xFF, 0, 0xFF, 0, 0xFF],
            }),
            ql,
        );
        check_len(&req(Request::ReadDeviceIdentification { read_code: 1, object_id: 0 }), ql);
    }

    #[test]
    fn request_length_errors() {
        assert!(request_frame_len(&[0x01, 0x81]).is_err());
        assert!(request_frame_len(&[0x01, 0x08]).is_err());
        assert!(request_frame_len(&[0x01, 0x2B, 0x0D]).is_err());
        assert_eq!(request_frame_len(&[0x01, 0x2B]), Ok(None));
        assert!(request_frame_len(&[0x01, 0x10, 0, 0, 0, 0, 248]).is_err());
        assert_eq!(request_frame_len(&[0x01, 0x10, 0, 0, 0, 0, 247]), Ok(Some(256)));
    }
}
