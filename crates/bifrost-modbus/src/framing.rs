//! Modbus on a byte stream, as the engine's link sees it: requests with owned
//! payloads so they can wait in a queue, MBAP frames matched by transaction id,
//! RTU frames matched by turn.

use bifrost_core::{Error, Result};
use bytes::Bytes;

use crate::pdu::{function, Request, Response};
use crate::{rtu, tcp};

/// How requests and replies are framed on the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// MBAP header with transaction ids: requests can be pipelined.
    Tcp,
    /// Address + PDU + CRC: one request at a time.
    Rtu,
}

/// A request's operation, with owned payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Read { function: u8, address: u16, quantity: u16 },
    WriteSingleCoil { address: u16, value: bool },
    WriteSingleRegister { address: u16, value: u16 },
    WriteMultipleCoils { address: u16, quantity: u16, packed: Bytes },
    WriteMultipleRegisters { address: u16, registers: Bytes },
    MaskWriteRegister { address: u16, and_mask: u16, or_mask: u16 },
    ReadDeviceIdentification { read_code: u8, object_id: u8 },
}

impl Op {
    /// Builds the borrowed codec request; unknown read functions are a caller bug.
    pub fn request(&self) -> Result<Request<'_>> {
        Ok(match *self {
            Op::Read { function, address, quantity } => match function {
                function::READ_COILS => Request::ReadCoils { address, quantity },
                function::READ_DISCRETE_INPUTS => Request::ReadDiscreteInputs { address, quantity },
                function::READ_HOLDING_REGISTERS => Request::ReadHoldingRegisters { address, quantity },
                function::READ_INPUT_REGISTERS => Request::ReadInputRegisters { address, quantity },
                other => return Err(Error::invalid_value(format!("function {other} is not a read"))),
            },
            Op::WriteSingleCoil { address, value } => Request::WriteSingleCoil { address, value },
            Op::WriteSingleRegister { address, value } => Request::WriteSingleRegister { address, value },
            Op::WriteMultipleCoils { address, quantity, ref packed } => {
                Request::WriteMultipleCoils { address, quantity, packed }
            }
            Op::WriteMultipleRegisters { address, ref registers } => {
                Request::WriteMultipleRegisters { address, registers }
            }
            Op::MaskWriteRegister { address, and_mask, or_mask } => {
                Request::MaskWriteRegister { address, and_mask, or_mask }
            }
            Op::ReadDeviceIdentification { read_code, object_id } => {
                Request::ReadDeviceIdentification { read_code, object_id }
            }
        })
    }

    fn function(&self) -> u8 {
        self.request().map(|r| r.function()).unwrap_or(0)
    }
}

/// An operation addressed to one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub unit: u8,
    pub op: Op,
}

/// A reply frame, split off the receive buffer without copying.
#[derive(Debug, Clone)]
pub struct Reply {
    frame: Bytes,
    unit: u8,
    pdu_start: usize,
    pdu_end: usize,
}

impl Reply {
    /// The PDU bytes (function code onwards). Empty for a broadcast, which has no reply.
    pub fn pdu(&self) -> &[u8] {
        &self.frame[self.pdu_start..self.pdu_end]
    }

    /// Decodes the PDU as the reply to `function`; a Modbus exception becomes `MODBUS_EXCEPTION`.
    pub fn response(&self, function: u8) -> Result<Response<'_>> {
        match Response::decode(self.pdu(), function)? {
            Response::Exception { function, code } => Err(Error::modbus_exception(function, code)),
            response => Ok(response),
        }
    }
}

fn pdu_offset(frame: &[u8], pdu: &[u8]) -> usize {
    pdu.as_ptr() as usize - frame.as_ptr() as usize
}

impl bifrost_engine::Framing for Framing {
    type Request = Call;
    type Reply = Reply;

    fn id_space(&self) -> u32 {
        match self {
            Framing::Tcp => 1 << 16,
            Framing::Rtu => 0,
        }
    }

    fn is_write(call: &Call) -> bool {
        !matches!(call.op, Op::Read { .. } | Op::ReadDeviceIdentification { .. })
    }

    fn describe(call: &Call) -> String {
        format!("unit {} (function {})", call.unit, call.op.function())
    }

    fn encode(&mut self, id: u32, call: &Call, out: &mut Vec<u8>) -> Result<bool> {
        let request = call.op.request()?;
        match self {
            Framing::Tcp => tcp::encode_request(id as u16, call.unit, &request, out)?,
            Framing::Rtu => rtu::encode_request(call.unit, &request, out)?,
        }
        // Unit 0 is a broadcast: devices act on writes to it without answering.
        Ok(call.unit != 0 || !Self::is_write(call))
    }

    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>> {
        match self {
            Framing::Tcp => Ok(tcp::decode_frame(buf)?.map(|(_, _, len)| len)),
            Framing::Rtu => rtu::response_frame_len(buf),
        }
    }

    fn parse(&mut self, frame: Bytes) -> Result<Option<(Option<u32>, Reply)>> {
        let (id, unit, pdu_start, pdu_len) = match self {
            Framing::Tcp => {
                let (header, pdu, _) =
                    tcp::decode_frame(&frame)?.ok_or_else(|| Error::proto("MBAP frame is truncated"))?;
                (Some(header.transaction_id as u32), header.unit_id, pdu_offset(&frame, pdu), pdu.len())
            }
            Framing::Rtu => {
                let (unit, pdu) = rtu::decode_frame(&frame)?;
                (None, unit, pdu_offset(&frame, pdu), pdu.len())
            }
        };
        Ok(Some((id, Reply { frame, unit, pdu_start, pdu_end: pdu_start + pdu_len })))
    }

    fn answers(call: &Call, reply: &Reply) -> Result<()> {
        if reply.unit == call.unit || reply.unit == 0 {
            return Ok(());
        }
        Err(Error::proto(format!(
            "reply from unit {} to a request for unit {} (function {})",
            reply.unit,
            call.unit,
            call.op.function()
        )))
    }

    fn unanswered(call: &Call) -> Reply {
        Reply { frame: Bytes::new(), unit: call.unit, pdu_start: 0, pdu_end: 0 }
    }
}
