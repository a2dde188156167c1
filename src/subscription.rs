//! Subscriptions: what a device reports as it changes, queued on the
//! JavaScript thread for `next()`, at most `max_pending` batches (the oldest
//! are dropped and counted beyond that).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bifrost_core::{Error, ErrorCode, TypedValue, Value};
use bifrost_engine::{Change, ChangeSink, Completion, Device, Outcome, SubscribeOptions, SubscriptionHandle};
use napi::bindgen_prelude::Object;
use napi::Env;
use napi_derive::napi;

use crate::device::timeout;
use crate::js::{now_ms, JsCompletion, JsError, Promise, Shape, ToJs};
use crate::{CopiedBuffer, JsValue};

/// A subscription's side on the JavaScript thread.
struct Queue {
    batches: VecDeque<BindingChanges>,
    max_pending: usize,
    dropped: u64,
    /// The consumer's `next()`, while it waits.
    waiter: Option<Promise>,
    /// How the subscription ended, once it has.
    ended: Option<Result<(), Error>>,
    /// `close()` calls waiting for the end.
    closing: Vec<Promise>,
}

impl Queue {
    fn push(&mut self, env: napi::sys::napi_env, changes: BindingChanges) {
        if self.batches.len() == self.max_pending {
            self.batches.pop_front();
            self.dropped += 1;
        }
        self.batches.push_back(changes);
        self.settle(env);
    }

    /// Answers a waiting `next()` with the oldest batch, or the end.
    fn settle(&mut self, env: napi::sys::napi_env) {
        let Some(waiter) = self.waiter.take() else { return };
        if let Some(batch) = self.batches.pop_front() {
            return waiter.resolve(env, Some(batch));
        }
        match &self.ended {
            None => self.waiter = Some(waiter),
            Some(Ok(())) => waiter.resolve(env, None::<BindingChanges>),
            Some(Err(e)) => waiter.reject(env, e),
        }
    }

    fn end(&mut self, env: napi::sys::napi_env, outcome: Outcome) {
        let ended = match outcome {
            Outcome::Values(mut results) => match results.pop() {
                // Closing the device ends its subscriptions, as it ends a watch.
                Some(Err(e)) if e.code != ErrorCode::Closed => Err(e),
                _ => Ok(()),
            },
            _ => Ok(()),
        };
        self.ended = Some(ended);
        for promise in self.closing.drain(..) {
            promise.resolve(env, ());
        }
        self.settle(env);
    }
}

/// One batch of changes, as columns in one `ArrayBuffer` in platform byte order:
/// the change count `n` as a u32 and 4 bytes of padding, then `n` f64 values
/// (a boolean as 0 or 1, a 64-bit integer rounded; NaN for any other change), `n` f64 timestamps (ms since
/// the epoch), `n` u32 tag positions in the subscribed list, `n` quality bytes
/// (0 good, 1 bad), and `n` kind bytes (see [`Kind`]). The values that are not
/// plain numbers and the errors follow in change order in `values` and `errors`.
#[napi(object, object_from_js = false)]
pub struct BindingChanges {
    #[napi(ts_type = "ArrayBuffer")]
    pub buffer: CopiedBuffer,
    #[napi(ts_type = "Array<unknown>")]
    pub values: Vec<JsValue>,
    #[napi(ts_type = "Array<Error>")]
    pub errors: Vec<JsError>,
}

/// What a change's value is, so JavaScript can rebuild it from the columns.
#[repr(u8)]
enum Kind {
    /// The value column holds it exactly.
    Number = 0,
    /// The value column holds it as 0 or 1.
    Boolean = 1,
    /// In `values` (text, arrays, 64-bit integers as `bigint`).
    Other = 2,
    /// Failed: its error is in `errors`.
    Failed = 3,
}

impl BindingChanges {
    /// Lays out `changes` as columns; a change the device gave no timestamp gets `now_ms`.
    fn new(changes: Vec<Change>, now_ms: f64) -> BindingChanges {
        let n = changes.len();
        let mut buffer = Vec::with_capacity(8 + n * 22);
        buffer.extend((n as u32).to_ne_bytes());
        buffer.extend(0u32.to_ne_bytes());
        let kinds: Vec<u8> = changes.iter().map(|(_, result, _)| kind(result) as u8).collect();
        buffer.extend(changes.iter().flat_map(|(_, result, _)| number(result).to_ne_bytes()));
        buffer.extend(changes.iter().flat_map(|&(_, _, at)| if at > 0.0 { at } else { now_ms }.to_ne_bytes()));
        buffer.extend(changes.iter().flat_map(|(index, _, _)| index.to_ne_bytes()));
        buffer.extend(kinds.iter().map(|&kind| u8::from(kind == Kind::Failed as u8)));
        buffer.extend(&kinds);
        let (mut values, mut errors) = (Vec::new(), Vec::new());
        for ((_, result, _), kind) in changes.into_iter().zip(kinds) {
            match result {
                Ok(value) if kind == Kind::Other as u8 => values.push(JsValue(value)),
                Err(e) => errors.push(JsError(e)),
                Ok(_) => {}
            }
        }
        BindingChanges { buffer: CopiedBuffer(buffer), values, errors }
    }
}

fn kind(result: &Result<TypedValue, Error>) -> Kind {
    match result {
        Err(_) => Kind::Failed,
        Ok(TypedValue { value: Value::Bool(_), .. }) => Kind::Boolean,
        Ok(TypedValue { value: Value::Float(_), .. }) => Kind::Number,
        // Up to 2^53 an integer is exact as a number; 64-bit types go as `bigint`.
        Ok(TypedValue { value: Value::Int(_) | Value::UInt(_), wide: false }) => Kind::Number,
        Ok(_) => Kind::Other,
    }
}

