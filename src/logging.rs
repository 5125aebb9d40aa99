//! How `nvkv` logs: one line per event on stderr, at the level `RUST_LOG`
//! sets (default [`DEFAULT_FILTER`] for the daemon, [`COMMAND_FILTER`] for
//! the other commands), with the levels meaning what an
//! operator reads into them: ERROR asks for action, WARN reports something
//! wrong that nvkv works around, INFO the node's life, DEBUG the races of
//! normal operation.
//!
//! openraft reports some of those races at ERROR or WARN: a vote or an
//! append to a member that is not up yet (every start of a cluster whose
//! members start one after the other), a vote answer that arrives after the
//! election moved on. nvkv's peer transport says once, in its own words,
//! when a member becomes unreachable and when it is back; openraft's lines
//! for each retry go to DEBUG (target `openraft`, so
//! `RUST_LOG=info,openraft=debug` shows them) through [`Routine`]. Every
//! other openraft line keeps its level. This module must never hide a line
//! it does not name in [`ROUTINE`].

use std::fmt::Write as _;

use std::sync::OnceLock;

use tracing::callsite::Callsite as _;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// The daemon's filter without `RUST_LOG`: nvkv's lines from INFO up,
/// openraft's (an INFO line per election and per membership step) from
/// WARN up.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";
/// Every other command's: its answer is its output, so only what went
/// wrong is logged (a restore formatting a namespace says nothing more).
pub const COMMAND_FILTER: &str = "warn";

/// How an openraft message is recognized.
#[derive(Clone, Copy)]
enum Match {
    /// The message starts with this.
    Start(&'static str),
    /// The message is exactly this.
    Whole(&'static str),
    /// The message has this in it (openraft starts some with a function name).
    Within(&'static str),
}

/// openraft's ERROR and WARN lines that report what a cluster does in
/// normal operation, each with why.
const ROUTINE: &[(Match, &str)] = &[
    // A vote to a member that is down or still starting: the peer
    // transport says when a member is unreachable.
    (Match::Start("while requesting vote"), "a vote did not reach its member"),
    (Match::Whole("timeout"), "a vote got no answer in time"),
    // An append or heartbeat to such a member; openraft backs off and
    // tries again.
    (Match::Whole("RPCError"), "an append did not reach its member"),
    (Match::Start("error replication to target="), "an append did not reach its member"),
    (Match::Start("update progress error"), "an append did not reach its member"),
    (Match::Start("heartbeat error:"), "a heartbeat did not reach its member"),
    (Match::Start("timeout while confirming leadership"), "a member did not confirm a read in time"),
    (
        Match::Within("backoff mode: drain events without processing them"),
        "a member's replication waits out its backoff",
    ),
    // Answers that arrive after an election or a membership change moved on.
    (Match::Start("A message will be ignored because vote changed"), "a late answer to an earlier election"),
    (Match::Start("membership_log_id changed"), "a late answer from before a membership change"),
];

/// Sends log lines to stderr, filtered by `RUST_LOG` (or `default`,
/// [`DEFAULT_FILTER`] or [`COMMAND_FILTER`]), with openraft's routine lines
/// at DEBUG. Colors only on a terminal.
pub fn init(default: &str) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry().with(filter).with(Routine::default()).with(lines).init();
}

/// Takes openraft's routine ERROR and WARN lines out of the log and logs
/// them again at DEBUG, target `openraft`, naming the module that wrote
/// them and the level it gave them.
#[derive(Default)]
pub struct Routine {
    /// The subscriber this layer is part of: the DEBUG line goes straight
    /// to it, because tracing drops an event logged while another one is
    /// being dispatched on the same thread.
    subscriber: OnceLock<WeakDispatch>,
}

impl<S: Subscriber> Layer<S> for Routine {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.subscriber.set(subscriber.downgrade());
    }

    fn event_enabled(&self, event: &Event<'_>, _context: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if !metadata.target().starts_with("openraft") || *metadata.level() > Level::WARN {
            return true;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let Some(why) = routine(&line.message) else {
            return true;
        };
        if let Some(subscriber) = self.subscriber.get().and_then(WeakDispatch::upgrade) {
            let text = format!(
                "{why}: {}{} (from {} at {})",
                line.message,
                line.fields,
                metadata.target(),
                metadata.level()
            );
            log_at_debug(&subscriber, &text);
        }
        false
    }
}

/// Logs `text` at DEBUG, target `openraft`, through `subscriber`.
fn log_at_debug(subscriber: &Dispatch, text: &str) {
    let callsite = tracing::callsite! {
        name: "routine openraft line",
        kind: tracing::metadata::Kind::EVENT,
        target: "openraft",
        level: Level::DEBUG,
        fields: message
    };
    let metadata = callsite.metadata();
    if !subscriber.enabled(metadata) {
        return;
    }
    let Some(message) = metadata.fields().field("message") else {
        return;
    };
    let text = format_args!("{text}");
    let values = [(&message, Some(&text as &dyn tracing::Value))];
    subscriber.event(&Event::new(metadata, &metadata.fields().value_set(&values)));
}

/// Why an openraft message is routine, or `None` when it is not.
fn routine(message: &str) -> Option<&'static str> {
    ROUTINE
        .iter()
        .find(|(pattern, _)| match *pattern {
            Match::Start(start) => message.starts_with(start),
            Match::Whole(whole) => message == whole,
            Match::Within(phrase) => message.contains(phrase),
        })
        .map(|(_, why)| *why)
}

