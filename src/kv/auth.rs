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

use super::codec::{Malformed, Reader, Writer};
use super::types::ShowKey;

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

// ---- Encodings (layouts in `command` and `snapshot`) ----

const CHANGE_ENABLE: u8 = 1;
const CHANGE_DISABLE: u8 = 2;
const CHANGE_USER_ADD: u8 = 3;
const CHANGE_USER_DELETE: u8 = 4;
const CHANGE_USER_PASSWORD: u8 = 5;
const CHANGE_USER_GRANT_ROLE: u8 = 6;
const CHANGE_USER_REVOKE_ROLE: u8 = 7;
const CHANGE_ROLE_ADD: u8 = 8;
const CHANGE_ROLE_DELETE: u8 = 9;
const CHANGE_ROLE_GRANT: u8 = 10;
const CHANGE_ROLE_REVOKE: u8 = 11;

fn write_text(writer: &mut Writer, text: &str) {
    writer.blob(text.as_bytes());
}

fn read_text(reader: &mut Reader, what: &str) -> Result<String, Malformed> {
    let bytes = reader.blob(what)?;
    String::from_utf8(bytes).map_err(|_| reader.malformed(format!("{what} is not UTF-8")))
}

fn write_hash(writer: &mut Writer, hash: &Option<String>) {
    writer.bool(hash.is_some());
    if let Some(hash) = hash {
        write_text(writer, hash);
    }
}

fn read_hash(reader: &mut Reader) -> Result<Option<String>, Malformed> {
    Ok(if reader.bool("the password flag")? { Some(read_text(reader, "a password hash")?) } else { None })
}

fn kind_code(kind: PermissionKind) -> u8 {
    match kind {
        PermissionKind::Read => 0,
        PermissionKind::Write => 1,
        PermissionKind::ReadWrite => 2,
    }
}

fn read_kind(reader: &mut Reader) -> Result<PermissionKind, Malformed> {
    match reader.u8("a permission kind")? {
        0 => Ok(PermissionKind::Read),
        1 => Ok(PermissionKind::Write),
        2 => Ok(PermissionKind::ReadWrite),
        other => Err(reader.malformed(format!("permission kind {other} is not 0 to 2"))),
    }
}

fn write_permission(writer: &mut Writer, permission: &Permission) {
    writer.u8(kind_code(permission.kind));
    writer.blob(&permission.key);
    writer.blob(&permission.range_end);
}

fn read_permission(reader: &mut Reader) -> Result<Permission, Malformed> {
    Ok(Permission {
        kind: read_kind(reader)?,
        key: reader.blob("a key")?,
        range_end: reader.blob("a range end")?,
    })
}

/// `change` as a log command's body: a code, then its fields.
pub(crate) fn write_change(writer: &mut Writer, change: &AuthChange) {
    match change {
        AuthChange::Enable { token_key } => {
            writer.u8(CHANGE_ENABLE);
            writer.blob(token_key);
        }
        AuthChange::Disable => writer.u8(CHANGE_DISABLE),
        AuthChange::UserAdd { name, password_hash } => {
            writer.u8(CHANGE_USER_ADD);
            write_text(writer, name);
            write_hash(writer, password_hash);
        }
        AuthChange::UserDelete { name } => {
            writer.u8(CHANGE_USER_DELETE);
            write_text(writer, name);
        }
        AuthChange::UserPassword { name, password_hash } => {
            writer.u8(CHANGE_USER_PASSWORD);
            write_text(writer, name);
            write_hash(writer, password_hash);
        }
        AuthChange::UserGrantRole { name, role } => {
            writer.u8(CHANGE_USER_GRANT_ROLE);
            write_text(writer, name);
            write_text(writer, role);
        }
        AuthChange::UserRevokeRole { name, role } => {
            writer.u8(CHANGE_USER_REVOKE_ROLE);
            write_text(writer, name);
            write_text(writer, role);
        }
        AuthChange::RoleAdd { name } => {
            writer.u8(CHANGE_ROLE_ADD);
            write_text(writer, name);
        }
        AuthChange::RoleDelete { name } => {
            writer.u8(CHANGE_ROLE_DELETE);
            write_text(writer, name);
        }
        AuthChange::RoleGrantPermission { name, permission } => {
            writer.u8(CHANGE_ROLE_GRANT);
            write_text(writer, name);
            write_permission(writer, permission);
        }
        AuthChange::RoleRevokePermission { name, key, range_end } => {
            writer.u8(CHANGE_ROLE_REVOKE);
            write_text(writer, name);
            writer.blob(key);
            writer.blob(range_end);
        }
    }
}

