//! Session services (Part 4, 5.4 and 5.6) and the first attribute service:
//! GetEndpoints, FindServers, CreateSession, ActivateSession with an identity token,
//! CloseSession, and Read. Each request is a message body (its encoding's
//! NodeId first) for a MSG chunk; each response is checked by
//! [`secure_channel::response`] and read here.

use bifrost_core::{Error, Result};
use bytes::Bytes;

use crate::encoding::{
    put_u32, DataValue, Decode, Encode, ExtensionBody, ExtensionObject, LocalizedText, QualifiedName, ReadLengths,
    Reader,
};
use crate::node_id::NodeId;
use crate::secure_channel::{self, RequestHeader};

/// The binary encodings' NodeIds of the messages here (namespace 0).
pub mod encoding_id {
    pub const ANONYMOUS_IDENTITY_TOKEN: u32 = 321;
    pub const USER_NAME_IDENTITY_TOKEN: u32 = 324;
    pub const X509_IDENTITY_TOKEN: u32 = 327;
    pub const FIND_SERVERS_REQUEST: u32 = 422;
    pub const FIND_SERVERS_RESPONSE: u32 = 425;
    pub const GET_ENDPOINTS_REQUEST: u32 = 428;
    pub const GET_ENDPOINTS_RESPONSE: u32 = 431;
    pub const CREATE_SESSION_REQUEST: u32 = 461;
    pub const CREATE_SESSION_RESPONSE: u32 = 464;
    pub const ACTIVATE_SESSION_REQUEST: u32 = 467;
    pub const ACTIVATE_SESSION_RESPONSE: u32 = 470;
    pub const CLOSE_SESSION_REQUEST: u32 = 473;
    pub const CLOSE_SESSION_RESPONSE: u32 = 476;
    pub const READ_REQUEST: u32 = 631;
    pub const READ_RESPONSE: u32 = 634;
    pub const WRITE_REQUEST: u32 = 673;
    pub const WRITE_RESPONSE: u32 = 676;
}

/// A service request: its encoding's id (namespace 0) and its fields after the
/// request header, which the channel fills in as it sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRequest {
    pub type_id: u32,
    pub fields: Bytes,
}

impl ServiceRequest {
    /// Appends the whole message body under `header`.
    pub fn write(&self, header: &RequestHeader, out: &mut Vec<u8>) {
        NodeId::numeric(0, self.type_id).encode(out);
        header.encode(out);
        out.extend_from_slice(&self.fields);
    }

    /// The whole message body under `header`.
    pub fn message(&self, header: &RequestHeader) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.fields.len());
        self.write(header, &mut out);
        out
    }
}

/// Builds a request's fields.
fn request(type_id: u32, fields: impl FnOnce(&mut Vec<u8>)) -> ServiceRequest {
    let mut out = Vec::with_capacity(64);
    fields(&mut out);
    ServiceRequest { type_id, fields: Bytes::from(out) }
}

/// An array's length, then each element.
fn put_array<T>(out: &mut Vec<u8>, items: &[T], mut each: impl FnMut(&mut Vec<u8>, &T)) {
    out.extend_from_slice(&(items.len() as i32).to_le_bytes());
    items.iter().for_each(|item| each(out, item));
}

/// An array read element by element; each element takes at least `least` bytes.
pub(crate) fn read_array<'a, T>(
    r: &mut Reader<'a>,
    least: usize,
    what: &str,
    mut each: impl FnMut(&mut Reader<'a>) -> Result<T>,
) -> Result<Vec<T>> {
    let count = r.length(least, what)?.unwrap_or(0);
    (0..count).map(|_| each(r)).collect()
}

/// How many results a response carries for its operations, which must be the
/// `asked` number: another is `EPROTO`, "{count} results to {what()}".
pub(crate) fn result_count(
    r: &mut Reader<'_>,
    least: usize,
    asked: usize,
    what: impl FnOnce() -> String,
) -> Result<usize> {
    let count = r.length(least, "results")?.unwrap_or(0);
    if count != asked {
        return Err(Error::proto(format!("{count} results to {}", what())));
    }
    Ok(count)
}

fn owned(r: &mut Reader<'_>, what: &str) -> Result<Option<String>> {
    Ok(r.string(what)?.map(str::to_string))
}

