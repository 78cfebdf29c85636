//! wsgate: a reverse proxy and load balancer for WebSocket traffic.
//!
//! The modules follow the path of one connection: [`server`] accepts it,
//! [`connection`] takes it through [`tls`] and the [`handshake`] checks,
//! [`route`] picks a route, [`upstream`] upgrades a backend, and [`relay`]
//! carries frames until the close. [`config`] and [`snapshot`] stand at the
//! side: the validated file and the running view built from it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod connection;
pub mod echo;
pub mod handshake;
pub mod relay;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;
