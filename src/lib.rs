//! wsgate: a reverse proxy and load balancer for WebSocket traffic.
//!
//! The modules follow the path of one connection: [`server`] accepts it,
//! [`connection`] lets it in ([`admission`]), reads a [`proxy_protocol`] header where the listener
//! wants one, takes it through [`tls`] and the [`handshake`] checks,
//! [`route`] picks a route, [`client_addr`] names the client behind trusted
//! forwarders, [`auth`] admits it or not, [`affinity`] reads its sticky key, [`balance`]
//! orders the backends, [`upstream`] upgrades one (both sides check the
//! opening handshake with the leaf [`rfc6455`]), and [`relay`] carries
//! frames ([`frame`]) until the close ([`close`]), writing the messages
//! pushed to the connection (its [`push`] hub entry) between the backend's. A plain HTTP request on a
//! route that allows it leaves that path for [`http_proxy`]. A connection reads the
//! running proxy through [`runtime`] only. [`config`] and [`snapshot`]
//! stand at the side: the validated file and the running view built from
//! it. The control plane sits above the data path and is never imported by
//! it: [`server`] applies configurations, [`discovery`] resolves backend
//! names and SRV records into them, [`reload`] holds the reload
//! triggers, [`admin`] the admin listener and [`publish`] the publish API
//! with its Redis cluster; the binary wires them
//! together (tests/architecture.rs checks this). [`echo`] is the built-in
//! backend of `wsgate demo`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The library exists for the binary, the tests and the benches; its docs
// are read with `cargo doc --document-private-items`, where these links
// resolve, so a public item may point at a crate-private one.
#![allow(rustdoc::private_intra_doc_links)]

pub mod server;

pub mod proxy_protocol;

pub(crate) mod connection;

pub mod admission;

pub(crate) mod tls;

pub mod handshake;

pub(crate) mod route;

pub(crate) mod client_addr;

pub(crate) mod auth;

pub(crate) mod affinity;

pub(crate) mod balance;

pub(crate) mod upstream;

pub(crate) mod http_proxy;

pub mod rfc6455;

pub mod relay;

pub(crate) mod push;

pub mod frame;

pub(crate) mod close;

pub mod config;

pub(crate) mod snapshot;

pub(crate) mod runtime;

pub mod reload;

pub mod discovery;

pub(crate) mod shutdown;

pub mod admin;

pub(crate) mod dashboard;

pub mod publish;

pub mod metrics;

pub mod log_writer;

pub mod echo;

mod health;

pub(crate) mod rebalance;
