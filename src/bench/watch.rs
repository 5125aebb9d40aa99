//! `nvkv bench watch`, etcd's `benchmark watch-latency` over the workload
//! loop of `bench::workload`: W watchers each watch one key, watcher w the
//! key numbered w mod K (K the key space, at most W, so every key has
//! W/K watchers, give or take one; K = 1 is etcd's one hot key), spread over
//! the connections round robin. C clients put random keys of the key space,
//! gated like every workload (`--total`, `--seconds`, `--rate`). Every put's
//! value starts with its sequence number, and the send time of every
//! sequence number is kept, so a watcher that receives an event knows which
//! put it is and records the latency from that put's send to the event's
//! arrival. After the last put, the watchers get until every acknowledged
//! put has reached every watcher of its key, or until nothing has arrived
//! for [`DRAIN_QUIET`]; what never came is `events_missing`.
//!
//! Watchers and clients run on the one bench thread (Cap'n Proto RPC is
//! single-threaded), so an arrival is when the watcher's task took the
//! event, and the thread's own queueing is part of every latency. This
//! module must never know how a store is reached: it sees `StoreTarget`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::keys::{key_of, Chooser};
use super::report::{new_histogram, Kind, Outcome};
use super::workload::{LoadOptions, Shared, StoreTarget, Ticker, WatchStream, WatchedEvent};

/// Digits of the sequence number every value starts with; the smallest
/// `--value-bytes` a watch run takes.
pub const SEQUENCE_DIGITS: usize = 16;
/// The most puts one watch run sends (it keeps each one's send time).
pub const PUTS_MAX: usize = 20_000_000;
/// How long the watchers may go without an event, after the last put, before
/// the events still due are counted missing.
pub const DRAIN_QUIET: Duration = Duration::from_secs(5);

/// The flags a watch run takes beyond the common checks.
pub fn validate(options: &LoadOptions, watchers: u32) -> Result<(), String> {
    if options.key_space > u64::from(watchers) {
        return Err(format!(
            "--key-space {} is more than --watchers {watchers}: a key nobody watches measures nothing; \
             give at most {watchers} keys or more watchers",
            options.key_space
        ));
    }
    if options.value_bytes < SEQUENCE_DIGITS {
        return Err(format!(
            "--value-bytes {} is too small for bench watch: values start with a {SEQUENCE_DIGITS}-digit \
             sequence number; give at least {SEQUENCE_DIGITS}",
            options.value_bytes
        ));
    }
    Ok(())
}

/// What the watchers of a run received.
pub struct Received {
    /// From each event's put being sent to the event arriving, in nanoseconds.
    pub latencies: Histogram<u64>,
    /// Events received once each (what `latencies` holds).
    pub events: u64,
    /// Acknowledged puts that some watcher of their key never received.
    pub missing: u64,
    /// Events a watcher received at a revision not above its last one.
    pub duplicated: u64,
    /// Events that are no put of this run to the watcher's key.
    pub unexpected: u64,
    /// From the start of the run to the last event received.
    pub elapsed: Duration,
}

/// The puts sent and the events received, shared by clients and watchers.
struct Ledger {
    /// Send time and key number of each put, by sequence number.
    sent: RefCell<Vec<(Instant, u64)>>,
    /// Puts the store acknowledged, by key number.
    acknowledged: RefCell<Vec<u64>>,
    /// Events received once, by watcher.
    received: RefCell<Vec<u64>>,
    latencies: RefCell<Histogram<u64>>,
    duplicated: Cell<u64>,
    unexpected: Cell<u64>,
    last_event: Cell<Option<Instant>>,
}

impl Ledger {
    /// Takes one event arrived at `watcher` (of key `number`) at `arrived`.
    fn take(&self, watcher: usize, number: u64, key: &[u8], event: &WatchedEvent, arrived: Instant) {
        let sent = (!event.deleted && event.key == key)
            .then(|| sequence_of(&event.value))
            .flatten()
            .and_then(|sequence| self.sent.borrow().get(usize::try_from(sequence).ok()?).copied())
            .filter(|&(_, put_number)| put_number == number);
        let Some((sent, _)) = sent else {
            self.unexpected.set(self.unexpected.get() + 1);
            return;
        };
        let nanos = u64::try_from(arrived.duration_since(sent).as_nanos()).unwrap_or(u64::MAX);
        self.latencies.borrow_mut().saturating_record(nanos.max(1));
        self.received.borrow_mut()[watcher] += 1;
        self.last_event.set(Some(arrived));
    }

    fn events(&self) -> u64 {
        self.received.borrow().iter().sum()
    }
}

/// A value of `bytes` bytes that starts with `sequence` in decimal.
fn value_of(sequence: u64, bytes: usize) -> Vec<u8> {
    let mut value = format!("{sequence:0SEQUENCE_DIGITS$}").into_bytes();
    value.resize(bytes, b'v');
    value
}

/// The sequence number a value of this run starts with.
fn sequence_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value.get(..SEQUENCE_DIGITS)?).ok()?.parse().ok()
}

