//! Many reads at once: the engine's poller, driven on the JavaScript thread,
//! and group reads of many devices' plans. Each delivery hands JavaScript one
//! buffer of columnar reads (the layout of `BindingColumnarRead`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bifrost_core::{Error, ErrorCode};
use bifrost_engine::poller::{Deadband, Handle, Poller};
use bifrost_engine::{Columns, Completion, Outcome, Plan};
use napi::bindgen_prelude::{ClassInstance, Either, Float64Array, FunctionRef, Object, Uint32Array};
use napi::Env;
use napi_derive::napi;

use crate::device::{timeout, BindingPlan};
use crate::js::{
    either, js_env, now_ms, BindingColumnarRead, BindingIndexedError, ColumnsWriter, HeldFloat64Array, JsError,
    Promise, ToJs,
};

/// What the poller starts: a native plan, or a read the TypeScript layer makes through a plugin.
#[derive(Clone)]
enum Reader {
    Native(Rc<dyn Plan>),
    External,
}

/// The JavaScript function told which plugin reads are due.
type OnDue = FunctionRef<Vec<u32>, ()>;

struct PollerDriver {
    /// Files the alarm (libuv's timers hold weak links; elsewhere the runtime finds the poller by id).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    this: Weak<RefCell<PollerDriver>>,
    id: u64,
    poller: Poller<Reader>,
    to_js: ToJs,
    #[cfg(target_os = "linux")]
    loop_: *mut std::ffi::c_void,
    /// Deliveries come at most this often, so many polls share one.
    batch: Duration,
    last_delivery: Option<Instant>,
    /// The consumer's `next()`, while it waits.
    waiter: Option<Promise>,
    on_due: Rc<OnDue>,
    /// When the poller wants to be woken, and when its filed alarm fires (never later).
    timer_at: Option<Instant>,
    alarm_at: Option<Instant>,
    closed: bool,
}

thread_local! {
    /// This thread's pollers, found by id from completions that may come from other threads.
    static POLLERS: RefCell<HashMap<u64, Weak<RefCell<PollerDriver>>>> = RefCell::new(HashMap::new());
    static NEXT_POLLER: Cell<u64> = const { Cell::new(1) };
}

fn poller_by_id(id: u64) -> Option<Rc<RefCell<PollerDriver>>> {
    POLLERS.with(|pollers| pollers.borrow().get(&id).and_then(Weak::upgrade))
}

impl PollerDriver {
    /// Delivers what finished if the consumer waits and the last delivery is far
    /// enough behind; otherwise sets the alarm for when it will be.
    fn deliver_or_wait(&mut self, now: Instant) {
        if self.delivery_due(now).is_some_and(|at| at <= now) {
            self.deliver(now);
        }
        self.set_timer(self.wake_at(now));
    }

    /// When the next batch may go, if the consumer waits and polls finished.
    fn delivery_due(&self, now: Instant) -> Option<Instant> {
        (self.waiter.is_some() && self.poller.pending() > 0)
            .then(|| self.last_delivery.map_or(now, |at| at + self.batch))
    }

    fn wake_at(&self, now: Instant) -> Option<Instant> {
        [self.poller.wake_at(), self.delivery_due(now)].into_iter().flatten().min()
    }

    fn deliver(&mut self, now: Instant) {
        let (Some(waiter), Some(env)) = (self.waiter.take(), js_env()) else { return };
        self.last_delivery = Some(now);
        let mut writer = ColumnsWriter::new();
        for finished in self.poller.take_finished() {
            writer.push(finished.handle, finished.timestamp_ms, finished.columns, finished.indices.as_deref());
        }
        waiter.resolve(env, Some(writer.finish()));
    }

