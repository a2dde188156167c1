//! EtherNet/IP on a TCP stream, as the engine's link sees it. Each connection
//! is set up in steps: RegisterSession, then a Large Forward Open (4002 bytes),
//! then a classic one (504, or the size a refusal names), and if the device
//! takes no connection at all, unconnected messaging. Calls then go out as
//! connected messages numbered by their sequence count, or as unconnected ones
//! numbered by their sender context: either way the number is the link's
//! request id, so many requests can be in flight.

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bifrost_core::{Error, Result};
use bytes::Bytes;

use crate::cip::{self, ForwardOpen, Response};
use crate::encap::{self, command, Header, HEADER_LEN};

/// What the client asks for first, and falls back to.
pub const LARGE_SIZE: u16 = 4002;
pub const CLASSIC_SIZE: u16 = 504;
/// Unconnected messages, and what a device without connections is assumed to take.
pub const UNCONNECTED_SIZE: u16 = 504;
/// Our vendor id in Forward Opens (0xFFFF is not assigned to a vendor; libraries use their own).
const VENDOR_ID: u16 = 0x1337;
/// 2 s between packets, and a connection that outlives 512 of them (about 17 minutes) idle.
const RPI_US: u32 = 2_000_000;
const TIMEOUT_MULTIPLIER: u8 = 7;

/// A request as it waits in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A CIP message for the target (connected when a connection is open).
    Cip {
        message: Vec<u8>,
        write: bool,
    },
    RegisterSession,
    ForwardOpen(ForwardOpen),
}

/// A reply, borrowed from its frame.
#[derive(Debug, Clone)]
pub enum Reply {
    Registered {
        session: u32,
    },
    /// A Message Router response: parse it with [`Reply::response`].
    Cip(Bytes),
}

impl Reply {
    pub fn response(&self) -> Result<Response<'_>> {
        match self {
            Reply::Cip(message) => Response::parse(message),
            Reply::Registered { .. } => Err(Error::proto("a RegisterSession reply where a CIP reply was due")),
        }
    }
}

/// How far the set-up of the current connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Registering,
    Opening { large: bool, size: u16, retried: bool },
    Ready,
}

/// The connection's messaging, as the set-up left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Messaging {
    Connected { o_t_id: u32 },
    Unconnected,
}

/// What the device's jobs read of the link: the negotiated connection size, so
/// they pack Multiple Service Packets to it.
#[derive(Debug, Default)]
pub struct Negotiated {
    size: AtomicU16,
    /// Bumped on every set-up: caches of what the controller holds are dropped then.
    connections: AtomicU32,
}

