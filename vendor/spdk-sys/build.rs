//! Finds SPDK for the `bindings` feature, generates bindings for what nvkv's
//! spdk backend uses, and links SPDK's NVMe driver and DPDK env. Without
//! that feature this crate is empty and needs nothing, so default builds
//! work on machines without SPDK.

use std::path::PathBuf;
use std::process::Command;

/// Functions of the NVMe driver and the env layer the backend calls. An
/// allow-list keeps the bindings (and their build time) to what is used.
const FUNCTIONS: &[&str] = &[
    "spdk_env_opts_init",
    "spdk_env_init",
    "spdk_env_fini",
    "spdk_zmalloc",
    "spdk_free",
    "spdk_vtophys",
    "spdk_nvme_transport_id_parse",
    "spdk_nvme_ctrlr_get_default_ctrlr_opts",
    "spdk_nvme_connect",
    "spdk_nvme_detach",
    "spdk_nvme_ctrlr_process_admin_completions",
    "spdk_nvme_ctrlr_get_ns",
    "spdk_nvme_ctrlr_get_default_io_qpair_opts",
    "spdk_nvme_ctrlr_alloc_io_qpair",
    "spdk_nvme_ctrlr_free_io_qpair",
    "spdk_nvme_ctrlr_disconnect_io_qpair",
    "spdk_nvme_qpair_get_failure_reason",
    "spdk_nvme_ns_is_active",
    "spdk_nvme_ns_get_sector_size",
    "spdk_nvme_ns_get_num_sectors",
    "spdk_nvme_ns_get_flags",
    "spdk_nvme_ns_supports_extended_lba",
    "spdk_nvme_ns_cmd_write",
    "spdk_nvme_ns_cmd_read",
    "spdk_nvme_ns_cmd_flush",
    "spdk_nvme_qpair_process_completions",
];

/// Types and constants the backend names, beyond those the functions pull in.
const TYPES: &[&str] = &["spdk_nvme_cpl", "spdk_nvme_status", "spdk_nvme_ns_flags"];
const CONSTANTS: &[&str] = &[
    "SPDK_NVME_IO_FLAGS_FORCE_UNIT_ACCESS",
    "SPDK_MALLOC_DMA",
    "SPDK_ENV_NUMA_ID_ANY",
    "SPDK_VTOPHYS_ERROR",
];

