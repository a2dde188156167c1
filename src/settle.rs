//! Promises settled from the runtime thread through one long-lived threadsafe
//! function per JavaScript environment. napi-rs's `async fn` makes a threadsafe
//! function, a deferred and two tasks for every call, which costs kilobytes and
//! microseconds per call; here a call costs a raw promise, one task and one queue
//! entry when it completes. All of the glue's `unsafe` for this lives here.

use std::cell::OnceCell;
use std::ffi::c_void;
use std::future::Future;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use napi::bindgen_prelude::{spawn, Object, ToNapiValue};
use napi::{sys, Env, Error, Result, Status};

struct Settler {
    tsfn: AtomicPtr<sys::napi_threadsafe_function__>,
    /// Set when Node finalizes the threadsafe function (environment teardown): it
    /// must not be called after that. Calls hold the read side while they call.
    closed: RwLock<bool>,
    /// Calls not yet settled. Changed on the JavaScript thread only: while it is
    /// above zero the threadsafe function keeps the event loop alive, so a process
    /// waits for its calls but never for an idle device.
    pending: AtomicUsize,
}

/// One call on its way back: its promise and the settler that will settle it.
struct Call {
    deferred: sys::napi_deferred,
    settler: Arc<Settler>,
}

// SAFETY: a napi_deferred is an opaque handle that only the JavaScript thread may use;
// the call carries it there untouched and uses it only in `settle_on_js_thread`.
unsafe impl Send for Call {}

struct Job {
    call: Call,
    /// Turns the finished call's value into JavaScript, on the JavaScript thread.
    produce: Box<dyn FnOnce(sys::napi_env) -> Result<sys::napi_value> + Send>,
}

thread_local! {
    /// One settler per JavaScript environment, each of which has a thread of its own.
    static SETTLER: OnceCell<Arc<Settler>> = const { OnceCell::new() };
}

fn check(status: sys::napi_status) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(Error::new(Status::from(status), "napi call failed"))
    }
}

fn settler(env: &Env) -> Result<Arc<Settler>> {
    SETTLER.with(|cell| {
        if let Some(settler) = cell.get() {
            return Ok(settler.clone());
        }
        let settler = Arc::new(Settler {
            tsfn: AtomicPtr::new(ptr::null_mut()),
            closed: RwLock::new(false),
            pending: AtomicUsize::new(0),
        });
        let finalize_data = Arc::into_raw(settler.clone()) as *mut c_void;
        let mut name = ptr::null_mut();
        let mut tsfn = ptr::null_mut();
        // SAFETY: on the JavaScript thread with its env. No JavaScript function is attached,
        // so only `settle_on_js_thread` runs per call; `finalize_data` is an Arc that
        // `closed_by_node` takes back.
        unsafe {
            check(sys::napi_create_string_utf8(env.raw(), c"bifrost-settle".as_ptr(), 14, &mut name))?;
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
                Some(settle_on_js_thread),
                &mut tsfn,
            ))?;
            // Idle until a call is pending: a device nobody reads must not keep Node running.
            check(sys::napi_unref_threadsafe_function(env.raw(), tsfn))?;
        }
        settler.tsfn.store(tsfn, Ordering::Release);
        let _ = cell.set(settler.clone());
        Ok(settler)
    })
}

/// Starts `work` on the runtime and returns a promise of its value, converted to
/// JavaScript on the JavaScript thread. Call on the JavaScript thread.
pub fn promise_of<T, F>(env: &Env, work: F) -> Result<Object<'_>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let settler = settler(env)?;
    let mut deferred = ptr::null_mut();
    let mut promise = ptr::null_mut();
    // SAFETY: on the JavaScript thread with its env.
    unsafe {
        check(sys::napi_create_promise(env.raw(), &mut deferred, &mut promise))?;
        if settler.pending.load(Ordering::Relaxed) == 0 {
            check(sys::napi_ref_threadsafe_function(env.raw(), settler.tsfn.load(Ordering::Acquire)))?;
        }
    }
    settler.pending.fetch_add(1, Ordering::Relaxed);
    let call = Call { deferred, settler };
    spawn(async move {
        let value = work.await;
        // SAFETY: `produce` runs in `settle_on_js_thread`, on the JavaScript thread, as
        // `to_napi_value` requires.
        let produce = Box::new(move |env| unsafe { T::to_napi_value(env, value) });
        send(Box::new(Job { call, produce }));
    });
    Ok(Object::from_raw(env.raw(), promise))
}

/// Queues a finished call for the JavaScript thread. After teardown nothing can
/// observe its promise, so the job is dropped.
fn send(job: Box<Job>) {
    let settler = job.call.settler.clone();
    let closed = settler.closed.read().unwrap_or_else(|e| e.into_inner());
    if *closed {
        return;
    }
    let data = Box::into_raw(job);
    // SAFETY: callable from any thread, and the function is not finalized while `closed`
    // is read-locked; a refused job is taken back and dropped.
    let status = unsafe {
        sys::napi_call_threadsafe_function(
            settler.tsfn.load(Ordering::Acquire),
            data.cast(),
            sys::ThreadsafeFunctionCallMode::nonblocking,
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: refused, so the pointer is still ours alone.
        drop(unsafe { Box::from_raw(data) });
    }
}

/// The threadsafe function's callback: resolves one call's promise.
unsafe extern "C" fn settle_on_js_thread(
    env: sys::napi_env,
    _js: sys::napi_value,
    _context: *mut c_void,
    data: *mut c_void,
) {
    // SAFETY: `data` is the Box<Job> that `send` leaked for this call.
    let job: Box<Job> = unsafe { Box::from_raw(data.cast()) };
    if env.is_null() {
        return; // the environment is being torn down
    }
    let Job { call: Call { deferred, settler }, produce } = *job;
    // SAFETY: on the JavaScript thread; each deferred is settled exactly once, here. The
    // bindings never fail a call (errors are values), so a failure here is a conversion bug.
    unsafe {
        match produce(env) {
            Ok(value) => sys::napi_resolve_deferred(env, deferred, value),
            Err(e) => {
                let mut message = ptr::null_mut();
                let mut error = ptr::null_mut();
                sys::napi_create_string_utf8(env, e.reason.as_ptr().cast(), e.reason.len() as isize, &mut message);
                sys::napi_create_error(env, ptr::null_mut(), message, &mut error);
                sys::napi_reject_deferred(env, deferred, error)
            }
        };
        if settler.pending.fetch_sub(1, Ordering::Relaxed) == 1 {
            sys::napi_unref_threadsafe_function(env, settler.tsfn.load(Ordering::Acquire));
        }
    }
}

/// Node finalizes the threadsafe function at environment teardown: no call may follow.
unsafe extern "C" fn closed_by_node(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the Arc that `settler` leaked as finalize data.
    let settler: Arc<Settler> = unsafe { Arc::from_raw(data.cast()) };
    *settler.closed.write().unwrap_or_else(|e| e.into_inner()) = true;
}
