//! `nvkv endpoint status | health`: etcdctl's endpoint commands. Every
//! endpoint of `--endpoints` is asked at once; each one's answer or failure
//! is printed in its place, and the exit code says whether all answered.

use std::time::{Duration, Instant};

use nvkv::kv::types::RangeRequest;
use nvkv::rpc::client::{ClientTls, NodeStatus};

use super::args::EndpointCommand;
use super::connect::{answers_json, every_answer, every_status, run_client, summary};
use super::output::{print_json, print_table};

/// Runs one endpoint command.
pub fn run(
    endpoints: &[String],
    tls: &ClientTls,
    json: bool,
    command: EndpointCommand,
) -> Result<(), String> {
    match command {
        EndpointCommand::Status => status(endpoints, tls, json),
        EndpointCommand::Health => health(endpoints, tls, json),
    }
}

/// What `endpoint status` shows of one member.
#[derive(serde::Serialize)]
struct EndpointStatus<'a> {
    endpoint: &'a str,
    member_id: u64,
    name: String,
    version: String,
    groups: usize,
    /// Groups this member leads.
    leader_of: usize,
    /// Groups for which this member knows no leader.
    without_leader: usize,
    /// Keys with history, over every group.
    keys: u64,
}

impl<'a> EndpointStatus<'a> {
    fn of(endpoint: &'a str, status: &NodeStatus) -> EndpointStatus<'a> {
        let name = status.members.iter().find(|member| member.id == status.member_id);
        EndpointStatus {
            endpoint,
            member_id: status.member_id,
            name: name.map_or_else(String::new, |member| member.name.clone()),
            version: status.version.clone(),
            groups: status.groups.len(),
            leader_of: status.groups.iter().filter(|group| group.leader == status.member_id).count(),
            without_leader: status.groups.iter().filter(|group| group.leader == 0).count(),
            keys: status.groups.iter().map(|group| group.keys).sum(),
        }
    }
}

fn status(endpoints: &[String], tls: &ClientTls, json: bool) -> Result<(), String> {
    let answers = every_status(endpoints, tls)?;
    if json {
        print_json(&answers_json(&answers, |endpoint, status| {
            serde_json::to_value(EndpointStatus::of(endpoint, status)).unwrap_or_default()
        }))?;
    } else {
        let mut rows =
            vec![["ENDPOINT", "ID", "NAME", "VERSION", "GROUPS", "LEADER OF", "NO LEADER", "KEYS", "ERRORS"]
                .map(String::from)];
        for (endpoint, answer) in &answers {
            rows.push(match answer {
                Ok(status) => {
                    let shown = EndpointStatus::of(endpoint, status);
                    [
                        endpoint.to_string(),
                        shown.member_id.to_string(),
                        shown.name,
                        shown.version,
                        shown.groups.to_string(),
                        shown.leader_of.to_string(),
                        shown.without_leader.to_string(),
                        shown.keys.to_string(),
                        String::new(),
                    ]
                }
                Err(error) => {
                    let mut row = [*endpoint, "-", "-", "-", "-", "-", "-", "-", ""].map(String::from);
                    row[8] = format!("unreachable: {error}");
                    row
                }
            });
        }
        print_table(&rows);
    }
    summary(&answers, "did not answer")
}

/// How an endpoint passed the health check: how long its read took.
fn health(endpoints: &[String], tls: &ClientTls, json: bool) -> Result<(), String> {
    let answers = run_client(every_answer(endpoints, |endpoint| async move {
        let started = Instant::now();
        let client = super::connect::sharded(endpoint, tls).await?;
        // Every key of every group, counted: a linearizable read of each
        // group through this member, so each needs a leader and a quorum.
        let every_key =
            RangeRequest { key: vec![0], range_end: vec![0], count_only: true, ..RangeRequest::default() };
        client.range(&every_key, false).await?;
        Ok(started.elapsed())
    }))?;
    let took = |elapsed: &Duration| format!("{:.1} ms", elapsed.as_secs_f64() * 1000.0);
    if json {
        let mut values = answers_json(
            &answers,
            |endpoint, elapsed| serde_json::json!({ "endpoint": endpoint, "health": true, "took": took(elapsed), "error": "" }),
        );
        for value in values.iter_mut().filter(|value| value.get("health").is_none()) {
            value["health"] = false.into();
        }
        print_json(&values)?;
    } else {
        for (endpoint, answer) in &answers {
            match answer {
                Ok(elapsed) => {
                    println!("{endpoint} is healthy: read every group linearizably in {}", took(elapsed))
                }
                Err(error) => println!("{endpoint} is unhealthy: {error}"),
            }
        }
    }
    summary(&answers, "are unhealthy")
}