/// GetEndpoints for `endpoint_url`.
pub fn get_endpoints(endpoint_url: &str) -> ServiceRequest {
    request(encoding_id::GET_ENDPOINTS_REQUEST, |out| {
        Some(endpoint_url).encode(out);
        put_array(out, &[] as &[&str], |_, _| {}); // locale ids
        put_array(out, &[] as &[&str], |_, _| {}); // profile uris
    })
}

/// FindServers for `endpoint_url`: every server the one there knows, itself included.
pub fn find_servers(endpoint_url: &str) -> ServiceRequest {
    request(encoding_id::FIND_SERVERS_REQUEST, |out| {
        Some(endpoint_url).encode(out);
        put_array(out, &[] as &[&str], |_, _| {}); // locale ids
        put_array(out, &[] as &[&str], |_, _| {}); // server uris
    })
}

/// A FindServers response's servers.
pub fn parse_find_servers(body: &[u8]) -> Result<Vec<ApplicationDescription>> {
    let (_, mut r) = secure_channel::response(body, encoding_id::FIND_SERVERS_RESPONSE, "FindServers")?;
    read_array(&mut r, 20, "servers", ApplicationDescription::decode)
}

/// An application as a server describes it (or a client, itself).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApplicationDescription {
    pub application_uri: Option<String>,
    pub product_uri: Option<String>,
    pub application_name: LocalizedText,
    /// 0 server, 1 client, 2 both, 3 discovery server.
    pub application_type: u32,
    pub discovery_urls: Vec<Option<String>>,
}

impl Encode for ApplicationDescription {
    fn encode(&self, out: &mut Vec<u8>) {
        self.application_uri.as_deref().encode(out);
        self.product_uri.as_deref().encode(out);
        self.application_name.encode(out);
        put_u32(out, self.application_type);
        None::<&str>.encode(out); // gateway server uri
        None::<&str>.encode(out); // discovery profile uri
        put_array(out, &self.discovery_urls, |out, url| url.as_deref().encode(out));
    }
}

impl Decode<'_> for ApplicationDescription {
    fn decode(r: &mut Reader<'_>) -> Result<ApplicationDescription> {
        let application_uri = owned(r, "an application uri")?;
        let product_uri = owned(r, "a product uri")?;
        let application_name = LocalizedText::decode(r)?;
        let application_type = r.u32("an application type")?;
        r.string("a gateway server uri")?;
        r.string("a discovery profile uri")?;
        let discovery_urls = read_array(r, 4, "discovery urls", |r| owned(r, "a discovery url"))?;
        Ok(ApplicationDescription { application_uri, product_uri, application_name, application_type, discovery_urls })
    }
}

/// One way a user may identify itself to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTokenPolicy {
    pub policy_id: Option<String>,
    /// 0 anonymous, 1 user name, 2 certificate, 3 issued token.
    pub token_type: u32,
    /// The policy that secures the token; none or empty: the endpoint's.
    pub security_policy_uri: Option<String>,
}

/// An endpoint a server offers.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointDescription {
    pub endpoint_url: Option<String>,
    pub server: ApplicationDescription,
    /// The server's certificate (maybe followed by its chain).
    pub server_certificate: Option<Vec<u8>>,
    /// 1 None, 2 Sign, 3 SignAndEncrypt.
    pub security_mode: u32,
    pub security_policy_uri: Option<String>,
    pub user_identity_tokens: Vec<UserTokenPolicy>,
    pub security_level: u8,
}

impl Decode<'_> for EndpointDescription {
    fn decode(r: &mut Reader<'_>) -> Result<EndpointDescription> {
        let endpoint_url = owned(r, "an endpoint url")?;
        let server = ApplicationDescription::decode(r)?;
        let server_certificate = r.byte_string("a server certificate")?.map(<[u8]>::to_vec);
        let security_mode = r.u32("a security mode")?;
        let security_policy_uri = owned(r, "a security policy uri")?;
        let user_identity_tokens = read_array(r, 20, "user identity tokens", |r| {
            let policy_id = owned(r, "a user token policy id")?;
            let token_type = r.u32("a user token type")?;
            r.string("an issued token type")?;
            r.string("an issuer endpoint url")?;
            let security_policy_uri = owned(r, "a user token security policy")?;
            Ok(UserTokenPolicy { policy_id, token_type, security_policy_uri })
        })?;
        r.string("a transport profile uri")?;
        let security_level = r.u8("a security level")?;
        Ok(EndpointDescription {
            endpoint_url,
            server,
            server_certificate,
            security_mode,
            security_policy_uri,
            user_identity_tokens,
            security_level,
        })
    }
}

