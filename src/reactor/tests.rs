//! Reactor tests: real threads, real eventfds, drivers that count.

use std::cell::Cell;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// Waits for `condition`, checking every millisecond, up to a generous
/// deadline: the tests assert on counters, never on how long things took.
pub(crate) fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    condition()
}

pub(crate) fn cores(count: usize) -> Vec<usize> {
    let machine = crate::topology::discover(None).expect("this machine has a CPU");
    (0..count).map(|shard| machine.candidates[shard % machine.candidates.len()]).collect()
}

pub(crate) fn settings(poll_mode: PollMode) -> ReactorSettings {
    ReactorSettings { poll_mode, adaptive_poll: Duration::from_micros(50), mailbox_capacity: 64 }
}

/// A driver with no device: never any work, always idle.
struct IdleDriver;

impl ShardDriver for IdleDriver {
    fn poll(&mut self) -> bool {
        false
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    fn idle(&self) -> bool {
        true
    }
}

pub(crate) fn idle_factories(count: usize) -> Vec<DriverFactory> {
    (0..count)
        .map(|_| Box::new(|_: &ReactorContext| Ok(Box::new(IdleDriver) as Box<dyn ShardDriver>)) as _)
        .collect()
}

#[test]
fn two_reactors_exchange_mailbox_messages() {
    // Room for every message at once: shard 0 may forward all 100 before
    // shard 1 runs any.
    let roomy = ReactorSettings { mailbox_capacity: 128, ..settings(PollMode::Adaptive) };
    let reactors = Reactors::start(&roomy, &cores(2), idle_factories(2)).expect("start");
    let (replies, received) = mpsc::channel();
    // 100 round trips main → shard 0 → shard 1 → main, each hop recording
    // the shard it ran on.
    for round in 0..100u32 {
        let replies = replies.clone();
        reactors
            .mailboxes()
            .get(0)
            .send_blocking(move |context: &ReactorContext| {
                let first = context.shard();
                context
                    .mailbox(1)
                    .try_send(move |context: &ReactorContext| {
                        replies.send((round, first, context.shard())).expect("the test waits for replies");
                    })
                    .expect("shard 1 has room");
            })
            .expect("shard 0 runs");
    }
    let mut rounds: Vec<u32> = Vec::new();
    for _ in 0..100 {
        let (round, first, second) = received.recv_timeout(DEADLINE).expect("every round trip completes");
        assert_eq!((first, second), (0, 1), "tasks run on the shard they were sent to");
        rounds.push(round);
    }
    rounds.sort_unstable();
    assert_eq!(rounds, (0..100).collect::<Vec<_>>());
    let stats = reactors.stop().expect("stop");
    assert_eq!(stats[0].mailbox_tasks, 100);
    assert_eq!(stats[1].mailbox_tasks, 100);
}

#[test]
fn an_idle_adaptive_reactor_sleeps_and_a_message_wakes_it() {
    let reactors =
        Reactors::start(&settings(PollMode::Adaptive), &cores(1), idle_factories(1)).expect("start");
    assert!(wait_until(|| reactors.stats()[0].sleeps >= 1), "an idle adaptive reactor goes to sleep");
    std::thread::sleep(Duration::from_millis(20));
    let asleep = reactors.stats()[0];
    std::thread::sleep(Duration::from_millis(200));
    let later = reactors.stats()[0];
    assert_eq!(later.iterations, asleep.iterations, "a sleeping reactor does not turn its loop");
    assert_eq!(later.sleeps, asleep.sleeps, "nothing woke it");

    let (reply, replied) = mpsc::channel();
    reactors
        .mailboxes()
        .get(0)
        .try_send(move |context: &ReactorContext| reply.send(context.stats().sleeps).expect("test waits"))
        .expect("room");
    let sleeps_when_woken = replied.recv_timeout(DEADLINE).expect("the doorbell wakes the reactor");
    assert_eq!(sleeps_when_woken, asleep.sleeps, "the message was handled by the woken reactor");
    assert!(wait_until(|| reactors.stats()[0].sleeps > asleep.sleeps), "it sleeps again once idle");
    let stats = reactors.stop().expect("stop");
    assert!(stats[0].idle_nanos > 0 && stats[0].busy_nanos > 0, "{stats:?}");
}

#[test]
fn busy_mode_never_sleeps() {
    let reactors = Reactors::start(&settings(PollMode::Busy), &cores(1), idle_factories(1)).expect("start");
    assert!(wait_until(|| reactors.stats()[0].iterations >= 10_000), "a busy reactor keeps polling");
    let (reply, replied) = mpsc::channel();
    reactors
        .mailboxes()
        .get(0)
        .try_send(move |context| reply.send(context.shard()).expect("waits"))
        .expect("room");
    assert_eq!(replied.recv_timeout(DEADLINE).expect("a busy reactor runs its mailbox"), 0);
    let stats = reactors.stop().expect("stop");
    assert_eq!(stats[0].sleeps, 0, "busy mode never sleeps");
    assert!(stats[0].busy_nanos > 0, "busy time is counted without sleeps");
    assert_eq!(stats[0].idle_nanos, 0);
}

/// A driver whose work arrives from another thread through its own eventfd,
/// like a queue pair's completion fd.
struct EventDriver {
    eventfd: Arc<EventFd>,
    arrived: Arc<AtomicUsize>,
    handled: Arc<AtomicUsize>,
}

impl ShardDriver for EventDriver {
    fn poll(&mut self) -> bool {
        let arrived = self.arrived.load(Ordering::Acquire);
        let progress = arrived > self.handled.load(Ordering::Relaxed);
        self.handled.store(arrived, Ordering::Release);
        progress
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        vec![self.eventfd.as_raw_fd()]
    }

