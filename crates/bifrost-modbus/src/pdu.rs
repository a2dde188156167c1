//! Modbus PDUs (function code + data), as defined by the Modbus Application
//! Protocol specification V1.1b3. Decoders borrow from the input; encoders
//! append to a caller-supplied buffer.

use bifrost_core::{Error, Result};

/// Largest PDU the specification allows (256-byte serial ADU minus address and CRC).
pub const MAX_PDU_LEN: usize = 253;

/// Public function codes this crate speaks.
pub mod function {
    pub const READ_COILS: u8 = 1;
    pub const READ_DISCRETE_INPUTS: u8 = 2;
    pub const READ_HOLDING_REGISTERS: u8 = 3;
    pub const READ_INPUT_REGISTERS: u8 = 4;
    pub const WRITE_SINGLE_COIL: u8 = 5;
    pub const WRITE_SINGLE_REGISTER: u8 = 6;
    pub const WRITE_MULTIPLE_COILS: u8 = 15;
    pub const WRITE_MULTIPLE_REGISTERS: u8 = 16;
    pub const MASK_WRITE_REGISTER: u8 = 22;
    pub const READ_WRITE_MULTIPLE_REGISTERS: u8 = 23;
    pub const ENCAPSULATED_INTERFACE: u8 = 43;

    /// Whether a request with this function changes the device.
    pub fn is_write(function: u8) -> bool {
        matches!(
            function,
            WRITE_SINGLE_COIL
                | WRITE_SINGLE_REGISTER
                | WRITE_MULTIPLE_COILS
                | WRITE_MULTIPLE_REGISTERS
                | MASK_WRITE_REGISTER
                | READ_WRITE_MULTIPLE_REGISTERS
        )
    }
}

/// Exception codes a server answers with (specification section 7).
pub mod exception {
    pub const ILLEGAL_FUNCTION: u8 = 1;
    pub const ILLEGAL_DATA_ADDRESS: u8 = 2;
    pub const ILLEGAL_DATA_VALUE: u8 = 3;
    pub const SERVER_DEVICE_FAILURE: u8 = 4;
}

/// MEI type of Read Device Identification (function 43).
pub const MEI_READ_DEVICE_ID: u8 = 14;

const MAX_READ_BITS: u16 = 2000;
const MAX_READ_REGISTERS: u16 = 125;
const MAX_WRITE_COILS: u16 = 1968;
const MAX_WRITE_REGISTERS: u16 = 123;
const MAX_RW_WRITE_REGISTERS: u16 = 121;

const COIL_ON: u16 = 0xFF00;
const COIL_OFF: u16 = 0x0000;

use function::*;

/// A request PDU. Payload slices borrow the decoded buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    ReadCoils {
        address: u16,
        quantity: u16,
    },
    ReadDiscreteInputs {
        address: u16,
        quantity: u16,
    },
    ReadHoldingRegisters {
        address: u16,
        quantity: u16,
    },
    ReadInputRegisters {
        address: u16,
        quantity: u16,
    },
    WriteSingleCoil {
        address: u16,
        value: bool,
    },
    WriteSingleRegister {
        address: u16,
        value: u16,
    },
    /// `packed`: LSB-first packed bits, `len == ceil(quantity / 8)`.
    WriteMultipleCoils {
        address: u16,
        quantity: u16,
        packed: &'a [u8],
    },
    /// `registers`: big-endian register bytes; the quantity is `len / 2`.
    WriteMultipleRegisters {
        address: u16,
        registers: &'a [u8],
    },
    MaskWriteRegister {
        address: u16,
        and_mask: u16,
        or_mask: u16,
    },
    ReadWriteMultipleRegisters {
        read_address: u16,
        read_quantity: u16,
        write_address: u16,
        write_registers: &'a [u8],
    },
    ReadDeviceIdentification {
        read_code: u8,
        object_id: u8,
    },
}

/// Cursor over a byte slice; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        let (head, rest) = self.buf.split_at_checked(2)?;
        self.buf = rest;
        Some(u16::from_be_bytes([*head.first()?, *head.get(1)?]))
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.buf.split_at_checked(n)?;
        self.buf = rest;
        Some(head)
    }
    fn rest(&self) -> &'a [u8] {
        self.buf
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn fits_address_space(address: u16, quantity: u16) -> bool {
    u32::from(address) + u32::from(quantity) <= 0x1_0000
}

/// Client-side check of a quantity against its spec limit and the address space.
fn check_quantity(what: &str, address: u16, quantity: u16, max: u16) -> Result<()> {
    if quantity == 0 || quantity > max {
        return Err(Error::invalid_value(format!("{what}: quantity {quantity} out of range 1..={max}")));
    }
    if !fits_address_space(address, quantity) {
        return Err(Error::invalid_value(format!(
            "{what}: {quantity} items from address {address} run past address 65535"
        )));
    }
    Ok(())
}

fn register_count(what: &str, registers: &[u8]) -> Result<u16> {
    if !registers.len().is_multiple_of(2) {
        return Err(Error::invalid_value(format!("{what}: register data has odd length {}", registers.len())));
    }
    // Saturate: anything this large fails the quantity check anyway.
    Ok(u16::try_from(registers.len() / 2).unwrap_or(u16::MAX))
}

/// Server-side check: quantity limits answer 3, address overflow answers 2.
fn check_request_quantity(address: u16, quantity: u16, max: u16) -> std::result::Result<(), u8> {
    if quantity == 0 || quantity > max {
        return Err(exception::ILLEGAL_DATA_VALUE);
    }
    if !fits_address_space(address, quantity) {
        return Err(exception::ILLEGAL_DATA_ADDRESS);
    }
    Ok(())
}

