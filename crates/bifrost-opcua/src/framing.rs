//! OPC UA on the engine's link: the framing that sets a connection up (Hello,
//! OpenSecureChannel, CreateSession, ActivateSession, then a Read of what the
//! server's namespaces and operation limits are), sends each service request
//! in MSG chunks under the request id the link gives it, renews the channel's
//! token at 75% of its lifetime, and gathers each response's chunks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bifrost_core::{Error, Result};
use bytes::Bytes;

use crate::crypto::{self, Policy};
use crate::encoding::{Decode, Reader, Variant};
use crate::node_id::NodeId;
use crate::secure_channel::{self, RequestHeader, SecurityToken, TokenRequest};
use crate::security::{Ends, Identity, Secured, MODE_NONE};
use crate::session::{self, ApplicationDescription, ServiceRequest, SignatureData};
use crate::transport::{
    self, chunk, kind, Acknowledge, Assembled, Channel, Hello, Limits, Negotiated, NoSecurity, Reassembly,
    SecurityPolicy, HEADER_LEN,
};

/// What we offer in Hello: chunks of 64 KiB, messages of up to 64 MiB, any number of chunks.
const OURS: Limits = Limits { receive_buffer: 65535, send_buffer: 65535, max_message: 64 << 20, max_chunks: 0 };

/// Bytes of the nonce CreateSession sends (Part 4 asks for 32 at least).
const SESSION_NONCE_LEN: usize = 32;

/// The session timeout asked for; servers revise it.
const SESSION_TIMEOUT_MS: f64 = 60_000.0;

/// The request id of a token renewal: above every id the link hands out.
const RENEWAL_ID: u32 = u32::MAX;

/// Ids the link may use; each goes out as id + 1, since some servers take 0 for "none".
const ID_SPACE: u32 = 1 << 30;

/// Status codes that say the session is gone: the connection is set up afresh.
const SESSION_GONE: [u32; 4] = [
    0x8025_0000, // BadSessionIdInvalid
    0x8026_0000, // BadSessionClosed
    0x8027_0000, // BadSessionNotActivated
    0x8022_0000, // BadSecureChannelIdInvalid
];

/// Nodes read once a session is active: the namespace table and the operation limits.
const SERVER_NODES: [u32; 5] = [
    2255,  // Server_NamespaceArray
    11705, // OperationLimits_MaxNodesPerRead
    11707, // OperationLimits_MaxNodesPerWrite
    11712, // OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds
    11714, // OperationLimits_MaxMonitoredItemsPerCall
];

/// What the device needs of the server, learned as each connection is set up.
#[derive(Debug, Default)]
pub struct ServerInfo {
    /// The namespace table, index to URI, for `nsu=` NodeIds.
    pub namespaces: Vec<String>,
    /// How many nodes one Read, Write or TranslateBrowsePathsToNodeIds may name,
    /// and how many monitored items one call may make, change or delete (0: no limit).
    pub max_nodes_per_read: u32,
    pub max_nodes_per_write: u32,
    pub max_nodes_per_translate: u32,
    pub max_monitored_items_per_call: u32,
    /// Sessions made so far: what was learned under one (node data types) is dropped under the next.
    pub session: u64,
}

/// Shared between the framing, which fills it in, and the device, which reads it.
pub type SharedServerInfo = Arc<Mutex<ServerInfo>>;

/// A request as it waits in the link's queue.
#[derive(Debug, Clone)]
pub enum Request {
    Hello,
    OpenSecureChannel,
    Service {
        request: ServiceRequest,
        /// The service's name, for errors.
        what: &'static str,
        /// Whether it changes the server (Write, Call).
        writes: bool,
        /// Whether the server may hold it until it has something to say (Publish): no timeout hint.
        waits: bool,
        /// Whether it waits out an outage for the next connection (a subscription's probe).
        patient: bool,
    },
}

impl Request {
    pub fn service(request: ServiceRequest, what: &'static str) -> Request {
        Request::Service { request, what, writes: false, waits: false, patient: false }
    }

