//! The secure channel's own messages (Part 4, 5.5; Part 6, 6.7): the request
//! and response headers every service carries, OpenSecureChannel (issue and
//! renew) in an OPN chunk with its asymmetric security header, the token it
//! grants and when to renew it (at 75% of its lifetime), CloseSecureChannel,
//! and the ServiceFault a server answers any request with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bifrost_core::{Error, ErrorCode, OpcuaStatus, Result};

use crate::encoding::{Decode, DiagnosticInfo, Encode, ExtensionBody, ExtensionObject, ReadLengths, Reader};
use crate::node_id::NodeId;
use crate::transport::{self, chunk, kind, SecurityPolicy, HEADER_LEN};

/// The binary encodings' NodeIds of the messages here (namespace 0).
pub mod encoding_id {
    pub const SERVICE_FAULT: u32 = 397;
    pub const OPEN_SECURE_CHANNEL_REQUEST: u32 = 446;
    pub const OPEN_SECURE_CHANNEL_RESPONSE: u32 = 449;
    pub const CLOSE_SECURE_CHANNEL_REQUEST: u32 = 452;
}

/// 100 ns ticks between 1601-01-01 and 1970-01-01, as DateTime counts from the first.
pub const EPOCH_1601: i64 = 116_444_736_000_000_000;

/// A time as an OPC UA DateTime.
pub fn date_time(at: SystemTime) -> i64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    EPOCH_1601 + (since.as_nanos() / 100) as i64
}

/// What every request carries.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHeader {
    /// The session's token; the null NodeId before a session exists.
    pub authentication_token: NodeId,
    pub timestamp: i64,
    pub request_handle: u32,
    /// How long the server should work on it, in ms (0: no hint).
    pub timeout_hint: u32,
}

impl Encode for RequestHeader {
    fn encode(&self, out: &mut Vec<u8>) {
        self.authentication_token.encode(out);
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.request_handle.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // return no diagnostics
        None::<&str>.encode(out); // audit entry id
        out.extend_from_slice(&self.timeout_hint.to_le_bytes());
        ExtensionObject { type_id: NodeId::null(), body: ExtensionBody::None }.encode(out);
    }
}

/// What every response carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseHeader {
    pub timestamp: i64,
    pub request_handle: u32,
    pub service_result: u32,
    pub diagnostics: DiagnosticInfo,
    pub string_table: Vec<Option<String>>,
}

impl Decode<'_> for ResponseHeader {
    fn decode(r: &mut Reader<'_>) -> Result<ResponseHeader> {
        let timestamp = r.u64("a response's timestamp")? as i64;
        let request_handle = r.u32("a request handle")?;
        let service_result = r.u32("a service result")?;
        let diagnostics = DiagnosticInfo::decode(r)?;
        let count = r.length(4, "a string table")?.unwrap_or(0);
        let string_table =
            (0..count).map(|_| Ok(r.string("a string")?.map(str::to_string))).collect::<Result<Vec<_>>>()?;
        ExtensionObject::decode(r)?; // additional header: nothing we use
        Ok(ResponseHeader { timestamp, request_handle, service_result, diagnostics, string_table })
    }
}

impl Encode for ResponseHeader {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.request_handle.to_le_bytes());
        out.extend_from_slice(&self.service_result.to_le_bytes());
        self.diagnostics.encode(out);
        out.extend_from_slice(&(self.string_table.len() as i32).to_le_bytes());
        self.string_table.iter().for_each(|s| s.as_deref().encode(out));
        ExtensionObject { type_id: NodeId::null(), body: ExtensionBody::None }.encode(out);
    }
}

/// A bad status as an `OPCUA_STATUS` error naming it, and what failed.
pub fn status_error(code: u32, what: &str) -> Error {
    let mut error = Error::new(ErrorCode::OpcuaStatus, format!("{what}: {}", crate::status::describe(code)));
    let name = crate::status::name(code).unwrap_or(match crate::status::severity(code) {
        crate::status::Severity::Good => "Good",
        crate::status::Severity::Uncertain => "Uncertain",
        crate::status::Severity::Bad => "Bad",
    });
    error.opcua = Some(OpcuaStatus { code, name });
    error
}

/// A response body's type and header; a ServiceFault (or a bad service result)
/// is the server's `OPCUA_STATUS` refusal; a response of another type than
/// `expected` is `EPROTO`.
pub fn response<'a>(body: &'a [u8], expected: u32, what: &str) -> Result<(ResponseHeader, Reader<'a>)> {
    let mut r = Reader::new(body);
    let type_id = NodeId::decode(&mut r)?;
    let header = ResponseHeader::decode(&mut r)?;
    if crate::status::severity(header.service_result) == crate::status::Severity::Bad {
        return Err(status_error(header.service_result, what));
    }
    if type_id != NodeId::numeric(0, expected) {
        return Err(Error::proto(format!("{what}: the server answered with a {type_id}, not i={expected}")));
    }
    Ok((header, r))
}

