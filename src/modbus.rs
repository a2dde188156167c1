//! Modbus bindings: devices, prepared plans and the simulator, each a thin
//! wrapper that converts arguments and results.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bifrost_core::url::{whole_number, DeviceUrl, MAX_MS};
use bifrost_core::{Error, Value};
use bifrost_modbus::decode::{ColumnarRead, ReplyDecoder};
use bifrost_modbus::device::{ModbusDevice, ReadPlan};
use bifrost_modbus::server::{parse_range_spec, Simulator, SimulatorConfig};
use bifrost_modbus::tag::ModbusTag;
use napi::bindgen_prelude::{Either, Float64ArraySlice, Object};
use napi::Env;
use napi_derive::napi;

use crate::settle::promise_of;
use crate::{guarded, CopiedBuffer, ErrorInfo, JsValue, WriteValue};

/// One tag's outcome; the TypeScript layer only swaps `error` for a `BifrostError`.
#[napi(object, object_from_js = false)]
pub struct BindingTagResult {
    pub tag: String,
    #[napi(ts_type = "boolean | number | bigint | string | Array<unknown>")]
    pub value: Option<JsValue>,
    pub quality: String,
    pub error: Option<ErrorInfo>,
    pub timestamp: f64,
}

/// Columnar read in one buffer, so a read allocates one backing store, not three:
/// `valueCount` f64 values, then `tagCount + 1` u32 offsets, then `tagCount` quality
/// bytes (0 good, 1 bad), all in platform byte order.
#[napi(object, object_from_js = false)]
pub struct BindingColumnarRead {
    #[napi(ts_type = "ArrayBuffer")]
    pub buffer: CopiedBuffer,
    pub value_count: u32,
    pub tag_count: u32,
    /// Sparse: one entry per failed tag, `index` pointing at it.
    pub errors: Vec<BindingIndexedError>,
    pub timestamp: f64,
}

#[napi(object, object_from_js = false)]
pub struct BindingIndexedError {
    pub index: u32,
    pub error: ErrorInfo,
}