impl<'a> Request<'a> {
    pub fn function(&self) -> u8 {
        match self {
            Request::ReadCoils { .. } => READ_COILS,
            Request::ReadDiscreteInputs { .. } => READ_DISCRETE_INPUTS,
            Request::ReadHoldingRegisters { .. } => READ_HOLDING_REGISTERS,
            Request::ReadInputRegisters { .. } => READ_INPUT_REGISTERS,
            Request::WriteSingleCoil { .. } => WRITE_SINGLE_COIL,
            Request::WriteSingleRegister { .. } => WRITE_SINGLE_REGISTER,
            Request::WriteMultipleCoils { .. } => WRITE_MULTIPLE_COILS,
            Request::WriteMultipleRegisters { .. } => WRITE_MULTIPLE_REGISTERS,
            Request::MaskWriteRegister { .. } => MASK_WRITE_REGISTER,
            Request::ReadWriteMultipleRegisters { .. } => READ_WRITE_MULTIPLE_REGISTERS,
            Request::ReadDeviceIdentification { .. } => ENCAPSULATED_INTERFACE,
        }
    }

    fn validate(&self) -> Result<()> {
        match *self {
            Request::ReadCoils { address, quantity } => check_quantity("read coils", address, quantity, MAX_READ_BITS),
            Request::ReadDiscreteInputs { address, quantity } => {
                check_quantity("read discrete inputs", address, quantity, MAX_READ_BITS)
            }
            Request::ReadHoldingRegisters { address, quantity } => {
                check_quantity("read holding registers", address, quantity, MAX_READ_REGISTERS)
            }
            Request::ReadInputRegisters { address, quantity } => {
                check_quantity("read input registers", address, quantity, MAX_READ_REGISTERS)
            }
            Request::WriteSingleCoil { .. }
            | Request::WriteSingleRegister { .. }
            | Request::MaskWriteRegister { .. } => Ok(()),
            Request::WriteMultipleCoils { address, quantity, packed } => {
                check_quantity("write multiple coils", address, quantity, MAX_WRITE_COILS)?;
                let expected = usize::from(quantity).div_ceil(8);
                if packed.len() != expected {
                    return Err(Error::invalid_value(format!(
                        "write multiple coils: {quantity} coils need {expected} packed bytes, got {}",
                        packed.len()
                    )));
                }
                Ok(())
            }
            Request::WriteMultipleRegisters { address, registers } => {
                let what = "write multiple registers";
                let quantity = register_count(what, registers)?;
                check_quantity(what, address, quantity, MAX_WRITE_REGISTERS)
            }
            Request::ReadWriteMultipleRegisters { read_address, read_quantity, write_address, write_registers } => {
                check_quantity(
                    "read/write multiple registers (read)",
                    read_address,
                    read_quantity,
                    MAX_READ_REGISTERS,
                )?;
                let what = "read/write multiple registers (write)";
                let write_quantity = register_count(what, write_registers)?;
                check_quantity(what, write_address, write_quantity, MAX_RW_WRITE_REGISTERS)
            }
            Request::ReadDeviceIdentification { read_code, .. } => {
                if !(1..=4).contains(&read_code) {
                    return Err(Error::invalid_value(format!(
                        "read device identification: read code {read_code} out of range 1..=4"
                    )));
                }
                Ok(())
            }
        }
    }

