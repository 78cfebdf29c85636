//! Serde types mirroring the TOML file, key for key.
//!
//! Nothing here is checked beyond TOML syntax, unknown keys and value types,
//! and `validate` recovers from those (see `validate/keys.rs`) so that it
//! can report every problem at once.
//! That is why keys the contract calls required are `Option` here (a missing
//! one is one problem among others, not the end of parsing), why the
//! algorithm names are plain strings, and why values a problem can point at
//! are `Spanned` (the span gives the problem its line).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// `[admin]`.
    pub admin: Option<Spanned<Admin>>,
    /// `[defaults]`.
    pub defaults: Option<Spanned<Defaults>>,
    /// `[[listener]]` tables.
    #[serde(default)]
    pub listener: Vec<Spanned<Listener>>,
    /// `[[route]]` tables.
    #[serde(default)]
    pub route: Vec<Spanned<Route>>,
    /// `[[pool]]` tables.
    #[serde(default)]
    pub pool: Vec<Spanned<Pool>>,
    /// `[resolver]`.
    pub resolver: Option<Spanned<Resolver>>,
    /// `[publish]`.
    pub publish: Option<Spanned<Publish>>,
    /// `[cluster]`.
    pub cluster: Option<Spanned<Cluster>>,
}

/// `[resolver]`: the DNS client for backend names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolver {
    /// Socket addresses of DNS servers.
    pub nameservers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Duration per query.
    pub timeout: Option<Spanned<RawDuration>>,
    /// Tries per query.
    pub attempts: Option<Spanned<i64>>,
}

/// `[publish]`: the publish API's listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// Socket address, required.
    pub bind: Option<Spanned<String>>,
    /// `env:NAME` or `file:PATH`, required.
    pub token: Option<Spanned<String>>,
    /// Requests per second over the whole listener.
    pub requests_per_second: Option<Spanned<i64>>,
    /// Messages waiting per connection.
    pub queue_messages: Option<Spanned<i64>>,
    /// Bytes waiting per connection.
    pub queue_bytes: Option<Spanned<RawSize>>,
}

/// `[cluster]`: instances sharing a Redis.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// `redis://host:port[/db]`, required.
    pub redis: Option<Spanned<String>>,
    /// This instance's name, required, unique in the cluster.
    pub node_id: Option<Spanned<String>>,
    /// Duration.
    pub heartbeat: Option<Spanned<RawDuration>>,
}

/// A route's `tags` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    /// `header:NAME`, `query:NAME`, `cookie:NAME` or `claim:NAME`.
    pub user: Option<Spanned<String>>,
    /// The same sources; a comma-separated list.
    pub channels: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Socket address, required.
    pub bind: Option<Spanned<String>>,
    /// `env:NAME` or `file:PATH`: where the bearer token is.
    pub token: Option<Spanned<String>>,
}

/// `[defaults]`: the six route keys plus the two global timeouts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Bytes.
    pub max_message_bytes: Option<Spanned<RawSize>>,
    /// Bytes.
    pub max_frame_bytes: Option<Spanned<RawSize>>,
    /// Duration.
    pub idle_timeout: Option<Spanned<RawDuration>>,
    /// Duration; global only.
    pub handshake_timeout: Option<Spanned<RawDuration>>,
    /// Duration.
    pub connect_timeout: Option<Spanned<RawDuration>>,
    /// Duration.
    pub ping_interval: Option<Spanned<RawDuration>>,
    /// Duration.
    pub ping_timeout: Option<Spanned<RawDuration>>,
    /// Duration; global only.
    pub drain_timeout: Option<Spanned<RawDuration>>,
    /// Duration; "0s": off.
    pub max_lifetime: Option<Spanned<RawDuration>>,
    /// Client-to-backend data messages per second.
    pub max_messages_per_second: Option<Spanned<i64>>,
    /// Messages at once above that rate.
    pub message_burst: Option<Spanned<i64>>,
    /// `"slow"` or `"close"`.
    pub on_message_rate: Option<Spanned<String>>,
    /// `reject` or `proxy`.
    pub http: Option<Spanned<String>>,
    /// Bytes; 0 for no limit.
    pub max_request_body_bytes: Option<Spanned<RawSize>>,
    /// Duration.
    pub response_timeout: Option<Spanned<RawDuration>>,
}

/// `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Required, unique.
    pub name: Option<Spanned<String>>,
    /// Socket address, required.
    pub bind: Option<Spanned<String>>,
    /// Bytes.
    pub max_header_bytes: Option<Spanned<RawSize>>,
    /// Absent for plain ws://.
    pub tls: Option<Spanned<Tls>>,
    /// `v1`, `v2` or `any`.
    pub proxy_protocol: Option<Spanned<String>>,
    /// Address ranges.
    pub proxy_protocol_from: Option<Spanned<Vec<Spanned<String>>>>,
    /// Address ranges.
    pub trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    /// Duration.
    pub keepalive_timeout: Option<Spanned<RawDuration>>,
    /// Limits per client address (admission control).
    pub per_client: Option<Spanned<PerClient>>,
    /// Open client connections, handshakes included.
    pub max_connections: Option<Spanned<i64>>,
    /// Connections still in TLS or reading their request.
    pub max_pending_handshakes: Option<Spanned<i64>>,
    /// Upgrades above a rate wait in a queue.
    pub admit: Option<Spanned<Admit>>,
}