/// Counters of one connection.
#[napi(object, object_from_js = false)]
pub struct BindingConnectionStats {
    pub requests: f64,
    pub timeouts: f64,
    pub unmatched: f64,
    pub connects: f64,
    pub resyncs: f64,
    pub queued: f64,
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// One result per input tag, in input order: the outcomes of the tags that parsed,
/// with the address errors of those that did not in between.
fn in_input_order<T>(
    texts: Vec<String>,
    parsed: Vec<Result<ModbusTag, Error>>,
    outcomes: Vec<Result<T, Error>>,
    to_js: impl Fn(&ModbusTag, T) -> Option<JsValue>,
) -> Vec<BindingTagResult> {
    let timestamp = now_ms();
    let mut outcomes = outcomes.into_iter();
    texts
        .into_iter()
        .zip(parsed)
        .map(|(tag, parsed)| {
            let outcome = parsed.and_then(|t| {
                let outcome = outcomes.next().unwrap_or_else(|| Err(Error::proto("no result for this tag")));
                outcome.map(|v| to_js(&t, v))
            });
            match outcome {
                Ok(value) => BindingTagResult { tag, value, quality: "good".into(), error: None, timestamp },
                Err(e) => {
                    BindingTagResult { tag, value: None, quality: "bad".into(), error: Some(e.into()), timestamp }
                }
            }
        })
        .collect()
}

/// A result as the bindings return it: the value, or the error as plain data (they never throw).
fn either<T>(result: Result<T, Error>) -> Either<T, ErrorInfo> {
    match result {
        Ok(value) => Either::A(value),
        Err(e) => Either::B(e.into()),
    }
}

/// A per-call request timeout; `None` keeps the device's `request-timeout`.
fn request_timeout(timeout_ms: Option<u32>) -> Option<Duration> {
    timeout_ms.map(|ms| Duration::from_millis(ms.max(1) as u64))
}

/// Parses every address; the bad ones keep their error so each tag reports its own.
fn parse_tags(tags: &[String]) -> Vec<Result<ModbusTag, Error>> {
    tags.iter().map(|t| ModbusTag::parse(t)).collect()
}

/// Opens a Modbus device from its URL (`modbus-tcp://`, `modbus-rtu-tcp://`, `modbus-rtu://`);
/// `options` are kebab-case keys that override the URL's query.
#[napi]
pub async fn connect_modbus(url: String, options: HashMap<String, String>) -> Either<BindingModbusDevice, ErrorInfo> {
    let opened = async move {
        let mut url = DeviceUrl::parse(&url)?;
        for (key, value) in options {
            url.set(&key, value);
        }
        guarded(ModbusDevice::open(url)).await?
    };
    either(opened.await.map(|device| BindingModbusDevice { device: Arc::new(device) }))
}

#[napi]
pub struct BindingModbusDevice {
    device: Arc<ModbusDevice>,
}

#[napi]
impl BindingModbusDevice {
    /// Reads the tags in one planned, pipelined batch; never rejects.
    #[napi(ts_return_type = "Promise<Array<BindingTagResult>>")]
    pub fn read_tags<'env>(
        &self,
        env: &'env Env,
        tags: Vec<String>,
        timeout_ms: Option<u32>,
    ) -> napi::Result<Object<'env>> {
        let timeout = request_timeout(timeout_ms);
        let device = self.device.clone();
        promise_of(env, async move {
            let parsed = parse_tags(&tags);
            let valid: Vec<ModbusTag> = parsed.iter().filter_map(|t| t.as_ref().ok().cloned()).collect();
            let count = valid.len();
            let values = guarded(async move {
                let plan = device.prepare(valid);
                device.read(&plan, timeout).await
            })
            .await
            .unwrap_or_else(|e| vec![Err(e); count]);
            in_input_order(tags, parsed, values, |tag, value| Some(JsValue::new(value, tag.data_type)))
        })
    }

    /// Writes each tag; one result per tag, never rejects.
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
        let timeout = request_timeout(timeout_ms);
        let device = self.device.clone();
        promise_of(env, async move {
            let (texts, values): (Vec<String>, Vec<Value>) = writes.into_iter().map(|(t, v)| (t, v.0)).unzip();
            let parsed = parse_tags(&texts);
            let valid: Vec<(ModbusTag, Value)> =
                parsed.iter().zip(values).filter_map(|(t, v)| t.as_ref().ok().map(|t| (t.clone(), v))).collect();
            let count = valid.len();
            let results = guarded(async move { device.write(&valid, timeout).await })
                .await
                .unwrap_or_else(|e| vec![Err(e); count]);
            in_input_order(texts, parsed, results, |_, ()| None)
        })
    }

    /// Parses and plans the tags once; the plan's `read` then costs one call.
    #[napi]
    pub fn prepare(&self, tags: Vec<String>) -> Either<BindingModbusPlan, ErrorInfo> {
        let parsed = tags.iter().map(|text| match ModbusTag::parse(text) {
            Ok(tag) if tag.data_type == bifrost_core::DataType::String => Err(Error::address(format!(
                "STRING tag '{text}' cannot be prepared (columns are numeric); read it with readTags"
            ))),
            other => other,
        });
        either(parsed.collect::<Result<Vec<_>, _>>().map(|valid| BindingModbusPlan {
            device: self.device.clone(),
            plan: std::sync::Mutex::new(Arc::new(self.device.prepare(valid))),
        }))
    }

    #[napi]
    pub fn stats(&self) -> BindingConnectionStats {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.device.client().stats();
        BindingConnectionStats {
            requests: stats.requests.load(Relaxed) as f64,
            timeouts: stats.timeouts.load(Relaxed) as f64,
            unmatched: stats.unmatched.load(Relaxed) as f64,
            connects: stats.connects.load(Relaxed) as f64,
            resyncs: stats.resyncs.load(Relaxed) as f64,
            queued: stats.queued.load(Relaxed) as f64,
        }
    }

    #[napi]
    pub async fn close(&self) {
        let device = self.device.clone();
        let _ = guarded(async move { device.close().await }).await;
    }
}

