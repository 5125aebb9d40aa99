//! Opening the namespace a deployment is configured with: picks the backend
//! by name and hands back a shared [`Namespace`].
//!
//! This module owns only the choice of backend. It must never read config
//! files (the config layer maps its settings into [`NamespaceSettings`]) nor
//! open a namespace any other way than through a backend's own `open`.

use std::path::PathBuf;
use std::sync::Arc;

use super::uring::{UringNamespace, UringOptions};
use super::{Namespace, NvmeError};

/// Where and how to open the namespace. Plain data, filled by the config
/// layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSettings {
    /// "uring" (a file or raw block device through io_uring) or "spdk".
    pub backend: String,
    /// A namespace file (created and preallocated when missing) or a block
    /// device.
    pub path: PathBuf,
    /// Size of a namespace file; ignored for a block device.
    pub namespace_bytes: u64,
    /// Block size of a namespace file; a block device uses its own.
    pub lba_bytes: u32,
}

/// Opens the namespace `settings` describe and takes its exclusive lock.
pub fn open_namespace(settings: &NamespaceSettings) -> Result<Arc<dyn Namespace>, NvmeError> {
    match settings.backend.as_str() {
        "uring" => {
            let options = UringOptions {
                namespace_bytes: settings.namespace_bytes,
                lba_bytes: settings.lba_bytes,
                create: true,
            };
            Ok(Arc::new(UringNamespace::open(&settings.path, &options)?))
        }
        "spdk" if cfg!(feature = "spdk") => Err(NvmeError::Invalid(
            "the SPDK namespace backend is not part of nvkv yet, even with --features spdk; \
             set backend = \"uring\""
                .to_owned(),
        )),
        "spdk" => Err(NvmeError::Invalid(
            "this build of nvkv has no SPDK support; rebuild with `cargo build --release --features spdk` \
             (needs SPDK installed) or set backend = \"uring\""
                .to_owned(),
        )),
        other => Err(NvmeError::Invalid(format!(
            "unknown namespace backend {other:?}; set backend to \"uring\" or \"spdk\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(backend: &str) -> NamespaceSettings {
        NamespaceSettings {
            backend: backend.to_owned(),
            path: PathBuf::from("/nonexistent/nvkv-namespace"),
            namespace_bytes: 1 << 20,
            lba_bytes: 4096,
        }
    }

    #[test]
    fn spdk_without_the_feature_says_how_to_rebuild() {
        let Err(NvmeError::Invalid(message)) = open_namespace(&settings("spdk")) else {
            panic!("the spdk backend must be refused as invalid in this build");
        };
        if cfg!(feature = "spdk") {
            assert!(message.contains("not part of nvkv yet"), "{message}");
        } else {
            assert!(message.contains("--features spdk"), "{message}");
        }
    }

    #[test]
    fn unknown_backends_are_named_in_the_refusal() {
        let Err(NvmeError::Invalid(message)) = open_namespace(&settings("floppy")) else {
            panic!("an unknown backend must be refused as invalid");
        };
        assert!(message.contains("\"floppy\""), "{message}");
    }

    #[test]
    fn uring_opens_a_file_in_a_temporary_directory() {
        let directory = tempfile::tempdir_in(std::env::temp_dir()).expect("temporary directory");
        let mut settings = settings("uring");
        settings.path = directory.path().join("namespace");
        let namespace = open_namespace(&settings).expect("open a uring namespace file");
        assert_eq!(namespace.info().backend, "uring");
        assert_eq!(namespace.info().capacity_bytes(), 1 << 20);
    }
}
