//! The discovery services (Part 4, 5.4): GetEndpoints and FindServers, each on
//! a secure channel of its own (policy None) without a session, which is what a
//! client asks before it knows how to connect. Their answers become plain
//! structures, named as the TypeScript API names them.

use bifrost_core::url::DeviceUrl;
use bifrost_core::{Error, Result, TypedValue, Value};
use bifrost_engine::{Job, Outcome, Submitter};
use bytes::Bytes;

use crate::device::Opening;
use crate::framing::{Framing, Reply, Request};
use crate::session::{self, ApplicationDescription, EndpointDescription};

/// Which discovery service to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// GetEndpoints: the endpoints of the server at the URL.
    Endpoints,
    /// FindServers: the servers the one at the URL knows, itself included.
    Servers,
}

/// Calls `service` on the server at `url` and closes the channel: one array of
/// structures, or the error that stopped it (the URL's `request-timeout` bounds it).
pub async fn discover(url: DeviceUrl, service: Discovery) -> Result<TypedValue> {
    let opening = Opening::from_url(url)?;
    let items = match service {
        Discovery::Endpoints => endpoints(&opening).await?.iter().map(endpoint).collect(),
        Discovery::Servers => {
            let request = Request::service(session::find_servers(&opening.endpoint_url), "FindServers");
            session::parse_find_servers(&call(&opening, request).await?)?.iter().map(application).collect()
        }
    };
    Ok(plain(Value::Array(items)))
}

/// The endpoints of the server `opening` reaches, by GetEndpoints.
pub async fn endpoints(opening: &Opening) -> Result<Vec<EndpointDescription>> {
    let request = Request::service(session::get_endpoints(&opening.endpoint_url), "GetEndpoints");
    session::parse_get_endpoints(&call(opening, request).await?)
}

/// Calls one discovery service on a channel of its own (policy None, no session)
/// and closes it: the response's body.
async fn call(opening: &Opening, request: Request) -> Result<Bytes> {
    let framing =
        Framing::discovery(opening.endpoint_url.clone(), opening.link.request_timeout, opening.channel_lifetime);
    let driver = opening.open_runtime_driver(framing).await?;
    let (sender, answered) = tokio::sync::oneshot::channel();
    let job = DiscoveryJob { request: Some(request), answer: Some(sender) };
    driver.run(Box::new(job), None, Box::new(|_| {}));
    let answer = answered.await.unwrap_or_else(|_| Err(Error::closed("the connection was closed")));
    driver.close(Box::new(|_| {}));
    answer
}

struct DiscoveryJob {
    request: Option<Request>,
    answer: Option<tokio::sync::oneshot::Sender<Result<Bytes>>>,
}

impl DiscoveryJob {
    fn answer(&mut self, answer: Result<Bytes>) {
        if let Some(sender) = self.answer.take() {
            let _ = sender.send(answer);
        }
    }
}

impl Job<Framing> for DiscoveryJob {
    fn start(&mut self, link: &mut Submitter<'_, Framing>) {
        if let Some(request) = self.request.take() {
            if let Err(e) = link.submit(request, 0) {
                self.answer(Err(e));
            }
        }
    }

    fn reply(&mut self, _index: u32, reply: Result<Reply>, _link: &mut Submitter<'_, Framing>) {
        self.answer(match reply {
            Ok(Reply::Response(body)) => Ok(body),
            Ok(_) => Err(Error::proto("a discovery call was answered with another message")),
            Err(e) => Err(e),
        });
    }

    fn finish(mut self: Box<Self>) -> Outcome {
        self.answer(Err(Error::proto("the discovery call got no answer")));
        Outcome::Values(Vec::new())
    }
}

fn plain(value: Value) -> TypedValue {
    TypedValue { value, wide: false }
}

/// A structure's members; a text the server left null is left out.
#[derive(Default)]
struct Members(Vec<(String, TypedValue)>);

impl Members {
    fn with(mut self, name: &str, value: Value) -> Members {
        self.0.push((name.to_string(), plain(value)));
        self
    }

    fn text(self, name: &str, text: &Option<String>) -> Members {
        match text {
            Some(text) => self.with(name, Value::String(text.clone())),
            None => self,
        }
    }

    fn done(self) -> Value {
        Value::Struct(self.0)
    }
}

/// A name from a table of an enumeration, or the number when it is not in it.
fn named(names: &[&str], value: u32) -> Value {
    match names.get(value as usize) {
        Some(name) => Value::String((*name).to_string()),
        None => Value::UInt(u64::from(value)),
    }
}

const APPLICATION_TYPES: [&str; 4] = ["Server", "Client", "ClientAndServer", "DiscoveryServer"];
const SECURITY_MODES: [&str; 4] = ["Invalid", "None", "Sign", "SignAndEncrypt"];
const USER_TOKEN_TYPES: [&str; 4] = ["Anonymous", "UserName", "Certificate", "IssuedToken"];

fn application(server: &ApplicationDescription) -> Value {
    let urls = server.discovery_urls.iter().flatten().map(|url| Value::String(url.clone())).collect();
    Members::default()
        .text("applicationUri", &server.application_uri)
        .text("productUri", &server.product_uri)
        .text("applicationName", &server.application_name.text)
        .with("applicationType", named(&APPLICATION_TYPES, server.application_type))
        .with("discoveryUrls", Value::Array(urls))
        .done()
}

fn endpoint(endpoint: &EndpointDescription) -> Value {
    let tokens = (endpoint.user_identity_tokens.iter())
        .map(|token| {
            Members::default()
                .text("policyId", &token.policy_id)
                .with("tokenType", named(&USER_TOKEN_TYPES, token.token_type))
                .text("securityPolicyUri", &token.security_policy_uri)
                .done()
        })
        .collect();
    Members::default()
        .text("endpointUrl", &endpoint.endpoint_url)
        .with("server", application(&endpoint.server))
        .with("securityMode", named(&SECURITY_MODES, endpoint.security_mode))
        .text("securityPolicyUri", &endpoint.security_policy_uri)
        .with("securityLevel", Value::UInt(u64::from(endpoint.security_level)))
        .with("userIdentityTokens", Value::Array(tokens))
        .done()
}