/// A listener's `per_client` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerClient {
    /// Connections one client may hold open.
    pub max_connections: Option<Spanned<i64>>,
    /// New connections per second, sustained.
    pub handshakes_per_second: Option<Spanned<f64>>,
    /// New connections at once above the rate.
    pub burst: Option<Spanned<i64>>,
    /// Address ranges the limits do not apply to.
    pub exempt: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A listener's `admit` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admit {
    /// Upgrades per second passed on to routing and backends; required.
    pub handshakes_per_second: Option<Spanned<f64>>,
    /// Longest wait in the queue; duration.
    pub queue: Option<Spanned<RawDuration>>,
}

/// A listener's `tls` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain path, required.
    pub cert: Option<Spanned<String>>,
    /// PEM private key path, required.
    pub key: Option<Spanned<String>>,
    /// Certificates chosen by SNI.
    #[serde(default)]
    pub sni: Vec<Spanned<Sni>>,
    /// PEM file of the CAs that client certificates must chain to.
    pub client_ca: Option<Spanned<String>>,
    /// `require` or `optional`.
    pub client_auth: Option<Spanned<String>>,
}

/// One entry of `tls.sni`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sni {
    /// DNS names, required, at least one.
    pub server_names: Option<Spanned<Vec<Spanned<String>>>>,
    /// PEM certificate chain path, required.
    pub cert: Option<Spanned<String>>,
    /// PEM private key path, required.
    pub key: Option<Spanned<String>>,
}

/// `[[route]]`: its own keys plus the overridable `[defaults]` keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Listener name.
    pub listener: Option<Spanned<String>>,
    /// Exact host or `*.suffix`.
    pub host: Option<Spanned<String>>,
    /// Starts with `/`.
    pub path_prefix: Option<Spanned<String>>,
    /// Pool name, required.
    pub pool: Option<Spanned<String>>,
    /// Accepted `Origin` values.
    pub allowed_origins: Option<Spanned<Vec<Spanned<String>>>>,
    /// Where the connection's user and channels are read.
    pub tags: Option<Spanned<Tags>>,
    /// Bytes.
    pub max_message_bytes: Option<Spanned<RawSize>>,
    /// Bytes.
    pub max_frame_bytes: Option<Spanned<RawSize>>,
    /// Duration.
    pub idle_timeout: Option<Spanned<RawDuration>>,
    /// Duration.
    pub connect_timeout: Option<Spanned<RawDuration>>,
    /// Duration.
    pub ping_interval: Option<Spanned<RawDuration>>,
    /// Duration.
    pub ping_timeout: Option<Spanned<RawDuration>>,
    /// `{ jwt = {...} }` or `{ forward = {...} }`.
    pub auth: Option<Spanned<Auth>>,
    /// Duration; "0s": off.
    pub max_lifetime: Option<Spanned<RawDuration>>,
    /// Client-to-backend data messages per second.
    pub max_messages_per_second: Option<Spanned<i64>>,
    /// Messages at once above that rate.
    pub message_burst: Option<Spanned<i64>>,
    /// `"slow"` or `"close"`.
    pub on_message_rate: Option<Spanned<String>>,
    /// `reject` or `proxy`.
    pub http: Option<Spanned<String>>,
    /// Bytes; 0 for no limit.
    pub max_request_body_bytes: Option<Spanned<RawSize>>,
    /// Duration.
    pub response_timeout: Option<Spanned<RawDuration>>,
}

/// A route's `auth` table: exactly one of its keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Token checks by the proxy.
    pub jwt: Option<Spanned<Jwt>>,
    /// An authentication service.
    pub forward: Option<Spanned<Forward>>,
}

/// `auth.jwt`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// `env:NAME` or `file:PATH`.
    pub secret: Option<Spanned<String>>,
    /// A JWKS file's path.
    pub keys: Option<Spanned<String>>,
    /// Required `iss`.
    pub issuer: Option<Spanned<String>>,
    /// Required `aud`.
    pub audience: Option<Spanned<String>>,
    /// Duration.
    pub leeway: Option<Spanned<RawDuration>>,
    /// `header:NAME`, `query:NAME`, `cookie:NAME` or `protocol`.
    pub token: Option<Spanned<String>>,
    /// Claim name to header name.
    pub forward_claims: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    /// `close` or `ignore`.
    pub on_expiry: Option<Spanned<String>>,
}