    pub fn write(request: ServiceRequest, what: &'static str) -> Request {
        Request::Service { request, what, writes: true, waits: false, patient: false }
    }

    /// A Publish: answered when a notification or a keep-alive is due.
    pub fn publish(request: ServiceRequest) -> Request {
        Request::Service { request, what: "Publish", writes: false, waits: true, patient: false }
    }

    /// A Read of the server's state that waits out an outage: answered once the
    /// connection (and its session) is back.
    pub fn probe() -> Request {
        let request = session::read(&[NodeId::numeric(0, 2259)], session::VALUE_ATTRIBUTE);
        Request::Service { request, what: "Read (waiting for the server)", writes: false, waits: false, patient: true }
    }
}

/// A reply, as the link hands it to a job.
#[derive(Debug, Clone)]
pub enum Reply {
    Acknowledged(Acknowledge),
    Opened(SecurityToken),
    /// A service response's message body (its encoding's NodeId first).
    Response(Bytes),
    /// The server aborted the response's chunks.
    Aborted(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Hello,
    Open,
    /// ActivateSession of the session the last connection had, on the new channel.
    Reactivate,
    CreateSession,
    ActivateSession,
    ReadServer,
    Ready,
}

/// How a connection is secured: the channel's policy and mode, both ends'
/// certificates (when the channel is secured or the identity needs the server's
/// key), and who the session acts for.
pub struct Security {
    pub policy: Policy,
    pub mode: u32,
    pub ends: Option<Arc<Ends>>,
    pub identity: Arc<Identity>,
    /// Whether a deprecated policy (SHA-1) may secure the user's token.
    pub allow_deprecated: bool,
}

impl Security {
    /// Policy None, anonymous.
    pub fn none() -> Security {
        Security {
            policy: Policy::None,
            mode: MODE_NONE,
            ends: None,
            identity: Arc::new(Identity::Anonymous),
            allow_deprecated: false,
        }
    }

    fn channel(&self) -> Box<dyn SecurityPolicy + Send> {
        match (&self.ends, self.mode) {
            (Some(ends), mode) if mode != MODE_NONE => Box::new(Secured::new(self.policy, mode, ends.clone())),
            _ => Box::new(NoSecurity),
        }
    }
}

/// The framing of one connection to one endpoint.
pub struct Framing {
    endpoint_url: String,
    security: Security,
    policy: Box<dyn SecurityPolicy + Send>,
    /// The nonce CreateSession sent, which the server's signature covers.
    session_nonce: Vec<u8>,
    step: Step,
    limits: Negotiated,
    channel: Channel,
    /// When the token is renewed, and whether a renewal is on the wire.
    renew_at: Option<Instant>,
    renewing: bool,
    token_lifetime: Duration,
    /// What OpenSecureChannel asks for; the server's answer is `token_lifetime`.
    requested_lifetime: Duration,
    authentication_token: NodeId,
    /// The session as CreateSession gave it, and the nonce the server gave last: a
    /// session that outlives its connection is activated again with them.
    created: Option<session::CreatedSession>,
    server_nonce: Vec<u8>,
    /// Whether this connection activated the last one's session again.
    resumed: bool,
    session_timeout: Duration,
    reassembly: Reassembly,
    /// The message body being sent: kept to reuse its room.
    scratch: Vec<u8>,
    server: SharedServerInfo,
    request_timeout_hint: u32,
    /// A channel without a session, for the discovery services: set up once the channel is open.
    discovery: bool,
}

impl Framing {
    /// A framing for `endpoint_url` (`opc.tcp://host:port/path`), sharing what it learns in `server`.
    pub fn new(
        endpoint_url: String,
        server: SharedServerInfo,
        request_timeout: Duration,
        lifetime: Duration,
        security: Security,
    ) -> Framing {
        Framing {
            endpoint_url,
            policy: security.channel(),
            security,
            session_nonce: Vec::new(),
            step: Step::Hello,
            limits: Acknowledge { protocol_version: 0, limits: OURS }.negotiate(&OURS),
            channel: Channel { channel_id: 0, token_id: 0, sequence: 1 },
            renew_at: None,
            renewing: false,
            token_lifetime: lifetime,
            requested_lifetime: lifetime,
            authentication_token: NodeId::null(),
            created: None,
            server_nonce: Vec::new(),
            resumed: false,
            session_timeout: Duration::from_millis(SESSION_TIMEOUT_MS as u64),
            reassembly: Reassembly::default(),
            scratch: Vec::new(),
            server,
            request_timeout_hint: request_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            discovery: false,
        }
    }

