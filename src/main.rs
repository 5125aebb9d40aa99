//! The `nvkv` binary: the command line of `cli`, and the allocator.

#![forbid(unsafe_code)]

mod cli;

/// Per-thread heaps suit a thread-per-core daemon: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run()
}
