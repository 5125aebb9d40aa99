//! One group's replicated state as its Raft state machine sees it: the
//! store and its watch hub, driven by command bytes and snapshot bytes.
//!
//! It owns the contract between the two: the events of every applied
//! command reach the hub before the next command is applied, and a
//! snapshot install tells the hub its store was replaced. The shard adapts
//! this to the Raft layer's state machine trait; this module must never
//! import Raft (layers look down) or keep an applied log position (the Raft
//! layer owns that).

use super::command::{
    apply, decode_stamped_command, encode_batch_outcome, encode_outcome, split_batch, Command,
    CommandCodecError,
};
use super::snapshot::{self, SnapshotError};
use super::store::MvccStore;
use super::watch::{WatchHub, WatchLimits};

pub struct GroupState {
    pub store: MvccStore,
    pub hub: WatchHub,
}

impl GroupState {
    /// A group whose store counts revisions 1, 2, 3 (tests, tools).
    pub fn new(watch_limits: WatchLimits) -> GroupState {
        GroupState { store: MvccStore::new(), hub: WatchHub::new(watch_limits) }
    }

    /// Group `group` of a node: its store makes hybrid revisions (see
    /// `store`), also after a snapshot replaced it.
    pub fn hybrid(group: u32, watch_limits: WatchLimits) -> GroupState {
        GroupState { store: MvccStore::hybrid(group), hub: WatchHub::new(watch_limits) }
    }

    /// Applies one committed command and returns its encoded outcome. A
    /// command that does not decode (written by a newer nvkv, say) is an
    /// error the caller must treat as fatal for the group: the other
    /// replicas apply it, so skipping it here would fork the state.
    ///
    /// A batch entry applies its commands one after the other, each at its
    /// own revision, and answers with the outcome of each. Every command of
    /// a batch is decoded before the first applies, so a batch applies
    /// whole or not at all.
    pub fn apply_command(&mut self, command: &[u8]) -> Result<Vec<u8>, CommandCodecError> {
        let Some(batch) = split_batch(command)? else {
            let (command, stamp) = decode_stamped_command(command)?;
            return Ok(self.apply_one(&command, stamp));
        };
        let commands =
            batch.iter().map(|command| decode_stamped_command(command)).collect::<Result<Vec<_>, _>>()?;
        let outcomes: Vec<Vec<u8>> =
            commands.iter().map(|(command, stamp)| self.apply_one(command, *stamp)).collect();
        Ok(encode_batch_outcome(&outcomes))
    }

    fn apply_one(&mut self, command: &Command, stamp: u64) -> Vec<u8> {
        // Events only matter to watchers: without any, none are made.
        self.store.keep_events(!self.hub.is_empty());
        let applied = apply(&mut self.store, command, stamp);
        self.hub.publish(&applied.events);
        encode_outcome(&applied.response)
    }

    /// The whole store, as `restore` takes it back.
    pub fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(&self.store)
    }

    /// Replaces the store with a snapshot's; on a refusal the store stays
    /// as it was. Watchers carry on from history (see `WatchHub::store_replaced`).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let mut store = snapshot::decode(bytes)?;
        if let Some(group) = self.store.hybrid_group() {
            store.make_hybrid(group);
        }
        self.store = store;
        self.hub.store_replaced();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::{decode_outcome, encode_command, Command, CommandResponse};
    use crate::kv::types::{KvError, PutRequest, PutResponse};
    use crate::kv::watch::{WatchPoll, WatchRequest};

    fn put(key: &str) -> Vec<u8> {
        encode_command(&Command::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        }))
    }

    #[test]
    fn applied_commands_answer_in_bytes_and_reach_the_watchers() {
        let mut group = GroupState::new(WatchLimits::default());
        let request = WatchRequest { key: b"a".to_vec(), ..WatchRequest::default() };
        let id = group.hub.watch(&group.store, request).unwrap();
        let outcome = decode_outcome(&group.apply_command(&put("a")).unwrap()).unwrap();
        assert_eq!(outcome, Ok(CommandResponse::Put(PutResponse { revision: 2, prev_kv: None })));
        let refused = group.apply_command(&encode_command(&Command::LeaseRevoke { id: 9 })).unwrap();
        assert_eq!(decode_outcome(&refused).unwrap(), Err(KvError::LeaseNotFound(9)));
        let WatchPoll::Events(events) = group.hub.poll(&group.store, id, 10).unwrap() else {
            panic!("events")
        };
        assert_eq!(events.len(), 1);
        assert!(group.apply_command(&[99]).is_err(), "a command from a newer format");
    }

    #[test]
    fn a_batch_applies_each_command_at_its_own_revision_and_answers_each() {
        use crate::kv::command::{encode_batch, split_batch_outcome};
        let mut batched = GroupState::new(WatchLimits::default());
        let mut single = GroupState::new(WatchLimits::default());
        let commands = vec![put("a"), encode_command(&Command::LeaseRevoke { id: 9 }), put("b")];
        let outcomes =
            split_batch_outcome(&batched.apply_command(&encode_batch(&commands)).unwrap()).unwrap();
        let one_by_one: Vec<Vec<u8>> =
            commands.iter().map(|command| single.apply_command(command).unwrap()).collect();
        assert_eq!(outcomes, one_by_one, "a batch answers as its commands one by one");
        assert_eq!(batched.snapshot(), single.snapshot());
        assert_eq!(batched.store.revision(), 3);
        let broken = encode_batch(&[put("c"), vec![1, 99]]);
        assert!(batched.apply_command(&broken).is_err());
        assert_eq!(batched.store.revision(), 3, "a batch with a bad command applies none of it");
    }

    #[test]
    fn a_replica_restored_from_a_snapshot_applies_on_to_the_same_state() {
        let mut leader = GroupState::new(WatchLimits::default());
        let mut follower = GroupState::new(WatchLimits::default());
        leader.apply_command(&put("a")).unwrap();
        leader.apply_command(&put("b")).unwrap();
        assert!(follower.restore(&leader.snapshot()[..10]).is_err());
        assert_eq!(follower.store.revision(), 1, "a refused snapshot changes nothing");
        follower.restore(&leader.snapshot()).unwrap();
        for group in [&mut leader, &mut follower] {
            group.apply_command(&put("c")).unwrap();
        }
        assert_eq!(follower.snapshot(), leader.snapshot());
    }
}
