//! The device bindings, the same for every protocol: `connect` picks the
//! protocol by URL scheme and the driver by the `driver` option; a device's
//! calls return raw promises that its driver settles.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bifrost_core::url::DeviceUrl;
use bifrost_core::{Error, Value};
use std::future::Future;

use bifrost_engine::{Device, Driver, Framing, LinkConfig, Plan};
use napi::bindgen_prelude::{Either, Object};
use napi::Env;
use napi_derive::napi;

use crate::js::{either, JsCompletion, JsError, Promise, Shape, ToJs};
use crate::WriteValue;

/// Where a device's socket is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// On the JavaScript thread, by the event loop (Linux, TCP): no thread hop per request.
    EventLoop,
    /// On the runtime's thread: serial lines, other platforms, and isolation from a busy event loop.
    Runtime,
}

impl DriverChoice {
    /// The `driver` URL key (`event-loop` or `runtime`); the default is the event
    /// loop where it is built, and `BIFROST_DRIVER` can change the default.
    fn take(url: &mut DeviceUrl) -> Result<DriverChoice, Error> {
        let default = std::env::var("BIFROST_DRIVER").ok();
        let asked = url.take::<String>("driver")?.or(default);
        match asked.as_deref() {
            None if cfg!(target_os = "linux") => Ok(DriverChoice::EventLoop),
            None => Ok(DriverChoice::Runtime),
            Some("event-loop") if cfg!(target_os = "linux") => Ok(DriverChoice::EventLoop),
            Some("event-loop") => {
                Err(Error::invalid_value("driver=event-loop is built for Linux only; use driver=runtime"))
            }
            Some("runtime") => Ok(DriverChoice::Runtime),
            Some(other) => {
                Err(Error::invalid_value(format!("URL option 'driver' must be event-loop or runtime, not '{other}'")))
            }
        }
    }
}

/// Opens a TCP device's link on the driver chosen and settles `promise` with the
/// device `make` builds on it (on the JavaScript thread), once the protocol's
/// set-up is done; `runtime` opens the link on the runtime's thread instead.
pub(crate) fn open_tcp<F, R>(
    env: napi::sys::napi_env,
    framing: F,
    (link, address): (LinkConfig, String),
    driver: DriverChoice,
    promise: Promise,
    runtime: impl FnOnce(F) -> R + Send + 'static,
    make: impl FnOnce(Box<dyn Driver<F>>) -> Box<dyn Device> + Send + 'static,
) where
    F: Framing + Send + 'static,
    R: Future<Output = Result<Box<dyn Driver<F> + Send>, Error>> + Send + 'static,
{
    #[cfg(target_os = "linux")]
    if driver == DriverChoice::EventLoop {
        let on_driver =
            Box::new(move |env, opened: Result<crate::event_loop::EventLoopDriver<F>, Error>| match opened {
                Ok(driver) => promise.resolve(env, BindingDevice::new(make(Box::new(driver)))),
                Err(e) => promise.reject(env, &e),
            });
        return crate::event_loop::EventLoopDriver::open(env, framing, link, address, on_driver);
    }
    let _ = (driver, link, address); // other platforms always run on the runtime
    let Some(to_js) = ToJs::here() else { return promise.reject(env, &Error::proto("no JavaScript thread")) };
    let opening = runtime(framing);
    napi::bindgen_prelude::spawn(async move {
        let opened = crate::guarded(opening).await.and_then(|driver| driver);
        to_js.post(Box::new(move |env| match opened {
            Ok(driver) => promise.resolve(env, BindingDevice::new(make(driver))),
            Err(e) => promise.reject(env, &e),
        }));
    });
}

/// A device's URL with `options`, kebab-case keys that override its query.
pub(crate) fn device_url(url: &str, options: HashMap<String, String>) -> Result<DeviceUrl, Error> {
    let mut url = DeviceUrl::parse(url)?;
    for (key, value) in options {
        url.set(&key, value);
    }
    Ok(url)
}

