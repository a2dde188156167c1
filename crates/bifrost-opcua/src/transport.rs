//! OPC UA over TCP (Part 6, 7.1): the message header, Hello and Acknowledge
//! with the buffer sizes and limits they negotiate, the Error message, and
//! secure-channel chunks: a message split into chunks that fit the peer's
//! receive buffer, and chunks reassembled into a message within our limits.
//! What a security policy adds to a chunk (signing, encryption) sits behind
//! [`SecurityPolicy`]; policy None adds nothing.

use std::borrow::Cow;

use bifrost_core::{Error, Result};
use bytes::Bytes;

use crate::encoding::{Encode, ReadLengths, Reader};

/// Bytes of every message header: type, chunk type, size.
pub const HEADER_LEN: usize = 8;
/// Bytes of a symmetric chunk's security header (the token id) and sequence header.
pub const SYMMETRIC_HEADERS: usize = 4 + 8;
/// The smallest buffer a peer may offer (Part 6, 7.1.2.3).
pub const MIN_BUFFER: u32 = 8192;

/// Message types, as their three ASCII letters.
pub mod kind {
    pub const HELLO: [u8; 3] = *b"HEL";
    pub const ACKNOWLEDGE: [u8; 3] = *b"ACK";
    pub const ERROR: [u8; 3] = *b"ERR";
    pub const REVERSE_HELLO: [u8; 3] = *b"RHE";
    pub const OPEN: [u8; 3] = *b"OPN";
    pub const CLOSE: [u8; 3] = *b"CLO";
    pub const MESSAGE: [u8; 3] = *b"MSG";
}

/// Chunk types: the final chunk, an intermediate one, an abort.
pub mod chunk {
    pub const FINAL: u8 = b'F';
    pub const INTERMEDIATE: u8 = b'C';
    pub const ABORT: u8 = b'A';
}

/// Every message's first eight bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: [u8; 3],
    pub chunk: u8,
    /// The whole message's bytes, this header included.
    pub size: u32,
}

impl Header {
    pub fn parse(buf: &[u8]) -> Result<Header> {
        let mut r = Reader::new(buf);
        let bytes = r.bytes(4, "a message header")?;
        let header = Header { kind: [bytes[0], bytes[1], bytes[2]], chunk: bytes[3], size: r.u32("a message size")? };
        let known =
            [kind::HELLO, kind::ACKNOWLEDGE, kind::ERROR, kind::REVERSE_HELLO, kind::OPEN, kind::CLOSE, kind::MESSAGE];
        if !known.contains(&header.kind) || ![chunk::FINAL, chunk::INTERMEDIATE, chunk::ABORT].contains(&header.chunk) {
            return Err(Error::proto(format!(
                "not an OPC UA message: it starts {:02x?}",
                &buf[..HEADER_LEN.min(buf.len())]
            )));
        }
        if (header.size as usize) < HEADER_LEN {
            return Err(Error::proto(format!("a message of {} bytes, shorter than its header", header.size)));
        }
        Ok(header)
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.kind);
        out.push(self.chunk);
        out.extend_from_slice(&self.size.to_le_bytes());
    }
}

/// How many bytes the next message in `buf` takes: `None` until its header is
/// in; a message larger than `max` (what we told the peer we receive) is `EPROTO`.
pub fn frame_len(buf: &[u8], max: u32) -> Result<Option<usize>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let header = Header::parse(buf)?;
    if header.size > max {
        return Err(Error::proto(format!("a chunk of {} bytes, larger than the {max} we receive", header.size)));
    }
    Ok(Some(header.size as usize))
}

/// Writes a message: its header, then what `body` appends, the size patched in.
pub fn message(out: &mut Vec<u8>, kind: [u8; 3], chunk: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    Header { kind, chunk, size: 0 }.write(out);
    body(out);
    let size = (out.len() - start) as u32;
    out[start + 4..start + 8].copy_from_slice(&size.to_le_bytes());
}

/// What each side offers in its Hello or Acknowledge (0: no limit, for the last two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub receive_buffer: u32,
    pub send_buffer: u32,
    pub max_message: u32,
    pub max_chunks: u32,
}

/// The client's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u32,
    pub limits: Limits,
    pub endpoint_url: String,
}

impl Hello {
    pub fn write(&self, out: &mut Vec<u8>) {
        message(out, kind::HELLO, chunk::FINAL, |out| {
            write_limits(out, self.protocol_version, &self.limits);
            Some(self.endpoint_url.as_str()).encode(out);
        });
    }