    /// As the event-loop driver's links do: a link has one alarm filed at most, and a
    /// later wake-up waits for it to fire.
    fn set_timer(&mut self, at: Option<Instant>) {
        self.timer_at = at;
        if let Some(at) = at {
            if self.alarm_at.is_none_or(|filed| at < filed) {
                self.alarm_at = Some(at);
                self.file_alarm(at);
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn file_alarm(&self, at: Instant) {
        crate::event_loop::file_alarm(self.loop_, at, self.this.clone());
    }

    /// Where libuv's timers are not reached (the event-loop driver is Linux-only),
    /// the runtime sleeps and posts the alarm back.
    #[cfg(not(target_os = "linux"))]
    fn file_alarm(&self, at: Instant) {
        let (id, to_js) = (self.id, self.to_js.clone());
        napi::bindgen_prelude::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            to_js.post(Box::new(move |_env| {
                if let Some(driver) = poller_by_id(id) {
                    alarm(&driver, Instant::now());
                }
            }));
        });
    }
}

#[cfg(target_os = "linux")]
impl crate::event_loop::Alarmed for RefCell<PollerDriver> {
    fn alarm(&self, now: Instant) {
        alarm(self, now)
    }
}

/// The longest a poll's reply waits to be read with others.
const MAX_SWEEP_DELAY: Duration = Duration::from_millis(10);

/// The poller's alarm fired: delivers, and starts the reads due.
fn alarm(cell: &RefCell<PollerDriver>, now: Instant) {
    let (starts, sweep_at, id, to_js, on_due) = {
        let mut driver = cell.borrow_mut();
        driver.alarm_at = None;
        if driver.closed {
            return;
        }
        match driver.timer_at {
            Some(at) if at <= now => {}
            later => return driver.set_timer(later),
        }
        driver.timer_at = None;
        if driver.delivery_due(now).is_some_and(|at| at <= now) {
            driver.deliver(now);
        }
        let starts = driver.poller.start_due(now);
        let sweep_at = driver.poller.wake_at().map_or(now + MAX_SWEEP_DELAY, |at| at.clamp(now, now + MAX_SWEEP_DELAY));
        (starts, sweep_at, driver.id, driver.to_js.clone(), driver.on_due.clone())
    };
    // The replies are read when the next group starts (or soon after), all in that one wake-up.
    #[cfg(target_os = "linux")]
    crate::event_loop::defer_reads(Some(sweep_at));
    // Started with the poller let go: a read may finish at once (a closed device).
    let mut external = Vec::new();
    for (handle, reader, timeout) in starts {
        match reader {
            Reader::Native(plan) => plan.read(timeout, poll_completion(id, handle, to_js.clone())),
            Reader::External => external.push(handle),
        }
    }
    #[cfg(target_os = "linux")]
    crate::event_loop::defer_reads(None);
    #[cfg(not(target_os = "linux"))]
    let _ = sweep_at; // the runtime driver reads as replies come
    if let (false, Some(env)) = (external.is_empty(), js_env()) {
        let env = Env::from_raw(env);
        // The TypeScript side catches everything; a failure here cannot be reported anywhere better.
        let _ = on_due.borrow_back(&env).and_then(|f| f.call(external));
    }
    let mut driver = cell.borrow_mut();
    let wake = driver.wake_at(Instant::now());
    driver.set_timer(wake);
}

/// A plan read's columns. Plans always end in columns; anything else is a read of no tags.
fn plan_columns(outcome: Outcome) -> Columns {
    match outcome {
        Outcome::Columns(columns) => columns,
        _ => Columns { offsets: vec![0], ..Columns::default() },
    }
}

/// Where a poll's outcome goes: back to its poller, on the JavaScript thread.
fn poll_completion(id: u64, handle: Handle, to_js: ToJs) -> Box<dyn Completion> {
    Box::new(move |outcome: Outcome| {
        let columns = plan_columns(outcome);
        to_js.run(move |_env| poll_finished(id, handle, columns));
    })
}

fn poll_finished(id: u64, handle: Handle, columns: Columns) {
    let Some(driver) = poller_by_id(id) else { return };
    let mut driver = driver.borrow_mut();
    let now = Instant::now();
    driver.poller.finished(handle, columns, now, now_ms());
    driver.deliver_or_wait(now);
}

/// The poller of `createPoller`: scheduled reads of many devices, delivered in batches.
#[napi]
pub struct BindingPoller {
    inner: Rc<RefCell<PollerDriver>>,
}

/// A deadband as the TypeScript layer passes it: `absolute` or `percent`, and its value.
pub(crate) fn deadband(kind: Option<String>, value: Option<f64>) -> Result<Option<Deadband>, Error> {
    let Some(kind) = kind else { return Ok(None) };
    let Some(value) = value.filter(|v| v.is_finite() && *v >= 0.0) else {
        return Err(Error::invalid_value("a deadband's value must be a finite number of at least 0"));
    };
    match kind.as_str() {
        "absolute" => Ok(Some(Deadband::Absolute(value))),
        "percent" => Ok(Some(Deadband::Percent(value))),
        other => Err(Error::invalid_value(format!("deadband type must be 'absolute' or 'percent', not '{other}'"))),
    }
}

#[napi]
impl BindingPoller {
    /// `batch_ms`: the shortest time between deliveries. `max_pending`: finished polls
    /// held for the consumer; beyond it the oldest are dropped. `on_due` is called
    /// with the handles of plugin reads to start.
    #[napi(constructor, ts_args_type = "batchMs: number, maxPending: number, onDue: (handles: number[]) => void")]
    pub fn new(env: Env, batch_ms: u32, max_pending: u32, on_due: OnDue) -> napi::Result<Self> {
        crate::js::enter(&env)?;
        let to_js = ToJs::here().ok_or_else(|| napi::Error::from_reason("no JavaScript thread"))?;
        #[cfg(target_os = "linux")]
        let loop_ =
            crate::event_loop::event_loop(env.raw()).ok_or_else(|| napi::Error::from_reason("no event loop"))?;
        let id = NEXT_POLLER.with(|next| next.replace(next.get() + 1));
        let inner = Rc::new_cyclic(|this| {
            RefCell::new(PollerDriver {
                this: this.clone(),
                id,
                poller: Poller::new(max_pending as usize),
                to_js,
                #[cfg(target_os = "linux")]
                loop_,
                batch: Duration::from_millis(batch_ms.into()),
                last_delivery: None,
                waiter: None,
                on_due: Rc::new(on_due),
                timer_at: None,
                alarm_at: None,
                closed: false,
            })
        });
        POLLERS.with(|pollers| pollers.borrow_mut().insert(id, Rc::downgrade(&inner)));
        Ok(BindingPoller { inner })
    }