/// Opens a device from its URL; `options` are kebab-case keys that override the URL's query.
/// The promise resolves with the device, or rejects with a `BifrostError`.
#[napi(ts_return_type = "Promise<BindingDevice>")]
pub fn connect<'env>(env: &'env Env, url: String, options: HashMap<String, String>) -> napi::Result<Object<'env>> {
    let (promise, object) = Promise::new(env)?;
    let parsed = device_url(&url, options).and_then(|mut url| Ok((DriverChoice::take(&mut url)?, url)));
    match parsed {
        Ok((driver, url)) => match url.scheme.as_str() {
            "modbus-tcp" | "modbus-rtu-tcp" | "modbus-rtu" => crate::modbus::open(env, url, driver, promise),
            "eip" => crate::enip::open(env, url, driver, promise),
            "opc.tcp" => crate::opcua::open(env, url, driver, promise),
            other => promise.reject(env.raw(), &Error::address(format!("no native protocol for '{other}://'"))),
        },
        Err(e) => promise.reject(env.raw(), &e),
    }
    Ok(object)
}

/// A per-call timeout; `None` keeps the device's `request-timeout`. The TypeScript layer checks the range.
pub(crate) fn timeout(timeout_ms: Option<u32>) -> Option<Duration> {
    timeout_ms.map(|ms| Duration::from_millis(ms.max(1) as u64))
}

/// A connected device of any native protocol.
#[napi]
pub struct BindingDevice {
    device: Box<dyn Device>,
}

impl BindingDevice {
    pub fn new(device: Box<dyn Device>) -> Self {
        BindingDevice { device }
    }
}