    fn idle(&self) -> bool {
        true
    }
}

#[test]
fn a_sleeping_reactor_wakes_on_its_drivers_fd() {
    let eventfd = Arc::new(EventFd::new().expect("eventfd"));
    let arrived = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let driver = EventDriver { eventfd: eventfd.clone(), arrived: arrived.clone(), handled: handled.clone() };
    let factory: DriverFactory = Box::new(move |_| Ok(Box::new(driver) as Box<dyn ShardDriver>));
    let reactors = Reactors::start(&settings(PollMode::Adaptive), &cores(1), vec![factory]).expect("start");
    for completion in 1..=3u64 {
        // Sleep k comes before completion k: the reactor is asleep (or about
        // to be) when the eventfd rings.
        assert!(
            wait_until(|| reactors.stats()[0].sleeps >= completion),
            "the reactor sleeps between completions"
        );
        arrived.store(completion as usize, Ordering::Release);
        eventfd.ring();
        let polled = wait_until(|| handled.load(Ordering::Acquire) == completion as usize);
        assert!(polled, "completion {completion} is polled");
    }
    reactors.stop().expect("stop");
}

/// A driver fed by a local task: the task waits on a tokio timer, queues
/// work in shared `Rc` state and wakes the reactor through its context.
struct LocalWorkDriver {
    queued: Rc<Cell<bool>>,
    done: Arc<AtomicBool>,
}

impl ShardDriver for LocalWorkDriver {
    fn poll(&mut self) -> bool {
        if self.queued.replace(false) {
            self.done.store(true, Ordering::Release);
            return true;
        }
        false
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    fn idle(&self) -> bool {
        !self.queued.get()
    }
}

#[test]
fn a_timer_in_a_local_task_and_a_local_wake_reach_a_sleeping_reactor() {
    let done = Arc::new(AtomicBool::new(false));
    let sleeps_before_work = Arc::new(AtomicU64::new(0));
    let factory: DriverFactory = {
        let done = done.clone();
        let sleeps_before_work = sleeps_before_work.clone();
        Box::new(move |context: &ReactorContext| {
            let queued = Rc::new(Cell::new(false));
            let task_context = context.clone();
            let task_queued = queued.clone();
            tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                sleeps_before_work.store(task_context.stats().sleeps, Ordering::Release);
                task_queued.set(true);
                task_context.wake();
            });
            Ok(Box::new(LocalWorkDriver { queued, done }) as Box<dyn ShardDriver>)
        })
    };
    let reactors = Reactors::start(&settings(PollMode::Adaptive), &cores(1), vec![factory]).expect("start");
    assert!(wait_until(|| done.load(Ordering::Acquire)), "the woken reactor polled the queued work");
    assert!(sleeps_before_work.load(Ordering::Acquire) >= 1, "the reactor was asleep when the timer fired");
    reactors.stop().expect("stop");
}

/// A driver with work in flight that completes one unit per poll, but
/// only once the reactor is stopping, and records when it was dropped.
struct InFlightDriver {
    context: ReactorContext,
    in_flight: usize,
    completed: Arc<AtomicUsize>,
    dropped_after: Arc<AtomicUsize>,
}

