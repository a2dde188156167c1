//! The Logix client: a device opened from `eip://host[:44818]?path=1,0`, whose
//! reads pack Read Tag requests into Multiple Service Packets sized to the
//! connection (request and reply bytes both), continue any reply that stops
//! early (status 0x06) with Read Tag Fragmented, and whose writes learn each
//! tag's type from the controller, write bits with Read-Modify-Write and large
//! values in fragments.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bifrost_core::url::{DeviceUrl, MAX_MS};
use bifrost_core::{Error, Result, Value};
use bifrost_engine::runtime::{tcp_connector, RuntimeDriver};
use bifrost_engine::{
    Columns, Completion, DeviceCore, Driver, Job, LinkConfig, Outcome, Stats, Submitter, TagInfo, TypedValue,
};
use rustc_hash::FxHashMap;

use crate::cip::{self, service, status, Response};
use crate::encap::DEFAULT_PORT;
use crate::framing::{Framing, Negotiated, Reply, Request};
use crate::logix::{self, CipType, TagData};
use crate::tag::{LogixTag, ObjectAccess};

/// How often an idle connection says something by default: well inside a
/// controller's session inactivity timeout and the connection's own timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The route when the URL gives none: port 1 (the backplane), slot 0.
const DEFAULT_ROUTE: &str = "1,0";

/// A parsed `eip://` URL: where to connect and how.
#[derive(Debug, Clone)]
pub struct Opening {
    /// `host:port`.
    pub address: String,
    pub link: LinkConfig,
    /// The route from the device connected to, to the controller (`path=1,0`, the default).
    pub route: Vec<u8>,
    /// `connected=false`: unconnected messaging only, no Forward Open.
    pub connect: bool,
    /// `keep-alive`: an idle connection says something this often (`None`: `keep-alive=0`).
    pub keep_alive: Option<Duration>,
}

impl Opening {
    /// Parses `eip://host[:44818]?path=1,0&connected=true` and the keys every protocol shares.
    pub fn from_url(mut url: DeviceUrl) -> Result<Opening> {
        url.refuse_user_info()?;
        if url.scheme != "eip" {
            return Err(Error::address(format!("'{}://' is not an EtherNet/IP scheme", url.scheme)));
        }
        if url.host.is_empty() {
            return Err(Error::address("eip:// needs a host"));
        }
        let address = url.socket_address(DEFAULT_PORT);
        let link = LinkConfig::from_url(&mut url)?;
        // Backplane slot 0 by default, as most Logix clients assume; `path=` for none (a Micro800).
        let route = cip::route_path(&url.take::<String>("path")?.unwrap_or_else(|| DEFAULT_ROUTE.into()))?;
        let connect = match url.take::<String>("connected")?.as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(Error::invalid_value(format!("connected must be true or false, not '{other}'"))),
        };
        let keep_alive = match url.take_in("keep-alive", 0..=MAX_MS)? {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => Some(KEEP_ALIVE),
        };
        url.finish()?;
        Ok(Opening { address, link, route, connect, keep_alive })
    }

    /// The link's framing, and what it tells the device's jobs.
    pub fn framing(&self) -> (Framing, Arc<Negotiated>) {
        let negotiated = Arc::new(Negotiated::default());
        (Framing::new(self.route.clone(), self.connect, self.keep_alive, negotiated.clone()), negotiated)
    }

    /// Starts the device's link on a runtime-thread driver.
    pub async fn open_runtime_driver(&self, framing: Framing) -> Result<Box<dyn Driver<Framing> + Send>> {
        let connector = tcp_connector(self.address.clone());
        Ok(Box::new(RuntimeDriver::open(framing, self.link.clone(), connector).await?))
    }
}

/// What the device learned of the controller's tags: their types, kept until
/// the controller may have changed (a reconnect, or a refusal that says so).
#[derive(Default)]
struct Learned {
    /// The connection the types were learned on.
    connection: u32,
    types: FxHashMap<Box<str>, CipType>,
}

struct DeviceState {
    negotiated: Arc<Negotiated>,
    learned: Mutex<Learned>,
}

impl DeviceState {
    fn learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        // A program download changes tags: what a former connection taught is dropped.
        let connection = self.negotiated.connections();
        if learned.connection != connection {
            learned.types.clear();
            learned.connection = connection;
        }
        learned
    }

    fn type_of(&self, tag: &LogixTag) -> Option<CipType> {
        self.learned().types.get(&tag.type_key).copied()
    }

    /// The known type of each tag, under one lock.
    fn types_of(&self, tags: &[std::result::Result<LogixTag, Error>]) -> Vec<Option<CipType>> {
        let learned = self.learned();
        tags.iter().map(|tag| tag.as_ref().ok().and_then(|tag| learned.types.get(&tag.type_key).copied())).collect()
    }

    fn learn(&self, tag: &LogixTag, ty: CipType) {
        self.learned().types.insert(tag.type_key.clone(), ty);
    }

    /// Statuses that say the controller's tags changed under us.
    fn forget_on(&self, status: u8, ext_status: Option<u16>) {
        if matches!(
            (status, ext_status),
            (status::PATH_SEGMENT_ERROR | status::PATH_DESTINATION_UNKNOWN, _) | (status::GENERAL_ERROR, Some(0x2107))
        ) {
            self.learned().types.clear();
        }
    }
}

