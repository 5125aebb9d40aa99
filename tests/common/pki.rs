//! Certificate authorities and certificates minted with rcgen into a test's
//! temp directory, for the tests that speak TLS: no key material lives in
//! the repository and none expires.

use std::path::{Path, PathBuf};

/// A certificate authority of one test, writing its files into a directory.
pub struct Authority {
    directory: PathBuf,
    name: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Authority {
    pub fn new(directory: &Path, name: &str) -> Authority {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("nvkv test {name}"));
        params.key_usages =
            vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        std::fs::write(directory.join(format!("{name}.pem")), issuer.pem()).expect("write the CA");
        Authority { directory: directory.to_path_buf(), name: name.to_string(), issuer }
    }

    pub fn certificate_file(&self) -> PathBuf {
        self.directory.join(format!("{}.pem", self.name))
    }

    /// A certificate for `names` (IP addresses become IP SANs) signed by
    /// this CA: its file and its key's file.
    pub fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.issue_for(file, names, &[])
    }

    /// [`Authority::issue`] with extended key usages (none: any use).
    pub fn issue_for(
        &self,
        file: &str,
        names: &[&str],
        usages: &[rcgen::ExtendedKeyUsagePurpose],
    ) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(rcgen::DnType::CommonName, file);
        params.extended_key_usages = usages.to_vec();
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let certificate = params.signed_by(&key, &self.issuer).expect("signed leaf");
        let certificate_path = self.directory.join(format!("{file}.pem"));
        let key_path = self.directory.join(format!("{file}-key.pem"));
        std::fs::write(&certificate_path, certificate.pem()).expect("write the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        (certificate_path, key_path)
    }
}

pub fn path_text(path: &Path) -> String {
    path.to_str().expect("utf-8 temp path").to_string()
}

/// `[tls]` lines serving clients with `server` (certificate, key) and,
/// with `client_ca`, requiring client certificates it signed.
pub fn client_tls_section(server: &(PathBuf, PathBuf), client_ca: Option<&Path>) -> String {
    let mut text = format!(
        "[tls]\nclient_cert_file = {:?}\nclient_key_file = {:?}\n",
        path_text(&server.0),
        path_text(&server.1)
    );
    if let Some(ca) = client_ca {
        text.push_str(&format!("client_ca_file = {:?}\n", path_text(ca)));
    }
    text
}
