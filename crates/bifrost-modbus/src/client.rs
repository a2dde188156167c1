//! The pipelined Modbus client: one task per connection owns the socket, keeps
//! up to `max_in_flight` requests on the wire, matches replies by transaction
//! id (TCP) or by turn (RTU), expires requests on their own deadlines and
//! reconnects on the next request after a broken connection, with backoff.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Requests accepted but not yet on the wire; one more fails at once with `EQUEUEFULL`.
    pub max_queued: usize,
    /// How an RTU link gets back in step after a timeout.
    pub resync: Resync,
}

/// RTU replies carry no transaction id: after a timeout, a late reply could be
/// taken as the answer to the next request. How the link gets back in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// Drop the connection and open a new one (RTU over TCP): the late reply goes with the old socket.
    Reconnect,
    /// Serial lines: discard input until the late reply has passed or the line
    /// has been silent this long, before the next request goes out.
    Drain { late_reply_window: Duration },
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
            max_queued: 10_000,
            resync: Resync::Reconnect,
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

/// A TCP connector with `TCP_NODELAY` set. A host name that does not resolve
/// is `ENOTFOUND`; each resolved address is tried in turn.
pub fn tcp_connector(addr: String) -> Connector {
    Box::new(move || {
        let addr = addr.clone();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host(&addr)
                .await
                .map_err(|e| Error::new(ErrorCode::NotFound, format!("cannot resolve {addr}: {e}")))?;
            let mut last = Error::new(ErrorCode::NotFound, format!("{addr} resolves to no address"));
            for address in resolved {
                match tokio::net::TcpStream::connect(address).await {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        return Ok(Box::new(stream) as BoxStream);
                    }
                    Err(e) => {
                        last = Error::from(e);
                        last.message = format!("connect to {addr}: {}", last.message);
                    }
                }
            }
            Err(last)
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
    /// Connections lost or dropped (by either side).
    pub disconnects: AtomicU64,
    /// Times the link was brought back in step after it could no longer be trusted.
    pub resyncs: AtomicU64,
    /// Requests accepted but not yet on the wire; never more than `max_queued`.
    pub queued: AtomicUsize,
}

/// A request on its way to the connection task.
struct Submitted {
    unit: u8,
    op: Op,
    /// The whole call's deadline: time spent waiting in the queue counts.
    deadline: Instant,
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
        config.max_queued = config.max_queued.max(1);
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
    /// `deadline` bounds the whole request, queueing included; `None` gives it
    /// the connection's request timeout from now. A full queue fails at once with `EQUEUEFULL`.
    pub fn submit(
        &self,
        unit: u8,
        op: Op,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Reply>> + Send + 'static {
        let (reply, receiver) = oneshot::channel();
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.config.request_timeout);
        let queued = self.enqueue(Box::new(Submitted { unit, op, deadline, reply }));
        async move {
            queued?;
            receiver.await.map_err(|_| closed())?
        }
    }

    fn enqueue(&self, submitted: Box<Submitted>) -> Result<()> {
        let queued = &self.stats.queued;
        let limit = self.config.max_queued;
        if queued.fetch_add(1, Ordering::Relaxed) >= limit {
            queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::new(
                ErrorCode::QueueFull,
                format!("{limit} requests are already waiting for this device (max-queued={limit})"),
            ));
        }
        self.send(Command::Request(submitted)).inspect_err(|_| {
            queued.fetch_sub(1, Ordering::Relaxed);
        })
    }

    pub async fn call(&self, unit: u8, op: Op, deadline: Option<Instant>) -> Result<Reply> {
        self.submit(unit, op, deadline).await
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

/// Requests waiting for a free slot or a connection, oldest first. A request
/// whose deadline passes while it waits leaves a hole (`None`) that is skipped.
#[derive(Default)]
struct Queue {
    entries: VecDeque<Option<Box<Submitted>>>,
    /// Sequence number of `entries[0]`.
    head: u64,
    /// Deadlines of requests that had to wait, earliest first. Stale once the
    /// request left; requests sent at once never enter it (the hot path).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Requests numbered below this have their deadline in `deadlines`.
    scheduled: u64,
}

impl Queue {
    fn push(&mut self, submitted: Box<Submitted>) {
        self.entries.push_back(Some(submitted));
    }

    fn pop(&mut self) -> Option<Box<Submitted>> {
        while let Some(entry) = self.entries.pop_front() {
            self.head += 1;
            if entry.is_some() {
                return entry;
            }
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Puts the deadlines of the requests still waiting on the timer.
    fn schedule(&mut self) {
        let end = self.head + self.entries.len() as u64;
        for seq in self.scheduled.max(self.head)..end {
            if let Some(Some(waiting)) = self.entries.get((seq - self.head) as usize) {
                self.deadlines.push(Reverse((waiting.deadline, seq)));
            }
        }
        self.scheduled = end;
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((deadline, _))| *deadline)
    }

    /// Takes out the requests whose deadline has passed.
    fn expire(&mut self, now: Instant) -> Vec<Box<Submitted>> {
        let mut expired = Vec::new();
        while let Some(&Reverse((deadline, seq))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let slot = seq.checked_sub(self.head).and_then(|i| self.entries.get_mut(i as usize));
            if let Some(waiting) = slot.and_then(Option::take) {
                expired.push(waiting);
            }
        }
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.head += 1;
        }
        expired
    }

    fn drain(&mut self) -> impl Iterator<Item = Box<Submitted>> + '_ {
        self.deadlines.clear();
        self.head += self.entries.len() as u64;
        self.entries.drain(..).flatten()
    }
}

