//! The OPC UA simulator: a small server over the binary protocol, security
//! None and the Anonymous identity, for the demo, the tests and the benchmark.
//! It answers Hello, OpenSecureChannel (issue and renew), CloseSecureChannel,
//! GetEndpoints, FindServers, CreateSession, ActivateSession, CloseSession,
//! Read, Write, Browse and BrowseNext (pages under continuation points), Call,
//! subscriptions (CreateSubscription, CreateMonitoredItems with an absolute
//! deadband, Publish with acknowledgements and keep-alives, Republish,
//! DeleteSubscriptions), and a ServiceFault (BadServiceUnsupported) to anything else.
//!
//! Its address space: the Server object's namespace array, state, current time
//! and operation limits, and a folder `ns=1;s=Simulation` of `variables`
//! variables `ns=1;s=V<i>`, typed by `i % 5` (Double `i * 0.5`, Int32 `i`,
//! Boolean `i % 2 == 1`, Float `i * 0.25`, String `v<i>`), read-only when
//! `i % 7 == 6`, plus `ns=1;s=Ticks` (UInt32, ten a second) and `ns=1;s=Sine`
//! (Double, a 10 s sine), which change, and the method `ns=1;s=Add` (two Int32
//! in, their sum out), with its InputArguments and OutputArguments.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio::net::TcpStream;

use bifrost_core::{Error, Result};

use crate::encoding::{
    put_u32, DataValue, Decode, DiagnosticInfo, Encode, ExtensionBody, ExtensionObject, LocalizedText, QualifiedName,
    ReadLengths, Reader, Variant, VariantArray,
};
use crate::method::{self, Argument, CallResult};
use crate::node_id::{ExpandedNodeId, Identifier, NodeId};
use crate::secure_channel::{date_time, encoding_id as channel_id, ResponseHeader};
use crate::session::{encoding_id as service_id, read_array, ApplicationDescription, VALUE_ATTRIBUTE};
use crate::subscription::{self, NotificationMessage};
use crate::transport::{
    self, chunk, kind, Acknowledge, Assembled, Channel, Hello, Limits, Negotiated, NoSecurity, Reassembly,
    SecurityPolicy, HEADER_LEN,
};
use crate::value::builtin;
use crate::view::{self, node_class, BrowseResult, Reference};

/// The built-in type id of ExtensionObject.
const EXTENSION_OBJECT: u8 = 22;

pub use bifrost_engine::listener::{Faults, Simulator, SimulatorStats};

/// The simulator's own namespace (index 1).
pub const NAMESPACE: &str = "urn:bifrost:simulator";

/// Status codes the simulator answers with.
mod status {
    pub const BAD_SERVICE_UNSUPPORTED: u32 = 0x800B_0000;
    pub const BAD_SESSION_ID_INVALID: u32 = 0x8025_0000;
    pub const BAD_SESSION_NOT_ACTIVATED: u32 = 0x8027_0000;
    pub const BAD_NODE_ID_UNKNOWN: u32 = 0x8034_0000;
    pub const BAD_ATTRIBUTE_ID_INVALID: u32 = 0x8035_0000;
    pub const BAD_NOT_WRITABLE: u32 = 0x803B_0000;
    pub const BAD_TYPE_MISMATCH: u32 = 0x8074_0000;
    pub const BAD_TOO_MANY_OPERATIONS: u32 = 0x8010_0000;
    pub const BAD_DECODING_ERROR: u32 = 0x8007_0000;
    pub const BAD_CONTINUATION_POINT_INVALID: u32 = 0x804A_0000;
    pub const BAD_OUT_OF_RANGE: u32 = 0x803C_0000;
    pub const BAD_NO_SUBSCRIPTION: u32 = 0x8079_0000;
    pub const BAD_SUBSCRIPTION_ID_INVALID: u32 = 0x8028_0000;
    pub const BAD_MESSAGE_NOT_AVAILABLE: u32 = 0x807B_0000;
    pub const BAD_METHOD_INVALID: u32 = 0x8075_0000;
    pub const BAD_ARGUMENTS_MISSING: u32 = 0x8076_0000;
    pub const BAD_TOO_MANY_ARGUMENTS: u32 = 0x80E5_0000;
    pub const BAD_INVALID_ARGUMENT: u32 = 0x80AB_0000;
    pub const BAD_MONITORED_ITEM_ID_INVALID: u32 = 0x8042_0000;
}

/// Attribute ids the simulator serves (Part 6, A.1).
mod attribute {
    pub const NODE_ID: u32 = 1;
    pub const NODE_CLASS: u32 = 2;
    pub const BROWSE_NAME: u32 = 3;
    pub const DISPLAY_NAME: u32 = 4;
    pub const DATA_TYPE: u32 = 14;
    pub const VALUE_RANK: u32 = 15;
    pub const ARRAY_DIMENSIONS: u32 = 16;
    pub const ACCESS_LEVEL: u32 = 17;
    pub const USER_ACCESS_LEVEL: u32 = 18;
}

/// The simulator's settings.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Variables `ns=1;s=V0` to `V<n-1>`.
    pub variables: usize,
    /// How many nodes one Read or Write may name (0: no limit), as the server's operation limits say.
    pub max_nodes_per_read: u32,
    /// Every Double variable `V<i>` reads `i * 0.5` plus the whole seconds since the start: they all change each second.
    pub changing: bool,
    pub faults: Faults,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig { variables: 1000, max_nodes_per_read: 10_000, changing: false, faults: Faults::default() }
    }
}

