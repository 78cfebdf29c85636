//! `[admin]`, `[[listener]]` and its `tls` table: addresses, names and
//! certificates, which are read and matched with their keys here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{InconsistentKeys, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::values::is_dns_name;
use super::{file, optional, Checker};
use crate::config::{
    Admin, CertPair, Cidr, ClientAuth, Listener, ProxyProtocol, Secret, SniCert, Tls,
    DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_HEADER_BYTES,
};

impl Checker<'_> {
    pub(super) fn admin(&mut self, admin: &Spanned<file::Admin>) -> Option<Admin> {
        let bind = self.require(
            "admin",
            "bind",
            admin.span(),
            &admin.get_ref().bind,
            "bind = \"127.0.0.1:9900\"",
        )?;
        let bind = self.socket_addr("admin.bind", bind)?;
        let token = admin.get_ref().token.as_ref();
        let secret = token.and_then(|t| self.admin_token(t));
        if token.is_none() && !bind.ip().is_loopback() && !self.dropped.contains("admin.token") {
            let message = format!(
                "the admin listener binds {bind}, which is not a loopback address, so it needs \
                 a token: add `token = \"env:WSGATE_ADMIN_TOKEN\"` (or \"file:PATH\")"
            );
            self.report("admin.token".to_string(), Some(admin.span()), message);
        }
        Some(Admin {
            bind,
            token: secret,
        })
    }

    /// `[admin] token`: where the secret is, never the secret itself, so
    /// that the configuration file can be shared and versioned.
    fn admin_token(&mut self, token: &Spanned<String>) -> Option<Secret> {
        let span = Some(token.span());
        let (value, source) = if let Some(name) = token.get_ref().strip_prefix("env:") {
            (
                std::env::var(name).ok(),
                format!("environment variable {name}"),
            )
        } else if let Some(file) = token.get_ref().strip_prefix("file:") {
            let path = self.base.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => (Some(text), format!("token file {}", path.display())),
                Err(e) => {
                    let message = format!("cannot read token file {}: {e}", path.display());
                    self.report("admin.token".to_string(), span, message);
                    return None;
                }
            }
        } else {
            let message = "must say where the secret is, `env:NAME` or `file:PATH`; \
                           never write the secret itself in the configuration"
                .to_string();
            self.report("admin.token".to_string(), span, message);
            return None;
        };
        // A file usually ends with a newline that is not part of the secret.
        let value = value.map(|v| v.trim().to_string()).unwrap_or_default();
        if value.is_empty() {
            let message = format!("{source} is not set or empty");
            self.report("admin.token".to_string(), span, message);
            return None;
        }
        // RFC 6750 section 2.1: a bearer token is visible ASCII.
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            let message = format!("{source} holds characters a bearer token cannot carry (only visible ASCII, no spaces)");
            self.report("admin.token".to_string(), span, message);
            return None;
        }
        Some(Secret::new(value))
    }

    /// Two binds on one port collide when the addresses are equal or one is
    /// the unspecified address of the same family. Port 0 never collides.
    pub(super) fn address_conflicts(&mut self, file: &file::File) {
        let admin = file.admin.as_ref().and_then(|a| a.get_ref().bind.as_ref());
        let admin = admin.map(|b| ("admin.bind".to_string(), b));
        let publish = file
            .publish
            .as_ref()
            .and_then(|p| p.get_ref().bind.as_ref());
        let admin = admin
            .into_iter()
            .chain(publish.map(|b| ("publish.bind".to_string(), b)));
        let listeners = file.listener.iter().enumerate().filter_map(|(i, l)| {
            let bind = l.get_ref().bind.as_ref();
            bind.map(|b| (format!("listener[{i}].bind"), b))
        });
        // Unparsable addresses are reported by `socket_addr`.
        let mut binds: Vec<(String, &Spanned<String>, SocketAddr)> = admin
            .chain(listeners)
            .filter_map(|(path, value)| Some((path, value, value.get_ref().parse().ok()?)))
            .collect();
        binds.sort_by_key(|(_, value, _)| value.span().start);
        for (j, (path, value, addr)) in binds.iter().enumerate() {
            let earlier = binds[..j].iter().find(|(_, _, a)| {
                let same_family = a.is_ipv4() == addr.is_ipv4();
                let overlap = a.ip() == addr.ip()
                    || (same_family && (a.ip().is_unspecified() || addr.ip().is_unspecified()));
                a.port() == addr.port() && addr.port() != 0 && overlap
            });
            if let Some((other, _, _)) = earlier {
                let message = format!(
                    "{addr} collides with {other}; only one listener can bind an address and port"
                );
                self.report(path.clone(), Some(value.span()), message);
            }
        }
    }

    pub(super) fn listener(
        &mut self,
        i: usize,
        listener: &Spanned<file::Listener>,
    ) -> Option<Listener> {
        let path = format!("listener[{i}]");
        let (span, l) = (listener.span(), listener.get_ref());
        let name = self.require(&path, "name", span.clone(), &l.name, "name = \"public\"");
        let name = name.and_then(|n| self.name(&path, n));
        let bind = self.require(&path, "bind", span, &l.bind, "bind = \"127.0.0.1:8080\"");
        let bind = bind.and_then(|b| self.socket_addr(&format!("{path}.bind"), b));
        let max_header_bytes = match &l.max_header_bytes {
            None => Some(DEFAULT_MAX_HEADER_BYTES),
            Some(v) => self
                .bytes(&format!("{path}.max_header_bytes"), v)
                .and_then(|b| usize::try_from(b).ok()),
        };
        let tls = optional(&l.tls, |t| self.tls(&format!("{path}.tls"), t));
        let proxy_protocol = optional(&l.proxy_protocol, |v| {
            let accepted = match v.get_ref().as_str() {
                "v1" => ProxyProtocol::V1,
                "v2" => ProxyProtocol::V2,
                "any" => ProxyProtocol::Any,
                other => {
                    let message = format!(
                        "unknown PROXY protocol {other:?}; write \"v1\", \"v2\" or \"any\""
                    );
                    self.report(format!("{path}.proxy_protocol"), Some(v.span()), message);
                    return None;
                }
            };
            Some(accepted)
        });
        let from = self.cidrs(
            &format!("{path}.proxy_protocol_from"),
            &l.proxy_protocol_from,
        );
        if let (Some(list), None) = (&l.proxy_protocol_from, &l.proxy_protocol) {
            let message = "proxy_protocol_from has no effect without proxy_protocol; \
                           set proxy_protocol = \"v2\" (or \"v1\", \"any\"), or remove it";
            let key = format!("{path}.proxy_protocol_from");
            self.report(key, Some(list.span()), message.to_string());
        }
        let trusted_proxies = self.cidrs(&format!("{path}.trusted_proxies"), &l.trusted_proxies);
        let admission = self.listener_admission(&path, l);
        let keepalive_timeout = match &l.keepalive_timeout {
            None => Some(DEFAULT_KEEPALIVE_TIMEOUT),
            Some(v) => self.positive_duration(&format!("{path}.keepalive_timeout"), v),
        };
        Some(Listener {
            name: name?,
            bind: bind?,
            max_header_bytes: max_header_bytes?,
            tls: tls?,
            proxy_protocol: proxy_protocol?,
            proxy_protocol_from: from?,
            trusted_proxies: trusted_proxies?,
            admission: admission?,
            keepalive_timeout: keepalive_timeout?,
        })
    }

    /// A list of address ranges; absent: empty.
    fn cidrs(
        &mut self,
        path: &str,
        list: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Vec<Cidr>> {
        let Some(list) = list else {
            return Some(Vec::new());
        };
        let checked: Vec<Option<Cidr>> = (list.get_ref().iter().enumerate())
            .map(|(k, v)| {
                let parsed = Cidr::parse(v.get_ref());
                if parsed.is_none() {
                    let message = format!(
                        "{:?} is not an address range; write e.g. \"10.0.0.0/8\", \
                         \"fd00::/8\" or a single address",
                        v.get_ref()
                    );
                    self.report(format!("{path}[{k}]"), Some(v.span()), message);
                }
                parsed
            })
            .collect();
        checked.into_iter().collect()
    }

    pub(super) fn tls(&mut self, path: &str, tls: &Spanned<file::Tls>) -> Option<Tls> {
        let t = tls.get_ref();
        let default = self.cert_pair(path, tls.span(), &t.cert, &t.key);
        // Each SNI name may be listed once across all entries of a listener.
        let mut listed: HashMap<String, String> = HashMap::new();
        let mut sni = Vec::new();
        for (j, entry) in t.sni.iter().enumerate() {
            let entry_path = format!("{path}.sni[{j}]");
            let e = entry.get_ref();
            let names = self.server_names(&entry_path, entry.span(), e, &mut listed);
            let pair = self.cert_pair(&entry_path, entry.span(), &e.cert, &e.key);
            sni.push(
                names
                    .zip(pair)
                    .map(|(server_names, pair)| SniCert { server_names, pair }),
            );
        }
        let client_auth = self.client_auth(path, t);
        Some(Tls {
            default: default?,
            sni: sni.into_iter().collect::<Option<_>>()?,
            client_auth: client_auth?,
        })
    }

    /// `client_ca` and `client_auth`: the CA is required once client
    /// certificates are asked for; `client_auth` defaults to `require`,
    /// the safe reading of "here is the CA to check clients against".
    fn client_auth(&mut self, path: &str, t: &file::Tls) -> Option<Option<ClientAuth>> {
        let required = match &t.client_auth {
            None => true,
            Some(mode) => match mode.get_ref().as_str() {
                "require" => true,
                "optional" => false,
                other => {
                    let message =
                        format!("unknown client_auth {other:?}; write \"require\" or \"optional\"");
                    self.report(format!("{path}.client_auth"), Some(mode.span()), message);
                    return None;
                }
            },
        };
        let Some(ca) = &t.client_ca else {
            if let Some(mode) = &t.client_auth {
                let message = "client_auth needs client_ca, the PEM file of the CA that issues \
                               client certificates, e.g. `client_ca = \"certs/clients-ca.pem\"`";
                self.report(
                    format!("{path}.client_auth"),
                    Some(mode.span()),
                    message.to_string(),
                );
                return None;
            }
            return Some(None);
        };
        let file = self.base.join(ca.get_ref());
        let roots = read_roots(&file)
            .map_err(|m| self.report(format!("{path}.client_ca"), Some(ca.span()), m))
            .ok()?;
        Some(Some(ClientAuth {
            ca: file,
            required,
            roots: Arc::new(roots),
        }))
    }

    pub(super) fn server_names(
        &mut self,
        path: &str,
        span: Range<usize>,
        entry: &file::Sni,
        listed: &mut HashMap<String, String>,
    ) -> Option<Vec<String>> {
        let example = "server_names = [\"b.example\"]";
        let names = self.require(path, "server_names", span, &entry.server_names, example)?;
        if names.get_ref().is_empty() {
            let message = format!("lists no name; add at least one, e.g. `{example}`");
            self.report(format!("{path}.server_names"), Some(names.span()), message);
            return None;
        }
        let mut valid = Some(Vec::new());
        for (k, name) in names.get_ref().iter().enumerate() {
            let name_path = format!("{path}.server_names[{k}]");
            let lower = name.get_ref().to_ascii_lowercase();
            let problem = if !is_dns_name(&lower) {
                Some(format!(
                    "{lower:?} is not a DNS name; list exact names such as \"chat.example.com\" \
                     (clients send no wildcards or IP addresses in SNI)"
                ))
            } else if let Some(other) = listed.get(&lower) {
                Some(format!(
                    "{lower:?} is already listed at {other}; list each name once"
                ))
            } else {
                listed.insert(lower.clone(), name_path.clone());
                None
            };
            match problem {
                Some(message) => {
                    self.report(name_path, Some(name.span()), message);
                    valid = None;
                }
                None => valid.iter_mut().for_each(|v| v.push(lower.clone())),
            }
        }
        valid
    }

    /// Reads a certificate chain and its key and checks that they belong
    /// together, so a bad pair is refused here and never reaches a handshake.
    pub(super) fn cert_pair(
        &mut self,
        path: &str,
        span: Range<usize>,
        cert: &Option<Spanned<String>>,
        key: &Option<Spanned<String>>,
    ) -> Option<CertPair> {
        let cert = self.require(
            path,
            "cert",
            span.clone(),
            cert,
            "cert = \"certs/server.pem\"",
        );
        let key = self.require(path, "key", span, key, "key = \"certs/server.key\"");
        let (cert, key) = (cert?, key?);
        let (cert_file, key_file) = (
            self.base.join(cert.get_ref()),
            self.base.join(key.get_ref()),
        );
        let (cert_path, key_path) = (format!("{path}.cert"), format!("{path}.key"));
        let chain = read_chain(&cert_file)
            .map_err(|m| self.report(cert_path.clone(), Some(cert.span()), m))
            .ok();
        let signing_key = read_key(&key_file)
            .map_err(|m| self.report(key_path.clone(), Some(key.span()), m))
            .ok();
        let certified_key = CertifiedKey::new(chain?, signing_key?);
        match certified_key.keys_match() {
            // Unknown: the key cannot name its public half; rustls's own
            // `from_der` accepts that too.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                let message = format!(
                    "the key in {} does not match the certificate in {}; \
                     use the key the certificate was issued for",
                    key_file.display(),
                    cert_file.display()
                );
                self.report(key_path, Some(key.span()), message);
                return None;
            }
            Err(e) => {
                let message = format!("cannot use the certificate in {}: {e}", cert_file.display());
                self.report(cert_path, Some(cert.span()), message);
                return None;
            }
        }
        Some(CertPair {
            cert: cert_file,
            key: key_file,
            certified_key: Arc::new(certified_key),
        })
    }
}

