//! etcd's Auth service on one shard: users, roles, permissions and whether
//! they are checked, as etcdctl's `user`, `role` and `auth` commands drive
//! them, over the same model and request handle as the native API
//! (`shard::credentials`). Authenticate answers a token the other services
//! take from a call's `token` metadata (see `kv::ShardLocal::acting_for`).
//!
//! etcd's own answers where its clients branch on them: "authentication
//! is not enabled" for an Authenticate while nothing is checked (its
//! clients then go on without a token), "root user does not have root
//! role" (etcdctl's `auth enable` then adds and grants it).

use tonic::{Request, Response, Status};

use super::convert::{self, status};
use super::kv::{on_this_shard, ShardLocal};
use super::proto::{authpb, etcdserverpb as pb};
use crate::kv::auth::{AuthChange, AuthError, AuthState, Permission, PermissionKind};
use crate::shard::credentials::AuthRequest;

pub struct EtcdAuth {
    shard: ShardLocal,
}

impl EtcdAuth {
    pub fn new(shard: ShardLocal) -> EtcdAuth {
        EtcdAuth { shard }
    }

    /// Applies `change` for the caller of the call `shard` acts for.
    async fn change(
        shard: &ShardLocal,
        change: impl Into<AuthRequest>,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        let change = change.into();
        on_this_shard(async { shard.requests()?.auth_change(change).await.map_err(status) }).await?;
        Ok(convert::header(&shard.info, 0, 0))
    }

    /// The users and roles, for a caller that may list them.
    fn state(shard: &ShardLocal) -> Result<AuthState, Status> {
        shard.requests()?.auth_state().map_err(status)
    }
}

fn kind_of(permission: &authpb::Permission) -> Result<PermissionKind, Status> {
    use authpb::permission::Type;
    match Type::try_from(permission.perm_type) {
        Ok(Type::Read) => Ok(PermissionKind::Read),
        Ok(Type::Write) => Ok(PermissionKind::Write),
        Ok(Type::Readwrite) => Ok(PermissionKind::ReadWrite),
        Err(_) => Err(Status::invalid_argument(format!(
            "permission type {} is not READ (0), WRITE (1) or READWRITE (2)",
            permission.perm_type
        ))),
    }
}

fn etcd_permission(held: &Permission) -> authpb::Permission {
    use authpb::permission::Type;
    let perm_type = match held.kind {
        PermissionKind::Read => Type::Read,
        PermissionKind::Write => Type::Write,
        PermissionKind::ReadWrite => Type::Readwrite,
    };
    authpb::Permission {
        perm_type: perm_type as i32,
        key: held.key.clone(),
        range_end: held.range_end.clone(),
    }
}

/// etcd hashes with bcrypt; a client that sends a hash instead of a
/// password cannot be served here.
fn no_hashed_password(hashed: &str) -> Result<(), Status> {
    if hashed.is_empty() {
        return Ok(());
    }
    Err(Status::invalid_argument(
        "a hashed password (etcd's bcrypt) cannot be taken: nvkv keeps Argon2id hashes of its own; send the password",
    ))
}

#[tonic::async_trait]
impl pb::auth_server::Auth for EtcdAuth {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        Ok(Response::new(pb::AuthEnableResponse { header: Self::change(&shard, AuthRequest::Enable).await? }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        Ok(Response::new(pb::AuthDisableResponse {
            header: Self::change(&shard, AuthChange::Disable).await?,
        }))
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let (enabled, auth_revision) = shard.requests()?.auth_status();
        Ok(Response::new(pb::AuthStatusResponse {
            header: convert::header(&shard.info, 0, 0),
            enabled,
            auth_revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let request = request.into_inner();
        let shard = &self.shard;
        let token = on_this_shard(async {
            shard.requests()?.authenticate(&request.name, &request.password).await.map_err(status)
        })
        .await?;
        if token.is_empty() {
            return Err(Status::failed_precondition("etcdserver: authentication is not enabled"));
        }
        Ok(Response::new(pb::AuthenticateResponse { header: convert::header(&shard.info, 0, 0), token }))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        no_hashed_password(&request.hashed_password)?;
        let no_password = request.options.is_some_and(|options| options.no_password);
        let password = (!no_password).then_some(request.password);
        let header = Self::change(&shard, AuthRequest::UserAdd { name: request.name, password }).await?;
        Ok(Response::new(pb::AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let name = request.into_inner().name;
        let state = Self::state(&shard)?;
        let user =
            state.users().get(&name).ok_or_else(|| convert::auth_status(&AuthError::UserNotFound(name)))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: convert::header(&shard.info, 0, 0),
            roles: user.roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let users = Self::state(&shard)?.users().keys().cloned().collect();
        Ok(Response::new(pb::AuthUserListResponse { header: convert::header(&shard.info, 0, 0), users }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let name = request.into_inner().name;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: Self::change(&shard, AuthChange::UserDelete { name }).await?,
        }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        no_hashed_password(&request.hashed_password)?;
        let change = AuthRequest::UserPassword { name: request.name, password: Some(request.password) };
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header: Self::change(&shard, change).await? }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        let change = AuthChange::UserGrantRole { name: request.user, role: request.role };
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header: Self::change(&shard, change).await? }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        let change = AuthChange::UserRevokeRole { name: request.name, role: request.role };
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header: Self::change(&shard, change).await? }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let name = request.into_inner().name;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: Self::change(&shard, AuthChange::RoleAdd { name }).await?,
        }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let name = request.into_inner().role;
        let state = Self::state(&shard)?;
        let role =
            state.roles().get(&name).ok_or_else(|| convert::auth_status(&AuthError::RoleNotFound(name)))?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: convert::header(&shard.info, 0, 0),
            perm: role.permissions.iter().map(etcd_permission).collect(),
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let roles = Self::state(&shard)?.roles().keys().cloned().collect();
        Ok(Response::new(pb::AuthRoleListResponse { header: convert::header(&shard.info, 0, 0), roles }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let name = request.into_inner().role;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: Self::change(&shard, AuthChange::RoleDelete { name }).await?,
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        let Some(given) = request.perm else {
            return Err(Status::invalid_argument("etcdserver: permission not given"));
        };
        let permission = Permission { kind: kind_of(&given)?, key: given.key, range_end: given.range_end };
        let change = AuthChange::RoleGrantPermission { name: request.name, permission };
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse { header: Self::change(&shard, change).await? }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        let change = AuthChange::RoleRevokePermission {
            name: request.role,
            key: request.key,
            range_end: request.range_end,
        };
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: Self::change(&shard, change).await?,
        }))
    }
}
