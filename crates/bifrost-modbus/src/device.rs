//! A Modbus device: turns tag reads and writes into planned, pipelined
//! requests over one `Client`, decodes replies into typed values, and learns
//! which address ranges the device refuses (exception 2) so later plans avoid them.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bifrost_core::planner::{self, Plan, PlanLimits, Span};
use bifrost_core::url::{DeviceUrl, MAX_MS};
use bifrost_core::{encode_element, encode_string, DataType, Error, Result, Value};
use bytes::Bytes;
use tokio::time::Instant;

use crate::client::{Client, ClientConfig, Framing, Op, Resync};
use crate::decode::{columns, decode_tag, ColumnarRead};
use crate::pdu::{self, Response};
use crate::serial::{self, PortSettings};
use crate::tag::{ModbusTag, Table};

/// Spec limits for one read request.
pub const MAX_READ_REGISTERS: u16 = 125;
pub const MAX_READ_BITS: u16 = 2000;
const MAX_WRITE_REGISTERS: usize = 123;
const MAX_WRITE_BITS: usize = 1968;

/// Settings from the connection URL (or the options beside it).
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub unit_id: u8,
    pub max_registers_per_request: u16,
    pub max_bits_per_request: u16,
    pub max_gap: u16,
    /// How long what the device taught us (refused ranges, shorter limits) holds
    /// before it is probed again; `None`: until the next reconnect.
    pub relearn_after: Option<Duration>,
    pub client: ClientConfig,
}

/// Default of `late-reply-window`: after a timeout on a serial line, how long
/// the line must stay silent (if the late reply does not come first) before the next request.
pub const LATE_REPLY_WINDOW: Duration = Duration::from_millis(1000);
/// Default of `relearn-after`: a transient fault must not slow a device for good.
pub const RELEARN_AFTER: Duration = Duration::from_secs(60);
/// Most requests one device may hold waiting (`max-queued`).
const MAX_QUEUED_LIMIT: usize = 1_000_000;

impl Default for DeviceSettings {
    fn default() -> Self {
        DeviceSettings {
            unit_id: 1,
            max_registers_per_request: MAX_READ_REGISTERS,
            max_bits_per_request: MAX_READ_BITS,
            max_gap: 8,
            relearn_after: Some(RELEARN_AFTER),
            client: ClientConfig::default(),
        }
    }
}

impl DeviceSettings {
    /// Takes the keys every Modbus transport shares from `url`; a value out of range is `EINVAL`.
    pub fn from_url(url: &mut DeviceUrl, framing: Framing) -> Result<DeviceSettings> {
        let mut s = DeviceSettings::default();
        s.client.framing = framing;
        let ms = |url: &mut DeviceUrl, key: &str| -> Result<Option<Duration>> {
            Ok(url.take_in(key, 1..=MAX_MS)?.map(Duration::from_millis))
        };
        if let Some(v) = url.take_in("unit-id", 0..=255)? {
            s.unit_id = v;
        }
        if let Some(v) = ms(url, "request-timeout")? {
            s.client.request_timeout = v;
        }
        if let Some(v) = ms(url, "connect-timeout")? {
            s.client.connect_timeout = v;
        }
        if let Some(v) = url.take_in("max-in-flight", 1..=65535)? {
            s.client.max_in_flight = v;
        }
        if let Some(v) = url.take_in("max-queued", 1..=MAX_QUEUED_LIMIT)? {
            s.client.max_queued = v;
        }
        if let Some(v) = url.take_in("max-registers-per-request", 1..=MAX_READ_REGISTERS)? {
            s.max_registers_per_request = v;
        }
        if let Some(v) = url.take_in("max-bits-per-request", 1..=MAX_READ_BITS)? {
            s.max_bits_per_request = v;
        }
        if let Some(v) = url.take_in("max-gap", 0..=u16::MAX)? {
            s.max_gap = v;
        }
        if let Some(ms) = url.take_in("relearn-after", 0..=MAX_MS)? {
            s.relearn_after = (ms > 0).then(|| Duration::from_millis(ms));
        }
        Ok(s)
    }
}

