//! Modbus RTU over a serial line: port settings from the URL, the inter-frame
//! silence the serial line specification requires, and how to open the port.
//! Every device on a line shares its one link (see `Opening::device`).

use std::time::Duration;

use bifrost_core::url::DeviceUrl;
use bifrost_core::{Error, ErrorCode, Result};
use bifrost_engine::runtime::{BoxStream, Connector};
use tokio_serial::{DataBits, Parity, SerialPortBuilderExt, StopBits};

/// A serial port and its line settings, from `modbus-rtu:///dev/ttyUSB0?baud-rate=9600&parity=even`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    pub path: String,
    pub baud_rate: u32,
    pub parity: Parity,
    pub data_bits: DataBits,
    pub stop_bits: StopBits,
}

impl PortSettings {
    /// Takes `baud-rate`, `parity`, `data-bits` and `stop-bits` from the URL.
    pub fn from_url(url: &mut DeviceUrl) -> Result<PortSettings> {
        let path = if url.path.is_empty() { url.host.clone() } else { url.path.clone() };
        if path.is_empty() {
            return Err(Error::address("modbus-rtu:// needs a serial port path, e.g. modbus-rtu:///dev/ttyUSB0"));
        }
        // The serial line specification's defaults: 19200 baud, even parity.
        let baud_rate = url.take_in("baud-rate", 50..=12_000_000)?.unwrap_or(19200);
        let parity = match url.take::<String>("parity")?.as_deref().unwrap_or("even") {
            "none" => Parity::None,
            "even" => Parity::Even,
            "odd" => Parity::Odd,
            other => {
                return Err(Error::invalid_value(format!(
                    "URL option 'parity' must be none, even or odd, not '{other}'"
                )))
            }
        };
        let data_bits = match url.take::<u8>("data-bits")?.unwrap_or(8) {
            7 => DataBits::Seven,
            8 => DataBits::Eight,
            other => return Err(Error::invalid_value(format!("URL option 'data-bits' must be 7 or 8, not {other}"))),
        };
        let stop_bits = match url.take::<u8>("stop-bits")?.unwrap_or(1) {
            1 => StopBits::One,
            2 => StopBits::Two,
            other => return Err(Error::invalid_value(format!("URL option 'stop-bits' must be 1 or 2, not {other}"))),
        };
        Ok(PortSettings { path, baud_rate, parity, data_bits, stop_bits })
    }

    /// 3.5 character times (11 bits each), fixed at 1.75 ms above 19200 baud as the spec advises.
    pub fn inter_frame_delay(&self) -> Duration {
        if self.baud_rate > 19200 {
            Duration::from_micros(1750)
        } else {
            Duration::from_micros(3_500_000 * 11 / u64::from(self.baud_rate.max(1)))
        }
    }

    /// The line settings as people write them: `9600 baud, 8 data bits, even parity, 1 stop bit`.
    pub(crate) fn describe(&self) -> String {
        let parity = match self.parity {
            Parity::None => "no",
            Parity::Even => "even",
            Parity::Odd => "odd",
        };
        let data_bits = match self.data_bits {
            DataBits::Five => 5,
            DataBits::Six => 6,
            DataBits::Seven => 7,
            DataBits::Eight => 8,
        };
        let stop_bits = if self.stop_bits == StopBits::Two { 2 } else { 1 };
        format!("{} baud, {data_bits} data bits, {parity} parity, {stop_bits} stop bit(s)", self.baud_rate)
    }

    pub(crate) fn connector(&self) -> Connector {
        let port = self.clone();
        Box::new(move || {
            let opened = tokio_serial::new(port.path.clone(), port.baud_rate)
                .parity(port.parity)
                .data_bits(port.data_bits)
                .stop_bits(port.stop_bits)
                .open_native_async()
                .map_err(|e| Error::new(ErrorCode::ConnRefused, format!("open {}: {e}", port.path)));
            Box::pin(async move { Ok(Box::new(opened?) as BoxStream) })
        })
    }
}
