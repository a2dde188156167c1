//! A Modbus device: turns tag reads and writes into planned, pipelined
//! requests on one link, decodes replies into typed values, and learns which
//! address ranges the device refuses (exception 2) so later plans avoid them.
//! Each call is a job on the engine's session: no task or future per call.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bifrost_core::planner::{self, Plan, PlanLimits, Span};
use bifrost_core::url::{DeviceUrl, MAX_MS};
use bifrost_core::{encode_element, encode_string, DataType, Error, Result, Value};
use bifrost_engine::runtime::{tcp_connector, RuntimeDriver};
use bifrost_engine::{
    Columns, Completion, DeviceCore, Driver, Job, LinkConfig, Outcome, Resync, SharedLinks, Stats, Submitter,
    TypedValue,
};
use bytes::Bytes;

use crate::decode::{columns, columns_for, decode_tag, Runs};
use crate::framing::{Call, Framing, Op, Reply};
use crate::pdu::{self, Response};
use crate::serial::PortSettings;
use crate::tag::{ModbusTag, Table};

/// Spec limits for one read request.
pub const MAX_READ_REGISTERS: u16 = 125;
pub const MAX_READ_BITS: u16 = 2000;
const MAX_WRITE_REGISTERS: usize = 123;
const MAX_WRITE_BITS: usize = 1968;

/// What planning and decoding need of the URL (or the options beside it).
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub unit_id: u8,
    pub max_registers_per_request: u16,
    pub max_bits_per_request: u16,
    pub max_gap: u16,
    /// How long what the device taught us (refused ranges, shorter limits) holds
    /// before it is probed again; `None`: until the next reconnect.
    pub relearn_after: Option<Duration>,
}

/// Default of `late-reply-window`: after a timeout on a serial line, how long
/// the line must stay silent (if the late reply does not come first) before the next request.
pub const LATE_REPLY_WINDOW: Duration = Duration::from_millis(1000);
/// Default of `relearn-after`: a transient fault must not slow a device for good.
pub const RELEARN_AFTER: Duration = Duration::from_secs(60);

