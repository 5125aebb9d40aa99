//! What one user may reach: the union of its roles' grants, merged into
//! sorted disjoint key intervals, and the check that a request's range
//! lies within them. Reads the users and roles of [`AuthState`]; changes
//! nothing.

use super::{AuthState, ROOT};

impl AuthState {
    /// What `user` may reach, its grants merged; `None` for no such user.
    pub fn access(&self, user: &str) -> Option<Access> {
        let found = self.users.get(user)?;
        let mut access = Access { root: found.roles.contains(ROOT), read: Vec::new(), write: Vec::new() };
        for permission in
            found.roles.iter().filter_map(|role| self.roles.get(role)).flat_map(|role| &role.permissions)
        {
            let interval = Interval::of(&permission.key, &permission.range_end);
            if permission.kind.reads() {
                access.read.push(interval.clone());
            }
            if permission.kind.writes() {
                access.write.push(interval);
            }
        }
        access.read = merge(access.read);
        access.write = merge(access.write);
        Some(access)
    }
}

/// A half-open key interval; `end` `None` runs to the last key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    /// etcd's range convention as an interval.
    fn of(key: &[u8], range_end: &[u8]) -> Interval {
        match range_end {
            [] => {
                let mut end = key.to_vec();
                end.push(0);
                Interval { start: key.to_vec(), end: Some(end) }
            }
            [0] => Interval { start: key.to_vec(), end: None },
            end => Interval { start: key.to_vec(), end: Some(end.to_vec()) },
        }
    }

    fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| *end <= self.start)
    }
}

/// Sorted, disjoint, with touching intervals joined: one interval of the
/// result covers any range the union covers.
fn merge(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.retain(|interval| !interval.is_empty());
    intervals.sort();
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for interval in intervals {
        match merged.last_mut() {
            Some(last) if last.end.as_ref().is_none_or(|end| *end >= interval.start) => {
                last.end = match (last.end.take(), interval.end) {
                    (None, _) | (_, None) => None,
                    (Some(left), Some(right)) => Some(left.max(right)),
                };
            }
            _ => merged.push(interval),
        }
    }
    merged
}

/// What one user may reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub root: bool,
    read: Vec<Interval>,
    write: Vec<Interval>,
}

impl Access {
    /// Whether the user may read every key of `key` .. `range_end`.
    pub fn may_read(&self, key: &[u8], range_end: &[u8]) -> bool {
        self.root || covers(&self.read, &Interval::of(key, range_end))
    }

    pub fn may_write(&self, key: &[u8], range_end: &[u8]) -> bool {
        self.root || covers(&self.write, &Interval::of(key, range_end))
    }
}

fn covers(merged: &[Interval], wanted: &Interval) -> bool {
    if wanted.is_empty() {
        // A range that selects no key reads and writes nothing.
        return true;
    }
    // The last interval starting at or before the wanted start.
    let position = merged.partition_point(|interval| interval.start <= wanted.start);
    let Some(holder) = position.checked_sub(1).map(|at| &merged[at]) else { return false };
    match (&holder.end, &wanted.end) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(end), Some(wanted_end)) => wanted_end <= end,
    }
}
