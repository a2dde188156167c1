//! The EtherNet/IP simulator: a Logix-like controller over TCP (sessions,
//! Forward Open and Large Forward Open, connected and unconnected messaging,
//! Unconnected Send, Multiple Service Packets, Read/Write Tag and their
//! fragmented forms, Read-Modify-Write, the Identity, Symbol and Template
//! objects, structure types and their members) and ListIdentity over UDP, with
//! the fault injection every simulator has. Element `i` of a numeric tag starts
//! at `i`; BOOL element `i` at `i % 2 == 1`; structures zeroed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bifrost_core::{Error, Result};
use bytes::BytesMut;
use tokio::net::{TcpStream, UdpSocket};

pub use bifrost_engine::listener::{Faults, Simulator, SimulatorStats};

use crate::cip::{self, service, status};
use crate::encap::{self, command, Header, Identity, HEADER_LEN};
use crate::logix::{self, CipType, LOGIX_STRING_HANDLE};
use crate::template::{Member, Template};
use crate::wire::{put_u16, put_u32, Reader};

/// One tag of the simulated controller: `NAME=TYPE` or `NAME=TYPE[count]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSpec {
    pub name: String,
    pub ty: CipType,
    /// Elements; a scalar has one.
    pub count: usize,
    /// Bytes of one element (a structure's size; 0 for a CIP STRING, held as its text).
    pub size: usize,
}

/// Largest array the simulator holds.
const MAX_ELEMENTS: usize = 1 << 20;

/// An atomic type or STRING by name; `None` for anything else.
fn named_type(name: &str) -> Option<CipType> {
    Some(match name.to_ascii_uppercase().as_str() {
        "BOOL" => CipType::Bool,
        "SINT" => CipType::Sint,
        "INT" => CipType::Int,
        "DINT" => CipType::Dint,
        "LINT" => CipType::Lint,
        "USINT" => CipType::Usint,
        "UINT" => CipType::Uint,
        "UDINT" => CipType::Udint,
        "ULINT" => CipType::Ulint,
        "REAL" => CipType::Real,
        "LREAL" => CipType::Lreal,
        "STRING" => CipType::Struct(LOGIX_STRING_HANDLE),
        _ => return None,
    })
}

/// `TYPE` or `TYPE[count]`: the type's name and the count (1 without brackets).
fn split_count(text: &str, most: usize) -> Option<(&str, usize)> {
    let text = text.trim();
    match text.strip_suffix(']') {
        Some(head) => {
            let (ty, count) = head.split_once('[')?;
            let count = count.trim().parse::<usize>().ok().filter(|c| (1..=most).contains(c))?;
            Some((ty.trim(), count))
        }
        None => Some((text, 1)),
    }
}

impl TagSpec {
    /// Parses `SCADA=INT[1000]`, `Temp=REAL`, `Name=STRING` (the Logix STRING) or
    /// `Note=CIP_STRING` (the generic CIP STRING).
    pub fn parse(spec: &str) -> Result<TagSpec> {
        TagSpec::parse_with(spec, &[])
    }

    /// As [`TagSpec::parse`], where a type may also be one of `udts` (`Recipes=RECIPE[3]`).
    pub fn parse_with(spec: &str, udts: &[Template]) -> Result<TagSpec> {
        let bad =
            |why: &str| Error::invalid_value(format!("bad tag '{spec}': {why} (as in SCADA=INT[1000] or Temp=REAL)"));
        let (name, ty) = spec.split_once('=').ok_or_else(|| bad("no '='"))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.') {
            return Err(bad("the name must be letters, digits, '_', ':' and '.'"));
        }
        let (ty, count) = split_count(ty, MAX_ELEMENTS).ok_or_else(|| bad("the element count must be 1 to 1048576"))?;
        if ty.eq_ignore_ascii_case("CIP_STRING") {
            return match count {
                1 => Ok(TagSpec { name: name.to_string(), ty: CipType::CipString, count, size: 0 }),
                _ => Err(bad("CIP_STRING tags are scalars")),
            };
        }
        let (ty, size) = match (named_type(ty), udts.iter().find(|udt| udt.name.eq_ignore_ascii_case(ty))) {
            // A BOOL array is held in 32-bit words, as Logix holds it: BOOL[40] is two.
            (Some(CipType::Bool), _) if count > 1 => {
                return Ok(TagSpec { name: name.to_string(), ty: CipType::Dword, count: count.div_ceil(32), size: 4 });
            }
            (Some(atomic), _) => (atomic, atomic.element_size().unwrap_or(1)),
            (None, Some(udt)) => (CipType::Struct(udt.handle), udt.size as usize),
            (None, None) => return Err(bad(&format!("unknown type '{}'", ty.to_ascii_uppercase()))),
        };
        Ok(TagSpec { name: name.to_string(), ty, count, size })
    }
}

/// Template ids the simulator gives its structure types, from the first user-defined one on.
const FIRST_UDT: u16 = 0x100;

/// The predefined Logix STRING's template, as pycomm3 and others read it.
fn logix_string_template() -> Template {
    let member = |name: &str, info, type_word, offset| Member { name: name.into(), info, type_word, offset };
    Template {
        id: LOGIX_STRING_HANDLE,
        name: "ASCIISTRING82".into(),
        handle: LOGIX_STRING_HANDLE,
        size: logix::LOGIX_STRING_SIZE as u32,
        members: vec![member("LEN", 0, 0xC4, 0), member("DATA", 82, 0x20C2, 4)],
    }
}

