//! Compiles schema/*.capnp into Rust. Needs the `capnp` compiler (Debian's
//! `capnproto`, installed by scripts/setup.sh).

fn main() {
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
}
