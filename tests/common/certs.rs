//! Certificates from rcgen: a test CA issuing server and client
//! certificates, and a TLS client trusting only it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::{within, TempDir};

/// A test certificate authority that issues certificates into a temporary
/// folder.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The folder certificates are written to.
    pub dir: TempDir,
    /// The CA certificate as a PEM file, for a configuration that trusts it.
    pub pem: PathBuf,
}

/// A certificate issued by [`TestCa`].
pub struct Issued {
    /// PEM chain file.
    pub cert: PathBuf,
    /// PEM key file.
    pub key: PathBuf,
    /// The leaf in DER, to compare with what a client received.
    pub der: Vec<u8>,
    /// The key in DER (PKCS#8), for a test server or client presenting
    /// the certificate itself.
    pub key_der: Vec<u8>,
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> TestCa {
        TestCa::build("wsgate test CA", "pki", "test-ca")
    }

    /// A fresh CA with common name `name`, its certificate written as
    /// `{name}.pem`: tests that trust one CA and not another tell them
    /// apart by name.
    pub fn named(name: &str) -> TestCa {
        TestCa::build(name, "mtls", name)
    }

    fn build(common_name: &str, folder: &str, stem: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        let dir = TempDir::new(folder);
        let pem = dir.0.join(format!("{stem}.pem"));
        std::fs::write(&pem, issuer.pem()).unwrap();
        TestCa { issuer, dir, pem }
    }

    /// Issues a server certificate for `names`, written as `{stem}.pem` and
    /// `{stem}.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        self.sign(stem, rcgen::CertificateParams::new(names).unwrap())
    }

    /// Issues a certificate for `names` with subject `CN=cn,O=Test Org`, as
    /// a client certificate's identity is checked by its subject.
    pub fn issue_with_subject(&self, stem: &str, names: &[&str], cn: &str) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Test Org");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        self.sign(stem, params)
    }

    fn sign(&self, stem: &str, params: rcgen::CertificateParams) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.dir.0.join(format!("{stem}.pem"));
        let key_path = self.dir.0.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// A root store holding only this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// A client configuration trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Connects over TLS to `addr` with SNI `name`, verifying the chain.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        name: &str,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = within(TcpStream::connect(addr)).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        within(connector.connect(server_name, tcp))
            .await
            .expect("TLS handshake succeeds")
    }
}