/// Reply bytes an object's attributes may take (the Identity object's all take about 40).
const OBJECT_REPLY_ESTIMATE: usize = 256;
/// Bytes of an element when its type is not known yet: the widest number.
const GUESSED_ELEMENT: usize = 8;
/// The Message Router reply header, and a structure's type code and handle.
const REPLY_HEADER: usize = 4 + 4;

/// Reply bytes a read of `tag` may take, its type known or not.
fn reply_estimate(known: Option<CipType>, tag: &LogixTag) -> usize {
    if tag.object.is_some() {
        return OBJECT_REPLY_ESTIMATE;
    }
    let element = known.and_then(CipType::element_size).unwrap_or(GUESSED_ELEMENT);
    REPLY_HEADER + element * usize::from(tag.count)
}

/// Values a tag yields as columns: its elements, or one for a bit.
fn column_count(tag: &std::result::Result<LogixTag, Error>) -> usize {
    match tag {
        Ok(tag) if tag.bit.is_none() => usize::from(tag.count),
        _ => 1,
    }
}

/// How a read job hands back its tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Values,
    Columns,
}

/// One tag of a read.
enum Slot {
    Waiting,
    /// Bytes of a reply that stopped early, to continue from.
    Partial(CipType, Vec<u8>),
    /// Read: its value, or (columns) its numbers written in place.
    Read(Option<TypedValue>),
    Failed(Error),
}

struct ReadJob {
    state: Arc<DeviceState>,
    tags: Arc<[std::result::Result<LogixTag, Error>]>,
    /// Each tag's type as the job started; a reply of another type teaches the device.
    known: Vec<Option<CipType>>,
    slots: Vec<Slot>,
    /// The tags each submitted request reads, by request index.
    requests: Vec<Vec<usize>>,
    shape: Shape,
    /// Columns: every tag's numbers, decoded as its reply comes.
    columns: Columns,
}

impl ReadJob {
    fn new(state: Arc<DeviceState>, tags: Arc<[std::result::Result<LogixTag, Error>]>, shape: Shape) -> ReadJob {
        let slots = tags
            .iter()
            .map(|tag| match tag {
                Ok(_) => Slot::Waiting,
                Err(e) => Slot::Failed(e.clone()),
            })
            .collect();
        let mut columns = Columns::default();
        if shape == Shape::Columns {
            columns.offsets.reserve(tags.len() + 1);
            columns.offsets.push(0);
            let mut total = 0;
            for tag in tags.iter() {
                total += column_count(tag) as u32;
                columns.offsets.push(total);
            }
            columns.values = vec![f64::NAN; total as usize];
        }
        let known = state.types_of(&tags);
        ReadJob { state, tags, known, slots, requests: Vec::new(), shape, columns }
    }

    fn submit(&mut self, message: Vec<u8>, members: Vec<usize>, link: &mut Submitter<'_, Framing>) {
        let index = self.requests.len() as u32;
        let failed = members.clone();
        self.requests.push(members);
        if let Err(e) = link.submit(Request::Cip { message, write: false }, index) {
            for tag in failed {
                self.slots[tag] = Slot::Failed(e.clone());
            }
        }
    }

    /// Reads `tag` alone with Read Tag Fragmented from byte `offset`.
    fn continue_fragmented(&mut self, tag: usize, offset: usize, link: &mut Submitter<'_, Framing>) {
        let Ok(read) = &self.tags[tag] else { return };
        let mut message = Vec::with_capacity(read.path.len() + 8);
        match logix::read_tag_fragmented(&mut message, &read.path, read.count, offset as u32) {
            Ok(()) => self.submit(message, vec![tag], link),
            Err(e) => self.slots[tag] = Slot::Failed(e),
        }
    }

    /// One tag's reply (alone, or from inside a Multiple Service Packet).
    fn take_reply(&mut self, tag: usize, response: Result<Response<'_>>, link: &mut Submitter<'_, Framing>) {
        let tags = self.tags.clone();
        let Ok(read) = &tags[tag] else { return };
        let what = || format!("read of '{}'", read.text());
        if read.object.is_some() {
            // An object's attributes: their raw bytes.
            let bytes = response.and_then(|response| response.ok(&what()).map(<[u8]>::to_vec));
            self.slots[tag] = match bytes {
                Ok(bytes) => Slot::Read(Some(TypedValue { value: bytes_value(&bytes), wide: false })),
                Err(e) => Slot::Failed(e),
            };
            return;
        }
        let result = response.and_then(|response| match response.status {
            status::SUCCESS | status::PARTIAL_TRANSFER => {
                Ok((response.status == status::PARTIAL_TRANSFER, logix::parse_read_reply(response.data)?))
            }
            refused => {
                self.state.forget_on(refused, response.ext_status);
                Err(cip::status_error(refused, response.ext_status, &what()))
            }
        });
        let (partial, TagData { ty, data }) = match result {
            Ok(reply) => reply,
            Err(e) => return self.slots[tag] = Slot::Failed(e),
        };
        if self.known[tag] != Some(ty) {
            self.known[tag] = Some(ty);
            self.state.learn(read, ty);
        }
        match std::mem::replace(&mut self.slots[tag], Slot::Waiting) {
            Slot::Partial(first, _) if first != ty => {
                let message = format!("{}: fragments came as {} and then {}", what(), first.name(), ty.name());
                self.slots[tag] = Slot::Failed(Error::proto(message));
            }
            Slot::Partial(_, mut bytes) => {
                bytes.extend_from_slice(data);
                self.after_fragment(tag, ty, bytes, partial, link);
            }
            _ if partial => self.after_fragment(tag, ty, data.to_vec(), true, link),
            _ => self.complete(tag, read, ty, data),
        }
    }

