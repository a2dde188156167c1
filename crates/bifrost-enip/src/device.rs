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
use crate::template::{self, Template, TemplateAttributes};
use crate::wire::put_u16;

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

/// What the device learned of the controller's tags: their types, symbols and
/// structure templates, kept until the controller may have changed (a
/// reconnect, or a refusal that says so).
#[derive(Default)]
struct Learned {
    /// The connection they were learned on.
    connection: u32,
    types: FxHashMap<Box<str>, CipType>,
    /// Each scope's symbols (`None`: the controller's), upper-case name to type word.
    symbols: FxHashMap<Option<Box<str>>, FxHashMap<Box<str>, u16>>,
    templates: FxHashMap<u16, Arc<Template>>,
}

impl Learned {
    fn forget(&mut self) {
        self.types.clear();
        self.symbols.clear();
        self.templates.clear();
    }
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
            learned.forget();
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
            self.learned().forget();
        }
    }

    /// The template a structure tag's values decode by, or what must be read first to know it.
    fn template_for(&self, tag: &LogixTag) -> Result<Resolved> {
        let learned = self.learned();
        let (scope, names) = tag.symbol_chain();
        let scope_key = scope.map(|s| s.to_ascii_uppercase().into_boxed_str());
        let Some(symbols) = learned.symbols.get(&scope_key) else {
            return Ok(Resolved::Needs(Needed::Symbols(scope.map(str::to_string))));
        };
        let (base, members) = names.split_first().ok_or_else(|| Error::address("no tag name"))?;
        let not_structure = |what: &str| Error::proto(format!("read of '{}': {what} is not a structure", tag.name));
        let type_word = *symbols.get(base.to_ascii_uppercase().as_str()).ok_or_else(|| {
            Error::proto(format!("read of '{}': '{base}' is not in the controller's tag list", tag.name))
        })?;
        let mut id = (type_word & template::STRUCTURE_BIT != 0)
            .then_some(type_word & 0x0FFF)
            .ok_or_else(|| not_structure(base))?;
        for member in members {
            let Some(template) = learned.templates.get(&id) else {
                return Ok(Resolved::Needs(Needed::Template(id)));
            };
            let found = template.member(member).ok_or_else(|| {
                Error::proto(format!("read of '{}': {} has no member '{member}'", tag.name, template.name))
            })?;
            id = found.structure().ok_or_else(|| not_structure(member))?;
        }
        // The template, and every template nested in it (each once: a template may name itself).
        let (mut pending, mut seen) = (vec![id], Vec::new());
        while let Some(next) = pending.pop() {
            if seen.contains(&next) {
                continue;
            }
            seen.push(next);
            match learned.templates.get(&next) {
                Some(template) => pending.extend(template.nested()),
                None => return Ok(Resolved::Needs(Needed::Template(next))),
            }
        }
        Ok(Resolved::Template(learned.templates[&id].clone()))
    }

    /// Keeps what a fetch read, for every read to come.
    fn keep(&self, needed: &Needed, step: FetchStep) -> Result<()> {
        let mut learned = self.learned();
        match (needed, step) {
            (Needed::Symbols(scope), FetchStep::Listing(found)) => {
                learned.symbols.insert(scope.as_deref().map(|s| s.to_ascii_uppercase().into_boxed_str()), found);
            }
            (Needed::Template(id), FetchStep::Definition(attributes, definition)) => {
                let template = Template::parse(*id, &attributes, &definition)?;
                learned.templates.insert(*id, Arc::new(template));
            }
            _ => {}
        }
        Ok(())
    }

    /// Values of `template` from `bytes`: one, or an array of `count` when `array`.
    fn decode_structures(&self, template: &Template, bytes: &[u8], count: usize, array: bool) -> Result<Value> {
        let learned = self.learned();
        let templates = |id: u16| learned.templates.get(&id).map(|t| &**t);
        let size = (template.size as usize).max(1);
        if bytes.len() < size * count {
            return Err(Error::proto(format!(
                "{count} {} values need {} bytes, the reply has {}",
                template.name,
                size * count,
                bytes.len()
            )));
        }
        let mut values =
            bytes.chunks_exact(size).take(count).map(|b| template.decode(b, &templates)).collect::<Result<Vec<_>>>()?;
        Ok(match (array, values.len()) {
            (false, 1) => values.pop().unwrap_or(Value::Int(0)),
            _ => Value::Array(values),
        })
    }
}

