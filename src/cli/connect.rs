//! How a client command reaches the cluster: a single-threaded runtime for
//! its calls, and the one walk over `--endpoints` that asks each in turn
//! until one answers.

use std::future::Future;
use std::sync::OnceLock;

use nvkv::rpc::client::{ClientError, ClientTls, Connection, ShardedClient};

/// `--user NAME:PASSWORD`, once parsed: every connection a client command
/// opens logs in as this user.
static USER: OnceLock<(String, String)> = OnceLock::new();

/// Makes every later connection log in as `name` with `password`.
pub fn log_in_as(name: String, password: String) {
    let _ = USER.set((name, password));
}

/// `--user`'s value split into the name and the password.
pub fn parse_user(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name.to_string(), password.to_string())),
        _ => Err(format!(
            "--user {text:?} is not NAME:PASSWORD; give the user's name, a colon, and its password"
        )),
    }
}

/// A connection to `endpoint`, logged in as `--user` when it was given.
pub async fn open(endpoint: &str, tls: &ClientTls) -> Result<Connection, ClientError> {
    let mut connection = Connection::open_with(endpoint, tls).await?;
    if let Some((name, password)) = USER.get() {
        connection.login(name, password).await?;
    }
    Ok(connection)
}

/// Runs a client future on a single-threaded runtime (capnp-rpc is
/// single-threaded).
pub fn run_client<T>(future: impl Future<Output = T>) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the client runtime: {error}"))?;
    Ok(runtime.block_on(tokio::task::LocalSet::new().run_until(future)))
}

/// Which failures of an endpoint send the question on to the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Any failure: the question changes nothing, so asking again is safe.
    AnyError,
    /// Only failing to reach the endpoint (connect, timeout, TLS): an
    /// endpoint that took the question answered for good, refusals
    /// included (they say what to do).
    Unreached,
}

impl Retry {
    fn covers(self, error: &ClientError) -> bool {
        match self {
            Retry::AnyError => true,
            Retry::Unreached => matches!(
                error,
                ClientError::Connect { .. } | ClientError::ConnectTimeout { .. } | ClientError::Tls { .. }
            ),
        }
    }
}

/// Asks `ask` of each endpoint in order and returns the first answer; when
/// every endpoint failed in a way `retry` covers, the error lists each
/// failure.
pub async fn first_answer<'a, T, F, Fut>(
    endpoints: &'a [String],
    retry: Retry,
    mut ask: F,
) -> Result<T, String>
where
    F: FnMut(&'a str) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut failures = Vec::new();
    for endpoint in endpoints {
        match ask(endpoint).await {
            Ok(answer) => return Ok(answer),
            Err(error) if retry.covers(&error) => failures.push(error.to_string()),
            Err(error) => return Err(error.to_string()),
        }
    }
    Err(failures.join("; "))
}

/// A client of the first endpoint that answers, which sends each request
/// straight to the shard of its key.
pub async fn connect(endpoints: &[String], tls: &ClientTls) -> Result<ShardedClient, String> {
    first_answer(endpoints, Retry::AnyError, |endpoint| async move {
        let mut client = ShardedClient::open_with(endpoint, tls).await?;
        if let Some((name, password)) = USER.get() {
            client.login(name, password).await?;
        }
        Ok(client)
    })
    .await
}