/// A node of the address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Folder(Folder),
    /// The Server object.
    Server,
    Standard(u32),
    Variable(usize),
    Ticks,
    Sine,
    /// The method Add, and its InputArguments (`true`) or OutputArguments properties.
    Add,
    AddArguments(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Folder {
    Root,
    Objects,
    Simulation,
}

/// What the simulator serves: the variables' values, changed by writes.
struct AddressSpace {
    values: Mutex<Vec<Variant>>,
    /// Subscriptions on every connection (ServerDiagnosticsSummary.CurrentSubscriptionCount, i=2285).
    subscriptions: std::sync::atomic::AtomicUsize,
    max_nodes_per_read: u32,
    changing: bool,
    started: Instant,
}

fn variable_type(i: usize) -> u8 {
    [builtin::DOUBLE, builtin::INT32, builtin::BOOLEAN, builtin::FLOAT, builtin::STRING][i % 5]
}

fn initial_value(i: usize) -> Variant {
    match variable_type(i) {
        builtin::DOUBLE => Variant::Double(i as f64 * 0.5),
        builtin::INT32 => Variant::Int32(i as i32),
        builtin::BOOLEAN => Variant::Boolean(i % 2 == 1),
        builtin::FLOAT => Variant::Float(i as f32 * 0.25),
        _ => Variant::String(Some(format!("v{i}"))),
    }
}

fn writable(i: usize) -> bool {
    i % 7 != 6
}

impl AddressSpace {
    fn new(config: &SimulatorConfig) -> AddressSpace {
        AddressSpace {
            values: Mutex::new((0..config.variables).map(initial_value).collect()),
            subscriptions: std::sync::atomic::AtomicUsize::new(0),
            max_nodes_per_read: config.max_nodes_per_read,
            changing: config.changing,
            started: Instant::now(),
        }
    }

    fn find(&self, id: &NodeId) -> Option<Node> {
        match (id.namespace, &id.identifier) {
            (0, Identifier::Numeric(84)) => Some(Node::Folder(Folder::Root)),
            (0, Identifier::Numeric(85)) => Some(Node::Folder(Folder::Objects)),
            (0, Identifier::Numeric(2253)) => Some(Node::Server),
            (0, Identifier::Numeric(n @ (2255 | 2258 | 2259 | 2285 | 11705 | 11707 | 11710 | 11712 | 11714))) => {
                Some(Node::Standard(*n))
            }
            (1, Identifier::String(name)) => match name.as_str() {
                "Simulation" => Some(Node::Folder(Folder::Simulation)),
                "Ticks" => Some(Node::Ticks),
                "Sine" => Some(Node::Sine),
                "Add" => Some(Node::Add),
                "Add.InputArguments" => Some(Node::AddArguments(true)),
                "Add.OutputArguments" => Some(Node::AddArguments(false)),
                _ => {
                    let i: usize = name.strip_prefix('V')?.parse().ok()?;
                    (i < self.values.lock().ok()?.len() && name == &format!("V{i}")).then_some(Node::Variable(i))
                }
            },
            _ => None,
        }
    }

    fn name(node: Node) -> String {
        match node {
            Node::Folder(Folder::Root) => "Root".into(),
            Node::Folder(Folder::Objects) => "Objects".into(),
            Node::Folder(Folder::Simulation) => "Simulation".into(),
            Node::Server => "Server".into(),
            Node::Standard(2255) => "NamespaceArray".into(),
            Node::Standard(2258) => "CurrentTime".into(),
            Node::Standard(2259) => "State".into(),
            Node::Standard(11705) => "MaxNodesPerRead".into(),
            Node::Standard(11707) => "MaxNodesPerWrite".into(),
            Node::Standard(2285) => "CurrentSubscriptionCount".into(),
            Node::Standard(11712) => "MaxNodesPerTranslateBrowsePathsToNodeIds".into(),
            Node::Standard(11714) => "MaxMonitoredItemsPerCall".into(),
            Node::Standard(_) => "MaxNodesPerBrowse".into(),
            Node::Variable(i) => format!("V{i}"),
            Node::Ticks => "Ticks".into(),
            Node::Sine => "Sine".into(),
            Node::Add => "Add".into(),
            Node::AddArguments(true) => "InputArguments".into(),
            Node::AddArguments(false) => "OutputArguments".into(),
        }
    }

    /// The node's Value, or why it has none.
    fn value(&self, node: Node) -> std::result::Result<Variant, u32> {
        let elapsed = self.started.elapsed();
        Ok(match node {
            Node::Standard(2255) => Variant::Array(Box::new(VariantArray {
                type_id: builtin::STRING,
                values: ["http://opcfoundation.org/UA/", NAMESPACE].map(|s| Variant::String(Some(s.into()))).to_vec(),
                dimensions: None,
            })),
            Node::Standard(2258) => Variant::DateTime(date_time(SystemTime::now())),
            Node::Standard(2259) => Variant::Int32(0), // Running
            Node::Standard(11705 | 11707 | 11712 | 11714) => Variant::UInt32(self.max_nodes_per_read),
            Node::Standard(2285) => Variant::UInt32(self.subscriptions.load(Ordering::Relaxed) as u32),
            Node::Standard(_) => Variant::UInt32(0),
            Node::Variable(i) if self.changing && variable_type(i) == builtin::DOUBLE => {
                Variant::Double(i as f64 * 0.5 + elapsed.as_secs() as f64)
            }
            Node::Variable(i) => self.values.lock().map_err(|_| status::BAD_NODE_ID_UNKNOWN)?[i].clone(),
            Node::Ticks => Variant::UInt32((elapsed.as_millis() / 100) as u32),
            Node::Sine => Variant::Double((elapsed.as_secs_f64() * std::f64::consts::TAU / 10.0).sin()),
            Node::AddArguments(input) => {
                let argument = |name: &str| Argument {
                    name: Some(name.into()),
                    data_type: NodeId::numeric(0, u32::from(builtin::INT32)),
                    value_rank: -1,
                    description: LocalizedText::default(),
                };
                let names: &[&str] = if input { &["a", "b"] } else { &["sum"] };
                let values = names
                    .iter()
                    .map(|name| Variant::ExtensionObject(Box::new(argument(name).to_extension_object())))
                    .collect();
                Variant::Array(Box::new(VariantArray { type_id: EXTENSION_OBJECT, values, dimensions: None }))
            }
            Node::Folder(_) | Node::Server | Node::Add => return Err(status::BAD_ATTRIBUTE_ID_INVALID),
        })
    }

    fn node_class(node: Node) -> u32 {
        match node {
            Node::Add => node_class::METHOD,
            other if Self::data_type(other).is_some() => node_class::VARIABLE,
            _ => node_class::OBJECT,
        }
    }

    fn data_type(node: Node) -> Option<u8> {
        match node {
            Node::Standard(2255) => Some(builtin::STRING),
            Node::Standard(2258) => Some(builtin::DATE_TIME),
            Node::Standard(2259) => Some(builtin::INT32),
            Node::Standard(_) | Node::Ticks => Some(builtin::UINT32),
            Node::Sine => Some(builtin::DOUBLE),
            Node::Variable(i) => Some(variable_type(i)),
            Node::AddArguments(_) => Some(EXTENSION_OBJECT),
            Node::Folder(_) | Node::Server | Node::Add => None,
        }
    }

    fn read(&self, id: &NodeId, attribute: u32) -> DataValue {
        let bad = |code| DataValue { status: Some(code), ..DataValue::default() };
        let Some(node) = self.find(id) else { return bad(status::BAD_NODE_ID_UNKNOWN) };
        let is_variable = Self::data_type(node).is_some();
        let value = match attribute {
            attribute::NODE_ID => Variant::NodeId(Box::new(id.clone())),
            attribute::NODE_CLASS => Variant::Int32(Self::node_class(node) as i32),
            attribute::BROWSE_NAME => Variant::QualifiedName(Box::new(QualifiedName {
                namespace: id.namespace,
                name: Some(Self::name(node)),
            })),
            attribute::DISPLAY_NAME => {
                Variant::LocalizedText(Box::new(LocalizedText { locale: None, text: Some(Self::name(node)) }))
            }
            VALUE_ATTRIBUTE => match self.value(node) {
                Ok(value) => {
                    let now = date_time(SystemTime::now());
                    return DataValue {
                        value: Some(value),
                        source_timestamp: Some(now),
                        server_timestamp: Some(now),
                        ..DataValue::default()
                    };
                }
                Err(code) => return bad(code),
            },
            attribute::DATA_TYPE if is_variable => {
                Variant::NodeId(Box::new(NodeId::numeric(0, u32::from(Self::data_type(node).unwrap_or(0)))))
            }
            attribute::ARRAY_DIMENSIONS if is_variable => return DataValue::default(), // none fixed
            attribute::VALUE_RANK if is_variable => Variant::Int32(if node == Node::Standard(2255) { 1 } else { -1 }),
            attribute::ACCESS_LEVEL | attribute::USER_ACCESS_LEVEL if is_variable => {
                Variant::Byte(if matches!(node, Node::Variable(i) if writable(i)) { 3 } else { 1 })
            }
            _ => return bad(status::BAD_ATTRIBUTE_ID_INVALID),
        };
        DataValue { value: Some(value), ..DataValue::default() }
    }

    fn node_id(node: Node) -> NodeId {
        match node {
            Node::Folder(Folder::Root) => NodeId::numeric(0, 84),
            Node::Folder(Folder::Objects) => NodeId::numeric(0, 85),
            Node::Server => NodeId::numeric(0, 2253),
            Node::Standard(n) => NodeId::numeric(0, n),
            Node::AddArguments(input) => NodeId {
                namespace: 1,
                identifier: Identifier::String(format!("Add.{}", Self::name(Node::AddArguments(input)))),
            },
            other => NodeId { namespace: 1, identifier: Identifier::String(Self::name(other)) },
        }
    }

    /// A node's children, as Browse lists them.
    fn children(&self, node: Node) -> Vec<Node> {
        match node {
            Node::Folder(Folder::Root) => vec![Node::Folder(Folder::Objects)],
            Node::Folder(Folder::Objects) => vec![Node::Server, Node::Folder(Folder::Simulation)],
            Node::Server => vec![Node::Standard(2255), Node::Standard(2258), Node::Standard(2259)],
            Node::Folder(Folder::Simulation) => {
                let count = self.values.lock().map_or(0, |values| values.len());
                (0..count).map(Node::Variable).chain([Node::Ticks, Node::Sine, Node::Add]).collect()
            }
            Node::Add => vec![Node::AddArguments(true), Node::AddArguments(false)],
            _ => Vec::new(),
        }
    }

    fn reference(node: Node) -> Reference {
        let id = Self::node_id(node);
        Reference {
            browse_name: QualifiedName { namespace: id.namespace, name: Some(Self::name(node)) },
            display_name: LocalizedText { locale: None, text: Some(Self::name(node)) },
            node_class: Self::node_class(node),
            node_id: id.into(),
        }
    }

    /// The node at the end of a path of browse names from `start`, or why there is none.
    fn follow(&self, start: &NodeId, names: &[QualifiedName]) -> std::result::Result<Node, u32> {
        let mut node = self.find(start).ok_or(status::BAD_NODE_ID_UNKNOWN)?;
        for name in names {
            node = (self.children(node).into_iter())
                .find(|&child| Self::reference(child).browse_name == *name)
                .ok_or(view::BAD_NO_MATCH)?;
        }
        Ok(node)
    }

    /// One page of `node`'s children from `offset`, at most `max` (0: all); the rest is left under a continuation point.
    fn page(&self, node: Node, offset: usize, max: u32, state: &mut Connection) -> BrowseResult {
        let children = self.children(node);
        let end = if max == 0 { children.len() } else { children.len().min(offset + max as usize) };
        let references = children[offset.min(end)..end].iter().map(|&child| Self::reference(child)).collect();
        let continuation_point = (end < children.len()).then(|| {
            state.next_point += 1;
            let point = state.next_point.to_le_bytes().to_vec();
            state.continuations.insert(point.clone(), (node, end, max));
            point
        });
        BrowseResult { status: 0, continuation_point, references }
    }

    /// Add: two Int32 in, their sum out; on the Simulation folder only.
    fn call(&self, object: &NodeId, method: &NodeId, inputs: &[Variant]) -> CallResult {
        let failed = |status, input_results| CallResult { status, input_results, outputs: Vec::new() };
        if self.find(method) != Some(Node::Add) || self.find(object) != Some(Node::Folder(Folder::Simulation)) {
            return failed(status::BAD_METHOD_INVALID, Vec::new());
        }
        match inputs {
            [Variant::Int32(a), Variant::Int32(b)] => match a.checked_add(*b) {
                Some(sum) => CallResult { status: 0, input_results: Vec::new(), outputs: vec![Variant::Int32(sum)] },
                None => failed(status::BAD_OUT_OF_RANGE, Vec::new()),
            },
            [_, _] => {
                let results = inputs
                    .iter()
                    .map(|input| if matches!(input, Variant::Int32(_)) { 0 } else { status::BAD_TYPE_MISMATCH })
                    .collect();
                failed(status::BAD_INVALID_ARGUMENT, results)
            }
            [] | [_] => failed(status::BAD_ARGUMENTS_MISSING, Vec::new()),
            _ => failed(status::BAD_TOO_MANY_ARGUMENTS, Vec::new()),
        }
    }

    fn write(&self, id: &NodeId, attribute: u32, value: Option<Variant>) -> u32 {
        let Some(node) = self.find(id) else { return status::BAD_NODE_ID_UNKNOWN };
        let Node::Variable(i) = node else { return status::BAD_NOT_WRITABLE };
        if attribute != VALUE_ATTRIBUTE || !writable(i) {
            return status::BAD_NOT_WRITABLE;
        }
        match value {
            Some(value) if value.type_id() == variable_type(i) && !matches!(value, Variant::Array(_)) => {
                match self.values.lock() {
                    Ok(mut values) => {
                        values[i] = value;
                        0
                    }
                    Err(_) => status::BAD_NOT_WRITABLE,
                }
            }
            _ => status::BAD_TYPE_MISMATCH,
        }
    }
}

/// Starts the simulator on `addr` (`host:port`, port 0 for any).
pub async fn start(addr: &str, config: SimulatorConfig) -> std::io::Result<Simulator> {
    let max_connections = config.faults.max_connections;
    let space = Arc::new(AddressSpace::new(&config));
    let faults = Arc::new(config.faults);
    let channels = Arc::new(AtomicU32::new(1));
    Simulator::serve(addr, max_connections, move |socket, stats| {
        let (space, faults, channels) = (space.clone(), faults.clone(), channels.clone());
        async move { serve(socket, &space, &faults, &channels, &stats).await }
    })
    .await
}

/// What one connection holds: its channel, its session, its limits.
struct Connection<'a> {
    /// The server's count of subscriptions, which this connection's leave when it ends.
    live: &'a std::sync::atomic::AtomicUsize,
    /// After Hello.
    limits: Option<Negotiated>,
    channel: Channel,
    session: Option<Session>,
    reassembly: Reassembly,
    /// Browses left off: where each continuation point resumes, and its page size.
    continuations: HashMap<Vec<u8>, (Node, usize, u32)>,
    next_point: u64,
    subscriptions: Vec<Subscription>,
    next_subscription: u32,
    /// Publish requests waiting for something to say: their request ids and handles.
    publishes: VecDeque<(u32, u32)>,
}