/// Parses a structure type, `RECIPE=Temp:REAL,Steps:INT[4],Active:BOOL,Name:STRING`,
/// whose members may be structures defined before it (`known`), and lays it out
/// as Logix does: each member aligned to its size, consecutive BOOLs packed into
/// hidden SINT hosts, the whole a multiple of 4 (8 with 64-bit members).
pub fn parse_udt(spec: &str, known: &[Template]) -> Result<Template> {
    let bad = |why: &str| {
        Error::invalid_value(format!("bad structure type '{spec}': {why} (as in RECIPE=Temp:REAL,Steps:INT[4])"))
    };
    let (name, members) = spec.split_once('=').ok_or_else(|| bad("no '='"))?;
    let name = name.trim().to_ascii_uppercase();
    let identifier = |n: &str| {
        n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !identifier(&name) || named_type(&name).is_some() || known.iter().any(|t| t.name == name) {
        return Err(bad("the type's name must be a new identifier"));
    }
    let mut template =
        Template { id: FIRST_UDT + known.len() as u16, name: name.clone(), handle: 0, size: 0, members: Vec::new() };
    let (mut offset, mut align_all) = (0u32, 4u32);
    // The hidden host of the BOOLs being packed, and the next bit in it.
    let mut host: Option<(u32, u16)> = None;
    let mut hosts = 0;
    for member in members.split(',') {
        let (member_name, ty) = member.split_once(':').ok_or_else(|| bad(&format!("member '{member}' has no ':'")))?;
        let member_name = member_name.trim();
        if !identifier(member_name) || template.member(member_name).is_some() {
            return Err(bad(&format!("'{member_name}' is not a new member name")));
        }
        let (ty, count) = split_count(ty, 0xFFFF).ok_or_else(|| bad("an array's count must be 1 to 65535"))?;
        // An array member's type word says one dimension.
        let array = if member.trim_end().ends_with(']') { 0x2000 } else { 0 };
        if named_type(ty) == Some(CipType::Bool) && array == 0 {
            let (at, bit) = match host {
                Some((at, bit)) if bit < 8 => (at, bit),
                _ => {
                    let at = offset;
                    let hidden = format!("ZZZZZZZZZZ{name}{hosts}");
                    template.members.push(Member { name: hidden, info: 0, type_word: 0xC2, offset: at });
                    hosts += 1;
                    offset += 1;
                    (at, 0)
                }
            };
            template.members.push(Member { name: member_name.into(), info: bit, type_word: 0xC1, offset: at });
            host = Some((at, bit + 1));
            continue;
        }
        host = None;
        let (type_word, size, align) = match (named_type(ty), known.iter().find(|t| t.name.eq_ignore_ascii_case(ty))) {
            (Some(CipType::Bool), _) => return Err(bad("BOOL arrays in structures are not simulated")),
            (Some(CipType::Struct(handle)), _) => (0x8000 | handle, logix::LOGIX_STRING_SIZE as u32, 4),
            (Some(atomic), _) => {
                let size = atomic.element_size().unwrap_or(1) as u32;
                (atomic.code(), size, size)
            }
            (None, Some(nested)) => (0x8000 | nested.id, nested.size, 4),
            (None, None) => return Err(bad(&format!("unknown type '{ty}' (structures must be defined first)"))),
        };
        // Arrays start on a 4-byte boundary, as Logix lays them out.
        let align = if array != 0 { align.max(4) } else { align };
        align_all = align_all.max(align);
        offset = offset.next_multiple_of(align);
        let info = if array != 0 { count as u16 } else { 0 };
        template.members.push(Member { name: member_name.into(), info, type_word: type_word | array, offset });
        offset += size * count as u32;
    }
    template.size = offset.next_multiple_of(align_all).max(4);
    // A handle that changes with the layout, as a controller's does; never the STRING's.
    let mut definition = Vec::new();
    template.write_definition(&mut definition);
    let hash = definition.iter().fold(0x811C_9DC5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    template.handle = match (hash ^ (hash >> 16)) as u16 {
        LOGIX_STRING_HANDLE => LOGIX_STRING_HANDLE + 1,
        handle => handle,
    };
    Ok(template)
}

/// What the simulator serves.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub tags: Vec<TagSpec>,
    /// Structure types ([`parse_udt`]) the tags may be of.
    pub udts: Vec<Template>,
    pub faults: Faults,
    /// Every Nth request, the controller drops the CIP connections of that TCP
    /// connection first, as a program download does; connected messages on them
    /// then go unanswered (0: never).
    pub drop_connections_every: u64,
    /// The largest connection a Forward Open gets (a larger one is refused, naming
    /// this size); at most 511, the Large Forward Open is not supported; 0, no
    /// connection at all (unconnected messaging only).
    pub max_connection_size: u16,
}

/// A Logix controller's largest connection.
pub const MAX_CONNECTION_SIZE: u16 = 4002;

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            tags: Vec::new(),
            udts: Vec::new(),
            faults: Faults::default(),
            drop_connections_every: 0,
            max_connection_size: MAX_CONNECTION_SIZE,
        }
    }
}

/// A tag's elements, little-endian as on the wire (a CIP STRING as its text).
struct TagStore {
    ty: CipType,
    count: usize,
    /// Bytes of one element.
    size: usize,
    data: Mutex<Vec<u8>>,
}