/// What OpenSecureChannel asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRequest {
    Issue = 0,
    Renew = 1,
}

/// Writes an OpenSecureChannel request: an OPN chunk with the policy's
/// asymmetric security header, signed and encrypted as the policy has it.
#[allow(clippy::too_many_arguments)]
pub fn open_request(
    out: &mut Vec<u8>,
    channel_id: u32,
    policy: &dyn SecurityPolicy,
    (sequence, request_id): (u32, u32),
    header: &RequestHeader,
    request: TokenRequest,
    nonce: Option<&[u8]>,
    lifetime: Duration,
) -> Result<()> {
    let start = out.len();
    let mut header_end = 0;
    transport::message(out, kind::OPEN, chunk::FINAL, |out| {
        out.extend_from_slice(&channel_id.to_le_bytes());
        Some(policy.uri()).encode(out);
        let (certificate, thumbprint) = policy.certificates();
        certificate.encode(out);
        thumbprint.encode(out);
        header_end = out.len() - start;
        out.extend_from_slice(&sequence.to_le_bytes());
        out.extend_from_slice(&request_id.to_le_bytes());
        NodeId::numeric(0, encoding_id::OPEN_SECURE_CHANNEL_REQUEST).encode(out);
        header.encode(out);
        out.extend_from_slice(&0u32.to_le_bytes()); // client protocol version
        out.extend_from_slice(&(request as u32).to_le_bytes());
        out.extend_from_slice(&policy.mode().to_le_bytes());
        nonce.encode(out);
        out.extend_from_slice(&(lifetime.as_millis().min(u128::from(u32::MAX)) as u32).to_le_bytes());
    });
    let mut chunk = out.split_off(start);
    policy.secure_asymmetric(&mut chunk, header_end)?;
    out.extend_from_slice(&chunk);
    Ok(())
}

/// What a server grants: the channel, a token, and how long the token lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityToken {
    pub channel_id: u32,
    pub token_id: u32,
    pub created_at: i64,
    pub lifetime: Duration,
}

impl SecurityToken {
    /// When a token granted at `granted` is renewed: at 75% of its lifetime.
    pub fn renew_at(&self, granted: std::time::Instant) -> std::time::Instant {
        granted + self.lifetime * 3 / 4
    }
}

/// An OpenSecureChannel response: its OPN chunk's sequence and request ids,
/// the token, and the server's nonce its keys derive from.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub sequence: u32,
    pub request_id: u32,
    pub token: SecurityToken,
    pub server_nonce: Vec<u8>,
}

/// Reads an OPN chunk answering our OpenSecureChannel under `policy`, which checks and decrypts it.
pub fn parse_open_response(message: &[u8], policy: &dyn SecurityPolicy) -> Result<Opened> {
    let header = transport::Header::parse(message)?;
    if header.kind != kind::OPEN {
        return Err(Error::proto("OpenSecureChannel was answered with another message type"));
    }
    let message = message.get(..header.size as usize).ok_or_else(|| Error::proto("a short OPN chunk"))?;
    let mut r = Reader::new(&message[HEADER_LEN..]);
    let channel_id = r.u32("a channel id")?;
    let uri = r.string("a security policy URI")?.unwrap_or_default();
    if uri != policy.uri() {
        return Err(Error::proto(format!("the server answered with security policy '{uri}', not '{}'", policy.uri())));
    }
    let sender = r.byte_string("a sender certificate")?;
    r.byte_string("a certificate thumbprint")?;
    let header_end = message.len() - r.rest().len();
    let content = policy.open_asymmetric(message, header_end, sender)?;
    let mut r = Reader::new(&content);
    let (sequence, request_id) = (r.u32("a sequence number")?, r.u32("a request id")?);
    let (_, mut r) = response(r.rest(), encoding_id::OPEN_SECURE_CHANNEL_RESPONSE, "OpenSecureChannel")?;
    r.u32("the server's protocol version")?;
    let token = SecurityToken {
        channel_id: r.u32("a token's channel id")?,
        token_id: r.u32("a token id")?,
        created_at: r.u64("a token's creation time")? as i64,
        lifetime: Duration::from_millis(u64::from(r.u32("a token's lifetime")?)),
    };
    let server_nonce = r.byte_string("a server nonce")?.unwrap_or_default().to_vec();
    if token.channel_id != channel_id && channel_id != 0 {
        return Err(Error::proto(format!("a token for channel {} on channel {channel_id}", token.channel_id)));
    }
    Ok(Opened { sequence, request_id, token, server_nonce })
}

