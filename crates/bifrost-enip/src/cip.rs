//! CIP messages (Volume 1): Message Router requests and responses, EPATH
//! segments, general statuses, and the Connection Manager's services
//! (Unconnected Send, Forward Open, Large Forward Open, Forward Close).

use bifrost_core::{CipStatus, Error, ErrorCode, Result};

use crate::wire::{patch_u16, put_u16, put_u32, Reader};

/// Service codes. A reply's service is the request's with bit 7 set.
pub mod service {
    pub const GET_ATTRIBUTES_ALL: u8 = 0x01;
    pub const GET_ATTRIBUTE_LIST: u8 = 0x03;
    pub const MULTIPLE_SERVICE_PACKET: u8 = 0x0A;
    pub const GET_ATTRIBUTE_SINGLE: u8 = 0x0E;
    pub const SET_ATTRIBUTE_SINGLE: u8 = 0x10;
    pub const READ_TAG: u8 = 0x4C;
    pub const WRITE_TAG: u8 = 0x4D;
    /// Logix Read-Modify-Write Tag; the Connection Manager's Forward Close shares the code.
    pub const READ_MODIFY_WRITE: u8 = 0x4E;
    pub const FORWARD_CLOSE: u8 = 0x4E;
    /// Logix Read Tag Fragmented; the Connection Manager's Unconnected Send shares the code.
    pub const READ_TAG_FRAGMENTED: u8 = 0x52;
    pub const UNCONNECTED_SEND: u8 = 0x52;
    pub const WRITE_TAG_FRAGMENTED: u8 = 0x53;
    pub const FORWARD_OPEN: u8 = 0x54;
    pub const GET_INSTANCE_ATTRIBUTE_LIST: u8 = 0x55;
    pub const LARGE_FORWARD_OPEN: u8 = 0x5B;
    pub const REPLY: u8 = 0x80;
}

pub mod class {
    pub const IDENTITY: u16 = 0x01;
    pub const MESSAGE_ROUTER: u16 = 0x02;
    pub const CONNECTION_MANAGER: u16 = 0x06;
    pub const SYMBOL: u16 = 0x6B;
    pub const TEMPLATE: u16 = 0x6C;
}

/// General status codes the client acts on.
pub mod status {
    pub const SUCCESS: u8 = 0x00;
    pub const CONNECTION_FAILURE: u8 = 0x01;
    pub const PATH_SEGMENT_ERROR: u8 = 0x04;
    pub const PATH_DESTINATION_UNKNOWN: u8 = 0x05;
    pub const PARTIAL_TRANSFER: u8 = 0x06;
    pub const SERVICE_NOT_SUPPORTED: u8 = 0x08;
    pub const REPLY_DATA_TOO_LARGE: u8 = 0x11;
    pub const NOT_ENOUGH_DATA: u8 = 0x13;
    pub const TOO_MUCH_DATA: u8 = 0x15;
    pub const EMBEDDED_SERVICE_ERROR: u8 = 0x1E;
    pub const GENERAL_ERROR: u8 = 0xFF;
}

/// The names CIP Volume 1 (Appendix B) gives general status codes.
pub fn status_name(status: u8) -> &'static str {
    match status {
        0x00 => "success",
        0x01 => "connection failure",
        0x02 => "resource unavailable",
        0x03 => "invalid parameter value",
        0x04 => "path segment error",
        0x05 => "path destination unknown",
        0x06 => "partial transfer",
        0x07 => "connection lost",
        0x08 => "service not supported",
        0x09 => "invalid attribute value",
        0x0A => "attribute list error",
        0x0B => "already in requested mode/state",
        0x0C => "object state conflict",
        0x0D => "object already exists",
        0x0E => "attribute not settable",
        0x0F => "privilege violation",
        0x10 => "device state conflict",
        0x11 => "reply data too large",
        0x12 => "fragmentation of a primitive value",
        0x13 => "not enough data",
        0x14 => "attribute not supported",
        0x15 => "too much data",
        0x16 => "object does not exist",
        0x17 => "service fragmentation sequence not in progress",
        0x18 => "no stored attribute data",
        0x19 => "store operation failure",
        0x1A => "routing failure, request packet too large",
        0x1B => "routing failure, response packet too large",
        0x1C => "missing attribute list entry data",
        0x1D => "invalid attribute value list",
        0x1E => "embedded service error",
        0x1F => "vendor specific error",
        0x20 => "invalid parameter",
        0x21 => "write-once value or medium already written",
        0x22 => "invalid reply received",
        0x25 => "key failure in path",
        0x26 => "path size invalid",
        0x27 => "unexpected attribute in list",
        0x28 => "invalid member id",
        0x29 => "member not settable",
        0xFF => "general error",
        _ => "unknown status",
    }
}

