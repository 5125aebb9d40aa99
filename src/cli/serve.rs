//! `nvkv serve`: the daemon in the foreground, with the command line's
//! overrides of the config applied.

use std::net::SocketAddr;
use std::path::PathBuf;

use nvkv::config::Config;

/// Runs the node until SIGTERM or SIGINT.
pub fn serve(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    etcd_listen: Option<super::args::EtcdListen>,
) -> Result<(), String> {
    Config::load(config.as_deref())
        .map(|mut config| {
            if let Some(data_dir) = data_dir {
                config.node.data_dir = data_dir;
            }
            if let Some(listen) = listen {
                config.node.client_address = listen;
            }
            if let Some(super::args::EtcdListen(etcd)) = etcd_listen {
                config.etcd.address = etcd;
            }
            config
        })
        .map_err(nvkv::node::NodeError::from)
        .and_then(nvkv::node::serve)
        .map_err(|error| error.to_string())
}
