//! A fault-injecting namespace for tests: wraps any other namespace and,
//! as a shared [`FaultPlan`] says, fails chosen writes or flushes, tears a
//! write and "kills" the device, or holds completions back.
//!
//! This module owns the plan and the bookkeeping of which command meets
//! which fault. It must never pass a command the plan says fails (or any
//! command after the device died) to the inner namespace, and never report
//! a planned failure as success. It is a test tool: the plan sits behind a
//! `Mutex`, which the request path of a real deployment never uses.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    check_command, Command, CommandKind, Completion, DmaBuf, Namespace, NamespaceInfo, NvmeError, QueuePair,
    QueuePairConfig, Rejected,
};

/// The faults a test plans, shared by the namespace and every queue pair it
/// opens. Commands are counted per kind from 1, across all queue pairs, in
/// the order they are accepted by `submit`.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    state: Arc<Mutex<PlanState>>,
}

#[derive(Debug, Default)]
struct PlanState {
    writes_to_fail: BTreeSet<u64>,
    flushes_to_fail: BTreeSet<u64>,
    /// (write number, blocks of it that reach the device).
    write_to_tear: Option<(u64, u64)>,
    latency: Option<Duration>,
    /// (write number, extra time its completion is held back).
    writes_to_delay: HashMap<u64, Duration>,
    /// Once any completion may be held back, queue pairs make a reactor poll.
    holds_back: bool,
    /// Set once the torn write went out: nothing reaches the device after it.
    dead: bool,
    writes: u64,
    flushes: u64,
    reads: u64,
}

impl FaultPlan {
    /// The `nth` write (counted from 1) fails with [`NvmeError::Injected`]
    /// and never reaches the device.
    pub fn fail_write(&self, nth: u64) {
        self.lock().writes_to_fail.insert(nth);
    }

    /// The `nth` flush (counted from 1) fails with [`NvmeError::Injected`]
    /// and never reaches the device.
    pub fn fail_flush(&self, nth: u64) {
        self.lock().flushes_to_fail.insert(nth);
    }

    /// The `nth` write (counted from 1) is torn: only its first
    /// `blocks_kept` blocks reach the device, then the device dies. That
    /// write and every command submitted after it, on any queue pair of this
    /// namespace, complete with [`NvmeError::Dead`] and never reach the device.
    pub fn tear_write(&self, nth: u64, blocks_kept: u64) {
        self.lock().write_to_tear = Some((nth, blocks_kept));
    }

    /// Every completion is held back until `latency` has passed since its
    /// command was submitted. A queue pair asked for its `completion_fd`
    /// while latency is planned answers `None`, so the reactor polls: plan
    /// latency before handing queue pairs to a reactor.
    pub fn add_latency(&self, latency: Duration) {
        let mut plan = self.lock();
        plan.latency = Some(latency);
        plan.holds_back = true;
    }

    /// The completion of the `nth` write (counted from 1) is held back
    /// `delay` beyond any planned latency: the write reaches the device at
    /// once, its caller hears of it late. Like [`FaultPlan::add_latency`],
    /// queue pairs then answer no `completion_fd`, so a reactor polls.
    pub fn delay_write(&self, nth: u64, delay: Duration) {
        let mut plan = self.lock();
        plan.writes_to_delay.insert(nth, delay);
        plan.holds_back = true;
    }

    /// Writes accepted so far (including failed and torn ones).
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Flushes accepted so far (including failed ones).
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// Reads accepted so far.
    pub fn reads(&self) -> u64 {
        self.lock().reads
    }

    /// Whether a torn write has killed the device.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    fn lock(&self) -> MutexGuard<'_, PlanState> {
        // A test that panicked while holding the plan has already failed;
        // the counters are still meaningful to its other threads.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A namespace that injects the faults of its [`FaultPlan`] into the
/// commands of its queue pairs and passes every other command to `inner`.
#[derive(Debug)]
pub struct FaultNamespace {
    inner: Arc<dyn Namespace>,
    info: NamespaceInfo,
    plan: FaultPlan,
}

impl FaultNamespace {
    /// Wraps `inner` with an empty plan: until the test plans a fault, every
    /// command behaves as it would on `inner`.
    pub fn new(inner: Arc<dyn Namespace>) -> FaultNamespace {
        let inner_info = inner.info();
        let info = NamespaceInfo {
            backend: "fault",
            description: format!("fault injection over {}", inner_info.description),
            ..inner_info.clone()
        };
        FaultNamespace { inner, info, plan: FaultPlan::default() }
    }