/// What an extended status adds, for the pairs devices commonly send.
pub fn ext_status_message(status: u8, ext: u16) -> Option<&'static str> {
    Some(match (status, ext) {
        (0x01, 0x0100) => "connection in use or duplicate Forward Open",
        (0x01, 0x0103) => "transport class and trigger combination not supported",
        (0x01, 0x0106) => "ownership conflict",
        (0x01, 0x0107) => "target connection not found",
        (0x01, 0x0108) => "invalid network connection parameter",
        (0x01, 0x0109) => "invalid connection size",
        (0x01, 0x0111) => "RPI not supported",
        (0x01, 0x0113) => "out of connections",
        (0x01, 0x0114) => "vendor id or product code mismatch",
        (0x01, 0x0115) => "device type mismatch",
        (0x01, 0x0116) => "revision mismatch",
        (0x01, 0x0203) => "connection timed out",
        (0x01, 0x0204) => "unconnected request timed out",
        (0x01, 0x0205) => "parameter error in unconnected request",
        (0x01, 0x0301) => "no buffer memory available",
        (0x01, 0x0302) => "network bandwidth not available",
        (0x01, 0x0311) => "invalid port in the path",
        (0x01, 0x0312) => "invalid link address in the path",
        (0x01, 0x0315) => "invalid segment in the connection path",
        (0xFF, 0x2101) => "keyswitch position does not allow it",
        (0xFF, 0x2104) => "offset or element out of range",
        (0xFF, 0x2105) => "past the end of the tag (element or byte count too large)",
        (0xFF, 0x2107) => "data type mismatch",
        _ => return None,
    })
}

/// `CIP_STATUS` for a refused request; `what` names it (`read of 'Tag'`).
pub fn status_error(status: u8, ext_status: Option<u16>, what: &str) -> Error {
    let mut message = format!("{what}: CIP status 0x{status:02x} ({})", status_name(status));
    if let Some(ext) = ext_status {
        message.push_str(&format!(", extended status 0x{ext:04x}"));
        if let Some(meaning) = ext_status_message(status, ext) {
            message.push_str(&format!(" ({meaning})"));
        }
    }
    let mut error = Error::new(ErrorCode::CipStatus, message);
    error.cip = Some(CipStatus { status, ext_status });
    error
}

/// Logical segment types of an EPATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logical {
    Class = 0x20,
    Instance = 0x24,
    Member = 0x28,
    Attribute = 0x30,
}

/// Appends a logical segment in its shortest form (8, 16 or 32 bits, padded to words).
pub fn logical(path: &mut Vec<u8>, kind: Logical, value: u32) {
    let kind = kind as u8;
    if let Ok(byte) = u8::try_from(value) {
        path.extend_from_slice(&[kind, byte]);
    } else if let Ok(word) = u16::try_from(value) {
        path.extend_from_slice(&[kind | 1, 0]);
        put_u16(path, word);
    } else {
        path.extend_from_slice(&[kind | 2, 0]);
        put_u32(path, value);
    }
}

/// Appends an ANSI extended symbolic segment (a tag or member name), padded to a word.
pub fn symbolic(path: &mut Vec<u8>, name: &[u8]) -> Result<()> {
    let len = u8::try_from(name.len())
        .map_err(|_| Error::address(format!("a tag name part of {} characters is longer than 255", name.len())))?;
    path.extend_from_slice(&[0x91, len]);
    path.extend_from_slice(name);
    if name.len() % 2 == 1 {
        path.push(0);
    }
    Ok(())
}

/// Appends a path to `class`, `instance` and, when given, `attribute`.
pub fn object_path(class: u16, instance: u32, attribute: Option<u16>) -> Vec<u8> {
    let mut path = Vec::with_capacity(8);
    logical(&mut path, Logical::Class, u32::from(class));
    logical(&mut path, Logical::Instance, instance);
    if let Some(attribute) = attribute {
        logical(&mut path, Logical::Attribute, u32::from(attribute));
    }
    path
}

