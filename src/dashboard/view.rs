//! One second of the dashboard: the figures sampled from the metrics and
//! the live backend state, turned into the JSON document every viewer
//! receives (its fields are listed in docs/operations.md, "Dashboard").

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::history::{self, Key, Point, Reload, Ring, Tally};
use super::scrape::{rates, Scrape, Series};
use crate::close::{CodeLabel, Initiator};
use crate::config::{Balance, HealthCheckKind, HostPattern};
use crate::server::Shared;

const C2B: &str = "client_to_backend";
const B2C: &str = "backend_to_client";

/// The sampler's state between ticks: the previous scrape's counters and
/// the history ring.
#[derive(Debug)]
pub struct Sampler {
    before: Counters,
    history: Ring<Point>,
}

/// Counter sums kept from one tick to the next, grouped as the panels
/// need them.
#[derive(Debug, Default)]
struct Counters {
    upgrades: f64,
    http: Option<f64>,
    messages: [f64; 2],
    bytes: [f64; 2],
    events: HashMap<Key, f64>,
    by_route: HashMap<String, f64>,
    by_backend: HashMap<(String, String), f64>,
    messages_by_backend: HashMap<(String, String, usize), f64>,
    bytes_by_backend: HashMap<(String, String, usize), f64>,
    http_by_pool: HashMap<String, f64>,
}

impl Counters {
    fn of(scrape: &Scrape) -> Counters {
        let direction = |s: &Series| match s.label("direction") {
            Some(C2B) => Some(0),
            Some(B2C) => Some(1),
            _ => None,
        };
        let backend = |s: &Series| {
            Some((
                s.label("pool")?.to_string(),
                s.label("backend")?.to_string(),
            ))
        };
        let per_direction =
            |name: &str| [0, 1].map(|d| scrape.sum(name, |s| direction(s) == Some(d)));
        let traffic_by_backend = |name: &str| {
            scrape.group(name, |s| {
                let (pool, addr) = backend(s)?;
                Some((pool, addr, direction(s)?))
            })
        };
        let mut events = scrape.group("wsgate_closes_total", |s| {
            let code = CodeLabel::parse(s.label("code")?);
            Some(Key::Close(code, Initiator::parse(s.label("initiator")?)?))
        });
        events.extend(scrape.group("wsgate_handshake_rejections_total", |s| {
            Some(Key::Status(s.label("status")?.parse().ok()?))
        }));
        let http = "wsgate_http_requests_total";
        Counters {
            upgrades: scrape.sum("wsgate_connections_total", |_| true),
            http: scrape.has(http).then(|| scrape.sum(http, |_| true)),
            messages: per_direction("wsgate_messages_total"),
            bytes: per_direction("wsgate_bytes_total"),
            events,
            by_route: scrape.group("wsgate_connections_total", |s| {
                s.label("route").map(str::to_string)
            }),
            by_backend: scrape.group("wsgate_connections_total", backend),
            messages_by_backend: traffic_by_backend("wsgate_messages_total"),
            bytes_by_backend: traffic_by_backend("wsgate_bytes_total"),
            http_by_pool: scrape.group(http, |s| s.label("pool").map(str::to_string)),
        }
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            before: Counters::default(),
            history: Ring::new(history::SECONDS),
        }
    }
}

/// Per-second rates of one tick.
struct Rates {
    by_route: HashMap<String, f64>,
    by_backend: HashMap<(String, String), f64>,
    messages_by_backend: HashMap<(String, String, usize), f64>,
    bytes_by_backend: HashMap<(String, String, usize), f64>,
    http_by_pool: HashMap<String, f64>,
}

impl Sampler {
    /// Samples `metrics_text` (the `/metrics` exposition now), `seconds`
    /// after the previous tick, and returns the document viewers get.
    /// The first tick has no previous one: its rates are zero.
    pub fn tick(
        &mut self,
        shared: &Shared,
        metrics_text: &str,
        seconds: f64,
        at_ms: u64,
        reloads: &Ring<Reload>,
    ) -> Value {
        let scrape = Scrape::parse(metrics_text);
        let now = Counters::of(&scrape);
        let first = self.history.is_empty();
        let before = if first { &now } else { &self.before };
        let per_s = |now: f64, before: f64| {
            if seconds > 0.0 {
                (now - before).max(0.0) / seconds
            } else {
                0.0
            }
        };
        let events = Tally::new(now.events.iter().map(|(k, v)| {
            let delta = (v - before.events.get(k).copied().unwrap_or(0.0)).max(0.0);
            (*k, delta.round() as u64)
        }));
        let point = Point {
            at_ms,
            open: scrape.sum("wsgate_connections_active", |_| true).max(0.0) as u64,
            handshakes: per_s(now.upgrades, before.upgrades),
            messages: [0, 1].map(|d| per_s(now.messages[d], before.messages[d])),
            bytes: [0, 1].map(|d| per_s(now.bytes[d], before.bytes[d])),
            http_requests: now.http.map(|n| per_s(n, before.http.unwrap_or(0.0))),
            events,
        };
        let rates = Rates {
            by_route: rates(&now.by_route, &before.by_route, seconds),
            by_backend: rates(&now.by_backend, &before.by_backend, seconds),
            messages_by_backend: rates(
                &now.messages_by_backend,
                &before.messages_by_backend,
                seconds,
            ),
            bytes_by_backend: rates(&now.bytes_by_backend, &before.bytes_by_backend, seconds),
            http_by_pool: rates(&now.http_by_pool, &before.http_by_pool, seconds),
        };
        self.history.push(point);
        let doc = document(shared, &scrape, &rates, &self.history, reloads);
        self.before = now;
        doc
    }
}

