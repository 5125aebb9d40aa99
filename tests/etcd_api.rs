//! nvkv's etcd v3 API through a real etcd client (the etcd-client crate,
//! the one `nvkv bench --target etcd://` uses), against the real binary:
//! the semantics Kubernetes depends on (ranges with limit, count, revision,
//! sorting and filters; txns with every compare, nested; put and delete
//! with their options; leases; compaction across groups; watches with
//! progress; status, members, hashes) and the revision model (docs/etcd.md).

mod common;

use std::future::Future;
use std::time::Duration;

use common::*;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use nvkv::kv::partition::Partitioner;
use nvkv::kv::revision::revision_group;

/// One nvkv member (two shards, four groups each: 8 groups) and where its
/// etcd API answers.
struct Member {
    daemon: Daemon,
    _setup: Setup,
    endpoint: String,
}

impl Member {
    fn start() -> Member {
        let setup = Setup::new("[reactor]\nshards = 2\n");
        let mut daemon = Daemon::start(&setup.config);
        let ready = daemon.wait_ready();
        let endpoint = ready_etcd_endpoint(&ready);
        Member { daemon, _setup: setup, endpoint }
    }

    async fn client(&self) -> Client {
        Client::connect([self.endpoint.as_str()], None).await.expect("the etcd client connects")
    }
}

const GROUPS: u32 = 8;

fn run<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
}