/// A route path from its text: comma-separated port and link pairs, as in
/// `1,0` (backplane, slot 0) or `1,0,2,10.0.0.5` (then port 2 to an address).
pub fn route_path(text: &str) -> Result<Vec<u8>> {
    let parts: Vec<&str> = text.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    if !parts.len().is_multiple_of(2) {
        return Err(Error::address(format!("route path '{text}' must be port,link pairs, as in path=1,0")));
    }
    let mut path = Vec::new();
    for pair in parts.chunks(2) {
        let port: u16 = pair[0]
            .parse()
            .ok()
            .filter(|p| (1..=0xFFFF).contains(p))
            .ok_or_else(|| Error::address(format!("route path '{text}': port '{}' is not 1 to 65535", pair[0])))?;
        let link: Vec<u8> = match pair[1].parse::<u8>() {
            Ok(slot) => vec![slot],
            Err(_) if pair[1].parse::<std::net::Ipv4Addr>().is_ok() => pair[1].as_bytes().to_vec(),
            Err(_) => {
                return Err(Error::address(format!(
                    "route path '{text}': link '{}' is neither a slot (0 to 255) nor an IPv4 address",
                    pair[1]
                )))
            }
        };
        port_segment(&mut path, port, &link);
    }
    if path.len() > 2 * 255 {
        return Err(Error::address(format!("route path '{text}' is too long")));
    }
    Ok(path)
}

/// A port segment: the port (extended when above 14) and its link address.
fn port_segment(path: &mut Vec<u8>, port: u16, link: &[u8]) {
    let start = path.len();
    let extended_link = link.len() > 1;
    let port_bits = if port > 14 { 0x0F } else { port as u8 };
    path.push(port_bits | if extended_link { 0x10 } else { 0 });
    if extended_link {
        path.push(link.len() as u8);
    }
    if port > 14 {
        put_u16(path, port);
    }
    path.extend_from_slice(link);
    if (path.len() - start) % 2 == 1 {
        path.push(0);
    }
}

/// Appends a Message Router request: service, path size in words, path, then what `data` appends.
pub fn request(out: &mut Vec<u8>, service: u8, path: &[u8], data: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
    if !path.len().is_multiple_of(2) || path.len() > 2 * 255 {
        return Err(Error::address(format!("a request path of {} bytes is not a whole number of words", path.len())));
    }
    out.extend_from_slice(&[service, (path.len() / 2) as u8]);
    out.extend_from_slice(path);
    data(out);
    Ok(())
}

/// A Message Router response, borrowed from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// The request's service (the reply bit cleared).
    pub service: u8,
    pub status: u8,
    /// The first additional status word, when any came.
    pub ext_status: Option<u16>,
    /// Every additional status word, as sent.
    pub additional: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> Response<'a> {
    pub fn parse(message: &'a [u8]) -> Result<Response<'a>> {
        let mut r = Reader::new(message);
        let service = r.u8("the reply service")?;
        if service & service::REPLY == 0 {
            return Err(Error::proto(format!("service 0x{service:02x} is a request, not a reply")));
        }
        r.u8("the reserved byte")?;
        let status = r.u8("the general status")?;
        let words = r.u8("the additional status size")?;
        let additional = r.bytes(2 * usize::from(words), "the additional status")?;
        let ext_status = (words > 0).then(|| u16::from_le_bytes([additional[0], additional[1]]));
        Ok(Response { service: service & !service::REPLY, status, ext_status, additional, data: r.rest() })
    }

    /// Additional status word `index` (0 is the extended status), when sent.
    pub fn additional_word(&self, index: usize) -> Option<u16> {
        let bytes = self.additional.get(2 * index..2 * index + 2)?;
        Some(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    /// The data of a successful reply (or of a partial transfer, which the caller continues).
    pub fn ok(&self, what: &str) -> Result<&'a [u8]> {
        match self.status {
            status::SUCCESS | status::PARTIAL_TRANSFER => Ok(self.data),
            status => Err(status_error(status, self.ext_status, what)),
        }
    }
}

/// Wraps a request for the device at `route` in an Unconnected Send to the Connection Manager.
pub fn unconnected_send(
    out: &mut Vec<u8>,
    route: &[u8],
    message: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let start = out.len();
    let path = object_path(class::CONNECTION_MANAGER, 1, None);
    request(out, service::UNCONNECTED_SEND, &path, |out| {
        // About 14 s (2^10 ms ticks, 14 of them) for the target to answer the hop.
        out.extend_from_slice(&[0x0A, 0x0E]);
    })?;
    let size_at = out.len();
    put_u16(out, 0);
    message(out).inspect_err(|_| out.truncate(start))?;
    let size = out.len() - size_at - 2;
    patch_u16(out, size_at, size).inspect_err(|_| out.truncate(start))?;
    if size % 2 == 1 {
        out.push(0);
    }
    out.extend_from_slice(&[(route.len() / 2) as u8, 0]);
    out.extend_from_slice(route);
    Ok(())
}

/// The unconnected message inside an Unconnected Send, as a target receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwrapped<'a> {
    pub message: &'a [u8],
    pub route: &'a [u8],
}

