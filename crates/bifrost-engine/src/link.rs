//! One connection to a device as a state machine: requests wait in a bounded
//! queue (writes ahead of reads), go on the wire up to the in-flight window,
//! are matched to replies, expire on their own deadlines, and the link
//! reconnects with backoff. A circuit breaker fails calls fast while a device is
//! known to be down. No sockets and no clock live here: a driver feeds bytes and
//! `now`, writes what [`Link::outgoing`] holds and wakes at [`Wants::wake_at`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use bifrost_core::backoff::Backoff;
use bifrost_core::url::{DeviceUrl, MAX_MS};
use bifrost_core::{Error, ErrorCode, Result};
use bytes::{Bytes, BytesMut};

/// How one protocol frames requests and replies on a byte stream.
pub trait Framing {
    /// A request as it waits in the queue.
    type Request;
    /// A reply, split off the receive buffer without copying.
    type Reply;

    /// Ids a reply can carry: 0 when replies carry none, so requests go one at a
    /// time and a reply answers the one request on the wire.
    fn id_space(&self) -> u32;
    /// Whether a request changes the device (writes go ahead of queued reads,
    /// and a write that times out may still have been applied).
    fn is_write(request: &Self::Request) -> bool;
    /// Names a request in errors, e.g. `unit 1 (function 3)`.
    fn describe(request: &Self::Request) -> String;
    /// Appends the encoded request (with `id` when replies carry one); nothing is
    /// left appended on error. Returns whether a reply will come (a broadcast gets none).
    fn encode(&mut self, id: u32, request: &Self::Request, out: &mut Vec<u8>) -> Result<bool>;
    /// Length of the whole frame at the start of `buf`: `None` until enough bytes
    /// have come; an error when `buf` does not start with a frame.
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>>;
    /// Parses one whole frame into the id it carries (`None` without ids) and the
    /// reply; `Ok(None)` when the framing keeps the frame itself: a chunk of a reply
    /// still to be completed, or the answer to a request of its own (an OPC UA token renewal).
    fn parse(&mut self, frame: Bytes) -> Result<Option<(Option<u32>, Self::Reply)>>;
    /// Checks that `reply` answers `request` (for instance, that it comes from the unit asked).
    fn answers(request: &Self::Request, reply: &Self::Reply) -> Result<()>;
    /// The result of a request no reply will come to, once it is written.
    fn unanswered(request: &Self::Request) -> Self::Reply;
    /// Sets a fresh connection up before any call goes out on it, one exchange at
    /// a time: called with `None` once connected, then with the reply to each
    /// request it returned; `Ok(None)` when the connection is ready. Protocols
    /// with sessions keep what the replies carry (an EtherNet/IP session handle,
    /// an OPC UA secure channel). An error, or no reply within `connect-timeout`,
    /// fails the connection as a refused connect would. None by default.
    fn set_up(&mut self, _reply: Option<Self::Reply>) -> Result<Option<Self::Request>> {
        Ok(None)
    }

    /// Appends what a connection that was set up says as it is closed (an
    /// EtherNet/IP Forward Close and UnRegisterSession). Written once, as the
    /// device is closed, with no reply awaited. Nothing by default.
    fn farewell(&mut self, _out: &mut Vec<u8>) {}

    /// Whether a request that timed out means the connection's state on the
    /// device may be gone (an EtherNet/IP CIP connection the device dropped):
    /// the link then reconnects and sets up afresh. False by default.
    fn timeout_breaks_connection(&self) -> bool {
        false
    }

    /// How long a connection that is up may stay silent before [`Framing::keep_alive`]
    /// is sent on it; `None`: never. Queried often: keep it cheap.
    fn keep_alive_after(&self) -> Option<Duration> {
        None
    }

    /// Whether a request waits out an outage: while the circuit breaker is open
    /// it stays queued (until its deadline) for the next connection attempt,
    /// where other requests fail fast. False by default.
    fn outlasts_outages(_request: &Self::Request) -> bool {
        false
    }

    /// A request that keeps an idle connection (and what the device holds for it) alive;
    /// its answer proves the link, and a timeout counts as any timeout.
    fn keep_alive(&mut self) -> Option<Self::Request> {
        None
    }
}

/// Settings of one link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkConfig {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Silence kept between frames on a serial line (3.5 character times).
    pub inter_frame_delay: Duration,
    /// Requests accepted but not yet on the wire; one more fails at once with `EQUEUEFULL`.
    pub max_queued: usize,
    /// How a link whose replies carry no id gets back in step after a timeout.
    pub resync: Resync,
    /// Consecutive request timeouts, with no reply between them, that open the circuit breaker.
    pub breaker_threshold: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            request_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(3000),
            max_in_flight: 1,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            inter_frame_delay: Duration::ZERO,
            max_queued: 10_000,
            resync: Resync::Reconnect,
            breaker_threshold: 5,
        }
    }
}

/// Most requests one link may hold waiting (`max-queued`).
const MAX_QUEUED_LIMIT: usize = 1_000_000;

impl LinkConfig {
    /// The defaults, with the URL keys every protocol shares taken from `url`:
    /// `request-timeout`, `connect-timeout` (milliseconds), `max-in-flight`,
    /// `max-queued` and `breaker-threshold`. A value out of range is `EINVAL`.
    pub fn from_url(url: &mut DeviceUrl) -> Result<LinkConfig> {
        Self::from_url_over(url, LinkConfig::default())
    }

