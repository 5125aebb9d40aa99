//! The Auth interface of `schema/nvkv.capnp` and the conversions between
//! its messages and the shard's auth types, for the server and the client
//! library alike. The rules (who may change what, how passwords are kept)
//! are the shard's (`shard::auth`, `shard::credentials`); this module only
//! carries them.

use super::kv::server_error;
use crate::kv::auth::{AuthChange, AuthState, Permission, PermissionKind};
use crate::nvkv_capnp::{auth, auth_request, permission, PermissionKind as SchemaKind};
use crate::shard::credentials::AuthRequest;
use crate::shard::requests::Requests;

/// Serves the Auth interface for one caller.
pub struct AuthServer {
    requests: Requests,
}

impl AuthServer {
    pub fn new(requests: Requests) -> AuthServer {
        AuthServer { requests }
    }
}

pub fn set_permission(mut builder: permission::Builder<'_>, held: &Permission) {
    builder.set_kind(match held.kind {
        PermissionKind::Read => SchemaKind::Read,
        PermissionKind::Write => SchemaKind::Write,
        PermissionKind::ReadWrite => SchemaKind::Readwrite,
    });
    builder.set_key(&held.key);
    builder.set_range_end(&held.range_end);
}

pub fn read_permission(reader: permission::Reader<'_>) -> capnp::Result<Permission> {
    Ok(Permission {
        kind: match reader.get_kind()? {
            SchemaKind::Read => PermissionKind::Read,
            SchemaKind::Write => PermissionKind::Write,
            SchemaKind::Readwrite => PermissionKind::ReadWrite,
        },
        key: reader.get_key()?.to_vec(),
        range_end: reader.get_range_end()?.to_vec(),
    })
}

fn text(reader: capnp::Result<capnp::text::Reader<'_>>) -> capnp::Result<String> {
    Ok(reader?.to_string()?)
}

pub fn read_auth_request(reader: auth_request::Reader<'_>) -> capnp::Result<AuthRequest> {
    use auth_request::Which;
    let password =
        |has: bool, password: capnp::Result<capnp::text::Reader<'_>>| -> capnp::Result<Option<String>> {
            Ok(if has { Some(text(password)?) } else { None })
        };
    let change = match reader.which()? {
        Which::Enable(()) => return Ok(AuthRequest::Enable),
        Which::UserAdd(user) => {
            let user = user?;
            let password = password(user.get_has_password(), user.get_password())?;
            return Ok(AuthRequest::UserAdd { name: text(user.get_name())?, password });
        }
        Which::UserPassword(user) => {
            let user = user?;
            let password = password(user.get_has_password(), user.get_password())?;
            return Ok(AuthRequest::UserPassword { name: text(user.get_name())?, password });
        }
        Which::Disable(()) => AuthChange::Disable,
        Which::UserDelete(name) => AuthChange::UserDelete { name: text(name)? },
        Which::UserGrantRole(grant) => {
            let grant = grant?;
            AuthChange::UserGrantRole { name: text(grant.get_name())?, role: text(grant.get_role())? }
        }
        Which::UserRevokeRole(grant) => {
            let grant = grant?;
            AuthChange::UserRevokeRole { name: text(grant.get_name())?, role: text(grant.get_role())? }
        }
        Which::RoleAdd(name) => AuthChange::RoleAdd { name: text(name)? },
        Which::RoleDelete(name) => AuthChange::RoleDelete { name: text(name)? },
        Which::RoleGrantPermission(grant) => {
            let grant = grant?;
            AuthChange::RoleGrantPermission {
                name: text(grant.get_role())?,
                permission: read_permission(grant.get_permission()?)?,
            }
        }
        Which::RoleRevokePermission(grant) => {
            let grant = grant?;
            let permission = read_permission(grant.get_permission()?)?;
            AuthChange::RoleRevokePermission {
                name: text(grant.get_role())?,
                key: permission.key,
                range_end: permission.range_end,
            }
        }
    };
    Ok(AuthRequest::Change(change))
}