    /// A fragment came: ask for the next one, or decode them all.
    fn after_fragment(
        &mut self,
        tag: usize,
        ty: CipType,
        bytes: Vec<u8>,
        partial: bool,
        link: &mut Submitter<'_, Framing>,
    ) {
        let tags = self.tags.clone();
        let Ok(read) = &tags[tag] else { return };
        if !partial {
            return self.complete(tag, read, ty, &bytes);
        }
        if bytes.is_empty() {
            let error = Error::proto(format!("read of '{}': a partial reply carried no data", read.text()));
            return self.slots[tag] = Slot::Failed(error);
        }
        let offset = bytes.len();
        self.slots[tag] = Slot::Partial(ty, bytes);
        self.continue_fragmented(tag, offset, link);
    }

    /// Decodes a tag's whole data: into its value, or into its columns.
    fn complete(&mut self, tag: usize, read: &LogixTag, ty: CipType, bytes: &[u8]) {
        let decoded = match self.shape {
            Shape::Values => value(read, ty, bytes).map(Some),
            Shape::Columns => {
                let range = self.columns.offsets[tag] as usize..self.columns.offsets[tag + 1] as usize;
                let out = &mut self.columns.values[range];
                let filled = match read.bit {
                    Some(_) => {
                        value(read, ty, bytes).map(|v| out[0] = f64::from(u8::from(v.value == Value::Bool(true))))
                    }
                    None => logix::elements_f64(ty, bytes, out),
                };
                if filled.is_err() {
                    out.fill(f64::NAN);
                }
                filled.map(|()| None)
            }
        };
        self.slots[tag] = match decoded {
            Ok(read) => Slot::Read(read),
            Err(e) => Slot::Failed(e),
        };
    }

    /// Sends a group: one tag's message as it is, more in a Multiple Service Packet.
    fn flush(
        &mut self,
        group: &mut Vec<(usize, std::ops::Range<usize>)>,
        scratch: &[u8],
        link: &mut Submitter<'_, Framing>,
    ) {
        match group.len() {
            0 => {}
            1 => {
                let (tag, range) = group[0].clone();
                self.submit(scratch[range].to_vec(), vec![tag], link);
            }
            _ => {
                let members: Vec<usize> = group.iter().map(|(tag, _)| *tag).collect();
                let messages: Vec<&[u8]> = group.iter().map(|(_, range)| &scratch[range.clone()]).collect();
                let mut packet = Vec::with_capacity(scratch.len() + 8 + 2 * group.len());
                match cip::multiple_service_packet(&mut packet, &messages) {
                    Ok(()) => self.submit(packet, members, link),
                    Err(e) => members.into_iter().for_each(|tag| self.slots[tag] = Slot::Failed(e.clone())),
                }
            }
        }
        group.clear();
    }
}

/// Raw bytes as a value: an array of numbers, one per byte.
fn bytes_value(bytes: &[u8]) -> Value {
    Value::Array(bytes.iter().map(|&b| Value::UInt(u64::from(b))).collect())
}

/// The service that reads (or writes) an object's attribute, or all of them.
fn object_service(access: ObjectAccess, write: bool) -> u8 {
    match (access, write) {
        (ObjectAccess::Single, false) => service::GET_ATTRIBUTE_SINGLE,
        (ObjectAccess::Single, true) => service::SET_ATTRIBUTE_SINGLE,
        (ObjectAccess::All, _) => service::GET_ATTRIBUTES_ALL,
    }
}

/// A tag's value from its bytes; a bit tag's bit, an array range's array.
fn value(tag: &LogixTag, ty: CipType, bytes: &[u8]) -> Result<TypedValue> {
    if let Some(bit) = tag.bit {
        let size =
            ty.element_size().filter(|_| ty.data_type().is_some() && !matches!(ty, CipType::Real | CipType::Lreal));
        let size = size.ok_or_else(|| {
            Error::invalid_value(format!("'{}' is a bit of a {}, not of an integer", tag.name, ty.name()))
        })?;
        if usize::from(bit) >= size * 8 {
            return Err(Error::address(format!(
                "'{}': bit {bit} is past the {}-bit {}",
                tag.name,
                size * 8,
                ty.name()
            )));
        }
        let word = bytes.get(..size).ok_or_else(|| Error::proto(format!("the reply to '{}' is short", tag.name)))?;
        let raw = word.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        return Ok(TypedValue { value: Value::Bool(raw >> bit & 1 == 1), wide: false });
    }
    let value = logix::decode_values(&TagData { ty, data: bytes }, usize::from(tag.count), tag.range)?;
    Ok(TypedValue { value, wide: ty.is_wide() })
}

