//! The encapsulation layer (CIP Volume 2, chapter 2): the 24-byte header, its
//! commands, and the Common Packet Format items that SendRRData and
//! SendUnitData carry CIP messages in.

use std::net::{Ipv4Addr, SocketAddrV4};

use bifrost_core::{Error, Result};

use crate::wire::{patch_u16, put_u16, put_u32, Reader};

pub const HEADER_LEN: usize = 24;
/// The TCP and UDP port EtherNet/IP devices listen on.
pub const DEFAULT_PORT: u16 = 0xAF12;
/// Longest encapsulated data accepted: the length field's range.
pub const MAX_DATA_LEN: usize = 65_511;

/// Encapsulation commands.
pub mod command {
    pub const NOP: u16 = 0x0000;
    pub const LIST_SERVICES: u16 = 0x0004;
    pub const LIST_IDENTITY: u16 = 0x0063;
    pub const LIST_INTERFACES: u16 = 0x0064;
    pub const REGISTER_SESSION: u16 = 0x0065;
    pub const UNREGISTER_SESSION: u16 = 0x0066;
    pub const SEND_RR_DATA: u16 = 0x006F;
    pub const SEND_UNIT_DATA: u16 = 0x0070;

    /// Whether `command` is one this layer knows (anything else is not a frame).
    pub fn is_known(command: u16) -> bool {
        matches!(
            command,
            NOP | LIST_SERVICES
                | LIST_IDENTITY
                | LIST_INTERFACES
                | REGISTER_SESSION
                | UNREGISTER_SESSION
                | SEND_RR_DATA
                | SEND_UNIT_DATA
        )
    }
}

/// Common Packet Format item type ids.
pub mod item {
    pub const NULL_ADDRESS: u16 = 0x0000;
    pub const LIST_IDENTITY: u16 = 0x000C;
    pub const CONNECTED_ADDRESS: u16 = 0x00A1;
    pub const CONNECTED_DATA: u16 = 0x00B1;
    pub const UNCONNECTED_DATA: u16 = 0x00B2;
    pub const LIST_SERVICES: u16 = 0x0100;
    pub const SOCKADDR_O_T: u16 = 0x8000;
    pub const SOCKADDR_T_O: u16 = 0x8001;
    pub const SEQUENCED_ADDRESS: u16 = 0x8002;
}

/// The names CIP Volume 2 gives encapsulation status codes.
pub fn status_name(status: u32) -> &'static str {
    match status {
        0x0000 => "success",
        0x0001 => "invalid or unsupported command",
        0x0002 => "insufficient memory",
        0x0003 => "poorly formed or incorrect data",
        0x0064 => "invalid session handle",
        0x0065 => "invalid length",
        0x0069 => "unsupported encapsulation protocol revision",
        _ => "unknown encapsulation status",
    }
}

/// The fixed header of every encapsulation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub command: u16,
    /// Bytes of data after the header.
    pub length: u16,
    pub session: u32,
    pub status: u32,
    /// Echoed by the target in its reply: requests are matched by it.
    pub context: [u8; 8],
    pub options: u32,
}

impl Header {
    pub fn parse(frame: &[u8]) -> Result<Header> {
        let mut r = Reader::new(frame);
        let header = Header {
            command: r.u16("the encapsulation command")?,
            length: r.u16("the encapsulation length")?,
            session: r.u32("the session handle")?,
            status: r.u32("the encapsulation status")?,
            context: r.bytes(8, "the sender context")?.try_into().unwrap_or_default(),
            options: r.u32("the options")?,
        };
        Ok(header)
    }

    /// Appends the header; `length` is patched later by [`finish`].
    pub fn write(&self, out: &mut Vec<u8>) {
        put_u16(out, self.command);
        put_u16(out, self.length);
        put_u32(out, self.session);
        put_u32(out, self.status);
        out.extend_from_slice(&self.context);
        put_u32(out, self.options);
    }

    /// `EPROTO` naming the status when the target refused the command.
    pub fn check_status(&self) -> Result<()> {
        match self.status {
            0 => Ok(()),
            status => Err(Error::proto(format!(
                "the device refused encapsulation command 0x{:04x}: status 0x{status:04x} ({})",
                self.command,
                status_name(status)
            ))),
        }
    }
}

/// Sender contexts carry a request id in their first four bytes.
pub fn context_of(id: u32) -> [u8; 8] {
    let mut context = [0; 8];
    context[..4].copy_from_slice(&id.to_le_bytes());
    context
}