impl TagStore {
    fn new(spec: &TagSpec) -> TagStore {
        let mut data = Vec::with_capacity(spec.size * spec.count);
        match spec.ty {
            CipType::CipString => {} // held as its text: starts empty
            CipType::Struct(handle) if handle != LOGIX_STRING_HANDLE => data.resize(spec.size * spec.count, 0),
            ty => {
                for i in 0..spec.count {
                    let value = match ty {
                        CipType::Bool => bifrost_core::Value::Bool(i % 2 == 1),
                        // BOOL array elements: odd ones on, as scalars' are.
                        CipType::Dword => bifrost_core::Value::UInt(0xAAAA_AAAA),
                        CipType::Real | CipType::Lreal => bifrost_core::Value::Float(i as f64),
                        CipType::Struct(_) => bifrost_core::Value::String(String::new()),
                        _ => bifrost_core::Value::UInt(i as u64 & type_mask(ty)),
                    };
                    let _ = logix::encode_values(ty, &value, &mut data);
                }
            }
        }
        TagStore { ty: spec.ty, count: spec.count, size: spec.size, data: Mutex::new(data) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Largest positive value of a signed type, so initial values stay in range.
fn type_mask(ty: CipType) -> u64 {
    match ty {
        CipType::Sint => 0x7F,
        CipType::Usint => 0xFF,
        CipType::Int => 0x7FFF,
        CipType::Uint => 0xFFFF,
        CipType::Dint => 0x7FFF_FFFF,
        _ => u64::MAX >> 1,
    }
}

struct Controller {
    /// By upper-case name: Logix names are not case-sensitive.
    tags: HashMap<String, TagStore>,
    /// The Symbol object's instances, by scope (`None`: the controller's;
    /// `Some("PROGRAM:MAIN")`: a program's), in instance order.
    symbols: HashMap<Option<String>, Vec<Symbol>>,
    /// The Template object's instances: the structure types and the predefined STRING.
    templates: Vec<Template>,
    config: SimulatorConfig,
}

impl Controller {
    fn new(config: SimulatorConfig) -> Controller {
        let tags = config.tags.iter().map(|spec| (spec.name.to_ascii_uppercase(), TagStore::new(spec))).collect();
        let mut templates = config.udts.clone();
        templates.push(logix_string_template());
        let symbols = symbols(&config.tags, &templates);
        Controller { tags, symbols, templates, config }
    }

    /// The template of structures carrying `handle`.
    fn template_of(&self, handle: u16) -> Option<&Template> {
        self.templates.iter().find(|t| t.handle == handle)
    }
}

/// One instance of the Symbol object: what a tag listing shows.
struct Symbol {
    instance: u32,
    /// As declared, without its program's prefix.
    name: String,
    /// The tag it is, in the controller's tag map (empty for a program's entry).
    key: String,
    /// The symbol type word: type code or template, array dimensions, flags.
    type_word: u16,
    element_size: u16,
    elements: u32,
}

/// A program's entry in the controller's listing (type 0x1068, as Logix lists programs).
const PROGRAM_SYMBOL: u16 = 0x1068;

/// The symbols of `tags`: program-scoped tags (`Program:Main.Speed`) under their
/// program, everything else, and one entry per program, under the controller.
fn symbols(tags: &[TagSpec], templates: &[Template]) -> HashMap<Option<String>, Vec<Symbol>> {
    let mut scopes: HashMap<Option<String>, Vec<Symbol>> = HashMap::new();
    let mut programs: Vec<String> = Vec::new();
    for spec in tags {
        let (scope, name) = match spec.name.split_once('.') {
            Some((program, name)) if program.to_ascii_uppercase().starts_with("PROGRAM:") => {
                if !programs.iter().any(|p| p.eq_ignore_ascii_case(program)) {
                    programs.push(program.to_string());
                }
                (Some(program.to_ascii_uppercase()), name)
            }
            _ => (None, spec.name.as_str()),
        };
        let base = match spec.ty {
            CipType::Struct(handle) => {
                0x8000 | templates.iter().find(|t| t.handle == handle).map_or(handle, |t| t.id) & 0x0FFF
            }
            atomic => atomic.code() & 0x0FFF,
        };
        let symbol = Symbol {
            instance: 0,
            name: name.to_string(),
            key: spec.name.to_ascii_uppercase(),
            type_word: base | if spec.count > 1 || spec.ty == CipType::Dword { 0x2000 } else { 0 },
            element_size: spec.size as u16,
            // A BOOL array's dimension counts its BOOLs.
            elements: match spec.ty {
                CipType::Dword => 32 * spec.count as u32,
                _ if spec.count > 1 => spec.count as u32,
                _ => 0,
            },
        };
        scopes.entry(scope).or_default().push(symbol);
    }
    for program in programs {
        let symbol = Symbol {
            instance: 0,
            name: program,
            key: String::new(),
            type_word: PROGRAM_SYMBOL,
            element_size: 0,
            elements: 0,
        };
        scopes.entry(None).or_default().push(symbol);
    }
    for symbols in scopes.values_mut() {
        for (i, symbol) in symbols.iter_mut().enumerate() {
            // Gaps, as a controller's instance ids have them.
            symbol.instance = 2 * i as u32 + 1;
        }
    }
    scopes
}

/// What the simulator says of itself in ListIdentity and the Identity object.
fn identity(address: SocketAddrV4) -> Identity {
    Identity {
        protocol_version: 1,
        address,
        vendor_id: 1,
        device_type: 0x0E, // programmable logic controller
        product_code: 0x6B,
        revision: (32, 11),
        status: 0x0060,
        serial_number: 0x0B1F_0057,
        product_name: "Bifrost Logix Simulator".into(),
        state: 3,
    }
}

/// Binds `addr` (port 0 picks a free port) for TCP, and the same port for
/// UDP ListIdentity, and serves on the current tokio runtime.
pub async fn start(addr: &str, config: SimulatorConfig) -> std::io::Result<Simulator> {
    let max_connections = config.faults.max_connections;
    let controller = Arc::new(Controller::new(config));
    let shared = controller.clone();
    let simulator = Simulator::serve(addr, max_connections, move |socket, stats| {
        let controller = shared.clone();
        async move { serve(socket, &controller, &stats).await }
    })
    .await?;
    let udp = UdpSocket::bind(simulator.local_addr()).await?;
    let mut stopped = simulator.stopped();
    let local = simulator.local_addr();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 600];
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                received = udp.recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    let mut out = Vec::new();
                    if answer_udp(&buf[..n], local, &mut out) {
                        let _ = udp.send_to(&out, from).await;
                    }
                }
            }
        }
    });
    Ok(simulator)
}

fn v4(address: SocketAddr) -> SocketAddrV4 {
    match address {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(v6) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, v6.port()),
    }
}

/// A ListIdentity or ListServices over UDP; anything else is ignored.
fn answer_udp(datagram: &[u8], local: SocketAddr, out: &mut Vec<u8>) -> bool {
    match Header::parse(datagram) {
        Ok(header) if header.command == command::LIST_IDENTITY => {
            encap::list_identity_reply(out, header.context, &identity(v4(local))).is_ok()
        }
        Ok(header) if header.command == command::LIST_SERVICES => {
            list_services_reply(out, header.context);
            true
        }
        _ => false,
    }
}

/// The one service a controller lists: communications, CIP over TCP and class 0/1 over UDP.
fn list_services_reply(out: &mut Vec<u8>, context: [u8; 8]) {
    let start = encap::begin(out, command::LIST_SERVICES, 0, context);
    put_u16(out, 1);
    put_u16(out, encap::item::LIST_SERVICES);
    put_u16(out, 20);
    put_u16(out, 1);
    put_u16(out, 0x0120);
    out.extend_from_slice(b"Communications\0\0");
    let _ = encap::finish(out, start);
}

/// The state of one TCP connection.
struct Connection {
    local: SocketAddr,
    session: u32,
    /// Open CIP connections.
    opened: Vec<OpenConnection>,
    next_id: u32,
}

struct OpenConnection {
    /// Ours: the client sends with it.
    o_t_id: u32,
    /// The client's: we reply with it.
    t_o_id: u32,
    size: u16,
    /// Serial, vendor and originator serial name it in a Forward Close.
    triad: (u16, u16, u32),
}