/// What reading a structure needs.
enum Resolved {
    Template(Arc<Template>),
    Needs(Needed),
}

/// What must be read from the controller before a structure decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Needed {
    /// A scope's symbols (`Program:Main`, or the controller's).
    Symbols(Option<String>),
    /// A template, by id.
    Template(u16),
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
    /// A structure's bytes, waiting for what decodes them; `retried` once its handle did not match.
    Resolving {
        handle: u16,
        bytes: Vec<u8>,
        retried: bool,
    },
    Failed(Error),
}

/// How a read addresses a tag's elements: as written, or (a BOOL array) by the
/// 32-bit words holding them, known to be one or guessed after a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addressing {
    AsWritten,
    Words,
    WordsGuessed,
}

impl Slot {
    fn is_waiting(&self) -> bool {
        matches!(self, Slot::Waiting)
    }
}

/// Reading what structures need: a scope's symbols page by page, or a template's
/// attributes and then its definition, in fragments. Each fetch has one request
/// in flight at a time, submitted with [`FETCH`] and its number as the index.
#[derive(Default)]
struct Fetches(Vec<Fetch>);

struct Fetch {
    needed: Needed,
    step: FetchStep,
}

enum FetchStep {
    Listing(FxHashMap<Box<str>, u16>),
    Attributes,
    Definition(TemplateAttributes, Vec<u8>),
    Done,
    Failed(Error),
    /// Ended before what it read was forgotten: read it again if needed.
    Stale,
}

/// The request index bit of a fetch's requests; the job's own use the bits below it.
const FETCH: u32 = 1 << 31;

impl Fetches {
    /// How reading `needed` went: `None` before it started, `Some(None)` while it runs.
    fn outcome(&self, needed: &Needed) -> Option<Option<Result<()>>> {
        let live = |f: &&Fetch| f.needed == *needed && !matches!(f.step, FetchStep::Stale);
        self.0.iter().find(live).map(|f| match &f.step {
            FetchStep::Done => Some(Ok(())),
            FetchStep::Failed(e) => Some(Err(e.clone())),
            _ => None,
        })
    }

    /// What ended was forgotten: it is read again when needed. Fetches keep their
    /// numbers, so replies to those still running find them.
    fn forget_ended(&mut self) {
        for fetch in &mut self.0 {
            if matches!(fetch.step, FetchStep::Done | FetchStep::Failed(_)) {
                fetch.step = FetchStep::Stale;
            }
        }
    }

    /// Starts reading `needed`, unless it was started.
    fn start(&mut self, needed: Needed, link: &mut Submitter<'_, Framing>) {
        if self.outcome(&needed).is_some() {
            return;
        }
        let step = match needed {
            Needed::Symbols(_) => FetchStep::Listing(FxHashMap::default()),
            Needed::Template(_) => FetchStep::Attributes,
        };
        self.0.push(Fetch { needed, step });
        self.send(self.0.len() - 1, 0, link);
    }

