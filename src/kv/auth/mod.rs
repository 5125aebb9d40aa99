//! Who may do what, as the store replicates it: users, roles, and the
//! permissions roles grant on keys and key ranges, in etcd's model. Group
//! 0's store holds the one copy of the cluster (every other group's stays
//! empty); changes arrive as commands in its log ([`AuthChange`]) and the
//! whole state travels in its snapshots and backups.
//!
//! A user has roles, and a password hash or none (a user named by its
//! client certificate's common name needs none). A role grants read,
//! write or both on a key or a half-open range (etcd's convention: an
//! empty range end is the key alone, a range end of one zero byte is every
//! key from the key on). The role `root` may do everything, and
//! authentication can only be enabled while the user `root` has it.
//!
//! It owns the rules of a change (which changes are refused and why) and
//! the question "does this user's union of grants cover this range", and
//! nothing else: passwords are hashed, tokens signed and requests checked
//! by the shard, which draws the random numbers this layer must never draw.
//! Every change that applies raises [`AuthState::revision`].

use std::collections::{BTreeMap, BTreeSet};

use super::types::ShowKey;

mod access;
mod codec;
#[cfg(test)]
mod tests;

pub use access::Access;
pub(crate) use codec::{
    read_change, read_error, read_state, state_bytes, write_change, write_error, write_state,
};

/// The group whose store holds the cluster's users and roles.
pub const AUTH_GROUP: u32 = 0;
/// The role that may do everything, and the user that must hold it before
/// authentication is enabled.
pub const ROOT: &str = "root";
/// Longest user or role name, in bytes.
pub const NAME_BYTES_MAX: usize = 128;
/// Longest stored password hash (a PHC string is about 100 bytes).
pub const PASSWORD_HASH_BYTES_MAX: usize = 512;
/// Longest key a permission names (the store's own key limit is lower).
pub const PERMISSION_KEY_BYTES_MAX: usize = 64 << 10;
pub const USERS_MAX: usize = 10_000;
pub const ROLES_MAX: usize = 10_000;
pub const ROLES_PER_USER_MAX: usize = 256;
pub const PERMISSIONS_PER_ROLE_MAX: usize = 1_000;
/// The token key's length (HMAC-SHA256 keys of 32 bytes).
pub const TOKEN_KEY_BYTES: usize = 32;

/// What a permission lets its holders do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PermissionKind {
    Read,
    Write,
    ReadWrite,
}

impl PermissionKind {
    pub fn reads(self) -> bool {
        matches!(self, PermissionKind::Read | PermissionKind::ReadWrite)
    }

    pub fn writes(self) -> bool {
        matches!(self, PermissionKind::Write | PermissionKind::ReadWrite)
    }

    /// As etcdctl spells it.
    pub fn name(self) -> &'static str {
        match self {
            PermissionKind::Read => "read",
            PermissionKind::Write => "write",
            PermissionKind::ReadWrite => "readwrite",
        }
    }

    pub fn parse(text: &str) -> Option<PermissionKind> {
        match text.to_ascii_lowercase().as_str() {
            "read" => Some(PermissionKind::Read),
            "write" => Some(PermissionKind::Write),
            "readwrite" => Some(PermissionKind::ReadWrite),
            _ => None,
        }
    }
}

/// A grant of `kind` on `key` (with `range_end`, etcd's range convention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub kind: PermissionKind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// The password's hash as a PHC string; `None`: the user cannot log in
    /// with a password (a certificate names it).
    pub password_hash: Option<String>,
    pub roles: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// In (key, range end) order; one per range.
    pub permissions: Vec<Permission>,
}

/// One change to the auth state, as group 0's log carries it. Hashes and
/// keys come made: applying a change draws no random number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthChange {
    /// Turns checking on, signing tokens with `token_key` from now on.
    Enable {
        token_key: Vec<u8>,
    },
    Disable,
    UserAdd {
        name: String,
        password_hash: Option<String>,
    },
    UserDelete {
        name: String,
    },
    UserPassword {
        name: String,
        password_hash: Option<String>,
    },
    UserGrantRole {
        name: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        name: String,
        permission: Permission,
    },
    RoleRevokePermission {
        name: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

impl AuthChange {
    /// What the change is, as etcdctl's command names it (for logs, which
    /// never show a hash).
    pub fn kind(&self) -> &'static str {
        match self {
            AuthChange::Enable { .. } => "auth enable",
            AuthChange::Disable => "auth disable",
            AuthChange::UserAdd { .. } => "user add",
            AuthChange::UserDelete { .. } => "user delete",
            AuthChange::UserPassword { .. } => "user passwd",
            AuthChange::UserGrantRole { .. } => "user grant-role",
            AuthChange::UserRevokeRole { .. } => "user revoke-role",
            AuthChange::RoleAdd { .. } => "role add",
            AuthChange::RoleDelete { .. } => "role delete",
            AuthChange::RoleGrantPermission { .. } => "role grant-permission",
            AuthChange::RoleRevokePermission { .. } => "role revoke-permission",
        }
    }
}

