//! The pipelined Modbus client: one task per connection owns the socket, keeps
//! up to `max_in_flight` requests on the wire, matches replies by transaction
//! id (TCP) or by turn (RTU), expires requests on their own deadlines and
//! reconnects on the next request after a broken connection, with backoff.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bifrost_core::backoff::Backoff;
use bifrost_core::{Error, ErrorCode, Result};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::pdu::{function, Request, Response};
use crate::{rtu, tcp};

/// After an RTU request times out, how long the line must stay quiet before the next one.
const RTU_LATE_REPLY_GRACE: Duration = Duration::from_millis(100);

/// How requests and replies are framed on the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// MBAP header with transaction ids: requests can be pipelined.
    Tcp,
    /// Address + PDU + CRC: one request at a time.
    Rtu,
}

/// Connection settings shared by every transport.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub framing: Framing,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Silence kept between frames on a serial line (3.5 character times).
    pub inter_frame_delay: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            framing: Framing::Tcp,
            request_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(3000),
            max_in_flight: 1,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            inter_frame_delay: Duration::ZERO,
        }
    }
}

/// A byte stream the client can talk over (TCP socket, serial port, ...).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type BoxStream = Box<dyn Stream>;
type ConnectFuture = Pin<Box<dyn Future<Output = Result<BoxStream>> + Send>>;

/// Opens a new connection; called again on every reconnect.
pub type Connector = Box<dyn Fn() -> ConnectFuture + Send + Sync>;

/// A TCP connector with `TCP_NODELAY` set.
pub fn tcp_connector(addr: String) -> Connector {
    Box::new(move || {
        let addr = addr.clone();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await.map_err(|e| {
                let mut err = Error::from(e);
                err.message = format!("connect to {addr}: {}", err.message);
                err
            })?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    })
}

/// A request with owned payloads, so it can be queued; the connection task
/// encodes it straight into its reused write buffer.
#[derive(Debug, Clone)]
pub enum Op {
    Read { function: u8, address: u16, quantity: u16 },
    WriteSingleCoil { address: u16, value: bool },
    WriteSingleRegister { address: u16, value: u16 },
    WriteMultipleCoils { address: u16, quantity: u16, packed: Bytes },
    WriteMultipleRegisters { address: u16, registers: Bytes },
    MaskWriteRegister { address: u16, and_mask: u16, or_mask: u16 },
    ReadDeviceIdentification { read_code: u8, object_id: u8 },
}

impl Op {
    /// Builds the borrowed codec request; unknown read functions are a caller bug.
    pub fn request(&self) -> Result<Request<'_>> {
        Ok(match *self {
            Op::Read { function, address, quantity } => match function {
                function::READ_COILS => Request::ReadCoils { address, quantity },
                function::READ_DISCRETE_INPUTS => Request::ReadDiscreteInputs { address, quantity },
                function::READ_HOLDING_REGISTERS => Request::ReadHoldingRegisters { address, quantity },
                function::READ_INPUT_REGISTERS => Request::ReadInputRegisters { address, quantity },
                other => return Err(Error::invalid_value(format!("function {other} is not a read"))),
            },
            Op::WriteSingleCoil { address, value } => Request::WriteSingleCoil { address, value },
            Op::WriteSingleRegister { address, value } => Request::WriteSingleRegister { address, value },
            Op::WriteMultipleCoils { address, quantity, ref packed } => {
                Request::WriteMultipleCoils { address, quantity, packed }
            }
            Op::WriteMultipleRegisters { address, ref registers } => {
                Request::WriteMultipleRegisters { address, registers }
            }
            Op::MaskWriteRegister { address, and_mask, or_mask } => {
                Request::MaskWriteRegister { address, and_mask, or_mask }
            }
            Op::ReadDeviceIdentification { read_code, object_id } => {
                Request::ReadDeviceIdentification { read_code, object_id }
            }
        })
    }

    fn is_write(&self) -> bool {
        !matches!(self, Op::Read { .. } | Op::ReadDeviceIdentification { .. })
    }
}

/// A reply frame, split off the receive buffer without copying.
#[derive(Debug, Clone)]
pub struct Reply {
    frame: Bytes,
    pdu_start: usize,
    pdu_end: usize,
}

impl Reply {
    /// The PDU bytes (function code onwards). Empty for a broadcast, which has no reply.
    pub fn pdu(&self) -> &[u8] {
        &self.frame[self.pdu_start..self.pdu_end]
    }

    /// Decodes the PDU as the reply to `function`; a Modbus exception becomes `MODBUS_EXCEPTION`.
    pub fn response(&self, function: u8) -> Result<Response<'_>> {
        match Response::decode(self.pdu(), function)? {
            Response::Exception { function, code } => Err(Error::modbus_exception(function, code)),
            response => Ok(response),
        }
    }
}