/// Takes the embedded request and route out of an Unconnected Send's data.
pub fn parse_unconnected_send(data: &[u8]) -> Result<Unwrapped<'_>> {
    let mut r = Reader::new(data);
    r.u8("the priority and tick")?;
    r.u8("the timeout ticks")?;
    let size = r.u16("the embedded request's size")?;
    let message = r.bytes(usize::from(size), "the embedded request")?;
    if size % 2 == 1 {
        r.u8("the pad byte")?;
    }
    let words = r.u8("the route path size")?;
    r.u8("the reserved byte")?;
    let route = r.bytes(2 * usize::from(words), "the route path")?;
    Ok(Unwrapped { message, route })
}

/// Connection parameters of a Forward Open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardOpen {
    /// Large Forward Open (32-bit parameters, sizes up to 65,535).
    pub large: bool,
    /// Bytes of a connected message either way (the connection size).
    pub size: u16,
    /// Fresh on every connection, so a device never takes it for a duplicate.
    pub serial: u16,
    pub vendor_id: u16,
    pub originator_serial: u32,
    /// Requested packet interval, µs.
    pub rpi_us: u32,
    /// The connection times out after `rpi × 4 << multiplier` without traffic.
    pub timeout_multiplier: u8,
    /// The connection path: the route, then the Message Router.
    pub route: Vec<u8>,
}

/// A point-to-point, variable-size, low-priority connection's parameters.
fn network_parameters(large: bool, size: u16) -> u32 {
    if large {
        0x4000_0000 | 0x0200_0000 | u32::from(size)
    } else {
        0x4000 | 0x0200 | u32::from(size & 0x01FF)
    }
}

/// Largest connection size a classic Forward Open can ask for.
pub const MAX_CLASSIC_SIZE: u16 = 511;

pub fn forward_open(out: &mut Vec<u8>, open: &ForwardOpen) -> Result<()> {
    let service = if open.large { service::LARGE_FORWARD_OPEN } else { service::FORWARD_OPEN };
    let path = object_path(class::CONNECTION_MANAGER, 1, None);
    let mut connection_path = open.route.clone();
    connection_path.extend_from_slice(&object_path(class::MESSAGE_ROUTER, 1, None));
    request(out, service, &path, |out| {
        out.extend_from_slice(&[0x0A, 0x0E]);
        put_u32(out, 0); // O->T connection id: the target chooses it
        put_u32(out, 0x2000_0000 | u32::from(open.serial)); // T->O connection id: ours
        put_u16(out, open.serial);
        put_u16(out, open.vendor_id);
        put_u32(out, open.originator_serial);
        out.extend_from_slice(&[open.timeout_multiplier, 0, 0, 0]);
        for _ in 0..2 {
            put_u32(out, open.rpi_us);
            let parameters = network_parameters(open.large, open.size);
            if open.large {
                put_u32(out, parameters)
            } else {
                put_u16(out, parameters as u16)
            }
        }
        out.push(0xA3); // server transport, application-triggered, class 3
        out.push((connection_path.len() / 2) as u8);
        out.extend_from_slice(&connection_path);
    })
}

