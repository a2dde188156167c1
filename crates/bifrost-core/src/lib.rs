//! Protocol-neutral core of Bifrost: the error model, IEC 61131 data types and
//! byte orders, the value codec for 16-bit register images, the batch planner
//! and the reconnect backoff. Nothing here knows about Node.js or any one protocol.

pub mod backoff;
pub mod codec;
pub mod error;
pub mod planner;
pub mod types;
pub mod url;
pub mod wire;

pub use codec::{decode_element, decode_string, elements_f64, encode_element, encode_string, registers_per_element};
pub use error::{CipStatus, Error, ErrorCode, OpcuaStatus, Result};
pub use types::{ByteOrder, DataType, TypedValue, Value};
