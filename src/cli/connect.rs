//! How a client command reaches the cluster: a single-threaded runtime for
//! its calls, the walk over `--endpoints` that asks each in turn until one
//! answers, and the one that asks them all and keeps every answer and
//! every failure.

use std::future::Future;
use std::sync::OnceLock;

use nvkv::rpc::client::{ClientError, ClientTls, Connection, NodeStatus, ShardedClient};

/// `--user NAME:PASSWORD`, once parsed: every connection a client command
/// opens logs in as this user.
static USER: OnceLock<(String, String)> = OnceLock::new();

/// Makes every later connection log in as `name` with `password`.
pub fn log_in_as(name: String, password: String) {
    let _ = USER.set((name, password));
}

/// `--user`'s name and password, when it was given.
pub fn user() -> Option<(String, String)> {
    USER.get().cloned()
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
    first_answer(endpoints, Retry::AnyError, |endpoint| sharded(endpoint, tls)).await
}

/// A client of `endpoint` that sends each request to the shard of its key,
/// logged in as `--user` when it was given.
pub async fn sharded(endpoint: &str, tls: &ClientTls) -> Result<ShardedClient, ClientError> {
    let mut client = ShardedClient::open_with(endpoint, tls).await?;
    if let Some((name, password)) = USER.get() {
        client.login(name, password).await?;
    }
    Ok(client)
}

/// How long one endpoint may take to answer a question that asks every
/// endpoint: a member that accepts connections but never answers (stopped,
/// or stuck) must not hide the others.
pub const ENDPOINT_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks `ask` of every endpoint at once and returns each endpoint's answer
/// or why it gave none, in the order given.
pub async fn every_answer<'a, T, F, Fut>(endpoints: &'a [String], ask: F) -> Answers<'a, T>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let asks = endpoints.iter().map(|endpoint| {
        let answer = tokio::time::timeout(ENDPOINT_ANSWER_TIMEOUT, ask(endpoint));
        async move {
            let answer = match answer.await {
                Ok(answer) => answer.map_err(|error| error.to_string()),
                Err(_) => {
                    Err(format!("{endpoint} did not answer within {} s", ENDPOINT_ANSWER_TIMEOUT.as_secs()))
                }
            };
            (endpoint.as_str(), answer)
        }
    });
    futures::future::join_all(asks).await
}

/// The outcome of a command that asked every endpoint and printed every
/// answer: a failure that says which did not answer, so the exit code
/// tells a script.
pub fn summary<T>(answers: &[(&str, Result<T, String>)], what: &str) -> Result<(), String> {
    let failed: Vec<&str> =
        answers.iter().filter(|(_, answer)| answer.is_err()).map(|(endpoint, _)| *endpoint).collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(format!("{} of {} endpoints {what}: {}", failed.len(), answers.len(), failed.join(", ")))
}

/// Each endpoint with its answer, or why it gave none.
pub type Answers<'a, T> = Vec<(&'a str, Result<T, String>)>;

/// Every endpoint's status, or why it gave none, asked at once.
pub fn every_status<'a>(endpoints: &'a [String], tls: &ClientTls) -> Result<Answers<'a, NodeStatus>, String> {
    run_client(every_answer(endpoints, |endpoint| async move { open(endpoint, tls).await?.status().await }))
}

/// Every endpoint's answer as `value` makes it JSON, and a failure as
/// `{"endpoint", "error"}`.
pub fn answers_json<T>(
    answers: &[(&str, Result<T, String>)],
    value: impl Fn(&str, &T) -> serde_json::Value,
) -> Vec<serde_json::Value> {
    answers
        .iter()
        .map(|(endpoint, answer)| match answer {
            Ok(answer) => value(endpoint, answer),
            Err(error) => serde_json::json!({ "endpoint": endpoint, "error": error }),
        })
        .collect()
}