/// An event's message and its other fields, as text.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The lines a subscriber with [`Routine`] writes, at `filter`.
    fn logged(filter: &str, emit: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buffer").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let lines = tracing_subscriber::fmt::layer().with_writer(move || writer.clone()).with_ansi(false);
        let subscriber =
            tracing_subscriber::registry().with(EnvFilter::new(filter)).with(Routine::default()).with(lines);
        tracing::subscriber::with_default(subscriber, emit);
        let text = buffer.0.lock().expect("buffer").clone();
        String::from_utf8(text).expect("utf-8")
    }

    fn openraft_lines() {
        tracing::error!(target: "openraft::core::raft_core", error = "Unreachable node", target = 3, "while requesting vote");
        tracing::warn!(
            target: "openraft::core::raft_core",
            "A message will be ignored because vote changed: msg sent by vote: T1-N3:committed"
        );
        tracing::warn!(target: "openraft::replication", interval = ?std::time::Duration::from_millis(200),
            "ReplicationCore::backoff_drain_events backoff mode: drain events without processing them");
        tracing::error!(target: "openraft::storage::callback", "LogFlush error: device failed, while flushing upto 7");
        tracing::error!(target: "nvkv::node", "while requesting vote is only routine from openraft");
    }

    #[test]
    fn routine_openraft_lines_are_gone_at_the_default_level() {
        let text = logged(DEFAULT_FILTER, openraft_lines);
        assert!(!text.contains("while requesting vote error"), "{text}");
        assert!(!text.contains("vote changed"), "{text}");
        assert!(!text.contains("backoff mode"), "{text}");
        assert!(text.contains("ERROR openraft::storage::callback: LogFlush error"), "{text}");
        assert!(text.contains("ERROR nvkv::node: while requesting vote is only routine"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn routine_openraft_lines_show_at_debug_with_their_fields() {
        let text = logged("info,openraft=debug", openraft_lines);
        assert!(
            text.contains(
                "DEBUG openraft: a vote did not reach its member: while requesting vote error=Unreachable node \
                 target=3 (from openraft::core::raft_core at ERROR)"
            ),
            "{text}"
        );
        assert!(text.contains("DEBUG openraft: a late answer to an earlier election: A message"), "{text}");
        assert!(text.contains("a member's replication waits out its backoff"), "{text}");
        assert!(!text.contains("ERROR openraft::core"), "{text}");
        assert!(!text.contains(" WARN openraft"), "{text}");
    }
}
