//! Allocations made by the proxy, counted exactly: per ws and wss handshake
//! cycle, and held per idle connection, with the held bytes broken down by
//! allocation size (docs/benchmarks.md, "Allocations and syscalls").
//!
//! The proxy runs in-process on its own one-worker runtime whose threads
//! are marked; a counting global allocator counts only marked threads, so
//! the client and the echo backend (on the main thread) do not appear. The
//! counts do not depend on CPU load, which makes them usable on a busy
//! machine where CPU time is not.
//!
//! `cargo bench --bench alloc -- [CYCLES] [IDLE]` (default 1000 and 1000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Counting;

thread_local! {
    static PROXY_THREAD: Cell<bool> = const { Cell::new(false) };
}

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
/// Live allocations by size (the last slot gathers everything larger).
const SIZES: usize = 70 * 1024;
static LIVE_BY_SIZE: [AtomicI64; SIZES] = [const { AtomicI64::new(0) }; SIZES];

fn counted() -> bool {
    PROXY_THREAD.try_with(Cell::get).unwrap_or(false)
}

fn note(size: usize, sign: i64) {
    LIVE_BYTES.fetch_add(sign * size as i64, Relaxed);
    LIVE_BY_SIZE[size.min(SIZES - 1)].fetch_add(sign, Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; the
// bookkeeping only touches atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
            note(layout.size(), 1);
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            note(layout.size(), -1);
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(new_size as u64, Relaxed);
            note(layout.size(), -1);
            note(new_size, 1);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A snapshot of the counters.
#[derive(Clone, Copy)]
struct Counts {
    allocs: u64,
    bytes: u64,
    live: i64,
}

fn counts() -> Counts {
    Counts {
        allocs: ALLOCS.load(Relaxed),
        bytes: ALLOC_BYTES.load(Relaxed),
        live: LIVE_BYTES.load(Relaxed),
    }
}

fn live_by_size() -> Vec<i64> {
    LIVE_BY_SIZE.iter().map(|c| c.load(Relaxed)).collect()
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Client {
    proxy: SocketAddr,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

impl Client {
    /// Connects and upgrades; returns the open WebSocket.
    async fn open(&self) -> Box<dyn Io> {
        let tcp = TcpStream::connect(self.proxy).await.expect("connects");
        tcp.set_nodelay(true).unwrap();
        let mut io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => {
                Box::new(connector.connect(name.clone(), tcp).await.expect("TLS"))
            }
        };
        io.write_all(
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert!(io.read(&mut byte).await.unwrap() == 1, "answer cut short");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "not upgraded");
        io
    }

    /// One cycle: upgrade, close handshake, the proxy closing TCP.
    async fn cycle(&self) {
        let mut io = self.open().await;
        // A masked close frame with code 1000 (mask 0, so payload as is).
        io.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = io.read_to_end(&mut rest).await;
    }
}

fn config(dir: &Path, backend: SocketAddr) -> String {
    format!(
        "[defaults]\nidle_timeout = \"1h\"\n\n\
         [[listener]]\nname = \"ws\"\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"wss\"\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [[route]]\npath_prefix = \"/\"\npool = \"echo\"\n\n\
         [[pool]]\nname = \"echo\"\nbackends = [{{ addr = \"{backend}\" }}]\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let cycles = args.first().copied().unwrap_or(1000);
    let idle = args.get(1).copied().unwrap_or(1000);

    let dir = std::env::temp_dir().join(format!("wsgate-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls));

    // Client and echo backend: this (uncounted) thread.
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = local.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(wsgate::echo::serve(l));
        addr
    });

    // The proxy: one worker, every thread of its runtime counted.
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(|| PROXY_THREAD.with(|c| c.set(true)))
        .build()
        .unwrap();
    let toml = config(&dir, backend);
    let (ws, wss) = proxy_rt.block_on(async {
        let config = wsgate::config::parse(&toml, &dir, "alloc.toml").expect("valid");
        let server = wsgate::server::Server::start(config, None)
            .await
            .expect("binds");
        let addrs = (
            server.local_addr("ws").unwrap(),
            server.local_addr("wss").unwrap(),
        );
        tokio::spawn(server.run(std::future::pending()));
        addrs
    });

    print_sizes();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    println!("wsgate allocations, proxy threads only; {cycles} cycles, {idle} idle connections");
    for (label, client) in [
        (
            "ws",
            Client {
                proxy: ws,
                tls: None,
            },
        ),
        (
            "wss",
            Client {
                proxy: wss,
                tls: Some((connector.clone(), name.clone())),
            },
        ),
    ] {
        local.block_on(async {
            // Warm-up: first-use allocations (label maps, pools) are not
            // per handshake.
            for _ in 0..50 {
                client.cycle().await;
            }
            settle().await;
            let before = counts();
            for _ in 0..cycles {
                client.cycle().await;
            }
            settle().await;
            let after = counts();
            let n = cycles as f64;
            println!(
                "{label} handshake cycle: {:.1} allocations, {:.0} bytes allocated, {:+.1} bytes still held",
                (after.allocs - before.allocs) as f64 / n,
                (after.bytes - before.bytes) as f64 / n,
                (after.live - before.live) as f64 / n,
            );

            let sizes_before = live_by_size();
            let before = counts();
            let mut open = Vec::with_capacity(idle);
            for _ in 0..idle {
                let mut io = client.open().await;
                // One echoed message, as the idle scenario does.
                io.write_all(&[0x82, 0x80 | 64, 1, 2, 3, 4]).await.unwrap();
                io.write_all(&[0u8; 64]).await.unwrap();
                let mut echo = [0u8; 66];
                io.read_exact(&mut echo).await.unwrap();
                open.push(io);
            }
            settle().await;
            let after = counts();
            let n = idle as f64;
            println!(
                "{label} idle connection: {:.0} bytes held in {:.1} allocations",
                (after.live - before.live) as f64 / n,
                {
                    let now = live_by_size();
                    now.iter().zip(&sizes_before).map(|(a, b)| a - b).sum::<i64>() as f64 / n
                }
            );
            let now = live_by_size();
            let mut rows: Vec<(usize, f64)> = now
                .iter()
                .zip(&sizes_before)
                .enumerate()
                .map(|(size, (a, b))| (size, (a - b) as f64 / n))
                .filter(|(_, per)| per.abs() >= 0.5)
                .collect();
            rows.sort_by(|a, b| (b.0 as f64 * b.1).total_cmp(&(a.0 as f64 * a.1)));
            println!("  size (B) | held per connection");
            for (size, per) in rows {
                let size = if size == SIZES - 1 {
                    format!("≥{size}")
                } else {
                    size.to_string()
                };
                println!("  {size:>8} | {per:.2}");
            }
            drop(open);
            settle().await;
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The size of what `f` would return, without calling it.
fn returned_size<A, R>(_: impl FnOnce(A) -> R) -> usize {
    std::mem::size_of::<R>()
}

/// Sizes of the values an idle connection keeps inline in its task.
fn print_sizes() {
    use tokio_rustls::server::TlsStream;
    use wsgate::relay::{self, Settings, Signals};
    type Args<C> = (
        C,
        TcpStream,
        Settings,
        Signals,
        Option<wsgate::metrics::Meter>,
    );
    let plain = returned_size(|(c, b, s, signals, m): Args<TcpStream>| {
        relay::run(
            c,
            bytes::Bytes::new(),
            b,
            bytes::Bytes::new(),
            s,
            signals,
            m,
        )
    });
    let tls = returned_size(|(c, b, s, signals, m): Args<TlsStream<TcpStream>>| {
        relay::run(
            c,
            bytes::Bytes::new(),
            b,
            bytes::Bytes::new(),
            s,
            signals,
            m,
        )
    });
    println!(
        "sizes (bytes): TcpStream {}, TlsStream<TcpStream> {}, relay::run future over TcpStream {}, over TlsStream {}",
        std::mem::size_of::<TcpStream>(),
        std::mem::size_of::<TlsStream<TcpStream>>(),
        plain,
        tls
    );
}

/// Lets the proxy finish what the last exchange started (closing sockets,
/// ending tasks) before the counters are read.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}
