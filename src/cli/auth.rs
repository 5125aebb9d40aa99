//! `nvkv user | role | auth`: users, roles and their permissions, and
//! whether the cluster checks them, printed as etcdctl prints them.

use nvkv::kv::auth::{AuthChange, Permission, ROOT};
use nvkv::rpc::client::{ClientError, ClientTls, Connection};
use nvkv::shard::credentials::AuthRequest;

use super::args::{AuthCommand, PermissionRange, RoleCommand, UserCommand};
use super::connect::{connect, run_client};
use super::output::{print_json, text};

/// The key and range end a permission command names: KEY alone, [KEY,
/// RANGE_END), every key starting with KEY, or every key from KEY on.
fn permission_range(range: PermissionRange) -> (Vec<u8>, Vec<u8>) {
    let end = match (range.range_end, range.prefix, range.from_key) {
        (Some(end), ..) => end.into_bytes(),
        (None, true, _) => nvkv::kv::types::prefix_range_end(range.key.as_bytes()),
        (None, false, true) => vec![0],
        (None, false, false) => Vec::new(),
    };
    (range.key.into_bytes(), end)
}

/// Prints what a command did, as etcdctl says it (or as JSON).
fn said(json: bool, said: &str) -> Result<(), String> {
    if json {
        return print_json(&serde_json::json!({ "result": said }));
    }
    if !said.is_empty() {
        println!("{said}");
    }
    Ok(())
}

fn range_text(held: &Permission) -> String {
    match held.range_end.as_slice() {
        [] => text(&held.key).into_owned(),
        [0] => format!("[{}, <open ended>", text(&held.key)),
        end => format!("[{}, {})", text(&held.key), text(end)),
    }
}

async fn change(connection: &Connection, request: impl Into<AuthRequest>) -> Result<u64, String> {
    connection.auth_change(&request.into()).await.map_err(|error| error.to_string())
}

/// Runs one `nvkv user` command.
pub fn user(endpoints: &[String], tls: &ClientTls, json: bool, command: UserCommand) -> Result<(), String> {
    run_client(async move {
        let client = connect(endpoints, tls).await?;
        let connection = client.main();
        let answer = match command {
            UserCommand::Add { name, password, .. } => {
                change(connection, AuthRequest::UserAdd { name: name.clone(), password }).await?;
                format!("User {name} created")
            }
            UserCommand::Delete { name } => {
                change(connection, AuthChange::UserDelete { name: name.clone() }).await?;
                format!("User {name} deleted")
            }
            UserCommand::Passwd { name, password } => {
                change(connection, AuthRequest::UserPassword { name, password: Some(password) }).await?;
                "Password updated".to_string()
            }
            UserCommand::GrantRole { name, role } => {
                let request = AuthChange::UserGrantRole { name: name.clone(), role: role.clone() };
                change(connection, request).await?;
                format!("Role {role} is granted to user {name}")
            }
            UserCommand::RevokeRole { name, role } => {
                let request = AuthChange::UserRevokeRole { name: name.clone(), role: role.clone() };
                change(connection, request).await?;
                format!("Role {role} is revoked from user {name}")
            }
            UserCommand::List => {
                let listing = connection.auth_list().await.map_err(|error| error.to_string())?;
                let names: Vec<&str> = listing.users.iter().map(|user| user.name.as_str()).collect();
                if json {
                    return print_json(&serde_json::json!({ "users": names }));
                }
                names.join("\n")
            }
            UserCommand::Get { name } => {
                let listing = connection.auth_list().await.map_err(|error| error.to_string())?;
                let Some(user) = listing.users.iter().find(|user| user.name == name) else {
                    return Err(format!("user {name:?} does not exist; `nvkv user list` shows every user"));
                };
                if json {
                    return print_json(&serde_json::json!({
                        "name": user.name, "roles": user.roles, "has_password": user.has_password
                    }));
                }
                format!("User: {}\nRoles: {}", user.name, user.roles.join(" "))
            }
        };
        said(json, &answer)
    })?
}