/// Serves one connection: every complete request in the buffer, answered with one write.
async fn serve(mut socket: TcpStream, controller: &Controller, stats: &SimulatorStats) {
    let faults = &controller.config.faults;
    let Ok(local) = socket.local_addr() else { return };
    let mut state = Connection { local, session: 0, opened: Vec::new(), next_id: 0x4000_0001 };
    let mut input = BytesMut::with_capacity(8192);
    let mut output = Vec::with_capacity(8192);
    let mut served: u64 = 0;
    loop {
        if !faults.read(&mut socket, &mut input, stats).await {
            return;
        }
        loop {
            let len = match encap::frame_len(&input) {
                Ok(Some(len)) if len <= input.len() => len,
                Ok(_) => break,
                Err(_) => return, // not EtherNet/IP: a real device drops the link too
            };
            let frame = input.split_to(len);
            served += 1;
            let n = stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
            let start = output.len();
            let every = controller.config.drop_connections_every;
            if every > 0 && n.is_multiple_of(every) {
                state.opened.clear();
            }
            match answer(controller, &mut state, &frame, &mut output, faults.malforms(n)) {
                Answer::Reply if faults.drops(n) => output.truncate(start),
                Answer::Reply | Answer::None => {}
                Answer::Close => {
                    faults.write(&mut socket, &mut output).await;
                    return;
                }
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

enum Answer {
    Reply,
    None,
    Close,
}

/// Answers one request frame into `out`; `malform` sends its CIP reply with the reply bit cleared.
fn answer(controller: &Controller, state: &mut Connection, frame: &[u8], out: &mut Vec<u8>, malform: bool) -> Answer {
    let Ok(header) = Header::parse(frame) else { return Answer::Close };
    let body = &frame[HEADER_LEN..];
    let refuse = |out: &mut Vec<u8>, status: u32| {
        Header {
            command: header.command,
            session: header.session,
            status,
            context: header.context,
            ..Header::default()
        }
        .write(out);
        Answer::Reply
    };
    match header.command {
        command::LIST_IDENTITY => {
            let _ = encap::list_identity_reply(out, header.context, &identity(v4(state.local)));
            Answer::Reply
        }
        command::LIST_SERVICES => {
            list_services_reply(out, header.context);
            Answer::Reply
        }
        command::REGISTER_SESSION => {
            let version = Reader::new(body).u16("the protocol version").unwrap_or(0);
            if version != 1 {
                return refuse(out, 0x69);
            }
            if state.session == 0 {
                state.session = 0x0001_0000 | (state.local.port() as u32 ^ out.len() as u32);
            }
            let start = encap::begin(out, command::REGISTER_SESSION, state.session, header.context);
            put_u16(out, 1);
            put_u16(out, 0);
            let _ = encap::finish(out, start);
            Answer::Reply
        }
        command::UNREGISTER_SESSION => Answer::Close,
        command::SEND_RR_DATA | command::SEND_UNIT_DATA => {
            if state.session == 0 || header.session != state.session {
                return refuse(out, 0x64);
            }
            let Ok(payload) = encap::payload(body) else { return refuse(out, 0x03) };
            let mut reply = Vec::with_capacity(64);
            let execute = |controller, state: &mut Connection, message, limit, reply: &mut Vec<u8>| {
                execute(controller, state, message, limit, reply);
                if malform {
                    reply[0] &= !service::REPLY;
                }
            };
            match payload.sequence {
                None => {
                    execute(
                        controller,
                        state,
                        payload.message,
                        usize::from(crate::framing::UNCONNECTED_SIZE),
                        &mut reply,
                    );
                    let _ = encap::send_rr_data(out, state.session, header.context, |out| {
                        out.extend_from_slice(&reply);
                        Ok(())
                    });
                }
                Some(sequence) => {
                    let Some((t_o_id, size)) =
                        state.opened.iter().find(|c| Some(c.o_t_id) == payload.connection).map(|c| (c.t_o_id, c.size))
                    else {
                        // A connection we do not know: a controller ignores the message.
                        return Answer::None;
                    };
                    execute(controller, state, payload.message, usize::from(size), &mut reply);
                    let _ = encap::send_unit_data(out, state.session, t_o_id, sequence, |out| {
                        out.extend_from_slice(&reply);
                        Ok(())
                    });
                }
            }
            Answer::Reply
        }
        _ => refuse(out, 0x01),
    }
}

/// Appends a Message Router reply.
fn reply(out: &mut Vec<u8>, service: u8, status: u8, ext: Option<u16>, data: &[u8]) {
    out.extend_from_slice(&[service | service::REPLY, 0, status, u8::from(ext.is_some())]);
    if let Some(ext) = ext {
        put_u16(out, ext);
    }
    out.extend_from_slice(data);
}

/// What a request path names: an object instance, or a tag's elements and members.
enum Target {
    /// `scope`: a program's name before the object's path (`Program:Main`, upper-case);
    /// `tail`: elements and members after a symbol instance (tags addressed by instance id).
    Object { scope: Option<String>, class: u32, instance: u32, attribute: Option<u32>, tail: Vec<Segment> },
    /// Names (upper-case) and element indices, in order: `Recipe[2].Temp`.
    Tag(Vec<Segment>),
}

enum Segment {
    Name(String),
    Index(usize),
}

/// Where a logical segment goes: class, instance or attribute.
fn logical_slot(segment: u8) -> usize {
    match segment & 0xFC {
        0x20 => 0,
        0x24 => 1,
        _ => 2,
    }
}

fn parse_path(path: &[u8]) -> Option<Target> {
    let mut r = Reader::new(path);
    // Names and elements before any logical segment, and after.
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let mut logical = [None; 3];
    while r.remaining() > 0 {
        let segment = r.u8("segment").ok()?;
        let segments = if logical == [None; 3] { &mut before } else { &mut after };
        match segment {
            0x91 => {
                let len = usize::from(r.u8("length").ok()?);
                let part = r.bytes(len, "name").ok()?;
                if len % 2 == 1 {
                    r.u8("pad").ok()?;
                }
                segments.push(Segment::Name(String::from_utf8_lossy(part).to_ascii_uppercase()));
            }
            0x28 => segments.push(Segment::Index(usize::from(r.u8("element").ok()?))),
            0x29 => {
                r.u8("pad").ok()?;
                segments.push(Segment::Index(usize::from(r.u16("element").ok()?)));
            }
            0x2A => {
                r.u8("pad").ok()?;
                segments.push(Segment::Index(r.u32("element").ok()? as usize));
            }
            0x20 | 0x24 | 0x30 => logical[logical_slot(segment)] = Some(u32::from(r.u8("id").ok()?)),
            0x21 | 0x25 | 0x31 => {
                r.u8("pad").ok()?;
                logical[logical_slot(segment)] = Some(u32::from(r.u16("id").ok()?));
            }
            _ => return None,
        }
    }
    match (logical, &before[..]) {
        ([None, None, None], [Segment::Name(_), ..]) => Some(Target::Tag(before)),
        ([Some(class), Some(instance), attribute], [] | [Segment::Name(_)]) => {
            let scope = before.pop().map(|s| if let Segment::Name(name) = s { name } else { String::new() });
            Some(Target::Object { scope, class, instance, attribute, tail: after })
        }
        _ => None,
    }
}

/// The part of a tag a request addresses: `count` elements of `ty` from byte
/// `base`, of which it starts at element `index`; a BOOL member is `bit` of its byte.
struct View<'a> {
    store: &'a TagStore,
    ty: CipType,
    size: usize,
    base: usize,
    count: usize,
    index: usize,
    bit: Option<u16>,
}

impl<'a> View<'a> {
    fn whole(store: &'a TagStore, index: usize) -> View<'a> {
        View { store, ty: store.ty, size: store.size, base: 0, count: store.count, index, bit: None }
    }
}

impl Controller {
    /// What a symbolic path addresses: a tag (flat names like `Motor.Speed` and a
    /// program's `Program:Main.Speed` included), its elements, members of its structures.
    fn view(&self, segments: &[Segment]) -> Option<View<'_>> {
        let names = segments.iter().take_while(|s| matches!(s, Segment::Name(_))).count();
        let (store, used) = (1..=names).rev().find_map(|n| {
            let name: Vec<&str> =
                segments[..n].iter().map(|s| if let Segment::Name(name) = s { name.as_str() } else { "" }).collect();
            self.tags.get(&name.join(".")).map(|store| (store, n))
        })?;
        self.walk(View::whole(store, 0), &segments[used..])
    }

    /// Follows elements and members from `view`.
    fn walk<'a>(&'a self, mut view: View<'a>, segments: &[Segment]) -> Option<View<'a>> {
        for segment in segments {
            match segment {
                Segment::Index(i) if view.bit.is_none() => view.index = *i,
                Segment::Name(name) => {
                    let CipType::Struct(handle) = view.ty else { return None };
                    let template = self.template_of(handle)?;
                    let member = template.member(name)?;
                    let start = view.base + view.index.min(view.count) * view.size + member.offset as usize;
                    view = match member.structure() {
                        _ if member.type_word == 0xC1 => {
                            View { ty: CipType::Bool, size: 1, bit: Some(member.info), count: 1, ..view }
                        }
                        Some(id) => {
                            let nested = self.templates.iter().find(|t| t.id == id)?;
                            let ty = CipType::Struct(nested.handle);
                            View { ty, size: nested.size as usize, count: usize::from(member.info).max(1), ..view }
                        }
                        None => {
                            let ty = CipType::from_code(member.type_word & 0xFF, None)?;
                            let size = ty.element_size()?;
                            View { ty, size, count: usize::from(member.info).max(1), bit: None, ..view }
                        }
                    };
                    view.base = start;
                    view.index = 0;
                }
                Segment::Index(_) => return None,
            }
        }
        Some(view)
    }
}

const SYMBOL: u32 = cip::class::SYMBOL as u32;

/// Get Instance Attribute List on the Symbol object: the instances from
/// `start` on with the attributes asked for, as many as fit (status 0x06: more).
fn list_symbols(
    controller: &Controller,
    scope: Option<String>,
    start: u32,
    data: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) {
    let service = service::GET_INSTANCE_ATTRIBUTE_LIST;
    let Some(symbols) = controller.symbols.get(&scope) else {
        return reply(out, service, status::PATH_SEGMENT_ERROR, None, &[]);
    };
    let mut r = Reader::new(data);
    let Ok(count) = r.u16("attribute count") else { return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]) };
    let Ok(attributes) = (0..count).map(|_| r.u16("attribute")).collect::<Result<Vec<u16>>>() else {
        return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]);
    };
    let mut body = Vec::new();
    let mut more = false;
    for symbol in symbols.iter().filter(|s| s.instance >= start) {
        let mut entry = Vec::with_capacity(32 + symbol.name.len());
        put_u32(&mut entry, symbol.instance);
        for attribute in &attributes {
            match attribute {
                1 => {
                    put_u16(&mut entry, symbol.name.len() as u16);
                    entry.extend_from_slice(symbol.name.as_bytes());
                }
                2 => put_u16(&mut entry, symbol.type_word),
                3 | 5 => put_u32(&mut entry, 0),
                // Software control: bit 26 marks a base tag (not an alias).
                6 => put_u32(&mut entry, 1 << 26),
                7 => put_u16(&mut entry, symbol.element_size),
                8 => [symbol.elements, 0, 0].into_iter().for_each(|d| put_u32(&mut entry, d)),
                // External access: read/write.
                10 => entry.push(0),
                _ => return reply(out, service, 0x14, None, &[]),
            }
        }
        if 4 + body.len() + entry.len() > limit {
            more = true;
            break;
        }
        body.extend_from_slice(&entry);
    }
    reply(out, service, if more { status::PARTIAL_TRANSFER } else { 0 }, None, &body);
}