    /// As [`LinkConfig::from_url`], over a protocol's own defaults.
    pub fn from_url_over(url: &mut DeviceUrl, defaults: LinkConfig) -> Result<LinkConfig> {
        let mut link = defaults;
        if let Some(ms) = url.take_in("request-timeout", 1..=MAX_MS)? {
            link.request_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = url.take_in("connect-timeout", 1..=MAX_MS)? {
            link.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(v) = url.take_in("max-in-flight", 1..=65535)? {
            link.max_in_flight = v;
        }
        if let Some(v) = url.take_in("max-queued", 1..=MAX_QUEUED_LIMIT)? {
            link.max_queued = v;
        }
        if let Some(v) = url.take_in("breaker-threshold", 1..=1_000_000)? {
            link.breaker_threshold = v;
        }
        Ok(link)
    }

    /// One copy per distinct set of settings, shared: a gateway's thousands of
    /// devices opened with the same options hold one between them.
    fn shared(self) -> Arc<LinkConfig> {
        static SHARED: LazyLock<Mutex<HashMap<LinkConfig, Weak<LinkConfig>>>> = LazyLock::new(Default::default);
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = shared.get(&self).and_then(Weak::upgrade) {
            return config;
        }
        if shared.len() >= 64 {
            shared.retain(|_, config| config.strong_count() > 0);
        }
        let config = Arc::new(self.clone());
        shared.insert(self, Arc::downgrade(&config));
        config
    }

    /// The settings devices sharing a link must agree on, as URL keys.
    pub fn describe(&self) -> String {
        format!(
            "request-timeout={}ms, connect-timeout={}ms, max-in-flight={}, max-queued={}, breaker-threshold={}",
            self.request_timeout.as_millis(),
            self.connect_timeout.as_millis(),
            self.max_in_flight,
            self.max_queued,
            self.breaker_threshold
        )
    }
}

/// Replies without ids: after a timeout a late reply could be taken as the answer
/// to the next request. How the link gets back in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resync {
    /// Drop the connection and open a new one: the late reply goes with the old socket.
    Reconnect,
    /// Serial lines: discard input until the late reply has passed or the line has
    /// been silent this long, before the next request goes out.
    Drain { late_reply_window: Duration },
}

/// Counters of one link, readable from any thread.
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
    /// Times the circuit breaker opened.
    pub breaker_opens: AtomicU64,
    /// The breaker opened and no reply has proven the device back yet (failover reads this).
    pub breaker_open: AtomicBool,
    /// Requests accepted but not yet on the wire; never more than `max_queued`.
    pub queued: AtomicUsize,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the driver must do after feeding the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wants {
    /// Close the socket: the link dropped the connection (checked before `connect`).
    pub disconnect: bool,
    /// Open a connection, then call [`Link::connected`] or [`Link::connect_failed`].
    pub connect: bool,
    /// Call [`Link::poll`] again at this time, if nothing happens before.
    pub wake_at: Option<Instant>,
}

struct Waiting<R, T> {
    request: R,
    /// The whole call's deadline: time spent waiting counts.
    deadline: Instant,
    token: T,
}

/// One lane of waiting requests, oldest first. A request whose deadline passes
/// while it waits leaves a hole (`None`) that is skipped.
struct Lane<R, T> {
    entries: VecDeque<Option<Waiting<R, T>>>,
    /// Sequence number of `entries[0]`.
    head: u64,
    /// Requests numbered below this have their deadline in the queue's heap.
    scheduled: u64,
}

impl<R, T> Default for Lane<R, T> {
    fn default() -> Self {
        Lane { entries: VecDeque::new(), head: 0, scheduled: 0 }
    }
}

impl<R, T> Lane<R, T> {
    fn pop(&mut self) -> Option<Waiting<R, T>> {
        while let Some(entry) = self.entries.pop_front() {
            self.head += 1;
            if entry.is_some() {
                return entry;
            }
        }
        None
    }

    fn trim(&mut self) {
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.head += 1;
        }
    }
}

const WRITES: usize = 0;
const READS: usize = 1;

/// Waiting requests: writes go ahead of queued reads. Deadlines of requests that
/// had to wait sit in one heap; requests sent at once never enter it (the hot path).
struct Queue<R, T> {
    lanes: [Lane<R, T>; 2],
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    len: usize,
}

impl<R, T> Default for Queue<R, T> {
    fn default() -> Self {
        Queue { lanes: [Lane::default(), Lane::default()], deadlines: BinaryHeap::new(), len: 0 }
    }
}

impl<R, T> Queue<R, T> {
    fn push(&mut self, lane: usize, waiting: Waiting<R, T>) {
        self.lanes[lane].entries.push_back(Some(waiting));
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Waiting<R, T>> {
        let popped = self.lanes[WRITES].pop().or_else(|| self.lanes[READS].pop());
        if popped.is_some() {
            self.len -= 1;
        }
        popped
    }

    /// Puts the deadlines of the requests still waiting on the heap.
    fn schedule(&mut self) {
        for (index, lane) in self.lanes.iter_mut().enumerate() {
            let end = lane.head + lane.entries.len() as u64;
            for seq in lane.scheduled.max(lane.head)..end {
                if let Some(Some(waiting)) = lane.entries.get((seq - lane.head) as usize) {
                    self.deadlines.push(Reverse((waiting.deadline, index, seq)));
                }
            }
            lane.scheduled = end;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((deadline, _, _))| *deadline)
    }

    /// Takes out the requests whose deadline has passed.
    fn expire(&mut self, now: Instant, expired: &mut Vec<Waiting<R, T>>) {
        while let Some(&Reverse((deadline, index, seq))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let lane = &mut self.lanes[index];
            let slot = seq.checked_sub(lane.head).and_then(|i| lane.entries.get_mut(i as usize));
            if let Some(waiting) = slot.and_then(Option::take) {
                self.len -= 1;
                expired.push(waiting);
            }
        }
        for lane in &mut self.lanes {
            lane.trim();
        }
    }

    fn drain(&mut self) -> impl Iterator<Item = Waiting<R, T>> + '_ {
        self.deadlines.clear();
        self.len = 0;
        self.lanes.iter_mut().flat_map(|lane| {
            lane.head += lane.entries.len() as u64;
            lane.entries.drain(..).flatten()
        })
    }
}

struct InFlight<R, T> {
    deadline: Instant,
    request: R,
    origin: Origin<T>,
}

/// Who a request on the wire is for.
enum Origin<T> {
    /// A caller's, found again by its token.
    Call(T),
    /// A step of the connection's set-up.
    SetUp,
    /// The framing's keep-alive on an idle connection: its answer only proves the link.
    KeepAlive,
}

