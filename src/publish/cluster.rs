//! Instances sharing one Redis (`[cluster]`): a registry of who holds
//! which user and channel, and messages sent only to the instances that
//! hold a target.
//!
//! Registry: for each user a sorted set `wsgate:user:<user>` of
//! `"<node> <connection id> <since ms>"`, and for each channel a sorted set
//! `wsgate:chan:<channel>` of node ids, each member scored with the moment
//! (Unix ms) it expires: three heartbeats after its node last renewed it.
//! Readers ignore expired members, so a crashed instance's entries vanish
//! within three heartbeats (the instances' clocks must agree to well
//! within a heartbeat); keys also carry a TTL so that abandoned ones are
//! removed.
//!
//! Messages: every instance subscribes to `wsgate:node:<node>`; a publish
//! looks up the target's nodes and `PUBLISH`es one envelope to each,
//! itself included. Redis orders all publishes, and each instance handles
//! its subscription in one task, so one publisher's messages reach every
//! connection in publish order, whichever instances they go through. A
//! publish waits for its own copy to come back so that it can answer how
//! many local connections got it.
//!
//! Redis down: publishes and queries answer 503 (the publisher still
//! delivers to its own connections), the subscription reconnects with
//! backoff, and the registry is written again whole once it is back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};
use tracing::{info, warn};

use crate::config;
use crate::metrics::Metrics;
use crate::push::{Delivery, Hub, Target};
use crate::relay::inbox::Pushed;

/// Longest wait for one Redis round trip before answering 503.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why the cluster could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No connection to Redis (yet, or any more).
    #[error("not connected to Redis")]
    NotConnected,
    /// Redis answered with an error or the connection failed.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within 2 s.
    #[error("Redis did not answer in time")]
    Timeout,
}

/// What a cluster publish did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    /// Deliveries to this instance's connections.
    pub here: Delivery,
    /// Instances that received the message (this one included).
    pub nodes: usize,
}

/// A user's connection somewhere in the cluster.
#[derive(Debug, Clone)]
pub struct RemoteConnection {
    /// The connection id.
    pub id: String,
    /// The instance holding it.
    pub node: String,
    /// When its relay started.
    pub since: SystemTime,
}

/// The message as it travels between instances.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: String,
    seq: u64,
    /// Unix ms at publish, for the lag histogram.
    at: u64,
    kind: String,
    name: String,
    binary: bool,
    /// Text as is, binary in base64.
    data: String,
}

/// This instance's link to the cluster.
pub struct Cluster {
    node: String,
    hub: Arc<Hub>,
    metrics: Option<Arc<Metrics>>,
    client: redis::Client,
    manager: Mutex<Option<ConnectionManager>>,
    heartbeat: Duration,
    seq: AtomicU64,
    /// Publishes of this instance waiting for their own copy.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Delivery>>>,
    /// Write the whole registry again (after a reconnect).
    resync: Notify,
}