    /// Appends the PDU after checking the specification's quantity limits;
    /// nothing is appended on error.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        self.validate()?;
        out.push(self.function());
        match *self {
            Request::ReadCoils { address, quantity }
            | Request::ReadDiscreteInputs { address, quantity }
            | Request::ReadHoldingRegisters { address, quantity }
            | Request::ReadInputRegisters { address, quantity } => {
                push_u16(out, address);
                push_u16(out, quantity);
            }
            Request::WriteSingleCoil { address, value } => {
                push_u16(out, address);
                push_u16(out, if value { COIL_ON } else { COIL_OFF });
            }
            Request::WriteSingleRegister { address, value } => {
                push_u16(out, address);
                push_u16(out, value);
            }
            Request::WriteMultipleCoils { address, quantity, packed } => {
                push_u16(out, address);
                push_u16(out, quantity);
                // Validated: at most 246 bytes.
                out.push(packed.len() as u8);
                out.extend_from_slice(packed);
            }
            Request::WriteMultipleRegisters { address, registers } => {
                push_u16(out, address);
                push_u16(out, (registers.len() / 2) as u16);
                out.push(registers.len() as u8);
                out.extend_from_slice(registers);
            }
            Request::MaskWriteRegister { address, and_mask, or_mask } => {
                push_u16(out, address);
                push_u16(out, and_mask);
                push_u16(out, or_mask);
            }
            Request::ReadWriteMultipleRegisters { read_address, read_quantity, write_address, write_registers } => {
                push_u16(out, read_address);
                push_u16(out, read_quantity);
                push_u16(out, write_address);
                push_u16(out, (write_registers.len() / 2) as u16);
                out.push(write_registers.len() as u8);
                out.extend_from_slice(write_registers);
            }
            Request::ReadDeviceIdentification { read_code, object_id } => {
                out.push(MEI_READ_DEVICE_ID);
                out.push(read_code);
                out.push(object_id);
            }
        }
        Ok(())
    }

    /// Server side: parses a request PDU, borrowing its payload. `Err` carries
    /// the exception code to answer: 1 for an unknown function or MEI type, 3
    /// for a malformed body or a quantity outside the spec limits, 2 when
    /// address + quantity passes 65536. An empty PDU answers 1.
    pub fn decode(pdu: &'a [u8]) -> std::result::Result<Request<'a>, u8> {
        use exception::{ILLEGAL_DATA_VALUE as VALUE, ILLEGAL_FUNCTION};
        let (&function, body) = pdu.split_first().ok_or(ILLEGAL_FUNCTION)?;
        let mut r = Reader::new(body);
        let request = match function {
            READ_COILS | READ_DISCRETE_INPUTS | READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS => {
                let address = r.u16().ok_or(VALUE)?;
                let quantity = r.u16().ok_or(VALUE)?;
                let max = if function <= READ_DISCRETE_INPUTS { MAX_READ_BITS } else { MAX_READ_REGISTERS };
                check_request_quantity(address, quantity, max)?;
                match function {
                    READ_COILS => Request::ReadCoils { address, quantity },
                    READ_DISCRETE_INPUTS => Request::ReadDiscreteInputs { address, quantity },
                    READ_HOLDING_REGISTERS => Request::ReadHoldingRegisters { address, quantity },
                    _ => Request::ReadInputRegisters { address, quantity },
                }
            }
            WRITE_SINGLE_COIL => {
                let address = r.u16().ok_or(VALUE)?;
                let value = match r.u16().ok_or(VALUE)? {
                    COIL_ON => true,
                    COIL_OFF => false,
                    _ => return Err(VALUE),
                };
                Request::WriteSingleCoil { address, value }
            }
            WRITE_SINGLE_REGISTER => {
                let address = r.u16().ok_or(VALUE)?;
                let value = r.u16().ok_or(VALUE)?;
                Request::WriteSingleRegister { address, value }
            }
            WRITE_MULTIPLE_COILS => {
                let address = r.u16().ok_or(VALUE)?;
                let quantity = r.u16().ok_or(VALUE)?;
                let byte_count = r.u8().ok_or(VALUE)?;
                if quantity == 0
                    || quantity > MAX_WRITE_COILS
                    || usize::from(byte_count) != usize::from(quantity).div_ceil(8)
                {
                    return Err(VALUE);
                }
                let packed = r.take(usize::from(byte_count)).ok_or(VALUE)?;
                check_request_quantity(address, quantity, MAX_WRITE_COILS)?;
                Request::WriteMultipleCoils { address, quantity, packed }
            }
            WRITE_MULTIPLE_REGISTERS => {
                let address = r.u16().ok_or(VALUE)?;
                let quantity = r.u16().ok_or(VALUE)?;
                let byte_count = r.u8().ok_or(VALUE)?;
                if quantity == 0
                    || quantity > MAX_WRITE_REGISTERS
                    || usize::from(byte_count) != usize::from(quantity) * 2
                {
                    return Err(VALUE);
                }
                let registers = r.take(usize::from(byte_count)).ok_or(VALUE)?;
                check_request_quantity(address, quantity, MAX_WRITE_REGISTERS)?;
                Request::WriteMultipleRegisters { address, registers }
            }
            MASK_WRITE_REGISTER => {
                let address = r.u16().ok_or(VALUE)?;
                let and_mask = r.u16().ok_or(VALUE)?;
                let or_mask = r.u16().ok_or(VALUE)?;
                Request::MaskWriteRegister { address, and_mask, or_mask }
            }
            READ_WRITE_MULTIPLE_REGISTERS => {
                let read_address = r.u16().ok_or(VALUE)?;
                let read_quantity = r.u16().ok_or(VALUE)?;
                let write_address = r.u16().ok_or(VALUE)?;
                let write_quantity = r.u16().ok_or(VALUE)?;
                let byte_count = r.u8().ok_or(VALUE)?;
                if read_quantity == 0
                    || read_quantity > MAX_READ_REGISTERS
                    || write_quantity == 0
                    || write_quantity > MAX_RW_WRITE_REGISTERS
                    || usize::from(byte_count) != usize::from(write_quantity) * 2
                {
                    return Err(VALUE);
                }
                let write_registers = r.take(usize::from(byte_count)).ok_or(VALUE)?;
                check_request_quantity(read_address, read_quantity, MAX_READ_REGISTERS)?;
                check_request_quantity(write_address, write_quantity, MAX_RW_WRITE_REGISTERS)?;
                Request::ReadWriteMultipleRegisters { read_address, read_quantity, write_address, write_registers }
            }
            ENCAPSULATED_INTERFACE => {
                if r.u8().ok_or(VALUE)? != MEI_READ_DEVICE_ID {
                    return Err(ILLEGAL_FUNCTION);
                }
                let read_code = r.u8().ok_or(VALUE)?;
                let object_id = r.u8().ok_or(VALUE)?;
                if !(1..=4).contains(&read_code) {
                    return Err(VALUE);
                }
                Request::ReadDeviceIdentification { read_code, object_id }
            }
            _ => return Err(ILLEGAL_FUNCTION),
        };
        if !r.is_empty() {
            return Err(VALUE);
        }
        Ok(request)
    }
}

/// A response PDU. Payload slices borrow the decoded buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    /// FC1/FC2: LSB-first packed bits.
    ReadBits {
        packed: &'a [u8],
    },
    /// FC3/FC4/FC23: big-endian register bytes.
    ReadRegisters {
        registers: &'a [u8],
    },
    WriteSingleCoil {
        address: u16,
        value: bool,
    },
    WriteSingleRegister {
        address: u16,
        value: u16,
    },
    /// FC15/FC16 echo.
    WriteMultiple {
        address: u16,
        quantity: u16,
    },
    MaskWriteRegister {
        address: u16,
        and_mask: u16,
        or_mask: u16,
    },
    DeviceIdentification(DeviceIdentification<'a>),
    /// `function` without the 0x80 bit.
    Exception {
        function: u8,
        code: u8,
    },
}

