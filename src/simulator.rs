//! What every protocol's simulator binding shares: its options (address and
//! faults), listening inside this process, and the handle JavaScript holds.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bifrost_core::url::{whole_number, MAX_MS};
use bifrost_core::Error;
use bifrost_engine::listener::{Faults, Simulator};
use napi_derive::napi;

use crate::guarded;

/// Simulator settings; every field is optional, and each protocol reads its
/// own. Numbers arrive as JavaScript numbers and are checked here, never wrapped.
#[napi(object)]
pub struct SimulatorOptions {
    pub host: Option<String>,
    /// 0 or absent: pick a free port.
    pub port: Option<f64>,
    /// Modbus: `tcp` (MBAP, the default) or `rtu` (RTU frames over TCP).
    pub framing: Option<String>,
    /// Modbus: the unit ids that answer.
    pub units: Option<Vec<f64>>,
    /// Modbus: ranges that answer exception 2, e.g. `holding-register:100-109`.
    pub invalid: Option<Vec<String>>,
    /// EtherNet/IP: the controller's tags, e.g. `SCADA=INT[1000]`.
    pub tags: Option<Vec<String>>,
    /// EtherNet/IP: structure types the tags may be of, e.g. `RECIPE=Temp:REAL,Steps:INT[4]`.
    pub udts: Option<Vec<String>>,
    /// EtherNet/IP: every Nth request, the controller first drops its CIP connections.
    pub drop_connections_every: Option<f64>,
    /// EtherNet/IP: the largest connection a Forward Open gets (0: none).
    pub max_connection_size: Option<f64>,
    /// OPC UA: how many variables the Simulation folder holds.
    pub variables: Option<f64>,
    /// OPC UA: how many nodes one Read or Write may name (0: no limit).
    pub max_nodes_per_read: Option<f64>,
    /// OPC UA: every Double variable changes each second.
    pub changing: Option<bool>,
    pub latency_ms: Option<f64>,
    pub drop_every: Option<f64>,
    pub disconnect_after: Option<f64>,
    pub malformed_every: Option<f64>,
    /// Close a connection idle this long; 0: never.
    pub idle_timeout_ms: Option<f64>,
    pub max_connections: Option<f64>,
}

impl SimulatorOptions {
    /// The faults to inject, checked.
    pub fn faults(&self) -> Result<Faults, Error> {
        let defaults = Faults::default();
        let number = |name: &str, value: Option<f64>, range| value.map(|v| whole_number(name, v, range)).transpose();
        let count =
            |name: &str, value: Option<f64>| Ok::<_, Error>(number(name, value, 0..=u64::from(u32::MAX))?.unwrap_or(0));
        let idle_timeout = match number("idleTimeoutMs", self.idle_timeout_ms, 0..=MAX_MS)? {
            None => defaults.idle_timeout,
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        let max_connections = number("maxConnections", self.max_connections, 1..=1_000_000)?;
        Ok(Faults {
            latency: Duration::from_millis(number("latencyMs", self.latency_ms, 0..=MAX_MS)?.unwrap_or(0)),
            drop_every: count("dropEvery", self.drop_every)?,
            disconnect_after: count("disconnectAfter", self.disconnect_after)?,
            malformed_every: count("malformedEvery", self.malformed_every)?,
            idle_timeout,
            max_connections: max_connections.map_or(defaults.max_connections, |n| n as usize),
        })
    }

    /// Starts a simulator with `start` on the address these options give (a free
    /// loopback port by default); a failure to listen names the address.
    pub async fn listen<F, Fut>(&self, start: F) -> Result<Simulator, Error>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = std::io::Result<Simulator>> + Send,
    {
        let host = self.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let port = self.port.map(|p| whole_number("port", p, 0..=65535)).transpose()?.unwrap_or(0);
        let address = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        guarded(start(address.clone())).await?.map_err(|e| {
            let mut err = Error::from(e);
            err.message = format!("cannot listen on {address}: {}", err.message);
            err
        })
    }
}

/// A simulator running inside this process.
#[napi]
pub struct BindingSimulator {
    simulator: Simulator,
}

impl BindingSimulator {
    pub fn new(simulator: Simulator) -> BindingSimulator {
        BindingSimulator { simulator }
    }
}

#[napi]
impl BindingSimulator {
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        self.simulator.local_addr().port() as u32
    }

    #[napi(getter)]
    pub fn host(&self) -> String {
        self.simulator.local_addr().ip().to_string()
    }

    /// Requests served so far, over all connections.
    #[napi(getter)]
    pub fn requests(&self) -> f64 {
        self.simulator.stats().requests.load(Ordering::Relaxed) as f64
    }

    /// Connections accepted so far.
    #[napi(getter)]
    pub fn connections(&self) -> f64 {
        self.simulator.stats().connections.load(Ordering::Relaxed) as f64
    }

    /// Stops listening and closes every connection.
    #[napi]
    pub fn stop(&self) {
        self.simulator.stop();
    }
}
