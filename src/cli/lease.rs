//! `nvkv lease grant | revoke | keep-alive | timetolive | list`. Lease ids
//! are hexadecimal wherever a person reads or types them, as etcdctl shows
//! them; `-w json` prints numbers.

use nvkv::rpc::client::ClientTls;
use nvkv::rpc::lease::format_id;

use super::args::LeaseCommand;
use super::connect::{connect, run_client};
use super::output::{print_json, text};

/// Runs one lease command against the first endpoint that answers.
pub fn run(endpoints: &[String], tls: &ClientTls, json: bool, command: LeaseCommand) -> Result<(), String> {
    run_client(async move {
        let client = connect(endpoints, tls).await?;
        let connection = client.main();
        match command {
            LeaseCommand::Grant { ttl, id } => {
                let answer = connection.lease_grant(ttl, id.unwrap_or(0)).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                println!("lease {} granted with TTL({}s)", format_id(answer.id), answer.ttl);
            }
            LeaseCommand::Revoke { id } => {
                let answer = connection.lease_revoke(id).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                println!("lease {} revoked ({} attached keys deleted)", format_id(id), answer.deleted);
            }
            LeaseCommand::KeepAlive { id, once } => loop {
                let answer = connection.lease_keep_alive(id).await.map_err(|e| e.to_string())?;
                if json {
                    print_json(&answer)?;
                } else {
                    println!("lease {} keepalived with TTL({})", format_id(id), answer.ttl);
                }
                if once {
                    break;
                }
                let period = std::time::Duration::from_millis(
                    u64::try_from(answer.ttl.max(1)).unwrap_or(1) * 1000 / 3,
                );
                tokio::time::sleep(period).await;
            },
            LeaseCommand::Timetolive { id, keys } => {
                let answer = connection.lease_time_to_live(id, keys).await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                let mut line = format!(
                    "lease {} granted with TTL({}s), remaining({}s)",
                    format_id(id),
                    answer.granted_ttl,
                    answer.ttl
                );
                if keys {
                    let shown: Vec<_> = answer.keys.iter().map(|key| text(key)).collect();
                    let more = if answer.more_keys { " and more" } else { "" };
                    line.push_str(&format!(", attached keys([{}]{more})", shown.join(" ")));
                }
                println!("{line}");
            }
            LeaseCommand::List => {
                let answer = connection.lease_list().await.map_err(|e| e.to_string())?;
                if json {
                    return print_json(&answer);
                }
                let more = if answer.more { " (and more not listed)" } else { "" };
                println!("found {} leases{more}", answer.leases.len());
                for lease in &answer.leases {
                    println!("{}", format_id(lease.id));
                }
            }
        }
        Ok(())
    })?
}