impl Job<Framing> for ReadJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        let size = usize::from(self.state.negotiated.size());
        // Messages go into one scratch buffer, packed into Multiple Service Packets
        // within the connection size both ways; a tag too big for one goes alone.
        let mut scratch: Vec<u8> = Vec::with_capacity(size);
        let mut group: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        let mut reply_bytes = 0;
        let tags = self.tags.clone();
        for (i, tag) in tags.iter().enumerate() {
            let Ok(tag) = tag else { continue };
            let at = scratch.len();
            let built = match tag.object {
                Some(access) => cip::request(&mut scratch, object_service(access, false), &tag.path, |_| {}),
                None => logix::read_tag(&mut scratch, &tag.path, tag.count),
            };
            if let Err(e) = built {
                scratch.truncate(at);
                self.slots[i] = Slot::Failed(e);
                continue;
            }
            let estimate = reply_estimate(self.known[i], tag);
            if estimate + cip::multiple_reply_overhead(1) > size {
                // Continued in fragments as the replies come.
                self.submit(scratch[at..].to_vec(), vec![i], link);
                scratch.truncate(at);
                continue;
            }
            let fits = cip::multiple_service_overhead(group.len() + 1) + scratch.len() <= size
                && cip::multiple_reply_overhead(group.len() + 1) + reply_bytes + estimate <= size;
            if !fits {
                self.flush(&mut group, &scratch, link);
                scratch.drain(..at);
                reply_bytes = 0;
            }
            reply_bytes += estimate;
            // After a flush the message was moved to the front.
            let at = if fits { at } else { 0 };
            group.push((i, at..scratch.len()));
        }
        self.flush(&mut group, &scratch, link);
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, link: &mut Submitter<'_, Framing>) {
        let members = std::mem::take(&mut self.requests[index as usize]);
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                for tag in members {
                    self.slots[tag] = Slot::Failed(e.clone());
                }
                return;
            }
        };
        let response = reply.response();
        if let ([tag], Ok(response)) = (&members[..], &response) {
            if response.service != service::MULTIPLE_SERVICE_PACKET {
                return self.take_reply(*tag, Ok(*response), link);
            }
        }
        // A Multiple Service Packet: a status inside fails that tag only.
        let embedded = response.and_then(|response| {
            if response.service != service::MULTIPLE_SERVICE_PACKET {
                return Err(Error::proto("the reply to a Multiple Service Packet is another service's"));
            }
            if response.status != status::SUCCESS && response.status != status::EMBEDDED_SERVICE_ERROR {
                return Err(cip::status_error(response.status, response.ext_status, "Multiple Service Packet"));
            }
            let replies = cip::split_multiple(response.data)?;
            if replies.len() != members.len() {
                return Err(Error::proto(format!(
                    "{} replies to a packet of {} requests",
                    replies.len(),
                    members.len()
                )));
            }
            Ok(replies)
        });
        match embedded {
            Ok(replies) => {
                for (tag, reply) in members.into_iter().zip(replies) {
                    self.take_reply(tag, Response::parse(reply), link);
                }
            }
            Err(e) => {
                for tag in members {
                    self.slots[tag] = Slot::Failed(e.clone());
                }
            }
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        let ReadJob { slots, shape, mut columns, .. } = *self;
        let unfinished = || Error::proto("internal error: a read ended unfinished (please report it)");
        match shape {
            Shape::Columns => {
                for (i, slot) in slots.into_iter().enumerate() {
                    let error = match slot {
                        Slot::Read(_) => continue,
                        Slot::Failed(e) => e,
                        Slot::Waiting | Slot::Partial(..) => unfinished(),
                    };
                    columns.values[columns.offsets[i] as usize..columns.offsets[i + 1] as usize].fill(f64::NAN);
                    columns.errors.push((i as u32, error));
                }
                Outcome::Columns(columns)
            }
            Shape::Values => Outcome::Values(
                slots
                    .into_iter()
                    .map(|slot| match slot {
                        Slot::Read(Some(value)) => Ok(value),
                        Slot::Failed(e) => Err(e),
                        _ => Err(unfinished()),
                    })
                    .collect(),
            ),
        }
    }
}

/// One write's progress: its type learned first when not known, then written
/// whole, in fragments, or (a bit) with Read-Modify-Write.
enum WriteStep {
    Bad(Error),
    LearningType,
    Writing { ty: CipType, data: Vec<u8>, count: u16, sent: usize },
    Done(Result<()>),
}

struct WriteJob {
    state: Arc<DeviceState>,
    writes: Vec<(std::result::Result<LogixTag, Error>, Value)>,
    steps: Vec<WriteStep>,
}

impl WriteJob {
    fn what(tag: &LogixTag) -> String {
        format!("write of '{}'", tag.text())
    }

