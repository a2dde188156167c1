//! The JavaScript thread's side of every call: raw promises, `BifrostError`s
//! made here, outcomes turned into JavaScript values, and work posted back to
//! the JavaScript thread from the runtime's threads through one long-lived
//! threadsafe function per environment. napi-rs's `async fn` and `JsDeferred`
//! cost a threadsafe function, tasks and microseconds per call; a call here
//! costs a raw promise and, from the runtime thread, one queue entry.
//! All of the glue's napi `unsafe` for this lives here.

use std::cell::{Cell, OnceCell};
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, RwLock};

use bifrost_core::{Error, ErrorCode};
use bifrost_engine::{Completion, Outcome, TypedValue};
use napi::bindgen_prelude::{Either, Object, ToNapiValue};
use napi::{sys, Env, Result, Status};

use crate::{CopiedBuffer, JsValue};

/// What a thread running JavaScript keeps for this addon.
struct JsThread {
    env: sys::napi_env,
    /// Runs posted work on this thread; referenced only while calls are pending.
    tsfn: Arc<Poster>,
    /// Calls not yet settled: while above zero the process stays alive for them,
    /// but an idle device never keeps it running.
    pending: Cell<usize>,
    /// The `BifrostError` class, once the TypeScript layer registered it.
    error_class: Cell<sys::napi_ref>,
    /// Async context in which callbacks from libuv run JavaScript (microtasks, async hooks).
    async_resource: OnceCell<(sys::napi_ref, sys::napi_async_context)>,
}

struct Poster {
    tsfn: AtomicPtr<sys::napi_threadsafe_function__>,
    /// Set when Node finalizes the threadsafe function (environment teardown):
    /// it must not be called after that. Posters hold the read side while they call.
    closed: RwLock<bool>,
}

thread_local! {
    /// Set on a thread running JavaScript once it first calls the addon.
    static JS_THREAD: OnceCell<JsThread> = const { OnceCell::new() };
}

fn check(status: sys::napi_status) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::new(Status::from(status), "napi call failed"))
    }
}

/// Prepares this thread's state; every binding that starts a call goes through it.
pub fn enter(env: &Env) -> Result<()> {
    JS_THREAD.with(|cell| {
        if cell.get().is_some() {
            return Ok(());
        }
        let poster = Arc::new(Poster { tsfn: AtomicPtr::new(ptr::null_mut()), closed: RwLock::new(false) });
        let finalize_data = Arc::into_raw(poster.clone()) as *mut c_void;
        let mut name = ptr::null_mut();
        let mut tsfn = ptr::null_mut();
        // SAFETY: on the JavaScript thread with its env. No JavaScript function is attached,
        // so only `run_posted` runs per call; `finalize_data` is an Arc that `closed_by_node` takes back.
        unsafe {
            check(sys::napi_create_string_utf8(env.raw(), c"bifrost".as_ptr(), 7, &mut name))?;
            check(sys::napi_create_threadsafe_function(
                env.raw(),
                ptr::null_mut(),
                ptr::null_mut(),
                name,
                0,
                1,
                finalize_data,
                Some(closed_by_node),
                ptr::null_mut(),
                Some(run_posted),
                &mut tsfn,
            ))?;
            check(sys::napi_unref_threadsafe_function(env.raw(), tsfn))?;
        }
        poster.tsfn.store(tsfn, Ordering::Release);
        let _ = cell.set(JsThread {
            env: env.raw(),
            tsfn: poster,
            pending: Cell::new(0),
            error_class: Cell::new(ptr::null_mut()),
            async_resource: OnceCell::new(),
        });
        Ok(())
    })
}

/// This thread's env, when it runs JavaScript.
pub fn js_env() -> Option<sys::napi_env> {
    JS_THREAD.with(|cell| cell.get().map(|t| t.env))
}

