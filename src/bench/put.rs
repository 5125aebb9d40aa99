//! `nvkv bench put`: puts against a running node, like etcd's `benchmark
//! put`. C clients share K connections (each reaching every shard of the
//! node, so a put goes straight to the shard of its key); each client puts a key drawn from
//! the key space, waits for the answer, records the latency and goes again.
//!
//! The workload is written against the [`PutTarget`] trait, so another
//! store's driver (etcd's gRPC API, for the comparison) runs the very same
//! loop. All clients run on one thread (Cap'n Proto RPC is single-threaded):
//! a generator on the same cores as the node, as the issue measures it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::rpc::client::{ClientError, ShardedClient};

#[derive(Clone, Debug)]
pub struct PutBenchOptions {
    pub endpoints: Vec<String>,
    pub clients: u32,
    pub connections: u32,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub key_space: u64,
    pub seconds: f64,
    /// Stop after this many puts in all, if reached first.
    pub total: Option<u64>,
    pub progress: bool,
}

#[derive(Debug, Serialize)]
pub struct PutBenchReport {
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub clients: u32,
    pub connections: u32,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub key_space: u64,
    pub endpoints: Vec<String>,
    pub target: String,
}

/// Something that takes puts: a connection to nvkv, or another store.
#[allow(async_fn_in_trait)]
pub trait PutTarget {
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String>;
}

impl PutTarget for ShardedClient {
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        ShardedClient::put(self, key, value, 0, false)
            .await
            .map(|_| ())
            .map_err(|error: ClientError| error.to_string())
    }
}

impl PutBenchOptions {
    fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.clients > 100_000 {
            return Err(format!("--clients {} must be from 1 to 100000", self.clients));
        }
        if self.connections == 0 || self.connections > self.clients {
            return Err(format!(
                "--conns {} must be from 1 to the number of clients ({})",
                self.connections, self.clients
            ));
        }
        if self.key_bytes == 0 || self.key_bytes > 1536 {
            return Err(format!("--key-bytes {} must be from 1 to 1536", self.key_bytes));
        }
        if self.value_bytes > 1536 * 1024 {
            return Err(format!("--value-bytes {} must be at most 1572864", self.value_bytes));
        }
        if self.key_space == 0 {
            return Err("--key-space 0: give at least 1".into());
        }
        if !(self.seconds > 0.0 && self.seconds <= 86_400.0) {
            return Err(format!("--seconds {} must be more than 0 and at most 86400", self.seconds));
        }
        if self.endpoints.is_empty() {
            return Err("no endpoint to put to: give --endpoints".into());
        }
        Ok(())
    }
}

/// The key of number `number`: its decimal digits, left-padded with zeroes
/// (or cut) to `bytes`, like etcd's benchmark keys.
fn key_of(number: u64, bytes: usize) -> Vec<u8> {
    let digits = format!("{number:0bytes$}");
    digits.as_bytes()[digits.len() - bytes..].to_vec()
}

/// A small deterministic generator (xorshift), so runs are repeatable.
fn next_random(state: &Cell<u64>) -> u64 {
    let mut x = state.get();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.set(x);
    x
}