/// A GetEndpoints response's endpoints.
pub fn parse_get_endpoints(body: &[u8]) -> Result<Vec<EndpointDescription>> {
    let (_, mut r) = secure_channel::response(body, encoding_id::GET_ENDPOINTS_RESPONSE, "GetEndpoints")?;
    read_array(&mut r, 30, "endpoints", EndpointDescription::decode)
}

/// CreateSession, as the client `client` names itself, for `endpoint_url`.
pub fn create_session(
    client: &ApplicationDescription,
    endpoint_url: &str,
    session_name: &str,
    timeout_ms: f64,
    (nonce, certificate): (&[u8], Option<&[u8]>),
) -> ServiceRequest {
    request(encoding_id::CREATE_SESSION_REQUEST, |out| {
        client.encode(out);
        None::<&str>.encode(out); // server uri
        Some(endpoint_url).encode(out);
        Some(session_name).encode(out);
        Some(nonce).encode(out);
        certificate.encode(out);
        out.extend_from_slice(&timeout_ms.to_le_bytes());
        put_u32(out, 0); // max response message size: no limit beyond the channel's
    })
}

/// An algorithm's URI and a signature made with it; both null when nothing is signed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignatureData {
    pub algorithm: Option<String>,
    pub signature: Option<Vec<u8>>,
}

impl Encode for SignatureData {
    fn encode(&self, out: &mut Vec<u8>) {
        self.algorithm.as_deref().encode(out);
        self.signature.as_deref().encode(out);
    }
}

/// What CreateSession gives: the session, the token to send in every request, its
/// timeout, and what proves the server: its nonce, its certificate and its signature.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedSession {
    pub session_id: NodeId,
    pub authentication_token: NodeId,
    pub timeout_ms: f64,
    pub server_nonce: Vec<u8>,
    pub server_certificate: Option<Vec<u8>>,
    pub endpoints: Vec<EndpointDescription>,
    pub server_signature: SignatureData,
    pub max_request_message_size: u32,
}

pub fn parse_create_session(body: &[u8]) -> Result<CreatedSession> {
    let (_, mut r) = secure_channel::response(body, encoding_id::CREATE_SESSION_RESPONSE, "CreateSession")?;
    let session_id = NodeId::decode(&mut r)?;
    let authentication_token = NodeId::decode(&mut r)?;
    let timeout_ms = f64::from_bits(r.u64("a session timeout")?);
    let server_nonce = r.byte_string("a server nonce")?.unwrap_or_default().to_vec();
    let server_certificate = r.byte_string("a server certificate")?.map(<[u8]>::to_vec);
    let endpoints = read_array(&mut r, 30, "endpoints", EndpointDescription::decode)?;
    read_array(&mut r, 8, "software certificates", |r| {
        r.byte_string("a certificate")?;
        r.byte_string("a signature")
    })?;
    let server_signature = SignatureData {
        algorithm: owned(&mut r, "a signature algorithm")?,
        signature: r.byte_string("a server signature")?.map(<[u8]>::to_vec),
    };
    let max_request_message_size = r.u32("the largest request")?;
    Ok(CreatedSession {
        session_id,
        authentication_token,
        timeout_ms,
        server_nonce,
        server_certificate,
        endpoints,
        server_signature,
        max_request_message_size,
    })
}

/// A user identity token, as ActivateSession carries it (Part 4, 7.40).
#[derive(Clone, PartialEq, Eq)]
pub enum IdentityToken {
    Anonymous {
        policy_id: String,
    },
    /// `password` as sent: encrypted with `encryption_algorithm`, or plain when that is none.
    UserName {
        policy_id: String,
        user: String,
        password: Vec<u8>,
        encryption_algorithm: Option<String>,
    },
    X509 {
        policy_id: String,
        certificate: Vec<u8>,
    },
}

/// Never shows a password, encrypted or not.
impl std::fmt::Debug for IdentityToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityToken::Anonymous { policy_id } => write!(f, "Anonymous({policy_id})"),
            IdentityToken::UserName { policy_id, user, .. } => write!(f, "UserName({policy_id}, {user}, ***)"),
            IdentityToken::X509 { policy_id, .. } => write!(f, "X509({policy_id})"),
        }
    }
}

