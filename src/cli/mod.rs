//! The `nvkv` command line: parses the arguments, sets up logging, runs one
//! command and turns its outcome into the exit code. Each command group
//! has its module; the work itself is in the library (`nvkv::node` for
//! `serve`, `nvkv::rpc::client` for the client commands, `nvkv::bench`,
//! `nvkv::backup`). It must never hold logic a test of the library could
//! not reach.

// First, so every module below prints through its `println!`/`print!`.
#[macro_use]
mod output;

mod args;
mod auth;
mod bench;
mod cluster;
mod connect;
mod endpoint;
mod kv;
mod lease;
mod serve;
mod snapshot;

use std::process::ExitCode;

use clap::Parser;

use args::{BenchCommand, Cli, Command, MemberCommand, OutputFormat};
use nvkv::rpc::client::ClientTls;

/// Runs the command the arguments name.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    nvkv::logging::init(match cli.command {
        Command::Serve { .. } => nvkv::logging::DEFAULT_FILTER,
        _ => nvkv::logging::COMMAND_FILTER,
    });
    let tls = match &cli.command {
        Command::Serve { .. } | Command::Bench { workload: BenchCommand::Device(_) } => {
            Ok(ClientTls::plaintext())
        }
        _ => ClientTls::from_files(
            cli.cacert.as_deref(),
            cli.client_cert.as_deref(),
            cli.client_key.as_deref(),
        )
        .map_err(|error| error.to_string()),
    };
    let tls = match tls {
        Ok(tls) => tls,
        Err(error) => return exit("nvkv", Err(error)),
    };
    if let Some(user) = &cli.user {
        match connect::parse_user(user) {
            Ok((name, password)) => connect::log_in_as(name, password),
            Err(error) => return exit("nvkv", Err(error)),
        }
    }
    let endpoints = &cli.endpoints;
    let json = cli.write_out == OutputFormat::Json;
    match cli.command {
        Command::Serve { config, data_dir, listen, etcd_listen, .. } => {
            exit("nvkv", serve::serve(config, data_dir, listen, etcd_listen))
        }
        Command::Put { .. }
        | Command::Get { .. }
        | Command::Del { .. }
        | Command::Txn
        | Command::Compact { .. }
        | Command::Watch(_) => exit("nvkv", kv::run(endpoints, &tls, json, cli.command)),
        Command::Status => exit("nvkv status", cluster::status(endpoints, &tls, json)),
        Command::Endpoint { command } => {
            let name = match command {
                args::EndpointCommand::Status => "nvkv endpoint status",
                args::EndpointCommand::Health => "nvkv endpoint health",
            };
            exit(name, endpoint::run(endpoints, &tls, json, command))
        }
        Command::Member { action: MemberCommand::List } => {
            exit("nvkv member list", cluster::member_list(endpoints, &tls, json))
        }
        Command::Member { action } => {
            exit("nvkv member", cluster::member_change(endpoints, &tls, json, action))
        }
        Command::Lease { command } => exit("nvkv lease", lease::run(endpoints, &tls, json, command)),
        Command::Snapshot { command } => exit("nvkv snapshot", snapshot::run(endpoints, &tls, json, command)),
        Command::User { command } => exit("nvkv user", auth::user(endpoints, &tls, json, command)),
        Command::Role { command } => exit("nvkv role", auth::role(endpoints, &tls, json, command)),
        Command::Auth { command } => exit("nvkv auth", auth::auth(endpoints, &tls, json, command)),
        Command::Bench { workload: BenchCommand::Device(args) } => {
            exit("nvkv bench device", bench::device(args))
        }
        Command::Bench { workload } => {
            let (name, outcome) = bench::store(endpoints, &tls, workload);
            exit(&format!("nvkv bench {name}"), outcome)
        }
    }
}

/// The exit code of a command's outcome; a failure is said on stderr,
/// after `context` (the command, as the user typed it).
fn exit(context: &str, outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{context}: {error}");
            ExitCode::FAILURE
        }
    }
}
