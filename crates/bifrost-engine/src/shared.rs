//! Links several devices share: a serial line, or a gateway's one connection to
//! the devices behind it. The first device opens the link, later ones join it,
//! and the last one to close closes it. Devices are opened and closed on one
//! thread (the JavaScript thread), so the registry is per thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::Duration;

use bifrost_core::{Error, Result};

use crate::link::{Framing, Stats};
use crate::session::{Completion, Driver, Job, Outcome};

/// The links open on this thread, by key (a serial port's path, a gateway's address).
pub struct SharedLinks<F: Framing> {
    open: RefCell<HashMap<String, SharedLink<F>>>,
}

struct SharedLink<F: Framing> {
    driver: Rc<dyn Driver<F>>,
    /// The settings every device on the link must ask for, as people write them.
    terms: String,
    devices: usize,
}

/// A protocol's registry: `thread_local! { static LINKS: SharedLinks<MyFraming> = SharedLinks::default() }`.
pub type Registry<F> = &'static LocalKey<SharedLinks<F>>;

impl<F: Framing> Default for SharedLinks<F> {
    fn default() -> Self {
        SharedLinks { open: RefCell::new(HashMap::new()) }
    }
}

impl<F: Framing + 'static> SharedLinks<F> {
    /// Joins the link open under `key`, if there is one; a device asking for other
    /// `terms` than the link was opened with is refused (`EADDRESS`).
    pub fn join(registry: Registry<F>, key: &str, terms: &str) -> Option<Result<Box<dyn Driver<F>>>> {
        registry.with(|links| {
            let mut open = links.open.borrow_mut();
            let link = open.get_mut(key)?;
            if link.terms != terms {
                return Some(Err(Error::address(format!(
                    "{key} is already open as {}; this device asks for {terms}: devices sharing a link must use the same settings",
                    link.terms
                ))));
            }
            link.devices += 1;
            Some(Ok(Lease::boxed(registry, key, link.driver.clone())))
        })
    }

    /// Shares a link just opened under `key`. When another device opened one
    /// meanwhile, this one is closed and that one joined.
    pub fn share(
        registry: Registry<F>,
        key: String,
        terms: String,
        driver: Box<dyn Driver<F>>,
    ) -> Result<Box<dyn Driver<F>>> {
        if let Some(joined) = Self::join(registry, &key, &terms) {
            driver.close(Box::new(|_| {}));
            return joined;
        }
        let driver: Rc<dyn Driver<F>> = Rc::from(driver);
        registry.with(|links| {
            let link = SharedLink { driver: driver.clone(), terms, devices: 1 };
            links.open.borrow_mut().insert(key.clone(), link);
        });
        Ok(Lease::boxed(registry, &key, driver))
    }

    /// One device is done with the link; returns the link when it was the last.
    fn release(registry: Registry<F>, key: &str) -> Option<Rc<dyn Driver<F>>> {
        // `try_with`: a device dropped while its thread exits finds the registry gone.
        let released = registry.try_with(|links| {
            let mut open = links.open.borrow_mut();
            let link = open.get_mut(key)?;
            link.devices -= 1;
            (link.devices == 0).then(|| open.remove(key)).flatten().map(|link| link.driver)
        });
        released.ok().flatten()
    }
}

/// One device's hold on a shared link: calls go to the link, and closing lets go of it.
struct Lease<F: Framing + 'static> {
    registry: Registry<F>,
    key: String,
    driver: Rc<dyn Driver<F>>,
    released: Cell<bool>,
}

impl<F: Framing + 'static> Lease<F> {
    fn boxed(registry: Registry<F>, key: &str, driver: Rc<dyn Driver<F>>) -> Box<dyn Driver<F>> {
        Box::new(Lease { registry, key: key.to_string(), driver, released: Cell::new(false) })
    }

    fn release(&self, done: Box<dyn Completion>) {
        if self.released.replace(true) {
            return done.complete(Outcome::Closed);
        }
        match SharedLinks::release(self.registry, &self.key) {
            Some(last) => last.close(done),
            None => done.complete(Outcome::Closed),
        }
    }
}

impl<F: Framing + 'static> Driver<F> for Lease<F> {
    fn run(&self, job: Box<dyn Job<F>>, timeout: Option<Duration>, done: Box<dyn Completion>) {
        self.driver.run(job, timeout, done)
    }

    fn stats(&self) -> Arc<Stats> {
        self.driver.stats()
    }

    /// Closes the link only for the last device on it; the others' calls go on.
    fn close(&self, done: Box<dyn Completion>) {
        self.release(done)
    }
}

impl<F: Framing + 'static> Drop for Lease<F> {
    /// A device dropped without `close` (garbage collected) lets go too.
    fn drop(&mut self) {
        self.release(Box::new(|_| {}));
    }
}
