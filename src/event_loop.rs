//! The event-loop driver: a TCP link driven on the JavaScript thread. A libuv
//! poll handle watches the socket and one libuv timer per thread wakes each link
//! at its next deadline; their callbacks read, feed the engine's session and settle the
//! promises of finished calls in place, so a request costs no thread hop.
//! An address given as numbers connects here too, without blocking; a host name
//! is resolved and connected on the runtime, which posts the socket back. All of
//! this driver's `unsafe` lives here.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ffi::{c_int, c_void};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bifrost_core::{Error, Result};
use bifrost_engine::runtime::{tcp_connect, within};
use bifrost_engine::{Completion, Driver, Framing, Job, Link, LinkConfig, Outcome, Session, Stats};
use napi::sys;

use crate::js::{at_end_of_job, callback_scope, js_env, ToJs};

// libuv is exported by the node binary; these resolve when the addon is loaded.
extern "C" {
    fn uv_poll_init_socket(lp: *mut c_void, handle: *mut c_void, socket: c_int) -> c_int;
    fn uv_poll_start(handle: *mut c_void, events: c_int, cb: unsafe extern "C" fn(*mut c_void, c_int, c_int)) -> c_int;
    fn uv_timer_init(lp: *mut c_void, handle: *mut c_void) -> c_int;
    fn uv_timer_start(handle: *mut c_void, cb: unsafe extern "C" fn(*mut c_void), timeout: u64, repeat: u64) -> c_int;
    fn uv_update_time(lp: *mut c_void);
    fn uv_close(handle: *mut c_void, cb: Option<unsafe extern "C" fn(*mut c_void)>);
    fn uv_unref(handle: *mut c_void);
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_handle_set_data(handle: *mut c_void, data: *mut c_void);
    fn uv_handle_get_data(handle: *const c_void) -> *mut c_void;
}
const UV_POLL: c_int = 8;
const UV_TIMER: c_int = 13;
const UV_READABLE: c_int = 1;
const UV_WRITABLE: c_int = 2;
/// The peer closed or reset the connection (EPOLLRDHUP): watched on a muted socket.
const UV_DISCONNECT: c_int = 4;

const MIN_READ_CHUNK: usize = 512;
const MAX_READ_CHUNK: usize = 16 * 1024;

/// A libuv handle we allocated; closed (and freed by libuv's close callback) on drop.
struct Handle(*mut c_void);

impl Handle {
    fn new(kind: c_int) -> Handle {
        // SAFETY: uv_handle_size gives the size of a handle of this kind; libuv initialises it.
        Handle(unsafe { libc::calloc(1, uv_handle_size(kind)) })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        unsafe extern "C" fn free_handle(handle: *mut c_void) {
            // SAFETY: the handle was allocated with calloc in `Handle::new` and libuv is done with it.
            unsafe { libc::free(handle) };
        }
        // SAFETY: an initialised handle on its loop's thread; libuv calls `free_handle` once closed.
        unsafe { uv_close(self.0, Some(free_handle)) };
    }
}

/// Fields drop in order: the poll handle is closed before the socket is.
struct Socket {
    poll: Handle,
    stream: TcpStream,
    /// Writable events are asked for only while written bytes are left over.
    watching_writable: bool,
    /// Readable events are not asked for: replies are read by a sweep (see `defer_reads`).
    muted: bool,
}

struct Inner<F: Framing> {
    this: Weak<RefCell<Inner<F>>>,
    session: Session<F>,
    addr: String,
    loop_: *mut c_void,
    socket: Option<Socket>,
    /// When the link wants to be woken.
    timer_at: Option<Instant>,
    /// When its entry in the thread's alarms fires, if it has one (never after `timer_at`).
    alarm_at: Option<Instant>,
    /// While `socket` is connecting: when the attempt gives up.
    connect_deadline: Option<Instant>,
    /// When the muted socket is read (see `defer_reads`).
    sweep_at: Option<Instant>,
    read_chunk: usize,
    /// A write waits for the end of the JavaScript job (see `sync_later`).
    flush_scheduled: bool,
    closed: bool,
    /// While `open` waits for the first connection.
    opening: Option<Box<PendingOpen<F>>>,
}