struct Connection {
    connector: Connector,
    config: Arc<ClientConfig>,
    stats: Arc<Stats>,
    stream: Option<BoxStream>,
    /// The current connection has carried a reply: if it breaks, reconnect at once.
    proven: bool,
    /// A connection attempt under way; requests wait in the queue meanwhile.
    connecting: Option<ConnectFuture>,
    /// `Client::connect` calls waiting for the outcome of the next attempt.
    connect_waiters: Vec<oneshot::Sender<Result<()>>>,
    read_buf: BytesMut,
    /// Room made free before each read: doubles while reads fill it, so busy links read in few syscalls.
    read_chunk: usize,
    write_buf: Vec<u8>,
    queue: Queue,
    in_flight: HashMap<u16, Pending>,
    next_id: u16,
    backoff: Backoff,
    /// Earliest time the next connect attempt may start, after a failed one or a dropped link.
    retry_at: Option<Instant>,
    /// Why the link last failed: requests are told this while reconnecting is backed off.
    last_error: Option<Error>,
    /// Serial lines: the next frame may start only after the line has been silent this long.
    line_quiet_at: Instant,
    /// A serial line after a timeout: input is discarded until the late reply has
    /// passed or the line has been silent for the late-reply window.
    draining: bool,
}

impl Connection {
    fn new(connector: Connector, config: Arc<ClientConfig>, stats: Arc<Stats>) -> Self {
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        Connection {
            connector,
            config,
            stats,
            stream: None,
            proven: false,
            connecting: None,
            connect_waiters: Vec::new(),
            // Idle connections are common (gateways hold thousands): buffers start empty and grow with traffic.
            read_buf: BytesMut::new(),
            read_chunk: MIN_READ_CHUNK,
            write_buf: Vec::new(),
            queue: Queue::default(),
            in_flight: HashMap::new(),
            next_id: 0,
            backoff,
            retry_at: None,
            last_error: None,
            line_quiet_at: Instant::now(),
            draining: false,
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
            self.pump(Instant::now());
            self.flush().await;
            let deadline = self.next_deadline();
            let reading = self.stream.is_some();
            let connecting = self.connecting.is_some();
            // Serial lines wait for a quiet line before the next frame; replies keep being read meanwhile.
            let quiet_at = self.line_quiet_at;
            let wake_when_quiet = (self.draining || !self.queue.is_empty()) && Instant::now() < quiet_at;
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    self.accept(command);
                    // Take what is already queued so one write carries many requests.
                    while let Ok(command) = commands.try_recv() {
                        self.accept(command);
                    }
                },
                read = read_some(&mut self.stream, &mut self.read_buf, &mut self.read_chunk), if reading => match read {
                    Ok(0) => self.drop_connection(Error::conn_reset("the server closed the connection"), true),
                    Ok(_) if self.draining => self.drain_late_reply(),
                    Ok(_) => {
                        self.line_quiet_at = Instant::now() + self.config.inter_frame_delay;
                        self.dispatch_replies();
                    }
                    Err(e) => self.drop_connection(Error::conn_reset(format!("connection lost: {e}")), true),
                },
                attempt = finish_connect(&mut self.connecting), if connecting => self.connected(attempt),
                _ = sleep_until(deadline), if deadline.is_some() => self.expire(),
                _ = tokio::time::sleep_until(quiet_at), if wake_when_quiet => {}
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let in_flight = self.in_flight.values().map(|p| p.deadline).min();
        match (in_flight, self.queue.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn accept(&mut self, command: Command) {
        match command {
            Command::Connect { reply } if self.stream.is_some() => {
                let _ = reply.send(Ok(()));
            }
            Command::Connect { reply } => self.connect_waiters.push(reply),
            Command::Request(submitted) => self.queue.push(submitted),
        }
    }

    /// Moves waiting requests onto the wire as far as slots and the line allow,
    /// and starts a connection attempt when requests wait for one.
    fn pump(&mut self, now: Instant) {
        if self.stream.is_none() {
            let wanted = !self.queue.is_empty() || !self.connect_waiters.is_empty();
            if wanted && self.connecting.is_none() {
                match self.retry_at {
                    Some(at) if at > now => {
                        // Reconnecting is backed off: fail fast with the real cause rather than wait.
                        let mut error = self.last_error.clone().unwrap_or_else(|| Error::conn_refused("not connected"));
                        error.message = format!(
                            "{} (reconnecting is backed off for another {} ms)",
                            error.message,
                            (at - now).as_millis()
                        );
                        self.fail_waiting(&error);
                    }
                    _ => self.start_connect(),
                }
            }
        } else {
            if self.draining && now >= self.line_quiet_at {
                self.draining = false;
            }
            while !self.draining && self.in_flight.len() < self.config.max_in_flight && now >= self.line_quiet_at {
                let Some(submitted) = self.queue.pop() else { break };
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.start(*submitted, now);
            }
        }
        self.queue.schedule();
    }

    /// Encodes one request into the write buffer and puts it in flight.
    fn start(&mut self, submitted: Submitted, now: Instant) {
        let Submitted { unit, op, deadline, reply } = submitted;
        if deadline <= now {
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(Err(queued_too_long(unit, &op)));
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

    async fn flush(&mut self) {
        if self.write_buf.is_empty() {
            return;
        }
        let silence = self.config.inter_frame_delay;
        // A peer that stops reading must not block this task past the requests' deadlines.
        let limit = self.next_deadline().unwrap_or_else(|| Instant::now() + self.config.request_timeout);
        let Some(stream) = self.stream.as_mut() else { return };
        let result = tokio::time::timeout_at(limit, stream.write_all(&self.write_buf)).await;
        self.write_buf.clear();
        self.line_quiet_at = Instant::now() + silence;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.drop_connection(Error::conn_reset(format!("write failed: {e}")), true),
            Err(_) => self.drop_connection(Error::timeout("the device stopped reading requests"), true),
        }
    }

    fn start_connect(&mut self) {
        let attempt = (self.connector)();
        let limit = self.config.connect_timeout;
        self.connecting = Some(Box::pin(async move {
            tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or_else(|_| Err(Error::timeout(format!("connect timed out after {} ms", limit.as_millis()))))
        }));
    }

    fn connected(&mut self, attempt: Result<BoxStream>) {
        self.connecting = None;
        match attempt {
            Ok(stream) => {
                self.stream = Some(stream);
                self.proven = false;
                self.read_buf.clear();
                self.retry_at = None;
                self.last_error = None;
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                for waiter in self.connect_waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                self.last_error = Some(e.clone());
                // Everything waiting was waiting for this attempt.
                self.fail_waiting(&e);
            }
        }
    }

    /// Fails every queued request and connect waiter with `error`.
    fn fail_waiting(&mut self, error: &Error) {
        for waiter in self.connect_waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
        for waiting in self.queue.drain() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            let _ = waiting.reply.send(Err(error.clone()));
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
                    // The TCP stream can no longer be trusted to be in step: start a fresh one.
                    self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                    self.drop_connection(e, false);
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
                    self.proven = true;
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

    /// A serial line after a timeout: drops what arrives until one whole frame
    /// (the late reply) has passed; each byte restarts the silence window.
    fn drain_late_reply(&mut self) {
        let now = Instant::now();
        let Resync::Drain { late_reply_window } = self.config.resync else { return };
        self.line_quiet_at = now + late_reply_window;
        let whole_frame = match rtu::response_frame_len(&self.read_buf) {
            Ok(Some(len)) if len <= self.read_buf.len() => rtu::decode_frame(&self.read_buf[..len]).is_ok(),
            Ok(_) => return, // part of a frame: keep reading
            Err(_) => false,
        };
        self.read_buf.clear();
        if whole_frame {
            self.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            self.draining = false;
            self.line_quiet_at = now + self.config.inter_frame_delay;
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<u16> = self.in_flight.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
        let timed_out_on_wire = !expired.is_empty();
        for id in expired {
            if let Some(pending) = self.in_flight.remove(&id) {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                let _ = pending.reply.send(Err(no_reply_in_time(pending.unit, pending.function)));
            }
        }
        for waiting in self.queue.expire(now) {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            let _ = waiting.reply.send(Err(queued_too_long(waiting.unit, &waiting.op)));
        }
        if timed_out_on_wire {
            self.resync_after_timeout(now);
        }
    }

    /// After a timeout a late reply may still come. RTU replies carry no id, so
    /// it could answer the next request: get the link back in step first. A TCP
    /// stream holding part of a frame is out of step too.
    fn resync_after_timeout(&mut self, now: Instant) {
        let out_of_step = match (self.config.framing, self.config.resync) {
            (Framing::Rtu, Resync::Drain { late_reply_window }) => {
                self.read_buf.clear();
                self.draining = true;
                self.line_quiet_at = self.line_quiet_at.max(now + late_reply_window);
                self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                return;
            }
            (Framing::Rtu, Resync::Reconnect) => "an RTU request timed out, so a late reply could answer the next one",
            (Framing::Tcp, _) if !self.read_buf.is_empty() => {
                "a request timed out with part of a frame buffered, so the reply stream is out of step"
            }
            (Framing::Tcp, _) => return,
        };
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        self.drop_connection(Error::conn_reset(format!("{out_of_step}; reconnecting")), false);
    }

    /// Ends the link and fails what is in flight. `back_off`: the link broke; if
    /// it never carried a reply, the next attempt waits. A link that worked (a
    /// device closing idle connections) or that we drop to resynchronise reconnects at once.
    fn drop_connection(&mut self, error: Error, back_off: bool) {
        if self.stream.is_some() {
            self.stats.disconnects.fetch_add(1, Ordering::Relaxed);
        }
        if back_off && self.stream.is_some() && !self.proven {
            // A device that accepts and at once hangs up must not draw a reconnect per request.
            self.retry_at = Some(Instant::now() + self.backoff.next_delay());
            self.last_error = Some(error.clone());
        }
        self.stream = None;
        self.draining = false;
        self.read_buf.clear();
        self.write_buf.clear();
        for (_, pending) in self.in_flight.drain() {
            let _ = pending.reply.send(Err(error.clone()));
        }
    }

    fn shutdown(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) {
        self.drop_connection(closed(), false);
        self.connecting = None;
        commands.close();
        while let Ok(command) = commands.try_recv() {
            self.accept(command);
        }
        self.fail_waiting(&closed());
    }
}

fn no_reply_in_time(unit: u8, function: u8) -> Error {
    let applied = if function::is_write(function) { "; the device may still have applied the write" } else { "" };
    Error::timeout(format!("no reply from unit {unit} to function {function} in time{applied}"))
}

fn queued_too_long(unit: u8, op: &Op) -> Error {
    let function = op.request().map(|r| r.function()).unwrap_or(0);
    Error::timeout(format!(
        "the request to unit {unit} (function {function}) timed out while waiting its turn; it was never sent"
    ))
}

async fn finish_connect(connecting: &mut Option<ConnectFuture>) -> Result<BoxStream> {
    match connecting {
        Some(attempt) => attempt.as_mut().await,
        None => std::future::pending().await,
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