fn document(
    shared: &Shared,
    scrape: &Scrape,
    rates: &Rates,
    history: &Ring<Point>,
    reloads: &Ring<Reload>,
) -> Value {
    let snapshot = shared.current.load();
    let config = &snapshot.config;
    let point = history.latest().cloned().unwrap_or_default();
    let active_by_route = scrape.group("wsgate_connections_active", |s| {
        s.label("route").map(str::to_string)
    });
    let tls_failures = scrape.group("wsgate_tls_handshake_failures_total", |s| {
        s.label("listener").map(str::to_string)
    });
    let listeners: Vec<Value> = config
        .listeners
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "bind": l.bind.to_string(),
                "tls": l.tls.is_some(),
                "tls_failures": tls_failures.get(&l.name).copied().unwrap_or(0.0),
            })
        })
        .collect();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|r| {
            let label = route_label(r.host.as_ref(), &r.path_prefix);
            json!({
                "listener": r.listener,
                "route": label,
                "pool": r.pool,
                "active": active_by_route.get(&label).copied().unwrap_or(0.0),
                "handshakes_per_s": rates.by_route.get(&label).copied().unwrap_or(0.0),
            })
        })
        .collect();
    let now = tokio::time::Instant::now();
    let pools: Vec<Value> = config
        .pools
        .iter()
        .zip(&snapshot.balancers)
        .map(|(pool, balancer)| {
            let configured = pool.backends.iter().enumerate().filter_map(|(i, b)| {
                Some((balancer.backend(i)?.clone(), Some(b.weight), b.max_connections))
            });
            let removed = shared
                .registry
                .draining(&pool.name)
                .into_iter()
                .map(|s| (s, None, None));
            let backends: Vec<Value> = configured
                .chain(removed)
                .map(|(state, weight, max)| {
                    let addr = state.addr().to_string();
                    let key = (pool.name.clone(), addr.clone());
                    let traffic = |map: &HashMap<(String, String, usize), f64>| {
                        [0, 1].map(|d| {
                            map.get(&(pool.name.clone(), addr.clone(), d))
                                .copied()
                                .unwrap_or(0.0)
                        })
                    };
                    let check = state.last_check().map(|c| {
                        json!({
                            "ok": c.error.is_none(),
                            "error": c.error,
                            "age_s": c.at.elapsed().as_secs_f64(),
                        })
                    });
                    json!({
                        "addr": addr,
                        "weight": weight,
                        "max_connections": max,
                        "in_config": weight.is_some(),
                        "up": state.is_up(now),
                        "draining": state.is_draining(),
                        "drained_by_admin": shared.registry.is_held(&pool.name, state.addr()),
                        "active": state.active(),
                        "handshakes_per_s": rates.by_backend.get(&key).copied().unwrap_or(0.0),
                        "messages_per_s": traffic(&rates.messages_by_backend),
                        "bytes_per_s": traffic(&rates.bytes_by_backend),
                        "check": check,
                    })
                })
                .collect();
            let balance = match pool.balance {
                Balance::LeastConnections => "least_connections",
                Balance::Sticky => "sticky",
            };
            let health_check = pool.health_check.as_ref().map(|h| match &h.kind {
                HealthCheckKind::Tcp => json!({ "kind": "tcp", "interval_s": h.interval.as_secs_f64() }),
                HealthCheckKind::WebSocket { path } => {
                    json!({ "kind": "websocket", "path": path, "interval_s": h.interval.as_secs_f64() })
                }
            });
            json!({
                "name": pool.name,
                "balance": balance,
                "health_check": health_check,
                "http_per_s": rates.http_by_pool.get(&pool.name).copied(),
                "backends": backends,
            })
        })
        .collect();
    let window = history::window_totals(history);
    let mut closes: Vec<Value> = Vec::new();
    let mut rejections: Vec<Value> = Vec::new();
    let rejected_total = scrape.group("wsgate_handshake_rejections_total", |s| {
        s.label("status").map(str::to_string)
    });
    for (key, count) in &window {
        match key {
            Key::Close(code, initiator) => closes.push(json!({
                "code": code.to_json(), "initiator": initiator.as_str(), "count": count,
            })),
            Key::Status(status) => rejections.push(json!({
                "status": status, "count": count,
                "total": rejected_total.get(&status.to_string()).copied().unwrap_or(0.0),
            })),
            Key::Other => {
                closes.push(json!({ "code": null, "initiator": "other", "count": count }))
            }
        }
    }
    let series = |f: &dyn Fn(&Point) -> Value| -> Vec<Value> { history.iter().map(f).collect() };
    let reload_list: Vec<Value> = reloads
        .iter()
        .rev()
        .map(|r| {
            json!({
                "at": humantime::format_rfc3339_seconds(r.at).to_string(),
                "ok": r.version.is_some(),
                "version": r.version,
                "errors": r.errors,
            })
        })
        .collect();
    json!({
        "version": snapshot.version,
        "loaded_at": humantime::format_rfc3339_seconds(snapshot.loaded_at).to_string(),
        "ready": shared.ready.load(Ordering::Acquire),
        "totals": {
            "open": point.open,
            "accepted_open": shared.tracker.open(),
            "handshakes_per_s": point.handshakes,
            "messages_per_s": point.messages,
            "bytes_per_s": point.bytes,
            "http_per_s": point.http_requests,
        },
        "history": {
            "at_ms": series(&|p| json!(p.at_ms)),
            "open": series(&|p| json!(p.open)),
            "handshakes_per_s": series(&|p| json!(p.handshakes)),
            "messages_per_s": series(&|p| json!(p.messages[0] + p.messages[1])),
            "bytes_per_s": series(&|p| json!(p.bytes[0] + p.bytes[1])),
            "http_per_s": series(&|p| json!(p.http_requests)),
        },
        "listeners": listeners,
        "routes": routes,
        "pools": pools,
        "closes": closes,
        "rejections": rejections,
        "reloads": reload_list,
    })
}

