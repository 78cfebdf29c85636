//! Plain HTTP beside WebSocket: a request on a route with `http = "proxy"`
//! that carries no `Upgrade: websocket` leaves the upgrade path in
//! [`crate::connection`] and is proxied here as an HTTP/1.1 request to the
//! route's pool.
//!
//! The steps, one module each: [`exchange`] checks the request, picks a
//! backend with the pool's balancer and waits for the response head;
//! [`headers`] removes hop-by-hop fields and adds the forwarding ones;
//! [`pool`] keeps idle keep-alive connections per backend; [`body`] streams
//! both bodies and ends the exchange. The client side (keep-alive,
//! pipelining, `Expect: 100-continue`, chunked framing) is hyper's server
//! connection, the backend side hyper's client connection.

pub mod body;
pub mod exchange;
pub mod framing;
pub mod headers;
pub mod pool;

pub use body::AnswerBody;
pub use exchange::{proxy, Client, Failure};
pub use pool::Pools;
