//! Modbus bindings: opening a device on its driver, the reply decoder and the
//! simulator, each a thin wrapper that converts arguments and results.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use bifrost_core::url::{whole_number, DeviceUrl};
use bifrost_core::Error;
use bifrost_engine::{Columns, Device, Failover, FailoverConfig};
use bifrost_modbus::decode::ReplyDecoder;
use bifrost_modbus::device::{ModbusDevice, Opening, Target};
use bifrost_modbus::framing::Framing;
use bifrost_modbus::server::{parse_range_spec, SimulatorConfig};
use bifrost_modbus::tag::ModbusTag;
use napi::bindgen_prelude::{Either, Float64ArraySlice, Uint32Array};
use napi::Env;
use napi_derive::napi;

use crate::device::{BindingDevice, DriverChoice};
#[cfg(target_os = "linux")]
use crate::event_loop::EventLoopDriver;
use crate::js::{either, to_binding_columns, BindingColumnarRead, JsError, Promise, ToJs};
use crate::simulator::{BindingSimulator, SimulatorOptions};
use crate::{guarded, panic_free};

/// Opens a Modbus device and settles `promise` with its `BindingDevice`. With
/// `backup=host:port`, the primary and then the backup open as one failover pair.
pub fn open(env: &Env, mut url: DeviceUrl, driver: DriverChoice, promise: Promise) {
    let failover = match FailoverConfig::take(&mut url) {
        Ok(failover) => failover,
        Err(e) => return promise.reject(env.raw(), &e),
    };
    if failover.is_some() && url.scheme == "modbus-rtu" {
        return promise.reject(env.raw(), &Error::address("URL option 'backup' is for TCP devices, not serial lines"));
    }
    let Some(FailoverConfig { backup, writes }) = failover else {
        let on_open = Box::new(move |env, device: Result<ModbusDevice, Error>| match device {
            Ok(device) => promise.resolve(env, BindingDevice::new(Box::new(device))),
            Err(e) => promise.reject(env, &e),
        });
        return open_one(env.raw(), url, driver, on_open);
    };
    let backup_address = backup.socket_address(502);
    let on_primary = Box::new(move |env, primary: Result<ModbusDevice, Error>| {
        let primary = match primary {
            Ok(primary) => park(primary),
            Err(e) => return promise.reject(env, &e),
        };
        let on_backup = Box::new(move |env, backup: Result<ModbusDevice, Error>| {
            let Some(primary) = unpark(primary) else {
                return promise.reject(env, &Error::closed("the primary was closed while the backup opened"));
            };
            match backup {
                Ok(backup) => {
                    let pair = Failover::new(Box::new(primary), Box::new(backup), writes);
                    promise.resolve(env, BindingDevice::new(Box::new(pair)))
                }
                Err(mut e) => {
                    primary.close(Box::new(|_| {}));
                    e.message = format!("backup {backup_address}: {}", e.message);
                    promise.reject(env, &e)
                }
            }
        });
        open_one(env, backup, driver, on_backup);
    });
    open_one(env.raw(), url, driver, on_primary);
}

/// Told on the JavaScript thread how a device's opening went.
type OnOpen = Box<dyn FnOnce(napi::sys::napi_env, Result<ModbusDevice, Error>) + Send>;

/// Opens one device on its driver (or joins its shared link).
fn open_one(env: napi::sys::napi_env, url: DeviceUrl, driver: DriverChoice, on_open: OnOpen) {
    let opening = match Opening::from_url(url) {
        Ok(opening) => opening,
        Err(e) => return on_open(env, Err(e)),
    };
    if let Some(joined) = opening.join() {
        return on_open(env, joined);
    }
    #[cfg(target_os = "linux")]
    if let (DriverChoice::EventLoop, Target::Tcp(addr)) = (driver, &opening.target) {
        let (framing, link, addr) = (opening.framing, opening.link.clone(), addr.clone());
        let on_driver = Box::new(move |env, opened: Result<EventLoopDriver<Framing>, Error>| {
            on_open(env, opened.and_then(|driver| opening.device(Box::new(driver))))
        });
        return EventLoopDriver::open(env, framing, link, addr, on_driver);
    }
    let _ = driver; // serial lines, and other platforms, always run on the runtime
    let Some(to_js) = ToJs::here() else { return on_open(env, Err(Error::proto("no JavaScript thread"))) };
    napi::bindgen_prelude::spawn(async move {
        let opened = guarded(opening.open_runtime_driver()).await.and_then(|driver| driver);
        to_js.post(Box::new(move |env| on_open(env, opened.and_then(|driver| opening.device(driver)))));
    });
}

thread_local! {
    /// Primaries of failover pairs whose backup is still opening. A device lives on
    /// its JavaScript thread, and the backup's opening may finish on another.
    static PARKED: RefCell<HashMap<u64, ModbusDevice>> = RefCell::new(HashMap::new());
    static NEXT_PARKED: Cell<u64> = const { Cell::new(0) };
}

fn park(device: ModbusDevice) -> u64 {
    let id = NEXT_PARKED.with(|next| next.replace(next.get() + 1));
    PARKED.with(|parked| parked.borrow_mut().insert(id, device));
    id
}