fn main() {
    println!("cargo:rerun-if-env-changed=SPDK_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-changed=src/wrapper.h");
    if std::env::var_os("CARGO_FEATURE_BINDINGS").is_none() {
        return;
    }
    let spdk_dir = std::env::var("SPDK_DIR").ok();
    let pkg_config_path = pkg_config_path(spdk_dir.as_deref());
    let pkg_config = |arguments: &[&str]| {
        let mut command = Command::new("pkg-config");
        command.args(arguments).env("PKG_CONFIG_PATH", &pkg_config_path);
        command
    };
    let found = pkg_config(&["--exists", "spdk_nvme", "spdk_env_dpdk"])
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if !found {
        panic!(
            "the `spdk` feature needs SPDK (spdk_nvme and spdk_env_dpdk) and pkg-config could not find it{}. \
             Install SPDK (built with --with-shared) and either put its build/lib/pkgconfig on PKG_CONFIG_PATH \
             or set SPDK_DIR to the SPDK source tree it was built in. Build without `--features spdk` to use \
             the io_uring backend instead.",
            spdk_dir.map(|dir| format!(" (SPDK_DIR={dir})")).unwrap_or_default()
        );
    }
    let output = |arguments: &[&str]| -> Vec<String> {
        let result =
            pkg_config(arguments).output().unwrap_or_else(|error| panic!("cannot run pkg-config: {error}"));
        if !result.status.success() {
            panic!("pkg-config {} failed: {}", arguments.join(" "), String::from_utf8_lossy(&result.stderr));
        }
        String::from_utf8_lossy(&result.stdout).split_whitespace().map(str::to_owned).collect()
    };

    let libraries = output(&["--libs", "spdk_nvme", "spdk_env_dpdk"]);
    let mut library_directories = Vec::new();
    for flag in &libraries {
        if let Some(directory) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={directory}");
            library_directories.push(directory.to_owned());
        } else if let Some(name) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={name}");
        }
    }
    // SPDK's libraries register transports, socket layers, buses and
    // mempool drivers from constructors, so a binary must keep them although
    // it names no symbol of theirs: SPDK's docs link them with
    // --no-as-needed. Stable rustc has no such modifier for -l and a
    // dependency's link arguments do not reach binaries, so the binaries'
    // crate gets the list as DEP_SPDK_KEEP_LIBRARIES and passes it itself.
    let mut kept: Vec<String> =
        libraries.iter().filter_map(|flag| flag.strip_prefix("-l")).map(str::to_owned).collect();
    // SPDK's and DPDK's own dependencies (ssl, uuid, uring, isa-l, ...).
    let system_libraries = output(&["--libs", "--static", "spdk_syslibs"]);
    let system_directories: Vec<&str> =
        system_libraries.iter().filter_map(|flag| flag.strip_prefix("-L")).collect();
    for flag in &system_libraries {
        if let Some(directory) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={directory}");
            library_directories.push(directory.to_owned());
        } else if let Some(name) = flag.strip_prefix("-l") {
            // SPDK builds isa-l as a static archive only, and its shared
            // libraries (libspdk_util's CRCs) call into it: the binary must
            // carry all of it, not just what Rust code names.
            let static_only = system_directories.iter().any(|directory| {
                let directory = std::path::Path::new(directory);
                directory.join(format!("lib{name}.a")).exists()
                    && !directory.join(format!("lib{name}.so")).exists()
            });
            if static_only {
                println!("cargo:rustc-link-lib=static:+whole-archive={name}");
            } else {
                println!("cargo:rustc-link-lib=dylib={name}");
                // SPDK's shared libraries carry no DT_NEEDED of their own
                // dependencies (libspdk_sock_uring calls liburing): the
                // binary must keep these too.
                kept.push(name.to_owned());
            }
        } else if flag == "-pthread" {
            println!("cargo:rustc-link-lib=dylib=pthread");
        }
    }
    println!("cargo:keep_libraries={}", kept.join(" "));
    // Link arguments do not reach the binaries of dependent crates; the
    // directories go to them as DEP_SPDK_RPATH for an rpath of their own,
    // so a binary finds SPDK's shared libraries without LD_LIBRARY_PATH.
    println!("cargo:rpath={}", library_directories.join(":"));

    let mut builder = bindgen::Builder::default()
        .header("src/wrapper.h")
        .allowlist_recursively(true)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false);
    for flag in output(&["--cflags", "spdk_nvme", "spdk_env_dpdk"]) {
        if flag.starts_with("-I") || flag.starts_with("-D") {
            builder = builder.clang_arg(flag);
        }
    }
    for function in FUNCTIONS {
        builder = builder.allowlist_function(function);
    }
    for item in TYPES {
        builder = builder.allowlist_type(item);
    }
    for constant in CONSTANTS {
        builder = builder.allowlist_var(constant);
    }
    let bindings = builder.generate().unwrap_or_else(|error| {
        panic!(
            "bindgen could not generate SPDK's bindings: {error}. It needs libclang (Debian: apt-get install \
             libclang-dev) and SPDK's headers (from the pkg-config found above)."
        )
    });
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings.write_to_file(out.join("bindings.rs")).expect("write the generated bindings to OUT_DIR");
}

/// PKG_CONFIG_PATH with SPDK_DIR's build/lib/pkgconfig first, when set.
fn pkg_config_path(spdk_dir: Option<&str>) -> String {
    let inherited = std::env::var("PKG_CONFIG_PATH").unwrap_or_default();
    match spdk_dir {
        Some(directory) if inherited.is_empty() => format!("{directory}/build/lib/pkgconfig"),
        Some(directory) => format!("{directory}/build/lib/pkgconfig:{inherited}"),
        None => inherited,
    }
}