/// A Read Device Identification (FC43/14) response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIdentification<'a> {
    pub read_code: u8,
    pub conformity: u8,
    pub more_follows: bool,
    pub next_object_id: u8,
    pub object_count: u8,
    /// Raw `id, len, value` triples (validated by `Response::decode`).
    pub objects: &'a [u8],
}

impl<'a> DeviceIdentification<'a> {
    /// The `(object id, value)` pairs; stops at the first truncated object.
    pub fn objects(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut r = Reader::new(self.objects);
        std::iter::from_fn(move || {
            let id = r.u8()?;
            let len = r.u8()?;
            let value = r.take(usize::from(len))?;
            Some((id, value))
        })
    }
}

/// Checks that `objects` holds exactly `count` well-formed triples.
fn check_objects(objects: &[u8], count: u8) -> Result<()> {
    let mut r = Reader::new(objects);
    for i in 0..count {
        let short = || Error::proto(format!("device identification object {i} of {count} is truncated"));
        let _id = r.u8().ok_or_else(short)?;
        let len = r.u8().ok_or_else(short)?;
        r.take(usize::from(len)).ok_or_else(short)?;
    }
    if !r.is_empty() {
        return Err(Error::proto(format!(
            "device identification response has {} bytes after its {count} objects",
            r.rest().len()
        )));
    }
    Ok(())
}

fn expect_end(r: &Reader, function: u8) -> Result<()> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(Error::proto(format!("function {function} response has {} trailing bytes", r.rest().len())))
    }
}

fn truncated(function: u8) -> Error {
    Error::proto(format!("function {function} response is truncated"))
}

/// Reads `byte_count` then exactly that many bytes, which must end the PDU.
fn counted_payload<'a>(r: &mut Reader<'a>, function: u8, registers: bool) -> Result<&'a [u8]> {
    let byte_count = r.u8().ok_or_else(|| truncated(function))?;
    if byte_count == 0 || (registers && !byte_count.is_multiple_of(2)) {
        return Err(Error::proto(format!("function {function} response has invalid byte count {byte_count}")));
    }
    let available = r.rest().len();
    if available != usize::from(byte_count) {
        return Err(Error::proto(format!(
            "function {function} response byte count {byte_count} but {available} data bytes follow"
        )));
    }
    r.take(usize::from(byte_count)).ok_or_else(|| truncated(function))
}