pub fn write_auth_request(mut builder: auth_request::Builder<'_>, request: &AuthRequest) {
    let user_password = |mut builder: crate::nvkv_capnp::user_password::Builder<'_>,
                         name: &str,
                         password: &Option<String>| {
        builder.set_name(name);
        builder.set_has_password(password.is_some());
        builder.set_password(password.as_deref().unwrap_or_default());
    };
    let user_role = |mut builder: crate::nvkv_capnp::user_role::Builder<'_>, name: &str, role: &str| {
        builder.set_name(name);
        builder.set_role(role);
    };
    let role_permission =
        |mut builder: crate::nvkv_capnp::role_permission::Builder<'_>, role: &str, held: &Permission| {
            builder.set_role(role);
            set_permission(builder.init_permission(), held);
        };
    let change = match request {
        AuthRequest::Enable => return builder.set_enable(()),
        AuthRequest::UserAdd { name, password } => {
            return user_password(builder.init_user_add(), name, password)
        }
        AuthRequest::UserPassword { name, password } => {
            return user_password(builder.init_user_password(), name, password)
        }
        AuthRequest::Change(change) => change,
    };
    match change {
        // Made by the node from the requests above; never sent.
        AuthChange::Enable { .. } | AuthChange::UserAdd { .. } | AuthChange::UserPassword { .. } => {
            builder.set_enable(())
        }
        AuthChange::Disable => builder.set_disable(()),
        AuthChange::UserDelete { name } => builder.set_user_delete(name),
        AuthChange::UserGrantRole { name, role } => user_role(builder.init_user_grant_role(), name, role),
        AuthChange::UserRevokeRole { name, role } => user_role(builder.init_user_revoke_role(), name, role),
        AuthChange::RoleAdd { name } => builder.set_role_add(name),
        AuthChange::RoleDelete { name } => builder.set_role_delete(name),
        AuthChange::RoleGrantPermission { name, permission } => {
            role_permission(builder.init_role_grant_permission(), name, permission)
        }
        AuthChange::RoleRevokePermission { name, key, range_end } => {
            let held = Permission {
                kind: PermissionKind::ReadWrite,
                key: key.clone(),
                range_end: range_end.clone(),
            };
            role_permission(builder.init_role_revoke_permission(), name, &held)
        }
    }
}

/// Every user and role, as the client library reads them back.
pub fn read_listing(reader: crate::nvkv_capnp::auth_listing::Reader<'_>) -> capnp::Result<AuthListing> {
    let mut listing = AuthListing::default();
    for user in reader.get_users()? {
        let mut roles = Vec::new();
        for role in user.get_roles()? {
            roles.push(text(role)?);
        }
        listing.users.push(UserView {
            name: text(user.get_name())?,
            roles,
            has_password: user.get_has_password(),
        });
    }
    for role in reader.get_roles()? {
        let mut permissions = Vec::new();
        for held in role.get_permissions()? {
            permissions.push(read_permission(held)?);
        }
        listing.roles.push(RoleView { name: text(role.get_name())?, permissions });
    }
    Ok(listing)
}

/// A user as `nvkv user get` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserView {
    pub name: String,
    pub roles: Vec<String>,
    pub has_password: bool,
}

/// A role as `nvkv role get` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleView {
    pub name: String,
    pub permissions: Vec<Permission>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthListing {
    pub users: Vec<UserView>,
    pub roles: Vec<RoleView>,
}

fn write_listing(mut builder: crate::nvkv_capnp::auth_listing::Builder<'_>, state: &AuthState) {
    let mut users = builder.reborrow().init_users(state.users().len() as u32);
    for (position, (name, user)) in state.users().iter().enumerate() {
        let mut out = users.reborrow().get(position as u32);
        out.set_name(name);
        out.set_has_password(user.password_hash.is_some());
        let mut roles = out.init_roles(user.roles.len() as u32);
        for (at, role) in user.roles.iter().enumerate() {
            roles.set(at as u32, role);
        }
    }
    let mut roles = builder.init_roles(state.roles().len() as u32);
    for (position, (name, role)) in state.roles().iter().enumerate() {
        let mut out = roles.reborrow().get(position as u32);
        out.set_name(name);
        let mut list = out.init_permissions(role.permissions.len() as u32);
        for (at, held) in role.permissions.iter().enumerate() {
            set_permission(list.reborrow().get(at as u32), held);
        }
    }
}

impl auth::Server for AuthServer {
    async fn change(
        self: capnp::capability::Rc<Self>,
        params: auth::ChangeParams,
        mut results: auth::ChangeResults,
    ) -> Result<(), capnp::Error> {
        let request = read_auth_request(params.get()?.get_request()?)?;
        let answer = self.requests.auth_change(request).await;
        let mut result = results.get().init_result();
        match answer {
            Ok(revision) => result.set_revision(revision),
            Err(error) => super::kv::set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }

    async fn status(
        self: capnp::capability::Rc<Self>,
        _: auth::StatusParams,
        mut results: auth::StatusResults,
    ) -> Result<(), capnp::Error> {
        let (enabled, revision) = self.requests.auth_status();
        let mut status = results.get().init_status();
        status.set_enabled(enabled);
        status.set_revision(revision);
        Ok(())
    }

    async fn list(
        self: capnp::capability::Rc<Self>,
        _: auth::ListParams,
        mut results: auth::ListResults,
    ) -> Result<(), capnp::Error> {
        let result = results.get().init_result();
        match self.requests.auth_state() {
            Ok(state) => write_listing(result.init_ok(), &state),
            Err(error) => super::kv::set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }
}