/// One subscription of the session.
struct Subscription {
    id: u32,
    interval: Duration,
    keep_alive_count: u32,
    items: Vec<Item>,
    /// The id the next monitored item gets.
    next_item: u32,
    next_sequence: u32,
    next_tick: Instant,
    /// Intervals since the last message.
    silent: u32,
    /// Changes sampled but not yet published.
    pending: Vec<(u32, DataValue)>,
    /// Messages sent but not acknowledged, for Republish.
    sent: VecDeque<NotificationMessage>,
}

/// One monitored item: its id, its client handle, its node, its absolute deadband, and the value last reported.
struct Item {
    id: u32,
    handle: u32,
    node: Node,
    deadband: f64,
    last: Option<Variant>,
}

/// MonitoringParameters as a request gives them: the client handle and the absolute
/// deadband (a DataChangeFilter of deadband type 1; anything else reports every change).
fn monitoring_parameters(r: &mut Reader<'_>) -> Result<(u32, f64)> {
    let handle = r.u32("a client handle")?;
    r.u64("a sampling interval")?;
    let filter = ExtensionObject::decode(r)?;
    r.u32("a queue size")?;
    r.u8("discard oldest")?;
    let deadband = match &filter.body {
        ExtensionBody::Binary(body) if body.len() >= 16 && body[4..8] == [1, 0, 0, 0] => {
            f64::from_le_bytes(body[8..16].try_into().unwrap_or_default())
        }
        _ => 0.0,
    };
    Ok((handle, deadband))
}

