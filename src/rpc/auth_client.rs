//! The client library's side of authentication and of the Auth interface:
//! logging in (a password checked once, then a session token), and the
//! calls `nvkv user`, `nvkv role` and `nvkv auth` make.

use super::auth::{read_listing, write_auth_request, AuthListing};
use super::client::{ClientError, Connection};
use crate::shard::credentials::AuthRequest;

impl Connection {
    /// Checks `name`'s password and answers a session token (empty while
    /// the cluster does not check users).
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, ClientError> {
        let mut request = self.node().authenticate_request();
        request.get().set_name(name);
        request.get().set_password(password);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        let decode = || -> capnp::Result<Result<String, super::kv::ServerError>> {
            use crate::nvkv_capnp::token_result::Which;
            Ok(match response.get()?.get_result()?.which()? {
                Which::Token(token) => Ok(token?.to_string()?),
                Which::Error(error) => Err(super::kv::read_error(error?)?),
            })
        };
        self.answer(decode())
    }

    /// Makes every later call of this connection act as the user `token`
    /// names.
    pub async fn use_session(&mut self, token: &str) -> Result<(), ClientError> {
        if token.is_empty() {
            return Ok(());
        }
        let mut request = self.node().session_request();
        request.get().set_token(token);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        let decode = || -> capnp::Result<Result<crate::nvkv_capnp::node::Client, super::kv::ServerError>> {
            use crate::nvkv_capnp::session_result::Which;
            Ok(match response.get()?.get_result()?.which()? {
                Which::Node(node) => Ok(node?),
                Which::Error(error) => Err(super::kv::read_error(error?)?),
            })
        };
        let node = self.answer(decode())?;
        self.set_session(node, token).await
    }

    /// Logs in as `name`: every later call acts as that user. Answers the
    /// session token, for other connections to the same cluster.
    pub async fn login(&mut self, name: &str, password: &str) -> Result<String, ClientError> {
        let token = self.authenticate(name, password).await?;
        self.use_session(&token).await?;
        Ok(token)
    }

    fn auth(&self) -> crate::nvkv_capnp::auth::Client {
        self.node().auth_request().send().pipeline.get_auth()
    }

    /// Applies a change of users and roles; answers the auth revision after it.
    pub async fn auth_change(&self, change: &AuthRequest) -> Result<u64, ClientError> {
        let mut request = self.auth().change_request();
        write_auth_request(request.get().init_request(), change);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        let decode = || -> capnp::Result<Result<u64, super::kv::ServerError>> {
            use crate::nvkv_capnp::auth_change_result::Which;
            Ok(match response.get()?.get_result()?.which()? {
                Which::Revision(revision) => Ok(revision),
                Which::Error(error) => Err(super::kv::read_error(error?)?),
            })
        };
        self.answer(decode())
    }

    /// Whether the cluster checks users, and its auth revision.
    pub async fn auth_status(&self) -> Result<(bool, u64), ClientError> {
        let response =
            self.auth().status_request().send().promise.await.map_err(|error| self.rpc_error(error))?;
        let status =
            response.get().and_then(|results| results.get_status()).map_err(|error| self.rpc_error(error))?;
        Ok((status.get_enabled(), status.get_revision()))
    }

    /// Every user and role (root only while authentication is enabled).
    pub async fn auth_list(&self) -> Result<AuthListing, ClientError> {
        let response =
            self.auth().list_request().send().promise.await.map_err(|error| self.rpc_error(error))?;
        let decode = || -> capnp::Result<Result<AuthListing, super::kv::ServerError>> {
            use crate::nvkv_capnp::auth_listing_result::Which;
            Ok(match response.get()?.get_result()?.which()? {
                Which::Ok(listing) => Ok(read_listing(listing?)?),
                Which::Error(error) => Err(super::kv::read_error(error?)?),
            })
        };
        self.answer(decode())
    }
}
