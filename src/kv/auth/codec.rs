//! The encodings of the auth state, its changes and its errors: how they
//! travel in group 0's log entries, its snapshots and its answers (layouts
//! in `kv::command` and `kv::snapshot`).

use super::*;
use crate::kv::codec::{Malformed, Reader, Writer};

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