type OnOpen<F> = Box<dyn FnOnce(sys::napi_env, Result<EventLoopDriver<F>>)>;

struct PendingOpen<F: Framing> {
    /// Told the outcome.
    on_open: OnOpen<F>,
    /// The link holds itself meanwhile: nothing else does yet.
    held: Rc<RefCell<Inner<F>>>,
}

/// One link driven on the JavaScript thread.
pub struct EventLoopDriver<F: Framing> {
    inner: Rc<RefCell<Inner<F>>>,
    stats: Arc<Stats>,
}

/// A pointer to a driver that travels to the runtime and back to the JavaScript
/// thread while a connection attempt runs; it holds one strong count.
struct Travelling<F: Framing>(*const RefCell<Inner<F>>);

// SAFETY: the pointer is only turned back into an Rc on the JavaScript thread it came from.
unsafe impl<F: Framing> Send for Travelling<F> {}

impl<F: Framing> Travelling<F> {
    /// # Safety
    /// On the JavaScript thread the pointer came from; takes over its strong count.
    unsafe fn arrive(self) -> Rc<RefCell<Inner<F>>> {
        unsafe { Rc::from_raw(self.0) }
    }
}

impl<F: Framing + 'static> EventLoopDriver<F>
where
    F::Request: 'static,
    F::Reply: 'static,
{
    /// Starts the link and its first connection attempt; `on_open` gets the
    /// driver once connected, or the attempt's error. Call on the JavaScript thread of `env`.
    pub fn open(env: sys::napi_env, framing: F, config: LinkConfig, addr: String, on_open: OnOpen<F>) {
        let Some(loop_) = event_loop(env) else {
            return on_open(env, Err(Error::proto("cannot reach the event loop")));
        };
        let link = Link::new(framing, config, Instant::now());
        let inner = Rc::new_cyclic(|this| {
            RefCell::new(Inner {
                this: this.clone(),
                session: Session::new(link),
                addr,
                loop_,
                socket: None,
                timer_at: None,
                alarm_at: None,
                connect_deadline: None,
                sweep_at: None,
                read_chunk: MIN_READ_CHUNK,
                flush_scheduled: false,
                closed: false,
                opening: None,
            })
        });
        inner.borrow_mut().opening = Some(Box::new(PendingOpen { on_open, held: inner.clone() }));
        // The first poll asks for the connection.
        inner.borrow_mut().sync(Instant::now());
        settle_open(env, &inner); // an attempt that failed at once
    }
}

impl<F: Framing + 'static> Driver<F> for EventLoopDriver<F> {
    fn run(&self, job: Box<dyn Job<F>>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let mut inner = self.inner.borrow_mut();
        let now = Instant::now();
        // A call on a quiet link goes out at once; calls made while others are on
        // the wire wait for the end of this turn of JavaScript, to share one write.
        let quiet = inner.session.link().in_flight() == 0 && inner.session.outgoing().is_empty();
        let deferred = READS_DEFERRED_UNTIL.get();
        // A muted socket still watches for a close, so a connection the device closed
        // while idle was noticed when it closed, not by a read before every call.
        if deferred.is_none() {
            inner.unmute();
        }
        inner.session.run(now, job, timeout, done);
        if let Some(until) = deferred {
            inner.mute(until);
        }
        if quiet {
            inner.sync(now);
        } else {
            inner.sync_later(now);
        }
    }

    fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn close(&self, done: Box<dyn Completion>) {
        let mut inner = self.inner.borrow_mut();
        inner.closed = true;
        // The protocol's farewell, best effort: a socket that cannot take it now goes without.
        let farewell = inner.session.farewell();
        if let (Some(socket), false) = (inner.socket.as_ref(), farewell.is_empty()) {
            let _ = std::io::Write::write(&mut &socket.stream, &farewell);
        }
        inner.session.close(Instant::now());
        inner.socket = None;
        inner.set_timer(None);
        drop(inner);
        done.complete(Outcome::Closed);
    }
}