/// Reads a PEM file of CA certificates into a root store.
pub(super) fn read_roots(file: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_chain(file)? {
        roots.add(cert).map_err(|e| {
            format!(
                "{} holds a certificate that cannot be a trust anchor ({e}); use the CA's own \
                 certificate",
                file.display()
            )
        })?;
    }
    Ok(roots)
}

pub(super) fn read_chain(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_problem(file, e, "certificate"))?;
    if chain.is_empty() {
        return Err(pem_problem(file, pem::Error::NoItemsFound, "certificate"));
    }
    Ok(chain)
}

pub(super) fn read_key(file: &Path) -> Result<Arc<dyn SigningKey>, String> {
    let der =
        PrivateKeyDer::from_pem_file(file).map_err(|e| pem_problem(file, e, "private key"))?;
    any_supported_type(&der).map_err(|e| {
        format!(
            "the private key in {} cannot be used ({e}); use an RSA, ECDSA (P-256, P-384) \
             or Ed25519 key",
            file.display()
        )
    })
}

fn pem_problem(file: &Path, error: pem::Error, what: &str) -> String {
    let file = file.display();
    match error {
        pem::Error::Io(e) => format!("cannot read {file}: {e}"),
        pem::Error::NoItemsFound => {
            format!("{file} holds no PEM {what}; it needs a \"-----BEGIN ...\" block with one")
        }
        // The remaining variants are all malformed PEM; the enum is
        // non-exhaustive, so a new one lands here too.
        other => format!("{file} is not valid PEM ({other}); export the {what} as PEM again"),
    }
}