/// The gRPC message of an etcd client error.
fn message(error: etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => status.message().to_string(),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn keys(response: &etcd_client::GetResponse) -> Vec<String> {
    response.kvs().iter().map(|kv| kv.key_str().expect("utf-8").to_string()).collect()
}

/// Two Kubernetes-style resource prefixes that live in different groups.
fn prefixes_in_two_groups() -> (String, String) {
    let partitioner = Partitioner::new(GROUPS, 2).expect("partitioner");
    let first = "/registry/pods/".to_string();
    let other = (0..)
        .map(|index| format!("/registry/resource{index}/"))
        .find(|prefix| partitioner.group_of(prefix.as_bytes()) != partitioner.group_of(first.as_bytes()))
        .expect("another group");
    (first, other)
}

#[test]
fn ranges_answer_as_etcd_with_limit_count_revision_sorting_and_filters() {
    let member = Member::start();
    run(async {
        let mut client = member.client().await;
        eprintln!("phase: five pods, the third written twice");
        let mut revisions = Vec::new();
        for (name, value) in [("a", "5"), ("b", "4"), ("c", "3"), ("d", "2"), ("e", "1")] {
            let put = client.put(format!("/registry/pods/{name}"), value, None).await.expect("put");
            revisions.push(put.header().expect("header").revision());
        }
        let rewrite = client.put("/registry/pods/c", "9", None).await.expect("put");
        let last = rewrite.header().expect("header").revision();
        assert!(revisions.windows(2).all(|pair| pair[0] < pair[1]), "revisions grow: {revisions:?}");

        eprintln!("phase: limit keeps count exact and says more");
        let page =
            client.get("/registry/pods/", Some(GetOptions::new().with_prefix().with_limit(2))).await.unwrap();
        assert_eq!(keys(&page), ["/registry/pods/a", "/registry/pods/b"]);
        assert_eq!(page.count(), 5);
        assert!(page.more());
        assert_eq!(page.header().unwrap().revision(), last, "the header carries the store's revision");
        let rest = client
            .get("/registry/pods/b\0", Some(GetOptions::new().with_range("/registry/pods0").with_limit(10)))
            .await
            .unwrap();
        assert_eq!(keys(&rest), ["/registry/pods/c", "/registry/pods/d", "/registry/pods/e"]);
        assert!(!rest.more());

        eprintln!("phase: a read at an older revision sees the value then");
        let old = client
            .get("/registry/pods/c", Some(GetOptions::new().with_revision(revisions[2])))
            .await
            .unwrap();
        assert_eq!(old.kvs()[0].value(), b"3");
        assert_eq!(old.kvs()[0].mod_revision(), revisions[2]);
        let now = client.get("/registry/pods/c", Some(GetOptions::new().with_serializable())).await.unwrap();
        assert_eq!((now.kvs()[0].value(), now.kvs()[0].version()), (&b"9"[..], 2));
        assert_eq!(now.kvs()[0].create_revision(), revisions[2]);

        eprintln!("phase: keys only, count only");
        let listed = client
            .get("/registry/pods/", Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .unwrap();
        assert!(listed.kvs().iter().all(|kv| kv.value().is_empty()) && listed.kvs().len() == 5);
        let counted = client
            .get("/registry/pods/", Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .unwrap();
        assert_eq!((counted.count(), counted.kvs().len()), (5, 0));

        eprintln!("phase: sorting by value and by mod revision, then the limit");
        let sorted = client
            .get(
                "/registry/pods/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Value, SortOrder::Descend)
                        .with_limit(2),
                ),
            )
            .await
            .unwrap();
        assert_eq!(keys(&sorted), ["/registry/pods/c", "/registry/pods/a"], "9 then 5");
        assert!(sorted.more());
        assert_eq!(sorted.count(), 5);
        let by_mod = client
            .get(
                "/registry/pods/",
                Some(GetOptions::new().with_prefix().with_sort(SortTarget::Mod, SortOrder::Ascend)),
            )
            .await
            .unwrap();
        assert_eq!(keys(&by_mod).last().map(String::as_str), Some("/registry/pods/c"), "rewritten last");

        eprintln!("phase: mod and create revision filters");
        let filtered = client
            .get(
                "/registry/pods/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_min_mod_revision(revisions[3])
                        .with_max_create_revision(last),
                ),
            )
            .await
            .unwrap();
        assert_eq!(keys(&filtered), ["/registry/pods/c", "/registry/pods/d", "/registry/pods/e"]);
        let created_early = client
            .get(
                "/registry/pods/",
                Some(GetOptions::new().with_prefix().with_max_create_revision(revisions[1])),
            )
            .await
            .unwrap();
        assert_eq!(keys(&created_early), ["/registry/pods/a", "/registry/pods/b"]);

        eprintln!("phase: a future revision and a compacted one give etcd's errors");
        let future =
            client.get("/registry/pods/a", Some(GetOptions::new().with_revision(last + (1 << 40)))).await;
        assert_eq!(message(future.unwrap_err()), "etcdserver: mvcc: required revision is a future revision");
        let physical = etcd_client::CompactionOptions::new().with_physical();
        client
            .compact(revisions[3], Some(physical))
            .await
            .expect("a physical compaction is done when answered");
        let compacted =
            client.get("/registry/pods/a", Some(GetOptions::new().with_revision(revisions[1]))).await;
        assert_eq!(message(compacted.unwrap_err()), "etcdserver: mvcc: required revision has been compacted");
        let again = client.compact(revisions[3], None).await;
        assert_eq!(message(again.unwrap_err()), "etcdserver: mvcc: required revision has been compacted");
        let at = client
            .get("/registry/pods/a", Some(GetOptions::new().with_revision(revisions[3])))
            .await
            .unwrap();
        assert_eq!(at.kvs()[0].value(), b"5", "the value at the compact revision stays");
        let empty = client.get("", None).await;
        assert_eq!(message(empty.unwrap_err()), "etcdserver: key is not provided");
    });
    drop(member.daemon);
}

#[test]
fn txns_compare_every_target_nest_and_puts_and_deletes_take_their_options() {
    let member = Member::start();
    run(async {
        let mut client = member.client().await;
        let key = "/registry/leases/kube-system/leader";
        eprintln!("phase: kube-apiserver's create: mod_revision == 0, then put with a lease");
        let lease = client.lease_grant(60, None).await.expect("grant").id();
        let create = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, "v1", Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None)]);
        let created = client.txn(create.clone()).await.expect("txn");
        assert!(created.succeeded());
        let revision = created.header().unwrap().revision();
        let again = client.txn(create).await.expect("txn");
        assert!(!again.succeeded(), "the key exists now");
        let Some(TxnOpResponse::Get(current)) = again.op_responses().into_iter().next() else {
            panic!("the failure branch's get")
        };
        assert_eq!(current.kvs()[0].mod_revision(), revision);
        assert_eq!(current.kvs()[0].lease(), lease);

        eprintln!("phase: optimistic update on mod_revision, every other compare");
        let update =
            |expected: i64, value: &'static str| {
                Txn::new().when([Compare::mod_revision(key, CompareOp::Equal, expected)]).and_then([
                    TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease).with_prev_key())),
                ])
            };
        let updated = client.txn(update(revision, "v2")).await.expect("txn");
        assert!(updated.succeeded());
        assert!(
            !client.txn(update(revision, "v3")).await.expect("txn").succeeded(),
            "a stale revision loses"
        );
        for (compare, holds) in [
            (Compare::value(key, CompareOp::Equal, "v2"), true),
            (Compare::value(key, CompareOp::Greater, "v1"), true),
            (Compare::version(key, CompareOp::Equal, 2), true),
            (Compare::create_revision(key, CompareOp::Equal, revision), true),
            (Compare::mod_revision(key, CompareOp::Greater, revision), true),
            (Compare::mod_revision(key, CompareOp::Less, revision), false),
            (Compare::lease(key, CompareOp::Equal, lease), true),
            (Compare::lease(key, CompareOp::NotEqual, lease), false),
        ] {
            let answer = client.txn(Txn::new().when([compare.clone()])).await.expect("txn");
            assert_eq!(answer.succeeded(), holds, "{compare:?}");
        }

        eprintln!("phase: a nested txn chooses its own branch");
        let nested = Txn::new().when([Compare::version(key, CompareOp::Equal, 2)]).and_then([TxnOp::txn(
            Txn::new()
                .when([Compare::value(key, CompareOp::Equal, "nope")])
                .and_then([TxnOp::put("/registry/leases/x", "yes", None)])
                .or_else([TxnOp::put("/registry/leases/x", "no", None)]),
        )]);
        assert!(client.txn(nested).await.expect("txn").succeeded());
        let inner = client.get("/registry/leases/x", None).await.unwrap();
        assert_eq!(inner.kvs()[0].value(), b"no");

        eprintln!("phase: put with prev_kv, ignore_value and ignore_lease; delete with prev_kv");
        let put = client.put(key, "v4", Some(PutOptions::new().with_prev_key())).await.expect("put");
        assert_eq!(put.prev_key().expect("prev kv").value(), b"v2");
        let kept =
            client.put(key, "", Some(PutOptions::new().with_ignore_value().with_lease(lease))).await.unwrap();
        assert!(kept.header().unwrap().revision() > put.header().unwrap().revision());
        let read = client.get(key, None).await.unwrap();
        assert_eq!((read.kvs()[0].value(), read.kvs()[0].lease()), (&b"v4"[..], lease));
        client
            .put(key, "v5", Some(PutOptions::new().with_ignore_lease()))
            .await
            .expect("put keeps the lease");
        let read = client.get(key, None).await.unwrap();
        assert_eq!((read.kvs()[0].value(), read.kvs()[0].lease()), (&b"v5"[..], lease));
        let missing =
            client.put("/registry/leases/none", "", Some(PutOptions::new().with_ignore_value())).await;
        assert_eq!(message(missing.unwrap_err()), "etcdserver: key not found");
        let deleted = client
            .delete("/registry/leases/", Some(DeleteOptions::new().with_prefix().with_prev_key()))
            .await
            .unwrap();
        assert_eq!(deleted.deleted(), 2);
        let mut values: Vec<&[u8]> = deleted.prev_kvs().iter().map(|kv| kv.value()).collect();
        values.sort();
        assert_eq!(values, [&b"no"[..], b"v5"]);
        eprintln!("phase: a txn across groups is refused with a reason");
        let (first, other) = prefixes_in_two_groups();
        let across = Txn::new().and_then([
            TxnOp::put(format!("{first}x"), "1", None),
            TxnOp::put(format!("{other}x"), "1", None),
        ]);
        let refused = message(client.txn(across).await.unwrap_err());
        assert!(refused.contains("must stay within one group"), "{refused}");
    });
    drop(member.daemon);
}