    /// A framing whose set-up ends with the secure channel, without a session:
    /// for GetEndpoints and FindServers, which need none.
    pub fn discovery(endpoint_url: String, request_timeout: Duration, lifetime: Duration) -> Framing {
        Framing {
            discovery: true,
            ..Framing::new(endpoint_url, SharedServerInfo::default(), request_timeout, lifetime, Security::none())
        }
    }

    fn header(&self, request_handle: u32) -> RequestHeader {
        RequestHeader {
            authentication_token: self.authentication_token.clone(),
            timestamp: secure_channel::date_time(SystemTime::now()),
            request_handle,
            timeout_hint: self.request_timeout_hint,
        }
    }

    fn next_sequence(&mut self) -> u32 {
        let sequence = self.channel.sequence;
        self.channel.sequence = sequence.wrapping_add(1).max(1);
        sequence
    }

    fn open(&mut self, out: &mut Vec<u8>, request_id: u32, request: TokenRequest) -> Result<()> {
        let sequence = self.next_sequence();
        // No session token here: a channel belongs to no session.
        let header = RequestHeader { authentication_token: NodeId::null(), ..self.header(request_id) };
        let nonce = self.policy.new_nonce();
        secure_channel::open_request(
            out,
            self.channel.channel_id,
            &*self.policy,
            (sequence, request_id),
            &header,
            request,
            nonce.as_deref(),
            self.requested_lifetime,
        )
    }

    fn granted(&mut self, token: SecurityToken) {
        self.channel.channel_id = token.channel_id;
        self.channel.token_id = token.token_id;
        self.renew_at = Some(token.renew_at(Instant::now()));
        self.token_lifetime = token.lifetime;
        self.renewing = false;
    }

    fn read_server(&self) -> Request {
        let nodes = SERVER_NODES.map(|id| NodeId::numeric(0, id));
        Request::service(session::read(&nodes, session::VALUE_ATTRIBUTE), "Read")
    }

    /// CreateSession: a fresh nonce, and our certificate when the channel is secured.
    fn create_session(&mut self) -> Request {
        let ends = self.security.ends.as_ref().filter(|_| self.security.mode != MODE_NONE);
        self.session_nonce = match ends {
            Some(_) => crypto::random(SESSION_NONCE_LEN),
            None => crypto::plain_nonce(SESSION_NONCE_LEN),
        };
        let client = ApplicationDescription {
            application_uri: Some(ends.map_or("urn:bifrost:client", |e| e.own.application_uri.as_str()).into()),
            product_uri: Some("urn:bifrost".into()),
            application_name: crate::encoding::LocalizedText { locale: None, text: Some("Bifrost".into()) },
            application_type: 1,
            discovery_urls: Vec::new(),
        };
        let certificate = ends.map(|e| e.own.certificate.as_slice());
        let request = session::create_session(
            &client,
            &self.endpoint_url,
            "bifrost",
            SESSION_TIMEOUT_MS,
            (&self.session_nonce, certificate),
        );
        Request::service(request, "CreateSession")
    }