type Key = (u8, Table);

/// What reading taught us about this device.
#[derive(Default)]
struct Learned {
    /// Bumped on every change, so prepared plans know to re-plan.
    generation: u64,
    /// Tag spans that drew exception 2 on their own: always read alone.
    refused: HashSet<Span<Key>>,
    /// Per table, a request length the device accepted after refusing a longer one.
    max_len: HashMap<Key, u16>,
    /// When the oldest thing still known was learned, and the connection's
    /// disconnect count then: once that connection is gone, so is what it taught.
    since: Option<(Instant, u64)>,
}

impl Learned {
    /// Notes that something was just learned; the first thing starts the clock.
    fn changed(&mut self, disconnects: u64) {
        self.generation += 1;
        self.since.get_or_insert((Instant::now(), disconnects));
    }
}

pub struct ModbusDevice {
    client: Client,
    settings: DeviceSettings,
    learned: Mutex<Learned>,
    /// Serial devices share their port's connection; closing releases it.
    serial_port: Option<String>,
    closed: AtomicBool,
}

/// Tags parsed and planned once, read many times.
pub struct ReadPlan {
    tags: Vec<ModbusTag>,
    spans: Vec<Span<Key>>,
    plan: Plan<Key>,
    generation: u64,
}

impl ReadPlan {
    pub fn tags(&self) -> &[ModbusTag] {
        &self.tags
    }
}

/// Register images of the blocks read, and where each tag's data starts.
struct Fetched {
    images: Vec<Vec<u8>>,
    /// Per tag: (image index, offset in table units within that image).
    slots: Vec<Option<Result<(usize, u32)>>>,
}