impl ShardDriver for InFlightDriver {
    fn poll(&mut self) -> bool {
        if self.in_flight == 0 || !self.context.stopping() {
            return false;
        }
        self.in_flight -= 1;
        self.completed.fetch_add(1, Ordering::AcqRel);
        true
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    fn idle(&self) -> bool {
        self.in_flight == 0
    }
}

impl Drop for InFlightDriver {
    fn drop(&mut self) {
        self.dropped_after.store(self.completed.load(Ordering::Acquire), Ordering::Release);
    }
}

#[test]
fn stop_finishes_in_flight_work_and_queued_messages() {
    let completed = Arc::new(AtomicUsize::new(0));
    let dropped_after = Arc::new(AtomicUsize::new(usize::MAX));
    let factory: DriverFactory = {
        let completed = completed.clone();
        let dropped_after = dropped_after.clone();
        Box::new(move |context: &ReactorContext| {
            let driver = InFlightDriver { context: context.clone(), in_flight: 5, completed, dropped_after };
            Ok(Box::new(driver) as Box<dyn ShardDriver>)
        })
    };
    let reactors = Reactors::start(&settings(PollMode::Adaptive), &cores(1), vec![factory]).expect("start");
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let ran = ran.clone();
        reactors
            .mailboxes()
            .get(0)
            .send_blocking(move |_| _ = ran.fetch_add(1, Ordering::AcqRel))
            .expect("running");
    }
    assert_eq!(completed.load(Ordering::Acquire), 0, "the driver holds its work until stop begins");
    let stats = reactors.stop().expect("stop");
    assert_eq!(
        completed.load(Ordering::Acquire),
        5,
        "every in-flight unit completed before the reactor exited"
    );
    assert_eq!(dropped_after.load(Ordering::Acquire), 5, "the driver was dropped only after it was idle");
    assert_eq!(ran.load(Ordering::Acquire), 10, "mailbox tasks queued before stop ran");
    assert_eq!(stats[0].mailbox_tasks, 10);
}

#[test]
fn a_stopped_shard_refuses_tasks_and_a_full_one_hands_them_back() {
    let one_slot = ReactorSettings { mailbox_capacity: 1, ..settings(PollMode::Adaptive) };
    // A factory that fails proves start reports it; use a live reactor for the rest.
    let failing: DriverFactory = Box::new(|_| Err("queue pair refused".into()));
    let error =
        Reactors::start(&one_slot, &cores(1), vec![failing]).err().expect("a failing driver fails start");
    assert!(error.to_string().contains("queue pair refused"), "{error}");

    let reactors = Reactors::start(&one_slot, &cores(1), idle_factories(1)).expect("start");
    let mailbox = reactors.mailboxes().get(0).clone();
    let (entered, entered_signal) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    mailbox
        .try_send(move |_| {
            entered.send(()).expect("test waits");
            released.recv_timeout(DEADLINE).expect("test releases");
        })
        .expect("room");
    entered_signal.recv_timeout(DEADLINE).expect("the first task runs");
    mailbox.try_send(|_| {}).expect("one slot free while the reactor is busy");
    let refused = mailbox.try_send(|_| {}).expect_err("the single slot is taken");
    assert_eq!(refused.error, MailboxError::Full { shard: 0, capacity: 1 });
    release.send(()).expect("reactor waits");
    reactors.stop().expect("stop");
    let refused = mailbox.try_send(|_| {}).expect_err("a stopped shard takes nothing");
    assert_eq!(refused.error, MailboxError::Stopped { shard: 0 });
}