/// Messages kept for Republish.
const RETRANSMIT: usize = 32;

impl Subscription {
    /// Samples every item; what moved past its deadband waits to be published.
    fn sample(&mut self, space: &AddressSpace) {
        for Item { handle, node, deadband, last, .. } in &mut self.items {
            let Ok(value) = space.value(*node) else { continue };
            let moved = match (&last, crate::value::to_value(&value)) {
                (None, _) => true,
                (Some(old), Some(new)) => match (crate::value::to_value(old).map(|o| o.value), new.value) {
                    (Some(bifrost_core::Value::Float(a)), bifrost_core::Value::Float(b)) => (b - a).abs() > *deadband,
                    (Some(a), b) => a != b,
                    (None, _) => true,
                },
                (Some(_), None) => false,
            };
            if moved {
                let now = date_time(SystemTime::now());
                self.pending.retain(|(h, _)| h != handle);
                let data = DataValue {
                    value: Some(value.clone()),
                    source_timestamp: Some(now),
                    server_timestamp: Some(now),
                    ..DataValue::default()
                };
                self.pending.push((*handle, data));
                *last = Some(value);
            }
        }
    }

    /// The message due now, if any: the changes, or a keep-alive after enough silence.
    fn message(&mut self) -> Option<NotificationMessage> {
        let publish_time = date_time(SystemTime::now());
        if !self.pending.is_empty() {
            let message = NotificationMessage {
                sequence: self.next_sequence,
                publish_time,
                changes: std::mem::take(&mut self.pending),
            };
            self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
            self.silent = 0;
            self.sent.push_back(message.clone());
            if self.sent.len() > RETRANSMIT {
                self.sent.pop_front();
            }
            return Some(message);
        }
        self.silent += 1;
        (self.silent >= self.keep_alive_count).then(|| {
            self.silent = 0;
            NotificationMessage { sequence: self.next_sequence, publish_time, changes: Vec::new() }
        })
    }
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.live.fetch_sub(self.subscriptions.len(), Ordering::Relaxed);
    }
}

impl Connection<'_> {
    /// When the next subscription samples.
    fn next_tick(&self) -> Option<Instant> {
        self.subscriptions.iter().map(|s| s.next_tick).min()
    }

    /// Samples the subscriptions due and answers waiting Publish requests with what is due.
    fn tick(&mut self, space: &AddressSpace, now: Instant, out: &mut Vec<u8>) -> Result<()> {
        for index in 0..self.subscriptions.len() {
            if self.subscriptions[index].next_tick > now {
                continue;
            }
            let subscription = &mut self.subscriptions[index];
            subscription.sample(space);
            subscription.next_tick = now + subscription.interval;
            if self.publishes.is_empty() {
                continue; // the changes wait for the client's next Publish
            }
            let Some(message) = self.subscriptions[index].message() else { continue };
            let Some((request_id, handle)) = self.publishes.pop_front() else { continue };
            let id = self.subscriptions[index].id;
            let available: Vec<u32> = self.subscriptions[index].sent.iter().map(|m| m.sequence).collect();
            let mut body = Vec::new();
            respond(&mut body, subscription::encoding_id::PUBLISH_RESPONSE, handle, |out| {
                put_u32(out, id);
                put_u32(out, available.len() as u32);
                available.iter().for_each(|s| put_u32(out, *s));
                out.push(0); // no more notifications
                message.encode(out);
                put_u32(out, 0); // acknowledgement results
                put_u32(out, 0); // diagnostics
            });
            self.send(request_id, &body, out)?;
        }
        Ok(())
    }

    fn send(&mut self, request_id: u32, body: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let limits = self.limits.ok_or_else(|| Error::proto("no Hello"))?;
        transport::write_chunks(out, kind::MESSAGE, &mut self.channel, request_id, body, &limits, &NoSecurity)
    }

    /// The subscriptions are gone: every waiting Publish is answered BadNoSubscription.
    fn refuse_publishes(&mut self, out: &mut Vec<u8>) -> Result<()> {
        while let Some((request_id, handle)) = self.publishes.pop_front() {
            let mut body = Vec::new();
            fault(&mut body, handle, status::BAD_NO_SUBSCRIPTION);
            self.send(request_id, &body, out)?;
        }
        Ok(())
    }
}

struct Session {
    token: NodeId,
    activated: bool,
}

/// What we take in Hello, and offer in Acknowledge.
const OURS: Limits = Limits { receive_buffer: 65535, send_buffer: 65535, max_message: 16 << 20, max_chunks: 0 };