impl Negotiated {
    /// Bytes a request or a reply may hold; the unconnected size until a connection is set up.
    pub fn size(&self) -> u16 {
        match self.size.load(Ordering::Relaxed) {
            0 => UNCONNECTED_SIZE,
            size => size,
        }
    }

    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// The framing of one link.
#[derive(Debug, Clone)]
pub struct Framing {
    session: u32,
    /// The route from the device connected to, to the target (`path=1,0`).
    route: Vec<u8>,
    /// `connected=false` skips Forward Open.
    connect: bool,
    stage: Stage,
    messaging: Messaging,
    /// Fresh for each Forward Open, so a device never takes one for a duplicate.
    serial: u16,
    originator_serial: u32,
    negotiated: Arc<Negotiated>,
    /// An idle connection says something this often (`keep-alive`), so neither the
    /// controller's CIP connection nor its session times out.
    keep_alive: Option<Duration>,
}

impl Framing {
    pub fn new(route: Vec<u8>, connect: bool, keep_alive: Option<Duration>, negotiated: Arc<Negotiated>) -> Framing {
        // Differs from process to process, so two clients on one host do not collide.
        let seed = std::process::id()
            ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()));
        Framing {
            session: 0,
            route,
            connect,
            stage: Stage::Ready,
            messaging: Messaging::Unconnected,
            serial: seed as u16,
            originator_serial: seed.rotate_left(16) | 1,
            negotiated,
            keep_alive,
        }
    }

    fn forward_open(&mut self, large: bool, size: u16) -> Request {
        self.serial = self.serial.wrapping_add(1);
        self.stage = Stage::Opening { large, size, retried: false };
        Request::ForwardOpen(ForwardOpen {
            large,
            size,
            serial: self.serial,
            vendor_id: VENDOR_ID,
            originator_serial: self.originator_serial,
            rpi_us: RPI_US,
            timeout_multiplier: TIMEOUT_MULTIPLIER,
            route: self.route.clone(),
        })
    }

    fn ready(&mut self, messaging: Messaging, size: u16) -> Result<Option<Request>> {
        self.stage = Stage::Ready;
        self.messaging = messaging;
        self.negotiated.size.store(size, Ordering::Relaxed);
        self.negotiated.connections.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    /// The next step after a Forward Open was refused.
    fn after_refusal(
        &mut self,
        large: bool,
        size: u16,
        retried: bool,
        response: &Response<'_>,
    ) -> Result<Option<Request>> {
        let status = (response.status, response.ext_status);
        // The route leads nowhere: no messaging would get through, so the connect fails.
        if let (cip::status::CONNECTION_FAILURE, Some(0x0204 | 0x0311 | 0x0312 | 0x0315)) = status {
            return Err(cip::status_error(response.status, response.ext_status, "Forward Open along path"));
        }
        // A refusal for size may name the size the device takes.
        if status == (cip::status::CONNECTION_FAILURE, Some(0x0109)) {
            if let Some(offered) = response.additional_word(1).filter(|&s| s >= 100 && s < size) {
                return Ok(Some(self.forward_open(offered > cip::MAX_CLASSIC_SIZE, offered)));
            }
        }
        // Connection in use: a duplicate serial; once more with a fresh one.
        if status == (cip::status::CONNECTION_FAILURE, Some(0x0100)) && !retried {
            let request = self.forward_open(large, size);
            self.stage = Stage::Opening { large, size, retried: true };
            return Ok(Some(request));
        }
        if large {
            return Ok(Some(self.forward_open(false, CLASSIC_SIZE)));
        }
        // No connection at all: unconnected messaging still reads and writes.
        self.ready(Messaging::Unconnected, UNCONNECTED_SIZE)
    }
}

impl bifrost_engine::Framing for Framing {
    type Request = Request;
    type Reply = Reply;

    fn id_space(&self) -> u32 {
        // Connected messages carry the id as their 16-bit sequence count.
        1 << 16
    }

    fn is_write(request: &Request) -> bool {
        matches!(request, Request::Cip { write: true, .. })
    }

    fn describe(request: &Request) -> String {
        match request {
            Request::Cip { message, .. } => format!("CIP service 0x{:02x}", message.first().copied().unwrap_or(0)),
            Request::RegisterSession => "RegisterSession".into(),
            Request::ForwardOpen(open) if open.large => "Large Forward Open".into(),
            Request::ForwardOpen(_) => "Forward Open".into(),
        }
    }

    fn encode(&mut self, id: u32, request: &Request, out: &mut Vec<u8>) -> Result<bool> {
        let context = encap::context_of(id);
        match request {
            Request::RegisterSession => encap::register_session(out, context)?,
            Request::ForwardOpen(open) => {
                encap::send_rr_data(out, self.session, context, |out| cip::forward_open(out, open))?
            }
            Request::Cip { message, .. } => match self.messaging {
                Messaging::Connected { o_t_id } => {
                    encap::send_unit_data(out, self.session, o_t_id, id as u16, |out| {
                        out.extend_from_slice(message);
                        Ok(())
                    })?
                }
                Messaging::Unconnected if self.route.is_empty() => {
                    encap::send_rr_data(out, self.session, context, |out| {
                        out.extend_from_slice(message);
                        Ok(())
                    })?
                }
                Messaging::Unconnected => encap::send_rr_data(out, self.session, context, |out| {
                    cip::unconnected_send(out, &self.route, |out| {
                        out.extend_from_slice(message);
                        Ok(())
                    })
                })?,
            },
        }
        Ok(true)
    }

    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>> {
        encap::frame_len(buf)
    }