/// A route as the metrics label it: its host pattern (`*` for any) and its
/// path prefix.
fn route_label(host: Option<&HostPattern>, path_prefix: &str) -> String {
    let host = match host {
        Some(HostPattern::Exact(name)) => name.clone(),
        Some(HostPattern::Suffix(suffix)) => format!("*{suffix}"),
        None => "*".to_string(),
    };
    format!("{host}{path_prefix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
wsgate_connections_total{route=\"*/echo\",pool=\"p\",backend=\"127.0.0.1:1\"} 10
wsgate_messages_total{direction=\"client_to_backend\",pool=\"p\",backend=\"127.0.0.1:1\"} 100
wsgate_messages_total{direction=\"backend_to_client\",pool=\"p\",backend=\"127.0.0.1:1\"} 50
wsgate_closes_total{code=\"1009\",initiator=\"client\",pool=\"p\",backend=\"127.0.0.1:1\"} 1
wsgate_handshake_rejections_total{status=\"404\"} 2
";

    #[test]
    fn counters_group_what_the_panels_show() {
        let c = Counters::of(&Scrape::parse(BEFORE));
        assert_eq!(c.upgrades, 10.0);
        assert_eq!(c.messages, [100.0, 50.0]);
        assert_eq!(c.by_route["*/echo"], 10.0);
        let key = ("p".to_string(), "127.0.0.1:1".to_string(), 1);
        assert_eq!(c.messages_by_backend[&key], 50.0);
        assert_eq!(
            c.events[&Key::Close(CodeLabel::Code(1009), Initiator::Client)],
            1.0
        );
        assert_eq!(c.events[&Key::Status(404)], 2.0);
        // No HTTP metric yet: the dashboard's HTTP slot stays empty.
        assert_eq!(c.http, None);
    }

    #[test]
    fn http_requests_appear_once_the_metric_exists() {
        let text = format!("{BEFORE}wsgate_http_requests_total{{pool=\"p\",code=\"200\"}} 7\n");
        let c = Counters::of(&Scrape::parse(&text));
        assert_eq!(c.http, Some(7.0));
        assert_eq!(c.http_by_pool["p"], 7.0);
    }

    #[test]
    fn route_labels_match_the_metrics() {
        assert_eq!(route_label(None, "/echo"), "*/echo");
        let exact = HostPattern::Exact("chat.example.com".into());
        assert_eq!(route_label(Some(&exact), "/"), "chat.example.com/");
        let suffix = HostPattern::Suffix(".example.com".into());
        assert_eq!(route_label(Some(&suffix), "/x"), "*.example.com/x");
    }
}