impl DeviceSettings {
    /// Takes the Modbus keys every transport shares from `url`; a value out of range is `EINVAL`.
    pub fn from_url(url: &mut DeviceUrl) -> Result<DeviceSettings> {
        let mut s = DeviceSettings {
            unit_id: 1,
            max_registers_per_request: MAX_READ_REGISTERS,
            max_bits_per_request: MAX_READ_BITS,
            max_gap: 8,
            relearn_after: Some(RELEARN_AFTER),
        };
        if let Some(v) = url.take_in("unit-id", 0..=255)? {
            s.unit_id = v;
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

/// Where a device's link goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// `host:port`, for `modbus-tcp://` and `modbus-rtu-tcp://`.
    Tcp(String),
    /// A serial line, shared by every device on it.
    Serial(PortSettings),
}

/// A parsed device URL: what to connect to and how.
#[derive(Debug, Clone)]
pub struct Opening {
    pub target: Target,
    pub framing: Framing,
    pub link: LinkConfig,
    pub settings: DeviceSettings,
}

impl Opening {
    /// Parses `modbus-tcp://host[:502]`, `modbus-rtu-tcp://host[:502]` or
    /// `modbus-rtu:///dev/ttyUSB0?baud-rate=9600&parity=even`.
    pub fn from_url(mut url: DeviceUrl) -> Result<Opening> {
        url.refuse_user_info()?;
        match url.scheme.as_str() {
            "modbus-tcp" | "modbus-rtu-tcp" => {
                if url.host.is_empty() {
                    return Err(Error::address(format!("{}:// needs a host", url.scheme)));
                }
                let framing = if url.scheme == "modbus-tcp" { Framing::Tcp } else { Framing::Rtu };
                let target = Target::Tcp(url.socket_address(502));
                let link = LinkConfig::from_url(&mut url)?;
                let settings = DeviceSettings::from_url(&mut url)?;
                url.finish()?;
                Ok(Opening { target, framing, link, settings })
            }
            "modbus-rtu" => {
                let port = PortSettings::from_url(&mut url)?;
                let mut link = LinkConfig::from_url(&mut url)?;
                link.inter_frame_delay = port.inter_frame_delay();
                let window =
                    url.take_in("late-reply-window", 1..=MAX_MS)?.map_or(LATE_REPLY_WINDOW, Duration::from_millis);
                link.resync = Resync::Drain { late_reply_window: window };
                let settings = DeviceSettings::from_url(&mut url)?;
                url.finish()?;
                Ok(Opening { target: Target::Serial(port), framing: Framing::Rtu, link, settings })
            }
            other => Err(Error::address(format!("'{other}://' is not a Modbus scheme"))),
        }
    }

    /// Starts the device's link on a runtime-thread driver (serial lines always use one).
    pub async fn open_runtime_driver(&self) -> Result<Box<dyn Driver<Framing> + Send>> {
        let link = self.link.clone();
        let connector = match &self.target {
            Target::Tcp(addr) => tcp_connector(addr.clone()),
            Target::Serial(port) => port.connector(),
        };
        Ok(Box::new(RuntimeDriver::open(self.framing, link, connector).await?))
    }

    /// The link this device shares with others, if any: a serial line, or the one
    /// connection to an RTU-over-TCP gateway (RTU frames carry no transaction id,
    /// so the devices behind it take turns on it). Its key, and the settings every
    /// device on it must ask for.
    fn shared_link(&self) -> Option<(String, String)> {
        let options = self.link.describe();
        match &self.target {
            Target::Serial(port) => Some((port.path.clone(), format!("{}, {options}", port.describe()))),
            Target::Tcp(addr) if self.framing == Framing::Rtu => Some((format!("modbus-rtu-tcp://{addr}"), options)),
            Target::Tcp(_) => None,
        }
    }

    /// The device, on the link already open for its serial line or gateway, if
    /// one is; call on the thread that opens devices.
    pub fn join(&self) -> Option<Result<ModbusDevice>> {
        let (key, terms) = self.shared_link()?;
        let joined = SharedLinks::join(&SHARED_LINKS, &key, &terms)?;
        Some(joined.map(|driver| ModbusDevice::new(driver, self.settings.clone())))
    }

    /// The device on a driver just opened for it, shared with the devices that
    /// open its serial line or gateway later; call on the thread that opens devices.
    pub fn device(self, driver: Box<dyn Driver<Framing>>) -> Result<ModbusDevice> {
        let driver = match self.shared_link() {
            Some((key, terms)) => SharedLinks::share(&SHARED_LINKS, key, terms, driver)?,
            None => driver,
        };
        Ok(ModbusDevice::new(driver, self.settings))
    }
}

thread_local! {
    /// Serial lines and RTU-over-TCP gateways open on this thread.
    static SHARED_LINKS: SharedLinks<Framing> = SharedLinks::default();
}

type Key = (u8, Table);

/// What reading taught us about this device.
#[derive(Default)]
struct Learned {
    /// Bumped on every change, so prepared plans know to re-plan.
    generation: u64,
    /// Boxed: most devices never refuse anything, and an idle connection should cost little.
    taught: Option<Box<Taught>>,
}

struct Taught {
    /// Tag spans that drew exception 2 on their own: always read alone.
    refused: HashSet<Span<Key>>,
    /// Per table, a request length the device accepted after refusing a longer one.
    max_len: HashMap<Key, u16>,
    /// When the oldest thing still known was learned, and the link's disconnect
    /// count then: once that connection is gone, so is what it taught.
    since: (Instant, u64),
}

/// What jobs share with their device: its settings and what it taught us.
struct DeviceState {
    settings: DeviceSettings,
    learned: Mutex<Learned>,
    stats: Arc<Stats>,
}

impl DeviceState {
    fn key(&self, tag: &ModbusTag) -> Key {
        (tag.unit_id.unwrap_or(self.settings.unit_id), tag.table)
    }

    fn disconnects(&self) -> u64 {
        self.stats.disconnects.load(Ordering::Relaxed)
    }

    /// What the device taught us, forgotten (so probed again) after a reconnect
    /// or once `relearn-after` has passed: a transient fault must not slow it for good.
    fn learned(&self) -> MutexGuard<'_, Learned> {
        // A panic elsewhere must not make the device unusable.
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(taught) = &learned.taught {
            let (at, disconnects) = taught.since;
            let reconnected = self.disconnects() != disconnects;
            let expired = self.settings.relearn_after.is_some_and(|period| at.elapsed() >= period);
            if reconnected || expired {
                learned.taught = None;
                learned.generation += 1;
            }
        }
        learned
    }

    /// Records one more thing learned; the first starts the clock.
    fn teach(&self, learned: &mut Learned, lesson: impl FnOnce(&mut Taught) -> bool) {
        let since = (Instant::now(), self.disconnects());
        let taught = learned
            .taught
            .get_or_insert_with(|| Box::new(Taught { refused: HashSet::new(), max_len: HashMap::new(), since }));
        if lesson(taught) {
            learned.generation += 1;
        }
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
                let learned_len = learned.taught.as_ref().and_then(|taught| taught.max_len.get(&key).copied());
                PlanLimits { max_len: learned_len.unwrap_or(spec).min(spec), max_gap: self.settings.max_gap }
            },
            |i| learned.taught.as_ref().is_some_and(|taught| taught.refused.contains(&spans[i])),
        );
        (plan, learned.generation)
    }

    fn span(&self, tag: &ModbusTag) -> Span<Key> {
        let align = tag.element_span().clamp(1, u16::MAX as u32) as u16;
        Span { key: self.key(tag), start: tag.address, len: tag.span(), align }
    }

    fn prepare(&self, tags: Vec<ModbusTag>) -> ReadPlan {
        let spans: Vec<Span<Key>> = tags.iter().map(|t| self.span(t)).collect();
        let (plan, generation) = self.plan_spans(&spans);
        // Where each tag lands when every block of the plan is read: its block's image, and its offset there.
        let mut placed = vec![(0, 0); tags.len()];
        for (index, block) in plan.blocks.iter().enumerate() {
            for &tag in &block.members {
                placed[tag] = (index as u32, u32::from(spans[tag].start - block.start));
            }
        }
        let runs = Runs::of(tags.iter().zip(placed).map(|(tag, (image, offset))| (tag, image, offset)));
        let value_count = tags.iter().map(ModbusTag::elements).sum();
        ReadPlan { tags, spans, plan, generation, runs, value_count }
    }

    /// As [`DeviceState::prepare`], shared: devices with the same settings that have
    /// learned nothing yet plan the same tags alike, so they hold one plan between
    /// them (a gateway's thousand devices of one register map hold one, not a thousand).
    /// A device that learns something plans its own again.
    fn prepare_shared(&self, tags: Vec<ModbusTag>) -> Arc<ReadPlan> {
        type Key = ((u8, u16, u16, u16), Vec<ModbusTag>);
        static SHARED: LazyLock<Mutex<HashMap<Key, Weak<ReadPlan>>>> = LazyLock::new(Default::default);
        if self.learned().generation != 0 {
            return Arc::new(self.prepare(tags));
        }
        let s = &self.settings;
        let key = ((s.unit_id, s.max_registers_per_request, s.max_bits_per_request, s.max_gap), tags);
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = shared.get(&key).and_then(Weak::upgrade) {
            return plan;
        }
        if shared.len() >= 64 {
            shared.retain(|_, plan| plan.strong_count() > 0);
        }
        let plan = Arc::new(self.prepare(key.1.clone()));
        shared.insert(key, Arc::downgrade(&plan));
        plan
    }

    fn is_current(&self, plan: &ReadPlan) -> bool {
        plan.generation == self.learned().generation
    }

    /// A merged request was refused: keep later requests of that table at most `len` long.
    fn learn_limit(&self, key: Key, len: u32) {
        let shorter = len.clamp(1, u16::MAX as u32) as u16;
        self.teach(&mut self.learned(), |taught| {
            let entry = taught.max_len.entry(key).or_insert(u16::MAX);
            let changed = shorter < *entry;
            *entry = (*entry).min(shorter);
            changed
        });
    }

    fn learn_refused(&self, span: Span<Key>) {
        self.teach(&mut self.learned(), |taught| taught.refused.insert(span));
    }
}