    fn parse(&mut self, frame: Bytes) -> Result<Option<(Option<u32>, Reply)>> {
        let header = Header::parse(&frame)?;
        header.check_status()?;
        match header.command {
            command::REGISTER_SESSION => {
                Ok(Some((Some(encap::id_of(&header.context)), Reply::Registered { session: header.session })))
            }
            command::SEND_RR_DATA | command::SEND_UNIT_DATA => {
                let body = &frame[HEADER_LEN..];
                let payload = encap::payload(body)?;
                let id = match payload.sequence {
                    Some(sequence) => u32::from(sequence),
                    None => encap::id_of(&header.context),
                };
                // A connection failure answering a connected message: the controller no
                // longer holds our connection. Dropping the link sets a fresh one up.
                if let (Some(_), [_, _, cip::status::CONNECTION_FAILURE, words, ..]) =
                    (payload.sequence, payload.message)
                {
                    let ext = (*words > 0)
                        .then(|| payload.message.get(4..6).map(|b| u16::from_le_bytes([b[0], b[1]])))
                        .flatten();
                    return Err(cip::status_error(
                        cip::status::CONNECTION_FAILURE,
                        ext,
                        "the controller dropped the CIP connection (reconnecting)",
                    ));
                }
                let start = payload.message.as_ptr() as usize - frame.as_ptr() as usize;
                Ok(Some((Some(id), Reply::Cip(frame.slice(start..start + payload.message.len())))))
            }
            other => Err(Error::proto(format!("unexpected encapsulation command 0x{other:04x} in a reply"))),
        }
    }

    fn answers(request: &Request, reply: &Reply) -> Result<()> {
        match (request, reply) {
            (Request::RegisterSession, Reply::Registered { .. }) => Ok(()),
            (Request::Cip { .. } | Request::ForwardOpen(_), Reply::Cip(_)) => Ok(()),
            _ => Err(Error::proto("the reply's command does not answer the request")),
        }
    }

    fn unanswered(_request: &Request) -> Reply {
        Reply::Cip(Bytes::new())
    }

    /// A connected message that goes unanswered: the controller may have dropped
    /// the CIP connection (a program download, its own timeout), so set up anew.
    fn timeout_breaks_connection(&self) -> bool {
        matches!(self.messaging, Messaging::Connected { .. })
    }

    fn keep_alive_after(&self) -> Option<Duration> {
        self.keep_alive
    }

    /// Reads the Identity object's vendor id: a request every device answers, sent
    /// as calls are (connected when a connection is open), so it keeps that alive.
    fn keep_alive(&mut self) -> Option<Request> {
        let path = cip::object_path(cip::class::IDENTITY, 1, Some(1));
        let mut message = Vec::with_capacity(8);
        cip::request(&mut message, cip::service::GET_ATTRIBUTE_SINGLE, &path, |_| {}).ok()?;
        Some(Request::Cip { message, write: false })
    }

    fn farewell(&mut self, out: &mut Vec<u8>) {
        if let Messaging::Connected { .. } = self.messaging {
            let (serial, originator) = (self.serial, self.originator_serial);
            let _ = encap::send_rr_data(out, self.session, [0; 8], |out| {
                cip::forward_close(out, serial, VENDOR_ID, originator, &self.route)
            });
        }
        let _ = encap::unregister_session(out, self.session);
    }