/// Hashes the link's own request ids: a counter, not chosen by the device, so no
/// seeded hash is needed (and the table costs no hasher state per link).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.write_u64(u64::from(id));
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing spreads a counter over the high bits the table reads.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    Down,
    Connecting,
    /// Connected; the protocol's set-up exchange is under way, calls wait.
    SettingUp,
    /// `proven`: the connection has carried a reply, so if it breaks, reconnect at once.
    Up {
        proven: bool,
    },
}

/// Why calls fail fast, and until when.
struct Breaker {
    open_until: Option<Instant>,
    /// The cause calls are told while the breaker is open.
    cause: Option<Error>,
    /// Request timeouts since the last reply.
    timeouts: u32,
    /// The breaker's wait is over but no reply has proven the device back:
    /// one request at a time goes out as the probe.
    half_open: bool,
}

/// One connection's state machine. `T` is what the driver attaches to each
/// request to find its caller when it completes.
pub struct Link<F: Framing, T> {
    framing: F,
    config: Arc<LinkConfig>,
    stats: Arc<Stats>,
    connection: Connection,
    /// Set when the link drops a connection; the driver closes the socket.
    dropped: bool,
    queue: Queue<F::Request, T>,
    in_flight: HashMap<u32, InFlight<F::Request, T>, BuildHasherDefault<IdHasher>>,
    /// No request in flight has an earlier deadline (a bound, exact after each expiry
    /// scan): polls find nothing due without walking the window.
    in_flight_due: Option<Instant>,
    next_id: u32,
    read_buf: BytesMut,
    /// Encoded requests not yet written, and how much of them the driver has written.
    write_buf: Vec<u8>,
    written: usize,
    backoff: Backoff,
    breaker: Breaker,
    /// Serial lines: the next frame may start only after the line has been silent this long.
    line_quiet_at: Instant,
    /// After a timeout on a serial line: input is discarded until the late reply has
    /// passed or the line has been silent for the late-reply window.
    draining: bool,
    /// The first connection is wanted even with nothing queued (the device is being opened).
    opening: bool,
    closed: bool,
    completed: Vec<(T, Result<F::Reply>)>,
    /// When the last request went out: an idle connection keeps itself alive from it.
    last_sent: Instant,
}