/// A successful Forward Open reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The id to send connected requests with.
    pub o_t_id: u32,
    pub t_o_id: u32,
    pub serial: u16,
    pub vendor_id: u16,
    pub originator_serial: u32,
    /// Actual packet intervals, µs.
    pub o_t_api_us: u32,
    pub t_o_api_us: u32,
}

pub fn parse_forward_open_reply(data: &[u8]) -> Result<Opened> {
    let mut r = Reader::new(data);
    Ok(Opened {
        o_t_id: r.u32("the O->T connection id")?,
        t_o_id: r.u32("the T->O connection id")?,
        serial: r.u16("the connection serial number")?,
        vendor_id: r.u16("the originator vendor id")?,
        originator_serial: r.u32("the originator serial number")?,
        o_t_api_us: r.u32("the O->T packet interval")?,
        t_o_api_us: r.u32("the T->O packet interval")?,
    })
}

/// A Forward Open request as a target reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    pub large: bool,
    pub t_o_id: u32,
    pub serial: u16,
    pub vendor_id: u16,
    pub originator_serial: u32,
    pub timeout_multiplier: u8,
    pub o_t_rpi_us: u32,
    /// The connection size asked for, O->T.
    pub size: u16,
    pub t_o_rpi_us: u32,
    /// The connection path's route: what comes before the Message Router.
    pub route: Vec<u8>,
}

pub fn parse_forward_open(large: bool, data: &[u8]) -> Result<OpenRequest> {
    let mut r = Reader::new(data);
    r.u8("the priority and tick")?;
    r.u8("the timeout ticks")?;
    r.u32("the O->T connection id")?;
    let t_o_id = r.u32("the T->O connection id")?;
    let serial = r.u16("the connection serial number")?;
    let vendor_id = r.u16("the originator vendor id")?;
    let originator_serial = r.u32("the originator serial number")?;
    let timeout_multiplier = r.u8("the timeout multiplier")?;
    r.bytes(3, "the reserved bytes")?;
    let o_t_rpi_us = r.u32("the O->T RPI")?;
    let o_t_parameters = if large { r.u32("the O->T parameters")? } else { u32::from(r.u16("the O->T parameters")?) };
    let t_o_rpi_us = r.u32("the T->O RPI")?;
    if large {
        r.u32("the T->O parameters")?;
    } else {
        r.u16("the T->O parameters")?;
    }
    let size = if large { o_t_parameters as u16 } else { (o_t_parameters & 0x01FF) as u16 };
    r.u8("the transport type")?;
    let words = r.u8("the connection path size")?;
    let path = r.bytes(2 * usize::from(words), "the connection path")?;
    let router = object_path(class::MESSAGE_ROUTER, 1, None);
    let route = path.strip_suffix(&router[..]).unwrap_or(path).to_vec();
    Ok(OpenRequest {
        large,
        t_o_id,
        serial,
        vendor_id,
        originator_serial,
        timeout_multiplier,
        o_t_rpi_us,
        size,
        t_o_rpi_us,
        route,
    })
}

/// Forward Close of the connection opened with these ids.
pub fn forward_close(
    out: &mut Vec<u8>,
    serial: u16,
    vendor_id: u16,
    originator_serial: u32,
    route: &[u8],
) -> Result<()> {
    let path = object_path(class::CONNECTION_MANAGER, 1, None);
    let mut connection_path = route.to_vec();
    connection_path.extend_from_slice(&object_path(class::MESSAGE_ROUTER, 1, None));
    request(out, service::FORWARD_CLOSE, &path, |out| {
        out.extend_from_slice(&[0x0A, 0x0E]);
        put_u16(out, serial);
        put_u16(out, vendor_id);
        put_u32(out, originator_serial);
        out.extend_from_slice(&[(connection_path.len() / 2) as u8, 0]);
        out.extend_from_slice(&connection_path);
    })
}

/// A Multiple Service Packet to the Message Router: `requests` appends each
/// embedded request in turn through the closure it is handed, and returns how many.
pub fn multiple_service_packet(out: &mut Vec<u8>, requests: &[&[u8]]) -> Result<()> {
    let path = object_path(class::MESSAGE_ROUTER, 1, None);
    let count = u16::try_from(requests.len()).map_err(|_| Error::invalid_value("too many requests in one packet"))?;
    request(out, service::MULTIPLE_SERVICE_PACKET, &path, |out| {
        put_u16(out, count);
        let mut offset = 2 + 2 * requests.len();
        for request in requests {
            put_u16(out, offset as u16);
            offset += request.len();
        }
        for request in requests {
            out.extend_from_slice(request);
        }
    })
}

