//! Configuration: the validated, immutable view of the TOML file.
//!
//! `file` holds the serde types that mirror the TOML text; `validate` turns
//! them into the types below, collecting every problem it finds (its module
//! doc says how to add a key). The running proxy only ever reads these
//! validated types.

mod admission;
mod file;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use admission::{Admit, Cidr, ListenerAdmission, PerClient, Rate};
pub use validate::parse;

/// The default listener `max_header_bytes`: request line plus headers.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The admin listener, when `[admin]` is present.
    pub admin: Option<Admin>,
    /// TLS handshake plus the client's whole request must finish within this.
    pub handshake_timeout: Duration,
    /// Grace for open connections on shutdown or backend removal.
    pub drain_timeout: Duration,
    /// Listeners in file order; names are unique.
    pub listeners: Vec<Listener>,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// Pools in file order; names are unique.
    pub pools: Vec<Pool>,
    /// The DNS client for backend names.
    pub resolver: Resolver,
    /// The publish API, when `[publish]` is present.
    pub publish: Option<Publish>,
    /// The Redis shared with other instances, when `[cluster]` is present.
    pub cluster: Option<Cluster>,
}

/// `[resolver]`: how backend names are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    /// DNS servers; empty: the system's (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    /// One query's timeout.
    pub timeout: Duration,
    /// Tries per query, at least 1.
    pub attempts: u32,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }
}

/// `[publish]`: the listener of the publish API and the per-connection
/// queue of pushed messages.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Address the publish HTTP listener binds.
    pub bind: SocketAddr,
    /// The bearer token every request must carry, read from the
    /// environment or a file when the configuration is loaded.
    pub token: Secret,
    /// Requests per second over the listener (a token bucket with a burst
    /// of one second's worth); more are answered 429.
    pub requests_per_second: u32,
    /// Messages waiting per connection before it is closed with 1013.
    pub queue_messages: usize,
    /// Payload bytes waiting per connection before it is closed with 1013.
    pub queue_bytes: usize,
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `[cluster]`: the Redis instances share for their registry and messages.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `redis://` URL, checked to parse.
    pub redis: String,
    /// This instance's name: letters, digits, `-` and `_`.
    pub node_id: String,
    /// How often this instance renews its registry entries; they expire
    /// after three heartbeats without renewal.
    pub heartbeat: Duration,
}

/// A route's `tags`: where a connection's user and channels are read at
/// the handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags {
    /// The user the connection belongs to.
    pub user: Option<TagSource>,
    /// The channels it listens to, a comma-separated list.
    pub channels: Option<TagSource>,
}

/// Where a tag's value is read from in the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSource {
    /// A request header, by name (lower-case).
    Header(String),
    /// A query parameter, by name.
    Query(String),
    /// A cookie, by name.
    Cookie(String),
}

/// `[admin]`: where the admin endpoints listen.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Address the admin HTTP listener binds.
    pub bind: SocketAddr,
    /// The bearer token admin requests must carry (see
    /// `dashboard::auth`), read from the environment or a file at load.
    pub token: Option<Secret>,
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for comparing with what a request offers.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// One `[[listener]]`.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique name, referenced by routes.
    pub name: String,
    /// Address to bind.
    pub bind: SocketAddr,
    /// Request line plus headers larger than this are answered 431.
    pub max_header_bytes: usize,
    /// Present for wss:// listeners.
    pub tls: Option<Tls>,
    /// The PROXY protocol versions every connection must start with;
    /// `None`: no header is read.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Peers allowed to send a PROXY header; empty: any peer.
    pub proxy_protocol_from: Vec<Cidr>,
    /// Peers whose `X-Forwarded-For` names the client; empty: none.
    pub trusted_proxies: Vec<Cidr>,
    /// Per-client limits, global caps and the admit queue.
    pub admission: ListenerAdmission,
    /// An idle client connection between proxied HTTP requests closes
    /// after this.
    pub keepalive_timeout: Duration,
}

/// Which PROXY protocol versions a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// The text header only.
    V1,
    /// The binary header only.
    V2,
    /// Either.
    Any,
}

/// The PROXY protocol version a pool sends to its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

/// The default listener `keepalive_timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default pool `max_idle_per_backend`.
pub const DEFAULT_MAX_IDLE_PER_BACKEND: usize = 32;

/// A listener's certificates: one default plus any chosen by SNI.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Served to clients without SNI or with a name no `sni` entry lists.
    pub default: CertPair,
    /// Certificates chosen by the client's SNI name.
    pub sni: Vec<SniCert>,
    /// Client certificates asked for; `None`: none asked for.
    pub client_auth: Option<ClientAuth>,
}