/// Counters kept by the connection task, readable at any time.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub timeouts: AtomicU64,
    /// Replies that matched no request in flight (late or unknown), dropped.
    pub unmatched: AtomicU64,
    pub connects: AtomicU64,
}

/// A request on its way to the connection task.
struct Submitted {
    unit: u8,
    op: Op,
    timeout: Duration,
    reply: oneshot::Sender<Result<Reply>>,
}

// Requests are boxed: a channel allocates room for 32 commands up front, and
// idle connections should not pay for 32 full requests each.
enum Command {
    Request(Box<Submitted>),
    Connect { reply: oneshot::Sender<Result<()>> },
}

/// A handle to one connection task. Cloning shares the connection; the task
/// ends when `close` is called or the last handle is dropped.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    /// Close requests travel apart so they overtake queued and blocked work.
    close: mpsc::UnboundedSender<oneshot::Sender<()>>,
    stats: Arc<Stats>,
    config: Arc<ClientConfig>,
}

fn closed() -> Error {
    Error::closed("the connection was closed")
}

impl Client {
    /// Spawns the connection task on the current tokio runtime and connects once,
    /// so a wrong address fails here rather than on the first read.
    pub async fn connect(connector: Connector, mut config: ClientConfig) -> Result<Client> {
        if config.framing == Framing::Rtu {
            config.max_in_flight = 1;
        }
        config.max_in_flight = config.max_in_flight.clamp(1, 65535);
        let (commands, receiver) = mpsc::unbounded_channel();
        let (close, close_requests) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let config = Arc::new(config);
        let task = Connection::new(connector, config.clone(), stats.clone());
        tokio::spawn(task.run(receiver, close_requests));
        let client = Client { commands, close, stats, config };
        let (reply, done) = oneshot::channel();
        client.send(Command::Connect { reply })?;
        match done.await.map_err(|_| closed())? {
            Ok(()) => Ok(client),
            Err(e) => {
                client.close().await;
                Err(e)
            }
        }
    }

    fn send(&self, command: Command) -> Result<()> {
        self.commands.send(command).map_err(|_| closed())
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queues a request now and returns a future for its reply, so callers can
    /// queue a whole batch before awaiting any of it (that is the pipelining).
    pub fn submit(
        &self,
        unit: u8,
        op: Op,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Reply>> + Send + 'static {
        let (reply, receiver) = oneshot::channel();
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        let sent = self.send(Command::Request(Box::new(Submitted { unit, op, timeout, reply })));
        async move {
            sent?;
            receiver.await.map_err(|_| closed())?
        }
    }

    pub async fn call(&self, unit: u8, op: Op, timeout: Option<Duration>) -> Result<Reply> {
        self.submit(unit, op, timeout).await
    }

    /// Fails every queued and in-flight request with `ECLOSED` and ends the task.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.close.send(reply).is_ok() {
            let _ = done.await;
        }
    }
}

struct Pending {
    deadline: Instant,
    unit: u8,
    function: u8,
    reply: oneshot::Sender<Result<Reply>>,
}

struct Connection {
    connector: Connector,
    config: Arc<ClientConfig>,
    stats: Arc<Stats>,
    stream: Option<BoxStream>,
    read_buf: BytesMut,
    /// Room made free before each read: doubles while reads fill it, so busy links read in few syscalls.
    read_chunk: usize,
    write_buf: Vec<u8>,
    in_flight: HashMap<u16, Pending>,
    next_id: u16,
    backoff: Backoff,
    /// Earliest time the next connect attempt may start, after a failed one.
    retry_at: Option<Instant>,
    last_connect_error: Option<Error>,
    /// Serial lines: the next frame may start only after the line has been silent this long.
    line_quiet_at: Instant,
}

