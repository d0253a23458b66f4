//! The way out for outputs that go over the network (syslog, remote-write): a bounded queue and
//! a sender thread, so that capture never waits for a collector.
//!
//! An item that finds the queue full, that the courier gives up on, or that is still
//! undelivered when the run ends (after a short drain), is counted as a failure of its output
//! (summary, `otwatch_output_errors_total`, exit status), in the courier's units (messages,
//! samples).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{OutputHealth, OutputKind};

/// What became of one attempt to deliver an item.
pub enum Delivery {
    /// Delivered (or lost and counted by the courier itself): the next item.
    Done,
    /// The collector is away: try this item again later (the courier keeps its own backoff).
    Retry,
}

/// The network half: delivers one item at a time.
pub trait Courier: Send + 'static {
    type Item: Send + 'static;
    fn deliver(&mut self, item: &Self::Item) -> Delivery;
    /// How many units (messages, samples) an item counts for when it is lost.
    fn units(item: &Self::Item) -> u64;
    /// The units' name, for messages: `message(s)`, `sample(s)`.
    const UNITS: &'static str;
    /// The collector, for messages.
    fn describe(&self) -> String;
    /// The queue is empty for now (a courier that batches sends what it holds).
    fn idle(&mut self) {}
    /// Whether the courier holds items it took but has not delivered (a batch).
    fn holding(&self) -> bool {
        false
    }
    /// The run is over: a courier that batches sends, or counts as lost, what it holds, by
    /// `deadline`.
    fn close(&mut self, _deadline: Instant) {}
}

/// The sending half, owned by the run; the thread does the network work.
pub struct Outbox<T: Send + 'static> {
    tx: Option<SyncSender<T>>,
    /// Set at the end of the run: the sender gives up on an unreachable collector after the
    /// drain time.
    closing: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    kind: OutputKind,
    health: Arc<OutputHealth>,
    units: fn(&T) -> u64,
    drain: Duration,
}

impl<T: Send + 'static> Outbox<T> {
    /// Starts the sender thread (`name`) with a queue of `capacity` items; the end of the run
    /// waits up to `drain` for the queue to reach a reachable collector.
    pub fn start<C: Courier<Item = T>>(
        courier: C,
        name: &str,
        capacity: usize,
        drain: Duration,
        kind: OutputKind,
        health: Arc<OutputHealth>,
    ) -> Result<Outbox<T>, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let h = Arc::clone(&health);
        let closing = Arc::new(AtomicBool::new(false));
        let c = Arc::clone(&closing);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(courier, rx, &c, drain, kind, &h))
            .map_err(|e| format!("{name} thread: {e}"))?;
        Ok(Outbox {
            tx: Some(tx),
            closing,
            thread: Some(thread),
            kind,
            health,
            units: C::units,
            drain,
        })
    }

    /// Queues an item; never blocks. A full queue loses the item, counted.
    pub fn push(&mut self, item: T) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(item)) => self.health.fail(
                self.kind,
                (self.units)(&item),
                &"queue full: the collector is down or too slow",
            ),
            Err(TrySendError::Disconnected(item)) => {
                self.health
                    .fail(self.kind, (self.units)(&item), &"sender thread gone")
            }
        }
    }

    /// End of the run: the queue drains to the collector for the drain time at most; what is
    /// left is counted as failed.
    pub fn finish(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let limit = Instant::now() + self.drain + JOIN_GRACE;
            while !t.is_finished() {
                if Instant::now() >= limit {
                    // Left behind (the process ends soon); what it held is not known.
                    self.health.fail(
                        self.kind,
                        1,
                        &"the sender thread did not finish in time: what it held may be lost",
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.join().is_err() {
                self.health.fail(self.kind, 1, &"sender thread panicked");
            }
        }
    }
}

impl<T: Send + 'static> Drop for Outbox<T> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What a courier has past the drain time to finish what it holds (a last batch, its
/// acknowledgement).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long the end of the run waits for the sender thread past its drain time: every network
/// operation it makes has a deadline, so this is a last guard, not a wait that happens.
const JOIN_GRACE: Duration = Duration::from_secs(15);

fn run<C: Courier>(
    mut courier: C,
    rx: Receiver<C::Item>,
    closing: &AtomicBool,
    drain: Duration,
    kind: OutputKind,
    health: &OutputHealth,
) {
    let mut pending: Option<C::Item> = None;
    let mut deadline: Option<Instant> = None;
    loop {
        // The end of the run: the drain time counts from the moment it is known, however the
        // deliveries are going (a slow collector cannot hold the end up either).
        if closing.load(Ordering::Relaxed) {
            let end = *deadline.get_or_insert_with(|| Instant::now() + drain);
            if Instant::now() >= end {
                let left = pending.as_ref().map_or(0, C::units)
                    + rx.try_iter().map(|i| C::units(&i)).sum::<u64>();
                // What the courier holds is sent, or counted, by it.
                courier.close(end + CLOSE_GRACE);
                if left > 0 {
                    health.fail(
                        kind,
                        left,
                        &format!(
                            "{left} {} undelivered at the end: {} unreachable",
                            C::UNITS,
                            courier.describe()
                        ),
                    );
                }
                return;
            }
        }
        if pending.is_none() {
            let next = match rx.try_recv() {
                Ok(m) => Ok(m),
                Err(TryRecvError::Empty) => {
                    courier.idle();
                    let wait = if courier.holding() { 50 } else { 200 };
                    rx.recv_timeout(Duration::from_millis(wait))
                }
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            };
            pending = match next {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    // Everything queued went; what the courier still holds goes too, within
                    // the drain time.
                    courier.idle();
                    if courier.holding() {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    courier.close(
                        deadline.map_or_else(|| Instant::now() + drain, |d| d + CLOSE_GRACE),
                    );
                    return;
                }
            };
        }
        let Some(item) = &pending else { continue };
        if let Delivery::Done = courier.deliver(item) {
            pending = None;
            continue;
        }
        // Not delivered: the collector is away. Items wait in the queue (bounded: the outbox
        // counts what does not fit).
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A retry delay that doubles from 250 ms up to 5 s while a collector stays away.
pub struct Backoff {
    delay: Duration,
    next_try: Instant,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: Duration::from_millis(250),
            next_try: Instant::now(),
        }
    }
}

impl Backoff {
    /// Whether it is time to try again.
    pub fn ready(&self) -> bool {
        Instant::now() >= self.next_try
    }

    /// An attempt failed: wait longer before the next.
    pub fn failed(&mut self) {
        self.next_try = Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
    }

    /// An attempt went through.
    pub fn succeeded(&mut self) {
        self.delay = Duration::from_millis(250);
    }
}