/// What a request needed that its caller lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    Read {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    Write {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    /// The root role, for `action` (compaction, membership, backups, auth).
    Root {
        action: String,
    },
}

impl std::fmt::Display for Need {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let range = |key: &[u8], range_end: &[u8]| match range_end {
            [] => format!("key {}", ShowKey(key)),
            [0] => format!("every key from {} on", ShowKey(key)),
            end => format!("range [{}, {})", ShowKey(key), ShowKey(end)),
        };
        match self {
            Need::Read { key, range_end } => {
                write!(formatter, "read permission on {}", range(key, range_end))
            }
            Need::Write { key, range_end } => {
                write!(formatter, "write permission on {}", range(key, range_end))
            }
            Need::Root { action } => write!(formatter, "the root role ({action})"),
        }
    }
}

/// Why a change was refused, or why a request may not run. Plain data: it
/// crosses shards and reaches clients typed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("user {0:?} already exists; pick another name, or delete it first")]
    UserExists(String),
    #[error("user {0:?} does not exist; add it with `nvkv user add {0}`")]
    UserNotFound(String),
    #[error("role {0:?} already exists; pick another name, or delete it first")]
    RoleExists(String),
    #[error("role {0:?} does not exist; add it with `nvkv role add {0}`")]
    RoleNotFound(String),
    #[error("user {user:?} does not have role {role:?}")]
    RoleNotGranted { user: String, role: String },
    #[error("role {role:?} has no permission on {}; `nvkv role get {role}` lists what it has", show_range(.key, .range_end))]
    PermissionNotGranted { role: String, key: Vec<u8>, range_end: Vec<u8> },
    #[error("authentication needs the user root first: `nvkv user add root`")]
    RootUserMissing,
    #[error(
        "authentication needs the user root to have the role root: `nvkv role add root`, \
         `nvkv user grant-role root root`"
    )]
    RootRoleMissing,
    #[error("{0} while authentication is enabled would lock root out; disable authentication first")]
    RootProtected(String),
    #[error("{what} {name:?} is not a valid name: {reason}")]
    InvalidName { what: &'static str, name: String, reason: String },
    #[error("{what}: at most {max}; delete some first")]
    TooMany { what: &'static str, max: usize },
    #[error("invalid auth request: {0}")]
    Invalid(String),
    #[error(
        "authentication is enabled and this request names no user: pass --user NAME:PASSWORD (etcd clients: \
         --user), or connect with a client certificate whose common name is a user"
    )]
    Unauthenticated,
    #[error("user {0:?} and that password do not match a user of this store; check both")]
    InvalidCredentials(String),
    #[error("the session token is not valid ({0}); authenticate again")]
    InvalidToken(String),
    #[error(
        "user {user:?} may not do this: it needs {need}, which none of its roles grants; a root user can grant \
         it (`nvkv role grant-permission ROLE ...`, `nvkv user grant-role {user} ROLE`)"
    )]
    PermissionDenied { user: String, need: Need },
}

fn show_range(key: &[u8], range_end: &[u8]) -> String {
    match range_end {
        [] => format!("key {}", ShowKey(key)),
        end => format!("range [{}, {})", ShowKey(key), ShowKey(end)),
    }
}

/// Users, roles and whether they are checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Signs session tokens; replaced at every enable, so tokens of an
    /// earlier enabled period no longer verify.
    token_key: Vec<u8>,
}

fn check_name(what: &'static str, name: &str) -> Result<(), AuthError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > NAME_BYTES_MAX {
        "it is longer than 128 bytes"
    } else if name.chars().any(|c| c.is_control() || c == ':') {
        "it holds a control character or ':'"
    } else {
        return Ok(());
    };
    Err(AuthError::InvalidName { what, name: name.to_string(), reason: reason.to_string() })
}

fn check_hash(hash: &Option<String>) -> Result<(), AuthError> {
    match hash {
        Some(hash) if hash.is_empty() || hash.len() > PASSWORD_HASH_BYTES_MAX => Err(AuthError::Invalid(
            format!("a password hash of {} bytes (1 to {PASSWORD_HASH_BYTES_MAX})", hash.len()),
        )),
        _ => Ok(()),
    }
}

/// Checks a permission's range as a change carries it.
pub fn check_permission_range(key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
    if key.is_empty() {
        return Err(AuthError::Invalid("a permission needs a key (the start of its range)".into()));
    }
    if key.len() > PERMISSION_KEY_BYTES_MAX || range_end.len() > PERMISSION_KEY_BYTES_MAX {
        return Err(AuthError::Invalid(format!(
            "a permission's key and range end are at most {PERMISSION_KEY_BYTES_MAX} bytes"
        )));
    }
    if !range_end.is_empty() && range_end != [0] && range_end <= key {
        return Err(AuthError::Invalid(format!(
            "the range end {} is not after the key {}; give a larger end, or --prefix",
            ShowKey(range_end),
            ShowKey(key)
        )));
    }
    Ok(())
}