async fn serve(
    mut socket: TcpStream,
    space: &AddressSpace,
    faults: &Faults,
    channels: &AtomicU32,
    stats: &SimulatorStats,
) {
    let mut state = Connection {
        live: &space.subscriptions,
        limits: None,
        channel: Channel { channel_id: 0, token_id: 0, sequence: 1 },
        session: None,
        reassembly: Reassembly::default(),
        continuations: HashMap::new(),
        next_point: 0,
        subscriptions: Vec::new(),
        next_subscription: 1,
        publishes: VecDeque::new(),
    };
    let mut input = BytesMut::with_capacity(8192);
    let mut output = Vec::with_capacity(8192);
    let mut served: u64 = 0;
    loop {
        // A subscription's next sample wakes the connection as a request does.
        let read = match state.next_tick() {
            Some(at) => tokio::select! {
                read = faults.read(&mut socket, &mut input, stats) => Some(read),
                _ = tokio::time::sleep_until(at.into()) => None,
            },
            None => Some(faults.read(&mut socket, &mut input, stats).await),
        };
        match read {
            Some(true) => {}
            Some(false) => return,
            None => {
                if state.tick(space, Instant::now(), &mut output).is_err()
                    || !faults.write(&mut socket, &mut output).await
                {
                    return;
                }
                continue;
            }
        }
        loop {
            let len = match transport::frame_len(&input, OURS.receive_buffer) {
                Ok(Some(len)) if len <= input.len() => len,
                Ok(_) => break,
                Err(e) => {
                    error_message(&mut output, status::BAD_DECODING_ERROR, &e.message);
                    faults.write(&mut socket, &mut output).await;
                    return;
                }
            };
            let frame = input.split_to(len);
            served += 1;
            let n = stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
            let start = output.len();
            let answered = answer(space, channels, &mut state, &frame, &mut output);
            if faults.malforms(n) && output.len() > start {
                output[start..start + 3].copy_from_slice(b"XYZ"); // not a message type
            }
            match answered {
                Ok(true) if faults.drops(n) => output.truncate(start),
                Ok(_) => {}
                Err(e) => {
                    output.truncate(start);
                    error_message(&mut output, status::BAD_DECODING_ERROR, &e.message);
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

/// An ERR message: the server's last word before it closes the connection.
fn error_message(out: &mut Vec<u8>, code: u32, reason: &str) {
    transport::message(out, kind::ERROR, chunk::FINAL, |out| {
        out.extend_from_slice(&code.to_le_bytes());
        Some(reason).encode(out);
    });
}

/// Answers one message into `out`; `Ok(false)` when nothing is answered (a chunk of
/// a longer request, CloseSecureChannel). An error ends the connection with an ERR message.
fn answer(
    space: &AddressSpace,
    channels: &AtomicU32,
    state: &mut Connection,
    frame: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool> {
    let header = transport::Header::parse(frame)?;
    match header.kind {
        kind::HELLO => {
            let hello = Hello::parse(&frame[HEADER_LEN..])?;
            let theirs = Acknowledge { protocol_version: 0, limits: hello.limits };
            state.limits = Some(theirs.negotiate(&OURS));
            Acknowledge { protocol_version: 0, limits: OURS }.write(out);
            Ok(true)
        }
        kind::OPEN => {
            state.limits.ok_or_else(|| Error::proto("OpenSecureChannel before Hello"))?;
            open(channels, state, frame, out)?;
            Ok(true)
        }
        kind::CLOSE => Ok(false),
        kind::MESSAGE => {
            let limits = state.limits.ok_or_else(|| Error::proto("a message before Hello"))?;
            let chunk = transport::parse_chunk(frame)?;
            if chunk.channel_id != state.channel.channel_id || state.channel.channel_id == 0 {
                return Err(Error::proto(format!("a message on channel {}, not ours", chunk.channel_id)));
            }
            let request_id = chunk.request_id;
            let body = match state.reassembly.take(&chunk, &limits)? {
                Assembled::Message(_, body) => body,
                Assembled::Pending | Assembled::Aborted(..) => return Ok(false),
            };
            let mut response = Vec::new();
            match service(space, state, &body, &mut response) {
                Answered::Now => state.send(request_id, &response, out)?,
                // A Publish waits for the subscription's next message.
                Answered::Later(handle) => state.publishes.push_back((request_id, handle)),
                Answered::NowAndRefusePublishes => {
                    state.send(request_id, &response, out)?;
                    if state.subscriptions.is_empty() {
                        state.refuse_publishes(out)?;
                    }
                }
            }
            Ok(true)
        }
        other => Err(Error::proto(format!("a {} message", String::from_utf8_lossy(&other)))),
    }
}

/// OpenSecureChannel, issue or renew: a token (a new one on each renewal) for the lifetime asked, at least 10 s.
fn open(channels: &AtomicU32, state: &mut Connection, frame: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut r = Reader::new(&frame[HEADER_LEN..]);
    let channel_id = r.u32("a channel id")?;
    let uri = r.string("a security policy")?.unwrap_or_default();
    if uri != NoSecurity.uri() {
        return Err(Error::proto(format!("security policy '{uri}' is not offered (None only)")));
    }
    r.byte_string("a sender certificate")?;
    r.byte_string("a thumbprint")?;
    let (_sequence, request_id) = (r.u32("a sequence number")?, r.u32("a request id")?);
    let type_id = NodeId::decode(&mut r)?;
    if type_id != NodeId::numeric(0, channel_id::OPEN_SECURE_CHANNEL_REQUEST) {
        return Err(Error::proto("an OPN message that is not OpenSecureChannel"));
    }
    let header = RequestHeaderIn::decode(&mut r)?;
    r.u32("a protocol version")?;
    let renew = r.u32("a request type")? == 1;
    r.u32("a security mode")?;
    r.byte_string("a client nonce")?;
    let lifetime = r.u32("a lifetime")?.max(10_000);
    if renew {
        if channel_id != state.channel.channel_id {
            return Err(Error::proto("a renewal for another channel"));
        }
    } else {
        state.channel.channel_id = channels.fetch_add(1, Ordering::Relaxed);
    }
    state.channel.token_id += 1;
    let sequence = state.channel.sequence;
    state.channel.sequence = sequence.wrapping_add(1).max(1);
    transport::message(out, kind::OPEN, chunk::FINAL, |out| {
        out.extend_from_slice(&state.channel.channel_id.to_le_bytes());
        Some(NoSecurity.uri()).encode(out);
        None::<&[u8]>.encode(out);
        None::<&[u8]>.encode(out);
        out.extend_from_slice(&sequence.to_le_bytes());
        out.extend_from_slice(&request_id.to_le_bytes());
        NodeId::numeric(0, channel_id::OPEN_SECURE_CHANNEL_RESPONSE).encode(out);
        response_header(header.handle, 0).encode(out);
        out.extend_from_slice(&0u32.to_le_bytes()); // protocol version
        out.extend_from_slice(&state.channel.channel_id.to_le_bytes());
        out.extend_from_slice(&state.channel.token_id.to_le_bytes());
        out.extend_from_slice(&date_time(SystemTime::now()).to_le_bytes());
        out.extend_from_slice(&lifetime.to_le_bytes());
        Some(&[][..]).encode(out); // server nonce
    });
    Ok(())
}

/// What the simulator reads of a request header.
struct RequestHeaderIn {
    token: NodeId,
    handle: u32,
}

impl Decode<'_> for RequestHeaderIn {
    fn decode(r: &mut Reader<'_>) -> Result<RequestHeaderIn> {
        let token = NodeId::decode(r)?;
        r.u64("a timestamp")?;
        let handle = r.u32("a request handle")?;
        r.u32("return diagnostics")?;
        r.string("an audit entry id")?;
        r.u32("a timeout hint")?;
        ExtensionObject::decode(r)?;
        Ok(RequestHeaderIn { token, handle })
    }
}

fn response_header(handle: u32, service_result: u32) -> ResponseHeader {
    ResponseHeader {
        timestamp: date_time(SystemTime::now()),
        request_handle: handle,
        service_result,
        diagnostics: DiagnosticInfo::default(),
        string_table: Vec::new(),
    }
}

/// Writes a response: its encoding's id, a good header, then `fields`.
fn respond(out: &mut Vec<u8>, type_id: u32, handle: u32, fields: impl FnOnce(&mut Vec<u8>)) {
    NodeId::numeric(0, type_id).encode(out);
    response_header(handle, 0).encode(out);
    fields(out);
}

fn fault(out: &mut Vec<u8>, handle: u32, code: u32) {
    out.clear();
    NodeId::numeric(0, channel_id::SERVICE_FAULT).encode(out);
    response_header(handle, code).encode(out);
}

/// The one endpoint: security None, the Anonymous identity.
fn endpoint(out: &mut Vec<u8>, url: &str) {
    Some(url).encode(out);
    application(out);
    None::<&[u8]>.encode(out); // server certificate
    put_u32(out, 1); // security mode None
    Some(NoSecurity.uri()).encode(out);
    put_u32(out, 1); // one user token policy
    Some("anonymous").encode(out);
    put_u32(out, 0); // Anonymous
    None::<&str>.encode(out);
    None::<&str>.encode(out);
    None::<&str>.encode(out);
    Some("http://opcfoundation.org/UA-Profile/Transport/uatcp-uasc-uabinary").encode(out);
    out.push(0); // security level
}

fn application(out: &mut Vec<u8>) {
    ApplicationDescription {
        application_uri: Some("urn:bifrost:simulator".into()),
        product_uri: Some("urn:bifrost".into()),
        application_name: LocalizedText { locale: None, text: Some("Bifrost OPC UA Simulator".into()) },
        application_type: 0, // server
        discovery_urls: Vec::new(),
    }
    .encode(out);
}

/// A Browse or BrowseNext response of `results`.
fn browsed(out: &mut Vec<u8>, type_id: u32, handle: u32, results: &[BrowseResult]) {
    respond(out, type_id, handle, |out| {
        put_u32(out, results.len() as u32);
        results.iter().for_each(|result| result.encode(out));
        put_u32(out, 0); // diagnostics
    });
}

/// When a service request is answered.
enum Answered {
    Now,
    /// A Publish, answered when its subscription has something to say.
    Later(u32),
    /// DeleteSubscriptions: then the Publish requests waiting for no subscription are refused.
    NowAndRefusePublishes,
}

/// Answers one service request's body into `out`; a request that does not decode is a ServiceFault.
fn service(space: &AddressSpace, state: &mut Connection, body: &[u8], out: &mut Vec<u8>) -> Answered {
    let mut r = Reader::new(body);
    let (type_id, header) = match (NodeId::decode(&mut r), RequestHeaderIn::decode(&mut r)) {
        (Ok(type_id), Ok(header)) => (type_id, header),
        _ => {
            fault(out, 0, status::BAD_DECODING_ERROR);
            return Answered::Now;
        }
    };
    let Identifier::Numeric(id) = type_id.identifier else {
        fault(out, header.handle, status::BAD_SERVICE_UNSUPPORTED);
        return Answered::Now;
    };
    match answer_service(space, state, id, &header, &mut r, out) {
        Ok(answered) => answered,
        Err(code) => {
            fault(out, header.handle, code);
            Answered::Now
        }
    }
}
fn answer_service(
    space: &AddressSpace,
    state: &mut Connection,
    id: u32,
    header: &RequestHeaderIn,
    r: &mut Reader<'_>,
    out: &mut Vec<u8>,
) -> std::result::Result<Answered, u32> {
    let decoding = |_: Error| status::BAD_DECODING_ERROR;
    let handle = header.handle;
    let is_session = matches!(&state.session, Some(s) if s.token == header.token && s.activated);
    match id {
        subscription::encoding_id::CREATE_SUBSCRIPTION_REQUEST
        | subscription::encoding_id::MODIFY_SUBSCRIPTION_REQUEST
        | subscription::encoding_id::CREATE_MONITORED_ITEMS_REQUEST
        | subscription::encoding_id::MODIFY_MONITORED_ITEMS_REQUEST
        | subscription::encoding_id::DELETE_MONITORED_ITEMS_REQUEST
        | subscription::encoding_id::PUBLISH_REQUEST
        | subscription::encoding_id::REPUBLISH_REQUEST
        | subscription::encoding_id::DELETE_SUBSCRIPTIONS_REQUEST
            if !is_session =>
        {
            return Err(status::BAD_SESSION_ID_INVALID);
        }
        subscription::encoding_id::CREATE_SUBSCRIPTION_REQUEST => {
            let interval = f64::from_bits(r.u64("an interval").map_err(decoding)?).clamp(50.0, 3_600_000.0);
            r.u32("a lifetime count").map_err(decoding)?;
            let keep_alive_count = r.u32("a keep-alive count").map_err(decoding)?.clamp(1, 1000);
            let id = state.next_subscription;
            state.next_subscription += 1;
            let interval_duration = Duration::from_secs_f64(interval / 1000.0);
            space.subscriptions.fetch_add(1, Ordering::Relaxed);
            state.subscriptions.push(Subscription {
                id,
                interval: interval_duration,
                keep_alive_count,
                items: Vec::new(),
                next_item: 1,
                next_sequence: 1,
                next_tick: Instant::now() + interval_duration,
                silent: 0,
                pending: Vec::new(),
                sent: VecDeque::new(),
            });
            respond(out, subscription::encoding_id::CREATE_SUBSCRIPTION_RESPONSE, handle, |out| {
                put_u32(out, id);
                out.extend_from_slice(&interval.to_le_bytes());
                put_u32(out, keep_alive_count * 3);
                put_u32(out, keep_alive_count);
            });
        }
        subscription::encoding_id::MODIFY_SUBSCRIPTION_REQUEST => {
            let id = r.u32("a subscription id").map_err(decoding)?;
            let interval = f64::from_bits(r.u64("an interval").map_err(decoding)?).clamp(50.0, 3_600_000.0);
            r.u32("a lifetime count").map_err(decoding)?;
            let keep_alive_count = r.u32("a keep-alive count").map_err(decoding)?.clamp(1, 1000);
            let subscription =
                state.subscriptions.iter_mut().find(|s| s.id == id).ok_or(status::BAD_SUBSCRIPTION_ID_INVALID)?;
            subscription.interval = Duration::from_secs_f64(interval / 1000.0);
            subscription.keep_alive_count = keep_alive_count;
            subscription.next_tick = Instant::now() + subscription.interval;
            respond(out, subscription::encoding_id::MODIFY_SUBSCRIPTION_RESPONSE, handle, |out| {
                out.extend_from_slice(&interval.to_le_bytes());
                put_u32(out, keep_alive_count * 3);
                put_u32(out, keep_alive_count);
            });
        }
        subscription::encoding_id::MODIFY_MONITORED_ITEMS_REQUEST => {
            let id = r.u32("a subscription id").map_err(decoding)?;
            r.u32("timestamps to return").map_err(decoding)?;
            let changes =
                read_array(r, 24, "items to modify", |r| Ok((r.u32("an item id")?, monitoring_parameters(r)?)))
                    .map_err(decoding)?;
            too_many(changes.len(), space.max_nodes_per_read)?;
            let subscription =
                state.subscriptions.iter_mut().find(|s| s.id == id).ok_or(status::BAD_SUBSCRIPTION_ID_INVALID)?;
            let results: Vec<u32> = (changes.iter())
                .map(|&(item, (client_handle, deadband))| match subscription.items.iter_mut().find(|i| i.id == item) {
                    Some(found) => {
                        (found.handle, found.deadband) = (client_handle, deadband);
                        0
                    }
                    None => status::BAD_MONITORED_ITEM_ID_INVALID,
                })
                .collect();
            let interval = subscription.interval.as_secs_f64() * 1000.0;
            respond(out, subscription::encoding_id::MODIFY_MONITORED_ITEMS_RESPONSE, handle, |out| {
                put_u32(out, results.len() as u32);
                for status in &results {
                    put_u32(out, *status);
                    out.extend_from_slice(&interval.to_le_bytes());
                    put_u32(out, 1);
                    ExtensionObject { type_id: NodeId::null(), body: ExtensionBody::None }.encode(out);
                }
                put_u32(out, 0); // diagnostics
            });
        }
        subscription::encoding_id::DELETE_MONITORED_ITEMS_REQUEST => {
            let id = r.u32("a subscription id").map_err(decoding)?;
            let items = read_array(r, 4, "monitored item ids", |r| r.u32("an item id")).map_err(decoding)?;
            too_many(items.len(), space.max_nodes_per_read)?;
            let subscription =
                state.subscriptions.iter_mut().find(|s| s.id == id).ok_or(status::BAD_SUBSCRIPTION_ID_INVALID)?;
            let results: Vec<u32> = (items.iter())
                .map(|item| match subscription.items.iter().position(|i| i.id == *item) {
                    Some(at) => {
                        let removed = subscription.items.remove(at);
                        subscription.pending.retain(|(h, _)| *h != removed.handle);
                        0
                    }
                    None => status::BAD_MONITORED_ITEM_ID_INVALID,
                })
                .collect();
            respond(out, subscription::encoding_id::DELETE_MONITORED_ITEMS_RESPONSE, handle, |out| {
                put_u32(out, results.len() as u32);
                results.iter().for_each(|code| put_u32(out, *code));
                put_u32(out, 0); // diagnostics
            });
        }
        subscription::encoding_id::CREATE_MONITORED_ITEMS_REQUEST => {
            let id = r.u32("a subscription id").map_err(decoding)?;
            r.u32("timestamps to return").map_err(decoding)?;
            let items = read_array(r, 30, "items to create", |r| {
                let node = NodeId::decode(r)?;
                r.u32("an attribute id")?;
                r.string("an index range")?;
                QualifiedName::decode(r)?;
                r.u32("a monitoring mode")?;
                let (handle, deadband) = monitoring_parameters(r)?;
                Ok((node, handle, deadband))
            })
            .map_err(decoding)?;
            too_many(items.len(), space.max_nodes_per_read)?;
            let subscription =
                state.subscriptions.iter_mut().find(|s| s.id == id).ok_or(status::BAD_SUBSCRIPTION_ID_INVALID)?;
            let mut results = Vec::with_capacity(items.len());
            for (node, handle, deadband) in items {
                match space.find(&node).filter(|n| AddressSpace::data_type(*n).is_some()) {
                    Some(node) => {
                        let id = subscription.next_item;
                        subscription.next_item += 1;
                        subscription.items.push(Item { id, handle, node, deadband, last: None });
                        results.push((0, id));
                    }
                    None => results.push((status::BAD_NODE_ID_UNKNOWN, 0)),
                }
            }
            let interval = subscription.interval.as_secs_f64() * 1000.0;
            respond(out, subscription::encoding_id::CREATE_MONITORED_ITEMS_RESPONSE, handle, |out| {
                put_u32(out, results.len() as u32);
                for (status, item) in &results {
                    put_u32(out, *status);
                    put_u32(out, *item);
                    out.extend_from_slice(&interval.to_le_bytes());
                    put_u32(out, 1);
                    ExtensionObject { type_id: NodeId::null(), body: ExtensionBody::None }.encode(out);
                }
                put_u32(out, 0); // diagnostics
            });
        }
        subscription::encoding_id::PUBLISH_REQUEST => {
            let acks = read_array(r, 8, "acknowledgements", |r| {
                Ok((r.u32("a subscription id")?, r.u32("a sequence number")?))
            })
            .map_err(decoding)?;
            for (id, sequence) in acks {
                if let Some(s) = state.subscriptions.iter_mut().find(|s| s.id == id) {
                    s.sent.retain(|m| m.sequence != sequence);
                }
            }
            if state.subscriptions.is_empty() {
                return Err(status::BAD_NO_SUBSCRIPTION);
            }
            return Ok(Answered::Later(handle));
        }
        subscription::encoding_id::REPUBLISH_REQUEST => {
            let id = r.u32("a subscription id").map_err(decoding)?;
            let sequence = r.u32("a sequence number").map_err(decoding)?;
            let subscription =
                state.subscriptions.iter().find(|s| s.id == id).ok_or(status::BAD_SUBSCRIPTION_ID_INVALID)?;
            let message =
                subscription.sent.iter().find(|m| m.sequence == sequence).ok_or(status::BAD_MESSAGE_NOT_AVAILABLE)?;
            respond(out, subscription::encoding_id::REPUBLISH_RESPONSE, handle, |out| message.encode(out));
        }
        subscription::encoding_id::DELETE_SUBSCRIPTIONS_REQUEST => {
            let ids = read_array(r, 4, "subscription ids", |r| r.u32("a subscription id")).map_err(decoding)?;
            let results: Vec<u32> = ids
                .iter()
                .map(|id| match state.subscriptions.iter().position(|s| s.id == *id) {
                    Some(at) => {
                        state.subscriptions.remove(at);
                        space.subscriptions.fetch_sub(1, Ordering::Relaxed);
                        0
                    }
                    None => status::BAD_SUBSCRIPTION_ID_INVALID,
                })
                .collect();
            respond(out, subscription::encoding_id::DELETE_SUBSCRIPTIONS_RESPONSE, handle, |out| {
                put_u32(out, results.len() as u32);
                results.iter().for_each(|code| put_u32(out, *code));
                put_u32(out, 0); // diagnostics
            });
            return Ok(Answered::NowAndRefusePublishes);
        }
        service_id::GET_ENDPOINTS_REQUEST => {
            let url = r.string("an endpoint url").map_err(decoding)?.unwrap_or_default().to_string();
            respond(out, service_id::GET_ENDPOINTS_RESPONSE, handle, |out| {
                put_u32(out, 1);
                endpoint(out, &url);
            });
        }
        service_id::FIND_SERVERS_REQUEST => respond(out, service_id::FIND_SERVERS_RESPONSE, handle, |out| {
            put_u32(out, 1);
            application(out);
        }),
        service_id::CREATE_SESSION_REQUEST => {
            ApplicationDescription::decode(r).map_err(decoding)?;
            r.string("a server uri").map_err(decoding)?;
            let url = r.string("an endpoint url").map_err(decoding)?.unwrap_or_default().to_string();
            r.string("a session name").map_err(decoding)?;
            r.byte_string("a nonce").map_err(decoding)?;
            r.byte_string("a certificate").map_err(decoding)?;
            let timeout = f64::from_bits(r.u64("a timeout").map_err(decoding)?).clamp(10_000.0, 3_600_000.0);
            let number = state.channel.channel_id;
            let token = NodeId::numeric(1, 1_000_000 + number);
            state.session = Some(Session { token: token.clone(), activated: false });
            respond(out, service_id::CREATE_SESSION_RESPONSE, handle, |out| {
                NodeId::numeric(1, number).encode(out);
                token.encode(out);
                out.extend_from_slice(&timeout.to_le_bytes());
                Some(&[7u8; 32][..]).encode(out); // server nonce
                None::<&[u8]>.encode(out); // certificate
                put_u32(out, 1);
                endpoint(out, &url);
                put_u32(out, 0); // software certificates
                None::<&str>.encode(out); // signature algorithm
                None::<&[u8]>.encode(out); // signature
                put_u32(out, 0); // max request message size
            });
        }
        service_id::ACTIVATE_SESSION_REQUEST => {
            let session =
                state.session.as_mut().filter(|s| s.token == header.token).ok_or(status::BAD_SESSION_ID_INVALID)?;
            session.activated = true;
            respond(out, service_id::ACTIVATE_SESSION_RESPONSE, handle, |out| {
                Some(&[7u8; 32][..]).encode(out);
                put_u32(out, 0); // results
                put_u32(out, 0); // diagnostics
            });
        }
        service_id::CLOSE_SESSION_REQUEST => {
            state.session.take().filter(|s| s.token == header.token).ok_or(status::BAD_SESSION_ID_INVALID)?;
            respond(out, service_id::CLOSE_SESSION_RESPONSE, handle, |_| {});
        }
        service_id::READ_REQUEST
        | service_id::WRITE_REQUEST
        | view::encoding_id::BROWSE_REQUEST
        | view::encoding_id::BROWSE_NEXT_REQUEST
        | view::encoding_id::TRANSLATE_REQUEST
        | method::encoding_id::CALL_REQUEST => {
            match &state.session {
                Some(s) if s.token == header.token && s.activated => {}
                Some(s) if s.token == header.token => return Err(status::BAD_SESSION_NOT_ACTIVATED),
                _ => return Err(status::BAD_SESSION_ID_INVALID),
            }
            if id == method::encoding_id::CALL_REQUEST {
                let calls = read_array(r, 5, "methods to call", |r| {
                    let object = NodeId::decode(r)?;
                    let method = NodeId::decode(r)?;
                    let count = r.length(1, "input arguments")?.unwrap_or(0);
                    let inputs = (0..count).map(|_| Variant::decode(r)).collect::<Result<Vec<_>>>()?;
                    Ok((object, method, inputs))
                })
                .map_err(decoding)?;
                too_many(calls.len(), space.max_nodes_per_read)?;
                respond(out, method::encoding_id::CALL_RESPONSE, handle, |out| {
                    put_u32(out, calls.len() as u32);
                    for (object, method, inputs) in &calls {
                        space.call(object, method, inputs).encode(out);
                    }
                    put_u32(out, 0); // diagnostics
                });
            } else if id == view::encoding_id::TRANSLATE_REQUEST {
                let paths = read_array(r, 8, "browse paths", |r| {
                    let start = NodeId::decode(r)?;
                    let names = read_array(r, 8, "relative path elements", |r| {
                        NodeId::decode(r)?; // reference type: any hierarchical one leads to a child here
                        r.bytes(2, "a path element's direction and subtypes")?;
                        QualifiedName::decode(r)
                    })?;
                    Ok((start, names))
                })
                .map_err(decoding)?;
                too_many(paths.len(), space.max_nodes_per_read)?;
                respond(out, view::encoding_id::TRANSLATE_RESPONSE, handle, |out| {
                    put_u32(out, paths.len() as u32);
                    for (start, names) in &paths {
                        match space.follow(start, names) {
                            Ok(node) => {
                                put_u32(out, 0);
                                put_u32(out, 1);
                                ExpandedNodeId::from(AddressSpace::node_id(node)).encode(out);
                                put_u32(out, u32::MAX); // the whole path
                            }
                            Err(status) => {
                                put_u32(out, status);
                                put_u32(out, 0);
                            }
                        }
                    }
                    put_u32(out, 0); // diagnostics
                });
            } else if id == view::encoding_id::BROWSE_REQUEST {
                NodeId::decode(r).map_err(decoding)?; // view
                r.bytes(12, "a view's time and version").map_err(decoding)?;
                let max = r.u32("references per node").map_err(decoding)?;
                let nodes = read_array(r, 17, "nodes to browse", |r| {
                    let node = NodeId::decode(r)?;
                    r.u32("a direction")?;
                    NodeId::decode(r)?;
                    r.bytes(9, "a browse description's masks")?;
                    Ok(node)
                })
                .map_err(decoding)?;
                let results: Vec<BrowseResult> = nodes
                    .iter()
                    .map(|node| match space.find(node) {
                        Some(found) => space.page(found, 0, max, state),
                        None => BrowseResult::failed(status::BAD_NODE_ID_UNKNOWN),
                    })
                    .collect();
                browsed(out, view::encoding_id::BROWSE_RESPONSE, handle, &results);
            } else if id == view::encoding_id::BROWSE_NEXT_REQUEST {
                let release = r.u8("release").map_err(decoding)? != 0;
                let points = read_array(r, 4, "continuation points", |r| {
                    Ok(r.byte_string("a continuation point")?.unwrap_or_default().to_vec())
                })
                .map_err(decoding)?;
                let results: Vec<BrowseResult> = points
                    .iter()
                    .map(|point| match state.continuations.remove(point) {
                        Some(_) if release => BrowseResult::failed(0),
                        Some((node, offset, max)) => space.page(node, offset, max, state),
                        None => BrowseResult::failed(status::BAD_CONTINUATION_POINT_INVALID),
                    })
                    .collect();
                browsed(out, view::encoding_id::BROWSE_NEXT_RESPONSE, handle, &results);
            } else if id == service_id::READ_REQUEST {
                r.u64("a max age").map_err(decoding)?;
                r.u32("timestamps to return").map_err(decoding)?;
                let items = read_array(r, 16, "nodes to read", |r| {
                    let node = NodeId::decode(r)?;
                    let attribute = r.u32("an attribute id")?;
                    r.string("an index range")?;
                    QualifiedName::decode(r)?;
                    Ok((node, attribute))
                })
                .map_err(decoding)?;
                too_many(items.len(), space.max_nodes_per_read)?;
                respond(out, service_id::READ_RESPONSE, handle, |out| {
                    put_u32(out, items.len() as u32);
                    for (node, attribute) in &items {
                        space.read(node, *attribute).encode(out);
                    }
                    put_u32(out, 0); // diagnostics
                });
            } else {
                let items = read_array(r, 11, "nodes to write", |r| {
                    let node = NodeId::decode(r)?;
                    let attribute = r.u32("an attribute id")?;
                    r.string("an index range")?;
                    Ok((node, attribute, DataValue::decode(r)?.value))
                })
                .map_err(decoding)?;
                too_many(items.len(), space.max_nodes_per_read)?;
                respond(out, service_id::WRITE_RESPONSE, handle, |out| {
                    put_u32(out, items.len() as u32);
                    for (node, attribute, value) in items {
                        put_u32(out, space.write(&node, attribute, value));
                    }
                    put_u32(out, 0); // diagnostics
                });
            }
        }
        _ => return Err(status::BAD_SERVICE_UNSUPPORTED),
    }
    Ok(Answered::Now)
}

fn too_many(count: usize, most: u32) -> std::result::Result<(), u32> {
    if most != 0 && count > most as usize {
        return Err(status::BAD_TOO_MANY_OPERATIONS);
    }
    Ok(())
}
