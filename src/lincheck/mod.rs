//! The linearizability checker: decides whether a recorded history of
//! put, delete, get and compare-and-swap on keys could have come from one store
//! that applied every operation atomically at some instant between its
//! invocation and its return.
//!
//! The search is Wing and Gong's, with Lowe's memoization (a partial
//! linearization is known by the set of operations it holds and the state
//! it leaves; one that failed once is never searched again), run on each key
//! alone: every operation touches one key, so a history is linearizable
//! exactly when each key's part of it is (P-compositionality, Horn and
//! Kroening), and the exponential search only ever sees one key's
//! operations.
//!
//! An operation whose outcome is unknown (a timeout, a lost connection) may
//! have taken effect at any instant after its invocation, or never: it stays
//! open to the end of the history. A get with an unknown outcome constrains
//! nothing and is dropped.
//!
//! The search is bounded by a step budget per key. Past it the answer is
//! `GaveUp`, never `Linearizable`: a pass is only reported when a
//! linearization was found for every key.
//!
//! Pure code: it never does I/O or reads a clock; times are numbers the
//! recorder gives, in any unit, comparable across clients.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Steps per key a caller can start from: a few seconds of search at most.
pub const STEPS_PER_KEY_DEFAULT: u64 = 20_000_000;

/// One operation as the client issued it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes the key (absent afterwards, whether it was there or not).
    Delete {
        key: Vec<u8>,
    },
    /// A linearizable read of one key.
    Get {
        key: Vec<u8>,
    },
    /// Writes `new` if the key holds `expected` (`None`: the key is absent).
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

impl Operation {
    pub fn key(&self) -> &[u8] {
        match self {
            Operation::Put { key, .. }
            | Operation::Delete { key }
            | Operation::Get { key }
            | Operation::Cas { key, .. } => key,
        }
    }
}

/// What came back for an operation that returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The put or delete was acknowledged.
    Written,
    /// The get saw this value (`None`: the key was absent).
    Read(Option<Vec<u8>>),
    /// The cas found its expected value and wrote (`true`), or did not
    /// find it and changed nothing (`false`).
    Swapped(bool),
}

/// When an operation returned and with what.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Returned {
    pub at: u64,
    pub outcome: Outcome,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// Who issued it; only for showing a history to a person.
    pub client: u32,
    pub operation: Operation,
    pub invoked: u64,
    /// `None` when the outcome is unknown: the operation may have taken
    /// effect at any instant after `invoked`, or never.
    pub returned: Option<Returned>,
}

/// A history the checker cannot judge because a record contradicts itself.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("record {index} ({record}) has an outcome that does not belong to its operation; record a put or delete as Written, a get as Read, a cas as Swapped")]
    OutcomeMismatch { index: usize, record: String },
    #[error("record {index} ({record}) returned at {returned} before it was invoked at {invoked}; record both instants from one monotonic clock")]
    ReturnedBeforeInvoked { index: usize, record: String, invoked: u64, returned: u64 },
    #[error("record {index} ({record}) returned at {returned}, the instant that stands for \"never\"; record returns below u64::MAX")]
    ReturnedNever { index: usize, record: String, returned: u64 },
}

/// The checker's answer for a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's operations have a linearization.
    Linearizable,
    /// Some key's operations have none. `key` is the key with the fewest
    /// operations among those that fail; `records` are its operations in
    /// invocation order; `linearized_most` is the longest partial
    /// linearization the search built, and `stuck_at` (an index into
    /// `records`) the operation that returned first among those it could
    /// not place: where to start reading.
    Violation { key: Vec<u8>, records: Vec<Record>, linearized_most: usize, stuck_at: usize },
    /// The search for `key` used its whole step budget without deciding, and
    /// no key failed: nothing is claimed either way.
    GaveUp { key: Vec<u8>, steps: u64 },
}

/// The verdict with the size of what was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub verdict: Verdict,
    pub keys: usize,
    /// Operations checked (gets with unknown outcome are not counted).
    pub operations: usize,
}

/// Checks `history` key by key, spending at most `steps_per_key` search
/// steps on each key.
pub fn check(history: &[Record], steps_per_key: u64) -> Result<Report, HistoryError> {
    for (index, record) in history.iter().enumerate() {
        validate(index, record)?;
    }
    let mut by_key: BTreeMap<&[u8], Vec<&Record>> = BTreeMap::new();
    for record in history {
        let unknown_read = record.returned.is_none() && matches!(record.operation, Operation::Get { .. });
        if !unknown_read {
            by_key.entry(record.operation.key()).or_default().push(record);
        }
    }
    for records in by_key.values_mut() {
        records.sort_by_key(|record| record.invoked);
    }
    let operations = by_key.values().map(Vec::len).sum();
    let mut violation: Option<Verdict> = None;
    let mut gave_up: Option<Verdict> = None;
    for (key, records) in &by_key {
        match search(records, steps_per_key) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::Violation { linearized_most, stuck_at } => {
                let shorter = match &violation {
                    Some(Verdict::Violation { records: found, .. }) => records.len() < found.len(),
                    _ => true,
                };
                if shorter {
                    let records = records.iter().map(|record| (*record).clone()).collect();
                    violation =
                        Some(Verdict::Violation { key: key.to_vec(), records, linearized_most, stuck_at });
                }
            }
            KeyVerdict::GaveUp { steps } => {
                gave_up.get_or_insert(Verdict::GaveUp { key: key.to_vec(), steps });
            }
        }
    }
    let verdict = violation.or(gave_up).unwrap_or(Verdict::Linearizable);
    Ok(Report { verdict, keys: by_key.len(), operations })
}

