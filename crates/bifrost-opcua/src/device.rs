//! An OPC UA server as a Bifrost device: tags are NodeId texts (`ns=2;s=Speed`,
//! `i=2258`, `nsu=urn:plant;s=Speed`), read with Read split to the server's
//! operation limits, prepared into columns once, and written with the type each
//! node's DataType gives (read once per session and kept).

use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bifrost_core::url::DeviceUrl;
use bifrost_core::{Error, Result, TypedValue, Value};
use bifrost_engine::runtime::{tcp_connector, RuntimeDriver};
use bifrost_engine::{
    Change, ChangeSink, Columns, Completion, DeviceCore, Driver, Job, LinkConfig, Outcome, Stats, Submitter,
    SubscribeOptions, SubscriptionHandle, TagInfo,
};
use rustc_hash::FxHashMap;

use crate::crypto::Policy;
use crate::encoding::Variant;
use crate::framing::{Framing, Reply, Request, Security, ServerInfo, SharedServerInfo};
use crate::node_id::{ExpandedNodeId, Identifier, NodeId};
use crate::pki::{Pki, ServerCheck};
use crate::secure_channel::status_error;
use crate::security::{Ends, Identity, MODE_NONE, MODE_SIGN, MODE_SIGN_AND_ENCRYPT};
use crate::session::{self, DATA_TYPE_ATTRIBUTE, VALUE_ATTRIBUTE};
use crate::status::{severity, Severity};
use crate::subscription;
use crate::value::{self, builtin};
use crate::view;
use bytes::Bytes;

/// The port OPC UA servers listen on unless told otherwise.
pub const DEFAULT_PORT: u16 = 4840;

/// The token lifetime asked for by default: an hour, renewed at 45 minutes.
const DEFAULT_CHANNEL_LIFETIME_MS: u32 = 3_600_000;

/// How to reach a server, from its URL.
#[derive(Debug, Clone)]
pub struct Opening {
    /// `host:port`.
    pub address: String,
    /// The host as dialled, which the server's certificate must name.
    pub host: String,
    /// The endpoint URL as Hello and CreateSession name it.
    pub endpoint_url: String,
    pub link: LinkConfig,
    /// The secure channel's token lifetime to ask for (`channel-lifetime`, ms); the server may grant another.
    pub channel_lifetime: Duration,
    pub security: SecurityOptions,
}

/// What the URL asks of security: the channel's policy and mode, the certificate store, and the user.
#[derive(Debug, Clone)]
pub struct SecurityOptions {
    pub policy: Policy,
    pub mode: u32,
    pub pki: Pki,
    /// Accept the server's certificate for this connection though no trusted one vouches for it.
    pub accept_once: bool,
    /// Whether the server's certificate must name the host dialled.
    pub check_host_name: bool,
    /// Whether the deprecated policies (Basic128Rsa15, Basic256: SHA-1) may be used.
    pub allow_deprecated: bool,
    pub user: User,
}

/// The user the URL names; a certificate user's files are read when connecting.
#[derive(Clone)]
pub enum User {
    Anonymous,
    Name { user: String, password: String },
    Certificate { certificate: PathBuf, key: PathBuf },
}

/// Never shows a password.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            User::Anonymous => write!(f, "Anonymous"),
            User::Name { user, .. } => write!(f, "Name({user}, ***)"),
            User::Certificate { certificate, .. } => write!(f, "Certificate({})", certificate.display()),
        }
    }
}

const MODES: [(&str, u32); 3] = [("None", MODE_NONE), ("Sign", MODE_SIGN), ("SignAndEncrypt", MODE_SIGN_AND_ENCRYPT)];

impl SecurityOptions {
    /// The security keys: `security-policy` and `security-mode` (either alone
    /// implies the other: SignAndEncrypt, Basic256Sha256), `pki-dir`,
    /// `accept-server-certificate`, `check-host-name`, `allow-deprecated-security`, and the user: `username` and `password`
    /// (or `user:password@` before the host), or `user-certificate` and `user-private-key`.
    fn from_url(url: &mut DeviceUrl) -> Result<SecurityOptions> {
        let policy = url.take::<String>("security-policy")?.map(|p| Policy::parse(&p)).transpose()?;
        let mode = match url.take::<String>("security-mode")? {
            None => None,
            Some(m) => Some(MODES.iter().find(|(name, _)| name.eq_ignore_ascii_case(&m)).map(|(_, n)| *n).ok_or_else(
                || Error::invalid_value(format!("unknown security mode '{m}' (known: None, Sign, SignAndEncrypt)")),
            )?),
        };
        let (policy, mode) = match (policy, mode) {
            (None, None) => (Policy::None, MODE_NONE),
            (Some(Policy::None), None) | (None, Some(MODE_NONE)) => (Policy::None, MODE_NONE),
            (Some(policy), None) => (policy, MODE_SIGN_AND_ENCRYPT),
            (None, Some(mode)) => (Policy::Basic256Sha256, mode),
            (Some(policy), Some(mode)) => (policy, mode),
        };
        if (policy == Policy::None) != (mode == MODE_NONE) {
            return Err(Error::invalid_value(format!(
                "security policy {} cannot go with security mode {}: None goes with None only",
                policy.name(),
                MODES.iter().find(|(_, n)| *n == mode).map_or("?", |(name, _)| name)
            )));
        }
        let pki = Pki::new(url.take::<String>("pki-dir")?.map(PathBuf::from).unwrap_or_else(crate::pki::default_root));
        let accept_once = url.take::<bool>("accept-server-certificate")?.unwrap_or(false);
        let check_host_name = url.take::<bool>("check-host-name")?.unwrap_or(true);
        let allow_deprecated = url.take::<bool>("allow-deprecated-security")?.unwrap_or(false);
        if policy.is_legacy() && !allow_deprecated {
            return Err(crate::crypto::deprecated(policy, "security policy"));
        }
        let (mut user, mut password) = match url.user_info.take() {
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (Some(user.to_string()), Some(password.to_string())),
                None => (Some(info), None),
            },
            None => (None, None),
        };
        user = url.take::<String>("username")?.or(user);
        password = url.take::<String>("password")?.or(password);
        let certificate = url.take::<String>("user-certificate")?;
        let key = url.take::<String>("user-private-key")?;
        let user = match (user, password, certificate, key) {
            (None, None, None, None) => User::Anonymous,
            (Some(user), password, None, None) => User::Name { user, password: password.unwrap_or_default() },
            (None, None, Some(certificate), Some(key)) => {
                User::Certificate { certificate: PathBuf::from(certificate), key: PathBuf::from(key) }
            }
            (None, Some(_), None, None) => return Err(Error::invalid_value("a password without a username")),
            (None, None, _, _) => {
                return Err(Error::invalid_value("a user certificate needs both user-certificate and user-private-key"))
            }
            _ => {
                return Err(Error::invalid_value("a user is either a username and password or a certificate, not both"))
            }
        };
        Ok(SecurityOptions { policy, mode, pki, accept_once, check_host_name, allow_deprecated, user })
    }
}

impl Opening {
    /// Parses `opc.tcp://[user:password@]host[:4840][/path]`, the security keys and the keys every protocol shares.
    pub fn from_url(mut url: DeviceUrl) -> Result<Opening> {
        if url.scheme != "opc.tcp" {
            return Err(Error::address(format!("'{}://' is not an OPC UA scheme", url.scheme)));
        }
        if url.host.is_empty() {
            return Err(Error::address("opc.tcp:// needs a host"));
        }
        let address = url.socket_address(DEFAULT_PORT);
        let endpoint_url = format!("opc.tcp://{address}{}", url.path);
        // Many requests on one session by default: a Publish waits on the server while reads go on.
        let link = LinkConfig::from_url_over(&mut url, LinkConfig { max_in_flight: 32, ..LinkConfig::default() })?;
        let lifetime_ms = url.take_in("channel-lifetime", 1000..=u32::MAX)?.unwrap_or(DEFAULT_CHANNEL_LIFETIME_MS);
        let security = SecurityOptions::from_url(&mut url)?;
        url.finish()?;
        Ok(Opening {
            address,
            host: url.host.clone(),
            endpoint_url,
            link,
            channel_lifetime: Duration::from_millis(u64::from(lifetime_ms)),
            security,
        })
    }

    /// Whether connecting needs the server's endpoint first: a secured channel, or a user.
    pub fn needs_endpoint(&self) -> bool {
        self.security.mode != MODE_NONE || !matches!(self.security.user, User::Anonymous)
    }

