//! The connections of this instance that can be pushed to: each one by its
//! id, and the tagged ones by user and channel.
//!
//! A connection joins the [`Hub`] when its relay starts and leaves when it
//! ends (the [`Member`] guard). Delivering a message looks its targets up
//! and offers it to each one's [`Inbox`]; the relay takes it from there.
//! Offers are made in the publisher's order under one read lock, so one
//! publisher's messages reach each connection in publish order. The
//! publish API and the cluster (the control plane, in `publish`) call in
//! here; the data path only joins and leaves.

pub mod tags;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::relay::inbox::{Inbox, Offer, Pushed, QueueLimits};
pub use tags::ConnTags;

/// The header that tells the backend its connection's id; a copy sent by
/// the client is removed.
pub const CONNECTION_ID_HEADER: &str = "x-wsgate-connection-id";

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every connection tagged with this user.
    User(String),
    /// Every connection listening to this channel.
    Channel(String),
    /// The one connection with this id.
    Connection(String),
}

/// What became of one message on this instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Connections that queued it.
    pub delivered: u64,
    /// Connections whose route's `max_message_bytes` is below its size.
    pub too_large: u64,
    /// Connections whose queue overflowed with it: they are closed with
    /// 1013.
    pub overflowed: u64,
}

/// A connection of this instance, as the publish API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConnection {
    /// Its id.
    pub id: Arc<str>,
    /// When its relay started.
    pub since: SystemTime,
}

/// The tagged names of this instance, for the cluster registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registrations {
    /// Each user with its connections.
    pub users: Vec<(Arc<str>, Vec<LocalConnection>)>,
    /// Each channel with at least one connection.
    pub channels: Vec<Arc<str>>,
}

struct Entry {
    inbox: Arc<Inbox>,
    user: Option<Arc<str>>,
    channels: Vec<Arc<str>>,
    since: SystemTime,
    max_message_bytes: u64,
}

#[derive(Default)]
struct Index {
    connections: HashMap<Arc<str>, Entry>,
    users: HashMap<Arc<str>, Vec<Arc<str>>>,
    channels: HashMap<Arc<str>, Vec<Arc<str>>>,
}

/// The pushable connections of this instance.
pub struct Hub {
    node: Arc<str>,
    /// Distinguishes this run's ids from those of an earlier run of the
    /// same node.
    boot: u32,
    next: AtomicU64,
    queue: QueueLimits,
    index: RwLock<Index>,
    /// Woken when a user or channel appears here or disappears.
    changed: Notify,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// An empty hub for node `node` (the cluster's `node_id`, or a random
    /// name when there is no cluster); inboxes are bounded by `queue`.
    pub fn new(node: Option<&str>, queue: QueueLimits) -> Hub {
        let seed = random_u64();
        let node: Arc<str> = match node {
            Some(n) => Arc::from(n),
            None => Arc::from(format!("n{:08x}", seed >> 32)),
        };
        Hub {
            node,
            boot: seed as u32,
            next: AtomicU64::new(1),
            queue,
            index: RwLock::default(),
            changed: Notify::new(),
        }
    }

    /// This instance's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A fresh connection id, unique across instances (the node id is part
    /// of it) and across restarts of one node (a random part per run):
    /// `<node>.<run>.<n>`.
    pub fn next_id(&self) -> String {
        use std::fmt::Write;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Sized up front: one allocation per handshake, not one per growth.
        let mut id = String::with_capacity(self.node.len() + 1 + 8 + 1 + 16);
        let _ = write!(id, "{}.{:08x}.{n:x}", self.node, self.boot);
        id
    }

    /// The node a connection id names.
    pub fn node_of(id: &str) -> Option<&str> {
        id.split_once('.').map(|(node, _)| node)
    }

    /// Adds a connection; it stays until the returned guard is dropped.
    /// Messages over `max_message_bytes` (its route's limit) are not
    /// offered to it.
    pub fn join(
        self: &Arc<Self>,
        id: String,
        tags: ConnTags,
        max_message_bytes: u64,
    ) -> (Member, Arc<Inbox>) {
        let id: Arc<str> = Arc::from(id);
        let inbox = Arc::new(Inbox::new(self.queue));
        let user: Option<Arc<str>> = tags.user.map(Arc::from);
        let channels: Vec<Arc<str>> = tags.channels.into_iter().map(Arc::from).collect();
        let tagged = user.is_some() || !channels.is_empty();
        {
            let mut index = self.index.write().expect("not poisoned");
            if let Some(u) = &user {
                index.users.entry(u.clone()).or_default().push(id.clone());
            }
            for c in &channels {
                index
                    .channels
                    .entry(c.clone())
                    .or_default()
                    .push(id.clone());
            }
            let entry = Entry {
                inbox: inbox.clone(),
                user,
                channels,
                since: SystemTime::now(),
                max_message_bytes,
            };
            index.connections.insert(id.clone(), entry);
        }
        if tagged {
            self.changed.notify_one();
        }
        let member = Member {
            hub: self.clone(),
            id,
        };
        (member, inbox)
    }