fn unpark(id: u64) -> Option<ModbusDevice> {
    PARKED.with(|parked| parked.borrow_mut().remove(&id))
}

/// Makes a decoder for read replies captured elsewhere; `start` is the first address the reply answers.
#[napi]
pub fn create_reply_decoder(tags: Vec<String>, start: u32) -> Either<BindingReplyDecoder, JsError> {
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
    #[napi(ts_return_type = "ArrayBuffer | BindingColumnsWithErrors | Error")]
    pub fn decode(&self, frame: &[u8]) -> Either<BindingColumnarRead, JsError> {
        either(self.guarded_decode(frame).map(to_binding_columns))
    }

    /// Decodes into the caller's array, creating no JavaScript objects; returns how many tags failed.
    #[napi]
    pub fn decode_into(&self, frame: &[u8], mut values: Float64ArraySlice) -> Either<u32, JsError> {
        // Safe: a synchronous call on the JS thread, so no JavaScript runs while Rust writes.
        let values = unsafe { values.as_mut() };
        let count = self.decoder.value_count();
        if values.len() < count {
            return either(Err(Error::invalid_value(format!(
                "values holds {} numbers; {count} are needed",
                values.len()
            ))));
        }
        let mut failed = 0;
        either(
            panic_free(|| self.decoder.decode_into(frame, &mut values[..count], |_, _| failed += 1)).map(|()| failed),
        )
    }

    /// Decodes many frames, back to back in one buffer, into the caller's array:
    /// frame `i`'s values start at `i × valueCount`. `lengths` gives each frame's
    /// length; without it, frames are cut by their MBAP lengths. A frame that
    /// cannot be decoded is NaN throughout, and each of its tags counts as failed.
    #[napi]
    pub fn decode_many(
        &self,
        joined: &[u8],
        lengths: Option<Uint32Array>,
        mut values: Float64ArraySlice,
    ) -> Either<BindingDecodedMany, JsError> {
        let frames = match &lengths {
            Some(lengths) => match cut_frames(joined, lengths) {
                Ok(frames) => frames,
                Err(e) => return either(Err(e)),
            },
            None => split_frames(joined),
        };
        // Safe: a synchronous call on the JS thread, so no JavaScript runs while Rust writes.
        let values = unsafe { values.as_mut() };
        let count = self.decoder.value_count();
        let needed = frames.len() * count;
        if values.len() < needed {
            let message =
                format!("values holds {} numbers; {} frames of {count} need {needed}", values.len(), frames.len());
            return either(Err(Error::invalid_value(message)));
        }
        let tags = self.decoder.tag_count() as u32;
        let decoded = panic_free(|| {
            let mut failed = 0;
            for (frame, out) in frames.iter().zip(values.chunks_exact_mut(count.max(1))) {
                if self.decoder.decode_into(frame, out, |_, _| failed += 1).is_err() {
                    out.fill(f64::NAN);
                    failed += tags;
                }
            }
            Ok(failed)
        });
        either(decoded.map(|failed| BindingDecodedMany { frames: frames.len() as u32, failed }))
    }

    #[napi(getter)]
    pub fn value_count(&self) -> u32 {
        self.decoder.value_count() as u32
    }

    fn guarded_decode(&self, frame: &[u8]) -> Result<Columns, Error> {
        panic_free(|| self.decoder.decode(frame))
    }
}

/// Frames of the given lengths, back to back.
fn cut_frames<'a>(mut bytes: &'a [u8], lengths: &[u32]) -> Result<Vec<&'a [u8]>, Error> {
    let mut frames = Vec::with_capacity(lengths.len());
    for &len in lengths {
        let Some((frame, rest)) = bytes.split_at_checked(len as usize) else {
            return Err(Error::invalid_value("the frame lengths add up to more than the bytes given"));
        };
        frames.push(frame);
        bytes = rest;
    }
    Ok(frames)
}

/// Back-to-back Modbus TCP frames, cut by their MBAP lengths; what is left
/// after the last whole frame is one more (bad) frame.
fn split_frames(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let len = ReplyDecoder::frame_len(bytes).unwrap_or(bytes.len()).min(bytes.len());
        frames.push(&bytes[..len]);
        bytes = &bytes[len..];
    }
    frames
}

/// What `decodeMany` did.
#[napi(object, object_from_js = false)]
pub struct BindingDecodedMany {
    /// Frames decoded (or found bad).
    pub frames: u32,
    /// Tags that failed, over every frame.
    pub failed: u32,
}

fn simulator_config(options: &SimulatorOptions) -> Result<SimulatorConfig, Error> {
    let defaults = SimulatorConfig::default();
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
    Ok(SimulatorConfig { framing, units, invalid, faults: options.faults()? })
}

/// Starts the Modbus simulator inside this process.
#[napi]
pub async fn start_modbus_simulator(options: SimulatorOptions) -> Either<BindingSimulator, JsError> {
    let started = async move {
        let config = simulator_config(&options)?;
        options.listen(|address| async move { bifrost_modbus::server::start(&address, config).await }).await
    };
    either(started.await.map(BindingSimulator::new))
}