impl Fetched {
    /// Each tag's image and offset in it, in tag order.
    fn located(&self) -> impl Iterator<Item = Result<(&[u8], u32)>> + '_ {
        self.slots.iter().map(|slot| match slot {
            Some(Ok((image, offset))) => Ok((self.images[*image].as_slice(), *offset)),
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::proto("tag was not planned")),
        })
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl ModbusDevice {
    pub fn new(client: Client, settings: DeviceSettings, serial_port: Option<String>) -> Self {
        ModbusDevice {
            client,
            settings,
            learned: Mutex::new(Learned::default()),
            serial_port,
            closed: AtomicBool::new(false),
        }
    }

    /// The call's deadline: its own timeout, else this device's (a shared serial
    /// port serves devices with different ones). It covers the whole call, queueing included.
    fn deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        Some(Instant::now() + timeout.unwrap_or(self.settings.client.request_timeout))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn key(&self, tag: &ModbusTag) -> Key {
        (tag.unit_id.unwrap_or(self.settings.unit_id), tag.table)
    }

    /// What the device taught us, forgotten (so probed again) after a reconnect
    /// or once `relearn-after` has passed: a transient fault must not slow it for good.
    fn learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        // A panic elsewhere must not make the device unusable.
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, disconnects)) = learned.since {
            let reconnected = self.disconnects() != disconnects;
            let expired = self.settings.relearn_after.is_some_and(|period| at.elapsed() >= period);
            if reconnected || expired {
                let generation = learned.generation + 1;
                *learned = Learned { generation, ..Learned::default() };
            }
        }
        learned
    }

    fn disconnects(&self) -> u64 {
        self.client.stats().disconnects.load(Ordering::Relaxed)
    }

    fn plan_spans(&self, spans: &[Span<Key>]) -> (Plan<Key>, u64) {
        let learned = self.learned();
        let plan = planner::plan(
            spans,
            |key: Key| {
                let spec = if key.1.is_bit() {
                    self.settings.max_bits_per_request
                } else {
                    self.settings.max_registers_per_request
                };
                let max_len = learned.max_len.get(&key).copied().unwrap_or(spec).min(spec);
                PlanLimits { max_len, max_gap: self.settings.max_gap }
            },
            |i| learned.refused.contains(&spans[i]),
        );
        (plan, learned.generation)
    }

    pub fn prepare(&self, tags: Vec<ModbusTag>) -> ReadPlan {
        let spans: Vec<Span<Key>> = tags
            .iter()
            .map(|t| {
                let align = t.element_span().clamp(1, u16::MAX as u32) as u16;
                Span { key: self.key(t), start: t.address, len: t.span(), align }
            })
            .collect();
        let (plan, generation) = self.plan_spans(&spans);
        ReadPlan { tags, spans, plan, generation }
    }

    /// Reads every tag of the plan; one result per tag, in order.
    pub async fn read(&self, plan: &ReadPlan, timeout: Option<Duration>) -> Vec<Result<Value>> {
        let fetched = self.fetch_plan(plan, timeout).await;
        plan.tags
            .iter()
            .zip(fetched.located())
            .map(|(tag, located)| located.and_then(|(image, offset)| decode_tag(tag, image, offset)))
            .collect()
    }

    /// Reads every tag of the plan into flat `f64` columns (STRING tags are refused by `prepare` callers).
    pub async fn read_columnar(&self, plan: &ReadPlan, timeout: Option<Duration>) -> ColumnarRead {
        let fetched = self.fetch_plan(plan, timeout).await;
        columns(&plan.tags, fetched.located())
    }

    /// Whether `plan` still reflects what the device has learned (refused ranges, shorter limits).
    /// Holders of long-lived plans re-`prepare` when it does not; a stale plan still reads correctly.
    pub fn is_current(&self, plan: &ReadPlan) -> bool {
        plan.generation == self.learned().generation
    }

    async fn fetch_plan(&self, plan: &ReadPlan, timeout: Option<Duration>) -> Fetched {
        let replanned;
        let requests = if self.is_current(plan) {
            &plan.plan
        } else {
            replanned = self.plan_spans(&plan.spans).0;
            &replanned
        };
        let mut fetched = Fetched { images: Vec::new(), slots: (0..plan.spans.len()).map(|_| None).collect() };
        if self.closed.load(Ordering::Relaxed) {
            fetched.slots.fill_with(|| Some(Err(device_closed())));
            return fetched;
        }
        let deadline = self.deadline(timeout);
        let members: Vec<usize> = (0..plan.spans.len()).collect();
        self.fetch(&plan.spans, members, Some(requests), deadline, &mut fetched).await;
        fetched
    }

    /// Reads the spans listed in `members` (indices into `spans`); a merged
    /// block refused with exception 2 is split in halves until the refused
    /// tags stand alone.
    fn fetch<'a>(
        &'a self,
        spans: &'a [Span<Key>],
        members: Vec<usize>,
        prepared: Option<&'a Plan<Key>>,
        deadline: Option<Instant>,
        out: &'a mut Fetched,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let subset: Vec<Span<Key>> = members.iter().map(|&i| spans[i]).collect();
            let owned;
            let plan = match prepared {
                Some(plan) => plan,
                None => {
                    owned = self.plan_spans(&subset).0;
                    &owned
                }
            };
            // Queue every request before awaiting any: this is what fills the pipeline.
            let replies: Vec<_> = plan
                .requests
                .iter()
                .map(|r| {
                    let op = Op::Read { function: r.key.1.read_function(), address: r.start, quantity: r.len };
                    self.client.submit(r.key.0, op, deadline)
                })
                .collect();
            let mut images: Vec<Result<Vec<u8>>> =
                plan.blocks.iter().map(|b| Ok(vec![0u8; image_len(b.key.1, b.len)])).collect();
            for (request, reply) in plan.requests.iter().zip(replies) {
                let result = reply.await;
                if let Ok(image) = &mut images[request.block] {
                    let copied = result.and_then(|reply| {
                        let table = request.key.1;
                        let response = reply.response(table.read_function())?;
                        copy_into(table, &response, request.len, image, request.offset)
                    });
                    if let Err(e) = copied {
                        images[request.block] = Err(e);
                    }
                }
            }
            for (block, image) in plan.blocks.iter().zip(images) {
                match image {
                    Ok(image) => {
                        let index = out.images.len();
                        out.images.push(image);
                        for &m in &block.members {
                            let offset = (subset[m].start - block.start) as u32;
                            out.slots[members[m]] = Some(Ok((index, offset)));
                        }
                    }
                    Err(e) if e.exception_code == Some(2) && block.members.len() > 1 => {
                        let mut ordered: Vec<usize> = block.members.iter().map(|&m| members[m]).collect();
                        ordered.sort_by_key(|&i| spans[i].start);
                        let second = ordered.split_off(ordered.len() / 2);
                        self.fetch(spans, ordered, None, deadline, out).await;
                        self.fetch(spans, second, None, deadline, out).await;
                        // Every tag read fine on its own: the merged request itself was refused.
                        let all_read = block.members.iter().all(|&m| matches!(&out.slots[members[m]], Some(Ok(_))));
                        if all_read {
                            let longest_tag = block.members.iter().map(|&m| subset[m].len).max().unwrap_or(1);
                            self.learn_limit(block.key, (block.len / 2).max(longest_tag));
                        }
                    }
                    Err(e) => {
                        if e.exception_code == Some(2) {
                            let mut learned = self.learned();
                            if learned.refused.insert(subset[block.members[0]]) {
                                learned.changed(self.disconnects());
                            }
                        }
                        for &m in &block.members {
                            out.slots[members[m]] = Some(Err(e.clone()));
                        }
                    }
                }
            }
        })
    }

    /// A merged request was refused: keep later requests of that table at most `len` long.
    fn learn_limit(&self, key: Key, len: u32) {
        let mut learned = self.learned();
        let shorter = len.clamp(1, u16::MAX as u32) as u16;
        let entry = learned.max_len.entry(key).or_insert(u16::MAX);
        if shorter < *entry {
            *entry = shorter;
            learned.changed(self.disconnects());
        }
    }

    /// Writes each tag; one result per tag, in order. All requests are queued
    /// before any reply is awaited.
    pub async fn write(&self, writes: &[(ModbusTag, Value)], timeout: Option<Duration>) -> Vec<Result<()>> {
        if self.closed.load(Ordering::Relaxed) {
            return writes.iter().map(|_| Err(device_closed())).collect();
        }
        let deadline = self.deadline(timeout);
        let queued: Vec<Result<Vec<_>>> = writes
            .iter()
            .map(|(tag, value)| {
                let unit = self.key(tag).0;
                Ok(write_ops(tag, value)?
                    .into_iter()
                    .map(|op| {
                        let expected = op.clone();
                        let reply = self.client.submit(unit, op, deadline);
                        async move { check_write_echo(&expected, unit, &reply.await?) }
                    })
                    .collect())
            })
            .collect();
        let mut results = Vec::with_capacity(writes.len());
        for replies in queued {
            let mut result = Ok(());
            match replies {
                Ok(replies) => {
                    for reply in replies {
                        let outcome = reply.await;
                        if result.is_ok() {
                            result = outcome;
                        }
                    }
                }
                Err(e) => result = Err(e),
            }
            results.push(result);
        }
        results
    }

    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        match &self.serial_port {
            Some(path) => serial::release(path).await,
            None => self.client.close().await,
        }
    }
}