impl<F: Framing, T> Link<F, T> {
    pub fn new(framing: F, mut config: LinkConfig, now: Instant) -> Self {
        config.max_in_flight = if framing.id_space() == 0 { 1 } else { config.max_in_flight.clamp(1, 65535) };
        config.max_queued = config.max_queued.max(1);
        config.breaker_threshold = config.breaker_threshold.max(1);
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        Link {
            framing,
            config: config.shared(),
            stats: Arc::new(Stats::default()),
            connection: Connection::Down,
            dropped: false,
            queue: Queue::default(),
            in_flight: HashMap::default(),
            in_flight_due: None,
            next_id: 0,
            // Idle links are common (gateways hold thousands): buffers start empty and grow with traffic.
            read_buf: BytesMut::new(),
            write_buf: Vec::new(),
            written: 0,
            backoff,
            breaker: Breaker { open_until: None, cause: None, timeouts: 0, half_open: false },
            line_quiet_at: now,
            draining: false,
            opening: true,
            closed: false,
            completed: Vec::new(),
            last_sent: now,
        }
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Requests waiting or in flight: while there are any, the driver keeps its process alive.
    pub fn is_busy(&self) -> bool {
        self.queue.len > 0
            || !self.in_flight.is_empty()
            || matches!(self.connection, Connection::Connecting | Connection::SettingUp)
    }

    /// How the first connection went, once that is known: ready for calls, or
    /// the cause it failed with (a refused connect, a failed set-up). Drivers
    /// settle their `open` on it.
    pub fn opened(&self) -> Option<Result<()>> {
        match self.connection {
            Connection::Up { .. } => Some(Ok(())),
            Connection::Down if !self.opening => Some(Err(self.breaker.cause.clone().unwrap_or_else(closed))),
            _ => None,
        }
    }

    /// Requests on the wire, waiting for their replies.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the driver's socket is connected.
    fn socket_up(&self) -> bool {
        matches!(self.connection, Connection::SettingUp | Connection::Up { .. })
    }

    /// Accepts a request. It fails at once, handing its token back, when the link
    /// is closed, the breaker is open or `max_queued` requests already wait.
    pub fn submit(
        &mut self,
        now: Instant,
        request: F::Request,
        deadline: Instant,
        token: T,
    ) -> std::result::Result<(), (T, Error)> {
        if self.closed {
            return Err((token, closed()));
        }
        if let Some(error) = self.breaker_error(now).filter(|_| !F::outlasts_outages(&request)) {
            return Err((token, error));
        }
        let limit = self.config.max_queued;
        if self.queue.len >= limit {
            let message = format!("{limit} requests are already waiting for this device (max-queued={limit})");
            return Err((token, Error::new(ErrorCode::QueueFull, message)));
        }
        let lane = if F::is_write(&request) { WRITES } else { READS };
        self.queue.push(lane, Waiting { request, deadline, token });
        self.stats.queued.store(self.queue.len, Ordering::Relaxed);
        Ok(())
    }

    /// While the breaker is open: the error calls fail with at once.
    fn breaker_error(&self, now: Instant) -> Option<Error> {
        let until = self.breaker.open_until.filter(|&until| until > now)?;
        let mut error = self.breaker.cause.clone().unwrap_or_else(|| Error::conn_refused("not connected"));
        let left = (until - now).as_millis();
        error.message = format!("{} (backed off: calls fail fast for another {left} ms)", error.message);
        Some(error)
    }

    /// Moves the link on: expires what is due, puts waiting requests on the wire
    /// as far as the window and the line allow, and says what the driver must do.
    pub fn poll(&mut self, now: Instant) -> Wants {
        self.expire(now);
        let mut wants = Wants::default();
        match self.connection {
            Connection::Down if !self.closed && (self.queue.len > 0 || self.opening) => {
                if let Some(error) = self.breaker_error(now) {
                    self.fail_waiting(&error, false);
                } else {
                    self.connection = Connection::Connecting;
                    wants.connect = true;
                }
            }
            Connection::Up { .. } => self.pump(now),
            _ => {}
        }
        self.queue.schedule();
        self.stats.queued.store(self.queue.len, Ordering::Relaxed);
        wants.disconnect = std::mem::take(&mut self.dropped);
        wants.wake_at = self.wake_at(now);
        wants
    }

    fn pump(&mut self, now: Instant) {
        if self.draining && now >= self.line_quiet_at {
            self.draining = false;
        }
        // Half open: the one probe request must come back before others follow.
        let window = if self.breaker.half_open { 1 } else { self.config.max_in_flight };
        while !self.draining && self.in_flight.len() < window && now >= self.line_quiet_at {
            let Some(waiting) = self.queue.pop() else { break };
            self.start(waiting, now);
        }
        if self.keep_alive_at().is_some_and(|at| now >= at) {
            match self.framing.keep_alive() {
                Some(request) => self.send(request, now + self.config.request_timeout, Origin::KeepAlive, now),
                // Nothing to say after all: wait another interval rather than ask again at once.
                None => self.last_sent = now,
            }
        }
    }

    /// When an idle connection that is up must say something to stay up.
    fn keep_alive_at(&self) -> Option<Instant> {
        let idle = matches!(self.connection, Connection::Up { .. }) && self.in_flight.is_empty() && self.queue.len == 0;
        idle.then(|| self.framing.keep_alive_after()).flatten().map(|after| self.last_sent + after)
    }

    /// Puts one waiting call on the wire, unless it waited past its deadline.
    fn start(&mut self, waiting: Waiting<F::Request, T>, now: Instant) {
        let Waiting { request, deadline, token } = waiting;
        if deadline <= now {
            bump(&self.stats.timeouts);
            self.completed.push((token, Err(queued_too_long::<F>(&request))));
            return;
        }
        self.send(request, deadline, Origin::Call(token), now);
    }

    /// Encodes one request into the write buffer and puts it in flight.
    fn send(&mut self, request: F::Request, deadline: Instant, origin: Origin<T>, now: Instant) {
        let space = self.framing.id_space();
        // Skip ids still in flight: after the id wraps, a slow request must keep its own.
        while space > 0 && self.in_flight.contains_key(&self.next_id) {
            self.next_id = (self.next_id + 1) % space;
        }
        let id = self.next_id;
        match self.framing.encode(id, &request, &mut self.write_buf) {
            Err(e) => self.finish(origin, Err(e), now),
            Ok(expects_reply) => {
                bump(&self.stats.requests);
                self.last_sent = now;
                if space > 0 {
                    self.next_id = (self.next_id + 1) % space;
                }
                if expects_reply {
                    self.in_flight.insert(id, InFlight { deadline, request, origin });
                    self.in_flight_due = self.in_flight_due.min(Some(deadline)).or(Some(deadline));
                } else {
                    // A broadcast: no device answers, so nothing waits.
                    self.finish(origin, Ok(F::unanswered(&request)), now);
                }
            }
        }
    }

    /// A request is done: a call's result goes to its caller, a set-up step's to the set-up.
    fn finish(&mut self, origin: Origin<T>, result: Result<F::Reply>, now: Instant) {
        match (origin, result) {
            (Origin::Call(token), result) => self.completed.push((token, result)),
            (Origin::SetUp, Ok(reply)) => self.set_up(now, Some(reply)),
            (Origin::SetUp, Err(error)) => self.set_up_failed(now, error),
            // A keep-alive the device refused still shows the link works; one that timed out is handled as any timeout.
            (Origin::KeepAlive, _) => {}
        }
    }

    /// Takes the set-up one step on: sends its next request, or opens the link to calls.
    fn set_up(&mut self, now: Instant, reply: Option<F::Reply>) {
        let answered = reply.is_some();
        match self.framing.set_up(reply) {
            Ok(Some(request)) => {
                self.connection = Connection::SettingUp;
                self.send(request, now + self.config.connect_timeout, Origin::SetUp, now);
            }
            // Set-up replies prove the link; a protocol without set-up has proven nothing yet.
            Ok(None) => self.connection = Connection::Up { proven: answered },
            Err(error) => self.set_up_failed(now, error),
        }
    }

    /// The set-up failed: as a refused connect, the breaker opens and waiting calls fail with the cause.
    fn set_up_failed(&mut self, now: Instant, error: Error) {
        bump(&self.stats.resyncs);
        self.drop_connection(error.clone(), false);
        self.connect_failed(now, error);
    }

    fn wake_at(&self, now: Instant) -> Option<Instant> {
        let in_flight = self.in_flight_due.filter(|_| !self.in_flight.is_empty());
        let waiting = self.queue.next_deadline();
        let quiet = ((self.draining || self.queue.len > 0) && now < self.line_quiet_at).then_some(self.line_quiet_at);
        // Requests that outlast an outage wait for the breaker to let the next attempt through.
        let retry = self.breaker.open_until.filter(|_| self.connection == Connection::Down && self.queue.len > 0);
        [in_flight, waiting, quiet, retry, self.keep_alive_at()].into_iter().flatten().min()
    }

    /// The bytes the driver must write, in order.
    pub fn outgoing(&self) -> &[u8] {
        &self.write_buf[self.written..]
    }

    /// The driver wrote `n` bytes of [`Link::outgoing`].
    pub fn wrote(&mut self, n: usize, now: Instant) {
        self.written += n;
        if self.written >= self.write_buf.len() {
            self.write_buf.clear();
            self.written = 0;
        }
        self.line_quiet_at = now + self.config.inter_frame_delay;
    }

    /// The connection the driver opened is up; the protocol's set-up starts on it.
    pub fn connected(&mut self, now: Instant) {
        if self.closed {
            self.dropped = true;
            return;
        }
        self.connection = Connection::Up { proven: false };
        self.opening = false;
        self.read_buf.clear();
        self.write_buf.clear();
        self.written = 0;
        bump(&self.stats.connects);
        self.set_up(now, None);
    }

    /// The connection attempt failed: the breaker opens, and whatever waited for
    /// the attempt fails with its cause.
    pub fn connect_failed(&mut self, now: Instant, error: Error) {
        if self.connection == Connection::Connecting {
            self.connection = Connection::Down;
        }
        self.open_breaker(now, error.clone());
        self.fail_waiting(&error, false);
    }

    /// Fails every waiting request with `error`, but for those that outlast
    /// outages, unless `all`: they wait for the next connection attempt.
    fn fail_waiting(&mut self, error: &Error, all: bool) {
        self.opening = false;
        let waiting: Vec<_> = self.queue.drain().collect();
        for waiting in waiting {
            if !all && F::outlasts_outages(&waiting.request) {
                let lane = if F::is_write(&waiting.request) { WRITES } else { READS };
                self.queue.push(lane, waiting);
            } else {
                self.completed.push((waiting.token, Err(error.clone())));
            }
        }
    }

    fn open_breaker(&mut self, now: Instant, cause: Error) {
        bump(&self.stats.breaker_opens);
        self.stats.breaker_open.store(true, Ordering::Relaxed);
        self.breaker.open_until = Some(now + self.backoff.next_delay());
        self.breaker.cause = Some(cause);
        self.breaker.half_open = true;
        self.breaker.timeouts = 0;
    }

    /// The receive buffer: the driver appends what it reads, then calls [`Link::received`].
    pub fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// Bytes were appended to the receive buffer: hands every whole reply to its request.
    pub fn received(&mut self, now: Instant) {
        if !self.socket_up() {
            self.read_buf.clear();
            return;
        }
        if self.draining {
            self.drain_late_reply(now);
            return;
        }
        self.line_quiet_at = now + self.config.inter_frame_delay;
        loop {
            let frame = match self.framing.frame_len(&self.read_buf) {
                Ok(Some(len)) if len <= self.read_buf.len() => self.read_buf.split_to(len).freeze(),
                Ok(_) => return,
                Err(e) => return self.garbage(e, now),
            };
            match self.framing.parse(frame) {
                Ok(Some((id, reply))) => self.dispatch(id, reply, now),
                Ok(None) => {}
                Err(e) => return self.garbage(e, now),
            }
        }
    }

    fn dispatch(&mut self, id: Option<u32>, reply: F::Reply, now: Instant) {
        // Without ids the reply answers the one request on the wire.
        let key = id.or_else(|| self.in_flight.keys().next().copied());
        let Some(pending) = key.and_then(|key| self.in_flight.remove(&key)) else {
            bump(&self.stats.unmatched);
            return;
        };
        let result = F::answers(&pending.request, &reply).map(|()| reply);
        if result.is_ok() {
            // A reply proves the link works: the next break starts backing off afresh.
            self.backoff.reset();
            self.breaker = Breaker { open_until: None, cause: None, timeouts: 0, half_open: false };
            self.stats.breaker_open.store(false, Ordering::Relaxed);
            if let Connection::Up { proven } = &mut self.connection {
                *proven = true;
            }
        }
        self.finish(pending.origin, result, now);
    }

    /// Bytes that are not a frame. A stream with ids can no longer be trusted to be
    /// in step: start a fresh connection. Without ids (RTU) no frame boundary
    /// survives garbage: fail the request on the wire and start clean.
    fn garbage(&mut self, error: Error, now: Instant) {
        if self.connection == Connection::SettingUp {
            // Not the protocol at all: the set-up fails, as a refused connect would.
            return self.set_up_failed(now, error);
        }
        if self.framing.id_space() > 0 {
            bump(&self.stats.resyncs);
            self.drop_connection(error, false);
        } else {
            self.read_buf.clear();
            let failed: Vec<_> = self.in_flight.drain().collect();
            for (_, pending) in failed {
                self.finish(pending.origin, Err(error.clone()), now);
            }
        }
    }

    /// A serial line after a timeout: drops what arrives until one whole frame
    /// (the late reply) has passed; each byte restarts the silence window.
    fn drain_late_reply(&mut self, now: Instant) {
        let Resync::Drain { late_reply_window } = self.config.resync else { return };
        self.line_quiet_at = now + late_reply_window;
        let whole_frame = match self.framing.frame_len(&self.read_buf) {
            Ok(Some(len)) if len <= self.read_buf.len() => {
                self.framing.parse(self.read_buf.split_to(len).freeze()).is_ok()
            }
            Ok(_) => return, // part of a frame: keep reading
            Err(_) => false,
        };
        self.read_buf.clear();
        if whole_frame {
            bump(&self.stats.unmatched);
            self.draining = false;
            self.line_quiet_at = now + self.config.inter_frame_delay;
        }
    }

    fn expire(&mut self, now: Instant) {
        let mut due = Vec::new();
        if self.in_flight_due.is_some_and(|bound| bound <= now) {
            due.extend(self.in_flight.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id));
            self.in_flight_due = self.in_flight.values().map(|p| p.deadline).filter(|&d| d > now).min();
        }
        if !due.is_empty() && self.write_buf.len() > self.written {
            // Requests are still unwritten: the device stopped reading, so nothing in flight will be answered.
            bump(&self.stats.resyncs);
            let stalled = Error::timeout("the device stopped reading requests; reconnecting");
            self.drop_connection(stalled, false);
            self.count_timeout(now);
            due.clear(); // failed with the connection
        }
        let mut timed_out_on_wire = false;
        for id in due {
            if let Some(pending) = self.in_flight.remove(&id) {
                bump(&self.stats.timeouts);
                timed_out_on_wire |= !matches!(pending.origin, Origin::SetUp);
                let error = match pending.origin {
                    Origin::SetUp => Error::timeout(format!(
                        "the device did not answer {} while setting the connection up (connect-timeout={} ms)",
                        F::describe(&pending.request),
                        self.config.connect_timeout.as_millis()
                    )),
                    _ => no_reply_in_time::<F>(&pending.request),
                };
                self.finish(pending.origin, Err(error), now);
            }
        }
        let mut expired = Vec::new();
        self.queue.expire(now, &mut expired);
        for waiting in expired {
            bump(&self.stats.timeouts);
            self.completed.push((waiting.token, Err(queued_too_long::<F>(&waiting.request))));
        }
        if timed_out_on_wire {
            self.after_timeout(now);
        }
    }