/// Keeps the process alive while calls are pending (on the JavaScript thread).
fn hold(delta: isize) {
    JS_THREAD.with(|cell| {
        let Some(thread) = cell.get() else { return };
        let before = thread.pending.get();
        let after = before.saturating_add_signed(delta);
        thread.pending.set(after);
        let tsfn = thread.tsfn.tsfn.load(Ordering::Acquire);
        // SAFETY: on the JavaScript thread that owns the threadsafe function.
        unsafe {
            if before == 0 && after > 0 {
                sys::napi_ref_threadsafe_function(thread.env, tsfn);
            } else if before > 0 && after == 0 {
                sys::napi_unref_threadsafe_function(thread.env, tsfn);
            }
        }
    })
}

/// Work for the JavaScript thread, posted from any thread.
pub type Posted = Box<dyn FnOnce(sys::napi_env) + Send>;

/// A poster for this JavaScript thread, to hand to work on the runtime's threads.
#[derive(Clone)]
pub struct ToJs(Arc<Poster>);

impl ToJs {
    /// Call on the JavaScript thread.
    pub fn here() -> Option<ToJs> {
        JS_THREAD.with(|cell| cell.get().map(|t| ToJs(t.tsfn.clone())))
    }

    /// Runs `work` on the JavaScript thread: in place when called there, else posted.
    pub fn run(self, work: impl FnOnce(sys::napi_env) + Send + 'static) {
        match js_env() {
            Some(env) => work(env),
            None => self.post(Box::new(work)),
        }
    }

    /// Runs `work` on the JavaScript thread. After teardown nothing can observe it, so it is dropped.
    pub fn post(self, work: Posted) {
        let closed = self.0.closed.read().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return;
        }
        let data = Box::into_raw(Box::new(work));
        // SAFETY: callable from any thread, and the function is not finalized while
        // `closed` is read-locked; a refused job is taken back and dropped.
        let status = unsafe {
            sys::napi_call_threadsafe_function(
                self.0.tsfn.load(Ordering::Acquire),
                data.cast(),
                sys::ThreadsafeFunctionCallMode::nonblocking,
            )
        };
        if status != sys::Status::napi_ok {
            // SAFETY: refused, so the pointer is still ours alone.
            drop(unsafe { Box::from_raw(data) });
        }
    }
}

unsafe extern "C" fn run_posted(env: sys::napi_env, _js: sys::napi_value, _context: *mut c_void, data: *mut c_void) {
    // SAFETY: `data` is the Box<Posted> that `post` leaked.
    let work: Box<Posted> = unsafe { Box::from_raw(data.cast()) };
    if env.is_null() {
        return; // the environment is being torn down
    }
    // A panic must not cross into C: the work is lost, and its promise (if any) is rejected when dropped.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(env)));
}

unsafe extern "C" fn closed_by_node(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the Arc that `enter` leaked as finalize data.
    let poster: Arc<Poster> = unsafe { Arc::from_raw(data.cast()) };
    *poster.closed.write().unwrap_or_else(|e| e.into_inner()) = true;
}

/// Registers the class errors are made of (`BifrostError`).
pub fn set_error_class(env: &Env, class: sys::napi_value) -> Result<()> {
    enter(env)?;
    let mut reference = ptr::null_mut();
    // SAFETY: on the JavaScript thread with its env; the reference lives as long as the env.
    unsafe { check(sys::napi_create_reference(env.raw(), class, 1, &mut reference))? };
    JS_THREAD.with(|cell| cell.get().map(|t| t.error_class.replace(reference)));
    Ok(())
}

