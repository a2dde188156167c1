//! OPC UA for Bifrost (binary protocol, client side): the built-in types'
//! binary encoding, NodeIds, StatusCode names and the TCP transport (Hello,
//! chunking), the secure channel's messages, sessions, discovery, the attribute,
//! view and method services, subscriptions, and a simulator.

pub mod crypto;
pub mod device;
pub mod discovery;
pub mod encoding;
pub mod framing;
pub mod method;
pub mod node_id;
pub mod pki;
pub mod secure_channel;
pub mod security;
pub mod server;
pub mod session;
pub mod status;
pub mod subscription;
pub mod transport;
pub mod value;
pub mod view;