    /// CreateSession was answered: on a secured channel, the server's signature of
    /// our certificate and nonce is checked; then the session is activated.
    fn session_created(&mut self, created: session::CreatedSession) -> Result<Request> {
        let security = &self.security;
        if let (Some(ends), true) = (&security.ends, security.mode != MODE_NONE) {
            if created.server_certificate.as_deref().map(crate::security::leaf)
                != Some(crate::security::leaf(&ends.server_certificate))
            {
                return Err(crypto::checks_failed(
                    "CreateSession was answered with another certificate than the endpoint's",
                ));
            }
            let mut signed = ends.own.certificate.clone();
            signed.extend_from_slice(&self.session_nonce);
            let signature = created.server_signature.signature.as_deref().unwrap_or_default();
            ends.server.verify(security.policy, &signed, signature)?;
        }
        self.authentication_token = created.authentication_token.clone();
        if created.timeout_ms.is_finite() && created.timeout_ms >= 1.0 {
            self.session_timeout = Duration::from_secs_f64(created.timeout_ms / 1000.0);
        }
        self.server_nonce = created.server_nonce.clone();
        self.created = Some(created);
        self.activate_session()
    }

    /// ActivateSession of the session created: on a secured channel with our
    /// signature of the server's certificate and its last nonce; the user's token.
    fn activate_session(&self) -> Result<Request> {
        let created = self.created.as_ref().ok_or_else(|| Error::proto("no session to activate"))?;
        let security = &self.security;
        let server_certificate = created.server_certificate.as_deref().unwrap_or_default();
        let mut client_signature = SignatureData::default();
        if let (Some(ends), true) = (&security.ends, security.mode != MODE_NONE) {
            let mut data = server_certificate.to_vec();
            data.extend_from_slice(&self.server_nonce);
            client_signature = SignatureData {
                algorithm: Some(security.policy.signature_uri().into()),
                signature: Some(ends.own.key.sign(security.policy, &data)?),
            };
        }
        let policies: Vec<_> = created
            .endpoints
            .iter()
            .filter(|e| e.security_policy_uri.as_deref() == Some(self.policy.uri()) && e.security_mode == security.mode)
            .flat_map(|e| &e.user_identity_tokens)
            .collect();
        let server_key = security.ends.as_ref().map(|e| &e.server);
        let (token, user_signature) = security.identity.token(
            &policies,
            (security.policy, security.allow_deprecated),
            server_key,
            (server_certificate, &self.server_nonce),
        )?;
        Ok(Request::service(session::activate_session(&client_signature, &token, &user_signature), "ActivateSession"))
    }

    /// The server's namespaces and limits; a new session (not one activated again) gets the next number.
    fn learn_server(&mut self, body: &[u8], new_session: bool) -> Result<()> {
        let values = session::parse_read(body, SERVER_NODES.len())?;
        let limit = |at: usize| match values[at].value {
            Some(Variant::UInt32(n)) => n,
            _ => 0,
        };
        let namespaces = match &values[0].value {
            Some(Variant::Array(array)) => array
                .values
                .iter()
                .map(|v| match v {
                    Variant::String(s) => s.clone().unwrap_or_default(),
                    _ => String::new(),
                })
                .collect(),
            _ => return Err(Error::proto("the server's namespace array is not an array of strings")),
        };
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        *server = ServerInfo {
            namespaces,
            max_nodes_per_read: limit(1),
            max_nodes_per_write: limit(2),
            max_nodes_per_translate: limit(3),
            max_monitored_items_per_call: limit(4),
            session: server.session + u64::from(new_session),
        };
        Ok(())
    }

    /// A response whose service result says the session or channel is gone breaks
    /// the connection, and the next one makes a new session.
    fn check_session(&mut self, body: &[u8]) -> Result<()> {
        if self.step != Step::Ready {
            return Ok(()); // the set-up reads its own answers
        }
        let mut r = Reader::new(body);
        NodeId::decode(&mut r)?;
        r.bytes(12, "a response header")?; // timestamp, request handle
        let result = r.u32("a service result")?;
        if SESSION_GONE.contains(&result) {
            self.authentication_token = NodeId::null();
            self.created = None;
            return Err(secure_channel::status_error(result, "the server dropped the session (setting up anew)"));
        }
        Ok(())
    }
}

impl bifrost_engine::Framing for Framing {
    type Request = Request;
    type Reply = Reply;

