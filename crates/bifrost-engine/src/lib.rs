//! The protocol-neutral device runtime. A protocol supplies a [`link::Framing`]
//! (how requests and replies look on the byte stream) and [`session::Job`]s (what a
//! read or write does with requests and replies). The runtime holds everything
//! else: the bounded queue, deadlines, the in-flight window, reconnect with
//! backoff and the circuit breaker, all as state machines a driver feeds with
//! bytes and time. Drivers own the sockets: [`runtime`] runs one on the tokio
//! runtime's thread; the addon runs one on the JavaScript thread.

pub mod failover;
pub mod link;
pub mod listener;
pub mod poller;
pub mod runtime;
pub mod session;
pub mod shared;

pub use failover::{Failover, FailoverConfig};
pub use link::{Framing, Link, LinkConfig, Resync, Stats, Wants};
pub use poller::{Deadband, Poller};
pub use session::{
    Change, ChangeSink, Columns, Completion, Device, DeviceCore, Driver, Job, Outcome, Plan, Session, Submitter,
    SubscribeOptions, SubscriptionHandle, TagInfo, TypedValue,
};
pub use shared::SharedLinks;