#[test]
fn leases_grant_keep_alive_report_list_and_revoke() {
    let member = Member::start();
    run(async {
        let mut client = member.client().await;
        let grant = client.lease_grant(30, None).await.expect("grant");
        assert_eq!(grant.ttl(), 30);
        let id = grant.id();
        client.put("/registry/events/a", "1", Some(PutOptions::new().with_lease(id))).await.unwrap();
        client.put("/registry/pods/b", "1", Some(PutOptions::new().with_lease(id))).await.unwrap();
        let (mut keeper, mut answers) = client.lease_keep_alive(id).await.expect("keep-alive stream");
        for _ in 0..3 {
            keeper.keep_alive().await.expect("send");
            let answer = answers.message().await.expect("answer").expect("one");
            assert_eq!((answer.id(), answer.ttl()), (id, 30));
        }
        let alive = client
            .lease_time_to_live(id, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("ttl");
        assert_eq!(alive.granted_ttl(), 30);
        assert!((1..=30).contains(&alive.ttl()), "{}", alive.ttl());
        let mut keys: Vec<Vec<u8>> = alive.keys().to_vec();
        keys.sort();
        assert_eq!(keys, [b"/registry/events/a".to_vec(), b"/registry/pods/b".to_vec()]);
        let listed = client.leases().await.expect("leases");
        assert_eq!(listed.leases().iter().map(|lease| lease.id()).collect::<Vec<_>>(), [id]);
        client.lease_revoke(id).await.expect("revoke");
        for key in ["/registry/events/a", "/registry/pods/b"] {
            assert_eq!(client.get(key, None).await.unwrap().count(), 0, "{key} went with its lease");
        }
        let gone = client.lease_time_to_live(id, None).await.expect("ttl of a revoked lease");
        assert_eq!(gone.ttl(), -1, "etcd answers -1 for a lease it does not know");
        keeper.keep_alive().await.expect("send");
        let answer = answers.message().await.expect("answer").expect("one");
        assert_eq!(answer.ttl(), 0, "a revoked lease renews to TTL 0");
        let again = client.lease_revoke(id).await;
        assert_eq!(message(again.unwrap_err()), "etcdserver: requested lease not found");
    });
    drop(member.daemon);
}

#[test]
fn revisions_are_unique_across_groups_and_compaction_spans_them() {
    let member = Member::start();
    run(async {
        let mut client = member.client().await;
        let (first, other) = prefixes_in_two_groups();
        eprintln!("phase: interleaved writes to two groups take distinct revisions, growing per group");
        let mut seen = std::collections::BTreeSet::new();
        let mut per_prefix: Vec<Vec<i64>> = vec![Vec::new(), Vec::new()];
        for round in 0..20 {
            for (index, prefix) in [&first, &other].into_iter().enumerate() {
                let put =
                    client.put(format!("{prefix}k{}", round % 3), format!("{round}"), None).await.unwrap();
                let revision = put.header().unwrap().revision();
                assert!(seen.insert(revision), "revision {revision} given twice");
                per_prefix[index].push(revision);
            }
        }
        for revisions in &per_prefix {
            assert!(revisions.windows(2).all(|pair| pair[0] < pair[1]));
        }
        let group_of = |revisions: &[i64]| revision_group(revisions[0]);
        assert_ne!(group_of(&per_prefix[0]), group_of(&per_prefix[1]), "the low bits name the group");

        eprintln!("phase: the bare resource key shares its prefix's group, and so its revision");
        let bare = client.get(first.trim_end_matches('/'), None).await.unwrap();
        assert_eq!(bare.header().unwrap().revision(), *per_prefix[0].last().unwrap());

        eprintln!("phase: Compact(r) of one group's revision compacts the other group to what it held then");
        let cut = per_prefix[0][10];
        let other_before_cut = *per_prefix[1].iter().filter(|revision| **revision < cut).max().unwrap();
        client.compact(cut, None).await.expect("compact");
        let below = client
            .get(format!("{other}k0"), Some(GetOptions::new().with_revision(other_before_cut - 1)))
            .await;
        assert_eq!(message(below.unwrap_err()), "etcdserver: mvcc: required revision has been compacted");
        let above = *per_prefix[1].iter().find(|revision| **revision > cut).unwrap();
        let readable = client.get(format!("{other}k0"), Some(GetOptions::new().with_revision(above))).await;
        assert!(readable.is_ok(), "history after the cut stays: {readable:?}");
        let (stream_events, watch) = {
            let mut stream = client
                .watch(
                    other.as_str(),
                    Some(WatchOptions::new().with_prefix().with_start_revision(other_before_cut - 1)),
                )
                .await
                .expect("watch");
            let created = stream.message().await.unwrap().unwrap();
            assert!(created.created());
            let cancelled = stream.message().await.unwrap().unwrap();
            (cancelled.canceled(), cancelled.compact_revision())
        };
        assert!(stream_events, "a watch from below the cut is cancelled as compacted");
        assert!(watch > 0 && watch <= cut, "with the compact revision {watch} (cut {cut})");
    });
    drop(member.daemon);
}

#[test]
fn watches_share_a_stream_with_prev_kv_filters_progress_and_cancel() {
    let member = Member::start();
    run(async {
        let mut client = member.client().await;
        let mut writer = member.client().await;
        let start = writer.put("/registry/pods/w0", "0", None).await.unwrap().header().unwrap().revision();
        let mut stream = client
            .watch(
                "/registry/pods/",
                Some(WatchOptions::new().with_prefix().with_prev_key().with_start_revision(start)),
            )
            .await
            .expect("watch");
        let created = stream.message().await.unwrap().unwrap();
        assert!(created.created());
        let pods = created.watch_id();
        stream
            .watch(
                "/registry/services/",
                Some(WatchOptions::new().with_prefix().with_filters([etcd_client::WatchFilterType::NoPut])),
            )
            .await
            .expect("second watch");
        eprintln!("phase: events from the start revision, prev_kv, the filter drops puts");
        writer.put("/registry/pods/w0", "1", None).await.unwrap();
        writer.put("/registry/services/s", "1", None).await.unwrap();
        writer.delete("/registry/services/s", None).await.unwrap();
        let mut services = None;
        let mut pod_events = Vec::new();
        let mut service_events = Vec::new();
        while pod_events.len() < 2 || service_events.is_empty() {
            let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("events within 10 s")
                .unwrap()
                .unwrap();
            if response.created() {
                assert_ne!(response.watch_id(), pods);
                services = Some(response.watch_id());
                continue;
            }
            for event in response.events() {
                let kv = event.kv().unwrap();
                let seen =
                    (event.event_type(), kv.value().to_vec(), event.prev_kv().map(|kv| kv.value().to_vec()));
                if response.watch_id() == pods {
                    pod_events.push(seen);
                } else {
                    assert_eq!(Some(response.watch_id()), services, "created before its events");
                    service_events.push(seen);
                }
            }
        }
        assert_eq!(
            pod_events,
            [(EventType::Put, b"0".to_vec(), None), (EventType::Put, b"1".to_vec(), Some(b"0".to_vec()))]
        );
        assert_eq!(service_events, [(EventType::Delete, Vec::new(), None)], "no put with NOPUT");

        let services = services.expect("the second watch was created");

        eprintln!("phase: RequestProgress is answered per watch, never ahead of what it delivered");
        let last = writer.put("/registry/pods/w1", "2", None).await.unwrap().header().unwrap().revision();
        stream.request_progress().await.expect("progress");
        let mut delivered = 0;
        let mut progressed = std::collections::BTreeMap::new();
        while progressed.len() < 2 {
            let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("progress within 10 s")
                .unwrap()
                .unwrap();
            if response.events().is_empty() {
                let revision = response.header().unwrap().revision();
                if response.watch_id() == pods {
                    assert!(
                        revision >= delivered,
                        "progress {revision} behind an event delivered at {delivered}"
                    );
                    assert_eq!(delivered, last, "the event before the progress came first");
                }
                progressed.insert(response.watch_id(), revision);
            } else {
                delivered = response.events().last().unwrap().kv().unwrap().mod_revision();
            }
        }
        assert!(progressed[&pods] >= last);

        eprintln!("phase: cancel ends one watch; the other goes on");
        stream.cancel(pods).await.expect("cancel");
        loop {
            let response = stream.message().await.unwrap().unwrap();
            if response.canceled() {
                assert_eq!(response.watch_id(), pods);
                break;
            }
        }
        writer.put("/registry/pods/w2", "3", None).await.unwrap();
        writer.put("/registry/services/t", "1", None).await.unwrap();
        writer.delete("/registry/services/t", None).await.unwrap();
        let next =
            tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(next.watch_id(), services, "nothing more from the cancelled watch");
    });
    drop(member.daemon);
}

#[test]
fn status_members_hashes_alarms_and_auth_answer_as_etcd_clients_expect() {
    let member = Member::start();
    run(async {
        let mut client = member.client().await;
        client.put("/registry/health", "ok", None).await.unwrap();
        let status = client.status().await.expect("status");
        assert_eq!(status.version(), "3.5.17", "a version kube-apiserver accepts for progress requests");
        let member_id = status.header().unwrap().member_id();
        assert_eq!(status.leader(), member_id, "one member leads");
        assert!(status.db_size() > 0 && status.raft_index() > 0 && status.raft_term() > 0);
        let members = client.member_list().await.expect("members");
        assert_eq!(members.members().len(), 1);
        let listed = &members.members()[0];
        assert_eq!(listed.id(), member_id);
        assert_eq!(listed.client_urls(), [format!("http://{}", member.endpoint)]);
        assert!(!listed.is_learner());
        let whole = client.hash().await.expect("hash").hash();
        let hash = client.hash_kv(0).await.expect("hash kv");
        assert_eq!(hash.hash(), client.hash_kv(0).await.unwrap().hash(), "no write between, same hash");
        client.put("/registry/health", "changed", None).await.unwrap();
        assert_ne!(hash.hash(), client.hash_kv(0).await.unwrap().hash(), "a write changes it");
        assert_ne!(whole, client.hash().await.unwrap().hash(), "and the store's hash");
        let alarms = client.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await;
        assert!(alarms.expect("alarms").alarms().is_empty());
        client.defragment().await.expect("defragment is a no-op success");
        // As on etcd: disabling authentication that is off succeeds, and the
        // Auth service keeps users (tests/etcdctl.rs compares whole sessions).
        client.auth_disable().await.expect("disabling auth that is off succeeds");
        client.user_add("root", "secret", None).await.expect("the Auth service adds a user");
        let users = client.user_list().await.expect("users");
        assert_eq!(users.users(), ["root"]);
    });
    drop(member.daemon);
}

#[test]
fn a_watch_that_asks_for_fragments_gets_a_large_revision_in_pieces() {
    let setup = Setup::new(
        "[reactor]\nshards = 2\n\n[store]\nrequest_bytes_max = \"64KiB\"\nvalue_bytes_max = \"16KiB\"\n",
    );
    let mut daemon = Daemon::start(&setup.config);
    let endpoint = ready_etcd_endpoint(&daemon.wait_ready());
    run(async {
        let mut client = Client::connect([endpoint.as_str()], None).await.expect("connect");
        for index in 0..10 {
            client.put(format!("/registry/secrets/s{index}"), vec![b'x'; 12 << 10], None).await.expect("put");
        }
        let mut streams = Vec::new();
        for fragment in [true, false] {
            let mut options = WatchOptions::new().with_prefix().with_prev_key();
            if fragment {
                options = options.with_fragment();
            }
            let mut stream = client.watch("/registry/secrets/", Some(options)).await.expect("watch");
            assert!(stream.message().await.unwrap().unwrap().created());
            streams.push(stream);
        }
        eprintln!("phase: one delete of ten keys with their 12 KiB values: one revision of 120 KiB");
        let deleted =
            client.delete("/registry/secrets/", Some(DeleteOptions::new().with_prefix())).await.unwrap();
        let revision = deleted.header().unwrap().revision();
        for (stream, fragment) in streams.iter_mut().zip([true, false]) {
            let mut responses = 0;
            let mut events = 0;
            while events < 10 {
                let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .expect("events within 10 s")
                    .unwrap()
                    .unwrap();
                assert!(response.events().iter().all(|event| event.kv().unwrap().mod_revision() == revision));
                assert!(response
                    .events()
                    .iter()
                    .all(|event| event.prev_kv().unwrap().value().len() == 12 << 10));
                events += response.events().len();
                responses += 1;
            }
            assert_eq!(events, 10);
            if fragment {
                assert!(
                    responses >= 2,
                    "fragments of at most store.request_bytes_max: {responses} response(s)"
                );
            } else {
                assert_eq!(responses, 1, "without fragment, a revision comes whole");
            }
        }
    });
    drop(daemon.child.kill());
}

#[test]
fn members_are_added_as_learners_promoted_listed_and_removed_through_the_etcd_api() {
    use common::cluster::{cluster_configs, free_ports};
    let directory = tempfile::tempdir().expect("temp dir");
    let members = cluster_configs(directory.path(), 2);
    let mut daemons: Vec<Daemon> = Vec::new();
    let mut endpoints = Vec::new();
    for member in &members {
        let mut daemon = Daemon::start(&member.config);
        endpoints.push(ready_etcd_endpoint(&daemon.wait_ready()));
        daemons.push(daemon);
    }
    let fourth_ports = free_ports(3);
    let peer_url = format!("http://127.0.0.1:{}", fourth_ports + 2);
    let id = run(async {
        let mut client = Client::connect([endpoints[0].as_str()], None).await.expect("connect");
        eventually_async(|| async {
            client.clone().put("/registry/pods/before", "1", None).await.map(|_| ())
        })
        .await;
        eprintln!("phase: MemberAdd adds a learner and names its id");
        let added = client.member_add([peer_url.as_str()], None).await.expect("member add");
        let member = added.member().expect("the added member");
        assert!(member.is_learner(), "members join as learners");
        assert_eq!(member.peer_urls(), std::slice::from_ref(&peer_url));
        assert_eq!(added.member_list().len(), 4);
        let update = client.member_update(member.id(), vec![peer_url.clone()]).await;
        assert!(message(update.unwrap_err()).contains("remove it and add it again"));
        member.id()
    });

    eprintln!("phase: the new member starts in join mode with that id and catches up");
    let listed: String = members
        .iter()
        .map(|member| (member.id, member.client_port, member.peer_port))
        .chain(std::iter::once((id, fourth_ports, fourth_ports + 2)))
        .map(|(member, client, peer)| {
            format!(
                "[[cluster.members]]\nid = {member}\nname = \"node{member}\"\nclient_address = \"127.0.0.1:{client}\"\n\
                 peer_address = \"127.0.0.1:{peer}\"\n\n"
            )
        })
        .collect();
    let config = directory.path().join("node4.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nmember_id = {id}\nname = \"node{id}\"\ndata_dir = \"{}\"\nclient_address = \"127.0.0.1:{fourth_ports}\"\n\
             peer_address = \"127.0.0.1:{}\"\n\n[etcd]\naddress = \"127.0.0.1:0\"\n\n[reactor]\nshards = 1\n\n\
             [namespace]\nnamespace_bytes = \"64MiB\"\n\n[log]\ngroups_per_shard = 2\n\n\
             [cluster]\nname = \"test-cluster\"\njoin = true\n\n{listed}",
            directory.path().join("data4").display(),
            fourth_ports + 2
        ),
    )
    .expect("write config");
    let mut fourth = Daemon::start(&config);
    fourth.wait_ready();
    run(async {
        let mut client = Client::connect([endpoints[1].as_str()], None).await.expect("connect");
        eprintln!("phase: MemberPromote makes it a voter once it caught up");
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            match client.member_promote(id).await {
                Ok(promoted) => {
                    assert!(promoted.members().iter().all(|member| !member.is_learner()));
                    break;
                }
                Err(error) if std::time::Instant::now() < deadline => {
                    eprintln!("not yet: {error}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(error) => panic!("the learner was never promoted: {error}"),
            }
        }
        let listed = client.member_list().await.expect("member list");
        let ids: BTreeSet<u64> = listed.members().iter().map(|member| member.id()).collect();
        assert_eq!(ids, [1, 2, 3, id].into_iter().collect());
        eprintln!("phase: MemberRemove takes it out again");
        let removed = client.member_remove(id).await.expect("member remove");
        assert_eq!(removed.members().len(), 3, "{:?}", removed.members());
    });
    drop(fourth);
    drop(daemons);
}

use std::collections::BTreeSet;

/// Retries `attempt` until it succeeds (a fresh cluster may still elect).
async fn eventually_async<F, Fut>(mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), etcd_client::Error>>,
{
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        match attempt().await {
            Ok(()) => return,
            Err(error) if std::time::Instant::now() < deadline => {
                eprintln!("retrying: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("never succeeded: {error}"),
        }
    }
}

#[test]
fn quiet_watches_hear_progress_ranges_watch_their_interval_and_ranges_across_groups_read_at_a_revision() {
    let setup = Setup::new("[reactor]\nshards = 2\n\n[store]\nwatch_progress_interval_ms = 200\n");
    let mut daemon = Daemon::start(&setup.config);
    let endpoint = ready_etcd_endpoint(&daemon.wait_ready());
    run(async {
        let mut client = Client::connect([endpoint.as_str()], None).await.expect("connect");
        let (first, other) = prefixes_in_two_groups();
        let written = client.put(format!("{first}a"), "1", None).await.unwrap().header().unwrap().revision();

        eprintln!("phase: a quiet watch with progress_notify hears the revision it has delivered up to");
        let mut quiet = client
            .watch(first.as_str(), Some(WatchOptions::new().with_prefix().with_progress_notify()))
            .await
            .expect("watch");
        assert!(quiet.message().await.unwrap().unwrap().created());
        let progress =
            tokio::time::timeout(Duration::from_secs(5), quiet.message()).await.expect("within 5 s");
        let progress = progress.unwrap().unwrap();
        assert!(progress.events().is_empty());
        assert!(progress.header().unwrap().revision() >= written, "the group's revision, all delivered");

        eprintln!("phase: a watch of an interval [b, d) sees b and c, not d");
        let mut interval = client
            .watch(format!("{first}b"), Some(WatchOptions::new().with_range(format!("{first}d"))))
            .await
            .expect("watch");
        assert!(interval.message().await.unwrap().unwrap().created());
        for key in ["d", "b", "c"] {
            client.put(format!("{first}{key}"), key, None).await.unwrap();
        }
        let mut keys = Vec::new();
        while keys.len() < 2 {
            let response =
                tokio::time::timeout(Duration::from_secs(5), interval.message()).await.unwrap().unwrap();
            for event in response.unwrap().events() {
                keys.push(event.kv().unwrap().key_str().unwrap().to_string());
            }
        }
        assert_eq!(keys, [format!("{first}b"), format!("{first}c")]);

        eprintln!("phase: a range across groups at one group's revision reads the other as it was then");
        let other_written =
            client.put(format!("{other}x"), "old", None).await.unwrap().header().unwrap().revision();
        let cut = client.put(format!("{first}e"), "e", None).await.unwrap().header().unwrap().revision();
        client.put(format!("{other}x"), "new", None).await.unwrap();
        let everything = client
            .get("/registry/", Some(GetOptions::new().with_prefix().with_revision(cut)))
            .await
            .expect("a range across groups at a revision");
        let value = |key: String| {
            everything.kvs().iter().find(|kv| kv.key() == key.as_bytes()).map(|kv| kv.value().to_vec())
        };
        assert_eq!(
            value(format!("{other}x")),
            Some(b"old".to_vec()),
            "as it was at {cut} (written at {other_written})"
        );
        assert_eq!(value(format!("{first}e")), Some(b"e".to_vec()));
        let future = client
            .get("/registry/", Some(GetOptions::new().with_prefix().with_revision(cut + (1 << 40))))
            .await;
        assert_eq!(message(future.unwrap_err()), "etcdserver: mvcc: required revision is a future revision");
    });
    drop(daemon.child.kill());
}

/// The etcd KV calls the etcd port answered on its direct unary path, on
/// all its shards (`nvkv_etcd_direct_calls_total` on the metrics endpoint).
fn direct_calls(metrics_port: u16) -> u64 {
    let (status, body) = http_get(metrics_port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let samples: Vec<u64> = body
        .lines()
        .filter(|line| line.starts_with("nvkv_etcd_direct_calls_total{"))
        .map(|line| line.rsplit(' ').next().and_then(|value| value.parse().ok()).expect("a count"))
        .collect();
    assert_eq!(samples.len(), 2, "one count per shard:\n{body}");
    samples.iter().sum()
}

/// The gRPC code and message of an etcd client error.
fn code_and_message(error: etcd_client::Error) -> (tonic::Code, String) {
    match error {
        etcd_client::Error::GRpcStatus(status) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// Range, Put, DeleteRange and Txn are answered on the etcd port's direct
/// unary path (its counter counts each), with the answers and refusals
/// tonic's service gave: a future revision, a request over the size limit,
/// a write the caller's roles do not allow. A message over the limit and
/// its headroom is tonic's to refuse, with tonic's words.
#[test]
fn hot_kv_calls_take_the_direct_path_and_answer_as_the_tonic_service() {
    let metrics_port = common::cluster::free_ports(1);
    let setup = Setup::new(&format!(
        "[reactor]\nshards = 2\n\n[store]\nrequest_bytes_max = \"64KiB\"\nvalue_bytes_max = \"32KiB\"\n\n[metrics]\naddress = \
         \"127.0.0.1:{metrics_port}\"\n"
    ));
    let mut daemon = Daemon::start(&setup.config);
    let endpoint = ready_etcd_endpoint(&daemon.wait_ready());
    run(async {
        let mut client = Client::connect([endpoint.as_str()], None).await.expect("the etcd client connects");
        let before = direct_calls(metrics_port);

        eprintln!("phase: puts, ranges, a txn and a delete");
        let mut last = 0;
        for index in 0..10 {
            let put = client.put(format!("/direct/{index}"), format!("v{index}"), None).await.expect("put");
            last = last.max(put.header().expect("a header").revision());
        }
        for index in 0..10 {
            let got = client.get(format!("/direct/{index}"), None).await.expect("get");
            let kv = &got.kvs()[0];
            assert_eq!(
                (kv.key(), kv.value()),
                (format!("/direct/{index}").as_bytes(), format!("v{index}").as_bytes())
            );
        }
        let txn = Txn::new()
            .when([Compare::value("/direct/0", CompareOp::Equal, "v0")])
            .and_then([TxnOp::put("/direct/0", "w0", None)]);
        assert!(client.txn(txn).await.expect("txn").succeeded(), "the txn's compare held");
        let deleted =
            client.delete("/direct/1", Some(DeleteOptions::new().with_prev_key())).await.expect("delete");
        assert_eq!(deleted.prev_kvs()[0].value(), b"v1");
        let got = client.get("/direct/0", None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), b"w0");
        assert_eq!(direct_calls(metrics_port), before + 23, "every call took the direct path");

        eprintln!("phase: refusals answered directly, with the codes and words tonic's service gave");
        let future = client.get("/direct/2", Some(GetOptions::new().with_revision(last + (1 << 40)))).await;
        assert_eq!(
            code_and_message(future.unwrap_err()),
            (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".to_string())
        );
        let large = client.put("/direct/large", vec![b'x'; 100 << 10], None).await;
        assert_eq!(
            code_and_message(large.unwrap_err()),
            (tonic::Code::InvalidArgument, "etcdserver: request is too large".to_string())
        );
        assert_eq!(direct_calls(metrics_port), before + 25, "the refusals took the direct path");

        eprintln!("phase: a message over the limit and its headroom is tonic's refusal");
        let huge = client.put("/direct/huge", vec![b'x'; 200 << 10], None).await;
        let (code, refusal) = code_and_message(huge.unwrap_err());
        assert_eq!(code, tonic::Code::OutOfRange, "{refusal}");
        assert!(refusal.contains("decoded message length too large"), "{refusal}");
        assert_eq!(direct_calls(metrics_port), before + 25, "tonic refused it");

        eprintln!("phase: a reader's put is denied, its range served, root's put done");
        client.role_add("root").await.expect("role root");
        client.user_add("root", "rootpw", None).await.expect("user root");
        client.user_grant_role("root", "root").await.expect("root is root");
        client.role_add("reading").await.expect("role reading");
        let permission = etcd_client::Permission::read("/direct/").with_prefix();
        client.role_grant_permission("reading", permission).await.expect("reading may read /direct/");
        client.user_add("reader", "readerpw", None).await.expect("user reader");
        client.user_grant_role("reader", "reading").await.expect("reader reads");
        client.auth_enable().await.expect("auth enabled");
        let as_user = |name: &'static str, password: &'static str| {
            let options = etcd_client::ConnectOptions::new().with_user(name, password);
            Client::connect([endpoint.clone()], Some(options))
        };
        let mut reader = as_user("reader", "readerpw").await.expect("the reader connects");
        let before = direct_calls(metrics_port);
        let denied = reader.put("/direct/2", "r", None).await;
        assert_eq!(
            code_and_message(denied.unwrap_err()),
            (tonic::Code::PermissionDenied, "etcdserver: permission denied".to_string())
        );
        let got = reader.get("/direct/2", None).await.expect("the reader reads");
        assert_eq!(got.kvs()[0].value(), b"v2");
        let mut root = as_user("root", "rootpw").await.expect("root connects");
        root.put("/direct/2", "root", None).await.expect("root writes");
        let anonymous = client.put("/direct/3", "anyone", None).await;
        assert_eq!(
            code_and_message(anonymous.unwrap_err()),
            (tonic::Code::InvalidArgument, "etcdserver: user name is empty".to_string())
        );
        assert_eq!(direct_calls(metrics_port), before + 4, "the callers' calls took the direct path");
    });
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit();
}