/// Executes one Message Router request into `out`; `limit` bounds the reply.
fn execute(controller: &Controller, state: &mut Connection, message: &[u8], limit: usize, out: &mut Vec<u8>) {
    let mut r = Reader::new(message);
    let (Ok(service), Ok(words)) = (r.u8("service"), r.u8("path size")) else {
        return reply(out, 0, status::NOT_ENOUGH_DATA, None, &[]);
    };
    let Ok(path) = r.bytes(2 * usize::from(words), "path") else {
        return reply(out, service, 0x26, None, &[]);
    };
    let data = r.rest();
    match parse_path(path) {
        None => reply(out, service, status::PATH_SEGMENT_ERROR, None, &[]),
        Some(Target::Tag(segments)) => match controller.view(&segments) {
            // As a Logix controller answers for a tag (or member) it does not have.
            None => reply(out, service, status::PATH_SEGMENT_ERROR, None, &[]),
            Some(view) => tag_service(&view, service, data, limit, out),
        },
        Some(Target::Object { scope, class: SYMBOL, instance, tail, .. }) => {
            if service == service::GET_INSTANCE_ATTRIBUTE_LIST {
                return list_symbols(controller, scope, instance, data, limit, out);
            }
            // A tag addressed by its symbol instance, as pycomm3 does.
            let symbol = controller.symbols.get(&scope).and_then(|list| list.iter().find(|s| s.instance == instance));
            let Some(store) = symbol.and_then(|symbol| controller.tags.get(&symbol.key)) else {
                return reply(out, service, status::PATH_DESTINATION_UNKNOWN, None, &[]);
            };
            match controller.walk(View::whole(store, 0), &tail) {
                Some(view) => tag_service(&view, service, data, limit, out),
                None => reply(out, service, status::PATH_SEGMENT_ERROR, None, &[]),
            }
        }
        Some(Target::Object { scope: None, class, instance, attribute, tail }) if tail.is_empty() => {
            object_service(controller, state, (class, instance, attribute), service, data, limit, out)
        }
        Some(Target::Object { .. }) => reply(out, service, status::PATH_SEGMENT_ERROR, None, &[]),
    }
}