/// The body of a CloseSecureChannel request, for a CLO chunk.
pub fn close_request(header: &RequestHeader) -> Vec<u8> {
    let mut body = Vec::new();
    NodeId::numeric(0, encoding_id::CLOSE_SECURE_CHANNEL_REQUEST).encode(&mut body);
    header.encode(&mut body);
    body
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::transport::NoSecurity;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn header() -> RequestHeader {
        RequestHeader { authentication_token: NodeId::null(), timestamp: 0, request_handle: 1, timeout_hint: 10_000 }
    }

    /// An OPN chunk answering with channel 5, token 7 for 600 s, as a server writes it.
    fn open_response(uri: &str, service_result: u32) -> Vec<u8> {
        open_response_for(uri, service_result, 1, 7, 600_000)
    }

    /// An OPN chunk answering request `request_id` with channel 5, `token_id` for `lifetime_ms`.
    pub(crate) fn open_response_for(
        uri: &str,
        service_result: u32,
        request_id: u32,
        token_id: u32,
        lifetime_ms: u32,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        transport::message(&mut out, kind::OPEN, chunk::FINAL, |out| {
            out.extend_from_slice(&5u32.to_le_bytes());
            Some(uri).encode(out);
            None::<&[u8]>.encode(out);
            None::<&[u8]>.encode(out);
            out.extend_from_slice(&1u32.to_le_bytes()); // sequence number
            out.extend_from_slice(&request_id.to_le_bytes());
            let id = if service_result == 0 {
                encoding_id::OPEN_SECURE_CHANNEL_RESPONSE
            } else {
                encoding_id::SERVICE_FAULT
            };
            NodeId::numeric(0, id).encode(out);
            let header = ResponseHeader {
                timestamp: 0,
                request_handle: 1,
                service_result,
                diagnostics: DiagnosticInfo::default(),
                string_table: Vec::new(),
            };
            header.encode(out);
            if service_result == 0 {
                for word in [0u32, 5, token_id] {
                    out.extend_from_slice(&word.to_le_bytes());
                }
                out.extend_from_slice(&0i64.to_le_bytes());
                out.extend_from_slice(&lifetime_ms.to_le_bytes());
                Some(&[0u8; 0][..]).encode(out);
            }
        });
        out
    }

    #[test]
    fn the_request_header_is_byte_exact() {
        let mut out = Vec::new();
        header().encode(&mut out);
        // Null token, time 0, handle 1, no diagnostics, null audit id, 10 s hint, no additional header.
        assert_eq!(out, hex("00 00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 FF FF FF FF 10 27 00 00 00 00 00"));
    }

    #[test]
    fn open_secure_channel_with_policy_none() {
        let mut out = Vec::new();
        open_request(&mut out, 0, &NoSecurity, (1, 1), &header(), TokenRequest::Issue, None, Duration::from_secs(600))
            .unwrap();
        assert_eq!(&out[..4], b"OPNF");
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize, out.len());
        assert_eq!(&out[16..63], b"http://opcfoundation.org/UA/SecurityPolicy#None");
        // Issue, security mode None, a null nonce, 600,000 ms.
        assert!(out.ends_with(&hex("00 00 00 00 01 00 00 00 FF FF FF FF C0 27 09 00")));
        let opened = parse_open_response(&open_response(NoSecurity.uri(), 0), &NoSecurity).unwrap();
        assert_eq!(
            (opened.token.channel_id, opened.token.token_id, opened.token.lifetime),
            (5, 7, Duration::from_secs(600))
        );
        let granted = std::time::Instant::now();
        assert_eq!(opened.token.renew_at(granted) - granted, Duration::from_secs(450));
    }

    #[test]
    fn refusals_are_opcua_status_and_surprises_eproto() {
        let fault = parse_open_response(&open_response(NoSecurity.uri(), 0x8055_0000), &NoSecurity).unwrap_err();
        assert_eq!(fault.code, ErrorCode::OpcuaStatus);
        assert!(fault.message.contains("BadSecurityPolicyRejected (0x80550000)"), "{}", fault.message);
        let other = parse_open_response(
            &open_response("http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256", 0),
            &NoSecurity,
        );
        assert!(other.unwrap_err().message.contains("Basic256Sha256"));
    }

    #[test]
    fn date_times_count_100_ns_ticks_from_1601() {
        assert_eq!(date_time(UNIX_EPOCH), EPOCH_1601);
        assert_eq!(date_time(UNIX_EPOCH + Duration::from_secs(1)), EPOCH_1601 + 10_000_000);
    }
}
