//! Compiles schema/*.capnp into Rust. Needs the `capnp` compiler (Debian's
//! `capnproto`, installed by scripts/setup.sh). With the `etcd` feature it
//! also compiles etcd's .proto files (proto/) into the etcd API's server,
//! with `protoc` (Debian's `protobuf-compiler`). With the `spdk` feature it
//! also gives nvkv's binaries an rpath to SPDK's shared libraries.

fn main() {
    // vendor/spdk-sys found SPDK; link arguments of a dependency do not reach
    // our binaries, so what they need to load SPDK is set here: the libraries
    // SPDK only registers from constructors (kept with --no-as-needed, as
    // SPDK's docs link them) and an rpath to SPDK's shared libraries.
    println!("cargo:rerun-if-env-changed=DEP_SPDK_KEEP_LIBRARIES");
    println!("cargo:rerun-if-env-changed=DEP_SPDK_RPATH");
    if let Ok(libraries) = std::env::var("DEP_SPDK_KEEP_LIBRARIES") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        for library in libraries.split_whitespace() {
            println!("cargo:rustc-link-arg=-l{library}");
        }
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    if let Ok(directories) = std::env::var("DEP_SPDK_RPATH") {
        for directory in directories.split(':').filter(|directory| !directory.is_empty()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{directory}");
        }
    }
    println!("cargo:rerun-if-changed=schema");
    let mut schemas: Vec<_> = std::fs::read_dir("schema")
        .expect("schema/ is missing: it holds the Cap'n Proto schema of nvkv")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "capnp"))
        .collect();
    schemas.sort();
    let mut command = capnpc::CompilerCommand::new();
    command.src_prefix("schema");
    // `-> stream` needs /capnp/stream.capnp; schema/import has nvkv's copy.
    command.import_path("schema/import");
    for schema in &schemas {
        command.file(schema);
    }
    if let Err(error) = command.run() {
        panic!(
            "compiling {schemas:?} failed: {error}. The Cap'n Proto compiler `capnp` must be on PATH: \
             run `bash scripts/setup.sh` (it installs Debian's capnproto)."
        );
    }
    #[cfg(feature = "etcd")]
    compile_etcd_protos();
}

/// etcd's v3 API, server side only (tests and the bench speak to it
/// through the etcd-client crate).
#[cfg(feature = "etcd")]
fn compile_etcd_protos() {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/etcd/api/authpb/auth.proto",
        "proto/etcd/api/mvccpb/kv.proto",
        "proto/etcd/api/etcdserverpb/rpc.proto",
    ];
    if let Err(error) = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_protos(&files, &["proto"])
    {
        panic!(
            "compiling etcd's .proto files {files:?} failed: {error}. protoc and the well-known protos must be \
             installed: run `bash scripts/setup.sh` (protobuf-compiler, libprotobuf-dev)."
        );
    }
}
