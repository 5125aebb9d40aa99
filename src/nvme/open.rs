//! Opening the namespace a deployment is configured with: picks the
//! [`Backend`] and hands back a shared [`Namespace`].
//!
//! This module owns only the choice of backend. It must never read config
//! files (the config layer maps its settings into [`NamespaceSettings`]) nor
//! open a namespace any other way than through a backend's own `open`.

use std::path::PathBuf;
use std::sync::Arc;

use super::uring::{UringNamespace, UringOptions};
use super::{Namespace, NvmeError};

/// The backend a namespace is opened through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A file or raw block device through io_uring with O_DIRECT.
    Uring,
    /// SPDK's user-space NVMe driver (cargo feature `spdk`).
    Spdk,
}

/// Where and how to open the namespace. Plain data, filled by the config
/// layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSettings {
    pub backend: Backend,
    /// A namespace file (created and preallocated when missing) or a block
    /// device.
    pub path: PathBuf,
    /// Size of a namespace file; ignored for a block device.
    pub namespace_bytes: u64,
    /// Block size of a namespace file; a block device uses its own.
    pub lba_bytes: u32,
    /// Where the spdk backend finds its namespace; unused by the others.
    pub spdk: SpdkOptions,
}

/// How the spdk backend attaches its controller and sets up SPDK's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpdkOptions {
    /// An SPDK transport id: `trtype:PCIe traddr:0000:01:00.0`, or
    /// `trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:...`.
    pub transport: String,
    /// The namespace of that controller, from 1.
    pub nsid: u32,
    /// Memory SPDK's env reserves for DMA buffers and queues, once per
    /// process: hugepages, or ordinary memory without them.
    pub memory_bytes: u64,
    /// Whether that memory comes from hugepages. Without them only fabrics
    /// transports (TCP, RDMA) work: a PCIe device needs pinned pages.
    pub hugepages: bool,
}

impl Default for SpdkOptions {
    fn default() -> Self {
        SpdkOptions { transport: String::new(), nsid: 1, memory_bytes: 256 << 20, hugepages: true }
    }
}

/// Opens the namespace `settings` describe and takes its exclusive lock.
pub fn open_namespace(settings: &NamespaceSettings) -> Result<Arc<dyn Namespace>, NvmeError> {
    match settings.backend {
        Backend::Uring => {
            let options = UringOptions {
                namespace_bytes: settings.namespace_bytes,
                lba_bytes: settings.lba_bytes,
                create: true,
            };
            Ok(Arc::new(UringNamespace::open(&settings.path, &options)?))
        }
        #[cfg(feature = "spdk")]
        Backend::Spdk => Ok(Arc::new(super::spdk::SpdkNamespace::open(&settings.spdk)?)),
        #[cfg(not(feature = "spdk"))]
        Backend::Spdk => Err(NvmeError::Invalid(
            "this build of nvkv has no SPDK support; rebuild with `cargo build --release --features spdk` \
             (needs SPDK installed) or set backend = \"uring\""
                .to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(backend: Backend) -> NamespaceSettings {
        NamespaceSettings {
            backend,
            path: PathBuf::from("/nonexistent/nvkv-namespace"),
            namespace_bytes: 1 << 20,
            lba_bytes: 4096,
            spdk: SpdkOptions::default(),
        }
    }

    #[test]
    #[cfg(not(feature = "spdk"))]
    fn spdk_without_the_feature_says_how_to_rebuild() {
        let Err(NvmeError::Invalid(message)) = open_namespace(&settings(Backend::Spdk)) else {
            panic!("the spdk backend must be refused as invalid in this build");
        };
        assert!(message.contains("--features spdk"), "{message}");
    }

    #[test]
    #[cfg(feature = "spdk")]
    fn spdk_without_a_transport_says_which_key_to_set() {
        let Err(NvmeError::Invalid(message)) = open_namespace(&settings(Backend::Spdk)) else {
            panic!("the spdk backend without a transport id must be refused as invalid");
        };
        assert!(message.contains("namespace.transport"), "{message}");
    }

    #[test]
    fn uring_opens_a_file_in_a_temporary_directory() {
        let directory = tempfile::tempdir_in(std::env::temp_dir()).expect("temporary directory");
        let mut settings = settings(Backend::Uring);
        settings.path = directory.path().join("namespace");
        let namespace = open_namespace(&settings).expect("open a uring namespace file");
        assert_eq!(namespace.info().backend, "uring");
        assert_eq!(namespace.info().capacity_bytes(), 1 << 20);
    }
}