pub fn id_of(context: &[u8; 8]) -> u32 {
    u32::from_le_bytes([context[0], context[1], context[2], context[3]])
}

/// Length of the frame at the start of `buf`: `None` until its header has come;
/// an error when `buf` does not start with a known command (the stream is out of step).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let command = u16::from_le_bytes([buf[0], buf[1]]);
    if !command::is_known(command) {
        return Err(Error::proto(format!("not an EtherNet/IP frame: unknown encapsulation command 0x{command:04x}")));
    }
    Ok(Some(HEADER_LEN + usize::from(u16::from_le_bytes([buf[2], buf[3]]))))
}

/// Starts a message: appends its header and returns where it starts, for [`finish`].
pub fn begin(out: &mut Vec<u8>, command: u16, session: u32, context: [u8; 8]) -> usize {
    let start = out.len();
    Header { command, session, context, ..Header::default() }.write(out);
    start
}

/// Patches the length of the message begun at `start`; an oversized one is removed and refused.
pub fn finish(out: &mut Vec<u8>, start: usize) -> Result<()> {
    let length = out.len() - start - HEADER_LEN;
    if length > MAX_DATA_LEN {
        out.truncate(start);
        return Err(Error::invalid_value(format!("a request of {length} bytes is longer than EtherNet/IP allows")));
    }
    patch_u16(out, start + 2, length)
}

/// RegisterSession: protocol version 1, no options.
pub fn register_session(out: &mut Vec<u8>, context: [u8; 8]) -> Result<()> {
    let start = begin(out, command::REGISTER_SESSION, 0, context);
    put_u16(out, 1);
    put_u16(out, 0);
    finish(out, start)
}

pub fn unregister_session(out: &mut Vec<u8>, session: u32) -> Result<()> {
    let start = begin(out, command::UNREGISTER_SESSION, session, [0; 8]);
    finish(out, start)
}

/// ListIdentity (no data; sent over TCP or UDP).
pub fn list_identity(out: &mut Vec<u8>, context: [u8; 8]) -> Result<()> {
    let start = begin(out, command::LIST_IDENTITY, 0, context);
    finish(out, start)
}

/// SendRRData: an unconnected CIP message, which `message` appends.
pub fn send_rr_data(
    out: &mut Vec<u8>,
    session: u32,
    context: [u8; 8],
    message: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let start = begin(out, command::SEND_RR_DATA, session, context);
    put_u32(out, 0); // interface handle: CIP
    put_u16(out, 0); // timeout: the CIP layer's own
    put_u16(out, 2);
    put_u16(out, item::NULL_ADDRESS);
    put_u16(out, 0);
    put_u16(out, item::UNCONNECTED_DATA);
    with_length(out, message).inspect_err(|_| out.truncate(start))?;
    finish(out, start)
}

/// SendUnitData: a connected CIP message on connection `connection` (the id the
/// target gave), numbered `sequence`; `message` appends the message.
pub fn send_unit_data(
    out: &mut Vec<u8>,
    session: u32,
    connection: u32,
    sequence: u16,
    message: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let start = begin(out, command::SEND_UNIT_DATA, session, [0; 8]);
    put_u32(out, 0);
    put_u16(out, 0);
    put_u16(out, 2);
    put_u16(out, item::CONNECTED_ADDRESS);
    put_u16(out, 4);
    put_u32(out, connection);
    put_u16(out, item::CONNECTED_DATA);
    with_length(out, |out| {
        put_u16(out, sequence);
        message(out)
    })
    .inspect_err(|_| out.truncate(start))?;
    finish(out, start)
}

/// Appends a 16-bit length, then what `body` appends, and patches the length.
fn with_length(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
    let at = out.len();
    put_u16(out, 0);
    body(out)?;
    let length = out.len() - at - 2;
    patch_u16(out, at, length)
}

/// One Common Packet Format item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    pub type_id: u16,
    pub data: &'a [u8],
}

/// The items of a Common Packet Format list.
pub fn items(data: &[u8]) -> Result<Vec<Item<'_>>> {
    let mut r = Reader::new(data);
    let count = r.u16("the item count")?;
    (0..count)
        .map(|_| {
            let type_id = r.u16("an item's type")?;
            let length = r.u16("an item's length")?;
            Ok(Item { type_id, data: r.bytes(usize::from(length), "an item's data")? })
        })
        .collect()
}

/// A SendRRData or SendUnitData message's CIP payload: for connected data, the
/// sequence count and the message after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The connection id of a connected message.
    pub connection: Option<u32>,
    pub sequence: Option<u16>,
    pub message: &'a [u8],
}