/// Runs the workload against `targets` (one per connection) until the time
/// or the total runs out. Must run inside a `LocalSet`.
pub async fn run_workload<T: PutTarget + 'static>(
    options: &PutBenchOptions,
    targets: Vec<Rc<T>>,
) -> (Histogram<u64>, u64, u64, Duration) {
    let histogram = Rc::new(RefCell::new(Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds")));
    let ops = Rc::new(Cell::new(0u64));
    let errors = Rc::new(Cell::new(0u64));
    // Puts started, so a total is never overshot by clients in flight.
    let issued = Rc::new(Cell::new(0u64));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    let value: Rc<[u8]> = vec![b'v'; options.value_bytes].into();
    let progress = progress_bar(options);
    let mut tasks = Vec::new();
    for client in 0..options.clients {
        let target = targets[client as usize % targets.len()].clone();
        let (histogram, ops, errors, value) = (histogram.clone(), ops.clone(), errors.clone(), value.clone());
        let issued = issued.clone();
        let (key_bytes, key_space, total) = (options.key_bytes, options.key_space, options.total);
        let progress = progress.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let random = Cell::new(
                0x9e37_79b9_7f4a_7c15 ^ (u64::from(client) + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
            );
            while Instant::now() < deadline && total.is_none_or(|total| issued.get() < total) {
                issued.set(issued.get() + 1);
                let key = key_of(next_random(&random) % key_space, key_bytes);
                let start = Instant::now();
                match target.put(&key, &value).await {
                    Ok(()) => {
                        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        histogram.borrow_mut().saturating_record(nanos.max(1));
                        ops.set(ops.get() + 1);
                    }
                    Err(error) => {
                        if errors.get() == 0 {
                            tracing::warn!(%error, "a put failed (further failures are only counted)");
                        }
                        errors.set(errors.get() + 1);
                    }
                }
                if let Some(bar) = &progress {
                    if ops.get() % 1024 == 0 {
                        bar.set_position(started.elapsed().as_millis() as u64);
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed();
    let histogram = histogram.borrow().clone();
    (histogram, ops.get(), errors.get(), elapsed)
}

fn progress_bar(options: &PutBenchOptions) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !options.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new((options.seconds * 1000.0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} putting [{bar:40}] {elapsed_precise}")
            .expect("progress template")
            .progress_chars("=> "),
    );
    Some(bar)
}

/// Runs `nvkv bench put` against nvkv and returns its report.
pub fn run(options: &PutBenchOptions) -> Result<PutBenchReport, String> {
    options.validate()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the client runtime: {error}"))?;
    let local = tokio::task::LocalSet::new();
    let (histogram, ops, errors, elapsed) = local.block_on(&runtime, async {
        let mut targets = Vec::new();
        for connection in 0..options.connections {
            let endpoint = &options.endpoints[connection as usize % options.endpoints.len()];
            targets.push(Rc::new(ShardedClient::open(endpoint).await.map_err(|error| error.to_string())?));
        }
        Ok::<_, String>(run_workload(options, targets).await)
    })?;
    if ops == 0 {
        return Err(format!("no put succeeded ({errors} failed); is the node serving?"));
    }
    let seconds = elapsed.as_secs_f64();
    let micros = |nanos: u64| nanos as f64 / 1000.0;
    Ok(PutBenchReport {
        ops,
        errors,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        p50_us: micros(histogram.value_at_quantile(0.5)),
        p99_us: micros(histogram.value_at_quantile(0.99)),
        p999_us: micros(histogram.value_at_quantile(0.999)),
        max_us: micros(histogram.max()),
        mean_us: histogram.mean() / 1000.0,
        clients: options.clients,
        connections: options.connections,
        key_bytes: options.key_bytes,
        value_bytes: options.value_bytes,
        key_space: options.key_space,
        endpoints: options.endpoints.clone(),
        target: "nvkv".into(),
    })
}

impl PutBenchReport {
    pub fn human(&self) -> String {
        format!(
            "nvkv bench put: {} clients over {} connections, {}-byte keys from {} and {}-byte values, {}\n\
             puts         {} in {:.2} s ({} failed)\n\
             puts/s       {:.0}\n\
             latency us   p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            self.clients,
            self.connections,
            self.key_bytes,
            self.key_space,
            self.value_bytes,
            self.endpoints.join(","),
            self.ops,
            self.seconds,
            self.errors,
            self.ops_per_sec,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.mean_us
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_asked_size() {
        assert_eq!(key_of(42, 8), b"00000042");
        assert_eq!(key_of(123_456_789, 4), b"6789");
    }

    struct CountingTarget(Cell<u64>);

    impl PutTarget for CountingTarget {
        async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
            assert_eq!((key.len(), value.len()), (8, 16));
            self.0.set(self.0.get() + 1);
            Ok(())
        }
    }

    #[test]
    fn the_workload_stops_at_its_total_and_counts_every_put() {
        let options = PutBenchOptions {
            endpoints: vec!["unused".into()],
            clients: 4,
            connections: 2,
            key_bytes: 8,
            value_bytes: 16,
            key_space: 100,
            seconds: 60.0,
            total: Some(1000),
            progress: false,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let targets = vec![Rc::new(CountingTarget(Cell::new(0))), Rc::new(CountingTarget(Cell::new(0)))];
        let local = tokio::task::LocalSet::new();
        let (histogram, ops, errors, _) = local.block_on(&runtime, run_workload(&options, targets.clone()));
        assert_eq!((ops, errors), (1000, 0));
        assert_eq!(histogram.len(), 1000);
        assert_eq!(targets[0].0.get() + targets[1].0.get(), 1000, "every put reached a target");
    }
}