pub(crate) fn read_change(reader: &mut Reader) -> Result<AuthChange, Malformed> {
    let name = |reader: &mut Reader| read_text(reader, "a name");
    Ok(match reader.u8("an auth change")? {
        CHANGE_ENABLE => AuthChange::Enable { token_key: reader.blob("a token key")? },
        CHANGE_DISABLE => AuthChange::Disable,
        CHANGE_USER_ADD => AuthChange::UserAdd { name: name(reader)?, password_hash: read_hash(reader)? },
        CHANGE_USER_DELETE => AuthChange::UserDelete { name: name(reader)? },
        CHANGE_USER_PASSWORD => {
            AuthChange::UserPassword { name: name(reader)?, password_hash: read_hash(reader)? }
        }
        CHANGE_USER_GRANT_ROLE => AuthChange::UserGrantRole { name: name(reader)?, role: name(reader)? },
        CHANGE_USER_REVOKE_ROLE => AuthChange::UserRevokeRole { name: name(reader)?, role: name(reader)? },
        CHANGE_ROLE_ADD => AuthChange::RoleAdd { name: name(reader)? },
        CHANGE_ROLE_DELETE => AuthChange::RoleDelete { name: name(reader)? },
        CHANGE_ROLE_GRANT => {
            AuthChange::RoleGrantPermission { name: name(reader)?, permission: read_permission(reader)? }
        }
        CHANGE_ROLE_REVOKE => AuthChange::RoleRevokePermission {
            name: name(reader)?,
            key: reader.blob("a key")?,
            range_end: reader.blob("a range end")?,
        },
        other => return Err(reader.malformed(format!("auth change {other} is not 1 to 11"))),
    })
}

/// The whole state, as a snapshot's auth section holds it.
pub(crate) fn write_state(writer: &mut Writer, state: &AuthState) {
    writer.bool(state.enabled);
    writer.u64(state.revision);
    writer.blob(&state.token_key);
    writer.u32(state.users.len() as u32);
    for (name, user) in &state.users {
        write_text(writer, name);
        write_hash(writer, &user.password_hash);
        writer.u32(user.roles.len() as u32);
        for role in &user.roles {
            write_text(writer, role);
        }
    }
    writer.u32(state.roles.len() as u32);
    for (name, role) in &state.roles {
        write_text(writer, name);
        writer.u32(role.permissions.len() as u32);
        for permission in &role.permissions {
            write_permission(writer, permission);
        }
    }
}

/// The bytes [`write_state`] writes.
pub(crate) fn state_bytes(state: &AuthState) -> u64 {
    let mut writer = Writer::default();
    write_state(&mut writer, state);
    writer.bytes.len() as u64
}

pub(crate) fn read_state(reader: &mut Reader) -> Result<AuthState, Malformed> {
    let enabled = reader.bool("the enabled flag")?;
    let revision = reader.u64("the auth revision")?;
    let token_key = reader.blob("the token key")?;
    let mut users = BTreeMap::new();
    for _ in 0..reader.u32("a user count")? {
        let name = read_text(reader, "a user name")?;
        let password_hash = read_hash(reader)?;
        let mut roles = BTreeSet::new();
        for _ in 0..reader.u32("a role count")? {
            roles.insert(read_text(reader, "a role name")?);
        }
        if users.insert(name, User { password_hash, roles }).is_some() {
            return Err(reader.malformed("a user is named twice"));
        }
    }
    let mut roles = BTreeMap::new();
    for _ in 0..reader.u32("a role count")? {
        let name = read_text(reader, "a role name")?;
        let mut permissions = Vec::new();
        for _ in 0..reader.u32("a permission count")? {
            permissions.push(read_permission(reader)?);
        }
        if roles.insert(name, Role { permissions }).is_some() {
            return Err(reader.malformed("a role is named twice"));
        }
    }
    Ok(AuthState { enabled, revision, users, roles, token_key })
}