fn object_service(
    controller: &Controller,
    state: &mut Connection,
    (class, instance, attribute): (u32, u32, Option<u32>),
    service: u8,
    data: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) {
    const IDENTITY: u32 = cip::class::IDENTITY as u32;
    const ROUTER: u32 = cip::class::MESSAGE_ROUTER as u32;
    const MANAGER: u32 = cip::class::CONNECTION_MANAGER as u32;
    const TEMPLATE: u32 = cip::class::TEMPLATE as u32;
    // The Logix object that names the controller's project.
    const PROGRAM_NAME: u32 = 0x64;
    const PROGRAM: &str = "BifrostSimulator";
    match (class, instance, service) {
        (IDENTITY, 1, service::GET_ATTRIBUTES_ALL) => {
            let mut body = Vec::new();
            encap::write_identity_attributes(&mut body, &identity(v4(state.local)));
            reply(out, service, 0, None, &body);
        }
        (IDENTITY, 1, service::GET_ATTRIBUTE_SINGLE) => {
            let id = identity(v4(state.local));
            let mut body = Vec::new();
            match attribute {
                Some(1) => put_u16(&mut body, id.vendor_id),
                Some(2) => put_u16(&mut body, id.device_type),
                Some(3) => put_u16(&mut body, id.product_code),
                Some(4) => body.extend_from_slice(&[id.revision.0, id.revision.1]),
                Some(5) => put_u16(&mut body, id.status),
                Some(6) => put_u32(&mut body, id.serial_number),
                Some(7) => {
                    body.push(id.product_name.len() as u8);
                    body.extend_from_slice(id.product_name.as_bytes());
                }
                _ => return reply(out, service, 0x14, None, &[]),
            }
            reply(out, service, 0, None, &body);
        }
        (PROGRAM_NAME, 1, service::GET_ATTRIBUTES_ALL) => {
            let mut body = Vec::new();
            put_u16(&mut body, PROGRAM.len() as u16);
            body.extend_from_slice(PROGRAM.as_bytes());
            reply(out, service, 0, None, &body);
        }
        (IDENTITY, 1, service::SET_ATTRIBUTE_SINGLE) => reply(out, service, 0x0E, None, &[]),
        (TEMPLATE, id, service::GET_ATTRIBUTE_LIST | service::READ_TAG) => {
            match controller.templates.iter().find(|t| u32::from(t.id) == id) {
                Some(template) => template_service(template, service, data, limit, out),
                None => reply(out, service, status::PATH_DESTINATION_UNKNOWN, None, &[]),
            }
        }
        (ROUTER, 1, service::MULTIPLE_SERVICE_PACKET) => multiple(controller, state, service, data, limit, out),
        (MANAGER, 1, service::FORWARD_OPEN | service::LARGE_FORWARD_OPEN) => {
            let large = service == service::LARGE_FORWARD_OPEN;
            let Ok(open) = cip::parse_forward_open(large, data) else {
                return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]);
            };
            let most = controller.config.max_connection_size;
            if most == 0 {
                // A controller with no connection to give.
                return reply(out, service, status::CONNECTION_FAILURE, Some(0x0113), &[]);
            }
            if large && most <= cip::MAX_CLASSIC_SIZE {
                // A controller that predates the Large Forward Open.
                return reply(out, service, status::SERVICE_NOT_SUPPORTED, None, &[]);
            }
            if open.size < 100 || open.size > most {
                // Invalid connection size: the second word names the largest we take.
                out.extend_from_slice(&[service | service::REPLY, 0, status::CONNECTION_FAILURE, 2]);
                put_u16(out, 0x0109);
                put_u16(out, most);
                return;
            }
            // The controller sits in slot 0 of the backplane (port 1): another route leads nowhere.
            if !matches!(&open.route[..], [] | [1, 0]) {
                return reply(out, service, status::CONNECTION_FAILURE, Some(0x0312), &[0]);
            }
            if state.opened.len() >= 8 {
                return reply(out, service, status::CONNECTION_FAILURE, Some(0x0113), &[]);
            }
            let o_t_id = state.next_id;
            state.next_id = state.next_id.wrapping_add(1);
            let triad = (open.serial, open.vendor_id, open.originator_serial);
            state.opened.push(OpenConnection { o_t_id, t_o_id: open.t_o_id, size: open.size, triad });
            let mut body = Vec::new();
            put_u32(&mut body, o_t_id);
            put_u32(&mut body, open.t_o_id);
            put_u16(&mut body, open.serial);
            put_u16(&mut body, open.vendor_id);
            put_u32(&mut body, open.originator_serial);
            put_u32(&mut body, open.o_t_rpi_us);
            put_u32(&mut body, open.t_o_rpi_us);
            body.extend_from_slice(&[0, 0]);
            reply(out, service, 0, None, &body);
        }
        (MANAGER, 1, service::FORWARD_CLOSE) => {
            let mut r = Reader::new(data);
            let triad =
                r.bytes(2, "ticks").and_then(|_| Ok((r.u16("serial")?, r.u16("vendor")?, r.u32("originator serial")?)));
            let Ok(triad) = triad else { return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]) };
            let before = state.opened.len();
            state.opened.retain(|c| c.triad != triad);
            if state.opened.len() == before {
                // Connection not found.
                return reply(out, service, status::CONNECTION_FAILURE, Some(0x0107), &[]);
            }
            let mut body = Vec::new();
            put_u16(&mut body, triad.0);
            put_u16(&mut body, triad.1);
            put_u32(&mut body, triad.2);
            body.extend_from_slice(&[0, 0]);
            reply(out, service, 0, None, &body);
        }
        (MANAGER, 1, service::UNCONNECTED_SEND) => match cip::parse_unconnected_send(data) {
            // The controller sits in slot 0 of the backplane (port 1).
            Ok(inner) if inner.route == [1, 0] => execute(controller, state, inner.message, limit, out),
            Ok(_) => reply(out, service, status::CONNECTION_FAILURE, Some(0x0312), &[0]),
            Err(_) => reply(out, service, status::NOT_ENOUGH_DATA, None, &[]),
        },
        (IDENTITY | ROUTER | MANAGER | PROGRAM_NAME, _, _) => {
            reply(out, service, status::SERVICE_NOT_SUPPORTED, None, &[])
        }
        _ => reply(out, service, status::PATH_DESTINATION_UNKNOWN, None, &[]),
    }
}