/// `tls.client_ca` and `tls.client_auth`: client certificates checked
/// against a CA.
#[derive(Clone)]
pub struct ClientAuth {
    /// Path of the PEM CA file, resolved against the config folder.
    pub ca: PathBuf,
    /// `require`: a client without a valid certificate fails the TLS
    /// handshake; `optional`: it may send none.
    pub required: bool,
    /// The CA certificates read from `ca`.
    pub roots: Arc<rustls::RootCertStore>,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("ca", &self.ca)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

/// A pool's `tls`: how its backends are reached over TLS.
#[derive(Clone)]
pub struct BackendTls {
    /// Private CA file; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// SNI and verification name for every backend; `None`: each backend's
    /// DNS name (validation requires it when a backend is an IP address).
    pub server_name: Option<String>,
    /// The client certificate presented to backends, if any.
    pub client_cert: Option<CertPair>,
    /// The rustls configuration built from the above (ALPN `http/1.1`).
    pub client_config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("ca", &self.ca)
            .field("server_name", &self.server_name)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

/// A certificate chain and its private key, already read and checked.
#[derive(Clone)]
pub struct CertPair {
    /// Path of the PEM certificate chain, resolved against the config folder.
    pub cert: PathBuf,
    /// Path of the PEM private key, resolved against the config folder.
    pub key: PathBuf,
    /// The loaded chain and signing key; the key matches the leaf.
    pub certified_key: Arc<rustls::sign::CertifiedKey>,
}

impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPair")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A certificate served for some SNI names.
#[derive(Debug, Clone)]
pub struct SniCert {
    /// Lower-case DNS names this certificate answers for.
    pub server_names: Vec<String>,
    /// The certificate and key.
    pub pair: CertPair,
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Only requests on this listener match; `None`: every listener.
    pub listener: Option<String>,
    /// Host match; `None`: any host.
    pub host: Option<HostPattern>,
    /// Matches whole path segments; always starts with `/`.
    pub path_prefix: String,
    /// Name of the pool (validated to exist).
    pub pool: String,
    /// Index of that pool in [`Config::pools`], resolved by validation.
    pub pool_index: usize,
    /// `None`: any Origin. Compared case-insensitively (ASCII).
    pub allowed_origins: Option<Vec<String>>,
    /// Where connections' push tags come from; `None`: untagged (still
    /// reachable by connection id).
    pub tags: Option<Tags>,
    /// The route's limits and timeouts, defaults applied.
    pub limits: Limits,
    /// Who may pass; `None`: anyone.
    pub auth: Option<Auth>,
}

/// A route's `auth`: how a handshake proves who is connecting.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A JSON Web Token checked by the proxy.
    Jwt(Arc<JwtAuth>),
    /// A GET to an authentication service decides.
    Forward(Arc<ForwardAuth>),
}

/// `auth = { jwt = { ... } }`.
#[derive(Debug, Clone)]
pub struct JwtAuth {
    /// What signatures are checked with.
    pub keys: JwtKeys,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Where the token is read from.
    pub token: TokenSource,
    /// Claim name to backend header name, in file order.
    pub forward_claims: Vec<(String, http::HeaderName)>,
    /// What happens when the token expires on an open connection.
    pub on_expiry: OnExpiry,
    /// The JWKS or secret file the keys were read from, resolved against
    /// the configuration's folder; the file watcher reloads when it changes.
    pub file: Option<std::path::PathBuf>,
}

/// The keys a JWT may be signed with.
#[derive(Clone)]
pub enum JwtKeys {
    /// A shared secret (HS256, HS384, HS512).
    Secret(jsonwebtoken::DecodingKey),
    /// Public keys of a JWKS file.
    Set(Vec<Jwk>),
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKeys::Secret(_) => f.write_str("Secret(..)"),
            JwtKeys::Set(keys) => f.debug_list().entries(keys).finish(),
        }
    }
}

/// One usable key of a JWKS file.
#[derive(Clone)]
pub struct Jwk {
    /// Its `kid`, which a token's header names.
    pub kid: Option<String>,
    /// The algorithms it verifies: its `alg` when the file names one,
    /// else every algorithm of its key type.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// The key itself.
    pub key: jsonwebtoken::DecodingKey,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Where a route reads the token from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A header; a `Bearer ` prefix is removed.
    Header(http::HeaderName),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
    /// A `Sec-WebSocket-Protocol` entry of its own.
    Protocol,
}

/// `on_expiry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExpiry {
    /// Close 1008 to the client, 1001 to the backend.
    Close,
    /// Let the connection run.
    Ignore,
}

