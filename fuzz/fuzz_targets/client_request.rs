//! A client's Cap'n Proto message read the way the server reads requests
//! (its reader limits), then taken apart by the converters the request
//! handlers use: a transaction, a watch, and the answers the client library
//! reads back.
#![no_main]

use capnp::message::ReaderOptions;
use libfuzzer_sys::fuzz_target;
use nvkv::nvkv_capnp::{key_value, txn_request, txn_response, watch_create};

fuzz_target!(|bytes: &[u8]| {
    let options: ReaderOptions = nvkv::rpc::server_reader_options(1 << 20);
    let mut slice = bytes;
    let Ok(message) = capnp::serialize::read_message_from_flat_slice(&mut slice, options) else {
        return;
    };
    if let Ok(root) = message.get_root::<txn_request::Reader<'_>>() {
        let _ = nvkv::rpc::kv::read_txn_request(root);
    }
    if let Ok(root) = message.get_root::<watch_create::Reader<'_>>() {
        let _ = nvkv::rpc::watch::read_watch_create(root);
    }
    if let Ok(root) = message.get_root::<txn_response::Reader<'_>>() {
        let _ = nvkv::rpc::kv::read_txn_response(root);
    }
    if let Ok(root) = message.get_root::<key_value::Reader<'_>>() {
        let _ = nvkv::rpc::kv::read_key_value(root);
    }
});
