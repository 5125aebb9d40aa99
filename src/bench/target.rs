//! Which store a store benchmark drives (`--target`), and the run itself:
//! a client runtime on this thread, then the workload against that store's
//! driver. A new store is a new [`Target`] variant, its parse arm and its
//! run arm, with a driver implementing `bench::workload::StoreTarget` (as
//! `bench::nvkv` does for nvkv and `bench::etcd` for etcd); the workloads
//! and the report stay as they are.

use crate::rpc::client::ShardedClient;

#[cfg(feature = "etcd")]
use super::etcd::EtcdConnection;
use std::sync::Arc;

use super::report::{BenchReport, Outcome, ServerSample};
use super::workload::{run_against, Gate, LoadOptions, Part, StoreTarget, Workload};

/// A store to drive, with the endpoints to reach it at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// nvkv nodes, through the client library.
    Nvkv { endpoints: Vec<String> },
    /// etcd members, through their v3 gRPC API (client URLs without the
    /// `http://`: HOST:PORT).
    Etcd { endpoints: Vec<String> },
}

impl Target {
    /// `--target STORE://HOST:PORT[,HOST:PORT...]`, or without it nvkv at
    /// the global `--endpoints`.
    pub fn parse(target: Option<&str>, endpoints: &[String]) -> Result<Target, String> {
        let Some(text) = target else {
            return Ok(Target::Nvkv { endpoints: endpoints.to_vec() });
        };
        let Some((store, addresses)) = text.split_once("://") else {
            return Err(format!(
                "--target {text:?} names no store: give nvkv://HOST:PORT or etcd://HOST:PORT"
            ));
        };
        let addresses: Vec<String> = addresses.split(',').map(str::to_string).collect();
        if let Some(bad) = addresses.iter().find(|address| {
            address.rsplit_once(':').is_none_or(|(host, port)| {
                host.is_empty() || host.contains('/') || port.parse::<u16>().is_err()
            })
        }) {
            return Err(format!("--target {text:?}: {bad:?} is not HOST:PORT"));
        }
        match store {
            "nvkv" => Ok(Target::Nvkv { endpoints: addresses }),
            "etcd" => Ok(Target::Etcd { endpoints: addresses }),
            other => {
                Err(format!("--target {text:?}: no driver for the store {other:?}; give nvkv:// or etcd://"))
            }
        }
    }

    /// The store's name, as the report's `target` field shows it.
    pub fn store(&self) -> &'static str {
        match self {
            Target::Nvkv { .. } => "nvkv",
            Target::Etcd { .. } => "etcd",
        }
    }

    pub fn endpoints(&self) -> &[String] {
        match self {
            Target::Nvkv { endpoints } | Target::Etcd { endpoints } => endpoints,
        }
    }
}

/// Runs `workload` against `target` and returns its report.
/// `tls` is the client's `--cacert`/`--cert`/`--key` (plaintext for the
/// comparisons, which run on loopback). The clients run on
/// `options.threads` threads; the store's servers are asked about
/// themselves at `servers` (usually the `target` itself) just before and
/// just after the measured run.
pub fn run(
    workload: &Workload,
    options: &LoadOptions,
    target: &Target,
    servers: &Target,
    tls: &crate::rpc::client::ClientTls,
) -> Result<BenchReport, String> {
    options.validate(workload)?;
    let gate = Arc::new(Gate::new(options.threads));
    let mut threads = Vec::new();
    for thread in 0..options.threads {
        let (share, mut part) = options.share(thread);
        part.gate = Some(gate.clone());
        let (workload, target, tls) = (*workload, target.clone(), tls.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("nvkv-bench-{thread}"))
            .spawn(move || on_runtime(|| run_part(&workload, &share, &target, &tls, &part)));
        // The threads started before a failure stay at the gate; the
        // process ends with the error.
        threads.push(spawned.map_err(|error| format!("cannot start generator thread {thread}: {error}"))?);
    }
    gate.ready.wait();
    let before = sample(servers, tls);
    let cpu_before = process_cpu_seconds();
    gate.start.wait();
    let mut outcome: Option<Outcome> = None;
    let mut first_error = None;
    for thread in threads {
        match thread.join().unwrap_or_else(|_| Err("a generator thread panicked".into())) {
            Ok(part) => match &mut outcome {
                Some(outcome) => outcome.merge(&part),
                None => outcome = Some(part),
            },
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let generator_cpu_seconds = process_cpu_seconds() - cpu_before;
    if let Some(error) = first_error {
        return Err(error);
    }
    let mut outcome = outcome.ok_or("no generator thread ran")?;
    if outcome.ops() == 0 {
        return Err(format!("no operation succeeded ({} failed); is the store serving?", outcome.errors));
    }
    outcome.generator_cpu_seconds = generator_cpu_seconds;
    let after = sample(servers, tls);
    outcome.servers = match (before, after) {
        (Ok(before), Ok(after)) => Some((before, after)),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!("the report has no server CPU: {error}");
            None
        }
    };
    Ok(BenchReport::new(workload, options, &outcome, target.store(), target.endpoints()))
}

/// Runs `work` on a client runtime of this thread, inside a `LocalSet`
/// (Cap'n Proto RPC is single-threaded).
fn on_runtime<T, F, Fut>(work: F) -> Result<T, String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the client runtime: {error}"))?;
    tokio::task::LocalSet::new().block_on(&runtime, work())
}