    /// Sends fetch `i`'s next request: a listing page from instance `at`, or a
    /// template's attributes, or its definition from byte `at`.
    fn send(&mut self, i: usize, at: u32, link: &mut Submitter<'_, Framing>) {
        let mut message = Vec::with_capacity(32);
        let built = match (&self.0[i].needed, &self.0[i].step) {
            (Needed::Symbols(scope), _) => listing_request(&mut message, scope.as_deref(), at),
            (Needed::Template(id), FetchStep::Definition(attributes, _)) => {
                let count = attributes.definition_len().saturating_sub(at as usize).min(usize::from(u16::MAX));
                template::read_request(&mut message, *id, at, count as u16)
            }
            (Needed::Template(id), _) => template::attributes_request(&mut message, *id),
        };
        if let Err(e) = built.and_then(|()| link.submit(Request::Cip { message, write: false }, FETCH | i as u32)) {
            self.0[i].step = FetchStep::Failed(e);
        }
    }

    /// A reply to a fetch's request; `true` when the fetch ended (what it read
    /// kept in `state` for every read to come, or failed).
    fn reply(
        &mut self,
        index: u32,
        reply: Result<Reply>,
        state: &DeviceState,
        link: &mut Submitter<'_, Framing>,
    ) -> bool {
        let i = (index & !FETCH) as usize;
        let Some(fetch) = self.0.get(i) else { return false };
        let what = match &fetch.needed {
            Needed::Symbols(scope) => format!("listing the tags of {}", scope.as_deref().unwrap_or("the controller")),
            Needed::Template(id) => format!("reading structure template {id:#x}"),
        };
        let step = std::mem::replace(&mut self.0[i].step, FetchStep::Done);
        let next = reply.and_then(|reply| {
            let response = reply.response()?;
            let data = response.ok(&what)?;
            let partial = response.status == status::PARTIAL_TRANSFER;
            Ok(match step {
                FetchStep::Listing(mut found) => {
                    let (symbols, more) = parse_listing(data, partial, &what)?;
                    found.extend(
                        symbols.into_iter().map(|s| (s.name.to_ascii_uppercase().into_boxed_str(), s.type_word)),
                    );
                    (FetchStep::Listing(found), more)
                }
                FetchStep::Attributes => {
                    (FetchStep::Definition(template::parse_attributes(data)?, Vec::new()), Some(0))
                }
                FetchStep::Definition(attributes, mut definition) => {
                    definition.extend_from_slice(data);
                    let more = (partial && !data.is_empty()).then_some(definition.len() as u32);
                    (FetchStep::Definition(attributes, definition), more)
                }
                FetchStep::Done | FetchStep::Failed(_) | FetchStep::Stale => (step, None),
            })
        });
        let ended = match next {
            Ok((step, Some(at))) => {
                self.0[i].step = step;
                self.send(i, at, link);
                return matches!(self.0[i].step, FetchStep::Failed(_));
            }
            Ok((step, None)) => state.keep(&self.0[i].needed, step),
            Err(e) => Err(e),
        };
        self.0[i].step = match ended {
            Ok(()) => FetchStep::Done,
            Err(e) => FetchStep::Failed(e),
        };
        true
    }
}

struct ReadJob {
    state: Arc<DeviceState>,
    tags: Arc<[std::result::Result<LogixTag, Error>]>,
    /// Each tag's type as the job started; a reply of another type teaches the device.
    known: Vec<Option<CipType>>,
    slots: Vec<Slot>,
    /// The tags each submitted request reads, by request index.
    requests: Vec<Vec<usize>>,
    /// What structures read need, being read or read.
    fetches: Fetches,
    /// Each tag's addressing, when any is not as written (empty: all are).
    addressing: Vec<Addressing>,
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
        ReadJob {
            state,
            tags,
            known,
            slots,
            requests: Vec::new(),
            fetches: Fetches::default(),
            addressing: Vec::new(),
            shape,
            columns,
        }
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

