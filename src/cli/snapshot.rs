//! `nvkv snapshot save | restore | status`: backups of the whole store.

use std::cell::Cell;
use std::rc::Rc;

use nvkv::backup::save::SaveProgress;
use nvkv::config::Config;
use nvkv::rpc::client::ClientTls;

use super::args::SnapshotCommand;
use super::connect::{connect, run_client};
use super::output::print_json;

/// Runs one snapshot command.
pub fn run(
    endpoints: &[String],
    tls: &ClientTls,
    json: bool,
    command: SnapshotCommand,
) -> Result<(), String> {
    match command {
        SnapshotCommand::Save { file, force } => {
            let saved = run_client(async move {
                let client = connect(endpoints, tls).await?;
                let bar = Rc::new(nvkv::progress::bar(
                    true,
                    0,
                    "{spinner} saving group {pos}/{len} [{bar:40}] {msg} received",
                ));
                let received = Rc::new(Cell::new(0u64));
                let shown = bar.clone();
                let progress = Rc::new(move |event: SaveProgress| {
                    let Some(bar) = shown.as_ref() else { return };
                    match event {
                        SaveProgress::Groups(groups) => bar.set_length(u64::from(groups)),
                        SaveProgress::Bytes(bytes) => {
                            received.set(received.get() + bytes);
                            bar.set_message(indicatif::HumanBytes(received.get()).to_string());
                        }
                        SaveProgress::GroupDone(_) => bar.inc(1),
                    }
                });
                let saved = nvkv::backup::save::save(&client, &file, force, progress).await;
                if let Some(bar) = bar.as_ref() {
                    bar.finish_and_clear();
                }
                saved
            })??;
            if json {
                return print_json(&saved);
            }
            println!(
                "Snapshot saved at {}: {} groups, {} bytes, from member {}",
                saved.path, saved.groups, saved.file_bytes, saved.member_id
            );
        }
        SnapshotCommand::Restore { file, data_dir, config } => {
            let mut config = Config::load(config.as_deref()).map_err(|error| error.to_string())?;
            config.node.data_dir = data_dir;
            let file_bytes = std::fs::metadata(&file).map(|metadata| metadata.len()).unwrap_or(0);
            let bar = nvkv::progress::bar(
                true,
                2 * file_bytes,
                "{spinner} checking, then restoring [{bar:40}] {bytes}/{total_bytes}",
            );
            let restored = nvkv::backup::restore::restore(&file, config, |bytes| {
                if let Some(bar) = &bar {
                    bar.inc(bytes);
                }
            });
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let restored = restored.map_err(|error| error.to_string())?;
            if json {
                return print_json(&restored);
            }
            println!(
                "Restored {} into {}: {} groups ({} keys with history) on {} shards, namespace {}, members {:?}; \
                 start it with nvkv serve and the same config and data directory",
                file.display(),
                restored.data_dir.display(),
                restored.summary.header.groups,
                restored.summary.keys_with_history,
                restored.shards,
                restored.namespace,
                restored.members,
            );
        }
        SnapshotCommand::Status { file } => {
            let summary = nvkv::backup::verify(&file, |_| {}).map_err(|error| error.to_string())?;
            if json {
                return print_json(&summary);
            }
            println!(
                "{}: a whole nvkv backup of {} bytes: {} groups ({} shards × {}), partition depth {}, {} keys \
                 with history",
                file.display(),
                summary.file_bytes,
                summary.header.groups,
                summary.header.shards,
                summary.header.groups_per_shard,
                summary.header.partition_depth,
                summary.keys_with_history,
            );
            for (group, (revision, compacted)) in summary.revisions.iter().enumerate() {
                println!("group {group}: revision {revision}, compacted at {compacted}");
            }
        }
    }
    Ok(())
}