impl<'a> Response<'a> {
    /// Client side: decodes the response PDU to a request of `expected_function`.
    /// An exception for that function decodes to `Ok(Response::Exception)`.
    pub fn decode(pdu: &'a [u8], expected_function: u8) -> Result<Response<'a>> {
        let (&function, body) = pdu.split_first().ok_or_else(|| Error::proto("empty response PDU"))?;
        let mut r = Reader::new(body);
        if expected_function < 0x80 && function == expected_function | 0x80 {
            let code = r.u8().ok_or_else(|| {
                Error::proto(format!("exception response to function {expected_function} has no code"))
            })?;
            expect_end(&r, function)?;
            return Ok(Response::Exception { function: expected_function, code });
        }
        if function != expected_function {
            return Err(Error::proto(format!(
                "response function code {function} does not match request function {expected_function}"
            )));
        }
        let t = || truncated(function);
        let response = match function {
            READ_COILS | READ_DISCRETE_INPUTS => {
                Response::ReadBits { packed: counted_payload(&mut r, function, false)? }
            }
            READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS | READ_WRITE_MULTIPLE_REGISTERS => {
                Response::ReadRegisters { registers: counted_payload(&mut r, function, true)? }
            }
            WRITE_SINGLE_COIL => {
                let address = r.u16().ok_or_else(t)?;
                let value = match r.u16().ok_or_else(t)? {
                    COIL_ON => true,
                    COIL_OFF => false,
                    other => {
                        return Err(Error::proto(format!(
                            "write single coil response has value 0x{other:04X} (expected 0xFF00 or 0x0000)"
                        )))
                    }
                };
                Response::WriteSingleCoil { address, value }
            }
            WRITE_SINGLE_REGISTER => {
                let address = r.u16().ok_or_else(t)?;
                let value = r.u16().ok_or_else(t)?;
                Response::WriteSingleRegister { address, value }
            }
            WRITE_MULTIPLE_COILS | WRITE_MULTIPLE_REGISTERS => {
                let address = r.u16().ok_or_else(t)?;
                let quantity = r.u16().ok_or_else(t)?;
                Response::WriteMultiple { address, quantity }
            }
            MASK_WRITE_REGISTER => {
                let address = r.u16().ok_or_else(t)?;
                let and_mask = r.u16().ok_or_else(t)?;
                let or_mask = r.u16().ok_or_else(t)?;
                Response::MaskWriteRegister { address, and_mask, or_mask }
            }
            ENCAPSULATED_INTERFACE => {
                let mei = r.u8().ok_or_else(t)?;
                if mei != MEI_READ_DEVICE_ID {
                    return Err(Error::proto(format!(
                        "function 43 response has MEI type {mei} (expected {MEI_READ_DEVICE_ID})"
                    )));
                }
                let read_code = r.u8().ok_or_else(t)?;
                let conformity = r.u8().ok_or_else(t)?;
                let more_follows = match r.u8().ok_or_else(t)? {
                    0x00 => false,
                    0xFF => true,
                    other => {
                        return Err(Error::proto(format!(
                            "device identification more-follows is 0x{other:02X} (expected 0x00 or 0xFF)"
                        )))
                    }
                };
                let next_object_id = r.u8().ok_or_else(t)?;
                let object_count = r.u8().ok_or_else(t)?;
                let objects = r.rest();
                check_objects(objects, object_count)?;
                r.take(objects.len()).ok_or_else(t)?;
                Response::DeviceIdentification(DeviceIdentification {
                    read_code,
                    conformity,
                    more_follows,
                    next_object_id,
                    object_count,
                    objects,
                })
            }
            _ => {
                return Err(Error::proto(format!("unsupported function code {function}")));
            }
        };
        expect_end(&r, function)?;
        Ok(response)
    }

    /// Server side: appends the response PDU. `function` selects the code for
    /// `ReadBits` (1/2), `ReadRegisters` (3/4/23) and `WriteMultiple` (15/16);
    /// the other variants imply their code (`Exception` uses its own field).
    /// Oversized bit/register payloads are cut to what one PDU can carry.
    pub fn encode(&self, function: u8, out: &mut Vec<u8>) {
        match *self {
            Response::ReadBits { packed } => {
                let data = packed.get(..MAX_PDU_LEN - 2).unwrap_or(packed);
                out.push(function);
                out.push(data.len() as u8);
                out.extend_from_slice(data);
            }
            Response::ReadRegisters { registers } => {
                // Whole registers only, at most 125.
                let n = registers.len().min(2 * usize::from(MAX_READ_REGISTERS)) & !1;
                let data = registers.get(..n).unwrap_or_default();
                out.push(function);
                out.push(data.len() as u8);
                out.extend_from_slice(data);
            }
            Response::WriteSingleCoil { address, value } => {
                out.push(WRITE_SINGLE_COIL);
                push_u16(out, address);
                push_u16(out, if value { COIL_ON } else { COIL_OFF });
            }
            Response::WriteSingleRegister { address, value } => {
                out.push(WRITE_SINGLE_REGISTER);
                push_u16(out, address);
                push_u16(out, value);
            }
            Response::WriteMultiple { address, quantity } => {
                out.push(function);
                push_u16(out, address);
                push_u16(out, quantity);
            }
            Response::MaskWriteRegister { address, and_mask, or_mask } => {
                out.push(MASK_WRITE_REGISTER);
                push_u16(out, address);
                push_u16(out, and_mask);
                push_u16(out, or_mask);
            }
            Response::DeviceIdentification(id) => {
                out.push(ENCAPSULATED_INTERFACE);
                out.push(MEI_READ_DEVICE_ID);
                out.push(id.read_code);
                out.push(id.conformity);
                out.push(if id.more_follows { 0xFF } else { 0x00 });
                out.push(id.next_object_id);
                out.push(id.object_count);
                out.extend_from_slice(id.objects);
            }
            Response::Exception { function, code } => {
                out.push(function | 0x80);
                out.push(code);
            }
        }
    }
}

/// Packs bools LSB-first into bytes (appends `ceil(n / 8)` bytes).
pub fn pack_bits(bits: impl IntoIterator<Item = bool>, out: &mut Vec<u8>) {
    let mut current = 0u8;
    let mut used = 0u32;
    for b in bits {
        if b {
            current |= 1 << used;
        }
        used += 1;
        if used == 8 {
            out.push(current);
            current = 0;
            used = 0;
        }
    }
    if used > 0 {
        out.push(current);
    }
}

/// Bit `i` of an LSB-first packed slice (false when out of range).
pub fn bit(packed: &[u8], i: usize) -> bool {
    packed.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bifrost_core::ErrorCode;

    fn enc(req: Request) -> Vec<u8> {
        let mut out = Vec::new();
        req.encode(&mut out).expect("encode");
        out
    }

    fn enc_resp(resp: Response, function: u8) -> Vec<u8> {
        let mut out = Vec::new();
        resp.encode(function, &mut out);
        out
    }

    /// Checks request encode/decode and response encode/decode against spec bytes.
    fn check(req: Request, req_bytes: &[u8], resp: Response, resp_bytes: &[u8]) {
        assert_eq!(enc(req), req_bytes, "request encode {req:?}");
        assert_eq!(Request::decode(req_bytes), Ok(req), "request decode");
        let f = req.function();
        assert_eq!(Response::decode(resp_bytes, f), Ok(resp), "response decode");
        assert_eq!(enc_resp(resp, f), resp_bytes, "response encode");
    }

    // Examples from the Modbus Application Protocol specification V1.1b3, section 6.
    #[test]
    fn spec_fc01_read_coils() {
        check(
            Request::ReadCoils { address: 19, quantity: 19 },
            &[0x01, 0x00, 0x13, 0x00, 0x13],
            Response::ReadBits { packed: &[0xCD, 0x6B, 0x05] },
            &[0x01, 0x03, 0xCD, 0x6B, 0x05],
        );
        let packed = [0xCD, 0x6B, 0x05];
        // Coils 27..20 = CD: coil 20 (bit 0) on, coil 21 off.
        assert!(bit(&packed, 0));
        assert!(!bit(&packed, 1));
        assert!(bit(&packed, 18));
        assert!(!bit(&packed, 19));
        assert!(!bit(&packed, 1000));
    }

    #[test]
    fn spec_fc02_read_discrete_inputs() {
        check(
            Request::ReadDiscreteInputs { address: 196, quantity: 22 },
            &[0x02, 0x00, 0xC4, 0x00, 0x16],
            Response::ReadBits { packed: &[0xAC, 0xDB, 0x35] },
            &[0x02, 0x03, 0xAC, 0xDB, 0x35],
        );
    }

    #[test]
    fn spec_fc03_read_holding_registers() {
        check(
            Request::ReadHoldingRegisters { address: 107, quantity: 3 },
            &[0x03, 0x00, 0x6B, 0x00, 0x03],
            Response::ReadRegisters { registers: &[0x02, 0x2B, 0x00, 0x00, 0x00, 0x64] },
            &[0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64],
        );
    }

    #[test]
    fn spec_fc04_read_input_registers() {
        check(
            Request::ReadInputRegisters { address: 8, quantity: 1 },
            &[0x04, 0x00, 0x08, 0x00, 0x01],
            Response::ReadRegisters { registers: &[0x00, 0x0A] },
            &[0x04, 0x02, 0x00, 0x0A],
        );
    }

    #[test]
    fn spec_fc05_write_single_coil() {
        check(
            Request::WriteSingleCoil { address: 172, value: true },
            &[0x05, 0x00, 0xAC, 0xFF, 0x00],
            Response::WriteSingleCoil { address: 172, value: true },
            &[0x05, 0x00, 0xAC, 0xFF, 0x00],
        );
        check(
            Request::WriteSingleCoil { address: 172, value: false },
            &[0x05, 0x00, 0xAC, 0x00, 0x00],
            Response::WriteSingleCoil { address: 172, value: false },
            &[0x05, 0x00, 0xAC, 0x00, 0x00],
        );
    }

    #[test]
    fn spec_fc06_write_single_register() {
        check(
            Request::WriteSingleRegister { address: 1, value: 3 },
            &[0x06, 0x00, 0x01, 0x00, 0x03],
            Response::WriteSingleRegister { address: 1, value: 3 },
            &[0x06, 0x00, 0x01, 0x00, 0x03],
        );
    }

    #[test]
    fn spec_fc15_write_multiple_coils() {
        check(
            Request::WriteMultipleCoils { address: 19, quantity: 10, packed: &[0xCD, 0x01] },
            &[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01],
            Response::WriteMultiple { address: 19, quantity: 10 },
            &[0x0F, 0x00, 0x13, 0x00, 0x0A],
        );
        let mut packed = Vec::new();
        // Coils 20..29 of the spec example: 1 0 1 1 0 0 1 1 1 0.
        pack_bits([true, false, true, true, false, false, true, true, true, false], &mut packed);
        assert_eq!(packed, [0xCD, 0x01]);
    }

    #[test]
    fn spec_fc16_write_multiple_registers() {
        check(
            Request::WriteMultipleRegisters { address: 1, registers: &[0x00, 0x0A, 0x01, 0x02] },
            &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02],
            Response::WriteMultiple { address: 1, quantity: 2 },
            &[0x10, 0x00, 0x01, 0x00, 0x02],
        );
    }

