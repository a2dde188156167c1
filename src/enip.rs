//! EtherNet/IP bindings: opening a Logix controller on its driver, and the
//! simulator, each a thin wrapper that converts arguments and results.

use bifrost_core::url::{whole_number, DeviceUrl};
use bifrost_core::Error;
use bifrost_enip::device::{EnipDevice, Opening};
use bifrost_enip::server::{parse_udt, SimulatorConfig, TagSpec, MAX_CONNECTION_SIZE};
use napi::bindgen_prelude::Either;
use napi::Env;
use napi_derive::napi;

use crate::device::{open_tcp, DriverChoice};
use crate::guarded;
use crate::js::{either, JsError, Promise};
use crate::simulator::{BindingSimulator, SimulatorOptions};

/// Opens a controller and settles `promise` with its `BindingDevice`, once the
/// session and (when the controller takes one) the CIP connection are set up.
pub fn open(env: &Env, url: DeviceUrl, driver: DriverChoice, promise: Promise) {
    let opening = match Opening::from_url(url) {
        Ok(opening) => opening,
        Err(e) => return promise.reject(env.raw(), &e),
    };
    let (framing, negotiated) = opening.framing();
    let target = (opening.link.clone(), opening.address.clone());
    let runtime = move |framing| async move { opening.open_runtime_driver(framing).await };
    let make = move |driver| Box::new(EnipDevice::new(driver, negotiated)) as Box<dyn bifrost_engine::Device>;
    open_tcp(env.raw(), framing, target, driver, promise, runtime, make);
}

/// Starts the EtherNet/IP simulator inside this process; `tags` are `NAME=TYPE[count]`.
#[napi]
pub async fn start_enip_simulator(options: SimulatorOptions) -> Either<BindingSimulator, JsError> {
    let started = async move {
        let mut udts = Vec::new();
        for spec in options.udts.iter().flatten() {
            let udt = parse_udt(spec, &udts)?;
            udts.push(udt);
        }
        let tags =
            options.tags.iter().flatten().map(|spec| TagSpec::parse_with(spec, &udts)).collect::<Result<_, Error>>()?;
        let every = options
            .drop_connections_every
            .map(|n| whole_number("dropConnectionsEvery", n, 0..=u64::from(u32::MAX)))
            .transpose()?;
        let size = options.max_connection_size.map(|n| whole_number("maxConnectionSize", n, 0..=65535)).transpose()?;
        let config = SimulatorConfig {
            tags,
            udts,
            faults: options.faults()?,
            drop_connections_every: every.unwrap_or(0),
            max_connection_size: size.map_or(MAX_CONNECTION_SIZE, |n| n as u16),
        };
        options.listen(|address| async move { bifrost_enip::server::start(&address, config).await }).await
    };
    either(started.await.map(BindingSimulator::new))
}

/// A device that answered a discovery.
#[napi(object, object_from_js = false)]
pub struct BindingIdentity {
    /// Where the answer came from.
    pub address: String,
    pub port: u32,
    pub vendor_id: u32,
    pub device_type: u32,
    pub product_code: u32,
    pub revision: String,
    pub status: u32,
    pub serial_number: u32,
    pub product_name: String,
    pub state: u32,
}

/// Sends ListIdentity over UDP to `address` (a device, or a broadcast address)
/// from `bind`, and gathers the answers that come within `timeout_ms`.
#[napi]
pub async fn discover_enip(
    address: String,
    port: u32,
    bind: String,
    timeout_ms: u32,
) -> Either<Vec<BindingIdentity>, JsError> {
    let found = async move {
        let ip = |what: &str, text: &str| {
            text.parse::<std::net::Ipv4Addr>()
                .map_err(|_| Error::invalid_value(format!("{what} '{text}' is not an IPv4 address")))
        };
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::invalid_value("port must be 1 to 65535"))?;
        let target = std::net::SocketAddrV4::new(ip("address", &address)?, port);
        let wait = std::time::Duration::from_millis(u64::from(timeout_ms));
        guarded(bifrost_enip::discover::discover(target, ip("bind", &bind)?, wait)).await?
    };
    either(found.await.map(|found| {
        found
            .into_iter()
            .map(|f| BindingIdentity {
                address: f.from.ip().to_string(),
                port: u32::from(f.from.port()),
                vendor_id: u32::from(f.identity.vendor_id),
                device_type: u32::from(f.identity.device_type),
                product_code: u32::from(f.identity.product_code),
                revision: format!("{}.{}", f.identity.revision.0, f.identity.revision.1),
                status: u32::from(f.identity.status),
                serial_number: f.identity.serial_number,
                product_name: f.identity.product_name,
                state: u32::from(f.identity.state),
            })
            .collect()
    }))
}