    fn id_space(&self) -> u32 {
        ID_SPACE
    }

    fn is_write(request: &Request) -> bool {
        matches!(request, Request::Service { writes: true, .. })
    }

    fn outlasts_outages(request: &Request) -> bool {
        matches!(request, Request::Service { patient: true, .. })
    }

    fn describe(request: &Request) -> String {
        match request {
            Request::Hello => "Hello".into(),
            Request::OpenSecureChannel => "OpenSecureChannel".into(),
            Request::Service { what, .. } => (*what).into(),
        }
    }

    fn encode(&mut self, id: u32, request: &Request, out: &mut Vec<u8>) -> Result<bool> {
        let start = out.len();
        let written = match request {
            Request::Hello => {
                Hello { protocol_version: 0, limits: OURS, endpoint_url: self.endpoint_url.clone() }.write(out);
                Ok(())
            }
            Request::OpenSecureChannel => self.open(out, id + 1, TokenRequest::Issue),
            Request::Service { request, waits, .. } => {
                // The token is renewed ahead of the request that finds it due, so a busy
                // channel renews on time and an idle one at its next keep-alive.
                if !self.renewing && self.renew_at.is_some_and(|at| at <= Instant::now()) {
                    self.open(out, RENEWAL_ID, TokenRequest::Renew)?;
                    self.renewing = true;
                }
                let mut body = std::mem::take(&mut self.scratch);
                body.clear();
                let mut header = self.header(id + 1);
                if *waits {
                    header.timeout_hint = 0; // no timeout: it is answered when there is something to say
                }
                request.write(&header, &mut body);
                let policy = &*self.policy;
                let sent =
                    transport::write_chunks(out, kind::MESSAGE, &mut self.channel, id + 1, &body, &self.limits, policy);
                self.scratch = body;
                sent
            }
        };
        if written.is_err() {
            out.truncate(start);
        }
        written.map(|()| true)
    }

    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>> {
        transport::frame_len(buf, self.limits.receive_chunk)
    }

    fn parse(&mut self, frame: Bytes) -> Result<Option<(Option<u32>, Reply)>> {
        let header = transport::Header::parse(&frame)?;
        match header.kind {
            kind::ACKNOWLEDGE => {
                let ack = Acknowledge::parse(&frame[HEADER_LEN..])?;
                Ok(Some((None, Reply::Acknowledged(ack))))
            }
            kind::ERROR => Err(transport::parse_error(&frame[HEADER_LEN..])?),
            kind::OPEN => {
                let opened = secure_channel::parse_open_response(&frame, &*self.policy)?;
                self.policy.granted(opened.token.token_id, &opened.server_nonce)?;
                if opened.request_id == RENEWAL_ID {
                    self.granted(opened.token);
                    return Ok(None);
                }
                Ok(Some((Some(opened.request_id.wrapping_sub(1)), Reply::Opened(opened.token))))
            }
            kind::MESSAGE => {
                let frame = self.policy.open(frame)?;
                let chunk = transport::parse_chunk(&frame)?;
                if chunk.channel_id != self.channel.channel_id {
                    return Err(Error::proto(format!(
                        "a message for channel {} on channel {}",
                        chunk.channel_id, self.channel.channel_id
                    )));
                }
                let id = chunk.request_id.wrapping_sub(1);
                // A response in one chunk is handed on as a slice of the frame, not copied.
                if chunk.header.chunk == chunk::FINAL && !self.reassembly.holds(chunk.request_id) {
                    let start = chunk.body.as_ptr() as usize - frame.as_ptr() as usize;
                    let body = frame.slice(start..start + chunk.body.len());
                    self.check_session(&body)?;
                    return Ok(Some((Some(id), Reply::Response(body))));
                }
                match self.reassembly.take(&chunk, &self.limits)? {
                    Assembled::Pending => Ok(None),
                    Assembled::Message(_, body) => {
                        self.check_session(&body)?;
                        Ok(Some((Some(id), Reply::Response(Bytes::from(body)))))
                    }
                    Assembled::Aborted(_, error) => Ok(Some((Some(id), Reply::Aborted(error)))),
                }
            }
            other => Err(Error::proto(format!("a {} message from the server", String::from_utf8_lossy(&other)))),
        }
    }