fn validate(index: usize, record: &Record) -> Result<(), HistoryError> {
    let Some(returned) = &record.returned else { return Ok(()) };
    let fits = matches!(
        (&record.operation, &returned.outcome),
        (Operation::Put { .. } | Operation::Delete { .. }, Outcome::Written)
            | (Operation::Get { .. }, Outcome::Read(_))
            | (Operation::Cas { .. }, Outcome::Swapped(_))
    );
    if !fits {
        return Err(HistoryError::OutcomeMismatch { index, record: record.to_string() });
    }
    if returned.at < record.invoked {
        return Err(HistoryError::ReturnedBeforeInvoked {
            index,
            record: record.to_string(),
            invoked: record.invoked,
            returned: returned.at,
        });
    }
    if returned.at == u64::MAX {
        return Err(HistoryError::ReturnedNever { index, record: record.to_string(), returned: returned.at });
    }
    Ok(())
}

enum KeyVerdict {
    Linearizable,
    Violation { linearized_most: usize, stuck_at: usize },
    GaveUp { steps: u64 },
}

/// A key's value as the search tracks it: an interned value, or absent.
type State = Option<u32>;

/// One operation of one key with its values interned, so states compare
/// and hash as small numbers.
enum Step {
    Put(u32),
    Delete,
    Get(State),
    /// `swapped`: `None` when the outcome is unknown.
    Cas {
        expected: State,
        new: u32,
        swapped: Option<bool>,
    },
}

impl Step {
    /// The state after this step from `state`, or `None` when the step's
    /// outcome cannot happen in `state`. An unknown cas takes the branch
    /// the state decides; "never took effect" is covered by leaving it
    /// unlinearized.
    fn apply(&self, state: State) -> Option<State> {
        match *self {
            Step::Put(value) => Some(Some(value)),
            Step::Delete => Some(None),
            Step::Get(seen) => (seen == state).then_some(state),
            Step::Cas { expected, new, swapped } => {
                let found = state == expected;
                match swapped {
                    Some(swapped) if swapped != found => None,
                    _ if found => Some(Some(new)),
                    _ => Some(state),
                }
            }
        }
    }
}

/// Interns `records`' values for the search.
fn steps<'history>(records: &[&'history Record]) -> Vec<Step> {
    let mut values: HashMap<&'history [u8], u32> = HashMap::new();
    let mut intern = |value: &'history [u8]| -> u32 {
        let next = u32::try_from(values.len()).expect("fewer than 2^32 values per key");
        *values.entry(value).or_insert(next)
    };
    records
        .iter()
        .map(|record| match (&record.operation, &record.returned) {
            (Operation::Put { value, .. }, _) => Step::Put(intern(value)),
            (Operation::Delete { .. }, _) => Step::Delete,
            (Operation::Get { .. }, Some(Returned { outcome: Outcome::Read(seen), .. })) => {
                Step::Get(seen.as_deref().map(&mut intern))
            }
            (Operation::Cas { expected, new, .. }, returned) => Step::Cas {
                expected: expected.as_deref().map(&mut intern),
                new: intern(new),
                swapped: match returned {
                    Some(Returned { outcome: Outcome::Swapped(swapped), .. }) => Some(*swapped),
                    _ => None,
                },
            },
            (Operation::Get { .. }, _) => unreachable!("validated, and unknown gets are dropped"),
        })
        .collect()
}

