//! The linearizability checker: decides whether a recorded history of
//! puts, deletes, gets, compare-and-swaps, transactions and range reads
//! could have come from one store that applied every operation atomically
//! at some instant between its invocation and its return.
//!
//! The search is Wing and Gong's, with Lowe's memoization (a partial
//! linearization is known by the set of operations it holds and the state
//! it leaves; one that failed once is never searched again), run on each
//! component of the history alone. A history is linearizable exactly when
//! each part of it that shares no key with the rest is
//! (P-compositionality, Horn and Kroening), but only where operations keep
//! to their parts: a single-key operation keeps to its key; a transaction
//! joins every key it compares or writes, and a range read every key of the
//! history inside it. So the keys are grouped into components (union-find
//! over the keys each operation touches), each component is searched with
//! the values of its keys as the state, and the exponential search only
//! ever sees one component's operations: one key's, in a history without
//! multi-key operations.
//!
//! An operation whose outcome is unknown (a timeout, a lost connection) may
//! have taken effect at any instant after its invocation, or never: it stays
//! open to the end of the history. A read (get or range) with an unknown
//! outcome constrains nothing and is dropped.
//!
//! The search is bounded by a step budget per component. Past it the
//! answer is `GaveUp`, never `Linearizable`: a pass is only reported when a
//! linearization was found for every component.
//!
//! Pure code: it never does I/O or reads a clock; times are numbers the
//! recorder gives, in any unit, comparable across clients.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

/// Steps per component a caller can start from: a few seconds of search
/// at most.
pub const STEPS_PER_COMPONENT_DEFAULT: u64 = 20_000_000;

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
    /// Does `success`'s writes, in order, if every compare holds, and
    /// `failure`'s otherwise, all at one instant.
    Txn {
        compares: Vec<Compare>,
        success: Vec<Write>,
        failure: Vec<Write>,
    },
    /// A linearizable read of every key in `[start, end)`.
    Range {
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// A transaction's condition on one key: it holds `value` (`None`: the key
/// is absent).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Compare {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One write of a transaction's branch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Write {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl Write {
    pub fn key(&self) -> &[u8] {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }

    /// The value the key holds after this write.
    fn value(&self) -> Option<&[u8]> {
        match self {
            Write::Put { value, .. } => Some(value),
            Write::Delete { .. } => None,
        }
    }
}

impl Operation {
    /// The key of a single-key operation; `None` for a transaction or a
    /// range, which may touch many.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Operation::Put { key, .. }
            | Operation::Delete { key }
            | Operation::Get { key }
            | Operation::Cas { key, .. } => Some(key),
            Operation::Txn { .. } | Operation::Range { .. } => None,
        }
    }

    /// The keys the operation names: a transaction's compared and written
    /// keys; none for a range, whose keys are those of the history inside
    /// it.
    fn named_keys(&self) -> Vec<&[u8]> {
        match self {
            Operation::Txn { compares, success, failure } => compares
                .iter()
                .map(|compare| compare.key.as_slice())
                .chain(success.iter().chain(failure).map(Write::key))
                .collect(),
            Operation::Range { .. } => Vec::new(),
            single => single.key().into_iter().collect(),
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
    /// The transaction's compares held and its success branch ran
    /// (`true`), or its failure branch ran (`false`).
    Branch(bool),
    /// The range read found these keys with these values, in ascending
    /// key order; every other key of the range was absent.
    Listed(Vec<(Vec<u8>, Vec<u8>)>),
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
    #[error("record {index} ({record}) has an outcome that does not belong to its operation; record a put or delete as Written, a get as Read, a cas as Swapped, a txn as Branch, a range as Listed")]
    OutcomeMismatch { index: usize, record: String },
    #[error("record {index} ({record}) returned at {returned} before it was invoked at {invoked}; record both instants from one monotonic clock")]
    ReturnedBeforeInvoked { index: usize, record: String, invoked: u64, returned: u64 },
    #[error("record {index} ({record}) returned at {returned}, the instant that stands for \"never\"; record returns below u64::MAX")]
    ReturnedNever { index: usize, record: String, returned: u64 },
    #[error("record {index} ({record}) lists key {key} outside its range or out of order; list each key found in [start, end) once, in ascending order")]
    ListedOutOfRange { index: usize, record: String, key: String },
}

/// The checker's answer for a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every component's operations have a linearization.
    Linearizable,
    /// Some component's operations have none. `keys` are the keys of the
    /// component with the fewest operations among those that fail;
    /// `records` are its operations in invocation order; `linearized_most`
    /// is the longest partial linearization the search built, and
    /// `stuck_at` (an index into `records`) the operation that returned
    /// first among those it could not place: where to start reading.
    Violation { keys: Vec<Vec<u8>>, records: Vec<Record>, linearized_most: usize, stuck_at: usize },
    /// The search of the component of `keys` used its whole step budget
    /// without deciding, and no component failed: nothing is claimed
    /// either way.
    GaveUp { keys: Vec<Vec<u8>>, steps: u64 },
}

