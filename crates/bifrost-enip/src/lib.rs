//! EtherNet/IP for Bifrost: the encapsulation and CIP codec, Logix tag paths
//! and services, the connected client and the simulator server.

pub mod cip;
pub mod device;
pub mod discover;
pub mod encap;
pub mod framing;
pub mod logix;
pub mod server;
pub mod tag;
pub mod template;
pub mod wire;
