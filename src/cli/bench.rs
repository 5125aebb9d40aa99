//! `nvkv bench device | put | range | txn | mixed | watch`: the load
//! generators, which print numbers (a table, or one JSON object).

use nvkv::bench::device::DeviceBenchOptions;
use nvkv::bench::workload::{LoadOptions, Workload};
use nvkv::rpc::client::ClientTls;

use super::args::{BenchCommand, DeviceArgs};
use super::output::print_json;

/// `nvkv bench device`: the shard log's append path on a namespace of its
/// own.
pub fn device(args: DeviceArgs) -> Result<(), String> {
    let options = DeviceBenchOptions {
        namespace: args.namespace,
        namespace_bytes: args.namespace_bytes,
        lba_bytes: args.lba_bytes,
        appenders: args.appenders,
        entry_bytes: args.entry_bytes,
        seconds: args.seconds,
        count: args.count,
        durability: args.durability,
        poll_mode: args.poll_mode,
        batch_bytes_max: args.batch_bytes_max as usize,
        inflight_writes_max: args.inflight_writes_max,
        queue_depth: args.queue_depth,
        progress: !args.json,
        spdk: args.spdk_transport.map(|transport| nvkv::nvme::open::SpdkOptions {
            transport,
            nsid: args.spdk_nsid,
            hugepages: !args.spdk_no_hugepages,
            ..Default::default()
        }),
    };
    if let Some(parent) = options.namespace.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    }
    let report = nvkv::bench::device::run(&options).map_err(|error| error.to_string())?;
    if args.json {
        return print_json(&report);
    }
    println!("{}", report.human());
    Ok(())
}

/// A store workload (`nvkv bench put|range|txn|mixed|watch`): its name, as
/// the command says it, and the outcome of running it and printing its
/// report.
pub fn store(
    endpoints: &[String],
    tls: &ClientTls,
    command: BenchCommand,
) -> (&'static str, Result<(), String>) {
    let (workload, load) = match command {
        BenchCommand::Put(load) => (Workload::Put, load),
        BenchCommand::Range(args) => (
            Workload::Range {
                consistency: args.consistency.into(),
                limit: args.limit,
                preload: !args.no_preload,
            },
            args.load,
        ),
        BenchCommand::Txn(load) => (Workload::Txn, load),
        BenchCommand::Mixed(args) => (
            Workload::Mixed {
                read_ratio: args.read_ratio,
                consistency: args.consistency.into(),
                preload: !args.no_preload,
            },
            args.load,
        ),
        BenchCommand::Watch(args) => (Workload::Watch { watchers: args.watchers }, args.load),
        BenchCommand::Ping(load) => (Workload::Ping, load),
        BenchCommand::Device(_) => unreachable!("bench device has its own runner"),
    };
    let options = LoadOptions {
        clients: load.clients,
        connections: load.connections,
        key_bytes: load.key_bytes,
        value_bytes: load.value_bytes,
        key_space: load.key_space,
        seconds: load.seconds,
        total: load.total,
        rate: load.rate,
        progress: !load.json,
        threads: load.threads.unwrap_or_else(|| {
            nvkv::bench::workload::default_threads(&workload, load.connections, load.total)
        }),
    };
    let outcome = nvkv::bench::target::Target::parse(load.target.as_deref(), endpoints)
        .and_then(|target| {
            let servers = match load.servers.as_deref() {
                Some(servers) => nvkv::bench::target::Target::parse(Some(servers), endpoints)
                    .map_err(|error| error.replacen("--target", "--servers", 1))?,
                None => target.clone(),
            };
            nvkv::bench::target::run(&workload, &options, &target, &servers, tls)
        })
        .and_then(|report| {
            if load.json {
                print_json(&report)
            } else {
                println!("{}", report.human());
                Ok(())
            }
        });
    (workload.name(), outcome)
}
