//! The Prometheus endpoint (`[metrics] address`): `GET /metrics` answers
//! the node's numbers in Prometheus text format (version 0.0.4), gathered
//! from every shard through its mailbox, as `nvkv status` gathers them.
//!
//! - per shard and stage, latency histograms in seconds (`stage`: where a
//!   write spends its time, docs/operations.md, "Metrics");
//! - per shard, log and device counters (writes, records, bytes, flushes,
//!   snapshots) and Raft proposals;
//! - per group, its Raft and store state (term, leader, indexes, revision,
//!   keys, leases, watchers);
//! - per reactor, busy and idle seconds and sleeps;
//! - per shard and hop, the latency budget of a write (`hop`: README, "The
//!   latency budget");
//! - the process's CPU seconds.
//!
//! Beside it, the probes of load balancers and orchestrators (etcd's
//! names and meanings), each answering 200 or 503 with one line that says
//! why:
//!
//! - `GET /livez`: the process runs and every shard's reactor answers
//!   through its mailbox within [`PROBE_TIMEOUT`] (restart it if not);
//! - `GET /readyz`: live, every shard serves (its log recovered and its
//!   groups started) and every group knows a leader, so a request sent
//!   here is served (send it elsewhere if not);
//! - `GET /health`: what `/readyz` says, and no NOSPACE alarm raised, as
//!   etcd's JSON (`{"health":"true","reason":""}`, or `"false"` with the
//!   reason).
//!
//! The HTTP side is the least that serves a scraper and a prober: one
//! request per connection, a request head of at most [`REQUEST_HEAD_MAX`]
//! bytes read within [`REQUEST_TIMEOUT`], and a 404 / 405 that says what is
//! served.
//!
//! Off loopback the endpoint speaks TLS with the client port's keys (and
//! asks for a client certificate of `tls.client_ca_file` when that is set);
//! the config refuses a non-loopback address without them. Scrapes cannot
//! overload the shards: at most [`CONNECTIONS_MAX`] connections at once
//! (more are closed as they arrive) and one gathering from the shards at a
//! time (concurrent scrapes wait their turn).

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::reactor::{ReactorContext, StatsSnapshot};
use crate::shard::{self, GroupReport, ShardMetrics};

/// The longest request head read; a longer one is refused.
pub const REQUEST_HEAD_MAX: usize = 8 << 10;
/// How long a scraper may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections the endpoint holds at once.
pub const CONNECTIONS_MAX: usize = 16;
/// How long a probe waits for every shard to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const SERVED: &str = "GET /metrics, /livez, /readyz and /health are served here";

/// Upper bounds of the latency buckets, in seconds: 50 µs to 5 s.
const BUCKETS_SECONDS: [f64; 16] =
    [0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];
/// The budget's hops take microseconds: 2 µs to 1 s.
const HOP_BUCKETS_SECONDS: [f64; 16] = [
    0.000002, 0.000005, 0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05,
    0.1, 0.5, 1.0,
];

/// Serves the endpoint on `listener` from this shard's thread.
pub fn spawn_metrics_acceptor(
    context: &ReactorContext,
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    member: u64,
    groups: u32,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let context = context.clone();
    let open = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let gathering = std::rc::Rc::new(tokio::sync::Semaphore::new(1));
    tokio::task::spawn_local(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("metrics endpoint: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if open.get() >= CONNECTIONS_MAX {
                tracing::debug!(%peer, "metrics endpoint: {CONNECTIONS_MAX} connections open already; closed");
                continue;
            }
            open.set(open.get() + 1);
            let (context, tls, open, gathering) =
                (context.clone(), tls.clone(), open.clone(), gathering.clone());
            tokio::task::spawn_local(async move {
                let served = match tls {
                    None => answer(stream, &context, &gathering, member, groups).await,
                    Some(acceptor) => match crate::reactor::admission::accept_tls(&acceptor, stream).await {
                        Ok(stream) => answer(stream, &context, &gathering, member, groups).await,
                        Err(reason) => Err(std::io::Error::other(format!("TLS handshake: {reason}"))),
                    },
                };
                if let Err(error) = served {
                    tracing::debug!(%peer, "metrics request: {error}");
                }
                open.set(open.get() - 1);
            });
        }
    });
    Ok(())
}