    #[test]
    fn spec_fc22_mask_write_register() {
        check(
            Request::MaskWriteRegister { address: 4, and_mask: 0x00F2, or_mask: 0x0025 },
            &[0x16, 0x00, 0x04, 0x00, 0xF2, 0x00, 0x25],
            Response::MaskWriteRegister { address: 4, and_mask: 0x00F2, or_mask: 0x0025 },
            &[0x16, 0x00, 0x04, 0x00, 0xF2, 0x00, 0x25],
        );
    }

    #[test]
    fn spec_fc23_read_write_multiple_registers() {
        check(
            Request::ReadWriteMultipleRegisters {
                read_address: 3,
                read_quantity: 6,
                write_address: 14,
                write_registers: &[0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF],
            },
            &[0x17, 0x00, 0x03, 0x00, 0x06, 0x00, 0x0E, 0x00, 0x03, 0x06, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF],
            Response::ReadRegisters {
                registers: &[0x00, 0xFE, 0x0A, 0xCD, 0x00, 0x01, 0x00, 0x03, 0x00, 0x0D, 0x00, 0xFF],
            },
            &[0x17, 0x0C, 0x00, 0xFE, 0x0A, 0xCD, 0x00, 0x01, 0x00, 0x03, 0x00, 0x0D, 0x00, 0xFF],
        );
    }

    fn device_id_response() -> Vec<u8> {
        let mut pdu = vec![0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, 0x03];
        for (id, value) in [(0u8, &b"Company identification"[..]), (1, b"Product code XX"), (2, b"V2.11")] {
            pdu.push(id);
            pdu.push(value.len() as u8);
            pdu.extend_from_slice(value);
        }
        pdu
    }

    #[test]
    fn spec_fc43_read_device_identification() {
        let pdu = device_id_response();
        assert_eq!(pdu[7..9], [0x00, 0x16]);
        let objects = &pdu[7..];
        check(
            Request::ReadDeviceIdentification { read_code: 1, object_id: 0 },
            &[0x2B, 0x0E, 0x01, 0x00],
            Response::DeviceIdentification(DeviceIdentification {
                read_code: 1,
                conformity: 1,
                more_follows: false,
                next_object_id: 0,
                object_count: 3,
                objects,
            }),
            &pdu,
        );
        let Ok(Response::DeviceIdentification(id)) = Response::decode(&pdu, 43) else {
            panic!("not a device identification");
        };
        let list: Vec<(u8, &[u8])> = id.objects().collect();
        assert_eq!(list, vec![(0, &b"Company identification"[..]), (1, &b"Product code XX"[..]), (2, &b"V2.11"[..])]);
    }

