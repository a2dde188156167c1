//! Modbus for Bifrost: the codec (PDU, MBAP/TCP, RTU, ASCII framing), PLC4X-style
//! tag addresses, the pipelined client and the simulator server.

pub mod ascii;
pub mod decode;
pub mod device;
pub mod framing;
pub mod pdu;
pub mod rtu;
pub mod serial;
pub mod server;
pub mod tag;
pub mod tcp;
