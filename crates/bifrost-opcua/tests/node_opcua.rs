//! The transport and the secure channel against a real peer, node-opcua-server
//! 2.186.4 (the npm devDependency), over loopback: Hello and Acknowledge,
//! OpenSecureChannel with policy None, CloseSecureChannel; and the server's
//! Error message for a message it does not expect.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bifrost_opcua::encoding::Variant;
use bifrost_opcua::node_id::{ExpandedNodeId, NodeId};
use bifrost_opcua::secure_channel::{self, RequestHeader, TokenRequest};
use bifrost_opcua::session::{self, ApplicationDescription};
use bifrost_opcua::transport::{
    self, kind, Acknowledge, Assembled, Channel, Hello, Limits, Negotiated, NoSecurity, Reassembly, SecurityPolicy,
    HEADER_LEN,
};

/// A node-opcua server for one test, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
    _home: PathBuf,
}

impl Server {
    fn start() -> Server {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let home = std::env::temp_dir().join(format!(
            "bifrost-node-opcua-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&home).unwrap();
        let mut child = Command::new("node")
            .arg("crates/bifrost-opcua/tests/peers/node_opcua_server.mjs")
            .arg("0")
            .current_dir(&root)
            .env("HOME", &home)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs (the peer is node-opcua-server, an npm devDependency: run npm ci)");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // node-opcua takes 2 to 5 s to start; much longer on a busy machine.
        let (sender, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("listening ") {
                    let _ = sender.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let port = ready
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .expect("node-opcua-server said 'listening <port>' (is node-opcua-server installed? npm ci)");
        Server { child, port, _home: home }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._home);
    }
}

/// Reads one whole message (a chunk) off the stream.
fn read_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0; HEADER_LEN];
    stream.read_exact(&mut buf).unwrap();
    let len = transport::frame_len(&buf, 1 << 20).unwrap().unwrap();
    buf.resize(len, 0);
    stream.read_exact(&mut buf[HEADER_LEN..]).unwrap();
    buf
}

const OURS: Limits = Limits { receive_buffer: 65535, send_buffer: 65535, max_message: 16 << 20, max_chunks: 0 };

fn hello(stream: &mut TcpStream, port: u16) -> Acknowledge {
    let mut out = Vec::new();
    Hello { protocol_version: 0, limits: OURS, endpoint_url: format!("opc.tcp://127.0.0.1:{port}/bifrost") }
        .write(&mut out);
    stream.write_all(&out).unwrap();
    let reply = read_message(stream);
    assert_eq!(&reply[..4], b"ACKF", "{reply:02x?}");
    Acknowledge::parse(&reply[HEADER_LEN..]).unwrap()
}

fn request_header(handle: u32) -> RequestHeader {
    RequestHeader {
        authentication_token: NodeId::null(),
        timestamp: secure_channel::date_time(SystemTime::now()),
        request_handle: handle,
        timeout_hint: 10_000,
    }
}

#[test]
fn hello_opens_and_closes_a_secure_channel_with_node_opcua() {
    let server = Server::start();
    let mut stream = server.connect();
    let ack = hello(&mut stream, server.port);
    let limits = ack.negotiate(&OURS);
    assert!(limits.send_chunk >= transport::MIN_BUFFER && limits.receive_chunk >= transport::MIN_BUFFER, "{limits:?}");

    let mut out = Vec::new();
    let lifetime = Duration::from_secs(600);
    let header = request_header(1);
    secure_channel::open_request(&mut out, 0, &NoSecurity, (1, 1), &header, TokenRequest::Issue, None, lifetime)
        .unwrap();
    stream.write_all(&out).unwrap();
    let opened = secure_channel::parse_open_response(&read_message(&mut stream), &NoSecurity).unwrap();
    assert_eq!(opened.request_id, 1, "the response names our request");
    assert!(opened.token.channel_id != 0 && opened.token.token_id != 0, "{opened:?}");
    assert!(opened.token.lifetime > Duration::ZERO && opened.token.lifetime <= lifetime * 2, "{opened:?}");
    let granted = Instant::now();
    assert!(opened.token.renew_at(granted) < granted + opened.token.lifetime);

    // CloseSecureChannel: the server answers nothing and closes the connection.
    let mut channel = Channel { channel_id: opened.token.channel_id, token_id: opened.token.token_id, sequence: 2 };
    let body = secure_channel::close_request(&request_header(2));
    let mut out = Vec::new();
    transport::write_chunks(&mut out, kind::CLOSE, &mut channel, 2, &body, &limits, &NoSecurity).unwrap();
    stream.write_all(&out).unwrap();
    let mut rest = Vec::new();
    let closed = stream.read_to_end(&mut rest);
    assert!(matches!(closed, Ok(0)) || closed.is_err(), "{closed:?} {rest:02x?}");
}

#[test]
fn a_message_before_the_secure_channel_is_answered_with_an_error_message() {
    let server = Server::start();
    let mut stream = server.connect();
    hello(&mut stream, server.port);
    // A MSG chunk on a channel that was never opened.
    let limits = Acknowledge { protocol_version: 0, limits: OURS }.negotiate(&OURS);
    let mut channel = Channel { channel_id: 99, token_id: 1, sequence: 1 };
    let mut out = Vec::new();
    transport::write_chunks(&mut out, kind::MESSAGE, &mut channel, 1, &[0; 16], &limits, &NoSecurity).unwrap();
    stream.write_all(&out).unwrap();
    let reply = read_message(&mut stream);
    assert_eq!(&reply[..3], b"ERR", "{reply:02x?}");
    let error = transport::parse_error(&reply[HEADER_LEN..]).unwrap();
    assert!(error.message.contains("the server ended the connection with Bad"), "{}", error.message);
}

/// Sends one request in MSG chunks and gathers its response's chunks.
fn call(stream: &mut TcpStream, channel: &mut Channel, request_id: u32, body: &[u8], limits: &Negotiated) -> Vec<u8> {
    let mut out = Vec::new();
    transport::write_chunks(&mut out, kind::MESSAGE, channel, request_id, body, limits, &NoSecurity).unwrap();
    stream.write_all(&out).unwrap();
    let mut reassembly = Reassembly::default();
    loop {
        let message = read_message(stream);
        let chunk = transport::parse_chunk(&message).unwrap();
        assert_eq!(chunk.channel_id, channel.channel_id);
        match reassembly.take(&chunk, limits).unwrap() {
            Assembled::Message(id, body) if id == request_id => return body,
            Assembled::Pending => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_session_reads_the_servers_own_nodes_with_node_opcua() {
    let server = Server::start();
    let mut stream = server.connect();
    let limits = hello(&mut stream, server.port).negotiate(&OURS);
    let mut out = Vec::new();
    secure_channel::open_request(
        &mut out,
        0,
        &NoSecurity,
        (1, 1),
        &request_header(1),
        TokenRequest::Issue,
        None,
        Duration::from_secs(600),
    )
    .unwrap();
    stream.write_all(&out).unwrap();
    let opened = secure_channel::parse_open_response(&read_message(&mut stream), &NoSecurity).unwrap();
    let mut channel = Channel { channel_id: opened.token.channel_id, token_id: opened.token.token_id, sequence: 2 };
    let url = format!("opc.tcp://127.0.0.1:{}/bifrost", server.port);

    // GetEndpoints: security None, with an anonymous user token policy.
    let endpoints = session::parse_get_endpoints(&call(
        &mut stream,
        &mut channel,
        2,
        &session::get_endpoints(&url).message(&request_header(2)),
        &limits,
    ))
    .unwrap();
    let none = endpoints.iter().find(|e| e.security_mode == 1).expect("an endpoint with security None");
    assert_eq!(none.security_policy_uri.as_deref(), Some(NoSecurity.uri()));
    let anonymous =
        none.user_identity_tokens.iter().find(|t| t.token_type == 0).expect("an anonymous user token policy");

    // CreateSession, then ActivateSession as Anonymous.
    let client = ApplicationDescription {
        application_uri: Some("urn:bifrost:test".into()),
        application_type: 1,
        ..Default::default()
    };
    let create =
        session::create_session(&client, &url, "bifrost-test", 60_000.0, (&[7; 32], None)).message(&request_header(3));
    let created = session::parse_create_session(&call(&mut stream, &mut channel, 3, &create, &limits)).unwrap();
    assert!(created.timeout_ms > 0.0 && !created.endpoints.is_empty(), "{created:?}");
    let authenticated =
        |handle| RequestHeader { authentication_token: created.authentication_token.clone(), ..request_header(handle) };
    let token = session::IdentityToken::Anonymous { policy_id: anonymous.policy_id.clone().unwrap_or_default() };
    let none = session::SignatureData::default();
    let activate = session::activate_session(&none, &token, &none).message(&authenticated(4));
    session::parse_activate_session(&call(&mut stream, &mut channel, 4, &activate, &limits)).unwrap();

    // Read: the server's state (Running, 0), its namespace array, and a node it does not have.
    let unknown = ExpandedNodeId::parse("ns=1;s=NoSuchNode").unwrap().node_id;
    let nodes = [NodeId::numeric(0, 2259), NodeId::numeric(0, 2255), unknown];
    let values = session::parse_read(
        &call(
            &mut stream,
            &mut channel,
            5,
            &session::read(&nodes, session::VALUE_ATTRIBUTE).message(&authenticated(5)),
            &limits,
        ),
        3,
    )
    .unwrap();
    assert_eq!(values[0].value, Some(Variant::Int32(0)), "{:?}", values[0]);
    match &values[1].value {
        Some(Variant::Array(array)) => {
            assert_eq!(array.values[0], Variant::String(Some("http://opcfoundation.org/UA/".into())))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(values[2].status.map(bifrost_opcua::status::name), Some(Some("BadNodeIdUnknown")));
    // A request without the session's token is refused as OPCUA_STATUS.
    let refused = session::parse_read(
        &call(
            &mut stream,
            &mut channel,
            6,
            &session::read(&nodes[..1], session::VALUE_ATTRIBUTE).message(&request_header(6)),
            &limits,
        ),
        1,
    )
    .unwrap_err();
    assert_eq!(refused.code, bifrost_core::ErrorCode::OpcuaStatus, "{}", refused.message);

    // The same kind of Read, straight into numbers: the state, the server's MaxNodesPerRead, the unknown node.
    let numeric = [NodeId::numeric(0, 2259), NodeId::numeric(0, session::MAX_NODES_PER_READ), nodes[2].clone()];
    let body = call(
        &mut stream,
        &mut channel,
        8,
        &session::read(&numeric, session::VALUE_ATTRIBUTE).message(&authenticated(8)),
        &limits,
    );
    let (mut out, mut failed) = ([f64::NAN; 3], Vec::new());
    session::parse_read_into(&body, &mut out, &mut failed).unwrap();
    let as_values = session::parse_read(&body, 3).unwrap();
    let limit = match as_values[1].value {
        Some(Variant::UInt32(limit)) => f64::from(limit),
        ref other => panic!("MaxNodesPerRead is a UInt32: {other:?}"),
    };
    assert_eq!(out[..2], [0.0, limit]);
    assert!(out[2].is_nan());
    assert_eq!(failed, [(2, values[2].status.unwrap())]);

    session::parse_close_session(&call(
        &mut stream,
        &mut channel,
        7,
        &session::close_session().message(&authenticated(7)),
        &limits,
    ))
    .unwrap();
}