impl AuthState {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Raised by every change that applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    pub fn roles(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }

    pub fn token_key(&self) -> &[u8] {
        &self.token_key
    }

    /// Whether there is nothing to carry (a snapshot leaves the section out).
    pub fn is_empty(&self) -> bool {
        *self == AuthState::default()
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, AuthError> {
        self.users.get_mut(name).ok_or_else(|| AuthError::UserNotFound(name.to_string()))
    }

    fn role_mut(&mut self, name: &str) -> Result<&mut Role, AuthError> {
        self.roles.get_mut(name).ok_or_else(|| AuthError::RoleNotFound(name.to_string()))
    }

    /// Applies `change`, or refuses it and changes nothing; every replica
    /// decides alike.
    pub fn apply(&mut self, change: &AuthChange) -> Result<u64, AuthError> {
        match change {
            AuthChange::Enable { token_key } => {
                if token_key.len() != TOKEN_KEY_BYTES {
                    return Err(AuthError::Invalid(format!("a token key of {} bytes", token_key.len())));
                }
                match self.users.get(ROOT) {
                    None => return Err(AuthError::RootUserMissing),
                    Some(root) if !root.roles.contains(ROOT) => return Err(AuthError::RootRoleMissing),
                    Some(_) => {}
                }
                self.enabled = true;
                self.token_key = token_key.clone();
            }
            AuthChange::Disable => self.enabled = false,
            AuthChange::UserAdd { name, password_hash } => {
                check_name("user", name)?;
                check_hash(password_hash)?;
                if self.users.contains_key(name) {
                    return Err(AuthError::UserExists(name.clone()));
                }
                if self.users.len() >= USERS_MAX {
                    return Err(AuthError::TooMany { what: "users", max: USERS_MAX });
                }
                self.users.insert(
                    name.clone(),
                    User { password_hash: password_hash.clone(), roles: BTreeSet::new() },
                );
            }
            AuthChange::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::RootProtected("deleting the user root".into()));
                }
                self.users.remove(name).ok_or_else(|| AuthError::UserNotFound(name.clone()))?;
            }
            AuthChange::UserPassword { name, password_hash } => {
                check_hash(password_hash)?;
                self.user_mut(name)?.password_hash = password_hash.clone();
            }
            AuthChange::UserGrantRole { name, role } => {
                if !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound(role.clone()));
                }
                let user = self.user_mut(name)?;
                if !user.roles.contains(role) && user.roles.len() >= ROLES_PER_USER_MAX {
                    return Err(AuthError::TooMany { what: "roles of one user", max: ROLES_PER_USER_MAX });
                }
                user.roles.insert(role.clone());
            }
            AuthChange::UserRevokeRole { name, role } => {
                if self.enabled && name == ROOT && role == ROOT {
                    return Err(AuthError::RootProtected("revoking the role root from the user root".into()));
                }
                if !self.user_mut(name)?.roles.remove(role) {
                    return Err(AuthError::RoleNotGranted { user: name.clone(), role: role.clone() });
                }
            }
            AuthChange::RoleAdd { name } => {
                check_name("role", name)?;
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleExists(name.clone()));
                }
                if self.roles.len() >= ROLES_MAX {
                    return Err(AuthError::TooMany { what: "roles", max: ROLES_MAX });
                }
                self.roles.insert(name.clone(), Role::default());
            }
            AuthChange::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::RootProtected("deleting the role root".into()));
                }
                self.roles.remove(name).ok_or_else(|| AuthError::RoleNotFound(name.clone()))?;
                for user in self.users.values_mut() {
                    user.roles.remove(name);
                }
            }
            AuthChange::RoleGrantPermission { name, permission } => {
                check_permission_range(&permission.key, &permission.range_end)?;
                let role = self.role_mut(name)?;
                let same =
                    |held: &Permission| held.key == permission.key && held.range_end == permission.range_end;
                match role.permissions.iter().position(same) {
                    Some(held) => role.permissions[held].kind = permission.kind,
                    None if role.permissions.len() >= PERMISSIONS_PER_ROLE_MAX => {
                        return Err(AuthError::TooMany {
                            what: "permissions of one role",
                            max: PERMISSIONS_PER_ROLE_MAX,
                        })
                    }
                    None => {
                        role.permissions.push(permission.clone());
                        role.permissions.sort_by(|left, right| {
                            (&left.key, &left.range_end).cmp(&(&right.key, &right.range_end))
                        });
                    }
                }
            }
            AuthChange::RoleRevokePermission { name, key, range_end } => {
                let role = self.role_mut(name)?;
                let before = role.permissions.len();
                role.permissions.retain(|held| !(held.key == *key && held.range_end == *range_end));
                if role.permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted {
                        role: name.clone(),
                        key: key.clone(),
                        range_end: range_end.clone(),
                    });
                }
            }
        }
        self.revision += 1;
        Ok(self.revision)
    }
}