/// An auth refusal inside an encoded outcome: a code and three texts.
pub(crate) fn write_error(writer: &mut Writer, error: &AuthError) {
    let text = |text: &str| text.as_bytes().to_vec();
    let (code, fields): (u8, [Vec<u8>; 3]) = match error {
        AuthError::UserExists(name) => (1, [text(name), vec![], vec![]]),
        AuthError::UserNotFound(name) => (2, [text(name), vec![], vec![]]),
        AuthError::RoleExists(name) => (3, [text(name), vec![], vec![]]),
        AuthError::RoleNotFound(name) => (4, [text(name), vec![], vec![]]),
        AuthError::RoleNotGranted { user, role } => (5, [text(user), text(role), vec![]]),
        AuthError::PermissionNotGranted { role, key, range_end } => {
            (6, [text(role), key.clone(), range_end.clone()])
        }
        AuthError::RootUserMissing => (7, [vec![], vec![], vec![]]),
        AuthError::RootProtected(what) => (8, [text(what), vec![], vec![]]),
        AuthError::InvalidName { what, name, reason } => (9, [text(what), text(name), text(reason)]),
        AuthError::TooMany { what, max } => (10, [text(what), max.to_string().into_bytes(), vec![]]),
        AuthError::RootRoleMissing => (12, [vec![], vec![], vec![]]),
        // Refusals of requests, not of changes: never in an outcome, but
        // encodable all the same.
        other => (11, [text(&other.to_string()), vec![], vec![]]),
    };
    writer.u8(code);
    for field in fields {
        writer.blob(&field);
    }
}

/// The names of `what` fields an outcome may carry: static in the
/// error, so a decoded one maps back to the same words.
fn static_what(text: &str) -> &'static str {
    ["user", "role", "users", "roles", "roles of one user", "permissions of one role"]
        .into_iter()
        .find(|known| *known == text)
        .unwrap_or("an auth limit")
}