    /// The plan of this namespace, to program faults and read counters.
    pub fn plan(&self) -> FaultPlan {
        self.plan.clone()
    }

    /// The wrapped namespace.
    pub fn inner(&self) -> &Arc<dyn Namespace> {
        &self.inner
    }
}

impl Namespace for FaultNamespace {
    fn info(&self) -> &NamespaceInfo {
        &self.info
    }

    fn open_queue_pair(&self, config: &QueuePairConfig) -> Result<Box<dyn QueuePair>, NvmeError> {
        Ok(Box::new(FaultQueuePair {
            inner: self.inner.open_queue_pair(config)?,
            info: self.info.clone(),
            plan: self.plan.clone(),
            depth: config.depth,
            next_inner_tag: 0,
            passed: HashMap::new(),
            held: Vec::new(),
            in_flight: 0,
            inner_completions: Vec::new(),
        }))
    }
}

/// What becomes of a command passed to the inner queue pair.
struct Passed {
    tag: u64,
    submitted: Instant,
    /// For the torn write: its full length, restored on the buffer, and the
    /// reason its completion fails whatever the device says.
    torn_len: Option<usize>,
    /// Held back this much beyond the planned latency.
    delay: Duration,
}

/// A finished command waiting for its planned latency to pass.
struct Held {
    ready_at: Instant,
    completion: Completion,
}

struct FaultQueuePair {
    inner: Box<dyn QueuePair>,
    info: NamespaceInfo,
    plan: FaultPlan,
    depth: u32,
    /// Tags on the inner queue pair are ours, so we can find the submission
    /// time and fate of each command; `passed` maps them back.
    next_inner_tag: u64,
    passed: HashMap<u64, Passed>,
    held: Vec<Held>,
    in_flight: usize,
    inner_completions: Vec<Completion>,
}

/// What the plan decides for one accepted command.
enum Fate {
    /// To the device; the completion held back `delay` more.
    Pass {
        delay: Duration,
    },
    Fail(String),
    Tear {
        blocks_kept: u64,
    },
    Dead,
}

impl FaultQueuePair {
    fn hold(&mut self, submitted: Instant, completion: Completion) {
        let latency = self.plan.lock().latency.unwrap_or_default();
        self.held.push(Held { ready_at: submitted + latency, completion });
    }

    /// Moves the inner queue pair's completions into `held`, with their
    /// outer tags and the fate the plan gave them.
    fn collect_inner(&mut self) {
        let mut finished = std::mem::take(&mut self.inner_completions);
        self.inner.process_completions(&mut finished);
        for mut completion in finished.drain(..) {
            let passed = self
                .passed
                .remove(&completion.tag)
                .unwrap_or_else(|| panic!("inner completion with tag {} we never submitted", completion.tag));
            completion.tag = passed.tag;
            if let Some(full_len) = passed.torn_len {
                if let Some(buffer) = completion.buffer.as_mut() {
                    buffer.set_len(full_len);
                }
                completion.result = Err(NvmeError::Dead);
            }
            self.hold(passed.submitted + passed.delay, completion);
        }
        self.inner_completions = finished;
    }

    fn decide(&self, kind: CommandKind) -> Fate {
        let mut plan = self.plan.lock();
        if plan.dead {
            match kind {
                CommandKind::Write => plan.writes += 1,
                CommandKind::Flush => plan.flushes += 1,
                CommandKind::Read => plan.reads += 1,
            }
            return Fate::Dead;
        }
        match kind {
            CommandKind::Write => {
                plan.writes += 1;
                let nth = plan.writes;
                if plan.writes_to_fail.contains(&nth) {
                    return Fate::Fail(format!("write {nth} failed as planned"));
                }
                if let Some((torn, blocks_kept)) = plan.write_to_tear {
                    if torn == nth {
                        plan.dead = true;
                        return Fate::Tear { blocks_kept };
                    }
                }
                Fate::Pass { delay: plan.writes_to_delay.remove(&nth).unwrap_or_default() }
            }
            CommandKind::Flush => {
                plan.flushes += 1;
                let nth = plan.flushes;
                if plan.flushes_to_fail.contains(&nth) {
                    return Fate::Fail(format!("flush {nth} failed as planned"));
                }
                Fate::Pass { delay: Duration::ZERO }
            }
            CommandKind::Read => {
                plan.reads += 1;
                Fate::Pass { delay: Duration::ZERO }
            }
        }
    }