/// Tags parsed and planned once, read many times.
pub struct ReadPlan {
    tags: Vec<ModbusTag>,
    spans: Vec<Span<Key>>,
    plan: Plan<Key>,
    generation: u64,
    /// The tags as runs over the plan's block images, when they all have one.
    runs: Option<Runs>,
    value_count: usize,
}

/// What a read job hands back.
enum Shape {
    /// One value per tag; `parse_errors` holds, in input order, `Some` for each
    /// tag that did not parse and `None` for each planned one.
    Values {
        parse_errors: Vec<Option<Error>>,
    },
    Columns,
}

/// Requests of one plan (the prepared one, or one half of a refused block) in flight.
struct Round {
    /// Indices into the job's spans; `None`: all of them, in order.
    members: Option<Vec<usize>>,
    /// `None`: the job's prepared plan.
    plan: Option<Plan<Key>>,
    images: Vec<Result<Vec<u8>>>,
    outstanding: usize,
}

/// A merged block refused with exception 2 and split: if every tag of it then
/// reads, the device refused the length, which later plans avoid.
struct Split {
    key: Key,
    len: u32,
    longest_tag: u32,
    members: Vec<usize>,
}

/// Where a tag of a read job was read.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Unplanned,
    /// Its block's image, and its offset in table units within it.
    At {
        image: u32,
        offset: u32,
    },
    /// Its block failed: the job's failure of this number.
    Failed(u32),
}

