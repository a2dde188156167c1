//! The Modbus simulator: a TCP (or RTU-over-TCP) server over one shared
//! register store with several unit ids, answering pipelined requests with one
//! socket write per batch, and with fault injection for tests.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::framing::Framing;
use crate::pdu::{self, DeviceIdentification, Request, Response};
use crate::tag::Table;
use crate::{rtu, tcp};

const TABLE_SIZE: usize = 65536;

/// What the simulator serves and which faults it injects.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub framing: Framing,
    /// Unit ids that answer; requests to others get exception 11. Unit 0 is broadcast.
    pub units: Vec<u8>,
    /// Address ranges that answer exception 2 (illegal data address), as a device with holes would.
    pub invalid: Vec<(Table, Range<u32>)>,
    pub faults: Faults,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            framing: Framing::Tcp,
            units: (1..=16).collect(),
            invalid: Vec::new(),
            faults: Faults::default(),
        }
    }
}

/// One unit's four tables. Atomics let every connection read and write without a lock.
struct UnitStore {
    coils: Vec<AtomicBool>,
    discrete_inputs: Vec<AtomicBool>,
    input_registers: Vec<AtomicU16>,
    holding_registers: Vec<AtomicU16>,
}

impl UnitStore {
    /// Register `i` starts at `i`, bit `i` at `i % 2 == 1`.
    fn new() -> Self {
        let bits = || (0..TABLE_SIZE).map(|i| AtomicBool::new(i % 2 == 1)).collect();
        let registers = || (0..TABLE_SIZE).map(|i| AtomicU16::new(i as u16)).collect();
        UnitStore {
            coils: bits(),
            discrete_inputs: bits(),
            input_registers: registers(),
            holding_registers: registers(),
        }
    }
}

struct Store {
    /// Indexed by unit id; `None` for units that do not answer.
    units: Vec<Option<UnitStore>>,
}

impl Store {
    fn unit(&self, unit: u8) -> Option<&UnitStore> {
        self.units.get(unit as usize).and_then(|u| u.as_ref())
    }
}

pub use bifrost_engine::listener::{Faults, Simulator, SimulatorStats};

/// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
pub async fn start(addr: &str, config: SimulatorConfig) -> std::io::Result<Simulator> {
    let mut units: Vec<Option<UnitStore>> = (0..=255).map(|_| None).collect();
    for &unit in &config.units {
        if unit != 0 {
            units[unit as usize] = Some(UnitStore::new());
        }
    }
    let max_connections = config.faults.max_connections;
    let shared = Arc::new(Shared { store: Store { units }, config });
    Simulator::serve(addr, max_connections, move |socket, stats| {
        let shared = shared.clone();
        async move { serve(socket, &shared, &stats).await }
    })
    .await
}

struct Shared {
    store: Store,
    config: SimulatorConfig,
}

/// Serves one connection: parse every complete request in the buffer, answer
/// them all with one write.
async fn serve(mut socket: TcpStream, shared: &Shared, stats: &SimulatorStats) {
    let config = &shared.config;
    let faults = &config.faults;
    let mut input = BytesMut::with_capacity(8192);
    let mut output = Vec::with_capacity(8192);
    let mut scratch = Vec::with_capacity(260);
    let mut served: u64 = 0;
    loop {
        if !faults.read(&mut socket, &mut input, stats).await {
            return;
        }
        loop {
            let frame = match next_request(config.framing, &input) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(()) => return, // unframeable bytes: a real device would drop the link too
            };
            let (id, unit, pdu_range, len) = frame;
            served += 1;
            let n = stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
            scratch.clear();
            let answered = answer(&shared.store, &config.invalid, unit, &input[pdu_range], &mut scratch);
            let _ = input.split_to(len);
            if !answered || faults.drops(n) {
                continue;
            }
            if faults.malforms(n) {
                corrupt(&mut scratch);
            }
            match config.framing {
                Framing::Tcp => tcp::encode_frame(id, unit, &scratch, &mut output),
                Framing::Rtu => rtu::encode_frame(unit, &scratch, &mut output),
            }
            if faults.disconnects(served) {
                break;
            }
        }
        if !faults.write(&mut socket, &mut output).await || faults.disconnects(served) {
            return;
        }
    }
}

type RequestFrame = (u16, u8, Range<usize>, usize);