impl<F: Framing + 'static> Inner<F> {
    /// Moves the link on after any event: drops or opens the connection, writes, re-arms the timer.
    fn sync(&mut self, now: Instant) {
        loop {
            let wake_at = self.step(now);
            if self.flush(now) {
                // A muted socket with no sweep to come must not leave a reply unread.
                if self.sweep_at.is_none() && self.session.link().in_flight() > 0 {
                    self.unmute();
                }
                self.set_timer(wake_at);
                return;
            }
        }
    }

    /// As `sync`, but the write waits for the end of the JavaScript job now running
    /// (a microtask): calls made together, as continuations of one batch of replies are,
    /// go out in one write.
    fn sync_later(&mut self, now: Instant) {
        let wake_at = self.step(now);
        self.set_timer(wake_at);
        let has_output = self.socket.is_some() && !self.session.outgoing().is_empty();
        if !has_output || self.flush_scheduled {
            return;
        }
        match (js_env(), self.this.upgrade()) {
            (Some(env), Some(this)) => {
                self.flush_scheduled = true;
                WAITING.with(|waiting| waiting.borrow_mut().push(this));
                at_end_of_job(env, write_waiting);
            }
            _ => self.sync(now),
        }
    }

    /// Polls the link and opens or drops the connection as it asks; returns when to wake.
    fn step(&mut self, now: Instant) -> Option<Instant> {
        loop {
            let wants = self.session.poll(now);
            if wants.disconnect {
                self.socket = None;
                self.connect_deadline = None;
            }
            // An attempt that failed at once has failed what waited: poll again.
            if !wants.connect || self.start_connect(now) {
                return [wants.wake_at, self.connect_deadline, self.sweep_at].into_iter().flatten().min();
            }
        }
    }

    /// Writes what the link encoded, without blocking; returns false when the
    /// connection was lost (the link must be polled again).
    fn flush(&mut self, now: Instant) -> bool {
        let Some(socket) = self.socket.as_mut() else { return true };
        while !self.session.outgoing().is_empty() {
            match (&socket.stream).write(self.session.outgoing()) {
                Ok(n) => self.session.wrote(n, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !socket.watching_writable {
                        socket.watching_writable = true;
                        socket.muted = false;
                        watch(&socket.poll, UV_READABLE | UV_WRITABLE, on_poll::<F>);
                    }
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lose(now, Error::conn_reset(format!("write failed: {e}")));
                    return false;
                }
            }
        }
        if socket.watching_writable {
            socket.watching_writable = false;
            watch(&socket.poll, UV_READABLE, on_poll::<F>);
        }
        true
    }

    /// Stops watching for replies, but not for a close; replies are read by a sweep at
    /// `until`. A socket the sweep leaves idle stays muted, so a poll costs no change to the watch.
    fn mute(&mut self, until: Instant) {
        let Some(socket) = self.socket.as_mut() else { return };
        if socket.watching_writable || self.connect_deadline.is_some() {
            return;
        }
        if !socket.muted {
            socket.muted = true;
            watch(&socket.poll, UV_DISCONNECT, on_poll::<F>);
        }
        self.sweep_at = Some(until);
    }

    /// Watches for replies again, for a reply the sweep did not find or a call made outside a poller.
    fn unmute(&mut self) {
        if let Some(socket) = self.socket.as_mut().filter(|s| s.muted) {
            socket.muted = false;
            watch(&socket.poll, UV_READABLE, on_poll::<F>);
        }
    }

    /// The sweep of a muted socket: reads what came; `sync` then watches for what is still to come.
    fn sweep(&mut self, now: Instant) {
        self.sweep_at = None;
        self.read_ready(now);
    }

    fn lose(&mut self, now: Instant, error: Error) {
        self.socket = None;
        self.sweep_at = None;
        self.session.lost(now, error);
    }

    /// Asks to be woken at `at`. A later time than the alarm already filed waits
    /// for that alarm to fire, then is filed itself: a link has one alarm at most.
    fn set_timer(&mut self, at: Option<Instant>) {
        self.timer_at = at;
        if let Some(at) = at {
            if self.alarm_at.is_none_or(|filed| at < filed) {
                self.alarm_at = Some(at);
                file_alarm(self.loop_, at, self.this.clone());
            }
        }
    }

    /// Its alarm fired: a deadline is due, or the wake-up it wants is later now.
    fn alarm(&mut self, now: Instant) {
        self.alarm_at = None;
        match self.timer_at {
            Some(at) if at <= now => {
                self.timer_at = None;
                if self.connect_deadline.is_some_and(|deadline| deadline <= now) {
                    let limit = self.session.link().config().connect_timeout.as_millis();
                    self.connect_failed(now, Error::timeout(format!("connect timed out after {limit} ms")));
                } else if self.sweep_at.is_some_and(|at| at <= now) {
                    self.sweep(now);
                } else {
                    // libuv runs timers before it polls: a reply that came while JavaScript
                    // kept the thread busy is read now, before its request is expired.
                    self.read_ready(now);
                }
                self.sync(now);
            }
            later => self.set_timer(later),
        }
    }

    /// Starts a connection attempt; false when it failed at once. An address given
    /// as numbers connects here; a name is resolved (which blocks) and connected on
    /// the runtime, and the socket handed back to this thread.
    fn start_connect(&mut self, now: Instant) -> bool {
        if let Ok(addr) = self.addr.parse::<SocketAddr>() {
            let attempt = connect_nonblocking(addr).and_then(|stream| self.attach(stream, UV_WRITABLE));
            return match attempt {
                Ok(()) => {
                    self.connect_deadline = Some(now + self.session.link().config().connect_timeout);
                    true
                }
                Err(e) => {
                    self.connect_failed(now, e);
                    false
                }
            };
        }
        let (Some(this), Some(to_js)) = (self.this.upgrade(), ToJs::here()) else { return true };
        let travelling = Travelling(Rc::into_raw(this));
        let addr = self.addr.clone();
        let limit = self.session.link().config().connect_timeout;
        napi::bindgen_prelude::spawn(async move {
            let attempt = within(limit, tcp_connect(&addr)).await.and_then(|s| Ok(s.into_std()?));
            to_js.post(Box::new(move |_env| {
                // SAFETY: posted back to the JavaScript thread the pointer came from.
                let driver = unsafe { travelling.arrive() };
                callback_scope(|env| finish_connect(env, driver, attempt));
            }));
        });
        true
    }

    /// The socket connecting here became writable (connected) or failed.
    fn finish_connecting(&mut self, now: Instant) {
        self.connect_deadline = None;
        let Some(socket) = self.socket.as_ref() else { return };
        match socket.stream.take_error() {
            Ok(None) => {
                watch(&socket.poll, UV_READABLE, on_poll::<F>);
                self.session.connected(now);
            }
            Ok(Some(e)) | Err(e) => self.connect_failed(now, Error::from(e)),
        }
    }

    /// An attempt failed: the link learns why, naming the address.
    fn connect_failed(&mut self, now: Instant, mut error: Error) {
        self.socket = None;
        self.connect_deadline = None;
        if !error.message.starts_with("connect") {
            error.message = format!("connect to {}: {}", self.addr, error.message);
        }
        self.session.connect_failed(now, error);
    }

    /// Watches a socket for `events` (writable while it connects, then readable).
    fn attach(&mut self, stream: TcpStream, events: c_int) -> Result<()> {
        stream.set_nonblocking(true)?;
        let poll = Handle::new(UV_POLL);
        // SAFETY: a zeroed handle of the right size, initialised on this loop's thread; its
        // data points at the driver, which closes it before it is freed.
        unsafe {
            if uv_poll_init_socket(self.loop_, poll.0, stream.as_raw_fd()) != 0 {
                libc::free(poll.0);
                std::mem::forget(poll);
                return Err(Error::conn_reset("cannot watch the socket"));
            }
            uv_handle_set_data(poll.0, self.this.as_ptr() as *mut c_void);
            uv_unref(poll.0);
        }
        watch(&poll, events, on_poll::<F>);
        self.socket = Some(Socket { poll, stream, watching_writable: false, muted: false });
        Ok(())
    }
}