/// `auth = { forward = { ... } }`.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    /// The service's `http://` URL.
    pub url: http::Uri,
    /// No answer within this: 503.
    pub timeout: Duration,
    /// Request headers copied to the service.
    pub request_headers: Vec<http::HeaderName>,
    /// Headers of a 2xx answer copied into the backend request.
    pub response_headers: Vec<http::HeaderName>,
}

/// How a route matches the request's host (port ignored, case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `chat.example.com`, stored lower-case.
    Exact(String),
    /// `*.example.com`, stored lower-case as `.example.com`: one or more
    /// labels before the suffix, never the bare suffix itself.
    Suffix(String),
}

/// Per-route limits and timeouts; `[defaults]` fills what a route omits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A whole message, all its fragments together.
    pub max_message_bytes: u64,
    /// One frame's payload.
    pub max_frame_bytes: u64,
    /// No frame either way for this long: close 1001 both ways.
    pub idle_timeout: Duration,
    /// Backend TCP connect plus its 101 answer.
    pub connect_timeout: Duration,
    /// Zero: no keepalive pings.
    pub ping_interval: Duration,
    /// No frame from the client this long after a proxy ping: close.
    pub ping_timeout: Duration,
    /// What a request without `Upgrade: websocket` gets.
    pub http: HttpMode,
    /// A proxied HTTP request body larger than this is refused with 413;
    /// zero: no limit.
    pub max_request_body_bytes: u64,
    /// A proxied HTTP request's backend must send its response head within
    /// this, counted from the end of the request body; else 504.
    pub response_timeout: Duration,
    /// Connections older than this (± 10%) are closed 1001; zero: never.
    pub max_lifetime: Duration,
    /// Client-to-backend data messages per second; `None`: no limit.
    pub max_messages_per_second: Option<u32>,
    /// Messages at once above the rate; `None`: one second's worth.
    pub message_burst: Option<u32>,
    /// What happens to a client over the message rate.
    pub on_message_rate: OnMessageRate,
}

/// What the proxy does with a client sending over its message rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnMessageRate {
    /// Stop reading it until the bucket refills: TCP pushes back and
    /// nothing is lost.
    #[default]
    Slow,
    /// Close 1008 to the client, 1001 to the backend.
    Close,
}

/// A route's message rate, resolved from its three keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRate {
    /// Messages per second, at least 1.
    pub per_second: u32,
    /// The bucket's size, at least 1.
    pub burst: u32,
    /// What happens over the rate.
    pub on_exceed: OnMessageRate,
}

impl Limits {
    /// The message rate, when the route limits it.
    pub fn message_rate(&self) -> Option<MessageRate> {
        let per_second = self.max_messages_per_second?;
        Some(MessageRate {
            per_second,
            burst: self.message_burst.unwrap_or(per_second),
            on_exceed: self.on_message_rate,
        })
    }
}

/// What a route does with a request that carries no `Upgrade: websocket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMode {
    /// Answer 426, as a WebSocket-only route always has.
    Reject,
    /// Proxy it to the route's pool as a plain HTTP/1.1 request.
    Proxy,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1024 * 1024,
            max_frame_bytes: 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(3),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            max_lifetime: Duration::ZERO,
            max_messages_per_second: None,
            message_burst: None,
            on_message_rate: OnMessageRate::Slow,
            http: HttpMode::Reject,
            max_request_body_bytes: 0,
            response_timeout: Duration::from_secs(60),
        }
    }
}

/// One `[[pool]]`.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Unique name, referenced by routes.
    pub name: String,
    /// The balancing algorithm.
    pub balance: Balance,
    /// Where the affinity key comes from; `Some` exactly when `balance` is
    /// `Sticky`.
    pub sticky: Option<Sticky>,
    /// Bounded load for sticky pools (> 1.0); `None`: off.
    pub hash_balance_factor: Option<f64>,
    /// Active health checks; `None`: passive only.
    pub health_check: Option<HealthCheck>,
    /// The `backends` entries as written: at least one, each unique.
    pub entries: Vec<BackendEntry>,
    /// The backends as of this snapshot, addresses unique: the entries
    /// written as addresses, then what names and SRV records resolved to.
    /// Validation fills in the former; discovery adds the latter.
    pub backends: Vec<Backend>,
    /// Entry names that have never resolved: the reason a pool with no
    /// backends gives in its 503.
    pub unresolved: Vec<String>,
    /// Time between resolutions of the entries' names.
    pub resolve_interval: Duration,
    /// TLS to the backends (wss://); `None`: plain TCP.
    pub tls: Option<BackendTls>,
    /// A PROXY protocol header starts every backend connection.
    pub send_proxy_protocol: Option<ProxyVersion>,
    /// Idle keep-alive connections kept per backend for proxied HTTP.
    pub max_idle_per_backend: usize,
    /// A backend that comes up ramps its share of new connections from 10%
    /// to 100% of its weight over this; zero: off.
    pub slow_start: Duration,
    /// Gradual rebalancing of long-lived connections; `None`: off.
    pub rebalance: Option<Rebalance>,
}