/// The Template object: Get Attribute List (any of attributes 1 to 5, in the
/// order asked; 3 as pylogix reads it, a UINT), and Read Template from an
/// offset, as much of the definition as is asked for and fits.
fn template_service(template: &Template, service: u8, data: &[u8], limit: usize, out: &mut Vec<u8>) {
    let attributes = template.attributes();
    let mut r = Reader::new(data);
    if service == service::GET_ATTRIBUTE_LIST {
        let Ok(count) = r.u16("count") else { return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]) };
        let mut body = Vec::new();
        put_u16(&mut body, count);
        let mut refused = false;
        for _ in 0..count {
            let Ok(id) = r.u16("attribute") else { return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]) };
            put_u16(&mut body, id);
            match id {
                1..=3 => {
                    put_u16(&mut body, 0);
                    let word = match id {
                        1 => attributes.handle,
                        2 => attributes.member_count,
                        _ => attributes.definition_words as u16,
                    };
                    put_u16(&mut body, word);
                }
                4 | 5 => {
                    put_u16(&mut body, 0);
                    put_u32(&mut body, if id == 4 { attributes.definition_words } else { attributes.structure_size });
                }
                _ => {
                    put_u16(&mut body, 0x14); // attribute not supported, and no value
                    refused = true;
                }
            }
        }
        // An attribute refused makes the whole an attribute list error.
        return reply(out, service, if refused { 0x0A } else { 0 }, None, &body);
    }
    let (Ok(offset), Ok(count)) = (r.u32("offset"), r.u16("count")) else {
        return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]);
    };
    let mut definition = Vec::new();
    template.write_definition(&mut definition);
    let offset = offset as usize;
    if offset > definition.len() {
        return reply(out, service, status::GENERAL_ERROR, Some(0x2105), &[]);
    }
    // Clients ask for different counts (words × 4 − 23, − 21, − 16): give what there is.
    let end = (offset + usize::from(count)).min(definition.len());
    let room = limit.saturating_sub(4);
    let (end, partial) = if end - offset <= room { (end, false) } else { (offset + (room & !3), true) };
    reply(out, service, if partial { status::PARTIAL_TRANSFER } else { 0 }, None, &definition[offset..end]);
}

/// A Multiple Service Packet: each embedded request against what is left of the reply's room.
fn multiple(
    controller: &Controller,
    state: &mut Connection,
    service: u8,
    data: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) {
    let Ok(requests) = cip::split_multiple(data) else {
        return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]);
    };
    let mut replies: Vec<Vec<u8>> = Vec::with_capacity(requests.len());
    let mut room = limit.saturating_sub(cip::multiple_reply_overhead(requests.len()));
    for request in requests {
        let mut embedded = Vec::new();
        execute(controller, state, request, room, &mut embedded);
        room = room.saturating_sub(embedded.len());
        replies.push(embedded);
    }
    let failed = replies.iter().any(|r| r.get(2).is_some_and(|&s| s != 0));
    out.extend_from_slice(&[service | service::REPLY, 0, if failed { status::EMBEDDED_SERVICE_ERROR } else { 0 }, 0]);
    put_u16(out, replies.len() as u16);
    let mut offset = 2 + 2 * replies.len();
    for embedded in &replies {
        put_u16(out, offset as u16);
        offset += embedded.len();
    }
    for embedded in replies {
        out.extend_from_slice(&embedded);
    }
}