    /// After a timeout a late reply may still come. Without ids it could answer the
    /// next request, and a stream holding part of a frame is out of step: get the
    /// link back in step first. Timeouts in a row open the breaker.
    fn after_timeout(&mut self, now: Instant) {
        self.count_timeout(now);
        let out_of_step = match (self.framing.id_space(), self.config.resync) {
            (0, Resync::Drain { late_reply_window }) => {
                self.read_buf.clear();
                self.draining = true;
                self.line_quiet_at = self.line_quiet_at.max(now + late_reply_window);
                bump(&self.stats.resyncs);
                return;
            }
            (0, Resync::Reconnect) => "a request timed out, so a late reply could answer the next one",
            _ if !self.read_buf.is_empty() => {
                "a request timed out with part of a frame buffered, so the reply stream is out of step"
            }
            _ if self.framing.timeout_breaks_connection() => {
                "a request timed out, so the device may have dropped the connection's state"
            }
            _ => return,
        };
        bump(&self.stats.resyncs);
        self.drop_connection(Error::conn_reset(format!("{out_of_step}; reconnecting")), false);
    }

    /// Timeouts in a row, with no reply between them, open the breaker; so does one while half open.
    fn count_timeout(&mut self, now: Instant) {
        self.breaker.timeouts += 1;
        if self.breaker.half_open || self.breaker.timeouts >= self.config.breaker_threshold {
            let count = self.breaker.timeouts;
            let cause = Error::timeout(format!("the device did not answer {count} request(s) in a row"));
            self.open_breaker(now, cause.clone());
            // A device that let requests time out is not probed again sooner than a request could time out.
            let at_least = now + self.config.request_timeout;
            self.breaker.open_until = self.breaker.open_until.max(Some(at_least));
            self.fail_waiting(&cause, false);
        }
    }

