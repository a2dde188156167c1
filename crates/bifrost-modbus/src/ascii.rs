//! Modbus ASCII framing: ':' + hex(unit id, PDU, LRC) + CR LF, as in the
//! Modbus over Serial Line specification V1.02.

use bifrost_core::{Error, Result};

use crate::pdu::MAX_PDU_LEN;

/// Longest frame: ':' + 2 hex digits per byte of (unit, PDU, LRC) + CR LF.
const MAX_FRAME_CHARS: usize = 1 + 2 * (1 + MAX_PDU_LEN + 1) + 2;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Longitudinal redundancy check: two's complement of the byte sum.
pub fn lrc(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)).wrapping_neg()
}

fn push_hex(out: &mut Vec<u8>, b: u8) {
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0x0F)]);
}

/// Appends ':' + uppercase hex of unit id, PDU and LRC + "\r\n".
pub fn encode_frame(unit_id: u8, pdu: &[u8], out: &mut Vec<u8>) {
    out.reserve(1 + 2 * (pdu.len() + 2) + 2);
    out.push(b':');
    push_hex(out, unit_id);
    for &b in pdu {
        push_hex(out, b);
    }
    push_hex(out, lrc(pdu).wrapping_sub(unit_id));
    out.extend_from_slice(b"\r\n");
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        // The spec says uppercase; accept lowercase from lenient senders.
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Finds the complete frame at the start of `buf`, which must begin with ':'.
/// `Ok(None)` until CR LF arrives; more than the longest legal frame without
/// CR LF is an error. The hex is decoded into `scratch` (cleared, reused) and
/// the LRC checked; returns `(unit_id, pdu, bytes consumed)`.
pub fn decode_frame<'s>(buf: &[u8], scratch: &'s mut Vec<u8>) -> Result<Option<(u8, &'s [u8], usize)>> {
    let Some((&first, _)) = buf.split_first() else { return Ok(None) };
    if first != b':' {
        return Err(Error::proto(format!("ASCII frame starts with 0x{first:02X} instead of ':'")));
    }
    let window = buf.get(..MAX_FRAME_CHARS).unwrap_or(buf);
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_FRAME_CHARS {
            return Err(Error::proto(format!("no CR LF within {MAX_FRAME_CHARS} bytes of an ASCII frame start")));
        }
        return Ok(None);
    };
    let hex = window.get(1..cr).unwrap_or_default();
    if !hex.len().is_multiple_of(2) {
        return Err(Error::proto(format!("ASCII frame has an odd number ({}) of hex digits", hex.len())));
    }
    if hex.len() < 6 {
        return Err(Error::proto("ASCII frame too short: needs unit id, function code and LRC"));
    }
    scratch.clear();
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digits = match pair {
            [hi, lo] => hex_value(*hi).zip(hex_value(*lo)),
            _ => None,
        };
        let Some((hi, lo)) = digits else {
            return Err(Error::proto(format!("ASCII frame has a non-hex character near offset {}", 1 + 2 * i)));
        };
        scratch.push(hi << 4 | lo);
    }
    // Unit id + PDU + LRC sums to zero when the LRC is right.
    if lrc(scratch) != 0 {
        let (body, received) = scratch.split_at(scratch.len().saturating_sub(1));
        return Err(Error::proto(format!(
            "ASCII LRC mismatch: frame carries 0x{:02X}, computed 0x{:02X}",
            received.first().copied().unwrap_or(0),
            lrc(body)
        )));
    }
    let data: &'s [u8] = scratch;
    let Some((&unit_id, rest)) = data.split_first() else {
        return Err(Error::proto("ASCII frame is empty"));
    };
    let pdu = rest.get(..rest.len().saturating_sub(1)).unwrap_or_default();
    Ok(Some((unit_id, pdu, cr + 2)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::Request;

    #[test]
    fn lrc_vectors() {
        // 01 03 00 00 00 01: sum 0x05 → LRC 0xFB.
        assert_eq!(lrc(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01]), 0xFB);
        // Serial line spec example: 11 03 00 6B 00 03 → 0x7E.
        assert_eq!(lrc(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]), 0x7E);
        assert_eq!(lrc(&[0xF7, 0x03, 0x13, 0x89, 0x00, 0x0A]), 0x60);
        assert_eq!(lrc(&[]), 0);
        assert_eq!(lrc(&[0x80, 0x80]), 0);
    }

    #[test]
    fn encode_known_frames() {
        let mut out = Vec::new();
        encode_frame(0x01, &[0x03, 0x00, 0x00, 0x00, 0x01], &mut out);
        assert_eq!(out, b":010300000001FB\r\n");
        out.clear();
        encode_frame(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03], &mut out);
        assert_eq!(out, b":1103006B00037E\r\n");
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        let mut pdu = Vec::new();
        Request::WriteMultipleRegisters { address: 1, registers: &[0x00, 0x0A, 0x01, 0x02] }.encode(&mut pdu).unwrap();
        encode_frame(0xF7, &pdu, &mut out);
        encode_frame(0x02, &[0x81, 0x02], &mut out);
        let mut scratch = Vec::new();
        let (unit, got, used) = decode_frame(&out, &mut scratch).unwrap().unwrap();
        assert_eq!((unit, got), (0xF7, &pdu[..]));
        let rest = &out[used..];
        let (unit, got, used2) = decode_frame(rest, &mut scratch).unwrap().unwrap();
        assert_eq!((unit, got, used2), (0x02, &[0x81, 0x02][..], rest.len()));
    }

    #[test]
    fn partial_and_lowercase() {
        let frame = b":1103006b00037e\r\n";
        let mut scratch = Vec::new();
        for n in 0..frame.len() {
            assert_eq!(decode_frame(&frame[..n], &mut scratch), Ok(None), "prefix {n}");
        }
        let (unit, pdu, used) = decode_frame(frame, &mut scratch).unwrap().unwrap();
        assert_eq!((unit, pdu, used), (0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03][..], frame.len()));
    }

    #[test]
    fn errors() {
        let mut s = Vec::new();
        assert!(decode_frame(b"0103", &mut s).is_err());
        assert!(decode_frame(b":010300000001FC\r\n", &mut s).unwrap_err().message.contains("LRC"));
        assert!(decode_frame(b":010300000001F\r\n", &mut s).unwrap_err().message.contains("odd"));
        assert!(decode_frame(b":01030000000GFB\r\n", &mut s).is_err());
        assert!(decode_frame(b":01FF\r\n", &mut s).unwrap_err().message.contains("short"));
        assert!(decode_frame(b":\r\n", &mut s).is_err());
        // Bounded search for CR LF.
        let mut long = vec![b':'];
        long.extend_from_slice(&[b'0'; 600]);
        assert!(decode_frame(&long[..MAX_FRAME_CHARS - 1], &mut s).unwrap().is_none());
        assert!(decode_frame(&long, &mut s).is_err());
        // The longest legal frame still decodes.
        let mut max = Vec::new();
        encode_frame(1, &[0x10; MAX_PDU_LEN], &mut max);
        assert_eq!(max.len(), MAX_FRAME_CHARS);
        let (_, pdu, used) = decode_frame(&max, &mut s).unwrap().unwrap();
        assert_eq!((pdu.len(), used), (MAX_PDU_LEN, MAX_FRAME_CHARS));
        // CR LF just past the limit is too late.
        let mut over = Vec::new();
        encode_frame(1, &[0x10; MAX_PDU_LEN + 1], &mut over);
        assert!(decode_frame(&over, &mut s).is_err());
    }
}
