//! Who is asking, and whether they may: the caller a front end hands the
//! request handle, the users and roles every shard of this member checks
//! requests against, and the checks themselves.
//!
//! Group 0's store holds the users and roles (`kv::auth`). Whenever group 0
//! applies a change on this member (or installs a snapshot), it publishes a
//! new [`AuthView`] in the member's [`AuthCell`]; each shard keeps the view
//! it last read and reads the cell again only when its version moved, so a
//! check takes no lock on the request path and every shard of the member
//! sees a change as soon as group 0 applied it here. Requests are checked
//! on the shard that serves them, right before they are proposed or read:
//! reads, writes, every key a transaction touches, a watch's whole range,
//! leases; compaction, membership, backups and the management of users
//! and roles need the root role. With authentication disabled every
//! request passes, as in etcd.
//!
//! Passwords and tokens are in `super::credentials`. This module never
//! proposes anything and never blocks a reactor.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::kv::auth::{Access, AuthError, AuthState, Need};
use crate::kv::command::Command;
use crate::kv::types::{RequestOp, TxnRequest};

/// Who a request comes from, as its front end established it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Caller {
    /// No user: fine while authentication is disabled, refused otherwise.
    #[default]
    Anonymous,
    /// A user proven by a session token, or named by the common name of the
    /// connection's verified client certificate.
    User(Arc<str>),
}

impl Caller {
    pub fn user(name: &str) -> Caller {
        Caller::User(Arc::from(name))
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::User(name) => Some(name),
        }
    }
}

/// The users and roles as one shard checks requests against them.
#[derive(Debug, Default)]
pub struct AuthView {
    pub state: AuthState,
    /// Every user's grants, merged once per change.
    access: HashMap<String, Access>,
}

impl AuthView {
    pub fn new(state: AuthState) -> AuthView {
        let access =
            state.users().keys().filter_map(|user| Some((user.clone(), state.access(user)?))).collect();
        AuthView { state, access }
    }

    pub fn enabled(&self) -> bool {
        self.state.enabled()
    }

    /// What `caller` may reach; `None` while authentication is disabled
    /// (everything).
    pub fn access_of(&self, caller: &Caller) -> Result<Option<&Access>, AuthError> {
        if !self.enabled() {
            return Ok(None);
        }
        match caller {
            Caller::Anonymous => Err(AuthError::Unauthenticated),
            Caller::User(name) => match self.access.get(&**name) {
                Some(access) => Ok(Some(access)),
                // A user deleted after its token was made, or a certificate
                // naming no user.
                None => Err(AuthError::InvalidCredentials(name.to_string())),
            },
        }
    }

    /// Whether `caller` may do what `needs` lists.
    pub fn authorize(&self, caller: &Caller, needs: &[Need]) -> Result<(), AuthError> {
        let Some(access) = self.access_of(caller)? else { return Ok(()) };
        for need in needs {
            let allowed = match need {
                Need::Read { key, range_end } => access.may_read(key, range_end),
                Need::Write { key, range_end } => access.may_write(key, range_end),
                Need::Root { .. } => access.root,
            };
            if !allowed {
                let user = caller.name().unwrap_or_default().to_string();
                return Err(AuthError::PermissionDenied { user, need: need.clone() });
            }
        }
        Ok(())
    }

    /// Whether `caller` is a user (or authentication is off): what leases
    /// and other requests without keys need.
    pub fn authenticate(&self, caller: &Caller) -> Result<(), AuthError> {
        self.access_of(caller).map(|_| ())
    }
}

/// Argon2 hashes or checks running at once on one member, each on a
/// blocking thread with about 19 MiB of its own (see `super::credentials`).
pub const PASSWORD_CHECKS_MAX: usize = 2;

