//! TLS on the client and peer ports, with rustls and its ring provider:
//! loading certificates and keys from PEM files (the node's `[tls]` keys,
//! the client's `--cacert`, `--cert`, `--key`), the acceptors' and dialers'
//! configs, and the client side of the handshakes (the server side, bounded
//! by its deadline, is `reactor::admission::accept_tls`).
//!
//! It owns what is said when TLS fails: which file and key, which endpoint,
//! what rustls found wrong. It must never block a reactor (every handshake
//! is awaited on the connection's own task) and never touch plaintext
//! connections: with TLS off the callers keep their plain TCP path.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsConfig;

/// Largest PEM file read (certificate chains and keys are a few KiB).
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// A TLS file that could not be used: `setting` names where it was given
/// (`tls.peer_ca_file`, `--cacert`).
#[derive(Debug, thiserror::Error)]
#[error("{setting} = {path:?}: {reason}")]
pub struct TlsFileError {
    pub setting: String,
    pub path: PathBuf,
    pub reason: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(setting: &str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let failed =
        |reason: String| TlsFileError { setting: setting.to_string(), path: path.to_path_buf(), reason };
    let metadata = std::fs::metadata(path).map_err(|error| {
        failed(if error.kind() != std::io::ErrorKind::NotFound {
            format!("cannot read it: {error}")
        } else if setting.starts_with("tls.") {
            "there is no such file (a relative path in the config is relative to the config file's directory)"
                .to_string()
        } else {
            "there is no such file".to_string()
        })
    })?;
    if metadata.len() > PEM_FILE_BYTES_MAX {
        return Err(failed(format!(
            "it holds {} bytes, more than the {PEM_FILE_BYTES_MAX} a PEM certificate or key file may",
            metadata.len()
        )));
    }
    std::fs::read(path).map_err(|error| failed(format!("cannot read it: {error}")))
}

/// Every certificate of a PEM file, in order (a chain: leaf first).
pub fn load_certificates(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let failed =
        |reason: String| TlsFileError { setting: setting.to_string(), path: path.to_path_buf(), reason };
    let bytes = read_pem(setting, path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failed(format!("not PEM certificates: {error}")))?;
    if certificates.is_empty() {
        return Err(failed("holds no \"BEGIN CERTIFICATE\" block; give a PEM certificate file".to_string()));
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(setting: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read_pem(setting, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| TlsFileError {
        setting: setting.to_string(),
        path: path.to_path_buf(),
        reason: format!("holds no usable PEM private key ({error}); give the key of the certificate"),
    })
}

/// The CA certificates of a PEM file, as trust anchors.
pub fn load_roots(setting: &str, path: &Path) -> Result<Arc<RootCertStore>, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(setting, path)? {
        roots.add(certificate).map_err(|error| TlsFileError {
            setting: setting.to_string(),
            path: path.to_path_buf(),
            reason: format!("holds a certificate that cannot be a CA: {error}"),
        })?;
    }
    Ok(Arc::new(roots))
}

/// A certificate and key file pair with the names of their settings.
struct Identity<'a> {
    certificate: (&'a str, &'a Path),
    key: (&'a str, &'a Path),
}

impl Identity<'_> {
    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsFileError> {
        Ok((
            load_certificates(self.certificate.0, self.certificate.1)?,
            load_private_key(self.key.0, self.key.1)?,
        ))
    }

    /// The error of a certificate and key rustls refused together.
    fn refused(&self, error: rustls::Error) -> TlsFileError {
        TlsFileError {
            setting: self.key.0.to_string(),
            path: self.key.1.to_path_buf(),
            reason: format!(
                "does not go with the certificate {} = {:?}: {error}",
                self.certificate.0, self.certificate.1
            ),
        }
    }
}