/// Read Tag, Write Tag, their fragmented forms and Read-Modify-Write on what a path addresses.
fn tag_service(view: &View<'_>, service: u8, data: &[u8], limit: usize, out: &mut Vec<u8>) {
    let mut r = Reader::new(data);
    let type_len = if matches!(view.ty, CipType::Struct(_)) { 4 } else { 2 };
    let (size, index) = (view.size, view.index);
    match service {
        service::READ_TAG | service::READ_TAG_FRAGMENTED => {
            let Ok(count) = r.u16("count") else { return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]) };
            let offset = if service == service::READ_TAG_FRAGMENTED {
                match r.u32("offset") {
                    Ok(offset) => offset as usize,
                    Err(_) => return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]),
                }
            } else {
                0
            };
            let data = view.store.lock();
            if view.ty == CipType::CipString {
                let mut body = Vec::with_capacity(4 + data.len());
                put_u16(&mut body, view.ty.code());
                put_u16(&mut body, data.len() as u16);
                body.extend_from_slice(&data);
                // Padded to a whole word, as cpppo and Logix-style parsers expect.
                if data.len() % 2 == 1 {
                    body.push(0);
                }
                return reply(out, service, 0, None, &body);
            }
            if let Some(bit) = view.bit {
                // A BOOL member: its bit, as a BOOL.
                let on = data[view.base] >> bit & 1;
                return reply(out, service, 0, None, &[0xC1, 0, on]);
            }
            let count = usize::from(count);
            if count == 0 || index + count > view.count {
                return reply(out, service, status::GENERAL_ERROR, Some(0x2105), &[]);
            }
            let start = view.base + index * size + offset;
            let end = view.base + (index + count) * size;
            // Fragments hold whole elements; a structure's, whole 32-bit words.
            let unit = if type_len == 4 { 4 } else { size };
            if offset % unit != 0 || start > end {
                return reply(out, service, status::GENERAL_ERROR, Some(0x2104), &[]);
            }
            // What fits the room left; the rest waits for a fragmented read.
            let room = limit.saturating_sub(4 + type_len);
            let fit = ((end - start).min(room) / unit) * unit;
            if fit == 0 && end > start {
                return reply(out, service, status::REPLY_DATA_TOO_LARGE, None, &[]);
            }
            let partial = start + fit < end;
            out.extend_from_slice(&[
                service | service::REPLY,
                0,
                if partial { status::PARTIAL_TRANSFER } else { 0 },
                0,
            ]);
            put_u16(out, view.ty.code());
            if let CipType::Struct(handle) = view.ty {
                put_u16(out, handle);
            }
            out.extend_from_slice(&data[start..start + fit]);
        }
        service::WRITE_TAG | service::WRITE_TAG_FRAGMENTED => {
            let Ok(write) = logix::parse_write(data, service == service::WRITE_TAG_FRAGMENTED) else {
                return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]);
            };
            if write.ty != view.ty {
                return reply(out, service, status::GENERAL_ERROR, Some(0x2107), &[]);
            }
            let mut stored = view.store.lock();
            if view.ty == CipType::CipString {
                let mut r = Reader::new(write.data);
                let Ok(len) = r.u16("length") else { return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]) };
                let Ok(text) = r.bytes(usize::from(len), "text") else {
                    return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]);
                };
                *stored = text.to_vec();
                return reply(out, service, 0, None, &[]);
            }
            if let Some(bit) = view.bit {
                let Some(&value) = write.data.first() else {
                    return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]);
                };
                let host = &mut stored[view.base];
                *host = if value != 0 { *host | 1 << bit } else { *host & !(1 << bit) };
                return reply(out, service, 0, None, &[]);
            }
            let count = usize::from(write.count);
            if count == 0 || index + count > view.count {
                return reply(out, service, status::GENERAL_ERROR, Some(0x2105), &[]);
            }
            let start = view.base + index * size + write.offset as usize;
            let end = start + write.data.len();
            if end > view.base + (index + count) * size {
                return reply(out, service, status::TOO_MUCH_DATA, None, &[]);
            }
            if service == service::WRITE_TAG && write.data.len() < count * size {
                return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]);
            }
            stored[start..end].copy_from_slice(write.data);
            reply(out, service, 0, None, &[]);
        }
        service::READ_MODIFY_WRITE => {
            let Ok(mask_size) = r.u16("mask size") else {
                return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]);
            };
            let mask_size = usize::from(mask_size);
            let (Ok(or_mask), Ok(and_mask)) = (r.bytes(mask_size, "or"), r.bytes(mask_size, "and")) else {
                return reply(out, service, status::NOT_ENOUGH_DATA, None, &[]);
            };
            let integer = view.ty.data_type().is_some() && !matches!(view.ty, CipType::Real | CipType::Lreal);
            if !integer || view.bit.is_some() || mask_size > size {
                return reply(out, service, status::GENERAL_ERROR, Some(0x2107), &[]);
            }
            if index >= view.count {
                return reply(out, service, status::GENERAL_ERROR, Some(0x2105), &[]);
            }
            let mut stored = view.store.lock();
            let at = view.base + index * size;
            for (i, byte) in stored[at..at + mask_size].iter_mut().enumerate() {
                *byte = (*byte | or_mask[i]) & and_mask[i];
            }
            reply(out, service, 0, None, &[]);
        }
        _ => reply(out, service, status::SERVICE_NOT_SUPPORTED, None, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_specs_parse_and_refuse_with_a_reason() {
        assert_eq!(
            TagSpec::parse("SCADA=INT[1000]").unwrap(),
            TagSpec { name: "SCADA".into(), ty: CipType::Int, count: 1000, size: 2 }
        );
        assert_eq!(TagSpec::parse(" Temp = real ").unwrap().ty, CipType::Real);
        assert_eq!(TagSpec::parse("Name=STRING").unwrap().ty, CipType::Struct(LOGIX_STRING_HANDLE));
        assert_eq!(TagSpec::parse("Note=CIP_STRING").unwrap().ty, CipType::CipString);
        for (bad, why) in [
            ("SCADA", "no '='"),
            ("=INT", "the name"),
            ("A=INT[0]", "1 to 1048576"),
            ("A=FLOAT", "unknown type 'FLOAT'"),
            ("A=CIP_STRING[2]", "scalars"),
        ] {
            assert!(TagSpec::parse(bad).unwrap_err().message.contains(why), "{bad}");
        }
    }

    #[test]
    fn a_forward_close_closes_the_connection_it_names_only() {
        let controller = Controller::new(SimulatorConfig::default());
        let local = "127.0.0.1:44818".parse().unwrap();
        let mut state = Connection { local, session: 1, opened: Vec::new(), next_id: 7 };
        let open = |serial| {
            let mut message = Vec::new();
            let fo = cip::ForwardOpen {
                large: true,
                size: 4002,
                serial,
                vendor_id: 9,
                originator_serial: 5,
                rpi_us: 1000,
                timeout_multiplier: 1,
                route: vec![1, 0],
            };
            cip::forward_open(&mut message, &fo).unwrap();
            message
        };
        let close = |serial| {
            let mut message = Vec::new();
            cip::forward_close(&mut message, serial, 9, 5, &[1, 0]).unwrap();
            message
        };
        let status = |reply: &[u8]| reply[2];
        for serial in [1, 2] {
            let mut reply = Vec::new();
            execute(&controller, &mut state, &open(serial), 504, &mut reply);
            assert_eq!(status(&reply), 0);
        }
        let mut reply = Vec::new();
        execute(&controller, &mut state, &close(1), 504, &mut reply);
        assert_eq!(status(&reply), 0);
        assert_eq!(state.opened.len(), 1);
        reply.clear();
        execute(&controller, &mut state, &close(1), 504, &mut reply);
        assert_eq!((status(&reply), &reply[4..6]), (0x01, &[0x07, 0x01][..]), "not found the second time");
    }

    /// A real client's request to a ControlLogix (the capture cpppo's repository
    /// keeps): Get Attributes All of the Identity object, through Unconnected
    /// Send to slot 0. The simulator answers it as the controller did: the
    /// embedded reply itself, its context echoed.
    #[test]
    fn a_real_clients_routed_identity_request() {
        let hex = |s: &str| -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
        };
        let request = hex("6f 00 24 00 01 1e 02 11 00 00 00 00 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 05 00
             02 00 00 00 00 00 b2 00 14 00 52 02 20 06 24 01 01 fa 06 00 01 02 20 01 24 01 01 00 01 00");
        let controller = Controller::new(SimulatorConfig::default());
        let local = "127.0.0.1:44818".parse().unwrap();
        let mut state = Connection { local, session: 0x1102_1e01, opened: Vec::new(), next_id: 7 };
        let mut out = Vec::new();
        assert!(matches!(answer(&controller, &mut state, &request, &mut out, false), Answer::Reply));
        let header = Header::parse(&out).unwrap();
        assert_eq!(
            (header.command, header.session, header.status, header.context[0]),
            (command::SEND_RR_DATA, 0x1102_1e01, 0, 2)
        );
        let reply = cip::Response::parse(encap::payload(&out[HEADER_LEN..]).unwrap().message).unwrap();
        assert_eq!((reply.service, reply.status), (service::GET_ATTRIBUTES_ALL, 0));
        // Vendor 1, a PLC (0x0E), then product code, revision, status, serial and name.
        assert_eq!(&reply.data[..4], &[1, 0, 0x0e, 0]);
        assert!(reply.data.ends_with(b"Bifrost Logix Simulator"));
    }

    #[test]
    fn initial_values_are_the_element_index() {
        let tag = TagStore::new(&TagSpec::parse("A=DINT[3]").unwrap());
        assert_eq!(&*tag.lock(), &[0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
        // A BOOL array is held in words, as Logix holds it: BOOL[40] in two, odd BOOLs on.
        let bools = TagStore::new(&TagSpec::parse("B=BOOL[40]").unwrap());
        assert_eq!((bools.ty, bools.count), (CipType::Dword, 2));
        assert_eq!(&*bools.lock(), &[0xAA; 8]);
        let sint = TagStore::new(&TagSpec::parse("S=SINT[200]").unwrap());
        assert_eq!(sint.lock()[199], 199 & 0x7F);
    }
}
