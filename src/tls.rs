//! TLS termination: one rustls server configuration per listener, the
//! certificate chosen by the client's SNI name, client certificates checked
//! against the listener's `client_ca`, and the identity of a verified
//! client certificate as the headers the backend gets.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use x509_parser::asn1_rs::ToDer;

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
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions");
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(auth.roots.clone(), provider);
            // An unauthenticated client passes under `optional`; one whose
            // certificate fails verification still fails the handshake.
            let verifier = match auth.required {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            // Validation read at least one trust anchor, which is all the
            // builder can refuse.
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .expect("validation checked the client CA file"),
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The first byte of every TLS connection is a handshake record
/// (RFC 8446 section 5.1, content type 22); anything else is not TLS.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The header naming a verified client certificate's subject (RFC 4514).
pub const CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
/// The header carrying the hex SHA-256 of a verified client certificate.
pub const CLIENT_CERT_SHA256: HeaderName = HeaderName::from_static("x-client-cert-sha256");

/// Who a verified client certificate names, as the backend is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject as an RFC 4514 string.
    pub subject: String,
    /// Lower-case hex of the SHA-256 of the certificate's DER encoding.
    pub sha256: String,
}

impl ClientIdentity {
    /// The identity of the end-entity certificate `der`; rustls has
    /// verified it before this is asked, so a parse failure only loses the
    /// subject, never the fingerprint.
    pub fn of(der: &CertificateDer<'_>) -> ClientIdentity {
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        let sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let subject = x509_parser::parse_x509_certificate(der.as_ref())
            .map(|(_, cert)| rfc4514(cert.subject()))
            .unwrap_or_default();
        ClientIdentity { subject, sha256 }
    }
}

/// Removes every client-sent copy of the client-certificate headers, then
/// adds them for `identity`: they can only ever come from the proxy.
pub fn set_client_cert_headers(headers: &mut HeaderMap, identity: Option<&ClientIdentity>) {
    headers.remove(CLIENT_CERT_SUBJECT);
    headers.remove(CLIENT_CERT_SHA256);
    let Some(identity) = identity else {
        return;
    };
    // The escaping below leaves no byte a header value refuses.
    if let Ok(subject) = HeaderValue::from_str(&identity.subject) {
        headers.insert(CLIENT_CERT_SUBJECT, subject);
    }
    if let Ok(sha256) = HeaderValue::from_str(&identity.sha256) {
        headers.insert(CLIENT_CERT_SHA256, sha256);
    }
}

/// A distinguished name as RFC 4514 writes it: relative names last to
/// first (section 2.1), multi-valued ones joined by `+`, known attribute
/// types by their short names (section 3), others as a dotted OID with the
/// value as `#` and the hex of its DER encoding (section 2.4).
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            let parts: Vec<String> = rdn
                .iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let short = short_name(&oid);
                    match (short, atv.as_str()) {
                        (Some(short), Ok(value)) => format!("{short}={}", escape_value(value)),
                        (_, _) => {
                            let der = atv.attr_value().to_der_vec().unwrap_or_default();
                            let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
                            format!("{oid}=#{hex}")
                        }
                    }
                })
                .collect();
            parts.join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 4514 section 3's table of attribute type short names.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 4514 section 2.4: `"+,;<>\` escaped anywhere, `#` and space at the
/// start, space at the end; control characters (which a header value cannot
/// carry) as `\XX` hex pairs.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_as_rfc_4514_says() {
        assert_eq!(escape_value("plain name"), "plain name");
        assert_eq!(escape_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_value("#tag "), "\\#tag\\ ");
        assert_eq!(escape_value(" x"), "\\ x");
        assert_eq!(escape_value("bell\u{7}"), "bell\\07");
    }

    #[test]
    fn subject_is_written_last_name_first() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "DE");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-7");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let identity = ClientIdentity::of(cert.der());
        assert_eq!(identity.subject, "CN=device-7,O=Acme\\, Inc.,C=DE");
        assert_eq!(identity.sha256.len(), 64);
    }
}
