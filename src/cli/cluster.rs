//! `nvkv status` and `nvkv member list | add | promote | remove`: what the
//! members report of themselves, and changes to who the members are.

use nvkv::rpc::client::ClientTls;
use nvkv::rpc::cluster::MemberInfo;

use super::args::MemberCommand;
use super::connect::{answers_json, every_answer, every_status, first_answer, run_client, summary, Retry};
use super::output::{print_json, print_table};

/// `nvkv status`: every endpoint's report, in the order given; one that
/// did not answer is said in its place, and makes the exit code 1.
pub fn status(endpoints: &[String], tls: &ClientTls, json: bool) -> Result<(), String> {
    let answers = every_status(endpoints, tls)?;
    if json {
        print_json(&answers_json(&answers, |_, status| serde_json::to_value(status).unwrap_or_default()))?;
    } else {
        for (endpoint, answer) in &answers {
            match answer {
                Ok(status) => print!("{}", status.human()),
                Err(error) => println!("endpoint {endpoint} did not answer: {error}"),
            }
        }
    }
    summary(&answers, "did not answer")
}

/// `nvkv member add | promote | remove`: sent to the first endpoint that
/// answers; a refusal is final (it says what to do).
pub fn member_change(
    endpoints: &[String],
    tls: &ClientTls,
    json: bool,
    action: MemberCommand,
) -> Result<(), String> {
    let (id, done) = match &action {
        MemberCommand::Add { id, learner: true, .. } => (*id, "added as a learner to"),
        MemberCommand::Add { id, .. } => (*id, "added as a voter to"),
        MemberCommand::Promote { id } => (*id, "promoted to voter in"),
        MemberCommand::Remove { id } => (*id, "removed from"),
        MemberCommand::List => unreachable!("member list is not a change"),
    };
    let action = &action;
    let changed = run_client(first_answer(endpoints, Retry::Unreached, |endpoint| async move {
        let connection = super::connect::open(endpoint, tls).await?;
        match action {
            MemberCommand::Add { id, name, peer_urls, client_urls, learner } => {
                let member = MemberInfo {
                    id: *id,
                    name: name.clone(),
                    client_addresses: vec![client_urls.clone()],
                    peer_addresses: vec![peer_urls.clone()],
                    is_learner: *learner,
                };
                connection.add_member(&member, *learner).await
            }
            MemberCommand::Promote { id } => connection.promote_member(*id).await,
            MemberCommand::Remove { id } => connection.remove_member(*id).await,
            MemberCommand::List => unreachable!("member list is not a change"),
        }
    }))??;
    if json {
        return print_json(
            &serde_json::json!({ "member_id": id, "groups": changed.groups, "members": changed.members }),
        );
    }
    println!("Member {id} {done} every group of the cluster ({} groups)", changed.groups);
    Ok(())
}

/// `nvkv member list`: the members as the first endpoint that answers
/// knows them, each asked at its client address whether it answers: a
/// table like etcdctl's (STATUS `started`, `unreachable`, or `unstarted`
/// for a member known only from the Raft membership), or JSON. Exits 1
/// when a started member did not answer, after printing the table.
pub fn member_list(endpoints: &[String], tls: &ClientTls, json: bool) -> Result<(), String> {
    let (member_id, members, reached) = run_client(async move {
        let (member_id, members) = first_answer(endpoints, Retry::AnyError, |endpoint| async move {
            let status = super::connect::open(endpoint, tls).await?.status().await?;
            Ok((status.member_id, status.members))
        })
        .await?;
        let addresses: Vec<String> = members
            .iter()
            .map(|member| member.client_addresses.first().cloned().unwrap_or_default())
            .collect();
        let reached: Vec<Result<(), String>> = every_answer(&addresses, |address| async move {
            super::connect::open(address, tls).await?.partition_map().await.map(|_| ())
        })
        .await
        .into_iter()
        .map(|(_, answer)| answer)
        .collect();
        Ok::<_, String>((member_id, members, reached))
    })??;
    let status = |member: &MemberInfo, reached: &Result<(), String>| match reached {
        _ if member.name.is_empty() => "unstarted",
        Ok(()) => "started",
        Err(_) => "unreachable",
    };
    let unreachable: Vec<String> = members
        .iter()
        .zip(&reached)
        .filter(|(member, reached)| status(member, reached) == "unreachable")
        .map(|(member, _)| format!("{} ({})", member.id, member.client_addresses.join(",")))
        .collect();
    if json {
        let members: Vec<serde_json::Value> = members
            .iter()
            .zip(&reached)
            .map(|(member, reached)| {
                let mut value = serde_json::to_value(member).unwrap_or_default();
                value["status"] = status(member, reached).into();
                if let Err(error) = reached {
                    value["error"] = error.as_str().into();
                }
                value
            })
            .collect();
        print_json(&serde_json::json!({ "member_id": member_id, "members": members }))?;
    } else {
        let mut rows =
            vec![["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"].map(String::from)];
        for (member, reached) in members.iter().zip(&reached) {
            rows.push([
                member.id.to_string(),
                status(member, reached).to_string(),
                member.name.clone(),
                member.peer_addresses.join(","),
                member.client_addresses.join(","),
                member.is_learner.to_string(),
            ]);
        }
        print_table(&rows);
    }
    if unreachable.is_empty() {
        return Ok(());
    }
    Err(format!("members that did not answer at their client address: {}", unreachable.join(", ")))
}
