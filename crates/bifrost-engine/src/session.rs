//! Calls on a link. A call (a read of many tags, a write) is a [`Job`]: it
//! submits requests, gets their replies, may submit more, and when nothing of it
//! is outstanding its [`Outcome`] goes to the caller's [`Completion`]. A queued
//! call is a queue entry and a job entry, with no task or future of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use bifrost_core::TypedValue;
use bifrost_core::{Error, Result, Value};

use crate::link::{Framing, Link, Stats, Wants};

/// A columnar read: element values of all tags back to back.
#[derive(Debug, Default)]
pub struct Columns {
    pub values: Vec<f64>,
    /// Tag `i` owns `values[offsets[i]..offsets[i + 1]]`.
    pub offsets: Vec<u32>,
    /// The tags that failed, by position, in increasing order; every other tag was
    /// read. Sparse: a read of thousands of good tags carries no slot per tag.
    pub errors: Vec<(u32, Error)>,
}

impl Columns {
    /// Every tag failed with `error`; `elements` gives each tag's value count.
    pub fn failed(elements: impl Iterator<Item = usize>, error: &Error) -> Columns {
        let mut columns = Columns { offsets: vec![0], ..Columns::default() };
        for (tag, count) in elements.enumerate() {
            columns.values.extend(std::iter::repeat_n(f64::NAN, count));
            columns.offsets.push(columns.values.len() as u32);
            columns.errors.push((tag as u32, error.clone()));
        }
        columns
    }

    /// How many tags were read.
    pub fn tags(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether each tag was read, in tag order.
    pub fn good(&self) -> impl Iterator<Item = bool> + '_ {
        let mut failed = self.errors.iter().map(|(tag, _)| *tag as usize).peekable();
        (0..self.tags()).map(move |tag| failed.next_if_eq(&tag).is_none())
    }
}

/// One entry of a device's tag listing (`browse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    /// As it is read: program-scoped tags carry their program (`Program:Main.Speed`).
    pub name: String,
    /// `DINT`, `STRING`, `structure 0x2e9`, `PROGRAM` (a program, to browse in turn).
    pub data_type: String,
    /// Array dimensions; empty for a scalar.
    pub dimensions: Vec<u32>,
    /// A name for people where `name` is an address (an OPC UA node's display name).
    pub display_name: Option<String>,
}

/// What a call hands its caller.
#[derive(Debug)]
pub enum Outcome {
    /// One result per tag, in the order asked.
    Values(Vec<Result<TypedValue>>),
    Columns(Columns),
    /// One result per tag written, in the order asked.
    Written(Vec<Result<()>>),
    /// The device's tags (or a program's), or why they could not be listed.
    Browsed(Result<Vec<TagInfo>>),
    /// The device is closed.
    Closed,
}

/// A change a subscription reports: the tag's position, its value or why it has
/// none, and the time the device gave it (ms since 1970; 0 when it gave none).
pub type Change = (u32, Result<TypedValue>, f64);

/// Where a subscription's changes go as they come, one batch per notification,
/// on whatever thread the device's driver runs.
pub type ChangeSink = Arc<dyn Fn(Vec<Change>) + Send + Sync>;

/// A live subscription, as its owner controls it.
pub trait SubscriptionHandle {
    /// New settings for every tag it watches; [`Outcome::Values`] with one
    /// value: the interval the device granted, in milliseconds.
    fn modify(&self, options: SubscribeOptions, timeout: Option<Duration>, done: Box<dyn Completion>);
    /// Stops watching the tags at `positions` in the subscribed list;
    /// [`Outcome::Written`], one result per position.
    fn remove(&self, positions: &[u32], timeout: Option<Duration>, done: Box<dyn Completion>);
    /// Ends the subscription (deleted on the device); the `done` given to
    /// `subscribe` completes. Later calls do nothing.
    fn end(&self);
}

/// The handle of a subscription that was never made: a device without subscriptions.
struct NoSubscription;