fn device_closed() -> Error {
    Error::closed("the device was closed")
}

/// Bytes per table unit in a block image: two per register, one per bit (unpacked).
fn image_len(table: Table, units: u32) -> usize {
    if table.is_bit() {
        units as usize
    } else {
        units as usize * 2
    }
}

/// Checks a read reply against its request and copies it into the block image.
fn copy_into(table: Table, response: &Response, quantity: u16, image: &mut [u8], offset: u32) -> Result<()> {
    let start = image_len(table, offset);
    let end = start + image_len(table, quantity as u32);
    let target = image.get_mut(start..end).ok_or_else(|| Error::proto("reply outside its block"))?;
    match (response, table.is_bit()) {
        (Response::ReadBits { packed }, true) if packed.len() == (quantity as usize).div_ceil(8) => {
            for (i, slot) in target.iter_mut().enumerate() {
                *slot = pdu::bit(packed, i) as u8;
            }
            Ok(())
        }
        (Response::ReadRegisters { registers }, false) if registers.len() == target.len() => {
            target.copy_from_slice(registers);
            Ok(())
        }
        _ => Err(Error::proto(format!(
            "reply does not carry the {quantity} {} requested",
            if table.is_bit() { "bits" } else { "registers" }
        ))),
    }
}

fn as_bool(value: &Value) -> Result<bool> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Int(0) | Value::UInt(0) => Ok(false),
        Value::Int(1) | Value::UInt(1) => Ok(true),
        Value::Float(f) if *f == 0.0 || *f == 1.0 => Ok(*f == 1.0),
        other => Err(Error::invalid_value(format!("expected a boolean, got {other:?}"))),
    }
}

