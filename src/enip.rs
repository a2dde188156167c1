//! EtherNet/IP bindings: opening a Logix controller on its driver, and the
//! simulator, each a thin wrapper that converts arguments and results.

use bifrost_core::url::DeviceUrl;
use bifrost_core::Error;
use bifrost_enip::device::{EnipDevice, Opening};
use bifrost_enip::server::{SimulatorConfig, TagSpec};
use napi::bindgen_prelude::Either;
use napi::Env;
use napi_derive::napi;

use crate::device::{BindingDevice, DriverChoice};
#[cfg(target_os = "linux")]
use crate::event_loop::EventLoopDriver;
use crate::guarded;
use crate::js::{either, JsError, Promise, ToJs};
use crate::simulator::{BindingSimulator, SimulatorOptions};

/// Opens a controller and settles `promise` with its `BindingDevice`, once the
/// session and (when the controller takes one) the CIP connection are set up.
pub fn open(env: &Env, url: DeviceUrl, driver: DriverChoice, promise: Promise) {
    let opening = match Opening::from_url(url) {
        Ok(opening) => opening,
        Err(e) => return promise.reject(env.raw(), &e),
    };
    let (framing, negotiated) = opening.framing();
    #[cfg(target_os = "linux")]
    if driver == DriverChoice::EventLoop {
        let on_driver = Box::new(move |env, opened: Result<EventLoopDriver<_>, Error>| match opened {
            Ok(driver) => {
                promise.resolve(env, BindingDevice::new(Box::new(EnipDevice::new(Box::new(driver), negotiated))))
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
            Ok(driver) => promise.resolve(env, BindingDevice::new(Box::new(EnipDevice::new(driver, negotiated)))),
            Err(e) => promise.reject(env, &e),
        }));
    });
}

/// Starts the EtherNet/IP simulator inside this process; `tags` are `NAME=TYPE[count]`.
#[napi]
pub async fn start_enip_simulator(options: SimulatorOptions) -> Either<BindingSimulator, JsError> {
    let started = async move {
        let tags = options.tags.iter().flatten().map(|spec| TagSpec::parse(spec)).collect::<Result<_, Error>>()?;
        let config = SimulatorConfig { tags, faults: options.faults()? };
        options.listen(|address| async move { bifrost_enip::server::start(&address, config).await }).await
    };
    either(started.await.map(BindingSimulator::new))
}
