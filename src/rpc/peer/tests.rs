//! The peer transport's own rules; tests/cluster.rs and tests/tls.rs run it
//! between real members.

use super::*;

#[test]
fn shards_listen_from_the_peer_port_up() {
    let base: SocketAddr = "127.0.0.1:7479".parse().expect("address");
    assert_eq!(shard_peer_address(base, 0).expect("shard 0").port(), 7479);
    assert_eq!(shard_peer_address(base, 3).expect("shard 3").port(), 7482);
    let top: SocketAddr = "127.0.0.1:65535".parse().expect("address");
    let error = shard_peer_address(top, 1).expect_err("no port above 65535");
    assert!(error.contains("leaves no port for shard 1"), "{error}");
}

#[test]
fn raft_messages_and_group_errors_survive_the_codec() {
    let error =
        GroupError::NotLeader { group: 3, member: 2, leader: Some(1), leader_address: Some("a:1".into()) };
    let answer: Result<Vec<u8>, GroupError> = Err(error.clone());
    let decoded: Result<Vec<u8>, GroupError> = postcard::from_bytes(&encode(&answer)).expect("decodes");
    assert_eq!(decoded, Err(error));
    let vote = VoteRequest::<NodeId>::new(openraft::Vote::new(4, 2), None);
    let decoded: VoteRequest<NodeId> = postcard::from_bytes(&encode(&vote)).expect("decodes");
    assert_eq!(decoded, vote);
}