    /// What the connection's security needs before it dials: our certificate (made
    /// on first use), the endpoint for the policy and mode (by GetEndpoints), and
    /// the server's certificate from it, checked against the trust list.
    pub async fn security(&self) -> Result<Security> {
        let options = &self.security;
        let identity = Arc::new(match &options.user {
            User::Anonymous => Identity::Anonymous,
            User::Name { user, password } => Identity::UserName { user: user.clone(), password: password.clone() },
            User::Certificate { certificate, key } => crate::pki::user_identity(certificate, key)?,
        });
        if !self.needs_endpoint() {
            return Ok(Security { identity, allow_deprecated: options.allow_deprecated, ..Security::none() });
        }
        let endpoints = crate::discovery::endpoints(self).await?;
        let uri = options.policy.uri();
        let endpoint = endpoints
            .iter()
            .find(|e| e.security_policy_uri.as_deref() == Some(uri.as_str()) && e.security_mode == options.mode)
            .ok_or_else(|| {
                let offered: Vec<String> = endpoints
                    .iter()
                    .map(|e| {
                        let policy = e.security_policy_uri.as_deref().unwrap_or_default();
                        let mode = MODES.iter().find(|(_, n)| *n == e.security_mode).map_or("?", |(name, _)| name);
                        format!("{} {mode}", policy.rsplit('#').next().unwrap_or(policy))
                    })
                    .collect();
                let mode = MODES.iter().find(|(_, n)| *n == options.mode).map_or("?", |(name, _)| name);
                status_error(
                    crate::status::BAD_SECURITY_POLICY_REJECTED,
                    &format!(
                        "the server offers no endpoint with {} {mode} (it offers: {})",
                        options.policy.name(),
                        offered.join(", ")
                    ),
                )
            })?;
        let Some(server_certificate) = endpoint.server_certificate.clone().filter(|c| !c.is_empty()) else {
            if options.mode == MODE_NONE {
                // A user whose token the server takes as it is.
                return Ok(Security { identity, allow_deprecated: options.allow_deprecated, ..Security::none() });
            }
            return Err(crate::crypto::checks_failed("the server's endpoint carries no certificate"));
        };
        let pki = options.pki.clone();
        let host = options.check_host_name.then(|| self.host.clone());
        let (server_uri, accept_once) = (endpoint.server.application_uri.clone(), options.accept_once);
        let checked = tokio::task::spawn_blocking(move || {
            crate::crypto::random(1); // seeds aws-lc's generator here, not on the device's thread
            let own = pki.own()?;
            let check = ServerCheck { host: host.as_deref(), application_uri: server_uri.as_deref(), accept_once };
            let server = pki.check_server(&server_certificate, &check)?;
            Ok::<_, Error>(Ends { own, server_certificate, server })
        })
        .await
        .map_err(|_| Error::proto("checking the server's certificate stopped"))??;
        Ok(Security {
            policy: options.policy,
            mode: options.mode,
            ends: Some(Arc::new(checked)),
            identity,
            allow_deprecated: options.allow_deprecated,
        })
    }

    /// The framing of a connection to this server, secured as `security` has it, and what it learns of the server.
    pub fn framing(&self, security: Security) -> (Framing, SharedServerInfo) {
        let server = SharedServerInfo::default();
        let request_timeout = self.link.request_timeout;
        let framing =
            Framing::new(self.endpoint_url.clone(), server.clone(), request_timeout, self.channel_lifetime, security);
        (framing, server)
    }

    /// Starts the device's link on a runtime-thread driver.
    pub async fn open_runtime_driver(&self, framing: Framing) -> Result<Box<dyn Driver<Framing> + Send>> {
        let connector = tcp_connector(self.address.clone());
        Ok(Box::new(RuntimeDriver::open(framing, self.link.clone(), connector).await?))
    }
}

/// What the device keeps between calls.
pub struct DeviceState {
    server: SharedServerInfo,
    /// Each written node's built-in type, learned under the session numbered with it.
    types: Mutex<FxHashMap<NodeId, (u64, u8)>>,
    /// Each called method's input types, learned likewise.
    methods: Mutex<FxHashMap<NodeId, (u64, InputTypes)>>,
}

/// A method's input arguments' built-in types (`None`: not built in, so the argument's own).
type InputTypes = Arc<[Option<u8>]>;

impl DeviceState {
    fn server(&self) -> std::sync::MutexGuard<'_, ServerInfo> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each tag's NodeId on this server, or why it has none.
    fn resolve(&self, tags: &[Result<ExpandedNodeId>]) -> (Vec<Result<NodeId>>, u64) {
        let server = self.server();
        let nodes = tags.iter().map(|tag| tag.as_ref().map_err(Clone::clone)?.resolve(&server.namespaces)).collect();
        (nodes, server.session)
    }
}

fn parse_tags(tags: &[String]) -> Vec<Result<ExpandedNodeId>> {
    tags.iter().map(|tag| ExpandedNodeId::parse(tag)).collect()
}

/// The good tags in Reads of at most `most` nodes each: per Read, the tags' positions.
fn batches(nodes: &[Result<NodeId>], most: u32) -> Vec<Vec<usize>> {
    let good: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].is_ok()).collect();
    session::batches(good.len(), most).map(|range: Range<usize>| good[range].to_vec()).collect()
}

fn read_request(nodes: &[Result<NodeId>], batch: &[usize], attribute: u32) -> Request {
    let ids = batch.iter().map(|&i| (nodes[i].as_ref().expect("batches hold good nodes"), attribute));
    Request::service(session::read_attributes(ids), "Read")
}

/// A DataValue's value, or the error its status or emptiness makes.
fn value_of(data: &crate::encoding::DataValue, tag: &str) -> Result<TypedValue> {
    let status = data.status.unwrap_or(0);
    if severity(status) != Severity::Good {
        return Err(status_error(status, &format!("read of '{tag}'")));
    }
    data.value
        .as_ref()
        .and_then(value::to_value)
        .ok_or_else(|| Error::proto(format!("read of '{tag}': the node's value is empty (null)")))
}

/// A read of tags, each to its own value.
struct ReadJob {
    tags: Vec<String>,
    nodes: Vec<Result<NodeId>>,
    batches: Vec<Vec<usize>>,
    results: Vec<Option<Result<TypedValue>>>,
}

impl Job<Framing> for ReadJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        for (index, batch) in self.batches.iter().enumerate() {
            if let Err(e) = link.submit(read_request(&self.nodes, batch, VALUE_ATTRIBUTE), index as u32) {
                for &tag in batch {
                    self.results[tag] = Some(Err(e.clone()));
                }
            }
        }
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, _link: &mut Submitter<'_, Framing>) {
        let batch = &self.batches[index as usize];
        let values = reply.and_then(|reply| match reply {
            Reply::Response(body) => session::parse_read(&body, batch.len()),
            _ => Err(Error::proto("a Read was answered with another message type")),
        });
        for (at, &tag) in batch.iter().enumerate() {
            self.results[tag] = Some(match &values {
                Ok(values) => value_of(&values[at], &self.tags[tag]),
                Err(e) => Err(e.clone()),
            });
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        let ReadJob { nodes, results, .. } = *self;
        Outcome::Values(
            nodes
                .into_iter()
                .zip(results)
                .map(|(node, result)| {
                    node.and_then(|_| result.unwrap_or_else(|| Err(Error::proto("the tag was not read"))))
                })
                .collect(),
        )
    }
}

/// Browse paths followed to their nodes, in TranslateBrowsePathsToNodeIds of at
/// most the server's limit of paths each.
struct TranslateJob {
    start: NodeId,
    paths: Vec<Result<Vec<view::PathElement>>>,
    batches: Vec<Vec<usize>>,
    state: Arc<DeviceState>,
    results: Vec<Option<Result<TypedValue>>>,
}

impl Job<Framing> for TranslateJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        for (index, batch) in self.batches.iter().enumerate() {
            let paths: Vec<_> = (batch.iter())
                .map(|&i| (&self.start, self.paths[i].as_deref().expect("batches hold good paths")))
                .collect();
            let request = Request::service(view::translate(&paths), "TranslateBrowsePathsToNodeIds");
            if let Err(e) = link.submit(request, index as u32) {
                batch.iter().for_each(|&i| self.results[i] = Some(Err(e.clone())));
            }
        }
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, _link: &mut Submitter<'_, Framing>) {
        let batch = &self.batches[index as usize];
        let targets = reply.and_then(|reply| match reply {
            Reply::Response(body) => view::parse_translate(&body, batch.len()),
            _ => Err(Error::proto("a TranslateBrowsePathsToNodeIds was answered with another message type")),
        });
        let namespaces = self.state.server().namespaces.clone();
        for (at, &i) in batch.iter().enumerate() {
            self.results[i] = Some(match &targets {
                Ok(targets) => match &targets[at] {
                    Ok(target) if target.server_index != 0 => {
                        Err(Error::invalid_value("the browse path leads to a node in another server"))
                    }
                    Ok(target) => target
                        .resolve(&namespaces)
                        .map(|node| TypedValue { value: Value::String(node.to_string()), wide: false }),
                    Err(status) => Err(status_error(*status, "the browse path")),
                },
                Err(e) => Err(e.clone()),
            });
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        let TranslateJob { paths, results, .. } = *self;
        Outcome::Values(
            (paths.into_iter().zip(results))
                .map(|(path, result)| {
                    path.and_then(|_| result.unwrap_or_else(|| Err(Error::proto("the path was not followed"))))
                })
                .collect(),
        )
    }
}

/// Tags resolved under one session, and their Reads built once.
struct PreparedReads {
    session: u64,
    /// Per Read: its request, and where its tags' values go.
    reads: Vec<(Request, Vec<usize>)>,
    /// Tags with no NodeId on this server.
    unresolved: Vec<(u32, Error)>,
}

impl PreparedReads {
    fn new(state: &DeviceState, tags: &[Result<ExpandedNodeId>]) -> PreparedReads {
        let (nodes, session) = state.resolve(tags);
        let most = state.server().max_nodes_per_read;
        let reads = batches(&nodes, most)
            .into_iter()
            .map(|batch| (read_request(&nodes, &batch, VALUE_ATTRIBUTE), batch))
            .collect();
        let unresolved = nodes.iter().enumerate().filter_map(|(i, n)| Some((i as u32, n.clone().err()?))).collect();
        PreparedReads { session, reads, unresolved }
    }
}