/// A read of a plan; a merged block refused with exception 2 is split in halves
/// until the refused tags stand alone.
struct ReadJob {
    device: Arc<DeviceState>,
    plan: Arc<ReadPlan>,
    /// A fresh plan when the prepared one is stale.
    replanned: Option<Plan<Key>>,
    shape: Shape,
    images: Vec<Vec<u8>>,
    /// Per tag, where it was read (kept small: a job of thousands of tags holds one each).
    slots: Vec<Slot>,
    /// The errors `Slot::Failed` points at.
    failures: Vec<Error>,
    /// The prepared plan was current: when all of its blocks read, `images` are its blocks in order.
    prepared: bool,
    rounds: Vec<Round>,
    /// Per submitted request: (round, request within the round's plan).
    requests: Vec<(u32, u32)>,
    splits: Vec<Split>,
}

impl ReadJob {
    fn new(device: Arc<DeviceState>, plan: Arc<ReadPlan>, shape: Shape) -> ReadJob {
        let replanned = (!device.is_current(&plan)).then(|| device.plan_spans(&plan.spans).0);
        let prepared = replanned.is_none();
        let slots = vec![Slot::Unplanned; plan.tags.len()];
        ReadJob {
            device,
            plan,
            replanned,
            shape,
            images: Vec::new(),
            slots,
            failures: Vec::new(),
            prepared,
            rounds: Vec::new(),
            requests: Vec::new(),
            splits: Vec::new(),
        }
    }

    fn round_plan(&self, round: usize) -> &Plan<Key> {
        let r = &self.rounds[round];
        r.plan.as_ref().or(self.replanned.as_ref()).unwrap_or(&self.plan.plan)
    }

    /// Queues every request of a new round before any reply: that fills the pipeline.
    fn start_round(&mut self, members: Option<Vec<usize>>, plan: Option<Plan<Key>>, link: &mut Submitter<'_, Framing>) {
        let round = self.rounds.len();
        self.rounds.push(Round { members, plan, images: Vec::new(), outstanding: 0 });
        self.rounds[round].images = self.round_plan(round).blocks.iter().map(|_| Ok(Vec::new())).collect();
        for request in 0..self.round_plan(round).requests.len() {
            let r = &self.round_plan(round).requests[request];
            let op = Op::Read { function: r.key.1.read_function(), address: r.start, quantity: r.len };
            let call = Call { unit: r.key.0, op };
            let index = self.requests.len() as u32;
            match link.submit(call, index) {
                Ok(()) => {
                    self.requests.push((round as u32, request as u32));
                    self.rounds[round].outstanding += 1;
                }
                Err(e) => self.fail_request(round, request, e),
            }
        }
        if self.rounds[round].outstanding == 0 {
            self.end_round(round, link);
        }
    }

    fn fail_request(&mut self, round: usize, request: usize, error: Error) {
        let block = self.round_plan(round).requests[request].block;
        self.rounds[round].images[block] = Err(error);
    }