/// The verdict with the size of what was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub verdict: Verdict,
    pub keys: usize,
    /// The groups of keys searched apart (one per key when no operation
    /// touches two keys).
    pub components: usize,
    /// Operations checked (reads with unknown outcome are not counted).
    pub operations: usize,
}

/// Checks `history` component by component, spending at most
/// `steps_per_component` search steps on each.
pub fn check(history: &[Record], steps_per_component: u64) -> Result<Report, HistoryError> {
    for (index, record) in history.iter().enumerate() {
        validate(index, record)?;
    }
    let records: Vec<&Record> = history
        .iter()
        .filter(|record| {
            record.returned.is_some()
                || !matches!(record.operation, Operation::Get { .. } | Operation::Range { .. })
        })
        .collect();
    let keys = keys_of(&records);
    let components = components(&records, &keys);
    let mut violation: Option<Verdict> = None;
    let mut gave_up: Option<Verdict> = None;
    for component in &components {
        let key_names = || component.keys.iter().map(|&key| keys[key].to_vec()).collect();
        match search(
            &component.records,
            &steps(&component.records, &component.keys, &keys),
            component.keys.len(),
            steps_per_component,
        ) {
            SearchVerdict::Linearizable => {}
            SearchVerdict::Violation { linearized_most, stuck_at } => {
                let shorter = match &violation {
                    Some(Verdict::Violation { records: found, .. }) => component.records.len() < found.len(),
                    _ => true,
                };
                if shorter {
                    let records = component.records.iter().map(|record| (*record).clone()).collect();
                    violation =
                        Some(Verdict::Violation { keys: key_names(), records, linearized_most, stuck_at });
                }
            }
            SearchVerdict::GaveUp { steps } => {
                gave_up.get_or_insert_with(|| Verdict::GaveUp { keys: key_names(), steps });
            }
        }
    }
    let verdict = violation.or(gave_up).unwrap_or(Verdict::Linearizable);
    Ok(Report { verdict, keys: keys.len(), components: components.len(), operations: records.len() })
}

fn validate(index: usize, record: &Record) -> Result<(), HistoryError> {
    let Some(returned) = &record.returned else { return Ok(()) };
    let fits = matches!(
        (&record.operation, &returned.outcome),
        (Operation::Put { .. } | Operation::Delete { .. }, Outcome::Written)
            | (Operation::Get { .. }, Outcome::Read(_))
            | (Operation::Cas { .. }, Outcome::Swapped(_))
            | (Operation::Txn { .. }, Outcome::Branch(_))
            | (Operation::Range { .. }, Outcome::Listed(_))
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
    if let (Operation::Range { start, end }, Outcome::Listed(found)) = (&record.operation, &returned.outcome)
    {
        let mut before: Option<&[u8]> = None;
        for (key, _) in found {
            let in_order = before.is_none_or(|before| before < key.as_slice());
            if !in_order || key < start || key >= end {
                return Err(HistoryError::ListedOutOfRange {
                    index,
                    record: record.to_string(),
                    key: String::from_utf8_lossy(key).into_owned(),
                });
            }
            before = Some(key);
        }
    }
    Ok(())
}

/// Every key of the history, in ascending order: those operations name and
/// those range reads found.
fn keys_of<'history>(records: &[&'history Record]) -> Vec<&'history [u8]> {
    let mut keys: BTreeSet<&[u8]> = BTreeSet::new();
    for record in records {
        keys.extend(record.operation.named_keys());
        if let Some(Returned { outcome: Outcome::Listed(found), .. }) = &record.returned {
            keys.extend(found.iter().map(|(key, _)| key.as_slice()));
        }
    }
    keys.into_iter().collect()
}

