//! OPC UA bindings: opening a server's endpoint on its driver, and the
//! simulator, each a thin wrapper that converts arguments and results.

use bifrost_core::url::{whole_number, DeviceUrl};
use bifrost_core::Error;
use bifrost_opcua::device::{OpcuaDevice, Opening};
use bifrost_opcua::framing::Security;
use bifrost_opcua::server::SimulatorConfig;
use napi::bindgen_prelude::{Either, Float64ArraySlice};
use napi::Env;
use napi_derive::napi;

use std::collections::HashMap;

use bifrost_opcua::discovery::{discover, Discovery};

use crate::device::{device_url, open_tcp, DriverChoice};
use crate::js::{either, JsError, Promise, ToJs};
use crate::simulator::{BindingSimulator, SimulatorOptions};
use crate::{panic_free, JsValue};

/// Opens a server's endpoint and settles `promise` with its `BindingDevice`, once
/// the secure channel and the session are up. A secured channel or a user first
/// needs the server's endpoint and certificate, fetched and checked off the JavaScript thread.
pub fn open(env: &Env, url: DeviceUrl, driver: DriverChoice, promise: Promise) {
    let opening = match Opening::from_url(url) {
        Ok(opening) => opening,
        Err(e) => return promise.reject(env.raw(), &e),
    };
    if !opening.needs_endpoint() {
        return open_secured(env.raw(), opening, Security::none(), driver, promise);
    }
    let Some(to_js) = ToJs::here() else { return promise.reject(env.raw(), &Error::proto("no JavaScript thread")) };
    napi::bindgen_prelude::spawn(async move {
        let security = crate::guarded(opening.security()).await.and_then(|security| security);
        to_js.post(Box::new(move |env| match security {
            Ok(security) => open_secured(env, opening, security, driver, promise),
            Err(e) => promise.reject(env, &e),
        }));
    });
}

fn open_secured(
    env: napi::sys::napi_env,
    opening: Opening,
    security: Security,
    driver: DriverChoice,
    promise: Promise,
) {
    let (framing, server) = opening.framing(security);
    let target = (opening.link.clone(), opening.address.clone());
    let runtime = move |framing| async move { opening.open_runtime_driver(framing).await };
    let make = move |driver| Box::new(OpcuaDevice::new(driver, server)) as Box<dyn bifrost_engine::Device>;
    open_tcp(env, framing, target, driver, promise, runtime, make);
}

/// GetEndpoints (or, with `servers`, FindServers) on the server at `url`, on a
/// secure channel of its own without a session: an array of plain objects.
#[napi(ts_return_type = "Promise<Array<object>>")]
pub async fn opcua_discover(url: String, options: HashMap<String, String>, servers: bool) -> Either<JsValue, JsError> {
    let service = if servers { Discovery::Servers } else { Discovery::Endpoints };
    let found = async move { discover(device_url(&url, options)?, service).await };
    either(found.await.map(JsValue))
}

/// Decodes a ReadResponse message body into `values`, one number per result:
/// the positions of the results that are not good numbers, or why the body is unreadable.
#[napi(ts_return_type = "Array<number> | Error")]
pub fn decode_opcua_read_response(body: &[u8], mut values: Float64ArraySlice) -> Either<Vec<u32>, JsError> {
    // SAFETY: a synchronous call on the JavaScript thread: no JavaScript runs while Rust writes the array.
    let values = unsafe { values.as_mut() };
    let mut failed = Vec::new();
    let decoded = panic_free(|| bifrost_opcua::session::parse_read_into(body, values, &mut failed));
    either(decoded.map(|()| failed.into_iter().map(|(at, _)| at as u32).collect()))
}

/// Starts the OPC UA simulator inside this process.
#[napi]
pub async fn start_opcua_simulator(options: SimulatorOptions) -> Either<BindingSimulator, JsError> {
    let started = async move {
        let defaults = SimulatorConfig::default();
        let variables = options.variables.map(|n| whole_number("variables", n, 0..=1_000_000)).transpose()?;
        let most = options.max_nodes_per_read.map(|n| whole_number("maxNodesPerRead", n, 0..=1_000_000)).transpose()?;
        let config = SimulatorConfig {
            variables: variables.map_or(defaults.variables, |n| n as usize),
            max_nodes_per_read: most.map_or(defaults.max_nodes_per_read, |n| n as u32),
            changing: options.changing.unwrap_or(false),
            faults: options.faults()?,
        };
        options.listen(|address| async move { bifrost_opcua::server::start(&address, config).await }).await
    };
    either(started.await.map(BindingSimulator::new))
}