/// Finds the address and data items of a SendRRData or SendUnitData body.
pub fn payload(body: &[u8]) -> Result<Payload<'_>> {
    let mut r = Reader::new(body);
    r.u32("the interface handle")?;
    r.u16("the timeout")?;
    let items = items(r.rest())?;
    let mut payload = Payload { connection: None, sequence: None, message: &[] };
    let mut found = false;
    for item in items {
        match item.type_id {
            item::CONNECTED_ADDRESS => payload.connection = Some(Reader::new(item.data).u32("the connection id")?),
            item::UNCONNECTED_DATA => {
                payload.message = item.data;
                found = true;
            }
            item::CONNECTED_DATA => {
                let mut data = Reader::new(item.data);
                payload.sequence = Some(data.u16("the sequence count")?);
                payload.message = data.rest();
                found = true;
            }
            _ => {}
        }
    }
    if !found {
        return Err(Error::proto("the reply carries no CIP data item"));
    }
    Ok(payload)
}

/// What a device says of itself in a ListIdentity reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub protocol_version: u16,
    /// The address the device gives for itself (a UDP answer's sender may differ).
    pub address: SocketAddrV4,
    pub vendor_id: u16,
    pub device_type: u16,
    pub product_code: u16,
    pub revision: (u8, u8),
    pub status: u16,
    pub serial_number: u32,
    pub product_name: String,
    pub state: u8,
}

/// The identity items of a ListIdentity reply's data.
pub fn parse_list_identity(data: &[u8]) -> Result<Vec<Identity>> {
    items(data)?
        .into_iter()
        .filter(|item| item.type_id == item::LIST_IDENTITY)
        .map(|item| {
            let mut r = Reader::new(item.data);
            let protocol_version = r.u16("the protocol version")?;
            r.u16("the socket family")?;
            let port = u16::from_be_bytes(r.bytes(2, "the socket port")?.try_into().unwrap_or_default());
            let ip: [u8; 4] = r.bytes(4, "the socket address")?.try_into().unwrap_or_default();
            r.bytes(8, "the socket padding")?;
            identity_attributes(&mut r, protocol_version, SocketAddrV4::new(Ipv4Addr::from(ip), port))
        })
        .collect()
}

/// The Identity object's attributes 1 to 7 (and the state, when sent), as
/// ListIdentity carries them and Get Attributes All returns them.
pub fn identity_attributes(r: &mut Reader<'_>, protocol_version: u16, address: SocketAddrV4) -> Result<Identity> {
    let vendor_id = r.u16("the vendor id")?;
    let device_type = r.u16("the device type")?;
    let product_code = r.u16("the product code")?;
    let revision = (r.u8("the major revision")?, r.u8("the minor revision")?);
    let status = r.u16("the status")?;
    let serial_number = r.u32("the serial number")?;
    let name_len = r.u8("the product name's length")?;
    let product_name = String::from_utf8_lossy(r.bytes(usize::from(name_len), "the product name")?).into_owned();
    // Some devices leave the state out.
    let state = if r.remaining() > 0 { r.u8("the state")? } else { 0xFF };
    Ok(Identity {
        protocol_version,
        address,
        vendor_id,
        device_type,
        product_code,
        revision,
        status,
        serial_number,
        product_name,
        state,
    })
}

/// Appends the Identity object's attributes 1 to 7, as Get Attributes All returns them.
pub fn write_identity_attributes(out: &mut Vec<u8>, identity: &Identity) {
    put_u16(out, identity.vendor_id);
    put_u16(out, identity.device_type);
    put_u16(out, identity.product_code);
    out.extend_from_slice(&[identity.revision.0, identity.revision.1]);
    put_u16(out, identity.status);
    put_u32(out, identity.serial_number);
    let name = identity.product_name.as_bytes();
    let name = &name[..name.len().min(255)];
    out.push(name.len() as u8);
    out.extend_from_slice(name);
}

