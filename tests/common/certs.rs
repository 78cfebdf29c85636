//! Certificates from rcgen: a test CA issuing server certificates, and a
//! TLS client trusting only it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::{within, TempDir};

/// A test certificate authority that issues server certificates into a
/// temporary folder.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The folder certificates are written to.
    pub dir: TempDir,
}

/// A certificate issued by [`TestCa`].
pub struct Issued {
    /// PEM chain file.
    pub cert: PathBuf,
    /// PEM key file.
    pub key: PathBuf,
    /// The leaf in DER, to compare with what a client received.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsgate test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
            dir: TempDir::new("pki"),
        }
    }

    /// Issues a server certificate for `names`, written as `{stem}.pem` and
    /// `{stem}.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
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
        }
    }

    /// A client configuration trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
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