/// `auth.forward`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// The service's URL, required.
    pub url: Option<Spanned<String>>,
    /// Duration.
    pub timeout: Option<Spanned<RawDuration>>,
    /// Header names.
    pub request_headers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Header names.
    pub response_headers: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[[pool]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Required, unique.
    pub name: Option<Spanned<String>>,
    /// `least_connections` or `sticky`.
    pub balance: Option<Spanned<String>>,
    /// Required with `balance = "sticky"`, refused otherwise.
    pub sticky: Option<Spanned<Sticky>>,
    /// Above 1.0, sticky pools only.
    pub hash_balance_factor: Option<Spanned<f64>>,
    /// Duration a backend that comes up ramps over; "0s": off.
    pub slow_start: Option<Spanned<RawDuration>>,
    /// Gradual rebalancing of long-lived connections.
    pub rebalance: Option<Spanned<Rebalance>>,
    /// Active checks.
    pub health_check: Option<Spanned<HealthCheck>>,
    /// Required, at least one.
    pub backends: Option<Spanned<Vec<Spanned<Backend>>>>,
    /// Duration between resolutions of backend names.
    pub resolve_interval: Option<Spanned<RawDuration>>,
    /// `true`, or a table: TLS to the backends.
    pub tls: Option<Spanned<BackendTls>>,
    /// `v1` or `v2`.
    pub send_proxy_protocol: Option<Spanned<String>>,
    /// Count, 0 or more.
    pub max_idle_per_backend: Option<Spanned<i64>>,
}

/// A pool's `tls`: `true` (system roots) or a table.
#[derive(Debug)]
pub enum BackendTls {
    /// `tls = true` or `tls = false`.
    Enabled(bool),
    /// `tls = { ca, server_name, cert, key }`.
    Table(BackendTlsTable),
}

/// The table form of a pool's `tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsTable {
    /// PEM file of the CAs backend certificates must chain to.
    pub ca: Option<Spanned<String>>,
    /// Name sent as SNI and verified in the backend's certificate.
    pub server_name: Option<Spanned<String>>,
    /// PEM client certificate chain presented to backends.
    pub cert: Option<Spanned<String>>,
    /// PEM private key of `cert`.
    pub key: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for BackendTls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BackendTlsVisitor)
    }
}

struct BackendTlsVisitor;

impl<'de> Visitor<'de> for BackendTlsVisitor {
    type Value = BackendTls;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true, or a table such as { ca = \"ca.pem\", server_name = \"chat.internal\" }")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<BackendTls, E> {
        Ok(BackendTls::Enabled(v))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<BackendTls, A::Error> {
        let table = BackendTlsTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(BackendTls::Table(table))
    }
}

/// A pool's `rebalance` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rebalance {
    /// How far over its fair share a backend may be, e.g. 0.2.
    pub tolerance: Option<Spanned<f64>>,
    /// The most rebalancing closes per second.
    pub max_closes_per_second: Option<Spanned<f64>>,
}

/// A pool's `sticky` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    /// `cookie`, `header`, `query` or `client_ip`; required.
    pub source: Option<Spanned<String>>,
    /// Cookie, header or parameter name.
    pub name: Option<Spanned<String>>,
    /// Cookie source only: issue the proxy's own cookie.
    pub issue: Option<Spanned<bool>>,
}

/// A pool's `health_check` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `tcp` or `websocket`; required.
    pub kind: Option<Spanned<String>>,
    /// Duration.
    pub interval: Option<Spanned<RawDuration>>,
    /// Duration.
    pub timeout: Option<Spanned<RawDuration>>,
    /// Request path, `websocket` only.
    pub path: Option<Spanned<String>>,
}

/// One entry of a pool's `backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `ip:port` or `name:port`; this or `srv` is required.
    pub addr: Option<Spanned<String>>,
    /// An SRV record name.
    pub srv: Option<Spanned<String>>,
    /// Relative share.
    pub weight: Option<Spanned<i64>>,
    /// Connection cap.
    pub max_connections: Option<Spanned<i64>>,
}

/// A duration as written: text to parse later, or a bare number, which is
/// kept so that validation can say "add a unit" among the other problems
/// instead of failing the whole parse on a type error.
#[derive(Debug, Clone, PartialEq)]
pub enum RawDuration {
    /// `"30s"`, not parsed yet.
    Text(String),
    /// `30` or `0.5`, as the user wrote it.
    Bare(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawDurationVisitor)
    }
}

struct RawDurationVisitor;

impl Visitor<'_> for RawDurationVisitor {
    type Value = RawDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with a unit, such as \"250ms\", \"30s\" or \"5m\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
        Ok(RawDuration::Text(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
        Ok(RawDuration::Bare(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
        Ok(RawDuration::Bare(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
        Ok(RawDuration::Bare(v.to_string()))
    }
}

/// A size as written: a whole number of bytes, or anything else kept so that
/// validation can say what the bytes would be ("64KiB": 65536) among the
/// other problems.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSize {
    /// `65536`; may still be out of range.
    Bytes(i128),
    /// `"64KiB"` or `"65536"`: a string where a number belongs.
    Text(String),
    /// `0.5`: not a whole number.
    Fraction(f64),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawSizeVisitor)
    }
}

struct RawSizeVisitor;

impl Visitor<'_> for RawSizeVisitor {
    type Value = RawSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number of bytes, such as 65536")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
        Ok(RawSize::Text(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
        Ok(RawSize::Bytes(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
        Ok(RawSize::Bytes(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawSize, E> {
        Ok(RawSize::Fraction(v))
    }
}