impl Connection {
    fn new(connector: Connector, config: Arc<ClientConfig>, stats: Arc<Stats>) -> Self {
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        Connection {
            connector,
            config,
            stats,
            stream: None,
            // Idle connections are common (gateways hold thousands): buffers start empty and grow with traffic.
            read_buf: BytesMut::new(),
            read_chunk: MIN_READ_CHUNK,
            write_buf: Vec::new(),
            in_flight: HashMap::new(),
            next_id: 0,
            backoff,
            retry_at: None,
            last_connect_error: None,
            line_quiet_at: Instant::now(),
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut close_requests: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        let closer = {
            let serve = self.serve(&mut commands);
            tokio::pin!(serve);
            tokio::select! {
                biased;
                closer = close_requests.recv() => closer,
                () = &mut serve => None,
            }
        };
        self.shutdown(&mut commands);
        if let Some(reply) = closer {
            let _ = reply.send(());
        }
    }

    /// Serves until every handle is gone.
    async fn serve(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) {
        loop {
            let accepting = self.in_flight.len() < self.config.max_in_flight;
            let deadline = self.earliest_deadline();
            let reading = self.stream.is_some();
            // Serial lines (and RTU after a timeout) need the line quiet before the next frame;
            // replies keep being read meanwhile.
            let quiet = Instant::now() >= self.line_quiet_at;
            tokio::select! {
                command = commands.recv(), if accepting && quiet => {
                    let Some(command) = command else { return };
                    self.handle(command).await;
                    // Drain what is already queued so one write carries many requests.
                    while self.stream.is_some() && self.in_flight.len() < self.config.max_in_flight {
                        match commands.try_recv() {
                            Ok(command) => self.handle(command).await,
                            Err(_) => break,
                        }
                    }
                    self.flush().await;
                },
                read = read_some(&mut self.stream, &mut self.read_buf, &mut self.read_chunk), if reading => match read {
                    Ok(0) => self.drop_connection(Error::conn_reset("the server closed the connection")),
                    Ok(_) => {
                        self.line_quiet_at = Instant::now() + self.config.inter_frame_delay;
                        self.dispatch_replies();
                    }
                    Err(e) => self.drop_connection(Error::conn_reset(format!("connection lost: {e}"))),
                },
                _ = sleep_until(deadline), if deadline.is_some() => self.expire(),
                _ = tokio::time::sleep_until(self.line_quiet_at), if !quiet => {}
            }
        }
    }

    fn earliest_deadline(&self) -> Option<Instant> {
        self.in_flight.values().map(|p| p.deadline).min()
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Connect { reply } => {
                let result = self.ensure_connected(Instant::now() + self.config.connect_timeout).await;
                let _ = reply.send(result);
            }
            Command::Request(submitted) => {
                let Submitted { unit, op, timeout, reply } = *submitted;
                let deadline = Instant::now() + timeout;
                if let Err(e) = self.ensure_connected(deadline).await {
                    let _ = reply.send(Err(e));
                    return;
                }
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                let request = match op.request() {
                    Ok(request) => request,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                // Skip ids still in flight: after the 16-bit id wraps, a slow request must keep its own.
                while self.in_flight.contains_key(&self.next_id) {
                    self.next_id = self.next_id.wrapping_add(1);
                }
                let id = self.next_id;
                let mark = self.write_buf.len();
                let encoded = match self.config.framing {
                    Framing::Tcp => tcp::encode_request(id, unit, &request, &mut self.write_buf),
                    Framing::Rtu => rtu::encode_request(unit, &request, &mut self.write_buf),
                };
                if let Err(e) = encoded {
                    self.write_buf.truncate(mark);
                    let _ = reply.send(Err(e));
                    return;
                }
                self.next_id = self.next_id.wrapping_add(1);
                if unit == 0 && op.is_write() {
                    // Broadcast: no device answers, so nothing waits.
                    let _ = reply.send(Ok(Reply { frame: Bytes::new(), pdu_start: 0, pdu_end: 0 }));
                    return;
                }
                let function = request.function();
                self.in_flight.insert(id, Pending { deadline, unit, function, reply });
            }
        }
    }

    async fn flush(&mut self) {
        if self.write_buf.is_empty() {
            return;
        }
        let silence = self.config.inter_frame_delay;
        // A peer that stops reading must not block this task past the requests' deadlines.
        let limit = self.earliest_deadline().unwrap_or_else(|| Instant::now() + self.config.request_timeout);
        let Some(stream) = self.stream.as_mut() else { return };
        let result = tokio::time::timeout_at(limit, stream.write_all(&self.write_buf)).await;
        self.write_buf.clear();
        self.line_quiet_at = Instant::now() + silence;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.drop_connection(Error::conn_reset(format!("write failed: {e}"))),
            Err(_) => self.drop_connection(Error::timeout("the device stopped reading requests")),
        }
    }