    /// The driver's socket failed or the device closed it.
    pub fn lost(&mut self, now: Instant, error: Error) {
        let unproven = matches!(self.connection, Connection::SettingUp | Connection::Up { proven: false });
        if self.socket_up() {
            self.drop_connection(error.clone(), true);
            if unproven {
                // A device that accepts and at once hangs up must not draw a reconnect per request.
                self.open_breaker(now, error);
            }
        }
    }

    /// Ends the connection and fails what is in flight.
    fn drop_connection(&mut self, error: Error, by_peer: bool) {
        if self.socket_up() {
            bump(&self.stats.disconnects);
            self.dropped = !by_peer;
        }
        self.connection = Connection::Down;
        self.draining = false;
        self.read_buf.clear();
        self.write_buf.clear();
        self.written = 0;
        // Set-up steps end with their connection.
        for (_, pending) in self.in_flight.drain() {
            if let Origin::Call(token) = pending.origin {
                self.completed.push((token, Err(error.clone())));
            }
        }
    }

    /// The bytes to write as the device is closed: the framing's farewell, when the
    /// connection is up and set up. Call before [`Link::close`].
    pub fn farewell(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if matches!(self.connection, Connection::Up { .. }) {
            self.framing.farewell(&mut out);
        }
        out
    }

    /// Fails everything queued and in flight with `ECLOSED`; later submits fail too.
    pub fn close(&mut self) {
        self.drop_connection(closed(), false);
        self.closed = true;
        self.fail_waiting(&closed(), true);
        self.stats.queued.store(0, Ordering::Relaxed);
    }

    /// Requests that finished since the last call, with their results.
    pub fn take_completed(&mut self) -> std::vec::Drain<'_, (T, Result<F::Reply>)> {
        self.completed.drain(..)
    }

    pub fn has_completed(&self) -> bool {
        !self.completed.is_empty()
    }
}

fn closed() -> Error {
    Error::closed("the connection was closed")
}

fn no_reply_in_time<F: Framing>(request: &F::Request) -> Error {
    let applied = if F::is_write(request) { "; the device may still have applied the write" } else { "" };
    Error::timeout(format!("no reply from {} in time{applied}", F::describe(request)))
}

