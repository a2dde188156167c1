//! A redundant device pair (`backup=host:port`): reads go to the backup while
//! the primary's circuit breaker is open, and back once a reply proves the
//! primary well. While the backup serves, each read is also offered to the
//! primary as its breaker's probe (failing fast until the probe is due), so the
//! primary is noticed when it recovers. Writes fail over only when asked to.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bifrost_core::url::DeviceUrl;
use bifrost_core::{Error, Result, Value};

use crate::link::Stats;
use crate::session::{Completion, Device, Outcome, Plan};

/// The `backup` and `failover-writes` URL options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// The backup's URL: the primary's, with the backup's host and port.
    pub backup: DeviceUrl,
    /// Writes go to the backup too while the primary is down.
    pub writes: bool,
}

impl FailoverConfig {
    /// Takes `backup=host[:port]` and `failover-writes=true|false` from `url`;
    /// `None` without a backup. A backup without a port takes the primary's.
    pub fn take(url: &mut DeviceUrl) -> Result<Option<FailoverConfig>> {
        let backup = url.take::<String>("backup")?;
        let writes = url.take::<bool>("failover-writes")?;
        let Some(backup) = backup else {
            return match writes {
                Some(_) => Err(Error::invalid_value("URL option 'failover-writes' needs a 'backup'")),
                None => Ok(None),
            };
        };
        let parsed = DeviceUrl::parse(&format!("{}://{backup}", url.scheme))
            .ok()
            .filter(|b| !b.host.is_empty() && b.path.is_empty() && b.user_info.is_none())
            .ok_or_else(|| Error::address(format!("URL option 'backup' must be host or host:port, not '{backup}'")))?;
        let mut backup_url = url.clone();
        backup_url.host = parsed.host;
        backup_url.port = parsed.port.or(url.port);
        Ok(Some(FailoverConfig { backup: backup_url, writes: writes.unwrap_or(false) }))
    }
}

/// Two devices of one protocol, the second standing in for the first.
pub struct Failover {
    primary: Box<dyn Device>,
    backup: Box<dyn Device>,
    primary_stats: Arc<Stats>,
    writes: bool,
}

impl Failover {
    pub fn new(primary: Box<dyn Device>, backup: Box<dyn Device>, writes: bool) -> Failover {
        let primary_stats = primary.stats();
        Failover { primary, backup, primary_stats, writes }
    }
}

/// Whether the primary's breaker is open: it failed, and no reply has proven it back.
fn down(stats: &Stats) -> bool {
    stats.breaker_open.load(Ordering::Relaxed)
}

/// The outcome of a probe nobody waits for.
fn dropped() -> Box<dyn Completion> {
    Box::new(|_: Outcome| {})
}

impl Device for Failover {
    fn read(&self, tags: &[String], timeout: Option<Duration>, done: Box<dyn Completion>) {
        if down(&self.primary_stats) {
            self.primary.read(tags, timeout, dropped());
            self.backup.read(tags, timeout, done);
        } else {
            self.primary.read(tags, timeout, done);
        }
    }

    fn write(&self, writes: Vec<(String, Value)>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        // Without failover-writes a write always goes to the primary: down, it fails with the primary's error.
        match self.writes && down(&self.primary_stats) {
            true => self.backup.write(writes, timeout, done),
            false => self.primary.write(writes, timeout, done),
        }
    }

    fn prepare(&self, tags: &[String]) -> Result<Box<dyn Plan>> {
        Ok(Box::new(FailoverPlan {
            primary: self.primary.prepare(tags)?,
            backup: self.backup.prepare(tags)?,
            primary_stats: self.primary_stats.clone(),
        }))
    }

    /// The tags of whichever side reads answer from now.
    fn browse(&self, from: Option<&str>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        match down(&self.primary_stats) {
            true => self.backup.browse(from, timeout, done),
            false => self.primary.browse(from, timeout, done),
        }
    }

    /// The identity of whichever side reads answer from now.
    fn identity(&self, timeout: Option<Duration>, done: Box<dyn Completion>) {
        match down(&self.primary_stats) {
            true => self.backup.identity(timeout, done),
            false => self.primary.identity(timeout, done),
        }
    }

    /// The paths of whichever side reads answer from now.
    fn translate(&self, paths: &[String], from: Option<&str>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        match down(&self.primary_stats) {
            true => self.backup.translate(paths, from, timeout, done),
            false => self.primary.translate(paths, from, timeout, done),
        }
    }

    /// A subscription lives on the primary.
    fn subscribe(
        &self,
        tags: &[String],
        options: crate::session::SubscribeOptions,
        sink: crate::session::ChangeSink,
        done: Box<dyn Completion>,
    ) -> Box<dyn crate::session::SubscriptionHandle> {
        self.primary.subscribe(tags, options, sink, done)
    }

    /// A method call changes the device: it goes where writes go.
    fn call(&self, object: &str, method: &str, args: Vec<Value>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        match self.writes && down(&self.primary_stats) {
            true => self.backup.call(object, method, args, timeout, done),
            false => self.primary.call(object, method, args, timeout, done),
        }
    }

    /// The primary's counters.
    fn stats(&self) -> Arc<Stats> {
        self.primary_stats.clone()
    }

    /// Closes both; `done` once both are closed.
    fn close(&self, done: Box<dyn Completion>) {
        let waiting = Arc::new(Mutex::new((2u8, Some(done))));
        for device in [&self.primary, &self.backup] {
            let waiting = waiting.clone();
            device.close(Box::new(move |_: Outcome| {
                let done = {
                    let mut waiting = waiting.lock().unwrap_or_else(|e| e.into_inner());
                    waiting.0 -= 1;
                    if waiting.0 == 0 {
                        waiting.1.take()
                    } else {
                        None
                    }
                };
                if let Some(done) = done {
                    done.complete(Outcome::Closed);
                }
            }));
        }
    }
}

struct FailoverPlan {
    primary: Box<dyn Plan>,
    backup: Box<dyn Plan>,
    primary_stats: Arc<Stats>,
}

impl Plan for FailoverPlan {
    fn read(&self, timeout: Option<Duration>, done: Box<dyn Completion>) {
        if down(&self.primary_stats) {
            self.primary.read(timeout, dropped());
            self.backup.read(timeout, done);
        } else {
            self.primary.read(timeout, done);
        }
    }

    fn value_count(&self) -> usize {
        self.primary.value_count()
    }
}