/// A `BifrostError` (a plain `Error` with a `code` before the class is registered).
pub fn make_error(env: sys::napi_env, error: &Error) -> sys::napi_value {
    let class = JS_THREAD.with(|cell| cell.get().map_or(ptr::null_mut(), |t| t.error_class.get()));
    // SAFETY: on the JavaScript thread with its env, inside a handle scope.
    unsafe {
        let code = str_value(env, error.code.as_str());
        let message = str_value(env, &error.message);
        let mut made = ptr::null_mut();
        let mut constructor = ptr::null_mut();
        if !class.is_null() && sys::napi_get_reference_value(env, class, &mut constructor) == sys::Status::napi_ok {
            let mut details = ptr::null_mut();
            sys::napi_create_object(env, &mut details);
            let detail = |name: &std::ffi::CStr, value: u32| {
                let mut number = ptr::null_mut();
                sys::napi_create_uint32(env, value, &mut number);
                sys::napi_set_named_property(env, details, name.as_ptr(), number);
            };
            if let Some(exception) = error.exception_code {
                detail(c"exceptionCode", u32::from(exception));
            }
            if let Some(status) = error.opcua {
                detail(c"statusCode", status.code);
                let mut name = ptr::null_mut();
                sys::napi_create_string_utf8(env, status.name.as_ptr().cast(), status.name.len() as isize, &mut name);
                sys::napi_set_named_property(env, details, c"statusName".as_ptr(), name);
            }
            if let Some(cip) = error.cip {
                detail(c"status", u32::from(cip.status));
                if let Some(ext) = cip.ext_status {
                    detail(c"extStatus", u32::from(ext));
                }
            }
            let args = [code, message, details];
            // An error made here has no JavaScript caller to point at: capturing the stack
            // would cost most of its making (four fifths, measured) and show nothing useful.
            let limit = StackTraceLimit::zero(env);
            let status = sys::napi_new_instance(env, constructor, 3, args.as_ptr(), &mut made);
            limit.restore(env);
            if status == sys::Status::napi_ok {
                return made;
            }
        }
        sys::napi_create_error(env, code, message, &mut made);
        made
    }
}

/// `Error.stackTraceLimit`, set to 0 while an error is made and restored after.
struct StackTraceLimit {
    error: sys::napi_value,
    before: sys::napi_value,
}

impl StackTraceLimit {
    /// # Safety
    /// On the JavaScript thread with its env, inside a handle scope.
    unsafe fn zero(env: sys::napi_env) -> Option<StackTraceLimit> {
        unsafe {
            let (mut global, mut error, mut before, mut zero) =
                (ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
            sys::napi_get_global(env, &mut global);
            if sys::napi_get_named_property(env, global, c"Error".as_ptr(), &mut error) != sys::Status::napi_ok
                || sys::napi_get_named_property(env, error, c"stackTraceLimit".as_ptr(), &mut before)
                    != sys::Status::napi_ok
            {
                return None;
            }
            sys::napi_create_uint32(env, 0, &mut zero);
            sys::napi_set_named_property(env, error, c"stackTraceLimit".as_ptr(), zero);
            Some(StackTraceLimit { error, before })
        }
    }
}

trait Restore {
    /// # Safety
    /// As for [`StackTraceLimit::zero`].
    unsafe fn restore(self, env: sys::napi_env);
}

impl Restore for Option<StackTraceLimit> {
    unsafe fn restore(self, env: sys::napi_env) {
        if let Some(limit) = self {
            unsafe { sys::napi_set_named_property(env, limit.error, c"stackTraceLimit".as_ptr(), limit.before) };
        }
    }
}

/// # Safety
/// On the JavaScript thread with its env, inside a handle scope.
unsafe fn str_value(env: sys::napi_env, text: &str) -> sys::napi_value {
    let mut value = ptr::null_mut();
    unsafe { sys::napi_create_string_utf8(env, text.as_ptr().cast(), text.len() as isize, &mut value) };
    value
}

/// A `BifrostError` on its way to JavaScript.
pub struct JsError(pub Error);

impl ToNapiValue for JsError {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        Ok(make_error(env, &val.0))
    }
}

impl napi::bindgen_prelude::TypeName for JsError {
    fn type_name() -> &'static str {
        "Error"
    }
    fn value_type() -> napi::ValueType {
        napi::ValueType::Object
    }
}

/// A result as a synchronous binding returns it: the value, or its `BifrostError` (bindings never throw).
pub fn either<T>(result: std::result::Result<T, Error>) -> Either<T, JsError> {
    match result {
        Ok(value) => Either::A(value),
        Err(e) => Either::B(JsError(e)),
    }
}