fn next_request(framing: Framing, buf: &[u8]) -> Result<Option<RequestFrame>, ()> {
    match framing {
        Framing::Tcp => match tcp::decode_frame(buf) {
            Ok(Some((header, pdu, len))) => {
                let start = pdu.as_ptr() as usize - buf.as_ptr() as usize;
                Ok(Some((header.transaction_id, header.unit_id, start..start + pdu.len(), len)))
            }
            Ok(None) => Ok(None),
            Err(_) => Err(()),
        },
        Framing::Rtu => match rtu::request_frame_len(buf) {
            Ok(Some(len)) if len <= buf.len() => match rtu::decode_frame(&buf[..len]) {
                Ok((unit, pdu)) => {
                    let start = pdu.as_ptr() as usize - buf.as_ptr() as usize;
                    Ok(Some((0, unit, start..start + pdu.len(), len)))
                }
                Err(_) => Err(()),
            },
            Ok(_) => Ok(None),
            Err(_) => Err(()),
        },
    }
}

/// Makes the byte count of a read reply disagree with its length.
fn corrupt(pdu: &mut Vec<u8>) {
    match pdu.get_mut(1) {
        Some(count) => *count = count.wrapping_add(3),
        None => pdu.push(0xFF),
    }
}

/// Executes one request and writes its reply PDU into `out`. Returns false
/// when no reply is due (broadcast).
fn answer(store: &Store, invalid: &[(Table, Range<u32>)], unit: u8, pdu: &[u8], out: &mut Vec<u8>) -> bool {
    let function = pdu.first().copied().unwrap_or(0);
    let request = match Request::decode(pdu) {
        Ok(request) => request,
        Err(code) => {
            Response::Exception { function: function & 0x7F, code }.encode(function & 0x7F, out);
            return unit != 0;
        }
    };
    if unit == 0 {
        for target in store.units.iter().flatten() {
            let _ = execute(target, invalid, &request, out);
            out.clear();
        }
        return false;
    }
    let Some(target) = store.unit(unit) else {
        Response::Exception { function, code: 11 }.encode(function, out);
        return true;
    };
    if let Err(code) = execute(target, invalid, &request, out) {
        out.clear();
        Response::Exception { function, code }.encode(function, out);
    }
    true
}

fn check(invalid: &[(Table, Range<u32>)], table: Table, address: u16, quantity: u16) -> Result<Range<usize>, u8> {
    let start = address as u32;
    let end = start + quantity as u32;
    if end as usize > TABLE_SIZE {
        return Err(2);
    }
    if invalid.iter().any(|(t, r)| *t == table && r.start < end && start < r.end) {
        return Err(2);
    }
    Ok(start as usize..end as usize)
}

fn read_bits(bits: &[AtomicBool], range: Range<usize>, out: &mut Vec<u8>, function: u8) {
    let mut packed = Vec::with_capacity(range.len().div_ceil(8));
    pdu::pack_bits(bits[range].iter().map(|b| b.load(Ordering::Relaxed)), &mut packed);
    Response::ReadBits { packed: &packed }.encode(function, out);
}

fn read_registers(registers: &[AtomicU16], range: Range<usize>, out: &mut Vec<u8>, function: u8) {
    let mut bytes = Vec::with_capacity(range.len() * 2);
    for r in &registers[range] {
        bytes.extend_from_slice(&r.load(Ordering::Relaxed).to_be_bytes());
    }
    Response::ReadRegisters { registers: &bytes }.encode(function, out);
}

fn write_registers(registers: &[AtomicU16], address: usize, data: &[u8]) {
    for (i, pair) in data.chunks_exact(2).enumerate() {
        registers[address + i].store(u16::from_be_bytes([pair[0], pair[1]]), Ordering::Relaxed);
    }
}