/// An acceptor's config: its identity, and when `client_ca` is given, the
/// CA every client certificate must be signed by (clients without one are
/// refused).
fn server_config(
    identity: &Identity<'_>,
    client_ca: Option<(&str, &Path)>,
) -> Result<Arc<ServerConfig>, TlsFileError> {
    let (certificates, key) = identity.load()?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some((setting, path)) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(load_roots(setting, path)?, provider())
                    .build()
                    .map_err(|error| TlsFileError {
                    setting: setting.to_string(),
                    path: path.to_path_buf(),
                    reason: format!("cannot verify clients with it: {error}"),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certificates, key).map_err(|error| identity.refused(error))?;
    Ok(Arc::new(config))
}

/// A dialer's config: the CA the server's certificate must be signed by,
/// and the identity this end presents, if any.
fn client_config(
    ca: (&str, &Path),
    identity: Option<&Identity<'_>>,
) -> Result<Arc<ClientConfig>, TlsFileError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(load_roots(ca.0, ca.1)?);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let (certificates, key) = identity.load()?;
            builder.with_client_auth_cert(certificates, key).map_err(|error| identity.refused(error))?
        }
    };
    Ok(Arc::new(config))
}

/// The peer port's TLS: the acceptor requires a certificate signed by the
/// peer CA, and the dialer verifies the other member's against it and
/// presents this member's own.
#[derive(Clone)]
pub struct PeerTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PeerTls")
    }
}

/// A node's TLS, read from its `[tls]` keys when it starts.
#[derive(Clone, Default)]
pub struct NodeTls {
    /// The client port's (and the shards' own ports'), when TLS is on there.
    pub client: Option<TlsAcceptor>,
    /// The etcd API's: the client port's keys, offering HTTP/2 by ALPN (gRPC
    /// clients refuse a TLS server that does not).
    pub etcd: Option<TlsAcceptor>,
    pub peer: Option<PeerTls>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NodeTls")
            .field("client", &self.client.is_some())
            .field("peer", &self.peer.is_some())
            .finish()
    }
}

impl NodeTls {
    /// Reads and checks every file `config` names. `Config::validate` has
    /// checked which keys go together.
    pub fn load(config: &TlsConfig) -> Result<NodeTls, TlsFileError> {
        let (client, etcd) = match (&config.client_cert_file, &config.client_key_file) {
            (Some(certificate), Some(key)) => {
                let identity = Identity {
                    certificate: ("tls.client_cert_file", certificate),
                    key: ("tls.client_key_file", key),
                };
                let client_ca = config.client_ca_file.as_deref().map(|path| ("tls.client_ca_file", path));
                let client = server_config(&identity, client_ca)?;
                let mut etcd = ServerConfig::clone(&client);
                etcd.alpn_protocols = vec![b"h2".to_vec()];
                (Some(TlsAcceptor::from(client)), Some(TlsAcceptor::from(Arc::new(etcd))))
            }
            _ => (None, None),
        };
        let peer = match (&config.peer_cert_file, &config.peer_key_file, &config.peer_ca_file) {
            (Some(certificate), Some(key), Some(ca)) => {
                let identity = Identity {
                    certificate: ("tls.peer_cert_file", certificate),
                    key: ("tls.peer_key_file", key),
                };
                let ca = ("tls.peer_ca_file", ca.as_path());
                Some(PeerTls {
                    acceptor: TlsAcceptor::from(server_config(&identity, Some(ca))?),
                    connector: TlsConnector::from(client_config(ca, Some(&identity))?),
                })
            }
            _ => None,
        };
        Ok(NodeTls { client, etcd, peer })
    }
}

/// How the client library reaches nodes: plaintext (the default), or TLS
/// verifying the node against a CA and presenting a certificate if the node
/// asks for one (mutual TLS).
#[derive(Clone, Default)]
pub struct ClientTls {
    connector: Option<TlsConnector>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ClientTls").field("on", &self.is_on()).finish()
    }
}

impl ClientTls {
    /// Plaintext.
    pub fn plaintext() -> ClientTls {
        ClientTls::default()
    }

