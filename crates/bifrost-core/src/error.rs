//! The error model shared by every protocol. Each error carries a stable code
//! that the addon hands to JavaScript unchanged.

use std::fmt;

/// Stable error codes, as documented in DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Timeout,
    ConnRefused,
    /// The host name did not resolve.
    NotFound,
    /// A listening address is taken.
    AddrInUse,
    /// The device's queue of waiting requests is full.
    QueueFull,
    ConnReset,
    Closed,
    Proto,
    Address,
    /// A caller-supplied value that does not fit the tag (range, type).
    InvalidValue,
    ModbusException,
    CipStatus,
    OpcuaStatus,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::Timeout,
        ErrorCode::ConnRefused,
        ErrorCode::NotFound,
        ErrorCode::AddrInUse,
        ErrorCode::QueueFull,
        ErrorCode::ConnReset,
        ErrorCode::Closed,
        ErrorCode::Proto,
        ErrorCode::Address,
        ErrorCode::InvalidValue,
        ErrorCode::ModbusException,
        ErrorCode::CipStatus,
        ErrorCode::OpcuaStatus,
    ];

    /// The code [`ErrorCode::as_str`] spells `text`, if any.
    pub fn from_name(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Timeout => "ETIMEDOUT",
            ErrorCode::ConnRefused => "ECONNREFUSED",
            ErrorCode::NotFound => "ENOTFOUND",
            ErrorCode::AddrInUse => "EADDRINUSE",
            ErrorCode::QueueFull => "EQUEUEFULL",
            ErrorCode::ConnReset => "ECONNRESET",
            ErrorCode::Closed => "ECLOSED",
            ErrorCode::Proto => "EPROTO",
            ErrorCode::Address => "EADDRESS",
            ErrorCode::InvalidValue => "EINVAL",
            ErrorCode::ModbusException => "MODBUS_EXCEPTION",
            ErrorCode::CipStatus => "CIP_STATUS",
            ErrorCode::OpcuaStatus => "OPCUA_STATUS",
        }
    }
}

/// A Bifrost error: a stable code, a human message and, for Modbus
/// exceptions, CIP statuses and OPC UA status codes, what the device sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub exception_code: Option<u8>,
    pub cip: Option<CipStatus>,
    pub opcua: Option<OpcuaStatus>,
}

/// An OPC UA status code and its name (`OPCUA_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpcuaStatus {
    pub code: u32,
    /// `BadNodeIdUnknown`; `Bad`, `Uncertain` or `Good` for a code without a name.
    pub name: &'static str,
}

/// A CIP general status and its first extended status word (`CIP_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipStatus {
    pub status: u8,
    pub ext_status: Option<u16>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), exception_code: None, cip: None, opcua: None }
    }
    pub fn proto(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Proto, message)
    }
    pub fn address(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Address, message)
    }
    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidValue, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Timeout, message)
    }
    pub fn closed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Closed, message)
    }
    pub fn conn_reset(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ConnReset, message)
    }
    pub fn conn_refused(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ConnRefused, message)
    }
    /// A Modbus exception response: `function` is the request's function code.
    pub fn modbus_exception(function: u8, exception_code: u8) -> Self {
        Error {
            code: ErrorCode::ModbusException,
            message: format!(
                "Modbus exception {exception_code} ({}) for function {function}",
                modbus_exception_name(exception_code)
            ),
            exception_code: Some(exception_code),
            cip: None,
            opcua: None,
        }
    }
}

/// The names the Modbus Application Protocol specification gives exception codes.
pub fn modbus_exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let code = match e.kind() {
            ConnectionRefused => ErrorCode::ConnRefused,
            AddrInUse => ErrorCode::AddrInUse,
            TimedOut | WouldBlock => ErrorCode::Timeout,
            _ => ErrorCode::ConnReset,
        };
        Error::new(code, e.to_string())
    }
}
