//! The data directory's lock: `<data_dir>/LOCK`, held for as long as a
//! daemon (or an offline restore) uses the directory, so two of them never
//! write one namespace at once. It owns that file only; the rest of the
//! directory belongs to its users.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot lock {path}: {source}; check that the data directory is writable by this user")]
    Lock { path: String, source: std::io::Error },
    #[error(
        "data directory {path} is in use by another nvkv ({}); stop that daemon first, \
         or set node.data_dir to another directory",
        pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    InUse { path: String, pid: Option<u32> },
}

/// `<data_dir>/LOCK`, held (flock, exclusive) for the life of the node, with
/// the owner's pid written in it so a second daemon can name the first.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, DataDirError> {
        let path = data_dir.join("LOCK");
        let lock_error = |source| DataDirError::Lock { path: path.display().to_string(), source };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lock_error)?;
        // SAFETY: flock on a descriptor we own; no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(lock_error(error));
            }
            let mut owner = String::new();
            let pid = file.read_to_string(&mut owner).ok().and_then(|_| owner.trim().parse().ok());
            return Err(DataDirError::InUse { path: data_dir.display().to_string(), pid });
        }
        file.set_len(0).map_err(lock_error)?;
        file.rewind().map_err(lock_error)?;
        writeln!(file, "{}", std::process::id()).map_err(lock_error)?;
        Ok(DataDirLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Makes the name of `path` durable in its directory: fsyncs the directory
/// that holds it (a file's own fsync does not cover its directory entry, so
/// a power cut right after creating a file can otherwise lose its name).
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Empty it first so no one reads a stale pid; closing the file
        // releases the flock.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_data_directory_names_the_owner() {
        let directory = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(directory.path()).expect("first lock");
        let error = DataDirLock::acquire(directory.path()).expect_err("second lock is refused");
        let expected = format!(
            "data directory {} is in use by another nvkv (pid {})",
            directory.path().display(),
            std::process::id()
        );
        assert!(error.to_string().starts_with(&expected), "{error}");
        drop(first);
        DataDirLock::acquire(directory.path()).expect("a released lock can be taken again");
    }
}