    #[test]
    fn device_identification_validation() {
        let pdu = device_id_response();
        // Count says 4 objects but only 3 are present.
        let mut bad = pdu.clone();
        bad[6] = 4;
        assert!(Response::decode(&bad, 43).unwrap_err().message.contains("truncated"));
        // Count says 2: the third object is trailing garbage.
        bad[6] = 2;
        assert!(Response::decode(&bad, 43).unwrap_err().message.contains("after its 2 objects"));
        // Last object length runs past the end.
        let mut bad = pdu.clone();
        bad.pop();
        assert!(Response::decode(&bad, 43).is_err());
        // More-follows must be 00 or FF.
        let mut bad = pdu.clone();
        bad[4] = 0x01;
        assert!(Response::decode(&bad, 43).is_err());
        let mut more = pdu.clone();
        more[4] = 0xFF;
        more[5] = 0x03;
        let Ok(Response::DeviceIdentification(id)) = Response::decode(&more, 43) else { panic!() };
        assert!(id.more_follows);
        assert_eq!(id.next_object_id, 3);
        // MEI type other than 14.
        assert!(Response::decode(&[0x2B, 0x0D, 0x01], 43).is_err());
        // Unsupported MEI type in a request is an illegal function.
        assert_eq!(Request::decode(&[0x2B, 0x0D, 0x01, 0x00]), Err(1));
        assert_eq!(Request::decode(&[0x2B, 0x0E, 0x05, 0x00]), Err(3));
        assert_eq!(Request::decode(&[0x2B, 0x0E, 0x01]), Err(3));
        assert_eq!(Request::decode(&[0x2B]), Err(3));
        // Iterator stops at truncated data instead of panicking.
        let id = DeviceIdentification {
            read_code: 1,
            conformity: 1,
            more_follows: false,
            next_object_id: 0,
            object_count: 2,
            objects: &[0, 1, b'A', 1, 9, b'B'],
        };
        assert_eq!(id.objects().count(), 1);
    }

    #[test]
    fn spec_exception_example() {
        // Read coil 1185 (0x04A1) on a device that lacks it: illegal data address.
        assert_eq!(enc(Request::ReadCoils { address: 0x04A1, quantity: 1 }), [0x01, 0x04, 0xA1, 0x00, 0x01]);
        let resp = Response::Exception { function: 1, code: 2 };
        assert_eq!(Response::decode(&[0x81, 0x02], 1), Ok(resp));
        assert_eq!(enc_resp(resp, 1), [0x81, 0x02]);
        // An exception for another function is a mismatch.
        assert!(Response::decode(&[0x83, 0x02], 1).is_err());
        assert!(Response::decode(&[0x81], 1).is_err());
        assert!(Response::decode(&[0x81, 0x02, 0x00], 1).is_err());
    }

    #[test]
    fn response_decode_errors() {
        let e = Response::decode(&[0x04, 0x02, 0x00, 0x0A], 3).unwrap_err();
        assert_eq!(e.code, ErrorCode::Proto);
        assert!(e.message.contains("does not match"), "{}", e.message);
        assert!(Response::decode(&[], 3).is_err());
        // Byte count disagrees with the data.
        let e = Response::decode(&[0x03, 0x04, 0x00, 0x0A], 3).unwrap_err();
        assert!(e.message.contains("byte count 4 but 2"), "{}", e.message);
        assert!(Response::decode(&[0x03, 0x02, 0x00, 0x0A, 0x00], 3).is_err());
        // Odd register byte count, zero byte count.
        assert!(Response::decode(&[0x03, 0x01, 0x00], 3).is_err());
        assert!(Response::decode(&[0x01, 0x00], 1).is_err());
        assert!(Response::decode(&[0x03], 3).is_err());
        // FC5 value other than FF00/0000.
        let e = Response::decode(&[0x05, 0x00, 0xAC, 0x12, 0x34], 5).unwrap_err();
        assert!(e.message.contains("0x1234"), "{}", e.message);
        // Truncated / trailing fixed-size echoes.
        assert!(Response::decode(&[0x06, 0x00, 0x01, 0x00], 6).is_err());
        assert!(Response::decode(&[0x06, 0x00, 0x01, 0x00, 0x03, 0x00], 6).is_err());
        assert!(Response::decode(&[0x10, 0x00, 0x01, 0x00], 16).is_err());
        assert!(Response::decode(&[0x16, 0x00, 0x04, 0x00, 0xF2, 0x00], 22).is_err());
        // Unsupported function.
        assert!(Response::decode(&[0x08, 0x00, 0x00], 8).is_err());
        assert_eq!(Response::decode(&[0x88, 0x01], 8), Ok(Response::Exception { function: 8, code: 1 }));
    }

