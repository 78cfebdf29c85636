//! TLS termination: one rustls server configuration per listener, the
//! certificate chosen by the client's SNI name.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config;

/// Chooses a listener's certificate from the SNI name in the ClientHello.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    fn lookup(&self, name: &str) -> Arc<CertifiedKey> {
        // rustls hands us the SNI name already lower-cased and validated as
        // a DNS name, so exact lookups need no further normalisation.
        self.exact
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match hello.server_name() {
            Some(name) => self.lookup(name),
            None => self.default.clone(),
        })
    }
}

/// Builds the rustls configuration for a TLS listener: its certificates
/// (already loaded and checked by configuration validation), ALPN
/// `http/1.1` because only HTTP/1.1 upgrades are in scope.
pub fn server_config(tls: &config::Tls) -> Arc<ServerConfig> {
    // Validation allows exact DNS names only, already lower-cased.
    let exact = tls
        .sni
        .iter()
        .flat_map(|entry| {
            entry
                .server_names
                .iter()
                .map(|name| (name.clone(), entry.pair.certified_key.clone()))
        })
        .collect();
    let resolver = SniResolver {
        default: tls.default.certified_key.clone(),
        exact,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The first byte of every TLS connection is a handshake record
/// (RFC 8446 section 5.1, content type 22); anything else is not TLS.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;
