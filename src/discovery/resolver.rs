//! The DNS client: hickory-resolver on the tokio runtime, configured from
//! `[resolver]` or the system's /etc/resolv.conf, never blocking a worker
//! thread the way getaddrinfo would.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::srv::SrvRecord;
use crate::config;

/// Answers are cached at most this long, so that a record with a long TTL
/// does not hide a change from the next resolution for long, and a short
/// one does not make lookups more frequent than `resolve_interval` asks.
const MAX_CACHE: Duration = Duration::from_secs(1);

/// Why a name gave no addresses.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The DNS query failed: no answer in time, NXDOMAIN, SERVFAIL, ...
    #[error("{0}")]
    Dns(#[from] ResolveError),
    /// The answer held no usable record.
    #[error("the answer has no usable record")]
    Empty,
}

/// A configured DNS client.
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// A client for `[resolver]`: its nameservers (UDP, then TCP for long
    /// answers), or the system's when it lists none.
    pub fn new(config: &config::Resolver) -> Result<Resolver, ResolveError> {
        let (resolver_config, mut opts) = if config.nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()?
        } else {
            let mut group = NameServerConfigGroup::with_capacity(config.nameservers.len() * 2);
            for ns in &config.nameservers {
                group.push(NameServerConfig::new(*ns, Protocol::Udp));
                group.push(NameServerConfig::new(*ns, Protocol::Tcp));
            }
            (
                ResolverConfig::from_parts(None, Vec::new(), group),
                ResolverOpts::default(),
            )
        };
        opts.timeout = config.timeout;
        opts.attempts = config.attempts as usize;
        // Every A and AAAA address is a backend (issue: "Backends by name").
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.positive_max_ttl = Some(MAX_CACHE);
        opts.negative_max_ttl = Some(MAX_CACHE);
        let mut builder =
            TokioResolver::builder_with_config(resolver_config, TokioConnectionProvider::default());
        *builder.options_mut() = opts;
        Ok(Resolver {
            inner: builder.build(),
        })
    }

    /// The A and AAAA addresses of `host`, sorted.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        let lookup = self.inner.lookup_ip(host).await?;
        let mut ips: Vec<IpAddr> = lookup.iter().collect();
        ips.sort_unstable();
        ips.dedup();
        match ips.is_empty() {
            true => Err(LookupError::Empty),
            false => Ok(ips),
        }
    }

    /// The SRV records of `name`.
    pub async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, LookupError> {
        let lookup = self.inner.srv_lookup(name).await?;
        let records: Vec<SrvRecord> = lookup
            .iter()
            .map(|r| SrvRecord {
                priority: r.priority(),
                weight: r.weight(),
                port: r.port(),
                target: r.target().to_ascii().trim_end_matches('.').to_string(),
            })
            .collect();
        match records.is_empty() {
            true => Err(LookupError::Empty),
            false => Ok(records),
        }
    }
}