/// The users and roles of one member, as group 0 last applied them here.
/// Every call of every shard reads it, and group 0's apply replaces it
/// rarely: an `ArcSwap`, whose read is one atomic load and a reference
/// count, with no lock a writer could hold up readers with.
#[derive(Debug)]
pub struct AuthCell {
    view: ArcSwap<AuthView>,
    /// Password checks running at once on this member (see `credentials`).
    pub(super) password_checks: tokio::sync::Semaphore,
    /// How long a session token is good for (`auth.token_ttl_seconds`).
    pub token_ttl: std::time::Duration,
}

impl Default for AuthCell {
    fn default() -> Self {
        AuthCell::new(std::time::Duration::from_secs(300))
    }
}

impl AuthCell {
    pub fn new(token_ttl: std::time::Duration) -> AuthCell {
        AuthCell {
            view: ArcSwap::from_pointee(AuthView::default()),
            password_checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS_MAX),
            token_ttl,
        }
    }

    /// Makes `state` what every shard of this member checks against.
    pub fn publish(&self, state: &AuthState) {
        self.view.store(Arc::new(AuthView::new(state.clone())));
    }

    /// Runs `work` on the current view.
    pub fn with<R>(&self, work: impl FnOnce(&AuthView) -> R) -> R {
        work(&self.view.load())
    }

    pub fn authorize(&self, caller: &Caller, needs: impl FnOnce() -> Vec<Need>) -> Result<(), AuthError> {
        self.with(|view| if view.enabled() { view.authorize(caller, &needs()) } else { Ok(()) })
    }

    pub fn authenticate(&self, caller: &Caller) -> Result<(), AuthError> {
        self.with(|view| view.authenticate(caller))
    }

    /// What root-only `action` needs of `caller`.
    pub fn require_root(&self, caller: &Caller, action: &str) -> Result<(), AuthError> {
        self.authorize(caller, || vec![Need::Root { action: action.to_string() }])
    }
}

/// What a command asks of its caller: each key or range it reads or
/// writes (a put or delete that returns the previous values also reads).
pub fn command_needs(command: &Command) -> Vec<Need> {
    let mut needs = Vec::new();
    match command {
        Command::Put(put) => put_needs(&put.key, put.prev_kv, &mut needs),
        Command::DeleteRange(delete) => {
            delete_needs(&delete.key, &delete.range_end, delete.prev_kv, &mut needs)
        }
        Command::Txn(txn) => txn_needs(txn, &mut needs),
        Command::Compact { .. } => needs.push(Need::Root { action: "compaction".into() }),
        // Leases are checked by their handle (`super::lease`); auth changes
        // need root (`super::credentials`).
        Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => {}
        Command::Auth(change) => needs.push(Need::Root { action: change.kind().into() }),
    }
    needs
}

fn put_needs(key: &[u8], prev_kv: bool, needs: &mut Vec<Need>) {
    needs.push(Need::Write { key: key.to_vec(), range_end: Vec::new() });
    if prev_kv {
        needs.push(Need::Read { key: key.to_vec(), range_end: Vec::new() });
    }
}

fn delete_needs(key: &[u8], range_end: &[u8], prev_kv: bool, needs: &mut Vec<Need>) {
    needs.push(Need::Write { key: key.to_vec(), range_end: range_end.to_vec() });
    if prev_kv {
        needs.push(Need::Read { key: key.to_vec(), range_end: range_end.to_vec() });
    }
}

