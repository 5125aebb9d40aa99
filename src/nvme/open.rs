//! SHIM FOR BRANCH `node` ONLY: on merge, take branch `nvme`'s open.rs and
//! drop this file. It exists so the node compiles and its tests run before
//! the real backends land, and it keeps exactly the agreed signature:
//! `open_namespace(&NamespaceSettings) -> Result<Arc<dyn Namespace>, NvmeError>`.
//!
//! It opens an in-memory namespace of the requested size in place of the
//! `uring` backend (so nothing survives a restart and nothing is locked on
//! disk: the node's LOCK file guards the data directory meanwhile) and
//! refuses `spdk`. It must never be used to store data that matters.

use std::path::PathBuf;
use std::sync::Arc;

use super::memory::MemoryNamespace;
use super::{Namespace, NvmeError};

/// What the node asks of the namespace, from `[namespace]` of the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSettings {
    /// "uring" or "spdk".
    pub backend: String,
    /// The file or device (already resolved: never empty).
    pub path: PathBuf,
    pub namespace_bytes: u64,
    pub lba_bytes: u32,
}

/// Opens the namespace the settings describe.
pub fn open_namespace(settings: &NamespaceSettings) -> Result<Arc<dyn Namespace>, NvmeError> {
    if settings.backend != "uring" {
        return Err(NvmeError::Invalid(format!(
            "backend \"{}\" is not available in this build (the shim of branch node only stands in for \"uring\")",
            settings.backend
        )));
    }
    let lba_bytes = u64::from(settings.lba_bytes);
    if !settings.lba_bytes.is_power_of_two()
        || settings.lba_bytes < 512
        || settings.namespace_bytes % lba_bytes != 0
    {
        return Err(NvmeError::Invalid(format!(
            "namespace_bytes = {} must be a whole number of lba_bytes = {} blocks (a power of two >= 512)",
            settings.namespace_bytes, settings.lba_bytes
        )));
    }
    Ok(Arc::new(MemoryNamespace::new(settings.lba_bytes, settings.namespace_bytes / lba_bytes)))
}
