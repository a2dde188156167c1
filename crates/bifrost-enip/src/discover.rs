//! Discovery: ListIdentity over UDP, to one address or broadcast on a network,
//! and every answer that comes within the wait.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use bifrost_core::{Error, Result};
use tokio::net::UdpSocket;

use crate::encap::{self, Header, Identity, HEADER_LEN};

/// One device that answered, and the address its answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub from: SocketAddrV4,
    pub identity: Identity,
}

/// Sends ListIdentity to `target` (a device, or a broadcast address) from
/// `bind` (the interface's address; `0.0.0.0` for any), and gathers the
/// answers that come within `wait`, one per device. Datagrams that are not a
/// ListIdentity answer are ignored.
pub async fn discover(target: SocketAddrV4, bind: Ipv4Addr, wait: Duration) -> Result<Vec<Found>> {
    let socket = UdpSocket::bind(SocketAddrV4::new(bind, 0))
        .await
        .map_err(|e| Error::invalid_value(format!("cannot bind {bind} for discovery: {e}")))?;
    socket.set_broadcast(true).map_err(Error::from)?;
    let mut request = Vec::with_capacity(HEADER_LEN);
    let context = *b"bifrost!";
    encap::list_identity(&mut request, context)?;
    socket.send_to(&request, target).await.map_err(|e| {
        let mut error = Error::from(e);
        error.message = format!("cannot send ListIdentity to {target}: {}", error.message);
        error
    })?;
    let mut found: Vec<Found> = Vec::new();
    let mut buf = vec![0u8; 1500];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
        let Ok((n, SocketAddr::V4(from))) = received else { continue };
        let Some(identities) = answer(&buf[..n], &context) else { continue };
        for identity in identities {
            if !found.iter().any(|f| f.from == from && f.identity.serial_number == identity.serial_number) {
                found.push(Found { from, identity });
            }
        }
    }
    Ok(found)
}

/// The identities in a ListIdentity answer to our request; `None` for anything else.
fn answer(datagram: &[u8], context: &[u8; 8]) -> Option<Vec<Identity>> {
    let header = Header::parse(datagram).ok()?;
    if header.command != encap::command::LIST_IDENTITY || &header.context != context || header.status != 0 {
        return None;
    }
    encap::parse_list_identity(datagram.get(HEADER_LEN..)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_the_simulator_and_ignores_what_is_not_an_answer() {
        let sim = crate::server::start("127.0.0.1:0", Default::default()).await.unwrap();
        let SocketAddr::V4(at) = sim.local_addr() else { panic!() };
        let found = discover(at, Ipv4Addr::LOCALHOST, Duration::from_millis(300)).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].from, at);
        assert_eq!(found[0].identity.product_name, "Bifrost Logix Simulator");
        assert_eq!(found[0].identity.address.port(), at.port());
        // Nobody there: an empty list once the wait is over, not an error.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(nobody) = silent.local_addr().unwrap() else { panic!() };
        assert!(discover(nobody, Ipv4Addr::LOCALHOST, Duration::from_millis(100)).await.unwrap().is_empty());
        assert!(answer(&[0x63, 0], b"bifrost!").is_none());
    }
}