impl SubscriptionHandle for NoSubscription {
    fn modify(&self, _options: SubscribeOptions, _timeout: Option<Duration>, done: Box<dyn Completion>) {
        done.complete(Outcome::Values(vec![Err(bifrost_core::Error::invalid_value(
            "there is no subscription to modify",
        ))]))
    }
    fn remove(&self, positions: &[u32], _timeout: Option<Duration>, done: Box<dyn Completion>) {
        let none = || Err(bifrost_core::Error::invalid_value("there is no subscription to remove tags from"));
        done.complete(Outcome::Written(positions.iter().map(|_| none()).collect()))
    }
    fn end(&self) {}
}

/// What a subscription watches for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubscribeOptions {
    /// How often the device samples and reports.
    pub interval: Duration,
    pub deadband: Option<crate::poller::Deadband>,
}

/// Where a call's outcome goes: the addon's promise, a channel in tests.
pub trait Completion: Send {
    fn complete(self: Box<Self>, outcome: Outcome);
}

impl<F: FnOnce(Outcome) + Send> Completion for F {
    fn complete(self: Box<Self>, outcome: Outcome) {
        (*self)(outcome)
    }
}

/// One call's logic over requests and replies.
pub trait Job<F: Framing>: Send {
    /// Submits the call's first requests.
    fn start(&mut self, link: &mut Submitter<'_, F>);
    /// The request numbered `index` finished; the job may submit more.
    fn reply(&mut self, index: u32, reply: Result<F::Reply>, link: &mut Submitter<'_, F>);
    /// Called once nothing of the job is outstanding.
    fn finish(self: Box<Self>) -> Outcome;
}

/// What a job submits through: numbers its requests and gives them the call's deadline.
pub struct Submitter<'a, F: Framing> {
    link: &'a mut Link<F, Token>,
    entry: &'a mut Outstanding,
    slot: u32,
    now: Instant,
}

impl<F: Framing> Submitter<'_, F> {
    /// Queues `request`; its reply comes to [`Job::reply`] with `index`. Fails at
    /// once (queue full, breaker open, link closed) without calling `reply`.
    pub fn submit(&mut self, request: F::Request, index: u32) -> Result<()> {
        self.submit_until(request, index, self.entry.deadline)
    }

    /// As [`Submitter::submit`], with a deadline of its own (never past the call's).
    pub fn submit_until(&mut self, request: F::Request, index: u32, deadline: Instant) -> Result<()> {
        let token = Token { slot: self.slot, index };
        self.link.submit(self.now, request, deadline.min(self.entry.deadline), token).map_err(|(_, e)| e)?;
        self.entry.count += 1;
        Ok(())
    }

    /// The time the job is called at.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// When the call must be over.
    pub fn deadline(&self) -> Instant {
        self.entry.deadline
    }
}

/// Which job a request belongs to, and its number within the job.
#[derive(Debug, Clone, Copy)]
pub struct Token {
    slot: u32,
    index: u32,
}

/// Job slots an idle session keeps.
const IDLE_SLOTS: usize = 4;

struct Outstanding {
    deadline: Instant,
    count: u32,
}

struct Entry<F: Framing> {
    job: Box<dyn Job<F>>,
    done: Box<dyn Completion>,
    outstanding: Outstanding,
}

/// A link and the calls running on it. Drivers feed it as they would feed a
/// [`Link`]; finished calls are completed inside each method.
pub struct Session<F: Framing> {
    link: Link<F, Token>,
    jobs: Vec<Option<Entry<F>>>,
    free: Vec<u32>,
}

impl<F: Framing> Session<F> {
    pub fn new(link: Link<F, Token>) -> Self {
        Session { link, jobs: Vec::new(), free: Vec::new() }
    }

    pub fn link(&self) -> &Link<F, Token> {
        &self.link
    }

    pub fn stats(&self) -> &Arc<Stats> {
        self.link.stats()
    }

    /// Calls running, or the link busy: the driver keeps its process alive meanwhile.
    pub fn is_busy(&self) -> bool {
        self.jobs.len() > self.free.len() || self.link.is_busy()
    }

