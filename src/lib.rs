//! wsgate: a reverse proxy and load balancer for WebSocket traffic.
//!
//! The modules follow the path of one connection: [`server`] accepts it,
//! [`connection`] takes it through [`tls`] and the [`handshake`] checks,
//! [`route`] picks a route, [`balance`] a backend, [`upstream`] upgrades
//! it, and [`relay`] carries frames until the close. [`config`] and
//! [`snapshot`] stand at the side: the validated file and the running view
//! built from it. [`echo`] is the built-in backend of `wsgate demo`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod server;

pub mod connection;

pub mod tls;

pub mod handshake;

pub mod route;

pub mod balance;

pub mod upstream;

pub mod relay;

pub mod config;

pub mod snapshot;

pub mod echo;