/// The elements of a write value: a scalar for scalar tags, an array of exactly `count` for arrays.
fn elements<'v>(tag: &ModbusTag, value: &'v Value) -> Result<Vec<&'v Value>> {
    match (tag.count, value) {
        (None, Value::Array(_)) => Err(Error::invalid_value(format!("tag '{tag}' takes a single value, not an array"))),
        (None, v) => Ok(vec![v]),
        (Some(n), Value::Array(items)) if items.len() == n as usize => Ok(items.iter().collect()),
        (Some(n), _) => Err(Error::invalid_value(format!("tag '{tag}' takes an array of exactly {n} values"))),
    }
}

/// The requests that write `value` to `tag`, within the spec's per-request limits.
pub fn write_ops(tag: &ModbusTag, value: &Value) -> Result<Vec<Op>> {
    if !tag.table.is_writable() {
        return Err(Error::address(format!("{} is read-only: cannot write '{tag}'", tag.table.name())));
    }
    let items = elements(tag, value)?;
    if tag.table.is_bit() {
        let bits: Vec<bool> = items.into_iter().map(as_bool).collect::<Result<_>>()?;
        if tag.count.is_none() {
            let value = *bits.first().ok_or_else(|| Error::invalid_value("no value to write"))?;
            return Ok(vec![Op::WriteSingleCoil { address: tag.address, value }]);
        }
        return Ok(bits
            .chunks(MAX_WRITE_BITS)
            .enumerate()
            .map(|(i, chunk)| {
                let mut packed = Vec::with_capacity(chunk.len().div_ceil(8));
                pdu::pack_bits(chunk.iter().copied(), &mut packed);
                Op::WriteMultipleCoils {
                    address: tag.address.wrapping_add((i * MAX_WRITE_BITS) as u16),
                    quantity: chunk.len() as u16,
                    packed: Bytes::from(packed),
                }
            })
            .collect());
    }
    if let Some(bit) = tag.bit {
        // One bit of a register: a mask write leaves the other fifteen alone.
        let mask = 1u16 << bit;
        let set = as_bool(items.first().ok_or_else(|| Error::invalid_value("no value to write"))?)?;
        return Ok(vec![Op::MaskWriteRegister {
            address: tag.address,
            and_mask: !mask,
            or_mask: if set { mask } else { 0 },
        }]);
    }
    let mut registers = Vec::with_capacity(tag.span() as usize * 2);
    for item in items {
        match (tag.data_type, item) {
            (DataType::String, Value::String(s)) => {
                encode_string(s, tag.string_length as usize, tag.byte_order, &mut registers)?
            }
            (DataType::String, other) => {
                return Err(Error::invalid_value(format!("tag '{tag}' takes a string, got {other:?}")))
            }
            (ty, v) => encode_element(v, ty, tag.byte_order, &mut registers)?,
        }
    }
    if registers.len() == 2 {
        return Ok(vec![Op::WriteSingleRegister {
            address: tag.address,
            value: u16::from_be_bytes([registers[0], registers[1]]),
        }]);
    }
    // Whole elements per request, so no value is ever half-written.
    let per_element = tag.element_span() as usize;
    let chunk = match per_element {
        1..=MAX_WRITE_REGISTERS => MAX_WRITE_REGISTERS / per_element * per_element,
        _ => MAX_WRITE_REGISTERS, // long strings cannot stay whole in one request
    };
    let registers = Bytes::from(registers);
    Ok((0..registers.len())
        .step_by(chunk * 2)
        .map(|start| Op::WriteMultipleRegisters {
            address: tag.address.wrapping_add((start / 2) as u16),
            registers: registers.slice(start..(start + chunk * 2).min(registers.len())),
        })
        .collect())
}

