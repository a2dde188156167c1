//! The transport and the secure channel against a real peer, node-opcua-server
//! 2.186.4 (the npm devDependency), over loopback: Hello and Acknowledge,
//! OpenSecureChannel with policy None, CloseSecureChannel; and the server's
//! Error message for a message it does not expect.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bifrost_opcua::node_id::NodeId;
use bifrost_opcua::secure_channel::{self, RequestHeader, TokenRequest};
use bifrost_opcua::transport::{self, kind, Acknowledge, Channel, Hello, Limits, NoSecurity, HEADER_LEN};

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
    secure_channel::open_request(&mut out, 0, &NoSecurity, (1, 1), &request_header(1), TokenRequest::Issue, lifetime)
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