    fn leave(&self, id: &Arc<str>) {
        let mut index = self.index.write().expect("not poisoned");
        let Some(entry) = index.connections.remove(id) else {
            return;
        };
        let tagged = entry.user.is_some() || !entry.channels.is_empty();
        if let Some(u) = &entry.user {
            remove_from(&mut index.users, u, id);
        }
        for c in &entry.channels {
            remove_from(&mut index.channels, c, id);
        }
        drop(index);
        if tagged {
            self.changed.notify_one();
        }
    }

    /// Offers `message` to every local connection `target` names, in one
    /// pass under the read lock.
    pub fn deliver(&self, target: &Target, message: &Pushed) -> Delivery {
        let index = self.index.read().expect("not poisoned");
        let mut delivery = Delivery::default();
        let mut offer = |id: &Arc<str>| {
            let Some(entry) = index.connections.get(id) else {
                return;
            };
            if message.payload.len() as u64 > entry.max_message_bytes {
                delivery.too_large += 1;
                return;
            }
            match entry.inbox.offer(message.clone()) {
                Offer::Queued => delivery.delivered += 1,
                Offer::Overflowed => delivery.overflowed += 1,
                Offer::Closed => {}
            }
        };
        match target {
            Target::User(u) => index
                .users
                .get(u.as_str())
                .into_iter()
                .flatten()
                .for_each(&mut offer),
            Target::Channel(c) => index
                .channels
                .get(c.as_str())
                .into_iter()
                .flatten()
                .for_each(&mut offer),
            Target::Connection(id) => {
                if let Some((key, _)) = index.connections.get_key_value(id.as_str()) {
                    offer(key)
                }
            }
        }
        delivery
    }

    /// The local connections of `user`.
    pub fn connections_of(&self, user: &str) -> Vec<LocalConnection> {
        let index = self.index.read().expect("not poisoned");
        let ids = index.users.get(user).map(Vec::as_slice).unwrap_or(&[]);
        ids.iter()
            .filter_map(|id| {
                let entry = index.connections.get(id)?;
                Some(LocalConnection {
                    id: id.clone(),
                    since: entry.since,
                })
            })
            .collect()
    }

    /// Every user and channel held here now.
    pub fn registrations(&self) -> Registrations {
        let index = self.index.read().expect("not poisoned");
        let users = index
            .users
            .iter()
            .map(|(user, ids)| {
                let conns = ids
                    .iter()
                    .filter_map(|id| {
                        let entry = index.connections.get(id)?;
                        Some(LocalConnection {
                            id: id.clone(),
                            since: entry.since,
                        })
                    })
                    .collect();
                (user.clone(), conns)
            })
            .collect();
        let channels = index.channels.keys().cloned().collect();
        Registrations { users, channels }
    }

    /// Resolves after a tagged connection joined or left.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Connections here now.
    pub fn len(&self) -> usize {
        self.index.read().expect("not poisoned").connections.len()
    }

    /// No connection here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn remove_from(map: &mut HashMap<Arc<str>, Vec<Arc<str>>>, key: &str, id: &Arc<str>) {
    if let Some(ids) = map.get_mut(key) {
        ids.retain(|x| x != id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

/// A connection's place in the hub; dropping it removes the connection.
pub struct Member {
    hub: Arc<Hub>,
    id: Arc<str>,
}

impl Member {
    /// The connection's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The connection's id, shared: it outlives the membership without a
    /// copy (the access-log line names it after the connection left).
    pub fn shared_id(&self) -> Arc<str> {
        self.id.clone()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.hub.leave(&self.id);
    }
}

/// 64 bits that differ between runs and instances: the standard library's
/// randomly keyed hasher over the clock and the process id.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::inbox::Take;
    use bytes::Bytes;

    fn text(s: &'static str) -> Pushed {
        Pushed {
            binary: false,
            payload: Bytes::from_static(s.as_bytes()),
        }
    }

    fn tagged(user: &str, channels: &[&str]) -> ConnTags {
        ConnTags {
            user: Some(user.to_string()),
            channels: channels.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn delivers_by_user_channel_and_id_and_forgets_on_leave() {
        let hub = Arc::new(Hub::new(Some("a"), QueueLimits::default()));
        let id1 = hub.next_id();
        let id2 = hub.next_id();
        assert_ne!(id1, id2);
        assert_eq!(Hub::node_of(&id1), Some("a"));
        let (m1, in1) = hub.join(id1.clone(), tagged("42", &["room"]), 1024);
        let (_m2, in2) = hub.join(id2.clone(), tagged("7", &["room"]), 2);
        let user = hub.deliver(&Target::User("42".into()), &text("hi"));
        assert_eq!(user.delivered, 1);
        let room = hub.deliver(&Target::Channel("room".into()), &text("all"));
        assert_eq!((room.delivered, room.too_large), (1, 1));
        let one = hub.deliver(&Target::Connection(id2.clone()), &text("x"));
        assert_eq!(one.delivered, 1);
        assert_eq!(in1.take(), Take::Message(text("hi")));
        assert_eq!(in1.take(), Take::Message(text("all")));
        assert_eq!(in2.take(), Take::Message(text("x")));
        assert_eq!(hub.registrations().users.len(), 2);
        drop(m1);
        assert_eq!(
            hub.deliver(&Target::User("42".into()), &text("hi"))
                .delivered,
            0
        );
        assert!(hub.connections_of("42").is_empty());
        assert_eq!(hub.connections_of("7").len(), 1);
    }
}