/// How a call's outcome reaches JavaScript.
pub enum Shape {
    /// `read(tag)`: the value, or a rejection with the tag's error.
    Value,
    /// `readTags`, `writeTags`: one `TagResult` per tag, named as given.
    TagResults(Vec<String>),
    /// A prepared read: a `BindingColumnarRead`.
    Columns,
    /// `close()`: `undefined`.
    Done,
    /// `browse()`: the tag listing.
    Browse,
}

/// A raw promise, settled once on the JavaScript thread. While it is pending the
/// process stays alive. Dropped unsettled (a bug, or a panic), it rejects.
pub struct Promise {
    deferred: sys::napi_deferred,
    to_js: ToJs,
    settled: bool,
}

// SAFETY: a napi_deferred is an opaque handle only the JavaScript thread may use; it is
// settled there (at once when settled there, else posted back).
unsafe impl Send for Promise {}

impl Promise {
    pub fn new(env: &Env) -> Result<(Promise, Object<'_>)> {
        enter(env)?;
        let mut deferred = ptr::null_mut();
        let mut promise = ptr::null_mut();
        // SAFETY: on the JavaScript thread with its env.
        unsafe { check(sys::napi_create_promise(env.raw(), &mut deferred, &mut promise))? };
        let to_js = ToJs::here().ok_or_else(|| napi::Error::from_reason("no JavaScript thread"))?;
        hold(1);
        Ok((Promise { deferred, to_js, settled: false }, Object::from_raw(env.raw(), promise)))
    }

    /// Resolves with `value`, or rejects with the error converting it gave.
    /// Call on the JavaScript thread, inside a handle scope.
    pub fn resolve<T: ToNapiValue>(mut self, env: sys::napi_env, value: T) {
        self.settled = true;
        hold(-1);
        // SAFETY: on the JavaScript thread inside a handle scope; settled once, here.
        unsafe {
            match T::to_napi_value(env, value) {
                Ok(value) => sys::napi_resolve_deferred(env, self.deferred, value),
                Err(e) => {
                    let error = Error::new(ErrorCode::Proto, format!("internal error: {}", e.reason));
                    sys::napi_reject_deferred(env, self.deferred, make_error(env, &error))
                }
            };
        }
    }

    /// Rejects with a `BifrostError`. Call on the JavaScript thread, inside a handle scope.
    pub fn reject(mut self, env: sys::napi_env, error: &Error) {
        self.settled = true;
        hold(-1);
        // SAFETY: as in `resolve`.
        unsafe { sys::napi_reject_deferred(env, self.deferred, make_error(env, error)) };
    }

    /// Settles from any thread: `settle` runs on the JavaScript thread.
    pub fn settle_with(self, settle: impl FnOnce(sys::napi_env, Promise) + Send + 'static) {
        self.to_js.clone().run(move |env| settle(env, self))
    }
}

impl Drop for Promise {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let unsettled = Promise { deferred: self.deferred, to_js: self.to_js.clone(), settled: false };
        self.settled = true;
        unsettled.settle_with(|env, promise| {
            promise.reject(env, &Error::proto("internal error: the call ended without a result (please report it)"))
        });
    }
}

/// A caller's `Float64Array` kept alive while a call runs, and written once when
/// it settles (on the JavaScript thread, so no JavaScript runs meanwhile).
pub struct HeldFloat64Array(sys::napi_ref);

// SAFETY: a napi_ref is an opaque handle; it is made, read and deleted only on the
// JavaScript thread (at the call, and in the settle closure the call posts there).
unsafe impl Send for HeldFloat64Array {}