/// One thread's part of the run.
async fn run_part(
    workload: &Workload,
    options: &LoadOptions,
    target: &Target,
    tls: &crate::rpc::client::ClientTls,
    part: &Part,
) -> Result<Outcome, String> {
    match target {
        Target::Nvkv { endpoints } => {
            run_against::<ShardedClient>(workload, options, endpoints, tls, part).await
        }
        #[cfg(feature = "etcd")]
        Target::Etcd { endpoints } => {
            run_against::<EtcdConnection>(workload, options, endpoints, tls, part).await
        }
        #[cfg(not(feature = "etcd"))]
        Target::Etcd { .. } => {
            if let Some(gate) = &part.gate {
                gate.ready.wait();
                gate.start.wait();
            }
            Err("this nvkv was built without its etcd driver (the `etcd` feature, on by default): build it \
                 with default features"
                .to_string())
        }
    }
}

/// What the target's servers say of themselves now.
fn sample(target: &Target, tls: &crate::rpc::client::ClientTls) -> Result<ServerSample, String> {
    on_runtime(|| async {
        match target {
            Target::Nvkv { endpoints } => ShardedClient::sample_servers(endpoints, tls).await,
            #[cfg(feature = "etcd")]
            Target::Etcd { endpoints } => EtcdConnection::sample_servers(endpoints, tls).await,
            #[cfg(not(feature = "etcd"))]
            Target::Etcd { .. } => Err("this nvkv was built without its etcd driver".to_string()),
        }
    })
}

/// CPU time (user and system) this process used so far, in seconds.
fn process_cpu_seconds() -> f64 {
    crate::rpc::metrics::process_cpu_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_name_what_is_wrong() {
        let endpoints = vec!["127.0.0.1:7379".to_string()];
        assert_eq!(Target::parse(None, &endpoints), Ok(Target::Nvkv { endpoints: endpoints.clone() }));
        assert_eq!(
            Target::parse(Some("nvkv://10.0.0.1:7379,10.0.0.2:7379"), &endpoints),
            Ok(Target::Nvkv { endpoints: vec!["10.0.0.1:7379".into(), "10.0.0.2:7379".into()] })
        );
        let parsed = Target::parse(Some("etcd://127.0.0.1:2379,127.0.0.1:22379"), &endpoints);
        assert_eq!(
            parsed,
            Ok(Target::Etcd { endpoints: vec!["127.0.0.1:2379".into(), "127.0.0.1:22379".into()] })
        );
        let etcd = parsed.expect("an etcd target");
        assert_eq!((etcd.store(), etcd.endpoints().len()), ("etcd", 2));
        let refusal = |text| Target::parse(Some(text), &endpoints).expect_err(text);
        assert!(refusal("10.0.0.1:7379").contains("names no store"));
        assert!(refusal("etcd://localhost").contains("\"localhost\" is not HOST:PORT"));
        assert!(refusal("etcd://127.0.0.1:2379,").contains("\"\" is not HOST:PORT"));
        assert!(refusal("etcd://http://127.0.0.1:2379").contains("is not HOST:PORT"));
        assert!(refusal("nvkv://10.0.0.1").contains("\"10.0.0.1\" is not HOST:PORT"));
        assert!(refusal("nvkv://:7379").contains("\":7379\" is not HOST:PORT"));
        assert!(refusal("nvkv://host:99999").contains("\"host:99999\" is not HOST:PORT"));
        let redis = refusal("redis://host:6379");
        assert!(redis.contains("no driver for the store \"redis\"") && redis.contains("etcd://"), "{redis}");
    }
}