impl Cluster {
    /// Connects in the background and keeps the registry and the
    /// subscription up until the process ends.
    pub fn start(
        config: &config::Cluster,
        hub: Arc<Hub>,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Cluster> {
        let client = redis::Client::open(config.redis.as_str()).expect("validated Redis URL");
        let cluster = Arc::new(Cluster {
            node: config.node_id.clone(),
            hub,
            metrics,
            client,
            manager: Mutex::new(None),
            heartbeat: config.heartbeat,
            seq: AtomicU64::new(1),
            waiting: Mutex::default(),
            resync: Notify::new(),
        });
        tokio::spawn(cluster.clone().connect_and_register());
        tokio::spawn(cluster.clone().subscribe());
        cluster
    }

    fn error(&self) {
        if let Some(m) = &self.metrics {
            m.cluster_error();
        }
    }

    fn manager(&self) -> Result<ConnectionManager, ClusterError> {
        let manager = self.manager.lock().expect("not poisoned");
        manager.clone().ok_or(ClusterError::NotConnected)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, ClusterError> {
        let mut conn = self.manager()?;
        let result = match tokio::time::timeout(OP_TIMEOUT, pipe.query_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClusterError::Redis(e)),
            Err(_) => Err(ClusterError::Timeout),
        };
        if result.is_err() {
            self.error();
        }
        result
    }

    /// The connection manager (which reconnects by itself once made), then
    /// the registry: renewed every heartbeat, updated when tags come and
    /// go, rewritten whole after a reconnect.
    async fn connect_and_register(self: Arc<Self>) {
        let settings = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(1000)
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(Duration::from_secs(1));
        let mut backoff = BACKOFF_MIN;
        loop {
            match ConnectionManager::new_with_config(self.client.clone(), settings.clone()).await {
                Ok(m) => {
                    *self.manager.lock().expect("not poisoned") = Some(m);
                    break;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "cannot connect to Redis");
                    self.error();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        let mut written: HashSet<(String, String)> = HashSet::new();
        let mut full = true;
        let mut next_full = tokio::time::Instant::now();
        loop {
            if full {
                next_full = tokio::time::Instant::now() + self.heartbeat;
            }
            if let Err(e) = self.sync(full, &mut written).await {
                warn!(error = %e, "cannot write the cluster registry");
                // Everything again next time: Redis may have lost it.
                written.clear();
            }
            // Renewal keeps its pace however often tags change.
            tokio::select! {
                _ = tokio::time::sleep_until(next_full) => full = true,
                _ = self.resync.notified() => full = true,
                _ = self.hub.changed() => full = false,
            }
        }
    }

    /// Writes what changed since the last write, or everything with
    /// renewed expiry when `full`.
    async fn sync(
        &self,
        full: bool,
        written: &mut HashSet<(String, String)>,
    ) -> Result<(), ClusterError> {
        let regs = self.hub.registrations();
        let now = unix_ms(SystemTime::now());
        let ttl = 3 * self.heartbeat.as_millis() as u64;
        let mut want = HashSet::new();
        for (user, conns) in &regs.users {
            for c in conns {
                let member = format!("{} {} {}", self.node, c.id, unix_ms(c.since));
                want.insert((user_key(user), member));
            }
        }
        for channel in &regs.channels {
            want.insert((channel_key(channel), self.node.clone()));
        }
        let mut pipe = redis::pipe();
        let mut keys = HashSet::new();
        for (key, member) in &want {
            if full || !written.contains(&(key.clone(), member.clone())) {
                pipe.cmd("ZADD")
                    .arg(key)
                    .arg(now + ttl)
                    .arg(member)
                    .ignore();
                keys.insert(key);
            }
        }
        for key in keys {
            pipe.cmd("PEXPIRE").arg(key).arg(ttl).ignore();
            if full {
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(key)
                    .arg("-inf")
                    .arg(now)
                    .ignore();
            }
        }
        for (key, member) in written.difference(&want) {
            pipe.cmd("ZREM").arg(key).arg(member).ignore();
        }
        self.run::<()>(&pipe).await?;
        *written = want;
        Ok(())
    }

    /// Listens on this node's channel, reconnecting with backoff.
    async fn subscribe(self: Arc<Self>) {
        let channel = node_channel(&self.node);
        let mut backoff = BACKOFF_MIN;
        loop {
            let attempt = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = match tokio::time::timeout(OP_TIMEOUT, attempt).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    warn!(error = %e, retry_in = ?backoff, "cannot subscribe to Redis");
                    self.retry(&mut backoff).await;
                    continue;
                }
                Err(_) => {
                    warn!(retry_in = ?backoff, "Redis subscription timed out");
                    self.retry(&mut backoff).await;
                    continue;
                }
            };
            info!(node = %self.node, "subscribed to the cluster");
            backoff = BACKOFF_MIN;
            self.resync.notify_one();
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                self.receive(msg.get_payload_bytes());
            }
            warn!("Redis subscription lost; reconnecting");
            self.retry(&mut backoff).await;
        }
    }

    async fn retry(&self, backoff: &mut Duration) {
        self.error();
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
    }

