//! The poller: many reads, each on its own interval. Its schedule, phases,
//! overruns, change detection (deadbands), health and the bounded queue of
//! finished polls all live here, as a state machine a driver feeds with time and
//! finished reads. The driver starts the reads it is handed and wakes its
//! consumer once per delivery, never once per poll.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use bifrost_core::Error;

use crate::link::IdHasher;
use crate::session::Columns;

/// Names one scheduled read in a poller; never reused by that poller.
pub type Handle = u32;

/// When a new value of a tag counts as changed, for report-by-exception.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    /// Changed when it moved by more than this from the value last delivered.
    Absolute(f64),
    /// Changed when it moved by more than this percentage of the value last delivered.
    Percent(f64),
}

impl Deadband {
    fn changed(self, old: f64, new: f64) -> bool {
        if old.is_nan() || new.is_nan() {
            return old.is_nan() != new.is_nan();
        }
        let limit = match self {
            Deadband::Absolute(limit) => limit,
            Deadband::Percent(percent) => old.abs() * percent / 100.0,
        };
        (new - old).abs() > limit
    }
}

/// How a scheduled read is doing, from its last poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollState {
    /// No poll has finished yet.
    Waiting,
    /// Every tag was read.
    Good,
    /// Some tags failed.
    Partial,
    /// Every tag failed.
    Failed,
}

impl PollState {
    pub fn as_str(self) -> &'static str {
        match self {
            PollState::Waiting => "waiting",
            PollState::Good => "good",
            PollState::Partial => "partial",
            PollState::Failed => "failed",
        }
    }
}

/// Latencies kept per read for its percentiles: the most recent ones.
const LATENCY_SAMPLES: usize = 32;

/// A scheduled read's counters, as [`Poller::health`] reports them.
#[derive(Debug, Clone)]
pub struct Health {
    pub handle: Handle,
    pub state: PollState,
    /// The first error of the last poll that had one.
    pub last_error: Option<Error>,
    /// Polls finished.
    pub polls: u64,
    /// Polls in which at least one tag failed.
    pub failures: u64,
    /// Ticks skipped: the poll before was still running, or the thread was busy past a whole interval.
    pub overruns: u64,
    /// Polls that finished after their next tick was due.
    pub late: u64,
    /// Finished polls dropped unread because the consumer fell behind.
    pub drops: u64,
    /// Median, 90th and 99th percentile of the recent polls' latency, in milliseconds.
    pub latency_ms: Option<[f64; 3]>,
}

/// One finished poll, waiting for the consumer.
#[derive(Debug)]
pub struct Finished {
    pub handle: Handle,
    /// Wall-clock milliseconds when the poll finished.
    pub timestamp_ms: f64,
    /// The tags delivered: all of them, or under a deadband only those that changed.
    pub columns: Columns,
    /// Under a deadband, the delivered tags' positions in the read's tag list.
    pub indices: Option<Vec<u32>>,
}

/// The last values delivered of a read under a deadband, per element, and which tags were good.
#[derive(Debug, Default)]
struct Delivered {
    values: Vec<f64>,
    good: Vec<bool>,
}

struct Scheduled<R> {
    reader: R,
    interval: Duration,
    timeout: Option<Duration>,
    deadband: Option<Deadband>,
    /// The next tick.
    next_at: Instant,
    /// The tick and start of the poll in flight.
    running: Option<(Instant, Instant)>,
    delivered: Option<Delivered>,
    health: Health,
    latencies: [u32; LATENCY_SAMPLES],
}

/// The poller's state. `R` is what the driver needs to start a read.
pub struct Poller<R> {
    scheduled: HashMap<Handle, Scheduled<R>, BuildHasherDefault<IdHasher>>,
    /// Every read's next tick (entries of removed reads are skipped when they surface).
    ticks: BinaryHeap<Reverse<(Instant, Handle)>>,
    next_handle: Handle,
    /// Reads added so far: places the next one's phase.
    added: u64,
    finished: VecDeque<Finished>,
    max_pending: usize,
    dropped: u64,
    /// When reads were last started: the next start waits a slack after it, so reads group.
    last_start: Option<Instant>,
}

/// The golden ratio's fractional part: phases `k * PHASE_STEP mod 1` stay evenly
/// spread however many reads are added, with no need to know how many there will be.
const PHASE_STEP: f64 = 0.618_033_988_749_894_9;

/// The longest a tick is started early so it shares a wake-up with its neighbours.
const MAX_EARLY: Duration = Duration::from_millis(10);

impl<R: Clone> Poller<R> {
    /// A poller holding at most `max_pending` finished polls for its consumer.
    pub fn new(max_pending: usize) -> Self {
        Poller {
            scheduled: HashMap::default(),
            ticks: BinaryHeap::new(),
            next_handle: 1,
            added: 0,
            finished: VecDeque::new(),
            max_pending: max_pending.max(1),
            dropped: 0,
            last_start: None,
        }
    }

