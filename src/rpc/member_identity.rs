//! What a peer's TLS certificate proves: which member it names, and that it
//! is a member's certificate at all, not a client's. Every member's peer
//! certificate must carry the member's name (`node.name`, as
//! `cluster.members` or `nvkv member add --name` records it) as its common
//! name or as a DNS name; a member that says hello as another member is
//! refused, and so is a certificate made for clients only (an extended key
//! usage without serverAuth: a member's certificate serves its peer port
//! too), so a client certificate signed by the same CA never passes for a
//! member. Without TLS there is no certificate: the cluster id in the hello
//! (`super::incarnation`) is what keeps strangers out.
//!
//! This module reads certificates and answers; the peer port acts on it.

use crate::raft::NodeId;

/// What the certificate of the other end of a peer connection says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// Its common name and DNS names.
    pub names: Vec<String>,
    /// Whether it may serve a port: no extended key usage, or one with
    /// serverAuth (or any).
    pub serves: bool,
}

impl PeerCertificate {
    /// The leaf certificate `connection`'s other end presented, read.
    pub fn of(connection: &rustls::CommonState) -> Option<PeerCertificate> {
        PeerCertificate::parse(connection.peer_certificates()?.first()?.as_ref())
    }

    pub fn parse(der: &[u8]) -> Option<PeerCertificate> {
        let (_, parsed) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names: Vec<String> = parsed
            .subject()
            .iter_common_name()
            .filter_map(|name| name.as_str().ok().map(str::to_string))
            .collect();
        if let Ok(Some(alternatives)) = parsed.subject_alternative_name() {
            for name in &alternatives.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    names.push(dns.to_string());
                }
            }
        }
        let serves = match parsed.extended_key_usage() {
            Ok(Some(usage)) => usage.value.server_auth || usage.value.any,
            Ok(None) => true,
            Err(_) => false,
        };
        Some(PeerCertificate { names, serves })
    }
}

/// Why a peer's certificate does not prove it is the member it says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityRefusal {
    #[error(
        "its certificate (names {names:?}) is for clients only (extended key usage without serverAuth): a client \
         certificate is never accepted on the peer port; give each member a peer certificate of its own"
    )]
    ClientCertificate { names: Vec<String> },
    #[error(
        "it says it is member {member} ({name:?}) but its certificate names {names:?}: a member's peer \
         certificate must carry its node.name as common name or DNS name; check tls.peer_cert_file of member \
         {member}"
    )]
    OtherMember { member: NodeId, name: String, names: Vec<String> },
    #[error(
        "it says it is member {member}, which has no name in cluster.members or the membership, so its \
         certificate cannot name it; add the member with a name (`nvkv member add {member} --name NAME ...`)"
    )]
    Unnamed { member: NodeId },
}

/// Whether `certificate` proves its holder is `member`, whose name is
/// `name` (`None`: this member knows no name for it).
pub fn check(
    certificate: &PeerCertificate,
    member: NodeId,
    name: Option<&str>,
) -> Result<(), IdentityRefusal> {
    if !certificate.serves {
        return Err(IdentityRefusal::ClientCertificate { names: certificate.names.clone() });
    }
    let Some(name) = name.filter(|name| !name.is_empty()) else {
        return Err(IdentityRefusal::Unnamed { member });
    };
    if certificate.names.iter().any(|held| held == name) {
        return Ok(());
    }
    Err(IdentityRefusal::OtherMember { member, name: name.to_string(), names: certificate.names.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(common_name: &str, dns: &[&str], usages: &[rcgen::ExtendedKeyUsagePurpose]) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|name| name.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = usages.to_vec();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_names_its_member_by_common_name_or_dns_name() {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let node2 =
            PeerCertificate::parse(&certificate("node2", &["node2.example"], &[ServerAuth, ClientAuth]))
                .unwrap();
        assert_eq!(check(&node2, 2, Some("node2")), Ok(()));
        assert_eq!(check(&node2, 2, Some("node2.example")), Ok(()));
        assert!(matches!(
            check(&node2, 3, Some("node3")),
            Err(IdentityRefusal::OtherMember { member: 3, .. })
        ));
        assert_eq!(check(&node2, 9, None), Err(IdentityRefusal::Unnamed { member: 9 }));
        let client = PeerCertificate::parse(&certificate("node2", &[], &[ClientAuth])).unwrap();
        assert!(!client.serves);
        let refused = check(&client, 2, Some("node2")).unwrap_err();
        assert!(refused.to_string().contains("never accepted on the peer port"), "{refused}");
        let plain = PeerCertificate::parse(&certificate("node1", &[], &[])).unwrap();
        assert!(plain.serves, "no extended key usage: any use");
    }
}