/// Appends a ListIdentity reply for `identity`.
pub fn list_identity_reply(out: &mut Vec<u8>, context: [u8; 8], identity: &Identity) -> Result<()> {
    let start = begin(out, command::LIST_IDENTITY, 0, context);
    put_u16(out, 1);
    put_u16(out, item::LIST_IDENTITY);
    with_length(out, |out| {
        put_u16(out, identity.protocol_version);
        out.extend_from_slice(&2u16.to_be_bytes()); // AF_INET, big-endian as in sockaddr_in
        out.extend_from_slice(&identity.address.port().to_be_bytes());
        out.extend_from_slice(&identity.address.ip().octets());
        out.extend_from_slice(&[0; 8]);
        write_identity_attributes(out, identity);
        out.push(identity.state);
        Ok(())
    })?;
    finish(out, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn register_session_is_the_spec_frame() {
        let mut out = Vec::new();
        register_session(&mut out, context_of(7)).unwrap();
        assert_eq!(out, hex("65000400000000000000000007000000000000000000000001000000"));
        assert_eq!(frame_len(&out).unwrap(), Some(28));
        let header = Header::parse(&out).unwrap();
        assert_eq!((header.command, header.length, id_of(&header.context)), (command::REGISTER_SESSION, 4, 7));
    }

    #[test]
    fn send_rr_data_wraps_a_message_in_null_address_and_unconnected_data_items() {
        let mut out = Vec::new();
        send_rr_data(&mut out, 0x1234_5678, context_of(1), |out| {
            out.extend_from_slice(&[0x4C, 0x02, 0x20, 0x01]);
            Ok(())
        })
        .unwrap();
        let expected = "6f0014007856341200000000010000000000000000000000000000000000020000000000b20004004c022001";
        assert_eq!(out, hex(expected));
        let header = Header::parse(&out).unwrap();
        assert_eq!(usize::from(header.length), out.len() - HEADER_LEN);
        let p = payload(&out[HEADER_LEN..]).unwrap();
        assert_eq!(p, Payload { connection: None, sequence: None, message: &[0x4C, 0x02, 0x20, 0x01] });
    }

    #[test]
    fn send_unit_data_carries_the_connection_id_and_the_sequence_count() {
        let mut out = Vec::new();
        send_unit_data(&mut out, 9, 0xAABB_CCDD, 0x0102, |out| {
            out.push(0x4C);
            Ok(())
        })
        .unwrap();
        let p = payload(&out[HEADER_LEN..]).unwrap();
        assert_eq!(p, Payload { connection: Some(0xAABB_CCDD), sequence: Some(0x0102), message: &[0x4C] });
        assert_eq!(&out[HEADER_LEN + 8..HEADER_LEN + 16], &hex("a1000400ddccbbaa"));
    }

    #[test]
    fn a_failed_message_leaves_nothing_behind() {
        let mut out = vec![1, 2, 3];
        let e = send_rr_data(&mut out, 1, [0; 8], |_| Err(Error::invalid_value("no"))).unwrap_err();
        assert_eq!(e.message, "no");
        assert_eq!(out, [1, 2, 3]);
        let too_long = send_rr_data(&mut out, 1, [0; 8], |out| {
            out.resize(out.len() + 70_000, 0);
            Ok(())
        });
        assert!(too_long.is_err());
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn frames_are_cut_by_their_length_and_garbage_is_refused() {
        assert_eq!(frame_len(&[0x6f, 0]).unwrap(), None);
        assert_eq!(frame_len(&[0x6f, 0, 0x10, 0]).unwrap(), Some(40));
        assert!(frame_len(&[0x12, 0x34, 0, 0]).unwrap_err().message.contains("unknown encapsulation command 0x3412"));
    }

    #[test]
    fn a_refused_command_names_its_status() {
        let header = Header { command: command::SEND_RR_DATA, status: 0x64, ..Header::default() };
        let e = header.check_status().unwrap_err();
        assert!(e.message.contains("status 0x0064 (invalid session handle)"), "{}", e.message);
    }

    #[test]
    fn list_identity_replies_round_trip() {
        let identity = Identity {
            protocol_version: 1,
            address: "127.0.0.1:44818".parse().unwrap(),
            vendor_id: 1,
            device_type: 0x0E,
            product_code: 0x36,
            revision: (20, 11),
            status: 0x0030,
            serial_number: 0x00C0_FFEE,
            product_name: "1756-L61/B LOGIX5561".into(),
            state: 3,
        };
        let mut out = Vec::new();
        list_identity_reply(&mut out, [0; 8], &identity).unwrap();
        assert_eq!(&out[HEADER_LEN + 8..HEADER_LEN + 14], &[0x00, 0x02, 0xaf, 0x12, 127, 0]);
        assert_eq!(parse_list_identity(&out[HEADER_LEN..]).unwrap(), vec![identity]);
        assert!(parse_list_identity(&out[HEADER_LEN..out.len() - 10]).is_err());
    }
}