    /// Copies a reply into its block's image.
    fn copy_reply(&mut self, round: usize, request: usize, reply: Result<Reply>) {
        let r = &self.round_plan(round).requests[request];
        let (block, table, len, offset) = (r.block, r.key.1, r.len, r.offset);
        let block_len = self.round_plan(round).blocks[block].len;
        let Ok(image) = &mut self.rounds[round].images[block] else { return };
        if image.is_empty() {
            image.resize(image_len(table, block_len), 0);
        }
        let copied = reply.and_then(|reply| {
            let response = reply.response(table.read_function())?;
            copy_into(table, &response, len, image, offset)
        });
        if let Err(e) = copied {
            self.rounds[round].images[block] = Err(e);
        }
    }

    /// Every request of the round is back: place each block, and split refused ones.
    fn end_round(&mut self, round: usize, link: &mut Submitter<'_, Framing>) {
        let images = std::mem::take(&mut self.rounds[round].images);
        // Every reply of the round is in: its plan is needed only here, so it is taken, not cloned.
        let own = self.rounds[round].plan.take().or_else(|| self.replanned.take());
        let prepared = self.plan.clone();
        let plan = own.as_ref().unwrap_or(&prepared.plan);
        let round_members = self.rounds[round].members.take();
        let member = |m: usize| round_members.as_ref().map_or(m, |members| members[m]);
        for (block, image) in plan.blocks.iter().zip(images) {
            let members = block.members.iter().map(|&m| member(m));
            match image {
                Ok(image) => {
                    let index = self.images.len();
                    self.images.push(image);
                    for tag in members {
                        let offset = (self.plan.spans[tag].start - block.start) as u32;
                        self.slots[tag] = Slot::At { image: index as u32, offset };
                    }
                }
                Err(e) if e.exception_code == Some(2) && block.members.len() > 1 => {
                    let members: Vec<usize> = members.collect();
                    let mut ordered = members.clone();
                    ordered.sort_by_key(|&i| self.plan.spans[i].start);
                    let second = ordered.split_off(ordered.len() / 2);
                    let longest_tag = members.iter().map(|&i| self.plan.spans[i].len).max().unwrap_or(1);
                    self.splits.push(Split { key: block.key, len: block.len, longest_tag, members });
                    for half in [ordered, second] {
                        let spans: Vec<Span<Key>> = half.iter().map(|&i| self.plan.spans[i]).collect();
                        let plan = self.device.plan_spans(&spans).0;
                        self.start_round(Some(half), Some(plan), link);
                    }
                }
                Err(e) => {
                    if e.exception_code == Some(2) {
                        self.device.learn_refused(self.plan.spans[member(block.members[0])]);
                    }
                    let failure = self.failures.len() as u32;
                    self.failures.push(e);
                    for tag in members {
                        self.slots[tag] = Slot::Failed(failure);
                    }
                }
            }
        }
    }

    /// The read as columns: run by run when the prepared plan read whole, else tag by tag.
    fn columns(&self) -> Columns {
        let whole = self.prepared && self.rounds.len() == 1 && self.images.len() == self.plan.plan.blocks.len();
        if let (true, Some(runs)) = (whole, &self.plan.runs) {
            let mut columns = columns_for(&self.plan.tags);
            if runs.decode(|image| &self.images[image as usize], &mut columns.values) {
                return columns;
            }
        }
        columns(&self.plan.tags, self.located())
    }

    /// Each tag's image and offset in it, in tag order.
    fn located(&self) -> impl Iterator<Item = Result<(&[u8], u32)>> + '_ {
        self.slots.iter().map(|slot| match *slot {
            Slot::At { image, offset } => Ok((self.images[image as usize].as_slice(), offset)),
            Slot::Failed(failure) => Err(self.failures[failure as usize].clone()),
            Slot::Unplanned => Err(Error::proto("tag was not planned")),
        })
    }
}

