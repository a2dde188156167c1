//! OPC UA for Bifrost (binary protocol, client side): the built-in types'
//! binary encoding, NodeIds, StatusCode names and the TCP transport (Hello,
//! chunking) so far; the secure channel, session, services,
//! subscriptions and simulator build on them.

pub mod encoding;
pub mod node_id;
pub mod status;
pub mod transport;