    /// From etcdctl-style flags: `--cacert` turns TLS on; `--cert` and
    /// `--key` (together, and only with `--cacert`) add a client
    /// certificate.
    pub fn from_files(
        cacert: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<ClientTls, String> {
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(certificate), Some(key)) => {
                Some(Identity { certificate: ("--cert", certificate), key: ("--key", key) })
            }
            (Some(_), None) => return Err("--cert needs --key, the certificate's private key".to_string()),
            (None, Some(_)) => return Err("--key needs --cert, the certificate it goes with".to_string()),
        };
        let Some(cacert) = cacert else {
            if identity.is_some() {
                return Err("--cert and --key need --cacert too: the CA that signed the node's certificate"
                    .to_string());
            }
            return Ok(ClientTls::plaintext());
        };
        let config =
            client_config(("--cacert", cacert), identity.as_ref()).map_err(|error| error.to_string())?;
        Ok(ClientTls { connector: Some(TlsConnector::from(config)) })
    }

    pub fn is_on(&self) -> bool {
        self.connector.is_some()
    }

    pub(crate) fn connector(&self) -> Option<&TlsConnector> {
        self.connector.as_ref()
    }
}

/// The name a dialer checks the server's certificate against: the host
/// part of `endpoint` (HOST:PORT, [IPv6]:PORT), an IP address or a DNS name.
pub fn server_name(endpoint: &str) -> Result<ServerName<'static>, String> {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    let host = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} (of {endpoint}) is neither an IP address nor a DNS name to verify"))
}

/// Whether a connection's closing error only says the other end closed its
/// TLS stream without a close_notify alert, as every client process that
/// exits does. Cap'n Proto frames its messages, so a cut inside one is
/// still an error of its own; this is a normal close.
pub fn closed_without_notify(error: &capnp::Error) -> bool {
    error.kind == capnp::ErrorKind::PrematureEndOfFile && error.extra.contains("close_notify")
}

/// Who a client port's TLS connection is: the user its verified client
/// certificate's common name names, or nobody (no certificate asked for or
/// given).
pub fn certificate_caller(connection: &rustls::ServerConnection) -> crate::shard::auth::Caller {
    let user = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::shard::credentials::certificate_user(leaf.as_ref()));
    match user {
        Some(name) => crate::shard::auth::Caller::user(&name),
        None => crate::shard::auth::Caller::Anonymous,
    }
}

/// Runs the client side of a handshake with `name` on `stream` (no
/// timeout of its own: callers bound the whole connect).
pub async fn connect(
    connector: &TlsConnector,
    name: ServerName<'static>,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    connector
        .connect(name, stream)
        .await
        .map_err(|error| crate::reactor::admission::describe_handshake_error(&error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_endpoint_host() {
        assert_eq!(
            server_name("127.0.0.1:7379"),
            Ok(ServerName::IpAddress(IpAddr::from([127, 0, 0, 1]).into()))
        );
        let v6 = server_name("[::1]:7379").expect("IPv6");
        assert_eq!(v6, ServerName::IpAddress("::1".parse::<IpAddr>().expect("ip").into()));
        assert_eq!(
            server_name("nvkv-1.example.com:7379"),
            ServerName::try_from("nvkv-1.example.com").map_err(|_| String::new())
        );
        assert!(server_name("bad host!:7379").expect_err("no name").contains("\"bad host!\""));
    }

    #[test]
    fn client_flags_go_together() {
        let refused = |cacert: Option<&str>, cert: Option<&str>, key: Option<&str>| {
            ClientTls::from_files(cacert.map(Path::new), cert.map(Path::new), key.map(Path::new))
                .expect_err("refused")
        };
        assert!(refused(None, Some("c.pem"), None).contains("--cert needs --key"));
        assert!(refused(None, None, Some("k.pem")).contains("--key needs --cert"));
        assert!(refused(None, Some("c.pem"), Some("k.pem")).contains("need --cacert too"));
        let missing = refused(Some("/nonexistent/ca.pem"), None, None);
        assert_eq!(missing, "--cacert = \"/nonexistent/ca.pem\": there is no such file", "{missing}");
        assert!(!ClientTls::from_files(None, None, None).expect("plaintext").is_on());
    }

    #[test]
    fn a_file_without_pem_blocks_is_named() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let error = load_certificates("tls.peer_cert_file", &path).expect_err("no PEM").to_string();
        assert!(error.starts_with("tls.peer_cert_file = "), "{error}");
        assert!(error.contains("BEGIN CERTIFICATE"), "{error}");
        let error = load_private_key("tls.peer_key_file", &path).expect_err("no key").to_string();
        assert!(error.contains("no usable PEM private key"), "{error}");
    }
}