impl Job<Framing> for ReadJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        self.start_round(None, None, link);
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, link: &mut Submitter<'_, Framing>) {
        let (round, request) = self.requests[index as usize];
        let round = round as usize;
        self.copy_reply(round, request as usize, reply);
        self.rounds[round].outstanding -= 1;
        if self.rounds[round].outstanding == 0 {
            self.end_round(round, link);
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        // Inner splits first: every tag of a split block read fine on its own, so the merged request itself was refused.
        for split in self.splits.iter().rev() {
            if split.members.iter().all(|&m| matches!(self.slots[m], Slot::At { .. })) {
                self.device.learn_limit(split.key, (split.len / 2).max(split.longest_tag));
            }
        }
        match &self.shape {
            Shape::Columns => Outcome::Columns(self.columns()),
            Shape::Values { parse_errors } => {
                let mut values = self.plan.tags.iter().zip(self.located()).map(|(tag, located)| {
                    let wide = matches!(tag.data_type, DataType::Lint | DataType::Ulint);
                    located
                        .and_then(|(image, offset)| decode_tag(tag, image, offset))
                        .map(|value| TypedValue { value, wide })
                });
                let in_order = parse_errors
                    .iter()
                    .map(|parse_error| match parse_error {
                        Some(e) => Err(e.clone()),
                        None => values.next().unwrap_or_else(|| Err(Error::proto("no result for this tag"))),
                    })
                    .collect();
                Outcome::Values(in_order)
            }
        }
    }
}

/// A read of one tag that fits in one request: the common `read(tag)`. It
/// skips the planner and stays small, because gateways queue many of them.
struct SingleRead {
    state: Arc<DeviceState>,
    tag: ModbusTag,
    result: Option<Result<TypedValue>>,
}

impl SingleRead {
    /// `None` when the tag needs more than one request (the planner splits it).
    fn new(state: &Arc<DeviceState>, tag: ModbusTag) -> std::result::Result<SingleRead, ModbusTag> {
        let span = state.span(&tag);
        let limit = state.plan_spans(std::slice::from_ref(&span)).0;
        if limit.requests.len() != 1 {
            return Err(tag);
        }
        Ok(SingleRead { state: state.clone(), tag, result: None })
    }

    fn decode(&self, reply: Result<Reply>) -> Result<TypedValue> {
        let table = self.tag.table;
        let quantity = self.tag.span() as u16;
        let reply = reply?;
        let response = reply.response(table.read_function())?;
        let mut image = vec![0u8; image_len(table, u32::from(quantity))];
        copy_into(table, &response, quantity, &mut image, 0)?;
        let wide = matches!(self.tag.data_type, DataType::Lint | DataType::Ulint);
        decode_tag(&self.tag, &image, 0).map(|value| TypedValue { value, wide })
    }
}

impl Job<Framing> for SingleRead {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        let table = self.tag.table;
        let op =
            Op::Read { function: table.read_function(), address: self.tag.address, quantity: self.tag.span() as u16 };
        let call = Call { unit: self.state.key(&self.tag).0, op };
        if let Err(e) = link.submit(call, 0) {
            self.result = Some(Err(e));
        }
    }

    fn reply(&mut self, _index: u32, reply: Result<Reply>, _link: &mut Submitter<'_, Framing>) {
        let result = self.decode(reply);
        if matches!(&result, Err(e) if e.exception_code == Some(2)) {
            self.state.learn_refused(self.state.span(&self.tag));
        }
        self.result = Some(result);
    }

    fn finish(self: Box<Self>) -> Outcome {
        Outcome::Values(vec![self.result.unwrap_or_else(|| Err(Error::proto("tag was not read")))])
    }
}

/// Writes of many tags: every request is queued before any reply is awaited.
struct WriteJob {
    /// Per tag in input order: its result so far.
    results: Vec<Result<()>>,
    /// Per submitted request: the tag it writes and the operation, to check the echo.
    requests: Vec<(usize, Call)>,
}

impl Job<Framing> for WriteJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        for index in 0..self.requests.len() {
            let (tag, call) = &self.requests[index];
            if let Err(e) = link.submit(call.clone(), index as u32) {
                let tag = *tag;
                if self.results[tag].is_ok() {
                    self.results[tag] = Err(e);
                }
            }
        }
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, _link: &mut Submitter<'_, Framing>) {
        let (tag, call) = &self.requests[index as usize];
        let outcome = reply.and_then(|reply| check_write_echo(call, &reply));
        if self.results[*tag].is_ok() {
            self.results[*tag] = outcome;
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        Outcome::Written(self.results)
    }
}

/// The device's driver and state; its prepared plans hold it too.
type Core = DeviceCore<Framing, DeviceState>;