/// Bytes a Multiple Service Packet adds to its requests: the service, path and
/// count, and an offset per request.
pub fn multiple_service_overhead(requests: usize) -> usize {
    2 + 4 + 2 + 2 * requests
}

/// Bytes a Multiple Service Packet reply adds to its replies.
pub fn multiple_reply_overhead(replies: usize) -> usize {
    4 + 2 + 2 * replies
}

/// The embedded messages of a Multiple Service Packet (requests or replies), by their offsets.
pub fn split_multiple(data: &[u8]) -> Result<Vec<&[u8]>> {
    let mut r = Reader::new(data);
    let count = usize::from(r.u16("the service count")?);
    let offsets: Vec<usize> = (0..count).map(|_| r.u16("a service offset").map(usize::from)).collect::<Result<_>>()?;
    let table_end = 2 + 2 * count;
    (0..count)
        .map(|i| {
            let start = offsets[i];
            let end = offsets.get(i + 1).copied().unwrap_or(data.len());
            if start < table_end || start > end || end > data.len() {
                return Err(Error::proto(format!("a Multiple Service Packet's offset {start} is out of place")));
            }
            Ok(&data[start..end])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn logical_segments_take_their_shortest_form() {
        let mut path = Vec::new();
        logical(&mut path, Logical::Class, 0x6B);
        logical(&mut path, Logical::Instance, 0x1234);
        logical(&mut path, Logical::Instance, 0x0001_0000);
        logical(&mut path, Logical::Attribute, 1);
        assert_eq!(path, hex("206b2500341226000000010030 01".replace(' ', "").as_str()));
    }

    #[test]
    fn symbolic_segments_are_padded_to_words() {
        let mut path = Vec::new();
        symbolic(&mut path, b"SCADA").unwrap();
        symbolic(&mut path, b"Temp").unwrap();
        assert_eq!(path, hex("9105534341444100910454656d70"));
        assert!(symbolic(&mut path, &[b'a'; 256]).is_err());
    }

    #[test]
    fn route_paths_from_text() {
        assert_eq!(route_path("1,0").unwrap(), [0x01, 0x00]);
        assert_eq!(route_path("1, 3").unwrap(), [0x01, 0x03]);
        assert_eq!(route_path("").unwrap(), Vec::<u8>::new());
        // Port 2 to an address: extended link, length, the address's text, padded.
        assert_eq!(route_path("1,0,2,10.0.0.5").unwrap(), [&[1, 0, 0x12, 8][..], b"10.0.0.5"].concat());
        assert_eq!(route_path("1,0,2,10.0.0.50").unwrap(), [&[1, 0, 0x12, 9][..], b"10.0.0.50", &[0]].concat());
        assert_eq!(route_path("18,1").unwrap(), [0x0F, 0x12, 0x00, 0x01]);
        for bad in ["1", "x,0", "1,host", "0,1", "70000,1"] {
            assert_eq!(route_path(bad).unwrap_err().code, ErrorCode::Address, "{bad}");
        }
    }

    #[test]
    fn responses_parse_their_status_and_extended_status() {
        let ok_frame = hex("cc000000c3002a00");
        let ok = Response::parse(&ok_frame).unwrap();
        assert_eq!((ok.service, ok.status, ok.ext_status, ok.data), (0x4C, 0, None, &[0xc3, 0, 0x2a, 0][..]));
        assert_eq!(ok.additional_word(0), None);
        let refused_frame = hex("cc00ff010521");
        let refused = Response::parse(&refused_frame).unwrap();
        let e = refused.ok("read of 'Big[9999]'").unwrap_err();
        assert_eq!(e.code, ErrorCode::CipStatus);
        assert_eq!(e.cip, Some(CipStatus { status: 0xFF, ext_status: Some(0x2105) }));
        assert_eq!(
            e.message,
            "read of 'Big[9999]': CIP status 0xff (general error), extended status 0x2105 (past the end of the tag (element or byte count too large))"
        );
        let unknown = Response::parse(&hex("cc000500")).unwrap().ok("read of 'Nope'").unwrap_err();
        assert_eq!(unknown.message, "read of 'Nope': CIP status 0x05 (path destination unknown)");
        assert!(Response::parse(&hex("4c000000")).is_err(), "a request is not a reply");
        assert!(Response::parse(&hex("cc00ff02")).is_err(), "additional status cut short");
    }

    #[test]
    fn unconnected_send_wraps_and_unwraps() {
        let mut out = Vec::new();
        unconnected_send(&mut out, &[1, 0], |out| {
            request(out, service::READ_TAG, &hex("910443415441"), |out| put_u16(out, 1))
        })
        .unwrap();
        // 0x52 to the Connection Manager, 10/14 ticks, a 10-byte embedded read, route 1,0.
        assert_eq!(out, hex("52022006240 10a0e0a004c03910443415441010001000100".replace(' ', "").as_str()));
        let mut r = Reader::new(&out);
        r.bytes(6, "head").unwrap();
        let inner = parse_unconnected_send(r.rest()).unwrap();
        assert_eq!(inner.route, [1, 0]);
        assert_eq!(inner.message[0], service::READ_TAG);
    }

    /// The reply of a real ControlLogix 1756-L61 to a routed Get Attributes All of
    /// its Identity object (the capture cpppo's repository keeps).
    #[test]
    fn a_real_controllers_identity_reply() {
        let mut reply = hex("810000000100 0e00 3600 140b 6031 1a066c00 14".replace(' ', "").as_str());
        reply.extend_from_slice(b"1756-L61/B LOGIX5561");
        let response = Response::parse(&reply).unwrap();
        assert_eq!((response.service, response.status, response.ext_status), (service::GET_ATTRIBUTES_ALL, 0, None));
        let mut r = Reader::new(response.data);
        assert_eq!((r.u16("vendor").unwrap(), r.u16("type").unwrap(), r.u16("product").unwrap()), (1, 0x0e, 0x36));
        assert_eq!((r.u8("major").unwrap(), r.u8("minor").unwrap()), (20, 11));
        assert_eq!((r.u16("status").unwrap(), r.u32("serial").unwrap()), (0x3160, 0x006c_061a));
        let name_len = r.u8("length").unwrap();
        assert_eq!(r.bytes(usize::from(name_len), "name").unwrap(), b"1756-L61/B LOGIX5561");
    }

    #[test]
    fn forward_open_round_trips_both_sizes() {
        for (large, size) in [(true, 4002), (false, 504)] {
            let open = ForwardOpen {
                large,
                size,
                serial: 0x1234,
                vendor_id: 0x1337,
                originator_serial: 0xCAFE_F00D,
                rpi_us: 2_000_000,
                timeout_multiplier: 7,
                route: vec![1, 0],
            };
            let mut out = Vec::new();
            forward_open(&mut out, &open).unwrap();
            assert_eq!(out[0], if large { 0x5B } else { 0x54 });
            let parsed = parse_forward_open(large, &out[6..]).unwrap();
            assert_eq!((parsed.size, parsed.serial, parsed.vendor_id), (size, 0x1234, 0x1337));
            assert_eq!(
                (parsed.originator_serial, parsed.o_t_rpi_us, parsed.timeout_multiplier),
                (0xCAFE_F00D, 2_000_000, 7)
            );
            // The connection path ends at the Message Router, after the route.
            assert!(out.ends_with(&[3, 1, 0, 0x20, 0x02, 0x24, 0x01]), "{out:02x?}");
        }
    }

    #[test]
    fn multiple_service_packets_split_by_their_offsets() {
        let a = [0x4C, 0x02, 0x91, 0x01, b'A', 0, 1, 0];
        let b = [0x4C, 0x02, 0x91, 0x01, b'B', 0, 1, 0];
        let mut out = Vec::new();
        multiple_service_packet(&mut out, &[&a, &b]).unwrap();
        assert_eq!(&out[..10], &hex("0a022002240102000600"));
        assert_eq!(out.len(), multiple_service_overhead(2) + a.len() + b.len());
        assert_eq!(split_multiple(&out[6..]).unwrap(), vec![&a[..], &b[..]]);
        assert!(split_multiple(&hex("02000600ff00")).is_err(), "an offset past the end");
        assert!(split_multiple(&hex("0200")).is_err(), "offsets cut short");
    }
}
