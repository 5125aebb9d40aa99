//! The store's command codec, as a member applies log entries (a batch of
//! commands, each a command) and a follower reads a forwarded write's
//! outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvkv::kv::command::{decode_command, decode_outcome, split_batch, split_batch_outcome};

fuzz_target!(|bytes: &[u8]| {
    let _ = decode_command(bytes);
    let _ = decode_outcome(bytes);
    if let Ok(Some(commands)) = split_batch(bytes) {
        for command in commands {
            let _ = decode_command(&command);
        }
    }
    if let Ok(outcomes) = split_batch_outcome(bytes) {
        for outcome in outcomes {
            let _ = decode_outcome(&outcome);
        }
    }
});