/// A read of a plan into columns: a number per tag, straight from the response.
struct ColumnsJob {
    prepared: Arc<PreparedReads>,
    tags: Arc<[String]>,
    values: Vec<f64>,
    errors: Vec<(u32, Error)>,
}

impl Job<Framing> for ColumnsJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        for (index, (request, batch)) in self.prepared.reads.iter().enumerate() {
            if let Err(e) = link.submit(request.clone(), index as u32) {
                self.errors.extend(batch.iter().map(|&tag| (tag as u32, e.clone())));
            }
        }
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, _link: &mut Submitter<'_, Framing>) {
        let batch = &self.prepared.reads[index as usize].1;
        let mut numbers = vec![f64::NAN; batch.len()];
        let mut failed = Vec::new();
        let parsed = reply.and_then(|reply| match reply {
            Reply::Response(body) => session::parse_read_into(&body, &mut numbers, &mut failed),
            _ => Err(Error::proto("a Read was answered with another message type")),
        });
        if let Err(e) = parsed {
            self.errors.extend(batch.iter().map(|&tag| (tag as u32, e.clone())));
            return;
        }
        for (at, &tag) in batch.iter().enumerate() {
            self.values[tag] = numbers[at];
        }
        for (at, status) in failed {
            let tag = batch[at];
            let error = match status {
                0 => Error::invalid_value(format!("'{}' is not a number: read it with readTags", self.tags[tag])),
                code => status_error(code, &format!("read of '{}'", self.tags[tag])),
            };
            self.errors.push((tag as u32, error));
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        let ColumnsJob { prepared, values, mut errors, .. } = *self;
        errors.extend(prepared.unresolved.iter().cloned());
        errors.sort_by_key(|(tag, _)| *tag);
        errors.dedup_by_key(|(tag, _)| *tag);
        let mut values = values;
        for (tag, _) in &errors {
            values[*tag as usize] = f64::NAN;
        }
        let offsets = (0..=values.len() as u32).collect();
        Outcome::Columns(Columns { values, offsets, errors })
    }
}

/// Where a write of one tag stands.
enum WriteStep {
    Bad(Error),
    /// Its node, and its built-in type once known.
    Node(NodeId, Option<u8>),
    Done(Result<()>),
}

/// Writes: the types of nodes not yet known are read first (DataType and Value
/// in one Read), then every value goes in Writes split to the server's limit.
struct WriteJob {
    state: Arc<DeviceState>,
    session: u64,
    tags: Vec<String>,
    values: Vec<Value>,
    steps: Vec<WriteStep>,
    /// The tags each request was about: a type lookup while `typing`, then Writes.
    requests: Vec<Vec<usize>>,
    typing: bool,
}

/// The built-in type a DataType is encoded as: itself, or for a few common
/// subtypes their base; `None` when abstract (Number, BaseDataType) or not in namespace 0.
fn builtin_of(data_type: &NodeId) -> Option<u8> {
    match (data_type.namespace, &data_type.identifier) {
        (0, Identifier::Numeric(n @ 1..=25)) => Some(*n as u8),
        (0, Identifier::Numeric(290)) => Some(builtin::DOUBLE), // Duration
        (0, Identifier::Numeric(294)) => Some(builtin::DATE_TIME), // UtcTime
        (0, Identifier::Numeric(289)) => Some(builtin::UINT32), // Counter
        (0, Identifier::Numeric(29)) => Some(builtin::INT32),   // Enumeration
        _ => None,
    }
}

/// A node's built-in type from its DataType attribute; the value's own type when the
/// DataType does not say (abstract, or not in namespace 0).
fn builtin_type(data_type: &crate::encoding::DataValue, value: &crate::encoding::DataValue) -> Option<u8> {
    let known = match &data_type.value {
        Some(Variant::NodeId(id)) => builtin_of(id),
        _ => None,
    };
    known.or_else(|| value.value.as_ref().map(Variant::type_id).filter(|&t| t != 0))
}
impl WriteJob {
    fn submit_writes(&mut self, link: &mut Submitter<'_, Framing>) {
        self.typing = false;
        self.requests.clear();
        let mut ready = Vec::new();
        for (tag, step) in self.steps.iter_mut().enumerate() {
            if let WriteStep::Node(node, Some(type_id)) = step {
                match value::to_variant(&self.values[tag], *type_id) {
                    Ok(variant) => ready.push((tag, node.clone(), variant)),
                    Err(e) => *step = WriteStep::Done(Err(e)),
                }
            }
        }
        let most = self.state.server().max_nodes_per_write;
        for range in session::batches(ready.len(), most).filter(|r| !r.is_empty()) {
            let batch = &ready[range];
            let writes: Vec<(NodeId, Variant)> = batch.iter().map(|(_, node, v)| (node.clone(), v.clone())).collect();
            let tags: Vec<usize> = batch.iter().map(|(tag, _, _)| *tag).collect();
            let index = self.requests.len() as u32;
            match link.submit(Request::write(session::write(&writes), "Write"), index) {
                Ok(()) => self.requests.push(tags),
                Err(e) => {
                    for tag in tags {
                        self.steps[tag] = WriteStep::Done(Err(e.clone()));
                    }
                    self.requests.push(Vec::new());
                }
            }
        }
    }
}

impl Job<Framing> for WriteJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        let untyped: Vec<usize> =
            (0..self.steps.len()).filter(|&i| matches!(self.steps[i], WriteStep::Node(_, None))).collect();
        if untyped.is_empty() {
            return self.submit_writes(link);
        }
        self.typing = true;
        let items: Vec<(&NodeId, u32)> = untyped
            .iter()
            .flat_map(|&i| match &self.steps[i] {
                WriteStep::Node(node, _) => [(node, DATA_TYPE_ATTRIBUTE), (node, VALUE_ATTRIBUTE)],
                _ => unreachable!("only nodes are untyped"),
            })
            .collect();
        let request = Request::service(session::read_attributes(items.into_iter()), "Read (the nodes' types)");
        match link.submit(request, 0) {
            Ok(()) => self.requests.push(untyped),
            Err(e) => {
                for i in untyped {
                    self.steps[i] = WriteStep::Done(Err(e.clone()));
                }
            }
        }
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, link: &mut Submitter<'_, Framing>) {
        let tags = std::mem::take(&mut self.requests[index as usize]);
        let body = reply.and_then(|reply| match reply {
            Reply::Response(body) => Ok(body),
            _ => Err(Error::proto("a request was answered with another message type")),
        });
        if self.typing {
            let read = body.and_then(|body| session::parse_read(&body, tags.len() * 2));
            let mut types = self.state.types.lock().unwrap_or_else(|e| e.into_inner());
            for (at, &tag) in tags.iter().enumerate() {
                let WriteStep::Node(node, type_id) = &mut self.steps[tag] else { continue };
                let learned = read.as_ref().map_err(Clone::clone).and_then(|values| {
                    let (data_type, value) = (&values[2 * at], &values[2 * at + 1]);
                    let status = data_type.status.unwrap_or(0);
                    if severity(status) != Severity::Good {
                        return Err(status_error(status, &format!("write of '{}'", self.tags[tag])));
                    }
                    builtin_type(data_type, value).ok_or_else(|| {
                        Error::invalid_value(format!(
                            "write of '{}': the node's data type is not a built-in one",
                            self.tags[tag]
                        ))
                    })
                });
                match learned {
                    Ok(learned) => {
                        types.insert(node.clone(), (self.session, learned));
                        *type_id = Some(learned);
                    }
                    Err(e) => self.steps[tag] = WriteStep::Done(Err(e)),
                }
            }
            drop(types);
            return self.submit_writes(link);
        }
        let results = body.and_then(|body| session::parse_write(&body, tags.len()));
        for (at, &tag) in tags.iter().enumerate() {
            let result = match &results {
                Ok(statuses) if severity(statuses[at]) == Severity::Good => Ok(()),
                Ok(statuses) => Err(status_error(statuses[at], &format!("write of '{}'", self.tags[tag]))),
                Err(e) => Err(e.clone()),
            };
            self.steps[tag] = WriteStep::Done(result);
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        Outcome::Written(
            self.steps
                .into_iter()
                .map(|step| match step {
                    WriteStep::Bad(e) => Err(e),
                    WriteStep::Done(result) => result,
                    WriteStep::Node(..) => Err(Error::proto("the tag was not written")),
                })
                .collect(),
        )
    }
}

/// The references a page of Browse asks for: a folder of more comes in pages, by BrowseNext.
const BROWSE_PAGE: u32 = 1000;

/// ArrayDimensions: a variable's array shape.
const ARRAY_DIMENSIONS_ATTRIBUTE: u32 = 16;

/// A listing of a node's children: Browse and BrowseNext until the server has
/// no more, then one Read of each variable's DataType and ArrayDimensions.
struct BrowseJob {
    state: Arc<DeviceState>,
    from: NodeId,
    found: Vec<view::Reference>,
    /// The variables' NodeIds, and per variable its type and dimensions once read.
    variables: Vec<(usize, NodeId)>,
    types: Vec<(String, Vec<u32>)>,
    /// Per request, the variables (by position in `variables`) it read; empty for a Browse.
    requests: Vec<Range<usize>>,
    error: Option<Error>,
}

impl BrowseJob {
    fn submit(&mut self, request: Request, reads: Range<usize>, link: &mut Submitter<'_, Framing>) {
        let index = self.requests.len() as u32;
        self.requests.push(reads);
        if let Err(e) = link.submit(request, index) {
            self.fail(e);
        }
    }