    fn receive(&self, payload: &[u8]) {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) else {
            warn!("ignoring a malformed cluster message");
            return;
        };
        let Some((target, message)) = envelope.open() else {
            warn!("ignoring a malformed cluster message");
            return;
        };
        let delivery = self.hub.deliver(&target, &message);
        if envelope.from == self.node {
            let waiter = self
                .waiting
                .lock()
                .expect("not poisoned")
                .remove(&envelope.seq);
            if let Some(tx) = waiter {
                let _ = tx.send(delivery);
            }
            return;
        }
        if let Some(m) = &self.metrics {
            m.delivered(delivery.delivered, delivery.overflowed);
            let lag = unix_ms(SystemTime::now()).saturating_sub(envelope.at);
            m.cluster_lag(Duration::from_millis(lag));
        }
    }

    /// The nodes holding `target`, from the registry.
    async fn holders(&self, target: &Target) -> Result<Vec<String>, ClusterError> {
        let key = match target {
            Target::User(u) => user_key(u),
            Target::Channel(c) => channel_key(c),
            Target::Connection(id) => {
                return Ok(Hub::node_of(id).map(str::to_string).into_iter().collect())
            }
        };
        let members = self.live_members(&key).await?;
        let mut nodes: Vec<String> = members
            .iter()
            .filter_map(|m| m.split(' ').next())
            .map(str::to_string)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        Ok(nodes)
    }

    async fn live_members(&self, key: &str) -> Result<Vec<String>, ClusterError> {
        let now = unix_ms(SystemTime::now());
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGEBYSCORE").arg(key).arg(now).arg("+inf");
        let (members,): (Vec<String>,) = self.run(&pipe).await?;
        Ok(members)
    }

    /// Sends `message` to every instance holding `target`.
    pub async fn publish(&self, target: &Target, message: &Pushed) -> Result<Sent, ClusterError> {
        let nodes = self.holders(target).await?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let envelope = Envelope::seal(&self.node, seq, target, message);
        let payload = serde_json::to_vec(&envelope).expect("an envelope serializes");
        let mine = nodes.iter().position(|n| *n == self.node);
        let (tx, rx) = oneshot::channel();
        if mine.is_some() {
            self.waiting.lock().expect("not poisoned").insert(seq, tx);
        }
        let mut pipe = redis::pipe();
        for node in &nodes {
            pipe.cmd("PUBLISH").arg(node_channel(node)).arg(&payload);
        }
        let receivers: Vec<i64> = match self.run(&pipe).await {
            Ok(r) => r,
            Err(e) => {
                self.waiting.lock().expect("not poisoned").remove(&seq);
                return Err(e);
            }
        };
        let reached = receivers.iter().filter(|&&n| n > 0).count();
        let here = match mine {
            None => Delivery::default(),
            // Not subscribed at the moment: deliver here directly.
            Some(i) if receivers.get(i).copied().unwrap_or(0) == 0 => {
                self.waiting.lock().expect("not poisoned").remove(&seq);
                self.hub.deliver(target, message)
            }
            Some(_) => match tokio::time::timeout(OP_TIMEOUT, rx).await {
                Ok(Ok(d)) => d,
                _ => {
                    self.waiting.lock().expect("not poisoned").remove(&seq);
                    Delivery::default()
                }
            },
        };
        Ok(Sent {
            here,
            nodes: reached,
        })
    }

    /// A user's connections across the cluster, from the registry.
    pub async fn connections_of(&self, user: &str) -> Result<Vec<RemoteConnection>, ClusterError> {
        let members = self.live_members(&user_key(user)).await?;
        Ok(members
            .iter()
            .filter_map(|m| {
                let mut parts = m.split(' ');
                let node = parts.next()?.to_string();
                let id = parts.next()?.to_string();
                let since: u64 = parts.next()?.parse().ok()?;
                Some(RemoteConnection {
                    id,
                    node,
                    since: UNIX_EPOCH + Duration::from_millis(since),
                })
            })
            .collect())
    }
}

impl Envelope {
    fn seal(from: &str, seq: u64, target: &Target, message: &Pushed) -> Envelope {
        let (kind, name) = match target {
            Target::User(u) => ("user", u),
            Target::Channel(c) => ("channel", c),
            Target::Connection(id) => ("connection", id),
        };
        let data = if message.binary {
            base64::engine::general_purpose::STANDARD.encode(&message.payload)
        } else {
            String::from_utf8_lossy(&message.payload).into_owned()
        };
        Envelope {
            from: from.to_string(),
            seq,
            at: unix_ms(SystemTime::now()),
            kind: kind.to_string(),
            name: name.clone(),
            binary: message.binary,
            data,
        }
    }

    fn open(&self) -> Option<(Target, Pushed)> {
        let target = match self.kind.as_str() {
            "user" => Target::User(self.name.clone()),
            "channel" => Target::Channel(self.name.clone()),
            "connection" => Target::Connection(self.name.clone()),
            _ => return None,
        };
        let payload = if self.binary {
            Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(self.data.as_bytes())
                    .ok()?,
            )
        } else {
            Bytes::from(self.data.clone())
        };
        Some((
            target,
            Pushed {
                binary: self.binary,
                payload,
            },
        ))
    }
}

fn user_key(user: &str) -> String {
    format!("wsgate:user:{user}")
}

fn channel_key(channel: &str) -> String {
    format!("wsgate:chan:{channel}")
}

fn node_channel(node: &str) -> String {
    format!("wsgate:node:{node}")
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