    /// Starts a call. `timeout` bounds all of it, queueing included; `None` takes the link's request timeout.
    pub fn run(
        &mut self,
        now: Instant,
        mut job: Box<dyn Job<F>>,
        timeout: Option<Duration>,
        done: Box<dyn Completion>,
    ) {
        let deadline = now + timeout.unwrap_or(self.link.config().request_timeout);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.jobs.push(None);
            (self.jobs.len() - 1) as u32
        });
        let mut outstanding = Outstanding { deadline, count: 0 };
        job.start(&mut Submitter { link: &mut self.link, entry: &mut outstanding, slot, now });
        if outstanding.count == 0 {
            self.free.push(slot);
            done.complete(job.finish());
        } else {
            self.jobs[slot as usize] = Some(Entry { job, done, outstanding });
        }
    }

    /// Hands finished requests to their jobs, and completes the jobs that are done.
    fn dispatch(&mut self, now: Instant) {
        while self.link.has_completed() {
            let completed: Vec<_> = self.link.take_completed().collect();
            for (token, result) in completed {
                let Some(Some(entry)) = self.jobs.get_mut(token.slot as usize) else { continue };
                entry.outstanding.count -= 1;
                let mut submitter =
                    Submitter { link: &mut self.link, entry: &mut entry.outstanding, slot: token.slot, now };
                entry.job.reply(token.index, result, &mut submitter);
                if entry.outstanding.count == 0 {
                    if let Some(Entry { job, done, .. }) = self.jobs[token.slot as usize].take() {
                        self.free.push(token.slot);
                        done.complete(job.finish());
                    }
                }
            }
        }
        if self.free.len() == self.jobs.len() && !self.jobs.is_empty() {
            // Idle: keep room for a few calls (no allocation per call on a quiet link),
            // give back what a burst made room for.
            self.jobs.clear();
            self.free.clear();
            self.jobs.shrink_to(IDLE_SLOTS);
            self.free.shrink_to(IDLE_SLOTS);
        }
    }

    /// See [`Link::poll`].
    pub fn poll(&mut self, now: Instant) -> Wants {
        let mut wants = Wants::default();
        loop {
            let step = self.link.poll(now);
            wants.disconnect |= step.disconnect;
            wants.connect |= step.connect;
            wants.wake_at = step.wake_at;
            if !self.link.has_completed() {
                return wants;
            }
            // Jobs may submit more: poll again to put them on the wire.
            self.dispatch(now);
        }
    }

    pub fn outgoing(&self) -> &[u8] {
        self.link.outgoing()
    }

    pub fn wrote(&mut self, n: usize, now: Instant) {
        self.link.wrote(n, now);
    }

    pub fn read_buf(&mut self) -> &mut bytes::BytesMut {
        self.link.read_buf()
    }

    pub fn received(&mut self, now: Instant) {
        self.link.received(now);
        self.dispatch(now);
    }

    pub fn connected(&mut self, now: Instant) {
        self.link.connected(now);
    }

    pub fn connect_failed(&mut self, now: Instant, error: Error) {
        self.link.connect_failed(now, error);
        self.dispatch(now);
    }

    pub fn lost(&mut self, now: Instant, error: Error) {
        self.link.lost(now, error);
        self.dispatch(now);
    }

    /// Fails every call with `ECLOSED`.
    pub fn close(&mut self, now: Instant) {
        self.link.close();
        self.dispatch(now);
    }

    /// What to write as the device is closed; see [`Link::farewell`].
    pub fn farewell(&mut self) -> Vec<u8> {
        self.link.farewell()
    }
}

/// Runs calls on one link, wherever its socket lives.
pub trait Driver<F: Framing> {
    /// Starts a call; see [`Session::run`].
    fn run(&self, job: Box<dyn Job<F>>, timeout: Option<Duration>, done: Box<dyn Completion>);
    fn stats(&self) -> Arc<Stats>;
    /// Fails every call with `ECLOSED` and closes the connection; `done` gets [`Outcome::Closed`].
    fn close(&self, done: Box<dyn Completion>);
}

/// What a protocol's device and its prepared plans share: the driver its calls
/// run on, the protocol's state `S`, and whether it was closed.
pub struct DeviceCore<F: Framing, S> {
    driver: Box<dyn Driver<F>>,
    pub state: Arc<S>,
    closed: std::cell::Cell<bool>,
}

impl<F: Framing, S> DeviceCore<F, S> {
    pub fn new(driver: Box<dyn Driver<F>>, state: Arc<S>) -> Self {
        DeviceCore { driver, state, closed: std::cell::Cell::new(false) }
    }

