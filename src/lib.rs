//! The N-API glue: converts values and errors between JavaScript and the
//! protocol crates. No protocol logic lives here.

use std::future::Future;

use bifrost_core::{Error, ErrorCode, TypedValue, Value};
use napi::bindgen_prelude::*;
use napi_derive::napi;

mod batch;
mod device;
mod enip;
#[cfg(target_os = "linux")]
mod event_loop;
mod js;
mod modbus;
mod opcua;
mod simulator;
mod subscription;

/// Polls `work` in place, catching a panic so it becomes an error for this
/// call only, never a dead process or a promise that never settles.
pub(crate) async fn guarded<T>(work: impl Future<Output = T>) -> std::result::Result<T, Error> {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.as_mut().poll(cx)))
            .map_err(|_| Error::new(ErrorCode::Proto, "internal error (please report it)"))?
            .map(Ok)
    })
    .await
}

/// A decoded value on its way to JavaScript. 64-bit integer types become
/// `bigint` so no value is silently rounded.
pub struct JsValue(pub TypedValue);

impl TypeName for JsValue {
    fn type_name() -> &'static str {
        "unknown"
    }
    fn value_type() -> ValueType {
        ValueType::Unknown
    }
}

impl ToNapiValue for JsValue {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        unsafe {
            let TypedValue { value, wide } = val.0;
            match value {
                Value::Bool(b) => bool::to_napi_value(env, b),
                Value::Int(i) if wide => BigInt::to_napi_value(env, BigInt::from(i)),
                Value::UInt(u) if wide => BigInt::to_napi_value(env, BigInt::from(u)),
                Value::Int(i) => f64::to_napi_value(env, i as f64),
                Value::UInt(u) => f64::to_napi_value(env, u as f64),
                Value::Float(f) => f64::to_napi_value(env, f),
                Value::String(s) => String::to_napi_value(env, s),
                Value::Array(items) => Vec::<JsValue>::to_napi_value(
                    env,
                    items.into_iter().map(|value| JsValue(TypedValue { value, wide })).collect(),
                ),
                // A plain object, its members in order.
                Value::Struct(members) => {
                    let mut object = std::ptr::null_mut();
                    napi::check_status!(sys::napi_create_object(env, &mut object))?;
                    for (name, member) in members {
                        let key = String::to_napi_value(env, name)?;
                        let value = JsValue::to_napi_value(env, JsValue(member))?;
                        napi::check_status!(sys::napi_set_property(env, object, key, value))?;
                    }
                    Ok(object)
                }
            }
        }
    }
}

/// A value written from JavaScript: boolean, number, bigint, string or an array of those.
pub struct WriteValue(pub Value);

impl TypeName for WriteValue {
    fn type_name() -> &'static str {
        "boolean | number | bigint | string | Array"
    }
    fn value_type() -> ValueType {
        ValueType::Unknown
    }
}

impl ValidateNapiValue for WriteValue {}

impl FromNapiValue for WriteValue {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        unsafe {
            let kind = napi::type_of!(env, value)?;
            Ok(WriteValue(match kind {
                ValueType::Boolean => Value::Bool(bool::from_napi_value(env, value)?),
                ValueType::Number => Value::Float(f64::from_napi_value(env, value)?),
                ValueType::String => Value::String(String::from_napi_value(env, value)?),
                ValueType::BigInt => {
                    let big = BigInt::from_napi_value(env, value)?;
                    let word = big.words.first().copied().unwrap_or(0);
                    match (big.sign_bit, big.words.len() <= 1) {
                        (false, true) => Value::UInt(word),
                        (true, true) if word <= i64::MIN.unsigned_abs() => Value::Int((word as i64).wrapping_neg()),
                        _ => return Err(napi::Error::new(Status::InvalidArg, "bigint does not fit in 64 bits")),
                    }
                }
                ValueType::Object => {
                    let mut is_array = false;
                    napi::check_status!(sys::napi_is_array(env, value, &mut is_array))?;
                    if !is_array {
                        return Err(napi::Error::new(
                            Status::InvalidArg,
                            "write values must be booleans, numbers, bigints, strings or arrays of them",
                        ));
                    }
                    Value::Array(Vec::<WriteValue>::from_napi_value(env, value)?.into_iter().map(|w| w.0).collect())
                }
                other => {
                    return Err(napi::Error::new(Status::InvalidArg, format!("cannot write a value of type {other}")))
                }
            }))
        }
    }
}

/// Bytes copied into an `ArrayBuffer` that V8 owns. Results are small, and an
/// external buffer costs a finalizer and a cleanup hook each, far more than the copy.
pub struct CopiedBuffer(pub Vec<u8>);

impl TypeName for CopiedBuffer {
    fn type_name() -> &'static str {
        "ArrayBuffer"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for CopiedBuffer {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let mut data = std::ptr::null_mut();
        let mut buffer = std::ptr::null_mut();
        unsafe {
            napi::check_status!(sys::napi_create_arraybuffer(env, val.0.len(), &mut data, &mut buffer))?;
            if !val.0.is_empty() {
                std::ptr::copy_nonoverlapping(val.0.as_ptr(), data.cast::<u8>(), val.0.len());
            }
        }
        Ok(buffer)
    }
}

/// Runs a decode, a panic becoming an error of this call alone.
pub(crate) fn panic_free<T>(decode: impl FnOnce() -> std::result::Result<T, Error>) -> std::result::Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .unwrap_or_else(|_| Err(Error::proto("internal error while decoding (please report it)")))
}

/// Runtime worker threads: one unless `BIFROST_WORKER_THREADS` says otherwise.
/// Measured on 2 cores, a second worker mostly woke up to find no work: with one,
/// sequential requests and 1 Hz polling took 5 to 8% less CPU, fast polling the same.
#[napi_derive::module_init]
fn init() {
    let workers = std::env::var("BIFROST_WORKER_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers.unwrap_or(1)).enable_all().build();
    // Without a runtime of our own, napi-rs builds its default one on first use.
    if let Ok(runtime) = runtime {
        napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
    }
}

/// Registers the class every error is made of (`BifrostError`); the loader calls it once.
#[napi]
pub fn set_error_class(env: Env, error_class: Unknown) -> Result<()> {
    js::set_error_class(&env, <Unknown as napi::JsValue>::raw(&error_class))
}