    pub fn parse(body: &[u8]) -> Result<Hello> {
        let mut r = Reader::new(body);
        let (protocol_version, limits) = read_limits(&mut r)?;
        let endpoint_url = r.string("the endpoint URL")?.unwrap_or_default().to_string();
        Ok(Hello { protocol_version, limits, endpoint_url })
    }
}

/// The server's answer to a Hello: its own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledge {
    pub protocol_version: u32,
    pub limits: Limits,
}

impl Acknowledge {
    pub fn write(&self, out: &mut Vec<u8>) {
        message(out, kind::ACKNOWLEDGE, chunk::FINAL, |out| write_limits(out, self.protocol_version, &self.limits));
    }

    pub fn parse(body: &[u8]) -> Result<Acknowledge> {
        let (protocol_version, limits) = read_limits(&mut Reader::new(body))?;
        if limits.receive_buffer < MIN_BUFFER || limits.send_buffer < MIN_BUFFER {
            return Err(Error::proto(format!(
                "the server's buffers ({} to receive, {} to send) are below the {MIN_BUFFER} bytes every peer takes",
                limits.receive_buffer, limits.send_buffer
            )));
        }
        Ok(Acknowledge { protocol_version, limits })
    }

    /// What this connection runs with: chunks we send fit the server's receive
    /// buffer and ours; chunks we receive, the server's send buffer and ours.
    pub fn negotiate(&self, ours: &Limits) -> Negotiated {
        Negotiated {
            send_chunk: self.limits.receive_buffer.min(ours.send_buffer),
            receive_chunk: self.limits.send_buffer.min(ours.receive_buffer),
            send_message: self.limits.max_message,
            send_chunks: self.limits.max_chunks,
            receive_message: ours.max_message,
            receive_chunks: ours.max_chunks,
        }
    }
}

/// The limits both sides agreed on (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub send_chunk: u32,
    pub receive_chunk: u32,
    pub send_message: u32,
    pub send_chunks: u32,
    pub receive_message: u32,
    pub receive_chunks: u32,
}

fn write_limits(out: &mut Vec<u8>, protocol_version: u32, limits: &Limits) {
    for word in [protocol_version, limits.receive_buffer, limits.send_buffer, limits.max_message, limits.max_chunks] {
        out.extend_from_slice(&word.to_le_bytes());
    }
}

fn read_limits(r: &mut Reader<'_>) -> Result<(u32, Limits)> {
    let protocol_version = r.u32("the protocol version")?;
    let limits = Limits {
        receive_buffer: r.u32("the receive buffer size")?,
        send_buffer: r.u32("the send buffer size")?,
        max_message: r.u32("the largest message")?,
        max_chunks: r.u32("the chunk count")?,
    };
    Ok((protocol_version, limits))
}

/// An Error message (or an abort chunk's body): a status and why.
pub fn parse_error(body: &[u8]) -> Result<Error> {
    let mut r = Reader::new(body);
    let code = r.u32("an error's status")?;
    let reason = r.string("an error's reason")?.unwrap_or_default();
    let reason = if reason.is_empty() { String::new() } else { format!(": {reason}") };
    Ok(Error::proto(format!("the server ended the connection with {}{reason}", crate::status::describe(code))))
}

/// What a security policy does to the chunks of a secure channel: policy None
/// does nothing; the signing and encrypting policies are `security::Secured`.
pub trait SecurityPolicy {
    /// Its URI, as OpenSecureChannel names it.
    fn uri(&self) -> &str;
    /// The message security mode: 1 None, 2 Sign, 3 SignAndEncrypt.
    fn mode(&self) -> u32;
    /// What OpenSecureChannel's security header carries: our certificate and the server's thumbprint.
    fn certificates(&self) -> (Option<&[u8]>, Option<&[u8]>);
    /// A fresh client nonce for an OpenSecureChannel, kept until its token is granted.
    fn new_nonce(&mut self) -> Option<Vec<u8>>;
    /// Token `token_id` was granted with `server_nonce`: its keys are derived.
    fn granted(&mut self, token_id: u32, server_nonce: &[u8]) -> Result<()>;
    /// The most body bytes one symmetric chunk of `chunk_size` bytes carries.
    fn body_room(&self, chunk_size: usize) -> usize;
    /// Signs (and encrypts) a finished symmetric chunk in place: `chunk` is its header to its body's end.
    fn secure(&self, chunk: &mut Vec<u8>) -> Result<()>;
    /// Checks (and decrypts) a received symmetric chunk: the same chunk without
    /// padding or signature, its size set to match.
    fn open(&self, chunk: Bytes) -> Result<Bytes>;
    /// Signs and encrypts an OpenSecureChannel chunk in place; its security header ends at `header_end`.
    fn secure_asymmetric(&self, chunk: &mut Vec<u8>, header_end: usize) -> Result<()>;
    /// Checks and decrypts an OpenSecureChannel response: its sequence header and body.
    /// `sender` is the certificate its security header names.
    fn open_asymmetric<'a>(&self, chunk: &'a [u8], header_end: usize, sender: Option<&[u8]>) -> Result<Cow<'a, [u8]>>;
}