/// The libuv loop of the JavaScript thread of `env`.
pub(crate) fn event_loop(env: sys::napi_env) -> Option<*mut c_void> {
    let mut loop_ = std::ptr::null_mut();
    // SAFETY: on the JavaScript thread with its env.
    let status = unsafe { sys::napi_get_uv_event_loop(env, &mut loop_) };
    (status == sys::Status::napi_ok).then_some(loop_.cast())
}

/// A socket connecting to `addr` without blocking, with `TCP_NODELAY` set.
fn connect_nonblocking(addr: SocketAddr) -> Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(Error::from(e)),
    }
    Ok(socket.into())
}

/// A connection attempt on the runtime ended: the link learns of it (and sets the connection up).
fn finish_connect<F: Framing + 'static>(env: sys::napi_env, driver: Rc<RefCell<Inner<F>>>, attempt: Result<TcpStream>) {
    {
        let mut inner = driver.borrow_mut();
        if !inner.closed {
            let now = Instant::now();
            match attempt.and_then(|stream| inner.attach(stream, UV_READABLE)) {
                Ok(()) => inner.session.connected(now),
                Err(e) => inner.session.connect_failed(now, e),
            }
            inner.sync(now);
        }
    }
    settle_open(env, &driver);
}

/// Tells `open` how the first connection went, once the link knows.
fn settle_open<F: Framing + 'static>(env: sys::napi_env, driver: &Rc<RefCell<Inner<F>>>) {
    let settled = {
        let mut inner = driver.borrow_mut();
        let outcome = match inner.closed {
            true => Some(Err(Error::closed("the device was closed"))),
            false => inner.opening.as_ref().and_then(|_| inner.session.link().opened()),
        };
        outcome.and_then(|outcome| Some((inner.opening.take()?, outcome, inner.session.stats().clone())))
    };
    // Called with the driver let go: `on_open` may close it (a shared link opened twice).
    if let Some((opening, outcome, stats)) = settled {
        let PendingOpen { on_open, held } = *opening;
        on_open(env, outcome.map(|()| EventLoopDriver { inner: held, stats }));
    }
}