    /// Decodes a structure tag's bytes once its template is known; else reads what it needs first.
    fn resolve(&mut self, tag: usize, handle: u16, bytes: Vec<u8>, retried: bool, link: &mut Submitter<'_, Framing>) {
        let tags = self.tags.clone();
        let Ok(read) = &tags[tag] else { return };
        let resolved = match self.state.template_for(read) {
            Ok(resolved) => resolved,
            Err(e) => return self.slots[tag] = Slot::Failed(e),
        };
        let needed = match resolved {
            Resolved::Template(template) if template.handle == handle => {
                let decoded = self.state.decode_structures(&template, &bytes, usize::from(read.count), read.range);
                self.slots[tag] = match decoded {
                    Ok(value) => Slot::Read(Some(TypedValue { value, wide: false })),
                    Err(e) => Slot::Failed(e),
                };
                return;
            }
            Resolved::Template(template) => {
                // Never decoded by a template that is not the value's: the program changed.
                self.state.learned().forget();
                if retried {
                    let message = format!(
                        "read of '{}': its structure handle 0x{handle:04x} is not its template's (0x{:04x})",
                        read.text(),
                        template.handle
                    );
                    return self.slots[tag] = Slot::Failed(Error::proto(message));
                }
                self.fetches.forget_ended();
                return self.resolve(tag, handle, bytes, true, link);
            }
            Resolved::Needs(needed) => needed,
        };
        match self.fetches.outcome(&needed) {
            Some(Some(Err(e))) => self.slots[tag] = Slot::Failed(e),
            // Read, then forgotten (a refusal of another tag said the program changed): once more.
            Some(Some(Ok(()))) if !retried => {
                self.fetches.forget_ended();
                self.resolve(tag, handle, bytes, true, link);
            }
            Some(Some(Ok(()))) => {
                let message = format!("read of '{}': the controller changed while its structure was read", read.text());
                self.slots[tag] = Slot::Failed(Error::proto(message));
            }
            Some(None) => self.slots[tag] = Slot::Resolving { handle, bytes, retried },
            None => {
                self.slots[tag] = Slot::Resolving { handle, bytes, retried };
                self.fetches.start(needed.clone(), link);
                // A fetch that could not even be sent has ended already.
                if let Some(Some(Err(e))) = self.fetches.outcome(&needed) {
                    self.slots[tag] = Slot::Failed(e);
                }
            }
        }
    }

    /// A fetch ended: the structures waiting go on (or fail with it).
    fn fetched(&mut self, link: &mut Submitter<'_, Framing>) {
        for tag in 0..self.slots.len() {
            if let Slot::Resolving { .. } = self.slots[tag] {
                if let Slot::Resolving { handle, bytes, retried } =
                    std::mem::replace(&mut self.slots[tag], Slot::Waiting)
                {
                    self.resolve(tag, handle, bytes, retried, link);
                }
            }
        }
    }

    /// Reads `tag` alone with Read Tag Fragmented from byte `offset`.
    fn continue_fragmented(&mut self, tag: usize, offset: usize, link: &mut Submitter<'_, Framing>) {
        let tags = self.tags.clone();
        let Ok(read) = &tags[tag] else { return };
        let mut message = Vec::with_capacity(read.path.len() + 8);
        let built = match self.words_of(tag, read) {
            Some((path, words)) => logix::read_tag_fragmented(&mut message, &path, words, offset as u32),
            None => logix::read_tag_fragmented(&mut message, &read.path, read.count, offset as u32),
        };
        match built {
            Ok(()) => self.submit(message, vec![tag], link),
            Err(e) => self.slots[tag] = Slot::Failed(e),
        }
    }

    fn addressing(&self, tag: usize) -> Addressing {
        self.addressing.get(tag).copied().unwrap_or(Addressing::AsWritten)
    }

    fn set_addressing(&mut self, tag: usize, addressing: Addressing) {
        if self.addressing.len() <= tag {
            self.addressing.resize(self.tags.len(), Addressing::AsWritten);
        }
        self.addressing[tag] = addressing;
    }

    /// A BOOL array tag read by words: the path to its first word, and how many words.
    fn words_of(&self, tag: usize, read: &LogixTag) -> Option<(Vec<u8>, u16)> {
        if self.addressing(tag) == Addressing::AsWritten {
            return None;
        }
        let (word, _, words) = read.bool_array_span()?;
        Some((read.word_path(word)?, words))
    }

