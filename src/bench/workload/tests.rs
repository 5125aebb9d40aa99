//! The workloads run against a store model in memory: what each one sends,
//! what the report says of it, the generator's threads, the budget.

use super::*;
use crate::bench::report::{budget, BenchReport, CLIENT_TO_SHARD, SHARD_TO_CLIENT};

/// A store in memory with etcd's revision rules, shared by the targets
/// (connections) of a test. Each call yields once before it acts, so
/// clients interleave the way they do over a network.
#[derive(Default)]
struct Model {
    mod_revisions: RefCell<HashMap<Vec<u8>, i64>>,
    revision: Cell<i64>,
    puts: Cell<u64>,
    gets: Cell<u64>,
    swaps: Cell<u64>,
    /// The watched keys and where their events go.
    watches: RefCell<Vec<(Vec<u8>, tokio::sync::mpsc::UnboundedSender<WatchedEvent>)>>,
    /// Drop every this many'th event (0: none), to be found missing;
    /// deliver every this many'th twice.
    lose_every: u64,
    repeat_every: u64,
    events_sent: Cell<u64>,
}

struct ModelTarget(Rc<Model>);

impl Model {
    fn write(&self, key: &[u8], value: &[u8]) -> i64 {
        self.revision.set(self.revision.get() + 1);
        self.mod_revisions.borrow_mut().insert(key.to_vec(), self.revision.get());
        for (watched, sender) in self.watches.borrow().iter().filter(|(watched, _)| watched == key) {
            self.events_sent.set(self.events_sent.get() + 1);
            let nth = |every: u64| every > 0 && self.events_sent.get() % every == 0;
            let event = WatchedEvent {
                deleted: false,
                key: watched.clone(),
                value: value.to_vec(),
                revision: self.revision.get(),
            };
            let copies = if nth(self.lose_every) {
                0
            } else if nth(self.repeat_every) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                sender.send(event.clone()).expect("the watcher outlives the run");
            }
        }
        self.revision.get()
    }
}

struct ModelWatch(tokio::sync::mpsc::UnboundedReceiver<WatchedEvent>);

impl WatchStream for ModelWatch {
    async fn next(&mut self) -> Result<Vec<WatchedEvent>, String> {
        self.0.recv().await.map(|event| vec![event]).ok_or_else(|| "the model closed".to_string())
    }
}

impl StoreTarget for ModelTarget {
    async fn connect(endpoint: &str, _: &crate::rpc::client::ClientTls) -> Result<ModelTarget, String> {
        Err(format!("a model is not reached at {endpoint}: the test makes its targets"))
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<Option<Duration>, String> {
        tokio::task::yield_now().await;
        assert_eq!((key.len(), value.len()), (8, 16));
        self.0.write(key, value);
        self.0.puts.set(self.0.puts.get() + 1);
        Ok(None)
    }

    async fn ping(&self, _: &[u8]) -> Result<Option<Duration>, String> {
        Ok(Some(Duration::ZERO))
    }

    async fn sample_servers(_: &[String], _: &crate::rpc::client::ClientTls) -> Result<ServerSample, String> {
        Ok(ServerSample::default())
    }

    async fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        limit: i64,
        _: Consistency,
    ) -> Result<RangeRead, String> {
        tokio::task::yield_now().await;
        assert_eq!((range_end, limit), (&[][..], 1), "single-key gets");
        self.0.gets.set(self.0.gets.get() + 1);
        let mod_revision = self.0.mod_revisions.borrow().get(key).copied().unwrap_or(0);
        Ok(RangeRead { keys: u64::from(mod_revision > 0), mod_revision })
    }

    async fn compare_and_swap(&self, key: &[u8], mod_revision: i64, value: &[u8]) -> Result<Swap, String> {
        tokio::task::yield_now().await;
        self.0.swaps.set(self.0.swaps.get() + 1);
        let current = self.0.mod_revisions.borrow().get(key).copied().unwrap_or(0);
        if current == mod_revision {
            Ok(Swap { succeeded: true, mod_revision: self.0.write(key, value) })
        } else {
            Ok(Swap { succeeded: false, mod_revision: current })
        }
    }

    type Watch = ModelWatch;