/// Opens the watchers, runs the clients' puts until the time or the total
/// runs out, and waits for the events still due. Must run inside a `LocalSet`.
pub async fn drive<T: StoreTarget + 'static>(
    options: &LoadOptions,
    watchers: u32,
    targets: Vec<Rc<T>>,
) -> Result<Outcome, String> {
    let key_space = usize::try_from(options.key_space).expect("validated: at most --watchers keys");
    let ledger = Rc::new(Ledger {
        sent: RefCell::new(Vec::new()),
        acknowledged: RefCell::new(vec![0; key_space]),
        received: RefCell::new(vec![0; watchers as usize]),
        latencies: RefCell::new(new_histogram()),
        duplicated: Cell::new(0),
        unexpected: Cell::new(0),
        last_event: Cell::new(None),
    });
    let shared = Rc::new(Shared::new(options));
    let mut watching = Vec::new();
    for watcher in 0..watchers as usize {
        let number = (watcher % key_space) as u64;
        let key = key_of(number, options.key_bytes);
        let stream = targets[watcher % targets.len()].watch(&key, &[]).await.map_err(|error| {
            format!("opening watcher {watcher} of key {}: {error}", String::from_utf8_lossy(&key))
        })?;
        let (ledger, shared) = (ledger.clone(), shared.clone());
        watching.push(tokio::task::spawn_local(watch_key(stream, watcher, number, key, ledger, shared)));
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    let ticker = Ticker::start("watch", options, &shared, started);
    let mut clients = Vec::new();
    for client in 0..options.clients {
        let target = targets[client as usize % targets.len()].clone();
        let (shared, ledger, options) = (shared.clone(), ledger.clone(), options.clone());
        clients.push(tokio::task::spawn_local(async move {
            let mut chooser = Chooser::for_client(client);
            while shared.admit(&options, deadline).await {
                let sequence = ledger.sent.borrow().len();
                if sequence >= PUTS_MAX {
                    break;
                }
                let number = chooser.number_below(options.key_space);
                let key = key_of(number, options.key_bytes);
                let value = value_of(sequence as u64, options.value_bytes);
                let start = Instant::now();
                ledger.sent.borrow_mut().push((start, number));
                let answer = target.put(&key, &value).await;
                if answer.is_ok() {
                    ledger.acknowledged.borrow_mut()[number as usize] += 1;
                }
                shared.record(Kind::Put, start, answer);
            }
        }));
    }
    for client in clients {
        let _ = client.await;
    }
    let elapsed = started.elapsed();
    ticker.finish();

    let expected: Vec<u64> = {
        let acknowledged = ledger.acknowledged.borrow();
        (0..watchers as usize).map(|watcher| acknowledged[watcher % key_space]).collect()
    };
    let due = || -> u64 {
        let received = ledger.received.borrow();
        expected
            .iter()
            .zip(received.iter())
            .map(|(expected, received)| expected.saturating_sub(*received))
            .sum()
    };
    let (mut events, mut quiet_since) = (ledger.events(), Instant::now());
    while due() > 0
        && quiet_since.elapsed() < DRAIN_QUIET
        && !watching.iter().all(tokio::task::JoinHandle::is_finished)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if ledger.events() != events {
            (events, quiet_since) = (ledger.events(), Instant::now());
        }
    }
    for watcher in &watching {
        watcher.abort();
    }
    let missing = due();
    let received = Received {
        latencies: ledger.latencies.borrow().clone(),
        events: ledger.events(),
        missing,
        duplicated: ledger.duplicated.get(),
        unexpected: ledger.unexpected.get(),
        elapsed: ledger.last_event.get().map_or(elapsed, |last| last.duration_since(started)),
    };
    let mut outcome = shared.outcome(elapsed);
    outcome.errors += received.missing + received.duplicated + received.unexpected;
    outcome.watch = Some(received);
    Ok(outcome)
}

/// One watcher: takes every event of its key until the watch ends, which is
/// a failure (the run ends its watchers by aborting them).
async fn watch_key<S: WatchStream>(
    mut stream: S,
    watcher: usize,
    number: u64,
    key: Vec<u8>,
    ledger: Rc<Ledger>,
    shared: Rc<Shared>,
) {
    let mut last_revision = 0;
    loop {
        let events = match stream.next().await {
            Ok(events) => events,
            Err(error) => {
                let key = String::from_utf8_lossy(&key);
                shared.fail(&format!("watcher {watcher} of key {key} ended: {error}"));
                return;
            }
        };
        let arrived = Instant::now();
        for event in &events {
            if event.revision <= last_revision {
                ledger.duplicated.set(ledger.duplicated.get() + 1);
                continue;
            }
            last_revision = event.revision;
            ledger.take(watcher, number, &key, event, arrived);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_sequence_number() {
        let value = value_of(42, 20);
        assert_eq!(value, b"0000000000000042vvvv");
        assert_eq!(sequence_of(&value), Some(42));
        assert_eq!(sequence_of(&value_of(u64::from(u32::MAX), SEQUENCE_DIGITS)), Some(u64::from(u32::MAX)));
        assert_eq!(sequence_of(b"00000042"), None, "too short");
        assert_eq!(sequence_of(b"vvvvvvvvvvvvvvvvvvvv"), None, "not a number");
    }
}