    /// Starts or continues write `i` once its type is known.
    fn advance(&mut self, i: usize, link: &mut Submitter<'_, Framing>) {
        let Ok(tag) = &self.writes[i].0 else { return };
        let tag = tag.clone();
        let step = std::mem::replace(&mut self.steps[i], WriteStep::Done(Ok(())));
        let (ty, data, count, sent) = match step {
            WriteStep::Writing { ty, data, count, sent } => (ty, data, count, sent),
            other => {
                self.steps[i] = other;
                return;
            }
        };
        let size = usize::from(self.state.negotiated.size());
        let mut message = Vec::with_capacity(tag.path.len() + 16 + data.len().min(size));
        let built = if let Some(bit) = tag.bit {
            let on = match &self.writes[i].1 {
                Value::Bool(on) => Ok(*on),
                Value::Int(0) | Value::UInt(0) => Ok(false),
                Value::Int(1) | Value::UInt(1) => Ok(true),
                other => Err(Error::invalid_value(format!("{other:?} is not a bit value for '{}'", tag.name))),
            };
            let width = ty
                .element_size()
                .filter(|_| ty.data_type().is_some() && !matches!(ty, CipType::Real | CipType::Lreal | CipType::Bool));
            match (on, width) {
                (Ok(on), Some(width)) => logix::write_bit(&mut message, &tag.path, width, bit, on).map(|()| 0),
                (Err(e), _) => Err(e),
                (_, None) => {
                    Err(Error::invalid_value(format!("'{}' is a bit of a {}, not of an integer", tag.name, ty.name())))
                }
            }
        } else {
            // Room for the request's header, path, type, count and offset.
            let room = size.saturating_sub(2 + tag.path.len() + 4 + 2 + 4);
            let element = ty.element_size().unwrap_or(1).max(1);
            let chunk = (room / element) * element;
            if sent == 0 && data.len() <= room {
                logix::write_tag(&mut message, &tag.path, ty, count, &data).map(|()| data.len())
            } else if chunk == 0 {
                Err(Error::invalid_value(format!(
                    "{}: one element does not fit a {size}-byte connection",
                    Self::what(&tag)
                )))
            } else {
                let end = (sent + chunk).min(data.len());
                logix::write_tag_fragmented(&mut message, &tag.path, ty, count, sent as u32, &data[sent..end])
                    .map(|()| end - sent)
            }
        };
        // `built`: how many bytes of the value the request carries.
        match built {
            Err(e) => self.steps[i] = WriteStep::Done(Err(e)),
            Ok(carried) => {
                self.steps[i] = WriteStep::Writing { ty, data, count, sent: sent + carried };
                if let Err(e) = link.submit(Request::Cip { message, write: true }, i as u32) {
                    self.steps[i] = WriteStep::Done(Err(e));
                }
            }
        }
    }
}

impl WriteJob {
    /// Set Attribute Single with the value's raw bytes (numbers 0 to 255).
    fn write_object(&mut self, i: usize, tag: &LogixTag, access: ObjectAccess, link: &mut Submitter<'_, Framing>) {
        let bytes = match (&self.writes[i].1, access) {
            (_, ObjectAccess::All) => Err(Error::invalid_value(format!(
                "'{}' names all of an object's attributes, which cannot be written",
                tag.name
            ))),
            (Value::Array(items), _) => items
                .iter()
                .map(|item| match item {
                    Value::Int(b) => u8::try_from(*b).ok(),
                    Value::UInt(b) => u8::try_from(*b).ok(),
                    Value::Float(b) if b.fract() == 0.0 && (0.0..=255.0).contains(b) => Some(*b as u8),
                    _ => None,
                })
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| {
                    Error::invalid_value(format!("'{}' takes raw bytes: an array of numbers 0 to 255", tag.name))
                }),
            _ => Err(Error::invalid_value(format!("'{}' takes raw bytes: an array of numbers 0 to 255", tag.name))),
        };
        let mut message = Vec::new();
        let sent = bytes.and_then(|bytes| {
            cip::request(&mut message, object_service(access, true), &tag.path, |out| out.extend_from_slice(&bytes))?;
            // Nothing left to send once it is answered.
            self.steps[i] = WriteStep::Writing { ty: CipType::Usint, data: Vec::new(), count: 0, sent: 0 };
            link.submit(Request::Cip { message, write: true }, i as u32)
        });
        if let Err(e) = sent {
            self.steps[i] = WriteStep::Done(Err(e));
        }
    }
}