/// The data and length of `value` when it is a `Float64Array`.
///
/// # Safety
/// On the JavaScript thread with its env, inside a handle scope.
unsafe fn float64_array(env: sys::napi_env, value: sys::napi_value) -> Option<(*mut f64, usize)> {
    let mut is_typed_array = false;
    let mut kind = 0;
    let mut length = 0;
    let mut data = ptr::null_mut();
    // SAFETY: the caller's; the out pointers are valid locals.
    unsafe {
        if sys::napi_is_typedarray(env, value, &mut is_typed_array) != sys::Status::napi_ok || !is_typed_array {
            return None;
        }
        let status = sys::napi_get_typedarray_info(
            env,
            value,
            &mut kind,
            &mut length,
            &mut data,
            ptr::null_mut(),
            ptr::null_mut(),
        );
        (status == sys::Status::napi_ok && kind == sys::TypedarrayType::float64_array).then_some((data.cast(), length))
    }
}

impl HeldFloat64Array {
    /// Holds `array`; returns its length too. Call on the JavaScript thread.
    pub fn hold(env: &Env, array: &Object) -> std::result::Result<(HeldFloat64Array, usize), Error> {
        let not_array = || Error::invalid_value("values must be a Float64Array");
        let mut reference = ptr::null_mut();
        // SAFETY: on the JavaScript thread with its env, during the call that passed `array`.
        unsafe {
            let (_, length) = float64_array(env.raw(), napi::JsValue::raw(array)).ok_or_else(not_array)?;
            check(sys::napi_create_reference(env.raw(), napi::JsValue::raw(array), 1, &mut reference))
                .map_err(|_| not_array())?;
            Ok((HeldFloat64Array(reference), length))
        }
    }

    /// Copies `values` to the array's start and lets it go. Fails when the array
    /// has become shorter than `values` (its buffer was transferred meanwhile).
    /// Call on the JavaScript thread, inside a handle scope.
    pub fn write(self, env: sys::napi_env, values: &[f64]) -> std::result::Result<(), Error> {
        let mut array = ptr::null_mut();
        // SAFETY: on the JavaScript thread; the reference was made by `hold` and is deleted once, here.
        unsafe {
            let found = sys::napi_get_reference_value(env, self.0, &mut array) == sys::Status::napi_ok;
            let target = if found { float64_array(env, array) } else { None };
            sys::napi_delete_reference(env, self.0);
            match target {
                Some((data, length)) if length >= values.len() => {
                    ptr::copy_nonoverlapping(values.as_ptr(), data, values.len());
                    Ok(())
                }
                _ => Err(Error::invalid_value("the values array was detached or shortened while the read ran")),
            }
        }
    }
}

/// A call's promise, settled with its outcome in the shape its binding promised.
pub struct JsCompletion {
    promise: Promise,
    shape: Shape,
}

impl JsCompletion {
    /// A new promise for a call; returns the completion that settles it and the promise.
    pub fn new(env: &Env, shape: Shape) -> Result<(Box<JsCompletion>, Object<'_>)> {
        let (promise, object) = Promise::new(env)?;
        Ok((Box::new(JsCompletion { promise, shape }), object))
    }
}

impl Completion for JsCompletion {
    fn complete(self: Box<Self>, outcome: Outcome) {
        let JsCompletion { promise, shape } = *self;
        promise.settle_with(move |env, promise| settle(env, promise, shape, outcome));
    }
}

