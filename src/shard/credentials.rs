//! How a caller proves who it is, and the request handle's calls that
//! manage users and roles: passwords stored as Argon2id hashes, session
//! tokens signed with group 0's token key, the user a client certificate's
//! common name names, and the changes proposed to group 0.
//!
//! A password is hashed or checked on a blocking thread, a few at a time
//! per member ([`PASSWORD_CHECKS_MAX`]): Argon2 is slow by design, and a
//! reactor must never wait for it, nor may a flood of logins take every
//! core. A token is `NAME_HEX.EXPIRY.MAC_HEX`: the user, the Unix second it
//! expires at, and an HMAC-SHA256 of both under the token key, which every
//! member has (it is replicated with the users), so a token one member
//! made works on every member and shard; enabling authentication again
//! draws a new key, which ends every earlier session. A token names a user
//! and nothing else: its roles are read at every check, so a revoked grant
//! or a deleted user takes effect at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ring::rand::SecureRandom;

use super::answer::RequestError;
use super::auth::{Caller, PASSWORD_CHECKS_MAX};
use super::requests::Requests;
use crate::kv::auth::{AuthChange, AuthError, AuthState, TOKEN_KEY_BYTES};
use crate::kv::command::{Command, CommandResponse};

/// How long a login waits for a free check before it is refused.
const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(5);
/// Longest password taken.
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Longest token read.
const TOKEN_BYTES_MAX: usize = 2 * crate::kv::auth::NAME_BYTES_MAX + 128;

/// A change of users and roles as a front end asks for it: the changes
/// that carry a password (in the clear: the handle hashes it before
/// anything is proposed) or draw a token key, and the rest as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequest {
    Enable,
    /// `password` `None`: a user that only a client certificate names.
    UserAdd {
        name: String,
        password: Option<String>,
    },
    UserPassword {
        name: String,
        password: Option<String>,
    },
    /// Any change without a secret (not `Enable`, `UserAdd`, `UserPassword`).
    Change(AuthChange),
}

impl From<AuthChange> for AuthRequest {
    fn from(change: AuthChange) -> AuthRequest {
        AuthRequest::Change(change)
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], RequestError> {
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RequestError::Codec("the system's random source failed".into()))?;
    Ok(bytes)
}

fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AuthError::Invalid(format!(
            "a password of {} bytes; at most {PASSWORD_BYTES_MAX}",
            password.len()
        )));
    }
    let salt = random_bytes::<16>().map_err(|error| AuthError::Invalid(error.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|error| AuthError::Invalid(error.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| AuthError::Invalid(format!("hashing the password failed: {error}")))
}

/// A hash no password matches, checked for a user that has none, so a
/// refusal takes as long whether or not the user exists.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$bnZrdi1ub2JvZHk$0vVx6Yd2dWUqXv0R9W4cZq3m1b5pIW8j8lNVCzsm0yA";

fn password_matches(hash: Option<&str>, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(DUMMY_HASH)) else { return false };
    argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && hash.is_some()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

fn mac(key: &[u8], name: &str, expiry: u64) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, format!("{name}\0{expiry}").as_bytes())
}

/// A token for `name`, valid for `ttl` from now.
fn issue_token(state: &AuthState, name: &str, ttl: Duration) -> String {
    let expiry = unix_now() + ttl.as_secs().max(1);
    format!("{}.{expiry}.{}", hex(name.as_bytes()), hex(mac(state.token_key(), name, expiry).as_ref()))
}

/// The user a token names, if it was made with this state's key and has
/// not expired.
pub fn verify_token(state: &AuthState, token: &str) -> Result<String, AuthError> {
    let invalid = |why: &str| AuthError::InvalidToken(why.to_string());
    if token.len() > TOKEN_BYTES_MAX {
        return Err(invalid("longer than any token"));
    }
    let mut parts = token.split('.');
    let (Some(name), Some(expiry), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not NAME.EXPIRY.MAC"));
    };
    let name =
        unhex(name).and_then(|name| String::from_utf8(name).ok()).ok_or_else(|| invalid("bad name"))?;
    let expiry: u64 = expiry.parse().map_err(|_| invalid("bad expiry"))?;
    let tag = unhex(tag).ok_or_else(|| invalid("bad signature"))?;
    if state.token_key().len() != TOKEN_KEY_BYTES {
        return Err(invalid("authentication was never enabled"));
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, state.token_key());
    ring::hmac::verify(&key, format!("{name}\0{expiry}").as_bytes(), &tag).map_err(|_| {
        invalid("not signed by this cluster's current key; authentication was enabled again since")
    })?;
    if expiry < unix_now() {
        return Err(invalid("expired"));
    }
    Ok(name)
}

/// The common name of a client certificate (DER), which names its user.
pub fn certificate_user(certificate: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    (!name.is_empty()).then_some(name)
}