/// No security: chunks travel as they are.
pub struct NoSecurity;

impl SecurityPolicy for NoSecurity {
    fn uri(&self) -> &str {
        "http://opcfoundation.org/UA/SecurityPolicy#None"
    }

    fn mode(&self) -> u32 {
        1
    }

    fn certificates(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        (None, None)
    }

    fn new_nonce(&mut self) -> Option<Vec<u8>> {
        None
    }

    fn granted(&mut self, _token_id: u32, _server_nonce: &[u8]) -> Result<()> {
        Ok(())
    }

    fn body_room(&self, chunk_size: usize) -> usize {
        chunk_size.saturating_sub(HEADER_LEN + 4 + SYMMETRIC_HEADERS)
    }

    fn secure(&self, _chunk: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }

    fn open(&self, chunk: Bytes) -> Result<Bytes> {
        Ok(chunk)
    }

    fn secure_asymmetric(&self, _chunk: &mut Vec<u8>, _header_end: usize) -> Result<()> {
        Ok(())
    }

    fn open_asymmetric<'a>(&self, chunk: &'a [u8], header_end: usize, _sender: Option<&[u8]>) -> Result<Cow<'a, [u8]>> {
        Ok(Cow::Borrowed(&chunk[header_end..]))
    }
}

/// Where the next chunks of a channel stand: its id, its token, the next sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub channel_id: u32,
    pub token_id: u32,
    pub sequence: u32,
}

/// Splits message `body` (request `request_id`) into MSG (or CLO) chunks that
/// fit `limits`, appended to `out`; a message over the peer's limits is `EINVAL`.
pub fn write_chunks(
    out: &mut Vec<u8>,
    kind: [u8; 3],
    channel: &mut Channel,
    request_id: u32,
    body: &[u8],
    limits: &Negotiated,
    policy: &dyn SecurityPolicy,
) -> Result<()> {
    if limits.send_message != 0 && body.len() > limits.send_message as usize {
        return Err(Error::invalid_value(format!(
            "a request of {} bytes; the server takes messages of at most {}",
            body.len(),
            limits.send_message
        )));
    }
    let room = policy.body_room(limits.send_chunk as usize);
    if room == 0 {
        return Err(Error::invalid_value("the server's receive buffer holds no body"));
    }
    let count = body.len().div_ceil(room).max(1);
    if limits.send_chunks != 0 && count > limits.send_chunks as usize {
        return Err(Error::invalid_value(format!(
            "a request of {count} chunks; the server takes at most {}",
            limits.send_chunks
        )));
    }
    let mut pieces = body.chunks(room).peekable();
    let mut first = true;
    while first || pieces.peek().is_some() {
        first = false;
        let piece = pieces.next().unwrap_or_default();
        let chunk_type = if pieces.peek().is_some() { chunk::INTERMEDIATE } else { chunk::FINAL };
        let start = out.len();
        message(out, kind, chunk_type, |out| {
            out.extend_from_slice(&channel.channel_id.to_le_bytes());
            out.extend_from_slice(&channel.token_id.to_le_bytes());
            out.extend_from_slice(&channel.sequence.to_le_bytes());
            out.extend_from_slice(&request_id.to_le_bytes());
            out.extend_from_slice(piece);
        });
        channel.sequence = channel.sequence.wrapping_add(1).max(1);
        let mut chunk = out.split_off(start);
        policy.secure(&mut chunk)?;
        out.extend_from_slice(&chunk);
    }
    Ok(())
}