    /// Schedules `reader` every `interval`, its first tick placed within the first
    /// interval so reads added together do not all start together.
    pub fn add(
        &mut self,
        reader: R,
        interval: Duration,
        timeout: Option<Duration>,
        deadband: Option<Deadband>,
        now: Instant,
    ) -> Handle {
        let handle = self.next_handle;
        self.next_handle += 1;
        let phase = (self.added as f64 * PHASE_STEP).fract();
        self.added += 1;
        let next_at = now + interval.mul_f64(phase);
        let health = Health {
            handle,
            state: PollState::Waiting,
            last_error: None,
            polls: 0,
            failures: 0,
            overruns: 0,
            late: 0,
            drops: 0,
            latency_ms: None,
        };
        let scheduled = Scheduled {
            reader,
            interval,
            timeout,
            deadband,
            next_at,
            running: None,
            delivered: None,
            health,
            latencies: [0; LATENCY_SAMPLES],
        };
        self.scheduled.insert(handle, scheduled);
        self.ticks.push(Reverse((next_at, handle)));
        handle
    }

    /// Stops a read; a poll of it still running is ignored when it finishes. False when unknown.
    pub fn remove(&mut self, handle: Handle) -> bool {
        self.scheduled.remove(&handle).is_some()
    }

    pub fn len(&self) -> usize {
        self.scheduled.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty()
    }

    /// The reads to start now, with their timeouts. A tick due within a short slack
    /// (a tenth of its interval, at most 10 ms) starts now too, so neighbours share a
    /// wake-up; a tick whose poll before is still running is skipped and counted.
    pub fn start_due(&mut self, now: Instant) -> Vec<(Handle, R, Option<Duration>)> {
        self.last_start = Some(now);
        let mut starts = Vec::new();
        while let Some(&Reverse((at, handle))) = self.ticks.peek() {
            let Some(read) = self.scheduled.get_mut(&handle) else {
                self.ticks.pop();
                continue;
            };
            let early = (read.interval / 10).min(MAX_EARLY);
            if at > now + early {
                break;
            }
            self.ticks.pop();
            if read.next_at != at {
                continue; // a stale entry
            }
            if read.running.is_some() {
                read.health.overruns += 1;
            } else {
                read.running = Some((at, now));
                starts.push((handle, read.reader.clone(), read.timeout));
            }
            // The next tick keeps the schedule; ticks the thread slept through are skipped.
            let mut next = at + read.interval;
            if next <= now {
                let behind = now.duration_since(next).as_nanos() / read.interval.as_nanos().max(1) + 1;
                read.health.overruns += behind as u64;
                next += read.interval * behind as u32;
            }
            read.next_at = next;
            self.ticks.push(Reverse((next, handle)));
        }
        starts
    }

    /// When the driver must call [`Poller::start_due`] next: the next tick, less
    /// its slack, but no sooner than a slack after the last start, so that reads
    /// spread over time start in groups, one wake-up per slack at most.
    pub fn wake_at(&self) -> Option<Instant> {
        self.ticks.peek().map(|Reverse((at, handle))| {
            let early = self.scheduled.get(handle).map_or(Duration::ZERO, |r| (r.interval / 10).min(MAX_EARLY));
            let wake = at.checked_sub(early).unwrap_or(*at);
            self.last_start.map_or(wake, |last| wake.max(last + early).min(*at))
        })
    }

    /// A poll started by [`Poller::start_due`] finished with `read`; it is queued
    /// for the consumer (under a deadband only the tags that changed, if any).
    pub fn finished(&mut self, handle: Handle, columns: Columns, now: Instant, timestamp_ms: f64) {
        let Some(scheduled) = self.scheduled.get_mut(&handle) else { return };
        let Some((tick, started)) = scheduled.running.take() else { return };
        let health = &mut scheduled.health;
        health.polls += 1;
        health.state = match columns.errors.len() {
            0 => PollState::Good,
            n if n == columns.tags() => PollState::Failed,
            _ => PollState::Partial,
        };
        if let Some((_, first)) = columns.errors.first() {
            health.failures += 1;
            health.last_error = Some(first.clone());
        }
        if now > tick + scheduled.interval {
            health.late += 1;
        }
        let micros = now.duration_since(started).as_micros().min(u32::MAX as u128) as u32;
        scheduled.latencies[(health.polls as usize - 1) % LATENCY_SAMPLES] = micros;
        let (columns, indices) = match scheduled.deadband {
            None => (columns, None),
            Some(deadband) => {
                match changes(deadband, scheduled.delivered.get_or_insert_with(Delivered::default), columns) {
                    Some((columns, indices)) => (columns, Some(indices)),
                    None => return,
                }
            }
        };
        if self.finished.len() == self.max_pending {
            if let Some(oldest) = self.finished.pop_front() {
                self.dropped += 1;
                if let Some(read) = self.scheduled.get_mut(&oldest.handle) {
                    read.health.drops += 1;
                }
            }
        }
        self.finished.push_back(Finished { handle, timestamp_ms, columns, indices });
    }