    /// Whether a tag of type `ty` is an element (or range) of a BOOL array, read by its words.
    fn is_bool_array_element(ty: Option<CipType>, read: &LogixTag) -> bool {
        ty == Some(CipType::Dword) && read.bit.is_none() && read.last_index.is_some()
    }

    /// One tag's reply (alone, or from inside a Multiple Service Packet).
    fn take_reply(
        &mut self,
        tag: usize,
        response: Result<Response<'_>>,
        packed: bool,
        link: &mut Submitter<'_, Framing>,
    ) {
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
        if packed
            && matches!(&response, Ok(r) if r.status == status::REPLY_DATA_TOO_LARGE && self.slots[tag].is_waiting())
        {
            // Its reply did not fit beside the others': read it alone, in fragments if need be.
            return self.continue_fragmented(tag, 0, link);
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
        let as_written = self.addressing(tag) == Addressing::AsWritten && self.slots[tag].is_waiting();
        let (partial, TagData { ty, data }) = match result {
            Ok(reply) => reply,
            Err(e)
                if as_written && self.known[tag].is_none() && e.cip.is_some_and(|c| c.ext_status == Some(0x2105)) =>
            {
                // Past the end as written: a BOOL array's element is addressed by its word. Try that.
                if Self::is_bool_array_element(Some(CipType::Dword), read) {
                    self.set_addressing(tag, Addressing::WordsGuessed);
                    return self.continue_fragmented(tag, 0, link);
                }
                return self.slots[tag] = Slot::Failed(e);
            }
            Err(e) => return self.slots[tag] = Slot::Failed(e),
        };
        if as_written && Self::is_bool_array_element(Some(ty), read) {
            // A BOOL array: the index named a word, not the element. Read the element's word.
            self.known[tag] = Some(ty);
            self.state.learn(read, ty);
            self.set_addressing(tag, Addressing::Words);
            return self.continue_fragmented(tag, 0, link);
        }
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
            _ => self.complete(tag, read, ty, data, link),
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
            return self.complete(tag, read, ty, &bytes, link);
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
    fn complete(&mut self, tag: usize, read: &LogixTag, ty: CipType, bytes: &[u8], link: &mut Submitter<'_, Framing>) {
        if self.addressing(tag) != Addressing::AsWritten {
            return self.complete_bool_array(tag, read, ty, bytes);
        }
        if let (Shape::Values, CipType::Struct(handle), None) = (self.shape, ty, read.bit) {
            if handle != logix::LOGIX_STRING_HANDLE {
                return self.resolve(tag, handle, bytes.to_vec(), false, link);
            }
        }
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

    /// Decodes the BOOLs of a BOOL array's words: into a value, or into columns.
    fn complete_bool_array(&mut self, tag: usize, read: &LogixTag, ty: CipType, bytes: &[u8]) {
        let what = || format!("read of '{}'", read.text());
        let bits = match (ty, read.bool_array_span()) {
            (CipType::Dword, Some((_, first, _))) => {
                let bit =
                    |k: usize| bytes.get((first as usize + k) / 8).map(|b| b >> ((first as usize + k) % 8) & 1 == 1);
                (0..usize::from(read.count))
                    .map(bit)
                    .collect::<Option<Vec<bool>>>()
                    .ok_or_else(|| Error::proto(format!("{}: the reply is short", what())))
            }
            // Guessed a BOOL array after "past the end": it was not one, so the end it was.
            _ if self.addressing(tag) == Addressing::WordsGuessed => {
                Err(cip::status_error(status::GENERAL_ERROR, Some(0x2105), &what()))
            }
            _ => Err(Error::proto(format!("{}: a BOOL array became a {}", what(), ty.name()))),
        };
        self.slots[tag] = match (bits, self.shape) {
            (Err(e), Shape::Columns) => {
                let range = self.columns.offsets[tag] as usize..self.columns.offsets[tag + 1] as usize;
                self.columns.values[range].fill(f64::NAN);
                Slot::Failed(e)
            }
            (Err(e), Shape::Values) => Slot::Failed(e),
            (Ok(bits), Shape::Columns) => {
                let at = self.columns.offsets[tag] as usize;
                for (k, on) in bits.into_iter().enumerate() {
                    self.columns.values[at + k] = f64::from(u8::from(on));
                }
                Slot::Read(None)
            }
            (Ok(mut bits), Shape::Values) => Slot::Read(Some(TypedValue {
                value: match (read.range, bits.len()) {
                    (false, 1) => Value::Bool(bits.pop().unwrap_or(false)),
                    _ => Value::Array(bits.into_iter().map(Value::Bool).collect()),
                },
                wide: false,
            })),
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
                None if Self::is_bool_array_element(self.known[i], tag) => {
                    self.set_addressing(i, Addressing::Words);
                    match self.words_of(i, tag) {
                        Some((path, words)) => logix::read_tag(&mut scratch, &path, words),
                        None => logix::read_tag(&mut scratch, &tag.path, tag.count),
                    }
                }
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
        if index & FETCH != 0 {
            if self.fetches.reply(index, reply, &self.state, link) {
                self.fetched(link);
            }
            return;
        }
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
                return self.take_reply(*tag, Ok(*response), false, link);
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
                    self.take_reply(tag, Response::parse(reply), true, link);
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
                        Slot::Waiting | Slot::Partial(..) | Slot::Resolving { .. } => unfinished(),
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
        let built = if ReadJob::is_bool_array_element(Some(ty), &tag) {
            // One Read-Modify-Write per word: (word, or mask, and mask), 12 bytes each.
            let word = |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            let (index, or_mask, and_mask) = (word(sent), word(sent + 4), word(sent + 8));
            match tag.word_path(index) {
                Some(path) => {
                    logix::read_modify_write(&mut message, &path, 4, or_mask.into(), and_mask.into()).map(|()| 12)
                }
                None => Err(Error::address(format!("'{}' is not an element of a BOOL array", tag.name))),
            }
        } else if let Some(bit) = tag.bit {
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
                    // The type comes from the controller: read its first element first (a BOOL
                    // array's index names a word, which may be past its end).
                    let mut message = Vec::new();
                    match logix::read_tag(&mut message, &tag.first_element_path(), 1) {
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

/// The encoded value of a write, ready to send (a bit write carries no data; a
/// BOOL array's elements, the words to change and how).
fn encode_write(tag: &LogixTag, ty: CipType, value: &Value) -> WriteStep {
    if tag.bit.is_some() {
        return WriteStep::Writing { ty, data: Vec::new(), count: 1, sent: 0 };
    }
    if ReadJob::is_bool_array_element(Some(ty), tag) {
        return encode_bool_array_write(tag, value);
    }
    if let CipType::Struct(handle) = ty {
        if handle != logix::LOGIX_STRING_HANDLE {
            let message = format!("'{}' is a structure: write its members ('{}.Member')", tag.text(), tag.name);
            return WriteStep::Done(Err(Error::invalid_value(message)));
        }
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

/// BOOL array elements as Read-Modify-Writes of the words holding them, so the
/// other BOOLs are never written: per word, its index and its or and and masks.
fn encode_bool_array_write(tag: &LogixTag, value: &Value) -> WriteStep {
    let bad = |why: String| WriteStep::Done(Err(Error::invalid_value(format!("{}: {why}", WriteJob::what(tag)))));
    let Some((first_word, first_bit, _)) = tag.bool_array_span() else {
        return bad("not an element of a BOOL array".into());
    };
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    if items.len() != usize::from(tag.count) || (!tag.range && items.len() != 1) {
        return bad(format!("it takes {} BOOL(s); the value has {}", tag.count, items.len()));
    }
    let mut words: Vec<(u32, u32, u32)> = Vec::new();
    for (k, item) in items.into_iter().enumerate() {
        let on = match item {
            Value::Bool(on) => *on,
            Value::Int(0) | Value::UInt(0) => false,
            Value::Int(1) | Value::UInt(1) => true,
            Value::Float(f) if *f == 0.0 || *f == 1.0 => *f == 1.0,
            other => return bad(format!("{other:?} is not a BOOL")),
        };
        let bit = first_bit as usize + k;
        let word = first_word + (bit / 32) as u32;
        if words.last().is_none_or(|w| w.0 != word) {
            words.push((word, 0, u32::MAX));
        }
        let mask = 1u32 << (bit % 32);
        let last = words.last_mut().expect("pushed above");
        if on {
            last.1 |= mask;
        } else {
            last.2 &= !mask;
        }
    }
    let data = words
        .iter()
        .flat_map(|(w, or, and)| [w.to_le_bytes(), or.to_le_bytes(), and.to_le_bytes()])
        .flatten()
        .collect();
    WriteStep::Writing { ty: CipType::Dword, data, count: tag.count, sent: 0 }
}

/// Symbol attributes a listing asks for: name, type word, dimensions.
const LISTED_ATTRIBUTES: [u16; 3] = [1, 2, 8];
/// Symbol type word bit: a system tag (never listed).
const SYSTEM_BIT: u16 = 0x1000;

/// Get Instance Attribute List on the Symbol object of `scope` (a program, or
/// the controller), from instance `start` on.
fn listing_request(out: &mut Vec<u8>, scope: Option<&str>, start: u32) -> Result<()> {
    let mut path = Vec::new();
    if let Some(program) = scope {
        cip::symbolic(&mut path, program.as_bytes())?;
    }
    cip::logical(&mut path, cip::Logical::Class, u32::from(cip::class::SYMBOL));
    cip::logical(&mut path, cip::Logical::Instance, start);
    cip::request(out, service::GET_INSTANCE_ATTRIBUTE_LIST, &path, |out| {
        put_u16(out, LISTED_ATTRIBUTES.len() as u16);
        LISTED_ATTRIBUTES.iter().for_each(|&attribute| put_u16(out, attribute));
    })
}

/// One symbol of a listing.
struct ListedSymbol {
    name: String,
    type_word: u16,
    dimensions: [u32; 3],
}

/// One page of a listing, and the instance to continue from when it stopped early (`partial`).
fn parse_listing(data: &[u8], partial: bool, what: &str) -> Result<(Vec<ListedSymbol>, Option<u32>)> {
    let mut r = crate::wire::Reader::new(data);
    let (mut symbols, mut last) = (Vec::new(), None);
    while r.remaining() > 0 {
        let instance = r.u32("a symbol's instance")?;
        let name_len = r.u16("a symbol name's length")?;
        let name = String::from_utf8_lossy(r.bytes(usize::from(name_len), "a symbol's name")?).into_owned();
        let type_word = r.u16("a symbol's type")?;
        let dimensions = [r.u32("a dimension")?, r.u32("a dimension")?, r.u32("a dimension")?];
        last = Some(instance);
        symbols.push(ListedSymbol { name, type_word, dimensions });
    }
    let more = match (partial, last) {
        (true, Some(last)) => Some(last + 1),
        (true, None) => return Err(Error::proto(format!("{what}: a partial reply listed nothing"))),
        (false, _) => None,
    };
    Ok((symbols, more))
}

/// Lists the Symbol object's instances (Get Instance Attribute List), page by
/// page: a reply that stops early (status 0x06) continues after its last instance.
/// Structure types are named by their templates, read once listed (and kept).
struct BrowseJob {
    state: Arc<DeviceState>,
    /// `Program:Main` when listing a program; its tags are named with it.
    scope: Option<String>,
    /// Each tag, with its type word.
    found: Vec<(TagInfo, u16)>,
    /// The templates of the structure types listed.
    fetches: Fetches,
    error: Option<Error>,
}

impl BrowseJob {
    fn request(&mut self, start: u32, link: &mut Submitter<'_, Framing>) {
        let mut message = Vec::with_capacity(32);
        let sent = listing_request(&mut message, self.scope.as_deref(), start)
            .and_then(|()| link.submit(Request::Cip { message, write: false }, 0));
        if let Err(e) = sent {
            self.error = Some(e);
        }
    }

    /// One page of the listing; returns the instance to continue from, if the page stopped early.
    fn page(&mut self, reply: Result<Reply>) -> Result<Option<u32>> {
        let reply = reply?;
        let response = reply.response()?;
        let what = format!("listing the tags of {}", self.scope.as_deref().unwrap_or("the controller"));
        let data = response.ok(&what)?;
        let (symbols, more) = parse_listing(data, response.status == status::PARTIAL_TRANSFER, &what)?;
        for ListedSymbol { name, type_word, dimensions } in symbols {
            if type_word & SYSTEM_BIT != 0 && type_word != PROGRAM_TYPE || name.starts_with("__") {
                continue; // the controller's own
            }
            let count = usize::from((type_word >> 13) & 3);
            let name = match &self.scope {
                Some(program) => format!("{program}.{name}"),
                None => name,
            };
            let info = TagInfo {
                name,
                data_type: symbol_type_name(type_word),
                dimensions: dimensions[..count].to_vec(),
                display_name: None,
            };
            self.found.push((info, type_word));
        }
        Ok(more)
    }
}

/// A program's entry in a controller's listing.
const PROGRAM_TYPE: u16 = 0x1068;

/// The type a symbol type word names.
fn symbol_type_name(type_word: u16) -> String {
    if type_word == PROGRAM_TYPE {
        return "PROGRAM".into();
    }
    if type_word & template::STRUCTURE_BIT != 0 {
        return CipType::Struct(type_word & 0x0FFF).name();
    }
    if type_word & 0x00FF == CipType::Dword.code() {
        return "BOOL".into(); // a BOOL array, held in 32-bit words
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

    fn reply(&mut self, index: u32, reply: Result<Reply>, link: &mut Submitter<'_, Framing>) {
        if index & FETCH != 0 {
            // A template that cannot be read leaves its type unnamed, the listing whole.
            self.fetches.reply(index, reply, &self.state, link);
            return;
        }
        match self.page(reply) {
            Ok(Some(next)) => self.request(next, link),
            Ok(None) => {
                let known = self.state.learned().templates.keys().copied().collect::<Vec<u16>>();
                for &(_, type_word) in &self.found {
                    let id = type_word & 0x0FFF;
                    if type_word & template::STRUCTURE_BIT != 0
                        && id != logix::LOGIX_STRING_HANDLE
                        && !known.contains(&id)
                    {
                        self.fetches.start(Needed::Template(id), link);
                    }
                }
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        if let Some(e) = self.error {
            return Outcome::Browsed(Err(e));
        }
        let learned = self.state.learned();
        let name = |(mut info, type_word): (TagInfo, u16)| {
            if type_word & template::STRUCTURE_BIT != 0 {
                if let Some(template) = learned.templates.get(&(type_word & 0x0FFF)) {
                    info.data_type = template.name.clone();
                }
            }
            info
        };
        Outcome::Browsed(Ok(self.found.into_iter().map(name).collect()))
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
        let job = BrowseJob {
            state: self.0.state.clone(),
            scope,
            found: Vec::new(),
            fetches: Fetches::default(),
            error: None,
        };
        self.0.run(Box::new(job), timeout, done);
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
        assert_eq!(symbol_type_name(0x20D3), "BOOL", "a BOOL array is listed as its words");
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