impl Job<Framing> for WriteJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        for i in 0..self.writes.len() {
            let Ok(tag) = &self.writes[i].0 else { continue };
            let tag = tag.clone();
            if let Some(access) = tag.object {
                self.write_object(i, &tag, access, link);
                continue;
            }
            match self.state.type_of(&tag) {
                Some(ty) => {
                    self.steps[i] = encode_write(&tag, ty, &self.writes[i].1);
                    self.advance(i, link);
                }
                None => {
                    // The type comes from the controller: read one element first.
                    let mut message = Vec::new();
                    match logix::read_tag(&mut message, &tag.path, 1) {
                        Ok(()) => {
                            self.steps[i] = WriteStep::LearningType;
                            if let Err(e) = link.submit(Request::Cip { message, write: false }, i as u32) {
                                self.steps[i] = WriteStep::Done(Err(e));
                            }
                        }
                        Err(e) => self.steps[i] = WriteStep::Done(Err(e)),
                    }
                }
            }
        }
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, link: &mut Submitter<'_, Framing>) {
        let i = index as usize;
        let Ok(tag) = &self.writes[i].0 else { return };
        let tag = tag.clone();
        let learning = matches!(self.steps[i], WriteStep::LearningType);
        let what = if learning { format!("read of '{}' (to learn its type)", tag.name) } else { Self::what(&tag) };
        let response = reply.and_then(|reply| {
            let response = reply.response()?;
            if response.status != status::SUCCESS && response.status != status::PARTIAL_TRANSFER {
                self.state.forget_on(response.status, response.ext_status);
            }
            let data = response.ok(&what)?;
            Ok(if learning { Some(logix::parse_read_reply(data)?.ty) } else { None })
        });
        match response {
            Err(e) => self.steps[i] = WriteStep::Done(Err(e)),
            Ok(Some(ty)) => {
                self.state.learn(&tag, ty);
                self.steps[i] = encode_write(&tag, ty, &self.writes[i].1);
                self.advance(i, link);
            }
            Ok(None) => match &self.steps[i] {
                WriteStep::Writing { data, sent, .. } if *sent < data.len() => self.advance(i, link),
                _ => self.steps[i] = WriteStep::Done(Ok(())),
            },
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        Outcome::Written(
            self.steps
                .into_iter()
                .map(|step| match step {
                    WriteStep::Done(result) => result,
                    WriteStep::Bad(e) => Err(e),
                    _ => Err(Error::proto("internal error: a write ended unfinished (please report it)")),
                })
                .collect(),
        )
    }
}

/// The encoded value of a write, ready to send (a bit write carries no data).
fn encode_write(tag: &LogixTag, ty: CipType, value: &Value) -> WriteStep {
    if tag.bit.is_some() {
        return WriteStep::Writing { ty, data: Vec::new(), count: 1, sent: 0 };
    }
    let mut data = Vec::new();
    match logix::encode_values(ty, value, &mut data) {
        Ok(count) if count != tag.count && (tag.range || count != 1) => WriteStep::Done(Err(Error::invalid_value(
            format!("'{}' takes {} element(s); the value has {count}", tag.text(), tag.count),
        ))),
        Ok(count) => {
            // A CIP STRING of odd length carries a pad byte.
            if ty == CipType::CipString && data.len() % 2 == 1 {
                data.push(0);
            }
            WriteStep::Writing { ty, data, count, sent: 0 }
        }
        Err(e) => WriteStep::Done(Err(Error::invalid_value(format!("{}: {}", WriteJob::what(tag), e.message)))),
    }
}

/// Symbol attributes a listing asks for: name, type word, dimensions.
const LISTED_ATTRIBUTES: [u16; 3] = [1, 2, 8];
/// Symbol type word bits: a structure, a system tag (never listed), array dimensions.
const STRUCTURE_BIT: u16 = 0x8000;
const SYSTEM_BIT: u16 = 0x1000;

/// Lists the Symbol object's instances (Get Instance Attribute List), page by
/// page: a reply that stops early (status 0x06) continues after its last instance.
struct BrowseJob {
    /// `Program:Main` when listing a program; its tags are named with it.
    scope: Option<String>,
    found: Vec<TagInfo>,
    error: Option<Error>,
}

impl BrowseJob {
    fn request(&mut self, start: u32, link: &mut Submitter<'_, Framing>) {
        let mut path = Vec::new();
        let built = match &self.scope {
            Some(program) => cip::symbolic(&mut path, program.as_bytes()),
            None => Ok(()),
        };
        cip::logical(&mut path, cip::Logical::Class, u32::from(cip::class::SYMBOL));
        cip::logical(&mut path, cip::Logical::Instance, start);
        let mut message = Vec::with_capacity(path.len() + 12);
        let built = built.and_then(|()| {
            cip::request(&mut message, service::GET_INSTANCE_ATTRIBUTE_LIST, &path, |out| {
                out.extend_from_slice(&(LISTED_ATTRIBUTES.len() as u16).to_le_bytes());
                for attribute in LISTED_ATTRIBUTES {
                    out.extend_from_slice(&attribute.to_le_bytes());
                }
            })
        });
        if let Err(e) = built.and_then(|()| link.submit(Request::Cip { message, write: false }, 0)) {
            self.error = Some(e);
        }
    }