    /// The first error ends the listing.
    fn fail(&mut self, error: Error) {
        self.error.get_or_insert(error);
    }

    /// Every page is in: reads what the variables are.
    fn read_types(&mut self, link: &mut Submitter<'_, Framing>) {
        let namespaces = self.state.server().namespaces.clone();
        self.variables = (self.found.iter().enumerate())
            .filter(|(_, r)| r.node_class == view::node_class::VARIABLE)
            .filter_map(|(i, r)| Some((i, r.node_id.resolve(&namespaces).ok()?)))
            .collect();
        self.types = vec![(String::new(), Vec::new()); self.variables.len()];
        // Two attributes a variable: half the server's limit of nodes a Read.
        let most = match self.state.server().max_nodes_per_read {
            0 => 0,
            n => (n / 2).max(1),
        };
        for range in session::batches(self.variables.len(), most) {
            if range.is_empty() {
                continue;
            }
            let items = self.variables[range.clone()]
                .iter()
                .flat_map(|(_, node)| [(node, DATA_TYPE_ATTRIBUTE), (node, ARRAY_DIMENSIONS_ATTRIBUTE)]);
            let request = Request::service(session::read_attributes(items.collect::<Vec<_>>().into_iter()), "Read");
            self.submit(request, range, link);
        }
    }
}

fn type_text(data_type: &crate::encoding::DataValue) -> String {
    match &data_type.value {
        Some(Variant::NodeId(id)) => match (id.namespace, &id.identifier) {
            (0, Identifier::Numeric(n @ 1..=25)) => value::type_name(*n as u8).into(),
            _ => id.to_string(),
        },
        _ => "BaseDataType".into(),
    }
}

fn dimensions(value: &crate::encoding::DataValue) -> Vec<u32> {
    match &value.value {
        Some(Variant::Array(array)) => {
            array.values.iter().filter_map(|v| if let Variant::UInt32(n) = v { Some(*n) } else { None }).collect()
        }
        _ => Vec::new(),
    }
}

impl Job<Framing> for BrowseJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        let request = Request::service(view::browse(&self.from, BROWSE_PAGE), "Browse");
        self.submit(request, 0..0, link);
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, link: &mut Submitter<'_, Framing>) {
        let reads = self.requests[index as usize].clone();
        let body = match reply {
            Ok(Reply::Response(body)) => body,
            Ok(_) => return self.fail(Error::proto("a browse was answered out of turn")),
            Err(e) => return self.fail(e),
        };
        if !reads.is_empty() {
            match session::parse_read(&body, reads.len() * 2) {
                Ok(values) => {
                    for (at, slot) in reads.enumerate() {
                        self.types[slot] = (type_text(&values[2 * at]), dimensions(&values[2 * at + 1]));
                    }
                }
                Err(e) => self.fail(e),
            }
            return;
        }
        let page = view::parse_browse(&body).and_then(|page| {
            if severity(page.status) == Severity::Bad {
                return Err(status_error(page.status, &format!("browse of '{}'", self.from)));
            }
            Ok(page)
        });
        match page {
            Ok(page) => {
                self.found.extend(page.references);
                match page.continuation_point.filter(|point| !point.is_empty()) {
                    Some(point) => {
                        let request = Request::service(view::browse_next(&point, false), "BrowseNext");
                        self.submit(request, 0..0, link);
                    }
                    None => self.read_types(link),
                }
            }
            Err(e) => self.fail(e),
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        if let Some(e) = self.error {
            return Outcome::Browsed(Err(e));
        }
        let mut types: Vec<Option<(String, Vec<u32>)>> = vec![None; self.found.len()];
        for ((at, _), found) in self.variables.iter().zip(self.types) {
            types[*at] = Some(found);
        }
        let listing = self
            .found
            .into_iter()
            .zip(types)
            .map(|(reference, typed)| {
                let (data_type, dimensions) = typed.unwrap_or_else(|| {
                    let class = match reference.node_class {
                        view::node_class::OBJECT => "Object".to_string(),
                        view::node_class::METHOD => "Method".to_string(),
                        view::node_class::VARIABLE => "BaseDataType".to_string(),
                        other => format!("NodeClass {other}"),
                    };
                    (class, Vec::new())
                });
                TagInfo {
                    name: reference.node_id.to_string(),
                    data_type,
                    dimensions,
                    display_name: reference.display_name.text.or(reference.browse_name.name),
                }
            })
            .collect();
        Outcome::Browsed(Ok(listing))
    }
}

/// Where a method call stands.
enum CallStep {
    /// Browsing the method for its InputArguments property.
    FindingArguments,
    ReadingArguments,
    Calling,
}

/// A method call: the method's input types come from its InputArguments
/// property (found by Browse, read once per session and kept); then one Call.
struct CallJob {
    state: Arc<DeviceState>,
    session: u64,
    object: NodeId,
    method: NodeId,
    args: Vec<Value>,
    step: CallStep,
    result: Option<Result<TypedValue>>,
}

/// A JavaScript value as a method argument of no declared type: numbers go as Double.
fn default_variant(value: &Value) -> Result<Variant> {
    let element = match value {
        Value::Array(items) => items.first().unwrap_or(&Value::Float(0.0)),
        other => other,
    };
    let type_id = match element {
        Value::Bool(_) => builtin::BOOLEAN,
        Value::String(_) => builtin::STRING,
        Value::Struct(_) | Value::Array(_) => return Err(Error::invalid_value("an object is not a method argument")),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => builtin::DOUBLE,
    };
    value::to_variant(value, type_id)
}

impl CallJob {
    fn what(&self) -> String {
        format!("call of method '{}' on '{}'", self.method, self.object)
    }

    fn done(&mut self, result: Result<TypedValue>) {
        self.result.get_or_insert(result);
    }

    fn submit(&mut self, request: Request, link: &mut Submitter<'_, Framing>) {
        if let Err(e) = link.submit(request, 0) {
            self.done(Err(e));
        }
    }

    /// Calls with the arguments typed by `types`; `declared`: the method said how many it takes.
    fn call(&mut self, types: &[Option<u8>], declared: bool, link: &mut Submitter<'_, Framing>) {
        if declared && types.len() != self.args.len() {
            let message =
                format!("{}: the method takes {} arguments, not {}", self.what(), types.len(), self.args.len());
            return self.done(Err(Error::invalid_value(message)));
        }
        let inputs = (self.args.iter().enumerate())
            .map(|(i, arg)| match types.get(i).copied().flatten() {
                Some(type_id) => value::to_variant(arg, type_id),
                None => default_variant(arg),
            })
            .collect::<Result<Vec<Variant>>>();
        match inputs {
            Ok(inputs) => {
                self.step = CallStep::Calling;
                let request = Request::write(crate::method::call(&self.object, &self.method, &inputs), "Call");
                self.submit(request, link);
            }
            Err(e) => self.done(Err(e)),
        }
    }

    /// The method's references are in: reads its InputArguments, if it has them.
    fn found(&mut self, body: &[u8], link: &mut Submitter<'_, Framing>) -> Result<()> {
        let page = view::parse_browse(body)?;
        if severity(page.status) == Severity::Bad {
            return Err(status_error(page.status, &self.what()));
        }
        let namespaces = self.state.server().namespaces.clone();
        let property = (page.references.iter())
            .find(|r| r.browse_name.name.as_deref() == Some("InputArguments"))
            .and_then(|r| r.node_id.resolve(&namespaces).ok());
        match property {
            // No InputArguments: the method takes none, or does not say.
            None => self.call(&[], false, link),
            Some(property) => {
                self.step = CallStep::ReadingArguments;
                self.submit(Request::service(session::read(&[property], VALUE_ATTRIBUTE), "Read"), link);
            }
        }
        Ok(())
    }

    /// The InputArguments' built-in types, kept for the session.
    fn input_types(&self, body: &[u8]) -> Result<InputTypes> {
        let values = session::parse_read(body, 1)?;
        let arguments = match &values[0].value {
            Some(Variant::Array(array)) => array.values.clone(),
            Some(other) => vec![other.clone()],
            None => Vec::new(),
        };
        let types = (arguments.iter())
            .map(|argument| match argument {
                Variant::ExtensionObject(object) => {
                    Ok(builtin_of(&crate::method::Argument::from_extension_object(object)?.data_type))
                }
                _ => Err(Error::proto(format!("{}: its InputArguments are not Arguments", self.what()))),
            })
            .collect::<Result<InputTypes>>()?;
        let mut methods = self.state.methods.lock().unwrap_or_else(|e| e.into_inner());
        methods.insert(self.method.clone(), (self.session, types.clone()));
        Ok(types)
    }

    fn outputs(&self, body: &[u8]) -> Result<TypedValue> {
        let result = crate::method::parse_call(body)?;
        if severity(result.status) == Severity::Bad {
            let mut error = status_error(result.status, &self.what());
            let bad = result.input_results.iter().enumerate().find(|(_, code)| severity(**code) == Severity::Bad);
            if let Some((i, code)) = bad {
                error.message.push_str(&format!(" (argument {i}: {})", crate::status::describe(*code)));
            }
            return Err(error);
        }
        let outputs: Vec<TypedValue> = result.outputs.iter().filter_map(value::to_value).collect();
        let wide = outputs.iter().any(|output| output.wide);
        Ok(TypedValue { value: Value::Array(outputs.into_iter().map(|output| output.value).collect()), wide })
    }
}