/// A connected Modbus device. It lives on the thread that opened it (the
/// JavaScript thread); its calls run wherever its driver runs them.
pub struct ModbusDevice(Rc<Core>);

impl ModbusDevice {
    fn new(driver: Box<dyn Driver<Framing>>, settings: DeviceSettings) -> Self {
        let stats = driver.stats();
        let state = Arc::new(DeviceState { settings, learned: Mutex::new(Learned::default()), stats });
        ModbusDevice(Rc::new(DeviceCore::new(driver, state)))
    }
}

/// A plan prepared on a device; swapped for a fresh one when the device learns something.
struct ModbusPlan {
    device: Rc<Core>,
    plan: RefCell<Arc<ReadPlan>>,
}

impl bifrost_engine::Plan for ModbusPlan {
    fn read(&self, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let state = &self.device.state;
        if self.device.is_closed() {
            // Columns still: a poller or a group read gets every tag failed, in the plan's shape.
            let plan = self.plan.borrow();
            let error = Error::closed("the device was closed");
            return done.complete(Outcome::Columns(Columns::failed(plan.tags.iter().map(ModbusTag::elements), &error)));
        }
        let plan = {
            let mut plan = self.plan.borrow_mut();
            if !state.is_current(&plan) {
                *plan = Arc::new(state.prepare(plan.tags.clone()));
            }
            plan.clone()
        };
        self.device.run(Box::new(ReadJob::new(state.clone(), plan, Shape::Columns)), timeout, done);
    }

    fn value_count(&self) -> usize {
        self.plan.borrow().value_count
    }
}

impl bifrost_engine::Device for ModbusDevice {
    fn read(&self, tags: &[String], timeout: Option<Duration>, done: Box<dyn Completion>) {
        let state = &self.0.state;
        if let [text] = tags {
            match ModbusTag::parse(text).map(|tag| SingleRead::new(state, tag)) {
                Ok(Ok(single)) => return self.0.run(Box::new(single), timeout, done),
                Err(e) => return done.complete(Outcome::Values(vec![Err(e)])),
                Ok(Err(_)) => {} // more than one request: planned below
            }
        }
        let mut valid = Vec::with_capacity(tags.len());
        let parse_errors = tags
            .iter()
            .map(|text| match ModbusTag::parse(text) {
                Ok(tag) => {
                    valid.push(tag);
                    None
                }
                Err(e) => Some(e),
            })
            .collect();
        let plan = Arc::new(state.prepare(valid));
        self.0.run(Box::new(ReadJob::new(state.clone(), plan, Shape::Values { parse_errors })), timeout, done);
    }

    fn write(&self, writes: Vec<(String, Value)>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let mut job = WriteJob { results: Vec::with_capacity(writes.len()), requests: Vec::new() };
        for (index, (text, value)) in writes.iter().enumerate() {
            let ops = ModbusTag::parse(text).and_then(|tag| Ok((self.0.state.key(&tag).0, write_ops(&tag, value)?)));
            match ops {
                Ok((unit, ops)) => {
                    job.results.push(Ok(()));
                    job.requests.extend(ops.into_iter().map(|op| (index, Call { unit, op })));
                }
                Err(e) => job.results.push(Err(e)),
            }
        }
        self.0.run(Box::new(job), timeout, done);
    }

    fn prepare(&self, tags: &[String]) -> Result<Box<dyn bifrost_engine::Plan>> {
        let parsed = tags.iter().map(|text| match ModbusTag::parse(text) {
            Ok(tag) if tag.data_type == DataType::String => Err(Error::address(format!(
                "STRING tag '{text}' cannot be prepared (columns are numeric); read it with readTags"
            ))),
            other => other,
        });
        let plan = self.0.state.prepare_shared(parsed.collect::<Result<Vec<_>>>()?);
        Ok(Box::new(ModbusPlan { device: self.0.clone(), plan: RefCell::new(plan) }))
    }

    fn stats(&self) -> Arc<Stats> {
        self.0.state.stats.clone()
    }

    fn close(&self, done: Box<dyn Completion>) {
        self.0.close(done)
    }
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
fn check_write_echo(call: &Call, reply: &Reply) -> Result<()> {
    let Call { unit, op } = call;
    if *unit == 0 {
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