fn queued_too_long<F: Framing>(request: &F::Request) -> Error {
    Error::timeout(format!(
        "the request to {} timed out while waiting its turn; it was never sent",
        F::describe(request)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy framing: a request is `[id, op]`, a reply `[id, value]`; op 0xFF is a write.
    /// With a hello, each connection is set up first: the hello (op 0xEE) is answered
    /// with a session byte that every later request carries after its op (0 refuses it).
    #[derive(Default)]
    struct Toy {
        hello: bool,
        session: Option<u8>,
        /// Says op 0xAA after this long idle.
        keep_alive: Option<Duration>,
    }

    impl Framing for Toy {
        type Request = u8;
        type Reply = u8;
        fn id_space(&self) -> u32 {
            256
        }
        fn is_write(op: &u8) -> bool {
            *op == 0xFF
        }
        fn describe(op: &u8) -> String {
            format!("op {op}")
        }
        fn encode(&mut self, id: u32, op: &u8, out: &mut Vec<u8>) -> Result<bool> {
            out.extend_from_slice(&[id as u8, *op]);
            if self.hello {
                out.push(self.session.unwrap_or(0));
            }
            Ok(true)
        }
        fn frame_len(&self, _buf: &[u8]) -> Result<Option<usize>> {
            Ok(Some(2))
        }
        fn parse(&mut self, frame: Bytes) -> Result<Option<(Option<u32>, u8)>> {
            Ok(Some((Some(u32::from(frame[0])), frame[1])))
        }
        fn answers(_op: &u8, _reply: &u8) -> Result<()> {
            Ok(())
        }
        fn unanswered(_op: &u8) -> u8 {
            0
        }
        fn keep_alive_after(&self) -> Option<Duration> {
            self.keep_alive
        }
        fn keep_alive(&mut self) -> Option<u8> {
            Some(0xAA)
        }
        fn outlasts_outages(op: &u8) -> bool {
            *op == 0x77
        }
        fn set_up(&mut self, reply: Option<u8>) -> Result<Option<u8>> {
            match reply {
                _ if !self.hello => Ok(None),
                None => {
                    self.session = None;
                    Ok(Some(0xEE))
                }
                Some(0) => Err(Error::conn_refused("hello refused")),
                Some(session) => {
                    self.session = Some(session);
                    Ok(None)
                }
            }
        }
    }

    #[test]
    fn an_idle_connection_keeps_itself_alive_and_its_answers_go_to_no_caller() {
        let now = Instant::now();
        let every = Duration::from_secs(30);
        let toy = Toy { keep_alive: Some(every), ..Toy::default() };
        let mut link: Link<Toy, u32> = Link::new(toy, LinkConfig::default(), now);
        assert!(link.poll(now).connect);
        link.connected(now);
        assert_eq!(link.poll(now).wake_at, Some(now + every), "the alarm is set for the keep-alive");
        assert!(link.outgoing().is_empty());
        let later = now + every;
        link.poll(later);
        assert_eq!(link.outgoing(), &[0, 0xAA]);
        link.wrote(2, later);
        link.read_buf().extend_from_slice(&[0, 1]);
        link.received(later);
        link.poll(later);
        assert_eq!(link.take_completed().count(), 0, "nobody waits for a keep-alive");
        assert_eq!(link.stats().unmatched.load(Ordering::Relaxed), 0);
        // A call restarts the wait: the next keep-alive comes an interval after it.
        let call_at = later + Duration::from_secs(10);
        link.submit(call_at, 7, call_at + Duration::from_secs(5), 1).unwrap();
        link.poll(call_at);
        link.wrote(2, call_at);
        link.read_buf().extend_from_slice(&[1, 9]);
        link.received(call_at);
        assert_eq!(link.take_completed().map(|(t, r)| (t, r.unwrap())).collect::<Vec<_>>(), vec![(1, 9)]);
        assert_eq!(link.poll(call_at).wake_at, Some(call_at + every));
    }

    #[test]
    fn garbage_during_the_set_up_fails_it_as_a_refused_connect() {
        let now = Instant::now();
        let mut link: Link<Toy, u32> = Link::new(Toy { hello: true, ..Toy::default() }, LinkConfig::default(), now);
        assert!(link.poll(now).connect);
        link.connected(now);
        link.poll(now);
        assert_eq!(link.opened(), None, "setting up");
        link.garbage(Error::proto("not this protocol"), now);
        assert_eq!(link.opened(), Some(Err(Error::proto("not this protocol"))));
        assert!(link.poll(now).disconnect);
        assert_eq!(link.stats().breaker_opens.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn calls_wait_for_the_set_up_and_carry_what_it_learned() {
        let now = Instant::now();
        let mut link: Link<Toy, u32> = Link::new(Toy { hello: true, ..Toy::default() }, LinkConfig::default(), now);
        link.submit(now, 7, now + Duration::from_secs(5), 1).unwrap();
        assert!(link.poll(now).connect);
        link.connected(now);
        link.poll(now);
        assert_eq!(link.outgoing(), &[0, 0xEE, 0], "only the hello goes out");
        link.wrote(3, now);
        link.read_buf().extend_from_slice(&[0, 42]);
        link.received(now);
        link.poll(now);
        assert_eq!(link.outgoing(), &[1, 7, 42], "the call follows, with the session");
        link.wrote(3, now);
        link.read_buf().extend_from_slice(&[1, 9]);
        link.received(now);
        let got: Vec<_> = link.take_completed().map(|(t, r)| (t, r.unwrap())).collect();
        assert_eq!(got, vec![(1, 9)]);

        // A reconnect sets up afresh; a refused set-up fails what waits, as a refused connect would.
        link.lost(now, Error::conn_reset("gone"));
        link.submit(now, 8, now + Duration::from_secs(5), 2).unwrap();
        assert!(link.poll(now).connect);
        link.connected(now);
        link.poll(now);
        link.read_buf().extend_from_slice(&[2, 0]);
        link.received(now);
        let wants = link.poll(now);
        assert!(wants.disconnect);
        let (token, result) = link.take_completed().next().unwrap();
        assert_eq!((token, result.unwrap_err().message), (2, "hello refused".to_string()));
        assert_eq!(link.stats().breaker_opens.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_set_up_with_no_reply_fails_after_the_connect_timeout() {
        let now = Instant::now();
        let config = LinkConfig { connect_timeout: Duration::from_millis(100), ..LinkConfig::default() };
        let mut link: Link<Toy, u32> = Link::new(Toy { hello: true, ..Toy::default() }, config, now);
        link.submit(now, 7, now + Duration::from_secs(5), 1).unwrap();
        link.poll(now);
        link.connected(now);
        assert_eq!(link.poll(now).wake_at, Some(now + Duration::from_millis(100)));
        link.wrote(3, now);
        let wants = link.poll(now + Duration::from_millis(100));
        assert!(wants.disconnect);
        let (token, result) = link.take_completed().next().unwrap();
        let error = result.unwrap_err();
        assert_eq!((token, error.code), (1, ErrorCode::Timeout));
        assert!(error.message.contains("setting the connection up"), "{}", error.message);
    }

    fn up(config: LinkConfig) -> (Link<Toy, u32>, Instant) {
        let now = Instant::now();
        let mut link = Link::new(Toy::default(), config, now);
        assert!(link.poll(now).connect);
        link.connected(now);
        (link, now)
    }

    fn completed(link: &mut Link<Toy, u32>) -> Vec<(u32, Result<u8>)> {
        link.take_completed().collect()
    }

    #[test]
    fn writes_go_ahead_of_queued_reads_and_a_full_queue_refuses_at_once() {
        let (mut link, now) = up(LinkConfig { max_queued: 3, ..LinkConfig::default() });
        let deadline = now + Duration::from_secs(1);
        for (token, op) in [(1, 1u8), (2, 2), (3, 0xFF)] {
            link.submit(now, op, deadline, token).unwrap();
        }
        let (token, error) = link.submit(now, 4, deadline, 4).unwrap_err();
        assert_eq!((token, error.code), (4, ErrorCode::QueueFull));
        // One request on the wire at a time (the default window): the write goes first.
        link.poll(now);
        assert_eq!(link.outgoing(), &[0, 0xFF]);
        link.wrote(2, now);
        link.read_buf().extend_from_slice(&[0, 9]);
        link.received(now);
        assert_eq!(completed(&mut link).into_iter().map(|(t, r)| (t, r.unwrap())).collect::<Vec<_>>(), vec![(3, 9)]);
        link.poll(now);
        assert_eq!(link.outgoing(), &[1, 1]);
    }

    #[test]
    fn replies_are_matched_by_id_and_strangers_are_counted() {
        let (mut link, now) = up(LinkConfig { max_in_flight: 4, ..LinkConfig::default() });
        let deadline = now + Duration::from_secs(1);
        for token in 0..3 {
            link.submit(now, 10 + token as u8, deadline, token).unwrap();
        }
        link.poll(now);
        assert_eq!(link.outgoing(), &[0, 10, 1, 11, 2, 12]);
        // Out of order, with a reply nobody asked for in between.
        link.read_buf().extend_from_slice(&[2, 22, 7, 77, 0, 20, 1]);
        link.received(now);
        let got: Vec<_> = completed(&mut link).into_iter().map(|(t, r)| (t, r.unwrap())).collect();
        assert_eq!(got, vec![(2, 22), (0, 20)]);
        assert_eq!(link.stats().unmatched.load(Ordering::Relaxed), 1);
        link.read_buf().extend_from_slice(&[21]); // the rest of id 1's reply
        link.received(now);
        assert_eq!(completed(&mut link).into_iter().map(|(t, r)| (t, r.unwrap())).collect::<Vec<_>>(), vec![(1, 21)]);
    }

    #[test]
    fn a_waiting_request_expires_at_its_own_deadline_and_was_never_sent() {
        let (mut link, now) = up(LinkConfig::default());
        link.submit(now, 1, now + Duration::from_secs(5), 1).unwrap();
        link.submit(now, 2, now + Duration::from_millis(50), 2).unwrap();
        let wants = link.poll(now);
        assert_eq!(wants.wake_at, Some(now + Duration::from_millis(50)));
        link.poll(now + Duration::from_millis(50));
        let (token, result) = completed(&mut link).remove(0);
        assert_eq!(token, 2);
        let error = result.unwrap_err();
        assert_eq!(error.code, ErrorCode::Timeout);
        assert!(error.message.contains("never sent"), "{}", error.message);
    }

    #[test]
    fn the_breaker_fails_calls_fast_while_open_then_lets_one_probe_through() {
        let now = Instant::now();
        let config = LinkConfig { max_in_flight: 8, ..LinkConfig::default() };
        let mut link: Link<Toy, u32> = Link::new(Toy::default(), config, now);
        assert!(link.poll(now).connect);
        link.connect_failed(now, Error::conn_refused("refused"));
        let (_, error) = link.submit(now, 1, now + Duration::from_secs(1), 1).unwrap_err();
        assert_eq!(error.code, ErrorCode::ConnRefused);
        assert!(error.message.contains("backed off"), "{}", error.message);
        // Past the backoff (at most backoff-min): half open, the next call connects.
        let later = now + Duration::from_millis(200);
        link.submit(later, 1, later + Duration::from_secs(1), 1).unwrap();
        link.submit(later, 2, later + Duration::from_secs(1), 2).unwrap();
        assert!(link.poll(later).connect);
        link.connected(later);
        link.poll(later);
        assert_eq!(link.outgoing(), &[0, 1], "only the probe goes out while half open");
        link.wrote(2, later);
        link.read_buf().extend_from_slice(&[0, 5]);
        link.received(later);
        link.poll(later);
        assert_eq!(link.outgoing(), &[1, 2], "a reply closes the breaker");
    }

    #[test]
    fn a_request_that_outlasts_outages_waits_through_failed_attempts_for_the_next_connection() {
        let now = Instant::now();
        let mut link: Link<Toy, u32> = Link::new(Toy::default(), LinkConfig::default(), now);
        assert!(link.poll(now).connect);
        link.connect_failed(now, Error::conn_refused("refused"));
        assert!(link.submit(now, 1, now + Duration::from_secs(60), 1).is_err(), "others fail fast");
        link.submit(now, 0x77, now + Duration::from_secs(60), 2).unwrap();
        let wants = link.poll(now);
        assert!(!wants.connect && !link.has_completed(), "it waits while the breaker is open");
        let retry = wants.wake_at.expect("woken for the next attempt");
        assert!(retry > now && retry <= now + Duration::from_millis(200), "{:?}", retry - now);
        // The next attempt fails too: it still waits, for a longer backoff.
        assert!(link.poll(retry).connect);
        link.connect_failed(retry, Error::conn_refused("refused"));
        let wants = link.poll(retry);
        assert!(!link.has_completed());
        let again = wants.wake_at.unwrap();
        assert!(again > retry);
        assert!(link.poll(again).connect);
        link.connected(again);
        link.poll(again);
        assert_eq!(link.outgoing(), &[0, 0x77], "sent on the connection that came back");
        // One still waiting when the link closes fails with ECLOSED.
        let mut link: Link<Toy, u32> = Link::new(Toy::default(), LinkConfig::default(), now);
        link.poll(now);
        link.connect_failed(now, Error::conn_refused("refused"));
        link.submit(now, 0x77, now + Duration::from_secs(60), 3).unwrap();
        link.close();
        let completed: Vec<_> = link.take_completed().collect();
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0].1.as_ref().unwrap_err().code, ErrorCode::Closed);
    }
}