impl Requests {
    /// This handle acting for `caller`.
    pub fn with_caller(&self, caller: Caller) -> Requests {
        let mut requests = self.clone();
        requests.caller = caller;
        requests
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Runs `work` off the reactor, among at most [`PASSWORD_CHECKS_MAX`].
    async fn password_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, RequestError> {
        let cell = &self.layout.auth;
        let busy = || RequestError::Overloaded {
            shard: self.context.shard(),
            reason: format!("{PASSWORD_CHECKS_MAX} password checks are running; retry shortly"),
        };
        let _permit = tokio::time::timeout(PASSWORD_CHECK_WAIT, cell.password_checks.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        tokio::task::spawn_blocking(work).await.map_err(|error| RequestError::Codec(error.to_string()))
    }

    /// Checks `name`'s password and answers a session token for it. While
    /// authentication is disabled it answers an empty token: nothing is
    /// checked, so there is no session to make (etcd answers the same way
    /// with an error its clients ignore).
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, RequestError> {
        let (enabled, hash) = self.layout.auth.with(|view| {
            let hash = view.state.users().get(name).and_then(|user| user.password_hash.clone());
            (view.enabled(), hash)
        });
        if !enabled {
            return Ok(String::new());
        }
        let password = password.to_string();
        let checked = hash.clone();
        let matches = self.password_work(move || password_matches(checked.as_deref(), &password)).await?;
        if !matches {
            return Err(AuthError::InvalidCredentials(name.to_string()).into());
        }
        let ttl = self.layout.auth.token_ttl;
        Ok(self.layout.auth.with(|view| issue_token(&view.state, name, ttl)))
    }

    /// The caller a session token names (an empty token: nobody).
    pub fn session(&self, token: &str) -> Result<Caller, RequestError> {
        if token.is_empty() {
            return Ok(Caller::Anonymous);
        }
        let name = self.layout.auth.with(|view| verify_token(&view.state, token))?;
        Ok(Caller::user(&name))
    }

    /// Proposes `request` to group 0, once its passwords are hashed; needs
    /// the root role while authentication is enabled. Answers the auth
    /// revision after it.
    pub async fn auth_change(&self, request: AuthRequest) -> Result<u64, RequestError> {
        let hashed = |password: Option<String>| async move {
            match password {
                None => Ok(None),
                Some(password) => self
                    .password_work(move || hash_password(&password))
                    .await?
                    .map(Some)
                    .map_err(RequestError::from),
            }
        };
        // Refused before a password is hashed for nothing.
        self.layout.auth.require_root(&self.caller, "managing users and roles")?;
        let change = match request {
            AuthRequest::Enable => {
                AuthChange::Enable { token_key: random_bytes::<TOKEN_KEY_BYTES>()?.to_vec() }
            }
            AuthRequest::UserAdd { name, password } => {
                AuthChange::UserAdd { name, password_hash: hashed(password).await? }
            }
            AuthRequest::UserPassword { name, password } => {
                AuthChange::UserPassword { name, password_hash: hashed(password).await? }
            }
            AuthRequest::Change(
                AuthChange::Enable { .. } | AuthChange::UserAdd { .. } | AuthChange::UserPassword { .. },
            ) => {
                return Err(AuthError::Invalid(
                    "a change with a secret comes as Enable, UserAdd or UserPassword, never made".into(),
                )
                .into())
            }
            AuthRequest::Change(change) => change,
        };
        let kind = change.kind();
        let answer = self.write(crate::kv::auth::AUTH_GROUP, Command::Auth(change)).await?;
        match answer.response {
            CommandResponse::Auth { revision } => {
                tracing::info!(caller = self.caller.name(), "{kind} applied (auth revision {revision})");
                Ok(revision)
            }
            other => Err(RequestError::Codec(format!("an auth change was answered with {other:?}"))),
        }
    }

    /// Whether authentication is enabled here, and the auth revision.
    pub fn auth_status(&self) -> (bool, u64) {
        self.layout.auth.with(|view| (view.enabled(), view.state.revision()))
    }

    /// The users and roles as this member applied them; root only while
    /// authentication is enabled.
    pub fn auth_state(&self) -> Result<AuthState, RequestError> {
        self.layout.auth.require_root(&self.caller, "listing users and roles")?;
        Ok(self.layout.auth.with(|view| view.state.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::auth::{AuthChange, ROOT};

    fn enabled(key: u8) -> AuthState {
        let mut state = AuthState::default();
        for change in [
            AuthChange::UserAdd { name: ROOT.into(), password_hash: None },
            AuthChange::RoleAdd { name: ROOT.into() },
            AuthChange::UserGrantRole { name: ROOT.into(), role: ROOT.into() },
            AuthChange::Enable { token_key: vec![key; TOKEN_KEY_BYTES] },
        ] {
            state.apply(&change).unwrap();
        }
        state
    }

    #[test]
    fn a_token_names_its_user_until_it_expires_or_the_key_changes() {
        let state = enabled(1);
        let token = issue_token(&state, "alice", Duration::from_secs(60));
        assert_eq!(verify_token(&state, &token), Ok("alice".to_string()));
        assert!(matches!(verify_token(&enabled(2), &token), Err(AuthError::InvalidToken(_))), "another key");
        let forged = token.replacen(&hex(b"alice"), &hex(b"root"), 1);
        assert!(matches!(verify_token(&state, &forged), Err(AuthError::InvalidToken(_))), "another name");
        let expiry = unix_now() - 1;
        let expired =
            format!("{}.{expiry}.{}", hex(b"alice"), hex(mac(state.token_key(), "alice", expiry).as_ref()));
        let refused = verify_token(&state, &expired).unwrap_err();
        assert!(refused.to_string().contains("expired"), "{refused}");
        for garbage in ["", "a.b", "zz.1.00", &"x".repeat(TOKEN_BYTES_MAX + 1)] {
            assert!(verify_token(&state, garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn a_password_matches_its_hash_only() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(password_matches(Some(&hash), "s3cret"));
        assert!(!password_matches(Some(&hash), "s3cret "));
        assert!(!password_matches(None, "anything"), "a user without a password");
        assert_ne!(hash_password("s3cret").unwrap(), hash, "salted");
        assert!(hash_password(&"p".repeat(PASSWORD_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn the_stand_in_hash_parses_so_a_refusal_costs_a_whole_check() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
