//! `[publish]`, `[cluster]` and a route's `tags`: the keys of pushing
//! messages to connected clients.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::{file, optional, Checker};
use crate::config::{Cluster, Publish, Secret, TagSource, Tags};

/// `[publish]` defaults.
const DEFAULT_REQUESTS_PER_SECOND: u32 = 1000;
const DEFAULT_QUEUE_MESSAGES: usize = 64;
const DEFAULT_QUEUE_BYTES: u64 = 1024 * 1024;
/// `[cluster]` default: entries of a vanished instance are gone within
/// three of these.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// Longest `node_id`: it is part of every connection id.
const MAX_NODE_ID_LEN: usize = 64;

impl Checker<'_> {
    pub(super) fn publish(&mut self, publish: &Spanned<file::Publish>) -> Option<Publish> {
        let p = publish.get_ref();
        let bind = self.require(
            "publish",
            "bind",
            publish.span(),
            &p.bind,
            "bind = \"127.0.0.1:9800\"",
        );
        let bind = bind.and_then(|b| self.socket_addr("publish.bind", b));
        let token = self.require(
            "publish",
            "token",
            publish.span(),
            &p.token,
            "token = \"env:WSGATE_PUBLISH_TOKEN\"",
        );
        let token = token.and_then(|t| self.secret("publish.token", t));
        let rate = optional(&p.requests_per_second, |r| {
            self.whole("publish.requests_per_second", r, 1, 1_000_000)
        });
        let queue_messages = optional(&p.queue_messages, |q| {
            self.whole("publish.queue_messages", q, 1, 1_000_000)
        });
        let queue_bytes = optional(&p.queue_bytes, |q| {
            let n = self.bytes("publish.queue_bytes", q)?;
            if n == 0 {
                let message = "must be at least 1".to_string();
                self.report("publish.queue_bytes".to_string(), Some(q.span()), message);
                return None;
            }
            Some(n)
        });
        Some(Publish {
            bind: bind?,
            token: token?,
            requests_per_second: rate?.map_or(DEFAULT_REQUESTS_PER_SECOND, |r| r as u32),
            queue_messages: queue_messages?.map_or(DEFAULT_QUEUE_MESSAGES, |q| q as usize),
            queue_bytes: queue_bytes?.unwrap_or(DEFAULT_QUEUE_BYTES) as usize,
        })
    }

    /// A whole number in `min..=max`.
    fn whole(&mut self, path: &str, value: &Spanned<i64>, min: i64, max: i64) -> Option<i64> {
        let n = *value.get_ref();
        if (min..=max).contains(&n) {
            return Some(n);
        }
        let message = format!("{n} is out of range; write a whole number from {min} to {max}");
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    /// `env:NAME` or `file:PATH` (relative to the configuration's folder),
    /// read now so that `wsgate check` reports a missing one.
    fn secret(&mut self, path: &str, value: &Spanned<String>) -> Option<Secret> {
        let v = value.get_ref();
        let read = if let Some(name) = v.strip_prefix("env:") {
            std::env::var(name).map_err(|_| {
                format!("the environment variable {name:?} is not set (or not UTF-8); set it to the token")
            })
        } else if let Some(file) = v.strip_prefix("file:") {
            let full = self.base.join(Path::new(file));
            std::fs::read_to_string(&full)
                .map_err(|e| format!("cannot read {}: {e}", full.display()))
        } else {
            Err(
                "write \"env:NAME\" or \"file:PATH\"; the token itself does not belong in the file"
                    .to_string(),
            )
        };
        let message = match read {
            Ok(token) if !token.trim().is_empty() => return Some(Secret(token.trim().to_string())),
            Ok(_) => "the token is empty".to_string(),
            Err(message) => message,
        };
        self.report(path.to_string(), Some(value.span()), message);
        None
    }

    pub(super) fn cluster(&mut self, cluster: &Spanned<file::Cluster>) -> Option<Cluster> {
        let c = cluster.get_ref();
        let redis = self.require(
            "cluster",
            "redis",
            cluster.span(),
            &c.redis,
            "redis = \"redis://127.0.0.1:6379\"",
        );
        let redis = redis.and_then(|r| {
            let url = r.get_ref();
            if url.starts_with("redis://") && redis::Client::open(url.as_str()).is_ok() {
                return Some(url.clone());
            }
            let message =
                format!("{url:?} is not a Redis URL; write \"redis://host:port\" (optionally /db)");
            self.report("cluster.redis".to_string(), Some(r.span()), message);
            None
        });
        let node_id = self.require(
            "cluster",
            "node_id",
            cluster.span(),
            &c.node_id,
            "node_id = \"gate-1\"",
        );
        let node_id = node_id.and_then(|n| {
            let id = n.get_ref();
            let valid = !id.is_empty()
                && id.len() <= MAX_NODE_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if valid {
                return Some(id.clone());
            }
            let message = format!(
                "{id:?} is not a node id; use 1 to {MAX_NODE_ID_LEN} letters, digits, '-' or '_', unique per instance"
            );
            self.report("cluster.node_id".to_string(), Some(n.span()), message);
            None
        });
        let heartbeat = optional(&c.heartbeat, |h| {
            self.positive_duration("cluster.heartbeat", h)
        });
        Some(Cluster {
            redis: redis?,
            node_id: node_id?,
            heartbeat: heartbeat?.unwrap_or(DEFAULT_HEARTBEAT),
        })
    }

    pub(super) fn tags(&mut self, path: &str, tags: &Spanned<file::Tags>) -> Option<Tags> {
        let t = tags.get_ref();
        let user = optional(&t.user, |u| self.tag_source(&format!("{path}.user"), u));
        let channels = optional(&t.channels, |c| {
            self.tag_source(&format!("{path}.channels"), c)
        });
        Some(Tags {
            user: user?,
            channels: channels?,
        })
    }

    fn tag_source(&mut self, path: &str, value: &Spanned<String>) -> Option<TagSource> {
        let v = value.get_ref();
        let (kind, name) = v.split_once(':').unwrap_or((v.as_str(), ""));
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let message = match kind {
            "header" if token => return Some(TagSource::Header(name.to_ascii_lowercase())),
            "query" if token => return Some(TagSource::Query(name.to_string())),
            "cookie" if token => return Some(TagSource::Cookie(name.to_string())),
            "header" | "query" | "cookie" => {
                format!("{v:?} needs a name after the colon, e.g. \"{kind}:user\"")
            }
            // JWT claims need the route's `auth`, which this version of
            // wsgate does not have yet.
            "claim" => format!(
                "{v:?}: claim sources need JWT authentication on the route (`auth`), which \
                 this version does not support yet; use \"header:NAME\", \"query:NAME\" or \"cookie:NAME\""
            ),
            _ => format!(
                "{v:?} is not a tag source; write \"header:NAME\", \"query:NAME\" or \"cookie:NAME\""
            ),
        };
        self.report(path.to_string(), Some(value.span()), message);
        None
    }
}