/// One received symmetric chunk, its headers read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub header: Header,
    pub channel_id: u32,
    pub token_id: u32,
    pub sequence: u32,
    pub request_id: u32,
    pub body: &'a [u8],
}

/// Reads a MSG or CLO chunk (after the policy opened it).
pub fn parse_chunk(chunk: &[u8]) -> Result<Chunk<'_>> {
    let header = Header::parse(chunk)?;
    let mut r =
        Reader::new(chunk.get(HEADER_LEN..header.size as usize).ok_or_else(|| {
            Error::proto(format!("a chunk of {} bytes that says it has {}", chunk.len(), header.size))
        })?);
    Ok(Chunk {
        header,
        channel_id: r.u32("a channel id")?,
        token_id: r.u32("a token id")?,
        sequence: r.u32("a sequence number")?,
        request_id: r.u32("a request id")?,
        body: r.rest(),
    })
}

/// Gathers the chunks of each response into its message, within our limits.
#[derive(Debug, Default)]
pub struct Reassembly {
    /// Per request id: the bytes so far and the chunks they came in.
    partial: Vec<(u32, Vec<u8>, u32)>,
}

/// What a chunk completes.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    /// More chunks of this request are to come.
    Pending,
    /// Request `0`'s whole response body.
    Message(u32, Vec<u8>),
    /// The server aborted request `0`'s response: why.
    Aborted(u32, Error),
}

impl Reassembly {
    /// Whether chunks of request `request_id`'s response have come.
    pub fn holds(&self, request_id: u32) -> bool {
        self.partial.iter().any(|(id, _, _)| *id == request_id)
    }