pub(crate) fn read_error(reader: &mut Reader) -> Result<AuthError, Malformed> {
    let code = reader.u8("an auth error code")?;
    let mut fields = Vec::with_capacity(3);
    for _ in 0..3 {
        fields.push(reader.blob("an auth error field")?);
    }
    let text = |index: usize| String::from_utf8_lossy(&fields[index]).into_owned();
    Ok(match code {
        1 => AuthError::UserExists(text(0)),
        2 => AuthError::UserNotFound(text(0)),
        3 => AuthError::RoleExists(text(0)),
        4 => AuthError::RoleNotFound(text(0)),
        5 => AuthError::RoleNotGranted { user: text(0), role: text(1) },
        6 => AuthError::PermissionNotGranted {
            role: text(0),
            key: fields[1].clone(),
            range_end: fields[2].clone(),
        },
        7 => AuthError::RootUserMissing,
        8 => AuthError::RootProtected(text(0)),
        9 => AuthError::InvalidName { what: static_what(&text(0)), name: text(1), reason: text(2) },
        10 => AuthError::TooMany { what: static_what(&text(0)), max: text(1).parse().unwrap_or(0) },
        11 => AuthError::Invalid(text(0)),
        12 => AuthError::RootRoleMissing,
        other => return Err(reader.malformed(format!("auth error code {other} is not 1 to 12"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(state: &mut AuthState, change: AuthChange) -> Result<u64, AuthError> {
        state.apply(&change)
    }

    fn grant(state: &mut AuthState, role: &str, kind: PermissionKind, key: &str, range_end: &str) {
        let permission = Permission { kind, key: key.into(), range_end: range_end.into() };
        change(state, AuthChange::RoleGrantPermission { name: role.into(), permission }).unwrap();
    }

    fn with_user(roles: &[&str]) -> AuthState {
        let mut state = AuthState::default();
        change(&mut state, AuthChange::UserAdd { name: "alice".into(), password_hash: Some("h".into()) })
            .unwrap();
        for role in roles {
            change(&mut state, AuthChange::RoleAdd { name: role.to_string() }).unwrap();
            change(&mut state, AuthChange::UserGrantRole { name: "alice".into(), role: role.to_string() })
                .unwrap();
        }
        state
    }

    #[test]
    fn grants_cover_their_keys_and_ranges_and_nothing_else() {
        let mut state = with_user(&["reader", "writer"]);
        grant(&mut state, "reader", PermissionKind::Read, "/a/", "/a0"); // the prefix /a/
        grant(&mut state, "writer", PermissionKind::Write, "/a/x", "");
        let access = state.access("alice").unwrap();
        assert!(access.may_read(b"/a/", b"/a0"));
        assert!(access.may_read(b"/a/b", b""));
        assert!(access.may_read(b"/a/b", b"/a/c"));
        assert!(!access.may_read(b"/a/", b"\0"), "beyond the prefix");
        assert!(!access.may_read(b"/b/", b"/b0"));
        assert!(access.may_write(b"/a/x", b""));
        assert!(!access.may_write(b"/a/y", b""));
        assert!(!access.may_write(b"/a/x", b"/a/z"), "one key does not cover a range from it");
        assert!(state.access("nobody").is_none());
    }

    #[test]
    fn touching_and_overlapping_grants_join() {
        let mut state = with_user(&["one", "two"]);
        grant(&mut state, "one", PermissionKind::ReadWrite, "a", "c");
        grant(&mut state, "two", PermissionKind::Read, "c", "e");
        grant(&mut state, "two", PermissionKind::Read, "m", "\0");
        let access = state.access("alice").unwrap();
        assert!(access.may_read(b"a", b"e"), "[a, c) and [c, e) cover [a, e)");
        assert!(!access.may_write(b"a", b"e"));
        assert!(!access.may_read(b"a", b"f"));
        assert!(access.may_read(b"z", b"\0"), "from m on");
        assert!(!access.may_read(b"e", b"m"));
    }

    #[test]
    fn root_may_do_everything_and_enabling_needs_it() {
        let mut state = AuthState::default();
        let key = vec![7; TOKEN_KEY_BYTES];
        assert_eq!(
            change(&mut state, AuthChange::Enable { token_key: key.clone() }),
            Err(AuthError::RootUserMissing)
        );
        change(&mut state, AuthChange::UserAdd { name: ROOT.into(), password_hash: Some("h".into()) })
            .unwrap();
        change(&mut state, AuthChange::RoleAdd { name: ROOT.into() }).unwrap();
        assert_eq!(
            change(&mut state, AuthChange::Enable { token_key: key.clone() }),
            Err(AuthError::RootRoleMissing)
        );
        change(&mut state, AuthChange::UserGrantRole { name: ROOT.into(), role: ROOT.into() }).unwrap();
        let revision = change(&mut state, AuthChange::Enable { token_key: key }).unwrap();
        assert!(state.enabled());
        assert_eq!(state.revision(), revision);
        assert!(state.access(ROOT).unwrap().may_write(b"anything", b"\0"));
        for refused in [
            AuthChange::UserDelete { name: ROOT.into() },
            AuthChange::RoleDelete { name: ROOT.into() },
            AuthChange::UserRevokeRole { name: ROOT.into(), role: ROOT.into() },
        ] {
            assert!(matches!(state.apply(&refused), Err(AuthError::RootProtected(_))), "{refused:?}");
        }
        assert_eq!(state.revision(), revision, "refusals change nothing");
        change(&mut state, AuthChange::Disable).unwrap();
        change(&mut state, AuthChange::UserDelete { name: ROOT.into() }).unwrap();
    }

    #[test]
    fn changes_refuse_what_does_not_exist_or_exists_already() {
        let mut state = with_user(&["r"]);
        let refused = |state: &mut AuthState, change: AuthChange| state.apply(&change).unwrap_err();
        assert_eq!(
            refused(&mut state, AuthChange::UserAdd { name: "alice".into(), password_hash: None }),
            AuthError::UserExists("alice".into())
        );
        assert_eq!(
            refused(&mut state, AuthChange::UserGrantRole { name: "alice".into(), role: "nope".into() }),
            AuthError::RoleNotFound("nope".into())
        );
        assert!(matches!(
            refused(&mut state, AuthChange::RoleAdd { name: "a:b".into() }),
            AuthError::InvalidName { .. }
        ));
        assert!(matches!(
            refused(
                &mut state,
                AuthChange::RoleRevokePermission { name: "r".into(), key: b"k".to_vec(), range_end: vec![] }
            ),
            AuthError::PermissionNotGranted { .. }
        ));
        change(&mut state, AuthChange::RoleDelete { name: "r".into() }).unwrap();
        assert!(state.users()["alice"].roles.is_empty(), "a deleted role leaves its users");
    }

    #[test]
    fn a_grant_on_the_same_range_replaces_its_kind() {
        let mut state = with_user(&["r"]);
        grant(&mut state, "r", PermissionKind::Read, "k", "");
        grant(&mut state, "r", PermissionKind::Write, "k", "");
        assert_eq!(state.roles()["r"].permissions.len(), 1);
        let access = state.access("alice").unwrap();
        assert!(access.may_write(b"k", b"") && !access.may_read(b"k", b""));
    }

    #[test]
    fn changes_states_and_errors_encode_and_decode_back() {
        let mut state = with_user(&["r", ROOT]);
        grant(&mut state, "r", PermissionKind::ReadWrite, "/a/", "/a0");
        state.apply(&AuthChange::Enable { token_key: vec![1; TOKEN_KEY_BYTES] }).unwrap_err();
        let mut writer = Writer::default();
        write_state(&mut writer, &state);
        assert_eq!(writer.bytes.len() as u64, state_bytes(&state));
        let mut reader = Reader { bytes: &writer.bytes, offset: 0 };
        assert_eq!(read_state(&mut reader).unwrap(), state);
        assert!(reader.done());
        let changes = [
            AuthChange::Enable { token_key: vec![3; 32] },
            AuthChange::UserAdd { name: "u".into(), password_hash: None },
            AuthChange::UserPassword { name: "u".into(), password_hash: Some("$argon2id$...".into()) },
            AuthChange::RoleGrantPermission {
                name: "r".into(),
                permission: Permission {
                    kind: PermissionKind::Write,
                    key: b"k".to_vec(),
                    range_end: vec![0],
                },
            },
            AuthChange::RoleRevokePermission { name: "r".into(), key: b"k".to_vec(), range_end: vec![0] },
        ];
        for change in changes {
            let mut writer = Writer::default();
            write_change(&mut writer, &change);
            let mut reader = Reader { bytes: &writer.bytes, offset: 0 };
            assert_eq!(read_change(&mut reader).unwrap(), change);
        }
        for error in [
            AuthError::PermissionNotGranted { role: "r".into(), key: b"k".to_vec(), range_end: vec![] },
            AuthError::TooMany { what: "roles", max: ROLES_MAX },
            AuthError::RootUserMissing,
        ] {
            let mut writer = Writer::default();
            write_error(&mut writer, &error);
            let mut reader = Reader { bytes: &writer.bytes, offset: 0 };
            assert_eq!(read_error(&mut reader).unwrap(), error);
        }
    }
}