    async fn watch(&self, key: &[u8], range_end: &[u8]) -> Result<ModelWatch, String> {
        assert!(range_end.is_empty(), "watches of one key");
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        self.0.watches.borrow_mut().push((key.to_vec(), sender));
        Ok(ModelWatch(receiver))
    }
}

fn options(total: Option<u64>, seconds: f64, rate: u64) -> LoadOptions {
    LoadOptions {
        clients: 8,
        connections: 2,
        key_bytes: 8,
        value_bytes: 16,
        key_space: 100,
        seconds,
        total,
        rate,
        progress: false,
        threads: 1,
        user: None,
    }
}

/// Runs `workload` against a fresh model over two connections.
fn run_on_model(workload: Workload, options: &LoadOptions) -> (Outcome, Rc<Model>) {
    let model = Rc::new(Model::default());
    let targets = vec![Rc::new(ModelTarget(model.clone())), Rc::new(ModelTarget(model.clone()))];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let outcome = local.block_on(&runtime, drive(&workload, options, targets, 0));
    (outcome, model)
}

#[test]
fn puts_stop_at_their_total_and_every_one_reaches_the_store() {
    let (outcome, model) = run_on_model(Workload::Put, &options(Some(1000), 60.0, 0));
    assert_eq!((outcome.ops(), outcome.errors), (1000, 0));
    assert_eq!(model.puts.get(), 1000, "every put reached the store");
    assert_eq!(model.gets.get() + model.swaps.get(), 0, "puts only");
}

#[test]
fn swaps_count_successes_and_conflicts_and_only_successes_write() {
    let mut options = options(Some(2000), 60.0, 0);
    options.key_space = 4;
    let (outcome, model) = run_on_model(Workload::Txn, &options);
    assert_eq!(outcome.errors, 0);
    assert_eq!(outcome.txn_succeeded + outcome.txn_failed, 2000, "every swap is one or the other");
    assert_eq!(outcome.ops(), 2000);
    assert_eq!(model.puts.get(), 0);
    assert_eq!(model.revision.get() as u64, outcome.txn_succeeded, "a write per success, none per conflict");
    assert!(outcome.txn_failed > 0, "8 clients on 4 keys collide");
    assert!(outcome.txn_succeeded > 0, "a remembered revision wins");
    assert!(
        (1..=32).contains(&outcome.txn_revision_reads),
        "a key's revision is read only until someone saw it: {} reads",
        outcome.txn_revision_reads
    );
    assert_eq!(model.gets.get(), outcome.txn_revision_reads);
}

#[test]
fn mixed_runs_keep_to_the_read_ratio_and_measure_each_kind_apart() {
    let workload =
        Workload::Mixed { read_ratio: 0.25, consistency: Consistency::Serializable, preload: false };
    let (outcome, model) = run_on_model(workload, &options(Some(4000), 60.0, 0));
    assert_eq!(outcome.ops(), 4000);
    let (gets, puts) =
        (outcome.histograms[Kind::Range as usize].len(), outcome.histograms[Kind::Put as usize].len());
    assert_eq!((gets, puts), (model.gets.get(), model.puts.get()));
    assert!((800..1200).contains(&gets), "{gets} gets of 4000 at a read ratio of 0.25");
    let report = BenchReport::new(&workload, &options(Some(4000), 60.0, 0), &outcome, "model", &[]);
    assert_eq!(report.range.as_ref().map(|range| range.ops), Some(gets));
    assert_eq!(report.put.as_ref().map(|put| put.ops), Some(puts));
    assert_eq!((report.consistency, report.read_ratio), (Some("s"), Some(0.25)));
}

#[test]
fn a_rate_keeps_the_clients_to_it() {
    let (outcome, _) = run_on_model(Workload::Put, &options(None, 0.5, 200));
    assert!(
        (1..=101).contains(&outcome.ops()),
        "{} puts in 0.5 s at 200 ops/s: at most rate x seconds + 1",
        outcome.ops()
    );
}

/// Runs the watch workload with `watchers` against `model` over two connections.
fn watch_on_model(model: &Rc<Model>, watchers: u32, options: &LoadOptions) -> Outcome {
    let targets = vec![Rc::new(ModelTarget(model.clone())), Rc::new(ModelTarget(model.clone()))];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, super::super::watch::drive(options, watchers, targets)).expect("watch run")
}