    /// Completes a command without the device.
    fn complete_here(&mut self, command: Command, tag: u64, error: NvmeError) {
        let kind = command.kind();
        let buffer = match command {
            Command::Write { buffer, .. } | Command::Read { buffer, .. } => Some(buffer),
            Command::Flush => None,
        };
        self.in_flight += 1;
        self.hold(Instant::now(), Completion { tag, kind, buffer, result: Err(error) });
    }

    fn pass(
        &mut self,
        command: Command,
        tag: u64,
        torn_len: Option<usize>,
        delay: Duration,
    ) -> Result<(), Box<Rejected>> {
        let inner_tag = self.next_inner_tag;
        self.next_inner_tag += 1;
        self.inner.submit(command, inner_tag)?;
        self.passed.insert(inner_tag, Passed { tag, submitted: Instant::now(), torn_len, delay });
        self.in_flight += 1;
        Ok(())
    }
}

impl QueuePair for FaultQueuePair {
    fn info(&self) -> &NamespaceInfo {
        &self.info
    }

    fn allocate(&mut self, bytes: usize) -> DmaBuf {
        self.inner.allocate(bytes)
    }

    fn submit(&mut self, command: Command, tag: u64) -> Result<(), Box<Rejected>> {
        if let Err(error) = check_command(&self.info, &command) {
            return Err(Box::new(Rejected { error, command }));
        }
        if self.in_flight >= self.depth as usize {
            return Err(Box::new(Rejected { error: NvmeError::QueueFull { depth: self.depth }, command }));
        }
        match self.decide(command.kind()) {
            Fate::Pass { delay } => self.pass(command, tag, None, delay),
            Fate::Fail(reason) => {
                self.complete_here(command, tag, NvmeError::Injected(reason));
                Ok(())
            }
            Fate::Dead => {
                self.complete_here(command, tag, NvmeError::Dead);
                Ok(())
            }
            Fate::Tear { blocks_kept } => {
                let Command::Write { lba, mut buffer, fua } = command else {
                    unreachable!("only writes are torn")
                };
                let full_len = buffer.len();
                let kept_len = (blocks_kept.saturating_mul(u64::from(self.info.lba_bytes)))
                    .min(full_len as u64) as usize;
                if kept_len == 0 {
                    self.complete_here(Command::Write { lba, buffer, fua }, tag, NvmeError::Dead);
                    return Ok(());
                }
                buffer.set_len(kept_len);
                self.pass(Command::Write { lba, buffer, fua }, tag, Some(full_len), Duration::ZERO).map_err(
                    |mut rejected| {
                        if let Command::Write { buffer, .. } = &mut rejected.command {
                            buffer.set_len(full_len);
                        }
                        rejected
                    },
                )
            }
        }
    }

    fn process_completions(&mut self, completions: &mut Vec<Completion>) -> usize {
        self.collect_inner();
        let now = Instant::now();
        let before = completions.len();
        let mut index = 0;
        while index < self.held.len() {
            if self.held[index].ready_at <= now {
                completions.push(self.held.remove(index).completion);
            } else {
                index += 1;
            }
        }
        let moved = completions.len() - before;
        self.in_flight -= moved;
        moved
    }

    fn wait(&mut self) -> Result<(), NvmeError> {
        if self.in_flight == 0 {
            return Ok(());
        }
        self.collect_inner();
        if self.held.is_empty() {
            self.inner.wait()?;
            self.collect_inner();
        }
        // Whatever arrived is ready once its latency has passed.
        if let Some(ready_at) = self.held.iter().map(|held| held.ready_at).min() {
            let now = Instant::now();
            if ready_at > now {
                std::thread::sleep(ready_at - now);
            }
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn completion_fd(&self) -> Option<RawFd> {
        // A held completion becomes ready with no event on the inner fd, so
        // a reactor sleeping on it would miss it: make it poll instead.
        // Completions made here without the device (planned failures, Dead)
        // raise no event either, but they are ready at once, and a reactor
        // calls process_completions after submitting before it sleeps (that
        // call is what sends commands), so it finds them there.
        if self.plan.lock().holds_back {
            return None;
        }
        self.inner.completion_fd()
    }
}