/// What the thread's alarms call back: a link, a poller.
pub(crate) trait Alarmed {
    /// Its alarm fired.
    fn alarm(&self, now: Instant);
}

/// What the end of a JavaScript job calls a link back for.
trait Wake {
    /// The JavaScript job that wrote to it is over.
    fn flush_now(&self);
}

impl<F: Framing + 'static> Wake for RefCell<Inner<F>> {
    fn flush_now(&self) {
        let mut inner = self.borrow_mut();
        inner.flush_scheduled = false;
        inner.sync(Instant::now());
    }
}

impl<F: Framing + 'static> Alarmed for RefCell<Inner<F>> {
    fn alarm(&self, now: Instant) {
        let mut inner = self.borrow_mut();
        inner.alarm(now);
        // A set-up that timed out settles `open`.
        let opening = inner.opening.is_some().then(|| inner.this.upgrade()).flatten();
        drop(inner);
        if let (Some(driver), Some(env)) = (opening, js_env()) {
            settle_open(env, &driver);
        }
    }
}

/// Until `defer_reads(None)`, calls made on this thread have their replies read
/// at `until`, in the wake-up the caller has then anyway (the poller's next
/// alarm), not each in a wake-up of its own as it comes: a poller starting a
/// group of reads every few milliseconds then wakes about once per group, not
/// once per reply. A reply later than `until` is read as it comes.
pub(crate) fn defer_reads(until: Option<Instant>) {
    READS_DEFERRED_UNTIL.set(until);
}