    /// Schedules a prepared plan; returns its handle.
    #[napi(ts_return_type = "number | Error")]
    pub fn add(
        &self,
        plan: &BindingPlan,
        interval_ms: u32,
        timeout_ms: Option<u32>,
        deadband_type: Option<String>,
        deadband_value: Option<f64>,
    ) -> Either<u32, JsError> {
        self.schedule(Reader::Native(plan.shared()), interval_ms, timeout_ms, deadband_type, deadband_value)
    }

    /// Schedules a read the TypeScript layer makes (a plugin's device) when `onDue` names it.
    #[napi(ts_return_type = "number | Error")]
    pub fn add_external(
        &self,
        interval_ms: u32,
        timeout_ms: Option<u32>,
        deadband_type: Option<String>,
        deadband_value: Option<f64>,
    ) -> Either<u32, JsError> {
        self.schedule(Reader::External, interval_ms, timeout_ms, deadband_type, deadband_value)
    }

    fn schedule(
        &self,
        reader: Reader,
        interval_ms: u32,
        timeout_ms: Option<u32>,
        deadband_type: Option<String>,
        deadband_value: Option<f64>,
    ) -> Either<u32, JsError> {
        either((|| {
            let deadband = deadband(deadband_type, deadband_value)?;
            let mut driver = self.inner.borrow_mut();
            if driver.closed {
                return Err(Error::closed("the poller was closed"));
            }
            let now = Instant::now();
            let interval = Duration::from_millis(interval_ms.max(1).into());
            let handle = driver.poller.add(reader, interval, timeout(timeout_ms), deadband, now);
            let wake = driver.wake_at(now);
            driver.set_timer(wake);
            Ok(handle)
        })())
    }