    /// Runs a call, or completes it with [`Outcome::Closed`] once the device is closed.
    pub fn run(&self, job: Box<dyn Job<F>>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        if self.closed.get() {
            return done.complete(Outcome::Closed);
        }
        self.driver.run(job, timeout, done);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.driver.stats()
    }

    /// Closes the driver once; a second close completes at once.
    pub fn close(&self, done: Box<dyn Completion>) {
        if self.closed.replace(true) {
            return done.complete(Outcome::Closed);
        }
        self.driver.close(done)
    }
}

/// A connected device as the addon sees it, whatever its protocol.
pub trait Device {
    /// Reads the tags; [`Outcome::Values`], one per tag in order (a bad address fails its tag alone).
    fn read(&self, tags: &[String], timeout: Option<Duration>, done: Box<dyn Completion>);
    /// Writes the values; [`Outcome::Written`], one per tag in order.
    fn write(&self, writes: Vec<(String, Value)>, timeout: Option<Duration>, done: Box<dyn Completion>);
    /// Parses and plans the tags once; an `EADDRESS` for the first bad one.
    fn prepare(&self, tags: &[String]) -> Result<Box<dyn Plan>>;
    /// Lists the device's tags, or those under `from` (a program); [`Outcome::Browsed`].
    /// Devices that cannot list their tags say so.
    fn browse(&self, _from: Option<&str>, _timeout: Option<Duration>, done: Box<dyn Completion>) {
        done.complete(Outcome::Browsed(Err(bifrost_core::Error::invalid_value(
            "this protocol's devices cannot list their tags",
        ))))
    }
    /// Who the device says it is, as one structure value; [`Outcome::Values`].
    /// Devices that cannot tell say so.
    fn identity(&self, _timeout: Option<Duration>, done: Box<dyn Completion>) {
        done.complete(Outcome::Values(vec![Err(bifrost_core::Error::invalid_value(
            "this protocol's devices cannot tell their identity",
        ))]))
    }
    /// Calls `method` of `object` with `args`; [`Outcome::Values`] with one value,
    /// the method's outputs as an array. Devices without methods say so.
    fn call(
        &self,
        _object: &str,
        _method: &str,
        _args: Vec<Value>,
        _timeout: Option<Duration>,
        done: Box<dyn Completion>,
    ) {
        done.complete(Outcome::Values(vec![Err(bifrost_core::Error::invalid_value(
            "this protocol's devices have no methods to call",
        ))]))
    }
    /// Follows each browse path (text in the protocol's own form) from `from`, or
    /// from the protocol's root, to the tag at its end; [`Outcome::Values`], one
    /// tag address per path in order. Devices without browse paths say so.
    fn translate(&self, paths: &[String], _from: Option<&str>, _timeout: Option<Duration>, done: Box<dyn Completion>) {
        let unsupported = || Err(bifrost_core::Error::invalid_value("this protocol's devices have no browse paths"));
        done.complete(Outcome::Values(paths.iter().map(|_| unsupported()).collect()))
    }
    /// Watches the tags on the device, which reports their changes to `sink`;
    /// `done` gets [`Outcome::Values`] with one result once the subscription
    /// ends (unsubscribed, or failed). Devices without subscriptions say so.
    fn subscribe(
        &self,
        _tags: &[String],
        _options: SubscribeOptions,
        _sink: ChangeSink,
        done: Box<dyn Completion>,
    ) -> Box<dyn SubscriptionHandle> {
        done.complete(Outcome::Values(vec![Err(bifrost_core::Error::invalid_value(
            "this protocol's devices have no subscriptions: poll them (createPoller)",
        ))]));
        Box::new(NoSubscription)
    }
    fn stats(&self) -> Arc<Stats>;
    /// Later calls fail with `ECLOSED`; `done` gets [`Outcome::Closed`] once the connection is closed.
    fn close(&self, done: Box<dyn Completion>);
}

/// Tags parsed and planned once, read many times.
pub trait Plan {
    /// Reads every tag; [`Outcome::Columns`], also when the device is closed (every tag failed).
    fn read(&self, timeout: Option<Duration>, done: Box<dyn Completion>);
    /// How many values every read's columns hold (failed tags included, as NaN).
    fn value_count(&self) -> usize;
}