thread_local! {
    /// Requests a test holds in flight on a reactor thread.
    static HELD: std::cell::RefCell<Vec<WorkInFlight>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[test]
fn a_loaded_adaptive_reactor_sleeps_when_idle_and_a_light_one_polls() {
    // Polls for a minute after progress: only the load rule lets it sleep.
    let settings = ReactorSettings { adaptive_poll: Duration::from_secs(60), ..settings(PollMode::Adaptive) };
    let reactors = Reactors::start(&settings, &cores(1), idle_factories(1)).expect("start");
    let run = |hold: usize| {
        let (reply, replied) = mpsc::channel();
        reactors
            .mailboxes()
            .get(0)
            .try_send(move |_: &ReactorContext| {
                HELD.with(|held| {
                    let mut held = held.borrow_mut();
                    held.clear();
                    held.extend((0..hold).map(|_| work_in_flight(1)));
                });
                reply.send(()).expect("test waits")
            })
            .expect("room");
        replied.recv_timeout(DEADLINE).expect("the reactor runs the message");
    };
    run(POLL_WORK_MAX + 1);
    assert!(
        wait_until(|| reactors.stats()[0].sleeps >= 1),
        "with more than {POLL_WORK_MAX} requests in flight an idle reactor sleeps"
    );
    // Past the time a reactor counts as loaded after its load went.
    std::thread::sleep(LOADED_MEMORY * 5);
    run(POLL_WORK_MAX);
    let polling = reactors.stats()[0];
    std::thread::sleep(Duration::from_millis(300));
    let later = reactors.stats()[0];
    assert_eq!(later.sleeps, polling.sleeps, "a lightly loaded reactor polls after its progress");
    assert!(later.iterations > polling.iterations, "it polls: {polling:?} then {later:?}");
    run(0);
    reactors.stop().expect("stop");
}

/// A driver that makes progress on every poll while `busy` is set, and has
/// idle work (as the shard log's seal) while `wants` is set, which doing it
/// clears.
struct IdleWorkDriver {
    busy: Arc<AtomicBool>,
    wants: Arc<AtomicBool>,
    last_progress: Arc<std::sync::Mutex<Instant>>,
    idle_work_at: Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl ShardDriver for IdleWorkDriver {
    fn poll(&mut self) -> bool {
        let busy = self.busy.load(Ordering::Acquire);
        if busy {
            *self.last_progress.lock().expect("not poisoned") = Instant::now();
        }
        busy
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    fn idle(&self) -> bool {
        true
    }

    fn wants_idle_work(&self) -> bool {
        self.wants.load(Ordering::Acquire)
    }

    fn idle_work(&mut self) -> bool {
        if !self.wants.swap(false, Ordering::AcqRel) {
            return false;
        }
        self.idle_work_at.lock().expect("not poisoned").push(Instant::now());
        true
    }
}

/// The shard log's seal waits until the reactor has gone IDLE_WORK_AFTER
/// without progress, in every poll mode: never while the driver makes
/// progress, once after it stops, and once more before the reactor stops.
#[test]
fn idle_work_waits_until_the_reactor_stays_idle() {
    let no_poll = ReactorSettings { adaptive_poll: Duration::ZERO, ..settings(PollMode::Adaptive) };
    for settings in [settings(PollMode::Adaptive), no_poll, settings(PollMode::Busy)] {
        let busy = Arc::new(AtomicBool::new(true));
        let wants = Arc::new(AtomicBool::new(true));
        let last_progress = Arc::new(std::sync::Mutex::new(Instant::now()));
        let idle_work_at = Arc::new(std::sync::Mutex::new(Vec::new()));
        let driver = IdleWorkDriver {
            busy: busy.clone(),
            wants: wants.clone(),
            last_progress: last_progress.clone(),
            idle_work_at: idle_work_at.clone(),
        };
        let driver = std::sync::Mutex::new(Some(driver));
        let factory: DriverFactory = Box::new(move |_: &ReactorContext| {
            let driver = driver.lock().expect("not poisoned").take().expect("one driver");
            Ok(Box::new(driver) as Box<dyn ShardDriver>)
        });
        let reactors = Reactors::start(&settings, &cores(1), vec![factory]).expect("start");
        let turns = reactors.stats()[0].iterations;
        assert!(wait_until(|| reactors.stats()[0].iterations > turns + 1000), "the reactor turns");
        std::thread::sleep(IDLE_WORK_AFTER * 10);
        assert!(
            idle_work_at.lock().expect("not poisoned").is_empty(),
            "no idle work while busy ({settings:?})"
        );

        busy.store(false, Ordering::Release);
        assert!(
            wait_until(|| !idle_work_at.lock().expect("not poisoned").is_empty()),
            "idle work once the reactor stays idle ({settings:?})"
        );
        let done = idle_work_at.lock().expect("not poisoned")[0];
        let progressed = *last_progress.lock().expect("not poisoned");
        assert!(
            done.duration_since(progressed) >= IDLE_WORK_AFTER,
            "idle work {:?} after the last progress, not {IDLE_WORK_AFTER:?} ({settings:?})",
            done.duration_since(progressed)
        );
        std::thread::sleep(IDLE_WORK_AFTER * 10);
        assert_eq!(
            idle_work_at.lock().expect("not poisoned").len(),
            1,
            "once per idle period ({settings:?})"
        );

        // Wanted again just before the stop: done before the reactor ends.
        wants.store(true, Ordering::Release);
        reactors.stop().expect("stop");
        assert_eq!(
            idle_work_at.lock().expect("not poisoned").len(),
            2,
            "idle work before stopping ({settings:?})"
        );
    }
}