    /// Finished polls waiting for the consumer.
    pub fn pending(&self) -> usize {
        self.finished.len()
    }

    /// Everything finished since the last call, oldest first.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        self.finished.drain(..).collect()
    }

    /// Finished polls dropped unread since the poller started.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Every read's health, in the order they were added.
    pub fn health(&self) -> Vec<Health> {
        let mut all: Vec<Health> = self
            .scheduled
            .values()
            .map(|read| {
                let mut health = read.health.clone();
                let samples = (read.health.polls as usize).min(LATENCY_SAMPLES);
                if samples > 0 {
                    let mut sorted = read.latencies[..samples].to_vec();
                    sorted.sort_unstable();
                    let at = |p: usize| f64::from(sorted[(samples - 1) * p / 100]) / 1000.0;
                    health.latency_ms = Some([at(50), at(90), at(99)]);
                }
                health
            })
            .collect();
        all.sort_by_key(|h| h.handle);
        all
    }
}

/// The tags of `read` that changed under `deadband` since `last`, which learns
/// them; `None` when none did. A tag changes when its quality does or any
/// element moved past the deadband.
fn changes(deadband: Deadband, last: &mut Delivered, read: Columns) -> Option<(Columns, Vec<u32>)> {
    let tags = read.tags();
    let first = last.good.len() != tags || last.values.len() != read.values.len();
    if first {
        last.good = vec![false; tags];
        last.values = vec![f64::NAN; read.values.len()];
    }
    let mut out = Columns { offsets: vec![0], ..Columns::default() };
    let mut indices = Vec::new();
    let mut errors = read.errors.into_iter().peekable();
    for tag in 0..tags {
        let span = read.offsets[tag] as usize..read.offsets[tag + 1] as usize;
        let error = errors.next_if(|(failed, _)| *failed as usize == tag).map(|(_, e)| e);
        let good = error.is_none();
        let moved = good
            && read.values[span.clone()]
                .iter()
                .zip(&last.values[span.clone()])
                .any(|(&new, &old)| deadband.changed(old, new));
        if !(first || moved || good != last.good[tag]) {
            continue;
        }
        last.good[tag] = good;
        if good {
            last.values[span.clone()].copy_from_slice(&read.values[span.clone()]);
        }
        out.values.extend_from_slice(&read.values[span]);
        out.offsets.push(out.values.len() as u32);
        if let Some(error) = error {
            out.errors.push((indices.len() as u32, error));
        }
        indices.push(tag as u32);
    }
    (!indices.is_empty()).then_some((out, indices))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(values: &[f64]) -> Columns {
        Columns { values: values.to_vec(), offsets: (0..=values.len() as u32).collect(), errors: Vec::new() }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn phases_spread_over_the_interval_and_ticks_keep_their_schedule() {
        let t0 = Instant::now();
        let mut poller = Poller::new(100);
        for i in 0..100 {
            poller.add(i, ms(1000), None, None, t0);
        }
        // Walk one interval in 10 ms steps: every read starts once, about a hundredth at a time.
        let mut starts = Vec::new();
        for step in 0..100 {
            let now = t0 + ms(step * 10);
            let started = poller.start_due(now);
            assert!(started.len() <= 3, "{} reads started together at {step}", started.len());
            for (handle, _, _) in started {
                starts.push(handle);
                poller.finished(handle, columns(&[1.0]), now + ms(1), 0.0);
            }
        }
        // Read 1's phase is 0: its second tick (1000 ms) starts early, at 990 ms, with its neighbours.
        assert_eq!(starts.len(), 101);
        starts.sort_unstable();
        starts.dedup();
        assert_eq!(starts, (1..=100).collect::<Vec<_>>());
        // The second interval starts each again, a second after its first tick.
        let again: usize = (100..200).map(|step| poller.start_due(t0 + ms(step * 10)).len()).sum();
        assert_eq!(again, 100);
        assert!(poller.health().iter().all(|h| h.overruns == 0 && h.polls >= 1 && h.state == PollState::Good));
    }

    #[test]
    fn reads_spread_over_an_interval_start_in_groups() {
        let t0 = Instant::now();
        let mut poller = Poller::new(100_000);
        for i in 0..1000 {
            poller.add(i, ms(1000), None, None, t0);
        }
        let (mut wakes, mut starts, mut now) = (0, 0, t0);
        while now < t0 + ms(3000) {
            let started = poller.start_due(now);
            wakes += 1;
            starts += started.len();
            for (handle, _, _) in started {
                poller.finished(handle, columns(&[1.0]), now, 0.0);
            }
            let next = poller.wake_at().unwrap();
            assert!(next >= now + ms(10) || next >= t0 + ms(3000), "woken again {:?} after", next - now);
            now = next;
        }
        assert!((2990..=3010).contains(&starts), "{starts} starts: each read once a second");
        assert!(wakes <= 301, "{wakes} wake-ups for {starts} starts");
        assert!(poller.health().iter().all(|h| h.overruns == 0));
    }

    #[test]
    fn a_tick_while_the_poll_before_runs_is_skipped_and_counted() {
        let t0 = Instant::now();
        let mut poller = Poller::new(100);
        let h = poller.add((), ms(100), None, None, t0);
        assert_eq!(poller.start_due(t0).len(), 1);
        assert!(poller.start_due(t0 + ms(100)).is_empty(), "still running: skipped");
        poller.finished(h, columns(&[1.0]), t0 + ms(150), 1.0);
        assert_eq!(poller.start_due(t0 + ms(200)).len(), 1);
        let health = &poller.health()[0];
        assert_eq!((health.overruns, health.late, health.polls), (1, 1, 1));
        // A thread that slept through three ticks skips them and stays on the schedule.
        poller.finished(h, columns(&[1.0]), t0 + ms(210), 2.0);
        assert_eq!(poller.start_due(t0 + ms(650)).len(), 1);
        assert_eq!(poller.health()[0].overruns, 1 + 3);
        assert_eq!(poller.wake_at(), Some(t0 + ms(700) - ms(10)));
    }

    #[test]
    fn the_queue_is_bounded_and_drops_the_oldest() {
        let t0 = Instant::now();
        let mut poller = Poller::new(3);
        let h = poller.add((), ms(10), None, None, t0);
        for i in 0..5u64 {
            let now = t0 + ms(10 * i);
            assert_eq!(poller.start_due(now).len(), 1);
            poller.finished(h, columns(&[i as f64]), now + ms(1), i as f64);
        }
        let kept: Vec<f64> = poller.take_finished().iter().map(|f| f.columns.values[0]).collect();
        assert_eq!(kept, [2.0, 3.0, 4.0]);
        assert_eq!((poller.dropped(), poller.health()[0].drops), (2, 2));
    }

    #[test]
    fn a_deadband_delivers_only_what_changed() {
        let t0 = Instant::now();
        let mut poller = Poller::new(100);
        let h = poller.add((), ms(10), None, Some(Deadband::Absolute(0.5)), t0);
        let mut poll = |i: u64, read: Columns| {
            let now = t0 + ms(10 * i);
            poller.start_due(now);
            poller.finished(h, read, now, 0.0);
            poller.take_finished().pop().map(|f| (f.indices.unwrap(), f.columns.values))
        };
        assert_eq!(poll(0, columns(&[1.0, 2.0, 3.0])), Some((vec![0, 1, 2], vec![1.0, 2.0, 3.0])), "first: all");
        assert_eq!(poll(1, columns(&[1.4, 2.0, 3.6])), Some((vec![2], vec![3.6])));
        assert_eq!(poll(2, columns(&[1.6, 2.0, 3.6])), Some((vec![0], vec![1.6])), "against the last delivered, 1.0");
        assert_eq!(poll(3, columns(&[1.6, 2.0, 3.6])), None);
        let mut failed = columns(&[f64::NAN, 2.0, 3.6]);
        failed.errors.push((0, Error::timeout("t")));
        assert_eq!(poll(4, failed).map(|(i, _)| i), Some(vec![0]), "a quality change");
        assert_eq!(poll(5, columns(&[1.6, 2.0, 3.6])).map(|(i, _)| i), Some(vec![0]), "and back");
        assert_eq!(poller.health()[0].polls, 6);
    }

    #[test]
    fn percent_deadband_and_nan() {
        let band = Deadband::Percent(10.0);
        assert!(!band.changed(100.0, 109.0));
        assert!(band.changed(100.0, 111.0));
        assert!(band.changed(f64::NAN, 1.0));
        assert!(!band.changed(f64::NAN, f64::NAN));
    }

    #[test]
    fn removed_reads_stop_and_their_late_results_are_ignored() {
        let t0 = Instant::now();
        let mut poller = Poller::new(100);
        let h = poller.add((), ms(10), None, None, t0);
        assert_eq!(poller.start_due(t0).len(), 1);
        assert!(poller.remove(h));
        poller.finished(h, columns(&[1.0]), t0, 0.0);
        assert_eq!(poller.pending(), 0);
        assert!(poller.start_due(t0 + ms(100)).is_empty());
        assert_eq!(poller.wake_at(), None);
        assert!(!poller.remove(h));
    }
}