impl Job<Framing> for CallJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        let known = self.state.methods.lock().unwrap_or_else(|e| e.into_inner()).get(&self.method).cloned();
        match known.filter(|(session, _)| *session == self.session) {
            Some((_, types)) => self.call(&types, true, link),
            None => self.submit(Request::service(view::browse(&self.method, 0), "Browse"), link),
        }
    }

    fn reply(&mut self, _index: u32, reply: Result<Reply>, link: &mut Submitter<'_, Framing>) {
        let body = match reply {
            Ok(Reply::Response(body)) => body,
            Ok(_) => return self.done(Err(Error::proto("a call was answered out of turn"))),
            Err(e) => return self.done(Err(e)),
        };
        let step = match self.step {
            CallStep::FindingArguments => self.found(&body, link),
            CallStep::ReadingArguments => self.input_types(&body).map(|types| self.call(&types, true, link)),
            CallStep::Calling => self.outputs(&body).map(|outputs| self.done(Ok(outputs))),
        };
        if let Err(e) = step {
            self.done(Err(e));
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        Outcome::Values(vec![self.result.unwrap_or_else(|| Err(Error::proto("the method was not called")))])
    }
}

/// Publish requests kept on the wire: one answered while the next waits.
const PUBLISH_PIPELINE: usize = 2;

/// Publishing intervals without a notification before the server sends a keep-alive.
const KEEP_ALIVE_COUNT: u32 = 10;

/// A subscription lives until it is ended: its calls wait as long as this.
const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// BadNoSubscription and BadSubscriptionIdInvalid: the subscription is gone.
const SUBSCRIPTION_GONE: [u32; 2] = [0x8079_0000, 0x8028_0000];

/// BadTooManyPublishRequests: the server holds enough of ours.
const TOO_MANY_PUBLISH_REQUESTS: u32 = 0x8078_0000;

/// BadTimeout.
const BAD_TIMEOUT: u32 = 0x800A_0000;

/// What a subscription and its handle share: its id on the server, once known,
/// each tag's monitored item id once the items are made (`None` for a tag not
/// watched), and whether it is ending.
struct SubscriptionShared {
    id: Mutex<Option<u32>>,
    items: Mutex<Option<Vec<Option<u32>>>>,
    /// The settings the subscription runs with now: a subscription made again takes them.
    options: Mutex<SubscribeOptions>,
    stopping: std::sync::atomic::AtomicBool,
}

impl SubscriptionShared {
    fn new(options: SubscribeOptions) -> SubscriptionShared {
        SubscriptionShared {
            id: Mutex::default(),
            items: Mutex::default(),
            options: Mutex::new(options),
            stopping: std::sync::atomic::AtomicBool::default(),
        }
    }