    /// Takes one chunk. A message over our limits fails its request alone.
    pub fn take(&mut self, chunk: &Chunk<'_>, limits: &Negotiated) -> Result<Assembled> {
        let at = self.partial.iter().position(|(id, _, _)| *id == chunk.request_id);
        if chunk.header.chunk == chunk::ABORT {
            if let Some(at) = at {
                self.partial.swap_remove(at);
            }
            return Ok(Assembled::Aborted(chunk.request_id, parse_error(chunk.body)?));
        }
        let (_, mut bytes, count) = match at {
            Some(at) => self.partial.swap_remove(at),
            None => (chunk.request_id, Vec::new(), 0),
        };
        let count = count + 1;
        bytes.extend_from_slice(chunk.body);
        if limits.receive_chunks != 0 && count > limits.receive_chunks {
            return Err(Error::proto(format!("a response of more than the {} chunks we take", limits.receive_chunks)));
        }
        if limits.receive_message != 0 && bytes.len() > limits.receive_message as usize {
            return Err(Error::proto(format!("a response of more than the {} bytes we take", limits.receive_message)));
        }
        Ok(match chunk.header.chunk {
            chunk::FINAL => Assembled::Message(chunk.request_id, bytes),
            _ => {
                self.partial.push((chunk.request_id, bytes, count));
                Assembled::Pending
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    const LIMITS: Limits = Limits { receive_buffer: 65535, send_buffer: 65535, max_message: 0, max_chunks: 0 };

    /// Part 6, 7.1.2.3's layout: header, protocol version 0, the four limits, the URL as a String.
    #[test]
    fn hello_and_acknowledge_are_byte_exact() {
        let mut out = Vec::new();
        Hello { protocol_version: 0, limits: LIMITS, endpoint_url: "opc.tcp://h:4840".into() }.write(&mut out);
        assert_eq!(
            out,
            hex("48 45 4C 46 30 00 00 00 00 00 00 00 FF FF 00 00 FF FF 00 00 00 00 00 00 00 00 00 00
                 10 00 00 00 6F 70 63 2E 74 63 70 3A 2F 2F 68 3A 34 38 34 30")
        );
        assert_eq!(frame_len(&out, 65535).unwrap(), Some(out.len()));
        assert_eq!(Hello::parse(&out[HEADER_LEN..]).unwrap().endpoint_url, "opc.tcp://h:4840");
        let ack = Acknowledge {
            protocol_version: 0,
            limits: Limits { receive_buffer: 8192, send_buffer: 16384, max_message: 1 << 20, max_chunks: 10 },
        };
        let mut out = Vec::new();
        ack.write(&mut out);
        assert_eq!(&out[..8], &hex("41 43 4B 46 1C 00 00 00"));
        let parsed = Acknowledge::parse(&out[HEADER_LEN..]).unwrap();
        let negotiated = parsed.negotiate(&LIMITS);
        assert_eq!((negotiated.send_chunk, negotiated.receive_chunk), (8192, 16384));
        assert_eq!((negotiated.send_message, negotiated.send_chunks), (1 << 20, 10));
    }

    #[test]
    fn bad_headers_and_small_buffers_are_eproto() {
        assert!(Header::parse(b"HTTP/1.1 400").unwrap_err().message.contains("not an OPC UA message"));
        assert!(frame_len(&hex("4D 53 47 46 00 00 01 00"), 65535)
            .unwrap_err()
            .message
            .contains("larger than the 65535"));
        assert_eq!(frame_len(b"MSG", 65535).unwrap(), None);
        let mut small = Vec::new();
        write_limits(&mut small, 0, &Limits { receive_buffer: 1024, send_buffer: 8192, max_message: 0, max_chunks: 0 });
        assert!(Acknowledge::parse(&small).unwrap_err().message.contains("below the 8192"));
        let mut error = Vec::new();
        error.extend_from_slice(&0x807E_0000u32.to_le_bytes());
        Some("bad type").encode(&mut error);
        assert!(parse_error(&error).unwrap().message.contains("BadTcpMessageTypeInvalid (0x807E0000): bad type"));
    }

    #[test]
    fn messages_split_into_chunks_that_fit_and_reassemble() {
        let limits = Negotiated {
            send_chunk: 8192,
            receive_chunk: 8192,
            send_message: 0,
            send_chunks: 0,
            receive_message: 0,
            receive_chunks: 0,
        };
        let body: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut channel = Channel { channel_id: 7, token_id: 1, sequence: 51 };
        let mut out = Vec::new();
        write_chunks(&mut out, kind::MESSAGE, &mut channel, 9, &body, &limits, &NoSecurity).unwrap();
        let mut reassembly = Reassembly::default();
        let (mut at, mut chunks, mut whole) = (0, 0, None);
        while let Some(len) = frame_len(&out[at..], 8192).unwrap() {
            let chunk = parse_chunk(&out[at..at + len]).unwrap();
            assert_eq!((chunk.channel_id, chunk.sequence), (7, 51 + chunks));
            assert!(len <= 8192);
            chunks += 1;
            if let Assembled::Message(id, bytes) = reassembly.take(&chunk, &limits).unwrap() {
                whole = Some((id, bytes));
            }
            at += len;
            if at == out.len() {
                break;
            }
        }
        assert_eq!(chunks, 3);
        assert_eq!(whole, Some((9, body)));
        assert_eq!(channel.sequence, 54);
    }

    #[test]
    fn limits_are_enforced_both_ways() {
        let tight = Negotiated {
            send_chunk: 8192,
            receive_chunk: 8192,
            send_message: 10_000,
            send_chunks: 2,
            receive_message: 10_000,
            receive_chunks: 2,
        };
        let mut channel = Channel { channel_id: 1, token_id: 1, sequence: 1 };
        let mut out = Vec::new();
        let e = write_chunks(&mut out, kind::MESSAGE, &mut channel, 1, &[0; 20_000], &tight, &NoSecurity).unwrap_err();
        assert!(e.message.contains("at most 10000"));
        let loose = Negotiated { send_message: 0, send_chunks: 0, ..tight };
        write_chunks(&mut out, kind::MESSAGE, &mut channel, 1, &[0; 20_000], &loose, &NoSecurity).unwrap();
        let mut reassembly = Reassembly::default();
        let (mut at, mut result) = (0, Ok(Assembled::Pending));
        while at < out.len() && result.is_ok() {
            let len = frame_len(&out[at..], 8192).unwrap().unwrap();
            result = reassembly.take(&parse_chunk(&out[at..at + len]).unwrap(), &tight);
            at += len;
        }
        assert!(result.unwrap_err().message.contains("more than the 10000 bytes"));
        // An abort chunk ends its request with the server's reason.
        let mut abort = Vec::new();
        message(&mut abort, kind::MESSAGE, chunk::ABORT, |out| {
            out.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0]);
            out.extend_from_slice(&0x80B9_0000u32.to_le_bytes());
            None::<&str>.encode(out);
        });
        match reassembly.take(&parse_chunk(&abort).unwrap(), &tight).unwrap() {
            Assembled::Aborted(3, e) => assert!(e.message.contains("BadResponseTooLarge")),
            other => panic!("{other:?}"),
        }
    }
}