/// The keys (by index into the history's sorted keys) `operation` touches.
fn touched(operation: &Operation, keys: &[&[u8]]) -> Vec<usize> {
    let index = |key: &[u8]| keys.binary_search(&key).expect("every named key is among the history's keys");
    match operation {
        Operation::Range { start, end } => {
            let first = keys.partition_point(|key| *key < start.as_slice());
            let past = keys.partition_point(|key| *key < end.as_slice());
            (first..past.max(first)).collect()
        }
        named => named.named_keys().into_iter().map(index).collect(),
    }
}

/// Keys whose operations must be searched together, and those operations
/// in invocation order.
struct Component<'history> {
    /// Indexes into the history's sorted keys, ascending.
    keys: Vec<usize>,
    records: Vec<&'history Record>,
}

/// Groups the keys that some operation touches together (union-find), and
/// each operation with its keys' group. Operations that touch no key (a
/// range with no key of the history inside it, so it found nothing) form
/// one component of their own with no keys.
fn components<'history>(records: &[&'history Record], keys: &[&[u8]]) -> Vec<Component<'history>> {
    fn root(parent: &mut [usize], mut key: usize) -> usize {
        while parent[key] != key {
            parent[key] = parent[parent[key]];
            key = parent[key];
        }
        key
    }
    let touches: Vec<Vec<usize>> = records.iter().map(|record| touched(&record.operation, keys)).collect();
    let mut parent: Vec<usize> = (0..keys.len()).collect();
    for keys_touched in &touches {
        if let Some((&first, rest)) = keys_touched.split_first() {
            for &other in rest {
                let (a, b) = (root(&mut parent, first), root(&mut parent, other));
                parent[a] = b;
            }
        }
    }
    // Components by the root of their keys; `None` for operations on no key.
    let mut by_root: BTreeMap<Option<usize>, Component<'history>> = BTreeMap::new();
    for key in 0..keys.len() {
        let group = root(&mut parent, key);
        by_root
            .entry(Some(group))
            .or_insert_with(|| Component { keys: Vec::new(), records: Vec::new() })
            .keys
            .push(key);
    }
    for (record, keys_touched) in records.iter().zip(&touches) {
        let group = keys_touched.first().map(|&key| root(&mut parent, key));
        by_root
            .entry(group)
            .or_insert_with(|| Component { keys: Vec::new(), records: Vec::new() })
            .records
            .push(record);
    }
    let mut components: Vec<Component<'history>> = by_root.into_values().collect();
    for component in &mut components {
        component.records.sort_by_key(|record| record.invoked);
    }
    components
}

enum SearchVerdict {
    Linearizable,
    Violation { linearized_most: usize, stuck_at: usize },
    GaveUp { steps: u64 },
}

/// A component's keys' values as the search tracks them: by the key's
/// place among the component's keys, an interned value or absent.
type State = Vec<Option<u32>>;

/// One operation of a component with its keys as places in the state and
/// its values interned, so states compare and hash as small numbers. Every
/// operation is a transaction or a read: a put is a transaction with no
/// compare, a cas one with one compare and one write.
enum Step {
    Txn {
        compares: Vec<(usize, Option<u32>)>,
        success: Vec<(usize, Option<u32>)>,
        failure: Vec<(usize, Option<u32>)>,
        /// Which branch ran; `None` when the outcome is unknown.
        succeeded: Option<bool>,
    },
    /// Every key read (a get's one key, or every key of the component in
    /// a range) with the value seen.
    Read(Vec<(usize, Option<u32>)>),
}