    async fn ensure_connected(&mut self, deadline: Instant) -> Result<()> {
        if self.stream.is_some() {
            return Ok(());
        }
        if let Some(retry_at) = self.retry_at {
            if retry_at > deadline {
                let mut err = self
                    .last_connect_error
                    .clone()
                    .unwrap_or_else(|| Error::new(ErrorCode::ConnRefused, "not connected"));
                err.message = format!("{} (next reconnect attempt is backed off)", err.message);
                return Err(err);
            }
            tokio::time::sleep_until(retry_at).await;
        }
        let attempt =
            tokio::time::timeout_at(deadline.min(Instant::now() + self.config.connect_timeout), (self.connector)())
                .await
                .unwrap_or_else(|_| Err(Error::timeout("connect timed out")));
        match attempt {
            Ok(stream) => {
                self.stream = Some(stream);
                self.read_buf.clear();
                self.retry_at = None;
                self.last_connect_error = None;
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                self.last_connect_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Hands every complete frame in the receive buffer to its waiting request.
    fn dispatch_replies(&mut self) {
        loop {
            let parsed = match self.config.framing {
                Framing::Tcp => tcp::decode_frame(&self.read_buf).map(|f| {
                    f.map(|(header, pdu, len)| {
                        (Some(header.transaction_id), header.unit_id, pdu_offset(&self.read_buf, pdu), pdu.len(), len)
                    })
                }),
                Framing::Rtu => match rtu::response_frame_len(&self.read_buf) {
                    Ok(Some(len)) if len <= self.read_buf.len() => rtu::decode_frame(&self.read_buf[..len])
                        .map(|(unit, pdu)| Some((None, unit, pdu_offset(&self.read_buf, pdu), pdu.len(), len))),
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                },
            };
            let (id, unit, pdu_start, pdu_len, frame_len) = match parsed {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) if self.config.framing == Framing::Rtu => {
                    // No frame boundary survives garbage on a serial line: fail the request, start clean.
                    self.read_buf.clear();
                    for (_, pending) in self.in_flight.drain() {
                        let _ = pending.reply.send(Err(e.clone()));
                    }
                    return;
                }
                Err(e) => {
                    // The TCP stream can no longer be trusted to be in sync.
                    self.drop_connection(e);
                    return;
                }
            };
            let frame = self.read_buf.split_to(frame_len).freeze();
            let key = match id {
                Some(id) => Some(id),
                // RTU: the one request in flight, if the reply is from its unit.
                None => self.in_flight.iter().find(|(_, p)| p.unit == unit).map(|(id, _)| *id),
            };
            match key.and_then(|k| self.in_flight.remove(&k)) {
                Some(pending) if pending.unit == unit || unit == 0 => {
                    // A reply proves the link works: the next break starts backing off afresh.
                    self.backoff.reset();
                    let _ = pending.reply.send(Ok(Reply { frame, pdu_start, pdu_end: pdu_start + pdu_len }));
                }
                Some(pending) => {
                    let _ = pending.reply.send(Err(Error::proto(format!(
                        "reply from unit {unit} to a request for unit {} (function {})",
                        pending.unit, pending.function
                    ))));
                }
                None => {
                    self.stats.unmatched.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<u16> = self.in_flight.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some(pending) = self.in_flight.remove(&id) {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                let _ = pending.reply.send(Err(Error::timeout(format!(
                    "no reply from unit {} to function {} in time",
                    pending.unit, pending.function
                ))));
            }
        }
        if self.config.framing == Framing::Rtu {
            // An RTU reply carries no id: let a late one arrive (and be dropped as
            // unmatched) before the next request goes out, or it would answer that one.
            self.read_buf.clear();
            self.line_quiet_at = self.line_quiet_at.max(Instant::now() + RTU_LATE_REPLY_GRACE);
        }
    }

    fn drop_connection(&mut self, error: Error) {
        if self.stream.is_some() {
            // A device that accepts and at once hangs up must not draw a reconnect per request.
            self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        }
        self.stream = None;
        self.read_buf.clear();
        self.write_buf.clear();
        for (_, pending) in self.in_flight.drain() {
            let _ = pending.reply.send(Err(error.clone()));
        }
    }

    fn shutdown(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) {
        self.drop_connection(closed());
        commands.close();
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Request(submitted) => {
                    let _ = submitted.reply.send(Err(closed()));
                }
                Command::Connect { reply } => {
                    let _ = reply.send(Err(closed()));
                }
            }
        }
    }
}

fn pdu_offset(buf: &[u8], pdu: &[u8]) -> usize {
    pdu.as_ptr() as usize - buf.as_ptr() as usize
}

const MIN_READ_CHUNK: usize = 512;
const MAX_READ_CHUNK: usize = 16 * 1024;

async fn read_some(stream: &mut Option<BoxStream>, buf: &mut BytesMut, chunk: &mut usize) -> std::io::Result<usize> {
    match stream {
        Some(stream) => {
            if buf.capacity() - buf.len() < *chunk / 2 {
                buf.reserve(*chunk);
            }
            let room = buf.capacity() - buf.len();
            let n = stream.read_buf(buf).await?;
            if n == room {
                *chunk = (*chunk * 2).min(MAX_READ_CHUNK);
            }
            Ok(n)
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