    fn options(&self) -> SubscribeOptions {
        *self.options.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubscriptionStep {
    Create,
    /// CreateMonitoredItems of the batch numbered so.
    Items(usize),
    Publish,
    Republish,
    Delete,
    /// After a broken connection: a Read that waits for the connection to come back.
    Probe,
    Transfer,
}

impl SubscriptionStep {
    /// The request index that names the step: a subscription sends requests as
    /// long as it lives, so its steps are not kept in a list that would only grow.
    fn index(self) -> u32 {
        match self {
            SubscriptionStep::Create => 0,
            SubscriptionStep::Publish => 1,
            SubscriptionStep::Republish => 2,
            SubscriptionStep::Delete => 3,
            SubscriptionStep::Probe => 4,
            SubscriptionStep::Transfer => 5,
            SubscriptionStep::Items(batch) => 6 + batch as u32,
        }
    }

    fn of(index: u32) -> SubscriptionStep {
        match index {
            0 => SubscriptionStep::Create,
            1 => SubscriptionStep::Publish,
            2 => SubscriptionStep::Republish,
            3 => SubscriptionStep::Delete,
            4 => SubscriptionStep::Probe,
            5 => SubscriptionStep::Transfer,
            batch => SubscriptionStep::Items(batch as usize - 6),
        }
    }
}

/// How long a probe waits for the connection before the job asks again (and so
/// how soon a subscription ended during an outage is over).
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// A subscription's publishing intervals the server keeps it without a Publish:
/// long enough to outlast a reconnect (a minute), and three keep-alives at least.
fn parameters(options: &SubscribeOptions) -> subscription::SubscriptionParameters {
    let interval_ms = options.interval.as_secs_f64() * 1000.0;
    subscription::SubscriptionParameters {
        publishing_interval_ms: interval_ms,
        lifetime_count: ((60_000.0 / interval_ms.max(1.0)).ceil() as u32).max(KEEP_ALIVE_COUNT * 3),
        max_keep_alive_count: KEEP_ALIVE_COUNT,
        max_notifications_per_publish: 0,
    }
}

/// A subscription: CreateSubscription, its monitored items, then Publish after
/// Publish (two on the wire), each acknowledging what came; a gap in the
/// sequence numbers is filled by Republish. A broken connection does not end it:
/// a probe waits for the connection to come back (the framing activates the
/// session again), Publish goes on, and if the session was lost the subscription
/// is transferred to the new one, or made again with the tags still watched. It
/// ends when the server answers that it is gone after it was ended, or the device closes.
struct SubscriptionJob {
    tags: Vec<String>,
    nodes: Vec<Result<NodeId>>,
    sink: ChangeSink,
    shared: Arc<SubscriptionShared>,
    subscription_id: u32,
    /// The server's MaxMonitoredItemsPerCall (0: no limit), and the tags' positions per CreateMonitoredItems.
    most_items: u32,
    item_batches: Vec<Vec<usize>>,
    /// Each tag's monitored item id, as the batches are answered; batches not answered yet.
    items: Vec<Option<u32>>,
    batches_left: usize,
    /// Whether every monitored item was made on the server (Publish may go).
    made: bool,
    /// Publish requests outstanding.
    publishing: usize,
    /// Whether a probe waits for the connection to come back (other requests' failures then say nothing new).
    probing: bool,
    /// Whether the subscription is being transferred to a new session (or made again).
    transferring: bool,
    acknowledgements: Vec<(u32, u32)>,
    /// The sequence number the next data message should carry, and those of the last messages delivered.
    next_sequence: Option<u32>,
    delivered: std::collections::VecDeque<u32>,
    /// Per tag: the source time (100 ns ticks) and status of the last sample delivered.
    last_samples: Vec<(i64, u32)>,
    error: Option<Error>,
}

/// The sequence numbers of delivered messages kept, so none is delivered twice.
const DELIVERED_KEPT: usize = 64;

/// A DataValue's source time in ms since 1970 (0 when it has none).
fn source_ms(data: &crate::encoding::DataValue) -> f64 {
    data.source_timestamp
        .or(data.server_timestamp)
        .map_or(0.0, |ticks| (ticks - crate::secure_channel::EPOCH_1601) as f64 / 10_000.0)
}

impl SubscriptionJob {
    fn submit(&mut self, step: SubscriptionStep, request: Request, link: &mut Submitter<'_, Framing>) {
        let index = step.index();
        let submitted = match step {
            SubscriptionStep::Probe => link.submit_until(request, index, link.now() + PROBE_WAIT),
            _ => link.submit(request, index),
        };
        match submitted {
            Ok(()) if step == SubscriptionStep::Publish => self.publishing += 1,
            Ok(()) => {}
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// Publish requests up to the pipeline's depth.
    fn publish(&mut self, link: &mut Submitter<'_, Framing>) {
        while self.publishing < PUBLISH_PIPELINE && !self.shared.stopping() && self.error.is_none() {
            let acknowledgements = std::mem::take(&mut self.acknowledgements);
            self.submit(SubscriptionStep::Publish, Request::publish(subscription::publish(&acknowledgements)), link);
        }
    }

    /// Hands a message's changes on, once: a message that came again (by Republish
    /// after a reconnect, say) is acknowledged but not delivered twice, and so is
    /// a sample a server sends again in a new message once a session is activated
    /// again (the same source time and status as the tag's last one).
    fn deliver(&mut self, message: &subscription::NotificationMessage) {
        if message.changes.is_empty() {
            return;
        }
        self.acknowledgements.push((self.subscription_id, message.sequence));
        if self.delivered.contains(&message.sequence) {
            return;
        }
        if self.delivered.len() == DELIVERED_KEPT {
            self.delivered.pop_front();
        }
        self.delivered.push_back(message.sequence);
        let changes: Vec<Change> = (message.changes.iter())
            .filter_map(|(handle, data)| {
                let tag = self.tags.get(*handle as usize)?;
                let sample = (data.source_timestamp.unwrap_or(0), data.status.unwrap_or(0));
                let last = self.last_samples.get_mut(*handle as usize)?;
                if sample.0 != 0 && *last == sample {
                    return None;
                }
                *last = sample;
                Some((*handle, value_of(data, tag), source_ms(data)))
            })
            .collect();
        if !changes.is_empty() {
            (self.sink)(changes);
        }
    }

    /// Acknowledges again what the server still holds and was delivered: the
    /// acknowledgements of a Publish lost with its connection.
    fn acknowledge_again(&mut self, available: &[u32], current: u32) {
        for &sequence in available.iter().filter(|&&s| s != current && self.delivered.contains(&s)) {
            if !self.acknowledgements.contains(&(self.subscription_id, sequence)) {
                self.acknowledgements.push((self.subscription_id, sequence));
            }
        }
    }

    /// CreateSubscription, with the settings it runs with now.
    fn create(&mut self, link: &mut Submitter<'_, Framing>) {
        self.made = false;
        let request = subscription::create_subscription(&parameters(&self.shared.options()));
        self.submit(SubscriptionStep::Create, Request::service(request, "CreateSubscription"), link);
    }

    fn created(&mut self, body: &[u8], link: &mut Submitter<'_, Framing>) -> Result<()> {
        let created = subscription::parse_create_subscription(body)?;
        self.subscription_id = created.subscription_id;
        self.next_sequence = None;
        self.delivered.clear();
        *self.shared.id.lock().unwrap_or_else(|e| e.into_inner()) = Some(created.subscription_id);
        if self.shared.stopping() {
            // Ended before it was made: delete it at once.
            let request =
                Request::service(subscription::delete_subscriptions(&[created.subscription_id]), "DeleteSubscriptions");
            self.submit(SubscriptionStep::Delete, request, link);
            return Ok(());
        }
        // The tags still watched: all at first; made again, not those removed since.
        let watched = self.shared.items.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let nodes: Vec<Result<NodeId>> = (self.nodes.iter().enumerate())
            .map(|(i, node)| match &watched {
                Some(items) if items.get(i).copied().flatten().is_none() => Err(Error::invalid_value("not watched")),
                _ => node.clone(),
            })
            .collect();
        // As many calls as the server's MaxMonitoredItemsPerCall asks.
        self.item_batches = batches(&nodes, self.most_items);
        self.batches_left = self.item_batches.len();
        self.items = vec![None; self.nodes.len()];
        let options = self.shared.options();
        for number in 0..self.item_batches.len() {
            let items: Vec<subscription::ItemToCreate> = (self.item_batches[number].iter())
                .map(|&i| subscription::ItemToCreate {
                    node: nodes[i].as_ref().expect("batches hold good nodes").clone(),
                    client_handle: i as u32,
                    sampling_interval_ms: options.interval.as_secs_f64() * 1000.0,
                    deadband: options.deadband,
                })
                .collect();
            let request = subscription::create_monitored_items(created.subscription_id, &items);
            self.submit(SubscriptionStep::Items(number), Request::service(request, "CreateMonitoredItems"), link);
        }
        if self.item_batches.is_empty() {
            self.all_made(link);
        }
        Ok(())
    }

    fn items_created(&mut self, number: usize, body: &[u8], link: &mut Submitter<'_, Framing>) -> Result<()> {
        let batch = std::mem::take(&mut self.item_batches[number]);
        let results = subscription::parse_create_monitored_items(body, batch.len())?;
        for (&i, &(status, id)) in batch.iter().zip(&results) {
            self.items[i] = (severity(status) != Severity::Bad).then_some(id);
        }
        let refused: Vec<Change> = (batch.iter().zip(&results))
            .filter(|(_, (status, _))| severity(*status) == Severity::Bad)
            .map(|(&i, (status, _))| {
                (i as u32, Err(status_error(*status, &format!("subscription to '{}'", self.tags[i]))), 0.0)
            })
            .collect();
        if !refused.is_empty() {
            (self.sink)(refused);
        }
        self.batches_left -= 1;
        if self.batches_left == 0 {
            self.all_made(link);
        }
        Ok(())
    }

    /// Every item made: the subscription can be modified from now, and publishes.
    fn all_made(&mut self, link: &mut Submitter<'_, Framing>) {
        *self.shared.items.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.items.clone());
        self.made = true;
        self.transferring = false;
        self.publish(link);
    }

    /// Republish of each notification the server still holds from `expected` on, before `before`.
    fn republish(&mut self, available: &[u32], expected: u32, before: u32, link: &mut Submitter<'_, Framing>) {
        let missed = available.iter().filter(|&&s| s >= expected && s < before && !self.delivered.contains(&s));
        for missing in missed.copied().collect::<Vec<_>>() {
            let request = Request::service(subscription::republish(self.subscription_id, missing), "Republish");
            self.submit(SubscriptionStep::Republish, request, link);
        }
    }

    fn published(&mut self, body: &[u8], link: &mut Submitter<'_, Framing>) -> Result<()> {
        let published = match subscription::parse_publish(body) {
            Err(e) if e.opcua.is_some_and(|s| SUBSCRIPTION_GONE.contains(&s.code)) => {
                if !self.shared.stopping() && !self.transferring {
                    // A new session (the last one was lost): bring the subscription over, or make it again.
                    self.transferring = true;
                    let request = subscription::transfer_subscriptions(&[self.subscription_id]);
                    self.submit(SubscriptionStep::Transfer, Request::service(request, "TransferSubscriptions"), link);
                }
                return Ok(());
            }
            // The server holds enough of ours: one fewer on the wire.
            Err(e) if e.opcua.is_some_and(|s| s.code == TOO_MANY_PUBLISH_REQUESTS) => return Ok(()),
            // It held this one past a timeout of its own: send another.
            Err(e) if e.opcua.is_some_and(|s| s.code == BAD_TIMEOUT) => {
                self.publish(link);
                return Ok(());
            }
            other => other?,
        };
        if published.subscription_id != self.subscription_id {
            return Err(Error::proto(format!(
                "a notification for subscription {}, not ours",
                published.subscription_id
            )));
        }
        let message = &published.message;
        self.acknowledge_again(&published.available, message.sequence);
        if !message.changes.is_empty() {
            // A gap: the messages between were lost on the way; the server keeps them for a Republish.
            if let Some(expected) = self.next_sequence.filter(|&expected| message.sequence > expected) {
                self.republish(&published.available, expected, message.sequence, link);
            }
            self.next_sequence = Some(message.sequence.wrapping_add(1));
        }
        self.deliver(message);
        self.publish(link);
        Ok(())
    }

    /// TransferSubscriptions was answered: publish on, after a Republish of what
    /// was missed; refused (the server lost it too), the subscription is made again.
    fn transferred(&mut self, body: &[u8], link: &mut Submitter<'_, Framing>) -> Result<()> {
        let results = subscription::parse_transfer_subscriptions(body, 1);
        match results.as_deref() {
            Ok([(status, available)]) if severity(*status) != Severity::Bad => {
                if let Some(expected) = self.next_sequence {
                    self.republish(available, expected, u32::MAX, link);
                }
                self.transferring = false;
                self.publish(link);
            }
            _ => self.create(link),
        }
        Ok(())
    }

    /// A request failed with the connection: wait for it to come back, unless the job is over.
    fn connection_lost(&mut self, error: Error, link: &mut Submitter<'_, Framing>) {
        if error.code == bifrost_core::ErrorCode::Closed || self.shared.stopping() {
            self.error.get_or_insert(error);
            return;
        }
        self.probing = true;
        self.submit(SubscriptionStep::Probe, Request::probe(), link);
    }
}

impl Job<Framing> for SubscriptionJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        let unresolved: Vec<Change> = (self.nodes.iter().enumerate())
            .filter_map(|(i, node)| Some((i as u32, Err(node.as_ref().err()?.clone()), 0.0)))
            .collect();
        if !unresolved.is_empty() {
            (self.sink)(unresolved);
        }
        if self.nodes.iter().all(Result::is_err) {
            return;
        }
        self.create(link);
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, link: &mut Submitter<'_, Framing>) {
        let step = SubscriptionStep::of(index);
        match step {
            SubscriptionStep::Publish => self.publishing -= 1,
            SubscriptionStep::Probe => self.probing = false,
            _ => {}
        }
        let body = match reply {
            Ok(Reply::Response(body)) => body,
            Ok(_) => Bytes::new(),
            // One probe at a time: the others' failures say nothing it will not find out.
            Err(e) if self.probing && e.code != bifrost_core::ErrorCode::Closed => return,
            Err(e) => return self.connection_lost(e, link),
        };
        let handled = match step {
            SubscriptionStep::Create => self.created(&body, link),
            SubscriptionStep::Items(number) => self.items_created(number, &body, link),
            SubscriptionStep::Publish => self.published(&body, link),
            SubscriptionStep::Republish => subscription::parse_republish(&body).map(|message| self.deliver(&message)),
            // Whether a deletion found its subscription matters to no one.
            SubscriptionStep::Delete => Ok(()),
            SubscriptionStep::Transfer => self.transferred(&body, link),
            // The connection is back: go on where the subscription was.
            SubscriptionStep::Probe if self.made => {
                self.publish(link);
                Ok(())
            }
            SubscriptionStep::Probe => {
                // Broken while it was being made: a half-made one is deleted, not left behind.
                if self.subscription_id != 0 {
                    let request = subscription::delete_subscriptions(&[self.subscription_id]);
                    self.submit(SubscriptionStep::Delete, Request::service(request, "DeleteSubscriptions"), link);
                }
                self.create(link);
                Ok(())
            }
        };
        if let Err(e) = handled {
            self.error.get_or_insert(e);
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        let ended = match self.error {
            Some(e) if !self.shared.stopping() => Err(e),
            _ => Ok(TypedValue { value: Value::Bool(true), wide: false }),
        };
        Outcome::Values(vec![ended])
    }
}

/// Deletes a subscription; its answer matters to no one (the subscription's own job ends on the server's word).
struct DeleteSubscriptionJob(u32);

impl Job<Framing> for DeleteSubscriptionJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        let request = Request::service(subscription::delete_subscriptions(&[self.0]), "DeleteSubscriptions");
        let _ = link.submit(request, 0);
    }

