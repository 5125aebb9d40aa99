use super::*;
use crate::kv::codec::{Reader, Writer};

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
    change(&mut state, AuthChange::UserAdd { name: ROOT.into(), password_hash: Some("h".into()) }).unwrap();
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
            permission: Permission { kind: PermissionKind::Write, key: b"k".to_vec(), range_end: vec![0] },
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