    /// A plugin read started by `onDue` finished: its values, offsets and failed tags.
    #[napi(
        ts_args_type = "handle: number, values: Float64Array, offsets: Uint32Array, errors: Array<[number, string, string]>"
    )]
    pub fn complete_external(
        &self,
        handle: u32,
        values: Float64Array,
        offsets: Uint32Array,
        errors: Vec<(u32, String, String)>,
    ) {
        let tags = offsets.len().saturating_sub(1) as u32;
        let mut failed: Vec<(u32, Error)> = errors
            .into_iter()
            .filter(|(index, _, _)| *index < tags)
            .map(|(index, code, message)| match ErrorCode::from_name(&code) {
                Some(code) => (index, Error::new(code, message)),
                None => (index, Error::proto(format!("{code}: {message}"))),
            })
            .collect();
        failed.sort_by_key(|(index, _)| *index);
        failed.dedup_by_key(|(index, _)| *index);
        let columns = Columns { values: values.to_vec(), offsets: offsets.to_vec(), errors: failed };
        let id = self.inner.borrow().id;
        poll_finished(id, handle, columns);
    }

    /// Stops a scheduled read; false when the handle is unknown.
    #[napi]
    pub fn remove(&self, handle: u32) -> bool {
        self.inner.borrow_mut().poller.remove(handle)
    }

    /// The next batch, once one is due; `null` once the poller is closed.
    #[napi(ts_return_type = "Promise<ArrayBuffer | BindingColumnsWithErrors | null>")]
    pub fn next<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let (promise, object) = Promise::new(env)?;
        let mut driver = self.inner.borrow_mut();
        if driver.closed {
            promise.resolve(env.raw(), None::<BindingColumnarRead>);
        } else if driver.waiter.is_some() {
            promise.reject(
                env.raw(),
                &Error::invalid_value("a batch is already awaited: await each next() before the next"),
            );
        } else {
            driver.waiter = Some(promise);
            driver.deliver_or_wait(Instant::now());
        }
        Ok(object)
    }

    /// Stops every read; a waiting `next()` resolves with `null`.
    #[napi]
    pub fn close(&self, env: Env) {
        let mut driver = self.inner.borrow_mut();
        driver.closed = true;
        driver.poller = Poller::new(1);
        driver.set_timer(None);
        if let Some(waiter) = driver.waiter.take() {
            waiter.resolve(env.raw(), None::<BindingColumnarRead>);
        }
        let id = driver.id;
        POLLERS.with(|pollers| pollers.borrow_mut().remove(&id));
    }

    /// Finished polls dropped unread since the poller started.
    #[napi(getter)]
    pub fn dropped(&self) -> f64 {
        self.inner.borrow().poller.dropped() as f64
    }

    /// Every scheduled read's health, in the order they were added.
    #[napi]
    pub fn health(&self) -> Vec<BindingPollHealth> {
        let driver = self.inner.borrow();
        driver
            .poller
            .health()
            .into_iter()
            .map(|h| BindingPollHealth {
                handle: h.handle,
                state: h.state.as_str().to_string(),
                last_error: h.last_error.map(JsError),
                polls: h.polls as f64,
                failures: h.failures as f64,
                overruns: h.overruns as f64,
                late: h.late as f64,
                drops: h.drops as f64,
                latency_ms: h.latency_ms.map(|[p50, p90, p99]| BindingLatency { p50, p90, p99 }),
            })
            .collect()
    }
}

impl Drop for BindingPoller {
    fn drop(&mut self) {
        let id = self.inner.borrow().id;
        POLLERS.with(|pollers| pollers.borrow_mut().remove(&id));
    }
}

#[napi(object, object_from_js = false)]
pub struct BindingPollHealth {
    pub handle: u32,
    pub state: String,
    #[napi(ts_type = "Error")]
    pub last_error: Option<JsError>,
    pub polls: f64,
    pub failures: f64,
    pub overruns: f64,
    pub late: f64,
    pub drops: f64,
    pub latency_ms: Option<BindingLatency>,
}

#[napi(object, object_from_js = false)]
pub struct BindingLatency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// A group read while its plans run: `state` takes each read as it finishes,
/// and the last to finish takes the promise and the state out to settle.
struct Group<S> {
    remaining: usize,
    pending: Option<(Promise, S)>,
}