#[test]
fn every_put_reaches_every_watcher_of_its_key_once() {
    let mut options = options(Some(500), 60.0, 0);
    options.key_space = 4;
    let model = Rc::new(Model::default());
    let outcome = watch_on_model(&model, 10, &options);
    let received = outcome.watch.as_ref().expect("a watch outcome");
    assert_eq!((outcome.ops(), outcome.errors, model.puts.get()), (500, 0, 500));
    // Keys 0 and 1 have three watchers each, keys 2 and 3 two.
    let counts = model.mod_revisions.borrow().len();
    assert_eq!(counts, 4, "every key was put");
    assert_eq!(received.events, model.events_sent.get(), "each event taken once");
    assert!((1000..=1500).contains(&received.events), "500 puts x 2 or 3 watchers: {}", received.events);
    assert_eq!((received.missing, received.duplicated, received.unexpected), (0, 0, 0));
    assert_eq!(received.latencies.len(), received.events);
    let report = BenchReport::new(&Workload::Watch { watchers: 10 }, &options, &outcome, "model", &[]);
    assert_eq!(
        (report.latencies.ops, report.events, report.watchers),
        (500, Some(received.events), Some(10))
    );
    assert!(report.put_p50_us.is_some_and(|p50| p50 > 0.0));
}

#[test]
fn lost_and_repeated_events_are_counted_as_errors() {
    let mut options = options(Some(200), 60.0, 0);
    options.key_space = 1;
    let model = Rc::new(Model { lose_every: 10, repeat_every: 7, ..Model::default() });
    let outcome = watch_on_model(&model, 3, &options);
    let received = outcome.watch.as_ref().expect("a watch outcome");
    let sent = model.events_sent.get();
    assert_eq!(sent, 600, "200 puts of the one key x 3 watchers");
    let lost = sent / 10;
    let repeated = sent / 7 - sent / 70;
    assert_eq!((received.missing, received.duplicated), (lost, repeated));
    assert_eq!(received.events, sent - lost);
    assert_eq!(outcome.errors, lost + repeated, "put errors none, the rest are the watchers'");
}

#[test]
fn preload_puts_every_key_once() {
    let model = Rc::new(Model::default());
    let targets = vec![Rc::new(ModelTarget(model.clone()))];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let keys = local.block_on(&runtime, preload(&options(None, 1.0, 0), &targets)).expect("preload");
    assert_eq!(keys, 100);
    assert_eq!(model.puts.get(), 100);
    assert_eq!(model.mod_revisions.borrow().len(), 100, "each key of the space, once");
}

#[test]
fn threads_share_clients_connections_total_and_rate_without_losing_any() {
    let mut whole = options(Some(1001), 1.0, 301);
    (whole.clients, whole.connections, whole.threads) = (256, 26, 3);
    let shares: Vec<(LoadOptions, Part)> = (0..3).map(|thread| whole.share(thread)).collect();
    let sum = |field: fn(&LoadOptions) -> u64| shares.iter().map(|(share, _)| field(share)).sum::<u64>();
    assert_eq!(sum(|share| u64::from(share.clients)), 256);
    assert_eq!(sum(|share| u64::from(share.connections)), 26);
    assert_eq!(sum(|share| share.total.unwrap_or(0)), 1001);
    assert_eq!(sum(|share| share.rate), 301);
    let firsts: Vec<(u32, u32)> =
        shares.iter().map(|(_, part)| (part.first_client, part.first_connection)).collect();
    assert_eq!(firsts, vec![(0, 0), (86, 9), (171, 18)], "each thread starts where the one before ends");
    assert!(shares.iter().all(|(share, _)| share.threads == 1));
    assert_eq!(shares.iter().filter(|(_, part)| part.preloads).count(), 1, "one thread preloads");
    let mut too_many = options(Some(2), 1.0, 0);
    too_many.threads = 2;
    assert_eq!(too_many.validate(&Workload::Put), Ok(()));
    too_many.threads = 3;
    assert!(too_many
        .validate(&Workload::Put)
        .expect_err("3 threads, 2 connections")
        .starts_with("--threads 3"));
    assert_eq!(default_threads(&Workload::Put, 26, Some(1)), 1, "no more threads than operations");
    assert_eq!(default_threads(&Workload::Watch { watchers: 10 }, 26, None), 1);
}