#[napi]
pub struct BindingModbusPlan {
    device: Arc<ModbusDevice>,
    /// Swapped for a fresh plan when the device learns something; reads share it, so they can overlap.
    plan: std::sync::Mutex<Arc<ReadPlan>>,
}

impl BindingModbusPlan {
    fn current(&self) -> Arc<ReadPlan> {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if !self.device.is_current(&plan) {
            *plan = Arc::new(self.device.prepare(plan.tags().to_vec()));
        }
        plan.clone()
    }
}

#[napi]
impl BindingModbusPlan {
    #[napi(ts_return_type = "Promise<BindingColumnarRead>")]
    pub fn read<'env>(&self, env: &'env Env, timeout_ms: Option<u32>) -> napi::Result<Object<'env>> {
        let timeout = request_timeout(timeout_ms);
        let plan = self.current();
        let device = self.device.clone();
        promise_of(env, async move {
            let tag_count = plan.tags().len();
            let outcome = guarded(device.read_columnar(&plan, timeout)).await;
            let columns = outcome.unwrap_or_else(|e| ColumnarRead {
                values: Vec::new(),
                offsets: vec![0; tag_count + 1],
                errors: vec![Some(e); tag_count],
            });
            to_binding_columns(columns)
        })
    }
}

fn to_binding_columns(columns: ColumnarRead) -> BindingColumnarRead {
    let tag_count = columns.errors.len();
    let mut buffer = Vec::with_capacity(columns.values.len() * 8 + columns.offsets.len() * 4 + tag_count);
    buffer.extend(columns.values.iter().flat_map(|v| v.to_ne_bytes()));
    buffer.extend(columns.offsets.iter().flat_map(|o| o.to_ne_bytes()));
    buffer.extend(columns.errors.iter().map(|e| e.is_some() as u8));
    let errors = columns
        .errors
        .into_iter()
        .enumerate()
        .filter_map(|(index, e)| e.map(|e| BindingIndexedError { index: index as u32, error: e.into() }))
        .collect();
    BindingColumnarRead {
        buffer: CopiedBuffer(buffer),
        value_count: columns.values.len() as u32,
        tag_count: tag_count as u32,
        errors,
        timestamp: now_ms(),
    }
}

/// Makes a decoder for read replies captured elsewhere; `start` is the first address the reply answers.
#[napi]
pub fn create_reply_decoder(tags: Vec<String>, start: u32) -> Either<BindingReplyDecoder, ErrorInfo> {
    let made = (|| {
        let start =
            u16::try_from(start).map_err(|_| Error::address(format!("start address {start} is above 65535")))?;
        let tags = tags.iter().map(|t| ModbusTag::parse(t)).collect::<Result<Vec<_>, _>>()?;
        ReplyDecoder::new(tags, start)
    })();
    either(made.map(|decoder| BindingReplyDecoder { decoder }))
}

#[napi]
pub struct BindingReplyDecoder {
    decoder: ReplyDecoder,
}

#[napi]
impl BindingReplyDecoder {
    /// Decodes one Modbus TCP frame in place, on the calling thread.
    #[napi]
    pub fn decode(&self, frame: &[u8]) -> Either<BindingColumnarRead, ErrorInfo> {
        either(self.guarded_decode(frame).map(to_binding_columns))
    }

    /// Decodes into the caller's array, creating no JavaScript objects; returns how many tags failed.
    #[napi]
    pub fn decode_into(&self, frame: &[u8], mut values: Float64ArraySlice) -> Either<u32, ErrorInfo> {
        // Safe: a synchronous call on the JS thread, so no JavaScript runs while Rust writes.
        let values = unsafe { values.as_mut() };
        let count = self.decoder.value_count();
        if values.len() < count {
            return either(Err(Error::invalid_value(format!(
                "values holds {} numbers; {count} are needed",
                values.len()
            ))));
        }
        either(self.guarded_decode(frame).map(|columns| {
            values[..count].copy_from_slice(&columns.values);
            columns.errors.iter().filter(|e| e.is_some()).count() as u32
        }))
    }

    #[napi(getter)]
    pub fn value_count(&self) -> u32 {
        self.decoder.value_count() as u32
    }