/// A write reply must echo what was written; anything else is a protocol error.
fn check_write_echo(op: &Op, unit: u8, reply: &crate::client::Reply) -> Result<()> {
    if unit == 0 {
        return Ok(()); // broadcast: no reply to check
    }
    let request = op.request()?;
    let response = reply.response(request.function())?;
    let echoed = match (&request, &response) {
        (pdu::Request::WriteSingleCoil { address, value }, Response::WriteSingleCoil { address: a, value: v }) => {
            address == a && value == v
        }
        (
            pdu::Request::WriteSingleRegister { address, value },
            Response::WriteSingleRegister { address: a, value: v },
        ) => address == a && value == v,
        (
            pdu::Request::WriteMultipleCoils { address, quantity, .. },
            Response::WriteMultiple { address: a, quantity: q },
        ) => address == a && quantity == q,
        (
            pdu::Request::WriteMultipleRegisters { address, registers },
            Response::WriteMultiple { address: a, quantity: q },
        ) => address == a && registers.len() / 2 == *q as usize,
        (pdu::Request::MaskWriteRegister { address, .. }, Response::MaskWriteRegister { address: a, .. }) => {
            address == a
        }
        _ => false,
    };
    if echoed {
        Ok(())
    } else {
        Err(Error::proto(format!("write reply does not echo the request (function {})", request.function())))
    }
}

impl ModbusDevice {
    /// Opens a device from its URL: `modbus-tcp://host[:502]`, `modbus-rtu-tcp://host[:502]`
    /// or `modbus-rtu:///dev/ttyUSB0?baud-rate=9600&parity=even`.
    pub async fn open(mut url: DeviceUrl) -> Result<ModbusDevice> {
        url.refuse_user_info()?;
        match url.scheme.as_str() {
            "modbus-tcp" | "modbus-rtu-tcp" => {
                if url.host.is_empty() {
                    return Err(Error::address(format!("{}:// needs a host", url.scheme)));
                }
                let framing = if url.scheme == "modbus-tcp" { Framing::Tcp } else { Framing::Rtu };
                let connector = crate::client::tcp_connector(url.socket_address(502));
                let settings = DeviceSettings::from_url(&mut url, framing)?;
                url.finish()?;
                let client = Client::connect(connector, settings.client.clone()).await?;
                Ok(ModbusDevice::new(client, settings, None))
            }
            "modbus-rtu" => {
                let port = PortSettings::from_url(&mut url)?;
                let mut settings = DeviceSettings::from_url(&mut url, Framing::Rtu)?;
                settings.client.inter_frame_delay = port.inter_frame_delay();
                let window =
                    url.take_in("late-reply-window", 1..=MAX_MS)?.map_or(LATE_REPLY_WINDOW, Duration::from_millis);
                settings.client.resync = Resync::Drain { late_reply_window: window };
                url.finish()?;
                let client = serial::acquire(&port, settings.client.clone()).await?;
                Ok(ModbusDevice::new(client, settings, Some(port.path)))
            }
            other => Err(Error::address(format!("'{other}://' is not a Modbus scheme"))),
        }
    }
}