fn settle(env: sys::napi_env, promise: Promise, shape: Shape, outcome: Outcome) {
    let settled = match (shape, outcome) {
        (Shape::Done, _) => Ok(Settled::Undefined),
        (_, Outcome::Closed) => Err(Error::closed("the device was closed")),
        (Shape::Value, Outcome::Values(mut values)) => match values.pop() {
            Some(Ok(value)) => Ok(Settled::Value(value)),
            Some(Err(e)) => Err(e),
            None => Err(Error::proto("no result")),
        },
        (Shape::TagResults(tags), Outcome::Values(values)) => {
            Ok(Settled::TagResults(tag_results(tags, values.into_iter().map(|r| r.map(|v| Some(JsValue(v)))))))
        }
        (Shape::TagResults(tags), Outcome::Written(results)) => {
            Ok(Settled::TagResults(tag_results(tags, results.into_iter().map(|r| r.map(|()| None)))))
        }
        (Shape::Columns, Outcome::Columns(columns)) => Ok(Settled::Columns(to_binding_columns(columns))),
        (Shape::Browse, Outcome::Browsed(listing)) => listing.map(|tags| {
            Settled::Browsed(
                tags.into_iter()
                    .map(|t| BindingTagInfo {
                        name: t.name,
                        r#type: t.data_type,
                        dimensions: t.dimensions,
                        display_name: t.display_name,
                    })
                    .collect(),
            )
        }),
        _ => Err(Error::proto("internal error: a call ended with the wrong kind of result (please report it)")),
    };
    match settled {
        Ok(Settled::Undefined) => promise.resolve(env, ()),
        Ok(Settled::Value(value)) => promise.resolve(env, JsValue(value)),
        Ok(Settled::TagResults(results)) => promise.resolve(env, results),
        Ok(Settled::Columns(columns)) => promise.resolve(env, columns),
        Ok(Settled::Browsed(tags)) => promise.resolve(env, tags),
        Err(e) => promise.reject(env, &e),
    }
}

/// One result per tag, in order: a value read, nothing for a write, or the tag's error.
fn tag_results(
    tags: Vec<String>,
    results: impl Iterator<Item = std::result::Result<Option<JsValue>, Error>>,
) -> Vec<BindingTagResult> {
    let now = now_ms();
    tags.into_iter()
        .zip(results)
        .map(|(tag, result)| match result {
            Ok(value) => BindingTagResult::good(tag, value, now),
            Err(e) => BindingTagResult::bad(tag, e, now),
        })
        .collect()
}

enum Settled {
    Undefined,
    Value(TypedValue),
    TagResults(Vec<BindingTagResult>),
    Columns(BindingColumnarRead),
    Browsed(Vec<BindingTagInfo>),
}

/// One tag of a device's listing.
#[napi_derive::napi(object, object_from_js = false)]
pub struct BindingTagInfo {
    pub name: String,
    pub r#type: String,
    pub dimensions: Vec<u32>,
    pub display_name: Option<String>,
}

/// Runs `work` as a callback from outside JavaScript (libuv): in a handle scope
/// and the addon's async context, so the promises it settles run their
/// reactions when it returns. `work` must not run JavaScript while it holds borrows.
pub fn callback_scope(work: impl FnOnce(sys::napi_env)) {
    let Some(env) = js_env() else { return };
    JS_THREAD.with(|cell| {
        let Some(thread) = cell.get() else { return };
        // SAFETY: on the JavaScript thread, called from libuv with no JavaScript on the stack.
        unsafe {
            let mut handles = ptr::null_mut();
            sys::napi_open_handle_scope(env, &mut handles);
            let (resource_ref, context) = *thread.async_resource.get_or_init(|| {
                let mut resource = ptr::null_mut();
                sys::napi_create_object(env, &mut resource);
                let mut reference = ptr::null_mut();
                sys::napi_create_reference(env, resource, 1, &mut reference);
                let name = str_value(env, "bifrost");
                let mut context = ptr::null_mut();
                sys::napi_async_init(env, resource, name, &mut context);
                (reference, context)
            });
            let mut resource = ptr::null_mut();
            sys::napi_get_reference_value(env, resource_ref, &mut resource);
            let mut scope = ptr::null_mut();
            sys::napi_open_callback_scope(env, resource, context, &mut scope);
            // A panic must not cross into C; the calls it interrupted reject when their promises drop.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(env)));
            // Closing the scope runs the microtasks: awaiting code resumes here.
            sys::napi_close_callback_scope(env, scope);
            sys::napi_close_handle_scope(env, handles);
        }
    })
}

/// Work to run once the JavaScript job now running is over, and whether a microtask is queued for it.
type EndOfJob = (Vec<fn()>, bool);

thread_local! {
    static AT_END_OF_JOB: std::cell::RefCell<EndOfJob> = const { std::cell::RefCell::new((Vec::new(), false)) };
    /// `queueMicrotask` and the function it runs, kept for the thread's life.
    static MICROTASK: OnceCell<(sys::napi_ref, sys::napi_ref)> = const { OnceCell::new() };
}