/// Runs one `nvkv role` command.
pub fn role(endpoints: &[String], tls: &ClientTls, json: bool, command: RoleCommand) -> Result<(), String> {
    run_client(async move {
        let client = connect(endpoints, tls).await?;
        let connection = client.main();
        let answer = match command {
            RoleCommand::Add { role } => {
                change(connection, AuthChange::RoleAdd { name: role.clone() }).await?;
                format!("Role {role} created")
            }
            RoleCommand::Delete { role } => {
                change(connection, AuthChange::RoleDelete { name: role.clone() }).await?;
                format!("Role {role} deleted")
            }
            RoleCommand::GrantPermission { role, kind, range } => {
                let (key, range_end) = permission_range(range);
                let permission = Permission { kind, key, range_end };
                change(connection, AuthChange::RoleGrantPermission { name: role.clone(), permission })
                    .await?;
                format!("Role {role} updated")
            }
            RoleCommand::RevokePermission { role, range } => {
                let (key, range_end) = permission_range(range);
                let shown = text(&key).into_owned();
                change(connection, AuthChange::RoleRevokePermission { name: role.clone(), key, range_end })
                    .await?;
                format!("Permission of key {shown} is revoked from role {role}")
            }
            RoleCommand::List => {
                let listing = connection.auth_list().await.map_err(|error| error.to_string())?;
                let names: Vec<&str> = listing.roles.iter().map(|role| role.name.as_str()).collect();
                if json {
                    return print_json(&serde_json::json!({ "roles": names }));
                }
                names.join("\n")
            }
            RoleCommand::Get { role } => {
                let listing = connection.auth_list().await.map_err(|error| error.to_string())?;
                let Some(found) = listing.roles.iter().find(|held| held.name == role) else {
                    return Err(format!("role {role:?} does not exist; `nvkv role list` shows every role"));
                };
                if json {
                    let permissions: Vec<_> = found
                        .permissions
                        .iter()
                        .map(|held| {
                            serde_json::json!({
                                "kind": held.kind.name(), "key": text(&held.key), "range_end": text(&held.range_end)
                            })
                        })
                        .collect();
                    return print_json(
                        &serde_json::json!({ "name": found.name, "permissions": permissions }),
                    );
                }
                let mut lines = vec![format!("Role {}", found.name), "KV Read:".to_string()];
                lines.extend(
                    found
                        .permissions
                        .iter()
                        .filter(|held| held.kind.reads())
                        .map(|held| format!("\t{}", range_text(held))),
                );
                lines.push("KV Write:".to_string());
                lines.extend(
                    found
                        .permissions
                        .iter()
                        .filter(|held| held.kind.writes())
                        .map(|held| format!("\t{}", range_text(held))),
                );
                lines.join("\n")
            }
        };
        said(json, &answer)
    })?
}

/// Runs one `nvkv auth` command.
pub fn auth(endpoints: &[String], tls: &ClientTls, json: bool, command: AuthCommand) -> Result<(), String> {
    run_client(async move {
        let client = connect(endpoints, tls).await?;
        let connection = client.main();
        let answer = match command {
            AuthCommand::Enable => {
                enable(connection).await?;
                "Authentication Enabled".to_string()
            }
            AuthCommand::Disable => {
                change(connection, AuthChange::Disable).await?;
                "Authentication Disabled".to_string()
            }
            AuthCommand::Status => {
                let (enabled, revision) =
                    connection.auth_status().await.map_err(|error| error.to_string())?;
                if json {
                    return print_json(&serde_json::json!({ "enabled": enabled, "revision": revision }));
                }
                format!("Authentication Status: {enabled}\nAuthRevision: {revision}")
            }
        };
        said(json, &answer)
    })?
}

/// Enables authentication; when the user root lacks the role root, adds
/// the role (if missing) and grants it first, as etcdctl does.
async fn enable(connection: &Connection) -> Result<(), String> {
    let root_role_missing = |error: &ClientError| matches!(error, ClientError::Refused { error, .. } if error.message.contains("to have the role root"));
    match connection.auth_change(&AuthRequest::Enable).await {
        Err(error) if root_role_missing(&error) => {}
        other => return other.map(|_| ()).map_err(|error| error.to_string()),
    }
    match connection.auth_change(&AuthChange::RoleAdd { name: ROOT.into() }.into()).await {
        Ok(_) => {}
        Err(ClientError::Refused { error, .. }) if error.message.contains("already exists") => {}
        Err(error) => return Err(error.to_string()),
    }
    change(connection, AuthChange::UserGrantRole { name: ROOT.into(), role: ROOT.into() }).await?;
    change(connection, AuthRequest::Enable).await.map(|_| ())
}