    /// One page of the listing; returns the instance to continue from, if the page stopped early.
    fn page(&mut self, reply: Result<Reply>) -> Result<Option<u32>> {
        let reply = reply?;
        let response = reply.response()?;
        let what = format!("listing the tags of {}", self.scope.as_deref().unwrap_or("the controller"));
        let data = response.ok(&what)?;
        let mut r = crate::wire::Reader::new(data);
        let mut last = None;
        while r.remaining() > 0 {
            let instance = r.u32("a symbol's instance")?;
            let name_len = r.u16("a symbol name's length")?;
            let name = String::from_utf8_lossy(r.bytes(usize::from(name_len), "a symbol's name")?).into_owned();
            let type_word = r.u16("a symbol's type")?;
            let dims = [r.u32("a dimension")?, r.u32("a dimension")?, r.u32("a dimension")?];
            last = Some(instance);
            if type_word & SYSTEM_BIT != 0 && type_word != PROGRAM_TYPE || name.starts_with("__") {
                continue; // the controller's own
            }
            let count = usize::from((type_word >> 13) & 3);
            let name = match &self.scope {
                Some(program) => format!("{program}.{name}"),
                None => name,
            };
            self.found.push(TagInfo {
                name,
                data_type: symbol_type_name(type_word),
                dimensions: dims[..count].to_vec(),
            });
        }
        Ok(match (response.status, last) {
            (status::PARTIAL_TRANSFER, Some(last)) => Some(last + 1),
            (status::PARTIAL_TRANSFER, None) => {
                return Err(Error::proto(format!("{what}: a partial reply listed nothing")))
            }
            _ => None,
        })
    }
}

/// A program's entry in a controller's listing.
const PROGRAM_TYPE: u16 = 0x1068;

/// The type a symbol type word names.
fn symbol_type_name(type_word: u16) -> String {
    if type_word == PROGRAM_TYPE {
        return "PROGRAM".into();
    }
    if type_word & STRUCTURE_BIT != 0 {
        return CipType::Struct(type_word & 0x0FFF).name();
    }
    match CipType::from_code(type_word & 0x00FF, None) {
        Some(ty) => ty.name(),
        None => format!("type 0x{:03x}", type_word & 0x0FFF),
    }
}

impl Job<Framing> for BrowseJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        self.request(0, link);
    }

    fn reply(&mut self, _index: u32, reply: Result<Reply>, link: &mut Submitter<'_, Framing>) {
        match self.page(reply) {
            Ok(Some(next)) => self.request(next, link),
            Ok(None) => {}
            Err(e) => self.error = Some(e),
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        Outcome::Browsed(match self.error {
            Some(e) => Err(e),
            None => Ok(self.found),
        })
    }
}

/// Get Attributes All of the Identity object: who the controller says it is.
struct IdentityJob(Option<Result<TypedValue>>);

impl Job<Framing> for IdentityJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        let mut path = Vec::new();
        cip::logical(&mut path, cip::Logical::Class, u32::from(cip::class::IDENTITY));
        cip::logical(&mut path, cip::Logical::Instance, 1);
        let mut message = Vec::with_capacity(8);
        let sent = cip::request(&mut message, service::GET_ATTRIBUTES_ALL, &path, |_| {})
            .and_then(|()| link.submit(Request::Cip { message, write: false }, 0));
        if let Err(e) = sent {
            self.0 = Some(Err(e));
        }
    }

    fn reply(&mut self, _index: u32, reply: Result<Reply>, _link: &mut Submitter<'_, Framing>) {
        self.0 = Some(reply.and_then(|reply| {
            let response = reply.response()?;
            let mut r = crate::wire::Reader::new(response.ok("reading the Identity object")?);
            let unknown = std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
            Ok(identity_value(&crate::encap::identity_attributes(&mut r, 1, unknown)?))
        }));
    }

    fn finish(self: Box<Self>) -> Outcome {
        let unfinished = || Err(Error::proto("internal error: an identity read ended unfinished (please report it)"));
        Outcome::Values(vec![self.0.unwrap_or_else(unfinished)])
    }
}

/// An identity as a structure, its members named as JavaScript spells them.
fn identity_value(identity: &crate::encap::Identity) -> TypedValue {
    let number = |n: u32| TypedValue { value: Value::UInt(u64::from(n)), wide: false };
    let text = |s: String| TypedValue { value: Value::String(s), wide: false };
    let members = vec![
        ("vendorId".to_string(), number(identity.vendor_id.into())),
        ("deviceType".to_string(), number(identity.device_type.into())),
        ("productCode".to_string(), number(identity.product_code.into())),
        ("revision".to_string(), text(format!("{}.{}", identity.revision.0, identity.revision.1))),
        ("status".to_string(), number(identity.status.into())),
        ("serialNumber".to_string(), number(identity.serial_number)),
        ("productName".to_string(), text(identity.product_name.clone())),
    ];
    TypedValue { value: Value::Struct(members), wide: false }
}

/// The device's driver and state; its prepared plans hold it too.
type Core = DeviceCore<Framing, DeviceState>;

/// A connected Logix controller.
pub struct EnipDevice(Rc<Core>);

impl EnipDevice {
    pub fn new(driver: Box<dyn Driver<Framing>>, negotiated: Arc<Negotiated>) -> EnipDevice {
        let state = Arc::new(DeviceState { negotiated, learned: Mutex::default() });
        EnipDevice(Rc::new(DeviceCore::new(driver, state)))
    }
}

fn parse_tags(tags: &[String]) -> Arc<[std::result::Result<LogixTag, Error>]> {
    tags.iter().map(|text| LogixTag::parse(text)).collect()
}