impl Step {
    /// The state after this step from `state`, or `None` when the step's
    /// outcome cannot happen in `state`. An unknown transaction takes the
    /// branch the state decides; "never took effect" is covered by leaving
    /// it unlinearized.
    fn apply(&self, state: &[Option<u32>]) -> Option<State> {
        match self {
            Step::Read(seen) => seen.iter().all(|&(key, value)| state[key] == value).then(|| state.to_vec()),
            Step::Txn { compares, success, failure, succeeded } => {
                let holds = compares.iter().all(|&(key, value)| state[key] == value);
                if succeeded.is_some_and(|succeeded| succeeded != holds) {
                    return None;
                }
                let mut after = state.to_vec();
                for &(key, value) in if holds { success } else { failure } {
                    after[key] = value;
                }
                Some(after)
            }
        }
    }
}

/// Makes the search's steps from a component's `records`: `component_keys`
/// are the component's keys as indexes into the history's sorted `keys`.
fn steps<'history>(records: &[&'history Record], component_keys: &[usize], keys: &[&[u8]]) -> Vec<Step> {
    let mut values: HashMap<&'history [u8], u32> = HashMap::new();
    let mut intern = |value: Option<&'history [u8]>| -> Option<u32> {
        let next = u32::try_from(values.len()).expect("fewer than 2^32 values per component");
        value.map(|value| *values.entry(value).or_insert(next))
    };
    let place = |key: &[u8]| -> usize {
        component_keys
            .iter()
            .position(|&index| keys[index] == key)
            .expect("an operation's keys are in its component")
    };
    records
        .iter()
        .map(|&record| {
            let outcome = record.returned.as_ref().map(|returned| &returned.outcome);
            match (&record.operation, outcome) {
                (Operation::Put { key, value }, _) => Step::Txn {
                    compares: Vec::new(),
                    success: vec![(place(key), intern(Some(value)))],
                    failure: Vec::new(),
                    succeeded: None,
                },
                (Operation::Delete { key }, _) => Step::Txn {
                    compares: Vec::new(),
                    success: vec![(place(key), None)],
                    failure: Vec::new(),
                    succeeded: None,
                },
                (Operation::Cas { key, expected, new }, outcome) => Step::Txn {
                    compares: vec![(place(key), intern(expected.as_deref()))],
                    success: vec![(place(key), intern(Some(new)))],
                    failure: Vec::new(),
                    succeeded: match outcome {
                        Some(Outcome::Swapped(swapped)) => Some(*swapped),
                        _ => None,
                    },
                },
                (Operation::Txn { compares, success, failure }, outcome) => {
                    let mut writes = |writes: &'history [Write]| -> Vec<(usize, Option<u32>)> {
                        writes.iter().map(|write| (place(write.key()), intern(write.value()))).collect()
                    };
                    let (success, failure) = (writes(success), writes(failure));
                    Step::Txn {
                        compares: compares
                            .iter()
                            .map(|compare| (place(&compare.key), intern(compare.value.as_deref())))
                            .collect(),
                        success,
                        failure,
                        succeeded: match outcome {
                            Some(Outcome::Branch(succeeded)) => Some(*succeeded),
                            _ => None,
                        },
                    }
                }
                (Operation::Get { key }, Some(Outcome::Read(seen))) => {
                    Step::Read(vec![(place(key), intern(seen.as_deref()))])
                }
                (Operation::Range { start, end }, Some(Outcome::Listed(found))) => Step::Read(
                    component_keys
                        .iter()
                        .enumerate()
                        .filter(|(_, &index)| start.as_slice() <= keys[index] && keys[index] < end.as_slice())
                        .map(|(place, &index)| {
                            let seen = found
                                .binary_search_by(|(key, _)| key.as_slice().cmp(keys[index]))
                                .ok()
                                .map(|at| found[at].1.as_slice());
                            (place, intern(seen))
                        })
                        .collect(),
                ),
                (Operation::Get { .. } | Operation::Range { .. }, _) => {
                    unreachable!("validated, and reads with unknown outcome are dropped")
                }
            }
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

/// Wing and Gong's search with Lowe's memoization over one component's
/// records and their steps, from the state where all `width` keys are
/// absent.
fn search(records: &[&Record], steps_of: &[Step], width: usize, steps_max: u64) -> SearchVerdict {
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
        return SearchVerdict::Linearizable;
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

    let mut state: State = vec![None; width];
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
            return SearchVerdict::GaveUp { steps: steps_max };
        }
        if entry == NONE {
            return SearchVerdict::Linearizable;
        }
        let event = events[entry];
        if event.is_call {
            if let Some(after) = steps_of[event.operation].apply(&state) {
                let mut with = linearized.clone();
                with.set(event.operation);
                if seen.insert((with.clone(), after.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, after)));
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
            return SearchVerdict::Linearizable;
        } else {
            // An operation returned and none of the order tried so far can
            // place it: undo the latest choice and try the next one.
            let Some((call, before)) = stack.pop() else {
                let stuck_at = (0..count)
                    .filter(|index| !deepest.contains(*index))
                    .filter_map(|index| records[index].returned.as_ref().map(|returned| (returned.at, index)))
                    .min()
                    .map_or(0, |(_, index)| index);
                return SearchVerdict::Violation { linearized_most, stuck_at };
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
        match self {
            Operation::Put { key, value } => write!(formatter, "put({}, {})", text(key), text(value)),
            Operation::Delete { key } => write!(formatter, "delete({})", text(key)),
            Operation::Get { key } => write!(formatter, "get({})", text(key)),
            Operation::Cas { key, expected, new } => {
                write!(formatter, "cas({}, {} -> {})", text(key), value_text(expected.as_deref()), text(new))
            }
            Operation::Txn { compares, success, failure } => {
                let compares: Vec<String> = compares
                    .iter()
                    .map(|compare| {
                        format!("{} = {}", text(&compare.key), value_text(compare.value.as_deref()))
                    })
                    .collect();
                let writes = |writes: &[Write]| -> String {
                    let shown: Vec<String> = writes.iter().map(Write::to_string).collect();
                    shown.join(", ")
                };
                write!(
                    formatter,
                    "txn(if {} then {} else {})",
                    compares.join(" and "),
                    writes(success),
                    writes(failure)
                )
            }
            Operation::Range { start, end } => write!(formatter, "range[{}, {})", text(start), text(end)),
        }
    }
}

impl fmt::Display for Write {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Write::Put { key, value } => write!(formatter, "put({}, {})", text(key), text(value)),
            Write::Delete { key } => write!(formatter, "delete({})", text(key)),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn value_text(value: Option<&[u8]>) -> String {
    value.map_or("absent".to_string(), text)
}

impl fmt::Display for Record {
    /// `client 2 [1500, 1730] get(k) = v3`, or `[1500, never] ... = unknown`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let returned = self.returned.as_ref().map_or("never".to_string(), |returned| returned.at.to_string());
        write!(formatter, "client {} [{}, {returned}] {} = ", self.client, self.invoked, self.operation)?;
        match self.returned.as_ref().map(|returned| &returned.outcome) {
            None => write!(formatter, "unknown"),
            Some(Outcome::Written) => write!(formatter, "ok"),
            Some(Outcome::Read(seen)) => write!(formatter, "{}", value_text(seen.as_deref())),
            Some(Outcome::Swapped(true)) => write!(formatter, "swapped"),
            Some(Outcome::Swapped(false)) => write!(formatter, "not swapped"),
            Some(Outcome::Branch(true)) => write!(formatter, "then"),
            Some(Outcome::Branch(false)) => write!(formatter, "else"),
            Some(Outcome::Listed(found)) => {
                let shown: Vec<String> =
                    found.iter().map(|(key, value)| format!("{}: {}", text(key), text(value))).collect();
                write!(formatter, "{{{}}}", shown.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests;
