//! A pool's `tls`: the roots backend certificates are verified against,
//! the name they are verified for, and the client certificate presented.
//! Files are read here, so a reload re-reads them.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::ServerName;
use toml::Spanned;

use super::listener::read_roots;
use super::{file, Checker};
use crate::config::BackendTls;

impl Checker<'_> {
    /// `None` after reporting; `Some(None)` for `tls = false`.
    pub(super) fn backend_tls(
        &mut self,
        path: &str,
        tls: &Spanned<file::BackendTls>,
    ) -> Option<Option<BackendTls>> {
        let path = format!("{path}.tls");
        let table = match tls.get_ref() {
            file::BackendTls::Enabled(false) => return Some(None),
            file::BackendTls::Enabled(true) => None,
            file::BackendTls::Table(t) => Some(t),
        };
        let ca = table.and_then(|t| t.ca.as_ref());
        let roots = match ca {
            Some(ca) => {
                let file = self.base.join(ca.get_ref());
                read_roots(&file)
                    .map_err(|m| self.report(format!("{path}.ca"), Some(ca.span()), m))
                    .ok()
            }
            None => system_roots()
                .map_err(|m| self.report(path.clone(), Some(tls.span()), m))
                .ok(),
        };
        let server_name = match table.and_then(|t| t.server_name.as_ref()) {
            None => Some(None),
            Some(name) => match ServerName::try_from(name.get_ref().as_str()) {
                Ok(_) => Some(Some(name.get_ref().to_ascii_lowercase())),
                Err(_) => {
                    let message = format!(
                        "{:?} is not a DNS name or IP address a certificate can be issued for",
                        name.get_ref()
                    );
                    self.report(format!("{path}.server_name"), Some(name.span()), message);
                    None
                }
            },
        };
        let client_cert = match table {
            Some(t) if t.cert.is_some() || t.key.is_some() => {
                self.cert_pair(&path, tls.span(), &t.cert, &t.key).map(Some)
            }
            _ => Some(None),
        };
        let (roots, server_name, client_cert) = (roots?, server_name?, client_cert?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots);
        let mut client_config = match &client_cert {
            Some(pair) => builder
                .with_client_cert_resolver(Arc::new(FixedClientCert(pair.certified_key.clone()))),
            None => builder.with_no_client_auth(),
        };
        // Only HTTP/1.1 upgrades are in scope (contract, "Behaviour on the wire").
        client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(Some(BackendTls {
            ca: ca.map(|c| self.base.join(c.get_ref())),
            server_name,
            client_cert,
            client_config: Arc::new(client_config),
        }))
    }
}

/// The system's trust anchors (the platform's store, e.g.
/// /etc/ssl/certs), read on every load so that an updated store is seen
/// on reload. Unreadable entries are skipped as long as some remain.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = match found.errors.first() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        };
        return Err(format!(
            "tls = true verifies backends against the system's CA certificates, but none \
             could be read{why}; install them (e.g. the ca-certificates package) or name a \
             CA file with `tls = {{ ca = \"ca.pem\" }}`"
        ));
    }
    Ok(roots)
}

/// Presents the same certificate to every backend that asks for one.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