thread_local! {
    static READS_DEFERRED_UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Links with output waiting for the end of the JavaScript job.
    static WAITING: RefCell<Vec<Rc<dyn Wake>>> = const { RefCell::new(Vec::new()) };
    /// The thread's alarms; made on first use, closed with the environment.
    static ALARMS: RefCell<Option<Alarms>> = const { RefCell::new(None) };
}

/// One libuv timer per thread wakes every link and poller at its time: a timer
/// per link would cost each idle connection a handle.
struct Alarms {
    timer: Handle,
    due: BinaryHeap<Alarm>,
    /// When the timer fires, if it is running.
    armed_at: Option<Instant>,
}

struct Alarm {
    at: Instant,
    link: Weak<dyn Alarmed>,
}

impl PartialEq for Alarm {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Alarm {}
impl PartialOrd for Alarm {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Alarm {
    /// Reversed: the heap's top is the earliest alarm.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl Alarms {
    fn new(loop_: *mut c_void) -> Alarms {
        let timer = Handle::new(UV_TIMER);
        // SAFETY: a zeroed handle of the right size on this loop's thread. Unreferenced:
        // pending calls keep the process alive, idle devices must not.
        unsafe {
            uv_timer_init(loop_, timer.0);
            uv_handle_set_data(timer.0, loop_);
            uv_unref(timer.0);
        }
        if let Some(env) = js_env() {
            // SAFETY: on the JavaScript thread with its env; the hook takes no data.
            unsafe { sys::napi_add_env_cleanup_hook(env, Some(close_alarms), std::ptr::null_mut()) };
        }
        Alarms { timer, due: BinaryHeap::new(), armed_at: None }
    }