/// Starts every plan; `take` gets each read with its plan's position as it
/// finishes, and `settle` settles the promise, on the JavaScript thread, once all have.
fn read_group<'env, S: Send + 'static>(
    env: &'env Env,
    plans: &[ClassInstance<'env, BindingPlan>],
    timeout_ms: Option<u32>,
    state: S,
    take: fn(&mut S, usize, Columns),
    settle: fn(napi::sys::napi_env, Promise, S),
) -> napi::Result<Object<'env>> {
    let (promise, object) = Promise::new(env)?;
    if plans.is_empty() {
        promise.settle_with(move |env, promise| settle(env, promise, state));
        return Ok(object);
    }
    let group = Arc::new(Mutex::new(Group { remaining: plans.len(), pending: Some((promise, state)) }));
    for (index, plan) in plans.iter().enumerate() {
        let group = group.clone();
        let done = Box::new(move |outcome: Outcome| {
            let finished = {
                let mut group = group.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((_, state)) = group.pending.as_mut() {
                    take(state, index, plan_columns(outcome));
                }
                group.remaining -= 1;
                if group.remaining == 0 {
                    group.pending.take()
                } else {
                    None
                }
            };
            if let Some((promise, state)) = finished {
                promise.settle_with(move |env, promise| settle(env, promise, state));
            }
        });
        plan.shared().read(timeout(timeout_ms), done);
    }
    Ok(object)
}

/// Reads many plans, of any devices, with one promise: their reads in one buffer,
/// each read's id its plan's position (in the order they finished).
#[napi(ts_return_type = "Promise<ArrayBuffer | BindingColumnsWithErrors>")]
pub fn read_plans<'env>(
    env: &'env Env,
    plans: Vec<ClassInstance<'env, BindingPlan>>,
    timeout_ms: Option<u32>,
) -> napi::Result<Object<'env>> {
    read_group(
        env,
        &plans,
        timeout_ms,
        ColumnsWriter::new(),
        |writer, index, columns| writer.push(index as u32, now_ms(), columns, None),
        |env, promise, writer| promise.resolve(env, writer.finish()),
    )
}

/// What `read_plans_into` settles with: the failed tags, `entry` naming the plan's position.
#[napi(object, object_from_js = false)]
pub struct BindingPlansRead {
    /// When the last read finished, in milliseconds since the epoch.
    pub timestamp: f64,
    pub errors: Vec<BindingIndexedError>,
}

/// A group read into the caller's array: plan `i`'s values go to `starts[i]..starts[i + 1]`.
struct IntoArray {
    values: Vec<f64>,
    starts: Vec<usize>,
    errors: Vec<BindingIndexedError>,
    target: HeldFloat64Array,
}

/// Reads many plans, of any devices, into `values` (a Float64Array), one plan's
/// values after another's: no buffer or object per plan. Settles with the failed tags.
#[napi(
    ts_args_type = "plans: BindingPlan[], values: Float64Array, timeoutMs?: number | undefined | null",
    ts_return_type = "Promise<BindingPlansRead>"
)]
pub fn read_plans_into<'env>(
    env: &'env Env,
    plans: Vec<ClassInstance<'env, BindingPlan>>,
    values: Object<'env>,
    timeout_ms: Option<u32>,
) -> napi::Result<Object<'env>> {
    let mut starts = Vec::with_capacity(plans.len() + 1);
    starts.push(0);
    for plan in &plans {
        starts.push(starts.last().copied().unwrap_or(0) + plan.shared().value_count());
    }
    let needed = starts.last().copied().unwrap_or(0);
    let held = HeldFloat64Array::hold(env, &values).and_then(|(held, length)| match length >= needed {
        true => Ok(held),
        false => Err(Error::invalid_value(format!("values holds {length} numbers; the plans read {needed}"))),
    });
    let target = match held {
        Ok(held) => held,
        Err(e) => {
            let (promise, object) = Promise::new(env)?;
            promise.reject(env.raw(), &e);
            return Ok(object);
        }
    };
    let state = IntoArray { values: vec![f64::NAN; needed], starts, errors: Vec::new(), target };
    read_group(
        env,
        &plans,
        timeout_ms,
        state,
        |into, index, columns| {
            let out = &mut into.values[into.starts[index]..into.starts[index + 1]];
            let read = columns.values.len().min(out.len());
            out[..read].copy_from_slice(&columns.values[..read]);
            into.errors.extend(columns.errors.into_iter().map(|(tag, e)| BindingIndexedError {
                entry: index as u32,
                index: tag,
                error: JsError(e),
            }));
        },
        |env, promise, into| match into.target.write(env, &into.values) {
            Ok(()) => promise.resolve(env, BindingPlansRead { timestamp: now_ms(), errors: into.errors }),
            Err(e) => promise.reject(env, &e),
        },
    )
}