impl bifrost_engine::Device for EnipDevice {
    fn read(&self, tags: &[String], timeout: Option<Duration>, done: Box<dyn Completion>) {
        let job = ReadJob::new(self.0.state.clone(), parse_tags(tags), Shape::Values);
        self.0.run(Box::new(job), timeout, done);
    }

    fn write(&self, writes: Vec<(String, Value)>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let writes: Vec<_> = writes.into_iter().map(|(text, value)| (LogixTag::parse(&text), value)).collect();
        let steps = writes
            .iter()
            .map(|(tag, _)| match tag {
                Ok(_) => WriteStep::LearningType,
                Err(e) => WriteStep::Bad(e.clone()),
            })
            .collect();
        self.0.run(Box::new(WriteJob { state: self.0.state.clone(), writes, steps }), timeout, done);
    }

    fn prepare(&self, tags: &[String]) -> Result<Box<dyn bifrost_engine::Plan>> {
        let parsed = parse_tags(tags);
        if let Some(Err(e)) = parsed.iter().find(|t| t.is_err()) {
            return Err(e.clone());
        }
        if let Some(Ok(tag)) = parsed.iter().find(|t| t.as_ref().is_ok_and(|t| t.object.is_some())) {
            return Err(Error::address(format!(
                "'{}' is an object's raw bytes, not numbers: read it with readTags",
                tag.name
            )));
        }
        Ok(Box::new(EnipPlan { device: self.0.clone(), tags: parsed }))
    }

    fn browse(&self, from: Option<&str>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let scope = from.map(str::trim).filter(|f| !f.is_empty()).map(str::to_string);
        if let Some(program) =
            scope.as_deref().filter(|p| !p.to_ascii_uppercase().starts_with("PROGRAM:") || p.contains('.'))
        {
            let error = Error::address(format!(
                "browse lists the controller's tags or a program's ('Program:Name'), not '{program}'"
            ));
            return done.complete(Outcome::Browsed(Err(error)));
        }
        self.0.run(Box::new(BrowseJob { scope, found: Vec::new(), error: None }), timeout, done);
    }

    fn identity(&self, timeout: Option<Duration>, done: Box<dyn Completion>) {
        self.0.run(Box::new(IdentityJob(None)), timeout, done);
    }

    fn stats(&self) -> Arc<Stats> {
        self.0.stats()
    }

    fn close(&self, done: Box<dyn Completion>) {
        self.0.close(done)
    }
}

/// Tags parsed once, read many times into columns.
struct EnipPlan {
    device: Rc<Core>,
    tags: Arc<[std::result::Result<LogixTag, Error>]>,
}

impl bifrost_engine::Plan for EnipPlan {
    fn read(&self, timeout: Option<Duration>, done: Box<dyn Completion>) {
        if self.device.is_closed() {
            let error = Error::closed("the device was closed");
            return done.complete(Outcome::Columns(Columns::failed(self.counts(), &error)));
        }
        let job = ReadJob::new(self.device.state.clone(), self.tags.clone(), Shape::Columns);
        self.device.run(Box::new(job), timeout, done);
    }

    fn value_count(&self) -> usize {
        self.counts().sum()
    }
}

impl EnipPlan {
    fn counts(&self) -> impl Iterator<Item = usize> + '_ {
        self.tags.iter().map(column_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_type_words_name_their_type() {
        assert_eq!(symbol_type_name(0x00C4), "DINT");
        assert_eq!(symbol_type_name(0x20C4), "DINT", "an array's type word names its element type");
        assert_eq!(symbol_type_name(0x05C1), "BOOL", "a BOOL's bit position does not change its type");
        assert_eq!(symbol_type_name(0x8FCE), "STRING");
        assert_eq!(symbol_type_name(0x82E9), "structure 0x02e9");
        assert_eq!(symbol_type_name(0x1068), "PROGRAM");
        assert_eq!(symbol_type_name(0x00EE), "type 0x0ee");
    }

    #[test]
    fn urls_parse_their_route_and_messaging() {
        let opening =
            Opening::from_url(DeviceUrl::parse("eip://10.0.0.5?path=1,0&request-timeout=500").unwrap()).unwrap();
        assert_eq!(opening.address, "10.0.0.5:44818");
        assert_eq!(opening.route, [1, 0]);
        assert!(opening.connect);
        assert_eq!(opening.link.request_timeout, Duration::from_millis(500));
        let direct = Opening::from_url(DeviceUrl::parse("eip://plc:2222?connected=false&path=").unwrap()).unwrap();
        assert_eq!((direct.address.as_str(), direct.route.len(), direct.connect), ("plc:2222", 0, false));
        let slot0 = Opening::from_url(DeviceUrl::parse("eip://plc").unwrap()).unwrap();
        assert_eq!(slot0.route, [1, 0], "backplane slot 0 by default");
        assert_eq!(slot0.keep_alive, Some(Duration::from_secs(30)));
        let quiet = Opening::from_url(DeviceUrl::parse("eip://plc?keep-alive=0").unwrap()).unwrap();
        assert_eq!(quiet.keep_alive, None);
        for bad in ["eip://", "eip://h?path=1", "eip://h?connected=maybe", "eip://h?nope=1", "modbus-tcp://h"] {
            assert!(Opening::from_url(DeviceUrl::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }
}
