//! Finds SPDK for the `bindings` feature. Without that feature this crate is
//! empty and needs nothing, so default builds work on machines without SPDK.

fn main() {
    println!("cargo:rerun-if-env-changed=SPDK_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if std::env::var_os("CARGO_FEATURE_BINDINGS").is_none() {
        return;
    }
    let spdk_dir = std::env::var("SPDK_DIR").ok();
    let mut pkg_config = std::process::Command::new("pkg-config");
    if let Some(dir) = &spdk_dir {
        pkg_config.env("PKG_CONFIG_PATH", format!("{dir}/build/lib/pkgconfig"));
    }
    let found = pkg_config
        .args(["--exists", "spdk_nvme", "spdk_env_dpdk"])
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
    panic!(
        "SPDK was found, but the bindings of vendor/spdk-sys are not generated yet (issue 6 builds them). \
         Build without `--features spdk` to use the io_uring backend."
    );
}
