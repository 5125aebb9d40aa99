//! A consistent copy of one group's store (Maintenance.backupGroup),
//! received in chunks up to a bound and checked against what the node
//! announced.

use super::*;

/// Receives the chunks of one group's backup, up to a bound, and tells the
/// caller how many bytes came.
pub(super) struct BackupSinkServer {
    received: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
    bytes_max: u64,
    progress: std::rc::Rc<dyn Fn(u64)>,
}

impl crate::nvkv_capnp::backup_sink::Server for BackupSinkServer {
    async fn chunk(
        self: capnp::capability::Rc<Self>,
        params: crate::nvkv_capnp::backup_sink::ChunkParams,
    ) -> Result<(), capnp::Error> {
        let data = params.get()?.get_data()?;
        let mut received = self.received.borrow_mut();
        if received.len() as u64 + data.len() as u64 > self.bytes_max {
            return Err(capnp::Error::failed(format!(
                "the group's backup grew past {} bytes, the most a backup part may hold",
                self.bytes_max
            )));
        }
        received.extend_from_slice(data);
        (self.progress)(data.len() as u64);
        Ok(())
    }
}

impl Connection {
    /// A consistent copy of one group's store (Maintenance.backupGroup):
    /// what it is, and its bytes, checked against the length and CRC32C
    /// the node announced. `progress` hears of every chunk's bytes as
    /// they arrive; a copy larger than `bytes_max` is refused.
    pub async fn backup_group(
        &self,
        group: u32,
        bytes_max: u64,
        progress: std::rc::Rc<dyn Fn(u64)>,
    ) -> Result<(crate::rpc::cluster::GroupBackupInfo, Vec<u8>), ClientError> {
        let received = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let sink: crate::nvkv_capnp::backup_sink::Client =
            capnp_rpc::new_client(BackupSinkServer { received: received.clone(), bytes_max, progress });
        let mut request = self.maintenance.backup_group_request();
        request.get().set_group(group);
        request.get().set_sink(sink);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        let info = self.answer(
            response.get().and_then(|results| crate::rpc::cluster::read_group_backup(results.get_result()?)),
        )?;
        let bytes = std::mem::take(&mut *received.borrow_mut());
        let crc = crc32c::crc32c(&bytes);
        if info.group != group || bytes.len() as u64 != info.bytes || crc != info.crc32c {
            return Err(self.rpc_error(capnp::Error::failed(format!(
                "the backup of group {group} arrived damaged: the node announced group {} with {} bytes of \
                 CRC32C {:#010x}, {} bytes of CRC32C {crc:#010x} arrived; run the save again",
                info.group,
                info.bytes,
                info.crc32c,
                bytes.len()
            ))));
        }
        Ok((info, bytes))
    }
}
