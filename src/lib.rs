//! wsgate: a reverse proxy and load balancer for WebSocket traffic.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod close;
pub mod config;
pub mod frame;
pub mod relay;