fn execute(unit: &UnitStore, invalid: &[(Table, Range<u32>)], request: &Request, out: &mut Vec<u8>) -> Result<(), u8> {
    let function = request.function();
    match *request {
        Request::ReadCoils { address, quantity } => {
            read_bits(&unit.coils, check(invalid, Table::Coil, address, quantity)?, out, function)
        }
        Request::ReadDiscreteInputs { address, quantity } => {
            read_bits(&unit.discrete_inputs, check(invalid, Table::DiscreteInput, address, quantity)?, out, function)
        }
        Request::ReadHoldingRegisters { address, quantity } => read_registers(
            &unit.holding_registers,
            check(invalid, Table::HoldingRegister, address, quantity)?,
            out,
            function,
        ),
        Request::ReadInputRegisters { address, quantity } => read_registers(
            &unit.input_registers,
            check(invalid, Table::InputRegister, address, quantity)?,
            out,
            function,
        ),
        Request::WriteSingleCoil { address, value } => {
            let range = check(invalid, Table::Coil, address, 1)?;
            unit.coils[range.start].store(value, Ordering::Relaxed);
            Response::WriteSingleCoil { address, value }.encode(function, out);
        }
        Request::WriteSingleRegister { address, value } => {
            let range = check(invalid, Table::HoldingRegister, address, 1)?;
            unit.holding_registers[range.start].store(value, Ordering::Relaxed);
            Response::WriteSingleRegister { address, value }.encode(function, out);
        }
        Request::WriteMultipleCoils { address, quantity, packed } => {
            let range = check(invalid, Table::Coil, address, quantity)?;
            for (i, coil) in unit.coils[range].iter().enumerate() {
                coil.store(pdu::bit(packed, i), Ordering::Relaxed);
            }
            Response::WriteMultiple { address, quantity }.encode(function, out);
        }
        Request::WriteMultipleRegisters { address, registers } => {
            let quantity = (registers.len() / 2) as u16;
            let range = check(invalid, Table::HoldingRegister, address, quantity)?;
            write_registers(&unit.holding_registers, range.start, registers);
            Response::WriteMultiple { address, quantity }.encode(function, out);
        }
        Request::MaskWriteRegister { address, and_mask, or_mask } => {
            let range = check(invalid, Table::HoldingRegister, address, 1)?;
            let register = &unit.holding_registers[range.start];
            let _ = register.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                Some((current & and_mask) | (or_mask & !and_mask))
            });
            Response::MaskWriteRegister { address, and_mask, or_mask }.encode(function, out);
        }
        Request::ReadWriteMultipleRegisters { read_address, read_quantity, write_address, write_registers: data } => {
            // The spec performs the write before the read.
            let write_range = check(invalid, Table::HoldingRegister, write_address, (data.len() / 2) as u16)?;
            let read_range = check(invalid, Table::HoldingRegister, read_address, read_quantity)?;
            write_registers(&unit.holding_registers, write_range.start, data);
            read_registers(&unit.holding_registers, read_range, out, function);
        }
        Request::ReadDeviceIdentification { read_code, object_id } => {
            let objects: [(u8, &[u8]); 3] =
                [(0, b"Bifrost"), (1, b"BIFROST-SIM"), (2, env!("CARGO_PKG_VERSION").as_bytes())];
            let selected: Vec<(u8, &[u8])> = match read_code {
                1..=3 => objects.iter().copied().filter(|(id, _)| *id >= object_id).collect(),
                4 => objects.iter().copied().filter(|(id, _)| *id == object_id).collect(),
                _ => return Err(3),
            };
            if selected.is_empty() {
                return Err(2);
            }
            let mut raw = Vec::new();
            for (id, value) in &selected {
                raw.push(*id);
                raw.push(value.len() as u8);
                raw.extend_from_slice(value);
            }
            Response::DeviceIdentification(DeviceIdentification {
                read_code,
                conformity: 0x81,
                more_follows: false,
                next_object_id: 0,
                object_count: selected.len() as u8,
                objects: &raw,
            })
            .encode(function, out);
        }
    }
    Ok(())
}

/// Parses a refused range for the simulator: `holding-register:100-109`
/// (inclusive, zero-based) or a single address `coil:7`.
pub fn parse_range_spec(spec: &str) -> bifrost_core::Result<(Table, Range<u32>)> {
    let (first, last) = match spec.rsplit_once('-') {
        Some((first, last)) if last.chars().all(|c| c.is_ascii_digit()) => (first, Some(last)),
        _ => (spec, None),
    };
    let tag = crate::tag::ModbusTag::parse(first)?;
    let start = tag.address as u32;
    let end = match last {
        Some(last) => last
            .parse::<u32>()
            .ok()
            .filter(|&l| l >= start && l < TABLE_SIZE as u32)
            .ok_or_else(|| bifrost_core::Error::address(format!("bad range end in '{spec}'")))?,
        None => start,
    };
    Ok((tag.table, start..end + 1))
}