/// A change's value as one number (64-bit integers rounded), NaN where it is none (failed, text, an array).
fn number(result: &Result<TypedValue, Error>) -> f64 {
    match result.as_ref().map(|typed| &typed.value) {
        Ok(Value::Float(v)) => *v,
        Ok(Value::Int(v)) => *v as f64,
        Ok(Value::UInt(v)) => *v as f64,
        Ok(Value::Bool(v)) => f64::from(u8::from(*v)),
        _ => f64::NAN,
    }
}

/// A subscription's changes, batch by batch, for JavaScript.
#[napi]
pub struct BindingSubscription {
    queue: Rc<RefCell<Queue>>,
    handle: Box<dyn SubscriptionHandle>,
}

/// Subscribes to `tags` on `device`; its changes are queued for `next()`.
pub fn open(
    device: &dyn Device,
    tags: Vec<String>,
    options: SubscribeOptions,
    max_pending: usize,
) -> napi::Result<BindingSubscription> {
    let to_js = ToJs::here().ok_or_else(|| napi::Error::from_reason("no JavaScript thread"))?;
    let queue = Rc::new(RefCell::new(Queue {
        batches: VecDeque::new(),
        max_pending: max_pending.max(1),
        dropped: 0,
        waiter: None,
        ended: None,
        closing: Vec::new(),
    }));
    let id = register(&queue);
    let sink_to_js = to_js.clone();
    let sink: ChangeSink = Arc::new(move |changes: Vec<Change>| {
        // Laid out here, on the device's thread, so what waits for JavaScript is compact.
        let changes = BindingChanges::new(changes, now_ms());
        sink_to_js.clone().run(move |env| {
            if let Some(queue) = find(id) {
                queue.borrow_mut().push(env, changes);
            }
        })
    });
    let done: Box<dyn Completion> = Box::new(move |outcome: Outcome| {
        to_js.run(move |env| {
            if let Some(queue) = find(id) {
                queue.borrow_mut().end(env, outcome);
            }
        })
    });
    let handle = device.subscribe(&tags, options, sink, done);
    Ok(BindingSubscription { queue, handle })
}

thread_local! {
    /// This thread's subscriptions, found by id from sinks that may run on other threads.
    static QUEUES: RefCell<std::collections::HashMap<u64, std::rc::Weak<RefCell<Queue>>>> = RefCell::default();
    static NEXT_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
}

fn register(queue: &Rc<RefCell<Queue>>) -> u64 {
    let id = NEXT_ID.with(|next| next.replace(next.get() + 1));
    QUEUES.with(|queues| {
        let mut queues = queues.borrow_mut();
        queues.retain(|_, queue| queue.strong_count() > 0);
        queues.insert(id, Rc::downgrade(queue));
    });
    id
}

fn find(id: u64) -> Option<Rc<RefCell<Queue>>> {
    QUEUES.with(|queues| queues.borrow().get(&id).and_then(std::rc::Weak::upgrade))
}

#[napi]
impl BindingSubscription {
    /// The next batch of changes, oldest first; `null` once the subscription
    /// has ended; rejects with the error that ended it.
    #[napi(ts_return_type = "Promise<BindingChanges | null>")]
    pub fn next<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let (promise, object) = Promise::new(env)?;
        let mut queue = self.queue.borrow_mut();
        if queue.waiter.is_some() {
            promise.reject(env.raw(), &Error::invalid_value("next() was called while another next() waits"));
            return Ok(object);
        }
        queue.waiter = Some(promise);
        queue.settle(env.raw());
        Ok(object)
    }

    /// Batches dropped unread because the consumer fell behind.
    #[napi(getter)]
    pub fn dropped(&self) -> f64 {
        self.queue.borrow().dropped as f64
    }

    /// Ends the subscription (deleted on the device); resolves once it has ended.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let (promise, object) = Promise::new(env)?;
        if self.queue.borrow().ended.is_some() {
            promise.resolve(env.raw(), ());
            return Ok(object);
        }
        self.queue.borrow_mut().closing.push(promise);
        self.handle.end();
        Ok(object)
    }

    /// New settings for every tag; resolves with the interval the device granted (ms).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn modify<'env>(
        &self,
        env: &'env Env,
        interval_ms: u32,
        deadband_type: Option<String>,
        deadband_value: Option<f64>,
        timeout_ms: Option<u32>,
    ) -> napi::Result<Object<'env>> {
        let (done, promise) = JsCompletion::new(env, Shape::Value)?;
        match options(interval_ms, deadband_type, deadband_value) {
            Ok(options) => self.handle.modify(options, timeout(timeout_ms), done),
            Err(e) => done.complete(Outcome::Values(vec![Err(e)])),
        }
        Ok(promise)
    }

    /// Stops watching the tags at `positions` in the subscribed list, named `tags`: one `TagResult` each.
    #[napi(ts_return_type = "Promise<Array<BindingTagResult>>")]
    pub fn remove<'env>(
        &self,
        env: &'env Env,
        positions: Vec<u32>,
        tags: Vec<String>,
        timeout_ms: Option<u32>,
    ) -> napi::Result<Object<'env>> {
        let (done, promise) = JsCompletion::new(env, Shape::TagResults(tags))?;
        self.handle.remove(&positions, timeout(timeout_ms), done);
        Ok(promise)
    }
}

/// The subscription options from JavaScript's, checked.
pub fn options(
    interval_ms: u32,
    deadband_type: Option<String>,
    deadband_value: Option<f64>,
) -> Result<SubscribeOptions, Error> {
    Ok(SubscribeOptions {
        interval: Duration::from_millis(u64::from(interval_ms.max(1))),
        deadband: crate::batch::deadband(deadband_type, deadband_value)?,
    })
}