/// Reads one request and answers it.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    context: &ReactorContext,
    gathering: &tokio::sync::Semaphore,
    member: u64,
    groups: u32,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => {
            let refusal = "the request head took too long\n";
            return respond(&mut stream, "408 Request Timeout", PLAIN_TEXT, refusal).await;
        }
    };
    let Some(head) = head else {
        let refusal = format!("the request head is longer than {REQUEST_HEAD_MAX} bytes\n");
        return respond(&mut stream, "431 Request Header Fields Too Large", PLAIN_TEXT, &refusal).await;
    };
    // One gathering from the shards at a time, however many scrape.
    let Ok(_turn) = gathering.acquire().await else { return Ok(()) };
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let unavailable = "503 Service Unavailable";
    match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => match gather(context, member).await {
            Ok(body) => respond(&mut stream, "200 OK", PROMETHEUS_TEXT, &body).await,
            Err(error) => respond(&mut stream, unavailable, PLAIN_TEXT, &format!("{error}\n")).await,
        },
        (Some("GET"), Some(path @ ("/livez" | "/readyz" | "/health"))) => {
            let outcome = match path {
                "/livez" => live(context).await,
                "/readyz" => ready(context, groups, Check::Ready).await,
                _ => ready(context, groups, Check::Health).await,
            };
            let status = if outcome.is_ok() { "200 OK" } else { unavailable };
            if path == "/health" {
                let (health, reason) = match &outcome {
                    Ok(_) => ("true", String::new()),
                    Err(reason) => ("false", reason.clone()),
                };
                let body = serde_json::json!({ "health": health, "reason": reason }).to_string();
                return respond(&mut stream, status, JSON, &body).await;
            }
            let line = match outcome {
                Ok(line) => format!("ok: {line}\n"),
                Err(reason) => {
                    format!("not {}: {reason}\n", path.trim_start_matches('/').trim_end_matches('z'))
                }
            };
            respond(&mut stream, status, PLAIN_TEXT, &line).await
        }
        (Some("GET"), Some(path)) => {
            let refusal = format!("{path} is not served here; {SERVED}\n");
            respond(&mut stream, "404 Not Found", PLAIN_TEXT, &refusal).await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", PLAIN_TEXT, &format!("{SERVED}\n")).await,
    }
}