/// Runs `task` in a microtask once the JavaScript that runs now (a call, the
/// continuations it resolves) is over: calls made together share it. On the JavaScript thread.
pub fn at_end_of_job(env: sys::napi_env, task: fn()) {
    let queue = AT_END_OF_JOB.with(|pending| {
        let mut pending = pending.borrow_mut();
        if !pending.0.contains(&task) {
            pending.0.push(task);
        }
        !std::mem::replace(&mut pending.1, true)
    });
    if !queue {
        return;
    }
    // SAFETY: on the JavaScript thread with its env, inside a handle scope.
    let queued = unsafe {
        let (queue_ref, run_ref) = MICROTASK.with(|cell| {
            *cell.get_or_init(|| {
                let (mut global, mut queue, mut run) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
                sys::napi_get_global(env, &mut global);
                sys::napi_get_named_property(env, global, c"queueMicrotask".as_ptr(), &mut queue);
                sys::napi_create_function(env, c"bifrost".as_ptr(), 7, Some(run_end_of_job), ptr::null_mut(), &mut run);
                let (mut queue_ref, mut run_ref) = (ptr::null_mut(), ptr::null_mut());
                sys::napi_create_reference(env, queue, 1, &mut queue_ref);
                sys::napi_create_reference(env, run, 1, &mut run_ref);
                (queue_ref, run_ref)
            })
        });
        let (mut global, mut queue, mut run, mut result) =
            (ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        sys::napi_get_global(env, &mut global);
        sys::napi_get_reference_value(env, queue_ref, &mut queue);
        sys::napi_get_reference_value(env, run_ref, &mut run);
        sys::napi_call_function(env, global, queue, 1, &run, &mut result) == sys::Status::napi_ok
    };
    if !queued {
        run_end_of_job_tasks(); // no microtask queue to use: run it now rather than never
    }
}

fn run_end_of_job_tasks() {
    let tasks = AT_END_OF_JOB.with(|pending| {
        let mut pending = pending.borrow_mut();
        pending.1 = false;
        std::mem::take(&mut pending.0)
    });
    for task in tasks {
        // A panic must not cross into JavaScript.
        let _ = std::panic::catch_unwind(task);
    }
}

unsafe extern "C" fn run_end_of_job(_env: sys::napi_env, _info: sys::napi_callback_info) -> sys::napi_value {
    run_end_of_job_tasks();
    ptr::null_mut()
}

pub fn now_ms() -> f64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// One tag's outcome, as `TagResult`.
#[napi_derive::napi(object, object_from_js = false)]
pub struct BindingTagResult {
    pub tag: String,
    #[napi(ts_type = "boolean | number | bigint | string | Array<unknown>")]
    pub value: Option<JsValue>,
    pub quality: String,
    #[napi(ts_type = "Error")]
    pub error: Option<JsError>,
    pub timestamp: f64,
}

impl BindingTagResult {
    pub(crate) fn good(tag: String, value: Option<JsValue>, timestamp: f64) -> Self {
        BindingTagResult { tag, value, quality: "good".into(), error: None, timestamp }
    }

    pub(crate) fn bad(tag: String, error: Error, timestamp: f64) -> Self {
        BindingTagResult { tag, value: None, quality: "bad".into(), error: Some(JsError(error)), timestamp }
    }
}

/// Columnar reads in one `ArrayBuffer`, so a delivery allocates one backing store
/// and no object per read: an 8-byte header (the read count as a u32, then 0),
/// then one block per read, each starting at a multiple of 8 bytes:
/// - 24 bytes: the completion time as an f64 of milliseconds since the epoch,
///   then `valueCount`, `tagCount`, the read's id (a poller's handle, a plan's
///   position in a group read, 0 alone) and `hasIndices` (0 or 1), each a u32;
/// - `valueCount` f64 values, `tagCount + 1` u32 offsets, `tagCount` quality
///   bytes (0 good, 1 bad);
/// - when `hasIndices`, from the next multiple of 4: `tagCount` u32 positions
///   of the tags delivered in the read's tag list (a deadband's changes).
///
/// All numbers are in platform byte order. Reads where tags failed come as
/// `{ buffer, errors }`, one error per failed tag, `entry` naming its read.
pub enum BindingColumnarRead {
    Good(CopiedBuffer),
    Failed(BindingColumnsWithErrors),
}

impl ToNapiValue for BindingColumnarRead {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        unsafe {
            match val {
                BindingColumnarRead::Good(buffer) => CopiedBuffer::to_napi_value(env, buffer),
                BindingColumnarRead::Failed(read) => BindingColumnsWithErrors::to_napi_value(env, read),
            }
        }
    }
}

