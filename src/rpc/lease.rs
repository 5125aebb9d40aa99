//! The Lease interface of `schema/nvkv.capnp`: the server that turns calls
//! into the shard's lease requests (`shard::lease` says how a lease lives in
//! every group), and the readers of its answers for the client library.
//! Every refusal reaches the client as a typed `Error`.

use crate::nvkv_capnp::{lease, lease_status, response_header};
use crate::shard::lease::LeaseTtl;
use crate::shard::requests::Requests;

use super::kv::{read_error, read_header, server_error, set_error, set_header, Header, ServerError};

/// Serves the Lease interface on one connection, through its shard.
pub struct LeaseServer {
    requests: Requests,
}

impl LeaseServer {
    pub fn new(requests: Requests) -> LeaseServer {
        LeaseServer { requests }
    }
}

fn set_lease_status(mut builder: lease_status::Builder<'_>, lease: &LeaseTtl) {
    builder.set_id(lease.id);
    builder.set_ttl(lease.remaining_ttl);
    builder.set_granted_ttl(lease.granted_ttl);
}

impl lease::Server for LeaseServer {
    async fn grant(
        self: capnp::capability::Rc<Self>,
        params: lease::GrantParams,
        mut results: lease::GrantResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let result = results.get().init_result();
        match self.requests.lease_grant(params.get_ttl(), params.get_id()).await {
            Ok(answer) => {
                let mut ok = result.init_ok();
                set_header(ok.reborrow().init_header(), &answer, answer.response.revision);
                ok.set_id(answer.response.id);
                ok.set_ttl(answer.response.ttl_seconds);
            }
            Err(error) => set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }

    async fn revoke(
        self: capnp::capability::Rc<Self>,
        params: lease::RevokeParams,
        mut results: lease::RevokeResults,
    ) -> Result<(), capnp::Error> {
        let id = params.get()?.get_id();
        let result = results.get().init_result();
        match self.requests.lease_revoke(id).await {
            Ok(answer) => {
                let mut ok = result.init_ok();
                set_header(ok.reborrow().init_header(), &answer, answer.response.revision);
                ok.set_deleted(answer.response.deleted);
            }
            Err(error) => set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }

    async fn keep_alive(
        self: capnp::capability::Rc<Self>,
        params: lease::KeepAliveParams,
        mut results: lease::KeepAliveResults,
    ) -> Result<(), capnp::Error> {
        let id = params.get()?.get_id();
        let result = results.get().init_result();
        match self.requests.lease_keep_alive(id).await {
            Ok(answer) => {
                let lease = &answer.response.lease;
                let mut ok = result.init_ok();
                set_header(ok.reborrow().init_header(), &answer, answer.response.revision);
                ok.set_id(lease.id);
                ok.set_ttl(lease.remaining_ttl);
            }
            Err(error) => set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }

    async fn time_to_live(
        self: capnp::capability::Rc<Self>,
        params: lease::TimeToLiveParams,
        mut results: lease::TimeToLiveResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let result = results.get().init_result();
        match self.requests.lease_time_to_live(params.get_id(), params.get_keys()).await {
            Ok(answer) => {
                let report = &answer.response;
                let mut ok = result.init_ok();
                set_header(ok.reborrow().init_header(), &answer, report.revision);
                ok.set_id(report.lease.id);
                ok.set_ttl(report.lease.remaining_ttl);
                ok.set_granted_ttl(report.lease.granted_ttl);
                ok.set_more_keys(report.more_keys);
                let mut keys = ok.init_keys(report.keys.len() as u32);
                for (position, key) in report.keys.iter().enumerate() {
                    keys.set(position as u32, key);
                }
            }
            Err(error) => set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }

    async fn leases(
        self: capnp::capability::Rc<Self>,
        _: lease::LeasesParams,
        mut results: lease::LeasesResults,
    ) -> Result<(), capnp::Error> {
        let result = results.get().init_result();
        match self.requests.lease_list().await {
            Ok(answer) => {
                let list = &answer.response;
                let mut ok = result.init_ok();
                set_header(ok.reborrow().init_header(), &answer, list.revision);
                ok.set_more(list.more);
                let mut leases = ok.init_leases(list.leases.len() as u32);
                for (position, lease) in list.leases.iter().enumerate() {
                    set_lease_status(leases.reborrow().get(position as u32), lease);
                }
            }
            Err(error) => set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }
}

/// A granted lease, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseGrantAnswer {
    pub header: Header,
    pub id: i64,
    /// Seconds granted.
    pub ttl: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRevokeAnswer {
    pub header: Header,
    pub id: i64,
    /// Attached keys deleted, over every group.
    pub deleted: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseKeepAliveAnswer {
    pub header: Header,
    pub id: i64,
    /// Seconds left after the renewal: the granted TTL.
    pub ttl: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseTimeToLiveAnswer {
    pub header: Header,
    pub id: i64,
    /// Seconds left, rounded up; 0 once expired (its revoke under way).
    pub ttl: i64,
    pub granted_ttl: i64,
    /// The attached keys of every group, in key order (when asked for).
    #[serde(serialize_with = "keys_as_text")]
    pub keys: Vec<Vec<u8>>,
    pub more_keys: bool,
}

fn keys_as_text<S: serde::Serializer>(keys: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(keys.iter().map(|key| String::from_utf8_lossy(key)))
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseStatusView {
    pub id: i64,
    /// Seconds left, as in `LeaseTimeToLiveAnswer`.
    pub ttl: i64,
    pub granted_ttl: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseListAnswer {
    pub header: Header,
    pub leases: Vec<LeaseStatusView>,
    pub more: bool,
}

/// What every result of the interface is: an answer or a typed refusal.
pub type Decoded<T> = capnp::Result<Result<T, ServerError>>;

fn header_of(reader: capnp::Result<response_header::Reader<'_>>) -> capnp::Result<Header> {
    Ok(read_header(reader?))
}

/// The answers of each method, read from their results.
pub mod read {
    use super::*;
    use crate::nvkv_capnp::{
        lease_grant_result, lease_keep_alive_result, lease_leases_result, lease_revoke_result,
        lease_time_to_live_result,
    };

    pub fn grant(reader: lease_grant_result::Reader<'_>) -> Decoded<LeaseGrantAnswer> {
        Ok(match reader.which()? {
            lease_grant_result::Ok(ok) => {
                let ok = ok?;
                Ok(LeaseGrantAnswer {
                    header: header_of(ok.get_header())?,
                    id: ok.get_id(),
                    ttl: ok.get_ttl(),
                })
            }
            lease_grant_result::Error(error) => Err(read_error(error?)?),
        })
    }

    pub fn revoke(reader: lease_revoke_result::Reader<'_>, id: i64) -> Decoded<LeaseRevokeAnswer> {
        Ok(match reader.which()? {
            lease_revoke_result::Ok(ok) => {
                let ok = ok?;
                Ok(LeaseRevokeAnswer { header: header_of(ok.get_header())?, id, deleted: ok.get_deleted() })
            }
            lease_revoke_result::Error(error) => Err(read_error(error?)?),
        })
    }

    pub fn keep_alive(reader: lease_keep_alive_result::Reader<'_>) -> Decoded<LeaseKeepAliveAnswer> {
        Ok(match reader.which()? {
            lease_keep_alive_result::Ok(ok) => {
                let ok = ok?;
                Ok(LeaseKeepAliveAnswer {
                    header: header_of(ok.get_header())?,
                    id: ok.get_id(),
                    ttl: ok.get_ttl(),
                })
            }
            lease_keep_alive_result::Error(error) => Err(read_error(error?)?),
        })
    }

    pub fn time_to_live(reader: lease_time_to_live_result::Reader<'_>) -> Decoded<LeaseTimeToLiveAnswer> {
        Ok(match reader.which()? {
            lease_time_to_live_result::Ok(ok) => {
                let ok = ok?;
                let mut keys = Vec::new();
                for key in ok.get_keys()? {
                    keys.push(key?.to_vec());
                }
                Ok(LeaseTimeToLiveAnswer {
                    header: header_of(ok.get_header())?,
                    id: ok.get_id(),
                    ttl: ok.get_ttl(),
                    granted_ttl: ok.get_granted_ttl(),
                    keys,
                    more_keys: ok.get_more_keys(),
                })
            }
            lease_time_to_live_result::Error(error) => Err(read_error(error?)?),
        })
    }

    pub fn list(reader: lease_leases_result::Reader<'_>) -> Decoded<LeaseListAnswer> {
        Ok(match reader.which()? {
            lease_leases_result::Ok(ok) => {
                let ok = ok?;
                let mut leases = Vec::new();
                for lease in ok.get_leases()? {
                    leases.push(LeaseStatusView {
                        id: lease.get_id(),
                        ttl: lease.get_ttl(),
                        granted_ttl: lease.get_granted_ttl(),
                    });
                }
                Ok(LeaseListAnswer { header: header_of(ok.get_header())?, leases, more: ok.get_more() })
            }
            lease_leases_result::Error(error) => Err(read_error(error?)?),
        })
    }
}

/// Lease ids as people read and type them: hexadecimal, as etcdctl shows
/// them (JSON and the API carry plain numbers).
pub fn format_id(id: i64) -> String {
    format!("{id:x}")
}

/// Reads a lease id as `format_id` writes it (an optional `0x` is fine).
pub fn parse_id(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    i64::from_str_radix(digits, 16).ok().filter(|id| *id > 0).ok_or_else(|| {
        format!(
            "lease id {text:?} is not a positive hexadecimal number up to 7fffffffffffffff; \
             give the id `nvkv lease grant` printed"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_in_hexadecimal() {
        assert_eq!(format_id(0x694d_71dd_acfd_a227), "694d71ddacfda227");
        assert_eq!(parse_id("694d71ddacfda227"), Ok(0x694d_71dd_acfd_a227));
        assert_eq!(parse_id("0x1f"), Ok(31));
        assert_eq!(parse_id("10"), Ok(16));
        for bad in ["", "0", "-1", "xyz", "8000000000000000", "0x"] {
            let error = parse_id(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }
}