impl Encode for IdentityToken {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        let type_id = match self {
            IdentityToken::Anonymous { policy_id } => {
                Some(policy_id.as_str()).encode(&mut body);
                encoding_id::ANONYMOUS_IDENTITY_TOKEN
            }
            IdentityToken::UserName { policy_id, user, password, encryption_algorithm } => {
                Some(policy_id.as_str()).encode(&mut body);
                Some(user.as_str()).encode(&mut body);
                Some(password.as_slice()).encode(&mut body);
                encryption_algorithm.as_deref().encode(&mut body);
                encoding_id::USER_NAME_IDENTITY_TOKEN
            }
            IdentityToken::X509 { policy_id, certificate } => {
                Some(policy_id.as_str()).encode(&mut body);
                Some(certificate.as_slice()).encode(&mut body);
                encoding_id::X509_IDENTITY_TOKEN
            }
        };
        ExtensionObject { type_id: NodeId::numeric(0, type_id), body: ExtensionBody::Binary(body) }.encode(out);
    }
}

/// ActivateSession: our signature of the server's certificate and nonce (when the
/// channel is secured), the user's identity, and the user's signature (X509).
pub fn activate_session(
    client_signature: &SignatureData,
    identity: &IdentityToken,
    user_signature: &SignatureData,
) -> ServiceRequest {
    request(encoding_id::ACTIVATE_SESSION_REQUEST, |out| {
        client_signature.encode(out);
        put_array(out, &[] as &[u8], |_, _| {}); // software certificates
        put_array(out, &[] as &[u8], |_, _| {}); // locale ids
        identity.encode(out);
        user_signature.encode(out);
    })
}

/// An ActivateSession response: the server's next nonce.
pub fn parse_activate_session(body: &[u8]) -> Result<Vec<u8>> {
    let (_, mut r) = secure_channel::response(body, encoding_id::ACTIVATE_SESSION_RESPONSE, "ActivateSession")?;
    Ok(r.byte_string("a server nonce")?.unwrap_or_default().to_vec())
}

/// CloseSession, deleting the session's subscriptions.
pub fn close_session() -> ServiceRequest {
    request(encoding_id::CLOSE_SESSION_REQUEST, |out| out.push(1))
}

pub fn parse_close_session(body: &[u8]) -> Result<()> {
    secure_channel::response(body, encoding_id::CLOSE_SESSION_RESPONSE, "CloseSession").map(|_| ())
}

/// The Value attribute's id.
pub const VALUE_ATTRIBUTE: u32 = 13;

/// The DataType attribute's id.
pub const DATA_TYPE_ATTRIBUTE: u32 = 14;

/// Read of `attribute` of each node, values as fresh as the server has them (max age 0).
pub fn read(nodes: &[NodeId], attribute: u32) -> ServiceRequest {
    read_attributes(nodes.iter().map(|node| (node, attribute)))
}

/// Read of each (node, attribute), values as fresh as the server has them (max age 0).
pub fn read_attributes<'a>(items: impl ExactSizeIterator<Item = (&'a NodeId, u32)>) -> ServiceRequest {
    request(encoding_id::READ_REQUEST, |out| {
        out.extend_from_slice(&0f64.to_le_bytes());
        put_u32(out, 2); // timestamps: both
        put_u32(out, items.len() as u32);
        for (node, attribute) in items {
            node.encode(out);
            put_u32(out, attribute);
            None::<&str>.encode(out); // index range
            QualifiedName::default().encode(out); // data encoding
        }
    })
}

/// Write of each node's Value attribute.
pub fn write(values: &[(NodeId, crate::encoding::Variant)]) -> ServiceRequest {
    request(encoding_id::WRITE_REQUEST, |out| {
        put_array(out, values, |out, (node, value)| {
            node.encode(out);
            put_u32(out, VALUE_ATTRIBUTE);
            None::<&str>.encode(out); // index range
            DataValue { value: Some(value.clone()), ..DataValue::default() }.encode(out);
        });
    })
}

/// A Write response's status per node; a count that differs is `EPROTO`.
pub fn parse_write(body: &[u8], count: usize) -> Result<Vec<u32>> {
    let (_, mut r) = secure_channel::response(body, encoding_id::WRITE_RESPONSE, "Write")?;
    result_count(&mut r, 4, count, || format!("a Write of {count} nodes"))?;
    (0..count).map(|_| r.u32("a status")).collect()
}

