//! The `nvkv` command line. It owns argument parsing, logging setup and the
//! exit code; everything else is in the library (`nvkv::node` for `serve`).
//! It must never hold logic a test of the library could not reach.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use nvkv::config::Config;

/// nvkv: a strongly consistent, replicated key-value store that writes its
/// Raft logs straight to NVMe.
#[derive(Debug, Parser)]
#[command(name = "nvkv", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the nvkv daemon in the foreground until SIGTERM or SIGINT.
    ///
    /// Locks the data directory, opens the namespace, starts one pinned
    /// reactor thread per shard and prints one "nvkv ready: ..." line on
    /// stdout when every shard runs. Logs go to stderr (level from RUST_LOG,
    /// default info). Exits 0 after a clean stop, non-zero with a one-line
    /// reason on stderr when it cannot start (bad config value, data
    /// directory in use, ...).
    Serve {
        /// The config file (TOML). Without it every key takes its default:
        /// data in ./nvkv-data, one shard per core, clients on
        /// 127.0.0.1:7379. config/nvkv.toml documents every key.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colors = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colors).init();
    match cli.command {
        Command::Serve { config } => {
            let outcome = Config::load(config.as_deref())
                .map_err(nvkv::node::NodeError::from)
                .and_then(nvkv::node::serve);
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("nvkv: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