/// Whether every shard's reactor runs its mailbox: what `/livez` checks.
async fn live(context: &ReactorContext) -> Result<String, String> {
    let shards = context.mailboxes().len();
    match tokio::time::timeout(PROBE_TIMEOUT, super::cluster::on_every_shard(context, |_| ())).await {
        Ok(Ok(_)) => Ok(format!("{shards} shards answer")),
        Ok(Err(error)) => Err(error.extra),
        Err(_) => Err(format!("a shard did not answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

/// What a probe checks beyond a shard's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Every shard serves and every group knows its leader (`/readyz`).
    Ready,
    /// That, and no NOSPACE alarm (`/health`, as etcd's).
    Health,
}

/// Whether every shard serves and every group knows its leader (and, for
/// [`Check::Health`], no alarm is raised).
async fn ready(context: &ReactorContext, groups: u32, check: Check) -> Result<String, String> {
    let gathering = super::cluster::on_every_shard(context, |_| shard::registry::local_readiness());
    let shards = match tokio::time::timeout(PROBE_TIMEOUT, gathering).await {
        Ok(Ok(shards)) => shards,
        Ok(Err(error)) => return Err(error.extra),
        Err(_) => return Err(format!("a shard did not answer within {} s", PROBE_TIMEOUT.as_secs())),
    };
    readiness(&shards, groups, check)
}

/// The verdict on the shards' readiness, for a node of `groups` groups.
fn readiness(
    shards: &[shard::registry::ShardReadiness],
    groups: u32,
    check: Check,
) -> Result<String, String> {
    let starting: Vec<usize> =
        shards.iter().enumerate().filter(|(_, shard)| !shard.started).map(|(index, _)| index).collect();
    if !starting.is_empty() {
        return Err(format!("shards {starting:?} are starting (recovering their logs)"));
    }
    if let Some((group, reason)) = shards.iter().flat_map(|shard| shard.stopped.iter()).next() {
        return Err(format!(
            "group {group} stopped on this member and applies nothing more here ({reason}): restore this \
             member's data from its peers (docs/cluster.md, a member whose data was lost)"
        ));
    }
    let leaderless: Vec<u32> = shards.iter().flat_map(|shard| shard.leaderless.iter().copied()).collect();
    if !leaderless.is_empty() {
        return Err(format!(
            "groups {leaderless:?} of {groups} have no leader (no quorum of members reachable, an election \
             under way, or this member waits to be added)"
        ));
    }
    let serving: usize = shards.iter().map(|shard| shard.groups.len()).sum();
    if serving != groups as usize {
        return Err(format!("{serving} of {groups} groups run here"));
    }
    let alarmed: Vec<u32> = shards.iter().flat_map(|shard| shard.no_space.iter().copied()).collect();
    if check == Check::Health && !alarmed.is_empty() {
        return Err(format!(
            "NOSPACE alarm in groups {alarmed:?}: they refuse writes that add data until deletes and \
             compaction make room (docs/operations.md)"
        ));
    }
    Ok(format!("{} shards serve, every group of {groups} has a leader", shards.len()))
}

/// The request head up to its blank line, or `None` past the limit.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
        if head.len() > REQUEST_HEAD_MAX {
            return Ok(None);
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Every shard's numbers, rendered.
async fn gather(context: &ReactorContext, member: u64) -> Result<String, capnp::Error> {
    let shards = super::cluster::on_every_shard(context, |reactor| (shard::local_metrics(), reactor.stats()));
    let shards: Vec<(ShardMetrics, StatsSnapshot)> = shards
        .await?
        .into_iter()
        .enumerate()
        .map(|(index, (metrics, stats))| {
            metrics
                .map(|metrics| (metrics, stats))
                .ok_or_else(|| capnp::Error::failed(format!("shard {index} has no log yet")))
        })
        .collect::<Result<_, _>>()?;
    let groups = super::cluster::gather_groups(context).await?;
    Ok(render(member, &shards, &groups))
}

/// A metric of one kind of source: its name, its help text, and how to read
/// it from the source.
type Reading<Source, Value> = (&'static str, &'static str, fn(&Source) -> Value);

/// One metric family: its help and type lines, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
    }
}

/// One histogram family: a histogram per label set, in `buckets` (upper
/// bounds in seconds), with its sum and count.
fn histogram_family<'h>(
    out: &mut String,
    name: &str,
    help: &str,
    buckets: &[f64],
    histograms: impl Iterator<Item = (String, &'h crate::wal::StageHistogram)>,
) {
    let mut family = Family::new(out, name, "histogram", help);
    for (labels, histogram) in histograms {
        let histogram = histogram.histogram();
        for bound in buckets {
            let nanos = (bound * 1e9) as u64;
            let count = histogram.count_between(0, nanos);
            family.sample(&format!("{name}_bucket"), &format!("{labels},le=\"{bound}\""), count);
        }
        family.sample(&format!("{name}_bucket"), &format!("{labels},le=\"+Inf\""), histogram.len());
        // hdrhistogram keeps values at 3 significant digits: the sum is
        // exact to that precision.
        let sum = histogram.mean() * histogram.len() as f64 / 1e9;
        family.sample(&format!("{name}_sum"), &labels, format!("{sum:.9}"));
        family.sample(&format!("{name}_count"), &labels, histogram.len());
    }
}

/// CPU time (user and system) this process used so far, in seconds.
pub fn process_cpu_seconds() -> f64 {
    crate::reactor::process_cpu_time().as_secs_f64()
}

/// The text exposition of a member's shards (with their reactors' counters)
/// and groups.
pub fn render(member: u64, shards: &[(ShardMetrics, StatsSnapshot)], groups: &[GroupReport]) -> String {
    let mut out = String::new();
    let shard_labels = |metrics: &ShardMetrics| format!("member=\"{member}\",shard=\"{}\"", metrics.shard);

    histogram_family(
        &mut out,
        "nvkv_stage_duration_seconds",
        "Time a write spends in each stage on its shard (proposal_wait, queue_wait, device_write, raft, apply, \
         end_to_end), since the shard started.",
        &BUCKETS_SECONDS,
        shards.iter().flat_map(|(metrics, _)| {
            metrics.stages.iter().map(|(stage, histogram)| (format!("{},stage=\"{stage}\"", shard_labels(metrics)), histogram))
        }),
    );
    histogram_family(
        &mut out,
        "nvkv_hop_duration_seconds",
        "The latency budget: time a write spends in each hop of its way (forwarded to leader, on a follower; on \
         the leader: proposal wait, leader append durable, append entries sent, to follower, follower append \
         durable, follower ack received, commit, apply, outcome handed back; reply written, where the client's \
         KV stream ends), since the shard started.",
        &HOP_BUCKETS_SECONDS,
        shards.iter().flat_map(|(metrics, _)| {
            metrics
                .hops
                .iter()
                .map(|(hop, histogram)| (format!("{},hop=\"{hop}\"", shard_labels(metrics)), histogram))
        }),
    );
    let name = "process_cpu_seconds_total";
    let mut family = Family::new(
        &mut out,
        name,
        "counter",
        "CPU time (user and system) the node's process used since it started.",
    );
    family.sample(name, &format!("member=\"{member}\""), format!("{:.6}", process_cpu_seconds()));

    let counters: [Reading<ShardMetrics, u64>; 16] = [
        ("nvkv_log_writes_total", "Group-commit writes to the device.", |m| m.log.writes),
        ("nvkv_log_records_written_total", "Log records those writes carried.", |m| m.log.records_written),
        ("nvkv_device_written_bytes_total", "Bytes written to the namespace by the log.", |m| {
            m.log.bytes_written
        }),
        ("nvkv_device_flushes_total", "Flush commands sent to the namespace.", |m| m.log.flushes),
        (
            "nvkv_device_errors_total",
            "Device commands that failed or that the device refused (each also stops the shard's log).",
            |m| m.log.device_errors,
        ),
        (
            "nvkv_log_records_repaired_total",
            "Damaged records in the middle of the log that recovery skipped, leaving the groups that may have lost \
             entries with them to be repaired by their leaders.",
            |m| m.log.records_repaired,
        ),
        (
            "nvkv_log_snapshots_repaired_total",
            "Groups whose snapshot recovery found damaged: it dropped the snapshot and the group's log, leaving the \
             group to be repaired by its leader (which sends it a snapshot).",
            |m| m.log.snapshots_repaired,
        ),
        ("nvkv_device_reads_total", "Reads of log records from the namespace.", |m| m.log.reads_from_device),
        ("nvkv_snapshots_written_total", "Raft snapshots written to the shard's snapshot area.", |m| {
            m.log.snapshots_written
        }),
        ("nvkv_snapshot_written_bytes_total", "Bytes of those snapshots.", |m| m.log.snapshot_bytes_written),
        ("nvkv_raft_proposals_total", "Raft entries proposed for client writes.", |m| m.proposals),
        ("nvkv_raft_proposed_commands_total", "Client writes those entries carried.", |m| {
            m.proposed_commands
        }),
        (
            "nvkv_raft_proposals_held_back_total",
            "Client writes that waited for room in their group's full proposal queue.",
            |m| m.proposals_held_back,
        ),
        (
            "nvkv_etcd_direct_calls_total",
            "etcd KV calls (Range, Put, DeleteRange, Txn) the etcd port answered on its direct unary path, \
             without tonic's router and codec.",
            |m| m.etcd_direct_calls,
        ),
        (
            "nvkv_forwarded_write_calls_total",
            "Calls that forwarded client writes to their group's leader on another member (several writes \
             each when they batch).",
            |m| m.forwarded_write_calls,
        ),
        ("nvkv_forwarded_writes_total", "Client writes those calls carried.", |m| m.forwarded_writes),
    ];
    for (name, help, value) in counters {
        let mut family = Family::new(&mut out, name, "counter", help);
        for (metrics, _) in shards {
            family.sample(name, &shard_labels(metrics), value(metrics));
        }
    }
    let gauges: [Reading<ShardMetrics, u64>; 2] = [
        ("nvkv_log_used_bytes", "Bytes of the shard's log ring in use.", |m| m.log.used_bytes),
        ("nvkv_log_capacity_bytes", "Bytes of the shard's log ring.", |m| m.log.ring_bytes),
    ];
    for (name, help, value) in gauges {
        let mut family = Family::new(&mut out, name, "gauge", help);
        for (metrics, _) in shards {
            family.sample(name, &shard_labels(metrics), value(metrics));
        }
    }

    let reactor: [Reading<StatsSnapshot, f64>; 3] = [
        (
            "nvkv_reactor_busy_seconds_total",
            "Time the shard's reactor ran its loop, spinning included.",
            |s| s.busy_nanos as f64 / 1e9,
        ),
        ("nvkv_reactor_idle_seconds_total", "Time the shard's reactor slept (adaptive polling).", |s| {
            s.idle_nanos as f64 / 1e9
        }),
        ("nvkv_reactor_sleeps_total", "Times the shard's reactor went to sleep.", |s| s.sleeps as f64),
    ];
    for (name, help, value) in reactor {
        let mut family = Family::new(&mut out, name, "counter", help);
        for (metrics, stats) in shards {
            let labels = format!("{},core=\"{}\"", shard_labels(metrics), metrics.core);
            family.sample(name, &labels, format!("{:.9}", value(stats)));
        }
    }

    let per_group: [Reading<GroupReport, i128>; 11] = [
        ("nvkv_group_term", "The group's Raft term as this member knows it.", |g| g.term.into()),
        ("nvkv_group_leader", "The member id of the group's leader (0: none known).", |g| g.leader.into()),
        ("nvkv_group_applied_index", "The last log index applied to the group's store.", |g| {
            g.applied_index.into()
        }),
        ("nvkv_group_last_log_index", "The last index in the group's log.", |g| g.last_log_index.into()),
        ("nvkv_group_snapshot_index", "The log index the group's last snapshot covers.", |g| {
            g.snapshot_index.into()
        }),
        ("nvkv_group_revision", "The group's store revision.", |g| g.revision.into()),
        ("nvkv_group_compact_revision", "The group's last compaction revision.", |g| {
            g.compact_revision.into()
        }),
        ("nvkv_group_keys", "Keys with history in the group's store.", |g| g.keys.into()),
        ("nvkv_group_leases", "Leases in the group's store.", |g| g.leases.into()),
        ("nvkv_group_watchers", "Watchers of the group on this member.", |g| g.watchers.into()),
        (
            "nvkv_group_no_space",
            "1 while the group's NOSPACE alarm is raised on this member: writes that add data are refused.",
            |g| i128::from(g.no_space),
        ),
    ];
    let group_counters: [Reading<GroupReport, i128>; 1] = [(
        "nvkv_group_leader_changes_total",
        "Leaderships this member saw the group take (a leader in a term it had not seen led), the first \
         election included.",
        |g| g.leader_changes.into(),
    )];
    for (kind, readings) in [("gauge", &per_group[..]), ("counter", &group_counters[..])] {
        for (name, help, value) in readings {
            let mut family = Family::new(&mut out, name, kind, help);
            for group in groups {
                family.sample(name, &format!("member=\"{member}\",group=\"{}\"", group.group), value(group));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::registry::ShardReadiness;

    #[test]
    fn ready_means_every_shard_serves_and_every_group_has_a_leader() {
        let serving = |groups: &[u32], leaderless: &[u32]| ShardReadiness {
            started: true,
            groups: groups.to_vec(),
            leaderless: leaderless.to_vec(),
            no_space: Vec::new(),
            stopped: Vec::new(),
        };
        for check in [Check::Ready, Check::Health] {
            let ok = readiness(&[serving(&[0, 2], &[]), serving(&[1, 3], &[])], 4, check).expect("ready");
            assert_eq!(ok, "2 shards serve, every group of 4 has a leader");
            let starting = readiness(&[serving(&[0, 2], &[]), ShardReadiness::default()], 4, check)
                .expect_err("starting");
            assert_eq!(starting, "shards [1] are starting (recovering their logs)");
            let leaderless = readiness(&[serving(&[0, 2], &[2]), serving(&[1, 3], &[1])], 4, check)
                .expect_err("leaderless");
            assert!(leaderless.starts_with("groups [2, 1] of 4 have no leader"), "{leaderless}");
            // A group whose Raft core stopped may still show the leader it knew: it is not ready.
            let stopped =
                ShardReadiness { stopped: vec![(3, "storage failed".into())], ..serving(&[1, 3], &[]) };
            let stopped =
                readiness(&[serving(&[0, 2], &[]), stopped], 4, check).expect_err("a group stopped");
            assert!(stopped.starts_with("group 3 stopped on this member"), "{stopped}");
            let missing = readiness(&[serving(&[0], &[])], 4, check).expect_err("a group missing");
            assert_eq!(missing, "1 of 4 groups run here");
        }
        // A NOSPACE alarm: still ready (reads and deletes are served), not healthy (etcd's /health).
        let full = [serving(&[0, 2], &[]), ShardReadiness { no_space: vec![3], ..serving(&[1, 3], &[]) }];
        readiness(&full, 4, Check::Ready).expect("ready with an alarm");
        let unhealthy = readiness(&full, 4, Check::Health).expect_err("not healthy with an alarm");
        assert!(unhealthy.starts_with("NOSPACE alarm in groups [3]"), "{unhealthy}");
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_their_count() {
        let mut histogram = crate::wal::StageHistogram::new();
        for micros in [30, 80, 80, 400, 3000] {
            histogram.record(Duration::from_micros(micros));
        }
        let metrics = ShardMetrics {
            shard: 1,
            core: 3,
            log: crate::wal::LogStats { writes: 7, ..Default::default() },
            stages: vec![("device_write", histogram.clone())],
            hops: vec![("leader append durable", histogram)],
            proposals: 2,
            proposed_commands: 5,
            proposals_held_back: 1,
            etcd_direct_calls: 9,
            forwarded_write_calls: 3,
            forwarded_writes: 11,
        };
        let text = render(4, &[(metrics, StatsSnapshot::default())], &[GroupReport::default()]);
        // The value of the sample whose line starts with `prefix`.
        let value = |prefix: &str| -> String {
            let line = text.lines().find(|line| line.starts_with(prefix));
            let line = line.unwrap_or_else(|| panic!("{prefix} in {text}"));
            line.rsplit(' ').next().expect("a value").to_string()
        };
        let labels = "member=\"4\",shard=\"1\",stage=\"device_write\"";
        let bucket = |le: &str| value(&format!("nvkv_stage_duration_seconds_bucket{{{labels},le=\"{le}\"}}"));
        assert_eq!(bucket("0.00005"), "1");
        assert_eq!(bucket("0.0001"), "3");
        assert_eq!(bucket("0.005"), "5");
        assert_eq!(bucket("+Inf"), "5");
        assert_eq!(value(&format!("nvkv_stage_duration_seconds_count{{{labels}}}")), "5");
        assert_eq!(value("nvkv_log_writes_total{"), "7");
        assert_eq!(value("nvkv_etcd_direct_calls_total{"), "9");
        assert_eq!(value("nvkv_forwarded_write_calls_total{"), "3");
        assert_eq!(value("nvkv_forwarded_writes_total{"), "11");
        assert!(text.contains("# TYPE nvkv_log_writes_total counter\n"), "{text}");
        assert!(text.contains("nvkv_group_term{member=\"4\",group=\"0\"} 0\n"), "{text}");
        let hop = "member=\"4\",shard=\"1\",hop=\"leader append durable\"";
        assert_eq!(value(&format!("nvkv_hop_duration_seconds_bucket{{{hop},le=\"0.00005\"}}")), "1");
        assert_eq!(value(&format!("nvkv_hop_duration_seconds_count{{{hop}}}")), "5");
        let cpu: f64 = value("process_cpu_seconds_total{").parse().expect("a number");
        assert!(cpu > 0.0, "this test process has used CPU: {cpu}");
    }
}