    fn guarded_decode(&self, frame: &[u8]) -> Result<ColumnarRead, Error> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decoder.decode(frame)))
            .unwrap_or_else(|_| Err(Error::proto("internal error while decoding (please report it)")))
    }
}

/// Simulator settings; every field is optional. Numbers arrive as JavaScript
/// numbers and are checked here, never wrapped.
#[napi(object)]
pub struct SimulatorOptions {
    pub host: Option<String>,
    /// 0 or absent: pick a free port.
    pub port: Option<f64>,
    /// `tcp` (MBAP, the default) or `rtu` (RTU frames over TCP).
    pub framing: Option<String>,
    pub units: Option<Vec<f64>>,
    pub latency_ms: Option<f64>,
    pub drop_every: Option<f64>,
    pub disconnect_after: Option<f64>,
    pub malformed_every: Option<f64>,
    /// Ranges that answer exception 2, e.g. `holding-register:100-109`.
    pub invalid: Option<Vec<String>>,
    /// Close a connection idle this long; 0: never.
    pub idle_timeout_ms: Option<f64>,
    pub max_connections: Option<f64>,
}

fn simulator_config(options: &SimulatorOptions) -> Result<SimulatorConfig, Error> {
    use bifrost_modbus::client::Framing;
    let defaults = SimulatorConfig::default();
    let number = |name: &str, value: Option<f64>, range| value.map(|v| whole_number(name, v, range)).transpose();
    let count =
        |name: &str, value: Option<f64>| Ok::<_, Error>(number(name, value, 0..=u64::from(u32::MAX))?.unwrap_or(0));
    let framing = match options.framing.as_deref() {
        None | Some("tcp") => Framing::Tcp,
        Some("rtu") => Framing::Rtu,
        Some(other) => return Err(Error::invalid_value(format!("framing must be 'tcp' or 'rtu', not '{other}'"))),
    };
    let units = match &options.units {
        Some(units) => {
            units.iter().map(|&u| Ok(whole_number("units", u, 0..=255)? as u8)).collect::<Result<_, Error>>()?
        }
        None => defaults.units,
    };
    let invalid = options.invalid.iter().flatten().map(|spec| parse_range_spec(spec)).collect::<Result<_, _>>()?;
    let idle_timeout = match number("idleTimeoutMs", options.idle_timeout_ms, 0..=MAX_MS)? {
        None => defaults.idle_timeout,
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
    };
    let max_connections = number("maxConnections", options.max_connections, 1..=1_000_000)?;
    Ok(SimulatorConfig {
        framing,
        units,
        latency: Duration::from_millis(number("latencyMs", options.latency_ms, 0..=MAX_MS)?.unwrap_or(0)),
        drop_every: count("dropEvery", options.drop_every)?,
        disconnect_after: count("disconnectAfter", options.disconnect_after)?,
        malformed_every: count("malformedEvery", options.malformed_every)?,
        invalid,
        idle_timeout,
        max_connections: max_connections.map_or(defaults.max_connections, |n| n as usize),
    })
}

/// Starts the Modbus simulator inside this process.
#[napi]
pub async fn start_modbus_simulator(options: SimulatorOptions) -> Either<BindingModbusSimulator, ErrorInfo> {
    let host = options.host.clone().unwrap_or_else(|| "127.0.0.1".into());
    let started = async move {
        let port = options.port.map(|p| whole_number("port", p, 0..=65535)).transpose()?.unwrap_or(0);
        let config = simulator_config(&options)?;
        let address = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        guarded(async { Simulator::start(&address, config).await }).await?.map_err(|e| {
            let mut err = Error::from(e);
            err.message = format!("cannot listen on {address}: {}", err.message);
            err
        })
    };
    either(started.await.map(|simulator| BindingModbusSimulator { simulator }))
}

#[napi]
pub struct BindingModbusSimulator {
    simulator: Simulator,
}

#[napi]
impl BindingModbusSimulator {
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
        self.simulator.stats().requests.load(std::sync::atomic::Ordering::Relaxed) as f64
    }

    /// Stops listening and closes every connection.
    #[napi]
    pub fn stop(&self) {
        self.simulator.stop();
    }
}
