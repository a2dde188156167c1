//! OPC UA bindings: opening a server's endpoint on its driver, a thin wrapper
//! that converts arguments and results.

use bifrost_core::url::DeviceUrl;
use bifrost_core::Error;
use bifrost_opcua::device::{OpcuaDevice, Opening};
use napi::Env;

use crate::device::{BindingDevice, DriverChoice};
#[cfg(target_os = "linux")]
use crate::event_loop::EventLoopDriver;
use crate::guarded;
use crate::js::{Promise, ToJs};

/// Opens a server's endpoint and settles `promise` with its `BindingDevice`, once
/// the secure channel and the session are up.
pub fn open(env: &Env, url: DeviceUrl, driver: DriverChoice, promise: Promise) {
    let opening = match Opening::from_url(url) {
        Ok(opening) => opening,
        Err(e) => return promise.reject(env.raw(), &e),
    };
    let (framing, server) = opening.framing();
    #[cfg(target_os = "linux")]
    if driver == DriverChoice::EventLoop {
        let on_driver = Box::new(move |env, opened: Result<EventLoopDriver<_>, Error>| match opened {
            Ok(driver) => {
                promise.resolve(env, BindingDevice::new(Box::new(OpcuaDevice::new(Box::new(driver), server))))
            }
            Err(e) => promise.reject(env, &e),
        });
        return EventLoopDriver::open(env.raw(), framing, opening.link.clone(), opening.address.clone(), on_driver);
    }
    let _ = driver; // other platforms always run on the runtime
    let Some(to_js) = ToJs::here() else { return promise.reject(env.raw(), &Error::proto("no JavaScript thread")) };
    napi::bindgen_prelude::spawn(async move {
        let opened = guarded(opening.open_runtime_driver(framing)).await.and_then(|driver| driver);
        to_js.post(Box::new(move |env| match opened {
            Ok(driver) => promise.resolve(env, BindingDevice::new(Box::new(OpcuaDevice::new(driver, server)))),
            Err(e) => promise.reject(env, &e),
        }));
    });
}