    fn reply(&mut self, _index: u32, _reply: Result<Reply>, _link: &mut Submitter<'_, Framing>) {}

    fn finish(self: Box<Self>) -> Outcome {
        Outcome::Values(Vec::new())
    }
}

/// The handle of one subscription: modify and remove run as calls of their own
/// on the device, beside the subscription's Publish loop.
struct OpcuaSubscription {
    device: Rc<Core>,
    shared: Arc<SubscriptionShared>,
}

impl OpcuaSubscription {
    /// The subscription's id and its tags' monitored item ids, once it is made.
    fn made(&self) -> Result<(u32, Vec<Option<u32>>)> {
        if self.shared.stopping() {
            return Err(Error::closed("the subscription has ended"));
        }
        let id = *self.shared.id.lock().unwrap_or_else(|e| e.into_inner());
        let items = self.shared.items.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match (id, items) {
            (Some(id), Some(items)) => Ok((id, items)),
            _ => Err(Error::invalid_value(
                "the subscription is still being made on the server: wait for its first batch",
            )),
        }
    }
}

impl SubscriptionHandle for OpcuaSubscription {
    fn modify(&self, options: SubscribeOptions, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let (id, items) = match self.made() {
            Ok(made) => made,
            Err(e) => return done.complete(Outcome::Values(vec![Err(e)])),
        };
        let items: Vec<(u32, u32)> =
            (items.iter().enumerate()).filter_map(|(i, item)| Some(((*item)?, i as u32))).collect();
        let most = self.device.state.server().max_monitored_items_per_call;
        let calls = if items.is_empty() { Vec::new() } else { session::batches(items.len(), most).collect() };
        let shared = self.shared.clone();
        let job = ModifySubscriptionJob { id, shared, options, items, calls, granted: None, error: None };
        self.device.run(Box::new(job), timeout, done);
    }

    fn remove(&self, positions: &[u32], timeout: Option<Duration>, done: Box<dyn Completion>) {
        let (id, mut items) = match self.made() {
            Ok(made) => made,
            Err(e) => return done.complete(Outcome::Written(positions.iter().map(|_| Err(e.clone())).collect())),
        };
        // Each position's monitored item, taken so no later call names it again.
        let targets: Vec<Option<u32>> =
            positions.iter().map(|&at| items.get_mut(at as usize).and_then(Option::take)).collect();
        *self.shared.items.lock().unwrap_or_else(|e| e.into_inner()) = Some(items);
        let results = (targets.iter())
            .map(|target| match target {
                Some(_) => None,
                None => Some(Err(Error::invalid_value("the tag is not watched by this subscription"))),
            })
            .collect();
        let asked: Vec<usize> = (0..targets.len()).filter(|&at| targets[at].is_some()).collect();
        let most = self.device.state.server().max_monitored_items_per_call;
        let calls = if asked.is_empty() { Vec::new() } else { session::batches(asked.len(), most).collect() };
        let shared = self.shared.clone();
        let job = RemoveItemsJob { id, shared, positions: positions.to_vec(), targets, asked, calls, results };
        self.device.run(Box::new(job), timeout, done);
    }

    fn end(&self) {
        if self.shared.stopping.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if let Some(id) = *self.shared.id.lock().unwrap_or_else(|e| e.into_inner()) {
            self.device.run(Box::new(DeleteSubscriptionJob(id)), None, Box::new(|_| {}));
        }
    }
}

/// ModifySubscription to a new publishing interval, then ModifyMonitoredItems
/// to sample each item as often, with the new deadband.
struct ModifySubscriptionJob {
    id: u32,
    shared: Arc<SubscriptionShared>,
    options: SubscribeOptions,
    /// (monitored item id, client handle) of each watched tag, and the items of each ModifyMonitoredItems.
    items: Vec<(u32, u32)>,
    calls: Vec<Range<usize>>,
    granted: Option<f64>,
    error: Option<Error>,
}

impl Job<Framing> for ModifySubscriptionJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        let request = subscription::modify_subscription(self.id, &parameters(&self.options));
        let request = Request::service(request, "ModifySubscription");
        if let Err(e) = link.submit(request, 0) {
            self.error = Some(e);
        }
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, link: &mut Submitter<'_, Framing>) {
        let body = match reply {
            Ok(Reply::Response(body)) => body,
            Ok(_) => return self.error = Some(Error::proto("a modify was answered with another message type")),
            Err(e) => return self.error = Some(e),
        };
        if index == 0 {
            match subscription::parse_modify_subscription(&body) {
                Ok(granted) => self.granted = Some(granted),
                Err(e) => return self.error = Some(e),
            }
            let sampling_ms = self.options.interval.as_secs_f64() * 1000.0;
            for (number, call) in self.calls.iter().enumerate() {
                let items = &self.items[call.clone()];
                let request = subscription::modify_monitored_items(self.id, items, sampling_ms, self.options.deadband);
                if let Err(e) = link.submit(Request::service(request, "ModifyMonitoredItems"), number as u32 + 1) {
                    self.error = Some(e);
                }
            }
            return;
        }
        let count = self.calls[index as usize - 1].len();
        let refused = subscription::parse_modify_monitored_items(&body, count).map(|statuses| {
            statuses.into_iter().filter(|&status| severity(status) == Severity::Bad).collect::<Vec<_>>()
        });
        match refused {
            Ok(refused) if refused.is_empty() => {}
            Ok(refused) => {
                let what =
                    format!("{} of {} monitored items refused the new settings", refused.len(), self.items.len());
                self.error = Some(status_error(refused[0], &what));
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        let result = match (self.error, self.granted) {
            (Some(e), _) => Err(e),
            (None, Some(granted)) => {
                *self.shared.options.lock().unwrap_or_else(|e| e.into_inner()) = self.options;
                Ok(TypedValue { value: Value::Float(granted), wide: false })
            }
            (None, None) => Err(Error::proto("the modify got no answer")),
        };
        Outcome::Values(vec![result])
    }
}

/// DeleteMonitoredItems of some of a subscription's tags.
struct RemoveItemsJob {
    id: u32,
    shared: Arc<SubscriptionShared>,
    /// The positions asked, and per position its monitored item, if it was watched.
    positions: Vec<u32>,
    targets: Vec<Option<u32>>,
    /// The positions with an item, and which of them each DeleteMonitoredItems names.
    asked: Vec<usize>,
    calls: Vec<Range<usize>>,
    /// Per position: its result, once known (at once for a position not watched).
    results: Vec<Option<Result<()>>>,
}

impl RemoveItemsJob {
    /// Marks the item asked at `at` as watched again.
    fn restore(&self, at: usize) {
        let mut items = self.shared.items.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = items.as_mut().and_then(|items| items.get_mut(self.positions[at] as usize)) {
            *slot = self.targets[at];
        }
    }
}

impl Job<Framing> for RemoveItemsJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        for number in 0..self.calls.len() {
            let ids: Vec<u32> =
                self.asked[self.calls[number].clone()].iter().filter_map(|&at| self.targets[at]).collect();
            let request = Request::service(subscription::delete_monitored_items(self.id, &ids), "DeleteMonitoredItems");
            if let Err(e) = link.submit(request, number as u32) {
                self.reply(number as u32, Err(e), link);
            }
        }
    }

    fn reply(&mut self, index: u32, reply: Result<Reply>, _link: &mut Submitter<'_, Framing>) {
        let asked = self.asked[self.calls[index as usize].clone()].to_vec();
        let statuses = reply.and_then(|reply| match reply {
            Reply::Response(body) => subscription::parse_delete_monitored_items(&body, asked.len()),
            _ => Err(Error::proto("a DeleteMonitoredItems was answered with another message type")),
        });
        for (n, &at) in asked.iter().enumerate() {
            self.results[at] = Some(match &statuses {
                Ok(statuses) if severity(statuses[n]) == Severity::Bad => {
                    Err(status_error(statuses[n], "removing the monitored item"))
                }
                Ok(_) => Ok(()),
                Err(e) => {
                    // Not removed (the call failed): still watched, so it can be removed again.
                    self.restore(at);
                    Err(e.clone())
                }
            });
        }
    }

    fn finish(self: Box<Self>) -> Outcome {
        let missing = || Err(Error::proto("the monitored item was not removed"));
        Outcome::Written(self.results.into_iter().map(|result| result.unwrap_or_else(missing)).collect())
    }
}

type Core = DeviceCore<Framing, DeviceState>;

/// A connected OPC UA server.
pub struct OpcuaDevice(Rc<Core>);

impl OpcuaDevice {
    pub fn new(driver: Box<dyn Driver<Framing>>, server: SharedServerInfo) -> OpcuaDevice {
        let state = Arc::new(DeviceState { server, types: Mutex::default(), methods: Mutex::default() });
        OpcuaDevice(Rc::new(DeviceCore::new(driver, state)))
    }
}

impl bifrost_engine::Device for OpcuaDevice {
    fn read(&self, tags: &[String], timeout: Option<Duration>, done: Box<dyn Completion>) {
        let state = &self.0.state;
        let (nodes, _) = state.resolve(&parse_tags(tags));
        let batches = batches(&nodes, state.server().max_nodes_per_read);
        let job = ReadJob { tags: tags.to_vec(), results: (0..nodes.len()).map(|_| None).collect(), nodes, batches };
        self.0.run(Box::new(job), timeout, done);
    }