    #[test]
    fn request_encode_limits() {
        let bad = [
            Request::ReadCoils { address: 0, quantity: 0 },
            Request::ReadCoils { address: 0, quantity: 2001 },
            Request::ReadDiscreteInputs { address: 65535, quantity: 2 },
            Request::ReadHoldingRegisters { address: 0, quantity: 126 },
            Request::ReadInputRegisters { address: 65500, quantity: 37 },
            Request::WriteMultipleCoils { address: 0, quantity: 1969, packed: &[0; 247] },
            Request::WriteMultipleCoils { address: 0, quantity: 9, packed: &[0] },
            Request::WriteMultipleCoils { address: 0, quantity: 0, packed: &[] },
            Request::WriteMultipleCoils { address: 65535, quantity: 2, packed: &[0] },
            Request::WriteMultipleRegisters { address: 0, registers: &[] },
            Request::WriteMultipleRegisters { address: 0, registers: &[0; 3] },
            Request::WriteMultipleRegisters { address: 0, registers: &[0; 248] },
            Request::WriteMultipleRegisters { address: 65535, registers: &[0; 4] },
            Request::ReadWriteMultipleRegisters {
                read_address: 0,
                read_quantity: 126,
                write_address: 0,
                write_registers: &[0, 0],
            },
            Request::ReadWriteMultipleRegisters {
                read_address: 0,
                read_quantity: 1,
                write_address: 0,
                write_registers: &[0; 244],
            },
            Request::ReadWriteMultipleRegisters {
                read_address: 0,
                read_quantity: 1,
                write_address: 65535,
                write_registers: &[0; 4],
            },
            Request::ReadDeviceIdentification { read_code: 0, object_id: 0 },
            Request::ReadDeviceIdentification { read_code: 5, object_id: 0 },
        ];
        for req in bad {
            let mut out = vec![0xAA];
            let e = req.encode(&mut out).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidValue, "{req:?}");
            assert_eq!(out, [0xAA], "nothing appended for {req:?}");
        }
        let good = [
            Request::ReadCoils { address: 63536, quantity: 2000 },
            Request::ReadHoldingRegisters { address: 65411, quantity: 125 },
            Request::ReadInputRegisters { address: 65535, quantity: 1 },
            Request::WriteMultipleCoils { address: 0, quantity: 1968, packed: &[0; 246] },
            Request::WriteMultipleRegisters { address: 65413, registers: &[0; 246] },
        ];
        for req in good {
            let bytes = enc(req);
            assert!(bytes.len() <= MAX_PDU_LEN);
            assert_eq!(Request::decode(&bytes), Ok(req));
        }
    }

    #[test]
    fn request_decode_exceptions() {
        assert_eq!(Request::decode(&[]), Err(1));
        assert_eq!(Request::decode(&[0x08, 0x00, 0x00]), Err(1));
        assert_eq!(Request::decode(&[0x81, 0x00]), Err(1));
        // Quantity limits → 3; address overflow → 2.
        assert_eq!(Request::decode(&[0x01, 0x00, 0x00, 0x00, 0x00]), Err(3));
        assert_eq!(Request::decode(&[0x01, 0x00, 0x00, 0x07, 0xD1]), Err(3));
        assert_eq!(Request::decode(&[0x03, 0x00, 0x00, 0x00, 0x7E]), Err(3));
        assert_eq!(Request::decode(&[0x03, 0xFF, 0xFF, 0x00, 0x02]), Err(2));
        assert_eq!(Request::decode(&[0x03, 0xFF, 0xFF, 0x00, 0x01]).map(|r| r.function()), Ok(3));
        // Malformed bodies → 3.
        assert_eq!(Request::decode(&[0x03, 0x00, 0x00, 0x00]), Err(3));
        assert_eq!(Request::decode(&[0x03, 0x00, 0x00, 0x00, 0x01, 0x00]), Err(3));
        assert_eq!(Request::decode(&[0x05, 0x00, 0xAC, 0x12, 0x34]), Err(3));
        assert_eq!(Request::decode(&[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x01, 0xCD]), Err(3));
        assert_eq!(Request::decode(&[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD]), Err(3));
        assert_eq!(Request::decode(&[0x0F, 0xFF, 0xFF, 0x00, 0x02, 0x01, 0x03]), Err(2));
        assert_eq!(Request::decode(&[0x10, 0x00, 0x01, 0x00, 0x02, 0x03, 0, 0, 0]), Err(3));
        assert_eq!(Request::decode(&[0x10, 0xFF, 0xFF, 0x00, 0x02, 0x04, 0, 0, 0, 0]), Err(2));
        assert_eq!(Request::decode(&[0x16, 0x00, 0x04, 0x00, 0xF2, 0x00]), Err(3));
        assert_eq!(Request::decode(&[0x17, 0x00, 0x03, 0x00, 0x00, 0x00, 0x0E, 0x00, 0x01, 0x02, 0, 0]), Err(3));
        assert_eq!(Request::decode(&[0x17, 0xFF, 0xFF, 0x00, 0x02, 0x00, 0x0E, 0x00, 0x01, 0x02, 0, 0]), Err(2));
    }

    #[test]
    fn response_encode_caps_payloads() {
        let big = vec![0u8; 400];
        let out = enc_resp(Response::ReadRegisters { registers: &big }, 3);
        assert_eq!(out.len(), 2 + 250);
        assert_eq!(Response::decode(&out, 3).map(|_| ()), Ok(()));
        let out = enc_resp(Response::ReadRegisters { registers: &[1, 2, 3] }, 4);
        assert_eq!(out, [4, 2, 1, 2]);
        let out = enc_resp(Response::ReadBits { packed: &big }, 1);
        assert_eq!(out.len(), MAX_PDU_LEN);
    }

    #[test]
    fn pack_bits_lengths() {
        let mut out = vec![0xEE];
        pack_bits(std::iter::empty(), &mut out);
        assert_eq!(out, [0xEE]);
        pack_bits([true; 8], &mut out);
        assert_eq!(out, [0xEE, 0xFF]);
        pack_bits([true; 9], &mut out);
        assert_eq!(out, [0xEE, 0xFF, 0xFF, 0x01]);
    }
}