/// A Read response's values, one per node read; a count that differs is `EPROTO`.
pub fn parse_read(body: &[u8], count: usize) -> Result<Vec<DataValue>> {
    let (_, mut r) = secure_channel::response(body, encoding_id::READ_RESPONSE, "Read")?;
    result_count(&mut r, 1, count, || format!("a Read of {count} nodes"))?;
    (0..count).map(|_| DataValue::decode(&mut r)).collect()
}

/// Server_ServerCapabilities_OperationLimits_MaxNodesPerRead: how many nodes one Read may name (0: no limit).
pub const MAX_NODES_PER_READ: u32 = 11705;

/// Splits `count` nodes into Reads of at most `most` (0: one Read), as index ranges.
pub fn batches(count: usize, most: u32) -> impl Iterator<Item = std::ops::Range<usize>> {
    let size = if most == 0 { count.max(1) } else { most as usize };
    (0..count).step_by(size).map(move |start| start..(start + size).min(count))
}

/// A Read response's values as numbers, written into `out` (one per node read)
/// without a value object each: a number of any numeric type or a Boolean is
/// itself, anything else NaN. Each value whose status is not good, or that is
/// not a number, is listed in `failed` with its status (0 for not a number).
pub fn parse_read_into(body: &[u8], out: &mut [f64], failed: &mut Vec<(usize, u32)>) -> Result<()> {
    let (_, mut r) = secure_channel::response(body, encoding_id::READ_RESPONSE, "Read")?;
    result_count(&mut r, 1, out.len(), || format!("a Read of {} nodes", out.len()))?;
    for (i, slot) in out.iter_mut().enumerate() {
        let mask = r.u8("a DataValue's mask")?;
        let number = match mask & 1 {
            0 => None,
            _ => scalar_number(&mut r)?,
        };
        let status = if mask & 2 != 0 { r.u32("a DataValue's status")? } else { 0 };
        // Timestamps (bits 2 and 3, 8 bytes each) and picoseconds (bits 4 and 5, 2 bytes each).
        let skip = 8 * usize::from(mask >> 2 & 1)
            + 8 * usize::from(mask >> 3 & 1)
            + 2 * usize::from(mask >> 4 & 1)
            + 2 * usize::from(mask >> 5 & 1);
        r.bytes(skip, "a DataValue's timestamps")?;
        *slot = number.unwrap_or(f64::NAN);
        if crate::status::severity(status) != crate::status::Severity::Good || number.is_none() {
            failed.push((i, status));
        }
    }
    Ok(())
}