/// Every key of both branches and every compare, nested transactions
/// included: what runs depends on the compares, so both branches count.
pub fn txn_needs(txn: &TxnRequest, needs: &mut Vec<Need>) {
    for compare in &txn.compares {
        needs.push(Need::Read { key: compare.key.clone(), range_end: compare.range_end.clone() });
    }
    for operation in txn.success.iter().chain(&txn.failure) {
        match operation {
            RequestOp::Range(range) => {
                needs.push(Need::Read { key: range.key.clone(), range_end: range.range_end.clone() })
            }
            RequestOp::Put(put) => put_needs(&put.key, put.prev_kv, needs),
            RequestOp::DeleteRange(delete) => {
                delete_needs(&delete.key, &delete.range_end, delete.prev_kv, needs)
            }
            RequestOp::Txn(nested) => txn_needs(nested, needs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::auth::{AuthChange, Permission, PermissionKind, ROOT, TOKEN_KEY_BYTES};
    use crate::kv::types::{Compare, CompareResult, CompareTarget, PutRequest, RangeRequest};

    fn enabled_state() -> AuthState {
        let mut state = AuthState::default();
        for change in [
            AuthChange::UserAdd { name: ROOT.into(), password_hash: None },
            AuthChange::RoleAdd { name: ROOT.into() },
            AuthChange::UserGrantRole { name: ROOT.into(), role: ROOT.into() },
            AuthChange::UserAdd { name: "writer".into(), password_hash: None },
            AuthChange::RoleAdd { name: "a".into() },
            AuthChange::RoleGrantPermission {
                name: "a".into(),
                permission: Permission {
                    kind: PermissionKind::ReadWrite,
                    key: b"/a/".to_vec(),
                    range_end: b"/a0".to_vec(),
                },
            },
            AuthChange::UserGrantRole { name: "writer".into(), role: "a".into() },
            AuthChange::Enable { token_key: vec![1; TOKEN_KEY_BYTES] },
        ] {
            state.apply(&change).unwrap();
        }
        state
    }

    fn put(key: &str) -> Command {
        Command::Put(PutRequest { key: key.into(), ..PutRequest::default() })
    }

    #[test]
    fn a_published_change_reaches_the_next_check() {
        let cell = AuthCell::default();
        let writer = Caller::user("writer");
        assert_eq!(cell.authorize(&Caller::Anonymous, || command_needs(&put("/b/x"))), Ok(()), "disabled");
        cell.publish(&enabled_state());
        assert_eq!(cell.authorize(&writer, || command_needs(&put("/a/x"))), Ok(()));
        let denied = cell.authorize(&writer, || command_needs(&put("/b/x"))).unwrap_err();
        assert!(matches!(denied, AuthError::PermissionDenied { .. }), "{denied}");
        assert!(denied.to_string().contains("write permission on key \"/b/x\""), "{denied}");
        assert_eq!(
            cell.authorize(&Caller::Anonymous, || command_needs(&put("/a/x"))),
            Err(AuthError::Unauthenticated)
        );
        assert!(matches!(cell.require_root(&writer, "compaction"), Err(AuthError::PermissionDenied { .. })));
        assert_eq!(cell.require_root(&Caller::user(ROOT), "compaction"), Ok(()));
        assert_eq!(
            cell.authenticate(&Caller::user("gone")),
            Err(AuthError::InvalidCredentials("gone".into()))
        );
    }

    #[test]
    fn a_txn_needs_every_key_of_both_branches_and_its_compares() {
        let cell = AuthCell::default();
        cell.publish(&enabled_state());
        let writer = Caller::user("writer");
        let txn = |compare_key: &str, failure_key: &str| {
            Command::Txn(TxnRequest {
                compares: vec![Compare {
                    key: compare_key.into(),
                    range_end: Vec::new(),
                    target: CompareTarget::Version(0),
                    result: CompareResult::Equal,
                }],
                success: vec![RequestOp::Put(PutRequest { key: b"/a/1".to_vec(), ..PutRequest::default() })],
                failure: vec![RequestOp::Range(RangeRequest {
                    key: failure_key.into(),
                    ..RangeRequest::default()
                })],
            })
        };
        assert_eq!(cell.authorize(&writer, || command_needs(&txn("/a/1", "/a/2"))), Ok(()));
        assert!(
            cell.authorize(&writer, || command_needs(&txn("/b/1", "/a/2"))).is_err(),
            "a compare outside"
        );
        assert!(cell.authorize(&writer, || command_needs(&txn("/a/1", "/b/2"))).is_err(), "the other branch");
    }
}