    fn write(&self, writes: Vec<(String, Value)>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let state = self.0.state.clone();
        let (tags, values): (Vec<String>, Vec<Value>) = writes.into_iter().unzip();
        let (nodes, session) = state.resolve(&parse_tags(&tags));
        let steps = {
            let types = state.types.lock().unwrap_or_else(|e| e.into_inner());
            nodes
                .into_iter()
                .map(|node| match node {
                    Err(e) => WriteStep::Bad(e),
                    Ok(node) => {
                        let known = types.get(&node).filter(|(s, _)| *s == session).map(|(_, t)| *t);
                        WriteStep::Node(node, known)
                    }
                })
                .collect()
        };
        let job = WriteJob { state, session, tags, values, steps, requests: Vec::new(), typing: false };
        self.0.run(Box::new(job), timeout, done);
    }

    fn prepare(&self, tags: &[String]) -> Result<Box<dyn bifrost_engine::Plan>> {
        let parsed = parse_tags(tags);
        if let Some(Err(e)) = parsed.iter().find(|t| t.is_err()) {
            return Err(e.clone());
        }
        let prepared = Arc::new(PreparedReads::new(&self.0.state, &parsed));
        Ok(Box::new(OpcuaPlan {
            device: self.0.clone(),
            tags: tags.into(),
            parsed,
            prepared: std::cell::RefCell::new(prepared),
        }))
    }

    /// Lists the nodes under `from` (a NodeId; the Objects folder when absent).
    fn browse(&self, from: Option<&str>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let state = self.0.state.clone();
        let from = match from.map(str::trim).filter(|f| !f.is_empty()) {
            None => Ok(NodeId::numeric(0, 85)),
            Some(text) => ExpandedNodeId::parse(text).and_then(|id| id.resolve(&state.server().namespaces)),
        };
        let from = match from {
            Ok(from) => from,
            Err(e) => return done.complete(Outcome::Browsed(Err(e))),
        };
        let job = BrowseJob {
            state,
            from,
            found: Vec::new(),
            variables: Vec::new(),
            types: Vec::new(),
            requests: Vec::new(),
            error: None,
        };
        self.0.run(Box::new(job), timeout, done);
    }

    /// Paths in the text of Part 4, A.2 (`/Objects/2:Line1.Speed`), from RootFolder unless `from` says otherwise.
    fn translate(&self, paths: &[String], from: Option<&str>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let state = self.0.state.clone();
        let start = match from.map(str::trim).filter(|f| !f.is_empty()) {
            None => Ok(NodeId::numeric(0, view::ROOT_FOLDER)),
            Some(text) => ExpandedNodeId::parse(text).and_then(|id| id.resolve(&state.server().namespaces)),
        };
        let start = match start {
            Ok(start) => start,
            Err(e) => return done.complete(Outcome::Values(paths.iter().map(|_| Err(e.clone())).collect())),
        };
        let paths: Vec<_> = paths.iter().map(|path| view::parse_relative_path(path)).collect();
        let good: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].is_ok()).collect();
        let most = state.server().max_nodes_per_translate;
        let batches = session::batches(good.len(), most).map(|range| good[range].to_vec()).collect();
        let results = vec![None; paths.len()];
        self.0.run(Box::new(TranslateJob { start, paths, batches, state, results }), timeout, done);
    }

    fn call(&self, object: &str, method: &str, args: Vec<Value>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let state = self.0.state.clone();
        let resolve = |text: &str| ExpandedNodeId::parse(text).and_then(|id| id.resolve(&state.server().namespaces));
        let (object, method) = match (resolve(object), resolve(method)) {
            (Ok(object), Ok(method)) => (object, method),
            (Err(e), _) | (_, Err(e)) => return done.complete(Outcome::Values(vec![Err(e)])),
        };
        let session = state.server().session;
        let job = CallJob { state, session, object, method, args, step: CallStep::FindingArguments, result: None };
        self.0.run(Box::new(job), timeout, done);
    }

    fn subscribe(
        &self,
        tags: &[String],
        options: SubscribeOptions,
        sink: ChangeSink,
        done: Box<dyn Completion>,
    ) -> Box<dyn SubscriptionHandle> {
        let (nodes, _) = self.0.state.resolve(&parse_tags(tags));
        let shared = Arc::new(SubscriptionShared::new(options));
        let most_items = self.0.state.server().max_monitored_items_per_call;
        let job = SubscriptionJob {
            tags: tags.to_vec(),
            items: vec![None; nodes.len()],
            nodes,
            sink,
            shared: shared.clone(),
            subscription_id: 0,
            most_items,
            item_batches: Vec::new(),
            batches_left: 0,
            made: false,
            publishing: 0,
            probing: false,
            transferring: false,
            acknowledgements: Vec::new(),
            next_sequence: None,
            delivered: std::collections::VecDeque::with_capacity(DELIVERED_KEPT),
            last_samples: vec![(0, 0); tags.len()],
            error: None,
        };
        self.0.run(Box::new(job), Some(SUBSCRIPTION_LIFETIME), done);
        Box::new(OpcuaSubscription { device: self.0.clone(), shared })
    }

    fn stats(&self) -> Arc<Stats> {
        self.0.stats()
    }

    fn close(&self, done: Box<dyn Completion>) {
        self.0.close(done)
    }
}

/// NodeIds parsed once; their Reads built once per session (indices of `nsu=` may change).
struct OpcuaPlan {
    device: Rc<Core>,
    tags: Arc<[String]>,
    parsed: Vec<Result<ExpandedNodeId>>,
    prepared: std::cell::RefCell<Arc<PreparedReads>>,
}

impl bifrost_engine::Plan for OpcuaPlan {
    fn read(&self, timeout: Option<Duration>, done: Box<dyn Completion>) {
        let count = self.tags.len();
        if self.device.is_closed() {
            let error = Error::closed("the device was closed");
            return done.complete(Outcome::Columns(Columns::failed(std::iter::repeat_n(1, count), &error)));
        }
        let session = self.device.state.server().session;
        if self.prepared.borrow().session != session {
            *self.prepared.borrow_mut() = Arc::new(PreparedReads::new(&self.device.state, &self.parsed));
        }
        let job = ColumnsJob {
            prepared: self.prepared.borrow().clone(),
            tags: self.tags.clone(),
            values: vec![f64::NAN; count],
            errors: Vec::new(),
        };
        self.device.run(Box::new(job), timeout, done);
    }

    fn value_count(&self) -> usize {
        self.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_path_as_the_endpoint() {
        let opening =
            Opening::from_url(DeviceUrl::parse("opc.tcp://10.0.0.5/UA/Server?request-timeout=500").unwrap()).unwrap();
        assert_eq!(opening.address, "10.0.0.5:4840");
        assert_eq!(opening.endpoint_url, "opc.tcp://10.0.0.5:4840/UA/Server");
        assert_eq!(opening.link.request_timeout, Duration::from_millis(500));
        assert!(Opening::from_url(DeviceUrl::parse("opc.tcp://h?bogus=1").unwrap()).is_err());
        assert!(!opening.needs_endpoint(), "policy None and no user: nothing to fetch first");
    }

    #[test]
    fn a_subscription_step_is_named_by_its_request_index() {
        let steps = [
            SubscriptionStep::Create,
            SubscriptionStep::Publish,
            SubscriptionStep::Republish,
            SubscriptionStep::Delete,
            SubscriptionStep::Probe,
            SubscriptionStep::Transfer,
            SubscriptionStep::Items(0),
            SubscriptionStep::Items(41),
        ];
        for step in steps {
            assert_eq!(SubscriptionStep::of(step.index()), step);
        }
    }

    fn security_of(url: &str) -> Result<SecurityOptions> {
        Opening::from_url(DeviceUrl::parse(url).unwrap()).map(|o| o.security)
    }

    #[test]
    fn security_keys_imply_each_other_and_refuse_what_cannot_go_together() {
        let s = security_of("opc.tcp://h?security-policy=Aes256_Sha256_RsaPss&pki-dir=/tmp/p").unwrap();
        assert_eq!(
            (s.policy, s.mode, s.pki.root()),
            (Policy::Aes256Sha256RsaPss, MODE_SIGN_AND_ENCRYPT, std::path::Path::new("/tmp/p"))
        );
        let s = security_of("opc.tcp://h?security-mode=sign").unwrap();
        assert_eq!((s.policy, s.mode), (Policy::Basic256Sha256, MODE_SIGN));
        let e = security_of("opc.tcp://h?security-policy=None&security-mode=Sign").unwrap_err();
        assert!(e.message.contains("None goes with None only"), "{}", e.message);
        assert!(security_of("opc.tcp://h?security-mode=Encrypt").unwrap_err().message.contains("SignAndEncrypt"));
    }

    #[test]
    fn credentials_come_from_the_options_or_the_url_and_never_show() {
        let s = security_of("opc.tcp://ann:s3cret@h").unwrap();
        assert!(matches!(&s.user, User::Name { user, password } if user == "ann" && password == "s3cret"));
        assert!(!format!("{s:?}").contains("s3cret"));
        let s = security_of("opc.tcp://ann:old@h?username=bob&password=new").unwrap();
        assert!(matches!(&s.user, User::Name { user, password } if user == "bob" && password == "new"));
        let e = security_of("opc.tcp://h?password=s3cret").unwrap_err();
        assert!(!e.message.contains("s3cret"), "{}", e.message);
        let e = security_of("opc.tcp://h?username=a&user-certificate=c.der&user-private-key=k.pem").unwrap_err();
        assert!(e.message.contains("not both"), "{}", e.message);
        let opening = Opening::from_url(DeviceUrl::parse("opc.tcp://h?username=a").unwrap()).unwrap();
        assert!(opening.needs_endpoint(), "a user needs the endpoint's token policies first");
    }
}