/// A Variant that is a scalar number (or Boolean) as an f64, read in place;
/// any other Variant is read whole and is `None`.
fn scalar_number(r: &mut Reader<'_>) -> Result<Option<f64>> {
    let mut peek = r.clone();
    let number = match peek.u8("a Variant's encoding")? {
        1 => f64::from(peek.u8("a Boolean")? != 0),
        2 => f64::from(peek.u8("an SByte")? as i8),
        3 => f64::from(peek.u8("a Byte")?),
        4 => f64::from(peek.u16("an Int16")? as i16),
        5 => f64::from(peek.u16("a UInt16")?),
        6 => f64::from(peek.i32("an Int32")?),
        7 => f64::from(peek.u32("a UInt32")?),
        8 => peek.u64("an Int64")? as i64 as f64,
        9 => peek.u64("a UInt64")? as f64,
        10 => f64::from(f32::from_bits(peek.u32("a Float")?)),
        11 => f64::from_bits(peek.u64("a Double")?),
        _ => {
            crate::encoding::Variant::decode(r)?;
            return Ok(None);
        }
    };
    *r = peek;
    Ok(Some(number))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn header() -> RequestHeader {
        RequestHeader { authentication_token: NodeId::numeric(1, 5), timestamp: 0, request_handle: 3, timeout_hint: 0 }
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn a_read_request_is_byte_exact() {
        let body = read(&[NodeId::numeric(0, 2258)], VALUE_ATTRIBUTE).message(&header());
        // ReadRequest's encoding id (i=631, four-byte form), then the header.
        assert_eq!(&body[..4], &hex("01 00 77 02"));
        let mut request_header = Vec::new();
        header().encode(&mut request_header);
        // Max age 0, both timestamps, one node: i=2258, Value, no index range, no encoding.
        assert_eq!(
            &body[4 + request_header.len()..],
            &hex(
                "00 00 00 00 00 00 00 00 02 00 00 00 01 00 00 00 01 00 D2 08 0D 00 00 00 FF FF FF FF 00 00 FF FF FF FF"
            )
        );
    }

    #[test]
    fn read_responses_land_in_numbers_in_place_and_agree_with_the_values() {
        use crate::encoding::{DataValue, Variant};
        let values = [
            DataValue {
                value: Some(Variant::Double(2.5)),
                source_timestamp: Some(1),
                server_timestamp: Some(2),
                ..Default::default()
            },
            DataValue { value: Some(Variant::Int16(-7)), server_picoseconds: Some(3), ..Default::default() },
            DataValue { value: Some(Variant::String(Some("x".into()))), ..Default::default() },
            DataValue { status: Some(0x8034_0000), ..Default::default() },
            DataValue { value: Some(Variant::Boolean(true)), status: Some(0x4000_0000), ..Default::default() },
        ];
        let body = read_response(&values);
        let mut out = [0.0; 5];
        let mut failed = Vec::new();
        parse_read_into(&body, &mut out, &mut failed).unwrap();
        assert_eq!(out[..2], [2.5, -7.0]);
        assert!(out[2].is_nan() && out[3].is_nan());
        assert_eq!(out[4], 1.0);
        assert_eq!(failed, [(2, 0), (3, 0x8034_0000), (4, 0x4000_0000)]);
        assert_eq!(parse_read(&body, 5).unwrap(), values);
        assert!(parse_read_into(&body, &mut [0.0; 4], &mut failed)
            .unwrap_err()
            .message
            .contains("5 results to a Read of 4"));
    }

    #[test]
    fn reads_split_to_the_servers_limit() {
        assert_eq!(batches(5, 2).collect::<Vec<_>>(), [0..2, 2..4, 4..5]);
        assert_eq!(batches(5, 0).collect::<Vec<_>>(), vec![std::ops::Range { start: 0, end: 5 }]);
        assert_eq!(batches(0, 3).count(), 0);
    }

    /// A good response of encoding `type_id` as a server writes it: its header, then what `fields` writes.
    pub(crate) fn response(type_id: u32, fields: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut body = Vec::new();
        NodeId::numeric(0, type_id).encode(&mut body);
        secure_channel::ResponseHeader {
            timestamp: 0,
            request_handle: 1,
            service_result: 0,
            diagnostics: Default::default(),
            string_table: Vec::new(),
        }
        .encode(&mut body);
        fields(&mut body);
        body
    }

    /// A ReadResponse as a server writes it.
    pub(crate) fn read_response(values: &[crate::encoding::DataValue]) -> Vec<u8> {
        response(encoding_id::READ_RESPONSE, |body| {
            put_array(body, values, |out, v| v.encode(out));
            put_array(body, &[] as &[u8], |_, _| {});
        })
    }

    #[test]
    fn the_anonymous_identity_rides_in_an_extension_object() {
        let anonymous = IdentityToken::Anonymous { policy_id: "anonymous".into() };
        let body =
            activate_session(&SignatureData::default(), &anonymous, &SignatureData::default()).message(&header());
        let tail = hex("01 00 41 01 01 0D 00 00 00 09 00 00 00 61 6E 6F 6E 79 6D 6F 75 73 FF FF FF FF FF FF FF FF");
        assert!(body.ends_with(&tail), "{body:02x?}");
    }

    /// Part 4, 7.40.4: policy id, user name, password (a ByteString), encryption algorithm (null: plain).
    #[test]
    fn a_user_name_token_is_byte_exact_and_never_shows_its_password() {
        let token = IdentityToken::UserName {
            policy_id: "u".into(),
            user: "ab".into(),
            password: b"pw".to_vec(),
            encryption_algorithm: None,
        };
        let mut out = Vec::new();
        token.encode(&mut out);
        let expected = "01 00 44 01 01 15 00 00 00 01 00 00 00 75 02 00 00 00 61 62 02 00 00 00 70 77 FF FF FF FF";
        assert_eq!(out, hex(expected));
        assert!(!format!("{token:?}").contains("pw"));
    }
}