    /// Runs the timer for the earliest alarm, unless it already runs for it.
    fn arm(&mut self) {
        let Some(at) = self.due.peek().map(|alarm| alarm.at) else { return };
        if self.armed_at.is_some_and(|armed| armed <= at) {
            return;
        }
        self.armed_at = Some(at);
        // SAFETY: the timer is initialised and used on its loop's thread; its data is the loop.
        unsafe {
            let loop_ = uv_handle_get_data(self.timer.0);
            // Whole milliseconds, rounded up: waking early would only find nothing due.
            let ms = at.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000) as u64;
            uv_update_time(loop_);
            uv_timer_start(self.timer.0, on_alarm, ms, 0);
        }
    }
}

/// Files an alarm for `link` at `at`, on the JavaScript thread running `loop_`.
pub(crate) fn file_alarm(loop_: *mut c_void, at: Instant, link: Weak<dyn Alarmed>) {
    ALARMS.with(|alarms| {
        let mut alarms = alarms.borrow_mut();
        let alarms = alarms.get_or_insert_with(|| Alarms::new(loop_));
        alarms.due.push(Alarm { at, link });
        alarms.arm();
    });
}

unsafe extern "C" fn on_alarm(_timer: *mut c_void) {
    callback_scope(|_| {
        let now = Instant::now();
        let due = |alarms: &mut Option<Alarms>| {
            let alarms = alarms.as_mut()?;
            alarms.armed_at = None;
            alarms.due.peek_mut().filter(|alarm| alarm.at <= now).map(std::collections::binary_heap::PeekMut::pop)
        };
        // One at a time, with the alarms let go: a link files its next alarm as it runs.
        while let Some(alarm) = ALARMS.with(|alarms| due(&mut alarms.borrow_mut())) {
            if let Some(link) = alarm.link.upgrade() {
                link.alarm(now);
            }
        }
        ALARMS.with(|alarms| alarms.borrow_mut().as_mut().map(Alarms::arm));
    });
}

/// The environment is going away: its loop's timer is closed with it.
unsafe extern "C" fn close_alarms(_: *mut c_void) {
    drop(ALARMS.with(|alarms| alarms.borrow_mut().take()));
}

fn write_waiting() {
    let waiting = WAITING.with(|waiting| std::mem::take(&mut *waiting.borrow_mut()));
    for link in waiting {
        link.flush_now();
    }
}

/// Starts watching `poll` for `events`.
fn watch(poll: &Handle, events: c_int, callback: unsafe extern "C" fn(*mut c_void, c_int, c_int)) {
    // SAFETY: an initialised poll handle on its loop's thread.
    unsafe { uv_poll_start(poll.0, events, callback) };
}

/// The driver a handle belongs to, held for the length of a callback.
///
/// # Safety
/// `handle`'s data must point at a live driver (handles are closed before it is freed).
unsafe fn driver_of<F: Framing>(handle: *mut c_void) -> Rc<RefCell<Inner<F>>> {
    unsafe {
        let inner = uv_handle_get_data(handle) as *const RefCell<Inner<F>>;
        Rc::increment_strong_count(inner);
        Rc::from_raw(inner)
    }
}

unsafe extern "C" fn on_poll<F: Framing + 'static>(handle: *mut c_void, status: c_int, events: c_int) {
    // SAFETY: the poll handle's data is set to its driver in `connected`.
    let driver = unsafe { driver_of::<F>(handle) };
    callback_scope(|env| {
        let mut inner = driver.borrow_mut();
        let now = Instant::now();
        if inner.connect_deadline.is_some() {
            inner.finish_connecting(now);
        } else if status < 0 {
            // A socket error (a reset): reading reports it as it is.
            inner.read(now);
            if inner.socket.is_some() {
                inner.lose(now, Error::conn_reset(format!("connection lost (libuv error {status})")));
            }
        } else {
            if events & UV_WRITABLE != 0 {
                inner.flush(now);
            }
            if events & (UV_READABLE | UV_DISCONNECT) != 0 {
                inner.read(now);
            }
        }
        inner.sync(now);
        let opening = inner.opening.is_some();
        drop(inner);
        if opening {
            settle_open(env, &driver);
        }
    });
}

impl<F: Framing + 'static> Inner<F> {
    /// Reads until the socket has nothing more (bounded, so one busy link cannot starve others).
    fn read_ready(&mut self, now: Instant) {
        for _ in 0..64 {
            // Nothing awaited: what else may come is read when it is (a sweep saves its read).
            if !self.read(now) || self.session.link().in_flight() == 0 {
                return;
            }
        }
    }

    /// One read: libuv polls level-triggered, so what is left wakes us again.
    /// Returns whether bytes came.
    fn read(&mut self, now: Instant) -> bool {
        let Some(socket) = self.socket.as_ref() else { return false };
        let fd = socket.stream.as_raw_fd();
        let chunk = self.read_chunk;
        let buf = self.session.read_buf();
        if buf.capacity() - buf.len() < chunk / 2 {
            buf.reserve(chunk);
        }
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        // SAFETY: recv writes at most `room` bytes into the buffer's spare capacity.
        let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), room, 0) };
        match n {
            0 => {
                self.lose(now, Error::conn_reset("the device closed the connection"));
                false
            }
            n if n > 0 => {
                // SAFETY: recv initialised the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n as usize) };
                if n as usize == room {
                    self.read_chunk = (chunk * 2).min(MAX_READ_CHUNK);
                }
                self.session.received(now);
                true
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) {
                    self.lose(now, Error::conn_reset(format!("connection lost: {e}")));
                }
                false
            }
        }
    }
}