/// A set of operations by index.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(count: usize) -> Bits {
        Bits(vec![0; count.div_ceil(64)])
    }

    fn set(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    fn contains(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }

    fn clear(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
}

/// A call or return event in the search's doubly linked list.
#[derive(Clone, Copy)]
struct Event {
    operation: usize,
    is_call: bool,
    /// For a call, the list node of its return.
    partner: usize,
}

const NONE: usize = usize::MAX;

/// Wing and Gong's search with Lowe's memoization over one key's records.
fn search(records: &[&Record], steps_max: u64) -> KeyVerdict {
    let steps_of = steps(records);
    let count = records.len();
    // Events by time; a call before a return at the same instant, so
    // operations that touch at an instant count as concurrent (an unknown
    // operation returns "never", after every real return).
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * count);
    for (index, record) in records.iter().enumerate() {
        order.push((record.invoked, false, index));
        order.push((record.returned.as_ref().map_or(u64::MAX, |returned| returned.at), true, index));
    }
    order.sort_unstable();
    let mut events = vec![Event { operation: 0, is_call: false, partner: NONE }; 2 * count];
    let mut call_node = vec![NONE; count];
    for (node, &(_, is_return, operation)) in order.iter().enumerate() {
        events[node] = Event { operation, is_call: !is_return, partner: NONE };
        if is_return {
            events[call_node[operation]].partner = node;
        } else {
            call_node[operation] = node;
        }
    }
    if count == 0 {
        return KeyVerdict::Linearizable;
    }
    // Node `head` is the sentinel before the first event.
    let head = 2 * count;
    let mut next: Vec<usize> = (1..2 * count).chain([NONE, 0]).collect();
    let mut previous: Vec<usize> = [head].into_iter().chain(0..2 * count - 1).chain([NONE]).collect();

    let unlink = |next: &mut Vec<usize>, previous: &mut Vec<usize>, node: usize| {
        let (before, after) = (previous[node], next[node]);
        next[before] = after;
        if after != NONE {
            previous[after] = before;
        }
    };
    // Undone in the reverse order of unlinking, the node's own links still
    // name its old neighbours.
    let relink = |next: &mut Vec<usize>, previous: &mut Vec<usize>, node: usize| {
        let (before, after) = (previous[node], next[node]);
        next[before] = node;
        if after != NONE {
            previous[after] = node;
        }
    };

    let mut state: State = None;
    let mut linearized = Bits::new(count);
    let mut seen: HashSet<(Bits, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut linearized_most = 0;
    let mut deepest = linearized.clone();
    let mut entry = next[head];
    let mut steps_taken = 0u64;
    loop {
        steps_taken += 1;
        if steps_taken > steps_max {
            return KeyVerdict::GaveUp { steps: steps_max };
        }
        if entry == NONE {
            return KeyVerdict::Linearizable;
        }
        let event = events[entry];
        if event.is_call {
            if let Some(after) = steps_of[event.operation].apply(state) {
                let mut with = linearized.clone();
                with.set(event.operation);
                if seen.insert((with.clone(), after)) {
                    stack.push((entry, state));
                    state = after;
                    linearized = with;
                    if stack.len() > linearized_most {
                        linearized_most = stack.len();
                        deepest = linearized.clone();
                    }
                    unlink(&mut next, &mut previous, entry);
                    unlink(&mut next, &mut previous, event.partner);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else if records[event.operation].returned.is_none() {
            // The first return left is "never": every operation that did
            // return is linearized, and the open ones may all come after.
            return KeyVerdict::Linearizable;
        } else {
            // An operation returned and none of the order tried so far can
            // place it: undo the latest choice and try the next one.
            let Some((call, before)) = stack.pop() else {
                let stuck_at = (0..count)
                    .filter(|index| !deepest.contains(*index))
                    .filter_map(|index| records[index].returned.as_ref().map(|returned| (returned.at, index)))
                    .min()
                    .map_or(0, |(_, index)| index);
                return KeyVerdict::Violation { linearized_most, stuck_at };
            };
            let operation = events[call].operation;
            state = before;
            linearized.clear(operation);
            relink(&mut next, &mut previous, events[call].partner);
            relink(&mut next, &mut previous, call);
            entry = next[call];
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        match self {
            Operation::Put { key, value } => write!(formatter, "put({}, {})", text(key), text(value)),
            Operation::Delete { key } => write!(formatter, "delete({})", text(key)),
            Operation::Get { key } => write!(formatter, "get({})", text(key)),
            Operation::Cas { key, expected, new } => write!(
                formatter,
                "cas({}, {} -> {})",
                text(key),
                expected.as_deref().map_or("absent".to_string(), text),
                text(new)
            ),
        }
    }
}

impl fmt::Display for Record {
    /// `client 2 [1500, 1730] get(k) = v3`, or `[1500, never] ... = unknown`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let returned = self.returned.as_ref().map_or("never".to_string(), |returned| returned.at.to_string());
        write!(formatter, "client {} [{}, {returned}] {} = ", self.client, self.invoked, self.operation)?;
        match self.returned.as_ref().map(|returned| &returned.outcome) {
            None => write!(formatter, "unknown"),
            Some(Outcome::Written) => write!(formatter, "ok"),
            Some(Outcome::Read(None)) => write!(formatter, "absent"),
            Some(Outcome::Read(Some(value))) => write!(formatter, "{}", String::from_utf8_lossy(value)),
            Some(Outcome::Swapped(true)) => write!(formatter, "swapped"),
            Some(Outcome::Swapped(false)) => write!(formatter, "not swapped"),
        }
    }
}

#[cfg(test)]
mod tests;