/// `rebalance = { tolerance, max_closes_per_second }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rebalance {
    /// A backend over `(1 + tolerance)` times its weighted fair share is
    /// overloaded.
    pub tolerance: f64,
    /// The most rebalancing closes per second, for the whole pool.
    pub max_closes_per_second: f64,
}

/// One entry of a pool's `backends`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendEntry {
    /// Where the backends come from.
    pub target: Target,
    /// Weight of each address; SRV records bring their own.
    pub weight: u32,
    /// Cap on each address's connections; `None`: none.
    pub max_connections: Option<u32>,
}

/// Where an entry's backends come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `addr = "10.0.0.1:9000"`: one fixed backend.
    Addr(SocketAddr),
    /// `addr = "chat.internal:9000"`: every A and AAAA address of `host`.
    Name {
        /// Lower-case DNS name.
        host: String,
        /// Port on every address.
        port: u16,
    },
    /// `srv = "_ws._tcp.chat.internal"`: the SRV record's targets.
    Srv(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
            Target::Srv(name) => f.write_str(name),
        }
    }
}

impl Target {
    /// The DNS name to resolve; `None` for an address.
    pub fn name(&self) -> Option<&str> {
        match self {
            Target::Addr(_) => None,
            Target::Name { host, .. } => Some(host),
            Target::Srv(name) => Some(name),
        }
    }
}

/// The closed set of balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Fewest active connections divided by weight.
    LeastConnections,
    /// Consistent hashing of an affinity key.
    Sticky,
}

/// `sticky = { source, name }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    /// Where the key is read from.
    pub source: StickySource,
    /// Cookie, header or query parameter name; unused for `ClientIp`.
    pub name: String,
    /// With `Cookie`: whether the cookie is the proxy's own, issued when a
    /// request has no valid one (`true`), or an application's cookie whose
    /// value is hashed (`false`). Always `true` for other sources.
    pub issue: bool,
}

/// Where a sticky pool reads its affinity key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickySource {
    /// A cookie named `name`; the proxy sets it when missing.
    Cookie,
    /// A request header named `name`.
    Header,
    /// A query parameter named `name`.
    Query,
    /// The client's IP address.
    ClientIp,
}

/// `health_check = { kind, interval, timeout, path }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a check does.
    pub kind: HealthCheckKind,
    /// Time between checks of one backend.
    pub interval: Duration,
    /// A check taking longer fails.
    pub timeout: Duration,
}

/// The kinds of active health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP connect succeeds.
    Tcp,
    /// A full WebSocket upgrade on `path` answers 101 with a correct accept.
    WebSocket {
        /// Request path, starting with `/`.
        path: String,
    },
}

/// One backend of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// Relative share, at least 1.
    pub weight: u32,
    /// Hard cap on connections (handshakes in flight count); `None`: none.
    pub max_connections: Option<u32>,
    /// The DNS name the address was resolved from; `None` for an address
    /// written in the file. The default TLS name, and a metrics label.
    pub name: Option<Arc<str>>,
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `route[2].pool`; empty for syntax errors.
    pub key_path: String,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// 1-based column, where known.
    pub column: Option<usize>,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: ")?,
            (Some(l), None) => write!(f, "line {l}: ")?,
            _ => {}
        }
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be loaded. Nothing of it is used: a file is
/// accepted whole or refused whole.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file itself could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file named on the command line.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file was read but has one or more problems.
    #[error("{} has {} problem(s):\n{}", origin, problems.len(), list(problems))]
    Invalid {
        /// The file's path, or `<embedded>` for the demo's configuration.
        origin: String,
        /// Every problem found, in file order where possible.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    lines.join("\n")
}

impl ConfigError {
    /// Every problem as one line each, for logs and the admin API.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Invalid { origin, problems } => {
                problems.iter().map(|p| format!("{origin}: {p}")).collect()
            }
        }
    }
}

/// Reads and validates the file at `path`; relative paths inside it are
/// resolved against its folder.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, base, &path.display().to_string())
}

/// The example configuration, built into the binary for `wsgate demo`.
pub const EXAMPLE: &str = include_str!("../../config.example.toml");