    fn answers(request: &Request, reply: &Reply) -> Result<()> {
        match (request, reply) {
            (Request::Hello, Reply::Acknowledged(_))
            | (Request::OpenSecureChannel, Reply::Opened(_))
            | (Request::Service { .. }, Reply::Response(_)) => Ok(()),
            (Request::Service { .. }, Reply::Aborted(error)) => Err(error.clone()),
            _ => Err(Error::proto("the reply's message type does not answer the request")),
        }
    }

    fn unanswered(_request: &Request) -> Reply {
        Reply::Response(Bytes::new())
    }

    fn set_up(&mut self, reply: Option<Reply>) -> Result<Option<Request>> {
        let Some(reply) = reply else {
            // A fresh connection: a fresh channel and session.
            self.step = Step::Hello;
            self.limits = Acknowledge { protocol_version: 0, limits: OURS }.negotiate(&OURS);
            self.channel = Channel { channel_id: 0, token_id: 0, sequence: 1 };
            self.renew_at = None;
            self.renewing = false;
            self.reassembly = Reassembly::default();
            self.policy = self.security.channel();
            return Ok(Some(Request::Hello));
        };
        let body = match &reply {
            Reply::Response(body) => Some(body.clone()),
            _ => None,
        };
        let body = || body.clone().ok_or_else(|| Error::proto("the set-up was answered with another message type"));
        match (self.step, reply) {
            (Step::Hello, Reply::Acknowledged(ack)) => {
                self.limits = ack.negotiate(&OURS);
                self.step = Step::Open;
                Ok(Some(Request::OpenSecureChannel))
            }
            (Step::Open, Reply::Opened(token)) => {
                self.granted(token);
                if self.discovery {
                    self.step = Step::Ready;
                    return Ok(None);
                }
                if self.created.is_some() {
                    // The session may have outlived the connection: activate it on the new channel.
                    self.step = Step::Reactivate;
                    return self.activate_session().map(Some);
                }
                self.step = Step::CreateSession;
                Ok(Some(self.create_session()))
            }
            (Step::Reactivate, _) => match session::parse_activate_session(&body()?) {
                Ok(nonce) => {
                    self.server_nonce = nonce;
                    self.step = Step::ReadServer;
                    self.resumed = true;
                    Ok(Some(self.read_server()))
                }
                // Gone (the server restarted, or timed it out): a new session.
                Err(_) => {
                    self.authentication_token = NodeId::null();
                    self.created = None;
                    self.step = Step::CreateSession;
                    Ok(Some(self.create_session()))
                }
            },
            (Step::CreateSession, _) => {
                let created = session::parse_create_session(&body()?)?;
                self.step = Step::ActivateSession;
                Ok(Some(self.session_created(created)?))
            }
            (Step::ActivateSession, _) => {
                self.server_nonce = session::parse_activate_session(&body()?)?;
                self.step = Step::ReadServer;
                self.resumed = false;
                Ok(Some(self.read_server()))
            }
            (Step::ReadServer, _) => {
                self.learn_server(&body()?, !self.resumed)?;
                self.step = Step::Ready;
                Ok(None)
            }
            _ => Err(Error::proto("the set-up was answered out of turn")),
        }
    }

    fn farewell(&mut self, out: &mut Vec<u8>) {
        if self.step != Step::Ready {
            return;
        }
        // CloseSession (its subscriptions with it), then CloseSecureChannel; no answer is awaited.
        let limits = self.limits;
        if !self.discovery {
            let mut body = Vec::new();
            session::close_session().write(&self.header(RENEWAL_ID - 1), &mut body);
            let _ = transport::write_chunks(
                out,
                kind::MESSAGE,
                &mut self.channel,
                RENEWAL_ID - 1,
                &body,
                &limits,
                &*self.policy,
            );
        }
        let close = secure_channel::close_request(&self.header(RENEWAL_ID - 2));
        let _ = transport::write_chunks(
            out,
            kind::CLOSE,
            &mut self.channel,
            RENEWAL_ID - 2,
            &close,
            &limits,
            &*self.policy,
        );
    }