    fn set_up(&mut self, reply: Option<Reply>) -> Result<Option<Request>> {
        let Some(reply) = reply else {
            // A fresh connection: a new session, then a new connection on it.
            self.stage = Stage::Registering;
            self.messaging = Messaging::Unconnected;
            return Ok(Some(Request::RegisterSession));
        };
        match (self.stage, reply) {
            (Stage::Registering, Reply::Registered { session }) => {
                self.session = session;
                match self.connect {
                    true => Ok(Some(self.forward_open(true, LARGE_SIZE))),
                    false => self.ready(Messaging::Unconnected, UNCONNECTED_SIZE),
                }
            }
            (Stage::Opening { large, size, retried }, reply) => {
                let response = reply.response()?;
                if response.status != cip::status::SUCCESS {
                    return self.after_refusal(large, size, retried, &response);
                }
                let opened = cip::parse_forward_open_reply(response.data)?;
                self.ready(Messaging::Connected { o_t_id: opened.o_t_id }, size)
            }
            (stage, _) => Err(Error::proto(format!("an unexpected reply while setting the session up ({stage:?})"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bifrost_engine::Framing as _;

    fn framing() -> Framing {
        Framing::new(vec![1, 0], true, None, Arc::default())
    }

    /// A SendRRData reply carrying `message`, answering sender context `id`.
    fn rr_reply(id: u32, message: &[u8]) -> Bytes {
        let mut out = Vec::new();
        encap::send_rr_data(&mut out, 7, encap::context_of(id), |out| {
            out.extend_from_slice(message);
            Ok(())
        })
        .unwrap();
        Bytes::from(out)
    }

    fn open_reply(o_t_id: u32) -> Vec<u8> {
        let mut reply = vec![0xD4, 0, 0, 0];
        reply.extend_from_slice(&o_t_id.to_le_bytes());
        reply.extend_from_slice(&[0; 22]);
        reply
    }

    #[test]
    fn the_set_up_registers_then_opens_a_large_connection() {
        let negotiated = Arc::new(Negotiated::default());
        let mut f = Framing::new(vec![1, 0], true, None, negotiated.clone());
        assert_eq!(f.set_up(None).unwrap(), Some(Request::RegisterSession));
        let Some(Request::ForwardOpen(open)) = f.set_up(Some(Reply::Registered { session: 0x42 })).unwrap() else {
            panic!("a Forward Open follows the session")
        };
        assert!(open.large);
        assert_eq!(open.size, LARGE_SIZE);
        let reply = rr_reply(1, &open_reply(0xBEEF));
        let (_, reply) = f.parse(reply).unwrap().unwrap();
        assert_eq!(f.set_up(Some(reply)).unwrap(), None);
        assert_eq!(negotiated.size(), LARGE_SIZE);
        assert_eq!(negotiated.connections(), 1);
        // Calls now go connected, numbered by their sequence count.
        let mut out = Vec::new();
        f.encode(0x1_0005, &Request::Cip { message: vec![0x4C, 0], write: false }, &mut out).unwrap();
        let payload = encap::payload(&out[HEADER_LEN..]).unwrap();
        assert_eq!((payload.connection, payload.sequence, payload.message), (Some(0xBEEF), Some(5), &[0x4C, 0][..]));
        assert_eq!(Header::parse(&out).unwrap().session, 0x42);
    }

    #[test]
    fn a_refused_large_open_falls_back_to_classic_then_to_unconnected() {
        let mut f = framing();
        f.set_up(None).unwrap();
        f.set_up(Some(Reply::Registered { session: 1 })).unwrap();
        // Service not supported: a classic Forward Open of 504 bytes.
        let refused = Reply::Cip(Bytes::from_static(&[0xDB, 0, 0x08, 0]));
        let Some(Request::ForwardOpen(classic)) = f.set_up(Some(refused)).unwrap() else { panic!() };
        assert_eq!((classic.large, classic.size), (false, CLASSIC_SIZE));
        // Refused again (out of connections): unconnected messaging, routed by Unconnected Send.
        let out_of_connections = Reply::Cip(Bytes::from_static(&[0xD4, 0, 0x01, 1, 0x13, 0x01]));
        assert_eq!(f.set_up(Some(out_of_connections)).unwrap(), None);
        let mut out = Vec::new();
        f.encode(3, &Request::Cip { message: vec![0x4C, 0], write: false }, &mut out).unwrap();
        let payload = encap::payload(&out[HEADER_LEN..]).unwrap();
        assert_eq!(payload.sequence, None);
        assert_eq!(payload.message[0], cip::service::UNCONNECTED_SEND);
        assert_eq!(encap::id_of(&Header::parse(&out).unwrap().context), 3);
    }

    #[test]
    fn a_size_named_in_a_refusal_is_honoured_and_a_duplicate_retried_once_with_a_fresh_serial() {
        let mut f = framing();
        f.set_up(None).unwrap();
        let Some(Request::ForwardOpen(first)) = f.set_up(Some(Reply::Registered { session: 1 })).unwrap() else {
            panic!()
        };
        // Invalid connection size; the device takes 1000 bytes.
        let too_big = Reply::Cip(Bytes::from_static(&[0xDB, 0, 0x01, 2, 0x09, 0x01, 0xE8, 0x03]));
        let Some(Request::ForwardOpen(sized)) = f.set_up(Some(too_big)).unwrap() else { panic!() };
        assert_eq!((sized.large, sized.size), (true, 1000));
        assert_ne!(sized.serial, first.serial);
        let duplicate = || Reply::Cip(Bytes::from_static(&[0xDB, 0, 0x01, 1, 0x00, 0x01]));
        let Some(Request::ForwardOpen(again)) = f.set_up(Some(duplicate())).unwrap() else { panic!() };
        assert_eq!(again.size, 1000);
        assert_ne!(again.serial, sized.serial);
        // A second duplicate: down to a classic open.
        let Some(Request::ForwardOpen(classic)) = f.set_up(Some(duplicate())).unwrap() else { panic!() };
        assert!(!classic.large);
    }

    #[test]
    fn the_farewell_closes_the_connection_it_opened_then_the_session() {
        let mut f = framing();
        let mut out = Vec::new();
        f.farewell(&mut out);
        assert_eq!(
            Header::parse(&out).unwrap().command,
            command::UNREGISTER_SESSION,
            "no connection: the session only"
        );
        f.set_up(None).unwrap();
        let Some(Request::ForwardOpen(open)) = f.set_up(Some(Reply::Registered { session: 0x42 })).unwrap() else {
            panic!()
        };
        let opened = f.parse(rr_reply(1, &open_reply(0xBEEF))).unwrap().unwrap().1;
        f.set_up(Some(opened)).unwrap();
        out.clear();
        f.farewell(&mut out);
        let close = Header::parse(&out).unwrap();
        assert_eq!((close.command, close.session), (command::SEND_RR_DATA, 0x42));
        let message = encap::payload(&out[HEADER_LEN..usize::from(close.length) + HEADER_LEN]).unwrap().message;
        let mut expected = Vec::new();
        cip::forward_close(&mut expected, open.serial, open.vendor_id, open.originator_serial, &[1, 0]).unwrap();
        assert_eq!(message, &expected[..]);
        let rest = &out[HEADER_LEN + usize::from(close.length)..];
        assert_eq!(Header::parse(rest).unwrap().command, command::UNREGISTER_SESSION);
    }

    #[test]
    fn a_connection_failure_on_a_connected_reply_breaks_the_link_and_a_timeout_does_too() {
        let mut f = framing();
        assert!(!f.timeout_breaks_connection(), "unconnected: a timeout leaves the session alone");
        f.set_up(None).unwrap();
        f.set_up(Some(Reply::Registered { session: 7 })).unwrap();
        let opened = f.parse(rr_reply(1, &open_reply(0xBEEF))).unwrap().unwrap().1;
        f.set_up(Some(opened)).unwrap();
        assert!(f.timeout_breaks_connection());
        let mut dropped = Vec::new();
        encap::send_unit_data(&mut dropped, 7, 0x2000_0001, 5, |out| {
            out.extend_from_slice(&[0xCC, 0, 0x01, 1, 0x00, 0x01]);
            Ok(())
        })
        .unwrap();
        let e = f.parse(Bytes::from(dropped)).unwrap_err();
        assert_eq!(e.cip, Some(bifrost_core::CipStatus { status: 1, ext_status: Some(0x0100) }));
        assert!(e.message.contains("reconnecting"), "{}", e.message);
    }

    #[test]
    fn connected_false_skips_the_forward_open() {
        let mut f = Framing::new(Vec::new(), false, None, Arc::default());
        f.set_up(None).unwrap();
        assert_eq!(f.set_up(Some(Reply::Registered { session: 9 })).unwrap(), None);
        let mut out = Vec::new();
        f.encode(8, &Request::Cip { message: vec![0x0E, 0], write: false }, &mut out).unwrap();
        // No route: the message goes to the device itself, without Unconnected Send.
        assert_eq!(encap::payload(&out[HEADER_LEN..]).unwrap().message, &[0x0E, 0]);
    }

    #[test]
    fn replies_parse_their_id_and_a_refused_command_is_an_error() {
        let mut f = framing();
        let (id, reply) = f.parse(rr_reply(77, &[0xCC, 0, 0, 0, 0xC4, 0, 1, 0, 0, 0])).unwrap().unwrap();
        assert_eq!(id, Some(77));
        assert_eq!(reply.response().unwrap().data, &[0xC4, 0, 1, 0, 0, 0]);
        let mut bad = rr_reply(1, &[0xCC, 0, 0, 0]).to_vec();
        bad[8] = 0x64;
        assert!(f.parse(Bytes::from(bad)).unwrap_err().message.contains("invalid session handle"));
        let mut identity = Vec::new();
        encap::list_identity(&mut identity, [0; 8]).unwrap();
        assert!(f.parse(Bytes::from(identity)).is_err());
    }
}
