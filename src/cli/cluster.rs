//! `nvkv status` and `nvkv member list | add | promote | remove`: what the
//! members report of themselves, and changes to who the members are.

use nvkv::rpc::client::ClientTls;
use nvkv::rpc::cluster::MemberInfo;

use super::args::MemberCommand;
use super::connect::{first_answer, run_client, Retry};
use super::output::{print_json, print_table};

/// `nvkv status`: every endpoint's report, in the order given.
pub fn status(endpoints: &[String], tls: &ClientTls, json: bool) -> Result<(), String> {
    let statuses = run_client(async {
        let mut statuses = Vec::new();
        for endpoint in endpoints {
            let connection = super::connect::open(endpoint, tls).await?;
            statuses.push(connection.status().await?);
        }
        Ok::<_, nvkv::rpc::client::ClientError>(statuses)
    })?
    .map_err(|error| error.to_string())?;
    if json {
        return print_json(&statuses);
    }
    for status in statuses {
        print!("{}", status.human());
    }
    Ok(())
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

/// `nvkv member list`: a table like etcdctl's, or JSON.
pub fn member_list(endpoints: &[String], tls: &ClientTls, json: bool) -> Result<(), String> {
    let (member_id, members) =
        run_client(first_answer(endpoints, Retry::AnyError, |endpoint| async move {
            let status = super::connect::open(endpoint, tls).await?.status().await?;
            Ok((status.member_id, status.members))
        }))??;
    let status = |member: &MemberInfo| {
        if member.name.is_empty() {
            "unstarted"
        } else {
            "started"
        }
    };
    if json {
        let members: Vec<serde_json::Value> = members
            .iter()
            .map(|member| {
                let mut value = serde_json::to_value(member).unwrap_or_default();
                value["status"] = status(member).into();
                value
            })
            .collect();
        return print_json(&serde_json::json!({ "member_id": member_id, "members": members }));
    }
    let mut rows =
        vec![["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"].map(String::from)];
    for member in &members {
        rows.push([
            member.id.to_string(),
            status(member).to_string(),
            member.name.clone(),
            member.peer_addresses.join(","),
            member.client_addresses.join(","),
            member.is_learner.to_string(),
        ]);
    }
    print_table(&rows);
    Ok(())
}