    /// A session the server hears nothing on for its timeout is closed, and a token
    /// must be renewed before it expires: an idle connection speaks often enough for both.
    fn keep_alive_after(&self) -> Option<Duration> {
        Some((self.session_timeout / 3).min(self.token_lifetime / 8).max(Duration::from_millis(10)))
    }

    /// Reads the server's state (ServerStatus_State): renews the token on the way when due.
    fn keep_alive(&mut self) -> Option<Request> {
        (self.step == Step::Ready && !self.discovery).then(|| {
            Request::service(session::read(&[NodeId::numeric(0, 2259)], session::VALUE_ATTRIBUTE), "Read (keep-alive)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bifrost_engine::Framing as _;

    fn token_of(message: &[u8]) -> u32 {
        u32::from_le_bytes(message[12..16].try_into().unwrap())
    }

    #[test]
    fn the_token_is_renewed_ahead_of_the_request_that_finds_it_due_and_used_once_granted() {
        let lifetime = Duration::from_secs(3600);
        let mut f = Framing::new(
            "opc.tcp://h:4840".into(),
            SharedServerInfo::default(),
            Duration::from_secs(1),
            lifetime,
            Security::none(),
        );
        assert!(matches!(f.set_up(None).unwrap(), Some(Request::Hello)));
        let mut out = Vec::new();
        f.encode(0, &Request::Hello, &mut out).unwrap();
        assert_eq!(&out[..4], b"HELF");
        let ack = Acknowledge { protocol_version: 0, limits: OURS };
        assert!(matches!(f.set_up(Some(Reply::Acknowledged(ack))).unwrap(), Some(Request::OpenSecureChannel)));
        // Granted: token 7 for 100 ms, answering request 0 (sent as 1).
        let opened = secure_channel::tests::open_response_for(NoSecurity.uri(), 0, 1, 7, 100);
        let Some((Some(0), Reply::Opened(token))) = f.parse(Bytes::from(opened)).unwrap() else { panic!() };
        assert!(matches!(f.set_up(Some(Reply::Opened(token))).unwrap(), Some(Request::Service { .. })));

        let read = || Request::service(session::read(&[NodeId::numeric(0, 2259)], session::VALUE_ATTRIBUTE), "Read");
        let mut out = Vec::new();
        f.encode(1, &read(), &mut out).unwrap();
        assert_eq!((&out[..4], token_of(&out)), (&b"MSGF"[..], 7), "not due yet: no renewal");
        std::thread::sleep(Duration::from_millis(90)); // past 75% of 100 ms
        let mut out = Vec::new();
        f.encode(2, &read(), &mut out).unwrap();
        assert_eq!(&out[..4], b"OPNF", "the renewal goes first");
        let opn_len = transport::frame_len(&out, 65535).unwrap().unwrap();
        assert_eq!((&out[opn_len..opn_len + 4], token_of(&out[opn_len..])), (&b"MSGF"[..], 7));
        let mut out = Vec::new();
        f.encode(3, &read(), &mut out).unwrap();
        assert_eq!(&out[..4], b"MSGF", "one renewal on the wire at a time");

        // The renewal's answer is the framing's own: no reply for the link; the new token is used from then on.
        let renewed = secure_channel::tests::open_response_for(NoSecurity.uri(), 0, RENEWAL_ID, 8, 100);
        assert!(f.parse(Bytes::from(renewed)).unwrap().is_none());
        let mut out = Vec::new();
        f.encode(4, &read(), &mut out).unwrap();
        assert_eq!((&out[..4], token_of(&out)), (&b"MSGF"[..], 8));
        // An idle connection speaks often enough to renew before the token expires.
        assert!(f.keep_alive_after().unwrap() <= Duration::from_millis(25));
    }
}