#[test]
fn the_budget_puts_the_client_hops_around_the_servers_between_the_samples() {
    let shard = |micros: &[u64]| {
        let mut histogram = crate::wal::StageHistogram::new();
        for micros in micros {
            histogram.record(Duration::from_micros(*micros));
        }
        vec![crate::shard::stages::HopReport::of("leader append durable", &histogram)]
    };
    let mut before = ServerSample::default();
    before.add_hops(&shard(&[1000, 1000])).expect("decodes");
    let mut after = ServerSample { servers: 1, cpu_seconds: 2.0, ..ServerSample::default() };
    // Two shards: their histograms add up; the run's part is after less before.
    after.add_hops(&shard(&[1000, 1000, 40, 50])).expect("decodes");
    after.add_hops(&shard(&[60])).expect("decodes");
    let (mut outcome, _) = run_on_model(Workload::Put, &options(Some(10), 60.0, 0));
    for micros in [10, 20, 30] {
        outcome.outside.record(micros * 1000).expect("in range");
    }
    outcome.servers = Some((before, after));
    let budget = budget(&outcome);
    let names: Vec<&str> = budget.iter().map(|hop| hop.name.as_str()).collect();
    assert_eq!(names, vec![CLIENT_TO_SHARD, "leader append durable", SHARD_TO_CLIENT]);
    let hop = &budget[1];
    assert_eq!(hop.count, 3, "the two slow appends were before the run");
    let near = |value: f64, expected: f64| (value - expected).abs() < expected / 100.0;
    assert!(near(hop.mean_us, 50.0) && near(hop.p50_us, 50.0) && near(hop.p99_us, 60.0), "{hop:?}");
    assert_eq!(budget[0].count, 3);
    assert!((budget[0].p50_us - 10.0).abs() < 0.02, "half the 20 µs outside the store: {}", budget[0].p50_us);
    let report = BenchReport::new(&Workload::Put, &options(Some(10), 60.0, 0), &outcome, "model", &[]);
    assert_eq!(report.server_cpu_seconds, Some(2.0));
    assert_eq!(report.server_cpu_us_per_op, Some(2e6 / 10.0));
}

#[test]
fn bad_options_are_refused_naming_the_value() {
    let range = Workload::Range { consistency: Consistency::Linearizable, limit: 1, preload: true };
    /// Spoils one option of good ones.
    type Spoil = fn(&mut LoadOptions);
    let cases: Vec<(Spoil, Workload, &str)> = vec![
        (|o| o.clients = 0, Workload::Put, "--clients 0"),
        (|o| o.connections = 9, Workload::Put, "--conns 9"),
        (|o| o.key_bytes = 0, Workload::Put, "--key-bytes 0"),
        (|o| o.value_bytes = 2 << 20, Workload::Put, "--value-bytes 2097152"),
        (|o| o.key_space = 0, Workload::Put, "--key-space 0"),
        (|o| (o.key_bytes, o.key_space) = (2, 101), Workload::Put, "--key-space 101"),
        (|o| o.seconds = 0.0, Workload::Put, "--seconds 0"),
        (|o| o.seconds = f64::NAN, Workload::Put, "--seconds NaN"),
        (|o| o.total = Some(0), Workload::Put, "--total 0"),
        (|o| o.rate = RATE_MAX + 1, Workload::Put, "--rate 10000001"),
        (
            |_| {},
            Workload::Range { consistency: Consistency::Linearizable, limit: 0, preload: true },
            "--limit 0",
        ),
        (
            |_| {},
            Workload::Mixed { read_ratio: 1.5, consistency: Consistency::Linearizable, preload: true },
            "--read-ratio 1.5",
        ),
        (|_| {}, Workload::Watch { watchers: 0 }, "--watchers 0"),
        (|_| {}, Workload::Watch { watchers: WATCHERS_MAX + 1 }, "--watchers 10001"),
        (|o| o.key_space = 101, Workload::Watch { watchers: 100 }, "--key-space 101"),
        (|o| (o.key_space, o.value_bytes) = (1, 15), Workload::Watch { watchers: 1 }, "--value-bytes 15"),
    ];
    for (change, workload, named) in cases {
        let mut options = options(None, 1.0, 0);
        change(&mut options);
        let error = options.validate(&workload).expect_err(named);
        assert!(error.starts_with(named), "{error:?} should name {named:?}");
    }
    assert_eq!(options(None, 1.0, 0).validate(&range), Ok(()));
}