impl napi::bindgen_prelude::TypeName for BindingColumnarRead {
    fn type_name() -> &'static str {
        "ArrayBuffer | BindingColumnsWithErrors"
    }
    fn value_type() -> napi::ValueType {
        napi::ValueType::Object
    }
}

/// Columnar reads where some tags failed.
#[napi_derive::napi(object, object_from_js = false)]
pub struct BindingColumnsWithErrors {
    #[napi(ts_type = "ArrayBuffer")]
    pub buffer: CopiedBuffer,
    /// Sparse: one entry per failed tag, `entry` naming the read and `index` the tag in it.
    pub errors: Vec<BindingIndexedError>,
}

#[napi_derive::napi(object, object_from_js = false)]
pub struct BindingIndexedError {
    pub entry: u32,
    pub index: u32,
    #[napi(ts_type = "Error")]
    pub error: JsError,
}

/// Writes reads into the layout of [`BindingColumnarRead`].
pub struct ColumnsWriter {
    buffer: Vec<u8>,
    errors: Vec<BindingIndexedError>,
    count: u32,
}

impl ColumnsWriter {
    pub fn new() -> ColumnsWriter {
        ColumnsWriter { buffer: vec![0; 8], errors: Vec::new(), count: 0 }
    }

    /// Appends one read.
    pub fn push(&mut self, id: u32, timestamp_ms: f64, columns: bifrost_engine::Columns, indices: Option<&[u32]>) {
        let tag_count = columns.tags();
        let buffer = &mut self.buffer;
        buffer.reserve(32 + columns.values.len() * 8 + tag_count * 9);
        buffer.extend(timestamp_ms.to_ne_bytes());
        for word in [columns.values.len() as u32, tag_count as u32, id, indices.is_some() as u32] {
            buffer.extend(word.to_ne_bytes());
        }
        buffer.extend(columns.values.iter().flat_map(|v| v.to_ne_bytes()));
        buffer.extend(columns.offsets.iter().flat_map(|o| o.to_ne_bytes()));
        buffer.extend(columns.good().map(|good| !good as u8));
        if let Some(indices) = indices {
            buffer.resize(buffer.len().next_multiple_of(4), 0);
            buffer.extend(indices.iter().flat_map(|i| i.to_ne_bytes()));
        }
        buffer.resize(buffer.len().next_multiple_of(8), 0);
        let entry = self.count;
        self.errors.extend(columns.errors.into_iter().map(|(index, e)| BindingIndexedError {
            entry,
            index,
            error: JsError(e),
        }));
        self.count += 1;
    }

    pub fn finish(mut self) -> BindingColumnarRead {
        self.buffer[..4].copy_from_slice(&self.count.to_ne_bytes());
        let buffer = CopiedBuffer(self.buffer);
        if self.errors.is_empty() {
            BindingColumnarRead::Good(buffer)
        } else {
            BindingColumnarRead::Failed(BindingColumnsWithErrors { buffer, errors: self.errors })
        }
    }
}

/// One read, finished now.
pub fn to_binding_columns(columns: bifrost_engine::Columns) -> BindingColumnarRead {
    let mut writer = ColumnsWriter::new();
    writer.push(0, now_ms(), columns, None);
    writer.finish()
}
