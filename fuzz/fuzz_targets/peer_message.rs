//! What a peer sends inside its Cap'n Proto calls (postcard bytes): Raft's
//! messages, a lease question, a membership change, and the answers. The
//! first byte picks the message, the rest is its encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvkv::raft::{GroupError, NodeId, TypeConfig};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) {
    let _ = postcard::from_bytes::<T>(bytes);
}

fuzz_target!(|bytes: &[u8]| {
    let Some((kind, message)) = bytes.split_first() else {
        return;
    };
    match kind % 8 {
        0 => decode::<AppendEntriesRequest<TypeConfig>>(message),
        1 => decode::<Result<AppendEntriesResponse<NodeId>, openraft::error::RaftError<NodeId>>>(message),
        2 => decode::<VoteRequest<NodeId>>(message),
        3 => decode::<Result<VoteResponse<NodeId>, openraft::error::RaftError<NodeId>>>(message),
        4 => decode::<nvkv::shard::lease::LeaseQuery>(message),
        5 => decode::<Result<nvkv::shard::lease::LeaseAnswer, GroupError>>(message),
        6 => decode::<nvkv::shard::membership::MembershipChange>(message),
        _ => decode::<Result<Vec<u8>, GroupError>>(message),
    }
});
