//! Where the client library sends a group's requests: to the shard of the
//! member that leads the group, as the partition map last named it, so a
//! write on a cluster is not forwarded by a follower first (one network
//! round trip and two RPC stacks fewer). Any member takes any request, so
//! a stale route only costs that forward.
//!
//! It owns the links to the other members (opened in the background the
//! first time a group they lead is asked for, never on the request's way)
//! and the rule that refreshes the leaders: a reply whose Raft term is past
//! the term the map named for its group means leadership moved, and the
//! map is read again, at most once per [`REFRESH_EVERY`]. A member that
//! cannot be reached is left alone for [`RETRY_AFTER`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::client::{ClientError, ClientTls, Connection, GroupLeader, PartitionMap};
use super::kv::ErrorCode;

/// The least time between two readings of the partition map.
pub const REFRESH_EVERY: Duration = Duration::from_millis(200);
/// How long a member whose link failed is not tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

enum Link {
    Opening,
    /// The member's shard connections, in shard order.
    Open(Rc<Vec<Connection>>),
    Failed {
        retry_at: Instant,
    },
}

struct State {
    /// The member the client's own endpoint reaches (its shards are the
    /// client's own), and each group's leader.
    main_member: u64,
    leaders: Vec<GroupLeader>,
    links: HashMap<u64, Link>,
    /// The session the links act with, once the client logged in.
    token: Option<String>,
    /// The name and password the client logged in with: a session token
    /// expires (`auth.token_ttl_seconds`), and a link opened after that
    /// logs in again with them instead of failing.
    credentials: Option<Rc<(String, String)>>,
    refreshing: bool,
    refreshed_at: Instant,
}

/// Why a link to a leader did not open.
#[derive(Debug, thiserror::Error)]
enum OpenLinkError {
    /// The member refused the session's token (it expired, say).
    #[error("{0}")]
    Session(ClientError),
    #[error("{0}")]
    Other(ClientError),
    #[error("{0}")]
    Layout(String),
}

impl From<ClientError> for OpenLinkError {
    fn from(error: ClientError) -> OpenLinkError {
        match &error {
            ClientError::Refused { error: refusal, .. } if refusal.code == ErrorCode::Unauthenticated => {
                OpenLinkError::Session(error)
            }
            _ => OpenLinkError::Other(error),
        }
    }
}

/// The leader routes of one client; clones share them.
#[derive(Clone)]
pub struct Routes {
    state: Rc<RefCell<State>>,
    main: Connection,
    tls: ClientTls,
}

impl Routes {
    /// Routes by `map`, read through `main` (which reaches member
    /// `map.member`).
    pub fn new(main: Connection, map: &PartitionMap, tls: ClientTls) -> Routes {
        let state = State {
            main_member: map.member,
            leaders: map.leaders.clone(),
            links: HashMap::new(),
            token: None,
            credentials: None,
            refreshing: false,
            refreshed_at: Instant::now(),
        };
        Routes { state: Rc::new(RefCell::new(state)), main, tls }
    }

    /// The shard connections of the member that leads `group`, when it is
    /// another member than the client's own and its link is open; opens it
    /// in the background when it is not.
    pub fn leader_shards(&self, group: u32) -> Option<Rc<Vec<Connection>>> {
        let mut state = self.state.borrow_mut();
        let leader = state.leaders.get(group as usize)?.clone();
        if leader.member == 0 || leader.member == state.main_member || leader.client_address.is_empty() {
            return None;
        }
        match state.links.get(&leader.member) {
            Some(Link::Open(shards)) => return Some(shards.clone()),
            Some(Link::Opening) => return None,
            Some(Link::Failed { retry_at }) if Instant::now() < *retry_at => return None,
            _ => {}
        }
        state.links.insert(leader.member, Link::Opening);
        let (routes, member, address) = (self.clone(), leader.member, leader.client_address);
        tokio::task::spawn_local(async move {
            let mut token = routes.state.borrow().token.clone();
            let mut opened = routes.open(&address, token.as_deref()).await;
            if let Err(OpenLinkError::Session(_)) = &opened {
                // Links already open keep acting for the user (a stream's
                // token is checked when it opens); only new ones need the
                // fresh token.
                if let Some(fresh) = routes.log_in_again().await {
                    token = Some(fresh);
                    opened = routes.open(&address, token.as_deref()).await;
                }
            }
            let link = match opened {
                Ok(shards) => Link::Open(Rc::new(shards)),
                Err(reason) => {
                    tracing::debug!(member, %address, "requests to groups it leads go through the endpoint: {reason}");
                    Link::Failed { retry_at: Instant::now() + RETRY_AFTER }
                }
            };
            let mut state = routes.state.borrow_mut();
            // A link opened for an earlier session is opened again.
            if state.token == token {
                state.links.insert(member, link);
            } else {
                state.links.remove(&member);
            }
        });
        None
    }

    /// Makes every link act with the session `token` (a session token is
    /// good on every member): the links opened before are opened again.
    pub fn use_session(&self, token: &str) {
        let mut state = self.state.borrow_mut();
        state.token = Some(token.to_string());
        state.links.clear();
    }

    /// Remembers the name and password the session was made with, so that
    /// a link opened after the token expired logs in again.
    pub fn remember_login(&self, name: &str, password: &str) {
        self.state.borrow_mut().credentials = Some(Rc::new((name.to_string(), password.to_string())));
    }

    /// Logs in again through the endpoint with the remembered name and
    /// password; the new token is the one later links act with.
    async fn log_in_again(&self) -> Option<String> {
        let credentials = self.state.borrow().credentials.clone()?;
        match self.main.authenticate(&credentials.0, &credentials.1).await {
            Ok(token) => {
                tracing::debug!("the session token was refused for a new leader link: logged in again");
                self.state.borrow_mut().token = Some(token.clone());
                Some(token)
            }
            Err(error) => {
                tracing::debug!("logging in again for a new leader link failed: {error}");
                None
            }
        }
    }

    /// Connects to every shard of the member at `address`, checking it
    /// shares the endpoint's layout, acting with the session `token`.
    async fn open(&self, address: &str, token: Option<&str>) -> Result<Vec<Connection>, OpenLinkError> {
        let main = Connection::open_with(address, &self.tls).await?;
        let map = main.partition_map().await?;
        let expected = self.state.borrow().leaders.len() as u32;
        if map.groups != expected {
            return Err(OpenLinkError::Layout(format!(
                "{address} runs {} groups, the endpoint {expected}",
                map.groups
            )));
        }
        Ok(super::client::open_shards(address, &map, &self.tls, token).await?)
    }

    /// A reply about `group` carried Raft term `term`: past the term of the
    /// leader the map named, leadership moved, and the map is read again.
    pub fn saw_term(&self, group: u32, term: u64) {
        let mut state = self.state.borrow_mut();
        let known = state.leaders.get(group as usize).map_or(0, |leader| leader.term);
        if term <= known || state.refreshing || state.refreshed_at.elapsed() < REFRESH_EVERY {
            return;
        }
        state.refreshing = true;
        let routes = self.clone();
        tokio::task::spawn_local(async move {
            let map = routes.main.partition_map().await;
            let mut state = routes.state.borrow_mut();
            state.refreshing = false;
            state.refreshed_at = Instant::now();
            match map {
                Ok(map) if map.leaders.len() == state.leaders.len() => state.leaders = map.leaders,
                Ok(_) => {
                    tracing::debug!("the endpoint's partition map changed its groups; leader routes kept")
                }
                Err(error) => tracing::debug!("reading the leaders again failed: {error}"),
            }
        });
    }
}