#[napi]
impl BindingDevice {
    /// Reads one tag: resolves with its value, rejects with its `BifrostError`.
    #[napi(ts_return_type = "Promise<boolean | number | bigint | string | Array<unknown>>")]
    pub fn read<'env>(&self, env: &'env Env, tag: String, timeout_ms: Option<u32>) -> napi::Result<Object<'env>> {
        let (done, promise) = JsCompletion::new(env, Shape::Value)?;
        self.device.read(std::slice::from_ref(&tag), timeout(timeout_ms), done);
        Ok(promise)
    }

    /// Reads the tags in one planned, pipelined batch: one `TagResult` per tag, never rejects per tag.
    #[napi(ts_return_type = "Promise<Array<BindingTagResult>>")]
    pub fn read_tags<'env>(
        &self,
        env: &'env Env,
        tags: Vec<String>,
        timeout_ms: Option<u32>,
    ) -> napi::Result<Object<'env>> {
        let (done, promise) = JsCompletion::new(env, Shape::TagResults(tags.clone()))?;
        self.device.read(&tags, timeout(timeout_ms), done);
        Ok(promise)
    }

    /// Writes each tag: one `TagResult` per tag, never rejects per tag.
    #[napi(
        ts_args_type = "writes: Array<[string, boolean | number | bigint | string | Array<unknown>]>, timeoutMs?: number | undefined | null",
        ts_return_type = "Promise<Array<BindingTagResult>>"
    )]
    pub fn write_tags<'env>(
        &self,
        env: &'env Env,
        writes: Vec<(String, WriteValue)>,
        timeout_ms: Option<u32>,
    ) -> napi::Result<Object<'env>> {
        let tags = writes.iter().map(|(tag, _)| tag.clone()).collect();
        let (done, promise) = JsCompletion::new(env, Shape::TagResults(tags))?;
        let writes: Vec<(String, Value)> = writes.into_iter().map(|(tag, value)| (tag, value.0)).collect();
        self.device.write(writes, timeout(timeout_ms), done);
        Ok(promise)
    }

    /// Parses and plans the tags once; the plan's `read` then costs one call. A bad tag gives its `BifrostError`.
    #[napi(ts_return_type = "BindingPlan | Error")]
    pub fn prepare(&self, tags: Vec<String>) -> Either<BindingPlan, JsError> {
        either(self.device.prepare(&tags).map(|plan| BindingPlan { plan: plan.into() }))
    }

    /// Lists the device's tags, or a program's (`from`); rejects for a protocol that cannot.
    #[napi(ts_return_type = "Promise<Array<BindingTagInfo>>")]
    pub fn browse<'env>(
        &self,
        env: &'env Env,
        from: Option<String>,
        timeout_ms: Option<u32>,
    ) -> napi::Result<Object<'env>> {
        let (done, promise) = JsCompletion::new(env, Shape::Browse)?;
        self.device.browse(from.as_deref(), timeout(timeout_ms), done);
        Ok(promise)
    }

    /// Follows browse paths from `from` (or the protocol's root): one `TagResult` per path, its value the tag's address.
    #[napi(ts_return_type = "Promise<Array<BindingTagResult>>")]
    pub fn translate<'env>(
        &self,
        env: &'env Env,
        paths: Vec<String>,
        from: Option<String>,
        timeout_ms: Option<u32>,
    ) -> napi::Result<Object<'env>> {
        let (done, promise) = JsCompletion::new(env, Shape::TagResults(paths.clone()))?;
        self.device.translate(&paths, from.as_deref(), timeout(timeout_ms), done);
        Ok(promise)
    }

    /// Calls a method of an object with `args`; resolves with its outputs, rejects for a protocol without methods.
    #[napi(ts_return_type = "Promise<Array<unknown>>")]
    pub fn call<'env>(
        &self,
        env: &'env Env,
        object: String,
        method: String,
        args: Vec<WriteValue>,
        timeout_ms: Option<u32>,
    ) -> napi::Result<Object<'env>> {
        let (done, promise) = JsCompletion::new(env, Shape::Value)?;
        let args = args.into_iter().map(|arg| arg.0).collect();
        self.device.call(&object, &method, args, timeout(timeout_ms), done);
        Ok(promise)
    }

    /// Subscribes to the tags: the device reports their changes (see `BindingSubscription`).
    #[napi(ts_return_type = "BindingSubscription | Error")]
    pub fn subscribe(
        &self,
        tags: Vec<String>,
        interval_ms: u32,
        deadband_type: Option<String>,
        deadband_value: Option<f64>,
        max_pending: u32,
    ) -> napi::Result<Either<crate::subscription::BindingSubscription, JsError>> {
        let options = match crate::subscription::options(interval_ms, deadband_type, deadband_value) {
            Ok(options) => options,
            Err(e) => return Ok(Either::B(JsError(e))),
        };
        Ok(Either::A(crate::subscription::open(&*self.device, tags, options, max_pending as usize)?))
    }

    /// Who the device says it is, as a plain object; rejects for a protocol that cannot tell.
    #[napi(ts_return_type = "Promise<object>")]
    pub fn identity<'env>(&self, env: &'env Env, timeout_ms: Option<u32>) -> napi::Result<Object<'env>> {
        let (done, promise) = JsCompletion::new(env, Shape::Value)?;
        self.device.identity(timeout(timeout_ms), done);
        Ok(promise)
    }

    #[napi]
    pub fn stats(&self) -> BindingConnectionStats {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.device.stats();
        BindingConnectionStats {
            requests: stats.requests.load(Relaxed) as f64,
            timeouts: stats.timeouts.load(Relaxed) as f64,
            unmatched: stats.unmatched.load(Relaxed) as f64,
            connects: stats.connects.load(Relaxed) as f64,
            resyncs: stats.resyncs.load(Relaxed) as f64,
            breaker_opens: stats.breaker_opens.load(Relaxed) as f64,
            queued: stats.queued.load(Relaxed) as f64,
        }
    }

    /// Closes the connection; calls still waiting or in flight fail with `ECLOSED`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let (done, promise) = JsCompletion::new(env, Shape::Done)?;
        self.device.close(done);
        Ok(promise)
    }
}

/// Counters of one connection.
#[napi(object, object_from_js = false)]
pub struct BindingConnectionStats {
    pub requests: f64,
    pub timeouts: f64,
    pub unmatched: f64,
    pub connects: f64,
    pub resyncs: f64,
    pub breaker_opens: f64,
    pub queued: f64,
}

#[napi]
pub struct BindingPlan {
    /// Shared with the pollers that schedule it.
    plan: Rc<dyn Plan>,
}

impl BindingPlan {
    pub(crate) fn shared(&self) -> Rc<dyn Plan> {
        self.plan.clone()
    }
}

#[napi]
impl BindingPlan {
    #[napi(ts_return_type = "Promise<ArrayBuffer | BindingColumnsWithErrors>")]
    pub fn read<'env>(&self, env: &'env Env, timeout_ms: Option<u32>) -> napi::Result<Object<'env>> {
        let (done, promise) = JsCompletion::new(env, Shape::Columns)?;
        self.plan.read(timeout(timeout_ms), done);
        Ok(promise)
    }

    /// How many values every read yields.
    #[napi(getter)]
    pub fn value_count(&self) -> u32 {
        self.plan.value_count() as u32
    }
}
