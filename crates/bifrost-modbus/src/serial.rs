//! Modbus RTU over a serial line: port settings from the URL, and the
//! inter-frame silence the serial line specification requires.

use std::time::Duration;

use bifrost_core::url::DeviceUrl;
use bifrost_core::{Error, Result};
use tokio_serial::{DataBits, Parity, SerialPortBuilderExt, StopBits};

use crate::client::Connector;

/// Reads `baud-rate`, `parity`, `data-bits` and `stop-bits` from the URL and
/// returns a connector for the port plus the silence to keep between frames.
pub fn connector(url: &mut DeviceUrl) -> Result<(Connector, Duration)> {
    let path = if url.path.is_empty() { url.host.clone() } else { url.path.clone() };
    if path.is_empty() {
        return Err(Error::address("modbus-rtu:// needs a serial port path, e.g. modbus-rtu:///dev/ttyUSB0"));
    }
    let baud: u32 = url.take("baud-rate")?.unwrap_or(19200);
    // The serial line specification's default is even parity.
    let parity = match url.take::<String>("parity")?.as_deref().unwrap_or("even") {
        "none" => Parity::None,
        "even" => Parity::Even,
        "odd" => Parity::Odd,
        other => return Err(Error::address(format!("parity must be none, even or odd, not '{other}'"))),
    };
    let data_bits = match url.take::<u8>("data-bits")?.unwrap_or(8) {
        7 => DataBits::Seven,
        8 => DataBits::Eight,
        other => return Err(Error::address(format!("data-bits must be 7 or 8, not {other}"))),
    };
    let stop_bits = match url.take::<u8>("stop-bits")?.unwrap_or(1) {
        1 => StopBits::One,
        2 => StopBits::Two,
        other => return Err(Error::address(format!("stop-bits must be 1 or 2, not {other}"))),
    };
    let connector: Connector = Box::new(move || {
        let opened = tokio_serial::new(path.clone(), baud)
            .parity(parity)
            .data_bits(data_bits)
            .stop_bits(stop_bits)
            .open_native_async()
            .map_err(|e| Error::new(bifrost_core::ErrorCode::ConnRefused, format!("open {path}: {e}")));
        Box::pin(async move { Ok(Box::new(opened?) as Box<dyn crate::client::Stream>) })
    });
    Ok((connector, inter_frame_delay(baud)))
}

/// 3.5 character times (11 bits each), fixed at 1.75 ms above 19200 baud as the spec advises.
pub fn inter_frame_delay(baud: u32) -> Duration {
    if baud > 19200 {
        Duration::from_micros(1750)
    } else {
        Duration::from_micros(3_500_000 * 11 / baud.max(1) as u64)
    }
}
